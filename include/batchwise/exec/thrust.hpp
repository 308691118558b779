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
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include <thrust/copy.h>
#include <thrust/device_vector.h>
#include <thrust/execution_policy.h>
#include <thrust/fill.h>
#include <thrust/for_each.h>
#include <thrust/functional.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/transform_reduce.h>

#include "batchwise/core/config.hpp"
#include "batchwise/exec/dense_epilogue.hpp"
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

/// 1 for an infinite or NaN value, else 0: summed, the number of non-finite values (x - x is 0
/// for every finite x and NaN otherwise).
struct non_finite_as_double {
    BATCHWISE_HOST_DEVICE double operator()(float x) const { return x - x == 0.0f ? 0.0 : 1.0; }
};

/// A step being captured reached something a graph cannot hold: a read back to the host, an
/// allocation, a reduction with nowhere to go. The model then trains that step eagerly.
class capture_unsupported : public std::logic_error {
public:
    using std::logic_error::logic_error;
};

/// Where the reductions of a captured step go: device slots, filled in call order.
struct capture_sums {
    double* slots = nullptr;
    std::size_t capacity = 0;
    std::size_t used = 0;
};

}  // namespace detail

/// An execution policy on Thrust. `Backend` supplies what Thrust has no algorithm for (GEMM,
/// and column sums where a BLAS call beats a functor), the execution policy object the
/// algorithms run under, the device checks made when a model is built, and step capture.
///
/// Capture: between begin_capture and end_capture nothing runs; every call is recorded into a
/// graph that launch() replays with the arguments it was recorded with (CUDA graphs on the GPU,
/// a list of recorded calls on the host, with the same rules). Reading back to the host and
/// allocating are refused with detail::capture_unsupported; sum() writes its result into the
/// next device slot given to begin_capture and returns 0.
template <class Backend>
struct thrust_policy {
    /// The policy's name in summaries and messages: "thrust_host" or "cuda".
    static constexpr std::string_view name = Backend::name;
    /// Buffers are the device system's: the model stages batches through host_vector.
    static constexpr bool host_memory = false;

    /// What runs GEMM and column sums, and captures steps (see the class description).
    using backend = Backend;
    /// Owning storage in the device system's memory.
    using vector = thrust::device_vector<float>;
    /// Host staging the model copies batches through (page-locked memory under CUDA, so that
    /// copies to the device run at full bus speed and asynchronously).
    using host_vector = typename Backend::host_vector;

    /// Called once when a model is built: raises device_error when the device is unusable.
    static void prepare() { Backend::prepare(); }
    /// Waits until the work queued so far has run.
    static void synchronize() { Backend::synchronize(); }
    /// Whether the host memory at p is page-locked, so that the device can copy a batch from
    /// it directly instead of through the staging buffer.
    static bool is_pinned(const void* p) {
        if constexpr (requires { Backend::is_pinned(p); }) {
            return Backend::is_pinned(p);
        } else {
            return false;
        }
    }

    /// Storage for double-precision gradient accumulators (accumulate<K, double>).
    using double_vector = thrust::device_vector<double>;

    /// Device storage of any trivially copyable type (the scalars and sum slots of a captured
    /// step).
    template <class T>
    using array = thrust::device_vector<T>;
    /// Host-side counterpart of array<T>, for staging: page-locked under CUDA, which graph copies
    /// need.
    template <class T>
    using host_array = typename Backend::template host_array<T>;

