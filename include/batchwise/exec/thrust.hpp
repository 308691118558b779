// The Thrust execution policy: storage in thrust::device_vector, element-wise work and
// reductions as Thrust algorithms over the same named functors cpu_blas runs, GEMM and column
// sums from a backend. One source serves two builds:
//  - g++ with THRUST_DEVICE_SYSTEM=THRUST_DEVICE_SYSTEM_CPP: `thrust_host`, every line of the
//    Thrust path running on the host, GEMM through CBLAS. This is how CI, which has no GPU,
//    tests the code the GPU runs.
//  - nvcc with the CUDA device system: `cuda` (<batchwise/cuda.hpp>), GEMM through cuBLAS.
// The device system is fixed per program (Thrust dispatches on it), so one program holds one of
// the two, next to cpu_blas if it likes.
#pragma once

#include <cstddef>
#include <string_view>

#include <thrust/copy.h>
#include <thrust/device_vector.h>
#include <thrust/execution_policy.h>
#include <thrust/fill.h>
#include <thrust/for_each.h>
#include <thrust/functional.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/transform_reduce.h>

#include "batchwise/core/config.hpp"
#include "batchwise/exec/matrix_view.hpp"

namespace batchwise {

namespace detail {

/// out[j] = beta * out[j] + sum_i a(i, j), one column per index. Rows are added in order, as
/// cpu_blas adds them, so the host build matches cpu_blas bit for bit.
struct column_sum {
    const float* a;
    std::size_t rows;
    std::size_t cols;
    float* out;
    float beta;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t j) const {
        float s = beta == 0.0f ? 0.0f : beta * out[j];
        for (std::size_t i = 0; i < rows; ++i) s += a[i * cols + j];
        out[j] = s;
    }
};

/// Widens before adding: loss and metric sums are reduced in double, as cpu_blas does.
struct widen_to_double {
    BATCHWISE_HOST_DEVICE double operator()(float x) const { return static_cast<double>(x); }
};

}  // namespace detail

/// An execution policy on Thrust. `Backend` supplies what Thrust has no algorithm for (GEMM,
/// and column sums where a BLAS call beats a functor), the execution policy object the
/// algorithms run under, and the device checks made when a model is built.
template <class Backend>
struct thrust_policy {
    static constexpr std::string_view name = Backend::name;
    /// Buffers are the device system's: the model stages batches through host_vector.
    static constexpr bool host_memory = false;

    using backend = Backend;
    using vector = thrust::device_vector<float>;
    /// Host staging the model copies batches through (page-locked memory under CUDA, so that
    /// copies to the device run at full bus speed and asynchronously).
    using host_vector = typename Backend::host_vector;

    /// Called once when a model is built: raises device_error when the device is unusable.
    static void prepare() { Backend::prepare(); }

    /// Grows `v` to at least `n` elements; never shrinks. A failed device allocation arrives as
    /// thrust::system::detail::bad_alloc, a std::bad_alloc, which the model's out-of-memory
    /// recovery handles like any other.
    /// Storage for double-precision gradient accumulators (accumulate<K, double>).
    using double_vector = thrust::device_vector<double>;

    template <class T>
    static void reserve(thrust::device_vector<T>& v, std::size_t n) {
        if (v.size() >= n) return;
        // Work queued on the device may still use the old storage that resize frees.
        Backend::synchronize();
        v.resize(n);
    }
    static double* data(double_vector& v) { return thrust::raw_pointer_cast(v.data()); }
    /// Per-row scratch the backend keeps (column sums by BLAS need a vector of ones), grown
    /// where the model allocates, so that no later call of the step has to.
    static void reserve_rows(std::size_t rows) { Backend::reserve_rows(rows); }
    static float* data(vector& v) { return thrust::raw_pointer_cast(v.data()); }
    static const float* data(const vector& v) { return thrust::raw_pointer_cast(v.data()); }
    static std::size_t size(const vector& v) { return v.size(); }

    /// C = alpha * op(A) * op(B) + beta * C, all row-major.
    static void gemm(transpose ta, transpose tb, float alpha, const_matrix_view a, const_matrix_view b,
                     float beta, matrix_view c) {
        if (c.rows == 0 || c.cols == 0) return;
        Backend::gemm(ta, tb, alpha, a, b, beta, c);
    }

    /// Calls f(i) for every i in [0, n), in any order and concurrently.
    template <class F>
    static void for_each(std::size_t n, const F& f) {
        if (n == 0) return;
        thrust::for_each_n(Backend::policy(), thrust::counting_iterator<std::size_t>(0), n, f);
    }

    static void column_sums(const_matrix_view a, float* out, float beta) {
        if (a.cols == 0) return;
        Backend::column_sums(a, out, beta);
    }

    /// Sum of n floats in double, returned to the host (losses and metrics).
    static double sum(const float* p, std::size_t n) {
        if (n == 0) return 0.0;
        return thrust::transform_reduce(Backend::policy(), p, p + n, detail::widen_to_double{}, 0.0,
                                        thrust::plus<double>());
    }

    static void fill(float* p, std::size_t n, float value) {
        if (n != 0) thrust::fill_n(Backend::policy(), p, n, value);
    }
    static void copy(const float* src, std::size_t n, float* dst) {
        if (n != 0 && src != dst) thrust::copy_n(Backend::policy(), src, n, dst);
    }
    /// Device to host; returns when the floats are on the host.
    static void to_host(const float* src, std::size_t n, float* host_dst) {
        if (n != 0) Backend::to_host(src, n, host_dst);
    }
    /// Host to device, ordered before any later work of this policy.
    static void from_host(const float* host_src, std::size_t n, float* dst) {
        if (n != 0) Backend::from_host(host_src, n, dst);
    }
};

}  // namespace batchwise
