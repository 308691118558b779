// Callbacks: hooks fit() calls at the start and end of training, of each epoch and of each
// batch, with access to the model through training_context. The standard ones are here
// (EarlyStopping, ReduceLROnPlateau, TerminateOnNaN, ModelCheckpoint, LearningRateScheduler,
// CsvLogger); the progress bar has its own header.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
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

/// Keras's EarlyStopping, rule for rule: an epoch improves when the monitored value beats the
/// best by more than min_delta; after `patience` epochs without improvement (counted from
/// start_from_epoch, never at the first epoch) training stops. With a baseline, the count only
/// restarts on an improvement that also beats the baseline. restore_best_weights puts back the
/// best epoch's weights when training ends, whether it stopped early or not (as Keras 3 does).
class EarlyStopping final : public Callback {
public:
    /// EarlyStopping's settings, named as Keras names them.
    struct options {
        /// A key of the epoch logs ("loss", "val_loss", "val_accuracy", ...).
        std::string monitor = "val_loss";
        /// Smallest change that counts as an improvement.
        double min_delta = 0.0;
        /// Epochs without improvement after which training stops.
        std::size_t patience = 0;
        /// Which direction improves; automatic: upwards for accuracies and AUCs, downwards
        /// otherwise.
        monitor_mode mode = monitor_mode::automatic;
        /// A value the monitored one must beat for the patience count to restart.
        std::optional<double> baseline{};
        /// At the end of training, put back the weights of the best epoch.
        bool restore_best_weights = false;
        /// Epochs before this one are not monitored (a warm-up).
        std::uint64_t start_from_epoch = 0;
    };
    /// Keras's defaults: stops at the first epoch without improvement of "val_loss".
    EarlyStopping() : EarlyStopping(options{}) {}
    /// Throws usage_error when min_delta is negative.
    explicit EarlyStopping(options o) : o_(std::move(o)) {
        if (!(o_.min_delta >= 0.0)) throw usage_error("EarlyStopping: min_delta must be >= 0");
    }

    void on_train_begin(training_context&) override {
        wait_ = 0;
        best_.reset();
        best_epoch_ = 0;
        stopped_epoch_.reset();
        best_weights_.clear();
    }
    void on_epoch_end(training_context& ctx, std::uint64_t epoch, const epoch_logs& logs) override {
        const double v = detail::monitored(logs, o_.monitor, "EarlyStopping");
        if (epoch < o_.start_from_epoch) return;
        // Before any improvement the current weights are the best there are (Keras does the same).
        if (o_.restore_best_weights && best_weights_.empty()) {
            best_weights_ = ctx.weights();
            best_epoch_ = epoch;
        }
        ++wait_;
        if (improves(v, best_)) {
            best_ = v;
            best_epoch_ = epoch;
            if (o_.restore_best_weights) best_weights_ = ctx.weights();
            if (!o_.baseline || improves(v, o_.baseline)) wait_ = 0;
            return;
        }
        if (wait_ >= o_.patience && epoch > 0) {
            stopped_epoch_ = epoch;
            ctx.stop_training("EarlyStopping: " + o_.monitor + " did not improve for " + std::to_string(wait_) +
                              " epochs (best " + (best_ ? std::to_string(*best_) : std::string("none")) +
                              " at epoch " + std::to_string(best_epoch_ + 1) + ")");
        }
    }
    void on_train_end(training_context& ctx, const History&) override {
        if (o_.restore_best_weights && !best_weights_.empty()) ctx.set_weights(best_weights_);
    }
    /// The best monitored value so far; unset before the first monitored epoch.
    [[nodiscard]] std::optional<double> best() const { return best_; }
    /// The epoch of best(), and of the weights restore_best_weights puts back.
    [[nodiscard]] std::uint64_t best_epoch() const { return best_epoch_; }
    /// The epoch at which this callback stopped training; unset if it did not.
    [[nodiscard]] std::optional<std::uint64_t> stopped_epoch() const { return stopped_epoch_; }

private:
    [[nodiscard]] bool improves(double v, std::optional<double> reference) const {
        return detail::improves(v, reference, detail::improves_upwards(o_.monitor, o_.mode), o_.min_delta);
    }

