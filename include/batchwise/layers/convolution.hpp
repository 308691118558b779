// Conv2D over channels-last (NHWC) samples, as Keras's Conv2D: each output position is the dot
// product of its window with the kernel, kernel stored (kh, kw, in, filters) as Keras stores it.
// The layer lowers to the policy's GEMM: the windows of a micro-batch are gathered into rows
// (im2col, a functor any policy runs), multiplied by the kernel in one GEMM, and the input
// gradient is scattered back by the inverse gather, one input pixel per index, so that every
// policy sums in the same order and no two indices write the same memory.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "batchwise/layers/bias.hpp"
#include "batchwise/layers/initializers.hpp"
#include "batchwise/layers/layer.hpp"
#include "batchwise/layers/spatial.hpp"

namespace batchwise {

namespace detail {

/// Row (n, p) of the window matrix, one index per row: for each tap (ki, kj) in turn, the
/// channels of the input pixel the tap of output position p reads, or zeros where it falls in
/// the padding. A row per index keeps the index arithmetic (divisions) out of the inner loops.
struct im2col {
    const float* x;
    float* col;
    window_geometry g;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t row) const {
        const std::size_t positions = g.positions(), c = g.channels;
        const std::size_t p = row % positions, n = row / positions;
        const std::size_t oh = p / g.out_w, ow = p % g.out_w;
        const float* image = x + n * g.in_h * g.in_w * c;
        float* dst = col + row * g.taps() * c;
        for (std::size_t ki = 0; ki < g.kernel_h; ++ki) {
            const std::ptrdiff_t ih = g.input_row(oh, ki);
            for (std::size_t kj = 0; kj < g.kernel_w; ++kj, dst += c) {
                const std::ptrdiff_t iw = g.input_col(ow, kj);
                if (ih < 0 || iw < 0) {
                    for (std::size_t k = 0; k < c; ++k) dst[k] = 0.0f;
                    continue;
                }
                const float* src = image + (static_cast<std::size_t>(ih) * g.in_w + static_cast<std::size_t>(iw)) * c;
                for (std::size_t k = 0; k < c; ++k) dst[k] = src[k];
            }
        }
    }
};

/// The inverse of im2col for gradients: input pixel i = (n, ih, iw) sums, over the taps that
/// read it, the rows of the window-matrix gradient `dcol`, in tap order.
struct col2im {
    const float* dcol;
    float* dx;
    window_geometry g;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t c = g.channels, taps = g.taps();
        const std::size_t iw = i % g.in_w, ih = (i / g.in_w) % g.in_h, n = i / (g.in_w * g.in_h);
        float* out = dx + i * c;
        for (std::size_t k = 0; k < c; ++k) out[k] = 0.0f;
        for (std::size_t ki = 0; ki < g.kernel_h; ++ki) {
            const std::ptrdiff_t oh = g.output_row(ih, ki);
            if (oh < 0) continue;
            for (std::size_t kj = 0; kj < g.kernel_w; ++kj) {
                const std::ptrdiff_t ow = g.output_col(iw, kj);
                if (ow < 0) continue;
                const std::size_t row =
                    n * g.positions() + static_cast<std::size_t>(oh) * g.out_w + static_cast<std::size_t>(ow);
                const float* src = dcol + (row * taps + ki * g.kernel_w + kj) * c;
                for (std::size_t k = 0; k < c; ++k) out[k] += src[k];
            }
        }
    }
};

template <class T>
inline constexpr bool is_conv_option_v = Initializer<T> || std::is_same_v<T, no_bias> ||
                                         std::is_same_v<T, same_padding> || std::is_same_v<T, valid_padding> ||
                                         is_pair_option_v<strides, T> || is_pair_option_v<dilation, T>;

}  // namespace detail

