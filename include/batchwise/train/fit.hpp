// Model::fit: the epoch loop over a dataset, with validation, callbacks, History and exact
// resumption from a checkpoint. Its state (the position in training, a loaded resume point, the
// batch buffers) lives here, not on Model.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "batchwise/batch/batch_policy.hpp"
#include "batchwise/batch/coupling.hpp"
#include "batchwise/data/dataset.hpp"
#include "batchwise/train/callbacks.hpp"
#include "batchwise/train/checkpoint.hpp"
#include "batchwise/train/finite_weights.hpp"
#include "batchwise/train/fit_scopes.hpp"
#include "batchwise/train/history.hpp"
#include "batchwise/train/logs.hpp"
#include "batchwise/train/progress_bar.hpp"
#include "batchwise/train/step/objective.hpp"
#include "batchwise/train/step/resident.hpp"
#include "batchwise/train/step/window.hpp"

namespace batchwise {

/// Options of Model::fit, named as Keras names them.
struct fit_options {
    /// Train until this many epochs have been completed (counting from initial_epoch).
    std::uint64_t epochs = 1;
    /// First epoch to train, counted over the model's whole training (as a checkpoint counts);
    /// unset: where a loaded checkpoint left off, or else a fresh count from 0 that continues
    /// the model's earlier fit calls: their shuffles and dropout masks are not replayed.
    std::optional<std::uint64_t> initial_epoch{};
    /// Samples per batch where fit batches the data itself: arrays, and unbatched datasets
    /// (a batched dataset brings its own sizes). 0: Keras's 32, or the static batch.
    std::size_t batch_size = 0;
    /// Arrays only: this fraction of the samples, taken from the end before any shuffling (as
    /// Keras takes it), is held out and evaluated as validation data after every epoch.
    double validation_split = 0.0;
    /// Keras's validation_data: evaluated at the end of every epoch into "val_" values. An
    /// unbatched dataset (Dataset(x_val, y_val)) is batched with batch_size.
    std::optional<data::Dataset> validation_data{};
    /// Keras's class_weight: each training sample's loss (and its gradient) is multiplied by
    /// its class's weight; the mean stays over samples, so it is exact under accumulation. One
    /// entry per class (the classes of a sparse loss, the columns of one-hot targets, or 0 and 1
    /// for a single binary output). Validation loss and metrics are not weighted.
    std::map<std::size_t, float> class_weight{};
    /// Arrays only: Keras's sample_weight, one weight per sample (shape (n,), each finite and
    /// >= 0) that multiplies its training loss and gradient, together with its class weight;
    /// the mean stays over samples, so it is exact under accumulation. validation_split takes
    /// the weights of the samples it holds out, and the validation loss is weighted by them.
    /// Empty: every sample weighs 1. A dataset carries its own: Dataset(x, y, w).
    xt::xtensor<float, 1> sample_weight{};
    /// Arrays only: the training samples are shuffled anew every epoch (keyed by the model's
    /// seed and the epoch). A dataset decides its own order (Dataset::shuffle).
    bool shuffle = true;
    /// At most this many batches per epoch (each epoch still starts a fresh pass); 0: all.
    /// A plain count rather than an optional: GCC 12 warns falsely about optional payloads.
    std::size_t steps_per_epoch = 0;
    /// 0: silent; 1: progress bar (redrawn in place on a terminal); 2: one line per epoch.
    int verbose = 1;
    /// The learning rate by samples trained before each optimizer step (lr::exponential_decay, ...);
    /// unset: the model's learning rate.
    sample_lr_schedule learning_rate_schedule{};
    /// How each step's learning rate (and, with adam_sqrt, Adam's betas and epsilon) follow its
    /// batch size (docs/batch_sizes.md).
    lr_coupling coupling{};
    /// Keeps the training arrays in the execution policy's memory (a GPU's): they are copied
    /// there once per fit (checked as batches are), every step sends only its samples' indices,
    /// and a replayed step gathers its rows on the device. The order, shuffles and batches are
    /// the dataset's, exactly; a dataset with map() or a batch that mixes concatenated arrays is
    /// refused (usage_error). Validation data is read as usual. Nothing changes on policies that
    /// compute in host memory (cpu_blas).
    bool data_on_device = false;
};

namespace detail {

/// The datasets fit reads. A batched dataset is read as it is; arrays (which arrive as one
/// unbatched dataset) and unbatched datasets are batched here with options.batch_size, arrays
/// after validation_split has taken its samples from the end and shuffled every epoch.
struct fit_data {
    data::Dataset train;
    std::optional<data::Dataset> validation;
};
inline fit_data prepare_fit_data(const data::Dataset& all, const fit_options& o, bool from_arrays,
                                 std::size_t default_batch, std::uint64_t seed_value) {
    const std::size_t batch = o.batch_size != 0 ? o.batch_size : default_batch;
    auto batched = [&](const data::Dataset& d) { return d.batched() ? d : d.batch(batch); };
    std::optional<data::Dataset> validation;
    if (o.validation_data) validation = batched(*o.validation_data);
    if (!(o.validation_split >= 0.0 && o.validation_split < 1.0)) {
        throw usage_error("fit: validation_split must be in [0, 1), got " + std::to_string(o.validation_split));
    }
    if (!from_arrays) {
        if (o.sample_weight.size() != 0) {
            throw usage_error("fit: sample_weight is for arrays; a dataset carries its samples' weights: "
                              "Dataset(x, y, sample_weight)");
        }
        if (o.validation_split != 0.0) {
            throw usage_error("fit: validation_split splits arrays; split a dataset once with data::split "
                              "and pass the second part as validation_data");
        }
        if (all.batched() && o.batch_size != 0) {
            throw usage_error("fit: batch_size is for arrays and unbatched datasets; this dataset is "
                              "batched already and brings its own batch sizes");
        }
        return {batched(all), std::move(validation)};
    }
    data::Dataset train = all;
    if (o.validation_split > 0.0) {
        if (o.validation_data) {
            throw usage_error("fit: give validation_split or validation_data, not both");
        }
        const std::size_t n = all.cardinality();
        const auto split_at = static_cast<std::size_t>(std::floor(static_cast<double>(n) * (1.0 - o.validation_split)));
        if (split_at == 0 || split_at == n) {
            throw data_error("fit: validation_split " + std::to_string(o.validation_split) + " of " +
                             std::to_string(n) + " samples leaves " +
                             (split_at == 0 ? "no training samples" : "no validation samples"));
        }
        train = all.take(split_at);
        validation = all.skip(split_at).batch(batch);
    }
    if (o.shuffle) train = train.shuffle(train.cardinality(), seed{seed_value});
    return {train.batch(batch), std::move(validation)};
}

/// fit_options::class_weight as one weight per class, checked: every class given once, each
/// weight finite and not negative.
inline std::vector<float> dense_class_weights(const std::map<std::size_t, float>& given, std::size_t classes) {
    if (given.empty()) return {};
    std::vector<float> w(classes, 0.0f);
    for (const auto& [c, v] : given) {
        if (c >= classes) {
            throw usage_error("fit: class_weight has class " + std::to_string(c) + " but the loss has classes 0.." +
                              std::to_string(classes - 1));
        }
        if (!(v >= 0.0f) || !std::isfinite(v)) {
            throw usage_error("fit: class_weight of class " + std::to_string(c) + " is " + std::to_string(v) +
                              "; weights must be finite and >= 0");
        }
        w[c] = v;
    }
    if (given.size() != classes) {
        throw usage_error("fit: class_weight gives weights for " + std::to_string(given.size()) + " of the " +
                          std::to_string(classes) + " classes; give one for every class");
    }
    return w;
}

}  // namespace detail

/// Model::fit's loop and the state it keeps between calls: where training stands (for
/// checkpoints, resumption and the next fit's epoch count) and the reused batch buffer.
class fit_loop {
public:
    /// Where a checkpoint taken now resumes: the epoch, and the batches of it already trained.
    [[nodiscard]] std::uint64_t epoch() const { return epoch_; }
    /// The batches of epoch() already trained.
    [[nodiscard]] std::size_t step() const { return step_; }
    /// Where a checkpoint taken now resumes, without a pending resume (a state put back).
    void set_position(std::uint64_t epoch, std::size_t step) {
        epoch_ = epoch;
        step_ = step;
    }
    /// Epochs begun so far over all fit calls (one stopped part-way counts): where the next
    /// fit() without initial_epoch starts counting.
    [[nodiscard]] std::uint64_t trained_epochs() const { return epoch_ + (step_ > 0 ? 1 : 0); }
    /// Whether a loaded checkpoint's position waits for the next fit().
    [[nodiscard]] bool resume_pending() const { return resume_.has_value(); }
    /// A loaded checkpoint's position: the next fit() (without initial_epoch) starts there.
    void resume_at(std::uint64_t epoch, std::size_t step) {
        epoch_ = epoch;
        step_ = step;
        resume_ = std::pair{epoch, step};
    }

