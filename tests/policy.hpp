// The execution policy a test binary runs its tests on. The policy-dependent test sources are
// compiled three times: by g++ for cpu_blas (batchwise_tests) and for thrust_host
// (batchwise_tests_thrust_host), and by nvcc for cuda (batchwise_tests_cuda). A binary can hold
// one Thrust device system only, so the choice is per binary, made by the build.
#pragma once

#include <batchwise/batchwise.hpp>

#if defined(BATCHWISE_TEST_CUDA)
#include <batchwise/cuda.hpp>
#elif defined(BATCHWISE_TEST_THRUST_HOST)
#include <batchwise/exec/thrust_host.hpp>
#endif

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

namespace bw_test {

#if defined(BATCHWISE_TEST_CUDA)
using exec = batchwise::cuda;
#elif defined(BATCHWISE_TEST_THRUST_HOST)
using exec = batchwise::thrust_host;
#else
using exec = batchwise::cpu_blas;
#endif

/// Whether the binary's policy keeps its buffers on the host heap, where the malloc hooks of
/// tests/train/allocations.cpp see them: cpu_blas and thrust_host do, cuda's are device memory.
#if defined(BATCHWISE_TEST_CUDA)
inline constexpr bool buffers_on_heap = false;
#else
inline constexpr bool buffers_on_heap = true;
#endif

/// batchwise::Model on the binary's policy unless a test names another.
template <class Net, class Batch = batchwise::dynamic_batch, class Exec = exec,
          class Accum = batchwise::no_accumulation>
using Model = batchwise::Model<Net, Batch, Exec, Accum>;

/// A variable's or a buffer's floats, read back to the host.
inline std::vector<float> host_copy(const float* p, std::size_t n) {
    std::vector<float> out(n);
    if (p != nullptr) exec::to_host(p, n, out.data());
    return out;
}
inline float host_element(const float* p, std::size_t i) {
    float v = 0.0f;
    exec::to_host(p + i, 1, &v);
    return v;
}
inline void set_element(float* p, std::size_t i, float v) { exec::from_host(&v, 1, p + i); }

/// ||a - b|| / ||a||, with ||a|| floored so that all-zero vectors compare absolutely: how the
/// policies' results are compared where summation orders differ.
inline double relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
    double diff = 0.0;
    double norm = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        diff += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
        norm += static_cast<double>(a[i]) * a[i];
    }
    return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-6);
}

/// Every variable of a model, concatenated in order, on the host.
template <class M>
std::vector<float> all_weights(const M& model) {
    std::vector<float> out;
    for (const auto& [name, w] : model.get_weights()) out.insert(out.end(), w.begin(), w.end());
    return out;
}

/// Floats in the policy's memory, filled from and read back to the host.
class device_array {
public:
    explicit device_array(const std::vector<float>& values) {
        exec::reserve(storage_, values.size());
        exec::from_host(values.data(), values.size(), data());
    }
    explicit device_array(std::size_t n) : device_array(std::vector<float>(n, 0.0f)) {}
    float* data() { return exec::data(storage_); }
    [[nodiscard]] std::vector<float> host() const { return host_copy(exec::data(storage_), exec::size(storage_)); }

private:
    typename exec::vector storage_;
};

}  // namespace bw_test
