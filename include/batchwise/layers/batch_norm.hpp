// Batch normalisation over the samples of a batch, per feature or, for an image, per channel
// (Keras's BatchNormalization, axis=-1): batch statistics in training, moving averages in
// inference. Training statistics are taken per virtual batch ("ghost" batch norm); the moving
// averages are updated once per optimizer step from the statistics of the whole effective batch,
// however many micro-batches made it.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "batchwise/batch/accumulation.hpp"
#include "batchwise/core/conventions.hpp"
#include "batchwise/layers/batch_norm_functors.hpp"
#include "batchwise/layers/layer.hpp"

namespace batchwise {

/// Keras's defaults: momentum 0.99, epsilon 0.001. Normalises each feature of a flat input, and
/// each channel (the last axis) of an image over the batch's samples and positions.
/// VirtualBatchSize 0 takes training statistics over each micro-batch; V > 0 over consecutive
/// groups of V samples, so that statistics do not depend on how a step is split into
/// micro-batches as long as the split points are multiples of V (docs/exactness.md).
/// Synchronized (Keras's `synchronized=True`, PyTorch's SyncBatchNorm): under data_parallel the
/// training statistics are those of the micro-batch of all processes together; in one process
/// it is plain batch norm.
template <real_constant Momentum = 0.99, real_constant Epsilon = 0.001, std::size_t VirtualBatchSize = 0,
          bool Synchronized = false>
struct BatchNormalization {
    /// The share of the moving averages kept at each optimizer step: moving = momentum * moving +
    /// (1 - momentum) * the step's statistic.
    static constexpr float momentum = Momentum.as_float();
    /// Added to the variance before its square root.
    static constexpr float epsilon = Epsilon.as_float();
    static_assert(momentum >= 0.0f && momentum <= 1.0f, "BatchNorm momentum must be in [0, 1].");
    static_assert(epsilon > 0.0f, "BatchNorm epsilon must be positive.");
    static_assert(!Synchronized || VirtualBatchSize == 0,
                  "BatchNormalization: synchronized statistics span the whole global batch; they cannot "
                  "also be taken per virtual batch.");
    /// The Keras class name, shown by summary(); layer and weight names are its snake_case form.
    static constexpr std::string_view name = "BatchNormalization";
    /// Samples per group of training statistics; 0: each micro-batch is one group.
    static constexpr std::size_t virtual_batch_size = VirtualBatchSize;

    /// Takes a sample of any shape.
    template <class In>
    static constexpr bool accepts = true;
    /// What a shape-mismatch diagnostic says it needs: any shape.
    template <class In>
    using requirement = any_shape;
    /// The output has the input's shape.
    template <class In>
    using output = In;

    // Statistics are per channel, the last axis: a batch of `rows` samples is, to every
    // functor, a (rows x positions, features) matrix, and a virtual batch of V samples is
    // V x positions of its rows.
    template <class In, ExecutionPolicy Exec>
    class impl {
        static constexpr std::size_t positions = In::size / In::dims[In::rank - 1];
        static constexpr std::size_t virtual_rows = VirtualBatchSize * positions;

    public:
        static constexpr std::size_t features = In::dims[In::rank - 1];
        static constexpr std::size_t in_features = In::size;
        static constexpr std::size_t out_features = In::size;
        static constexpr std::size_t trainable_count = 2 * features;
        static constexpr std::size_t non_trainable_count = 2 * features;
        /// Micro-batches split at multiples of this keep training statistics unchanged.
        static constexpr std::size_t split_granularity = VirtualBatchSize == 0 ? 1 : VirtualBatchSize;
        /// Backward never reads the output (it only reuses its memory as scratch, after the layers
        /// above are done with it): the activation after may run in place over it.
        static constexpr bool output_is_scratch = true;
        /// Its column sums run over samples x positions rows (RowScratchPolicy sizes for them).
        static constexpr std::size_t rows_per_sample = positions;
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
            return rows * In::size * (need_dx ? 3 : 2) + 5 * features * chunks(rows);
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
            Exec::reserve(out_, rows * In::size);
            Exec::reserve(xhat_, rows * In::size);
            if (need_dx) Exec::reserve(dx_, rows * In::size);
            for (auto* v : {&mean_, &var_, &inv_std_, &sum_dy_, &sum_dy_xhat_}) {
                Exec::reserve(*v, chunks(rows) * features);
            }
        }

