// Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11): a random value is a pure
// function of (seed, stream, counter), so the value a sample gets does not depend on how the
// batch it sits in was split, on which thread or device computes it, or on call order.
#pragma once

#include <cstdint>

#include "batchwise/core/config.hpp"

namespace batchwise {

/// A seed, spelled out so that `Model m{seed{42}}` reads as what it is.
struct seed {
    /// The 64 bits every random draw of the model is keyed on.
    std::uint64_t value = 0;
};

/// Philox4x32-10 counter-based random numbers: keys, counters, and the draws built on them.
namespace rng {

/// Philox's 64-bit key, two words: the seed, purpose and layer of the draws (make_key).
struct philox_key {
    /// The key's first word; k1 is the second.
    std::uint32_t k0, k1;
};
/// \var philox_key::k1
/// The key's second word.

/// Philox's 128-bit counter, four words: which value is drawn (unit, sample, epoch).
struct philox_counter {
    /// The counter's first word; c1, c2 and c3 follow.
    std::uint32_t c0, c1, c2, c3;
};
/// \var philox_counter::c1
/// The counter's second word.
/// \var philox_counter::c2
/// The counter's third word.
/// \var philox_counter::c3
/// The counter's fourth word.

/// The high and low 32 bits of the 64-bit product a * b: Philox's round function.
BATCHWISE_HOST_DEVICE inline void mulhilo(std::uint32_t a, std::uint32_t b, std::uint32_t& hi,
                                          std::uint32_t& lo) {
    const std::uint64_t p = static_cast<std::uint64_t>(a) * b;
    hi = static_cast<std::uint32_t>(p >> 32);
    lo = static_cast<std::uint32_t>(p);
}

/// Philox4x32 with 10 rounds: four independent 32-bit words per (key, counter).
BATCHWISE_HOST_DEVICE inline philox_counter philox4(philox_key k, philox_counter c) {
    for (int round = 0; round < 10; ++round) {
        std::uint32_t hi0, lo0, hi1, lo1;
        mulhilo(0xD2511F53u, c.c0, hi0, lo0);
        mulhilo(0xCD9E8D57u, c.c2, hi1, lo1);
        c = philox_counter{hi1 ^ c.c1 ^ k.k0, lo1, hi0 ^ c.c3 ^ k.k1, lo0};
        k.k0 += 0x9E3779B9u;
        k.k1 += 0xBB67AE85u;
    }
    return c;
}

/// The first word only, for uses that need one number per counter.
BATCHWISE_HOST_DEVICE inline std::uint32_t philox(philox_key k, philox_counter c) { return philox4(k, c).c0; }

/// Uniform float in [0, 1) from the top 24 bits, so every value is exactly representable.
BATCHWISE_HOST_DEVICE inline float to_unit_float(std::uint32_t bits) {
    return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f);
}

/// The purposes random numbers serve; part of the key so that streams never overlap.
enum class stream : std::uint32_t { init = 1, dropout = 2, shuffle = 3, data = 4 };
/// \var stream::init
/// Initial values of the variables.
/// \var stream::dropout
/// Dropout masks.
/// \var stream::shuffle
/// The order a shuffled dataset reads its samples in.
/// \var stream::data
/// Data a program makes for itself (testing::random_matrix).

/// Key for one purpose in one layer of one seeded model.
BATCHWISE_HOST_DEVICE inline philox_key make_key(std::uint64_t seed_value, stream s,
                                                 std::uint32_t layer) {
    return philox_key{static_cast<std::uint32_t>(seed_value) ^ (layer * 0x9E3779B1u),
                      static_cast<std::uint32_t>(seed_value >> 32) ^
                          (static_cast<std::uint32_t>(s) * 0x85EBCA6Bu)};
}

/// Four uniform [0, 1) values for units 4q .. 4q + 3 of (key, epoch, sample): one Philox call
/// serves four units, which is what makes a dropout mask cheap.
struct uniform4 {
    /// The values of units 4q, 4q + 1, 4q + 2 and 4q + 3.
    float u[4];
};
/// Units 4q .. 4q + 3 of (key, epoch, sample) from one Philox call. The counter's top bit
/// keeps these draws apart from uniform()'s, whose first word is the unit itself.
BATCHWISE_HOST_DEVICE inline uniform4 uniform_quad(philox_key key, std::uint64_t epoch, std::uint64_t sample,
                                                   std::uint64_t quad) {
    const philox_counter w =
        philox4(key, philox_counter{static_cast<std::uint32_t>(quad) | 0x80000000u, static_cast<std::uint32_t>(sample),
                                    static_cast<std::uint32_t>(sample >> 32), static_cast<std::uint32_t>(epoch)});
    return {{to_unit_float(w.c0), to_unit_float(w.c1), to_unit_float(w.c2), to_unit_float(w.c3)}};
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
