// The training step of a Model: micro-batches forward and backward into the accumulation
// window, the window's optimizer step, and inference, over parts that each own their state.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "batchwise/batch/accumulation.hpp"
#include "batchwise/batch/batch_policy.hpp"
#include "batchwise/batch/memory.hpp"
#include "batchwise/core/concepts.hpp"
#include "batchwise/core/errors.hpp"
#include "batchwise/exec/capabilities.hpp"
#include "batchwise/layers/sequential.hpp"
#include "batchwise/train/checkpoint.hpp"
#include "batchwise/train/logs.hpp"
#include "batchwise/train/step/captured.hpp"
#include "batchwise/train/step/micro_batches.hpp"
#include "batchwise/train/step/objective.hpp"
#include "batchwise/train/step/optimizer_state.hpp"
#include "batchwise/train/step/staging.hpp"
#include "batchwise/train/step/variables.hpp"
#include "batchwise/train/step/window.hpp"
#include "batchwise/train/summary.hpp"

namespace batchwise {

/// The contributions of this class are: 1. it feeds a call's rows through the network in
/// micro-batches that fit in memory, splitting them at window boundaries; 2. it ends every
/// window through step_window::finish, choosing how the step is executed (eagerly, with plain
/// SGD folded into the gradient GEMM, or replayed from captured graphs) from what the policies
/// allow; 3. it grows every buffer in one place (reserve) under the memory budget; 4. it runs
/// inference and evaluation on the same buffers.
template <class Net, BatchPolicy Batch, ExecutionPolicy Exec, AccumulationPolicy Accum>
class step_engine {
public:
    using network_type = typename Net::template network<Exec>;  ///< The layers on Exec.
    using execution_policy = Exec;                              ///< Where the arithmetic runs.
    using accumulation_policy = Accum;                          ///< How micro-batches make a step.
    using input_shape = typename Net::input_shape;              ///< One sample's input shape.
    using output_shape = typename Net::output_shape;            ///< One sample's output shape.
    static constexpr std::size_t in_features = input_shape::size;    ///< Floats per input sample.
    static constexpr std::size_t out_features = output_shape::size;  ///< Floats per output sample.
    using window_type = step_window<Exec, Accum>;  ///< The accumulation window of a step.
    /// The device copies of a batch's inputs and targets.
    using staging_type = batch_staging<Exec, in_features, out_features, Batch::is_static>;
    /// The micro-batch sizes of a step (out-of-memory recovery).
    using planner_type = micro_batch_planner<(Batch::is_static ? Batch::extent : 0), network_type::split_granularity>;
    using objective_type = step_objective<Exec, in_features, out_features>;  ///< The loss and metrics.
    /// Whether a step can be replayed from captured graphs: a static batch on a policy that
    /// captures, under an accumulation policy that allows it.
    static constexpr bool can_capture = Batch::is_static && GraphCapturePolicy<Exec> && window_type::allows_capture;
    static constexpr std::size_t static_rows = Batch::is_static ? Batch::extent : 0;  ///< A static batch's rows.
    using captured_type = captured_step<Exec, can_capture>;  ///< The captured step graphs.

    /// Floats per row of the engine's own buffers: the loss gradient, a row scratch, the staging,
    /// and the two pairs of input and target buffers that replayed steps alternate between.
    static constexpr std::size_t batch_floats(std::size_t rows) {
        return rows * (2 * out_features + 1) + rows * staging_type::floats_per_row +
               (can_capture ? 2 * rows * (in_features + out_features) : 0);
    }

    /// What training needs at `rows` samples per micro-batch with `optimizer_slots` vectors per
    /// trainable variable (Model::estimate_memory).
    static constexpr memory_estimate estimate_memory(std::size_t rows, std::size_t optimizer_slots) {
        constexpr std::size_t trainable = network_type::trainable_count;
        constexpr std::size_t variables = trainable + network_type::non_trainable_count;
        memory_estimate e;
        e.rows = rows;
        e.parameter_bytes = sizeof(float) * variables;
        e.gradient_bytes = sizeof(float) * trainable;
        e.layer_state_bytes = sizeof(float) * (network_type::state_floats - variables - trainable);
        e.optimizer_bytes = sizeof(float) * trainable * optimizer_slots;
        e.accumulator_bytes = sizeof(float) * trainable * window_type::accumulator_floats_per_parameter;
        e.batch_bytes = sizeof(float) * (network_type::buffer_floats(rows) + batch_floats(rows));
        return e;
    }

