// Finite-difference gradient checking for layer authors: compares every parameter gradient a
// model computes with a central difference of its training loss, and returns what it found.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "batchwise/core/rng.hpp"
#include "batchwise/core/xtensor.hpp"
#include "batchwise/train/step/host_batch.hpp"

/// Tools for testing layers and models built on batchwise: a finite-difference gradient check,
/// and reproducible random data for it.
namespace batchwise::testing {

/// A matrix of uniform values in [lo, hi) from the library's own generator, so that a test needs
/// no other randomness; the same (rows, cols, seed_value, lo, hi) always gives the same matrix.
inline xt::xtensor<float, 2> random_matrix(std::size_t rows, std::size_t cols, std::uint64_t seed_value,
                                           float lo = -1.0f, float hi = 1.0f) {
    xt::xtensor<float, 2> m = xt::empty<float>({rows, cols});
    const auto key = rng::make_key(seed_value, rng::stream::data, 99);
    for (std::size_t i = 0; i < m.size(); ++i) {
        m.data()[i] = lo + (hi - lo) * rng::uniform(key, 0, i, 0);
    }
    return m;
}

/// How check_parameter_gradients probes: `check_parameter_gradients(m, x, y, {.step = 1e-3f})`.
struct gradient_check_options {
    /// Half the width of the central difference, added to and taken from each probed element.
    float step = 1e-2f;
    /// An element passes when |analytic - numeric| <= tolerance * (|numeric| + 1e-2).
    double tolerance = 2e-2;
    /// Elements probed per variable at most, spread over the whole variable (0 probes them all).
    std::size_t max_elements = 24;
};

/// One probed element of one variable.
struct gradient_check_entry {
    std::string name;        ///< the variable, as model.variables() names it ("dense_1/kernel")
    std::size_t index = 0;   ///< the element within the variable's flat data
    float analytic = 0.0f;   ///< the gradient the model computed
    double numeric = 0.0;    ///< (loss(w + step) - loss(w - step)) / (2 step)
    double error = 0.0;      ///< |analytic - numeric|
    double allowed = 0.0;    ///< tolerance * (|numeric| + 1e-2)
    bool passed = false;     ///< error <= allowed
};

/// What check_parameter_gradients found: every probed element, in the order probed.
struct gradient_check_report {
    /// Every probed element, in the order probed.
    std::vector<gradient_check_entry> entries;
    std::size_t checked = 0;  ///< elements probed over all trainable variables

    /// Passes when something was probed and every probed element passed.
    [[nodiscard]] bool ok() const {
        return checked > 0 &&
               std::all_of(entries.begin(), entries.end(), [](const gradient_check_entry& e) { return e.passed; });
    }

    /// The entries that failed.
    [[nodiscard]] std::vector<gradient_check_entry> failures() const {
        std::vector<gradient_check_entry> out;
        for (const auto& e : entries) {
            if (!e.passed) out.push_back(e);
        }
        return out;
    }

    /// A line per failed element ("dense_1/kernel[3]: analytic 0.5, numeric 0.25"), after a
    /// summary line; "" when ok().
    [[nodiscard]] std::string describe_failures() const {
        if (ok()) return {};
        std::ostringstream s;
        if (checked == 0) {
            s << "gradient check: no element was probed (the model has no trainable variable)\n";
            return s.str();
        }
        const std::vector<gradient_check_entry> failed = failures();
        s << "gradient check: " << failed.size() << " of " << checked << " probed elements failed\n";
        for (const auto& e : failed) {
            s << e.name << "[" << e.index << "]: analytic " << e.analytic << ", numeric " << e.numeric
              << " (error " << e.error << ", allowed " << e.allowed << ")\n";
        }
        return s.str();
    }
};

/// Checks the parameter gradients of `model` (any batchwise::Model) on the batch (x, y): the
/// gradients of loss_and_gradients(x, y) against central differences of that same loss, for up to
/// options.max_elements elements of each trainable variable. Each probed element is put back after
/// its probe, so the weights are unchanged on return; the gradient buffers are overwritten. With
/// `sample_weight`, the loss is the weighted one that fit trains on.
template <class M, class X, class Y, class W = no_sample_weights>
    requires requires(M& m, const X& x, const Y& y, const W& w) {
        typename M::execution_policy;
        m.variables();
        m.loss_and_gradients(x, y, w);
    }
gradient_check_report check_parameter_gradients(M& model, const X& x, const Y& y,
                                                const gradient_check_options& options = {},
                                                const W& sample_weight = {}) {
    using Exec = typename M::execution_policy;
    const auto read = [](const float* p, std::size_t i) {
        float v = 0.0f;
        Exec::to_host(p + i, 1, &v);
        return v;
    };
    const auto write = [](float* p, std::size_t i, float v) { Exec::from_host(&v, 1, p + i); };

    model.loss_and_gradients(x, y, sample_weight);
    // Every later call overwrites the gradients, so all of them are kept before any probe.
    std::vector<std::vector<float>> analytic_all;
    for (const auto& v : model.variables()) {
        std::vector<float> g(v.ref.grad == nullptr ? 0 : v.ref.size());
        if (!g.empty()) Exec::to_host(v.ref.grad, g.size(), g.data());
        analytic_all.push_back(std::move(g));
    }

    gradient_check_report report;
    for (std::size_t k = 0; k < model.variables().size(); ++k) {
        const auto& v = model.variables()[k];
        if (!v.ref.trainable()) continue;
        const std::vector<float>& analytic = analytic_all[k];
        const std::size_t stride =
            options.max_elements == 0 ? 1 : std::max<std::size_t>(1, v.ref.size() / options.max_elements);
        for (std::size_t i = 0; i < v.ref.size(); i += stride) {
            const float saved = read(v.ref.value, i);
            write(v.ref.value, i, saved + options.step);
            const double up = model.loss_and_gradients(x, y, sample_weight);
            write(v.ref.value, i, saved - options.step);
            const double down = model.loss_and_gradients(x, y, sample_weight);
            write(v.ref.value, i, saved);
            gradient_check_entry e;
            e.name = std::string(v.name);
            e.index = i;
            e.analytic = analytic[i];
            e.numeric = (up - down) / (2.0 * options.step);
            e.error = std::fabs(e.analytic - e.numeric);
            e.allowed = options.tolerance * (std::fabs(e.numeric) + 1e-2);
            e.passed = e.error <= e.allowed;
            report.entries.push_back(std::move(e));
            ++report.checked;
        }
    }
    return report;
}

}  // namespace batchwise::testing
