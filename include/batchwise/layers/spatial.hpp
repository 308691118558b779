// What the 2-D layers (Conv2D and the poolings) share: their options (strides, dilation,
// padding), the shape checks they report in diagnostics, and the geometry that places each
// output position's window on a channels-last (NHWC) sample, as Keras and TensorFlow place it.
#pragma once

#include <array>
#include <cstddef>
#include <type_traits>

#include "batchwise/core/config.hpp"
#include "batchwise/core/shape.hpp"

namespace batchwise {

/// Option of Conv2D and the poolings: the step between windows, rows then columns.
template <std::size_t Vertical, std::size_t Horizontal = Vertical>
struct strides {
    static_assert(Vertical > 0 && Horizontal > 0, "strides<vertical, horizontal> must both be positive.");
};

/// Option of Conv2D: the spacing between the kernel's taps (atrous convolution), rows then columns.
template <std::size_t Vertical, std::size_t Horizontal = Vertical>
struct dilation {
    static_assert(Vertical > 0 && Horizontal > 0, "dilation<vertical, horizontal> must both be positive.");
};

/// Option of Conv2D and the poolings: zero padding (or, for max pooling, padding that never wins)
/// so that the output has ceil(input / stride) positions, the extra row or column of padding at
/// the bottom and right, as TensorFlow places it. Keras's padding="same".
struct same_padding {};
/// Option of Conv2D and the poolings: windows only where they fit inside the input (the default,
/// Keras's padding="valid").
struct valid_padding {};

/// Diagnostic descriptor: a (height, width, channels) image of at least MinHeight x MinWidth.
template <std::size_t MinHeight, std::size_t MinWidth>
struct any_image_at_least {};
/// Diagnostic descriptor: a shape whose last axis (its channels) splits into Groups equal groups.
template <std::size_t Groups>
struct any_shape_with_channels_divisible_by {};

namespace detail {

template <class T>
struct pair_option {
    static constexpr bool present = false;
    static constexpr std::array<std::size_t, 2> value{1, 1};
};
template <std::size_t V, std::size_t H>
struct pair_option<strides<V, H>> {
    static constexpr bool present = true;
    static constexpr std::array<std::size_t, 2> value{V, H};
};
template <std::size_t V, std::size_t H>
struct pair_option<dilation<V, H>> {
    static constexpr bool present = true;
    static constexpr std::array<std::size_t, 2> value{V, H};
};

template <template <std::size_t, std::size_t> class Kind, class T>
inline constexpr bool is_pair_option_v = false;
template <template <std::size_t, std::size_t> class Kind, std::size_t V, std::size_t H>
inline constexpr bool is_pair_option_v<Kind, Kind<V, H>> = true;

/// How many of Options are Kind<v, h>.
template <template <std::size_t, std::size_t> class Kind, class... Options>
inline constexpr std::size_t count_pair_options = (std::size_t{is_pair_option_v<Kind, Options>} + ... + 0);

/// The (vertical, horizontal) of the Kind<v, h> among Options, or `fallback`.
template <template <std::size_t, std::size_t> class Kind, class... Options>
constexpr std::array<std::size_t, 2> pair_option_value(std::array<std::size_t, 2> fallback) {
    std::array<std::size_t, 2> r = fallback;
    // if constexpr rather than a ternary fold: nvcc warns that the fold's discarded 0s have no effect.
    ([&] {
        if constexpr (is_pair_option_v<Kind, Options>) r = pair_option<Options>::value;
    }(),
     ...);
    return r;
}

template <class... Options>
inline constexpr std::size_t count_padding_options =
    ((std::size_t{std::is_same_v<Options, same_padding>} + std::size_t{std::is_same_v<Options, valid_padding>}) + ... + 0);
template <class... Options>
inline constexpr bool pads_same = (std::is_same_v<Options, same_padding> || ...);

/// Output positions along one axis of `in`, for a window spanning `span` inputs (a dilated
/// kernel's reach) every `stride`: TensorFlow's rule for both paddings.
constexpr std::size_t output_extent(std::size_t in, std::size_t span, std::size_t stride, bool same) {
    if (same) return (in + stride - 1) / stride;
    return in >= span ? (in - span) / stride + 1 : 0;
}
/// Padding before the first input along one axis: half of what "same" needs, rounded down, so
/// the odd one goes after the last input.
constexpr std::size_t padding_before(std::size_t in, std::size_t span, std::size_t stride, bool same) {
    if (!same) return 0;
    const std::size_t needed = (output_extent(in, span, stride, true) - 1) * stride + span;
    return needed > in ? (needed - in) / 2 : 0;
}

/// Where windows sit on one sample: the input (in_h, in_w, channels), the kernel, its strides,
/// dilation and padding, and the output positions. Passed by value into the functors.
struct window_geometry {
    std::size_t in_h = 0, in_w = 0, channels = 0;
    std::size_t kernel_h = 1, kernel_w = 1;
    std::size_t stride_h = 1, stride_w = 1;
    std::size_t dilation_h = 1, dilation_w = 1;
    std::size_t pad_top = 0, pad_left = 0;
    std::size_t out_h = 0, out_w = 0;

