// Pooling over channels-last (NHWC) samples, as Keras's MaxPooling2D, AveragePooling2D and
// GlobalAveragePooling2D. Gradients are gathered, one input pixel per index, from the windows
// that cover it, so that overlapping windows need no atomic adds and every policy sums alike.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "batchwise/layers/layer.hpp"
#include "batchwise/layers/spatial.hpp"

namespace batchwise {

namespace detail {

/// The output rows (or columns) whose windows cover input row `i`: [first, last].
struct covering_range {
    std::size_t first = 1, last = 0;  // empty by default
    BATCHWISE_HOST_DEVICE static covering_range of(std::size_t i, std::size_t pad, std::size_t pool,
                                                   std::size_t stride, std::size_t outputs) {
        // Window o covers [o s - pad, o s - pad + pool): o s <= i + pad and o s > i + pad - pool.
        const std::size_t shifted = i + pad;
        covering_range r;
        r.first = shifted + 1 > pool ? (shifted + 1 - pool + stride - 1) / stride : 0;
        r.last = shifted / stride;
        if (r.last >= outputs) r.last = outputs - 1;
        return r;
    }
};

/// f(pixel, tap) for every tap of output position p of sample n that falls inside the image, in
/// tap order: `pixel` points at the channels of the input pixel, tap = ki kernel_w + kj.
template <class F>
BATCHWISE_HOST_DEVICE void for_each_tap_inside(const window_geometry& g, const float* x, std::size_t n, std::size_t p,
                                               F&& f) {
    for (std::size_t ki = 0; ki < g.kernel_h; ++ki) {
        const std::ptrdiff_t ih = g.input_row(p / g.out_w, ki);
        if (ih < 0) continue;
        for (std::size_t kj = 0; kj < g.kernel_w; ++kj) {
            const std::ptrdiff_t iw = g.input_col(p % g.out_w, kj);
            if (iw < 0) continue;
            f(x + ((n * g.in_h + static_cast<std::size_t>(ih)) * g.in_w + static_cast<std::size_t>(iw)) * g.channels,
              ki * g.kernel_w + kj);
        }
    }
}

/// f(output, tap) for every window that covers input pixel i = (n, ih, iw), in output order:
/// `output` indexes the window's first channel in the output, `tap` is where the pixel sits in it.
template <class F>
BATCHWISE_HOST_DEVICE void for_each_covering_window(const window_geometry& g, std::size_t i, F&& f) {
    const std::size_t iw = i % g.in_w, ih = (i / g.in_w) % g.in_h, n = i / (g.in_w * g.in_h);
    const covering_range rows = covering_range::of(ih, g.pad_top, g.kernel_h, g.stride_h, g.out_h);
    const covering_range cols = covering_range::of(iw, g.pad_left, g.kernel_w, g.stride_w, g.out_w);
    for (std::size_t oh = rows.first; oh <= rows.last; ++oh) {
        for (std::size_t ow = cols.first; ow <= cols.last; ++ow) {
            f((n * g.positions() + oh * g.out_w + ow) * g.channels,
              (ih + g.pad_top - oh * g.stride_h) * g.kernel_w + iw + g.pad_left - ow * g.stride_w);
        }
    }
}

/// Per (n, output position): each channel's largest input in the window (padding never wins)
/// and the tap it came from, kept for backward. The first largest wins a tie.
struct max_pool_forward {
    const float* x;
    float* y;
    float* tap;
    window_geometry g;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t c = g.channels;
        float* out = y + i * c;
        float* from = tap + i * c;
        bool first = true;
        for_each_tap_inside(g, x, i / g.positions(), i % g.positions(), [&](const float* pixel, std::size_t t) {
            for (std::size_t k = 0; k < c; ++k) {
                if (first || pixel[k] > out[k]) {
                    out[k] = pixel[k];
                    from[k] = static_cast<float>(t);
                }
            }
            first = false;
        });
    }
};

/// Per input pixel: the gradients of the windows whose maximum it was.
struct max_pool_backward {
    const float* dy;
    const float* tap;
    float* dx;
    window_geometry g;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t c = g.channels;
        float* out = dx + i * c;
        for (std::size_t k = 0; k < c; ++k) out[k] = 0.0f;
        for_each_covering_window(g, i, [&](std::size_t o, std::size_t t) {
            const auto at = static_cast<float>(t);
            for (std::size_t k = 0; k < c; ++k) out[k] += tap[o + k] == at ? dy[o + k] : 0.0f;
        });
    }
};

/// Input pixels along one axis of the window starting at output `o`, padding excluded.
BATCHWISE_HOST_DEVICE inline std::size_t window_span(std::size_t o, std::size_t stride, std::size_t pad,
                                                     std::size_t pool, std::size_t in) {
    const auto begin = static_cast<std::ptrdiff_t>(o * stride) - static_cast<std::ptrdiff_t>(pad);
    const std::ptrdiff_t end = begin + static_cast<std::ptrdiff_t>(pool);
    const std::ptrdiff_t b = begin < 0 ? 0 : begin;
    const std::ptrdiff_t e = end > static_cast<std::ptrdiff_t>(in) ? static_cast<std::ptrdiff_t>(in) : end;
    return static_cast<std::size_t>(e - b);
}

