// Adam and AdamW (Kingma & Ba; Loshchilov & Hutter), with Keras 3's update rule and defaults:
// the bias correction is folded into the step size, epsilon is added after the square root.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "batchwise/optimizers/optimizer.hpp"

namespace batchwise {

struct adam_options {
    float learning_rate = 0.001f;
    float beta_1 = 0.9f;
    float beta_2 = 0.999f;
    float epsilon = 1e-7f;
    bool amsgrad = false;
    /// Decoupled weight decay (w -= learning_rate * weight_decay * w); 0 for Adam.
    float weight_decay = 0.0f;
};

/// AdamW's options: Adam's, with Keras's default decay of 0.004. A separate aggregate (not a
/// derived struct) so that designated initialisers `AdamW{{.weight_decay = 0.01f}}` work.
struct adamw_options {
    float learning_rate = 0.001f;
    float beta_1 = 0.9f;
    float beta_2 = 0.999f;
    float epsilon = 1e-7f;
    bool amsgrad = false;
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
        w[i] = wi - alpha * mi / (std::sqrt(denominator) + epsilon);
    }
};

/// The bias correction folded into the step size, computed in double on the host.
template <class Options>
step_scalars adam_scalars(const Options& o, std::uint64_t step, float lr, float grad_scale) {
    const double t = static_cast<double>(step);
    const double alpha = lr * std::sqrt(1.0 - std::pow(double{o.beta_2}, t)) /
                         (1.0 - std::pow(double{o.beta_1}, t));
    return {.learning_rate = lr, .grad_scale = grad_scale, .step_size = static_cast<float>(alpha)};
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

struct Adam {
    static constexpr std::string_view name = "Adam";
    adam_options options{};

    [[nodiscard]] std::size_t slot_count() const { return options.amsgrad ? 3 : 2; }
    [[nodiscard]] float learning_rate() const { return options.learning_rate; }

    [[nodiscard]] step_scalars scalars(std::uint64_t step, float lr, float grad_scale) const {
        return detail::adam_scalars(options, step, lr, grad_scale);
    }
    template <ExecutionPolicy Exec>
    void apply(const variable_ref& v, float* const* slots, std::uint64_t step, float lr,
               float grad_scale) const {
        detail::adam_apply<Exec>(options, v, slots, scalars_by_value{scalars(step, lr, grad_scale)});
    }
    template <ExecutionPolicy Exec>
    void apply_from(const variable_ref& v, float* const* slots, const step_scalars* device) const {
        detail::adam_apply<Exec>(options, v, slots, scalars_in_memory{device});
    }
};

struct AdamW {
    static constexpr std::string_view name = "AdamW";
    adamw_options options{};

    [[nodiscard]] std::size_t slot_count() const { return options.amsgrad ? 3 : 2; }
    [[nodiscard]] float learning_rate() const { return options.learning_rate; }

    [[nodiscard]] step_scalars scalars(std::uint64_t step, float lr, float grad_scale) const {
        return detail::adam_scalars(options, step, lr, grad_scale);
    }
    template <ExecutionPolicy Exec>
    void apply(const variable_ref& v, float* const* slots, std::uint64_t step, float lr,
               float grad_scale) const {
        detail::adam_apply<Exec>(options, v, slots, scalars_by_value{scalars(step, lr, grad_scale)});
    }
    template <ExecutionPolicy Exec>
    void apply_from(const variable_ref& v, float* const* slots, const step_scalars* device) const {
        detail::adam_apply<Exec>(options, v, slots, scalars_in_memory{device});
    }
};

}  // namespace batchwise
