// Finite-difference gradient checking shared by the layer and loss tests: perturb each variable
// (or a spread sample of its elements), take the central difference of the training loss, and
// compare with the gradient the model computed.
#pragma once

#include <doctest/doctest.h>

#include "policy.hpp"

#include <cmath>
#include <cstddef>
#include <string>

namespace bw_test {

/// Inputs in [-1, 1) from the library's own generator, so tests need no other randomness.
inline xt::xtensor<float, 2> random_matrix(std::size_t rows, std::size_t cols, std::uint64_t s,
                                           float lo = -1.0f, float hi = 1.0f) {
    xt::xtensor<float, 2> m = xt::empty<float>({rows, cols});
    const auto key = batchwise::rng::make_key(s, batchwise::rng::stream::data, 99);
    for (std::size_t i = 0; i < m.size(); ++i) {
        m.data()[i] = lo + (hi - lo) * batchwise::rng::uniform(key, 0, i, 0);
    }
    return m;
}

/// Checks every parameter gradient of `model` on (x, y). Up to `max_elements` elements of each
/// variable are probed, spread over the whole variable.
template <class M, class X, class Y>
void check_parameter_gradients(M& model, const X& x, const Y& y, float step = 1e-2f,
                               double tolerance = 2e-2, std::size_t max_elements = 24) {
    model.loss_and_gradients(x, y);
    // Every later call overwrites the gradients, so all of them are kept before any probe.
    std::vector<std::vector<float>> analytic_all;
    for (const auto& v : model.variables()) {
        analytic_all.push_back(host_copy(v.ref.grad, v.ref.grad == nullptr ? 0 : v.ref.size()));
    }
    std::size_t checked = 0;
    for (std::size_t k = 0; k < model.variables().size(); ++k) {
        const auto& v = model.variables()[k];
        if (!v.ref.trainable()) continue;
        const std::vector<float>& analytic = analytic_all[k];
        const std::size_t stride = std::max<std::size_t>(1, v.ref.size() / max_elements);
        for (std::size_t i = 0; i < v.ref.size(); i += stride) {
            const float saved = host_element(v.ref.value, i);
            set_element(v.ref.value, i, saved + step);
            const double up = model.loss_and_gradients(x, y);
            set_element(v.ref.value, i, saved - step);
            const double down = model.loss_and_gradients(x, y);
            set_element(v.ref.value, i, saved);
            const double numeric = (up - down) / (2.0 * step);
            INFO(v.name << "[" << i << "]: analytic " << analytic[i] << ", numeric " << numeric);
            CHECK(std::fabs(analytic[i] - numeric) <= tolerance * (std::fabs(numeric) + 1e-2));
            ++checked;
        }
    }
    CHECK(checked > 0);
}

}  // namespace bw_test
