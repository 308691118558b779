// Metrics reported beside the loss. Like losses, a metric returns the SUM of per-sample values,
// so the caller can average over any number of samples or batches exactly.
#pragma once

#include <cmath>
#include <concepts>
#include <cstddef>
#include <string_view>

#include "batchwise/core/concepts.hpp"
#include "batchwise/losses/loss.hpp"

namespace batchwise {

/// `sum<Exec>(pred, target, description, row_scratch)` returns the sum over the rows of the
/// per-sample metric; `row_scratch` holds at least pred.rows floats of the policy's memory.
template <class M, class Exec>
concept MetricFor = ExecutionPolicy<Exec> && requires(const M& m, const_matrix_view v,
                                                      target_description d, float* p) {
    { M::name } -> std::convertible_to<std::string_view>;
    { m.template sum<Exec>(v, v, d, p) } -> std::convertible_to<double>;
};

/// The metrics Model::compile takes (accuracy, mae, mse), and the types behind them.
namespace metrics {

namespace detail {
BATCHWISE_HOST_DEVICE inline std::size_t argmax(const float* row, std::size_t cols) {
    std::size_t best = 0;
    for (std::size_t j = 1; j < cols; ++j) best = row[j] > row[best] ? j : best;
    return best;
}

/// Accuracy of one row, in the sense the loss gives the targets: class index, one-hot row, or
/// independent yes/no outputs (the fraction of outputs right, as Keras's binary accuracy).
struct accuracy_rows {
    const float* pred;
    const float* target;
    float* out;
    std::size_t cols;
    std::size_t target_cols;
    bool sparse;
    bool binary;
    float threshold;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t r) const {
        const float* p = pred + r * cols;
        if (binary) {
            float right = 0.0f;
            for (std::size_t j = 0; j < cols; ++j) {
                const bool yes = p[j] > threshold;
                const bool truth = target[r * cols + j] > 0.5f;
                right += yes == truth ? 1.0f : 0.0f;
            }
            out[r] = right / static_cast<float>(cols);
            return;
        }
        const std::size_t predicted = argmax(p, cols);
        const std::size_t truth = sparse ? static_cast<std::size_t>(target[r])
                                         : argmax(target + r * target_cols, target_cols);
        out[r] = predicted == truth ? 1.0f : 0.0f;
    }
};

struct absolute_error_rows {
    const float* pred;
    const float* target;
    float* out;
    std::size_t cols;
    bool squared;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t r) const {
        float s = 0.0f;
        for (std::size_t j = 0; j < cols; ++j) {
            const float d = pred[r * cols + j] - target[r * cols + j];
            s += squared ? d * d : std::fabs(d);
        }
        out[r] = s / static_cast<float>(cols);
    }
};
}  // namespace detail

/// The type of metrics::accuracy: whether each sample is classified right, in the sense the
/// loss gives the targets (class index, one-hot row, or independent yes/no outputs).
struct accuracy_metric {
    /// Its name in History, logs and the progress bar.
    static constexpr std::string_view name = "accuracy";
    /// Sum over the rows of each sample's accuracy: 1 or 0, or the fraction of its yes/no
    /// outputs right; `scratch` holds
    /// pred.rows floats of the policy's memory.
    template <ExecutionPolicy Exec>
    double sum(const_matrix_view pred, const_matrix_view target, target_description d,
               float* scratch) const {
        // A single output with a non-sparse target is a yes/no question whatever the loss.
        const bool binary = d.binary || (!d.sparse_labels && pred.cols == 1);
        Exec::for_each(pred.rows, detail::accuracy_rows{pred.data, target.data, scratch,
                                                        pred.cols, target.cols, d.sparse_labels,
                                                        binary, d.from_logits ? 0.0f : 0.5f});
        return Exec::sum(scratch, pred.rows);
    }
};

/// The type of metrics::mae: the mean absolute error over a sample's outputs.
struct mean_absolute_error_metric {
    /// Its name in History, logs and the progress bar.
    static constexpr std::string_view name = "mae";
    /// Compares each output with a target of the same shape, never with a class index.
    static constexpr bool needs_dense_targets = true;
    /// Sum over the rows of each sample's mean absolute error; `scratch` holds
    /// pred.rows floats of the policy's memory.
    template <ExecutionPolicy Exec>
    double sum(const_matrix_view pred, const_matrix_view target, target_description,
               float* scratch) const {
        Exec::for_each(pred.rows, detail::absolute_error_rows{pred.data, target.data, scratch,
                                                              pred.cols, false});
        return Exec::sum(scratch, pred.rows);
    }
};

/// The type of metrics::mse: the mean squared error over a sample's outputs.
struct mean_squared_error_metric {
    /// Its name in History, logs and the progress bar.
    static constexpr std::string_view name = "mse";
    /// Compares each output with a target of the same shape, never with a class index.
    static constexpr bool needs_dense_targets = true;
    /// Sum over the rows of each sample's mean squared error; `scratch` holds
    /// pred.rows floats of the policy's memory.
    template <ExecutionPolicy Exec>
    double sum(const_matrix_view pred, const_matrix_view target, target_description,
               float* scratch) const {
        Exec::for_each(pred.rows, detail::absolute_error_rows{pred.data, target.data, scratch,
                                                              pred.cols, true});
        return Exec::sum(scratch, pred.rows);
    }
};

/// Fraction of samples classified right (Keras's "accuracy").
inline constexpr accuracy_metric accuracy{};
/// Mean absolute error per output.
inline constexpr mean_absolute_error_metric mae{};
/// Mean squared error per output.
inline constexpr mean_squared_error_metric mse{};

}  // namespace metrics
}  // namespace batchwise
