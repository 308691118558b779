// What the layers with a kernel and a bias share (Dense, Conv2D): the option that drops the bias,
// the choice of initializer among a layer's options, and the pass that writes the bias into the
// output rows before the GEMM adds onto them.
#pragma once

#include <cstddef>
#include <type_traits>

#include "batchwise/core/config.hpp"
#include "batchwise/layers/initializers.hpp"

namespace batchwise {

/// Option for Dense and Conv2D: no bias vector (for example before a BatchNorm, which has its own
/// shift).
struct no_bias {};

namespace detail {
template <class Default, class... Options>
struct pick_initializer {
    using type = Default;
};
template <class Default, class First, class... Rest>
struct pick_initializer<Default, First, Rest...> {
    using type = std::conditional_t<Initializer<First>, First,
                                    typename pick_initializer<Default, Rest...>::type>;
};

/// Writes the bias into every row of the output, which the forward GEMM then adds to (beta = 1).
struct copy_row_vector {
    float* out;
    const float* vec;
    std::size_t cols;
    // One row per call: a contiguous inner loop vectorises; an index i % cols per element does not.
    BATCHWISE_HOST_DEVICE void operator()(std::size_t r) const {
        float* row = out + r * cols;
        for (std::size_t j = 0; j < cols; ++j) row[j] = vec[j];
    }
};
}  // namespace detail

}  // namespace batchwise
