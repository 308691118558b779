// The callback interface: the hooks fit() calls at the start and end of training, of each
// epoch and of each batch, what a callback sees of the model (training_context), and the rules
// the monitoring callbacks share (which direction improves, Keras's min_delta). The standard
// callbacks are in callbacks.hpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "batchwise/core/errors.hpp"
#include "batchwise/train/history.hpp"
#include "batchwise/train/logs.hpp"

namespace batchwise {

/// What a callback may see and do of the model being trained.
class training_context {
public:
    virtual ~training_context() = default;
    /// The model's base learning rate: what compile gave or set_learning_rate last set. A step
    /// uses it unless fit's learning_rate_schedule decides, scaled by a coupling if there is one.
    [[nodiscard]] virtual float learning_rate() const = 0;
    /// Sets the base learning rate from the next optimizer step on.
    virtual void set_learning_rate(float lr) = 0;
    /// All variables, flattened in order (trainable and not).
    [[nodiscard]] virtual std::vector<float> weights() const = 0;
    /// Puts back values weights() returned: every variable, flattened in the same order.
    virtual void set_weights(const std::vector<float>& w) = 0;
    /// Whether no variable holds a NaN or an infinity.
    [[nodiscard]] virtual bool weights_finite() const = 0;
    /// Writes the weights alone, as Model::save_weights does (for load_weights, not for resuming).
    virtual void save_weights(const std::filesystem::path& path) const = 0;
    /// Weights, optimizer state and training position: fit() resumes from it exactly.
    virtual void save_checkpoint(const std::filesystem::path& path) const = 0;
    /// fit's `epochs` option: the epoch count fit trains up to (the 10 of "Epoch 3/10").
    [[nodiscard]] virtual std::uint64_t epochs() const = 0;
    /// True between optimizer steps; inside an accumulation window a checkpoint would lose the
    /// gradients gathered so far, so checkpoints wait for the boundary.
    [[nodiscard]] virtual bool at_step_boundary() const = 0;
    /// Whether this process writes files and shows progress: rank 0 in data-parallel training
    /// (every rank holds the same state), the only process otherwise.
    [[nodiscard]] virtual bool is_chief() const { return true; }
    /// Whether a learning-rate schedule by samples (fit's learning_rate_schedule, or the
    /// model's step rules) sets every step's rate: then setting the base rate changes nothing,
    /// and callbacks that do (ReduceLROnPlateau, LearningRateScheduler) refuse to run.
    [[nodiscard]] bool learning_rate_scheduled() const { return learning_rate_scheduled_; }
    /// Set by fit when its rules are in place.
    void set_learning_rate_scheduled(bool scheduled) { learning_rate_scheduled_ = scheduled; }
    /// Epochs trained by earlier fit calls: this call's epoch e reads its data, draws its
    /// shuffle and dropout masks as epoch e + epoch_offset() of the model's training (0 after
    /// initial_epoch or a resume, whose epochs are counted over the whole training already).
    [[nodiscard]] std::uint64_t epoch_offset() const { return epoch_offset_; }
    /// Set by fit before on_train_begin; not for callbacks to call.
    void set_epoch_offset(std::uint64_t offset) { epoch_offset_ = offset; }

