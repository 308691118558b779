// Accumulation policies: how many micro-batches, or how many samples, make one optimizer step,
// and in what type gradients are summed across them. Whatever the split, the update equals the
// update of one batch of all the step's samples (docs/exactness.md).
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace batchwise {

/// Accumulator tag: float sums with Kahan compensation, nearly double's accuracy in floats.
struct compensated_float {};

/// The types gradients may be summed in across a window: float, double, or
/// compensated_float (Kahan-compensated floats).
template <class T>
concept AccumulatorType = std::same_as<T, float> || std::same_as<T, double> || std::same_as<T, compensated_float>;

/// One micro-batch per optimizer step: the ordinary training loop.
struct no_accumulation {
    /// A step after every micro-batch.
    static constexpr std::size_t micro_batches = 1;
    /// 0: the window is counted in micro-batches, not samples.
    static constexpr std::size_t samples = 0;
    /// The window is fixed by the type.
    static constexpr bool runtime = false;
    /// Nothing is carried from one micro-batch to the next, so plain float.
    using accumulator_type = float;
};

/// K micro-batches (dataset batches or train_on_batch calls) per optimizer step, whatever their
/// sizes; a shorter last window of an epoch is stepped with the samples it has.
template <std::size_t K, AccumulatorType Accumulator = float>
struct accumulate {
    static_assert(K > 0, "accumulate<K> needs K > 0.");
    /// K micro-batches per optimizer step.
    static constexpr std::size_t micro_batches = K;
    /// 0: the window is counted in micro-batches.
    static constexpr std::size_t samples = 0;
    /// The window is fixed by the type.
    static constexpr bool runtime = false;
    /// The type the window's gradient sums are kept in: float, double or compensated_float.
    using accumulator_type = Accumulator;
};

/// An optimizer step every N samples exactly, whatever the micro-batch sizes: a batch that
/// crosses the boundary is split there.
template <std::size_t N, AccumulatorType Accumulator = float>
struct accumulate_to {
    static_assert(N > 0, "accumulate_to<N> needs N > 0.");
    /// 0: the window is counted in samples.
    static constexpr std::size_t micro_batches = 0;
    /// N samples per optimizer step.
    static constexpr std::size_t samples = N;
    /// The window is fixed by the type.
    static constexpr bool runtime = false;
    /// The type the window's gradient sums are kept in: float, double or compensated_float.
    using accumulator_type = Accumulator;
};

/// The window is chosen at run time, with Model::set_accumulation(accumulation_window{...}).
template <AccumulatorType Accumulator = float>
struct accumulate_runtime {
    /// One micro-batch per step until Model::set_accumulation sets another window.
    static constexpr std::size_t micro_batches = 1;
    /// 0 until Model::set_accumulation sets a window in samples.
    static constexpr std::size_t samples = 0;
    /// The window is set while training, with Model::set_accumulation.
    static constexpr bool runtime = true;
    /// The type the window's gradient sums are kept in: float, double or compensated_float.
    using accumulator_type = Accumulator;
};

/// A run-time window: `samples` > 0 steps every that many samples; otherwise every
/// `micro_batches` micro-batches.
struct accumulation_window {
    /// Micro-batches per optimizer step, when `samples` is 0.
    std::size_t micro_batches = 1;
    /// Samples per optimizer step; 0 counts micro-batches instead.
    std::size_t samples = 0;
};

/// One trainable variable's gradient at the end of a window: the sum over the window's samples
/// (not yet divided by their count), in the execution policy's memory.
struct gradient_buffer {
    /// The variable's name, as Model::variables() gives it ("dense/kernel").
    std::string_view name;
    /// The sums, `size` floats in the execution policy's memory.
    float* data = nullptr;
    /// Number of floats at `data`.
    std::size_t size = 0;
};

/// The optimizer's per-parameter second-moment estimates (Adam's v, RMSprop's mean square), for
/// statistics preconditioned as the optimizer preconditions: a parameter's preconditioner is
/// 1 / (sqrt(v) + epsilon) (Adam, whose bias correction is one factor for every parameter) or
/// 1 / sqrt(v + epsilon) (RMSprop). Empty for other optimizers and before their first step.
struct second_moment_view {
    /// One buffer of estimates per variable the optimizer keeps them for, named as the variable.
    std::span<const gradient_buffer> values{};
    /// The optimizer's epsilon, as the preconditioner adds it.
    float epsilon = 0.0f;
    /// True for 1 / sqrt(v + epsilon) (RMSprop), false for 1 / (sqrt(v) + epsilon) (Adam).
    bool epsilon_inside_root = false;
};

/// What the reduction hook and the step observers see when a window ends, in that order,
/// before the optimizer reads anything (step_window::finish, docs/exactness.md).
struct step_gradients {
    /// The gradient sums still to be applied. When the step was folded into the weight-gradient
    /// GEMM (allowed only by policies that permit it) the variables updated there are absent.
    std::span<const gradient_buffer> gradients;
    /// Samples summed into the gradients. A reduction across processes replaces it with the
    /// global count: the optimizer divides by what is here after the hook.
    std::size_t samples = 0;
    /// The optimizer step being taken, counted from 1.
    std::uint64_t step = 0;
    /// Whether some variables were already updated inside the gradient GEMM.
    bool updated_in_gemm = false;
    /// Layers' step statistics to be summed with the gradients (batch norm's, packed by
    /// StepStatisticsLayer), present only for policies that ask for them with
    /// `reduces_layer_statistics`.
    std::span<const gradient_buffer> statistics{};
    /// The optimizer's second moments as they were before this step (for step observers).
    second_moment_view second_moments{};
};

/// Rows [begin, end) of a call's rows.
struct row_range {
    /// The first row.
    std::size_t begin = 0;
    /// One past the last row.
    std::size_t end = 0;
    /// Number of rows in the range.
    [[nodiscard]] constexpr std::size_t size() const { return end - begin; }
};

/// An accumulation policy that runs code when its window ends: `reduce<Exec>(step_gradients&)`
/// may change the gradient sums and the sample count (the data-parallel all-reduce). It is
/// called once per optimizer step however the step is executed.
template <class A, class Exec>
concept ReducingAccumulation = requires(A& policy, step_gradients& g) { policy.template reduce<Exec>(g); };

/// A policy whose micro-batches are shared among processes: every process is given the same
/// rows, trains only `shard(rows)` of them, and counts all of them towards the window, so the
/// window's boundaries and the samples' positions (dropout's key) are those of one process.
template <class A>
concept ShardingAccumulation = requires(const A& policy, std::size_t rows) {
    { policy.shard(rows) } -> std::same_as<row_range>;
};

/// Whether layers' step statistics (batch norm's moving-average inputs) go through the
/// reduction hook with the gradients: `static constexpr bool reduces_layer_statistics`.
template <class A>
inline constexpr bool reduces_layer_statistics = [] {
    if constexpr (requires { A::reduces_layer_statistics; }) return bool{A::reduces_layer_statistics};
    return false;
}();

/// Whether the window may fold plain SGD into the weight-gradient GEMM under policy A. A policy
/// says so with `static constexpr bool updates_in_gemm`; one that reduces gradients is refused
/// the fold unless it says it needs no kernel gradients (the fold never computes them).
template <class A, class Exec>
inline constexpr bool permits_update_in_gemm = [] {
    if constexpr (requires { A::updates_in_gemm; }) return bool{A::updates_in_gemm};
    return !ReducingAccumulation<A, Exec>;
}();

/// Whether a step under policy A may be replayed from a captured graph. The reduction hook runs
/// on the host between the backward graph and the update graph; a policy whose hook cannot
/// (one that must see every call it makes executed, say) declares `static constexpr bool
/// capturable = false`.
template <class A>
inline constexpr bool permits_capture = [] {
    if constexpr (requires { A::capturable; }) return bool{A::capturable};
    return true;
}();

/// How many micro-batches or samples make a step, where it is set, and in what type gradients
/// are summed. Optional members: reduce<Exec>, updates_in_gemm and capturable, above.
template <class A>
concept AccumulationPolicy = std::default_initializable<A> && std::movable<A> && requires {
    { A::micro_batches } -> std::convertible_to<std::size_t>;
    { A::samples } -> std::convertible_to<std::size_t>;
    { A::runtime } -> std::convertible_to<bool>;
    typename A::accumulator_type;
    requires AccumulatorType<typename A::accumulator_type>;
};

}  // namespace batchwise
