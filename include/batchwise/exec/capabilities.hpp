// The optional capabilities of an execution policy, each a named concept. A policy written to
// ExecutionPolicy alone trains correctly; each capability it adds lets the step run faster.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "batchwise/exec/dense_epilogue.hpp"
#include "batchwise/exec/matrix_view.hpp"

namespace batchwise {

/// Buffers are ordinary host memory: the network reads a full batch where the caller keeps it,
/// without a copy (train/step/staging.hpp).
template <class E>
concept HostMemoryPolicy = requires {
    { E::host_memory } -> std::convertible_to<bool>;
    requires bool(E::host_memory);
};

/// The policy names the host buffer type batches are staged through before they are sent to
/// its memory (page-locked memory for cuda); std::vector<float> otherwise.
template <class E>
concept HostStagingPolicy = requires { typename E::host_vector; };

/// Copies from the host may be queued on a side stream (copy_ahead) and waited for
/// (await_copies), so that the next batch travels while the current step computes.
template <class E>
concept StagedTransferPolicy = requires(const float* src, float* dst, std::size_t n) {
    E::copy_ahead(src, n, dst);
    E::await_copies();
    E::synchronize();
};

/// The device can read a batch straight from the caller's page-locked memory (is_pinned), and
/// count its non-finite values itself (count_non_finite, with scratch grown by
/// reserve_reduction), so that the host never reads such a batch unless it holds a bad value:
/// Note [deferred input check] in train/step/staging.hpp.
template <class E>
concept DeviceInputCheckPolicy =
    !HostMemoryPolicy<E> && StagedTransferPolicy<E> && requires(const float* p, std::size_t n) {
        { E::is_pinned(p) } -> std::convertible_to<bool>;
        { E::count_non_finite(p, n) } -> std::convertible_to<double>;
        E::reserve_reduction(n);
    };

/// A step can be recorded into a graph and replayed (train/step/captured.hpp): begin_capture
/// and end_capture bracket the recording, sums of a recorded step land in device slots,
/// launch replays it, and shared_buffers_generation says when scratch the graphs point into was
/// reallocated. `array<T>` and `host_array<T>` hold the step's scalars on both sides. A graph
/// hands its results back with send_to_host, and the host waits for them on an event (mark,
/// wait_for) only when it reads them, so that it queues the next step without waiting.
template <class E>
concept GraphCapturePolicy =
    StagedTransferPolicy<E> && requires(const typename E::graph& g, double* slots, std::size_t n) {
        typename E::template array<double>;
        typename E::template host_array<double>;
        E::begin_capture(slots, n);
        { E::end_capture() } -> std::same_as<typename E::graph>;
        E::abort_capture();
        E::launch(g);
        { E::captured_sums() } -> std::convertible_to<std::size_t>;
        { E::shared_buffers_generation() } -> std::convertible_to<std::uint64_t>;
        E::send_to_host(slots, n, slots);
        E::drain_copies();
    } && requires(typename E::event& e) {
        E::mark(e);
        E::wait_for(e);
    };

/// A Dense layer's passes can be fused (exec/dense_epilogue.hpp): dense_forward<Fn> is
/// y = Fn(x W + b) in one call, with Fn an activation the policy's fuses_activation<Fn> accepts
/// (no_activation always), and dense_weight_grad writes dW = x^T dy and the bias gradient in one
/// call. cuda runs them as cuBLASLt GEMMs with epilogues; thrust_host as one recorded call each,
/// so that a captured step holds as many nodes as the GPU's. Sequential gives the ReLU after a
/// Dense to the Dense's forward (Dense::forward_activated) on such a policy.
template <class E>
concept FusedDensePolicy = requires(const_matrix_view v, matrix_view m, const float* b, float* g) {
    requires bool(E::template fuses_activation<no_activation>);
    E::template dense_forward<no_activation>(v, v, b, m);
    E::dense_weight_grad(v, v, m, g);
};

/// A FusedDensePolicy whose dense_forward applies the activation functor Fn (ReLU under cuda).
template <class E, class Fn>
concept FusesActivation = FusedDensePolicy<E> && requires { requires bool(E::template fuses_activation<Fn>); };

/// A FusesActivation policy whose dense_input_grad<Fn> multiplies a Dense's input gradient by
/// Fn's derivative (cuBLASLt's DRELU epilogue, reading the mask dense_forward<Fn> wrote):
/// Sequential then skips the backward of a ReLU between two Dense layers.
template <class E, class Fn>
concept FusesActivationGradient =
    FusesActivation<E, Fn> && requires(const_matrix_view v, matrix_view m, const float* p, const void* mask) {
        E::template dense_input_grad<Fn>(v, v, p, mask, m);
        { E::activation_mask_bytes(std::size_t{1}, std::size_t{1}) } -> std::convertible_to<std::size_t>;
    };

namespace detail {
/// E::activation_mask_bytes(rows, cols), or 0 for a policy that keeps no such masks.
template <class E>
constexpr std::size_t activation_mask_bytes(std::size_t rows, std::size_t cols) {
    if constexpr (requires { E::activation_mask_bytes(rows, cols); }) {
        return E::activation_mask_bytes(rows, cols);
    } else {
        return 0;
    }
}
}  // namespace detail

/// Storage of doubles, for accumulate<K, double>; without it that accumulator is refused at
/// compile time (compensated_float works on any policy).
template <class E>
concept DoubleStoragePolicy = requires(typename E::double_vector& v, std::size_t n) {
    E::reserve(v, n);
    { E::data(v) } -> std::same_as<double*>;
};

/// Per-row scratch of the policy's own (cuda's vector of ones for column sums by GEMM), grown
/// where the model allocates so that no later call of a step has to.
template <class E>
concept RowScratchPolicy = requires(std::size_t rows) { E::reserve_rows(rows); };

namespace detail {
template <class E>
struct host_staging {
    using type = std::vector<float>;
};
template <HostStagingPolicy E>
struct host_staging<E> {
    using type = typename E::host_vector;
};

template <class E>
struct double_storage {
    struct unavailable {};
    using type = unavailable;
};
template <DoubleStoragePolicy E>
struct double_storage<E> {
    using type = typename E::double_vector;
};
}  // namespace detail

/// The host buffer batches are staged through on policy E.
template <class E>
using host_staging_t = typename detail::host_staging<E>::type;
/// Where double accumulators live on policy E (an empty tag type when it has none).
template <class E>
using double_storage_t = typename detail::double_storage<E>::type;

}  // namespace batchwise
