// Dense (fully connected) layer: y = x W + b with W stored (in, out) as Keras stores its kernel,
// so saved weights read the same in both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "batchwise/exec/capabilities.hpp"
#include "batchwise/layers/bias.hpp"
#include "batchwise/layers/initializers.hpp"
#include "batchwise/layers/layer.hpp"

namespace batchwise {

/// Keras's Dense(units): y = x W + b on vector samples, W stored (in, out). Options, in any
/// order: no_bias, and an initializer for the kernel (glorot_uniform by default, he_uniform,
/// he_normal).
template <std::size_t Units, class... Options>
struct Dense {
    static_assert(Units > 0, "Dense<units> needs at least one unit.");
    static_assert(((std::is_same_v<Options, no_bias> || Initializer<Options>) && ...),
                  "Dense<units, options...>: each option must be batchwise::no_bias or an "
                  "initializer such as batchwise::he_uniform.");

    /// The Keras class name, shown by summary(); layer and weight names are its snake_case form.
    static constexpr std::string_view name = "Dense";
    /// The length of the output vector.
    static constexpr std::size_t units = Units;
    /// Whether it adds a bias: true unless no_bias is given.
    static constexpr bool use_bias = !(std::is_same_v<Options, no_bias> || ...);
    /// The kernel's initializer: the one given, or glorot_uniform.
    using initializer = typename detail::pick_initializer<glorot_uniform, Options...>::type;

    /// Takes vectors only (rank 1): an image needs a Flatten before it.
    template <class In>
    static constexpr bool accepts = In::rank == 1;
    /// What a shape-mismatch diagnostic says it needs: a shape of rank 1.
    template <class In>
    using requirement = any_shape_of_rank<1>;
    /// A vector of Units.
    template <class In>
    using output = shape<Units>;

    template <class In, ExecutionPolicy Exec>
    class impl {
    public:
        static constexpr std::size_t in_features = In::size;
        static constexpr std::size_t out_features = Units;
        static constexpr std::size_t trainable_count = in_features * Units + (use_bias ? Units : 0);
        static constexpr std::size_t non_trainable_count = 0;
        static constexpr std::size_t state_floats = 2 * trainable_count;
        static constexpr std::size_t buffer_floats(std::size_t rows, bool need_dx) {
            return rows * Units + (need_dx ? rows * in_features : 0) + mask_floats(rows);
        }
        /// The output is this layer's own buffer and backward does not read it: the layer after
        /// may compute over it in place (an activation's forward_in_place).
        static constexpr bool output_is_scratch = true;

        impl() {
            Exec::reserve(kernel_, in_features * Units);
            Exec::reserve(kernel_grad_, in_features * Units);
            if constexpr (use_bias) {
                Exec::reserve(bias_, Units);
                Exec::reserve(bias_grad_, Units);
            }
        }

        void initialize(std::uint64_t s, std::uint32_t index) {
            const auto w = initial_kernel<initializer>(s, index, in_features, Units);
            Exec::from_host(w.data(), w.size(), Exec::data(kernel_));
            if constexpr (use_bias) Exec::fill(Exec::data(bias_), Units, 0.0f);
        }

        void reserve(std::size_t rows, bool need_dx) {
            Exec::reserve(out_, rows * Units);
            if (need_dx) Exec::reserve(dx_, rows * in_features);
            if (mask_floats(rows) != 0) Exec::reserve(mask_, mask_floats(rows));
        }

        const_matrix_view forward(const_matrix_view x, const pass_context& ctx) {
            if constexpr (FusedDensePolicy<Exec>) {
                return forward_activated<no_activation>(x, ctx);
            } else {
                const matrix_view y{Exec::data(out_), x.rows, Units};
                // The bias goes in first and the GEMM accumulates onto it: one pass over the
                // output instead of two, since a GEMM with beta = 0 clears its output in a pass
                // of its own.
                if constexpr (use_bias) {
                    Exec::for_each(y.rows, detail::copy_row_vector{y.data, Exec::data(bias_), Units});
                }
                Exec::gemm(transpose::no, transpose::no, 1.0f, x, kernel(), use_bias ? 1.0f : 0.0f, y);
                return y;
            }
        }

        /// forward() and then the activation Fn over the output, in one call of the policy (a
        /// GEMM epilogue under cuda): Sequential runs it for a Dense directly followed by a ReLU,
        /// whose own forward then does nothing (FusedDensePolicy).
        template <class Fn>
            requires FusesActivation<Exec, Fn>
        const_matrix_view forward_activated(const_matrix_view x, const pass_context&) {
            const matrix_view y{Exec::data(out_), x.rows, Units};
            const float* bias = use_bias ? Exec::data(bias_) : nullptr;
            if constexpr (FusesActivationGradient<Exec, Fn>) {
                // Where Fn's derivative is zero, for the input gradient of the Dense after Fn.
                void* mask = mask_floats(x.rows) != 0 ? Exec::data(mask_) : nullptr;
                mask_at_ = Exec::template dense_forward<Fn>(x, kernel(), bias, y, mask) ? mask : nullptr;
            } else {
                Exec::template dense_forward<Fn>(x, kernel(), bias, y);
            }
            return y;
        }
        /// What the last forward_activated wrote of its activation's derivative for the Dense
        /// after it (dense_input_grad), or null.
        [[nodiscard]] const void* activation_mask() const { return mask_at_; }

