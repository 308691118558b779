// Adam and AdamW (Kingma & Ba; Loshchilov & Hutter), with Keras 3's update rule and defaults:
// the bias correction is folded into the step size, epsilon is added after the square root
// (and scaled to sit after the bias correction under PyTorch's conventions).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "batchwise/core/conventions.hpp"
#include "batchwise/optimizers/optimizer.hpp"

namespace batchwise {

/// Adam's hyper-parameters, with Keras 3's defaults; set some with designated initialisers:
/// `Adam{{.learning_rate = 3e-4f, .amsgrad = true}}`.
struct adam_options {
    /// The learning rate the model starts with at compile().
    float learning_rate = 0.001f;
    /// Decay of the first moment, the moving average of gradients.
    float beta_1 = 0.9f;
    /// Decay of the second moment, the moving average of squared gradients.
    float beta_2 = 0.999f;
    /// Added to the second moment's root; under PyTorch's conventions, scaled to where PyTorch adds
    /// it.
    float epsilon = 1e-7f;
    /// Divide by the largest second moment so far (AMSGrad), at one more slot.
    bool amsgrad = false;
    /// Decoupled weight decay (w -= learning_rate * weight_decay * w); 0 for Adam.
    float weight_decay = 0.0f;
};

/// AdamW's options: Adam's, with Keras's default decay of 0.004. A separate aggregate (not a
/// derived struct) so that designated initialisers `AdamW{{.weight_decay = 0.01f}}` work.
struct adamw_options {
    /// The learning rate the model starts with at compile().
    float learning_rate = 0.001f;
    /// Decay of the first moment, the moving average of gradients.
    float beta_1 = 0.9f;
    /// Decay of the second moment, the moving average of squared gradients.
    float beta_2 = 0.999f;
    /// Added to the second moment's root; under PyTorch's conventions, scaled to where PyTorch adds
    /// it.
    float epsilon = 1e-7f;
    /// Divide by the largest second moment so far (AMSGrad), at one more slot.
    bool amsgrad = false;
    /// Decoupled weight decay (w -= learning_rate * weight_decay * w).
    float weight_decay = 0.004f;
};

namespace detail {
/// AMSGrad is a template argument, not a run-time test, so the loop has no branch and vectorises.
template <bool AMSGrad, class Scalars>
struct adam_update {
    float* w;
    const float* g;
    float* m;
    float* v;
    float* v_max;  // used only with AMSGrad
    Scalars scalars;
    float beta_1, beta_2, epsilon, decay;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const step_scalars& s = *scalars;
        if (s.halted != 0) return;  // a replayed step found non-finite: nothing moves
        const float lr = s.learning_rate;
        const float alpha = s.step_size;
        const float gi = g[i] * s.grad_scale;
        const float wi = w[i] - lr * decay * w[i];
        const float mi = m[i] + (gi - m[i]) * (1.0f - beta_1);
        const float vi = v[i] + (gi * gi - v[i]) * (1.0f - beta_2);
        m[i] = mi;
        v[i] = vi;
        float denominator = vi;
        if constexpr (AMSGrad) {
            denominator = v_max[i] > vi ? v_max[i] : vi;
            v_max[i] = denominator;
        }
        w[i] = wi - alpha * mi / (std::sqrt(denominator) + epsilon * s.epsilon_scale);
    }
};

/// The bias correction folded into the step size, computed in double on the host.
template <class Options>
step_scalars adam_scalars(const Options& o, std::uint64_t step, float lr, float grad_scale, conventions c) {
    const double t = static_cast<double>(step);
    const double root = std::sqrt(1.0 - std::pow(double{o.beta_2}, t));
    const double alpha = lr * root / (1.0 - std::pow(double{o.beta_1}, t));
    return {.learning_rate = lr,
            .grad_scale = grad_scale,
            .step_size = static_cast<float>(alpha),
            .epsilon_scale = c == conventions::pytorch ? static_cast<float>(root) : 1.0f};
}

/// Adam's and AdamW's slots: m and v, and v_hat (AMSGrad's largest v); v and v_hat are never
/// negative.
template <class Options>
optimizer_state_layout adam_layout(std::string_view name, const Options& o) {
    std::string d(name);
    if (o.amsgrad) return {d + "(amsgrad): m, v, v_hat", 0b110u};
    return {d + ": m, v", 0b10u};
}

template <class Exec, class Options, class Scalars>
void adam_apply(const Options& o, const variable_ref& v, float* const* slots, Scalars s) {
    if (o.amsgrad) {
        Exec::for_each(v.size(), adam_update<true, Scalars>{v.value, v.grad, slots[0], slots[1], slots[2], s,
                                                            o.beta_1, o.beta_2, o.epsilon, o.weight_decay});
    } else {
        Exec::for_each(v.size(), adam_update<false, Scalars>{v.value, v.grad, slots[0], slots[1], nullptr, s,
                                                             o.beta_1, o.beta_2, o.epsilon, o.weight_decay});
    }
}
}  // namespace detail

