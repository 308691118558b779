// The optimizer contract. An optimizer is a small value type holding its hyper-parameters; the
// model owns its per-variable state ("slots") and the step count, so that the state advances
// exactly once per optimizer step however many micro-batches made the gradient.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "batchwise/core/concepts.hpp"
#include "batchwise/layers/layer.hpp"

namespace batchwise {

/// `apply<Exec>(variable, slots, step, learning_rate, grad_scale)` updates one trainable variable
/// in place from grad_scale * its gradient: gradients arrive as sums over the samples of the
/// effective batch, and grad_scale = 1 / samples turns them into the mean without a pass of its
/// own. `step` counts optimizer steps from 1. `slot_count()` state vectors of the variable's
/// size are given, zero-initialised before the first step.
template <class O, class Exec>
concept OptimizerFor = ExecutionPolicy<Exec> && requires(const O& opt, const variable_ref& v,
                                                         float* const* slots, std::uint64_t t,
                                                         float lr) {
    { O::name } -> std::convertible_to<std::string_view>;
    { opt.slot_count() } -> std::convertible_to<std::size_t>;
    { opt.learning_rate() } -> std::convertible_to<float>;
    opt.template apply<Exec>(v, slots, t, lr, lr);
};

}  // namespace batchwise