        const_matrix_view backward(const_matrix_view x, const_matrix_view, const_matrix_view dy,
                                   bool need_dx, bool accumulate) {
            weight_gradients(x, dy, accumulate);
            if (!need_dx) return {};
            const matrix_view dx{Exec::data(dx_), x.rows, in_features};
            Exec::gemm(transpose::no, transpose::yes, 1.0f, dy, kernel(), 0.0f, dx);
            return dx;
        }

        /// backward() with the input gradient taken through the activation Fn before this layer
        /// (`activated`, its output; `mask`, what the Dense before it wrote of it, or null): one
        /// call, a DRELU epilogue under cuda, and Fn's own backward is skipped (Sequential).
        template <class Fn>
            requires FusesActivationGradient<Exec, Fn>
        const_matrix_view backward_through(const_matrix_view x, const_matrix_view, const_matrix_view dy,
                                           bool accumulate, const_matrix_view activated, const void* mask) {
            weight_gradients(x, dy, accumulate);
            const matrix_view dx{Exec::data(dx_), x.rows, in_features};
            Exec::template dense_input_grad<Fn>(dy, kernel(), activated.data, mask, dx);
            return dx;
        }

        /// The variable backward_and_update updates in place of computing its gradient.
        static constexpr std::string_view variable_updated_in_gemm = "kernel";

        /// backward() with the optimizer step of the kernel folded into its gradient GEMM. The
        /// input gradient is taken first, from the kernel before the step; the bias gradient is
        /// left for the optimizer as usual.
        const_matrix_view backward_and_update(const_matrix_view x, const_matrix_view, const_matrix_view dy,
                                              bool need_dx, const update_in_gemm& u) {
            matrix_view dx{};
            if (need_dx) {
                dx = {Exec::data(dx_), x.rows, in_features};
                Exec::gemm(transpose::no, transpose::yes, 1.0f, dy, kernel(), 0.0f, dx);
            }
            Exec::gemm(transpose::yes, transpose::no, u.alpha, x, dy, u.beta,
                       matrix_view{Exec::data(kernel_), in_features, Units});
            if constexpr (use_bias) Exec::column_sums(dy, Exec::data(bias_grad_), 0.0f);
            return dx;
        }

        template <class F>
        void for_each_variable(F&& f) {
            f(variable_ref{"kernel", Exec::data(kernel_), Exec::data(kernel_grad_), in_features,
                           Units});
            if constexpr (use_bias) {
                f(variable_ref{"bias", Exec::data(bias_), Exec::data(bias_grad_), Units, 0});
            }
        }

    private:
        /// Floats of the activation mask a fused forward keeps for `rows` samples (0 on a policy
        /// that keeps none).
        static constexpr std::size_t mask_floats(std::size_t rows) {
            return (detail::activation_mask_bytes<Exec>(rows, Units) + sizeof(float) - 1) / sizeof(float);
        }

        void weight_gradients(const_matrix_view x, const_matrix_view dy, bool accumulate) {
            const float beta = accumulate ? 1.0f : 0.0f;
            const matrix_view dw{Exec::data(kernel_grad_), in_features, Units};
            // The fused call overwrites the bias gradient (an epilogue cannot add to it), so a
            // micro-batch that accumulates takes the two calls.
            if constexpr (use_bias && FusedDensePolicy<Exec>) {
                if (!accumulate) {
                    Exec::dense_weight_grad(x, dy, dw, Exec::data(bias_grad_));
                } else {
                    Exec::gemm(transpose::yes, transpose::no, 1.0f, x, dy, beta, dw);
                    Exec::column_sums(dy, Exec::data(bias_grad_), beta);
                }
            } else {
                Exec::gemm(transpose::yes, transpose::no, 1.0f, x, dy, beta, dw);
                if constexpr (use_bias) Exec::column_sums(dy, Exec::data(bias_grad_), beta);
            }
        }

        [[nodiscard]] const_matrix_view kernel() const {
            return {Exec::data(kernel_), in_features, Units};
        }

        typename Exec::vector kernel_, kernel_grad_, bias_, bias_grad_, out_, dx_, mask_;
        void* mask_at_ = nullptr;
    };
};

}  // namespace batchwise
