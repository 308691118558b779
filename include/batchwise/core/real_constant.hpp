// A floating-point value usable as a template argument (Dropout<0.2>, BatchNormalization<0.9>).
// Floating-point non-type template parameters reject 0.2 where the parameter is a float (a
// converted constant expression may not round), and Debian's clang 14 has none at all. A class
// type with a constructor from double and from float accepts both literals on every C++20
// compiler; it holds the double's bits, since a class template argument must be structural and
// clang 14 does not accept floating-point members there.
#pragma once

#include <bit>
#include <cstdint>

namespace batchwise {

/// A float or double literal as a template argument: `Dropout<0.2>` and `Dropout<0.2f>` alike.
struct real_constant {
    /// The value's bits as a double (a structural member, which a double is not on clang 14).
    std::uint64_t bits;

    /// From a double literal, exactly.
    // Implicit on purpose: these let `Dropout<0.2>` and `Dropout<0.2f>` be written as in Keras.
    constexpr real_constant(double v) : bits(std::bit_cast<std::uint64_t>(v)) {}  // NOLINT
    /// From a float literal, through the double it converts to exactly.
    // A float converts exactly to double, so 0.2f and 0.2 give the same float() below.
    constexpr real_constant(float v) : real_constant(static_cast<double>(v)) {}  // NOLINT
    /// From the bits themselves. nvcc writes a class template argument back into the host code
    /// it generates as `{bits}` (copy-list-initialisation, so not explicit), which only this
    /// constructor can take: the conversions of a large integer to double and float narrow.
    /// An integer literal such as `Dropout<0>` is ambiguous, and so refused: write `0.0`.
    constexpr real_constant(std::uint64_t raw_bits) : bits(raw_bits) {}  // NOLINT

    /// The value as a double.
    [[nodiscard]] constexpr double value() const { return std::bit_cast<double>(bits); }
    /// What the layers compute with.
    [[nodiscard]] constexpr float as_float() const { return static_cast<float>(value()); }
};

}  // namespace batchwise