    /// Grows `v` to at least `n` elements; never shrinks. A failed device allocation arrives as
    /// thrust::system::detail::bad_alloc, a std::bad_alloc, which the model's out-of-memory
    /// recovery handles like any other.
    template <class T>
    static void reserve(thrust::device_vector<T>& v, std::size_t n) {
        if (v.size() >= n) return;
        if (capturing()) throw detail::capture_unsupported("an allocation (growing a buffer)");
        // Work queued on the device may still use the old storage that resize frees.
        Backend::synchronize();
        v.resize(n);
    }
    /// Raises std::bad_alloc unless `bytes` more device memory is free now (cudaMemGetInfo
    /// under CUDA): the model asks before it grows its buffers, so a step too large for the
    /// device is split into micro-batches as one too large for the budget is.
    static void require_free_memory(std::size_t bytes)
        requires requires { Backend::require_free_memory(bytes); }
    {
        Backend::require_free_memory(bytes);
    }
    /// Device memory free now (cudaMemGetInfo under CUDA): a model on the device is held to no
    /// more than what was free when it was built (Model's memory budget).
    static std::size_t free_memory_bytes()
        requires requires { Backend::free_memory_bytes(); }
    {
        return Backend::free_memory_bytes();
    }
    /// What require_free_memory keeps free beyond the buffers: cuBLAS's and Thrust's own
    /// allocations, and the graphs' nodes.
    static constexpr std::size_t headroom_bytes = std::size_t{64} << 20;

    /// Raw device pointer to the first element.
    template <class T>
    static T* data(thrust::device_vector<T>& v) {
        return thrust::raw_pointer_cast(v.data());
    }
    /// Per-row scratch the backend keeps (column sums by BLAS need a vector of ones), grown
    /// where the model allocates, so that no later call of the step has to.
    static void reserve_rows(std::size_t rows) { Backend::reserve_rows(rows); }
    /// Raw device pointer to the first element, read-only.
    static const float* data(const vector& v) { return thrust::raw_pointer_cast(v.data()); }
    /// Elements held (at least as many as reserved).
    static std::size_t size(const vector& v) { return v.size(); }

    /// C = alpha * op(A) * op(B) + beta * C, all row-major.
    static void gemm(transpose ta, transpose tb, float alpha, const_matrix_view a, const_matrix_view b,
                     float beta, matrix_view c) {
        if (c.rows == 0 || c.cols == 0) return;
        if (recording()) return record([=] { Backend::gemm(ta, tb, alpha, a, b, beta, c); });
        Backend::gemm(ta, tb, alpha, a, b, beta, c);
    }

    // ---- fused Dense (FusedDensePolicy) ----------------------------------------------------
    // One call, one graph node where the backend fuses (cuBLASLt epilogues under cuda); on the
    // host the same passes as the unfused calls, in the same order, inside one recorded call, so
    // that thrust_host still matches cpu_blas bit for bit.

    /// Whether dense_forward<Fn> may be asked for: Fn has an epilogue (ReLU), or is none.
    template <class Fn>
    static constexpr bool fuses_activation = EpilogueActivation<Fn>;

    /// Bytes of the mask of an activation's derivative that dense_forward writes for rows x cols
    /// outputs, for dense_input_grad to read (cuBLASLt's ReLU bit mask, a row of whole 128-bit
    /// words per sample); 0 where the backend keeps none and reads the activated output instead.
    static constexpr std::size_t activation_mask_bytes(std::size_t rows, std::size_t cols) {
        if constexpr (requires { Backend::activation_mask_bytes(rows, cols); }) {
            return Backend::activation_mask_bytes(rows, cols);
        } else {
            return 0;
        }
    }

    /// y = Fn(x w + bias) (no bias where bias is null), row-major; the bias is one row of y.cols.
    /// Where `mask` is given (activation_mask_bytes of room), the backend may also write there
    /// where Fn's derivative is zero.
    /// Returns whether the mask was written; a backend that cannot write it computes y all the
    /// same, and the input gradient then reads the activated output.
    template <class Fn>
        requires fuses_activation<Fn>
    static bool dense_forward(const_matrix_view x, const_matrix_view w, const float* bias, matrix_view y,
                              void* mask = nullptr) {
        if (y.rows == 0 || y.cols == 0) return false;
        if (recording()) {
            record([=] { (void)run_dense_forward<Fn>(x, w, bias, y, nullptr); });
            return false;
        }
        return run_dense_forward<Fn>(x, w, bias, y, mask);
    }

