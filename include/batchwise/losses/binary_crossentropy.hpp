// Binary cross-entropy over independent yes/no outputs, averaged over the outputs of a sample
// as Keras does. With from_logits the log-sigmoid is fused and stable for any score.
#pragma once

#include <cmath>
#include <cstddef>
#include <string_view>

#include "batchwise/losses/loss.hpp"

namespace batchwise {

namespace detail {
struct bce_logits_rows {
    const float* logits;
    const float* target;
    float* grad;
    float* row_loss;
    std::size_t cols;
    float scale;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t r) const {
        const float inv_cols = 1.0f / static_cast<float>(cols);
        float s = 0.0f;
        for (std::size_t j = 0; j < cols; ++j) {
            const float z = logits[r * cols + j];
            const float y = target[r * cols + j];
            // max(z, 0) - z*y + log(1 + exp(-|z|)): never overflows, exact for large |z|.
            s += (z > 0.0f ? z : 0.0f) - z * y + std::log1p(std::exp(-std::fabs(z)));
            if (grad != nullptr) {
                const float sig = z >= 0.0f ? 1.0f / (1.0f + std::exp(-z))
                                            : std::exp(z) / (1.0f + std::exp(z));
                grad[r * cols + j] = scale * (sig - y) * inv_cols;
            }
        }
        row_loss[r] = s * inv_cols;
    }
};

struct bce_probability_rows {
    const float* prob;
    const float* target;
    float* grad;
    float* row_loss;
    std::size_t cols;
    float scale;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t r) const {
        const float inv_cols = 1.0f / static_cast<float>(cols);
        const float lo = probability_epsilon;
        const float hi = 1.0f - probability_epsilon;
        float s = 0.0f;
        for (std::size_t j = 0; j < cols; ++j) {
            const float raw = prob[r * cols + j];
            const float p = raw < lo ? lo : (raw > hi ? hi : raw);
            const float y = target[r * cols + j];
            s -= y * std::log(p) + (1.0f - y) * std::log(1.0f - p);
            if (grad != nullptr) {
                // Clipping makes the loss flat outside [eps, 1 - eps]: zero gradient there.
                const bool clipped = raw < lo || raw > hi;
                grad[r * cols + j] =
                    clipped ? 0.0f : scale * (p - y) / (p * (1.0f - p)) * inv_cols;
            }
        }
        row_loss[r] = s * inv_cols;
    }
};
}  // namespace detail

/// Keras's BinaryCrossentropy: targets in [0, 1] of the predictions' shape, one independent yes/no
/// question per output; a sample's loss is the mean over its outputs. Probabilities are clipped to
/// [probability_epsilon, 1 - probability_epsilon], where the gradient is then 0.
struct BinaryCrossentropy {
    /// Keras's name for it, used in error messages.
    static constexpr std::string_view name = "binary_crossentropy";
    /// from_logits: the predictions are scores, and the log-sigmoid is fused in.
    loss_options options{};

    /// Binary targets; logits when options.from_logits.
    [[nodiscard]] target_description describe() const {
        return {.sparse_labels = false, .binary = true, .from_logits = options.from_logits};
    }

    /// Each sample's loss into row_loss and, when grad is not null, grad_scale times its gradient
    /// into grad (LossFor); returns the sum of the samples' losses.
    template <ExecutionPolicy Exec>
    double sum(const_matrix_view pred, const_matrix_view target, float* grad, float grad_scale,
               float* row_loss) const {
        if (options.from_logits) {
            return detail::reduce_rows<Exec>(
                pred.rows,
                detail::bce_logits_rows{pred.data, target.data, grad, row_loss, pred.cols,
                                        grad_scale},
                row_loss);
        }
        return detail::reduce_rows<Exec>(
            pred.rows,
            detail::bce_probability_rows{pred.data, target.data, grad, row_loss, pred.cols,
                                         grad_scale},
            row_loss);
    }
};

}  // namespace batchwise
