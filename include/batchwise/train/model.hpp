// Model: a Sequential network bound to a batch policy, an execution policy and an accumulation
// policy, with the Keras verbs (compile, train_on_batch, predict, evaluate, save/load weights,
// summary). Every buffer a step needs grows to the largest batch seen and is then reused.
#pragma once

#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "batchwise/batch/accumulation.hpp"
#include "batchwise/batch/batch_policy.hpp"
#include "batchwise/core/concepts.hpp"
#include "batchwise/core/errors.hpp"
#include "batchwise/core/rng.hpp"
#include "batchwise/core/xtensor.hpp"
#include "batchwise/data/dataset.hpp"
#include "batchwise/data/npz.hpp"
#include "batchwise/exec/cpu_blas.hpp"
#include "batchwise/layers/sequential.hpp"
#include "batchwise/losses/loss.hpp"
#include "batchwise/metrics/metrics.hpp"
#include "batchwise/optimizers/optimizer.hpp"
#include "batchwise/train/callbacks.hpp"
#include "batchwise/train/history.hpp"
#include "batchwise/train/logs.hpp"
#include "batchwise/train/progress_bar.hpp"
#include "batchwise/train/tensor_io.hpp"

namespace batchwise {

namespace detail {

// The optimizer, loss and metrics are chosen at run time by compile(), as in Keras; one virtual
// call each per step is the price, and it keeps Model's type independent of them.
template <class Exec>
struct optimizer_base {
    virtual ~optimizer_base() = default;
    [[nodiscard]] virtual std::string_view name() const = 0;
    [[nodiscard]] virtual std::size_t slot_count() const = 0;
    [[nodiscard]] virtual float learning_rate() const = 0;
    virtual void apply(const variable_ref& v, float* const* slots, std::uint64_t step,
                       float lr) const = 0;
};
template <class O, class Exec>
struct optimizer_holder final : optimizer_base<Exec> {
    O opt;
    explicit optimizer_holder(O o) : opt(std::move(o)) {}
    [[nodiscard]] std::string_view name() const override { return O::name; }
    [[nodiscard]] std::size_t slot_count() const override { return opt.slot_count(); }
    [[nodiscard]] float learning_rate() const override { return opt.learning_rate(); }
    void apply(const variable_ref& v, float* const* slots, std::uint64_t step,
               float lr) const override {
        opt.template apply<Exec>(v, slots, step, lr);
    }
};

template <class Exec>
struct loss_base {
    virtual ~loss_base() = default;
    [[nodiscard]] virtual std::string_view name() const = 0;
    [[nodiscard]] virtual target_description describe() const = 0;
    virtual double sum(const_matrix_view pred, const_matrix_view target, float* grad,
                       float grad_scale, float* row_loss) const = 0;
};
template <class L, class Exec>
struct loss_holder final : loss_base<Exec> {
    L loss;
    explicit loss_holder(L l) : loss(std::move(l)) {}
    [[nodiscard]] std::string_view name() const override { return L::name; }
    [[nodiscard]] target_description describe() const override { return loss.describe(); }
    double sum(const_matrix_view pred, const_matrix_view target, float* grad, float grad_scale,
               float* row_loss) const override {
        return loss.template sum<Exec>(pred, target, grad, grad_scale, row_loss);
    }
};

template <class Exec>
struct metric_base {
    virtual ~metric_base() = default;
    [[nodiscard]] virtual std::string_view name() const = 0;
    virtual double sum(const_matrix_view pred, const_matrix_view target, target_description d,
                       float* scratch) const = 0;
};
template <class M, class Exec>
struct metric_holder final : metric_base<Exec> {
    M metric;
    explicit metric_holder(M m) : metric(std::move(m)) {}
    [[nodiscard]] std::string_view name() const override { return M::name; }
    double sum(const_matrix_view pred, const_matrix_view target, target_description d,
               float* scratch) const override {
        return metric.template sum<Exec>(pred, target, d, scratch);
    }
};

/// "BatchNormalization" -> "batch_normalization", "ReLU" -> "re_lu": Keras's layer names.
inline std::string snake_case(std::string_view camel) {
    std::string s;
    for (std::size_t i = 0; i < camel.size(); ++i) {
        const char c = camel[i];
        const bool upper = c >= 'A' && c <= 'Z';
        if (upper && i > 0) {
            const char prev = camel[i - 1];
            const bool next_lower = i + 1 < camel.size() && camel[i + 1] >= 'a' &&
                                    camel[i + 1] <= 'z';
            if ((prev >= 'a' && prev <= 'z') || next_lower) s += '_';
        }
        s += upper ? static_cast<char>(c - 'A' + 'a') : c;
    }
    return s;
}

/// "1,234,567", as Keras prints parameter counts.
inline std::string with_thousands(std::size_t n) {
    std::string digits = std::to_string(n), out;
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
        out += digits[i];
    }
    return out;
}

}  // namespace detail

/// Options of Model::fit, named as Keras names them.
struct fit_options {
    /// Train until this many epochs have been completed (counting from epoch 0).
    std::uint64_t epochs = 1;
    /// First epoch to train; unset: 0, or where a loaded checkpoint left off.
    std::optional<std::uint64_t> initial_epoch{};
    /// Evaluated at the end of every epoch into "val_" values.
    std::optional<data::Dataset> validation{};
    /// At most this many batches per epoch (each epoch still starts a fresh pass); 0: all.
    /// A plain count rather than an optional: GCC 12 warns falsely about optional payloads.
    std::size_t steps_per_epoch = 0;
    /// 0: silent; 1: progress bar (redrawn in place on a terminal); 2: one line per epoch.
    int verbose = 1;
};

template <class Net, BatchPolicy Batch = dynamic_batch, ExecutionPolicy Exec = cpu_blas,
          AccumulationPolicy Accum = no_accumulation>
