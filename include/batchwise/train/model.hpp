// Model: a Sequential network bound to a batch policy, an execution policy and an accumulation
// policy, with the Keras verbs (compile, train_on_batch, fit, evaluate, predict, weights,
// summary). A thin facade: the step, the fit loop, files and the summary each live in their own
// part (train/step/, train/fit.hpp, train/checkpoint.hpp, train/summary.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <span>
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
#include "batchwise/exec/capabilities.hpp"
#include "batchwise/exec/cpu_blas.hpp"
#include "batchwise/layers/sequential.hpp"
#include "batchwise/losses/loss.hpp"
#include "batchwise/metrics/metrics.hpp"
#include "batchwise/optimizers/optimizer.hpp"
#include "batchwise/train/callbacks.hpp"
#include "batchwise/train/checkpoint.hpp"
#include "batchwise/train/fit.hpp"
#include "batchwise/train/gradients.hpp"
#include "batchwise/train/history.hpp"
#include "batchwise/train/logs.hpp"
#include "batchwise/train/model_state.hpp"
#include "batchwise/train/step/engine.hpp"
#include "batchwise/train/step/host_batch.hpp"
#include "batchwise/train/step/processes.hpp"
#include "batchwise/train/summary.hpp"
#include "batchwise/train/tensor_io.hpp"

namespace batchwise {

/// A network you train: `Model<Sequential<Input<...>, layers...>, batch policy, execution
/// policy, accumulation policy>`, with Keras's verbs (docs/concepts.md explains the policies).
template <class Net, BatchPolicy Batch = dynamic_batch, ExecutionPolicy Exec = cpu_blas,
          AccumulationPolicy Accum = no_accumulation>
class Model : public model_state<step_engine<Net, Batch, Exec, Accum>> {
    static_assert(!std::is_same_v<typename Accum::accumulator_type, double> || DoubleStoragePolicy<Exec>,
                  "batchwise::Model: accumulate<..., double> needs an execution policy with a "
                  "double_vector; use compensated_float with this one");
    static_assert(is_sequential_v<Net>,
                  "batchwise::Model<Net, ...>: Net must be a batchwise::Sequential<Input<...>, "
                  "layers...>.");
    using engine_type = step_engine<Net, Batch, Exec, Accum>;
    using state_type = model_state<engine_type>;
    using state_type::fit_;
    using state_type::require_compiled;
    using state_type::step_;

public:
    using state_type::is_chief;
    using state_type::window_open;
    using state_type::window_samples;
    using sequential_type = Net;                              ///< The Sequential<Input<...>, layers...>.
    using network_type = typename engine_type::network_type;  ///< The layers instantiated on Exec.
    using input_shape = typename Net::input_shape;            ///< One sample's input, a shape<...>.
    using output_shape = typename Net::output_shape;          ///< One sample's output, a shape<...>.
    using batch_policy = Batch;                               ///< static_batch<N> or dynamic_batch.
    using execution_policy = Exec;                            ///< Where the arithmetic runs.
    using accumulation_policy = Accum;                        ///< How micro-batches make a step.
    using accumulator_type = typename Accum::accumulator_type;  ///< What gradients are summed in.
    static constexpr std::size_t in_features = input_shape::size;    ///< Floats per input sample.
    static constexpr std::size_t out_features = output_shape::size;  ///< Floats per output sample.
    /// A batch of inputs or outputs: xtensor_fixed for a static batch, xtensor for a dynamic one.
    using input_batch = typename detail::batch_tensor<input_shape, Batch::extent>::type;
    using output_batch = typename detail::batch_tensor<output_shape, Batch::extent>::type;  ///< See input_batch.
    /// What predict returns for any number of samples.
    using output_tensor = xt::xtensor<float, output_shape::rank + 1>;
    /// predict/evaluate's default chunk: Keras's 32, or the static batch itself.
    static constexpr std::size_t default_batch_size = Batch::is_static ? Batch::extent : 32;

    explicit Model(seed s = seed{}) : Model(s, memory_budget{}) {}  ///< Weights initialised from the seed.

