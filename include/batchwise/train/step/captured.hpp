// A static-batch training step replayed from captured graphs: two launches instead of one per
// kernel. Another way of executing the same step; the window's finish() still ends it.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "batchwise/exec/capabilities.hpp"
#include "batchwise/layers/layer.hpp"
#include "batchwise/train/history.hpp"
#include "batchwise/train/step/guard.hpp"
#include "batchwise/train/step/objective.hpp"
#include "batchwise/train/step/resident.hpp"

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
    /// Every step is eager and reads its results at once: nothing can lag.
    void set_lagged(bool) {}
    /// Never.
    [[nodiscard]] bool lagged() const { return false; }
    /// Nothing is ever undone here.
    [[nodiscard]] std::size_t take_undone() { return 0; }
    /// Nothing queued.
    template <class Engine>
    void settle(Engine&) {}
    /// No results kept.
    void take_results(step_sums&) {}
    /// No fault kept.
    template <class Engine>
    void raise_fault(Engine&, const char*) {}
    /// Nothing to report.
    template <class Engine>
    void report(Engine&, const char*, step_sums&) {}
    /// Nothing runs from graphs anyway.
    void suspend_staged(bool) {}

private:
    std::string refused_;
};

/// The step as graphs, one per step (scalars, forward, loss and metric sums, guard, backward,
/// update, end_step, results to page-locked memory), which the host only queues. The guard
/// (guard.hpp) halts a step whose loss or inputs are not finite, and every step queued after it;
/// the host learns of it when it reads the results: right after the step, or two steps later
/// while results may lag (`set_lagged`: fit, Model::set_late_results), just before the step's
/// buffers are reused, so that the device always has the next step queued. A fault then undoes
/// the host's counters and position back to before the bad step, and raises.
///
/// When host code must see the gradients before the update (a reduction hook, step observers),
/// the first graph ends with the backward pass and the results, read before that code runs, and
/// the update is a graph of its own. Steps alternate between two input buffers, each with its
/// own graphs: step k+1's batch is copied into one on a side stream while step k, which still
/// reads the other (the first layer's weight gradient needs its input), runs.
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
    [[nodiscard]] bool held() const { return first_[0].has_value(); }
    /// Why the step could not be captured, or empty.
    [[nodiscard]] const std::string& refused() const { return refused_; }
    /// Reported when a capture is refused (fit forwards it to callbacks and History).
    std::function<void(const step_capture_refusal&)> on_refused;

    /// Drops the graphs: the next full-batch step runs eagerly and the one after captures them
    /// anew. Steps still queued are waited for first (a fault among them is kept for
    /// raise_fault).
    void drop() {
        wait_queued();
        for (std::size_t p = 0; p < 2; ++p) {
            first_[p].reset();
            update_[p].reset();
        }
        warmed_up_ = false;
        parity_ = 0;
    }
    /// The graphs hold calls of the old optimizer, loss and metrics: compile() starts over.
    void reset() {
        drop();
        refused_.clear();
        unreported_ = {};  // a fault found is still raised by the next training call
    }
    /// While set, train() runs nothing from graphs: a resident batch that trains eagerly
    /// (feed_resident) must not capture graphs that read staged rows.
    void suspend_staged(bool suspended) { staged_suspended_ = suspended; }

    /// Whether a step may be tried from graphs at all with this optimizer.
    template <class OptimizerState>
    [[nodiscard]] bool ready(const OptimizerState& opt) const {
        return enabled_ && refused_.empty() && opt.optimizer().capturable();
    }

    /// Whether results may be read two steps late (fit, between its reads); off, every step's
    /// results are read before train() returns.
    void set_lagged(bool lagged) { lagged_ = lagged; }
    /// Whether results may be read late.
    [[nodiscard]] bool lagged() const { return lagged_; }
    /// Steps undone by the last fault raised, which the caller had counted as trained.
    [[nodiscard]] std::size_t take_undone() { return std::exchange(undone_, 0); }

    /// Reads the results of every queued step, in order: their sums go to the unreported sums,
    /// and a fault undoes its step and those after it and is kept for raise_fault.
    template <class Engine>
    void settle(Engine& e) {
        while (true) {
            const std::size_t oldest = older_pending();
            if (oldest == none) return;
            collect(e, oldest);
        }
    }
    /// Moves the sums of read steps into `sums`.
    void take_results(step_sums& sums) {
        sums.loss += unreported_.loss;
        for (std::size_t m = 0; m < unreported_.metrics.size(); ++m) sums.metrics[m] += unreported_.metrics[m];
        sums.samples += unreported_.samples;
        unreported_ = {};
    }
    /// settle(), the read steps' sums into `sums`, then a kept fault raised.
    template <class Engine>
    void report(Engine& e, const char* call, step_sums& sums) {
        settle(e);
        take_results(sums);
        raise_fault(e, call);
    }
    /// Raises the kept fault, if any: numeric_error for a loss, data_error for an input.
    template <class Engine>
    void raise_fault(Engine& e, const char* call) {
        if (!fault_) return;
        const detail::step_fault f = *fault_;
        fault_.reset();
        undone_ = 1 + f.later;
        const std::string where =
            " (samples " + std::to_string(f.step.first_sample) + " to " +
            std::to_string(f.step.first_sample + f.step.rows - 1) + " of epoch " + std::to_string(f.step.epoch) +
            (f.later == 0 ? std::string() : ", found when one more step had been queued, which changed nothing either") +
            ")";
        if (f.inputs) {
            throw data_error(std::string(call) + ": the device found a non-finite input in the batch of optimizer step " +
                             std::to_string(f.step.iterations + 1) + where + "; no update was applied");
        }
        e.stop_on_non_finite_loss(f.loss, call, where);
    }

    /// One whole optimizer step of a full static batch from the graphs, capturing them first if
    /// need be. Returns false, having changed nothing, when the step is to run eagerly: the
    /// first such step after the graphs were dropped, or one that cannot be captured.
    template <class Engine>
    bool train(Engine& e, const float* x, const float* y, std::size_t n, const char* call, step_sums& sums) {
        if (staged_suspended_) return false;
        constexpr std::size_t in = Engine::in_features;
        const std::size_t ty = e.objective_.target_cols();
        return run(e, static_cast<detail::staged_rows*>(nullptr), n, call, sums, x, [&](std::size_t p) {
            const float* from = e.staging_.stage_on_host(x, y, n, n, ty);
            const bool check_on_device = DeviceInputCheckPolicy<Exec> && e.staging_.take_deferred_check();
            Exec::copy_ahead(from, n * in, Exec::data(inputs_[p]));
            Exec::copy_ahead(e.staging_.staged_targets(), n * ty, Exec::data(targets_[p]));
            return staged{.from_caller = from == x, .check_on_device = check_on_device};
        });
    }

    /// train() for a batch read by index from `source` (resident_data, streamed_bytes): the
    /// source stages what the step needs, and the graph's first nodes make the batch from it.
    template <class Engine, class Source>
    bool train_indexed(Engine& e, Source& source, const std::size_t* ids, std::size_t n, const char* call,
                       step_sums& sums) {
        return run(e, &source, n, call, sums, nullptr, [&](std::size_t p) {
            source.stage(p, ids, n, e.objective_, call);
            return staged{};
        });
    }

