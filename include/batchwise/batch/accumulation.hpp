// Accumulation policies: how many micro-batches, or how many samples, make one optimizer step,
// and in what type gradients are summed across them. Whatever the split, the update equals the
// update of one batch of all the step's samples (docs/exactness.md).
#pragma once

#include <concepts>
#include <cstddef>

namespace batchwise {

/// Accumulator tag: float sums with Kahan compensation, nearly double's accuracy in floats.
struct compensated_float {};

template <class T>
concept AccumulatorType = std::same_as<T, float> || std::same_as<T, double> || std::same_as<T, compensated_float>;

/// One micro-batch per optimizer step: the ordinary training loop.
struct no_accumulation {
    static constexpr std::size_t micro_batches = 1;
    static constexpr std::size_t samples = 0;
    static constexpr bool runtime = false;
    using accumulator_type = float;
};

/// K micro-batches (dataset batches or train_on_batch calls) per optimizer step, whatever their
/// sizes; a shorter last window of an epoch is stepped with the samples it has.
template <std::size_t K, AccumulatorType Accumulator = float>
struct accumulate {
    static_assert(K > 0, "accumulate<K> needs K > 0.");
    static constexpr std::size_t micro_batches = K;
    static constexpr std::size_t samples = 0;
    static constexpr bool runtime = false;
    using accumulator_type = Accumulator;
};

/// An optimizer step every N samples exactly, whatever the micro-batch sizes: a batch that
/// crosses the boundary is split there.
template <std::size_t N, AccumulatorType Accumulator = float>
struct accumulate_to {
    static_assert(N > 0, "accumulate_to<N> needs N > 0.");
    static constexpr std::size_t micro_batches = 0;
    static constexpr std::size_t samples = N;
    static constexpr bool runtime = false;
    using accumulator_type = Accumulator;
};

/// The window is chosen at run time, with Model::set_accumulation(accumulation_window{...}).
template <AccumulatorType Accumulator = float>
struct accumulate_runtime {
    static constexpr std::size_t micro_batches = 1;
    static constexpr std::size_t samples = 0;
    static constexpr bool runtime = true;
    using accumulator_type = Accumulator;
};

/// A run-time window: `samples` > 0 steps every that many samples; otherwise every
/// `micro_batches` micro-batches.
struct accumulation_window {
    std::size_t micro_batches = 1;
    std::size_t samples = 0;
};

template <class A>
concept AccumulationPolicy = requires {
    { A::micro_batches } -> std::convertible_to<std::size_t>;
    { A::samples } -> std::convertible_to<std::size_t>;
    { A::runtime } -> std::convertible_to<bool>;
    typename A::accumulator_type;
    requires AccumulatorType<typename A::accumulator_type>;
};

}  // namespace batchwise
