// What a step computes besides gradients: the compiled loss and metrics, their sums over a
// call's samples, and the checks that targets fit the loss.
#pragma once

#include <array>
#include <algorithm>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "batchwise/core/concepts.hpp"
#include "batchwise/core/errors.hpp"
#include "batchwise/data/dataset.hpp"
#include "batchwise/exec/matrix_view.hpp"
#include "batchwise/losses/any_loss.hpp"
#include "batchwise/metrics/any_metric.hpp"
#include "batchwise/train/logs.hpp"
#include "batchwise/train/tensor_io.hpp"

namespace batchwise {

namespace detail {
/// What a step with a non-finite loss reports: the step, where it sat when it was found after
/// it was queued (`where`), and the samples of an open window it discards.
inline std::string non_finite_loss_message(const char* call, double loss_sum, std::uint64_t step,
                                           const std::string& where, std::size_t discarded) {
    return std::string(call) + ": the loss is not finite (" + std::to_string(loss_sum) + ") at optimizer step " +
           std::to_string(step) + where + "; no update was applied" +
           (discarded ? " and the " + std::to_string(discarded) + " samples accumulated for the step were discarded"
                      : std::string()) +
           " (lower the learning rate, or check the data)";
}
}  // namespace detail

namespace detail {
/// Scales each row's loss and loss gradient by its weight: its class's weight (Keras's
/// class_weight) times its own sample weight, either of which may be absent (null). The class
/// is, as Keras takes it, the rounded target of a one-column target (a class index or a binary
/// label) and the argmax of a wider one (one-hot rows).
struct weight_rows {
    const float* target;
    std::size_t target_cols;
    const float* class_weights;   // null: none
    const float* sample_weights;  // null: none
    float* grad;                  // null: the loss only
    std::size_t grad_cols;
    float* row_loss;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t r) const {
        float w = sample_weights != nullptr ? sample_weights[r] : 1.0f;
        if (class_weights != nullptr) {
            std::size_t c = 0;
            if (target_cols == 1) {
                c = static_cast<std::size_t>(target[r] + 0.5f);
            } else {
                for (std::size_t j = 1; j < target_cols; ++j) {
                    if (target[r * target_cols + j] > target[r * target_cols + c]) c = j;
                }
            }
            w *= class_weights[c];
        }
        row_loss[r] *= w;
        if (grad != nullptr) {
            for (std::size_t j = 0; j < grad_cols; ++j) grad[r * grad_cols + j] *= w;
        }
    }
};
}  // namespace detail

/// Loss and metric sums over some samples; means are taken once, at the end (sums cross every
/// boundary exactly).
struct step_sums {
    double loss = 0.0;                                ///< The sum of the samples' losses.
    std::array<double, logs::max_metrics> metrics{};  ///< Each compiled metric's sum, in order.
    std::size_t samples = 0;                          ///< The samples summed.
};

/// The loss and metrics chosen by compile(), for a network with `InFeatures` inputs and
/// `OutFeatures` outputs per sample.
template <ExecutionPolicy Exec, std::size_t InFeatures, std::size_t OutFeatures>
class step_objective {
public:
    /// What Model::compile checks of a loss and metrics against a network of output `Shape`.
    template <class Shape, class Loss, class... Metrics>
    static void check_compile(const Loss& loss) {
        const target_description d = loss.describe();
        if (d.sparse_labels && Shape::rank != 1) {
            throw shape_error("Model::compile: a sparse loss needs a flat output of class scores, "
                              "but the network outputs " + Shape::str());
        }
        if (d.sparse_labels) {
            // A sparse target is one class index per sample: an error metric would compare the
            // scores with memory past the labels.
            std::string_view dense_only;
            ((dense_only = dense_only.empty() && needs_dense_targets<Metrics> ? Metrics::name : dense_only), ...);
            if (!dense_only.empty()) {
                throw usage_error("Model::compile: metric '" + std::string(dense_only) + "' compares outputs with "
                                  "targets of the same shape, but " + std::string(Loss::name) +
                                  " takes one class index per sample; use metrics::accuracy");
            }
        }
    }

    /// Puts the loss and metrics in place (Model::compile, after its checks).
    template <class Loss, class... Metrics>
    void compile(Loss loss, Metrics... metrics) {
        loss_ = std::make_unique<detail::loss_holder<Loss, Exec>>(std::move(loss));
        metrics_.clear();
        (metrics_.push_back(std::make_unique<detail::metric_holder<Metrics, Exec>>(metrics)), ...);
    }