        /// A new optimizer step starts: forget the statistics gathered for the last one.
        void begin_step() { step_samples_ = 0; }
        /// Keras's moving variance (of the biased batch variance) or PyTorch's (unbiased).
        void set_conventions(conventions c) { unbiased_ = c == conventions::pytorch; }

        /// The optimizer step is done: fold the effective batch's statistics into the averages.
        void end_step() {
            if (step_samples_ == 0) return;
            // PyTorch averages the unbiased variance, M2 / (n - 1); Keras the biased one.
            const std::size_t divisor = unbiased_ && step_samples_ > 1 ? step_samples_ - 1 : step_samples_;
            Exec::for_each(features, detail::batch_norm_update_moving{
                                         Exec::data(step_mean_), Exec::data(step_m2_),
                                         Exec::data(moving_mean_), Exec::data(moving_var_), momentum,
                                         1.0f / static_cast<float>(divisor), guard_});
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
            samples *= positions;
            Exec::for_each(features, detail::batch_norm_unpack_statistics{
                                         Exec::data(exchange_), Exec::data(moving_mean_),
                                         Exec::data(step_mean_), Exec::data(step_m2_), features, samples});
            step_samples_ = samples;
        }

        const_matrix_view forward(const_matrix_view batch, const pass_context& ctx) {
            const const_matrix_view x{batch.data, batch.rows * positions, features};
            const matrix_view y{Exec::data(out_), x.rows, features};
            const const_matrix_view result{y.data, batch.rows, In::size};
            if (!ctx.training) {
                // mean_ and inv_std_ are training scratch, free in inference.
                Exec::for_each(features, detail::batch_norm_inference_affine{
                                             Exec::data(moving_mean_), Exec::data(moving_var_), Exec::data(gamma_),
                                             Exec::data(beta_), Exec::data(inv_std_), Exec::data(mean_), epsilon});
                Exec::for_each(x.size(), detail::batch_norm_normalize_inference{
                                             x.data, Exec::data(inv_std_), Exec::data(mean_), y.data, features});
                return result;
            }
            rows_ = x.rows;
            guard_ = ctx.device_scalars;  // a captured step's: its end_step reads the guard
            valid_ = (ctx.valid_rows < batch.rows ? ctx.valid_rows : batch.rows) * positions;
            reducer_ = nullptr;
            if constexpr (Synchronized) {
                if (ctx.statistics != nullptr) {
                    forward_synchronized(x, y, *ctx.statistics);
                    return result;
                }
            }
            // Column sums read the batch row by row, in the order memory holds it: per-feature
            // loops would stride through it once per feature (32 passes for 32 channels).
            const std::size_t c = chunks(batch.rows);
            chunk_column_sums(x, Exec::data(mean_));
            Exec::for_each(c * features, detail::batch_norm_sums_to_means{Exec::data(mean_), rows_, valid_, features,
                                                                          virtual_rows});
            // out_ is free until the normalised values are written into it.
            Exec::for_each(x.size(), detail::batch_norm_centered_squares{x.data, Exec::data(mean_), Exec::data(out_),
                                                                         features, virtual_rows});
            chunk_column_sums({Exec::data(out_), x.rows, features}, Exec::data(var_));
            Exec::for_each(c * features, detail::batch_norm_sums_to_variances{Exec::data(var_), Exec::data(inv_std_),
                                                                              rows_, valid_, features, virtual_rows,
                                                                              epsilon});
            Exec::for_each(features, detail::batch_norm_merge_step{
                                         Exec::data(mean_), Exec::data(var_), Exec::data(step_mean_),
                                         Exec::data(step_m2_), c, rows_, valid_, features,
                                         virtual_rows, step_samples_});
            step_samples_ += valid_;
            Exec::for_each(x.size(), detail::batch_norm_normalize_train{
                                         x.data, Exec::data(mean_), Exec::data(inv_std_),
                                         Exec::data(gamma_), Exec::data(beta_), Exec::data(xhat_),
                                         y.data, features, virtual_rows});
            return result;
        }

