// What the layers with a kernel and a bias share (Dense, Conv2D): the option that drops the bias,
// the choice of initializer among a layer's options, and (from exec/dense_epilogue.hpp) the pass
// that writes the bias into the output rows before the GEMM adds onto them.
#pragma once

#include <cstddef>
#include <type_traits>

#include "batchwise/core/config.hpp"
#include "batchwise/exec/dense_epilogue.hpp"
#include "batchwise/layers/initializers.hpp"

namespace batchwise {

/// Option for Dense and Conv2D: no bias vector (for example before a BatchNorm, which has its own
/// shift).
struct no_bias {};

namespace detail {
template <class Default, class... Options>
struct pick_initializer {
    using type = Default;
};
template <class Default, class First, class... Rest>
struct pick_initializer<Default, First, Rest...> {
    using type = std::conditional_t<Initializer<First>, First,
                                    typename pick_initializer<Default, Rest...>::type>;
};
}  // namespace detail

}  // namespace batchwise
