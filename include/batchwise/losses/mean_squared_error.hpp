// Mean squared error: per sample the mean over its outputs of (pred - target)^2, as Keras.
#pragma once

#include <cstddef>
#include <string_view>

#include "batchwise/losses/loss.hpp"

namespace batchwise {

namespace detail {
struct mse_rows {
    const float* pred;
    const float* target;
    float* grad;
    float* row_loss;
    std::size_t cols;
    float scale;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t r) const {
        const float* p = pred + r * cols;
        const float* t = target + r * cols;
        const float inv_cols = 1.0f / static_cast<float>(cols);
        float s = 0.0f;
        for (std::size_t j = 0; j < cols; ++j) {
            const float d = p[j] - t[j];
            s += d * d;
            if (grad != nullptr) grad[r * cols + j] = scale * 2.0f * d * inv_cols;
        }
        row_loss[r] = s * inv_cols;
    }
};
}  // namespace detail

/// Keras's MeanSquaredError: targets of the predictions' shape; a sample's loss is the mean over
/// its outputs of (pred - target)^2.
struct MeanSquaredError {
    /// Keras's name for it, used in error messages.
    static constexpr std::string_view name = "mean_squared_error";
    /// Targets are values, neither class indices nor yes/no answers; predictions are not logits.
    [[nodiscard]] target_description describe() const { return {}; }

    /// Each sample's loss into row_loss and, when grad is not null, grad_scale times its gradient
    /// into grad (LossFor); returns the sum of the samples' losses.
    template <ExecutionPolicy Exec>
    double sum(const_matrix_view pred, const_matrix_view target, float* grad, float grad_scale,
               float* row_loss) const {
        return detail::reduce_rows<Exec>(
            pred.rows,
            detail::mse_rows{pred.data, target.data, grad, row_loss, pred.cols, grad_scale},
            row_loss);
    }
};

}  // namespace batchwise
