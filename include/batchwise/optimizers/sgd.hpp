// Stochastic gradient descent with optional (Nesterov) momentum and decoupled weight decay,
// following Keras 3's update rule and defaults.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "batchwise/optimizers/optimizer.hpp"

namespace batchwise {

struct sgd_options {
    float learning_rate = 0.01f;
    float momentum = 0.0f;
    bool nesterov = false;
    /// Decoupled, as Keras 3: w -= learning_rate * weight_decay * w before the gradient step.
    float weight_decay = 0.0f;
};

namespace detail {
/// The variant is a template argument, not a run-time test, so the loop has no branch and
/// vectorises.
enum class sgd_kind { plain, momentum, nesterov };
template <sgd_kind Kind, class Scalars>
struct sgd_update {
    float* w;
    const float* g;
    float* velocity;  // used with momentum
    Scalars scalars;
    float momentum, decay;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const float lr = (*scalars).learning_rate;
        const float gi = g[i] * (*scalars).grad_scale;
        const float wi = w[i] - lr * decay * w[i];
        if constexpr (Kind == sgd_kind::plain) {
            w[i] = wi - lr * gi;
        } else {
            const float m = momentum * velocity[i] - lr * gi;
            velocity[i] = m;
            w[i] = Kind == sgd_kind::nesterov ? wi + momentum * m - lr * gi : wi + m;
        }
    }
};
}  // namespace detail

struct SGD {
    static constexpr std::string_view name = "SGD";
    sgd_options options{};

    [[nodiscard]] std::size_t slot_count() const { return options.momentum != 0.0f ? 1 : 0; }
    [[nodiscard]] float learning_rate() const { return options.learning_rate; }

    /// Plain SGD is one multiply-add per weight, which a layer can fold into its gradient GEMM
    /// (update_in_gemm); with momentum the velocity needs the gradient itself.
    [[nodiscard]] std::optional<update_in_gemm> in_gemm(float lr, float grad_scale) const {
        if (options.momentum != 0.0f) return std::nullopt;
        return update_in_gemm{-lr * grad_scale, 1.0f - lr * options.weight_decay};
    }

    [[nodiscard]] step_scalars scalars(std::uint64_t, float lr, float grad_scale) const {
        return plain_step_scalars(lr, grad_scale);
    }

    template <ExecutionPolicy Exec>
    void apply(const variable_ref& v, float* const* slots, std::uint64_t step, float lr,
               float grad_scale) const {
        update<Exec>(v, slots, scalars_by_value{scalars(step, lr, grad_scale)});
    }
    template <ExecutionPolicy Exec>
    void apply_from(const variable_ref& v, float* const* slots, const step_scalars* device) const {
        update<Exec>(v, slots, scalars_in_memory{device});
    }

private:
    template <class Exec, class Scalars>
    void update(const variable_ref& v, float* const* slots, Scalars s) const {
        using detail::sgd_kind;
        using detail::sgd_update;
        if (options.momentum == 0.0f) {
            Exec::for_each(v.size(), sgd_update<sgd_kind::plain, Scalars>{v.value, v.grad, nullptr, s, 0.0f,
                                                                         options.weight_decay});
        } else if (options.nesterov) {
            Exec::for_each(v.size(), sgd_update<sgd_kind::nesterov, Scalars>{v.value, v.grad, slots[0], s,
                                                                            options.momentum, options.weight_decay});
        } else {
            Exec::for_each(v.size(), sgd_update<sgd_kind::momentum, Scalars>{v.value, v.grad, slots[0], s,
                                                                            options.momentum, options.weight_decay});
        }
    }
};

}  // namespace batchwise
