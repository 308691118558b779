// A static-batch training step replayed from captured graphs: two launches instead of one per
// kernel. Another way of executing the same step; the window's finish() still ends it.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

#include "batchwise/exec/capabilities.hpp"
#include "batchwise/layers/layer.hpp"
#include "batchwise/train/history.hpp"
#include "batchwise/train/step/objective.hpp"

namespace batchwise {

/// Where a policy or the accumulation policy cannot capture: nothing to hold, nothing captured.
template <class Exec, bool Enabled>
class captured_step {
public:
    /// Nothing to turn on: every step runs eagerly.
    void set_enabled(bool) {}
    /// Never: there are no graphs.
    [[nodiscard]] bool held() const { return false; }
    /// Always empty.
    [[nodiscard]] const std::string& refused() const { return refused_; }
    /// Nothing to drop.
    void drop() {}
    /// Nothing to reset.
    void reset() {}
    /// Never called; present so that fit can set it under every policy.
    std::function<void(const step_capture_refusal&)> on_refused;

private:
    std::string refused_;
};

/// The step as graphs: the forward pass with the loss and metric sums (read back before anything
/// is updated, so that a non-finite loss stops the step), then the backward pass with the
/// optimizer update and the layers' end_step. What changes between steps (the sample position,
/// the optimizer's scalars) is copied into device scalars by the graphs from pinned host memory
/// rewritten before each launch.
///
/// When host code must see the gradients before the update (an accumulation policy's reduction
/// hook, step observers), the backward pass and the update are two graphs, and the window's
/// finish() runs that code between them; the update graph then copies scalars of its own, with
/// the grad_scale of the sample count the hook left.
///
/// Replayed steps alternate between two input buffers, each with its own graphs: the batch of
/// step k+1 is copied into one on a side stream while step k's backward pass, which still reads
/// the other (the first layer's weight gradient needs its input), runs.
template <class Exec>
    requires GraphCapturePolicy<Exec>
class captured_step<Exec, true> {
public:
    /// Turns capture on (the default) or off; off drops the graphs.
    void set_enabled(bool enabled) {
        enabled_ = enabled;
        if (!enabled) drop();
    }
    /// Whether the step is currently held as graphs.
    [[nodiscard]] bool held() const { return forward_[0].has_value(); }
    /// Why the step could not be captured, or empty.
    [[nodiscard]] const std::string& refused() const { return refused_; }
    /// Reported when a capture is refused (fit forwards it to callbacks and History).
    std::function<void(const step_capture_refusal&)> on_refused;

    /// Drops the graphs: the next full-batch step runs eagerly and the one after captures them
    /// anew.
    void drop() {
        for (std::size_t p = 0; p < 2; ++p) {
            forward_[p].reset();
            backward_[p].reset();
            update_[p].reset();
        }
        warmed_up_ = false;
        parity_ = 0;
    }
    /// The graphs hold calls of the old optimizer, loss and metrics: compile() starts over.
    void reset() {
        drop();
        refused_.clear();
    }

    /// Whether a step may be tried from graphs at all with this optimizer.
    template <class OptimizerState>
    [[nodiscard]] bool ready(const OptimizerState& opt) const {
        return enabled_ && refused_.empty() && opt.optimizer().capturable();
    }

    /// One whole optimizer step of a full static batch from the graphs, capturing them first if
    /// need be. Returns false, having changed nothing, when the step is to run eagerly: the
    /// first such step after the graphs were dropped, or one that cannot be captured.
    template <class Engine>
    bool train(Engine& e, const float* x, const float* y, std::size_t n, const char* call, step_sums& sums) {
        constexpr std::size_t in = Engine::in_features;
        constexpr bool device_checks = DeviceInputCheckPolicy<Exec>;
        // Another model grew the policy's shared scratch since the capture: the graphs point at
        // freed memory. Or an observer came or went: the update is captured in another shape.
        const bool split = e.window_.update_after_host();
        if (forward_[0] && (generation_ != Exec::shared_buffers_generation() || split_ != split ||
                            moments_version_ != e.opt_.moments_version())) {
            drop();
        }
        // Capture comes second, so that whatever a library sets up on first use (cuBLAS's
        // heuristics, Thrust's kernel attributes) happens outside it.
        if (!warmed_up_) {
            warmed_up_ = true;
            return false;
        }
        // The loss, each metric, and the count of non-finite inputs.
        const std::size_t slots = 1 + e.objective_.metric_count() + (device_checks ? 1 : 0);
        const std::size_t ty = e.objective_.target_cols();
        e.reserve(n);
        if (!forward_[0]) {
            Exec::reserve(scalars_, 2);
            host_scalars_.resize(2);
            Exec::reserve(sums_, slots);
            host_sums_.resize(slots);
            for (std::size_t p = 0; p < 2; ++p) {
                Exec::reserve(inputs_[p], n * in);
                Exec::reserve(targets_[p], n * ty);
            }
            split_ = split;
            for (std::size_t p = 0; p < 2; ++p) {
                if (!capture(e, n, slots, p)) {
                    drop();
                    return false;
                }
            }
            generation_ = Exec::shared_buffers_generation();
            moments_version_ = e.opt_.moments_version();
        }
        // Everything the graphs read that differs from step to step. The buffers of this parity
        // were last read two steps ago, before the forward pass the host last waited for.
        const std::size_t p = parity_;
        const float* from = e.staging_.stage_on_host(x, y, n, n, ty);
        const bool check_on_device = device_checks && e.staging_.take_deferred_check();
        Exec::copy_ahead(from, n * in, Exec::data(inputs_[p]));
        Exec::copy_ahead(e.staging_.staged_targets(), n * ty, Exec::data(targets_[p]));
        Exec::await_copies();
        host_scalars_[0] = scalars(e, n);

        Exec::launch(*forward_[p]);
        Exec::to_host(Exec::data(sums_), slots, host_sums_.data());
        if (check_on_device && host_sums_[slots - 1] != 0.0) e.staging_.reject_non_finite_inputs(x, n);
        const double loss_sum = host_sums_[0];
        if (!std::isfinite(loss_sum)) e.stop_on_non_finite_loss(loss_sum, call);
        for (std::size_t m = 0; m < e.objective_.metric_count(); ++m) sums.metrics[m] += host_sums_[1 + m];
        try {
            if (split_) Exec::launch(*backward_[p]);
            e.window_.add(e.vars_, e.opt_, n);
            e.window_.finish(*e.net_, e.opt_, e.vars_, [&](const step_gradients& g) {
                if (split_) {
                    host_scalars_[1] = scalars(e, g.samples);
                    Exec::launch(*update_[p]);
                } else {
                    Exec::launch(*backward_[p]);  // gradients, update and end_step in one graph
                }
            });
        } catch (...) {
            // A launch that failed leaves no gradients an eager step could trust.
            e.window_.discard();
            throw;
        }
        parity_ = 1 - p;
        e.advance_cursor(n);
        sums.loss += loss_sum;
        sums.samples += n;
        return true;
    }

private:
    template <class Engine>
    static step_scalars scalars(Engine& e, std::size_t samples) {
        step_scalars s = e.opt_.optimizer().scalars(e.opt_.iterations() + 1, e.opt_.hyperparameters_for(samples).learning_rate,
                                                    1.0f / static_cast<float>(samples));
        s.epoch = e.epoch();
        s.first_sample = e.sample_cursor();
        return s;
    }

