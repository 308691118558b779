// The functors of batch normalisation: training statistics per virtual batch, their merge into
// an optimizer step's statistics (and across processes), normalisation and gradients. Each runs
// on any execution policy; layers/batch_norm.hpp sequences them.
#pragma once

#include <cmath>
#include <cstddef>

#include "batchwise/core/config.hpp"
#include "batchwise/layers/layer.hpp"

namespace batchwise {

namespace detail {

/// Rows [begin, end) of virtual batch c, and how many of them are real (not padding).
struct virtual_batch {
    std::size_t begin, end, count;
    BATCHWISE_HOST_DEVICE static virtual_batch of(std::size_t c, std::size_t size, std::size_t rows,
                                                  std::size_t valid) {
        const std::size_t b = size == 0 ? 0 : c * size;
        const std::size_t e = size == 0 ? rows : (b + size < rows ? b + size : rows);
        const std::size_t v = valid < e ? valid : e;
        return {b, e, v > b ? v - b : 0};
    }
};

/// Per (virtual batch c, feature j): the column sum of its real rows becomes their mean, or 0
/// for a virtual batch of padding only.
struct batch_norm_sums_to_means {
    float* mean;
    std::size_t rows, valid, cols, virtual_size;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t n = virtual_batch::of(i / cols, virtual_size, rows, valid).count;
        mean[i] = n > 0 ? mean[i] / static_cast<float>(n) : 0.0f;
    }
};

/// (x - mean of the row's virtual batch)^2, element-wise: summed by column next, it is the
/// second pass of a two-pass variance, read in the order memory holds it.
struct batch_norm_centered_squares {
    const float* x;
    const float* mean;
    float* out;
    std::size_t cols, virtual_size;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t c = virtual_size == 0 ? 0 : (i / cols) / virtual_size;
        const float d = x[i] - mean[c * cols + i % cols];
        out[i] = d * d;
    }
};

/// Per (virtual batch, feature): the summed squares become the biased variance, and 1 / std.
struct batch_norm_sums_to_variances {
    float* var;
    float* inv_std;
    std::size_t rows, valid, cols, virtual_size;
    float epsilon;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t n = virtual_batch::of(i / cols, virtual_size, rows, valid).count;
        var[i] = n > 0 ? var[i] / static_cast<float>(n) : 0.0f;
        inv_std[i] = 1.0f / std::sqrt(var[i] + epsilon);
    }
};

/// Per feature: merges every virtual batch's (count, mean, M2) into the optimizer step's running
/// statistics (Chan et al.'s pairwise update), so the moving averages can later be updated from
/// the whole effective batch.
struct batch_norm_merge_step {
    const float* mean;
    const float* var;
    float* step_mean;
    float* step_m2;
    std::size_t chunks, rows, valid, cols, virtual_size;
    std::size_t already;  // samples merged earlier in this optimizer step
    BATCHWISE_HOST_DEVICE void operator()(std::size_t j) const {
        double n = static_cast<double>(already);
        double mu = n > 0 ? step_mean[j] : 0.0;
        double m2 = n > 0 ? step_m2[j] : 0.0;
        for (std::size_t c = 0; c < chunks; ++c) {
            const auto nb = static_cast<double>(virtual_batch::of(c, virtual_size, rows, valid).count);
            if (nb == 0) continue;
            const double mb = mean[c * cols + j];
            const double total = n + nb;
            const double delta = mb - mu;
            mu += delta * nb / total;
            m2 += static_cast<double>(var[c * cols + j]) * nb + delta * delta * n * nb / total;
            n = total;
        }
        step_mean[j] = static_cast<float>(mu);
        step_m2[j] = static_cast<float>(m2);
    }
};

/// moving = momentum * moving + (1 - momentum) * statistic of the effective batch.
struct batch_norm_update_moving {
    const float* step_mean;
    const float* step_m2;
    float* moving_mean;
    float* moving_var;
    float momentum;
    float inv_count;
    /// A replayed step's scalars, whose guard may have halted the step; null in eager steps.
    const step_scalars* guard = nullptr;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t j) const {
        if (guard != nullptr && guard->halted != 0) return;
        moving_mean[j] = momentum * moving_mean[j] + (1.0f - momentum) * step_mean[j];
        moving_var[j] = momentum * moving_var[j] + (1.0f - momentum) * step_m2[j] * inv_count;
    }
};

/// Per feature: the step's (count, mean, M2) as two sums that add up across processes, taken
/// about a shift every process holds alike (the moving mean), so that summing them in floats
/// does not cancel: n (mean - shift) and M2 + n (mean - shift)^2.
struct batch_norm_pack_statistics {
    const float* step_mean;
    const float* step_m2;
    const float* shift;
    float* out;
    std::size_t cols, samples;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t j) const {
        const auto n = static_cast<double>(samples);
        const double d = samples == 0 ? 0.0 : static_cast<double>(step_mean[j]) - shift[j];
        out[j] = static_cast<float>(n * d);
        out[cols + j] = static_cast<float>(samples == 0 ? 0.0 : step_m2[j] + n * d * d);
    }
};