    /// A network initialised from `seed`, held to `budget` bytes.
    step_engine(std::uint64_t seed, std::size_t budget)
        : seed_(seed), budget_(budget), net_(std::make_unique<network_type>()) {
        Exec::prepare();
        net_->initialize(seed_);
        layer_names_ = detail::keras_layer_names<Net>();
        vars_ = variable_set(*net_, layer_names_, gemm_updated_variables());
        window_ = window_type(vars_);
    }

    // ---- parts ----------------------------------------------------------------------------------

    network_type& network() { return *net_; }  ///< The layers.
    /// Keras's names of the layers ("dense", "dense_1", ...), in order.
    [[nodiscard]] const std::array<std::string, network_type::size>& layer_names() const { return layer_names_; }
    [[nodiscard]] const variable_set& variables() const { return vars_; }  ///< Every variable, named.
    optimizer_state<Exec>& optimizer() { return opt_; }  ///< The compiled optimizer and its state.
    /// The compiled optimizer and its state.
    [[nodiscard]] const optimizer_state<Exec>& optimizer() const { return opt_; }
    objective_type& objective() { return objective_; }  ///< The compiled loss and metrics.
    /// The compiled loss and metrics.
    [[nodiscard]] const objective_type& objective() const { return objective_; }
    window_type& window() { return window_; }  ///< The open accumulation window.
    [[nodiscard]] const window_type& window() const { return window_; }  ///< The open accumulation window.
    planner_type& planner() { return planner_; }  ///< The micro-batch limit and its splits.
    /// The micro-batch limit and its splits.
    [[nodiscard]] const planner_type& planner() const { return planner_; }
    captured_type& captured() { return captured_; }  ///< The captured step, if any.
    [[nodiscard]] const captured_type& captured() const { return captured_; }  ///< The captured step, if any.

    [[nodiscard]] std::uint64_t seed() const { return seed_; }  ///< What keys every random draw.
    void set_seed(std::uint64_t s) { seed_ = s; }                ///< A checkpoint's seed.
    [[nodiscard]] std::size_t budget() const { return budget_; }  ///< The memory budget in bytes.
    void set_budget(std::size_t b) { budget_ = b; }              ///< Holds the model to b bytes from now on.
    /// Samples the buffers hold (grows to the largest micro-batch seen).
    [[nodiscard]] std::size_t capacity() const { return capacity_; }
    [[nodiscard]] std::uint64_t epoch() const { return epoch_; }  ///< The epoch random layers key on.
    /// The position in the epoch of the next sample trained (dropout masks key on it).
    [[nodiscard]] std::uint64_t sample_cursor() const { return sample_cursor_; }
    /// Where the next batch sits in training (Model::set_position).
    void set_position(std::uint64_t epoch, std::uint64_t first_sample) {
        epoch_ = epoch;
        sample_cursor_ = first_sample;
    }
    /// Moves the position past n samples not trained here (fit's resume reads past them).
    void advance_cursor(std::size_t n) { sample_cursor_ += n; }

    /// Model::compile after its static checks: the loss and metrics against the output, the
    /// optimizer's state against the budget; then the old step's graphs and window go before
    /// the new optimizer, loss and metrics are put in place.
    template <class Optimizer, class Loss, class... Metrics>
    void compile(Optimizer optimizer, Loss loss, Metrics... metrics) {
        objective_type::template check_compile<output_shape, Loss, Metrics...>(loss);
        if (optimizer.slot_count() > optimizer_state<Exec>::max_slots) {
            throw usage_error("Model::compile: the optimizer keeps too many slots");
        }
        const memory_estimate e = estimate_memory(std::max<std::size_t>(capacity_, 1), optimizer.slot_count());
        if (e.total_bytes() > budget_) {
            throw out_of_memory("Model::compile: with " + std::string(Optimizer::name) + "'s state the model needs " +
                                std::to_string(e.total_bytes()) + " bytes but the memory budget is " +
                                std::to_string(budget_));
        }
        // The graphs hold the old optimizer's, loss's and metrics' calls, and the window the old
        // loss's gradients: both go before anything new is allocated.
        opt_.check_rules_for(optimizer);
        window_.discard();
        captured_.reset();
        opt_.compile(std::move(optimizer), vars_);
        objective_.compile(std::move(loss), std::move(metrics)...);
    }

