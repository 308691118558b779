// Callbacks: hooks fit() calls at the start and end of training, of each epoch and of each
// batch, with access to the model through training_context. The standard ones are here
// (EarlyStopping, TerminateOnNaN, ModelCheckpoint, LearningRateScheduler, CsvLogger); the
// progress bar has its own header.
#pragma once

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
    [[nodiscard]] virtual float learning_rate() const = 0;
    virtual void set_learning_rate(float lr) = 0;
    /// All variables, flattened in order (trainable and not).
    [[nodiscard]] virtual std::vector<float> weights() const = 0;
    virtual void set_weights(const std::vector<float>& w) = 0;
    [[nodiscard]] virtual bool weights_finite() const = 0;
    virtual void save_weights(const std::filesystem::path& path) const = 0;
    /// Weights, optimizer state and training position: fit() resumes from it exactly.
    virtual void save_checkpoint(const std::filesystem::path& path) const = 0;
    [[nodiscard]] virtual std::uint64_t epochs() const = 0;
    /// True between optimizer steps; inside an accumulation window a checkpoint would lose the
    /// gradients gathered so far, so checkpoints wait for the boundary.
    [[nodiscard]] virtual bool at_step_boundary() const = 0;
    /// Whether this process writes files and shows progress: rank 0 in data-parallel training
    /// (every rank holds the same state), the only process otherwise.
    [[nodiscard]] virtual bool is_chief() const { return true; }

    /// Asks fit() to stop after the current batch; the first reason given is kept.
    void stop_training(std::string reason) {
        if (!stop_requested_) stop_reason_ = std::move(reason);
        stop_requested_ = true;
    }
    [[nodiscard]] bool stop_requested() const { return stop_requested_; }
    [[nodiscard]] const std::string& stop_reason() const { return stop_reason_; }

private:
    bool stop_requested_ = false;
    std::string stop_reason_;
};

class Callback {
public:
    virtual ~Callback() = default;
    virtual void on_train_begin(training_context&) {}
    virtual void on_train_end(training_context&, const History&) {}
    /// `steps`: the batches this epoch will have.
    virtual void on_epoch_begin(training_context&, std::uint64_t /*epoch*/, std::size_t /*steps*/) {}
    virtual void on_epoch_end(training_context&, std::uint64_t /*epoch*/, const epoch_logs&) {}
    virtual void on_batch_begin(training_context&, std::uint64_t /*step*/, std::size_t /*batch_size*/) {}
    /// `batch`: this batch's values; `running`: the epoch's mean so far.
    virtual void on_batch_end(training_context&, std::uint64_t /*step*/, const logs& /*batch*/,
                              const logs& /*running*/) {}
    /// A step's loss was not finite; its update was not applied. Return true when the callback
    /// has handled it (fit then stops and returns); if none does, fit rethrows the error.
    virtual bool on_non_finite_loss(training_context&, const numeric_error&) { return false; }
    /// A step did not fit in memory and continues as smaller micro-batches.
    virtual void on_micro_batch_split(training_context&, const micro_batch_split&) {}
    /// The step could not be captured into a graph; it trains eagerly (Model::set_step_capture).
    virtual void on_step_capture_refused(training_context&, const step_capture_refusal&) {}
    /// A ProgressBar among the callbacks replaces the default one.
    [[nodiscard]] virtual bool is_progress_bar() const { return false; }
};

enum class monitor_mode { automatic, min, max };

namespace detail {
/// Keras's "auto": accuracies and AUCs improve upwards, everything else downwards.
inline bool improves_upwards(const std::string& monitor, monitor_mode mode) {
    if (mode != monitor_mode::automatic) return mode == monitor_mode::max;
    return monitor.find("acc") != std::string::npos || monitor.find("auc") != std::string::npos;
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

/// Stops when the monitored value has not improved by min_delta for `patience` epochs; can
/// put back the weights of the best epoch when it stops.
class EarlyStopping final : public Callback {
public:
    struct options {
        std::string monitor = "val_loss";
        double min_delta = 0.0;
        std::size_t patience = 0;
        monitor_mode mode = monitor_mode::automatic;
        bool restore_best_weights = false;
        std::uint64_t start_from_epoch = 0;
    };
    EarlyStopping() : EarlyStopping(options{}) {}
    explicit EarlyStopping(options o) : o_(std::move(o)) {}

    void on_train_begin(training_context&) override {
        wait_ = 0;
        best_.reset();
        best_weights_.clear();
    }
    void on_epoch_end(training_context& ctx, std::uint64_t epoch, const epoch_logs& logs) override {
        const double v = detail::monitored(logs, o_.monitor, "EarlyStopping");
        if (epoch < o_.start_from_epoch) return;
        const bool up = detail::improves_upwards(o_.monitor, o_.mode);
        const bool better = !best_ || (up ? v > *best_ + o_.min_delta : v < *best_ - o_.min_delta);
        if (better) {
            best_ = v;
            best_epoch_ = epoch;
            wait_ = 0;
            if (o_.restore_best_weights) best_weights_ = ctx.weights();
            return;
        }
        if (++wait_ > o_.patience) {
            std::string reason = "EarlyStopping: " + o_.monitor + " did not improve for " +
                                 std::to_string(wait_) + " epochs (best " + std::to_string(*best_) +
                                 " at epoch " + std::to_string(best_epoch_ + 1) + ")";
            if (o_.restore_best_weights && !best_weights_.empty()) {
                ctx.set_weights(best_weights_);
                reason += "; restored the weights of epoch " + std::to_string(best_epoch_ + 1);
            }
            ctx.stop_training(std::move(reason));
        }
    }
    [[nodiscard]] std::optional<double> best() const { return best_; }
    [[nodiscard]] std::uint64_t best_epoch() const { return best_epoch_; }

private:
    options o_;
    std::size_t wait_ = 0;
    std::optional<double> best_;
    std::uint64_t best_epoch_ = 0;
    std::vector<float> best_weights_;
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
    struct options {
        std::filesystem::path filepath{};
        std::string monitor = "val_loss";
        bool save_best_only = false;
        monitor_mode mode = monitor_mode::automatic;
        bool save_weights_only = false;
        /// 0: at the end of every epoch; n: after every n-th step.
        std::size_t save_freq = 0;
    };
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
    explicit LearningRateScheduler(std::function<float(std::uint64_t, float)> fn) : fn_(std::move(fn)) {}
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
    struct options {
        std::filesystem::path filename{};
        char separator = ',';
        bool append = false;
    };
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
