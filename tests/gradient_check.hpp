// Finite-difference gradient checking shared by the layer and loss tests: a doctest wrapper over
// the public batchwise/testing/gradient_check.hpp, which perturbs each variable (or a spread sample
// of its elements), takes the central difference of the training loss, and compares it with the
// gradient the model computed.
#pragma once

#include <doctest/doctest.h>

#include "policy.hpp"

#include <batchwise/testing/gradient_check.hpp>

#include <algorithm>
#include <array>
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

/// Builds Model<Net, Batch> with seed `s` and checks its parameter gradients on `rows` random
/// samples of Net's input shape against random targets, through mean squared error.
template <class Net, class Batch>
void check_network_gradients(std::uint64_t s, std::size_t rows, float step = 1e-2f, double tolerance = 2e-2,
                             std::size_t max_elements = 24) {
    Model<Net, Batch> model{batchwise::seed{s}};
    model.compile(batchwise::SGD{}, batchwise::MeanSquaredError{});
    const auto x = random_matrix(rows, Net::input_shape::size, s + 1);
    const auto y = random_matrix(rows, Net::output_shape::size, s + 2);
    std::array<std::size_t, Net::input_shape::rank + 1> shape{rows};
    for (std::size_t d = 0; d < Net::input_shape::rank; ++d) shape[d + 1] = Net::input_shape::dims[d];
    xt::xtensor<float, Net::input_shape::rank + 1> shaped = xt::empty<float>(shape);
    std::copy(x.begin(), x.end(), shaped.begin());
    check_parameter_gradients(model, shaped, y, step, tolerance, max_elements);
}

}  // namespace bw_test
