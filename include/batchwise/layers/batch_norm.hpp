// Batch normalisation over the samples of a batch, per feature (Keras's BatchNormalization):
// batch statistics in training, moving averages in inference.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "batchwise/layers/layer.hpp"

namespace batchwise {

namespace detail {

/// Per feature j: batch mean and biased variance (two passes for accuracy), then the moving
/// averages. Biased variance is what Keras feeds its moving variance as well.
struct batch_norm_statistics {
    const float* x;
    std::size_t rows;
    std::size_t cols;
    float* mean;
    float* inv_std;
    float* moving_mean;
    float* moving_var;
    float momentum;
    float epsilon;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t j) const {
        float m = 0.0f;
        for (std::size_t i = 0; i < rows; ++i) m += x[i * cols + j];
        m /= static_cast<float>(rows);
        float v = 0.0f;
        for (std::size_t i = 0; i < rows; ++i) {
            const float d = x[i * cols + j] - m;
            v += d * d;
        }
        v /= static_cast<float>(rows);
        mean[j] = m;
        inv_std[j] = 1.0f / std::sqrt(v + epsilon);
        moving_mean[j] = momentum * moving_mean[j] + (1.0f - momentum) * m;
        moving_var[j] = momentum * moving_var[j] + (1.0f - momentum) * v;
    }
};

/// Training: xhat = (x - mean) * inv_std is kept for backward; y = gamma * xhat + beta.
struct batch_norm_normalize_train {
    const float* x;
    const float* mean;
    const float* inv_std;
    const float* gamma;
    const float* beta;
    float* xhat;
    float* y;
    std::size_t cols;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t j = i % cols;
        xhat[i] = (x[i] - mean[j]) * inv_std[j];
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

/// Per feature j: dbeta = sum dy, dgamma = sum dy * xhat (added to the gradients when
/// accumulating), and the batch's own sums for dx, kept apart from the accumulated gradient.
struct batch_norm_parameter_grads {
    const float* dy;
    const float* xhat;
    std::size_t rows;
    std::size_t cols;
    float* sum_dy;
    float* sum_dy_xhat;
    float* gamma_grad;
    float* beta_grad;
    bool accumulate;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t j) const {
        float s = 0.0f, sx = 0.0f;
        for (std::size_t i = 0; i < rows; ++i) {
            s += dy[i * cols + j];
            sx += dy[i * cols + j] * xhat[i * cols + j];
        }
        sum_dy[j] = s;
        sum_dy_xhat[j] = sx;
        beta_grad[j] = accumulate ? beta_grad[j] + s : s;
        gamma_grad[j] = accumulate ? gamma_grad[j] + sx : sx;
    }
};

/// dx = gamma * inv_std / n * (n * dy - sum dy - xhat * sum(dy * xhat)).
struct batch_norm_input_grad {
    const float* dy;
    const float* xhat;
    const float* gamma;
    const float* inv_std;
    const float* sum_dy;
    const float* sum_dy_xhat;
    float* dx;
    std::size_t cols;
    float n;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t j = i % cols;
        dx[i] = gamma[j] * inv_std[j] / n * (n * dy[i] - sum_dy[j] - xhat[i] * sum_dy_xhat[j]);
    }
};

}  // namespace detail

/// Keras's defaults: momentum 0.99, epsilon 0.001. Normalises each feature of a flat input.
template <float Momentum = 0.99f, float Epsilon = 0.001f>
struct BatchNormalization {
    static_assert(Momentum >= 0.0f && Momentum <= 1.0f, "BatchNorm momentum must be in [0, 1].");
    static_assert(Epsilon > 0.0f, "BatchNorm epsilon must be positive.");
    static constexpr std::string_view name = "BatchNormalization";
    static constexpr float momentum = Momentum;
    static constexpr float epsilon = Epsilon;

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
        static constexpr std::size_t activation_floats_per_sample = 3 * features;

        impl() {
            for (auto* v : {&gamma_, &beta_, &gamma_grad_, &beta_grad_, &moving_mean_,
                            &moving_var_, &mean_, &inv_std_, &sum_dy_, &sum_dy_xhat_}) {
                Exec::reserve(*v, features);
            }
        }

        void initialize(std::uint64_t, std::uint32_t) {
            Exec::fill(Exec::data(gamma_), features, 1.0f);
            Exec::fill(Exec::data(beta_), features, 0.0f);
            Exec::fill(Exec::data(moving_mean_), features, 0.0f);
            Exec::fill(Exec::data(moving_var_), features, 1.0f);
        }

        void reserve(std::size_t rows) {
            Exec::reserve(out_, rows * features);
            Exec::reserve(xhat_, rows * features);
            Exec::reserve(dx_, rows * features);
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
            Exec::for_each(features, detail::batch_norm_statistics{
                                         x.data, x.rows, features, Exec::data(mean_),
                                         Exec::data(inv_std_), Exec::data(moving_mean_),
                                         Exec::data(moving_var_), Momentum, Epsilon});
            Exec::for_each(x.size(), detail::batch_norm_normalize_train{
                                         x.data, Exec::data(mean_), Exec::data(inv_std_),
                                         Exec::data(gamma_), Exec::data(beta_), Exec::data(xhat_),
                                         y.data, features});
            return y;
        }

        const_matrix_view backward(const_matrix_view, const_matrix_view, const_matrix_view dy,
                                   bool need_dx, bool accumulate) {
            Exec::for_each(features, detail::batch_norm_parameter_grads{
                                         dy.data, Exec::data(xhat_), dy.rows, features,
                                         Exec::data(sum_dy_), Exec::data(sum_dy_xhat_),
                                         Exec::data(gamma_grad_), Exec::data(beta_grad_),
                                         accumulate});
            if (!need_dx) return {};
            const matrix_view dx{Exec::data(dx_), dy.rows, features};
            Exec::for_each(dy.size(), detail::batch_norm_input_grad{
                                          dy.data, Exec::data(xhat_), Exec::data(gamma_),
                                          Exec::data(inv_std_), Exec::data(sum_dy_),
                                          Exec::data(sum_dy_xhat_), dx.data, features,
                                          static_cast<float>(dy.rows)});
            return dx;
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
            mean_, inv_std_, sum_dy_, sum_dy_xhat_, out_, xhat_, dx_;
    };
};

/// BatchNormalization with Keras's defaults.
using BatchNorm = BatchNormalization<>;

}  // namespace batchwise
