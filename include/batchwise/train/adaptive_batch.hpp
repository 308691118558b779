// An adaptive batch size: at the end of every epoch, the batch size of the next one is chosen to
// maximise goodput (Pollux/AdaptDL, OSDI 2021): samples per second (from a table of measured
// step times) times the statistical efficiency of a batch of that size (from the gradient noise
// scale: a batch of B samples makes the progress of B / (1 + B / B_noise) samples of a small one,
// McCandlish et al. 2018).
#pragma once

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "batchwise/batch/schedule.hpp"
#include "batchwise/core/errors.hpp"
#include "batchwise/data/dataset.hpp"
#include "batchwise/train/callbacks.hpp"
#include "batchwise/train/checkpoint.hpp"
#include "batchwise/train/step/window.hpp"

namespace batchwise {

/// Seconds per optimizer step at some batch sizes; between and beyond them, linear in the size.
class step_time_table {
public:
    step_time_table() = default;
    /// (batch size, seconds per step) points: at least two, of distinct sizes, positive times.
    explicit step_time_table(std::vector<std::pair<std::size_t, double>> points) : points_(std::move(points)) {
        std::sort(points_.begin(), points_.end());
        if (points_.size() < 2) throw usage_error("step_time_table: needs at least two batch sizes");
        for (std::size_t i = 0; i < points_.size(); ++i) {
            if (points_[i].first == 0 || !(points_[i].second > 0.0) || !std::isfinite(points_[i].second)) {
                throw usage_error("step_time_table: sizes and seconds must be positive");
            }
            if (i > 0 && points_[i].first == points_[i - 1].first) {
                throw usage_error("step_time_table: batch size " + std::to_string(points_[i].first) + " appears twice");
            }
        }
    }
    /// The measured points, sorted by batch size.
    [[nodiscard]] const std::vector<std::pair<std::size_t, double>>& points() const { return points_; }
    /// True for a default-constructed table, which adaptive_batch refuses.
    [[nodiscard]] bool empty() const { return points_.empty(); }

    /// Seconds per step at `batch`, interpolated linearly (and extrapolated from the nearest two
    /// points), never below the smallest measured time.
    [[nodiscard]] double seconds(std::size_t batch) const {
        if (points_.size() < 2) throw usage_error("step_time_table: empty");
        std::size_t i = 1;
        while (i + 1 < points_.size() && points_[i].first < batch) ++i;
        const auto [b0, t0] = points_[i - 1];
        const auto [b1, t1] = points_[i];
        const double slope = (t1 - t0) / (static_cast<double>(b1) - static_cast<double>(b0));
        const double t = t0 + slope * (static_cast<double>(batch) - static_cast<double>(b0));
        return std::max(t, points_.front().second);
    }

private:
    std::vector<std::pair<std::size_t, double>> points_;
};

/// Seconds per optimizer step of `model` trained by fit on `samples` (an unbatched dataset, as it
/// will be trained: shuffled, mapped) batched at each size, with `prefetch` batches read ahead:
/// what a step costs in training, data pipeline included. Each size is timed as the difference
/// between a fit of 2 + `steps` batches and one of 2 (the best of two tries), after an untimed
/// one that grows the buffers. The model is put back exactly as it was, through a checkpoint
/// written to `scratch` and then removed (a resume point loaded before stays pending); step
/// observers are detached meanwhile, and checkpoint states added to the model are restored.
template <class M>
step_time_table measure_step_times(M& model, const data::Dataset& samples, const std::vector<std::size_t>& sizes,
                                   const std::filesystem::path& scratch, std::size_t steps = 8,
                                   std::size_t prefetch = 2) {
    if (sizes.size() < 2) throw usage_error("measure_step_times: needs at least two batch sizes");
    if (steps == 0) throw usage_error("measure_step_times: steps must be positive");
    if (samples.batched()) throw usage_error("measure_step_times: give the dataset before batch(); it batches it");
    const std::size_t largest = detail::checked_batch_size(*std::max_element(sizes.begin(), sizes.end()),
                                                           "measure_step_times");
    // Saturated, so that a huge `steps` reads as more samples than any dataset has, not as few.
    const std::uint64_t batches = detail::saturating_add(steps, 2);
    const std::uint64_t needed = detail::saturating_mul(largest, batches);
    if (samples.cardinality() < needed) {
        throw shape_error("measure_step_times: " + std::to_string(batches) + " batches of " + std::to_string(largest) +
                          " need " + std::to_string(needed) + " samples; the dataset has " +
                          std::to_string(samples.cardinality()));
    }
    const std::vector<step_observer*> observers(model.step_observers().begin(), model.step_observers().end());
    const bool resume = model.resume_pending();
    model.save_checkpoint(scratch);
    auto put_back = [&] {
        model.load_checkpoint(scratch, resume);
        std::filesystem::remove(scratch);
        for (step_observer* o : observers) model.add_step_observer(*o);
    };
    for (step_observer* o : observers) model.remove_step_observer(*o);
    std::vector<std::pair<std::size_t, double>> points;
    try {
        for (const std::size_t b : sizes) {
            const data::Dataset batches = prefetch > 0 ? samples.batch(b).prefetch(prefetch) : samples.batch(b);
            auto seconds = [&](std::size_t n) {
                const auto t0 = std::chrono::steady_clock::now();
                (void)model.fit(batches, {.epochs = 1, .initial_epoch = 0, .steps_per_epoch = n, .verbose = 0});
                return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            };
            (void)seconds(2);  // grows the buffers: not timed
            double best = std::numeric_limits<double>::infinity();
            for (int attempt = 0; attempt < 2; ++attempt) {
                const double few = seconds(2), more = seconds(2 + steps);
                best = std::min(best, (more - few) / static_cast<double>(steps));
            }
            // Timer noise larger than the steps themselves: fall back on the longer fit's mean.
            if (!(best > 0.0)) best = seconds(2 + steps) / static_cast<double>(2 + steps);
            points.emplace_back(b, best);
        }
    } catch (...) {
        put_back();
        throw;
    }
    put_back();
    return step_time_table(std::move(points));
}

/// One decision of an adaptive_batch.
struct batch_size_decision {
    std::uint64_t epoch = 0;  ///< the epoch that ended, counted over the model's whole training
    /// The noise scale read from the epoch logs; one that is not finite and positive keeps the
    /// size.
    double noise_scale = 0.0;
    /// The size of the epoch that ended.
    std::size_t from = 0, to = 0;
    /// \var to
    /// The size of the next epoch (`from` when it stayed).

