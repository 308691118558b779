// The standard callbacks: EarlyStopping, ReduceLROnPlateau, TerminateOnNaN, ModelCheckpoint,
// LearningRateScheduler, CsvLogger. The interface they implement is in callback.hpp; the
// progress bar has its own header.
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
#include "batchwise/train/callback.hpp"
#include "batchwise/train/history.hpp"
#include "batchwise/train/logs.hpp"

namespace batchwise {

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