/// Keras's Conv2D(filters, (kernel_h, kernel_w), ...) on (height, width, channels) samples.
/// Options, in any order, at most one of each kind: strides<v, h>, dilation<v, h>, same_padding
/// or valid_padding (the default), no_bias, and an initializer (glorot_uniform by default).
template <std::size_t Filters, std::size_t KernelH, std::size_t KernelW = KernelH, class... Options>
struct Conv2D {
    static_assert(Filters > 0, "Conv2D<filters, kernel_h, kernel_w> needs at least one filter.");
    static_assert(KernelH > 0 && KernelW > 0, "Conv2D<filters, kernel_h, kernel_w>: the kernel must not be empty.");
    static_assert((detail::is_conv_option_v<Options> && ...),
                  "Conv2D<filters, kh, kw, options...>: each option must be batchwise::strides<v, h>, "
                  "dilation<v, h>, same_padding, valid_padding, no_bias or an initializer such as he_uniform.");
    static_assert(detail::count_pair_options<strides, Options...> <= 1 &&
                      detail::count_pair_options<dilation, Options...> <= 1 &&
                      detail::count_padding_options<Options...> <= 1,
                  "Conv2D: give strides, dilation and padding at most once each.");

    /// The Keras class name, shown by summary(); layer and weight names are its snake_case form.
    static constexpr std::string_view name = "Conv2D";
    /// Output channels, one per filter.
    static constexpr std::size_t filters = Filters;
    /// Vertical and horizontal stride, from strides<v, h> (1, 1 by default).
    static constexpr std::array<std::size_t, 2> stride = detail::pair_option_value<strides, Options...>({1, 1});
    /// Vertical and horizontal dilation, from dilation<v, h> (1, 1 by default).
    static constexpr std::array<std::size_t, 2> dilations = detail::pair_option_value<dilation, Options...>({1, 1});
    /// Whether the padding is same_padding (each output extent is ceil(input / stride));
    /// valid_padding by default.
    static constexpr bool same = detail::pads_same<Options...>;
    /// Whether it adds a bias per filter: true unless no_bias is given.
    static constexpr bool use_bias = !(std::is_same_v<Options, no_bias> || ...);
    /// The kernel's initializer: the one given, or glorot_uniform.
    using initializer = typename detail::pick_initializer<glorot_uniform, Options...>::type;
    /// How many rows one window reaches over, dilation included.
    static constexpr std::size_t span_h = (KernelH - 1) * dilations[0] + 1;
    /// How many columns one window reaches over, dilation included.
    static constexpr std::size_t span_w = (KernelW - 1) * dilations[1] + 1;

    /// Takes (height, width, channels) samples that the window fits in, or any with
    /// same_padding.
    template <class In>
    static constexpr bool accepts = detail::window_fits<In>(span_h, span_w, same);
    /// What a shape-mismatch diagnostic says it needs: rank 3, and with valid padding an image
    /// at least as large as the window's span.
    template <class In>
    using requirement = std::conditional_t<same, any_shape_of_rank<3>, any_image_at_least<span_h, span_w>>;
    /// (output height, output width, Filters), the extents set by padding and stride.
    template <class In>
    using output = shape<detail::output_extent(In::dims[0], span_h, stride[0], same),
                         detail::output_extent(In::dims[1], span_w, stride[1], same), Filters>;

    template <class In, ExecutionPolicy Exec>
    class impl {
        static constexpr detail::window_geometry geometry =
            detail::make_window_geometry<In>(KernelH, KernelW, stride, dilations, same);
        static constexpr std::size_t channels = In::dims[2];
        static constexpr std::size_t positions = geometry.positions();
        /// Inputs one output value depends on: a row of the window matrix.
        static constexpr std::size_t patch = KernelH * KernelW * channels;
        /// A 1 x 1 kernel with unit strides reads every pixel once, in place: the input is already
        /// the window matrix, and no gather is needed either way.
        static constexpr bool pointwise = KernelH == 1 && KernelW == 1 && stride[0] == 1 && stride[1] == 1;

    public:
        static constexpr std::size_t in_features = In::size;
        static constexpr std::size_t out_features = positions * Filters;
        static constexpr std::size_t trainable_count = patch * Filters + (use_bias ? Filters : 0);
        static constexpr std::size_t non_trainable_count = 0;
        static constexpr std::size_t state_floats = 2 * trainable_count;
        /// The output, the window matrix (reused for its own gradient in backward) and dx.
        static constexpr std::size_t buffer_floats(std::size_t rows, bool need_dx) {
            return rows * out_features + (pointwise ? 0 : rows * positions * patch) + (need_dx ? rows * in_features : 0);
        }
        static constexpr bool output_is_scratch = true;
        /// The bias gradient is a column sum over samples x positions rows.
        static constexpr std::size_t rows_per_sample = positions;

