// What fit() reports: per-epoch values by name (as Keras's History.history), and what Keras
// does not say: the batch sizes actually used, samples dropped by drop_remainder, the learning
// rate, wall time, and why training stopped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "batchwise/batch/coupling.hpp"
#include "batchwise/core/errors.hpp"

namespace batchwise {

/// A step that did not fit in memory was redone as smaller micro-batches (same step, same
/// samples, same result); the smaller size is kept for the steps that follow.
struct micro_batch_split {
    /// The epoch it happened in, counted over the model's whole training (from 0).
    std::uint64_t epoch = 0;
    std::uint64_t optimizer_step = 0;  ///< the step being computed (1-based, as iterations() will read)
    std::size_t from = 0;              ///< the micro-batch size that did not fit
    std::size_t to = 0;                ///< the size used from then on
    /// Why it did not fit: the memory budget's refusal or the failed allocation.
    std::string reason;
};

/// A training step could not be captured into a graph (the operation named in `reason` cannot
/// be held by one); the model trains such steps eagerly, with the same arithmetic.
struct step_capture_refusal {
    /// The epoch it happened in, counted over the model's whole training (from 0).
    std::uint64_t epoch = 0;
    std::uint64_t optimizer_step = 0;  ///< the step that tried to capture (1-based)
    /// What could not be captured, as the execution policy reported it.
    std::string reason;
};

/// Named values at the end of an epoch: "loss", metrics, "val_" versions, "learning_rate".
struct epoch_logs {
    /// Each value by name, in the order first set (CsvLogger's columns).
    std::vector<std::pair<std::string, double>> values;

    /// Sets `name`, replacing an earlier value of that name.
    void set(std::string name, double v) {
        for (auto& [n, x] : values) {
            if (n == name) {
                x = v;
                return;
            }
        }
        values.emplace_back(std::move(name), v);
    }
    /// Whether a value named `name` is present.
    [[nodiscard]] bool contains(std::string_view name) const {
        for (const auto& [n, x] : values) {
            if (n == name) return true;
        }
        return false;
    }
    /// The value named `name`; a usage_error listing the names there are when it is absent.
    [[nodiscard]] double operator[](std::string_view name) const {
        for (const auto& [n, x] : values) {
            if (n == name) return x;
        }
        throw usage_error("epoch logs have no value '" + std::string(name) + "'; they have " + names());
    }
    /// The names, comma-separated, for messages.
    [[nodiscard]] std::string names() const {
        std::string s;
        for (const auto& [n, x] : values) s += (s.empty() ? "" : ", ") + n;
        return s;
    }
};

/// What fit() returns (Keras's History): every per-epoch vector below has one entry per epoch
/// trained, in order, and what Keras does not report is here too.
struct History {
    /// Epoch numbers trained (0-based), one entry per row of every series below.
    std::vector<std::uint64_t> epochs;
    /// "loss", "accuracy", "val_loss", ..., "learning_rate": one value per epoch.
    std::map<std::string, std::vector<double>> history;
    /// Batch sizes of each epoch as (size, consecutive batches of that size) runs: a phased
    /// schedule's epoch reads {(32, 1875)}, a ragged tail {(128, 468), (96, 1)}.
    std::vector<std::vector<std::pair<std::size_t, std::size_t>>> batch_sizes;
    /// Batches of each epoch (Keras's steps): those trained, and any that a resume skipped or a
    /// static batch's drop policy left out. Optimizer steps are in optimizer_steps.
    std::vector<std::size_t> steps, samples, dropped_samples;
    /// \var samples
    /// Samples trained in each epoch (by all processes together in data-parallel training).

    /// \var dropped_samples
    /// Samples of each epoch left out by drop_remainder or a static batch's drop policy (reported,
    /// never silent).

    /// Optimizer steps of each epoch (fewer than batches under gradient accumulation).
    std::vector<std::size_t> optimizer_steps;
    /// The largest micro-batch the model ran at the end of each epoch (0: no limit was needed).
    std::vector<std::size_t> micro_batch_limit;
    /// Every out-of-memory split, in order.
    std::vector<micro_batch_split> micro_batch_splits;
    /// Every refused step capture, in order (at most one per compile()).
    std::vector<step_capture_refusal> capture_refusals;
    /// Every optimizer step's batch and hyper-parameters, when fit was given a learning-rate
    /// schedule or a coupling (fit_options), or the model has step rules; empty otherwise.
    std::vector<optimizer_step_record> optimizer_step_log;
    /// Wall seconds of each epoch, validation included.
    std::vector<double> seconds;
    /// Empty when all epochs ran; otherwise who stopped training and why.
    std::string stop_reason;

    /// history[name]; a usage_error naming the series there are when it is absent.
    [[nodiscard]] const std::vector<double>& operator[](const std::string& name) const {
        const auto it = history.find(name);
        if (it == history.end()) {
            std::string have;
            for (const auto& [n, v] : history) have += (have.empty() ? "" : ", ") + n;
            throw usage_error("History has no series '" + name + "'; it has " + (have.empty() ? "none" : have) +
                              (name.starts_with("val_") ? " (val_ series need validation_data or validation_split in fit)" : ""));
        }
        return it->second;
    }
    /// Epochs recorded: the length of every per-epoch vector.
    [[nodiscard]] std::size_t size() const { return epochs.size(); }
};

}  // namespace batchwise
