// Accumulation policies: how many micro-batches make one optimizer step. This header holds the
// contract and the default (every batch is its own step).
#pragma once

#include <concepts>
#include <cstddef>

namespace batchwise {

/// One micro-batch per optimizer step: the ordinary training loop.
struct no_accumulation {
    /// Number of micro-batches per optimizer step.
    static constexpr std::size_t micro_batches = 1;
    /// Element type of the gradient accumulators.
    using accumulator_type = float;
};

template <class A>
concept AccumulationPolicy = requires {
    { A::micro_batches } -> std::convertible_to<std::size_t>;
    typename A::accumulator_type;
};

}  // namespace batchwise
