// What every loss shares: its options, the description of its targets, and the contract a
// loss type satisfies. Losses return the SUM of per-sample losses and write the gradient scaled
// by a factor the caller chooses, so that a caller can take the mean over any effective batch.
#pragma once

#include <concepts>
#include <cstddef>
#include <string_view>

#include "batchwise/core/concepts.hpp"
#include "batchwise/exec/matrix_view.hpp"

namespace batchwise {

/// Options shared by the losses, spelled as Keras spells them.
struct loss_options {
    /// True when the network outputs raw scores; the loss then applies a fused, numerically
    /// stable log-softmax / log-sigmoid itself.
    bool from_logits = false;
};

/// What a loss expects as targets and what its predictions mean; metrics such as accuracy read
/// this to decide how to compare a prediction with its target.
struct target_description {
    bool sparse_labels = false;  ///< one class index per sample (stored as a float)
    bool binary = false;         ///< independent yes/no outputs
    bool from_logits = false;    ///< predictions are scores, not probabilities
};

/// Probabilities are clipped to [epsilon, 1 - epsilon] before a log, as Keras does.
inline constexpr float probability_epsilon = 1e-7f;

/// A loss: `sum(pred, target, grad, grad_scale, row_loss)` writes each sample's loss into
/// row_loss, writes grad_scale * d(loss)/d(pred) into grad when grad is not null, and returns
/// the sum of the per-sample losses (via the policy's reduction).
template <class L, class Exec>
concept LossFor = ExecutionPolicy<Exec> && requires(const L& loss, const_matrix_view v,
                                                    float* p, float s) {
    { L::name } -> std::convertible_to<std::string_view>;
    { loss.describe() } -> std::same_as<target_description>;
    { loss.template sum<Exec>(v, v, p, s, p) } -> std::convertible_to<double>;
};

namespace detail {
/// Runs a per-row functor (which fills row_loss and, optionally, the gradient) and reduces: in
/// one call where the policy fuses the two (for_each_then_sum), with the same arithmetic.
template <class Exec, class RowFn>
double reduce_rows(std::size_t rows, const RowFn& fn, const float* row_loss) {
    if constexpr (requires { Exec::for_each_then_sum(rows, fn, row_loss); }) {
        return Exec::for_each_then_sum(rows, fn, row_loss);
    } else {
        Exec::for_each(rows, fn);
        return Exec::sum(row_loss, rows);
    }
}
}  // namespace detail

}  // namespace batchwise
