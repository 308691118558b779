// Model: a Sequential network bound to a batch policy, an execution policy and an accumulation
// policy, with the Keras verbs (compile, train_on_batch, predict, evaluate, save/load weights,
// summary). Every buffer a step needs grows to the largest batch seen and is then reused.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <functional>
#include <iostream>
#include <limits>
#include <new>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "batchwise/batch/accumulation.hpp"
#include "batchwise/batch/batch_policy.hpp"
#include "batchwise/batch/memory.hpp"
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
    virtual void apply(const variable_ref& v, float* const* slots, std::uint64_t step, float lr,
                       float grad_scale) const = 0;
    /// The step as an update a layer can apply inside its gradient GEMM, where the optimizer
    /// has one (plain SGD).
    [[nodiscard]] virtual std::optional<update_in_gemm> in_gemm(float lr, float grad_scale) const = 0;
    /// Whether the step can be replayed from a captured graph (CapturableOptimizer), and the
    /// two halves of such a step: scalars on the host, the update reading them from memory.
    [[nodiscard]] virtual bool capturable() const = 0;
    [[nodiscard]] virtual step_scalars scalars(std::uint64_t step, float lr, float grad_scale) const = 0;
    virtual void apply_from(const variable_ref& v, float* const* slots, const step_scalars* device) const = 0;
};
template <class O, class Exec>
struct optimizer_holder final : optimizer_base<Exec> {
    O opt;
    explicit optimizer_holder(O o) : opt(std::move(o)) {}
    [[nodiscard]] std::string_view name() const override { return O::name; }
    [[nodiscard]] std::size_t slot_count() const override { return opt.slot_count(); }
    [[nodiscard]] float learning_rate() const override { return opt.learning_rate(); }
    void apply(const variable_ref& v, float* const* slots, std::uint64_t step, float lr,
               float grad_scale) const override {
        opt.template apply<Exec>(v, slots, step, lr, grad_scale);
    }
    [[nodiscard]] std::optional<update_in_gemm> in_gemm(float lr, float grad_scale) const override {
        if constexpr (requires { opt.in_gemm(lr, grad_scale); }) {
            return opt.in_gemm(lr, grad_scale);
        } else {
            return std::nullopt;
        }
    }
    [[nodiscard]] bool capturable() const override { return CapturableOptimizer<O, Exec>; }
    [[nodiscard]] step_scalars scalars(std::uint64_t step, float lr, float grad_scale) const override {
        if constexpr (CapturableOptimizer<O, Exec>) {
            return opt.scalars(step, lr, grad_scale);
        } else {
            return plain_step_scalars(lr, grad_scale);
        }
    }
    void apply_from(const variable_ref& v, float* const* slots, const step_scalars* device) const override {
        if constexpr (CapturableOptimizer<O, Exec>) opt.template apply_from<Exec>(v, slots, device);
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

namespace detail {

/// Functors that add a micro-batch's gradient into a double or Kahan-compensated sum, and write
/// the sum back as the float gradient the optimizer reads.
struct accumulate_double {
    const float* g;
    double* sum;
    bool first;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const { sum[i] = first ? g[i] : sum[i] + g[i]; }
};
struct accumulate_kahan {
    const float* g;
    float* sum;
    float* compensation;
    bool first;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        if (first) {
            sum[i] = g[i];
            compensation[i] = 0.0f;
            return;
        }
        const float y = g[i] - compensation[i];
        const float t = sum[i] + y;
        compensation[i] = (t - sum[i]) - y;
        sum[i] = t;
    }
};
template <class T>
struct write_back_sum {
    const T* sum;
    float* g;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const { g[i] = static_cast<float>(sum[i]); }
};

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

namespace detail {
/// The host buffer a policy without host memory stages batches through: its own host_vector
/// when it names one, std::vector otherwise.
template <class Exec>
struct host_staging {
    using type = std::vector<float>;
};
template <class Exec>
    requires requires { typename Exec::host_vector; }
struct host_staging<Exec> {
    using type = typename Exec::host_vector;
};

/// Where double accumulators live: the policy's double_vector. A policy without one can still
/// train, with float or compensated_float accumulators.
template <class Exec>
struct double_storage {
    struct unavailable {};
    using type = unavailable;
};
template <class Exec>
    requires requires { typename Exec::double_vector; }
struct double_storage<Exec> {
    using type = typename Exec::double_vector;
};

/// A policy that can capture a step into a graph and replay it (exec/thrust.hpp).
template <class Exec>
concept step_capture = requires { typename Exec::graph; };

/// A static-batch training step captured as two graphs: the forward pass with the loss and
/// metric sums (read back before anything is updated, so that a non-finite loss stops the step),
/// and the backward pass with the optimizer update. What changes between steps (the sample
/// position, the optimizer's scalars) is copied into `scalars` by the first graph from pinned
/// host memory the model rewrites before each launch.
///
/// Replayed steps alternate between two input buffers, each with its own pair of graphs: the
/// batch of step k+1 is copied into one on a side stream while step k's backward pass, which
/// still reads the other (the first layer's weight gradient needs its input), runs.
template <class Exec>
struct captured_step {};
template <step_capture Exec>
struct captured_step<Exec> {
    std::array<std::optional<typename Exec::graph>, 2> forward;
    std::array<std::optional<typename Exec::graph>, 2> backward;
    std::array<typename Exec::vector, 2> inputs;
    std::array<typename Exec::vector, 2> targets;
    std::size_t parity = 0;
    /// Exec::shared_buffers_generation() when the graphs were captured.
    std::uint64_t generation = 0;
    /// Whether one full step has run eagerly since the graphs were dropped: capture comes
    /// second, so that whatever a library sets up on first use (cuBLAS's heuristics, Thrust's
    /// kernel attributes) happens outside it.
    bool warmed_up = false;
    typename Exec::template array<step_scalars> scalars;
    typename Exec::template host_array<step_scalars> host_scalars;
    typename Exec::double_vector sums;
    typename Exec::template host_array<double> host_sums;
};
}  // namespace detail

template <class Net, BatchPolicy Batch = dynamic_batch, ExecutionPolicy Exec = cpu_blas,
          AccumulationPolicy Accum = no_accumulation>
class Model {
    static_assert(!std::is_same_v<typename Accum::accumulator_type, double> ||
                      requires { typename Exec::double_vector; },
                  "batchwise::Model: accumulate<..., double> needs an execution policy with a "
                  "double_vector; use compensated_float with this one");
    static_assert(is_sequential_v<Net>,
                  "batchwise::Model<Net, ...>: Net must be a batchwise::Sequential<Input<...>, "
                  "layers...>.");

public:
    using network_type = typename Net::template network<Exec>;
    using input_shape = typename Net::input_shape;
    using output_shape = typename Net::output_shape;
    using batch_policy = Batch;
    using execution_policy = Exec;
    using accumulation_policy = Accum;
    using accumulator_type = typename Accum::accumulator_type;
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

    explicit Model(seed s = seed{}) : Model(s, memory_budget{}) {}

    /// A model held to a memory budget: a step that would exceed it runs as smaller micro-batches.
    Model(seed s, memory_budget budget)
        : seed_(s.value), budget_(budget.bytes), net_(std::make_unique<network_type>()) {
        Exec::prepare();
        net_->initialize(seed_);
        name_layers();
        net_->for_each_variable([&](std::size_t layer, const variable_ref& v) {
            variables_.push_back({layer_names_[layer] + "/" + std::string(v.name), layer, v});
        });
        const auto in_gemm_names = []<std::size_t... I>(std::index_sequence<I...>) {
            return std::array<std::string_view, network_type::size>{
                network_type::template variable_updated_in_gemm<I>()...};
        }(std::make_index_sequence<network_type::size>{});
        for (const auto& v : variables_) {
            updated_in_gemm_.push_back(!in_gemm_names[v.layer].empty() && v.ref.name == in_gemm_names[v.layer]);
        }
        allocate_accumulators();
        if constexpr (Batch::is_static) {
            const memory_estimate e = estimate_memory(Batch::extent, 0);
            if (e.total_bytes() > budget_) {
                throw out_of_memory("Model: static_batch<" + std::to_string(Batch::extent) + "> needs " +
                                    std::to_string(e.total_bytes()) + " bytes but the memory budget is " +
                                    std::to_string(budget_) +
                                    "; a static batch is never split: choose a smaller N or dynamic_batch");
            }
            reserve(Batch::extent);
            // Class indices of other types are converted here: sized now, so no step allocates.
            host_y_.resize(Batch::extent * out_features);
        } else if (const std::size_t fixed = estimate_memory(0, 0).total_bytes(); fixed != 0 && fixed > budget_) {
            throw out_of_memory("Model: the parameters and their gradients alone need " +
                                std::to_string(fixed) + " bytes but the memory budget is " +
                                std::to_string(budget_));
        }
    }

    Model(const Model&) = delete;
    Model& operator=(const Model&) = delete;
    Model(Model&&) noexcept = default;
    Model& operator=(Model&&) noexcept = default;
    ~Model() = default;

    /// Chooses the optimizer, the loss and the metrics, and resets the optimizer state and any
    /// open accumulation window.
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
        if (d.sparse_labels) {
            // A sparse target is one class index per sample: an error metric would compare the
            // scores with memory past the labels.
            std::string_view dense_only;
            ((dense_only = dense_only.empty() && metric_needs_dense_targets<Metrics> ? Metrics::name : dense_only), ...);
            if (!dense_only.empty()) {
                throw usage_error("Model::compile: metric '" + std::string(dense_only) + "' compares outputs with "
                                  "targets of the same shape, but " + std::string(Loss::name) +
                                  " takes one class index per sample; use metrics::accuracy");
            }
        }
        const std::size_t slots = optimizer.slot_count();
        if (slots > max_slots) throw usage_error("Model::compile: the optimizer keeps too many slots");
        const memory_estimate e = estimate_memory(capacity_, slots);
        if (e.total_bytes() > budget_) {
            throw out_of_memory("Model::compile: with " + std::string(Optimizer::name) + "'s state the model needs " +
                                std::to_string(e.total_bytes()) + " bytes but the memory budget is " +
                                std::to_string(budget_));
        }
        optimizer_ = std::make_unique<detail::optimizer_holder<Optimizer, Exec>>(std::move(optimizer));
        loss_ = std::make_unique<detail::loss_holder<Loss, Exec>>(std::move(loss));
        metrics_.clear();
        (metrics_.push_back(std::make_unique<detail::metric_holder<Metrics, Exec>>(metrics)), ...);
        learning_rate_ = optimizer_->learning_rate();
        iterations_ = 0;
        reset_window();
        // The graphs hold the old optimizer's, loss's and metrics' calls.
        drop_captured_step();
        capture_refused_.clear();
        slot_storage_.clear();
        slot_pointers_.assign(variables_.size(), {});
        for (const auto& v : variables_) {
            if (!v.ref.trainable()) continue;
            for (std::size_t k = 0; k < slots; ++k) {
                slot_storage_.emplace_back();
                Exec::reserve(slot_storage_.back(), v.ref.size());
                Exec::fill(Exec::data(slot_storage_.back()), v.ref.size(), 0.0f);
            }
        }
        // Pointers are taken once the storage has stopped moving.
        std::size_t next = 0;
        for (std::size_t i = 0; i < variables_.size(); ++i) {
            if (!variables_[i].ref.trainable()) continue;
            for (std::size_t k = 0; k < slots; ++k) slot_pointers_[i][k] = Exec::data(slot_storage_[next++]);
        }
    }

    /// Trains on one micro-batch (x: (n, input dims...), y: targets). The optimizer steps when
    /// the accumulation window is complete (at once with no_accumulation). Returns the loss and
    /// metrics of this micro-batch, computed before any update it triggers.
    template <class X, class Y>
    logs train_on_batch(const X& x, const Y& y) {
        const std::size_t rows = prepare_host_batch(x, y, "train_on_batch");
        return feed(host_x_ptr_, host_y_ptr_, nullptr, rows, "train_on_batch");
    }

    /// Steps the optimizer on a partly filled accumulation window, with the samples it has.
    /// Returns false when no window was open.
    bool apply_accumulated() { return finish_step(); }

    /// Whether gradients are waiting in an accumulation window for their optimizer step.
    [[nodiscard]] bool window_open() const { return window_samples_ > 0; }
    /// Samples accumulated in the open window.
    [[nodiscard]] std::size_t window_samples() const { return window_samples_; }

    /// Sets the window of an accumulate_runtime policy; an open window is stepped first.
    void set_accumulation(accumulation_window w)
        requires(Accum::runtime)
    {
        if (w.samples == 0 && w.micro_batches == 0) {
            throw usage_error("set_accumulation: a window needs micro_batches > 0 or samples > 0");
        }
        finish_step();
        window_ = w;
    }

    /// Trains on every batch of `train` for each epoch, with validation, callbacks (a
    /// ProgressBar is added unless verbose is 0 or one is given) and exact resumption from a
    /// checkpoint. Each batch may have its own size: the dataset decides. An accumulation
    /// window still open at the end of an epoch is stepped with the samples it has.
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
        // Out-of-memory splits reach the callbacks and the History while fit runs.
        split_hook_ = [&](const micro_batch_split& e) {
            history.micro_batch_splits.push_back(e);
            for (Callback* cb : cbs) cb->on_micro_batch_split(ctx, e);
        };
        struct hook_reset {
            std::function<void(const micro_batch_split&)>& hook;
            ~hook_reset() { hook = nullptr; }
        } reset_hook{split_hook_};

        finish_step();  // a window left open by train_on_batch calls is not mixed into this run
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
            set_position(epoch, 0);
            fit_epoch_ = epoch;
            fit_step_ = 0;
            const std::uint64_t iterations_before = iterations_;
            for (Callback* cb : cbs) cb->on_epoch_begin(ctx, epoch, steps);

            // Resuming inside an epoch: read past the batches already trained, so that the
            // sample positions (and with them dropout masks) are those of the interrupted run.
            std::size_t step = 0;
            for (; step < skip_steps && reader.next(batch_); ++step) sample_cursor_ += batch_.rows;
            fit_step_ = step;
            skip_steps = 0;

            double loss_sum = 0.0;
            std::array<double, logs::max_metrics> metric_sums{};
            std::size_t samples = 0, dropped = 0;
            std::vector<std::pair<std::size_t, std::size_t>> sizes;
            bool non_finite = false;
            bool exhausted = false;
            while (step < steps) {
                if (!reader.next(batch_)) {
                    exhausted = true;
                    break;
                }
                if (Batch::is_static && Batch::tail == ragged_tail::drop && batch_.rows < Batch::extent) {
                    dropped += batch_.rows;  // left out by the static batch's policy, and reported
                    fit_step_ = ++step;
                    continue;
                }
                for (Callback* cb : cbs) cb->on_batch_begin(ctx, step, batch_.rows);
                logs l;
                try {
                    l = feed(batch_.features.data(), batch_.targets.data(), batch_.ids.data(), batch_.rows, "fit");
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
                if (sizes.empty() || sizes.back().first != batch_.rows) sizes.emplace_back(batch_.rows, 0);
                ++sizes.back().second;
                fit_step_ = ++step;
                const logs running = make_logs(loss_sum, metric_sums, samples);
                for (Callback* cb : cbs) cb->on_batch_end(ctx, step - 1, l, running);
                if (ctx.stop_requested()) break;
            }
            if (samples == 0 && non_finite) break;  // nothing of this epoch was trained
            // At the natural end of the data one more read registers a tail that
            // drop_remainder left out, so that History reports it.
            if (!exhausted && step == available && !ctx.stop_requested()) exhausted = !reader.next(batch_);
            const bool complete = exhausted || step == steps;
            if (complete && !non_finite) finish_step();  // a partial window counts by its real size

            epoch_logs el;
            const logs mean = make_logs(loss_sum, metric_sums, std::max<std::size_t>(samples, 1));
            el.set("loss", mean.loss);
            for (std::size_t m = 0; m < mean.metric_count; ++m) el.set(std::string(mean.names[m]), mean.values[m]);
            if (options.validation && !non_finite) {
                const logs v = evaluate(*options.validation);
                el.set("val_loss", v.loss);
                for (std::size_t m = 0; m < v.metric_count; ++m) el.set("val_" + std::string(v.names[m]), v.values[m]);
            }
            el.set("learning_rate", learning_rate_);
            if (complete && !window_open()) {
                // A checkpoint taken now resumes at the next epoch.
                fit_epoch_ = epoch + 1;
                fit_step_ = 0;
            }
            history.epochs.push_back(epoch);
            for (const auto& [name, v] : el.values) history.history[name].push_back(v);
            history.batch_sizes.push_back(std::move(sizes));
            history.steps.push_back(step);
            history.optimizer_steps.push_back(static_cast<std::size_t>(iterations_ - iterations_before));
            history.samples.push_back(samples);
            history.dropped_samples.push_back(reader.dropped() + dropped);
            history.micro_batch_limit.push_back(limited() ? micro_limit_ : 0);
            history.seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
            for (Callback* cb : cbs) cb->on_epoch_end(ctx, epoch, el);
        }
        history.stop_reason = ctx.stop_reason();
        for (Callback* cb : cbs) cb->on_train_end(ctx, history);
        return history;
    }