    /// Records the graphs of a full-batch step for one input buffer. Nothing runs while they are
    /// recorded; the layers' host-side bookkeeping (batch norm's sample counts) is that of one
    /// step, and is the same for every full batch, so the graphs may keep it.
    template <class Engine>
    bool capture(Engine& e, std::size_t rows, std::size_t slots, std::size_t parity) {
        constexpr std::size_t in = Engine::in_features;
        constexpr std::size_t out = Engine::out_features;
        const std::size_t ty = e.objective_.target_cols();
        step_scalars* device = Exec::data(scalars_);
        float* grad = Exec::data(e.grad_);
        float* scratch = Exec::data(e.row_scratch_);
        try {
            Exec::begin_capture(Exec::data(sums_), slots);
            Exec::from_host(host_scalars_.data(), 1, device);
            e.net_->begin_step();
            const pass_context ctx{.training = true, .seed = e.seed(), .valid_rows = rows, .device_scalars = device};
            const const_matrix_view o = e.net_->forward({Exec::data(inputs_[parity]), rows, in}, ctx);
            const const_matrix_view pred{o.data, rows, out};
            const const_matrix_view target{Exec::data(targets_[parity]), rows, ty};
            (void)e.objective_.training_loss_sum(pred, target, nullptr, grad, 1.0f, scratch);
            e.objective_.record_metrics(pred, target, scratch);
            if constexpr (DeviceInputCheckPolicy<Exec>) (void)Exec::count_non_finite(Exec::data(inputs_[parity]), rows * in);
            typename Exec::graph forward = Exec::end_capture();
            if (Exec::captured_sums() != slots) {
                const std::size_t reductions = Exec::captured_sums() - (DeviceInputCheckPolicy<Exec> ? 1 : 0);
                throw std::logic_error("the loss and the metrics reduced " + std::to_string(reductions) +
                                       " times, not one each");
            }

            Exec::begin_capture(nullptr, 0);
            e.net_->backward({grad, rows, out}, false);
            const step_scalars* update_scalars = device;
            if (split_) {
                backward_[parity].emplace(Exec::end_capture());
                Exec::begin_capture(nullptr, 0);
                Exec::from_host(host_scalars_.data() + 1, 1, device + 1);
                update_scalars = device + 1;
            }
            for (std::size_t i = 0; i < e.vars_.size(); ++i) {
                const variable_ref& v = e.vars_[i].ref;
                if (v.trainable()) e.opt_.optimizer().apply_from(v, e.opt_.slots(i), update_scalars);
            }
            e.net_->end_step();
            typename Exec::graph last = Exec::end_capture();
            forward_[parity].emplace(std::move(forward));
            (split_ ? update_ : backward_)[parity].emplace(std::move(last));
            return true;
        } catch (const std::exception& ex) {
            Exec::abort_capture();
            refused_ = ex.what();
            if (on_refused) on_refused({e.epoch(), e.opt_.iterations() + 1, refused_});
            return false;
        }
    }

    std::array<std::optional<typename Exec::graph>, 2> forward_, backward_, update_;
    std::array<typename Exec::vector, 2> inputs_, targets_;
    std::size_t parity_ = 0;
    /// Exec::shared_buffers_generation() when the graphs were captured.
    std::uint64_t generation_ = 0;
    /// optimizer_state::moments_version() when they were captured: the update holds the decays.
    std::uint64_t moments_version_ = 0;
    bool warmed_up_ = false;
    bool enabled_ = true;
    /// Whether the graphs were captured with the update as a graph of its own.
    bool split_ = false;
    std::string refused_;
    /// [0]: read by the forward graph (and the fused backward graph); [1]: by a separate update
    /// graph, written only after the forward graph of its step has been waited for.
    typename Exec::template array<step_scalars> scalars_;
    typename Exec::template host_array<step_scalars> host_scalars_;
    typename Exec::template array<double> sums_;
    typename Exec::template host_array<double> host_sums_;
};

}  // namespace batchwise