private:
    static constexpr std::size_t none = static_cast<std::size_t>(-1);

    /// What staging a step's batch did: whether the graph's input was copied straight from the
    /// caller's memory, and whether the device is the one to check it.
    struct staged {
        bool from_caller = false;
        bool check_on_device = false;
    };

    /// One step from the graphs: `stage(p)` puts the batch where parity p's graph reads it, or
    /// what `data`'s nodes make it from (data is null for staged rows). `x` is the caller's
    /// batch, for naming a non-finite input the device counted (null for a batch read by index,
    /// whose inputs were checked or are bytes).
    template <class Engine, class Source, class Stage>
    bool run(Engine& e, Source* data, std::size_t n, const char* call, step_sums& sums, const float* x,
             Stage&& stage) {
        constexpr std::size_t in = Engine::in_features;
        constexpr bool device_checks = DeviceInputCheckPolicy<Exec>;
        // Another model grew the policy's shared scratch since the capture: the graphs point at
        // freed memory. Or an observer came or went: the update is captured in another shape. Or
        // the graphs read their batch from another source.
        const bool split = e.window_.update_after_host();
        const std::uint64_t source = data != nullptr ? data->identity() : 0;
        if (first_[0] && (generation_ != Exec::shared_buffers_generation() || split_ != split ||
                          moments_version_ != e.opt_.moments_version() || source_ != source)) {
            settle(e);  // the queued steps report before their graphs go
            drop();
        }
        raise_fault(e, call);
        // Capture comes second, so that whatever a library sets up on first use (cuBLAS's
        // heuristics, Thrust's kernel attributes) happens outside it.
        if (!warmed_up_) {
            warmed_up_ = true;
            return false;
        }
        // The loss, each metric, the count of non-finite inputs, and the guard's verdict.
        const std::size_t slots = 1 + e.objective_.metric_count() + (device_checks ? 1 : 0);
        const std::size_t ty = e.objective_.target_cols();
        e.reserve(n);
        if (!first_[0]) {
            slots_ = slots;
            Exec::reserve(scalars_, 4);
            host_scalars_.resize(4);
            Exec::reserve(sums_, 2 * block());
            host_results_.resize(2 * block());
            Exec::reserve(sticky_, 1);
            host_zero_.resize(1);
            host_zero_[0] = 0;
            Exec::from_host(host_zero_.data(), 1, Exec::data(sticky_));
            for (std::size_t p = 0; p < 2; ++p) {
                Exec::reserve(inputs_[p], n * in);
                Exec::reserve(targets_[p], n * ty);
            }
            if (data != nullptr) data->reserve(n);
            split_ = split;
            source_ = data != nullptr ? data->identity() : 0;  // buffers the source grew are new ones
            for (std::size_t p = 0; p < 2; ++p) {
                if (!capture(e, n, p, data)) {
                    drop();
                    return false;
                }
            }
            generation_ = Exec::shared_buffers_generation();
            moments_version_ = e.opt_.moments_version();
        }
        // The step that last used this parity's buffers ran two steps ago: once it is read, its
        // input buffer, scalars and results may be rewritten.
        const std::size_t p = parity_;
        if (pending_[p]) collect(e, p);
        raise_fault(e, call);

        const staged got = stage(p);
        const bool check_on_device = got.check_on_device;
        Exec::await_copies();
        const detail::queued_step queued{.sequence = ++sequence_,
                                         .iterations = e.opt_.iterations(),
                                         .samples_seen = e.opt_.samples_seen(),
                                         .reference_batch = e.opt_.reference_batch(),
                                         .epoch = e.epoch(),
                                         .first_sample = e.sample_cursor(),
                                         .rows = n};
        host_scalars_[2 * p] = scalars(e, n);
        try {
            if (split_) {
                // The host code between backward and update must not see a bad step's gradients.
                Exec::launch(*first_[p]);
                Exec::mark(events_[p]);
                pending_[p] = queued;
                collect(e, p);
                if (fault_ && fault_->inputs && check_on_device) {
                    fault_.reset();
                    e.staging_.reject_non_finite_inputs(x, n);
                }
                raise_fault(e, call);
                e.window_.add(e.vars_, e.opt_, n);
                e.window_.finish(*e.net_, e.opt_, e.vars_, [&](const step_gradients& g) {
                    host_scalars_[2 * p + 1] = scalars(e, g.samples);
                    Exec::launch(*update_[p]);
                });
            } else {
                e.window_.add(e.vars_, e.opt_, n);
                e.window_.finish(*e.net_, e.opt_, e.vars_, [&](const step_gradients&) { Exec::launch(*first_[p]); });
                Exec::mark(events_[p]);
                pending_[p] = queued;
            }
        } catch (...) {
            // A launch that failed leaves no gradients an eager step could trust.
            e.window_.discard();
            throw;
        }
        parity_ = 1 - p;
        e.advance_cursor(n);
        // The caller may rewrite its pinned batch once this returns: its copy must be done.
        if (lagged_ && got.from_caller) Exec::drain_copies();
        if (!lagged_) {
            settle(e);
            // The batch is still the caller's: the host names the sample the device counted.
            if (fault_ && fault_->inputs && check_on_device && fault_->step.sequence == queued.sequence) {
                fault_.reset();
                e.staging_.reject_non_finite_inputs(x, n);
            }
            raise_fault(e, call);
        }
        take_results(sums);
        return true;
    }

    /// Doubles per parity in the results: the slots and the guard's verdict.
    [[nodiscard]] std::size_t block() const { return slots_ + 1; }

    /// The parity of the oldest queued step, or none.
    [[nodiscard]] std::size_t older_pending() const {
        if (pending_[0] && pending_[1]) return pending_[0]->sequence < pending_[1]->sequence ? 0 : 1;
        if (pending_[0]) return 0;
        if (pending_[1]) return 1;
        return none;
    }

    /// Waits for every queued step without reading it (a fault found before is kept).
    void wait_queued() noexcept {
        for (std::size_t p = 0; p < 2; ++p) {
            if (!pending_[p]) continue;
            try {
                Exec::wait_for(events_[p]);
            } catch (...) {  // NOLINT(bugprone-empty-catch): the device already failed; nothing to wait for
            }
            pending_[p].reset();
        }
    }

    /// Reads the results of the step queued on parity p. The oldest step is read first, so the
    /// first halted one is the bad one: the guard's flag is sticky, and every step after it was
    /// halted too.
    template <class Engine>
    void collect(Engine& e, std::size_t p) {
        const detail::queued_step q = *pending_[p];
        if (const std::size_t other = 1 - p; pending_[other] && pending_[other]->sequence < q.sequence) {
            collect(e, other);
            if (!pending_[p]) return;
        }
        Exec::wait_for(events_[p]);
        pending_[p].reset();
        const double* r = host_results_.data() + p * block();
        if (r[slots_] == 0.0) {
            unreported_.loss += r[0];
            const std::size_t metrics = slots_ - 1 - (DeviceInputCheckPolicy<Exec> ? 1 : 0);
            for (std::size_t m = 0; m < metrics; ++m) unreported_.metrics[m] += r[1 + m];
            unreported_.samples += q.rows;
            return;
        }
        detail::step_fault f{.step = q, .loss = r[0]};
        f.inputs = DeviceInputCheckPolicy<Exec> && r[slots_ - 1] != 0.0;
        // Later steps changed nothing: wait for them, forget them, and put the host back where
        // it stood before the bad step. Clearing the flag is queued after them.
        const std::size_t other = 1 - p;
        if (pending_[other]) {
            Exec::wait_for(events_[other]);
            pending_[other].reset();
            f.later = 1;
        }
        Exec::from_host(host_zero_.data(), 1, Exec::data(sticky_));
        e.opt_.restore_counters(q.iterations, q.samples_seen, q.reference_batch);
        e.set_position(q.epoch, q.first_sample);
        fault_ = f;
    }

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
    template <class Engine, class Source>
    bool capture(Engine& e, std::size_t rows, std::size_t parity, Source* data) {
        constexpr std::size_t in = Engine::in_features;
        constexpr std::size_t out = Engine::out_features;
        constexpr bool device_checks = DeviceInputCheckPolicy<Exec>;
        const std::size_t ty = e.objective_.target_cols();
        step_scalars* device = Exec::data(scalars_) + 2 * parity;
        double* sums = Exec::data(sums_) + parity * block();
        double* results = host_results_.data() + parity * block();
        float* grad = Exec::data(e.grad_);
        float* scratch = Exec::data(e.row_scratch_);
        try {
            Exec::begin_capture(sums, slots_);
            Exec::from_host(host_scalars_.data() + 2 * parity, 1, device);
            const graph_batch batch = data != nullptr
                                          ? data->record_gather(parity, rows, Exec::data(inputs_[parity]),
                                                                Exec::data(targets_[parity]))
                                          : graph_batch{Exec::data(inputs_[parity]), Exec::data(targets_[parity])};
            e.net_->begin_step();
            const pass_context ctx{.training = true, .seed = e.seed(), .valid_rows = rows, .device_scalars = device};
            const const_matrix_view o = e.net_->forward({batch.inputs, rows, in}, ctx);
            const const_matrix_view pred{o.data, rows, out};
            const const_matrix_view target{batch.targets, rows, ty};
            (void)e.objective_.training_loss_sum(pred, target, nullptr, grad, 1.0f, scratch);
            e.objective_.record_metrics(pred, target, scratch);
            if constexpr (device_checks) (void)Exec::count_non_finite(batch.inputs, rows * in);
            if (Exec::captured_sums() != slots_) {
                const std::size_t reductions = Exec::captured_sums() - (device_checks ? 1 : 0);
                throw std::logic_error("the loss and the metrics reduced " + std::to_string(reductions) +
                                       " times, not one each");
            }
            Exec::for_each(1, detail::step_guard{sums, device_checks ? slots_ - 1 : detail::step_guard::none, slots_,
                                                 Exec::data(sticky_), device});
            e.net_->backward({grad, rows, out}, false);
            const step_scalars* update_scalars = device;
            if (split_) {
                Exec::send_to_host(sums, block(), results);
                first_[parity].emplace(Exec::end_capture());
                Exec::begin_capture(nullptr, 0);
                Exec::from_host(host_scalars_.data() + 2 * parity + 1, 1, device + 1);
                update_scalars = device + 1;
            }
            std::vector<variable_ref> trainable;
            std::vector<float* const*> slots;
            for (std::size_t i = 0; i < e.vars_.size(); ++i) {
                if (!e.vars_[i].ref.trainable()) continue;
                trainable.push_back(e.vars_[i].ref);
                slots.push_back(e.opt_.slots(i));
            }
            e.opt_.optimizer().apply_all_from(trainable.data(), slots.data(), trainable.size(), update_scalars);
            e.net_->end_step();
            if (!split_) Exec::send_to_host(sums, block(), results);
            (split_ ? update_ : first_)[parity].emplace(Exec::end_capture());
            return true;
        } catch (const std::exception& ex) {
            Exec::abort_capture();
            first_[parity].reset();
            refused_ = ex.what();
            if (on_refused) on_refused({e.epoch(), e.opt_.iterations() + 1, refused_});
            return false;
        }
    }

    /// [p]: the whole step on input buffer p, or its first part when the update is split off.
    std::array<std::optional<typename Exec::graph>, 2> first_, update_;
    std::array<typename Exec::vector, 2> inputs_, targets_;
    /// The source the graphs make their batch from (its identity()), or 0 for staged rows.
    std::uint64_t source_ = 0;
    std::array<typename Exec::event, 2> events_;
    std::array<std::optional<detail::queued_step>, 2> pending_;
    std::optional<detail::step_fault> fault_;
    step_sums unreported_;
    std::size_t undone_ = 0;
    std::uint64_t sequence_ = 0;
    std::size_t parity_ = 0;
    std::size_t slots_ = 0;
    /// Exec::shared_buffers_generation() when the graphs were captured.
    std::uint64_t generation_ = 0;
    /// optimizer_state::moments_version() when they were captured: the update holds the decays.
    std::uint64_t moments_version_ = 0;
    bool warmed_up_ = false;
    bool enabled_ = true;
    bool lagged_ = false;
    bool staged_suspended_ = false;
    /// Whether the graphs were captured with the update as a graph of its own.
    bool split_ = false;
    std::string refused_;
    /// [2p]: read by parity p's first graph; [2p + 1]: by its update graph, written only after
    /// the first graph of its step has been read.
    typename Exec::template array<step_scalars> scalars_;
    typename Exec::template host_array<step_scalars> host_scalars_;
    typename Exec::template array<double> sums_;
    typename Exec::template host_array<double> host_results_;
    typename Exec::template array<std::uint32_t> sticky_;
    typename Exec::template host_array<std::uint32_t> host_zero_;
};

}  // namespace batchwise