    /// A model held to a memory budget: a step that would exceed it runs as smaller micro-batches.
    /// On a GPU the budget is also no more than the device memory free when the model is built.
    Model(seed s, memory_budget budget) : state_type(s.value, detail::policy_budget<Exec>(budget.bytes)) {
        budget.bytes = step_.budget();
        if constexpr (Batch::is_static) {
            const memory_estimate e = estimate_memory(Batch::extent, 0);
            if (e.total_bytes() > budget.bytes) {
                throw out_of_memory("Model: static_batch<" + std::to_string(Batch::extent) + "> needs " +
                                    std::to_string(e.total_bytes()) + " bytes but the memory budget is " +
                                    std::to_string(budget.bytes) +
                                    "; a static batch is never split: choose a smaller N or dynamic_batch");
            }
            step_.reserve(Batch::extent);
            // Class indices of other types are converted here: sized now, so no step allocates.
            host_.reserve_targets(Batch::extent * out_features);
            host_.reserve_weights(Batch::extent);
        } else if (const std::size_t one = estimate_memory(1, 0).total_bytes(); one > budget.bytes) {
            throw out_of_memory("Model: one sample needs " + std::to_string(one) + " bytes (" +
                                std::to_string(estimate_memory(0, 0).total_bytes()) +
                                " for the parameters and their gradients) but the memory budget is " +
                                std::to_string(budget.bytes));
        }
    }

    Model(const Model&) = delete;
    Model& operator=(const Model&) = delete;
    Model(Model&&) noexcept = default;             ///< Models move (the buffers stay where they are).
    Model& operator=(Model&&) noexcept = default;  ///< Models move (the buffers stay where they are).
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
        static_assert(sizeof...(Metrics) <= logs::max_metrics, "Model::compile: at most logs::max_metrics metrics.");
        const float learning_rate = optimizer.learning_rate();
        step_.compile(std::move(optimizer), std::move(loss), std::move(metrics)...);
        processes::template attach<Exec, Model, Optimizer, Loss, Metrics...>(accumulation(), step_.variables(),
                                                                             learning_rate, step_.seed());
    }

    /// Trains on one micro-batch (x: (n, input dims...), y: targets, and optionally one weight
    /// per sample that multiplies its loss and gradient). The optimizer steps when the
    /// accumulation window is complete (at once with no_accumulation). Returns the loss and
    /// metrics of this micro-batch, computed before any update it triggers.
    template <class X, class Y, class W = no_sample_weights>
    logs train_on_batch(const X& x, const Y& y, const W& sample_weight = {}) {
        return guarded([&] {
            return detail::with_typed_allocation_failures("train_on_batch", [&] {
                const auto b = host_batch(x, y, "train_on_batch");
                const float* w = host_.sample_weights(sample_weight, b.rows, "train_on_batch");
                return step_.feed(b.x, b.y, w, nullptr, b.rows, "train_on_batch");
            });
        });
    }

    /// Steps the optimizer on a partly filled accumulation window, with the samples it has.
    /// Returns false when no window was open.
    bool apply_accumulated() {
        return guarded([&] { return step_.finish_step(); });
    }
    /// Sets the window of an accumulate_runtime policy; an open window is stepped first.
    void set_accumulation(accumulation_window w)
        requires(Accum::runtime)
    {
        if (w.samples == 0 && w.micro_batches == 0) {
            throw usage_error("set_accumulation: a window needs micro_batches > 0 or samples > 0");
        }
        step_.finish_step();
        step_.window().set_size(w);
    }
    /// The accumulation policy object (its reduction hook runs at the end of every window).
    [[nodiscard]] Accum& accumulation() { return step_.window().policy(); }

    /// Registers an observer of every optimizer step's gradient sums (step_window::finish);
    /// it must outlive the model or be removed first.
    void add_step_observer(step_observer& o) { step_.window().add_observer(o, step_.variables()); }
    void remove_step_observer(step_observer& o) { step_.window().remove_observer(o); }  ///< Unregisters o.
    /// The registered step observers (fit adds their epoch values to the logs).
    [[nodiscard]] std::span<step_observer* const> step_observers() const { return step_.window().observers(); }
    /// Rules for every optimizer step's hyper-parameters in custom loops (train_on_batch); fit
    /// uses fit_options' learning_rate_schedule and coupling when they are given.
    void set_step_rules(step_rules rules) { step_.optimizer().set_rules(std::move(rules)); }