    /// Keras's or PyTorch's definitions for the optimizer (this one and later ones) and the
    /// layers; captured graphs, which hold the old update calls, are dropped.
    void set_conventions(conventions c) {
        captured_.reset();
        opt_.set_conventions(c);
        net_->set_conventions(c);
    }
    /// Whose definitions the step follows.
    [[nodiscard]] conventions conventions_used() const { return opt_.conventions_used(); }

    /// Grows every buffer to hold `rows` samples: the only place a step may allocate, and the
    /// first thing a micro-batch does, so that running out of memory changes nothing.
    void reserve(std::size_t rows) {
        if (rows <= capacity_) return;
        const memory_estimate e = estimate_memory(rows, opt_.slot_count());
        if (e.total_bytes() > budget_) {
            throw out_of_memory("memory budget: a micro-batch of " + std::to_string(rows) + " needs " +
                                std::to_string(e.total_bytes()) + " bytes (" + std::to_string(e.fixed_bytes()) +
                                " fixed + " + std::to_string(e.batch_bytes) + " for the batch), the budget is " +
                                std::to_string(budget_));
        }
        detail::require_memory_for_growth<Exec>(capacity_ ? estimate_memory(capacity_, opt_.slot_count()).batch_bytes : 0,
                                                e.batch_bytes);
        net_->reserve(rows);
        if constexpr (RowScratchPolicy<Exec>) Exec::reserve_rows(rows * network_type::column_rows_per_sample);
        staging_.reserve(rows);
        Exec::reserve(grad_, rows * out_features);
        Exec::reserve(row_scratch_, rows);
        detail::require_memory_for_growth<Exec>(0, 0);  // the headroom is still there
        capacity_ = rows;
    }

    // ---- checkpoints ----------------------------------------------------------------------------

    /// The engine's part of a checkpoint: variables, optimizer, seed, micro-batch limit and the
    /// sample position, with fit's (epoch, step).
    [[nodiscard]] named_arrays checkpoint(std::uint64_t epoch, std::size_t step) const {
        return checkpoint_arrays<Exec>(vars_, opt_,
                                       {epoch, step, sample_cursor_, seed_, planner_.limited() ? planner_.limit() : 0});
    }
    /// Restores the engine's part of a checkpoint (everything is checked before anything
    /// changes) and returns its position.
    training_position restore(const named_arrays& arrays, const std::filesystem::path& path) {
        const restored_state s = restore_checkpoint<Exec>(arrays, path, vars_, opt_);
        window_.discard();
        opt_.restore_counters(s.iterations, s.samples_seen, s.reference_batch);
        opt_.set_learning_rate(s.learning_rate);
        seed_ = s.position.seed;
        captured_.drop();  // dropout's key is derived from the seed when a step is captured
        planner_.restore_limit(s.position.micro_batch_limit);
        set_position(s.position.epoch, s.position.sample);
        return s.position;
    }

    // ---- training -------------------------------------------------------------------------------

    /// Trains on n rows as one call's worth of micro-batches: splits them at window boundaries,
    /// steps the optimizer whenever a window is complete, and returns the rows' loss and metrics.
    /// `w`: the rows' sample weights in host memory, already checked, or null.
    logs feed(const float* x, const float* y, const float* w, const std::size_t* ids, std::size_t n,
              const char* call) {
        (void)captured_.take_undone();  // of an earlier call
        if constexpr (ShardingAccumulation<Accum>) return feed_shard(x, y, w, ids, n, call);
        // Note [deferred input check] in staging.hpp.
        bool defer = false;
        if constexpr (!staging_type::host_memory) {
            defer = n <= window_.room() && n <= planner_.limit() && n <= capacity_;
        }
        objective_.validate(x, y, ids, n, call, !defer);
        const auto deferral = staging_.defer_check(ids, call, defer);
        step_sums sums;
        const std::size_t ty = objective_.target_cols();
        std::size_t done = 0;
        while (done < n) {
            const std::size_t part = std::min(n - done, window_.room());
            train_rows(x + done * in_features, y + done * ty, w ? w + done : nullptr, part, 1.0f, call, sums,
                       window_.whole_step(part));
            done += part;
            if (window_.full_by_samples()) finish_step();
        }
        if (window_.count_micro_batch()) finish_step();
        return objective_.logs_of(sums);  // replayed steps may report later (fit lets them lag)
    }

