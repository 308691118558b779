// An optimizer chosen at run time (Model::compile, as in Keras): one virtual call per variable
// and step is the price, and it keeps the model's type independent of the optimizer's.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>

#include "batchwise/core/conventions.hpp"
#include "batchwise/core/concepts.hpp"
#include "batchwise/layers/layer.hpp"
#include "batchwise/optimizers/multi_tensor.hpp"
#include "batchwise/optimizers/optimizer.hpp"

namespace batchwise::detail {

/// An optimizer's moment decays and epsilon (Adam's betas; RMSprop's rho as beta_2), which
/// coupling_rule::adam_sqrt rescales with the batch; `present` is false for one without them.
struct optimizer_moments {
    float beta_1 = 0.0f;
    float beta_2 = 0.0f;
    float epsilon = 0.0f;
    bool present = false;
    /// RMSprop adds epsilon inside the square root (Keras), Adam after it.
    bool epsilon_inside_root = false;
};

template <class Exec>
struct optimizer_base {
    virtual ~optimizer_base() = default;
    [[nodiscard]] virtual std::string_view name() const = 0;
    [[nodiscard]] virtual std::size_t slot_count() const = 0;
    /// What the slots hold (checkpoints record it; OptimizerFor).
    [[nodiscard]] virtual optimizer_state_layout state_layout() const = 0;
    [[nodiscard]] virtual float learning_rate() const = 0;
    virtual void apply(const variable_ref& v, float* const* slots, std::uint64_t step, float lr,
                       float grad_scale) const = 0;
    /// The step as an update a layer can apply inside its gradient GEMM, where the optimizer
    /// has one (plain SGD).
    [[nodiscard]] virtual std::optional<update_in_gemm> in_gemm(float lr, float grad_scale) const = 0;
    /// Whether the step can be replayed from a captured graph (CapturableOptimizer), and the
    /// two halves of such a step: scalars on the host, the update reading them from memory.
    [[nodiscard]] virtual bool capturable() const = 0;
    [[nodiscard]] virtual step_scalars scalars(std::uint64_t step, float lr, float grad_scale) const = 0;
    virtual void apply_from(const variable_ref& v, float* const* slots, const step_scalars* device) const = 0;
    /// apply_from for `count` variables, vars[k] with slots[k]: one launch for all of them where
    /// the update is element-wise (ElementWiseOptimizer), a launch each otherwise.
    virtual void apply_all_from(const variable_ref* vars, float* const* const* slots, std::size_t count,
                                const step_scalars* device) const = 0;
    [[nodiscard]] virtual optimizer_moments moments() const = 0;
    /// Which slot holds the running mean of squared gradients (Adam's v, RMSprop's), or -1.
    [[nodiscard]] virtual int second_moment_slot() const = 0;
    /// Sets the moment decays and epsilon the next updates use (ignored without them).
    virtual void set_moments(const optimizer_moments& m) = 0;
    /// Keras's or PyTorch's definitions, for an optimizer whose update differs between them.
    virtual void set_conventions(conventions c) = 0;
};

template <class O, class Exec>
struct optimizer_holder final : optimizer_base<Exec> {
    O opt;
    explicit optimizer_holder(O o) : opt(std::move(o)) {}
    [[nodiscard]] std::string_view name() const override { return O::name; }
    [[nodiscard]] std::size_t slot_count() const override { return opt.slot_count(); }
    [[nodiscard]] optimizer_state_layout state_layout() const override {
        if constexpr (requires { { opt.state_layout() } -> std::convertible_to<optimizer_state_layout>; }) {
            return opt.state_layout();
        } else {
            return default_state_layout(O::name, opt.slot_count());
        }
    }
    [[nodiscard]] float learning_rate() const override { return opt.learning_rate(); }
    void apply(const variable_ref& v, float* const* slots, std::uint64_t step, float lr,
               float grad_scale) const override {
        opt.template apply<Exec>(v, slots, step, lr, grad_scale);
    }
    [[nodiscard]] std::optional<update_in_gemm> in_gemm(float lr, float grad_scale) const override {
        if constexpr (requires { opt.in_gemm(lr, grad_scale); }) {
            return opt.in_gemm(lr, grad_scale);
        } else {
            return std::nullopt;
        }
    }
    [[nodiscard]] bool capturable() const override { return CapturableOptimizer<O, Exec>; }
    [[nodiscard]] step_scalars scalars(std::uint64_t step, float lr, float grad_scale) const override {
        if constexpr (CapturableOptimizer<O, Exec>) {
            return opt.scalars(step, lr, grad_scale);
        } else {
            return plain_step_scalars(lr, grad_scale);
        }
    }
    void apply_from(const variable_ref& v, float* const* slots, const step_scalars* device) const override {
        if constexpr (CapturableOptimizer<O, Exec>) opt.template apply_from<Exec>(v, slots, device);
    }
    void apply_all_from(const variable_ref* vars, float* const* const* slots, std::size_t count,
                        const step_scalars* device) const override {
        if constexpr (CapturableOptimizer<O, Exec> && ElementWiseOptimizer<O>) {
            detail::launch_together together;
            for (std::size_t k = 0; k < count; ++k) {
                opt.template apply_from<detail::collecting_policy<Exec>>(vars[k], slots[k], device);
            }
            together.launch();
        } else if constexpr (CapturableOptimizer<O, Exec>) {
            for (std::size_t k = 0; k < count; ++k) opt.template apply_from<Exec>(vars[k], slots[k], device);
        }
    }
    [[nodiscard]] optimizer_moments moments() const override {
        if constexpr (requires { opt.options.beta_1 + opt.options.beta_2 + opt.options.epsilon; }) {
            return {opt.options.beta_1, opt.options.beta_2, opt.options.epsilon, true};
        } else if constexpr (requires { opt.options.rho + opt.options.epsilon; }) {
            return {0.0f, opt.options.rho, opt.options.epsilon, true, true};
        } else {
            return {};
        }
    }
    [[nodiscard]] int second_moment_slot() const override {
        if constexpr (requires { opt.options.beta_1 + opt.options.beta_2; }) {
            return 1;
        } else if constexpr (requires { opt.options.rho; }) {
            return 0;
        } else {
            return -1;
        }
    }
    void set_conventions(conventions c) override {
        if constexpr (requires { opt.set_conventions(c); }) opt.set_conventions(c);
    }
    void set_moments(const optimizer_moments& m) override {
        if constexpr (requires { opt.options.beta_1 + opt.options.beta_2 + opt.options.epsilon; }) {
            opt.options.beta_1 = m.beta_1;
            opt.options.beta_2 = m.beta_2;
            opt.options.epsilon = m.epsilon;
        } else if constexpr (requires { opt.options.rho + opt.options.epsilon; }) {
            opt.options.rho = m.beta_2;
            opt.options.epsilon = m.epsilon;
        }
    }
};

}  // namespace batchwise::detail