    /// Trains on every batch of `train` for each epoch, with validation, callbacks (a
    /// ProgressBar is added unless verbose is 0 or one is given) and exact resumption from a
    /// checkpoint. Each batch may have its own size: the dataset decides (an unbatched one is
    /// batched with options.batch_size). An accumulation window still open at the end of an
    /// epoch is stepped with the samples it has.
    template <class... Callbacks>
    History fit(const data::Dataset& train, const fit_options& options = {}, Callbacks&... callbacks) {
        return fit_prepared(train, false, options, callbacks...);
    }
    /// Keras's fit(x, y, batch_size=..., validation_split=..., shuffle=..., sample_weight=...):
    /// x is (n, input dims...), y class indices or target rows; options.batch_size (32 by
    /// default) samples per batch, shuffled every epoch, validation_split taken from the end
    /// first (with its samples' weights).
    template <class X, class Y, class... Callbacks>
        requires(!std::is_same_v<X, data::Dataset>)
    History fit(const X& x, const Y& y, const fit_options& options = {}, Callbacks&... callbacks) {
        require_compiled("fit");
        const std::size_t n = detail::checked_rows<input_shape>(x, "inputs", "fit");
        check_targets(y, n, "fit");
        if (n == 0) throw data_error("fit: no samples to train on");
        if (options.sample_weight.size() == 0) return fit_prepared(data::Dataset(x, y), true, options, callbacks...);
        return fit_prepared(data::Dataset(x, y, options.sample_weight), true, options, callbacks...);
    }

    /// Loss of the batch in training mode (mean over its samples, each sample's loss multiplied
    /// by its weight when sample weights are given) and the gradients of that mean (left in
    /// variables()'s grad buffers), without updating anything. For gradient checks and
    /// custom loops; not while an accumulation window is open.
    template <class X, class Y, class W = no_sample_weights>
    float loss_and_gradients(const X& x, const Y& y, const W& sample_weight = {}) {
        require_closed_window("loss_and_gradients");
        const auto b = host_batch(x, y, "loss_and_gradients");
        const float* w = host_.sample_weights(sample_weight, b.rows, "loss_and_gradients");
        return step_.loss_and_gradients(b.x, b.y, w, b.rows, "loss_and_gradients");
    }

    /// The gradient of the batch's loss in training mode as sums over its samples with their
    /// count, per trainable variable (TensorFlow's tape.gradient, without dividing by the
    /// batch), each sample's loss multiplied by its weight when sample weights are given.
    /// Changes no variable; the sample position moves on as train_on_batch's does.
    template <class X, class Y, class W = no_sample_weights>
    gradient_sums gradients(const X& x, const Y& y, const W& sample_weight = {}) {
        require_closed_window("gradients");
        const auto b = host_batch(x, y, "gradients");
        const float* w = host_.sample_weights(sample_weight, b.rows, "gradients");
        const step_sums s = guarded([&] { return step_.gradient_sums(b.x, b.y, w, b.rows, "gradients"); });
        return {detail::host_gradients<Exec>(step_.variables()), b.rows, s.loss};
    }
    /// One optimizer step from gradient sums (of one batch or several added together): the
    /// compiled optimizer, its state and the step rules, with the mean over g.samples. Sums of
    /// micro-batches applied once equal accumulate<N> over them. Checked before anything changes.
    void apply_gradients(const gradient_sums& g) {
        static_assert(!ShardingAccumulation<Accum>, "Model::apply_gradients: not across processes (data_parallel)");
        require_compiled("apply_gradients");
        require_closed_window("apply_gradients");
        detail::load_gradients<Exec>(step_.variables(), g);
        guarded([&] { step_.apply_gradient_sums(g.samples); });
    }

