// `thrust_host`: the Thrust execution policy on Thrust's host device system (CPP or OMP), with
// GEMM through CBLAS. It exists so that the Thrust code path the GPU runs is compiled by g++ and
// run by the normal test suite on machines without a GPU. Build with
// THRUST_DEVICE_SYSTEM=THRUST_DEVICE_SYSTEM_CPP (the batchwise::thrust_host CMake target sets it)
// and the CUDA toolkit's own Thrust on the include path, the one nvcc uses.
#pragma once

#include <vector>

#include <thrust/detail/config.h>

#include "batchwise/exec/cpu_blas.hpp"
#include "batchwise/exec/thrust.hpp"

static_assert(THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CPP || THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP,
              "batchwise::thrust_host runs on Thrust's host device system: compile with "
              "-DTHRUST_DEVICE_SYSTEM=THRUST_DEVICE_SYSTEM_CPP (or link batchwise::thrust_host); "
              "for the GPU use <batchwise/cuda.hpp>");

namespace batchwise {

namespace detail {

/// The host system's backend: Thrust's device memory is host memory here, so cpu_blas's GEMM
/// applies to it directly; everything else goes through Thrust algorithms.
struct host_thrust_backend {
    static constexpr std::string_view name = "thrust_host";
    using host_vector = std::vector<float>;

    static void prepare() { cpu_blas::prepare(); }
    static auto policy() { return thrust::device; }
    static void synchronize() {}
    static void reserve_rows(std::size_t) {}

    static void gemm(transpose ta, transpose tb, float alpha, const_matrix_view a, const_matrix_view b,
                     float beta, matrix_view c) {
        cpu_blas::gemm(ta, tb, alpha, a, b, beta, c);
    }
    static void column_sums(const_matrix_view a, float* out, float beta) {
        thrust::for_each_n(policy(), thrust::counting_iterator<std::size_t>(0), a.cols,
                           column_sum{a.data, a.rows, a.cols, out, beta});
    }
    static void to_host(const float* src, std::size_t n, float* host_dst) {
        thrust::copy_n(thrust::device_pointer_cast(src), n, host_dst);
    }
    static void from_host(const float* host_src, std::size_t n, float* dst) {
        thrust::copy_n(host_src, n, thrust::device_pointer_cast(dst));
    }
};

}  // namespace detail

/// The Thrust policy on the host: same algorithms and functors as `cuda`, CBLAS for GEMM.
using thrust_host = thrust_policy<detail::host_thrust_backend>;

}  // namespace batchwise
