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
    using network_type = typename Net::template network<Exec>;
    using input_shape = typename Net::input_shape;
    using output_shape = typename Net::output_shape;
    static constexpr std::size_t in_features = input_shape::size;
    static constexpr std::size_t out_features = output_shape::size;
    using window_type = step_window<Exec, Accum>;
    using staging_type = batch_staging<Exec, in_features, out_features, Batch::is_static>;
    using planner_type = micro_batch_planner<(Batch::is_static ? Batch::extent : 0), network_type::split_granularity>;
    using objective_type = step_objective<Exec, in_features, out_features>;
    /// Whether a step can be replayed from captured graphs: a static batch on a policy that
    /// captures, under an accumulation policy that allows it.
    static constexpr bool can_capture = Batch::is_static && GraphCapturePolicy<Exec> && window_type::allows_capture;
    using captured_type = captured_step<Exec, can_capture>;

    /// Floats per row of the engine's own buffers: the loss gradient, a row scratch, the staging,
    /// and the two pairs of input and target buffers that replayed steps alternate between.
    static constexpr std::size_t batch_floats(std::size_t rows) {
        return rows * (2 * out_features + 1) + rows * staging_type::floats_per_row +
               (can_capture ? 2 * rows * (in_features + out_features) : 0);
    }

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

    step_engine(std::uint64_t seed, std::size_t budget)
        : seed_(seed), budget_(budget), net_(std::make_unique<network_type>()) {
        Exec::prepare();
        net_->initialize(seed_);
        layer_names_ = detail::keras_layer_names<Net>();
        vars_ = variable_set(*net_, layer_names_, gemm_updated_variables());
        window_ = window_type(vars_);
    }

    // ---- parts ----------------------------------------------------------------------------------

    network_type& network() { return *net_; }
    [[nodiscard]] const std::array<std::string, network_type::size>& layer_names() const { return layer_names_; }
    [[nodiscard]] const variable_set& variables() const { return vars_; }
    optimizer_state<Exec>& optimizer() { return opt_; }
    [[nodiscard]] const optimizer_state<Exec>& optimizer() const { return opt_; }
    objective_type& objective() { return objective_; }
    [[nodiscard]] const objective_type& objective() const { return objective_; }
    window_type& window() { return window_; }
    [[nodiscard]] const window_type& window() const { return window_; }
    planner_type& planner() { return planner_; }
    [[nodiscard]] const planner_type& planner() const { return planner_; }
    captured_type& captured() { return captured_; }
    [[nodiscard]] const captured_type& captured() const { return captured_; }

    [[nodiscard]] std::uint64_t seed() const { return seed_; }
    void set_seed(std::uint64_t s) { seed_ = s; }
    [[nodiscard]] std::size_t budget() const { return budget_; }
    void set_budget(std::size_t b) { budget_ = b; }
    [[nodiscard]] std::size_t capacity() const { return capacity_; }
    [[nodiscard]] std::uint64_t epoch() const { return epoch_; }
    [[nodiscard]] std::uint64_t sample_cursor() const { return sample_cursor_; }
    void set_position(std::uint64_t epoch, std::uint64_t first_sample) {
        epoch_ = epoch;
        sample_cursor_ = first_sample;
    }
    void advance_cursor(std::size_t n) { sample_cursor_ += n; }

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
        net_->reserve(rows);
        if constexpr (RowScratchPolicy<Exec>) Exec::reserve_rows(rows * network_type::column_rows_per_sample);
        staging_.reserve(rows);
        Exec::reserve(grad_, rows * out_features);
        Exec::reserve(row_scratch_, rows);
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
    logs feed(const float* x, const float* y, const std::size_t* ids, std::size_t n, const char* call) {
        if constexpr (ShardingAccumulation<Accum>) return feed_shard(x, y, ids, n, call);
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
            train_rows(x + done * in_features, y + done * ty, part, 1.0f, call, sums, window_.whole_step(part));
            done += part;
            if (window_.full_by_samples()) finish_step();
        }
        if (window_.count_micro_batch()) finish_step();
        return objective_.make_logs(sums, n);
    }

    /// feed() when the window's rows are shared among processes: every process is given the same
    /// n rows and splits them where a window ends, exactly as one process would; of each piece it
    /// trains the rows the policy's shard() gives it, at their positions in the whole piece (so
    /// dropout draws the same masks), and counts the rest as trained elsewhere. The returned
    /// logs are of this process's rows (`samples` of them).
    logs feed_shard(const float* x, const float* y, const std::size_t* ids, std::size_t n, const char* call) {
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
            if constexpr (network_type::synchronizes_statistics) {
                train_synchronized(xs, ys, mine.size(), call, sums);
            } else {
                train_rows(xs, ys, mine.size(), 1.0f, call, sums);
            }
            sample_cursor_ = cursor + part;
            window_.add_remote(part - mine.size());
            done += part;
            if (window_.full_by_samples()) finish_step();
        }
        if (window_.count_micro_batch()) finish_step();
        logs out = objective_.make_logs(sums, std::max<std::size_t>(sums.samples, 1));
        out.samples = sums.samples;
        return out;
    }

    /// A process's share of a piece as one micro-batch, even an empty one: layers with
    /// synchronized statistics sum them across processes in every pass, so every process runs
    /// the same passes, and none may split its share alone.
    void train_synchronized(const float* x, const float* y, std::size_t n, const char* call, step_sums& sums) {
        const char* why =
            "; with synchronized batch norm every process trains its share of a batch as one micro-batch, "
            "since the processes normalise it together: lower the global batch, or accumulate it in "
            "smaller batches (data_parallel<accumulate<K>>)";
        try {
            reserve(std::max<std::size_t>(n, 1));  // an empty share still computes its statistics
            train_micro_batch(x, y, n, 1.0f, call, sums, false);
        } catch (const out_of_memory& e) {
            throw out_of_memory(e.what() + std::string(why));
        } catch (const std::bad_alloc&) {
            throw out_of_memory("allocating buffers for a micro-batch of " + std::to_string(n) + " failed" + why);
        }
    }

    /// Forward and backward over n rows into the open window, in micro-batches.
    void train_rows(const float* x, const float* y, std::size_t n, float grad_scale, const char* call,
                    step_sums& sums, bool whole_step = false) {
        const std::size_t ty = objective_.target_cols();
        planner_.run(
            n, epoch_, opt_.iterations() + 1,
            [&](std::size_t offset, std::size_t rows) {
                train_micro_batch(x + offset * in_features, y + offset * ty, rows, grad_scale, call, sums,
                                  whole_step && rows == n);
            },
            [&](std::size_t rows) { return estimate_memory(rows, opt_.slot_count()).total_bytes(); });
    }

    /// The optimizer step of the open window, executed eagerly (train_micro_batch may have
    /// folded part of it into the gradient GEMM). Returns false when no window was open.
    bool finish_step() { return window_.finish(*net_, opt_, vars_); }

    /// Discards the open window and raises numeric_error: nothing of this step is applied.
    [[noreturn]] void stop_on_non_finite_loss(double loss_sum, const char* call) {
        const std::size_t discarded = window_.samples();
        window_.discard();
        throw numeric_error(std::string(call) + ": the loss is not finite (" + std::to_string(loss_sum) +
                            ") at optimizer step " + std::to_string(opt_.iterations() + 1) +
                            "; no update was applied" +
                            (discarded ? " and the " + std::to_string(discarded) +
                                             " samples accumulated for the step were discarded"
                                       : std::string()) +
                            " (lower the learning rate, or check the data)");
    }

    /// Loss of n rows in training mode (mean) and the gradients of that mean, left in the
    /// variables' gradient buffers; nothing is updated and the position does not move.
    float loss_and_gradients(const float* x, const float* y, std::size_t n, const char* call) {
        objective_.validate(x, y, nullptr, n, call);
        const std::uint64_t cursor = sample_cursor_;
        step_sums sums;
        train_rows(x, y, n, 1.0f / static_cast<float>(n), call, sums);
        window_.write_back(vars_);
        window_.discard();  // the gradients stay for inspection
        sample_cursor_ = cursor;
        return static_cast<float>(sums.loss / static_cast<double>(n));
    }

    // ---- inference ------------------------------------------------------------------------------

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
            [&](std::size_t rows) { return estimate_memory(rows, opt_.slot_count()).total_bytes(); });
    }

    /// Adds the loss and metric sums of n rows, in inference mode, into `sums`.
    void evaluate_rows(const float* x, const float* y, std::size_t n, step_sums& sums) {
        const std::size_t ty = objective_.target_cols();
        infer(x, n, [&](std::size_t offset, const_matrix_view pred) {
            const std::size_t count = pred.rows;
            const const_matrix_view target{staging_.targets(y + offset * ty, count, ty), count, ty};
            sums.loss += objective_.loss_sum(pred, target, nullptr, 0.0f, Exec::data(row_scratch_));
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

    void train_micro_batch(const float* x, const float* y, std::size_t n, float grad_scale, const char* call,
                           step_sums& sums, bool whole_step) {
        if constexpr (can_capture) {
            // A full batch that is a whole optimizer step replays the captured graphs.
            if (whole_step && n == Batch::extent && captured_.ready(opt_) && captured_.train(*this, x, y, n, call, sums)) {
                return;
            }
        }
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
        const double loss_sum =
            objective_.loss_sum(pred, target, Exec::data(grad_), grad_scale, Exec::data(row_scratch_));
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