    [[nodiscard]] BATCHWISE_HOST_DEVICE constexpr std::size_t positions() const { return out_h * out_w; }
    [[nodiscard]] BATCHWISE_HOST_DEVICE constexpr std::size_t taps() const { return kernel_h * kernel_w; }
    /// The input row of tap `k` of output row `o`, or -1 when it falls in the padding.
    [[nodiscard]] BATCHWISE_HOST_DEVICE constexpr std::ptrdiff_t input_row(std::size_t o, std::size_t k) const {
        const auto r = static_cast<std::ptrdiff_t>(o * stride_h + k * dilation_h) - static_cast<std::ptrdiff_t>(pad_top);
        return r >= 0 && r < static_cast<std::ptrdiff_t>(in_h) ? r : -1;
    }
    [[nodiscard]] BATCHWISE_HOST_DEVICE constexpr std::ptrdiff_t input_col(std::size_t o, std::size_t k) const {
        const auto c = static_cast<std::ptrdiff_t>(o * stride_w + k * dilation_w) - static_cast<std::ptrdiff_t>(pad_left);
        return c >= 0 && c < static_cast<std::ptrdiff_t>(in_w) ? c : -1;
    }
    /// The output row whose tap `k` reads input row `i`, or -1 when none does.
    [[nodiscard]] BATCHWISE_HOST_DEVICE constexpr std::ptrdiff_t output_row(std::size_t i, std::size_t k) const {
        const auto t = static_cast<std::ptrdiff_t>(i + pad_top) - static_cast<std::ptrdiff_t>(k * dilation_h);
        if (t < 0 || t % static_cast<std::ptrdiff_t>(stride_h) != 0) return -1;
        const std::ptrdiff_t o = t / static_cast<std::ptrdiff_t>(stride_h);
        return o < static_cast<std::ptrdiff_t>(out_h) ? o : -1;
    }
    [[nodiscard]] BATCHWISE_HOST_DEVICE constexpr std::ptrdiff_t output_col(std::size_t i, std::size_t k) const {
        const auto t = static_cast<std::ptrdiff_t>(i + pad_left) - static_cast<std::ptrdiff_t>(k * dilation_w);
        if (t < 0 || t % static_cast<std::ptrdiff_t>(stride_w) != 0) return -1;
        const std::ptrdiff_t o = t / static_cast<std::ptrdiff_t>(stride_w);
        return o < static_cast<std::ptrdiff_t>(out_w) ? o : -1;
    }
};

/// The geometry of a window of kernel (kh, kw) on sample shape In = (height, width, channels).
template <class In>
constexpr window_geometry make_window_geometry(std::size_t kh, std::size_t kw, std::array<std::size_t, 2> stride,
                                               std::array<std::size_t, 2> dil, bool same) {
    window_geometry g;
    g.in_h = In::dims[0];
    g.in_w = In::dims[1];
    g.channels = In::dims[2];
    g.kernel_h = kh;
    g.kernel_w = kw;
    g.stride_h = stride[0];
    g.stride_w = stride[1];
    g.dilation_h = dil[0];
    g.dilation_w = dil[1];
    const std::size_t span_h = (kh - 1) * dil[0] + 1, span_w = (kw - 1) * dil[1] + 1;
    g.out_h = output_extent(g.in_h, span_h, stride[0], same);
    g.out_w = output_extent(g.in_w, span_w, stride[1], same);
    g.pad_top = padding_before(g.in_h, span_h, stride[0], same);
    g.pad_left = padding_before(g.in_w, span_w, stride[1], same);
    return g;
}

/// Whether In is an image (height, width, channels) that a window reaching span_h x span_w fits:
/// with "same" padding every image does.
template <class In>
constexpr bool window_fits(std::size_t span_h, std::size_t span_w, bool same) {
    if constexpr (In::rank != 3) {
        return false;
    } else {
        return same || (In::dims[0] >= span_h && In::dims[1] >= span_w);
    }
}

}  // namespace detail
}  // namespace batchwise
