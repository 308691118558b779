// Element-wise activation layers (ReLU, Sigmoid, Tanh). Each is a pair of functors, forward on
// x and backward on the saved output y, plugged into one shared layer template.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "batchwise/exec/dense_epilogue.hpp"
#include "batchwise/layers/layer.hpp"

namespace batchwise {

namespace detail {

struct relu_fn {
    static constexpr std::string_view name = "ReLU";
    /// A GEMM epilogue can apply it (cuBLASLt's RELU_BIAS): Sequential fuses a Dense before it.
    static constexpr epilogue_activation epilogue = epilogue_activation::relu;
    BATCHWISE_HOST_DEVICE static float forward(float x) { return x > 0.0f ? x : 0.0f; }
    // Derivative from the output: y > 0 exactly where x > 0.
    BATCHWISE_HOST_DEVICE static float derivative(float y) { return y > 0.0f ? 1.0f : 0.0f; }
    // A select, not dy * derivative: GCC turns that product into a branch (under the default
    // -ftrapping-math it may not speculate the multiply), which neither vectorises nor predicts
    // on random signs. Measured: +23-31% mlp-bench samples/s at batch 32-512 (1 thread).
    BATCHWISE_HOST_DEVICE static float backward(float y, float dy) { return y > 0.0f ? dy : 0.0f; }
};

struct sigmoid_fn {
    static constexpr std::string_view name = "Sigmoid";
    BATCHWISE_HOST_DEVICE static float forward(float x) {
        // Split by sign so exp never overflows.
        if (x >= 0.0f) return 1.0f / (1.0f + std::exp(-x));
        const float e = std::exp(x);
        return e / (1.0f + e);
    }
    BATCHWISE_HOST_DEVICE static float derivative(float y) { return y * (1.0f - y); }
};

struct tanh_fn {
    static constexpr std::string_view name = "Tanh";
    BATCHWISE_HOST_DEVICE static float forward(float x) { return std::tanh(x); }
    BATCHWISE_HOST_DEVICE static float derivative(float y) { return 1.0f - y * y; }
};

template <class Fn>
struct activation_forward {
    const float* x;
    float* y;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const { y[i] = Fn::forward(x[i]); }
};


/// Shape-preserving layer with no variables, applying Fn element by element.
template <class Fn>
struct elementwise_activation {
    static constexpr std::string_view name = Fn::name;

    template <class In>
    static constexpr bool accepts = true;
    template <class In>
    using requirement = any_shape;
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
        // The output buffer, for a forward that cannot run over its input. The input gradient
        // needs none: it is written over dy.
        static constexpr std::size_t buffer_floats(std::size_t rows, bool) { return rows * In::size; }
        /// Sequential runs forward_in_place, and reserves nothing, after a layer whose output is
        /// scratch (see LayerImpl in docs/concepts.md): the output then costs no memory and the
        /// pass touches one array instead of two.
        static constexpr bool computes_in_place = true;
        /// The element-wise function, for a layer before that can apply it in its own forward
        /// (ActivationFusingLayer): this layer's forward is then skipped.
        using activation_function = Fn;

        void initialize(std::uint64_t, std::uint32_t) {}
        void reserve(std::size_t rows, bool) { Exec::reserve(out_, rows * In::size); }
        const_matrix_view forward(const_matrix_view x, const pass_context&) {
            const matrix_view y{Exec::data(out_), x.rows, x.cols};
            Exec::for_each(x.size(), activation_forward<Fn>{x.data, y.data});
            return y;
        }
        const_matrix_view forward_in_place(matrix_view x, const pass_context&) {
            Exec::for_each(x.size(), activation_forward<Fn>{x.data, x.data});
            return x;
        }
        const_matrix_view backward(const_matrix_view, const_matrix_view y, const_matrix_view dy,
                                   bool need_dx, bool) {
            if (!need_dx) return {};
            // dy is the network's scratch, read by nothing after this layer (LayerImpl's
            // contract), so the input gradient goes over it: no buffer, and a cache-warm array.
            const matrix_view dx{const_cast<float*>(dy.data), y.rows, y.cols};
            Exec::for_each(y.size(), activation_backward<Fn>{y.data, dy.data, dx.data});
            return dx;
        }
        template <class F>
        void for_each_variable(F&&) {}

    private:
        typename Exec::vector out_;
    };
};

}  // namespace detail

/// max(x, 0).
struct ReLU : detail::elementwise_activation<detail::relu_fn> {};
/// 1 / (1 + exp(-x)).
struct Sigmoid : detail::elementwise_activation<detail::sigmoid_fn> {};
/// tanh(x).
struct Tanh : detail::elementwise_activation<detail::tanh_fn> {};

}  // namespace batchwise
