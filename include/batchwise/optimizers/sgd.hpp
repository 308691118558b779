// Stochastic gradient descent with optional (Nesterov) momentum and decoupled weight decay,
// following Keras 3's update rule and defaults.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "batchwise/core/conventions.hpp"
#include "batchwise/optimizers/optimizer.hpp"

namespace batchwise {

/// SGD's hyper-parameters, with Keras 3's defaults; set some with designated initialisers:
/// `SGD{{.learning_rate = 0.1f, .momentum = 0.9f}}`.
struct sgd_options {
    /// The learning rate the model starts with at compile().
    float learning_rate = 0.01f;
    /// Decay of the velocity; 0: plain SGD, which keeps no state and can run inside a layer's
    /// weight-gradient GEMM.
    float momentum = 0.0f;
    /// Nesterov momentum; only with momentum > 0.
    bool nesterov = false;
    /// Decoupled, as Keras 3: w -= learning_rate * weight_decay * w before the gradient step.
    float weight_decay = 0.0f;
};

namespace detail {
/// The variant is a template argument, not a run-time test, so the loop has no branch and
/// vectorises. PyTorch: momentum kept as PyTorch's buffer, without the learning rate in it.
enum class sgd_kind { plain, momentum, nesterov };
template <sgd_kind Kind, class Scalars, bool PyTorch = false>
struct sgd_update {
    float* w;
    const float* g;
    float* velocity;  // used with momentum
    Scalars scalars;
    float momentum, decay;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        if ((*scalars).halted != 0) return;  // a replayed step found non-finite: nothing moves
        const float lr = (*scalars).learning_rate;
        const float gi = g[i] * (*scalars).grad_scale;
        const float wi = w[i] - lr * decay * w[i];
        if constexpr (Kind == sgd_kind::plain) {
            w[i] = wi - lr * gi;
        } else if constexpr (PyTorch) {
            const float b = momentum * velocity[i] + gi;
            velocity[i] = b;
            w[i] = Kind == sgd_kind::nesterov ? wi - lr * (gi + momentum * b) : wi - lr * b;
        } else {
            const float m = momentum * velocity[i] - lr * gi;
            velocity[i] = m;
            w[i] = Kind == sgd_kind::nesterov ? wi + momentum * m - lr * gi : wi + m;
        }
    }
};
}  // namespace detail

/// Keras's SGD: steps against the gradient, with optional (Nesterov) momentum and decoupled weight
/// decay.
struct SGD {
    /// Keras's class name, used in error messages.
    static constexpr std::string_view name = "SGD";
    /// Its update is element-wise passes only: a captured step launches those of all variables
    /// together (ElementWiseOptimizer).
    static constexpr bool element_wise_update = true;
    /// Its hyper-parameters.
    sgd_options options{};

    /// One velocity per variable with momentum, none without.
    [[nodiscard]] std::size_t slot_count() const { return options.momentum != 0.0f ? 1 : 0; }
    /// What the slot holds, for checkpoints: Keras's velocity (with the learning rate in it) or,
    /// under PyTorch's conventions, PyTorch's momentum buffer (without), which differ in sign and
    /// scale.
    [[nodiscard]] optimizer_state_layout state_layout() const {
        if (options.momentum == 0.0f) return {"SGD: no state", 0};
        if (convention == conventions::pytorch) return {"SGD(momentum, pytorch): momentum_buffer", 0};
        return {"SGD(momentum): velocity", 0};
    }
    /// The learning rate the model starts with at compile().
    [[nodiscard]] float learning_rate() const { return options.learning_rate; }

    /// Plain SGD is one multiply-add per weight, which a layer can fold into its gradient GEMM
    /// (update_in_gemm); with momentum the velocity needs the gradient itself.
    [[nodiscard]] std::optional<update_in_gemm> in_gemm(float lr, float grad_scale) const {
        if (options.momentum != 0.0f) return std::nullopt;
        return update_in_gemm{-lr * grad_scale, 1.0f - lr * options.weight_decay};
    }

    /// What a captured step reads from device memory each step: the learning rate and grad_scale
    /// (CapturableOptimizer).
    [[nodiscard]] step_scalars scalars(std::uint64_t, float lr, float grad_scale) const {
        return plain_step_scalars(lr, grad_scale);
    }
    /// Keras's velocity or PyTorch's momentum buffer (Model::set_conventions sets it).
    conventions convention = conventions::keras;
    /// Sets `convention`.
    void set_conventions(conventions c) { convention = c; }

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
        using detail::sgd_kind;
        using detail::sgd_update;
        if (options.momentum == 0.0f) {
            Exec::for_each(v.size(), sgd_update<sgd_kind::plain, Scalars>{v.value, v.grad, nullptr, s, 0.0f,
                                                                         options.weight_decay});
        } else if (convention == conventions::pytorch) {
            momentum_update<Exec, true>(v, slots, s);
        } else {
            momentum_update<Exec, false>(v, slots, s);
        }
    }
    template <class Exec, bool PyTorch, class Scalars>
    void momentum_update(const variable_ref& v, float* const* slots, Scalars s) const {
        using detail::sgd_kind;
        using detail::sgd_update;
        if (options.nesterov) {
            Exec::for_each(v.size(), sgd_update<sgd_kind::nesterov, Scalars, PyTorch>{
                                         v.value, v.grad, slots[0], s, options.momentum, options.weight_decay});
        } else {
            Exec::for_each(v.size(), sgd_update<sgd_kind::momentum, Scalars, PyTorch>{
                                         v.value, v.grad, slots[0], s, options.momentum, options.weight_decay});
        }
    }
};

}  // namespace batchwise
