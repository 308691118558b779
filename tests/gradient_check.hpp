// Finite-difference gradient checking shared by the layer and loss tests: a doctest wrapper over
// the public batchwise/testing/gradient_check.hpp, which perturbs each variable (or a spread sample
// of its elements), takes the central difference of the training loss, and compares it with the
// gradient the model computed.
#pragma once

#include <doctest/doctest.h>

#include "policy.hpp"

#include <batchwise/testing/gradient_check.hpp>

#include <cstddef>
#include <cstdint>

namespace bw_test {

/// Inputs in [-1, 1) from the library's own generator, so tests need no other randomness.
inline xt::xtensor<float, 2> random_matrix(std::size_t rows, std::size_t cols, std::uint64_t s,
                                           float lo = -1.0f, float hi = 1.0f) {
    return batchwise::testing::random_matrix(rows, cols, s, lo, hi);
}

/// Checks every parameter gradient of `model` on (x, y). Up to `max_elements` elements of each
/// variable are probed, spread over the whole variable; one CHECK per probed element.
template <class M, class X, class Y>
void check_parameter_gradients(M& model, const X& x, const Y& y, float step = 1e-2f,
                               double tolerance = 2e-2, std::size_t max_elements = 24) {
    const batchwise::testing::gradient_check_report report = batchwise::testing::check_parameter_gradients(
        model, x, y, {.step = step, .tolerance = tolerance, .max_elements = max_elements});
    for (const auto& e : report.entries) {
        INFO(e.name << "[" << e.index << "]: analytic " << e.analytic << ", numeric " << e.numeric);
        CHECK(e.error <= e.allowed);
    }
    const std::size_t checked = report.checked;
    CHECK(checked > 0);
}

}  // namespace bw_test
