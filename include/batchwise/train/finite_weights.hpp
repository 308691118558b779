// fit's end-of-epoch check that every variable is still finite. A weight can turn NaN or
// infinite while the loss stays finite (a ReLU maps a NaN pre-activation to 0, so the unit just
// falls silent), and training would go on with it unnoticed: fit scans the weights instead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "batchwise/core/errors.hpp"
#include "batchwise/exec/capabilities.hpp"
#include "batchwise/train/step/variables.hpp"
#include "batchwise/train/tensor_io.hpp"  // first_non_finite

namespace batchwise::detail {

/// Raises numeric_error naming the first variable (trainable or not: batch norm's moving
/// statistics too) that holds a non-finite value, its index, the value and the epoch. Variables
/// in host memory are scanned in place; those in device memory are copied to `scratch` one at a
/// time (a copy of the whole model per call, once per epoch).
template <class Exec>
void check_finite_variables(const std::vector<variable_entry>& variables, std::vector<float>& scratch,
                            const char* call, std::uint64_t epoch) {
    for (const variable_entry& v : variables) {
        const std::size_t n = v.ref.size();
        const float* values = v.ref.value;
        if constexpr (!HostMemoryPolicy<Exec>) {
            if (scratch.size() < n) scratch.resize(n);
            Exec::to_host(v.ref.value, n, scratch.data());
            values = scratch.data();
        }
        const std::size_t i = first_non_finite(values, n);
        if (i == n) continue;
        throw numeric_error(std::string(call) + ": after epoch " + std::to_string(epoch) + ", variable " + v.name +
                            " holds a non-finite value (" + std::to_string(values[i]) + ") at index " +
                            std::to_string(i) + "; training diverged (lower the learning rate)");
    }
}

}  // namespace batchwise::detail
