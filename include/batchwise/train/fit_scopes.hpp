// What Model::fit puts in place for as long as it runs, each undone when it returns or throws:
// the view of the model its callbacks get, its step rules and class weights, its hooks, and the
// late reading of replayed steps.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <utility>
#include <vector>

#include "batchwise/train/callback.hpp"
#include "batchwise/train/step/optimizer_state.hpp"

namespace batchwise::detail {

/// What fit's callbacks see of a model.
template <class M, class Engine>
class fit_context final : public training_context {
public:
    fit_context(M& m, Engine& engine, std::uint64_t epochs) : m_(m), engine_(engine), epochs_(epochs) {}
    [[nodiscard]] float learning_rate() const override { return m_.learning_rate(); }
    void set_learning_rate(float lr) override { m_.set_learning_rate(lr); }
    [[nodiscard]] std::vector<float> weights() const override {
        engine_.settle_queued();  // replayed steps may still be queued: let weights and counters agree
        std::vector<float> w;
        for (const auto& [name, values] : m_.get_weights()) w.insert(w.end(), values.begin(), values.end());
        return w;
    }
    void set_weights(const std::vector<float>& w) override {
        engine_.settle_queued();
        std::size_t at = 0;
        for (const auto& v : m_.variables()) {
            M::execution_policy::from_host(w.data() + at, v.ref.size(), v.ref.value);
            at += v.ref.size();
        }
    }
    [[nodiscard]] bool weights_finite() const override {
        for (float x : weights()) {
            if (!std::isfinite(x)) return false;
        }
        return true;
    }
    void save_weights(const std::filesystem::path& path) const override {
        engine_.settle_queued();
        m_.save_weights(path);
    }
    void save_checkpoint(const std::filesystem::path& path) const override {
        engine_.settle_queued();
        m_.save_checkpoint(path);
    }
    [[nodiscard]] std::uint64_t epochs() const override { return epochs_; }
    [[nodiscard]] bool at_step_boundary() const override { return !m_.window_open(); }
    [[nodiscard]] bool is_chief() const override { return m_.is_chief(); }

private:
    M& m_;
    Engine& engine_;
    std::uint64_t epochs_;
};

/// Puts fit_options' step rules in place, when they set any, until fit returns or throws.
template <class Optimizer>
class rules_scope {
public:
    rules_scope(Optimizer& opt, step_rules rules) : opt_(opt), previous_(opt.rules()), active_(rules.active()) {
        if (active_) opt_.set_rules(std::move(rules));
    }
    rules_scope(const rules_scope&) = delete;
    rules_scope& operator=(const rules_scope&) = delete;
    ~rules_scope() {
        if (active_) opt_.restore_rules(std::move(previous_));
    }

private:
    Optimizer& opt_;
    step_rules previous_;
    bool active_;
};

/// Puts fit's class weights on the training loss until fit returns or throws. Captured step
/// graphs hold the loss's calls, so they go when the weights change.
template <class Engine>
class class_weight_scope {
public:
    class_weight_scope(Engine& e, std::vector<float> w) : e_(e), previous_(e.objective().class_weights()) {
        changed_ = w != previous_;
        if (changed_) {
            e_.captured().reset();
            e_.objective().set_class_weights(std::move(w));
        }
    }
    class_weight_scope(const class_weight_scope&) = delete;
    class_weight_scope& operator=(const class_weight_scope&) = delete;
    ~class_weight_scope() {
        if (!changed_) return;
        e_.captured().reset();
        e_.objective().set_class_weights(std::move(previous_));
    }

private:
    Engine& e_;
    std::vector<float> previous_;
    bool changed_ = false;
};

/// Clears a hook when fit returns or throws.
template <class Hook>
struct hook_reset {
    Hook& hook;
    explicit hook_reset(Hook& h) : hook(h) {}
    hook_reset(const hook_reset&) = delete;
    hook_reset& operator=(const hook_reset&) = delete;
    ~hook_reset() { hook = nullptr; }
};

/// Lets replayed steps report two steps late while fit runs (the device always has the next
/// step queued); on the way out, queued steps are read, so that weights and counters agree
/// (a fault among them, found while an error unwinds, is kept for the next training call).
template <class Engine>
class lag_scope {
public:
    explicit lag_scope(Engine& e) : e_(e), previous_(e.captured().lagged()) { e_.captured().set_lagged(true); }
    lag_scope(const lag_scope&) = delete;
    lag_scope& operator=(const lag_scope&) = delete;
    ~lag_scope() {
        e_.captured().set_lagged(previous_);
        if (previous_) return;  // the caller reads late too (Model::set_late_results)
        try {
            e_.settle_queued();
        } catch (...) {  // NOLINT(bugprone-empty-catch): an error is already on its way out of fit
        }
    }

private:
    Engine& e_;
    bool previous_;
};

}  // namespace batchwise::detail
