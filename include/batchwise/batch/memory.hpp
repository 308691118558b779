// What a model's training costs in memory, known before anything is allocated: bytes that do not
// depend on the batch (parameters, gradients, optimizer state, accumulators) and bytes per
// micro-batch row. A memory_budget holds a model to a ceiling; a step that would exceed it is
// split into smaller micro-batches instead of failing.
#pragma once

#include <cstddef>
#include <limits>

namespace batchwise {

/// The most bytes a model may hold in buffers (parameters, state and per-batch buffers).
struct memory_budget {
    /// The ceiling, in bytes; no ceiling by default.
    std::size_t bytes = std::numeric_limits<std::size_t>::max();
};

/// What training a model holds in memory (Model::estimate_memory(rows, slots), a
/// constexpr exact to the float): bytes that do not depend on the batch, and bytes for a
/// micro-batch of `rows` rows.
struct memory_estimate {
    std::size_t parameter_bytes = 0;    ///< every variable's values
    std::size_t gradient_bytes = 0;     ///< one gradient per trainable value
    std::size_t optimizer_bytes = 0;    ///< optimizer slots
    std::size_t accumulator_bytes = 0;  ///< double or compensated gradient sums
    std::size_t layer_state_bytes = 0;  ///< other per-layer state (batch norm's step statistics)
    std::size_t batch_bytes = 0;        ///< activations, gradients and staging for `rows` samples
    /// The micro-batch rows that batch_bytes is for.
    std::size_t rows = 0;

    /// Bytes that do not depend on the batch size.
    [[nodiscard]] constexpr std::size_t fixed_bytes() const {
        return parameter_bytes + gradient_bytes + optimizer_bytes + accumulator_bytes + layer_state_bytes;
    }
    /// Everything, for `rows` rows: what a memory_budget is compared with.
    [[nodiscard]] constexpr std::size_t total_bytes() const { return fixed_bytes() + batch_bytes; }
};

/// The largest number of rows whose bytes(rows) fits in `bytes`, 0 if not even one does; bytes
/// must grow with rows. Doubling then bisection: a few dozen evaluations for any budget.
template <class Bytes>
constexpr std::size_t largest_rows_within(std::size_t bytes, Bytes&& bytes_for) {
    if (bytes_for(std::size_t{1}) > bytes) return 0;
    std::size_t lo = 1, hi = 2;
    while (hi < (std::size_t{1} << 40) && bytes_for(hi) <= bytes) lo = hi, hi *= 2;
    while (hi - lo > 1) {
        const std::size_t mid = lo + (hi - lo) / 2;
        (bytes_for(mid) <= bytes ? lo : hi) = mid;
    }
    return lo;
}

namespace detail {
/// Raises std::bad_alloc unless buffers holding `held` bytes can grow to `needed` with the
/// policy's headroom to spare, on a policy that can tell (cpu_blas probes the heap, cuda asks
/// the driver); elsewhere nothing is checked before the allocation itself.
template <class Exec>
void require_memory_for_growth(std::size_t held, std::size_t needed) {
    if constexpr (requires { Exec::require_free_memory(std::size_t{}); }) {
        Exec::require_free_memory(needed - (held < needed ? held : needed) + Exec::headroom_bytes);
    }
}

/// The budget a model on Exec is held to: the caller's, and no more than the memory free when
/// it is built where the policy has memory of its own to ask about (cuda: cudaMemGetInfo), so
/// that estimate_memory's checks and max_batch_for(memory_budget_bytes()) see the device.
template <class Exec>
std::size_t policy_budget(std::size_t bytes) {
    if constexpr (requires { Exec::free_memory_bytes(); }) {
        Exec::prepare();  // a machine without a usable device raises device_error here
        const std::size_t free = Exec::free_memory_bytes();
        return bytes < free ? bytes : free;
    } else {
        return bytes;
    }
}
}  // namespace detail

}  // namespace batchwise
