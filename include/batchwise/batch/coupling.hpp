// How the optimizer's hyper-parameters follow the batch size (learning-rate coupling), and
// learning-rate schedules keyed by the samples trained rather than by epochs or steps, so that
// the rate at a given point of training does not depend on how the samples were batched.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>

#include "batchwise/core/errors.hpp"

namespace batchwise {

/// What the hyper-parameters do when the batch is k times the reference batch.
enum class coupling_rule {
    /// Nothing changes.
    none,
    /// The learning rate times k (Goyal et al.\ 2017, for SGD).
    linear,
    /// The learning rate times sqrt(k).
    sqrt,
    /// Malladi et al.\ 2022's square-root rule for adaptive optimizers: the learning rate times
    /// sqrt(k), 1 - beta_1 and 1 - beta_2 (RMSprop's 1 - rho) times k, epsilon divided by sqrt(k)
    /// (by k for RMSprop, which adds it inside the square root). A decay whose 1 - beta would
    /// pass 1 is held at 0: the rule is meant for k (1 - beta) well below 1.
    adam_sqrt,
};

/// The rule's name as written in code ("adam_sqrt"), for logs.
[[nodiscard]] inline const char* to_string(coupling_rule r) {
    switch (r) {
        case coupling_rule::none: return "none";
        case coupling_rule::linear: return "linear";
        case coupling_rule::sqrt: return "sqrt";
        case coupling_rule::adam_sqrt: return "adam_sqrt";
    }
    return "?";
}

/// The coupling of Model::fit (fit_options::coupling) or of a custom loop (Model::set_step_rules).
struct lr_coupling {
    /// How the hyper-parameters follow the batch size; none by default.
    coupling_rule rule = coupling_rule::none;
    /// The batch size the optimizer's hyper-parameters were chosen for; 0: the first optimizer
    /// step's batch (kept from then on, and saved in checkpoints).
    std::size_t reference_batch = 0;
    /// Goyal et al.\ 2017's gradual warmup: over this many samples the learning-rate factor grows
    /// linearly from 1 to its full value. 0: none.
    std::uint64_t warmup_samples = 0;
};

/// Multipliers of one step's hyper-parameters.
struct coupling_factors {
    /// Multiplies the learning rate.
    double learning_rate = 1.0;
    /// Multiplies 1 - beta (Adam's both betas, RMSprop's rho).
    double moment_rate = 1.0;
    /// Multiplies epsilon.
    double epsilon = 1.0;
};

/// The factors for an optimizer step of `batch` samples, relative to `reference` samples, after
/// `samples_seen` samples have been trained.
[[nodiscard]] inline coupling_factors coupling_factors_for(const lr_coupling& c, std::size_t batch,
                                                           std::size_t reference, std::uint64_t samples_seen) {
    if (c.rule == coupling_rule::none) return {};
    if (batch == 0 || reference == 0) throw usage_error("lr_coupling: batch sizes must be positive");
    const double k = static_cast<double>(batch) / static_cast<double>(reference);
    coupling_factors f;
    switch (c.rule) {
        case coupling_rule::linear: f.learning_rate = k; break;
        case coupling_rule::sqrt: f.learning_rate = std::sqrt(k); break;
        case coupling_rule::adam_sqrt:
            f.learning_rate = std::sqrt(k);
            f.moment_rate = k;
            f.epsilon = 1.0 / std::sqrt(k);
            break;
        case coupling_rule::none: break;
    }
    if (c.warmup_samples > 0 && samples_seen < c.warmup_samples) {
        const double progress = static_cast<double>(samples_seen) / static_cast<double>(c.warmup_samples);
        f.learning_rate = 1.0 + (f.learning_rate - 1.0) * progress;
    }
    return f;
}

/// A decay rate beta under a moment factor: 1 - beta scaled, and kept a decay (in [0, 1)).
[[nodiscard]] inline float coupled_decay(float beta, double moment_rate) {
    const double one_minus = std::min(1.0, (1.0 - static_cast<double>(beta)) * moment_rate);
    return static_cast<float>(1.0 - one_minus);
}

/// A learning rate as a function of the samples trained before the step (whatever their
/// batching): fit_options::learning_rate_schedule.
using sample_lr_schedule = std::function<float(std::uint64_t samples_seen)>;

/// Learning-rate schedules keyed by the samples trained (fit_options::learning_rate_schedule).
namespace lr {

/// Keras's ExponentialDecay with its step counted in samples: initial * rate^(s / every_samples),
/// or, with `staircase`, rate^floor(s / every_samples) (a step decay).
struct exponential_decay {
    /// The learning rate at sample 0.
    float initial = 0.001f;
    /// The factor the rate falls by over every_samples samples.
    double rate = 0.5;
    /// Samples per decay period; must be set (positive).
    std::uint64_t every_samples = 0;
    /// Whether the rate falls in steps, once per whole period.
    bool staircase = false;
    /// The learning rate after `s` samples; usage_error when every_samples is 0.
    [[nodiscard]] float operator()(std::uint64_t s) const {
        if (every_samples == 0) throw usage_error("lr::exponential_decay: every_samples must be positive");
        const double periods = staircase ? static_cast<double>(s / every_samples)
                                         : static_cast<double>(s) / static_cast<double>(every_samples);
        return static_cast<float>(initial * std::pow(rate, periods));
    }
};

}  // namespace lr

/// The rules every optimizer step's hyper-parameters follow: a learning rate by samples seen
/// (empty: the model's learning rate, as set by compile, set_learning_rate or a
/// LearningRateScheduler) and the coupling to the step's batch size.
struct step_rules {
    /// The learning rate by samples seen; empty: the model's own.
    sample_lr_schedule learning_rate{};
    /// How the hyper-parameters follow each step's batch size.
    lr_coupling coupling{};
    /// Whether either rule changes anything: otherwise the steps use the optimizer's own
    /// hyper-parameters unchanged.
    [[nodiscard]] bool active() const { return learning_rate != nullptr || coupling.rule != coupling_rule::none; }
};

/// What one optimizer step used: History::optimizer_step_log.
struct optimizer_step_record {
    /// The step, counted from 1.
    std::uint64_t step = 0;
    /// Samples of the optimizer steps before this one.
    std::uint64_t samples_seen = 0;
    /// Samples of this step (the effective batch).
    std::size_t batch = 0;
    /// The learning rate the step used, after schedule, coupling and warmup.
    float learning_rate = 0.0f;
    /// Adam's beta_1 after coupling; 0 for RMSprop, whose only decay is in beta_2, and for
    /// an optimizer without one.
    float beta_1 = 0.0f;
    /// Adam's beta_2, or RMSprop's rho, after coupling; 0 for an optimizer without one.
    float beta_2 = 0.0f;
    /// Epsilon after coupling; 0 for an optimizer without one.
    float epsilon = 0.0f;
};

}  // namespace batchwise