        impl() {
            Exec::reserve(kernel_, patch * Filters);
            Exec::reserve(kernel_grad_, patch * Filters);
            if constexpr (use_bias) {
                Exec::reserve(bias_, Filters);
                Exec::reserve(bias_grad_, Filters);
            }
        }

        void initialize(std::uint64_t s, std::uint32_t index) {
            const auto w = initial_values<initializer>(s, index, patch * Filters, patch, KernelH * KernelW * Filters);
            Exec::from_host(w.data(), w.size(), Exec::data(kernel_));
            if constexpr (use_bias) Exec::fill(Exec::data(bias_), Filters, 0.0f);
        }

        void reserve(std::size_t rows, bool need_dx) {
            Exec::reserve(out_, rows * out_features);
            if constexpr (!pointwise) Exec::reserve(col_, rows * positions * patch);
            if (need_dx) Exec::reserve(dx_, rows * in_features);
        }

        const_matrix_view forward(const_matrix_view x, const pass_context&) {
            const std::size_t rows = x.rows * positions;
            const matrix_view y{Exec::data(out_), rows, Filters};
            if constexpr (use_bias) Exec::for_each(rows, detail::copy_row_vector{y.data, Exec::data(bias_), Filters});
            Exec::gemm(transpose::no, transpose::no, 1.0f, windows(x), kernel(), use_bias ? 1.0f : 0.0f, y);
            return {y.data, x.rows, out_features};
        }

        // Reads the window matrix the forward pass of the same micro-batch gathered.
        const_matrix_view backward(const_matrix_view x, const_matrix_view, const_matrix_view dy, bool need_dx,
                                   bool accumulate) {
            const float beta = accumulate ? 1.0f : 0.0f;
            const const_matrix_view g{dy.data, dy.rows * positions, Filters};
            const const_matrix_view col = pointwise ? const_matrix_view{x.data, g.rows, patch}
                                                    : const_matrix_view{Exec::data(col_), g.rows, patch};
            Exec::gemm(transpose::yes, transpose::no, 1.0f, col, g, beta,
                       matrix_view{Exec::data(kernel_grad_), patch, Filters});
            if constexpr (use_bias) Exec::column_sums(g, Exec::data(bias_grad_), beta);
            if (!need_dx) return {};
            if constexpr (pointwise) {
                Exec::gemm(transpose::no, transpose::yes, 1.0f, g, kernel(), 0.0f,
                           matrix_view{Exec::data(dx_), g.rows, patch});
            } else {
                // The window matrix is not needed again: its gradient overwrites it.
                Exec::gemm(transpose::no, transpose::yes, 1.0f, g, kernel(), 0.0f,
                           matrix_view{Exec::data(col_), g.rows, patch});
                Exec::for_each(dy.rows * geometry.in_h * geometry.in_w,
                               detail::col2im{Exec::data(col_), Exec::data(dx_), geometry});
            }
            return {Exec::data(dx_), dy.rows, in_features};
        }

        template <class F>
        void for_each_variable(F&& f) {
            f(variable_ref{"kernel", Exec::data(kernel_), Exec::data(kernel_grad_), patch, Filters});
            if constexpr (use_bias) f(variable_ref{"bias", Exec::data(bias_), Exec::data(bias_grad_), Filters, 0});
        }

    private:
        [[nodiscard]] const_matrix_view kernel() const { return {Exec::data(kernel_), patch, Filters}; }

        /// The micro-batch as a (rows x positions, patch) matrix of windows.
        const_matrix_view windows(const_matrix_view x) {
            if constexpr (pointwise) {
                return {x.data, x.rows * positions, patch};
            } else {
                Exec::for_each(x.rows * positions, detail::im2col{x.data, Exec::data(col_), geometry});
                return {Exec::data(col_), x.rows * positions, patch};
            }
        }

        typename Exec::vector kernel_, kernel_grad_, bias_, bias_grad_, out_, col_, dx_;
    };
};

}  // namespace batchwise