/// The inverse of batch_norm_pack_statistics for the summed buffer of `samples` samples.
struct batch_norm_unpack_statistics {
    const float* in;
    const float* shift;
    float* step_mean;
    float* step_m2;
    std::size_t cols, samples;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t j) const {
        const auto n = static_cast<double>(samples);
        const double s1 = in[j];
        const double m2 = static_cast<double>(in[cols + j]) - s1 * s1 / n;
        step_mean[j] = static_cast<float>(shift[j] + s1 / n);
        step_m2[j] = static_cast<float>(m2 > 0.0 ? m2 : 0.0);
    }
};

/// Synchronized batch norm, per feature: this process's partial sums about the shift every
/// process holds alike (the moving mean), n (x - shift) summed and (x - shift)^2 summed, so that
/// the sums of all processes give the global batch's mean and variance without cancelling.
struct batch_norm_partial_sums {
    const float* x;
    const float* shift;
    float* out;
    std::size_t valid, cols;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t j) const {
        double s1 = 0.0, s2 = 0.0;
        for (std::size_t r = 0; r < valid; ++r) {
            const double d = static_cast<double>(x[r * cols + j]) - shift[j];
            s1 += d;
            s2 += d * d;
        }
        out[j] = static_cast<float>(s1);
        out[cols + j] = static_cast<float>(s2);
    }
};

/// The global batch's mean, biased variance and 1 / sqrt(var + eps) from the summed partial sums
/// of `count` rows in all.
struct batch_norm_global_statistics {
    const float* sums;
    const float* shift;
    float* mean;
    float* var;
    float* inv_std;
    std::size_t cols, count;
    float epsilon;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t j) const {
        const auto n = static_cast<double>(count);
        const double m = sums[j] / n;
        const double v = static_cast<double>(sums[cols + j]) / n - m * m;
        mean[j] = static_cast<float>(shift[j] + m);
        var[j] = static_cast<float>(v > 0.0 ? v : 0.0);
        inv_std[j] = static_cast<float>(1.0 / std::sqrt(var[j] + static_cast<double>(epsilon)));
    }
};

/// Training: xhat = (x - mean) * inv_std of the row's virtual batch, kept for backward.
struct batch_norm_normalize_train {
    const float* x;
    const float* mean;
    const float* inv_std;
    const float* gamma;
    const float* beta;
    float* xhat;
    float* y;
    std::size_t cols, virtual_size;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t j = i % cols;
        const std::size_t c = virtual_size == 0 ? 0 : (i / cols) / virtual_size;
        xhat[i] = (x[i] - mean[c * cols + j]) * inv_std[c * cols + j];
        y[i] = gamma[j] * xhat[i] + beta[j];
    }
};

/// Inference, per feature: the moving averages folded with gamma and beta into one scale and
/// one shift, so that each value costs a multiply-add instead of a square root and a division.
struct batch_norm_inference_affine {
    const float* moving_mean;
    const float* moving_var;
    const float* gamma;
    const float* beta;
    float* scale;
    float* shift;
    float epsilon;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t j) const {
        scale[j] = gamma[j] / std::sqrt(moving_var[j] + epsilon);
        shift[j] = beta[j] - moving_mean[j] * scale[j];
    }
};

struct batch_norm_normalize_inference {
    const float* x;
    const float* scale;
    const float* shift;
    float* y;
    std::size_t cols;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t j = i % cols;
        y[i] = x[i] * scale[j] + shift[j];
    }
};

/// Per feature: the virtual batches' sum(dy) and sum(dy * xhat) added up into beta's and gamma's
/// gradients (written at a step's first micro-batch, added to later).
struct batch_norm_parameter_grads {
    const float* sum_dy;
    const float* sum_dy_xhat;
    std::size_t chunks, cols;
    float* gamma_grad;
    float* beta_grad;
    bool accumulate;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t j) const {
        float total = 0.0f, total_x = 0.0f;
        for (std::size_t c = 0; c < chunks; ++c) {
            total += sum_dy[c * cols + j];
            total_x += sum_dy_xhat[c * cols + j];
        }
        beta_grad[j] = accumulate ? beta_grad[j] + total : total;
        gamma_grad[j] = accumulate ? gamma_grad[j] + total_x : total_x;
    }
};

/// dx = gamma * inv_std / n * (n * dy - sum dy - xhat * sum(dy * xhat)), per virtual batch of n
/// real rows; padding rows get a zero gradient.
struct batch_norm_input_grad {
    const float* dy;
    const float* xhat;
    const float* gamma;
    const float* inv_std;
    const float* sum_dy;
    const float* sum_dy_xhat;
    float* dx;
    std::size_t rows, valid, cols, virtual_size;
    std::size_t global_count = 0;  // synchronized: the rows of every process, else 0
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t r = i / cols, j = i % cols;
        if (r >= valid) {
            dx[i] = 0.0f;
            return;
        }
        const std::size_t c = virtual_size == 0 ? 0 : r / virtual_size;
        const auto n = static_cast<float>(global_count != 0 ? global_count
                                                            : virtual_batch::of(c, virtual_size, rows, valid).count);
        const std::size_t k = c * cols + j;
        dx[i] = gamma[j] * inv_std[k] / n * (n * dy[i] - sum_dy[k] - xhat[i] * sum_dy_xhat[k]);
    }
};

}  // namespace detail

}  // namespace batchwise
