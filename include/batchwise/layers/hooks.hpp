// The optional hooks of a layer implementation, each a named concept: what a layer may add to
// LayerImpl so that Sequential and the step pipeline can do more with it (docs/concepts.md).
#pragma once

#include <concepts>
#include <cstddef>
#include <string_view>
#include <tuple>

#include "batchwise/batch/accumulation.hpp"
#include "batchwise/layers/layer.hpp"

namespace batchwise {

/// Gathers statistics over a whole optimizer step (batch norm's moving averages): begin_step()
/// when the step's first micro-batch starts, end_step() once the step's update is applied, from
/// the accumulation window's finish(). Either may be absent.
template <class L>
concept StepBeginLayer = requires(L& layer) { layer.begin_step(); };
/// Has the end_step() half of StepBeginLayer's pair: applies what the step gathered.
template <class L>
concept StepEndLayer = requires(L& layer) { layer.end_step(); };
/// Has either hook, so that the model tells it where optimizer steps begin or end.
template <class L>
concept StepBoundaryLayer = StepBeginLayer<L> || StepEndLayer<L>;

/// Its step statistics can be summed across processes: step_statistics() packs what the step
/// has gathered so far into a buffer of its own (as sums that add up across processes) and
/// returns it; once the buffer holds the sums of every process, set_step_statistics(samples)
/// unpacks them as the statistics of `samples` samples. Data-parallel training calls both
/// between the backward pass and end_step().
template <class L>
concept StepStatisticsLayer = requires(L& layer, std::size_t samples) {
    { layer.step_statistics() } -> std::same_as<gradient_buffer>;
    layer.set_step_statistics(samples);
};

/// Its training statistics span every process that shares the batch (synchronized batch norm):
/// it sums partial statistics through pass_context::statistics in its forward and backward
/// passes. The engine then runs exactly one micro-batch per window piece on every process (an
/// empty one where a process has no rows), since every process must issue the same sums.
template <class L>
concept SynchronizedStatisticsLayer = requires { requires bool(L::synchronizes_statistics); };

/// Can apply a step of plain SGD to one of its variables inside the weight-gradient GEMM
/// (W = beta W + alpha X^T dY), instead of writing that gradient and updating W in a second pass.
/// The window asks for it only when one micro-batch is the whole step and the policies allow it.
template <class L>
concept GemmUpdateLayer = requires(L& layer, const_matrix_view v, const update_in_gemm& u) {
    { L::variable_updated_in_gemm } -> std::convertible_to<std::string_view>;
    { layer.backward_and_update(v, v, v, true, u) } -> std::same_as<const_matrix_view>;
};

/// Element-wise: can compute over its input's memory when the layer before owns it.
template <class L>
concept InPlaceLayer = requires(L& layer, matrix_view x, const pass_context& ctx) {
    requires bool(L::computes_in_place);
    { layer.forward_in_place(x, ctx) } -> std::same_as<const_matrix_view>;
};

/// Can apply the element-wise layer A (an activation: A::activation_function) in its own
/// forward, forward_activated<Fn>: a Dense before a ReLU on a policy with GEMM epilogues
/// (FusedDensePolicy). Sequential then skips A's forward; A's backward is unchanged, and reads
/// the activated output where it always did, since A ran in place over L's output.
template <class L, class A>
concept ActivationFusingLayer = requires(L& layer, const_matrix_view x, const pass_context& ctx) {
    typename A::activation_function;
    { layer.template forward_activated<typename A::activation_function>(x, ctx) } -> std::same_as<const_matrix_view>;
};

/// Can take its input gradient through the element-wise layer A before it, backward_through<
/// A::activation_function>: a Dense after a ReLU that the Dense before it applied, on a policy
/// with cuBLASLt's DRELU epilogue or its host counterpart (FusesActivationGradient). Sequential
/// then skips A's backward.
template <class L, class A>
concept ActivationGradientFusingLayer = requires(L& layer, const_matrix_view v, const void* mask) {
    typename A::activation_function;
    { layer.template backward_through<typename A::activation_function>(v, v, v, false, v, mask) }
        -> std::same_as<const_matrix_view>;
};

/// Its forward output is a buffer of its own that its backward never reads, so the next layer
/// may overwrite it (Dense).
template <class L>
concept ScratchOutputLayer = requires { requires bool(L::output_is_scratch); };

/// Micro-batch sizes that are multiples of split_granularity leave its training statistics
/// unchanged (batch norm with virtual batches); out-of-memory splits respect it.
template <class L>
concept SplitGranularLayer = requires {
    { L::split_granularity } -> std::convertible_to<std::size_t>;
};

namespace detail {
/// A layer that declares half of a hook gets one sentence, not a silently skipped hook.
template <class L>
consteval bool layer_hooks_well_formed() {
    static_assert(!requires { L::variable_updated_in_gemm; } || GemmUpdateLayer<L>,
                  "batchwise: a layer that names variable_updated_in_gemm must provide "
                  "backward_and_update(x, y, dy, need_dx, update_in_gemm) returning const_matrix_view "
                  "(GemmUpdateLayer, layers/hooks.hpp).");
    static_assert(!requires { requires bool(L::computes_in_place); } || InPlaceLayer<L>,
                  "batchwise: a layer with computes_in_place = true must provide "
                  "forward_in_place(matrix_view, const pass_context&) returning const_matrix_view "
                  "(InPlaceLayer, layers/hooks.hpp).");
    return true;
}
template <class Tuple>
struct layer_hooks_check;
template <class... Ls>
struct layer_hooks_check<std::tuple<Ls...>> {
    static constexpr bool value = (layer_hooks_well_formed<Ls>() && ...);
};
}  // namespace detail

}  // namespace batchwise
