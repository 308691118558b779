// Normalisation that does not look across samples: Keras's LayerNormalization (each position's
// channels) and GroupNormalization (each sample's channels in groups, over all its positions).
// A sample's output depends on that sample alone, so neither cares how small a batch is or how a
// step is split, which is why users move to them from batch norm when batches are small
// (docs/convolution.md measures it). Both learn a per-channel scale gamma and shift beta.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "batchwise/layers/layer.hpp"
#include "batchwise/layers/spatial.hpp"

namespace batchwise {

namespace detail {

/// Where a group's elements are: unit u (a sample, or one position of it) holds `positions` x
/// `channels` values; group g of it is channels [g cg, (g + 1) cg) at every position.
struct group_layout {
    std::size_t positions, channels, group_channels, groups;
    [[nodiscard]] BATCHWISE_HOST_DEVICE std::size_t count() const { return positions * group_channels; }
    [[nodiscard]] BATCHWISE_HOST_DEVICE std::size_t first(std::size_t i) const {
        return (i / groups) * positions * channels + (i % groups) * group_channels;
    }
};

/// Per group: mean and biased variance (two passes, in double), then xhat and y = gamma xhat + beta.
struct group_norm_forward {
    const float* x;
    const float* gamma;
    const float* beta;
    float* xhat;
    float* y;
    float* inv_std;
    group_layout l;
    float epsilon;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t base = l.first(i), c0 = (i % l.groups) * l.group_channels;
        double s = 0.0;
        for (std::size_t p = 0; p < l.positions; ++p) {
            for (std::size_t c = 0; c < l.group_channels; ++c) s += x[base + p * l.channels + c];
        }
        const double mean = s / static_cast<double>(l.count());
        double v = 0.0;
        for (std::size_t p = 0; p < l.positions; ++p) {
            for (std::size_t c = 0; c < l.group_channels; ++c) {
                const double d = x[base + p * l.channels + c] - mean;
                v += d * d;
            }
        }
        const auto is = static_cast<float>(1.0 / std::sqrt(v / static_cast<double>(l.count()) + epsilon));
        inv_std[i] = is;
        const auto m = static_cast<float>(mean);
        for (std::size_t p = 0; p < l.positions; ++p) {
            for (std::size_t c = 0; c < l.group_channels; ++c) {
                const std::size_t k = base + p * l.channels + c;
                xhat[k] = (x[k] - m) * is;
                y[k] = gamma[c0 + c] * xhat[k] + beta[c0 + c];
            }
        }
    }
};

/// Per group of M values: dx = inv_std / M (M g - sum g - xhat sum(g xhat)), with g = gamma dy.
struct group_norm_input_grad {
    const float* dy;
    const float* xhat;
    const float* gamma;
    const float* inv_std;
    float* dx;
    group_layout l;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t base = l.first(i), c0 = (i % l.groups) * l.group_channels;
        float s = 0.0f, sx = 0.0f;
        for (std::size_t p = 0; p < l.positions; ++p) {
            for (std::size_t c = 0; c < l.group_channels; ++c) {
                const std::size_t k = base + p * l.channels + c;
                const float g = gamma[c0 + c] * dy[k];
                s += g;
                sx += g * xhat[k];
            }
        }
        const auto m = static_cast<float>(l.count());
        const float scale = inv_std[i] / m;
        for (std::size_t p = 0; p < l.positions; ++p) {
            for (std::size_t c = 0; c < l.group_channels; ++c) {
                const std::size_t k = base + p * l.channels + c;
                dx[k] = scale * (m * gamma[c0 + c] * dy[k] - s - xhat[k] * sx);
            }
        }
    }
};

/// Per channel j: gamma's gradient sum(dy xhat) and beta's sum(dy) over every row of the
/// (rows x positions, channels) view, written or (accumulating) added.
struct channel_scale_shift_grads {
    const float* dy;
    const float* xhat;
    float* gamma_grad;
    float* beta_grad;
    std::size_t rows, channels;
    bool accumulate;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t j) const {
        float s = 0.0f, sx = 0.0f;
        for (std::size_t r = 0; r < rows; ++r) {
            s += dy[r * channels + j];
            sx += dy[r * channels + j] * xhat[r * channels + j];
        }
        beta_grad[j] = accumulate ? beta_grad[j] + s : s;
        gamma_grad[j] = accumulate ? gamma_grad[j] + sx : sx;
    }
};