    /// dx = (dy w^T) times Fn's derivative at `activated`, Fn's output (a Dense's input
    /// gradient through the activation before it, whose own backward is then skipped). `mask` is
    /// what dense_forward<Fn> wrote of `activated`, or null.
    template <class Fn>
        requires fuses_activation<Fn>
    static void dense_input_grad(const_matrix_view dy, const_matrix_view w, const float* activated,
                                 const void* mask, matrix_view dx) {
        if (dx.rows == 0 || dx.cols == 0) return;
        if (recording()) return record([=] { run_dense_input_grad<Fn>(dy, w, activated, mask, dx); });
        run_dense_input_grad<Fn>(dy, w, activated, mask, dx);
    }

    /// dw = x^T dy and bias_grad = the column sums of dy, both overwritten (a Dense's gradients
    /// when not accumulating: an epilogue's bias gradient cannot add to what is there).
    static void dense_weight_grad(const_matrix_view x, const_matrix_view dy, matrix_view dw, float* bias_grad) {
        if (dw.rows == 0 || dw.cols == 0) return;
        if (recording()) return record([=] { run_dense_weight_grad(x, dy, dw, bias_grad); });
        run_dense_weight_grad(x, dy, dw, bias_grad);
    }

    /// Calls f(i) for every i in [0, n), in any order and concurrently.
    template <class F>
    static void for_each(std::size_t n, const F& f) {
        if (n == 0) return;
        if (recording()) return record([n, f] { thrust_policy::for_each(n, f); });
        thrust::for_each_n(Backend::policy(), thrust::counting_iterator<std::size_t>(0), n, f);
    }

    /// out[j] = beta * out[j] + sum_i a(i, j): bias and batch-norm parameter gradients.
    static void column_sums(const_matrix_view a, float* out, float beta) {
        if (a.cols == 0) return;
        if (recording()) return record([=] { Backend::column_sums(a, out, beta); });
        Backend::column_sums(a, out, beta);
    }

    /// Sum of n floats in double, returned to the host (losses and metrics). While a step is
    /// captured: written into the next device slot instead, and 0 returned.
    template <class Transform = detail::widen_to_double>
    static double sum(const float* p, std::size_t n, Transform t = {}) {
        if (capturing()) {
            detail::capture_sums& sums = capture_sums();
            if (sums.used == sums.capacity) throw detail::capture_unsupported("more reductions than one each for the loss and the metrics");
            double* slot = sums.slots + sums.used++;
            if (recording()) {
                record([=] { Backend::sum_into(p, n, slot, t); });
            } else {
                Backend::sum_into(p, n, slot, t);
            }
            return 0.0;
        }
        if (n == 0) return 0.0;
        if constexpr (requires(double& out) { Backend::try_sum(p, n, out, t); }) {
            double out = 0.0;
            if (Backend::try_sum(p, n, out, t)) return out;
        }
        return thrust::transform_reduce(Backend::policy(), p, p + n, t, 0.0, thrust::plus<double>());
    }

    /// for_each(n, f) and then sum(p, n): a loss's rows, each writing its loss into p, and their
    /// sum. While a step is captured it is one node (on cuda, one reduction whose transform runs
    /// the row; on the host the two passes, in order, in one recorded call); eager, the two calls.
    template <class F>
    static double for_each_then_sum(std::size_t n, const F& f, const float* p) {
        if (!capturing()) {
            for_each(n, f);
            return sum(p, n);
        }
        detail::capture_sums& sums = capture_sums();
        if (sums.used == sums.capacity) throw detail::capture_unsupported("more reductions than one each for the loss and the metrics");
        double* slot = sums.slots + sums.used++;
        if (recording()) {
            record([=] { run_for_each_then_sum_into(n, f, p, slot); });
        } else {
            run_for_each_then_sum_into(n, f, p, slot);
        }
        return 0.0;
    }

    /// How many of n floats are infinite or NaN, reduced as sum() is (into a slot while a step
    /// is captured): the device's check of a batch sent to it straight from pinned memory.
    static double count_non_finite(const float* p, std::size_t n) {
        return sum(p, n, detail::non_finite_as_double{});
    }

    /// Makes reductions over up to `items` values allocation-free (their scratch), so that
    /// count_non_finite over a whole batch can be captured.
    static void reserve_reduction(std::size_t items) {
        if constexpr (requires { Backend::reserve_reduction(items); }) Backend::reserve_reduction(items);
    }

