// RMSprop (Tieleman & Hinton) with Keras 3's update rule and defaults: epsilon inside the square
// root, optional centring and momentum.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "batchwise/optimizers/optimizer.hpp"

namespace batchwise {

/// RMSprop's hyper-parameters, with Keras 3's defaults; set some with designated initialisers:
/// `RMSprop{{.learning_rate = 1e-3f, .centered = true}}`.
struct rmsprop_options {
    /// The learning rate the model starts with at compile().
    float learning_rate = 0.001f;
    /// Decay of the moving average of squared gradients.
    float rho = 0.9f;
    /// Momentum on the scaled step; 0: none, and no slot for it.
    float momentum = 0.0f;
    /// Added to the average inside the square root (Keras's placement).
    float epsilon = 1e-7f;
    /// Divide by the gradient's estimated variance (the average of squares minus the square of the
    /// average gradient) instead of its second moment, at one more slot.
    bool centered = false;
    /// Decoupled, as Keras 3: w -= learning_rate * weight_decay * w before the update.
    float weight_decay = 0.0f;
};

namespace detail {
template <class Scalars>
struct rmsprop_update {
    float* w;
    const float* g;
    float* velocity;
    float* average_grad;  // null unless centered
    float* momentum_buf;  // null without momentum
    Scalars scalars;
    float rho, momentum, epsilon, decay;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        if ((*scalars).halted != 0) return;  // a replayed step found non-finite: nothing moves
        const float lr = (*scalars).learning_rate;
        const float gi = g[i] * (*scalars).grad_scale;
        const float wi = w[i] - lr * decay * w[i];
        velocity[i] = rho * velocity[i] + (1.0f - rho) * gi * gi;
        float denominator = velocity[i];
        if (average_grad != nullptr) {
            average_grad[i] = rho * average_grad[i] + (1.0f - rho) * gi;
            denominator -= average_grad[i] * average_grad[i];
        }
        const float increment = lr * gi / std::sqrt(denominator + epsilon);
        if (momentum_buf != nullptr) {
            momentum_buf[i] = momentum * momentum_buf[i] + increment;
            w[i] = wi - momentum_buf[i];
        } else {
            w[i] = wi - increment;
        }
    }
};
}  // namespace detail

/// Keras's RMSprop: each gradient divided by the root of a moving average of its square.
struct RMSprop {
    /// Keras's class name, used in error messages.
    static constexpr std::string_view name = "RMSprop";
    /// Its update is element-wise passes only: a captured step launches those of all variables
    /// together (ElementWiseOptimizer).
    static constexpr bool element_wise_update = true;
    /// Its hyper-parameters.
    rmsprop_options options{};

    /// The average of squared gradients, plus the average gradient when centered and a momentum
    /// buffer with momentum.
    [[nodiscard]] std::size_t slot_count() const {
        return 1 + (options.centered ? 1 : 0) + (options.momentum != 0.0f ? 1 : 0);
    }
    /// What the slots hold, for checkpoints: "RMSprop(centered, momentum): mean_square, mean_grad,
    /// momentum" with what the options add; the mean square is never negative.
    [[nodiscard]] optimizer_state_layout state_layout() const {
        const bool momentum = options.momentum != 0.0f;
        std::string d(name);
        if (options.centered || momentum) {
            d += options.centered && momentum ? "(centered, momentum)" : options.centered ? "(centered)" : "(momentum)";
        }
        d += ": mean_square";
        if (options.centered) d += ", mean_grad";
        if (momentum) d += ", momentum";
        return {d, 0b1u};
    }
    /// The learning rate the model starts with at compile().
    [[nodiscard]] float learning_rate() const { return options.learning_rate; }

    /// What a captured step reads from device memory each step: the learning rate and grad_scale
    /// (CapturableOptimizer).
    [[nodiscard]] step_scalars scalars(std::uint64_t, float lr, float grad_scale) const {
        return plain_step_scalars(lr, grad_scale);
    }

    /// Updates variable v in place from grad_scale times its gradient sum, `step` counted from 1
    /// (OptimizerFor).
    template <ExecutionPolicy Exec>
    void apply(const variable_ref& v, float* const* slots, std::uint64_t step, float lr,
               float grad_scale) const {
        update<Exec>(v, slots, scalars_by_value{scalars(step, lr, grad_scale)});
    }
    /// apply() with the step's scalars read from device memory: a captured step's update.
    template <ExecutionPolicy Exec>
    void apply_from(const variable_ref& v, float* const* slots, const step_scalars* device) const {
        update<Exec>(v, slots, scalars_in_memory{device});
    }

private:
    template <class Exec, class Scalars>
    void update(const variable_ref& v, float* const* slots, Scalars s) const {
        std::size_t next = 1;
        float* average = options.centered ? slots[next++] : nullptr;
        float* momentum = options.momentum != 0.0f ? slots[next++] : nullptr;
        Exec::for_each(v.size(), detail::rmsprop_update<Scalars>{v.value, v.grad, slots[0], average, momentum, s,
                                                                 options.rho, options.momentum, options.epsilon,
                                                                 options.weight_decay});
    }
};

}  // namespace batchwise
