// Inverted dropout: in training each unit (Dropout) or each channel of an image
// (SpatialDropout2D) is kept with probability 1 - rate and scaled by 1 / (1 - rate); in inference
// the layer passes its input through untouched.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "batchwise/core/real_constant.hpp"
#include "batchwise/core/rng.hpp"
#include "batchwise/layers/layer.hpp"

namespace batchwise {

namespace detail {

/// The mask of (sample, unit) is a function of the model seed, the layer, the epoch and the
/// sample's index in the epoch only: the same sample gets the same mask in a batch of 128, in
/// four micro-batches of 32, after an out-of-memory split, or on another device. One Philox call
/// draws units 4q .. 4q + 3 of a sample; index i of the functor is (row, q). The epoch and first
/// sample come through `Position` (scalars_by_value, or scalars_in_memory in a captured step).
template <class Position>
struct dropout_forward {
    const float* x;
    float* y;
    float* mask;
    rng::philox_key key;
    Position position;
    std::size_t cols;
    std::size_t quads;  // per row: ceil(cols / 4)
    float rate;
    float scale;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t row = i / quads;
        const std::size_t q = i % quads;
        const step_scalars& at = *position;
        const rng::uniform4 u = rng::uniform_quad(key, at.epoch, at.first_sample + row, q);
        const std::size_t first = 4 * q;
        const std::size_t count = cols - first < 4 ? cols - first : 4;
        for (std::size_t k = 0; k < count; ++k) {
            const std::size_t j = row * cols + first + k;
            mask[j] = u.u[k] >= rate ? scale : 0.0f;
            y[j] = x[j] * mask[j];
        }
    }
};

/// SpatialDropout2D's mask: one draw per (sample, channel), keyed as dropout_forward's units are,
/// so a whole feature map is kept or dropped alike in every split of the batch.
template <class Position>
struct channel_mask {
    float* mask;
    rng::philox_key key;
    Position position;
    std::size_t channels;
    std::size_t quads;  // per row: ceil(channels / 4)
    float rate;
    float scale;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t row = i / quads, q = i % quads;
        const step_scalars& at = *position;
        const rng::uniform4 u = rng::uniform_quad(key, at.epoch, at.first_sample + row, q);
        const std::size_t first = 4 * q;
        const std::size_t count = channels - first < 4 ? channels - first : 4;
        for (std::size_t k = 0; k < count; ++k) mask[row * channels + first + k] = u.u[k] >= rate ? scale : 0.0f;
    }
};

/// out = in * the mask of the value's (sample, channel); channels are the last axis.
struct multiply_by_channel_mask {
    const float* in;
    const float* mask;
    float* out;
    std::size_t sample_size, channels;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        out[i] = in[i] * mask[(i / sample_size) * channels + i % channels];
    }
};

}  // namespace detail

/// Keras's Dropout(rate): in training each unit is zeroed with probability `rate` and the kept
/// ones scaled by 1 / (1 - rate); in inference the input passes through. Masks are keyed by
/// (seed, layer, epoch, sample, unit), so a sample's mask does not depend on how its batch was
/// split.
template <real_constant Rate>
struct Dropout {
    /// The probability of dropping a unit, in [0, 1).
    static constexpr float rate = Rate.as_float();
    static_assert(rate >= 0.0f && rate < 1.0f, "Dropout<rate> needs 0 <= rate < 1.");
    /// The Keras class name, shown by summary(); layer and weight names are its snake_case form.
    static constexpr std::string_view name = "Dropout";

