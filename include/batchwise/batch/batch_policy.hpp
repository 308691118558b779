// Batch policies: whether the number of samples in a step is fixed at compile time
// (static_batch<N>) or chosen per step (dynamic_batch). The same code serves both, as Eigen's
// Dynamic does: the check moves from compile time to run time.
#pragma once

#include <cstddef>
#include <limits>
#include <string>
#include <type_traits>

namespace batchwise {

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
    static constexpr std::size_t extent = N;
    static constexpr bool is_static = true;
    static constexpr ragged_tail tail = Tail;
    static std::string str() { return std::to_string(N); }
};

/// Each step may have any number of samples; buffers grow to the largest seen and are reused.
struct dynamic_batch {
    static constexpr std::size_t extent = dynamic_extent;
    static constexpr bool is_static = false;
    static constexpr ragged_tail tail = ragged_tail::pad_and_mask;
    static std::string str() { return "None"; }
};

template <class B>
concept BatchPolicy = requires {
    { B::extent } -> std::convertible_to<std::size_t>;
    { B::is_static } -> std::convertible_to<bool>;
} && (B::is_static == (B::extent != dynamic_extent));

}  // namespace batchwise
