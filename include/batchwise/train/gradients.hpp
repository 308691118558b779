// Gradients as values, for custom training loops (TensorFlow's GradientTape pattern): the sums
// of a batch's per-sample gradients with the batch's sample count, owning and shaped, which add
// up over micro-batches and are applied once through the compiled optimizer.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "batchwise/core/concepts.hpp"
#include "batchwise/core/errors.hpp"
#include "batchwise/train/checkpoint.hpp"
#include "batchwise/train/step/variables.hpp"

namespace batchwise {

/// The gradient of a batch's loss, kept as a sum over its samples (not a mean), per trainable
/// variable. Sums of micro-batches add exactly, so applying g1 + g2 + ... steps as one batch of
/// all their samples would, whatever their sizes; averaging per-batch means (sum of means / N,
/// the common GradientTape port) weighs a small batch's samples more, and differs.
struct gradient_sums {
    /// Per trainable variable, in order: its name ("dense/kernel") and the summed gradient.
    std::vector<named_weight> sums;
    /// The samples the sums are over: apply_gradients divides by this.
    std::size_t samples = 0;
    /// The sum of the samples' losses (loss_sum / samples is the batch's mean loss).
    double loss_sum = 0.0;

    /// The mean loss over the samples (0 for no samples).
    [[nodiscard]] double loss() const { return samples > 0 ? loss_sum / static_cast<double>(samples) : 0.0; }

    /// Adds another batch's sums; both must be of the same model.
    gradient_sums& operator+=(const gradient_sums& other) {
        if (sums.empty()) return *this = other;
        if (other.sums.size() != sums.size()) {
            throw shape_error("gradient_sums: adding sums of " + std::to_string(other.sums.size()) +
                              " variables to sums of " + std::to_string(sums.size()));
        }
        for (std::size_t i = 0; i < sums.size(); ++i) {
            if (other.sums[i].name != sums[i].name || other.sums[i].value.shape() != sums[i].value.shape()) {
                throw shape_error("gradient_sums: variable " + std::to_string(i) + " is '" + sums[i].name +
                                  "' here and '" + other.sums[i].name + "' (or another shape) in the sums added");
            }
            sums[i].value += other.sums[i].value;
        }
        samples += other.samples;
        loss_sum += other.loss_sum;
        return *this;
    }
    /// The sums of two batches together, as one batch of all their samples.
    friend gradient_sums operator+(gradient_sums a, const gradient_sums& b) { return a += b; }
};

namespace detail {

/// The trainable variables' gradient buffers, copied to the host.
template <ExecutionPolicy Exec>
std::vector<named_weight> host_gradients(const variable_set& vars) {
    std::vector<named_weight> out;
    for (const auto& v : vars.entries()) {
        if (!v.ref.trainable()) continue;
        xt::xarray<float> g = xt::zeros<float>(variable_shape(v.ref));
        Exec::to_host(v.ref.grad, v.ref.size(), g.data());
        out.push_back({v.name, std::move(g)});
    }
    return out;
}

/// Checks gradient sums against the trainable variables (names, shapes, count, finite values)
/// and copies them into the gradient buffers; nothing is copied unless all are right.
template <ExecutionPolicy Exec>
void load_gradients(const variable_set& vars, const gradient_sums& g) {
    if (g.samples == 0) throw usage_error("apply_gradients: the gradient sums are over no samples");
    std::vector<std::size_t> trainable;
    for (std::size_t i = 0; i < vars.size(); ++i) {
        if (vars[i].ref.trainable()) trainable.push_back(i);
    }
    if (g.sums.size() != trainable.size()) {
        throw shape_error("apply_gradients: sums for " + std::to_string(g.sums.size()) + " variables, but the model has " +
                          std::to_string(trainable.size()) + " trainable ones; take them from Model::gradients");
    }
    for (std::size_t k = 0; k < trainable.size(); ++k) {
        const variable_entry& v = vars[trainable[k]];
        const auto& s = g.sums[k];
        const std::vector<std::size_t> shape = variable_shape(v.ref);
        if (s.name != v.name || !std::equal(shape.begin(), shape.end(), s.value.shape().begin(), s.value.shape().end())) {
            throw shape_error("apply_gradients: sums " + std::to_string(k) + " are '" + s.name + "' of shape " +
                              runtime_shape_str(s.value.shape()) + " but the variable is '" + v.name + "' of shape " +
                              runtime_shape_str(shape));
        }
        for (std::size_t j = 0; j < s.value.size(); ++j) {
            if (!std::isfinite(s.value.flat(j))) {
                throw numeric_error("apply_gradients: the gradient of '" + s.name + "' is not finite at element " +
                                    std::to_string(j) + "; nothing was applied");
            }
        }
    }
    for (std::size_t k = 0; k < trainable.size(); ++k) {
        Exec::from_host(g.sums[k].value.data(), g.sums[k].value.size(), vars[trainable[k]].ref.grad);
    }
}

}  // namespace detail
}  // namespace batchwise