    /// Predicted goodput of `to` over that of `from` (1 when it stayed).
    double gain = 1.0;
};

/// The batch size of every epoch, chosen at the end of the one before from the noise scale in
/// the epoch logs (a gradient_noise_scale must be registered with Model::add_step_observer) and
/// a step_time_table. Give schedule() to Dataset::batch, pass the object to fit as a callback,
/// and add it with Model::add_checkpoint_state (with the noise scale) for exact resumption.
///
/// It decides in on_epoch_end: list it before a ModelCheckpoint, so that a checkpoint taken at
/// the end of an epoch holds the next epoch's size.
///
/// Candidates are the powers of two in [min_batch, max_batch] and the current size; a new size
/// must promise `hysteresis` more goodput than the current one, so the size does not flap; the
/// size changes at most once per epoch. Given the same step times, the choices depend only on
/// the training run, so a run is reproducible from its seed; the table is saved in checkpoints.
/// Sizes above what the memory budget allows in one micro-batch run as several (the model's
/// out-of-memory split): the table's times include that.
class adaptive_batch final : public Callback, public checkpoint_state {
public:
    /// adaptive_batch's settings.
    struct options {
        /// The first epoch's size, kept until a decision changes it.
        std::size_t initial_batch = 32;
        /// The smallest candidate: candidates are the powers of two from bit_ceil(min_batch) to
        /// max_batch.
        std::size_t min_batch = 16;
        /// The largest candidate.
        std::size_t max_batch = 4096;
        /// The fraction of extra goodput a new size must promise: 0.1 asks for 10% more than the
        /// current size's.
        double hysteresis = 0.1;
        /// Use the noise scale preconditioned by the optimizer's second moments when the logs
        /// have it (Adam, RMSprop): the one that governs an adaptive optimizer's progress.
        bool preconditioned = true;
    };

    /// `times` as measure_step_times gives them; usage_error for an empty table or options out of
    /// range.
    adaptive_batch(step_time_table times, options o) : state_(std::make_shared<shared>()), o_(o) {
        if (o_.initial_batch == 0 || o_.min_batch == 0 || o_.min_batch > o_.max_batch) {
            throw usage_error("adaptive_batch: needs 0 < min_batch <= max_batch and initial_batch > 0");
        }
        // Bounded, the candidates' doubling up to max_batch cannot wrap around.
        (void)detail::checked_batch_size(std::max(o_.max_batch, o_.initial_batch), "adaptive_batch");
        if (!(o_.hysteresis >= 0.0)) throw usage_error("adaptive_batch: hysteresis must be >= 0");
        if (times.empty()) throw usage_error("adaptive_batch: the step time table is empty");
        state_->times = std::move(times);
        state_->sizes = {o_.initial_batch};
    }

    /// For Dataset::batch: the size decided for each epoch.
    [[nodiscard]] batch_schedule schedule() const {
        return schedule::by_epoch{[state = state_](std::uint64_t epoch) {
            const std::lock_guard<std::mutex> lock(state->mutex);
            return state->sizes[std::min<std::size_t>(epoch, state->sizes.size() - 1)];
        }};
    }

    /// The size of `epoch` as decided so far.
    [[nodiscard]] std::size_t size(std::uint64_t epoch) const {
        const std::lock_guard<std::mutex> lock(state_->mutex);
        return state_->sizes[std::min<std::size_t>(epoch, state_->sizes.size() - 1)];
    }
    /// Every decision this object made, one per epoch end, in order (not restored by a checkpoint).
    [[nodiscard]] const std::vector<batch_size_decision>& decisions() const { return decisions_; }
    /// The step times in use (a checkpoint restores them).
    [[nodiscard]] const step_time_table& times() const { return state_->times; }

