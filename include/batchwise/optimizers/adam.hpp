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
template <bool AMSGrad>
struct adam_update {
    float* w;
    const float* g;
    float* m;
    float* v;
    float* v_max;  // used only with AMSGrad
    float alpha, lr, beta_1, beta_2, epsilon, decay, scale;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const float gi = g[i] * scale;
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

template <class Exec, class Options>
void adam_apply(const Options& o, const variable_ref& v, float* const* slots,
                std::uint64_t step, float lr, float grad_scale) {
    const double t = static_cast<double>(step);
    const double alpha = lr * std::sqrt(1.0 - std::pow(double{o.beta_2}, t)) /
                         (1.0 - std::pow(double{o.beta_1}, t));
    const auto a = static_cast<float>(alpha);
    if (o.amsgrad) {
        Exec::for_each(v.size(), adam_update<true>{v.value, v.grad, slots[0], slots[1], slots[2], a, lr, o.beta_1,
                                                   o.beta_2, o.epsilon, o.weight_decay, grad_scale});
    } else {
        Exec::for_each(v.size(), adam_update<false>{v.value, v.grad, slots[0], slots[1], nullptr, a, lr, o.beta_1,
                                                    o.beta_2, o.epsilon, o.weight_decay, grad_scale});
    }
}
}  // namespace detail

struct Adam {
    static constexpr std::string_view name = "Adam";
    adam_options options{};

    [[nodiscard]] std::size_t slot_count() const { return options.amsgrad ? 3 : 2; }
    [[nodiscard]] float learning_rate() const { return options.learning_rate; }

    template <ExecutionPolicy Exec>
    void apply(const variable_ref& v, float* const* slots, std::uint64_t step, float lr,
               float grad_scale) const {
        detail::adam_apply<Exec>(options, v, slots, step, lr, grad_scale);
    }
};

struct AdamW {
    static constexpr std::string_view name = "AdamW";
    adamw_options options{};

    [[nodiscard]] std::size_t slot_count() const { return options.amsgrad ? 3 : 2; }
    [[nodiscard]] float learning_rate() const { return options.learning_rate; }

    template <ExecutionPolicy Exec>
    void apply(const variable_ref& v, float* const* slots, std::uint64_t step, float lr,
               float grad_scale) const {
        detail::adam_apply<Exec>(options, v, slots, step, lr, grad_scale);
    }
};

}  // namespace batchwise
