// Weight initialisers (Keras names and defaults). Each value is a pure function of (seed, layer,
// element index) through the counter-based generator, so initialisation is reproducible on every
// policy and independent of the order in which layers are built.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "batchwise/core/rng.hpp"

namespace batchwise {

namespace detail {
inline float init_uniform(std::uint64_t s, std::uint32_t layer, std::uint64_t element,
                          std::uint32_t draw = 0) {
    return rng::uniform(rng::make_key(s, rng::stream::init, layer), draw, element, 0);
}
/// Standard normal truncated at two standard deviations (as Keras's truncated normal): values
/// outside are redrawn with the next draw counter.
inline float init_truncated_normal(std::uint64_t s, std::uint32_t layer, std::uint64_t element) {
    for (std::uint32_t draw = 0;; draw += 2) {
        const float u1 = init_uniform(s, layer, element, draw);
        const float u2 = init_uniform(s, layer, element, draw + 1);
        const float z = std::sqrt(-2.0f * std::log(1.0f - u1)) * std::cos(6.2831853f * u2);
        if (std::fabs(z) <= 2.0f) return z;
    }
}
}  // namespace detail

/// Glorot (Xavier) uniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out)). The Keras default.
struct glorot_uniform {
    /// The initial value of element `element` of layer `layer`'s kernel under seed `s`, given the
    /// kernel's fan-in and fan-out: a function of these arguments only.
    static float draw(std::uint64_t s, std::uint32_t layer, std::uint64_t element,
                      std::size_t fan_in, std::size_t fan_out) {
        const float limit = std::sqrt(6.0f / static_cast<float>(fan_in + fan_out));
        return (2.0f * detail::init_uniform(s, layer, element) - 1.0f) * limit;
    }
};

/// He uniform: U(-l, l), l = sqrt(6 / fan_in). Suits ReLU networks.
struct he_uniform {
    /// The initial value of element `element` of layer `layer`'s kernel under seed `s`, given the
    /// kernel's fan-in and fan-out: a function of these arguments only.
    static float draw(std::uint64_t s, std::uint32_t layer, std::uint64_t element,
                      std::size_t fan_in, std::size_t) {
        const float limit = std::sqrt(6.0f / static_cast<float>(fan_in));
        return (2.0f * detail::init_uniform(s, layer, element) - 1.0f) * limit;
    }
};

/// He normal: truncated normal with stddev sqrt(2 / fan_in) / 0.8796 (Keras's correction for
/// the truncation at two standard deviations).
struct he_normal {
    /// The initial value of element `element` of layer `layer`'s kernel under seed `s`, given the
    /// kernel's fan-in and fan-out: a function of these arguments only.
    static float draw(std::uint64_t s, std::uint32_t layer, std::uint64_t element,
                      std::size_t fan_in, std::size_t) {
        const float stddev = std::sqrt(2.0f / static_cast<float>(fan_in)) / 0.87962566f;
        return detail::init_truncated_normal(s, layer, element) * stddev;
    }
};

/// A kernel initializer: `T::draw(seed, layer, element, fan_in, fan_out)` gives one initial
/// value as a function of its arguments alone, so that initial weights are reproducible.
template <class T>
concept Initializer = requires(std::uint64_t s, std::uint32_t l, std::uint64_t e, std::size_t n) {
    { T::draw(s, l, e, n, n) } -> std::convertible_to<float>;
};

/// Host values for `count` weights whose fans are given apart from their number: a convolution
/// kernel (kh, kw, in, out) has fan_in = kh kw in and fan_out = kh kw out, as Keras counts them.
template <Initializer Init>
std::vector<float> initial_values(std::uint64_t s, std::uint32_t layer, std::size_t count, std::size_t fan_in,
                                  std::size_t fan_out) {
    std::vector<float> w(count);
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = Init::draw(s, layer, i, fan_in, fan_out);
    return w;
}

/// Host values for a (fan_in x fan_out) kernel; copied to the policy's memory by the caller.
template <Initializer Init>
std::vector<float> initial_kernel(std::uint64_t s, std::uint32_t layer, std::size_t fan_in,
                                  std::size_t fan_out) {
    return initial_values<Init>(s, layer, fan_in * fan_out, fan_in, fan_out);
}

}  // namespace batchwise