    /// feed() when the window's rows are shared among processes: every process is given the same
    /// n rows and splits them where a window ends, exactly as one process would; of each piece it
    /// trains the rows the policy's shard() gives it, at their positions in the whole piece (so
    /// dropout draws the same masks), and counts the rest as trained elsewhere. The returned
    /// logs are of this process's rows (`samples` of them).
    logs feed_shard(const float* x, const float* y, const float* w, const std::size_t* ids, std::size_t n,
                    const char* call) {
        // Every process checks all n rows, so a bad sample stops every process alike.
        objective_.validate(x, y, ids, n, call);
        step_sums sums;
        const std::size_t ty = objective_.target_cols();
        std::size_t done = 0;
        while (done < n) {
            const std::size_t part = std::min(n - done, window_.room());
            const row_range mine = window_.policy().shard(part);
            const std::uint64_t cursor = sample_cursor_;
            sample_cursor_ = cursor + mine.begin;
            const float* xs = x + (done + mine.begin) * in_features;
            const float* ys = y + (done + mine.begin) * ty;
            const float* ws = w ? w + done + mine.begin : nullptr;
            if constexpr (network_type::synchronizes_statistics) {
                train_synchronized(xs, ys, ws, mine.size(), call, sums);
            } else {
                train_rows(xs, ys, ws, mine.size(), 1.0f, call, sums);
            }
            sample_cursor_ = cursor + part;
            window_.add_remote(part - mine.size());
            done += part;
            if (window_.full_by_samples()) finish_step();
        }
        if (window_.count_micro_batch()) finish_step();
        return objective_.logs_of(sums);
    }

    /// A process's share of a piece as one micro-batch, even an empty one: layers with
    /// synchronized statistics sum them across processes in every pass, so every process runs
    /// the same passes, and none may split its share alone.
    void train_synchronized(const float* x, const float* y, const float* w, std::size_t n, const char* call,
                            step_sums& sums) {
        const char* why =
            "; with synchronized batch norm every process trains its share of a batch as one micro-batch, "
            "since the processes normalise it together: lower the global batch, or accumulate it in "
            "smaller batches (data_parallel<accumulate<K>>)";
        try {
            reserve(std::max<std::size_t>(n, 1));  // an empty share still computes its statistics
            train_micro_batch(x, y, w, n, 1.0f, call, sums, false);
        } catch (const out_of_memory& e) {
            throw out_of_memory(e.what() + std::string(why));
        } catch (const std::bad_alloc&) {
            throw out_of_memory("allocating buffers for a micro-batch of " + std::to_string(n) + " failed" + why);
        }
    }

    /// Forward and backward over n rows into the open window, in micro-batches.
    void train_rows(const float* x, const float* y, const float* w, std::size_t n, float grad_scale,
                    const char* call, step_sums& sums, bool whole_step = false) {
        const std::size_t ty = objective_.target_cols();
        planner_.run(
            n, epoch_, opt_.iterations() + 1,
            [&](std::size_t offset, std::size_t rows) {
                train_micro_batch(x + offset * in_features, y + offset * ty, w ? w + offset : nullptr, rows,
                                  grad_scale, call, sums, whole_step && rows == n);
            },
            [&](std::size_t rows) { return estimate_memory(rows, opt_.slot_count()).total_bytes(); }, budget_);
    }

    /// The optimizer step of the open window, executed eagerly (train_micro_batch may have
    /// folded part of it into the gradient GEMM). Returns false when no window was open.
    bool finish_step() { return window_.finish(*net_, opt_, vars_); }

    /// Reads the results of replayed steps still queued (fit lets them lag), so that weights
    /// and counters agree; a fault found is undone and kept for the next training call.
    void settle_queued() { captured_.settle(*this); }

    /// Discards the open window and raises numeric_error: nothing of this step is applied.
    /// `where` says where the step sat, when it was found after it was queued.
    [[noreturn]] void stop_on_non_finite_loss(double loss_sum, const char* call, const std::string& where = {}) {
        const std::size_t discarded = window_.samples();
        window_.discard();
        throw numeric_error(detail::non_finite_loss_message(call, loss_sum, opt_.iterations() + 1, where, discarded));
    }