    /// Predicted samples per second of progress at `batch` for noise scale `noise`.
    [[nodiscard]] double goodput(std::size_t batch, double noise) const {
        const double b = static_cast<double>(batch);
        return b / state_->times.seconds(batch) / (1.0 + b / noise);
    }

    void on_epoch_end(training_context& ctx, std::uint64_t fit_epoch, const epoch_logs& logs) override {
        // The schedule is read with the epoch counted over the model's whole training.
        const std::uint64_t epoch = fit_epoch + ctx.epoch_offset();
        const char* name = o_.preconditioned && logs.contains("noise_scale_preconditioned") &&
                                   std::isfinite(logs["noise_scale_preconditioned"])
                               ? "noise_scale_preconditioned"
                               : "noise_scale";
        if (!logs.contains("noise_scale")) {
            throw usage_error("adaptive_batch: the epoch logs have no noise_scale; register a gradient_noise_scale "
                              "with Model::add_step_observer");
        }
        const double noise = logs[name];
        const std::size_t current = size(epoch);
        std::size_t next = current;
        double gain = 1.0;
        if (std::isfinite(noise) && noise > 0.0) {
            const double now = goodput(current, noise);
            std::size_t best = current;
            double best_goodput = now;
            for (std::size_t b = std::bit_ceil(o_.min_batch); b <= o_.max_batch; b *= 2) {
                if (const double g = goodput(b, noise); g > best_goodput) {
                    best = b;
                    best_goodput = g;
                }
            }
            if (best != current && best_goodput > (1.0 + o_.hysteresis) * now) {
                next = best;
                gain = best_goodput / now;
            }
        }
        {
            const std::lock_guard<std::mutex> lock(state_->mutex);
            state_->sizes.resize(epoch + 2, current);
            state_->sizes[epoch + 1] = next;
        }
        decisions_.push_back({epoch, noise, current, next, gain});
    }

    // ---- checkpoint_state: the sizes decided so far and the step times ----------------------------

    [[nodiscard]] std::string checkpoint_name() const override { return "adaptive_batch"; }
    [[nodiscard]] std::vector<double> save_state() const override {
        const std::lock_guard<std::mutex> lock(state_->mutex);
        std::vector<double> s{static_cast<double>(state_->times.points().size())};
        for (const auto& [b, t] : state_->times.points()) s.insert(s.end(), {static_cast<double>(b), t});
        for (const std::size_t b : state_->sizes) s.push_back(static_cast<double>(b));
        return s;
    }
    void check_state(const std::vector<double>& s) const override {
        const auto positive_count = [](double v) { return v >= 1.0 && v == std::floor(v) && v < 1e15; };
        if (s.empty() || !positive_count(s[0]) || s.size() < 1 + 2 * static_cast<std::size_t>(s[0]) + 1) {
            throw io_error("adaptive_batch: malformed saved state");
        }
        const std::size_t points = static_cast<std::size_t>(s[0]);
        std::vector<std::pair<std::size_t, double>> table;
        for (std::size_t i = 0; i < points; ++i) {
            if (!positive_count(s[1 + 2 * i])) throw io_error("adaptive_batch: saved batch size is not a size");
            table.emplace_back(static_cast<std::size_t>(s[1 + 2 * i]), s[2 + 2 * i]);
        }
        try {
            (void)step_time_table(std::move(table));
        } catch (const usage_error& e) {
            throw io_error(std::string("adaptive_batch: saved step times: ") + e.what());
        }
        for (std::size_t i = 1 + 2 * points; i < s.size(); ++i) {
            if (!positive_count(s[i])) throw io_error("adaptive_batch: saved batch size is not a size");
        }
    }
    void restore_state(const std::vector<double>& s) override {
        const std::size_t points = static_cast<std::size_t>(s[0]);
        std::vector<std::pair<std::size_t, double>> table;
        for (std::size_t i = 0; i < points; ++i) table.emplace_back(static_cast<std::size_t>(s[1 + 2 * i]), s[2 + 2 * i]);
        const std::lock_guard<std::mutex> lock(state_->mutex);
        state_->times = step_time_table(std::move(table));
        state_->sizes.clear();
        for (std::size_t i = 1 + 2 * points; i < s.size(); ++i) state_->sizes.push_back(static_cast<std::size_t>(s[i]));
    }

private:
    /// Shared with the schedules handed out, which a prefetching dataset reads from its thread.
    struct shared {
        std::mutex mutex;
        step_time_table times;
        std::vector<std::size_t> sizes;  // by epoch; the last one holds for later epochs
    };
    std::shared_ptr<shared> state_;
    options o_;
    std::vector<batch_size_decision> decisions_;
};

}  // namespace batchwise
