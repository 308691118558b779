// The optimizer contract. An optimizer is a small value type holding its hyper-parameters; the
// model owns its per-variable state ("slots") and the step count, so that the state advances
// exactly once per optimizer step however many micro-batches made the gradient.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "batchwise/core/concepts.hpp"
#include "batchwise/layers/layer.hpp"

namespace batchwise {

/// `apply<Exec>(variable, slots, step, learning_rate, grad_scale)` updates one trainable variable
/// in place from grad_scale * its gradient: gradients arrive as sums over the samples of the
/// effective batch, and grad_scale = 1 / samples turns them into the mean without a pass of its
/// own. `step` counts optimizer steps from 1. `slot_count()` state vectors of the variable's
/// size are given, zero-initialised before the first step. An optimizer may also say what its
/// slots hold, `state_layout()` returning an optimizer_state_layout, which checkpoints record; one
/// that does not is described by its name and slot count.
template <class O, class Exec>
concept OptimizerFor = ExecutionPolicy<Exec> && requires(const O& opt, const variable_ref& v,
                                                         float* const* slots, std::uint64_t t,
                                                         float lr) {
    { O::name } -> std::convertible_to<std::string_view>;
    { opt.slot_count() } -> std::convertible_to<std::size_t>;
    { opt.learning_rate() } -> std::convertible_to<float>;
    opt.template apply<Exec>(v, slots, t, lr, lr);
};

/// An optimizer whose step can be replayed from a captured graph: `scalars(step, learning_rate,
/// grad_scale)` computes on the host everything of the update that changes from step to step,
/// and `apply_from<Exec>(variable, slots, scalars)` updates with the scalars read from device
/// memory when the kernels run. Every built-in optimizer is one; a model with any other trains
/// eagerly.
template <class O, class Exec>
concept CapturableOptimizer = OptimizerFor<O, Exec> && requires(const O& opt, const variable_ref& v,
                                                                float* const* slots, std::uint64_t t,
                                                                float lr, const step_scalars* device) {
    { opt.scalars(t, lr, lr) } -> std::same_as<step_scalars>;
    opt.template apply_from<Exec>(v, slots, device);
};

/// What an optimizer's slots hold: a checkpoint records it, and load_checkpoint restores slots
/// only into an optimizer that describes them the same way (Adam's moments mean nothing to
/// RMSprop, nor Keras's SGD velocity to PyTorch's momentum buffer).
struct optimizer_state_layout {
    /// The optimizer, the options that change what its slots hold, and the slots in order:
    /// "Adam(amsgrad): m, v, v_hat".
    std::string description;
    /// Bit k set: slot k is never negative (a running mean of squares), which a load checks.
    unsigned non_negative = 0;
};

/// The description of an optimizer that gives none: its name and slot count.
inline optimizer_state_layout default_state_layout(std::string_view name, std::size_t slots) {
    return {std::string(name) + ": " + std::to_string(slots) + (slots == 1 ? " slot" : " slots"), 0};
}

/// The scalars of optimizers whose step is the learning rate itself.
inline step_scalars plain_step_scalars(float learning_rate, float grad_scale) {
    return {.learning_rate = learning_rate, .grad_scale = grad_scale, .step_size = learning_rate};
}

}  // namespace batchwise
