// Softmax over the features of each sample. Prefer a loss with from_logits = true over a final
// Softmax: the fused log-softmax is more accurate and cheaper; this layer is for networks that
// must output probabilities.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "batchwise/layers/layer.hpp"

namespace batchwise {

namespace detail {

/// Numerically stable softmax of one row (subtract the row maximum before exp).
struct softmax_rows {
    const float* x;
    float* y;
    std::size_t cols;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t r) const {
        const float* xr = x + r * cols;
        float* yr = y + r * cols;
        float m = xr[0];
        for (std::size_t j = 1; j < cols; ++j) m = xr[j] > m ? xr[j] : m;
        float s = 0.0f;
        for (std::size_t j = 0; j < cols; ++j) s += (yr[j] = std::exp(xr[j] - m));
        const float inv = 1.0f / s;
        for (std::size_t j = 0; j < cols; ++j) yr[j] *= inv;
    }
};

/// dx = y * (dy - <dy, y>): the softmax Jacobian applied without forming it.
struct softmax_backward_rows {
    const float* y;
    const float* dy;
    float* dx;
    std::size_t cols;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t r) const {
        const float* yr = y + r * cols;
        const float* dyr = dy + r * cols;
        float* dxr = dx + r * cols;
        float dot = 0.0f;
        for (std::size_t j = 0; j < cols; ++j) dot += dyr[j] * yr[j];
        for (std::size_t j = 0; j < cols; ++j) dxr[j] = yr[j] * (dyr[j] - dot);
    }
};

}  // namespace detail

/// Softmax over each sample's features, for networks that must output probabilities. A loss
/// with from_logits = true after the logits is more accurate and cheaper than a final Softmax.
struct Softmax {
    /// The Keras class name, shown by summary(); layer and weight names are its snake_case form.
    static constexpr std::string_view name = "Softmax";

    /// Takes vectors only (rank 1): flatten other shapes first.
    template <class In>
    static constexpr bool accepts = In::rank == 1;
    /// What a shape-mismatch diagnostic says it needs: a shape of rank 1.
    template <class In>
    using requirement = any_shape_of_rank<1>;
    /// The output has the input's shape.
    template <class In>
    using output = In;

    template <class In, ExecutionPolicy Exec>
    class impl {
    public:
        static constexpr std::size_t in_features = In::size;
        static constexpr std::size_t out_features = In::size;
        static constexpr std::size_t trainable_count = 0;
        static constexpr std::size_t non_trainable_count = 0;
        static constexpr std::size_t state_floats = 0;
        static constexpr std::size_t buffer_floats(std::size_t rows, bool need_dx) {
            return rows * In::size * (need_dx ? 2 : 1);
        }

        void initialize(std::uint64_t, std::uint32_t) {}
        void reserve(std::size_t rows, bool need_dx) {
            Exec::reserve(out_, rows * In::size);
            if (need_dx) Exec::reserve(dx_, rows * In::size);
        }
        const_matrix_view forward(const_matrix_view x, const pass_context&) {
            const matrix_view y{Exec::data(out_), x.rows, x.cols};
            Exec::for_each(x.rows, detail::softmax_rows{x.data, y.data, x.cols});
            return y;
        }
        const_matrix_view backward(const_matrix_view, const_matrix_view y, const_matrix_view dy,
                                   bool need_dx, bool) {
            if (!need_dx) return {};
            const matrix_view dx{Exec::data(dx_), y.rows, y.cols};
            Exec::for_each(y.rows, detail::softmax_backward_rows{y.data, dy.data, dx.data, y.cols});
            return dx;
        }
        template <class F>
        void for_each_variable(F&&) {}

    private:
        typename Exec::vector out_, dx_;
    };
};

}  // namespace batchwise