    /// Takes a sample of any shape.
    template <class In>
    static constexpr bool accepts = true;
    /// What a shape-mismatch diagnostic says it needs: any shape.
    template <class In>
    using requirement = any_shape;
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
            return rows * In::size * (need_dx ? 3 : 2);
        }

        void initialize(std::uint64_t, std::uint32_t) {}
        void reserve(std::size_t rows, bool need_dx) {
            Exec::reserve(out_, rows * In::size);
            Exec::reserve(mask_, rows * In::size);
            if (need_dx) Exec::reserve(dx_, rows * In::size);
        }
        const_matrix_view forward(const_matrix_view x, const pass_context& ctx) {
            if (!ctx.training || rate == 0.0f) return x;
            const matrix_view y{Exec::data(out_), x.rows, x.cols};
            const std::size_t quads = (x.cols + 3) / 4;
            const rng::philox_key key = rng::make_key(ctx.seed, rng::stream::dropout, ctx.layer_index);
            const float scale = 1.0f / (1.0f - rate);
            detail::at_step_position(ctx, [&]<class Position>(Position at) {
                Exec::for_each(x.rows * quads, detail::dropout_forward<Position>{x.data, y.data, Exec::data(mask_), key,
                                                                                 at, x.cols, quads, rate, scale});
            });
            return y;
        }
        // Backward is only ever called after a training forward pass, which filled the mask.
        const_matrix_view backward(const_matrix_view, const_matrix_view, const_matrix_view dy,
                                   bool need_dx, bool) {
            if (!need_dx) return {};
            if (rate == 0.0f) return dy;
            const matrix_view dx{Exec::data(dx_), dy.rows, dy.cols};
            Exec::for_each(dy.size(), detail::multiply_elementwise{dy.data, Exec::data(mask_), dx.data});
            return dx;
        }
        template <class F>
        void for_each_variable(F&&) {}

    private:
        typename Exec::vector out_, mask_, dx_;
    };
};

/// Keras's SpatialDropout2D(rate): drops whole channels (feature maps) of a (height, width,
/// channels) sample, scaling the kept ones by 1 / (1 - rate), since neighbouring pixels of a
/// feature map are correlated and dropping them one by one regularises little. Masks are keyed
/// by (seed, layer, epoch, sample, channel), like Dropout's.
template <real_constant Rate>
struct SpatialDropout2D {
    /// The probability of dropping a channel, in [0, 1).
    static constexpr float rate = Rate.as_float();
    static_assert(rate >= 0.0f && rate < 1.0f, "SpatialDropout2D<rate> needs 0 <= rate < 1.");
    /// The Keras class name, shown by summary(); layer and weight names are its snake_case form.
    static constexpr std::string_view name = "SpatialDropout2D";

    /// Takes (height, width, channels) samples only.
    template <class In>
    static constexpr bool accepts = In::rank == 3;
    /// What a shape-mismatch diagnostic says it needs: a shape of rank 3.
    template <class In>
    using requirement = any_shape_of_rank<3>;
    /// The output has the input's shape.
    template <class In>
    using output = In;

    template <class In, ExecutionPolicy Exec>
    class impl {
        static constexpr std::size_t channels = In::dims[2];
        static constexpr std::size_t quads = (channels + 3) / 4;

    public:
        static constexpr std::size_t in_features = In::size;
        static constexpr std::size_t out_features = In::size;
        static constexpr std::size_t trainable_count = 0;
        static constexpr std::size_t non_trainable_count = 0;
        static constexpr std::size_t state_floats = 0;
        static constexpr std::size_t buffer_floats(std::size_t rows, bool need_dx) {
            return rows * (In::size * (need_dx ? 2 : 1) + channels);
        }

        void initialize(std::uint64_t, std::uint32_t) {}
        void reserve(std::size_t rows, bool need_dx) {
            Exec::reserve(out_, rows * In::size);
            Exec::reserve(mask_, rows * channels);
            if (need_dx) Exec::reserve(dx_, rows * In::size);
        }
        const_matrix_view forward(const_matrix_view x, const pass_context& ctx) {
            if (!ctx.training || rate == 0.0f) return x;
            const rng::philox_key key = rng::make_key(ctx.seed, rng::stream::dropout, ctx.layer_index);
            const float scale = 1.0f / (1.0f - rate);
            detail::at_step_position(ctx, [&]<class Position>(Position at) {
                Exec::for_each(x.rows * quads, detail::channel_mask<Position>{Exec::data(mask_), key, at, channels,
                                                                              quads, rate, scale});
            });
            Exec::for_each(x.size(), detail::multiply_by_channel_mask{x.data, Exec::data(mask_), Exec::data(out_),
                                                                      In::size, channels});
            return {Exec::data(out_), x.rows, x.cols};
        }
        const_matrix_view backward(const_matrix_view, const_matrix_view, const_matrix_view dy, bool need_dx, bool) {
            if (!need_dx) return {};
            if (rate == 0.0f) return dy;
            Exec::for_each(dy.size(), detail::multiply_by_channel_mask{dy.data, Exec::data(mask_), Exec::data(dx_),
                                                                       In::size, channels});
            return {Exec::data(dx_), dy.rows, dy.cols};
        }
        template <class F>
        void for_each_variable(F&&) {}

    private:
        typename Exec::vector out_, mask_, dx_;
    };
};

}  // namespace batchwise
