// Categorical cross-entropy with one-hot (or soft) targets, and its sparse form with one class
// index per sample. With from_logits the log-softmax is fused: loss = logsumexp(z) - <y, z>.
#pragma once

#include <cmath>
#include <cstddef>
#include <string_view>

#include "batchwise/losses/loss.hpp"

namespace batchwise {

namespace detail {

/// Target value of class j for row r: one-hot from a sparse label or read from a dense row.
struct dense_target {
    const float* target;
    std::size_t cols;
    BATCHWISE_HOST_DEVICE float operator()(std::size_t r, std::size_t j) const {
        return target[r * cols + j];
    }
};
struct sparse_target {
    const float* labels;
    BATCHWISE_HOST_DEVICE float operator()(std::size_t r, std::size_t j) const {
        return static_cast<std::size_t>(labels[r]) == j ? 1.0f : 0.0f;
    }
};

template <class Target>
struct cce_logits_rows {
    const float* logits;
    Target target;
    float* grad;
    float* row_loss;
    std::size_t cols;
    float scale;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t r) const {
        const float* z = logits + r * cols;
        float m = z[0];
        for (std::size_t j = 1; j < cols; ++j) m = z[j] > m ? z[j] : m;
        float se = 0.0f;
        for (std::size_t j = 0; j < cols; ++j) se += std::exp(z[j] - m);
        const float lse = m + std::log(se);
        float loss = 0.0f, ysum = 0.0f;
        for (std::size_t j = 0; j < cols; ++j) {
            const float y = target(r, j);
            loss += y * (lse - z[j]);
            ysum += y;
        }
        row_loss[r] = loss;
        if (grad != nullptr) {
            // d/dz_j = softmax_j * sum(y) - y_j; sum(y) is 1 for proper targets.
            for (std::size_t j = 0; j < cols; ++j) {
                grad[r * cols + j] = scale * (std::exp(z[j] - lse) * ysum - target(r, j));
            }
        }
    }
};

/// Probabilities are first renormalised per row and clipped, as Keras does:
/// loss = -sum_j y_j log(p_j / s), s = sum_j p_j.
template <class Target>
struct cce_probability_rows {
    const float* prob;
    Target target;
    float* grad;
    float* row_loss;
    std::size_t cols;
    float scale;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t r) const {
        const float* p = prob + r * cols;
        float s = 0.0f;
        for (std::size_t j = 0; j < cols; ++j) s += p[j];
        const float lo = probability_epsilon;
        const float hi = 1.0f - probability_epsilon;
        float loss = 0.0f, ysum = 0.0f;
        for (std::size_t j = 0; j < cols; ++j) {
            const float q = p[j] / s;
            const float qc = q < lo ? lo : (q > hi ? hi : q);
            const float y = target(r, j);
            loss -= y * std::log(qc);
            ysum += y;
        }
        row_loss[r] = loss;
        if (grad != nullptr) {
            for (std::size_t j = 0; j < cols; ++j) {
                const float q = p[j] / s;
                const bool clipped = q < lo || q > hi;
                const float y = target(r, j);
                grad[r * cols + j] = scale * ((clipped ? 0.0f : -y / p[j]) + ysum / s);
            }
        }
    }
};

template <class Exec, class Target>
double crossentropy_sum(bool from_logits, const_matrix_view pred, Target target, float* grad,
                        float grad_scale, float* row_loss) {
    if (from_logits) {
        return reduce_rows<Exec>(pred.rows,
                                 cce_logits_rows<Target>{pred.data, target, grad, row_loss,
                                                         pred.cols, grad_scale},
                                 row_loss);
    }
    return reduce_rows<Exec>(pred.rows,
                             cce_probability_rows<Target>{pred.data, target, grad, row_loss,
                                                          pred.cols, grad_scale},
                             row_loss);
}

}  // namespace detail

/// Targets are one row per sample with one value per class (one-hot or soft labels).
struct CategoricalCrossentropy {
    /// Keras's name for it, used in error messages.
    static constexpr std::string_view name = "categorical_crossentropy";
    /// from_logits: the predictions are scores, and the log-softmax is fused in.
    loss_options options{};

    /// One value per class; logits when options.from_logits.
    [[nodiscard]] target_description describe() const {
        return {.sparse_labels = false, .binary = false, .from_logits = options.from_logits};
    }

    /// Each sample's loss into row_loss and, when grad is not null, grad_scale times its gradient
    /// into grad (LossFor); returns the sum of the samples' losses.
    template <ExecutionPolicy Exec>
    double sum(const_matrix_view pred, const_matrix_view target, float* grad, float grad_scale,
               float* row_loss) const {
        return detail::crossentropy_sum<Exec>(options.from_logits, pred,
                                              detail::dense_target{target.data, target.cols}, grad,
                                              grad_scale, row_loss);
    }
};

/// Targets are one class index per sample, in [0, classes); the model checks the range before
/// the loss ever sees a label.
struct SparseCategoricalCrossentropy {
    /// Keras's name for it, used in error messages.
    static constexpr std::string_view name = "sparse_categorical_crossentropy";
    /// from_logits: the predictions are scores, and the log-softmax is fused in.
    loss_options options{};

    /// Class indices; logits when options.from_logits.
    [[nodiscard]] target_description describe() const {
        return {.sparse_labels = true, .binary = false, .from_logits = options.from_logits};
    }

    /// Each sample's loss into row_loss and, when grad is not null, grad_scale times its gradient
    /// into grad (LossFor); returns the sum of the samples' losses.
    template <ExecutionPolicy Exec>
    double sum(const_matrix_view pred, const_matrix_view target, float* grad, float grad_scale,
               float* row_loss) const {
        return detail::crossentropy_sum<Exec>(options.from_logits, pred,
                                              detail::sparse_target{target.data}, grad, grad_scale,
                                              row_loss);
    }
};

}  // namespace batchwise