/// Input pixels in the window of output position p, padding excluded (TensorFlow's average
/// ignores padding).
BATCHWISE_HOST_DEVICE inline std::size_t window_count(const window_geometry& g, std::size_t p) {
    return window_span(p / g.out_w, g.stride_h, g.pad_top, g.kernel_h, g.in_h) *
           window_span(p % g.out_w, g.stride_w, g.pad_left, g.kernel_w, g.in_w);
}

struct average_pool_forward {
    const float* x;
    float* y;
    window_geometry g;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t c = g.channels, p = i % g.positions();
        float* out = y + i * c;
        for (std::size_t k = 0; k < c; ++k) out[k] = 0.0f;
        for_each_tap_inside(g, x, i / g.positions(), p, [&](const float* pixel, std::size_t) {
            for (std::size_t k = 0; k < c; ++k) out[k] += pixel[k];
        });
        const float inv = 1.0f / static_cast<float>(window_count(g, p));
        for (std::size_t k = 0; k < c; ++k) out[k] *= inv;
    }
};

struct average_pool_backward {
    const float* dy;
    float* dx;
    window_geometry g;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t c = g.channels;
        float* out = dx + i * c;
        for (std::size_t k = 0; k < c; ++k) out[k] = 0.0f;
        for_each_covering_window(g, i, [&](std::size_t o, std::size_t) {
            const float inv = 1.0f / static_cast<float>(window_count(g, (o / c) % g.positions()));
            for (std::size_t k = 0; k < c; ++k) out[k] += dy[o + k] * inv;
        });
    }
};

/// Per (n, channel): the mean over the sample's positions.
struct global_average_forward {
    const float* x;
    float* y;
    std::size_t positions, channels;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t n = i / channels, c = i % channels;
        const float* src = x + n * positions * channels + c;
        float s = 0.0f;
        for (std::size_t p = 0; p < positions; ++p) s += src[p * channels];
        y[i] = s / static_cast<float>(positions);
    }
};

struct global_average_backward {
    const float* dy;
    float* dx;
    std::size_t positions, channels;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t n = i / (positions * channels), c = i % channels;
        dx[i] = dy[n * channels + c] / static_cast<float>(positions);
    }
};

struct max_pool_kind {};
struct average_pool_kind {};

template <class T>
inline constexpr bool is_pool_option_v =
    std::is_same_v<T, same_padding> || std::is_same_v<T, valid_padding> || is_pair_option_v<strides, T>;

/// MaxPooling2D and AveragePooling2D: windows of PoolH x PoolW every `strides` (the pool size by
/// default, as in Keras), valid_padding by default.
template <class Kind, std::size_t PoolH, std::size_t PoolW, class... Options>
struct pooling_2d {
    static_assert(PoolH > 0 && PoolW > 0, "Pooling2D<pool_h, pool_w>: the pool must not be empty.");
    static_assert((is_pool_option_v<Options> && ...),
                  "Pooling2D<pool_h, pool_w, options...>: each option must be batchwise::strides<v, h>, "
                  "same_padding or valid_padding.");
    static_assert(count_pair_options<strides, Options...> <= 1 && count_padding_options<Options...> <= 1,
                  "Pooling2D: give strides and padding at most once each.");
    static constexpr std::array<std::size_t, 2> stride = pair_option_value<strides, Options...>({PoolH, PoolW});
    static constexpr bool same = pads_same<Options...>;

    template <class In>
    static constexpr bool accepts = window_fits<In>(PoolH, PoolW, same);
    template <class In>
    using requirement = std::conditional_t<same, any_shape_of_rank<3>, any_image_at_least<PoolH, PoolW>>;
    template <class In>
    using output = shape<output_extent(In::dims[0], PoolH, stride[0], same),
                         output_extent(In::dims[1], PoolW, stride[1], same), In::dims[2]>;

    template <class In, ExecutionPolicy Exec>
    class impl {
        static constexpr window_geometry geometry = make_window_geometry<In>(PoolH, PoolW, stride, {1, 1}, same);
        static constexpr bool is_max = std::is_same_v<Kind, max_pool_kind>;

    public:
        static constexpr std::size_t in_features = In::size;
        static constexpr std::size_t out_features = geometry.positions() * geometry.channels;
        static constexpr std::size_t trainable_count = 0;
        static constexpr std::size_t non_trainable_count = 0;
        static constexpr std::size_t state_floats = 0;
        /// The output, the winning taps (max), and dx.
        static constexpr std::size_t buffer_floats(std::size_t rows, bool need_dx) {
            return rows * out_features * (is_max ? 2 : 1) + (need_dx ? rows * in_features : 0);
        }
        static constexpr bool output_is_scratch = true;

