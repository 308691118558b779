// Batch normalisation over the samples of a batch, per feature (Keras's BatchNormalization):
// batch statistics in training, moving averages in inference. Training statistics are taken per
// virtual batch ("ghost" batch norm); the moving averages are updated once per optimizer step
// from the statistics of the whole effective batch, however many micro-batches made it.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "batchwise/batch/accumulation.hpp"
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

/// Per (virtual batch c, feature j): mean and biased variance over the real rows of the
/// virtual batch (two passes, for accuracy), and 1 / sqrt(var + eps).
struct batch_norm_chunk_statistics {
    const float* x;
    std::size_t rows, valid, cols, virtual_size;
    float* mean;
    float* var;
    float* inv_std;
    float epsilon;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t c = i / cols, j = i % cols;
        const virtual_batch vb = virtual_batch::of(c, virtual_size, rows, valid);
        float m = 0.0f, v = 0.0f;
        if (vb.count > 0) {
            for (std::size_t r = vb.begin; r < vb.begin + vb.count; ++r) m += x[r * cols + j];
            m /= static_cast<float>(vb.count);
            for (std::size_t r = vb.begin; r < vb.begin + vb.count; ++r) {
                const float d = x[r * cols + j] - m;
                v += d * d;
            }
            v /= static_cast<float>(vb.count);
        }
        mean[i] = m;
        var[i] = v;
        inv_std[i] = 1.0f / std::sqrt(v + epsilon);
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
    BATCHWISE_HOST_DEVICE void operator()(std::size_t j) const {
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

struct batch_norm_normalize_inference {
    const float* x;
    const float* moving_mean;
    const float* moving_var;
    const float* gamma;
    const float* beta;
    float* y;
    std::size_t cols;
    float epsilon;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t j = i % cols;
        y[i] = gamma[j] * (x[i] - moving_mean[j]) / std::sqrt(moving_var[j] + epsilon) + beta[j];
    }
};

/// Per feature: each virtual batch's sum(dy) and sum(dy * xhat) over its real rows (kept for
/// dx), and their totals added to (or, at the first micro-batch, written to) the gradients.
struct batch_norm_parameter_grads {
    const float* dy;
    const float* xhat;
    std::size_t chunks, rows, valid, cols, virtual_size;
    float* sum_dy;
    float* sum_dy_xhat;
    float* gamma_grad;
    float* beta_grad;
    bool accumulate;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t j) const {
        float total = 0.0f, total_x = 0.0f;
        for (std::size_t c = 0; c < chunks; ++c) {
            const virtual_batch vb = virtual_batch::of(c, virtual_size, rows, valid);
            float s = 0.0f, sx = 0.0f;
            for (std::size_t r = vb.begin; r < vb.begin + vb.count; ++r) {
                s += dy[r * cols + j];
                sx += dy[r * cols + j] * xhat[r * cols + j];
            }
            sum_dy[c * cols + j] = s;
            sum_dy_xhat[c * cols + j] = sx;
            total += s;
            total_x += sx;
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

/// Keras's defaults: momentum 0.99, epsilon 0.001. Normalises each feature of a flat input.
/// VirtualBatchSize 0 takes training statistics over each micro-batch; V > 0 over consecutive
/// groups of V samples, so that statistics do not depend on how a step is split into
/// micro-batches as long as the split points are multiples of V (docs/exactness.md).
/// Synchronized (Keras's `synchronized=True`, PyTorch's SyncBatchNorm): under data_parallel the
/// training statistics are those of the micro-batch of all processes together; in one process
/// it is plain batch norm.
template <float Momentum = 0.99f, float Epsilon = 0.001f, std::size_t VirtualBatchSize = 0, bool Synchronized = false>
struct BatchNormalization {
    static_assert(Momentum >= 0.0f && Momentum <= 1.0f, "BatchNorm momentum must be in [0, 1].");
    static_assert(Epsilon > 0.0f, "BatchNorm epsilon must be positive.");
    static_assert(!Synchronized || VirtualBatchSize == 0,
                  "BatchNormalization: synchronized statistics span the whole global batch; they cannot "
                  "also be taken per virtual batch.");
    static constexpr std::string_view name = "BatchNormalization";
    static constexpr float momentum = Momentum;
    static constexpr float epsilon = Epsilon;
    static constexpr std::size_t virtual_batch_size = VirtualBatchSize;

    template <class In>
    static constexpr bool accepts = In::rank == 1;
    template <class In>
    using requirement = any_shape_of_rank<1>;
    template <class In>
    using output = In;

    template <class In, ExecutionPolicy Exec>
    class impl {
    public:
        static constexpr std::size_t features = In::size;
        static constexpr std::size_t in_features = features;
        static constexpr std::size_t out_features = features;
        static constexpr std::size_t trainable_count = 2 * features;
        static constexpr std::size_t non_trainable_count = 2 * features;
        /// Micro-batches split at multiples of this keep training statistics unchanged.
        static constexpr std::size_t split_granularity = VirtualBatchSize == 0 ? 1 : VirtualBatchSize;
        /// Sums its batch statistics across processes (SynchronizedStatisticsLayer).
        static constexpr bool synchronizes_statistics = Synchronized;
        // gamma, beta, their gradients, moving mean and variance, the step's mean and M2, and
        // the buffer statistics are exchanged in across processes (two sums and a count).
        static constexpr std::size_t state_floats = 10 * features + 1;

        static constexpr std::size_t chunks(std::size_t rows) {
            return VirtualBatchSize == 0 ? 1 : (rows + VirtualBatchSize - 1) / VirtualBatchSize;
        }
        // out, xhat (and dx) per row; mean, var, inv_std, sum_dy, sum_dy_xhat per virtual batch.
        static constexpr std::size_t buffer_floats(std::size_t rows, bool need_dx) {
            return rows * features * (need_dx ? 3 : 2) + 5 * features * chunks(rows);
        }

        impl() {
            for (auto* v : {&gamma_, &beta_, &gamma_grad_, &beta_grad_, &moving_mean_, &moving_var_,
                            &step_mean_, &step_m2_}) {
                Exec::reserve(*v, features);
            }
            Exec::reserve(exchange_, 2 * features + 1);
        }

        void initialize(std::uint64_t, std::uint32_t) {
            Exec::fill(Exec::data(gamma_), features, 1.0f);
            Exec::fill(Exec::data(beta_), features, 0.0f);
            Exec::fill(Exec::data(moving_mean_), features, 0.0f);
            Exec::fill(Exec::data(moving_var_), features, 1.0f);
        }

        void reserve(std::size_t rows, bool need_dx) {
            Exec::reserve(out_, rows * features);
            Exec::reserve(xhat_, rows * features);
            if (need_dx) Exec::reserve(dx_, rows * features);
            for (auto* v : {&mean_, &var_, &inv_std_, &sum_dy_, &sum_dy_xhat_}) {
                Exec::reserve(*v, chunks(rows) * features);
            }
        }

        /// A new optimizer step starts: forget the statistics gathered for the last one.
        void begin_step() { step_samples_ = 0; }

        /// The optimizer step is done: fold the effective batch's statistics into the averages.
        void end_step() {
            if (step_samples_ == 0) return;
            Exec::for_each(features, detail::batch_norm_update_moving{
                                         Exec::data(step_mean_), Exec::data(step_m2_),
                                         Exec::data(moving_mean_), Exec::data(moving_var_), Momentum,
                                         1.0f / static_cast<float>(step_samples_)});
            step_samples_ = 0;
        }

        /// The step's statistics as sums that add up across processes (StepStatisticsLayer).
        gradient_buffer step_statistics() {
            // Synchronized statistics are already those of every process.
            if constexpr (Synchronized) return {"batch_statistics", nullptr, 0};
            Exec::for_each(features, detail::batch_norm_pack_statistics{
                                         Exec::data(step_mean_), Exec::data(step_m2_),
                                         Exec::data(moving_mean_), Exec::data(exchange_), features,
                                         step_samples_});
            return {"batch_statistics", Exec::data(exchange_), 2 * features};
        }
        /// The summed statistics of every process, `samples` samples in all, become the step's.
        void set_step_statistics(std::size_t samples) {
            if (Synchronized || samples == 0) return;
            Exec::for_each(features, detail::batch_norm_unpack_statistics{
                                         Exec::data(exchange_), Exec::data(moving_mean_),
                                         Exec::data(step_mean_), Exec::data(step_m2_), features, samples});
            step_samples_ = samples;
        }

        const_matrix_view forward(const_matrix_view x, const pass_context& ctx) {
            const matrix_view y{Exec::data(out_), x.rows, features};
            if (!ctx.training) {
                Exec::for_each(x.size(), detail::batch_norm_normalize_inference{
                                             x.data, Exec::data(moving_mean_),
                                             Exec::data(moving_var_), Exec::data(gamma_),
                                             Exec::data(beta_), y.data, features, Epsilon});
                return y;
            }
            rows_ = x.rows;
            valid_ = ctx.valid_rows < x.rows ? ctx.valid_rows : x.rows;
            reducer_ = nullptr;
            if constexpr (Synchronized) {
                if (ctx.statistics != nullptr) return forward_synchronized(x, y, *ctx.statistics);
            }
            const std::size_t c = chunks(rows_);
            Exec::for_each(c * features, detail::batch_norm_chunk_statistics{
                                             x.data, rows_, valid_, features, VirtualBatchSize,
                                             Exec::data(mean_), Exec::data(var_),
                                             Exec::data(inv_std_), Epsilon});
            Exec::for_each(features, detail::batch_norm_merge_step{
                                         Exec::data(mean_), Exec::data(var_), Exec::data(step_mean_),
                                         Exec::data(step_m2_), c, rows_, valid_, features,
                                         VirtualBatchSize, step_samples_});
            step_samples_ += valid_;
            Exec::for_each(x.size(), detail::batch_norm_normalize_train{
                                         x.data, Exec::data(mean_), Exec::data(inv_std_),
                                         Exec::data(gamma_), Exec::data(beta_), Exec::data(xhat_),
                                         y.data, features, VirtualBatchSize});
            return y;
        }

        const_matrix_view backward(const_matrix_view, const_matrix_view, const_matrix_view dy,
                                   bool need_dx, bool accumulate) {
            const std::size_t c = chunks(rows_);
            Exec::for_each(features, detail::batch_norm_parameter_grads{
                                         dy.data, Exec::data(xhat_), c, rows_, valid_, features,
                                         VirtualBatchSize, Exec::data(sum_dy_),
                                         Exec::data(sum_dy_xhat_), Exec::data(gamma_grad_),
                                         Exec::data(beta_grad_), accumulate});
            if (!need_dx) return {};
            if (reducer_ != nullptr) {
                // dx needs the sums over the global batch; gamma's and beta's gradients stay
                // this process's (the step's all-reduce adds them up).
                Exec::copy(Exec::data(sum_dy_), features, Exec::data(exchange_));
                Exec::copy(Exec::data(sum_dy_xhat_), features, Exec::data(exchange_) + features);
                (*reducer_)(Exec::data(exchange_), 2 * features);
                Exec::copy(Exec::data(exchange_), features, Exec::data(sum_dy_));
                Exec::copy(Exec::data(exchange_) + features, features, Exec::data(sum_dy_xhat_));
            }
            const matrix_view dx{Exec::data(dx_), dy.rows, features};
            Exec::for_each(dy.size(), detail::batch_norm_input_grad{
                                          dy.data, Exec::data(xhat_), Exec::data(gamma_),
                                          Exec::data(inv_std_), Exec::data(sum_dy_),
                                          Exec::data(sum_dy_xhat_), dx.data, rows_, valid_,
                                          features, VirtualBatchSize, reducer_ ? global_ : 0});
            return dx;
        }

        /// Training statistics of the global batch: this process's partial sums and row count,
        /// summed over the processes, then merged into the step's statistics as one batch.
        const_matrix_view forward_synchronized(const_matrix_view x, matrix_view y, const statistics_reducer& reduce) {
            reducer_ = &reduce;
            float* sums = Exec::data(exchange_);
            Exec::for_each(features, detail::batch_norm_partial_sums{x.data, Exec::data(moving_mean_), sums, valid_,
                                                                     features});
            const auto local = static_cast<float>(valid_);  // exact below 2^24 rows
            Exec::from_host(&local, 1, sums + 2 * features);
            reduce(sums, 2 * features + 1);
            float total = 0.0f;
            Exec::to_host(sums + 2 * features, 1, &total);
            global_ = static_cast<std::size_t>(total);
            if (global_ == 0) return y;  // no process had a row
            Exec::for_each(features, detail::batch_norm_global_statistics{
                                         sums, Exec::data(moving_mean_), Exec::data(mean_), Exec::data(var_),
                                         Exec::data(inv_std_), features, global_, Epsilon});
            Exec::for_each(features, detail::batch_norm_merge_step{
                                         Exec::data(mean_), Exec::data(var_), Exec::data(step_mean_),
                                         Exec::data(step_m2_), 1, global_, global_, features, 0, step_samples_});
            step_samples_ += global_;
            Exec::for_each(x.size(), detail::batch_norm_normalize_train{
                                         x.data, Exec::data(mean_), Exec::data(inv_std_), Exec::data(gamma_),
                                         Exec::data(beta_), Exec::data(xhat_), y.data, features, 0});
            return y;
        }

        template <class F>
        void for_each_variable(F&& f) {
            f(variable_ref{"gamma", Exec::data(gamma_), Exec::data(gamma_grad_), features, 0});
            f(variable_ref{"beta", Exec::data(beta_), Exec::data(beta_grad_), features, 0});
            f(variable_ref{"moving_mean", Exec::data(moving_mean_), nullptr, features, 0});
            f(variable_ref{"moving_variance", Exec::data(moving_var_), nullptr, features, 0});
        }

    private:
        typename Exec::vector gamma_, beta_, gamma_grad_, beta_grad_, moving_mean_, moving_var_,
            step_mean_, step_m2_, exchange_, mean_, var_, inv_std_, sum_dy_, sum_dy_xhat_, out_, xhat_, dx_;
        std::size_t rows_ = 0, valid_ = 0, step_samples_ = 0;
        std::size_t global_ = 0;                          // rows of all processes (synchronized)
        const statistics_reducer* reducer_ = nullptr;     // set by a synchronized forward
    };
};

/// BatchNormalization with Keras's defaults.
using BatchNorm = BatchNormalization<>;

/// Batch norm whose training statistics span every process of data-parallel training.
template <float Momentum = 0.99f, float Epsilon = 0.001f>
using SyncBatchNormalization = BatchNormalization<Momentum, Epsilon, 0, true>;

}  // namespace batchwise
