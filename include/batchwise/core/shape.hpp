// Compile-time shapes of one sample (the batch dimension is never part of them), and the
// helpers that print them in summaries and error messages.
#pragma once

#include <array>
#include <cstddef>
#include <string>

namespace batchwise {

/// Shape of one sample: `shape<28, 28>` is a 28x28 image, `shape<10>` a vector of 10.
template <std::size_t... Dims>
struct shape {
    static_assert(sizeof...(Dims) > 0, "A sample shape needs at least one dimension.");
    static_assert(((Dims > 0) && ...), "Every dimension of a sample shape must be positive.");
    static constexpr std::size_t rank = sizeof...(Dims);
    static constexpr std::size_t size = (Dims * ...);
    static constexpr std::array<std::size_t, rank> dims{Dims...};

    /// "(28, 28)", the way Keras prints shapes, without the batch dimension.
    static std::string str() {
        std::string s = "(";
        std::size_t i = 0;
        ((s += (i++ ? ", " : "") + std::to_string(Dims)), ...);
        return s + (rank == 1 ? ",)" : ")");
    }
};

template <class T>
inline constexpr bool is_shape_v = false;
template <std::size_t... D>
inline constexpr bool is_shape_v<shape<D...>> = true;

template <class T>
concept Shape = is_shape_v<T>;

}  // namespace batchwise
