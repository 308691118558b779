// Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11): a random value is a pure
// function of (seed, stream, counter), so the value a sample gets does not depend on how the
// batch it sits in was split, on which thread or device computes it, or on call order.
#pragma once

#include <cstdint>

#include "batchwise/core/config.hpp"

namespace batchwise {

/// A seed, spelled out so that `Model m{seed{42}}` reads as what it is.
struct seed {
    std::uint64_t value = 0;
};

namespace rng {

struct philox_key {
    std::uint32_t k0, k1;
};
struct philox_counter {
    std::uint32_t c0, c1, c2, c3;
};

BATCHWISE_HOST_DEVICE inline void mulhilo(std::uint32_t a, std::uint32_t b, std::uint32_t& hi,
                                          std::uint32_t& lo) {
    const std::uint64_t p = static_cast<std::uint64_t>(a) * b;
    hi = static_cast<std::uint32_t>(p >> 32);
    lo = static_cast<std::uint32_t>(p);
}

/// Philox4x32 with 10 rounds; returns the first of the four 32-bit words, which is all the
/// library needs per (key, counter) and keeps the functors small.
BATCHWISE_HOST_DEVICE inline std::uint32_t philox(philox_key k, philox_counter c) {
    for (int round = 0; round < 10; ++round) {
        std::uint32_t hi0, lo0, hi1, lo1;
        mulhilo(0xD2511F53u, c.c0, hi0, lo0);
        mulhilo(0xCD9E8D57u, c.c2, hi1, lo1);
        c = philox_counter{hi1 ^ c.c1 ^ k.k0, lo1, hi0 ^ c.c3 ^ k.k1, lo0};
        k.k0 += 0x9E3779B9u;
        k.k1 += 0xBB67AE85u;
    }
    return c.c0;
}

/// Uniform float in [0, 1) from the top 24 bits, so every value is exactly representable.
BATCHWISE_HOST_DEVICE inline float to_unit_float(std::uint32_t bits) {
    return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f);
}

/// The purposes random numbers serve; part of the key so that streams never overlap.
enum class stream : std::uint32_t { init = 1, dropout = 2, shuffle = 3, data = 4 };

/// Key for one purpose in one layer of one seeded model.
BATCHWISE_HOST_DEVICE inline philox_key make_key(std::uint64_t seed_value, stream s,
                                                 std::uint32_t layer) {
    return philox_key{static_cast<std::uint32_t>(seed_value) ^ (layer * 0x9E3779B1u),
                      static_cast<std::uint32_t>(seed_value >> 32) ^
                          (static_cast<std::uint32_t>(s) * 0x85EBCA6Bu)};
}

/// Uniform [0, 1) for (key, epoch, sample, unit): the Dropout mask and any per-sample noise.
BATCHWISE_HOST_DEVICE inline float uniform(philox_key key, std::uint64_t epoch,
                                           std::uint64_t sample, std::uint64_t unit) {
    return to_unit_float(philox(key, philox_counter{static_cast<std::uint32_t>(unit),
                                                    static_cast<std::uint32_t>(sample),
                                                    static_cast<std::uint32_t>(sample >> 32),
                                                    static_cast<std::uint32_t>(epoch)}));
}

}  // namespace rng
}  // namespace batchwise