    /// Sets n floats at p to value.
    static void fill(float* p, std::size_t n, float value) {
        if (n == 0) return;
        if (recording()) return record([=] { thrust_policy::fill(p, n, value); });
        thrust::fill_n(Backend::policy(), p, n, value);
    }
    /// Copies n floats within device memory.
    static void copy(const float* src, std::size_t n, float* dst) {
        if (n == 0 || src == dst) return;
        if (recording()) return record([=] { thrust_policy::copy(src, n, dst); });
        thrust::copy_n(Backend::policy(), src, n, dst);
    }
    /// Device to host; returns when the values are on the host.
    template <class T>
    static void to_host(const T* src, std::size_t n, T* host_dst) {
        if (capturing()) throw detail::capture_unsupported("a read of device memory on the host");
        if (n != 0) Backend::to_host(src, n, host_dst);
    }
    /// Host to device, ordered before any later work of this policy. A captured copy reads the
    /// host memory when the graph runs, not when it is recorded.
    template <class T>
    static void from_host(const T* host_src, std::size_t n, T* dst) {
        if (n == 0) return;
        if (recording()) return record([=] { Backend::from_host(host_src, n, dst); });
        Backend::from_host(host_src, n, dst);
    }

    /// Host to device on a side stream (under CUDA), so that the copy runs while work already
    /// queued computes; returns at once. await_copies() orders all later work of this policy
    /// after every such copy. The caller keeps the host memory unchanged, and the destination
    /// unread by queued work, until then.
    template <class T>
    static void copy_ahead(const T* host_src, std::size_t n, T* dst) {
        if (capturing()) throw detail::capture_unsupported("a copy on the side stream");
        if (n != 0) Backend::copy_ahead(host_src, n, dst);
    }
    /// Orders all later work of this policy after every copy_ahead so far.
    static void await_copies() { Backend::await_copies(); }
    /// Returns when every copy_ahead so far has read its host memory, which may then be
    /// rewritten: a replayed step returns without waiting for the copy of its batch.
    static void drain_copies() { Backend::drain_copies(); }

    /// Device to page-locked host memory (host_array), queued without waiting: the values are
    /// there once an event marked after it has been waited for. Unlike to_host it may be
    /// captured, which is how a replayed step hands its results back with the host waiting
    /// for nothing inside the step.
    template <class T>
    static void send_to_host(const T* src, std::size_t n, T* pinned_dst) {
        if (n == 0) return;
        if (recording()) return record([=] { Backend::send_to_host(src, n, pinned_dst); });
        Backend::send_to_host(src, n, pinned_dst);
    }
    /// A point in the queue of work the host can wait for (a CUDA event; nothing on the host,
    /// where work is done when its call returns).
    using event = typename Backend::event;
    /// Marks the work queued so far: wait_for(e) returns once it has run.
    static void mark(event& e) {
        if (capturing()) throw detail::capture_unsupported("an event marked inside a capture");
        Backend::mark(e);
    }
    /// Returns once the work marked by e has run.
    static void wait_for(const event& e) { Backend::wait_for(e); }

    // ---- capture ----------------------------------------------------------------------------

    /// A captured step, replayed by launch().
    using graph = typename Backend::graph;
    /// Whether this backend captures by recording the policy's calls (the host) rather than by
    /// letting them run into a captured stream (CUDA).
    static constexpr bool records_calls = requires { Backend::record([] {}); };

