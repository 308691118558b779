// The values a training or evaluation call reports: the loss and each compiled metric, in a
// fixed-size record so that reporting them never allocates inside a training step.
#pragma once

#include <array>
#include <cstdio>
#include <cstddef>
#include <ostream>
#include <string>
#include <string_view>

#include "batchwise/core/errors.hpp"

namespace batchwise {

/// One call's loss and metric values (train_on_batch, evaluate, fit's batches), each the mean over
/// `samples` samples.
struct logs {
    /// The most metrics a model compiles: the record is fixed-size so that a step never allocates.
    static constexpr std::size_t max_metrics = 8;

    /// The mean loss.
    float loss = 0.0f;
    /// Number of samples the values are averaged over.
    std::size_t samples = 0;
    /// The compiled metrics' names; the first metric_count are used.
    std::array<std::string_view, max_metrics> names{};
    /// Each metric's mean, in the order of names.
    std::array<float, max_metrics> values{};
    /// The metrics in names and values.
    std::size_t metric_count = 0;

    /// logs["loss"], logs["accuracy"]; an unknown name is a usage_error naming it.
    [[nodiscard]] float operator[](std::string_view name) const {
        if (name == "loss") return loss;
        for (std::size_t i = 0; i < metric_count; ++i) {
            if (names[i] == name) return values[i];
        }
        throw usage_error("logs: no value named '" + std::string(name) +
                          "' (the loss is 'loss'; metrics are named as compiled)");
    }

    /// Whether operator[] knows `name`: "loss" or a compiled metric.
    [[nodiscard]] bool contains(std::string_view name) const {
        if (name == "loss") return true;
        for (std::size_t i = 0; i < metric_count; ++i) {
            if (names[i] == name) return true;
        }
        return false;
    }
};

/// "loss: 0.3120 - accuracy: 0.8871", as Keras prints them.
inline std::ostream& operator<<(std::ostream& os, const logs& l) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "loss: %.4f", static_cast<double>(l.loss));
    os << buf;
    for (std::size_t i = 0; i < l.metric_count; ++i) {
        std::snprintf(buf, sizeof buf, " - %.*s: %.4f", static_cast<int>(l.names[i].size()),
                      l.names[i].data(), static_cast<double>(l.values[i]));
        os << buf;
    }
    return os;
}

}  // namespace batchwise