    /// Asks fit() to stop after the current batch; the first reason given is kept.
    void stop_training(std::string reason) {
        if (!stop_requested_) stop_reason_ = std::move(reason);
        stop_requested_ = true;
    }
    /// Whether a callback has called stop_training during this fit call.
    [[nodiscard]] bool stop_requested() const { return stop_requested_; }
    /// The first reason given to stop_training, or empty; History::stop_reason is this.
    [[nodiscard]] const std::string& stop_reason() const { return stop_reason_; }

private:
    bool stop_requested_ = false;
    std::string stop_reason_;
    std::uint64_t epoch_offset_ = 0;
    bool learning_rate_scheduled_ = false;
};

/// Base of fit's callbacks (Keras's keras.callbacks.Callback): override the events needed; every
/// default does nothing. fit calls the callbacks of an event in the order they were passed, after
/// a default ProgressBar when verbose > 0 and none is among them. In data-parallel training every
/// process calls them (a ProgressBar only on the chief); see training_context::is_chief.
class Callback {
public:
    virtual ~Callback() = default;
    /// Called once at the start of fit, before the first epoch. One callback object may serve
    /// several fit calls: reset per-run state here.
    virtual void on_train_begin(training_context&) {}
    /// Called once when fit returns, after the last epoch or a stop request, with the History it
    /// returns; not called when fit throws.
    virtual void on_train_end(training_context&, const History&) {}
    /// Called at the start of each epoch, before its first batch is read. `epoch` is fit's count,
    /// as History::epochs records it (from initial_epoch, a resumed checkpoint's epoch, or 0);
    /// `steps`: the batches this epoch will have.
    virtual void on_epoch_begin(training_context&, std::uint64_t /*epoch*/, std::size_t /*steps*/) {}
    /// Called after the epoch's last batch and its validation: the logs hold the epoch's means of
    /// the loss and metrics (over every process in data-parallel training), the "val_" values, the
    /// "learning_rate", and what step observers add. An epoch cut short by a stop request has the
    /// means of the batches it trained.
    virtual void on_epoch_end(training_context&, std::uint64_t /*epoch*/, const epoch_logs&) {}
    /// Called before each batch is trained: `step` is its index in the epoch (from 0), `batch_size`
    /// its samples. Not called for the batches a resume skips or a static batch's drop policy
    /// leaves out.
    virtual void on_batch_begin(training_context&, std::uint64_t /*step*/, std::size_t /*batch_size*/) {}
    /// Called after each batch is trained and any optimizer step it completed is taken; `step` as
    /// in on_batch_begin. `batch`: this batch's values; `running`: the epoch's mean so far.
    virtual void on_batch_end(training_context&, std::uint64_t /*step*/, const logs& /*batch*/,
                              const logs& /*running*/) {}
    /// A step's loss was not finite; its update was not applied. Return true when the callback
    /// has handled it: fit then ends the epoch at that batch (its logs cover the batches before
    /// it, without validation) and goes on to the next epoch unless a callback asked to stop, as
    /// TerminateOnNaN does; an epoch that trained nothing ends training. If none returns true,
    /// fit rethrows the error. Not called in data-parallel training, where the error ends every
    /// process.
    virtual bool on_non_finite_loss(training_context&, const numeric_error&) { return false; }
    /// A step did not fit in memory and continues as smaller micro-batches; called as the split
    /// happens, inside the step (History::micro_batch_splits keeps it too).
    virtual void on_micro_batch_split(training_context&, const micro_batch_split&) {}
    /// The step could not be captured into a graph; it trains eagerly (Model::set_step_capture).
    virtual void on_step_capture_refused(training_context&, const step_capture_refusal&) {}
    /// A ProgressBar among the callbacks replaces the default one.
    [[nodiscard]] virtual bool is_progress_bar() const { return false; }
};

/// Which direction of a monitored value is an improvement (Keras's mode).
enum class monitor_mode { automatic, min, max };
/// \var monitor_mode::automatic
/// Keras's "auto": upwards for names with "acc" or "auc" in them (accuracy, val_auc), downwards
/// for everything else.

/// \var monitor_mode::min
/// Lower is better (losses, errors).

/// \var monitor_mode::max
/// Higher is better.

namespace detail {
/// Keras's "auto": accuracies and AUCs improve upwards, everything else downwards.
inline bool improves_upwards(const std::string& monitor, monitor_mode mode) {
    if (mode != monitor_mode::automatic) return mode == monitor_mode::max;
    return monitor.find("acc") != std::string::npos || monitor.find("auc") != std::string::npos;
}
/// Whether `v` improves on `reference` by more than min_delta in the monitored direction (Keras's
/// rule, shared by EarlyStopping and ReduceLROnPlateau); anything improves on no reference.
inline bool improves(double v, std::optional<double> reference, bool upwards, double min_delta) {
    if (!reference) return true;
    return upwards ? v - min_delta > *reference : v + min_delta < *reference;
}
/// Refuses a callback that sets the base learning rate while a schedule sets every step's.
inline void require_unscheduled(const training_context& ctx, const char* who) {
    if (ctx.learning_rate_scheduled()) {
        throw usage_error(std::string(who) + ": fit's learning_rate_schedule sets every step's learning rate, so "
                          "changing the base rate would do nothing; put the change into the schedule instead");
    }
}
inline double monitored(const epoch_logs& logs, const std::string& monitor, const char* who) {
    if (!logs.contains(monitor)) {
        throw usage_error(std::string(who) + ": the monitored value '" + monitor +
                          "' is not in the epoch logs (" + logs.names() +
                          "); a val_ value needs validation data in fit()");
    }
    return logs[monitor];
}
}  // namespace detail

}  // namespace batchwise