    /// Loss of n rows in training mode (mean) and the gradients of that mean, left in the
    /// variables' gradient buffers; nothing is updated and the position does not move.
    float loss_and_gradients(const float* x, const float* y, const float* w, std::size_t n, const char* call) {
        objective_.validate(x, y, nullptr, n, call);
        const std::uint64_t cursor = sample_cursor_;
        step_sums sums;
        train_rows(x, y, w, n, 1.0f / static_cast<float>(n), call, sums);
        window_.write_back(vars_);
        window_.discard();  // the gradients stay for inspection
        sample_cursor_ = cursor;
        return static_cast<float>(sums.loss / static_cast<double>(n));
    }

    /// Gradient sums over n rows in training mode, left in the variables' grad buffers: one
    /// micro-batch of a step that the caller applies (Model::gradients). The sample cursor moves
    /// on as a trained micro-batch's does, so dropout masks are those train_on_batch would draw;
    /// no variable or optimizer state changes.
    step_sums gradient_sums(const float* x, const float* y, const float* w, std::size_t n, const char* call) {
        objective_.validate(x, y, nullptr, n, call);
        step_sums sums;
        train_rows(x, y, w, n, 1.0f, call, sums);
        if (!std::isfinite(sums.loss)) stop_on_non_finite_loss(sums.loss, call);
        window_.write_back(vars_);
        window_.discard();
        return sums;
    }
    /// One optimizer step from gradient sums over `samples` samples already in the grad buffers
    /// (Model::apply_gradients). Layers' step statistics are reset first: batch norm's moving
    /// averages move with the forward passes of fit and train_on_batch, not with a gradient.
    void apply_gradient_sums(std::size_t samples) {
        net_->begin_step();
        window_.add(vars_, opt_, samples);
        window_.finish(*net_, opt_, vars_);
    }

    // ---- inference ------------------------------------------------------------------------------

    /// Outputs of n samples (checked finite first) into host memory `out`, computed in
    /// inference mode in chunks of `chunk` samples.
    void predict_rows(const float* x, std::size_t n, std::size_t chunk, float* out, const std::size_t* ids,
                      const char* call) {
        detail::check_finite(x, n, in_features, ids, call, "input");
        for (std::size_t first = 0; first < n; first += chunk) {
            infer(x + first * in_features, std::min(chunk, n - first), [&](std::size_t offset, const_matrix_view pred) {
                Exec::to_host(pred.data, pred.rows * out_features, out + (first + offset) * out_features);
            });
        }
    }

    /// Inference over n rows of host inputs in micro-batches; consume(offset, predictions).
    template <class F>
    void infer(const float* x, std::size_t n, F&& consume) {
        planner_.run(
            n, epoch_, opt_.iterations() + 1,
            [&](std::size_t offset, std::size_t count) {
                const std::size_t rows = Batch::is_static ? Batch::extent : count;
                reserve(rows);
                const auto src = staging_.stage_batch(x + offset * in_features, nullptr, count, rows,
                                                      objective_.target_cols());
                const pass_context ctx{
                    .training = false, .seed = seed_, .epoch = epoch_, .first_sample = 0, .valid_rows = count};
                const const_matrix_view out = net_->forward({src.x, rows, in_features}, ctx);
                consume(offset, const_matrix_view{out.data, count, out_features});
            },
            [&](std::size_t rows) { return estimate_memory(rows, opt_.slot_count()).total_bytes(); }, budget_);
    }

    /// Adds the loss and metric sums of n rows, in inference mode, into `sums`; the loss weighted
    /// by the rows' sample weights `w` (host memory) unless null.
    void evaluate_rows(const float* x, const float* y, const float* w, std::size_t n, step_sums& sums) {
        const std::size_t ty = objective_.target_cols();
        infer(x, n, [&](std::size_t offset, const_matrix_view pred) {
            const std::size_t count = pred.rows;
            const const_matrix_view target{staging_.targets(y + offset * ty, count, ty), count, ty};
            const float* weights = staging_.weights(w ? w + offset : nullptr, count);
            sums.loss += objective_.evaluation_loss_sum(pred, target, weights, Exec::data(row_scratch_));
            objective_.add_metrics(pred, target, Exec::data(row_scratch_), sums);
        });
    }

private:
    friend captured_type;

