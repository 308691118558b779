// What a policy's fused Dense operations apply after the product: the bias and an activation
// (a GEMM epilogue under cuBLASLt), and the element-wise passes that do the same work where the
// product cannot (cpu_blas, thrust_host, a shape cuBLASLt refuses).
#pragma once

#include <concepts>
#include <cstddef>

#include "batchwise/core/config.hpp"

namespace batchwise {

/// The activation a GEMM epilogue can apply, named by the activation's functor
/// (relu_fn::epilogue): what cuBLASLt's CUBLASLT_EPILOGUE_* maps it to.
enum class epilogue_activation { none, relu };

/// A fused Dense forward without an activation: y = x W + b.
struct no_activation {
    /// No epilogue beyond the bias.
    static constexpr epilogue_activation epilogue = epilogue_activation::none;
    /// The identity.
    BATCHWISE_HOST_DEVICE static float forward(float x) { return x; }
};

/// An element-wise functor (forward(float)) that a policy's fused Dense forward may apply:
/// one a GEMM epilogue implements.
template <class Fn>
concept EpilogueActivation = requires(float x) {
    { Fn::epilogue } -> std::convertible_to<epilogue_activation>;
    { Fn::forward(x) } -> std::convertible_to<float>;
};

namespace detail {

/// Writes the bias into every row of the output, which the forward GEMM then adds to (beta = 1).
struct copy_row_vector {
    float* out;
    const float* vec;
    std::size_t cols;
    // One row per call: a contiguous inner loop vectorises; an index i % cols per element does not.
    BATCHWISE_HOST_DEVICE void operator()(std::size_t r) const {
        float* row = out + r * cols;
        for (std::size_t j = 0; j < cols; ++j) row[j] = vec[j];
    }
};

/// dx = dy times the activation's derivative at its output y (an activation layer's backward;
/// also the fused input gradient of the Dense after it, dense_input_grad).
template <class Fn>
struct activation_backward {
    const float* y;
    const float* dy;
    float* dx;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        if constexpr (requires { Fn::backward(0.0f, 0.0f); }) {
            dx[i] = Fn::backward(y[i], dy[i]);
        } else {
            dx[i] = dy[i] * Fn::derivative(y[i]);
        }
    }
};

/// y = Fn(y): the same arithmetic as the activation layer's own in-place pass, so that a fused
/// forward without an epilogue gives the unfused result bit for bit.
template <class Fn>
struct activate_in_place {
    float* y;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const { y[i] = Fn::forward(y[i]); }
};

}  // namespace detail

}  // namespace batchwise