    /// Outputs for any number of samples, computed in inference mode in chunks of batch_size.
    template <class X>
    output_tensor predict(const X& x, std::size_t batch_size = default_batch_size) {
        const std::size_t n = detail::checked_rows<input_shape>(x, "inputs", "predict");
        check_chunk(batch_size, "predict");
        output_tensor result(output_shape_for(n));
        detail::with_float_rows<input_shape>(
            x, [&](const float* src) { step_.predict_rows(src, n, batch_size, result.data(), nullptr, "predict"); });
        return result;
    }

    /// Loss and metrics over all samples in inference mode, exactly averaged over samples.
    template <class X, class Y>
    logs evaluate(const X& x, const Y& y, std::size_t batch_size = default_batch_size) {
        check_evaluate_arrays(x, y, batch_size);
        return evaluate(data::Dataset(x, y).batch(batch_size));
    }
    /// evaluate with one weight per sample: the loss is the weighted sum over the samples'
    /// count (Keras's sum_over_batch_size); metrics are not weighted.
    template <class X, class Y, class W>
        requires(!std::is_arithmetic_v<W>)
    logs evaluate(const X& x, const Y& y, const W& sample_weight, std::size_t batch_size = default_batch_size) {
        check_evaluate_arrays(x, y, batch_size);
        return evaluate(data::Dataset(x, y, sample_weight).batch(batch_size));
    }

    /// Loss and metrics over every batch of a dataset, in inference mode.
    logs evaluate(const data::Dataset& ds) {
        require_compiled("evaluate");
        check_dataset(ds, "evaluate");
        return guarded([&] {
            step_sums sums;
            std::size_t n = 0;
            const std::size_t ty = step_.objective().target_cols();
            auto reader = ds.read(0);
            while (reader.next(eval_batch_)) {
                step_.objective().validate(eval_batch_.features.data(), eval_batch_.targets.data(),
                                           eval_batch_.ids.data(), eval_batch_.rows, "evaluate");
                const row_range mine = shard_of(eval_batch_.rows);
                const float* w = eval_batch_.sample_weights();
                step_.evaluate_rows(eval_batch_.features.data() + mine.begin * in_features,
                                    eval_batch_.targets.data() + mine.begin * ty, w ? w + mine.begin : nullptr,
                                    mine.size(), sums);
                n += eval_batch_.rows;
            }
            if (n == 0) throw data_error("evaluate: the dataset yielded no samples");
            reduce_sums(sums);
            return step_.objective().make_logs(sums, n);
        });
    }

    /// Outputs for every sample of a dataset, in the dataset's order.
    output_tensor predict(const data::Dataset& ds) {
        check_dataset(ds, "predict", false);
        output_tensor result(output_shape_for(ds.samples(0)));
        std::size_t written = 0;
        auto reader = ds.read(0);
        while (reader.next(eval_batch_)) {
            step_.predict_rows(eval_batch_.features.data(), eval_batch_.rows, eval_batch_.rows,
                               result.data() + written * out_features, eval_batch_.ids.data(), "predict");
            written += eval_batch_.rows;
        }
        return result;
    }

    // ---- memory -------------------------------------------------------------------------------

    /// What training needs at `rows` samples per micro-batch with an optimizer keeping
    /// `optimizer_slots` vectors per trainable variable. Every term is known from the types:
    /// this is a constant expression.
    static constexpr memory_estimate estimate_memory(std::size_t rows, std::size_t optimizer_slots) {
        return engine_type::estimate_memory(rows, optimizer_slots);
    }
    /// The estimate for the compiled optimizer at the current capacity.
    [[nodiscard]] memory_estimate memory() const {
        return estimate_memory(step_.capacity(), step_.optimizer().slot_count());
    }
    /// The largest micro-batch whose training with the compiled optimizer fits in `bytes` (0 if
    /// not even one sample does), at most 2^40, a size Dataset::batch accepts. Before compile,
    /// use estimate_memory with the slot count. On a GPU, max_batch_for(memory_budget_bytes())
    /// answers for the device memory that was free when the model was built.
    [[nodiscard]] std::size_t max_batch_for(std::size_t bytes) const {
        require_compiled("max_batch_for");  // the optimizer's state is part of the answer
        const std::size_t slots = step_.optimizer().slot_count();
        return largest_rows_within(bytes, [&](std::size_t rows) { return estimate_memory(rows, slots).total_bytes(); });
    }
    /// Holds the model to `bytes` from the next allocation on.
    void set_memory_budget(memory_budget b) { step_.set_budget(b.bytes); }
    [[nodiscard]] std::size_t memory_budget_bytes() const { return step_.budget(); }  ///< The budget in bytes.
    /// The largest micro-batch a step currently runs (the static batch, or what out-of-memory
    /// recovery has settled on; unlimited otherwise).
    [[nodiscard]] std::size_t micro_batch_limit() const { return step_.planner().limit(); }
    /// Every out-of-memory split since the model was built.
    [[nodiscard]] const std::vector<micro_batch_split>& micro_batch_splits() const { return step_.planner().splits(); }