    /// Loss of the batch in training mode (mean over its samples) and the gradients of that mean
    /// (left in variables()'s grad buffers), without updating anything. For gradient checks and
    /// custom loops; not while an accumulation window is open.
    template <class X, class Y>
    float loss_and_gradients(const X& x, const Y& y) {
        if (window_open()) {
            throw usage_error("loss_and_gradients: an accumulation window is open; call "
                              "apply_accumulated() first");
        }
        const std::size_t rows = prepare_host_batch(x, y, "loss_and_gradients");
        validate(host_x_ptr_, host_y_ptr_, nullptr, rows, "loss_and_gradients");
        const std::uint64_t cursor = sample_cursor_;  // no step is taken: the position stays
        step_sums sums;
        train_rows(host_x_ptr_, host_y_ptr_, rows, 1.0f / static_cast<float>(rows), "loss_and_gradients", sums);
        write_back_accumulators();
        reset_window();  // the gradients stay for inspection
        sample_cursor_ = cursor;
        return static_cast<float>(sums.loss / static_cast<double>(rows));
    }

    /// Outputs for any number of samples, computed in inference mode in chunks of batch_size.
    template <class X>
    output_tensor predict(const X& x, std::size_t batch_size = default_batch_size) {
        const std::size_t n = detail::checked_rows<input_shape>(x, "inputs", "predict");
        check_chunk(batch_size, "predict");
        output_tensor result(output_shape_for(n));
        with_float_rows(x, [&](const float* src) {
            detail::check_finite(src, n, in_features, nullptr, "predict", "input");
            for (std::size_t first = 0; first < n; first += batch_size) {
                const std::size_t rows = std::min(batch_size, n - first);
                infer(src + first * in_features, rows, [&](std::size_t offset, const_matrix_view pred) {
                    Exec::to_host(pred.data, pred.rows * out_features,
                                  result.data() + (first + offset) * out_features);
                });
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
        // Targets flattened to floats once, so that chunks index them directly.
        xt::xtensor<float, 1> y_float = xt::empty<float>({static_cast<std::size_t>(y.size())});
        std::size_t k = 0;
        for (auto it = y.begin(); it != y.end(); ++it) y_float(k++) = static_cast<float>(*it);
        eval_sums sums;
        with_float_rows(x, [&](const float* src) {
            validate(src, y_float.data(), nullptr, n, "evaluate");
            for (std::size_t first = 0; first < n; first += batch_size) {
                const std::size_t rows = std::min(batch_size, n - first);
                evaluate_rows(src + first * in_features, y_float.data() + first * target_cols(), rows, sums);
            }
        });
        return make_logs(sums.loss, sums.metrics, n);
    }

    /// Loss and metrics over every batch of a dataset, in inference mode.
    logs evaluate(const data::Dataset& ds) {
        require_compiled("evaluate");
        check_dataset(ds, "evaluate");
        eval_sums sums;
        std::size_t n = 0;
        auto reader = ds.read(0);
        while (reader.next(eval_batch_)) {
            validate(eval_batch_.features.data(), eval_batch_.targets.data(), eval_batch_.ids.data(),
                     eval_batch_.rows, "evaluate");
            evaluate_rows(eval_batch_.features.data(), eval_batch_.targets.data(), eval_batch_.rows, sums);
            n += eval_batch_.rows;
        }
        if (n == 0) throw data_error("evaluate: the dataset yielded no samples");
        return make_logs(sums.loss, sums.metrics, n);
    }

    /// Outputs for every sample of a dataset, in the dataset's order.
    output_tensor predict(const data::Dataset& ds) {
        check_dataset(ds, "predict", false);
        output_tensor result(output_shape_for(ds.samples(0)));
        std::size_t written = 0;
        auto reader = ds.read(0);
        while (reader.next(eval_batch_)) {
            detail::check_finite(eval_batch_.features.data(), eval_batch_.rows, in_features,
                                 eval_batch_.ids.data(), "predict", "input");
            infer(eval_batch_.features.data(), eval_batch_.rows, [&](std::size_t offset, const_matrix_view pred) {
                Exec::to_host(pred.data, pred.rows * out_features, result.data() + (written + offset) * out_features);
            });
            written += eval_batch_.rows;
        }
        return result;
    }

    // ---- memory -------------------------------------------------------------------------------

    /// What training needs at `rows` samples per micro-batch with an optimizer keeping
    /// `optimizer_slots` vectors per trainable variable. Every term is known from the types:
    /// this is a constant expression.
    static constexpr memory_estimate estimate_memory(std::size_t rows, std::size_t optimizer_slots) {
        constexpr std::size_t trainable = network_type::trainable_count;
        constexpr std::size_t variables = trainable + network_type::non_trainable_count;
        memory_estimate e;
        e.rows = rows;
        e.parameter_bytes = sizeof(float) * variables;
        e.gradient_bytes = sizeof(float) * trainable;
        e.layer_state_bytes = sizeof(float) * (network_type::state_floats - variables - trainable);
        e.optimizer_bytes = sizeof(float) * trainable * optimizer_slots;
        e.accumulator_bytes = accumulator_floats * sizeof(float);
        e.batch_bytes = sizeof(float) * (network_type::buffer_floats(rows) + staging_floats(rows));
        return e;
    }

    /// The estimate for the compiled optimizer at the current capacity.
    [[nodiscard]] memory_estimate memory() const {
        return estimate_memory(capacity_, optimizer_ ? optimizer_->slot_count() : 0);
    }

    /// The largest micro-batch whose training fits in `bytes` (0 if not even one sample does).
    [[nodiscard]] std::size_t max_batch_for(std::size_t bytes) const {
        const std::size_t slots = optimizer_ ? optimizer_->slot_count() : 0;
        if (estimate_memory(1, slots).total_bytes() > bytes) return 0;
        std::size_t lo = 1, hi = 2;
        while (hi < (std::size_t{1} << 40) && estimate_memory(hi, slots).total_bytes() <= bytes) lo = hi, hi *= 2;
        while (hi - lo > 1) {
            const std::size_t mid = lo + (hi - lo) / 2;
            (estimate_memory(mid, slots).total_bytes() <= bytes ? lo : hi) = mid;
        }
        return lo;
    }

    /// Holds the model to `bytes` from the next allocation on.
    void set_memory_budget(memory_budget b) { budget_ = b.bytes; }
    [[nodiscard]] std::size_t memory_budget_bytes() const { return budget_; }
    /// The largest micro-batch a step currently runs (the static batch, or what out-of-memory
    /// recovery has settled on; unlimited otherwise).
    [[nodiscard]] std::size_t micro_batch_limit() const { return micro_limit_; }
    /// Every out-of-memory split since the model was built.
    [[nodiscard]] const std::vector<micro_batch_split>& micro_batch_splits() const { return splits_; }

    // ---- step capture -------------------------------------------------------------------------

    /// Whether this model can replay its training step from a captured graph: a static batch on
    /// a policy that captures (cuda; thrust_host, which replays recorded calls the same way).
    static constexpr bool can_capture_steps = Batch::is_static && detail::step_capture<Exec>;

    /// Turns step capture on (the default where can_capture_steps) or off. With it on, the first
    /// full batch that is a whole optimizer step runs eagerly (a warm-up), the second is captured
    /// and every later one replays the graphs: two launches instead of one per kernel. The
    /// arithmetic is the same, except that plain SGD, which an eager step folds into the weight
    /// gradient GEMM, runs as its own pass (the same update, rounded differently).
    void set_step_capture(bool enabled) {
        capture_enabled_ = enabled;
        if (!enabled) drop_captured_step();
    }
    /// Whether the training step is currently held as captured graphs.
    [[nodiscard]] bool step_captured() const {
        if constexpr (can_capture_steps) return captured_.forward[0].has_value();
        else return false;
    }
    /// Why the step could not be captured (the operation a graph cannot hold), or empty. Such a
    /// model trains eagerly; compile() tries again.
    [[nodiscard]] const std::string& step_capture_refused() const { return capture_refused_; }

    // ---- variables and files ------------------------------------------------------------------

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

    /// Writes the whole training state: every variable (as save_weights), the optimizer's slots
    /// and step count, the learning rate, the seed, the micro-batch limit and the position in
    /// training (epoch, step, sample). fit() after load_checkpoint() continues exactly where this
    /// left off. Only between optimizer steps: an open accumulation window is a usage_error.
    void save_checkpoint(const std::filesystem::path& path) const {
        require_compiled("save_checkpoint");
        if (window_open()) {
            throw usage_error("save_checkpoint: an accumulation window is open (" +
                              std::to_string(window_samples_) +
                              " samples); checkpoint between optimizer steps");
        }
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
                            data::int64_array({5}, {static_cast<std::int64_t>(fit_epoch_),
                                                    static_cast<std::int64_t>(fit_step_),
                                                    static_cast<std::int64_t>(sample_cursor_),
                                                    static_cast<std::int64_t>(seed_),
                                                    static_cast<std::int64_t>(limited() ? micro_limit_ : 0)}));
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
        if (iterations.integers.size() != 1 || lr.values.size() != 1 || position.integers.size() != 5) {
            throw shape_error("load_checkpoint: " + path.string() + " has malformed training state");
        }
        const std::size_t slots = optimizer_->slot_count();
        std::vector<std::pair<const data::npz_array*, float*>> slot_copies;
        for (std::size_t i = 0; i < variables_.size(); ++i) {
            if (!variables_[i].ref.trainable()) continue;
            for (std::size_t k = 0; k < slots; ++k) {
                const auto& a = find("optimizer/" + variables_[i].name + "/slot" + std::to_string(k));
                if (a.values.size() != variables_[i].ref.size()) {
                    throw shape_error("load_checkpoint: optimizer slot of '" + variables_[i].name + "' has " +
                                      std::to_string(a.values.size()) + " values, expected " +
                                      std::to_string(variables_[i].ref.size()));
                }
                slot_copies.emplace_back(&a, slot_pointers_[i][k]);
            }
        }
        const std::string extra_slot =
            variables_.empty() ? "" : "optimizer/" + variables_.front().name + "/slot" + std::to_string(slots);
        for (const auto& [n, a] : arrays) {
            if (n == extra_slot) {
                throw shape_error("load_checkpoint: " + path.string() +
                                  " was written with an optimizer that keeps more state than the compiled " +
                                  std::string(optimizer_->name()));
            }
        }
        load_weights_from(arrays, path);  // checks all weights, then copies them
        for (const auto& [a, dst] : slot_copies) Exec::from_host(a->values.data(), a->values.size(), dst);
        reset_window();
        iterations_ = static_cast<std::uint64_t>(iterations.integers[0]);
        learning_rate_ = lr.values[0];
        seed_ = static_cast<std::uint64_t>(position.integers[3]);
        // Dropout's key is derived from the seed when a step is captured.
        drop_captured_step();
        if (!Batch::is_static && position.integers[4] > 0) micro_limit_ = static_cast<std::size_t>(position.integers[4]);
        fit_epoch_ = static_cast<std::uint64_t>(position.integers[0]);
        fit_step_ = static_cast<std::size_t>(position.integers[1]);
        set_position(fit_epoch_, static_cast<std::uint64_t>(position.integers[2]));
        resume_ = resume_point{fit_epoch_, fit_step_};
    }

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
        os << "Model: \"sequential\" (batch " << Batch::str() << ", " << Exec::name << ")\n" << rule << "\n";
        row("Layer (type)", "Output Shape", "Param #");
        os << double_rule << "\n";
        [&]<std::size_t... I>(std::index_sequence<I...>) {
            ((row(layer_names_[I] + " (" + std::string(Net::layer_names[I]) + ")", batch_shape_str<I>(),
                  detail::with_thousands(network_type::template layer_impl<I>::trainable_count +
                                         network_type::template layer_impl<I>::non_trainable_count)),
              (I + 1 < sizeof...(I) ? void(os << "\n") : void())),
             ...);
        }(std::make_index_sequence<network_type::size>{});
        os << double_rule << "\n"
           << "Total params: " << detail::with_thousands(count_params()) << "\n"
           << "Trainable params: " << detail::with_thousands(network_type::trainable_count) << "\n"
           << "Non-trainable params: " << detail::with_thousands(network_type::non_trainable_count) << "\n"
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
    static constexpr std::size_t unlimited = std::numeric_limits<std::size_t>::max();

    template <class Metric>
    static constexpr bool metric_needs_dense_targets = [] {
        if constexpr (requires { Metric::needs_dense_targets; }) return bool{Metric::needs_dense_targets};
        return false;
    }();

    static constexpr bool host_memory = [] {
        if constexpr (requires { Exec::host_memory; }) return bool{Exec::host_memory};
        return false;
    }();

    /// Whether batches are ever copied into the model's own input and target buffers: always
    /// on a policy with its own memory, and for a static batch's zero-padded tail; a dynamic
    /// batch on host memory is read where the caller keeps it (stage_batch).
    static constexpr bool copies_batches = !host_memory || Batch::is_static;

    /// Whether the policy can send a batch from the caller's pinned memory and count its
    /// non-finite values on the device (thrust_policy can; a policy written to the concept
    /// alone need not).
    static constexpr bool device_checks_inputs =
        !host_memory && requires(const float* p, std::size_t n) {
            { Exec::is_pinned(p) } -> std::convertible_to<bool>;
            { Exec::count_non_finite(p, n) } -> std::convertible_to<double>;
            Exec::reserve_reduction(n);
        };

    static constexpr std::size_t accumulator_floats =
        std::is_same_v<accumulator_type, float> ? 0 : 2 * network_type::trainable_count;

    /// Floats per row of the model's own staging: the loss gradient, a row scratch, inputs and
    /// targets when batches are copied (copies_batches), host copies when the policy's memory is
    /// not the host's, and the two pairs of input and target buffers that replayed steps
    /// alternate between.
    static constexpr std::size_t staging_floats(std::size_t rows) {
        return rows * (2 * out_features + 1) + (copies_batches ? rows * (in_features + out_features) : 0) +
               (host_memory ? 0 : rows * (in_features + out_features)) +
               (can_capture_steps ? 2 * rows * (in_features + out_features) : 0);
    }

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
        [[nodiscard]] bool at_step_boundary() const override { return !m_.window_open(); }

    private:
        Model& m_;
        std::uint64_t epochs_;
    };

    struct resume_point {
        std::uint64_t epoch;
        std::size_t step;
    };

    struct step_sums {
        double loss = 0.0;
        std::array<double, logs::max_metrics> metrics{};
        std::size_t samples = 0;
    };
    using eval_sums = step_sums;

    // ---- naming, files --------------------------------------------------------------------------

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
                                  "' that this model does not have; its variables are " + variable_list());
            }
            const std::vector<std::size_t> expected = variable_shape(variables_[i].ref);
            if (array.shape != expected || array.dtype != data::npz_dtype::float32) {
                throw shape_error("load_weights: array '" + name + "' in " + path.string() + " has shape " +
                                  detail::runtime_shape_str(array.shape) +
                                  (array.dtype != data::npz_dtype::float32 ? " of integers" : "") +
                                  " but the model's variable has shape " + detail::runtime_shape_str(expected) +
                                  " of floats");
            }
            found[i] = &array;
        }
        for (std::size_t i = 0; i < variables_.size(); ++i) {
            if (found[i] == nullptr) {
                throw shape_error("load_weights: " + path.string() + " has no array '" + variables_[i].name + "'");
            }
        }
        for (std::size_t i = 0; i < variables_.size(); ++i) {
            Exec::from_host(found[i]->values.data(), variables_[i].ref.size(), variables_[i].ref.value);
        }
    }

    // ---- checks -----------------------------------------------------------------------------------

    void require_compiled(const char* call) const {
        if (!loss_) {
            throw usage_error(std::string(call) +
                              ": the model is not compiled; call compile(optimizer, loss, metrics...) first");
        }
    }

    void check_chunk(std::size_t batch_size, const char* call) const {
        if (batch_size == 0) throw shape_error(std::string(call) + ": batch_size must be positive");
    }

    [[nodiscard]] std::size_t target_cols() const { return loss_ && loss_->describe().sparse_labels ? 1 : out_features; }

    template <class Y>
    void check_targets(const Y& y, std::size_t n, const char* call) const {
        const std::size_t rows = loss_->describe().sparse_labels
                                     ? detail::checked_label_rows(y, call)
                                     : detail::checked_rows<output_shape>(y, "targets", call);
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
        const std::size_t want = target_cols();
        if (ds.target_size() != want) {
            throw shape_error(std::string(call) + ": the dataset has " + std::to_string(ds.target_size()) +
                              " target values per sample but the loss " + std::string(loss_->name()) + " needs " +
                              std::to_string(want) + (want == 1 ? " (one class index)" : " (one per network output)"));
        }
    }

    /// Every input finite and every target valid, before any of the batch is trained: a bad
    /// sample stops the call with nothing of the batch half-accumulated.
    void validate(const float* x, const float* y, const std::size_t* ids, std::size_t n, const char* call,
                  bool inputs = true) {
        if (inputs) detail::check_finite(x, n, in_features, ids, call, "input");
        if (loss_->describe().sparse_labels) {
            detail::check_labels(y, n, out_features, ids, call);
        } else {
            detail::check_finite(y, n, out_features, ids, call, "target");
        }
    }

    // ---- host staging ---------------------------------------------------------------------------

    /// Checks x and y and makes them contiguous host floats (without a copy when they already
    /// are). Returns the number of rows.
    template <class X, class Y>
    std::size_t prepare_host_batch(const X& x, const Y& y, const char* call) {
        check_static_rows<X>();
        check_static_rows<Y>();
        require_compiled(call);
        const std::size_t rows = detail::checked_rows<input_shape>(x, "inputs", call);
        check_targets(y, rows, call);
        if (rows == 0) throw data_error(std::string(call) + ": the batch is empty");
        if constexpr (Batch::is_static) {
            if (rows > Batch::extent || (Batch::tail == ragged_tail::drop && rows != Batch::extent)) {
                throw shape_error(std::string(call) + ": the model has static_batch<" + std::to_string(Batch::extent) +
                                  "> but the batch has " + std::to_string(rows) + " samples" +
                                  (rows > Batch::extent ? "" : " and the policy drops ragged batches"));
            }
        }
        if constexpr (detail::contiguous_float_rows<X>) {
            host_x_ptr_ = x.data();
        } else {
            if (host_x_.size() < rows * in_features) host_x_.resize(rows * in_features);
            detail::copy_checked(x, in_features, host_x_.data(), call, "input");
            host_x_ptr_ = host_x_.data();
        }
        if constexpr (detail::contiguous_float_rows<Y>) {
            host_y_ptr_ = y.data();
        } else {
            const std::size_t ty = target_cols();
            if (host_y_.size() < rows * ty) host_y_.resize(rows * ty);
            std::size_t k = 0;
            for (auto it = y.begin(); it != y.end(); ++it) host_y_[k++] = static_cast<float>(*it);
            host_y_ptr_ = host_y_.data();
        }
        return rows;
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

    [[nodiscard]] typename output_tensor::shape_type output_shape_for(std::size_t n) const {
        typename output_tensor::shape_type out_shape;
        out_shape[0] = n;
        for (std::size_t d = 0; d < output_shape::rank; ++d) out_shape[d + 1] = output_shape::dims[d];
        return out_shape;
    }

    float* staging_x() {
        if constexpr (host_memory) return Exec::data(x_);
        else return staging_host_x_.data();
    }
    float* staging_y() {
        if constexpr (host_memory) return Exec::data(y_);
        else return staging_host_y_.data();
    }

    /// Where the network reads a micro-batch: the caller's own rows, or the model's buffers.
    struct batch_source {
        const float* x;
        const float* y;
    };

    /// Makes n rows of inputs (and targets, when y is given) readable by the policy as a batch of
    /// `rows` rows. A policy computing in host memory reads a full batch where the caller keeps
    /// it: the copy would write the whole input once more per step (6.4 MB at batch 2048 of
    /// mlp-bench, about 4% of its step on 2 threads) for nothing. Padding needs the copy.
    batch_source stage_batch(const float* x, const float* y, std::size_t n, std::size_t rows) {
        if constexpr (!copies_batches) {
            return {x, y};  // a dynamic batch has no padding: rows == n
        } else {
            if (host_memory && rows == n) return {x, y};
            stage(x, y, n, rows);
            return {Exec::data(x_), Exec::data(y_)};
        }
    }

    /// Copies n rows of inputs (and, when y is given, targets) into the micro-batch buffers of
    /// `rows` rows; rows past n are zero padding.
    void stage(const float* x, const float* y, std::size_t n, std::size_t rows) {
        const float* from = stage_on_host(x, y, n, rows);
        if constexpr (!host_memory) {
            const std::size_t ty = target_cols();
            Exec::from_host(from, rows * in_features, Exec::data(x_));
            if (y != nullptr) Exec::from_host(staging_host_y_.data(), rows * ty, Exec::data(y_));
            if constexpr (device_checks_inputs) {
                if (deferred_check_.active) {
                    deferred_check_.active = false;
                    if (Exec::count_non_finite(Exec::data(x_), n * in_features) != 0.0) {
                        reject_non_finite_inputs(x, n);
                    }
                }
            }
        }
    }

    /// The host half of stage: into the staging buffers, or straight into the policy's buffers
    /// when they are host memory. Returns where the copy to the device reads the inputs: the
    /// caller's own rows when they are in pinned memory and need no padding, else the staging
    /// buffer, checked in the same pass that fills it when feed deferred the check. Pinned rows
    /// that feed left unchecked (deferred_check_ still active) are checked by the device after
    /// the copy: the host never reads them at all unless the device finds a bad value.
    const float* stage_on_host(const float* x, const float* y, std::size_t n, std::size_t rows) {
        const std::size_t ty = target_cols();
        const float* from = staging_x();
        if constexpr (device_checks_inputs) {
            // Both ends: a batch that runs past a registered range is staged instead.
            if (rows == n && Exec::is_pinned(x) && Exec::is_pinned(x + n * in_features - 1)) from = x;
        }
        if (from != x) {
            if (deferred_check_.active) {
                deferred_check_.active = false;
                detail::copy_checked(x, n, in_features, staging_x(), 0, deferred_check_.call, "input",
                                     deferred_check_.ids);
            } else {
                std::copy_n(x, n * in_features, staging_x());
            }
            if (rows > n) std::fill_n(staging_x() + n * in_features, (rows - n) * in_features, 0.0f);
        }
        if (y != nullptr) {
            std::copy_n(y, n * ty, staging_y());
            if (rows > n) std::fill_n(staging_y() + n * ty, (rows - n) * ty, 0.0f);
        }
        return from;
    }

    /// The device counted a non-finite value among inputs sent from the caller's pinned rows:
    /// the host finds it, to name the sample. Nothing has read the copy but the count and, in a
    /// captured step, the forward graph, whose only lasting writes are the step's batch-norm
    /// statistics, which the next step's forward pass starts afresh; the backward graph, which
    /// updates weights, moving averages and optimizer state, is never launched.
    [[noreturn]] void reject_non_finite_inputs(const float* x, std::size_t n) {
        detail::check_finite(x, n, in_features, deferred_check_.ids, deferred_check_.call, "input");
        throw device_error(std::string(deferred_check_.call) +
                           ": the device counted a non-finite input that the host does not find");
    }

    // ---- memory and micro-batches -----------------------------------------------------------------

    [[nodiscard]] bool limited() const { return !Batch::is_static && micro_limit_ != unlimited; }

    /// Grows every buffer to hold `rows` samples: the only place a step may allocate, and the
    /// first thing a micro-batch does, so that running out of memory changes nothing.
    void reserve(std::size_t rows) {
        if (rows <= capacity_) return;
        const memory_estimate e = estimate_memory(rows, optimizer_ ? optimizer_->slot_count() : 0);
        if (e.total_bytes() > budget_) {
            throw out_of_memory("memory budget: a micro-batch of " + std::to_string(rows) + " needs " +
                                std::to_string(e.total_bytes()) + " bytes (" + std::to_string(e.fixed_bytes()) +
                                " fixed + " + std::to_string(e.batch_bytes) + " for the batch), the budget is " +
                                std::to_string(budget_));
        }
        net_->reserve(rows);
        if constexpr (requires { Exec::reserve_rows(rows); }) Exec::reserve_rows(rows);
        if constexpr (device_checks_inputs) Exec::reserve_reduction(rows * in_features);
        if constexpr (copies_batches) {
            Exec::reserve(x_, rows * in_features);
            Exec::reserve(y_, rows * out_features);
        }
        Exec::reserve(grad_, rows * out_features);
        Exec::reserve(row_scratch_, rows);
        if constexpr (!host_memory) {
            staging_host_x_.resize(rows * in_features);
            staging_host_y_.resize(rows * out_features);
        }
        capacity_ = rows;
    }

    /// A micro-batch of `failed` rows did not fit: continue with half (a multiple of the
    /// network's split granularity where possible), keep that size, and report it.
    void shrink_micro_batch(std::size_t failed, const std::string& reason) {
        if constexpr (Batch::is_static) {
            throw out_of_memory(reason + "; a static batch is never split into smaller micro-batches");
        } else {
            if (failed <= 1) throw out_of_memory("not even one sample fits: " + reason);
            constexpr std::size_t g = network_type::split_granularity;
            std::size_t next = failed / 2;
            if (g > 1 && next >= g) next -= next % g;
            micro_limit_ = std::max<std::size_t>(next, 1);
            splits_.push_back({epoch_, iterations_ + 1, failed, micro_limit_, reason});
            if (split_hook_) split_hook_(splits_.back());
        }
    }

    /// Runs f(offset, rows) over [0, n) in pieces no larger than the micro-batch limit, redoing
    /// a piece as smaller ones when it runs out of memory. f must allocate (reserve) before it
    /// changes any state, which every caller here does.
    template <class F>
    void in_micro_batches(std::size_t n, F&& f) {
        std::size_t done = 0;
        while (done < n) {
            const std::size_t rows = std::min(n - done, micro_limit_);
            try {
                f(done, rows);
                done += rows;
            } catch (const out_of_memory& e) {
                shrink_micro_batch(rows, e.what());
            } catch (const std::bad_alloc&) {
                const memory_estimate e = estimate_memory(rows, optimizer_ ? optimizer_->slot_count() : 0);
                shrink_micro_batch(rows, "allocating buffers for a micro-batch of " + std::to_string(rows) +
                                             " failed (std::bad_alloc; the model needs " +
                                             std::to_string(e.total_bytes()) + " bytes at that size)");
            }
        }
    }

    // ---- training -------------------------------------------------------------------------------

    void allocate_accumulators() {
        if constexpr (std::is_same_v<accumulator_type, double>) {
            accumulators_d_.resize(variables_.size());
            for (std::size_t i = 0; i < variables_.size(); ++i) {
                if (variables_[i].ref.trainable()) Exec::reserve(accumulators_d_[i], variables_[i].ref.size());
            }
        } else if constexpr (std::is_same_v<accumulator_type, compensated_float>) {
            accumulators_k_.resize(variables_.size());
            for (std::size_t i = 0; i < variables_.size(); ++i) {
                if (!variables_[i].ref.trainable()) continue;
                Exec::reserve(accumulators_k_[i].first, variables_[i].ref.size());
                Exec::reserve(accumulators_k_[i].second, variables_[i].ref.size());
            }
        }
    }

    [[nodiscard]] std::size_t window_target_samples() const { return Accum::runtime ? window_.samples : Accum::samples; }
    [[nodiscard]] std::size_t window_target_batches() const {
        return Accum::runtime ? window_.micro_batches : Accum::micro_batches;
    }

    void reset_window() {
        step_in_gemm_ = false;
        window_samples_ = 0;
        window_batches_ = 0;
        window_has_grads_ = false;
    }

    /// Trains on n rows as one call's worth of micro-batches: splits them at window boundaries,
    /// steps the optimizer whenever a window is complete, and returns the rows' loss and metrics.
    logs feed(const float* x, const float* y, const std::size_t* ids, std::size_t n, const char* call) {
        // On a policy with its own memory the inputs are checked while they are staged, which
        // saves the host a pass over the batch. Only where the call is one micro-batch that
        // allocates nothing: then no part of it can be trained before the check has seen all
        // of it.
        bool defer = false;
        if constexpr (!host_memory) {
            const std::size_t target = window_target_samples();
            defer = (target == 0 || n <= target - window_samples_) && n <= micro_limit_ && n <= capacity_;
        }
        validate(x, y, ids, n, call, !defer);
        deferred_check_ = {ids, call, defer};
        // On the way out the flag is cleared; and if an error is unwinding, copies from the
        // caller's pinned rows that are still queued are waited for, since the caller may free
        // those rows next. Errors of that wait are dropped: one is already on its way.
        struct clear_deferred {
            deferred_check& d;
            int unwinding = std::uncaught_exceptions();
            ~clear_deferred() {
                d.active = false;
                if constexpr (device_checks_inputs) {
                    if (std::uncaught_exceptions() > unwinding) {
                        try {
                            Exec::await_copies();
                            Exec::synchronize();
                        } catch (...) {
                        }
                    }
                }
            }
        } clear{deferred_check_};
        step_sums sums;
        const std::size_t ty = target_cols();
        std::size_t done = 0;
        while (done < n) {
            std::size_t part = n - done;
            const std::size_t target = window_target_samples();
            if (target != 0) part = std::min(part, target - window_samples_);
            // These rows alone make the next optimizer step: the step may be folded into the
            // layers' gradient GEMMs when they run as one micro-batch.
            const bool whole_step = window_samples_ == 0 && !window_has_grads_ &&
                                    (target != 0 ? part == target : window_batches_ + 1 >= window_target_batches());
            train_rows(x + done * in_features, y + done * ty, part, 1.0f, call, sums, whole_step);
            done += part;
            if (target != 0 && window_samples_ == target) finish_step();
        }
        ++window_batches_;
        if (window_target_samples() == 0 && window_batches_ >= window_target_batches()) finish_step();
        return make_logs(sums.loss, sums.metrics, n);
    }

    /// Forward and backward over n rows into the open window, in micro-batches.
    void train_rows(const float* x, const float* y, std::size_t n, float grad_scale, const char* call,
                    step_sums& sums, bool whole_step = false) {
        const std::size_t ty = target_cols();
        in_micro_batches(n, [&](std::size_t offset, std::size_t rows) {
            train_micro_batch(x + offset * in_features, y + offset * ty, rows, grad_scale, call, sums,
                              whole_step && rows == n);
        });
    }

    /// Discards the open window and raises numeric_error: nothing of this step is applied.
    [[noreturn]] void stop_on_non_finite_loss(double loss_sum, const char* call) {
        const std::size_t discarded = window_samples_;
        reset_window();
        throw numeric_error(std::string(call) + ": the loss is not finite (" + std::to_string(loss_sum) +
                            ") at optimizer step " + std::to_string(iterations_ + 1) + "; no update was applied" +
                            (discarded ? " and the " + std::to_string(discarded) +
                                             " samples accumulated for the step were discarded"
                                       : std::string()) +
                            " (lower the learning rate, or check the data)");
    }

    void train_micro_batch(const float* x, const float* y, std::size_t n, float grad_scale, const char* call,
                           step_sums& sums, bool whole_step = false) {
        if constexpr (can_capture_steps && std::is_same_v<accumulator_type, float>) {
            // A full batch that is a whole optimizer step replays the captured graphs.
            if (whole_step && n == Batch::extent && capture_enabled_ && capture_refused_.empty() &&
                optimizer_->capturable() && train_captured(x, y, n, call, sums)) {
                return;
            }
        }
        const std::size_t rows = Batch::is_static ? Batch::extent : n;
        reserve(rows);  // first: running out of memory here leaves everything as it was
        const batch_source src = stage_batch(x, y, n, rows);
        if (!window_has_grads_) net_->begin_step();
        pass_context ctx{.training = true, .seed = seed_, .epoch = epoch_, .first_sample = sample_cursor_,
                         .valid_rows = n};
        const const_matrix_view out = net_->forward({src.x, rows, in_features}, ctx);
        const const_matrix_view pred{out.data, n, out_features};
        const const_matrix_view target{src.y, n, target_cols()};
        // Gradients are of the sum of the losses; the optimizer divides by the window's samples.
        const double loss_sum = loss_->sum(pred, target, Exec::data(grad_), grad_scale, Exec::data(row_scratch_));
        if (!std::isfinite(loss_sum)) stop_on_non_finite_loss(loss_sum, call);
        // Padding rows must not move any gradient.
        if (rows > n) Exec::fill(Exec::data(grad_) + n * out_features, (rows - n) * out_features, 0.0f);
        const target_description d = loss_->describe();
        for (std::size_t m = 0; m < metrics_.size(); ++m) {
            sums.metrics[m] += metrics_[m]->sum(pred, target, d, Exec::data(row_scratch_));
        }
        constexpr bool float_sums = std::is_same_v<accumulator_type, float>;
        // A micro-batch that is the whole step with plain SGD: each Dense updates its kernel in
        // the gradient GEMM (W = W - lr/n X^T dY), saving a pass over the weights that costs as
        // much as the GEMMs at small batches. The rest is stepped by finish_step as usual.
        std::optional<update_in_gemm> in_gemm;
        if (float_sums && whole_step) in_gemm = optimizer_->in_gemm(learning_rate_, 1.0f / static_cast<float>(n));
        if (in_gemm) {
            net_->backward_and_update({Exec::data(grad_), rows, out_features}, *in_gemm);
            step_in_gemm_ = true;
        } else {
            net_->backward({Exec::data(grad_), rows, out_features}, float_sums && window_has_grads_);
        }
        if constexpr (!float_sums) add_to_accumulators(!window_has_grads_);
        window_has_grads_ = true;
        window_samples_ += n;
        sample_cursor_ += n;
        sums.loss += loss_sum;
        sums.samples += n;
    }

    // ---- captured steps ---------------------------------------------------------------------------

    void drop_captured_step() {
        if constexpr (can_capture_steps) {
            for (std::size_t p = 0; p < 2; ++p) {
                captured_.forward[p].reset();
                captured_.backward[p].reset();
            }
            captured_.warmed_up = false;
            captured_.parity = 0;
        }
    }

    /// One whole optimizer step of a full static batch from the captured graphs, capturing them
    /// first if need be. Returns false, having changed nothing, when the step is to run eagerly:
    /// the first such step after the graphs were dropped, or one that cannot be captured.
    bool train_captured(const float* x, const float* y, std::size_t n, const char* call, step_sums& sums)
        requires(can_capture_steps)
    {
        auto& c = captured_;
        // Another model grew the policy's shared scratch since the capture: the graphs point at
        // freed memory.
        if (c.forward[0] && c.generation != Exec::shared_buffers_generation()) drop_captured_step();
        if (!c.warmed_up) {
            c.warmed_up = true;
            return false;
        }
        // The loss, each metric, and the count of non-finite inputs.
        const std::size_t slots = 1 + metrics_.size() + (device_checks_inputs ? 1 : 0);
        const std::size_t ty = target_cols();
        reserve(n);
        if (!c.forward[0]) {
            Exec::reserve(c.scalars, 1);
            c.host_scalars.resize(1);
            Exec::reserve(c.sums, slots);
            c.host_sums.resize(slots);
            for (std::size_t p = 0; p < 2; ++p) {
                Exec::reserve(c.inputs[p], n * in_features);
                Exec::reserve(c.targets[p], n * ty);
            }
            if (!capture_step(slots)) return false;
            c.generation = Exec::shared_buffers_generation();
        }
        // Everything the graphs read that differs from step to step. The buffers of this parity
        // were last read two steps ago, before the forward pass the host last waited for.
        const std::size_t p = c.parity;
        const float* from = stage_on_host(x, y, n, n);
        const bool device_checks = device_checks_inputs && deferred_check_.active;
        deferred_check_.active = false;
        Exec::copy_ahead(from, n * in_features, Exec::data(c.inputs[p]));
        Exec::copy_ahead(staging_host_y_.data(), n * ty, Exec::data(c.targets[p]));
        Exec::await_copies();
        step_scalars s = optimizer_->scalars(iterations_ + 1, learning_rate_, 1.0f / static_cast<float>(n));
        s.epoch = epoch_;
        s.first_sample = sample_cursor_;
        c.host_scalars[0] = s;

        Exec::launch(*c.forward[p]);
        Exec::to_host(Exec::data(c.sums), slots, c.host_sums.data());
        if (device_checks && c.host_sums[slots - 1] != 0.0) reject_non_finite_inputs(x, n);
        const double loss_sum = c.host_sums[0];
        if (!std::isfinite(loss_sum)) stop_on_non_finite_loss(loss_sum, call);
        for (std::size_t m = 0; m < metrics_.size(); ++m) sums.metrics[m] += c.host_sums[1 + m];
        Exec::launch(*c.backward[p]);
        c.parity = 1 - p;

        ++iterations_;
        reset_window();
        sample_cursor_ += n;
        sums.loss += loss_sum;
        sums.samples += n;
        return true;
    }

    /// Records the graphs of a full-batch step, one pair per input buffer. Nothing runs while
    /// they are recorded; the layers' host-side bookkeeping (batch norm's sample counts) is that
    /// of one step, and is the same for every full batch, so the graphs may keep it.
    bool capture_step(std::size_t slots)
        requires(can_capture_steps)
    {
        for (std::size_t p = 0; p < 2; ++p) {
            if (!capture_step(slots, p)) {
                drop_captured_step();
                return false;
            }
        }
        return true;
    }

    bool capture_step(std::size_t slots, std::size_t parity)
        requires(can_capture_steps)
    {
        constexpr std::size_t rows = Batch::extent;
        auto& c = captured_;
        const std::size_t ty = target_cols();
        step_scalars* device = Exec::data(c.scalars);
        try {
            Exec::begin_capture(Exec::data(c.sums), slots);
            Exec::from_host(c.host_scalars.data(), 1, device);
            net_->begin_step();
            const pass_context ctx{.training = true, .seed = seed_, .valid_rows = rows, .device_scalars = device};
            const const_matrix_view out = net_->forward({Exec::data(c.inputs[parity]), rows, in_features}, ctx);
            const const_matrix_view pred{out.data, rows, out_features};
            const const_matrix_view target{Exec::data(c.targets[parity]), rows, ty};
            (void)loss_->sum(pred, target, Exec::data(grad_), 1.0f, Exec::data(row_scratch_));
            const target_description d = loss_->describe();
            for (const auto& metric : metrics_) (void)metric->sum(pred, target, d, Exec::data(row_scratch_));
            if constexpr (device_checks_inputs) {
                (void)Exec::count_non_finite(Exec::data(c.inputs[parity]), rows * in_features);
            }
            typename Exec::graph forward = Exec::end_capture();
            if (Exec::captured_sums() != slots) {
                const std::size_t reductions = Exec::captured_sums() - (device_checks_inputs ? 1 : 0);
                throw std::logic_error("the loss and the metrics reduced " + std::to_string(reductions) +
                                       " times, not one each");
            }

            Exec::begin_capture(nullptr, 0);
            net_->backward({Exec::data(grad_), rows, out_features}, false);
            for (std::size_t i = 0; i < variables_.size(); ++i) {
                if (variables_[i].ref.trainable()) optimizer_->apply_from(variables_[i].ref, slot_pointers_[i].data(), device);
            }
            net_->end_step();
            typename Exec::graph backward = Exec::end_capture();
            c.forward[parity].emplace(std::move(forward));
            c.backward[parity].emplace(std::move(backward));
            return true;
        } catch (const std::exception& e) {
            Exec::abort_capture();
            capture_refused_ = e.what();
            std::fprintf(stderr, "batchwise: the training step cannot be captured (%s); training it eagerly\n", e.what());
            return false;
        }
    }

    void add_to_accumulators(bool first) {
        for (std::size_t i = 0; i < variables_.size(); ++i) {
            const variable_ref& v = variables_[i].ref;
            if (!v.trainable()) continue;
            if constexpr (std::is_same_v<accumulator_type, double>) {
                Exec::for_each(v.size(), detail::accumulate_double{v.grad, Exec::data(accumulators_d_[i]), first});
            } else {
                Exec::for_each(v.size(), detail::accumulate_kahan{v.grad, Exec::data(accumulators_k_[i].first),
                                                                  Exec::data(accumulators_k_[i].second), first});
            }
        }
    }

    /// Double or compensated sums back into the float gradients the optimizer reads.
    void write_back_accumulators() {
        if constexpr (!std::is_same_v<accumulator_type, float>) {
            if (!window_has_grads_) return;
            for (std::size_t i = 0; i < variables_.size(); ++i) {
                const variable_ref& v = variables_[i].ref;
                if (!v.trainable()) continue;
                if constexpr (std::is_same_v<accumulator_type, double>) {
                    Exec::for_each(v.size(), detail::write_back_sum<double>{Exec::data(accumulators_d_[i]), v.grad});
                } else {
                    Exec::for_each(v.size(), detail::write_back_sum<float>{Exec::data(accumulators_k_[i].first), v.grad});
                }
            }
        }
    }

    /// The optimizer step of the open window: the gradient sums divided by the window's samples,
    /// every optimizer state advanced once, batch norm's moving averages updated once.
    bool finish_step() {
        if (window_samples_ == 0) {
            window_batches_ = 0;
            return false;
        }
        write_back_accumulators();
        const float scale = 1.0f / static_cast<float>(window_samples_);
        ++iterations_;
        for (std::size_t i = 0; i < variables_.size(); ++i) {
            if (variables_[i].ref.trainable() && !(step_in_gemm_ && updated_in_gemm_[i])) {
                optimizer_->apply(variables_[i].ref, slot_pointers_[i].data(), iterations_, learning_rate_, scale);
            }
        }
        net_->end_step();
        reset_window();
        return true;
    }

    // ---- inference ------------------------------------------------------------------------------

    /// Inference over n rows of host inputs in micro-batches; consume(offset, predictions).
    template <class F>
    void infer(const float* x, std::size_t n, F&& consume) {
        in_micro_batches(n, [&](std::size_t offset, std::size_t count) {
            const std::size_t rows = Batch::is_static ? Batch::extent : count;
            reserve(rows);
            const batch_source src = stage_batch(x + offset * in_features, nullptr, count, rows);
            pass_context ctx{.training = false, .seed = seed_, .epoch = epoch_, .first_sample = 0, .valid_rows = count};
            const const_matrix_view out = net_->forward({src.x, rows, in_features}, ctx);
            consume(offset, const_matrix_view{out.data, count, out_features});
        });
    }

    void evaluate_rows(const float* x, const float* y, std::size_t n, eval_sums& sums) {
        const target_description d = loss_->describe();
        const std::size_t ty = target_cols();
        infer(x, n, [&](std::size_t offset, const_matrix_view pred) {
            const std::size_t count = pred.rows;
            const float* targets = y + offset * ty;
            if constexpr (!host_memory) {
                std::copy_n(targets, count * ty, staging_y());
                Exec::from_host(staging_host_y_.data(), count * ty, Exec::data(y_));
                targets = Exec::data(y_);
            }
            const const_matrix_view target{targets, count, ty};
            sums.loss += loss_->sum(pred, target, nullptr, 0.0f, Exec::data(row_scratch_));
            for (std::size_t m = 0; m < metrics_.size(); ++m) {
                sums.metrics[m] += metrics_[m]->sum(pred, target, d, Exec::data(row_scratch_));
            }
        });
    }

    logs make_logs(double loss_sum, const std::array<double, logs::max_metrics>& metric_sums, std::size_t n) const {
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

    // ---- state ----------------------------------------------------------------------------------

    std::uint64_t seed_ = 0;
    std::size_t budget_ = std::numeric_limits<std::size_t>::max();
    std::unique_ptr<network_type> net_;
    std::array<std::string, network_type::size> layer_names_{};
    std::vector<variable_entry> variables_;
    // Variables a layer can step inside its gradient GEMM, and whether the open step did.
    std::vector<bool> updated_in_gemm_;
    bool step_in_gemm_ = false;

    [[no_unique_address]] detail::captured_step<Exec> captured_;
    bool capture_enabled_ = true;
    std::string capture_refused_;

    std::unique_ptr<detail::optimizer_base<Exec>> optimizer_;
    std::unique_ptr<detail::loss_base<Exec>> loss_;
    std::vector<std::unique_ptr<detail::metric_base<Exec>>> metrics_;
    std::vector<typename Exec::vector> slot_storage_;
    std::vector<std::array<float*, max_slots>> slot_pointers_;
    float learning_rate_ = 0.0f;
    std::uint64_t iterations_ = 0;

    // The open accumulation window.
    accumulation_window window_{};
    std::size_t window_samples_ = 0;
    std::size_t window_batches_ = 0;
    bool window_has_grads_ = false;
    std::vector<typename detail::double_storage<Exec>::type> accumulators_d_;
    std::vector<std::pair<typename Exec::vector, typename Exec::vector>> accumulators_k_;

    // Micro-batches: the static batch, or what out-of-memory recovery settled on.
    std::size_t micro_limit_ = Batch::is_static ? Batch::extent : unlimited;
    std::vector<micro_batch_split> splits_;
    std::function<void(const micro_batch_split&)> split_hook_;

    std::uint64_t epoch_ = 0;
    std::uint64_t sample_cursor_ = 0;
    std::size_t capacity_ = 0;
    typename Exec::vector x_, y_, grad_, row_scratch_;
    /// An input check feed left to the staging of its one micro-batch (stage_on_host).
    struct deferred_check {
        const std::size_t* ids = nullptr;
        const char* call = nullptr;
        bool active = false;
    };
    deferred_check deferred_check_;
    // Host side of the staging when the policy's memory is not the host's, in the memory the
    // policy copies from fastest (page-locked for CUDA).
    typename detail::host_staging<Exec>::type staging_host_x_, staging_host_y_;
    // train_on_batch's contiguous host copies, used when the caller's tensors are not already.
    std::vector<float> host_x_, host_y_;
    const float* host_x_ptr_ = nullptr;
    const float* host_y_ptr_ = nullptr;

    // fit's reusable batch buffers, its position for checkpoints, and a loaded resume point.
    data::batch_data batch_, eval_batch_;
    std::uint64_t fit_epoch_ = 0;
    std::size_t fit_step_ = 0;
    std::optional<resume_point> resume_;
};

}  // namespace batchwise