    static std::array<std::string_view, network_type::size> gemm_updated_variables() {
        return []<std::size_t... I>(std::index_sequence<I...>) {
            return std::array<std::string_view, network_type::size>{
                network_type::template variable_updated_in_gemm<I>()...};
        }(std::make_index_sequence<network_type::size>{});
    }

    /// What synchronized layers sum their statistics through, when the policy spans processes.
    const statistics_reducer* shared_statistics() {
        if constexpr (network_type::synchronizes_statistics &&
                      requires(Accum& a, float* d, std::size_t n) { a.template sum_statistics<Exec>(d, n); }) {
            // Set at every call: the policy lives in the window, which moves with the model.
            reducer_ = {&window_.policy(), [](void* policy, float* data, std::size_t n) {
                            static_cast<Accum*>(policy)->template sum_statistics<Exec>(data, n);
                        }};
            return &reducer_;
        } else {
            return nullptr;
        }
    }

    void train_micro_batch(const float* x, const float* y, const float* w, std::size_t n, float grad_scale,
                           const char* call, step_sums& sums, bool whole_step) {
        if constexpr (can_capture) {
            // A full batch that is a whole optimizer step replays the captured graphs; the graphs
            // hold no weighting pass, so a step with sample weights runs eagerly.
            if (whole_step && w == nullptr && n == Batch::extent && captured_.ready(opt_) &&
                captured_.train(*this, x, y, n, call, sums)) {
                return;
            }
        }
        captured_.report(*this, call, sums);  // an eager step reads no guard: replayed steps report first
        const std::size_t rows = Batch::is_static ? Batch::extent : n;
        reserve(rows);  // first: running out of memory here leaves everything as it was
        const auto src = staging_.stage_batch(x, y, n, rows, objective_.target_cols());
        if (window_.starts_step()) net_->begin_step();
        const pass_context ctx{.training = true, .seed = seed_, .epoch = epoch_, .first_sample = sample_cursor_,
                               .valid_rows = n, .statistics = shared_statistics()};
        const const_matrix_view out = net_->forward({src.x, rows, in_features}, ctx);
        const const_matrix_view pred{out.data, n, out_features};
        const const_matrix_view target{src.y, n, objective_.target_cols()};
        // Gradients are of the sum of the losses; the optimizer divides by the window's samples.
        const double loss_sum = objective_.training_loss_sum(pred, target, staging_.weights(w, n), Exec::data(grad_),
                                                             grad_scale, Exec::data(row_scratch_));
        if (!std::isfinite(loss_sum)) stop_on_non_finite_loss(loss_sum, call);
        // Padding rows must not move any gradient.
        if (rows > n) Exec::fill(Exec::data(grad_) + n * out_features, (rows - n) * out_features, 0.0f);
        objective_.add_metrics(pred, target, Exec::data(row_scratch_), sums);
        // A micro-batch that is the whole step with plain SGD: each Dense updates its kernel in
        // the gradient GEMM (W = W - lr/n X^T dY), saving a pass over the weights that costs as
        // much as the GEMMs at small batches. finish() steps the rest as usual.
        std::optional<update_in_gemm> in_gemm;
        if (whole_step && window_.allows_update_in_gemm()) {
            in_gemm = opt_.optimizer().in_gemm(opt_.hyperparameters_for(n).learning_rate, 1.0f / static_cast<float>(n));
        }
        if (in_gemm) {
            net_->backward_and_update({Exec::data(grad_), rows, out_features}, *in_gemm);
        } else {
            net_->backward({Exec::data(grad_), rows, out_features}, window_.backward_accumulates());
        }
        window_.add(vars_, opt_, n, in_gemm.has_value());
        sample_cursor_ += n;
        sums.loss += loss_sum;
        sums.samples += n;
    }

    std::uint64_t seed_ = 0;
    std::size_t budget_ = 0;
    std::unique_ptr<network_type> net_;
    std::array<std::string, network_type::size> layer_names_{};
    variable_set vars_;
    optimizer_state<Exec> opt_;
    objective_type objective_;
    window_type window_;
    staging_type staging_;
    planner_type planner_;
    captured_type captured_;
    statistics_reducer reducer_;
    typename Exec::vector grad_, row_scratch_;
    std::size_t capacity_ = 0;
    std::uint64_t epoch_ = 0;
    std::uint64_t sample_cursor_ = 0;
};

}  // namespace batchwise
