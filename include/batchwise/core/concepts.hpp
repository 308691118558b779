// The concepts that every policy and layer family satisfies, so that a wrong template argument
// fails with one readable line instead of a page of instantiation backtrace.
#pragma once

#include <concepts>
#include <cstddef>
#include <string_view>

#include "batchwise/batch/accumulation.hpp"
#include "batchwise/batch/batch_policy.hpp"
#include "batchwise/core/shape.hpp"
#include "batchwise/exec/matrix_view.hpp"

namespace batchwise {

namespace detail {
struct index_probe {
    void operator()(std::size_t) const {}
};
}  // namespace detail

/// Where the arithmetic runs. A policy provides owning float storage and the small vocabulary
/// every layer is written against: GEMM with transposes, an index-parallel for_each over
/// functors, column sums, a reduction to the host, fills and copies. See docs/concepts.md.
template <class E>
concept ExecutionPolicy = requires(typename E::vector& v, const typename E::vector& cv,
                                   const_matrix_view a, matrix_view c, float* p, const float* cp,
                                   std::size_t n) {
    { E::name } -> std::convertible_to<std::string_view>;
    E::prepare();
    E::reserve(v, n);
    { E::data(v) } -> std::same_as<float*>;
    { E::data(cv) } -> std::same_as<const float*>;
    { E::size(cv) } -> std::convertible_to<std::size_t>;
    E::gemm(transpose::no, transpose::yes, 1.0f, a, a, 0.0f, c);
    E::for_each(n, detail::index_probe{});
    E::column_sums(a, p, 0.0f);
    { E::sum(cp, n) } -> std::convertible_to<double>;
    E::fill(p, n, 0.0f);
    E::copy(cp, n, p);
    E::to_host(cp, n, p);
    E::from_host(cp, n, p);
};

/// A layer type as written in a Sequential list (`Dense<256>`, `ReLU`). It names itself, says
/// which input shapes it accepts, maps an accepted input shape to its output shape, and has an
/// implementation `impl<In, Exec>` satisfying LayerImpl. See docs/concepts.md for the prose.
template <class L>
concept Layer = requires {
    { L::name } -> std::convertible_to<std::string_view>;
    { L::template accepts<shape<1>> } -> std::convertible_to<bool>;
    typename L::template requirement<shape<1>>;
};

}  // namespace batchwise
