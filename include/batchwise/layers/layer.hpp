// What a layer implementation sees of the training step (pass_context), how it exposes its
// variables (variable_ref), and the LayerImpl concept that every `L::impl<In, Exec>` satisfies.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "batchwise/core/concepts.hpp"
#include "batchwise/core/config.hpp"
#include "batchwise/core/real_constant.hpp"
#include "batchwise/exec/matrix_view.hpp"

namespace batchwise {

/// The numbers of a training step that change from one step to the next: where the batch sits
/// in training (for random layers) and the optimizer's scalars. A step replayed from a captured
/// graph reads them from memory the model rewrites before each launch, because a graph's kernel
/// arguments are fixed when it is captured; an eager step passes them by value.
struct step_scalars {
    /// The epoch, counted from 0.
    std::uint64_t epoch = 0;
    /// Position in the epoch of the batch's first sample.
    std::uint64_t first_sample = 0;
    /// The step's learning rate, after schedules and coupling.
    float learning_rate = 0.0f;
    /// 1 / samples of the effective batch: gradients arrive as sums.
    float grad_scale = 1.0f;
    /// The learning rate with an optimizer's own per-step factor folded in (Adam's bias
    /// correction); the learning rate itself for the others.
    float step_size = 0.0f;
    /// What multiplies Adam's epsilon this step: 1 (Keras), or sqrt(1 - beta_2^t) under
    /// PyTorch's conventions, which add epsilon after the bias correction.
    float epsilon_scale = 1.0f;
    /// Non-zero when a replayed step's guard found this step, or one queued before it, with a
    /// non-finite loss or input: everything that would change state (the optimizer's updates,
    /// batch norm's moving averages) then changes nothing. The host never sets it.
    std::uint32_t halted = 0;
};

/// How a functor reaches the step's scalars: carried in its own arguments (eager), or read
/// from device memory when the kernel runs (a replayed graph). Both dereference to the values.
struct scalars_by_value {
    /// The scalars, carried in the functor.
    step_scalars values;
    /// The scalars.
    BATCHWISE_HOST_DEVICE const step_scalars& operator*() const { return values; }
};
/// The step's scalars read through a pointer when the kernel runs: what the functors of a
/// replayed graph carry.
struct scalars_in_memory {
    /// Device memory the model rewrites before each launch.
    const step_scalars* values;
    /// The scalars as they are when the kernel runs.
    BATCHWISE_HOST_DEVICE const step_scalars& operator*() const { return *values; }
};

/// Sums a buffer in the execution policy's memory over the processes that share a batch
/// (data_parallel), in place: synchronized batch norm's batch statistics. Type-erased, so a
/// layer needs nothing of the transport.
struct statistics_reducer {
    /// The transport's state, handed back to `sum`.
    void* context = nullptr;
    /// Sums n floats at `data` over the processes, in place.
    void (*sum)(void* context, float* data, std::size_t n) = nullptr;
    /// sum(context, data, n).
    void operator()(float* data, std::size_t n) const { sum(context, data, n); }
};

/// Where in training a forward pass sits. Random layers key their draws on (seed, layer, epoch,
/// first_sample + row, unit), so a sample's mask does not depend on how its batch was split.
struct pass_context {
    /// A training pass: dropout drops, batch norm uses the batch's statistics.
    bool training = false;
    /// The model's seed.
    std::uint64_t seed = 0;
    /// The epoch, counted from 0.
    std::uint64_t epoch = 0;
    /// Position in the epoch of the batch's first row.
    std::uint64_t first_sample = 0;
    /// The layer's position in the network, from 0 (the network sets it for each layer).
    std::uint32_t layer_index = 0;
    /// Rows at and after this index are padding (a static batch's ragged tail): their values
    /// are computed but must not enter any statistic. Every row is valid by default.
    std::size_t valid_rows = static_cast<std::size_t>(-1);
    /// Set while a step is being captured: the epoch and first sample are then read from this
    /// device memory when the kernels run, not taken from the fields above.
    const step_scalars* device_scalars = nullptr;
    /// Set in training when the batch is shared among processes: a layer whose statistics span
    /// the whole batch (SynchronizedStatisticsLayer) sums its partial sums through it. Every
    /// process then runs the same micro-batches, so the sums are issued alike everywhere.
    const statistics_reducer* statistics = nullptr;
};

/// One variable of a layer: a trainable parameter (with its gradient) or a non-trainable state
/// such as batch norm's moving mean (grad == nullptr). `cols == 0` marks a vector of `rows`.
struct variable_ref {
    /// The name within the layer ("kernel", "bias"); the model prefixes the layer's
    /// ("dense_1/kernel").
    std::string_view name;
    /// The values, size() floats in the execution policy's memory.
    float* value = nullptr;
    /// The gradient, as many floats; nullptr for a non-trainable variable.
    float* grad = nullptr;
    /// Rows of a matrix, or the length of a vector.
    std::size_t rows = 0;
    /// Columns; 0 for a vector.
    std::size_t cols = 0;
    /// Number of floats.
    [[nodiscard]] std::size_t size() const { return cols == 0 ? rows : rows * cols; }
    /// Whether it has a gradient, so that the optimizer updates it.
    [[nodiscard]] bool trainable() const { return grad != nullptr; }
};

/// An optimizer step a layer may apply inside its weight-gradient GEMM, W = beta W + alpha X^T dY,
/// instead of writing the gradient and updating W in a second pass over it. Plain SGD is such a
/// step (alpha = -learning rate / samples, beta = 1 - learning rate * weight decay); the model
/// asks for it only when one micro-batch is the whole optimizer step.
struct update_in_gemm {
    /// Scales X^T dY: -learning rate / samples for SGD.
    float alpha = 0.0f;
    /// Scales W: 1 - learning rate * weight decay for SGD.
    float beta = 1.0f;
};

namespace detail {
/// f(position) with where the pass sits in training: the context's epoch and first sample by
/// value, or, while a step is being captured, the device memory they will be read from.
template <class F>
void at_step_position(const pass_context& ctx, F&& f) {
    if (ctx.device_scalars != nullptr) {
        f(scalars_in_memory{ctx.device_scalars});
    } else {
        f(scalars_by_value{step_scalars{.epoch = ctx.epoch, .first_sample = ctx.first_sample}});
    }
}

/// out = a * b, element-wise: dropout's masks, batch norm's dy * xhat.
struct multiply_elementwise {
    const float* a;
    const float* b;
    float* out;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const { out[i] = a[i] * b[i]; }
};

struct variable_probe {
    void operator()(const variable_ref&) const {}
};
}  // namespace detail

/// The contract of a layer implementation bound to an input shape and an execution policy.
template <class T>
concept LayerImpl = requires(T& layer, const_matrix_view x, const pass_context& ctx,
                             std::uint64_t s, std::uint32_t index, std::size_t rows) {
    { T::in_features } -> std::convertible_to<std::size_t>;
    { T::out_features } -> std::convertible_to<std::size_t>;
    { T::trainable_count } -> std::convertible_to<std::size_t>;
    { T::non_trainable_count } -> std::convertible_to<std::size_t>;
    { T::state_floats } -> std::convertible_to<std::size_t>;
    { T::buffer_floats(rows, true) } -> std::convertible_to<std::size_t>;
    layer.initialize(s, index);
    layer.reserve(rows, true);
    { layer.forward(x, ctx) } -> std::same_as<const_matrix_view>;
    { layer.backward(x, x, x, true, false) } -> std::same_as<const_matrix_view>;
    layer.for_each_variable(detail::variable_probe{});
};

/// Descriptors that appear in shape-mismatch diagnostics as "what the layer needs": here, a
/// shape of rank `Rank`.
template <std::size_t Rank>
struct any_shape_of_rank {};
/// Needs a shape of exactly `Elements` elements, as Reshape does.
template <std::size_t Elements>
struct any_shape_with_elements {};
/// Takes any shape.
struct any_shape {};

}  // namespace batchwise
