// The compiled optimizer and everything it keeps between steps: its per-variable slots
// (zero-initialised, in the policy's memory), the learning rate, the step counter, the samples
// trained, and the rules that set each step's hyper-parameters (batch/coupling.hpp).
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "batchwise/batch/coupling.hpp"
#include "batchwise/core/concepts.hpp"
#include "batchwise/core/errors.hpp"
#include "batchwise/optimizers/any_optimizer.hpp"
#include "batchwise/train/step/variables.hpp"

namespace batchwise {

/// The contributions of this class are: 1. it owns the compiled optimizer, type-erased, and its
/// slots in the policy's memory; 2. it counts steps and samples, which checkpoints save; 3. it
/// fixes each step's hyper-parameters from the step rules (begin_step), which step_window::finish
/// calls before apply() and count_step().
template <ExecutionPolicy Exec>
class optimizer_state {
public:
    /// The most state vectors per variable an optimizer may keep (Adam with AMSGrad keeps 3).
    static constexpr std::size_t max_slots = 4;

    /// Throws when the step rules cannot apply to this optimizer; Model::compile asks before it
    /// changes anything.
    template <class Optimizer>
    void check_rules_for(const Optimizer& optimizer) const {
        const detail::optimizer_holder<Optimizer, Exec> probe(optimizer);
        if (rules_.coupling.rule == coupling_rule::adam_sqrt && !probe.moments().present) {
            throw usage_error("Model::compile: the step rules use coupling_rule::adam_sqrt, which rescales moment "
                              "decays that " + std::string(Optimizer::name) + " does not have");
        }
    }

    /// Replaces the optimizer, with fresh slots and the step counter at 0. The new slots are
    /// allocated before anything is replaced: if that fails, the old optimizer stays.
    template <class Optimizer>
    void compile(Optimizer optimizer, const variable_set& vars) {
        const std::size_t slots = optimizer.slot_count();
        if (slots > max_slots) throw usage_error("Model::compile: the optimizer keeps too many slots");
        check_rules_for(optimizer);
        std::vector<typename Exec::vector> storage;
        for (const auto& v : vars.entries()) {
            if (!v.ref.trainable()) continue;
            for (std::size_t k = 0; k < slots; ++k) {
                storage.emplace_back();
                Exec::reserve(storage.back(), v.ref.size());
                Exec::fill(Exec::data(storage.back()), v.ref.size(), 0.0f);
            }
        }
        // Pointers are taken once the storage has stopped moving.
        std::vector<std::array<float*, max_slots>> pointers(vars.size());
        std::size_t next = 0;
        for (std::size_t i = 0; i < vars.size(); ++i) {
            if (!vars[i].ref.trainable()) continue;
            for (std::size_t k = 0; k < slots; ++k) pointers[i][k] = Exec::data(storage[next++]);
        }
        auto holder = std::make_unique<detail::optimizer_holder<Optimizer, Exec>>(std::move(optimizer));
        // Views of the second moments, made once, so that no step allocates to describe them.
        std::vector<gradient_buffer> moments;
        if (const int k = holder->second_moment_slot(); k >= 0) {
            for (std::size_t i = 0; i < vars.size(); ++i) {
                if (vars[i].ref.trainable()) moments.push_back({vars[i].name, pointers[i][k], vars[i].ref.size()});
            }
        }
        learning_rate_ = holder->learning_rate();
        compiled_moments_ = holder->moments();
        optimizer_ = std::move(holder);
        optimizer_->set_conventions(conventions_);
        storage_ = std::move(storage);
        pointers_ = std::move(pointers);
        second_moments_ = std::move(moments);
        iterations_ = 0;
        samples_seen_ = 0;
        reference_ = rules_.coupling.reference_batch;
        ++moments_version_;
    }

    /// Whether compile() has run.
    [[nodiscard]] bool compiled() const { return optimizer_ != nullptr; }
    /// The compiled optimizer (call only once compiled()).
    [[nodiscard]] const detail::optimizer_base<Exec>& optimizer() const { return *optimizer_; }
    /// State vectors per trainable variable; 0 before compile().
    [[nodiscard]] std::size_t slot_count() const { return optimizer_ ? optimizer_->slot_count() : 0; }
    /// The slots of variable i (nullptr entries for a variable that is not trainable).
    [[nodiscard]] float* const* slots(std::size_t i) const { return pointers_[i].data(); }

    /// The base learning rate (what compile, set_learning_rate and schedulers set); a step
    /// uses it as the step rules say.
    [[nodiscard]] float learning_rate() const { return learning_rate_; }
    /// Sets the base learning rate (Model::set_learning_rate, callbacks).
    void set_learning_rate(float lr) { learning_rate_ = lr; }
    /// Keras's or PyTorch's update rule for the compiled optimizer and any compiled later.
    void set_conventions(conventions c) {
        conventions_ = c;
        if (optimizer_) optimizer_->set_conventions(c);
    }
    /// The conventions last set (Keras's by default).
    [[nodiscard]] conventions conventions_used() const { return conventions_; }

    /// Optimizer steps taken since compile(); the step being computed is iterations() + 1.
    [[nodiscard]] std::uint64_t iterations() const { return iterations_; }
    /// Samples of the optimizer steps taken since compile() (across processes).
    [[nodiscard]] std::uint64_t samples_seen() const { return samples_seen_; }
    /// The coupling's reference batch: given, or the first step's (0 until then).
    [[nodiscard]] std::size_t reference_batch() const { return reference_; }
    /// A checkpoint's counters.
    void restore_counters(std::uint64_t iterations, std::uint64_t samples_seen, std::size_t reference) {
        iterations_ = iterations;
        samples_seen_ = samples_seen;
        reference_ = rules_.coupling.reference_batch != 0 ? rules_.coupling.reference_batch : reference;
    }