        const_matrix_view backward(const_matrix_view, const_matrix_view, const_matrix_view batch_dy,
                                   bool need_dx, bool accumulate) {
            const const_matrix_view dy{batch_dy.data, batch_dy.rows * positions, features};
            const std::size_t c = chunks(batch_dy.rows);
            chunk_column_sums(dy, Exec::data(sum_dy_));
            // The layer after has run its backward pass: nobody reads out_ again in this step.
            Exec::for_each(dy.size(), detail::multiply_elementwise{dy.data, Exec::data(xhat_), Exec::data(out_)});
            chunk_column_sums({Exec::data(out_), dy.rows, features}, Exec::data(sum_dy_xhat_));
            Exec::for_each(features, detail::batch_norm_parameter_grads{Exec::data(sum_dy_), Exec::data(sum_dy_xhat_), c,
                                                                        features, Exec::data(gamma_grad_),
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
                                          features, virtual_rows, reducer_ ? global_ : 0});
            return {dx.data, batch_dy.rows, In::size};
        }

        /// Training statistics of the global batch: this process's partial sums and row count,
        /// summed over the processes, then merged into the step's statistics as one batch.
        void forward_synchronized(const_matrix_view x, matrix_view y, const statistics_reducer& reduce) {
            reducer_ = &reduce;
            float* sums = Exec::data(exchange_);
            Exec::for_each(features, detail::batch_norm_partial_sums{x.data, Exec::data(moving_mean_), sums, valid_,
                                                                     features});
            // Samples, not samples x positions, travel as a float: exact below 2^24 samples.
            const auto local = static_cast<float>(valid_ / positions);
            Exec::from_host(&local, 1, sums + 2 * features);
            reduce(sums, 2 * features + 1);
            float total = 0.0f;
            Exec::to_host(sums + 2 * features, 1, &total);
            global_ = static_cast<std::size_t>(total) * positions;
            if (global_ == 0) return;  // no process had a row
            Exec::for_each(features, detail::batch_norm_global_statistics{
                                         sums, Exec::data(moving_mean_), Exec::data(mean_), Exec::data(var_),
                                         Exec::data(inv_std_), features, global_, epsilon});
            Exec::for_each(features, detail::batch_norm_merge_step{
                                         Exec::data(mean_), Exec::data(var_), Exec::data(step_mean_),
                                         Exec::data(step_m2_), 1, global_, global_, features, 0, step_samples_});
            step_samples_ += global_;
            Exec::for_each(x.size(), detail::batch_norm_normalize_train{
                                         x.data, Exec::data(mean_), Exec::data(inv_std_), Exec::data(gamma_),
                                         Exec::data(beta_), Exec::data(xhat_), y.data, features, 0});
        }

        template <class F>
        void for_each_variable(F&& f) {
            f(variable_ref{"gamma", Exec::data(gamma_), Exec::data(gamma_grad_), features, 0});
            f(variable_ref{"beta", Exec::data(beta_), Exec::data(beta_grad_), features, 0});
            f(variable_ref{"moving_mean", Exec::data(moving_mean_), nullptr, features, 0});
            f(variable_ref{"moving_variance", Exec::data(moving_var_), nullptr, features, 0});
        }

    private:
        /// Per virtual batch: the column sums of its real rows of m into out (chunk c at c x features).
        void chunk_column_sums(const_matrix_view m, float* out) {
            for (std::size_t k = 0; k < chunks(m.rows / positions); ++k) {
                const detail::virtual_batch vb = detail::virtual_batch::of(k, virtual_rows, rows_, valid_);
                if (vb.count == 0) {
                    Exec::fill(out + k * features, features, 0.0f);
                } else {
                    Exec::column_sums({m.data + vb.begin * features, vb.count, features}, out + k * features, 0.0f);
                }
            }
        }

        typename Exec::vector gamma_, beta_, gamma_grad_, beta_grad_, moving_mean_, moving_var_,
            step_mean_, step_m2_, exchange_, mean_, var_, inv_std_, sum_dy_, sum_dy_xhat_, out_, xhat_, dx_;
        std::size_t rows_ = 0, valid_ = 0, step_samples_ = 0;
        bool unbiased_ = false;
        std::size_t global_ = 0;                          // rows of all processes (synchronized)
        const statistics_reducer* reducer_ = nullptr;     // set by a synchronized forward
        const step_scalars* guard_ = nullptr;             // set by a captured forward
    };
};

/// BatchNormalization with Keras's defaults.
using BatchNorm = BatchNormalization<>;

/// Batch norm whose training statistics span every process of data-parallel training.
template <real_constant Momentum = 0.99, real_constant Epsilon = 0.001>
using SyncBatchNormalization = BatchNormalization<Momentum, Epsilon, 0, true>;

}  // namespace batchwise
