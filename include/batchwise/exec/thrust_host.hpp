// `thrust_host`: the Thrust execution policy on Thrust's host device system (CPP or OMP), with
// GEMM through CBLAS. It exists so that the Thrust code path the GPU runs is compiled by g++ and
// run by the normal test suite on machines without a GPU. Build with
// THRUST_DEVICE_SYSTEM=THRUST_DEVICE_SYSTEM_CPP (the batchwise::thrust_host CMake target sets it)
// and the CUDA toolkit's own Thrust on the include path, the one nvcc uses.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
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

/// A captured step on the host: the recorded calls, each holding the arguments it was recorded
/// with, as a CUDA graph's nodes do. Replaying it runs exactly what launching the graph runs on
/// the GPU, which is how the host test suite checks that a captured step reads everything that
/// changes between steps from memory rather than from its frozen arguments.
class host_graph {
public:
    void launch() const {
        launched_nodes() += calls_.size();
        for (const auto& call : calls_) call();
    }
    /// The recorded calls: the nodes the same step's CUDA graph holds, one per kernel, copy or
    /// cuBLAS call.
    [[nodiscard]] std::size_t size() const { return calls_.size(); }
    /// Nodes run by every launch on this thread so far: the difference across one replayed step
    /// is the number of kernels it launches, which tests pin (a change that adds a pass shows).
    static std::uint64_t& launched_nodes() {
        thread_local std::uint64_t n = 0;
        return n;
    }

private:
    friend struct host_thrust_backend;
    std::vector<std::function<void()>> calls_;
};

/// The host system's backend: Thrust's device memory is host memory here, so cpu_blas's GEMM
/// applies to it directly; everything else goes through Thrust algorithms.
struct host_thrust_backend {
    static constexpr std::string_view name = "thrust_host";
    template <class T>
    using host_array = std::vector<T>;
    using host_vector = host_array<float>;
    using graph = host_graph;

    static void prepare() { cpu_blas::prepare(); }
    static auto policy() { return thrust::device; }
    static void synchronize() {}
    static void reserve_rows(std::size_t) {}

    /// Adds a call to the open capture (thrust_policy records instead of running while one is).
    template <class Call>
    static void record(Call&& call) {
        recording()->calls_.emplace_back(std::forward<Call>(call));
    }
    template <class Transform>
    static void sum_into(const float* p, std::size_t n, double* slot, Transform t) {
        *slot = thrust::transform_reduce(policy(), p, p + n, t, 0.0, thrust::plus<double>());
    }

    static bool capturing() { return recording() != nullptr; }
    /// No buffers are shared between models here.
    static std::uint64_t shared_buffers_generation() { return 0; }
    static void begin_capture() { recording() = std::make_unique<host_graph>(); }
    static host_graph end_capture() {
        if (!capturing()) throw capture_unsupported("end_capture without begin_capture");
        host_graph g = std::move(*recording());
        recording().reset();
        return g;
    }
    static void abort_capture() noexcept { recording().reset(); }
    static void launch(const host_graph& g) { g.launch(); }
    static std::uint64_t launched_graph_nodes() { return host_graph::launched_nodes(); }

    static void gemm(transpose ta, transpose tb, float alpha, const_matrix_view a, const_matrix_view b,
                     float beta, matrix_view c) {
        cpu_blas::gemm(ta, tb, alpha, a, b, beta, c);
    }
    static void column_sums(const_matrix_view a, float* out, float beta) {
        thrust::for_each_n(policy(), thrust::counting_iterator<std::size_t>(0), a.cols,
                           column_sum{a.data, a.rows, a.cols, out, beta});
    }
    /// The host has one stream of work: the copy is done by the time the call returns.
    template <class T>
    static void copy_ahead(const T* host_src, std::size_t n, T* dst) {
        from_host(host_src, n, dst);
    }
    static void await_copies() {}
    static void drain_copies() {}
    /// Work on the host is done when its call returns: nothing to mark or wait for.
    struct event {};
    static void mark(event&) {}
    static void wait_for(const event&) {}
    template <class T>
    static void send_to_host(const T* src, std::size_t n, T* host_dst) {
        to_host(src, n, host_dst);
    }

    template <class T>
    static void to_host(const T* src, std::size_t n, T* host_dst) {
        thrust::copy_n(thrust::device_pointer_cast(src), n, host_dst);
    }
    template <class T>
    static void from_host(const T* host_src, std::size_t n, T* dst) {
        thrust::copy_n(host_src, n, thrust::device_pointer_cast(dst));
    }

private:
    static std::unique_ptr<host_graph>& recording() {
        thread_local std::unique_ptr<host_graph> g;
        return g;
    }
};

}  // namespace detail

/// The Thrust policy on the host: same algorithms and functors as `cuda`, CBLAS for GEMM.
using thrust_host = thrust_policy<detail::host_thrust_backend>;
static_assert(thrust_host::records_calls, "thrust_host captures a step by recording the policy's calls");

}  // namespace batchwise