class Model {
    static_assert(is_sequential_v<Net>,
                  "batchwise::Model<Net, ...>: Net must be a batchwise::Sequential<Input<...>, "
                  "layers...>.");
    static_assert(Accum::micro_batches == 1,
                  "batchwise::Model: this build trains with no_accumulation only; accumulation "
                  "policies that span several micro-batches are not available yet.");

public:
    using network_type = typename Net::template network<Exec>;
    using input_shape = typename Net::input_shape;
    using output_shape = typename Net::output_shape;
    using batch_policy = Batch;
    using execution_policy = Exec;
    using accumulation_policy = Accum;
    static constexpr std::size_t in_features = input_shape::size;
    static constexpr std::size_t out_features = output_shape::size;
    /// A batch of inputs or outputs: xtensor_fixed for a static batch, xtensor for a dynamic one.
    using input_batch = typename detail::batch_tensor<input_shape, Batch::extent>::type;
    using output_batch = typename detail::batch_tensor<output_shape, Batch::extent>::type;
    /// What predict returns for any number of samples.
    using output_tensor = xt::xtensor<float, output_shape::rank + 1>;
    /// predict/evaluate's default chunk: Keras's 32, or the static batch itself.
    static constexpr std::size_t default_batch_size = Batch::is_static ? Batch::extent : 32;

    /// A variable with the name it is saved under ("dense_1/kernel").
    struct variable_entry {
        std::string name;
        std::size_t layer = 0;
        variable_ref ref;
    };

    explicit Model(seed s = seed{}) : seed_(s.value), net_(std::make_unique<network_type>()) {
        Exec::prepare();
        net_->initialize(seed_);
        name_layers();
        net_->for_each_variable([&](std::size_t layer, const variable_ref& v) {
            variables_.push_back({layer_names_[layer] + "/" + std::string(v.name), layer, v});
        });
        if constexpr (Batch::is_static) reserve(Batch::extent);
    }

    Model(const Model&) = delete;
    Model& operator=(const Model&) = delete;
    Model(Model&&) noexcept = default;
    Model& operator=(Model&&) noexcept = default;
    ~Model() = default;

    /// Chooses the optimizer, the loss and the metrics, and resets the optimizer state.
    template <class Optimizer, class Loss, class... Metrics>
    void compile(Optimizer optimizer, Loss loss, Metrics... metrics) {
        static_assert(OptimizerFor<Optimizer, Exec>,
                      "Model::compile: the first argument must be an optimizer (SGD, Adam, AdamW, "
                      "RMSprop, or a type satisfying batchwise::OptimizerFor).");
        static_assert(LossFor<Loss, Exec>,
                      "Model::compile: the second argument must be a loss (MeanSquaredError, "
                      "BinaryCrossentropy, CategoricalCrossentropy, SparseCategoricalCrossentropy, "
                      "or a type satisfying batchwise::LossFor).");
        static_assert((MetricFor<Metrics, Exec> && ...),
                      "Model::compile: every argument after the loss must be a metric such as "
                      "batchwise::metrics::accuracy.");
        static_assert(sizeof...(Metrics) <= logs::max_metrics,
                      "Model::compile: at most logs::max_metrics metrics.");
        const target_description d = loss.describe();
        if (d.sparse_labels && output_shape::rank != 1) {
            throw shape_error("Model::compile: a sparse loss needs a flat output of class scores, "
                              "but the network outputs " + output_shape::str());
        }
        optimizer_ = std::make_unique<detail::optimizer_holder<Optimizer, Exec>>(std::move(optimizer));
        loss_ = std::make_unique<detail::loss_holder<Loss, Exec>>(std::move(loss));
        metrics_.clear();
        (metrics_.push_back(std::make_unique<detail::metric_holder<Metrics, Exec>>(metrics)), ...);
        learning_rate_ = optimizer_->learning_rate();
        iterations_ = 0;
        const std::size_t slots = optimizer_->slot_count();
        slot_storage_.clear();
        slot_pointers_.clear();
        for (const auto& v : variables_) {
            std::array<float*, max_slots> ptrs{};
            if (v.ref.trainable()) {
                if (slots > max_slots) throw usage_error("Model::compile: too many optimizer slots");
                for (std::size_t k = 0; k < slots; ++k) {
                    slot_storage_.emplace_back();
                    Exec::reserve(slot_storage_.back(), v.ref.size());
                    Exec::fill(Exec::data(slot_storage_.back()), v.ref.size(), 0.0f);
                }
            }
            slot_pointers_.push_back(ptrs);
        }
        // Pointers are taken once storage has stopped moving.
        std::size_t next = 0;
        for (std::size_t i = 0; i < variables_.size(); ++i) {
            if (!variables_[i].ref.trainable()) continue;
            for (std::size_t k = 0; k < slots; ++k) slot_pointers_[i][k] = Exec::data(slot_storage_[next++]);
        }
    }

    /// One optimizer step on one batch (x: (n, input dims...), y: targets). Returns the loss and
    /// metrics of the batch as it was before the update.
    template <class X, class Y>
    logs train_on_batch(const X& x, const Y& y) {
        return train_step(stage_batch(x, y, "train_on_batch"), "train_on_batch");
    }