    options o_;
    std::size_t wait_ = 0;
    std::optional<double> best_;
    std::uint64_t best_epoch_ = 0;
    std::optional<std::uint64_t> stopped_epoch_;
    std::vector<float> best_weights_;
};

/// Keras's ReduceLROnPlateau: when the monitored value has not improved by min_delta for
/// `patience` epochs, multiplies the learning rate by `factor` (not below min_lr), then waits
/// `cooldown` epochs before counting again. Under fit's learning_rate_schedule the schedule
/// decides every step's rate, so the two cannot be combined; under a coupling rule this scales
/// the reference rate that the rule couples to the batch size.
class ReduceLROnPlateau final : public Callback {
public:
    /// ReduceLROnPlateau's settings, named as Keras names them.
    struct options {
        /// A key of the epoch logs, as EarlyStopping's monitor.
        std::string monitor = "val_loss";
        /// Multiplies the learning rate on a plateau; in (0, 1).
        double factor = 0.1;
        /// Epochs without improvement after which the rate is reduced.
        std::size_t patience = 10;
        /// Which direction improves; automatic: upwards for accuracies and AUCs, downwards
        /// otherwise.
        monitor_mode mode = monitor_mode::automatic;
        /// Smallest change that counts as an improvement (Keras's default 1e-4).
        double min_delta = 1e-4;
        /// Epochs after a reduction during which plateaus are not counted.
        std::size_t cooldown = 0;
        /// The learning rate is never reduced below this.
        double min_lr = 0.0;
    };
    /// Keras's defaults: a tenth of the rate after 10 epochs without improvement of "val_loss".
    ReduceLROnPlateau() : ReduceLROnPlateau(options{}) {}
    /// Throws usage_error when factor is not in (0, 1), or min_delta or min_lr is negative.
    explicit ReduceLROnPlateau(options o) : o_(std::move(o)) {
        if (!(o_.factor > 0.0 && o_.factor < 1.0)) {
            throw usage_error("ReduceLROnPlateau: factor must be in (0, 1), got " + std::to_string(o_.factor));
        }
        if (!(o_.min_delta >= 0.0) || !(o_.min_lr >= 0.0)) {
            throw usage_error("ReduceLROnPlateau: min_delta and min_lr must be >= 0");
        }
    }

    void on_train_begin(training_context& ctx) override {
        detail::require_unscheduled(ctx, "ReduceLROnPlateau");
        best_.reset();
        wait_ = 0;
        cooldown_left_ = 0;
    }
    void on_epoch_end(training_context& ctx, std::uint64_t epoch, const epoch_logs& logs) override {
        const double v = detail::monitored(logs, o_.monitor, "ReduceLROnPlateau");
        if (cooldown_left_ > 0) {
            --cooldown_left_;
            wait_ = 0;
        }
        if (detail::improves(v, best_, detail::improves_upwards(o_.monitor, o_.mode), o_.min_delta)) {
            best_ = v;
            wait_ = 0;
            return;
        }
        if (cooldown_left_ > 0 || ++wait_ < o_.patience) return;
        // Compared in float, as the rate is stored: a min_lr of 1e-3 stops at 0.001f.
        const float old_lr = ctx.learning_rate();
        if (old_lr > static_cast<float>(o_.min_lr)) {
            const float new_lr = std::max(static_cast<float>(old_lr * o_.factor), static_cast<float>(o_.min_lr));
            ctx.set_learning_rate(new_lr);
            reductions_.push_back({epoch, old_lr, new_lr});
            cooldown_left_ = o_.cooldown;
            wait_ = 0;
        }
    }