    /// Whether a step is being captured now.
    static bool capturing() { return Backend::capturing(); }
    /// Starts recording; sums go to slots[0 .. capacity) in call order.
    static void begin_capture(double* slots, std::size_t capacity) {
        if (capturing()) throw detail::capture_unsupported("a capture inside a capture");
        Backend::begin_capture();
        capture_sums() = {slots, capacity, 0};
    }
    /// Ends recording and returns the graph, ready to launch.
    static graph end_capture() { return Backend::end_capture(); }
    /// Ends a capture that failed part-way, dropping what was recorded.
    static void abort_capture() noexcept { Backend::abort_capture(); }
    /// Changes when scratch that every model shares (and graphs refer to) is reallocated:
    /// graphs captured under another value must be captured again.
    static std::uint64_t shared_buffers_generation() { return Backend::shared_buffers_generation(); }
    /// How many sums the last capture sent to slots.
    static std::size_t captured_sums() { return capture_sums().used; }
    /// Runs a graph, ordered after all work submitted before.
    static void launch(const graph& g) { Backend::launch(g); }
    /// Nodes (kernels, copies, library calls) of every graph launched so far by this thread: the
    /// difference across one replayed step is what the step launches (benchmarks/gpu_mlp.cu
    /// prints it; tests pin it on the host).
    static std::uint64_t launched_graph_nodes() { return Backend::launched_graph_nodes(); }

private:
    /// Whether calls are to be recorded instead of run: while a capture is open, on a backend
    /// that captures by recording. Checked before a call's closure is built, so that eager calls
    /// copy nothing.
    static bool recording() {
        if constexpr (records_calls) {
            return capturing();
        } else {
            return false;
        }
    }
    // The backend's fused call when it has one and takes the shapes; else the unfused passes.
    template <class Fn>
    static bool run_dense_forward(const_matrix_view x, const_matrix_view w, const float* bias, matrix_view y,
                                  void* mask) {
        if constexpr (requires { Backend::template try_dense_forward<Fn>(x, w, bias, y, mask); }) {
            const int ran = Backend::template try_dense_forward<Fn>(x, w, bias, y, mask);
            if (ran != 0) return ran == 2;
        }
        if (bias != nullptr) {
            thrust::for_each_n(Backend::policy(), thrust::counting_iterator<std::size_t>(0), y.rows,
                               detail::copy_row_vector{y.data, bias, y.cols});
        }
        Backend::gemm(transpose::no, transpose::no, 1.0f, x, w, bias != nullptr ? 1.0f : 0.0f, y);
        if constexpr (Fn::epilogue != epilogue_activation::none) {
            thrust::for_each_n(Backend::policy(), thrust::counting_iterator<std::size_t>(0), y.size(),
                               detail::activate_in_place<Fn>{y.data});
        }
        return false;
    }
    template <class Fn>
    static void run_dense_input_grad(const_matrix_view dy, const_matrix_view w, const float* activated,
                                     const void* mask, matrix_view dx) {
        if constexpr (requires { Backend::template try_dense_input_grad<Fn>(dy, w, mask, dx); }) {
            if (mask != nullptr && Backend::template try_dense_input_grad<Fn>(dy, w, mask, dx)) return;
        }
        Backend::gemm(transpose::no, transpose::yes, 1.0f, dy, w, 0.0f, dx);
        thrust::for_each_n(Backend::policy(), thrust::counting_iterator<std::size_t>(0), dx.size(),
                           detail::activation_backward<Fn>{activated, dx.data, dx.data});
    }
    template <class F>
    static void run_for_each_then_sum_into(std::size_t n, const F& f, const float* p, double* slot) {
        if constexpr (requires { Backend::try_rows_sum_into(n, f, p, slot); }) {
            if (Backend::try_rows_sum_into(n, f, p, slot)) return;
        }
        if (n != 0) thrust::for_each_n(Backend::policy(), thrust::counting_iterator<std::size_t>(0), n, f);
        Backend::sum_into(p, n, slot, detail::widen_to_double{});
    }
    static void run_dense_weight_grad(const_matrix_view x, const_matrix_view dy, matrix_view dw, float* bias_grad) {
        if constexpr (requires { Backend::try_dense_weight_grad(x, dy, dw, bias_grad); }) {
            if (Backend::try_dense_weight_grad(x, dy, dw, bias_grad)) return;
        }
        Backend::gemm(transpose::yes, transpose::no, 1.0f, x, dy, 0.0f, dw);
        if (bias_grad != nullptr && dy.cols != 0) Backend::column_sums(dy, bias_grad, 0.0f);
    }

    template <class Call>
    static void record(Call&& call) {
        if constexpr (records_calls) Backend::record(std::forward<Call>(call));
    }

    static detail::capture_sums& capture_sums() {
        thread_local detail::capture_sums sums;
        return sums;
    }
};

}  // namespace batchwise