    // ---- step capture -------------------------------------------------------------------------

    /// Whether this model can replay its training step from a captured graph: a static batch on
    /// a policy that captures (cuda; thrust_host, which replays recorded calls the same way),
    /// under an accumulation policy that allows it.
    static constexpr bool can_capture_steps = engine_type::can_capture;

    /// Turns step capture on (the default where can_capture_steps) or off. With it on, the first
    /// full batch that is a whole optimizer step runs eagerly (a warm-up), the second is captured
    /// and every later one replays the graphs. The arithmetic is the same, except that plain SGD,
    /// which an eager step folds into the weight gradient GEMM, runs as its own pass (the same
    /// update, rounded differently).
    void set_step_capture(bool enabled) { step_.captured().set_enabled(enabled); }
    /// Whether the training step is currently held as captured graphs.
    [[nodiscard]] bool step_captured() const { return step_.captured().held(); }
    /// Lets train_on_batch return while a replayed step still runs (a GPU): each step's results
    /// are read two steps later, and train_on_batch returns the logs of the steps read so far
    /// (`samples` counts them: 0 for the first two); read_results() reads the rest. A step whose
    /// loss or input is not finite is still never applied: the device halts it and every step
    /// queued behind it, and the error is raised when it is read, naming its step and samples.
    /// fit reads late by itself. Changes nothing where steps are not replayed.
    void set_late_results(bool late) { step_.captured().set_lagged(late); }
    /// Reads every step still queued (set_late_results) and returns their logs; raises a
    /// non-finite one.
    logs read_results() {
        step_sums sums;
        step_.captured().report(step_, "read_results", sums);
        return step_.objective().logs_of(sums);
    }
    /// Why the step could not be captured (the operation a graph cannot hold), or empty. Such a
    /// model trains eagerly; compile() tries again. fit() also reports it as a callback event
    /// and in History::capture_refusals.
    [[nodiscard]] const std::string& step_capture_refused() const { return step_.captured().refused(); }

    // ---- description and hyper-parameters -------------------------------------------------------

    /// Layers, output shapes (the batch dimension is None for a dynamic batch) and parameter
    /// counts, laid out as Keras prints them.
    void summary(std::ostream& os = std::cout) const {
        write_summary<Net, network_type, Batch, Exec>(os, step_.layer_names());
    }
    /// Trainable and non-trainable parameters together, as Keras counts them.
    [[nodiscard]] static constexpr std::size_t count_params() {
        return network_type::trainable_count + network_type::non_trainable_count;
    }

    /// Keras's definitions (the default) or PyTorch's where they differ (docs/porting.md).
    void set_conventions(conventions c) { step_.set_conventions(c); }
    [[nodiscard]] conventions conventions_used() const { return step_.conventions_used(); }  ///< Keras or PyTorch.
    /// The base learning rate (before fit's schedule and coupling).
    [[nodiscard]] float learning_rate() const { return step_.optimizer().learning_rate(); }
    void set_learning_rate(float lr) { step_.optimizer().set_learning_rate(lr); }  ///< Sets the base rate.
    /// Optimizer steps taken since compile().
    [[nodiscard]] std::uint64_t iterations() const { return step_.optimizer().iterations(); }
    [[nodiscard]] std::uint64_t seed_value() const { return step_.seed(); }  ///< What keys every random draw.