    /// One reduction of the learning rate.
    struct reduction {
        /// fit's epoch at whose end it was made.
        std::uint64_t epoch;
        /// The learning rate before.
        float from;
        /// The learning rate after: factor times `from`, not below min_lr.
        float to;
    };
    /// Every reduction made, in order.
    [[nodiscard]] const std::vector<reduction>& reductions() const { return reductions_; }

private:
    options o_;
    std::optional<double> best_;
    std::size_t wait_ = 0;
    std::size_t cooldown_left_ = 0;
    std::vector<reduction> reductions_;
};

/// Stops at the first non-finite loss. The step that produced it is never applied; if the
/// weights themselves have become non-finite, the weights from the start of the epoch are put
/// back, so the model is always left usable.
class TerminateOnNaN final : public Callback {
public:
    void on_epoch_begin(training_context& ctx, std::uint64_t, std::size_t) override {
        epoch_start_ = ctx.weights();
    }
    bool on_non_finite_loss(training_context& ctx, const numeric_error& e) override {
        std::string reason = std::string("TerminateOnNaN: ") + e.what();
        if (!ctx.weights_finite() && !epoch_start_.empty()) {
            ctx.set_weights(epoch_start_);
            reason += "; weights were not finite, restored those from the start of the epoch";
        }
        ctx.stop_training(std::move(reason));
        return true;
    }

private:
    std::vector<float> epoch_start_;
};

/// Saves the model during training: the full training state (weights, optimizer, position; what
/// fit resumes from) or the weights only, every epoch or every `save_freq` steps, optionally only
/// when the monitored value improves. "{epoch}" in the path is replaced by the epoch number
/// (1-based, as Keras prints it). Files are written to a temporary name and renamed, so a crash
/// never leaves a half-written checkpoint.
class ModelCheckpoint final : public Callback {
public:
    /// ModelCheckpoint's settings, named as Keras names them.
    struct options {
        /// The .npz file to write; "{epoch}" in it becomes the epoch number, so that each save
        /// keeps a file of its own (without it, each save replaces the last).
        std::filesystem::path filepath{};
        /// A key of the epoch logs, read only with save_best_only.
        std::string monitor = "val_loss";
        /// Save only at the end of an epoch whose monitored value beats every earlier one (the
        /// first always does); needs save_freq 0.
        bool save_best_only = false;
        /// Which direction improves; automatic: upwards for accuracies and AUCs, downwards
        /// otherwise.
        monitor_mode mode = monitor_mode::automatic;
        /// Write the weights alone (Model::save_weights, for load_weights) instead of the whole
        /// training state (Model::save_checkpoint, what fit resumes from).
        bool save_weights_only = false;
        /// 0: at the end of every epoch; n: after every n-th step.
        std::size_t save_freq = 0;
    };
    /// Throws usage_error when filepath is empty, or save_best_only is given with a save_freq.
    explicit ModelCheckpoint(options o) : o_(std::move(o)) {
        if (o_.filepath.empty()) throw usage_error("ModelCheckpoint: filepath is empty");
        if (o_.save_best_only && o_.save_freq != 0) {
            throw usage_error("ModelCheckpoint: save_best_only needs epoch logs; use save_freq = 0");
        }
    }

    void on_epoch_begin(training_context&, std::uint64_t epoch, std::size_t) override { epoch_ = epoch; }
    void on_batch_end(training_context& ctx, std::uint64_t step, const logs&, const logs&) override {
        if (o_.save_freq != 0 && (step + 1) % o_.save_freq == 0) pending_ = true;
        // Inside an accumulation window the save waits for the optimizer step.
        if (pending_ && ctx.at_step_boundary()) {
            pending_ = false;
            save(ctx);
        }
    }
    void on_epoch_end(training_context& ctx, std::uint64_t epoch, const epoch_logs& logs) override {
        if (o_.save_freq != 0) return;
        if (o_.save_best_only) {
            const double v = detail::monitored(logs, o_.monitor, "ModelCheckpoint");
            const bool up = detail::improves_upwards(o_.monitor, o_.mode);
            if (best_ && !(up ? v > *best_ : v < *best_)) return;
            best_ = v;
        }
        epoch_ = epoch;
        save(ctx);
    }
    /// Paths written so far, in order.
    [[nodiscard]] const std::vector<std::filesystem::path>& saved() const { return saved_; }

private:
    void save(training_context& ctx) {
        std::string path = o_.filepath.string();
        const std::string key = "{epoch}";
        for (auto pos = path.find(key); pos != std::string::npos; pos = path.find(key)) {
            path.replace(pos, key.size(), std::to_string(epoch_ + 1));
        }
        if (o_.save_weights_only) {
            ctx.save_weights(path);
        } else {
            ctx.save_checkpoint(path);
        }
        saved_.emplace_back(path);
    }

