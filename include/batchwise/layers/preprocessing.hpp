// Keras's Normalization preprocessing layer: standardises each channel (the last axis) of the
// input with a mean and a variance learned from data by adapt() (train/adapt.hpp), not by
// gradient descent. Both are non-trainable variables, so save_weights and checkpoints keep them.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "batchwise/layers/layer.hpp"

namespace batchwise {

namespace detail {
/// Keras's divisor: the standard deviation, but never below epsilon (a constant feature stays
/// finite instead of dividing by zero).
BATCHWISE_HOST_DEVICE inline float normalization_scale(float variance) {
    const float sd = std::sqrt(variance);
    return 1.0f / (sd > 1e-7f ? sd : 1e-7f);
}
struct normalization_forward {
    const float* x;
    float* y;
    const float* mean;
    const float* variance;
    std::size_t channels;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t c = i % channels;
        y[i] = (x[i] - mean[c]) * normalization_scale(variance[c]);
    }
};
struct normalization_backward {
    const float* dy;
    float* dx;
    const float* variance;
    std::size_t channels;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        dx[i] = dy[i] * normalization_scale(variance[i % channels]);
    }
};
}  // namespace detail

/// Keras's Normalization(axis=-1): (x - mean) / sqrt(variance) per channel, the last axis of the
/// sample (each feature of a flat one). Until adapted (bw::adapt(model, data), or set_weights on
/// "normalization/mean" and "normalization/variance") it passes its input through unchanged.
struct Normalization {
    /// The Keras class name, shown by summary(); its weights are "normalization/mean" and
    /// "normalization/variance".
    static constexpr std::string_view name = "Normalization";
    /// Takes a sample of any shape.
    template <class In>
    static constexpr bool accepts = true;
    /// What a shape-mismatch diagnostic says it needs: any shape.
    template <class In>
    using requirement = any_shape;
    /// The input's shape.
    template <class In>
    using output = In;

    /// The layer on input shape In (the LayerImpl contract, docs/concepts.md).
    template <class In, ExecutionPolicy Exec>
    class impl {
    public:
        static constexpr std::size_t channels = In::dims[In::rank - 1];
        static constexpr std::size_t in_features = In::size;
        static constexpr std::size_t out_features = In::size;
        static constexpr std::size_t trainable_count = 0;
        static constexpr std::size_t non_trainable_count = 2 * channels;
        static constexpr std::size_t state_floats = 2 * channels;
        static constexpr std::size_t buffer_floats(std::size_t rows, bool need_dx) {
            return rows * In::size * (need_dx ? 2 : 1);
        }

        impl() {
            Exec::reserve(mean_, channels);
            Exec::reserve(variance_, channels);
        }
        void initialize(std::uint64_t, std::uint32_t) {
            Exec::fill(Exec::data(mean_), channels, 0.0f);
            Exec::fill(Exec::data(variance_), channels, 1.0f);
        }
        void reserve(std::size_t rows, bool need_dx) {
            Exec::reserve(out_, rows * In::size);
            if (need_dx) Exec::reserve(dx_, rows * In::size);
        }
        const_matrix_view forward(const_matrix_view x, const pass_context&) {
            const matrix_view y{Exec::data(out_), x.rows, x.cols};
            Exec::for_each(x.size(), detail::normalization_forward{x.data, y.data, Exec::data(mean_),
                                                                   Exec::data(variance_), channels});
            return y;
        }
        const_matrix_view backward(const_matrix_view, const_matrix_view y, const_matrix_view dy, bool need_dx,
                                   bool) {
            if (!need_dx) return {};
            const matrix_view dx{Exec::data(dx_), y.rows, y.cols};
            Exec::for_each(y.size(), detail::normalization_backward{dy.data, dx.data, Exec::data(variance_), channels});
            return dx;
        }
        template <class F>
        void for_each_variable(F&& f) {
            f(variable_ref{"mean", Exec::data(mean_), nullptr, channels, 0});
            f(variable_ref{"variance", Exec::data(variance_), nullptr, channels, 0});
        }

    private:
        typename Exec::vector mean_, variance_, out_, dx_;
    };
};

}  // namespace batchwise