        void initialize(std::uint64_t, std::uint32_t) {}
        void reserve(std::size_t rows, bool need_dx) {
            Exec::reserve(out_, rows * out_features);
            if constexpr (is_max) Exec::reserve(tap_, rows * out_features);
            if (need_dx) Exec::reserve(dx_, rows * in_features);
        }

        const_matrix_view forward(const_matrix_view x, const pass_context&) {
            const std::size_t n = x.rows * geometry.positions();
            if constexpr (is_max) {
                Exec::for_each(n, max_pool_forward{x.data, Exec::data(out_), Exec::data(tap_), geometry});
            } else {
                Exec::for_each(n, average_pool_forward{x.data, Exec::data(out_), geometry});
            }
            return {Exec::data(out_), x.rows, out_features};
        }

        const_matrix_view backward(const_matrix_view, const_matrix_view, const_matrix_view dy, bool need_dx, bool) {
            if (!need_dx) return {};
            const std::size_t n = dy.rows * geometry.in_h * geometry.in_w;
            if constexpr (is_max) {
                Exec::for_each(n, max_pool_backward{dy.data, Exec::data(tap_), Exec::data(dx_), geometry});
            } else {
                Exec::for_each(n, average_pool_backward{dy.data, Exec::data(dx_), geometry});
            }
            return {Exec::data(dx_), dy.rows, in_features};
        }

        template <class F>
        void for_each_variable(F&&) {}

    private:
        typename Exec::vector out_, tap_, dx_;
    };
};

}  // namespace detail

/// Keras's MaxPooling2D(pool_size, strides, padding): each channel's largest value per window.
template <std::size_t PoolH = 2, std::size_t PoolW = PoolH, class... Options>
struct MaxPooling2D : detail::pooling_2d<detail::max_pool_kind, PoolH, PoolW, Options...> {
    /// The Keras class name, shown by summary(); layer and weight names are its snake_case form.
    static constexpr std::string_view name = "MaxPooling2D";
};

/// Keras's AveragePooling2D: each channel's mean per window, over the real pixels only.
template <std::size_t PoolH = 2, std::size_t PoolW = PoolH, class... Options>
struct AveragePooling2D : detail::pooling_2d<detail::average_pool_kind, PoolH, PoolW, Options...> {
    /// The Keras class name, shown by summary(); layer and weight names are its snake_case form.
    static constexpr std::string_view name = "AveragePooling2D";
};

/// Keras's GlobalAveragePooling2D: (height, width, channels) to (channels,), each the mean.
struct GlobalAveragePooling2D {
    /// The Keras class name, shown by summary(); layer and weight names are its snake_case form.
    static constexpr std::string_view name = "GlobalAveragePooling2D";
    /// Takes (height, width, channels) samples only.
    template <class In>
    static constexpr bool accepts = In::rank == 3;
    /// What a shape-mismatch diagnostic says it needs: a shape of rank 3.
    template <class In>
    using requirement = any_shape_of_rank<3>;
    /// (channels,): one mean per channel.
    template <class In>
    using output = shape<In::dims[2]>;

    template <class In, ExecutionPolicy Exec>
    class impl {
        static constexpr std::size_t channels = In::dims[2];
        static constexpr std::size_t positions = In::size / channels;

    public:
        static constexpr std::size_t in_features = In::size;
        static constexpr std::size_t out_features = channels;
        static constexpr std::size_t trainable_count = 0;
        static constexpr std::size_t non_trainable_count = 0;
        static constexpr std::size_t state_floats = 0;
        static constexpr std::size_t buffer_floats(std::size_t rows, bool need_dx) {
            return rows * channels + (need_dx ? rows * in_features : 0);
        }
        static constexpr bool output_is_scratch = true;

        void initialize(std::uint64_t, std::uint32_t) {}
        void reserve(std::size_t rows, bool need_dx) {
            Exec::reserve(out_, rows * channels);
            if (need_dx) Exec::reserve(dx_, rows * in_features);
        }
        const_matrix_view forward(const_matrix_view x, const pass_context&) {
            Exec::for_each(x.rows * channels, detail::global_average_forward{x.data, Exec::data(out_), positions, channels});
            return {Exec::data(out_), x.rows, channels};
        }
        const_matrix_view backward(const_matrix_view, const_matrix_view, const_matrix_view dy, bool need_dx, bool) {
            if (!need_dx) return {};
            Exec::for_each(dy.rows * in_features,
                           detail::global_average_backward{dy.data, Exec::data(dx_), positions, channels});
            return {Exec::data(dx_), dy.rows, in_features};
        }
        template <class F>
        void for_each_variable(F&&) {}

    private:
        typename Exec::vector out_, dx_;
    };
};

}  // namespace batchwise