/// A sample of shape In normalised in groups: per position (PerPosition: layer norm's groups are
/// each position's channels) or over the whole sample (group norm).
template <class In, class Exec, std::size_t Groups, bool PerPosition, real_constant Epsilon>
class group_norm_impl {
    static constexpr std::size_t channels = In::dims[In::rank - 1];
    static constexpr std::size_t positions = In::size / channels;
    /// Groups per sample, and positions per group.
    static constexpr std::size_t groups_per_sample = PerPosition ? positions : Groups;
    static constexpr group_layout layout{PerPosition ? 1 : positions, channels, channels / Groups, Groups};

public:
    static constexpr std::size_t in_features = In::size;
    static constexpr std::size_t out_features = In::size;
    static constexpr std::size_t trainable_count = 2 * channels;
    static constexpr std::size_t non_trainable_count = 0;
    static constexpr std::size_t state_floats = 4 * channels;
    /// Backward reads xhat, not the output: the activation after may run in place over it.
    static constexpr bool output_is_scratch = true;
    /// out, xhat (and dx) per value; 1 / std per group.
    static constexpr std::size_t buffer_floats(std::size_t rows, bool need_dx) {
        return rows * In::size * (need_dx ? 3 : 2) + rows * groups_per_sample;
    }

    group_norm_impl() {
        for (auto* v : {&gamma_, &beta_, &gamma_grad_, &beta_grad_}) Exec::reserve(*v, channels);
    }
    void initialize(std::uint64_t, std::uint32_t) {
        Exec::fill(Exec::data(gamma_), channels, 1.0f);
        Exec::fill(Exec::data(beta_), channels, 0.0f);
    }
    void reserve(std::size_t rows, bool need_dx) {
        Exec::reserve(out_, rows * In::size);
        Exec::reserve(xhat_, rows * In::size);
        Exec::reserve(inv_std_, rows * groups_per_sample);
        if (need_dx) Exec::reserve(dx_, rows * In::size);
    }

    // Training and inference compute the same: no statistic spans samples.
    const_matrix_view forward(const_matrix_view x, const pass_context&) {
        Exec::for_each(x.rows * groups_per_sample,
                       group_norm_forward{x.data, Exec::data(gamma_), Exec::data(beta_), Exec::data(xhat_),
                                          Exec::data(out_), Exec::data(inv_std_), layout, Epsilon.as_float()});
        return {Exec::data(out_), x.rows, In::size};
    }

    // Padding rows arrive with a zero dy, so they move neither gamma nor beta.
    const_matrix_view backward(const_matrix_view, const_matrix_view, const_matrix_view dy, bool need_dx,
                               bool accumulate) {
        Exec::for_each(channels, channel_scale_shift_grads{dy.data, Exec::data(xhat_), Exec::data(gamma_grad_),
                                                           Exec::data(beta_grad_), dy.rows * positions, channels,
                                                           accumulate});
        if (!need_dx) return {};
        Exec::for_each(dy.rows * groups_per_sample,
                       group_norm_input_grad{dy.data, Exec::data(xhat_), Exec::data(gamma_), Exec::data(inv_std_),
                                             Exec::data(dx_), layout});
        return {Exec::data(dx_), dy.rows, In::size};
    }

    template <class F>
    void for_each_variable(F&& f) {
        f(variable_ref{"gamma", Exec::data(gamma_), Exec::data(gamma_grad_), channels, 0});
        f(variable_ref{"beta", Exec::data(beta_), Exec::data(beta_grad_), channels, 0});
    }

private:
    typename Exec::vector gamma_, beta_, gamma_grad_, beta_grad_, out_, xhat_, inv_std_, dx_;
};

}  // namespace detail

/// Keras's LayerNormalization() (axis=-1, epsilon 0.001): each position of a sample normalised
/// over its channels, the last axis; for a flat sample, over all its features.
template <real_constant Epsilon = 0.001>
struct LayerNormalization {
    static_assert(Epsilon.as_float() > 0.0f, "LayerNormalization epsilon must be positive.");
    /// The Keras class name, shown by summary(); layer and weight names are its snake_case form.
    static constexpr std::string_view name = "LayerNormalization";
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
    using impl = detail::group_norm_impl<In, Exec, 1, true, Epsilon>;
};

/// Keras's GroupNormalization(groups, axis=-1, epsilon 0.001): each sample's channels (the last
/// axis) in Groups equal groups, each normalised over its channels at every position.
/// GroupNormalization<1> normalises a whole sample; with one channel per group it is instance norm.
template <std::size_t Groups = 32, real_constant Epsilon = 0.001>
struct GroupNormalization {
    static_assert(Groups > 0, "GroupNormalization<groups> needs at least one group.");
    static_assert(Epsilon.as_float() > 0.0f, "GroupNormalization epsilon must be positive.");
    /// The Keras class name, shown by summary(); layer and weight names are its snake_case form.
    static constexpr std::string_view name = "GroupNormalization";
    /// Number of channel groups.
    static constexpr std::size_t groups = Groups;
    /// Takes samples whose channels (last axis) divide into Groups equal groups.
    template <class In>
    static constexpr bool accepts = In::dims[In::rank - 1] % Groups == 0;
    /// What a shape-mismatch diagnostic says it needs: channels divisible by Groups.
    template <class In>
    using requirement = any_shape_with_channels_divisible_by<Groups>;
    /// The output has the input's shape.
    template <class In>
    using output = In;
    template <class In, ExecutionPolicy Exec>
    using impl = detail::group_norm_impl<In, Exec, Groups, false, Epsilon>;
};

}  // namespace batchwise
