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
    /// Number of dimensions.
    static constexpr std::size_t rank = sizeof...(Dims);
    /// Number of elements (floats) of one sample.
    static constexpr std::size_t size = (Dims * ...);
    /// The dimensions, outermost first.
    static constexpr std::array<std::size_t, rank> dims{Dims...};

    /// "(28, 28)", the way Keras prints shapes, without the batch dimension.
    static std::string str() {
        std::string s = "(";
        std::size_t i = 0;
        ((s += (i++ ? ", " : "") + std::to_string(Dims)), ...);
        return s + (rank == 1 ? ",)" : ")");
    }
};

/// Whether T is a shape<...>.
template <class T>
inline constexpr bool is_shape_v = false;
/// Every shape<...> is one.
template <std::size_t... D>
inline constexpr bool is_shape_v<shape<D...>> = true;

/// A sample shape: some shape<Dims...>.
template <class T>
concept Shape = is_shape_v<T>;

}  // namespace batchwise