    /// Trains on every batch of `train` for each epoch, with validation, callbacks (a
    /// ProgressBar is added unless verbose is 0 or one is given) and exact resumption from a
    /// checkpoint. Each batch may have its own size: the dataset decides.
    template <class... Callbacks>
    History fit(const data::Dataset& train, const fit_options& options = {}, Callbacks&... callbacks) {
        static_assert((std::is_base_of_v<Callback, Callbacks> && ...),
                      "Model::fit: every argument after the options must be a callback deriving "
                      "from batchwise::Callback (EarlyStopping, ModelCheckpoint, ...).");
        require_compiled("fit");
        check_dataset(train, "fit");
        if (options.validation) check_dataset(*options.validation, "fit (validation data)");

        std::vector<Callback*> cbs{static_cast<Callback*>(&callbacks)...};
        ProgressBar default_bar(ProgressBar::options{
            .interactive = options.verbose == 2 ? std::optional<bool>(false) : std::nullopt});
        const bool has_bar = (callbacks.is_progress_bar() || ... || false);
        if (options.verbose > 0 && !has_bar) cbs.insert(cbs.begin(), &default_bar);

        fit_context ctx(*this, options.epochs);
        History history;
        const bool resuming = !options.initial_epoch && resume_.has_value();
        std::uint64_t epoch = options.initial_epoch.value_or(resuming ? resume_->epoch : 0);
        std::size_t skip_steps = resuming ? resume_->step : 0;
        resume_.reset();

        for (Callback* cb : cbs) cb->on_train_begin(ctx);
        for (; epoch < options.epochs && !ctx.stop_requested(); ++epoch) {
            const auto t0 = std::chrono::steady_clock::now();
            auto reader = train.read(epoch);
            const std::size_t available = train.cardinality(epoch);
            const std::size_t steps =
                options.steps_per_epoch == 0 ? available : std::min(available, options.steps_per_epoch);
            if constexpr (Batch::is_static) check_static_epoch(train, epoch);
            set_position(epoch, 0);
            fit_epoch_ = epoch;
            fit_step_ = 0;
            for (Callback* cb : cbs) cb->on_epoch_begin(ctx, epoch, steps);

            // Resuming inside an epoch: read past the batches already trained, so that the
            // sample positions (and with them dropout masks) are those of the interrupted run.
            std::size_t step = 0;
            for (; step < skip_steps && reader.next(batch_); ++step) sample_cursor_ += batch_.rows;
            fit_step_ = step;
            skip_steps = 0;

            double loss_sum = 0.0;
            std::array<double, logs::max_metrics> metric_sums{};
            std::size_t samples = 0;
            std::vector<std::pair<std::size_t, std::size_t>> sizes;
            bool non_finite = false;
            bool exhausted = false;
            while (step < steps) {
                if (!reader.next(batch_)) {
                    exhausted = true;
                    break;
                }
                for (Callback* cb : cbs) cb->on_batch_begin(ctx, step, batch_.rows);
                logs l;
                try {
                    l = train_rows(batch_, "fit");
                } catch (const numeric_error& e) {
                    bool handled = false;
                    for (Callback* cb : cbs) handled = cb->on_non_finite_loss(ctx, e) || handled;
                    if (!handled) throw;
                    non_finite = true;
                    break;
                }
                const auto n = static_cast<double>(batch_.rows);
                loss_sum += l.loss * n;
                for (std::size_t m = 0; m < l.metric_count; ++m) metric_sums[m] += l.values[m] * n;
                samples += batch_.rows;
                if (sizes.empty() || sizes.back().first != batch_.rows) {
                    sizes.emplace_back(batch_.rows, 0);
                }
                ++sizes.back().second;
                fit_step_ = ++step;
                const logs running = make_logs(loss_sum, metric_sums, samples);
                for (Callback* cb : cbs) cb->on_batch_end(ctx, step - 1, l, running);
                if (ctx.stop_requested()) break;
            }
            if (samples == 0 && non_finite) break;  // nothing of this epoch was trained

            epoch_logs el;
            const logs mean = make_logs(loss_sum, metric_sums, std::max<std::size_t>(samples, 1));
            el.set("loss", mean.loss);
            for (std::size_t m = 0; m < mean.metric_count; ++m) el.set(std::string(mean.names[m]), mean.values[m]);
            if (options.validation && !non_finite) {
                const logs v = evaluate(*options.validation);
                el.set("val_loss", v.loss);
                for (std::size_t m = 0; m < v.metric_count; ++m) {
                    el.set("val_" + std::string(v.names[m]), v.values[m]);
                }
            }
            el.set("learning_rate", learning_rate_);
            // At the natural end of the data one more read registers a tail that
            // drop_remainder left out, so that History reports it.
            if (!exhausted && step == available && !ctx.stop_requested()) exhausted = !reader.next(batch_);
            if (exhausted || step == steps) {
                // The epoch is complete: a checkpoint taken now resumes at the next one.
                fit_epoch_ = epoch + 1;
                fit_step_ = 0;
            }
            history.epochs.push_back(epoch);
            for (const auto& [name, v] : el.values) history.history[name].push_back(v);
            history.batch_sizes.push_back(std::move(sizes));
            history.steps.push_back(step);
            history.samples.push_back(samples);
            history.dropped_samples.push_back(reader.dropped());
            history.seconds.push_back(
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
            for (Callback* cb : cbs) cb->on_epoch_end(ctx, epoch, el);
        }
        history.stop_reason = ctx.stop_reason();
        for (Callback* cb : cbs) cb->on_train_end(ctx, history);
        return history;
    }

    /// Loss and metrics over every batch of a dataset, in inference mode.
    logs evaluate(const data::Dataset& ds) {
        require_compiled("evaluate");
        check_dataset(ds, "evaluate");
        const target_description d = loss_->describe();
        double loss_sum = 0.0;
        std::array<double, logs::max_metrics> metric_sums{};
        std::size_t n = 0;
        auto reader = ds.read(0);
        while (reader.next(eval_batch_)) {
            for_each_chunk(eval_batch_, [&](const float* x, const float* y, const std::size_t* ids,
                                            std::size_t rows) {
                stage_rows_targets(y, ids, rows, "evaluate");
                const const_matrix_view pred = infer_rows(x, ids, rows, "evaluate");
                const const_matrix_view target = target_view(rows);
                loss_sum += loss_->sum(pred, target, nullptr, 0.0f, Exec::data(row_scratch_));
                for (std::size_t m = 0; m < metrics_.size(); ++m) {
                    metric_sums[m] += metrics_[m]->sum(pred, target, d, Exec::data(row_scratch_));
                }
            });
            n += eval_batch_.rows;
        }
        if (n == 0) throw data_error("evaluate: the dataset yielded no samples");
        return make_logs(loss_sum, metric_sums, n);
    }

    /// Outputs for every sample of a dataset, in the dataset's order.
    output_tensor predict(const data::Dataset& ds) {
        check_dataset(ds, "predict", false);
        typename output_tensor::shape_type out_shape;
        out_shape[0] = ds.samples(0);
        for (std::size_t d = 0; d < output_shape::rank; ++d) out_shape[d + 1] = output_shape::dims[d];
        output_tensor result(out_shape);
        std::size_t written = 0;
        auto reader = ds.read(0);
        while (reader.next(eval_batch_)) {
            for_each_chunk(eval_batch_, [&](const float* x, const float*, const std::size_t* ids,
                                            std::size_t rows) {
                const const_matrix_view pred = infer_rows(x, ids, rows, "predict");
                Exec::to_host(pred.data, rows * out_features, result.data() + written * out_features);
                written += rows;
            });
        }
        return result;
    }

    /// Writes the whole training state: every variable (as save_weights), the optimizer's slots
    /// and step count, the learning rate, the seed, and the position in training (epoch, step,
    /// sample). fit() after load_checkpoint() continues exactly where this left off.
    void save_checkpoint(const std::filesystem::path& path) const {
        require_compiled("save_checkpoint");
        auto arrays = weight_arrays();
        const std::size_t slots = optimizer_->slot_count();
        for (std::size_t i = 0; i < variables_.size(); ++i) {
            if (!variables_[i].ref.trainable()) continue;
            for (std::size_t k = 0; k < slots; ++k) {
                data::npz_array a{variable_shape(variables_[i].ref), std::vector<float>(variables_[i].ref.size())};
                Exec::to_host(slot_pointers_[i][k], variables_[i].ref.size(), a.values.data());
                arrays.emplace_back("optimizer/" + variables_[i].name + "/slot" + std::to_string(k), std::move(a));
            }
        }
        arrays.emplace_back("optimizer/iterations", data::int64_array({}, {static_cast<std::int64_t>(iterations_)}));
        arrays.emplace_back("optimizer/learning_rate", data::npz_array{{}, {learning_rate_}});
        arrays.emplace_back("training/position",
                            data::int64_array({4}, {static_cast<std::int64_t>(fit_epoch_),
                                                    static_cast<std::int64_t>(fit_step_),
                                                    static_cast<std::int64_t>(sample_cursor_),
                                                    static_cast<std::int64_t>(seed_)}));
        data::write_npz(path, arrays);
    }

    /// Restores what save_checkpoint wrote. The model must be compiled with the same kind of
    /// optimizer (the slots must match); everything is checked before anything is changed.
    void load_checkpoint(const std::filesystem::path& path) {
        require_compiled("load_checkpoint");
        const auto arrays = data::read_npz(path);
        auto find = [&](const std::string& name) -> const data::npz_array& {
            for (const auto& [n, a] : arrays) {
                if (n == name) return a;
            }
            throw shape_error("load_checkpoint: " + path.string() + " has no array '" + name +
                              "' (a file from save_weights holds weights only; use load_weights)");
        };
        const auto& iterations = find("optimizer/iterations");
        const auto& lr = find("optimizer/learning_rate");
        const auto& position = find("training/position");
        if (iterations.integers.size() != 1 || lr.values.size() != 1 || position.integers.size() != 4) {
            throw shape_error("load_checkpoint: " + path.string() + " has malformed training state");
        }
        const std::size_t slots = optimizer_->slot_count();
        std::vector<std::pair<const data::npz_array*, float*>> slot_copies;
        for (std::size_t i = 0; i < variables_.size(); ++i) {
            if (!variables_[i].ref.trainable()) continue;
            for (std::size_t k = 0; k < slots; ++k) {
                const auto& a = find("optimizer/" + variables_[i].name + "/slot" + std::to_string(k));
                if (a.values.size() != variables_[i].ref.size()) {
                    throw shape_error("load_checkpoint: optimizer slot of '" + variables_[i].name +
                                      "' has " + std::to_string(a.values.size()) + " values, expected " +
                                      std::to_string(variables_[i].ref.size()));
                }
                slot_copies.emplace_back(&a, slot_pointers_[i][k]);
            }
        }
        const std::string extra_slot = variables_.empty() ? "" : "optimizer/" + variables_.front().name + "/slot" + std::to_string(slots);
        for (const auto& [n, a] : arrays) {
            if (n == extra_slot) {
                throw shape_error("load_checkpoint: " + path.string() + " was written with an optimizer "
                                  "that keeps more state than the compiled " + std::string(optimizer_->name()));
            }
        }
        load_weights_from(arrays, path);  // checks all weights, then copies them
        for (const auto& [a, dst] : slot_copies) Exec::from_host(a->values.data(), a->values.size(), dst);
        iterations_ = static_cast<std::uint64_t>(iterations.integers[0]);
        learning_rate_ = lr.values[0];
        seed_ = static_cast<std::uint64_t>(position.integers[3]);
        fit_epoch_ = static_cast<std::uint64_t>(position.integers[0]);
        fit_step_ = static_cast<std::size_t>(position.integers[1]);
        set_position(fit_epoch_, static_cast<std::uint64_t>(position.integers[2]));
        resume_ = resume_point{fit_epoch_, fit_step_};
    }

    /// Loss of the batch in training mode and every parameter gradient (left in variables()'s
    /// grad buffers) without updating anything but batch norm's moving statistics. Meant for
    /// gradient checks and custom loops.
    template <class X, class Y>
    float loss_and_gradients(const X& x, const Y& y) {
        const std::size_t rows = stage_batch(x, y, "loss_and_gradients");
        return forward_loss_backward(rows, "loss_and_gradients").loss;
    }

    /// Outputs for any number of samples, computed in inference mode in chunks of batch_size.
    template <class X>
    output_tensor predict(const X& x, std::size_t batch_size = default_batch_size) {
        const std::size_t n = detail::checked_rows<input_shape>(x, "inputs", "predict");
        check_chunk(batch_size, "predict");
        typename output_tensor::shape_type out_shape;
        out_shape[0] = n;
        for (std::size_t d = 0; d < output_shape::rank; ++d) out_shape[d + 1] = output_shape::dims[d];
        output_tensor result(out_shape);
        with_float_rows(x, [&](const float* src) {
            for (std::size_t first = 0; first < n; first += batch_size) {
                const std::size_t rows = std::min(batch_size, n - first);
                const const_matrix_view pred = infer_chunk(src, first, rows, "predict");
                Exec::to_host(pred.data, rows * out_features, result.data() + first * out_features);
            }
        });
        return result;
    }

    /// Loss and metrics over all samples in inference mode, exactly averaged over samples.
    template <class X, class Y>
    logs evaluate(const X& x, const Y& y, std::size_t batch_size = default_batch_size) {
        require_compiled("evaluate");
        const std::size_t n = detail::checked_rows<input_shape>(x, "inputs", "evaluate");
        check_targets(y, n, "evaluate");
        check_chunk(batch_size, "evaluate");
        if (n == 0) throw data_error("evaluate: no samples to evaluate");
        const target_description d = loss_->describe();
        double loss_sum = 0.0;
        std::array<double, logs::max_metrics> metric_sums{};
        // Targets flattened to floats once, so that chunks index them directly.
        xt::xtensor<float, 1> y_float = xt::empty<float>({static_cast<std::size_t>(y.size())});
        std::size_t k = 0;
        for (auto it = y.begin(); it != y.end(); ++it) y_float(k++) = static_cast<float>(*it);
        with_float_rows(x, [&](const float* src) {
            for (std::size_t first = 0; first < n; first += batch_size) {
                const std::size_t rows = std::min(batch_size, n - first);
                stage_targets(y_float.data(), first, rows, "evaluate");
                const const_matrix_view pred = infer_chunk(src, first, rows, "evaluate");
                const const_matrix_view target = target_view(rows);
                loss_sum += loss_->sum(pred, target, nullptr, 0.0f, Exec::data(row_scratch_));
                for (std::size_t m = 0; m < metrics_.size(); ++m) {
                    metric_sums[m] += metrics_[m]->sum(pred, target, d, Exec::data(row_scratch_));
                }
            }
        });
        return make_logs(loss_sum, metric_sums, n);
    }

    /// The model's variables in order, with their saved names.
    [[nodiscard]] const std::vector<variable_entry>& variables() const { return variables_; }

    /// Host copies of every variable, in order, with their names (as Keras's get_weights).
    [[nodiscard]] std::vector<std::pair<std::string, xt::xtensor<float, 1>>> get_weights() const {
        std::vector<std::pair<std::string, xt::xtensor<float, 1>>> out;
        for (const auto& v : variables_) {
            xt::xtensor<float, 1> values = xt::zeros<float>({v.ref.size()});
            Exec::to_host(v.ref.value, v.ref.size(), values.data());
            out.emplace_back(v.name, std::move(values));
        }
        return out;
    }

    /// Writes every variable to a NumPy .npz archive, one array per variable named
    /// "layer/variable" (e.g. "dense_1/kernel", shape (in, out) as Keras stores it).
    void save_weights(const std::filesystem::path& path) const { data::write_npz(path, weight_arrays()); }

    /// Reads weights written by save_weights or save_checkpoint (or by numpy with the same names
    /// and shapes). All arrays are checked before any is copied, so a bad file leaves the model
    /// untouched.
    void load_weights(const std::filesystem::path& path) { load_weights_from(data::read_npz(path), path); }

    /// Layers, output shapes (the batch dimension is None for a dynamic batch) and parameter
    /// counts, laid out as Keras prints them.
    void summary(std::ostream& os = std::cout) const {
        const std::string rule(65, '_'), double_rule(65, '=');
        auto row = [&](const std::string& a, const std::string& b, const std::string& c) {
            std::string line = " " + a;
            line.resize(std::max<std::size_t>(line.size() + 1, 29), ' ');
            line += b;
            line.resize(std::max<std::size_t>(line.size() + 1, 55), ' ');
            os << line << c << "\n";
        };
        os << "Model: \"sequential\" (batch " << Batch::str() << ", " << Exec::name << ")\n"
           << rule << "\n";
        row("Layer (type)", "Output Shape", "Param #");
        os << double_rule << "\n";
        [&]<std::size_t... I>(std::index_sequence<I...>) {
            ((row(layer_names_[I] + " (" + std::string(Net::layer_names[I]) + ")",
                  batch_shape_str<I>(),
                  detail::with_thousands(network_type::template layer_impl<I>::trainable_count +
                                         network_type::template layer_impl<I>::non_trainable_count)),
              (I + 1 < sizeof...(I) ? void(os << "\n") : void())),
             ...);
        }(std::make_index_sequence<network_type::size>{});
        os << double_rule << "\n"
           << "Total params: " << detail::with_thousands(count_params()) << "\n"
           << "Trainable params: " << detail::with_thousands(network_type::trainable_count) << "\n"
           << "Non-trainable params: " << detail::with_thousands(network_type::non_trainable_count)
           << "\n"
           << rule << "\n";
    }

    [[nodiscard]] static constexpr std::size_t count_params() {
        return network_type::trainable_count + network_type::non_trainable_count;
    }

    [[nodiscard]] float learning_rate() const { return learning_rate_; }
    void set_learning_rate(float lr) { learning_rate_ = lr; }
    /// Optimizer steps taken since compile().
    [[nodiscard]] std::uint64_t iterations() const { return iterations_; }
    [[nodiscard]] std::uint64_t seed_value() const { return seed_; }

    /// Where the next batch sits in training: random layers key on (epoch, sample index), so a
    /// data loop that sets this makes dropout masks independent of batch boundaries.
    void set_position(std::uint64_t epoch, std::uint64_t first_sample) {
        epoch_ = epoch;
        sample_cursor_ = first_sample;
    }
    [[nodiscard]] std::uint64_t epoch() const { return epoch_; }
    [[nodiscard]] std::uint64_t sample_cursor() const { return sample_cursor_; }

    /// Number of samples the buffers currently hold; grows, never shrinks.
    [[nodiscard]] std::size_t capacity() const { return capacity_; }

private:
    static constexpr std::size_t max_slots = 4;

    /// What fit's callbacks see of this model.
    class fit_context final : public training_context {
    public:
        fit_context(Model& m, std::uint64_t epochs) : m_(m), epochs_(epochs) {}
        [[nodiscard]] float learning_rate() const override { return m_.learning_rate_; }
        void set_learning_rate(float lr) override { m_.learning_rate_ = lr; }
        [[nodiscard]] std::vector<float> weights() const override {
            std::vector<float> w;
            for (const auto& v : m_.variables_) {
                const std::size_t at = w.size();
                w.resize(at + v.ref.size());
                Exec::to_host(v.ref.value, v.ref.size(), w.data() + at);
            }
            return w;
        }
        void set_weights(const std::vector<float>& w) override {
            std::size_t at = 0;
            for (const auto& v : m_.variables_) {
                Exec::from_host(w.data() + at, v.ref.size(), v.ref.value);
                at += v.ref.size();
            }
        }
        [[nodiscard]] bool weights_finite() const override {
            for (float x : weights()) {
                if (!std::isfinite(x)) return false;
            }
            return true;
        }
        void save_weights(const std::filesystem::path& path) const override { m_.save_weights(path); }
        void save_checkpoint(const std::filesystem::path& path) const override { m_.save_checkpoint(path); }
        [[nodiscard]] std::uint64_t epochs() const override { return epochs_; }

    private:
        Model& m_;
        std::uint64_t epochs_;
    };

    struct resume_point {
        std::uint64_t epoch;
        std::size_t step;
    };

    static std::vector<std::size_t> variable_shape(const variable_ref& v) {
        return v.cols == 0 ? std::vector<std::size_t>{v.rows} : std::vector<std::size_t>{v.rows, v.cols};
    }

    [[nodiscard]] std::vector<std::pair<std::string, data::npz_array>> weight_arrays() const {
        std::vector<std::pair<std::string, data::npz_array>> arrays;
        for (const auto& v : variables_) {
            data::npz_array a{variable_shape(v.ref), std::vector<float>(v.ref.size())};
            Exec::to_host(v.ref.value, v.ref.size(), a.values.data());
            arrays.emplace_back(v.name, std::move(a));
        }
        return arrays;
    }

    /// Weight arrays by name; the optimizer and training state of a checkpoint are skipped.
    void load_weights_from(const std::vector<std::pair<std::string, data::npz_array>>& arrays,
                           const std::filesystem::path& path) {
        std::vector<const data::npz_array*> found(variables_.size(), nullptr);
        for (const auto& [name, array] : arrays) {
            if (name.starts_with("optimizer/") || name.starts_with("training/")) continue;
            std::size_t i = 0;
            while (i < variables_.size() && variables_[i].name != name) ++i;
            if (i == variables_.size()) {
                throw shape_error("load_weights: " + path.string() + " holds an array '" + name +
                                  "' that this model does not have; its variables are " +
                                  variable_list());
            }
            const std::vector<std::size_t> expected = variable_shape(variables_[i].ref);
            if (array.shape != expected || array.dtype != data::npz_dtype::float32) {
                throw shape_error("load_weights: array '" + name + "' in " + path.string() +
                                  " has shape " + detail::runtime_shape_str(array.shape) +
                                  (array.dtype != data::npz_dtype::float32 ? " of integers" : "") +
                                  " but the model's variable has shape " +
                                  detail::runtime_shape_str(expected) + " of floats");
            }
            found[i] = &array;
        }
        for (std::size_t i = 0; i < variables_.size(); ++i) {
            if (found[i] == nullptr) {
                throw shape_error("load_weights: " + path.string() + " has no array '" +
                                  variables_[i].name + "'");
            }
        }
        for (std::size_t i = 0; i < variables_.size(); ++i) {
            Exec::from_host(found[i]->values.data(), variables_[i].ref.size(), variables_[i].ref.value);
        }
    }

    /// Optimizer step on staged rows: forward, loss, backward, update, advance the position.
    logs train_step(std::size_t rows, const char* call) {
        logs out = forward_loss_backward(rows, call);
        ++iterations_;
        for (std::size_t i = 0; i < variables_.size(); ++i) {
            if (variables_[i].ref.trainable()) {
                optimizer_->apply(variables_[i].ref, slot_pointers_[i].data(), iterations_,
                                  learning_rate_);
            }
        }
        sample_cursor_ += rows;
        return out;
    }

    /// A dataset's samples must be the network's input; its targets what the loss expects.
    void check_dataset(const data::Dataset& ds, const char* call, bool targets = true) const {
        if (!ds.batched()) {
            throw usage_error(std::string(call) + ": the dataset is not batched; call .batch(n) on it "
                              "(or pass a batch-size schedule)");
        }
        if (ds.feature_size() != in_features) {
            throw shape_error(std::string(call) + ": the dataset's samples have shape " +
                              detail::runtime_shape_str(ds.sample_shape()) + " but the network's Input is " +
                              input_shape::str());
        }
        if (!targets) return;
        const std::size_t want = loss_->describe().sparse_labels ? 1 : out_features;
        if (ds.target_size() != want) {
            throw shape_error(std::string(call) + ": the dataset has " + std::to_string(ds.target_size()) +
                              " target values per sample but the loss " + std::string(loss_->name()) +
                              " needs " + std::to_string(want) +
                              (want == 1 ? " (one class index)" : " (one per network output)"));
        }
    }

    /// A static-batch model trains only full batches; a ragged epoch is refused before it
    /// starts, so that no sample is silently lost.
    void check_static_epoch(const data::Dataset& ds, std::uint64_t epoch) const {
        if (ds.samples(epoch) != ds.cardinality(epoch) * Batch::extent) {
            throw shape_error("fit: the model has static_batch<" + std::to_string(Batch::extent) +
                              "> but epoch " + std::to_string(epoch) + " of the dataset has " +
                              std::to_string(ds.samples(epoch)) + " samples in " +
                              std::to_string(ds.cardinality(epoch)) + " batches; batch the data by " +
                              std::to_string(Batch::extent) +
                              " with drop_remainder = true (the dropped samples are reported), or use "
                              "dynamic_batch");
        }
    }

    /// One dataset batch through train_step, with its sample ids in any error message.
    logs train_rows(const data::batch_data& b, const char* call) {
        if (Batch::is_static && b.rows != Batch::extent) {
            throw shape_error(std::string(call) + ": the model has static_batch<" +
                              std::to_string(Batch::extent) + "> but a batch has " +
                              std::to_string(b.rows) + " samples");
        }
        reserve(b.rows);
        detail::copy_checked(b.features.data(), b.rows, in_features, host_staging_x(), 0, call, "input",
                             b.ids.data());
        upload(host_staging_x(), b.rows * in_features, x_);
        stage_rows_targets(b.targets.data(), b.ids.data(), b.rows, call);
        return train_step(b.rows, call);
    }

    void stage_rows_targets(const float* y, const std::size_t* ids, std::size_t rows, const char* call) {
        reserve(rows);
        if (loss_->describe().sparse_labels) {
            detail::copy_labels(y, rows, out_features, host_staging_y(), 0, call, ids);
            upload(host_staging_y(), rows, y_);
        } else {
            detail::copy_checked(y, rows, out_features, host_staging_y(), 0, call, "target", ids);
            upload(host_staging_y(), rows * out_features, y_);
        }
    }

    const_matrix_view infer_rows(const float* x, const std::size_t* ids, std::size_t rows, const char* call) {
        reserve(rows);
        detail::copy_checked(x, rows, in_features, host_staging_x(), 0, call, "input", ids);
        upload(host_staging_x(), rows * in_features, x_);
        pass_context ctx{.training = false, .seed = seed_, .epoch = epoch_, .first_sample = 0};
        return net_->forward({Exec::data(x_), rows, in_features}, ctx);
    }

    /// Calls f(x, y, ids, rows) on pieces of a batch no larger than the model can hold: the
    /// whole batch for a dynamic batch, chunks of N for static_batch<N>.
    template <class F>
    void for_each_chunk(const data::batch_data& b, F&& f) {
        const std::size_t chunk = Batch::is_static ? Batch::extent : std::max<std::size_t>(b.rows, 1);
        for (std::size_t first = 0; first < b.rows; first += chunk) {
            const std::size_t rows = std::min(chunk, b.rows - first);
            f(b.features.data() + first * b.feature_size, b.targets.data() + first * b.target_size,
              b.ids.data() + first, rows);
        }
    }

    void name_layers() {
        for (std::size_t i = 0; i < network_type::size; ++i) {
            const std::string base = detail::snake_case(Net::layer_names[i]);
            std::size_t k = 0;
            for (std::size_t j = 0; j < i; ++j) k += Net::layer_names[j] == Net::layer_names[i];
            layer_names_[i] = k == 0 ? base : base + "_" + std::to_string(k);
        }
    }

    template <std::size_t I>
    static std::string batch_shape_str() {
        std::string s = "(" + Batch::str();
        for (auto d : Net::template layer_output_shape<I>::dims) s += ", " + std::to_string(d);
        return s + ")";
    }

    [[nodiscard]] std::string variable_list() const {
        std::string s;
        for (const auto& v : variables_) s += (s.empty() ? "" : ", ") + v.name;
        return s;
    }

    void require_compiled(const char* call) const {
        if (!loss_) {
            throw usage_error(std::string(call) +
                              ": the model is not compiled; call compile(optimizer, loss, "
                              "metrics...) first");
        }
    }

    void check_chunk(std::size_t batch_size, const char* call) const {
        if (batch_size == 0) throw shape_error(std::string(call) + ": batch_size must be positive");
        if (Batch::is_static && batch_size > Batch::extent) {
            throw shape_error(std::string(call) + ": batch_size " + std::to_string(batch_size) +
                              " exceeds the model's static batch of " +
                              std::to_string(Batch::extent));
        }
    }

    /// Grows every buffer to hold `rows` samples. The only place a step may allocate.
    void reserve(std::size_t rows) {
        if (rows <= capacity_) return;
        net_->reserve(rows);
        Exec::reserve(x_, rows * in_features);
        Exec::reserve(y_, rows * out_features);
        Exec::reserve(grad_, rows * out_features);
        Exec::reserve(row_scratch_, rows);
        if constexpr (!host_memory) {
            host_x_.resize(rows * in_features);
            host_y_.resize(rows * out_features);
        }
        capacity_ = rows;
    }

    static constexpr bool host_memory = [] {
        if constexpr (requires { Exec::host_memory; }) return bool{Exec::host_memory};
        return false;
    }();

    float* host_staging_x() {
        if constexpr (host_memory) return Exec::data(x_);
        else return host_x_.data();
    }
    float* host_staging_y() {
        if constexpr (host_memory) return Exec::data(y_);
        else return host_y_.data();
    }
    void upload(float* host, std::size_t n, typename Exec::vector& dst) {
        if constexpr (!host_memory) Exec::from_host(host, n, Exec::data(dst));
    }

    template <class Y>
    void check_targets(const Y& y, std::size_t n, const char* call) const {
        std::size_t rows = 0;
        if (loss_->describe().sparse_labels) {
            rows = detail::checked_label_rows(y, call);
        } else {
            rows = detail::checked_rows<output_shape>(y, "targets", call);
        }
        if (rows != n) {
            throw data_error(std::string(call) + ": " + std::to_string(n) + " input samples but " +
                             std::to_string(rows) + " targets");
        }
    }

    template <class X>
    static constexpr void check_static_rows() {
        constexpr std::size_t fixed = detail::fixed_leading_extent<std::decay_t<X>>::value;
        if constexpr (Batch::is_static && fixed != dynamic_extent) {
            static_assert(fixed == Batch::extent,
                          "batchwise::Model: this batch's size is fixed at compile time and "
                          "differs from the model's static_batch<N>; use Model::input_batch.");
        }
    }

    /// Validates x and y and copies them into the step's buffers. Returns the batch size.
    template <class X, class Y>
    std::size_t stage_batch(const X& x, const Y& y, const char* call) {
        check_static_rows<X>();
        check_static_rows<Y>();
        require_compiled(call);
        const std::size_t rows = detail::checked_rows<input_shape>(x, "inputs", call);
        check_targets(y, rows, call);
        if (rows == 0) throw data_error(std::string(call) + ": the batch is empty");
        if (Batch::is_static && rows != Batch::extent) {
            throw shape_error(std::string(call) + ": the model has static_batch<" +
                              std::to_string(Batch::extent) + "> but the batch has " +
                              std::to_string(rows) + " samples");
        }
        reserve(rows);
        detail::copy_checked(x, in_features, host_staging_x(), call, "input");
        upload(host_staging_x(), rows * in_features, x_);
        if (loss_->describe().sparse_labels) {
            detail::copy_labels(y.begin(), rows, out_features, host_staging_y(), 0, call);
            upload(host_staging_y(), rows, y_);
        } else {
            detail::copy_checked(y, out_features, host_staging_y(), call, "target");
            upload(host_staging_y(), rows * out_features, y_);
        }
        return rows;
    }

    /// Copies the targets of rows [first, first + rows) of an already-flattened float array.
    void stage_targets(const float* y, std::size_t first, std::size_t rows, const char* call) {
        reserve(rows);
        if (loss_->describe().sparse_labels) {
            detail::copy_labels(y + first, rows, out_features, host_staging_y(), first, call);
            upload(host_staging_y(), rows, y_);
        } else {
            detail::copy_checked(y + first * out_features, rows, out_features, host_staging_y(),
                                 first, call, "target");
            upload(host_staging_y(), rows * out_features, y_);
        }
    }

    [[nodiscard]] const_matrix_view target_view(std::size_t rows) const {
        return {Exec::data(y_), rows, loss_->describe().sparse_labels ? 1 : out_features};
    }

    /// Calls f(pointer to row-major float samples), converting x only if it is not already so.
    template <class X, class F>
    static void with_float_rows(const X& x, F&& f) {
        if constexpr (detail::contiguous_float_rows<X>) {
            f(x.data());
        } else {
            const xt::xtensor<float, input_shape::rank + 1> converted = xt::cast<float>(x);
            f(converted.data());
        }
    }

    const_matrix_view infer_chunk(const float* src, std::size_t first, std::size_t rows,
                                  const char* call) {
        reserve(rows);
        detail::copy_checked(src + first * in_features, rows, in_features, host_staging_x(), first,
                             call, "input");
        upload(host_staging_x(), rows * in_features, x_);
        pass_context ctx{.training = false, .seed = seed_, .epoch = epoch_, .first_sample = first};
        return net_->forward({Exec::data(x_), rows, in_features}, ctx);
    }

    logs forward_loss_backward(std::size_t rows, const char* call) {
        pass_context ctx{
            .training = true, .seed = seed_, .epoch = epoch_, .first_sample = sample_cursor_};
        const const_matrix_view pred = net_->forward({Exec::data(x_), rows, in_features}, ctx);
        const const_matrix_view target = target_view(rows);
        const double loss_sum = loss_->sum(pred, target, Exec::data(grad_),
                                           1.0f / static_cast<float>(rows),
                                           Exec::data(row_scratch_));
        if (!std::isfinite(loss_sum)) {
            throw numeric_error(std::string(call) + ": the loss is not finite (" +
                                std::to_string(loss_sum) + ") at optimizer step " +
                                std::to_string(iterations_ + 1) +
                                "; the update was not applied (lower the learning rate, or check "
                                "the data)");
        }
        std::array<double, logs::max_metrics> metric_sums{};
        const target_description d = loss_->describe();
        for (std::size_t m = 0; m < metrics_.size(); ++m) {
            metric_sums[m] = metrics_[m]->sum(pred, target, d, Exec::data(row_scratch_));
        }
        net_->backward({Exec::data(grad_), rows, out_features}, false);
        return make_logs(loss_sum, metric_sums, rows);
    }

    logs make_logs(double loss_sum, const std::array<double, logs::max_metrics>& metric_sums,
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

    std::uint64_t seed_ = 0;
    std::unique_ptr<network_type> net_;
    std::array<std::string, network_type::size> layer_names_{};
    std::vector<variable_entry> variables_;

    std::unique_ptr<detail::optimizer_base<Exec>> optimizer_;
    std::unique_ptr<detail::loss_base<Exec>> loss_;
    std::vector<std::unique_ptr<detail::metric_base<Exec>>> metrics_;
    std::vector<typename Exec::vector> slot_storage_;
    std::vector<std::array<float*, max_slots>> slot_pointers_;
    float learning_rate_ = 0.0f;
    std::uint64_t iterations_ = 0;

    std::uint64_t epoch_ = 0;
    std::uint64_t sample_cursor_ = 0;
    std::size_t capacity_ = 0;
    typename Exec::vector x_, y_, grad_, row_scratch_;
    std::vector<float> host_x_, host_y_;

    // fit's reusable batch buffers, its position for checkpoints, and a loaded resume point.
    data::batch_data batch_, eval_batch_;
    std::uint64_t fit_epoch_ = 0;
    std::size_t fit_step_ = 0;
    std::optional<resume_point> resume_;
};

}  // namespace batchwise
