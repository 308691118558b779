// Batch policies: whether the number of samples in a step is fixed at compile time
// (static_batch<N>) or chosen per step (dynamic_batch). The same code serves both, as Eigen's
// Dynamic does: the check moves from compile time to run time.
#pragma once

#include <cstddef>
#include <limits>
#include <string>
#include <type_traits>

namespace batchwise {

/// The extent of a batch whose number of rows is chosen per step (dynamic_batch).
inline constexpr std::size_t dynamic_extent = std::numeric_limits<std::size_t>::max();

/// What a static batch does with a last batch of fewer than N samples.
enum class ragged_tail {
    /// Run it as a full batch whose missing rows are zero padding, masked out of losses,
    /// gradients, metrics and batch-norm statistics: the result equals a dynamic batch's.
    pad_and_mask,
    /// Leave it out; fit reports the samples left out in History::dropped_samples.
    drop,
};

/// Every micro-batch has exactly N rows; buffers are sized once, at construction. Larger
/// batches are split into micro-batches of N; a smaller one follows Tail.
template <std::size_t N, ragged_tail Tail = ragged_tail::pad_and_mask>
struct static_batch {
    static_assert(N > 0, "static_batch<N> needs N > 0.");
    /// N: the rows of every micro-batch.
    static constexpr std::size_t extent = N;
    /// Buffers are sized once, for N rows.
    static constexpr bool is_static = true;
    /// What a last batch of fewer than N samples does.
    static constexpr ragged_tail tail = Tail;
    /// The batch dimension as summary() prints it: "128".
    static std::string str() { return std::to_string(N); }
};

/// Each step may have any number of samples; buffers grow to the largest seen and are reused.
struct dynamic_batch {
    /// dynamic_extent: any number of rows per step.
    static constexpr std::size_t extent = dynamic_extent;
    /// Buffers grow to the largest batch seen.
    static constexpr bool is_static = false;
    /// Never consulted (no batch falls short of a fixed size); present so that every batch
    /// policy has the member.
    static constexpr ragged_tail tail = ragged_tail::pad_and_mask;
    /// The batch dimension as summary() prints it, as Keras does: "None".
    static std::string str() { return "None"; }
};

/// static_batch<N> or dynamic_batch: an extent, and whether it is fixed (exactly when the
/// extent is not dynamic_extent).
template <class B>
concept BatchPolicy = requires {
    { B::extent } -> std::convertible_to<std::size_t>;
    { B::is_static } -> std::convertible_to<bool>;
} && (B::is_static == (B::extent != dynamic_extent));

}  // namespace batchwise