/// Keras's Adam: steps scaled by the moving averages of the gradient and of its square.
struct Adam {
    /// Keras's class name, used in error messages.
    static constexpr std::string_view name = "Adam";
    /// Its update is element-wise passes only: a captured step launches those of all variables
    /// together (ElementWiseOptimizer).
    static constexpr bool element_wise_update = true;
    /// Its hyper-parameters.
    adam_options options{};

    /// First and second moments, and the largest second moment with amsgrad.
    [[nodiscard]] std::size_t slot_count() const { return options.amsgrad ? 3 : 2; }
    /// What the slots hold, for checkpoints: "Adam: m, v" or "Adam(amsgrad): m, v, v_hat".
    [[nodiscard]] optimizer_state_layout state_layout() const { return detail::adam_layout(name, options); }
    /// The learning rate the model starts with at compile().
    [[nodiscard]] float learning_rate() const { return options.learning_rate; }

    /// What a captured step reads from device memory each step: the learning rate, grad_scale and
    /// the bias-corrected step size, computed in double (CapturableOptimizer).
    [[nodiscard]] step_scalars scalars(std::uint64_t step, float lr, float grad_scale) const {
        return detail::adam_scalars(options, step, lr, grad_scale, convention);
    }
    /// Keras's epsilon or PyTorch's (Model::set_conventions sets it).
    conventions convention = conventions::keras;
    /// Sets `convention`.
    void set_conventions(conventions c) { convention = c; }
    /// Updates variable v in place from grad_scale times its gradient sum, `step` counted from 1
    /// (OptimizerFor).
    template <ExecutionPolicy Exec>
    void apply(const variable_ref& v, float* const* slots, std::uint64_t step, float lr,
               float grad_scale) const {
        detail::adam_apply<Exec>(options, v, slots, scalars_by_value{scalars(step, lr, grad_scale)});
    }
    /// apply() with the step's scalars read from device memory: a captured step's update.
    template <ExecutionPolicy Exec>
    void apply_from(const variable_ref& v, float* const* slots, const step_scalars* device) const {
        detail::adam_apply<Exec>(options, v, slots, scalars_in_memory{device});
    }
};

/// Keras's AdamW: Adam with decoupled weight decay, on by default.
struct AdamW {
    /// Keras's class name, used in error messages.
    static constexpr std::string_view name = "AdamW";
    /// Its update is element-wise passes only: a captured step launches those of all variables
    /// together (ElementWiseOptimizer).
    static constexpr bool element_wise_update = true;
    /// Its hyper-parameters.
    adamw_options options{};

    /// First and second moments, and the largest second moment with amsgrad.
    [[nodiscard]] std::size_t slot_count() const { return options.amsgrad ? 3 : 2; }
    /// What the slots hold, for checkpoints: "AdamW: m, v" or "AdamW(amsgrad): m, v, v_hat".
    [[nodiscard]] optimizer_state_layout state_layout() const { return detail::adam_layout(name, options); }
    /// The learning rate the model starts with at compile().
    [[nodiscard]] float learning_rate() const { return options.learning_rate; }

    /// What a captured step reads from device memory each step: the learning rate, grad_scale and
    /// the bias-corrected step size, computed in double (CapturableOptimizer).
    [[nodiscard]] step_scalars scalars(std::uint64_t step, float lr, float grad_scale) const {
        return detail::adam_scalars(options, step, lr, grad_scale, convention);
    }
    /// Keras's epsilon or PyTorch's (Model::set_conventions sets it).
    conventions convention = conventions::keras;
    /// Sets `convention`.
    void set_conventions(conventions c) { convention = c; }
    /// Updates variable v in place from grad_scale times its gradient sum, `step` counted from 1
    /// (OptimizerFor).
    template <ExecutionPolicy Exec>
    void apply(const variable_ref& v, float* const* slots, std::uint64_t step, float lr,
               float grad_scale) const {
        detail::adam_apply<Exec>(options, v, slots, scalars_by_value{scalars(step, lr, grad_scale)});
    }
    /// apply() with the step's scalars read from device memory: a captured step's update.
    template <ExecutionPolicy Exec>
    void apply_from(const variable_ref& v, float* const* slots, const step_scalars* device) const {
        detail::adam_apply<Exec>(options, v, slots, scalars_in_memory{device});
    }
};

}  // namespace batchwise