    /// Whether compile() has given a loss.
    [[nodiscard]] bool compiled() const { return loss_ != nullptr; }
    /// The compiled loss.
    [[nodiscard]] const detail::loss_base<Exec>& loss() const { return *loss_; }
    /// The number of compiled metrics.
    [[nodiscard]] std::size_t metric_count() const { return metrics_.size(); }
    /// What the loss expects as targets (class indices, binary, from logits).
    [[nodiscard]] target_description describe() const { return loss_->describe(); }
    /// Target values per sample: one class index for a sparse loss, else one per output.
    [[nodiscard]] std::size_t target_cols() const {
        return loss_ && loss_->describe().sparse_labels ? 1 : OutFeatures;
    }

    /// The loss sum of `pred` against `target`, writing grad_scale times its gradient into
    /// `grad` (none when grad is null).
    double loss_sum(const_matrix_view pred, const_matrix_view target, float* grad, float grad_scale,
                    float* scratch) const {
        return loss_->sum(pred, target, grad, grad_scale, scratch);
    }
    /// The training loss: loss_sum with each sample weighted by its class's weight when class
    /// weights are set, and by its own weight when `sample_weights` (n floats where the step's
    /// functors read them) is not null. The mean stays over samples (Keras's
    /// sum_over_batch_size), so weighted micro-batches add up to the weighted effective batch
    /// exactly.
    double training_loss_sum(const_matrix_view pred, const_matrix_view target, const float* sample_weights,
                             float* grad, float grad_scale, float* scratch) const {
        const float* classes = class_weights_.empty() ? nullptr : Exec::data(class_weight_storage_);
        return weighted_sum(pred, target, classes, sample_weights, grad, grad_scale, scratch);
    }
    /// The loss sum of evaluation: each sample weighted by its own weight when `sample_weights`
    /// is not null; class weights are for training only, as in Keras.
    double evaluation_loss_sum(const_matrix_view pred, const_matrix_view target, const float* sample_weights,
                               float* scratch) const {
        return weighted_sum(pred, target, nullptr, sample_weights, nullptr, 0.0f, scratch);
    }

    /// Classes a class weight is given for: the labels of a sparse loss, the columns of a wider
    /// target, or 0 and 1 for a single binary output.
    [[nodiscard]] std::size_t class_count() const {
        return loss_->describe().sparse_labels || OutFeatures > 1 ? OutFeatures : 2;
    }
    /// One weight per class (empty: none), for the training loss.
    [[nodiscard]] const std::vector<float>& class_weights() const { return class_weights_; }
    /// Sets the class weights (fit's class_weight scope), copying them where the step reads them.
    void set_class_weights(std::vector<float> w) {
        class_weights_ = std::move(w);
        Exec::reserve(class_weight_storage_, class_weights_.size());
        if (!class_weights_.empty()) {
            Exec::from_host(class_weights_.data(), class_weights_.size(), Exec::data(class_weight_storage_));
        }
    }

    /// Adds every metric's sum over `pred` into `sums`.
    void add_metrics(const_matrix_view pred, const_matrix_view target, float* scratch, step_sums& sums) const {
        const target_description d = loss_->describe();
        for (std::size_t m = 0; m < metrics_.size(); ++m) sums.metrics[m] += metrics_[m]->sum(pred, target, d, scratch);
    }
    /// Records every metric's reduction (a captured step, whose sums land in device slots).
    void record_metrics(const_matrix_view pred, const_matrix_view target, float* scratch) const {
        const target_description d = loss_->describe();
        for (const auto& metric : metrics_) (void)metric->sum(pred, target, d, scratch);
    }

    /// Means of `n` samples from their sums.
    [[nodiscard]] logs make_logs(double loss_sum, const std::array<double, logs::max_metrics>& metric_sums,
                                 std::size_t n) const {
        logs out;
        out.samples = n;
        out.loss = static_cast<float>(loss_sum / static_cast<double>(n));
        out.metric_count = metrics_.size();
        for (std::size_t m = 0; m < metrics_.size(); ++m) {
            out.names[m] = metrics_[m]->name();
            out.values[m] = static_cast<float>(metric_sums[m] / static_cast<double>(n));
        }
        return out;
    }
    /// Means of `n` samples from step_sums.
    [[nodiscard]] logs make_logs(const step_sums& s, std::size_t n) const { return make_logs(s.loss, s.metrics, n); }
    /// The means of the samples the sums hold, which is what has reported so far: replayed steps
    /// may report later, and none may have (the logs are then zero, of 0 samples).
    [[nodiscard]] logs logs_of(const step_sums& s) const {
        logs out = make_logs(s, std::max<std::size_t>(s.samples, 1));
        out.samples = s.samples;
        return out;
    }