    options o_;
    std::uint64_t epoch_ = 0;
    bool pending_ = false;
    std::optional<double> best_;
    std::vector<std::filesystem::path> saved_;
};

/// Sets the learning rate at the start of each epoch from fn(epoch, current learning rate).
class LearningRateScheduler final : public Callback {
public:
    /// `fn(epoch, rate)` gets fit's epoch and the current learning rate and returns the epoch's
    /// rate, which must be finite and >= 0 (else usage_error).
    explicit LearningRateScheduler(std::function<float(std::uint64_t, float)> fn) : fn_(std::move(fn)) {}
    void on_train_begin(training_context& ctx) override { detail::require_unscheduled(ctx, "LearningRateScheduler"); }
    void on_epoch_begin(training_context& ctx, std::uint64_t epoch, std::size_t) override {
        const float lr = fn_(epoch, ctx.learning_rate());
        if (!(lr >= 0.0f) || !std::isfinite(lr)) {
            throw usage_error("LearningRateScheduler: the schedule gave learning rate " +
                              std::to_string(lr) + " for epoch " + std::to_string(epoch));
        }
        ctx.set_learning_rate(lr);
    }

private:
    std::function<float(std::uint64_t, float)> fn_;
};

/// Appends one line per epoch ("epoch" then every logged value) to a CSV file, flushed at once
/// so that it can be followed while training runs.
class CsvLogger final : public Callback {
public:
    /// CsvLogger's settings, named as Keras names them.
    struct options {
        /// The CSV file; its header is the first logged epoch's value names.
        std::filesystem::path filename{};
        /// Between the fields of a line.
        char separator = ',';
        /// Add to an existing file instead of replacing it (no second header when it has content).
        bool append = false;
    };
    /// Nothing is opened yet: on_train_begin opens the file, on the chief process only.
    explicit CsvLogger(options o) : o_(std::move(o)) {}

    void on_train_begin(training_context& ctx) override {
        if (!ctx.is_chief()) return;
        const bool had_content = o_.append && std::filesystem::exists(o_.filename) &&
                                 std::filesystem::file_size(o_.filename) > 0;
        file_.open(o_.filename, o_.append ? std::ios::app : std::ios::trunc);
        if (!file_) throw io_error("CsvLogger: cannot open '" + o_.filename.string() + "' for writing");
        header_written_ = had_content;
    }
    void on_epoch_end(training_context&, std::uint64_t epoch, const epoch_logs& logs) override {
        if (!file_.is_open()) return;
        if (!header_written_) {
            file_ << "epoch";
            for (const auto& [name, v] : logs.values) file_ << o_.separator << name;
            file_ << '\n';
            header_written_ = true;
        }
        file_ << epoch;
        char buf[32];
        for (const auto& [name, v] : logs.values) {
            std::snprintf(buf, sizeof buf, "%.9g", v);
            file_ << o_.separator << buf;
        }
        file_ << '\n';
        file_.flush();
        if (!file_) throw io_error("CsvLogger: writing '" + o_.filename.string() + "' failed");
    }
    void on_train_end(training_context&, const History&) override { file_.close(); }

private:
    options o_;
    std::ofstream file_;
    bool header_written_ = false;
};

}  // namespace batchwise
