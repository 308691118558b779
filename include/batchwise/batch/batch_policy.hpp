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

/// Every step has exactly N samples; buffers are sized once, at construction.
template <std::size_t N>
struct static_batch {
    static_assert(N > 0, "static_batch<N> needs N > 0.");
    static constexpr std::size_t extent = N;
    static constexpr bool is_static = true;
    static std::string str() { return std::to_string(N); }
};

/// Each step may have any number of samples; buffers grow to the largest seen and are reused.
struct dynamic_batch {
    static constexpr std::size_t extent = dynamic_extent;
    static constexpr bool is_static = false;
    static std::string str() { return "None"; }
};

template <class B>
concept BatchPolicy = requires {
    { B::extent } -> std::convertible_to<std::size_t>;
    { B::is_static } -> std::convertible_to<bool>;
} && (B::is_static == (B::extent != dynamic_extent));

}  // namespace batchwise