    // ---- each step's hyper-parameters -------------------------------------------------------

    /// Sets the rules; a coupling with a given reference batch replaces the one in use, one
    /// without keeps it (a resumed run keeps its first step's).
    void set_rules(step_rules rules) {
        if (rules.coupling.rule == coupling_rule::adam_sqrt && optimizer_ && !compiled_moments_.present) {
            throw usage_error("coupling_rule::adam_sqrt rescales moment decays (Adam's betas, RMSprop's rho), "
                              "which " + std::string(optimizer_->name()) + " does not have; use linear or sqrt");
        }
        if (rules.coupling.reference_batch != 0) reference_ = rules.coupling.reference_batch;
        rules_ = std::move(rules);
        ++moments_version_;  // captured updates hold the decays the old rules gave
    }
    /// The rules in place; inactive ones leave every step at learning_rate().
    [[nodiscard]] const step_rules& rules() const { return rules_; }
    /// Puts back rules that were in place before (keeps the reference batch; never throws).
    void restore_rules(step_rules rules) noexcept {
        rules_ = std::move(rules);
        ++moments_version_;
    }

    /// What an optimizer step of `samples` samples taken now would use (nothing changes).
    [[nodiscard]] optimizer_step_record hyperparameters_for(std::size_t samples) const {
        optimizer_step_record r{.step = iterations_ + 1, .samples_seen = samples_seen_, .batch = samples};
        const detail::optimizer_moments& m = compiled_moments_;
        r.beta_1 = m.beta_1;
        r.beta_2 = m.beta_2;
        r.epsilon = m.epsilon;
        if (!rules_.active()) {
            r.learning_rate = learning_rate_;
            return r;
        }
        const float base = rules_.learning_rate ? rules_.learning_rate(samples_seen_) : learning_rate_;
        if (!(base >= 0.0f) || !std::isfinite(base)) {
            throw usage_error("learning-rate schedule gave " + std::to_string(base) + " after " +
                              std::to_string(samples_seen_) + " samples");
        }
        const coupling_factors f =
            coupling_factors_for(rules_.coupling, samples, reference_ != 0 ? reference_ : samples, samples_seen_);
        r.learning_rate = static_cast<float>(base * f.learning_rate);
        if (m.present && rules_.coupling.rule == coupling_rule::adam_sqrt) {
            if (!m.epsilon_inside_root) r.beta_1 = coupled_decay(m.beta_1, f.moment_rate);
            r.beta_2 = coupled_decay(m.beta_2, f.moment_rate);
            // Epsilon added to sqrt(v) scales as sqrt(v) does; inside the root (RMSprop) as v.
            const double eps = m.epsilon_inside_root ? f.epsilon * f.epsilon : f.epsilon;
            r.epsilon = static_cast<float>(m.epsilon * eps);
        }
        return r;
    }

    /// Fixes the hyper-parameters of the step being taken, of `samples` samples: the first
    /// thing step_window::finish does after the reduction.
    void begin_step(std::size_t samples) {
        step_ = hyperparameters_for(samples);
        if (reference_ == 0 && rules_.coupling.rule != coupling_rule::none) reference_ = samples;
        if (compiled_moments_.present) {
            const detail::optimizer_moments m{step_.beta_1, step_.beta_2, step_.epsilon, true,
                                              compiled_moments_.epsilon_inside_root};
            const detail::optimizer_moments now = optimizer_->moments();
            if (m.beta_1 != now.beta_1 || m.beta_2 != now.beta_2 || m.epsilon != now.epsilon) {
                optimizer_->set_moments(m);
                ++moments_version_;
            }
        }
    }
    /// Changes whenever the moment decays an update is built with change (captured graphs hold
    /// them).
    [[nodiscard]] std::uint64_t moments_version() const { return moments_version_; }

    /// Counts a step as taken: the last thing step_window::finish does.
    void count_step() {
        ++iterations_;
        samples_seen_ += step_.batch;
        if (on_step) on_step(step_);
    }
    /// Reported after every optimizer step, with what it used (fit records it in History).
    std::function<void(const optimizer_step_record&)> on_step;

    /// The optimizer's second moments as the next step will find them (empty before the first
    /// step and for optimizers without them).
    [[nodiscard]] second_moment_view second_moments() const {
        if (iterations_ == 0 || second_moments_.empty()) return {};
        const detail::optimizer_moments m = optimizer_->moments();
        return {second_moments_, m.epsilon, m.epsilon_inside_root};
    }

    /// The update of variable i for the step being taken, from its summed gradient.
    void apply(std::size_t i, const variable_ref& v, float grad_scale) const {
        optimizer_->apply(v, slots(i), iterations_ + 1, step_.learning_rate, grad_scale);
    }

private:
    std::unique_ptr<detail::optimizer_base<Exec>> optimizer_;
    conventions conventions_ = conventions::keras;
    std::vector<typename Exec::vector> storage_;
    std::vector<std::array<float*, max_slots>> pointers_;
    std::vector<gradient_buffer> second_moments_;
    float learning_rate_ = 0.0f;
    std::uint64_t iterations_ = 0;
    std::uint64_t samples_seen_ = 0;
    std::size_t reference_ = 0;
    step_rules rules_;
    detail::optimizer_moments compiled_moments_;
    optimizer_step_record step_;
    std::uint64_t moments_version_ = 0;
};

}  // namespace batchwise