    /// Every input finite and every target valid, before any of the batch is trained: a bad
    /// sample stops the call with nothing of the batch half-accumulated.
    void validate(const float* x, const float* y, const std::size_t* ids, std::size_t n, const char* call,
                  bool inputs = true) const {
        if (inputs) detail::check_finite(x, n, InFeatures, ids, call, "input");
        if (loss_->describe().sparse_labels) {
            detail::check_labels(y, n, OutFeatures, ids, call);
        } else {
            detail::check_finite(y, n, OutFeatures, ids, call, "target");
        }
    }

    /// `y` holds one target per input sample (n of them), shaped as the loss expects.
    template <class OutputShape, class Y>
    void check_targets(const Y& y, std::size_t n, const char* call) const {
        std::size_t rows = 0;
        try {
            rows = loss_->describe().sparse_labels ? detail::checked_label_rows(y, call)
                                                   : detail::checked_rows<OutputShape>(y, "targets", call);
        } catch (const shape_error& e) {
            const auto& sh = y.shape();
            throw shape_error(std::string(e.what()) + target_hint(sh.size() > 1 ? sh[sh.size() - 1] : 1));
        }
        if (rows != n) {
            throw data_error(std::string(call) + ": " + std::to_string(n) + " input samples but " +
                             std::to_string(rows) + " targets");
        }
    }

    /// A dataset's samples must be the network's input; its targets what the loss expects.
    template <class InputShape>
    void check_dataset(const data::Dataset& ds, const char* call, bool targets) const {
        if (!ds.batched()) {
            throw usage_error(std::string(call) + ": the dataset is not batched; call .batch(n) on it "
                              "(or pass a batch-size schedule)");
        }
        // The whole shape, as train_on_batch checks arrays: a (784,) sample fed to Input<28, 28>
        // has the right size but is not the image the network was written for.
        const auto& sh = ds.sample_shape();
        if (!std::equal(sh.begin(), sh.end(), InputShape::dims.begin(), InputShape::dims.end())) {
            throw shape_error(std::string(call) + ": the dataset's samples have shape " +
                              detail::runtime_shape_str(sh) + " but the network's Input is " +
                              InputShape::str() + "; reshape the arrays the dataset is made from, or declare "
                              "the Input with that shape (and Reshape inside the network)");
        }
        if (!targets) return;
        const std::size_t want = target_cols();
        if (ds.target_size() != want) {
            throw shape_error(std::string(call) + ": the dataset has " + std::to_string(ds.target_size()) +
                              " target values per sample but the loss " + std::string(loss_->name()) + " needs " +
                              std::to_string(want) + (want == 1 ? " (one class index)" : " (one per network output)") +
                              target_hint(ds.target_size()));
        }
    }

    /// The usual fix when targets of `given` values per sample do not fit the loss: the loss
    /// that takes them, or the output the loss needs. Empty when there is no likely one.
    [[nodiscard]] std::string target_hint(std::size_t given) const {
        const target_description d = loss_->describe();
        if (d.sparse_labels && given == OutFeatures && given > 1) {
            return "; these look like one-hot rows: use CategoricalCrossentropy with them, or give each sample's "
                   "class index (the argmax of its row)";
        }
        if (!d.sparse_labels && given == 1 && OutFeatures > 1) {
            return d.binary ? "; for one class index per sample use SparseCategoricalCrossentropy with this output, "
                              "or a binary loss on Dense<1>"
                            : "; for one class index per sample use SparseCategoricalCrossentropy";
        }
        return "";
    }

private:
    double weighted_sum(const_matrix_view pred, const_matrix_view target, const float* classes,
                        const float* samples, float* grad, float grad_scale, float* scratch) const {
        const double sum = loss_->sum(pred, target, grad, grad_scale, scratch);
        if (classes == nullptr && samples == nullptr) return sum;
        Exec::for_each(pred.rows,
                       detail::weight_rows{target.data, target.cols, classes, samples, grad, pred.cols, scratch});
        return Exec::sum(scratch, pred.rows);
    }

    template <class Metric>
    static constexpr bool needs_dense_targets = [] {
        if constexpr (requires { Metric::needs_dense_targets; }) return bool{Metric::needs_dense_targets};
        return false;
    }();

    std::unique_ptr<detail::loss_base<Exec>> loss_;
    std::vector<std::unique_ptr<detail::metric_base<Exec>>> metrics_;
    std::vector<float> class_weights_;
    // The weights where the step's functors read them; mutable because Exec::data gives a
    // writable pointer, which the weighting pass only reads.
    mutable typename Exec::vector class_weight_storage_;
};

}  // namespace batchwise
