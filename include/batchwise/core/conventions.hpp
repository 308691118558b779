// Where Keras and PyTorch define the same training step differently. batchwise follows Keras
// unless a model is asked for PyTorch's definitions (Model::set_conventions); docs/porting.md
// lists every difference, including those this switch does not cover.
#pragma once

namespace batchwise {

/// Whose definitions a model's step follows where Keras and PyTorch differ:
/// - Adam's epsilon: Keras adds it to sqrt(v), before the bias correction; PyTorch to
///   sqrt(v_hat), after it (the same as Keras's with epsilon x sqrt(1 - beta_2^t));
/// - SGD with momentum: Keras keeps a velocity that holds the learning rate (v = mu v - lr g;
///   w += v), PyTorch a buffer that does not (b = mu b + g; w -= lr b): the same steps while the
///   learning rate is constant, not after it changes;
/// - batch norm's moving variance: Keras averages the batch's biased variance, PyTorch the
///   unbiased one (times n / (n - 1)).
enum class conventions { keras, pytorch };

}  // namespace batchwise
