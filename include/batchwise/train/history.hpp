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

#include "batchwise/core/errors.hpp"

namespace batchwise {

/// Named values at the end of an epoch: "loss", metrics, "val_" versions, "learning_rate".
struct epoch_logs {
    std::vector<std::pair<std::string, double>> values;

    void set(std::string name, double v) {
        for (auto& [n, x] : values) {
            if (n == name) {
                x = v;
                return;
            }
        }
        values.emplace_back(std::move(name), v);
    }
    [[nodiscard]] bool contains(std::string_view name) const {
        for (const auto& [n, x] : values) {
            if (n == name) return true;
        }
        return false;
    }
    [[nodiscard]] double operator[](std::string_view name) const {
        for (const auto& [n, x] : values) {
            if (n == name) return x;
        }
        throw usage_error("epoch logs have no value '" + std::string(name) + "'; they have " + names());
    }
    [[nodiscard]] std::string names() const {
        std::string s;
        for (const auto& [n, x] : values) s += (s.empty() ? "" : ", ") + n;
        return s;
    }
};

struct History {
    /// Epoch numbers trained (0-based), one entry per row of every series below.
    std::vector<std::uint64_t> epochs;
    /// "loss", "accuracy", "val_loss", ..., "learning_rate": one value per epoch.
    std::map<std::string, std::vector<double>> history;
    /// Batch sizes of each epoch as (size, consecutive batches of that size) runs: a phased
    /// schedule's epoch reads {(32, 1875)}, a ragged tail {(128, 468), (96, 1)}.
    std::vector<std::vector<std::pair<std::size_t, std::size_t>>> batch_sizes;
    /// Optimizer steps and samples trained in each epoch, and samples left out by
    /// drop_remainder (reported, never silent).
    std::vector<std::size_t> steps, samples, dropped_samples;
    /// Wall seconds of each epoch, validation included.
    std::vector<double> seconds;
    /// Empty when all epochs ran; otherwise who stopped training and why.
    std::string stop_reason;

    [[nodiscard]] const std::vector<double>& operator[](const std::string& name) const {
        const auto it = history.find(name);
        if (it == history.end()) throw usage_error("History has no series '" + name + "'");
        return it->second;
    }
    [[nodiscard]] std::size_t size() const { return epochs.size(); }
};

}  // namespace batchwise