    /// Trains `model` (through its step engine, `model.step_`) on every batch of `train` for
    /// each epoch. See Model::fit. An epoch that yields no sample is a data_error, as evaluate
    /// makes it (the first epoch's and empty validation data before anything changes); at the
    /// end of every epoch each variable is checked finite (numeric_error, finite_weights.hpp).
    template <class M, class... Callbacks>
    History run(M& model, const data::Dataset& train, const std::optional<data::Dataset>& validation,
                const fit_options& options, Callbacks&... callbacks) {
        auto& engine = model.step_;
        std::vector<Callback*> cbs{static_cast<Callback*>(&callbacks)...};
        ProgressBar default_bar(ProgressBar::options{.one_line = options.verbose == 2});
        const bool has_bar = (callbacks.is_progress_bar() || ... || false);
        if (options.verbose > 0 && !has_bar) cbs.insert(cbs.begin(), &default_bar);
        // In data-parallel training only rank 0 shows progress (its epoch values are global).
        if (!model.is_chief()) std::erase_if(cbs, [](const Callback* cb) { return cb->is_progress_bar(); });
        constexpr bool shared = ShardingAccumulation<typename M::accumulation_policy>;

        detail::fit_context<M, std::remove_reference_t<decltype(engine)>> ctx(model, engine, options.epochs);
        History history;
        // Out-of-memory splits and refused captures reach the callbacks and the History while
        // fit runs.
        engine.planner().on_split = [&](const micro_batch_split& e) {
            history.micro_batch_splits.push_back(e);
            for (Callback* cb : cbs) cb->on_micro_batch_split(ctx, e);
        };
        engine.captured().on_refused = [&](const step_capture_refusal& e) {
            history.capture_refusals.push_back(e);
            for (Callback* cb : cbs) cb->on_step_capture_refused(ctx, e);
        };
        const detail::hook_reset<decltype(engine.planner().on_split)> reset_split{engine.planner().on_split};
        const detail::hook_reset<decltype(engine.captured().on_refused)> reset_refused{engine.captured().on_refused};

        // Data that yields nothing is refused before anything changes, as evaluate refuses it.
        const bool resuming = !options.initial_epoch && resume_.has_value();
        std::uint64_t epoch = options.initial_epoch.value_or(resuming ? resume_->first : 0);
        // Without initial_epoch or a resume, this call's epochs continue the model's training:
        // the data and random layers are keyed by the epoch counted over all fit calls, so a
        // second fit draws new shuffles and masks, as one longer fit would.
        const std::uint64_t offset = options.initial_epoch || resuming ? 0 : trained_epochs();
        if (epoch < options.epochs) require_samples(train, epoch, epoch + offset);
        if (validation && validation->cardinality(0) == 0) {
            throw data_error("fit: the validation data yields no samples; evaluate would refuse it after the "
                             "first epoch");
        }
        using exec = typename M::execution_policy;
        const auto check_weights = [&](std::uint64_t e) {
            detail::check_finite_variables<exec>(model.variables(), host_weights_, "fit", e);
        };

        engine.finish_step();  // a window left open by train_on_batch calls is not mixed into this run

        // Each step's hyper-parameters follow the options' rules while fit runs (the model's own
        // rules otherwise), and are logged when rules set them.
        const detail::rules_scope<std::remove_reference_t<decltype(engine.optimizer())>> scope(
            engine.optimizer(), step_rules{options.learning_rate_schedule, options.coupling});
        const detail::class_weight_scope<std::remove_reference_t<decltype(engine)>> weights(
            engine, detail::dense_class_weights(options.class_weight, engine.objective().class_count()));
        const bool log_steps = engine.optimizer().rules().active();
        ctx.set_learning_rate_scheduled(engine.optimizer().rules().learning_rate != nullptr);
        std::optional<optimizer_step_record> last_step;
        engine.optimizer().on_step = [&](const optimizer_step_record& r) {
            if (log_steps) history.optimizer_step_log.push_back(r);
            last_step = r;
        };
        const detail::hook_reset<decltype(engine.optimizer().on_step)> reset_step{engine.optimizer().on_step};
        std::size_t skip_steps = resuming ? resume_->second : 0;
        resume_.reset();
        ctx.set_epoch_offset(offset);

        const auto handle_non_finite = [&](const numeric_error& e) {
            bool handled = false;
            for (Callback* cb : cbs) handled = cb->on_non_finite_loss(ctx, e) || handled;
            return handled;
        };
        // Steps a fault undid had been counted as trained when they were queued: the position,
        // the batch sizes and the step log go back with them.
        const auto undo = [&](std::size_t steps, std::size_t& step, std::vector<std::pair<std::size_t, std::size_t>>& sizes) {
            for (std::size_t k = 0; k < steps && step > 0; ++k) {
                --step;
                if (!sizes.empty() && --sizes.back().second == 0) sizes.pop_back();
            }
            step_ = step;
            auto& log = history.optimizer_step_log;
            while (!log.empty() && log.back().step > model.iterations()) log.pop_back();
        };
        const detail::lag_scope<std::remove_reference_t<decltype(engine)>> lag(engine);
        // Batches read by index: data_on_device's arrays, copied once (checked as a batch is);
        // or, on a device, a byte dataset's rows sent as bytes step by step.
        using resident_type = detail::indexed_for<resident_data, exec, !exec::host_memory>;
        using streamed_type = detail::indexed_for<streamed_bytes, exec, !exec::host_memory>;
        std::optional<resident_type> resident;
        std::optional<streamed_type> streamed;
        if constexpr (!exec::host_memory) {
            if (options.data_on_device) {
                resident.emplace();
            } else if (!shared && train.stores_bytes() && train.readable_by_index()) {
                streamed.emplace();
            }
        }
        const auto feed_by_index = [&]() -> logs {
            if constexpr (exec::host_memory) {
                return logs{};  // never: host-memory policies read rows as usual
            } else if (resident) {
                resident->hold(*batch_.source, [&](const float* x, const float* y, std::size_t n) {
                    engine.objective().validate(x, y, nullptr, n, "fit", x != nullptr);
                });
                return batchwise::feed_indexed(engine, *resident, batch_, indexed_rows_, indexed_targets_, "fit");
            } else {
                streamed->hold(*batch_.source);
                return batchwise::feed_indexed(engine, *streamed, batch_, indexed_rows_, indexed_targets_, "fit");
            }
        };
        const bool by_index = resident || streamed;
        for (Callback* cb : cbs) cb->on_train_begin(ctx);
        for (; epoch < options.epochs && !ctx.stop_requested(); ++epoch) {
            const auto t0 = std::chrono::steady_clock::now();
            const std::uint64_t key = epoch + offset;
            auto reader = by_index ? train.read_ids(key) : train.read(key);
            const std::size_t available = train.cardinality(key);
            if (available == 0) require_samples(train, epoch, key);  // a schedule may empty a later epoch
            const std::size_t steps =
                options.steps_per_epoch == 0 ? available : std::min(available, options.steps_per_epoch);
            engine.set_position(key, 0);
            epoch_ = key;
            step_ = 0;
            const std::uint64_t iterations_before = model.iterations();
            for (Callback* cb : cbs) cb->on_epoch_begin(ctx, epoch, steps);

            // Resuming inside an epoch: read past the batches already trained, so that the
            // sample positions (and with them dropout masks) are those of the interrupted run.
            std::size_t step = 0;
            for (; step < skip_steps && reader.next(batch_); ++step) engine.advance_cursor(batch_.rows);
            step_ = step;
            skip_steps = 0;

            step_sums sums;
            std::vector<std::pair<std::size_t, std::size_t>> sizes;
            std::size_t dropped = 0;
            bool non_finite = false;
            bool exhausted = false;
            while (step < steps) {
                if (!reader.next(batch_)) {
                    exhausted = true;
                    break;
                }
                using batch = typename M::batch_policy;
                if (batch::is_static && batch::tail == ragged_tail::drop && batch_.rows < batch::extent) {
                    dropped += batch_.rows;  // left out by the static batch's policy, and reported
                    step_ = ++step;
                    continue;
                }
                for (Callback* cb : cbs) cb->on_batch_begin(ctx, step, batch_.rows);
                logs l;
                try {
                    l = by_index ? feed_by_index() : engine.feed(batch_.features.data(), batch_.targets.data(),
                                                                           batch_.sample_weights(), batch_.ids.data(),
                                                                           batch_.rows, "fit");
                } catch (const numeric_error& e) {
                    undo(engine.captured().take_undone(), step, sizes);
                    // Across processes the others are already waiting for this step's
                    // all-reduce: the error ends every process (data_parallel announces it).
                    if constexpr (shared) throw;
                    if (!handle_non_finite(e)) throw;
                    non_finite = true;
                    break;
                } catch (const data_error&) {
                    undo(engine.captured().take_undone(), step, sizes);
                    throw;
                }
                // l is of the rows this process trained (all of them unless shared); replayed
                // steps report up to two steps late, so l may be of earlier batches.
                const auto n = static_cast<double>(l.samples);
                sums.loss += l.loss * n;
                for (std::size_t m = 0; m < l.metric_count; ++m) sums.metrics[m] += l.values[m] * n;
                sums.samples += l.samples;
                if (sizes.empty() || sizes.back().first != batch_.rows) sizes.emplace_back(batch_.rows, 0);
                ++sizes.back().second;
                step_ = ++step;
                const logs running = engine.objective().logs_of(sums);
                for (Callback* cb : cbs) cb->on_batch_end(ctx, step - 1, l, running);
                if (ctx.stop_requested()) break;
            }
            if (!non_finite) {  // the steps still queued report before anything reads the weights
                step_sums late;
                try {
                    engine.captured().report(engine, "fit", late);
                } catch (const numeric_error& e) {
                    undo(engine.captured().take_undone(), step, sizes);
                    if (!handle_non_finite(e)) throw;
                    non_finite = true;
                }
                sums.loss += late.loss;
                for (std::size_t m = 0; m < sums.metrics.size(); ++m) sums.metrics[m] += late.metrics[m];
                sums.samples += late.samples;
            }
            model.reduce_sums(sums);  // over all processes in data-parallel training
            if (sums.samples == 0 && non_finite) {  // nothing of this epoch was trained
                check_weights(epoch);
                break;
            }
            if (sums.samples == 0 && dropped > 0) {
                throw data_error("fit: the static batch's ragged_tail::drop left out all " + std::to_string(dropped) +
                                 " samples of epoch " + std::to_string(epoch) + "; nothing was trained");
            }
            // At the natural end of the data one more read registers a tail that
            // drop_remainder left out, so that History reports it.
            if (!exhausted && step == available && !ctx.stop_requested()) exhausted = !reader.next(batch_);
            const bool complete = exhausted || step == steps;
            if (complete && !non_finite) engine.finish_step();  // a partial window counts by its real size
            check_weights(epoch);  // before validation, callbacks and checkpoints see the weights

            epoch_logs el;
            const logs mean = engine.objective().logs_of(sums);
            el.set("loss", mean.loss);
            for (std::size_t m = 0; m < mean.metric_count; ++m) el.set(std::string(mean.names[m]), mean.values[m]);
            if (validation && !non_finite) {
                const logs v = model.evaluate(*validation);
                el.set("val_loss", v.loss);
                for (std::size_t m = 0; m < v.metric_count; ++m) el.set("val_" + std::string(v.names[m]), v.values[m]);
            }
            // What the epoch's last step used: the model's rate after coupling and schedule.
            el.set("learning_rate", last_step ? last_step->learning_rate : model.learning_rate());
            if (last_step && engine.optimizer().rules().coupling.rule == coupling_rule::adam_sqrt) {
                el.set("beta_1", last_step->beta_1);
                el.set("beta_2", last_step->beta_2);
                el.set("epsilon", last_step->epsilon);
            }
            for (step_observer* o : model.step_observers()) o->add_epoch_values(el);
            if (complete && !model.window_open()) {
                // A checkpoint taken now resumes at the next epoch.
                epoch_ = key + 1;
                step_ = 0;
            }
            history.epochs.push_back(epoch);
            for (const auto& [name, v] : el.values) history.history[name].push_back(v);
            history.batch_sizes.push_back(std::move(sizes));
            history.steps.push_back(step);
            history.optimizer_steps.push_back(static_cast<std::size_t>(model.iterations() - iterations_before));
            history.samples.push_back(sums.samples);
            history.dropped_samples.push_back(reader.dropped() + dropped);
            history.micro_batch_limit.push_back(engine.planner().limited() ? engine.planner().limit() : 0);
            history.seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
            for (Callback* cb : cbs) cb->on_epoch_end(ctx, epoch, el);
        }
        history.stop_reason = ctx.stop_reason();
        for (Callback* cb : cbs) cb->on_train_end(ctx, history);
        return history;
    }

private:
    /// An epoch without a sample would return as if it had trained (History with a loss of 0).
    static void require_samples(const data::Dataset& train, std::uint64_t epoch, std::uint64_t key) {
        if (train.cardinality(key) != 0) return;
        throw data_error("fit: epoch " + std::to_string(epoch) + " of the training data yields no samples (an "
                         "empty take, a skip past the end, or drop_remainder with fewer samples than a batch)");
    }

    std::uint64_t epoch_ = 0;
    std::size_t step_ = 0;
    std::optional<std::pair<std::uint64_t, std::size_t>> resume_;
    data::batch_data batch_;
    /// The rows of a batch read by index that trains eagerly, gathered on the host.
    std::vector<float> indexed_rows_, indexed_targets_;
    std::vector<float> host_weights_;  // device variables copied for the finite check
};

}  // namespace batchwise