    /// Where the next batch sits in training: random layers key on (epoch, sample index), so a
    /// data loop that sets this makes dropout masks independent of batch boundaries.
    void set_position(std::uint64_t epoch, std::uint64_t first_sample) { step_.set_position(epoch, first_sample); }
    [[nodiscard]] std::uint64_t epoch() const { return step_.epoch(); }  ///< The epoch random layers key on.
    /// The position in the epoch of the next sample trained.
    [[nodiscard]] std::uint64_t sample_cursor() const { return step_.sample_cursor(); }
    /// Number of samples the buffers currently hold; grows, never shrinks.
    [[nodiscard]] std::size_t capacity() const { return step_.capacity(); }

private:
    friend class fit_loop;

    template <class... Callbacks>
    History fit_prepared(const data::Dataset& all, bool arrays, const fit_options& options, Callbacks&... callbacks) {
        static_assert((std::is_base_of_v<Callback, Callbacks> && ...),
                      "Model::fit: every argument after the options must be a callback deriving "
                      "from batchwise::Callback (EarlyStopping, ModelCheckpoint, ...).");
        require_compiled("fit");
        const auto d = detail::prepare_fit_data(all, options, arrays, default_batch_size, seed_value());
        check_dataset(d.train, "fit");
        if (d.validation) check_dataset(*d.validation, "fit (validation data)");
        return guarded([&] { return fit_.run(*this, d.train, d.validation, options, callbacks...); });
    }

    using processes = detail::processes<Accum>;
    /// An exception thrown in f is announced to the other processes (train/step/processes.hpp).
    template <class F>
    decltype(auto) guarded(F&& f) {
        return processes::guarded(accumulation(), std::forward<F>(f));
    }
    [[nodiscard]] row_range shard_of(std::size_t rows) const { return processes::shard(step_.window().policy(), rows); }
    void reduce_sums(step_sums& sums) { processes::reduce_sums(accumulation(), sums); }

    void require_closed_window(const char* call) const {
        if (window_open()) {
            throw usage_error(std::string(call) + ": an accumulation window is open; call apply_accumulated() first");
        }
    }
    /// evaluate's arrays: compiled, samples of the input's shape, targets for each, a chunk size.
    template <class X, class Y>
    void check_evaluate_arrays(const X& x, const Y& y, std::size_t batch_size) const {
        require_compiled("evaluate");
        const std::size_t n = detail::checked_rows<input_shape>(x, "inputs", "evaluate");
        check_targets(y, n, "evaluate");
        check_chunk(batch_size, "evaluate");
        if (n == 0) throw data_error("evaluate: no samples to evaluate");
    }
    static void check_chunk(std::size_t batch_size, const char* call) {
        if (batch_size == 0) throw shape_error(std::string(call) + ": batch_size must be positive");
    }

    template <class Y>
    void check_targets(const Y& y, std::size_t n, const char* call) const {
        step_.objective().template check_targets<output_shape>(y, n, call);
    }
    void check_dataset(const data::Dataset& ds, const char* call, bool targets = true) const {
        step_.objective().template check_dataset<input_shape>(ds, call, targets);
    }

    /// Checks x and y and makes them contiguous host floats (without a copy when they already
    /// are).
    template <class X, class Y>
    host_rows host_batch(const X& x, const Y& y, const char* call) {
        host_.template check_static_rows<X, Batch>();
        host_.template check_static_rows<Y, Batch>();
        require_compiled(call);
        const std::size_t rows = detail::checked_rows<input_shape>(x, "inputs", call);
        check_targets(y, rows, call);
        if (rows == 0) throw data_error(std::string(call) + ": the batch is empty");
        host_.template check_rows_fit<Batch>(rows, call);
        return host_.convert(x, y, rows, step_.objective().target_cols(), call);
    }

    [[nodiscard]] typename output_tensor::shape_type output_shape_for(std::size_t n) const {
        typename output_tensor::shape_type out_shape;
        out_shape[0] = n;
        for (std::size_t d = 0; d < output_shape::rank; ++d) out_shape[d + 1] = output_shape::dims[d];
        return out_shape;
    }

    host_batch_buffers<in_features> host_;
    data::batch_data eval_batch_;
};

}  // namespace batchwise
