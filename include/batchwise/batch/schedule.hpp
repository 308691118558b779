// Batch-size schedules: the batch size as a function of (epoch, step) or of the samples read
// since training began, scheduled the way a learning rate is. A dataset batched with a schedule
// asks it for the size of every batch.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "batchwise/core/errors.hpp"

namespace batchwise {

/// The largest batch size any schedule may give: 2^48 samples (a batch of one float per sample
/// would be a petabyte). A larger size is no batch a machine can hold but almost always a
/// negative number converted to size_t, so it is refused where it is given (usage_error)
/// instead of surfacing as std::bad_alloc or a count that wrapped around. A size up to it is
/// served as min(size, samples left): batch(max_batch_size) is one batch of the whole dataset.
inline constexpr std::size_t max_batch_size = std::size_t{1} << 48;

namespace detail {
/// Refuses a batch size no machine can serve, naming the call and the size.
inline std::size_t checked_batch_size(std::size_t size, const std::string& call) {
    if (size > max_batch_size) {
        throw usage_error(call + ": a batch size of " + std::to_string(size) +
                          " samples is more than any machine can hold (at most 2^48 = " +
                          std::to_string(max_batch_size) + "); was a negative number converted to size_t?");
    }
    return size;
}
/// a + b, or the largest value when it would wrap: sample counts keyed by epoch (epoch x
/// samples per epoch) stay defined for any epoch a user starts at.
constexpr std::uint64_t saturating_add(std::uint64_t a, std::uint64_t b) {
    constexpr std::uint64_t top = std::numeric_limits<std::uint64_t>::max();
    return b > top - a ? top : a + b;
}
/// a x b, or the largest value when it would wrap.
constexpr std::uint64_t saturating_mul(std::uint64_t a, std::uint64_t b) {
    constexpr std::uint64_t top = std::numeric_limits<std::uint64_t>::max();
    return a != 0 && b > top / a ? top : a * b;
}
}  // namespace detail

/// Batch-size schedules for Dataset::batch(): by epoch, by step, or by samples read.
namespace schedule {

/// The same size for every batch.
struct constant {
    /// The batch size.
    std::size_t size = 32;
    /// `size`, whatever the epoch and step.
    [[nodiscard]] std::size_t operator()(std::uint64_t, std::uint64_t) const { return size; }
};

/// Sizes by epoch: phased{{0, 32}, {5, 128}} trains epochs 0-4 with 32, then 128 from epoch 5.
class phased {
public:
    /// Batches of `size` from epoch `from_epoch` until the next phase starts.
    struct phase {
        /// The phase's first epoch, counted from 0.
        std::uint64_t from_epoch;
        /// The batch size during the phase.
        std::size_t size;
    };

    /// The phases in order: the first starts at epoch 0, each later one at a later epoch, and
    /// no size is 0 (usage_error otherwise).
    phased(std::initializer_list<phase> phases) : phases_(phases) {
        if (phases_.empty() || phases_.front().from_epoch != 0) {
            throw usage_error("schedule::phased: the first phase must start at epoch 0");
        }
        for (std::size_t i = 0; i < phases_.size(); ++i) {
            if (phases_[i].size == 0) throw usage_error("schedule::phased: a batch size must be positive");
            (void)detail::checked_batch_size(phases_[i].size, "schedule::phased");
            if (i > 0 && phases_[i].from_epoch <= phases_[i - 1].from_epoch) {
                throw usage_error("schedule::phased: phases must start at increasing epochs");
            }
        }
    }

    /// The size of the phase that contains `epoch`.
    [[nodiscard]] std::size_t operator()(std::uint64_t epoch, std::uint64_t) const {
        std::size_t size = phases_.front().size;
        for (const auto& p : phases_) {
            if (p.from_epoch <= epoch) size = p.size;
        }
        return size;
    }

private:
    std::vector<phase> phases_;
};

/// Sizes in turn, one per epoch: cyclic{{32, 64, 128}} gives 32, 64, 128, 32, ...
class cyclic {
public:
    /// The sizes to cycle through: at least one, none 0 (usage_error otherwise).
    cyclic(std::initializer_list<std::size_t> sizes) : sizes_(sizes) {
        if (sizes_.empty()) throw usage_error("schedule::cyclic: needs at least one batch size");
        for (auto s : sizes_) {
            if (s == 0) throw usage_error("schedule::cyclic: a batch size must be positive");
            (void)detail::checked_batch_size(s, "schedule::cyclic");
        }
    }
    /// The size for `epoch`: sizes[epoch % number of sizes].
    [[nodiscard]] std::size_t operator()(std::uint64_t epoch, std::uint64_t) const {
        return sizes_[epoch % sizes_.size()];
    }

private:
    std::vector<std::size_t> sizes_;
};

/// How a ramp goes from one size to the other.
enum class ramp_shape { linear, geometric };
/// \var ramp_shape::linear
/// Equal steps: from + (to - from) t, t the fraction of over_samples read.
/// \var ramp_shape::geometric
/// Equal factors: from (to / from)^t, so that the size doubles over equal spans of samples.

/// Sizes by samples read since training began (epoch x samples per epoch + samples already read
/// this epoch), so that the schedule is the same whatever the epochs' lengths: from `from` to
/// `to` over `over_samples` samples, then `to`. Sizes are rounded to a multiple of `multiple_of`
/// (fewer distinct sizes, fewer learning-rate changes under coupling).
struct ramp {
    /// The size at sample 0.
    std::size_t from = 32;
    /// The size from `over_samples` samples on.
    std::size_t to = 1024;
    /// Samples the ramp takes; 0: `to` from the start.
    std::uint64_t over_samples = 0;
    /// How the size goes from `from` to `to`.
    ramp_shape shape = ramp_shape::linear;
    /// Sizes are rounded to a multiple of this (one multiple at least).
    std::size_t multiple_of = 1;

    /// The size after `samples` samples; usage_error for a zero size or multiple.
    [[nodiscard]] std::size_t operator()(std::uint64_t samples) const {
        if (from == 0 || to == 0 || multiple_of == 0) {
            throw usage_error("schedule::ramp: sizes and multiple_of must be positive");
        }
        // Bounded here, the double below converts back to size_t exactly.
        (void)detail::checked_batch_size(std::max({from, to, multiple_of}), "schedule::ramp");
        const double t = over_samples == 0 ? 1.0
                                           : std::min(1.0, static_cast<double>(samples) / static_cast<double>(over_samples));
        const double a = static_cast<double>(from), b = static_cast<double>(to);
        const double size = shape == ramp_shape::linear ? a + (b - a) * t : a * std::pow(b / a, t);
        const double units = std::max(1.0, std::round(size / static_cast<double>(multiple_of)));
        return static_cast<std::size_t>(units) * multiple_of;
    }
};

/// Smith et al.\ 2018, "Don't decay the learning rate, increase the batch size": the batch size
/// that replaces a learning-rate decay, keeping learning_rate / batch (the noise of SGD, up to
/// the dataset size) what the decay would make it. The batch grows by the factor the rate would
/// have fallen, up to `max_batch`; past it the rest of the decay stays in the learning rate:
/// give `learning_rate()` to fit_options::learning_rate_schedule and this to batch().
struct from_lr_decay {
    /// The learning-rate decay being replaced, as a function of samples seen (an
    /// lr::exponential_decay, say).
    std::function<float(std::uint64_t)> decay;
    /// The batch size at sample 0, the one the initial learning rate was chosen for.
    std::size_t initial_batch = 32;
    /// The largest batch; past it the rest of the decay stays in learning_rate().
    std::size_t max_batch = 4096;

    /// The batch size after `samples` samples: initial_batch times the factor the rate has
    /// fallen by, at most max_batch.
    [[nodiscard]] std::size_t operator()(std::uint64_t samples) const {
        check();
        const double factor = static_cast<double>(decay(0)) / static_cast<double>(decay(samples));
        if (!(factor > 0.0) || !std::isfinite(factor)) {
            throw usage_error("schedule::from_lr_decay: the decay gave a rate that is not positive after " +
                              std::to_string(samples) + " samples");
        }
        const double size = std::round(static_cast<double>(initial_batch) * factor);
        return static_cast<std::size_t>(std::clamp(size, 1.0, static_cast<double>(max_batch)));
    }
    /// The learning rate that goes with it: decay(s) x batch(s) / initial_batch, which is the
    /// initial rate until the batch reaches max_batch.
    [[nodiscard]] std::function<float(std::uint64_t)> learning_rate() const {
        check();
        return [self = *this](std::uint64_t s) {
            return static_cast<float>(static_cast<double>(self.decay(s)) * static_cast<double>(self(s)) /
                                      static_cast<double>(self.initial_batch));
        };
    }

private:
    void check() const {
        if (!decay) throw usage_error("schedule::from_lr_decay: no decay schedule given");
        if (initial_batch == 0 || max_batch < initial_batch) {
            throw usage_error("schedule::from_lr_decay: needs 0 < initial_batch <= max_batch");
        }
        (void)detail::checked_batch_size(max_batch, "schedule::from_lr_decay");
    }
};

/// Any function of the samples read since training began (see ramp).
struct by_samples {
    /// The batch size as a function of the samples read since training began.
    std::function<std::size_t(std::uint64_t)> size;
};

/// Any function of the epoch alone: one size for a whole epoch, so batches are counted without
/// walking the epoch (adaptive_batch's schedule).
struct by_epoch {
    /// The batch size as a function of the epoch, counted from 0.
    std::function<std::size_t(std::uint64_t)> size;
};

}  // namespace schedule

/// Any of the schedules above, a plain size, or a function (epoch, step) -> size. Remembers
/// whether the size may change within an epoch, which decides how batches are counted.
class batch_schedule {
public:
    /// The same size for every batch.
    batch_schedule(std::size_t size) : batch_schedule(schedule::constant{size}) {}  // NOLINT
    /// The same size, written as a plain literal (`batch(128)`); usage_error unless positive.
    batch_schedule(int size) : batch_schedule(checked_size(size)) {}               // NOLINT
    /// The same size for every batch; usage_error for 0.
    batch_schedule(schedule::constant s) : fn_(by_epoch(s)), per_step_(false) {    // NOLINT
        if (s.size == 0) throw usage_error("batch: the batch size must be positive");
        (void)detail::checked_batch_size(s.size, "batch");
    }
    /// Sizes by epoch, in phases.
    batch_schedule(schedule::phased s) : fn_(by_epoch(std::move(s))), per_step_(false) {}  // NOLINT
    /// Sizes by epoch, in turn.
    batch_schedule(schedule::cyclic s) : fn_(by_epoch(std::move(s))), per_step_(false) {}  // NOLINT
    /// Sizes by samples read; the ramp is checked here, once.
    batch_schedule(schedule::ramp s) : fn_(by_sample(s)), per_step_(true) { (void)s(0); }  // NOLINT
    /// Sizes by samples read, from a learning-rate decay; checked here, once.
    batch_schedule(schedule::from_lr_decay s) : fn_(by_sample(s)), per_step_(true) { (void)s(0); }  // NOLINT
    /// Any function of the epoch; usage_error for an empty one.
    batch_schedule(schedule::by_epoch s) : per_step_(false) {  // NOLINT
        if (!s.size) throw usage_error("schedule::by_epoch: no function given");
        fn_ = [f = std::move(s.size)](std::uint64_t e, std::uint64_t, std::uint64_t) { return f(e); };
    }
    /// Any function of the samples read; usage_error for an empty one.
    batch_schedule(schedule::by_samples s) : per_step_(true) {  // NOLINT
        if (!s.size) throw usage_error("schedule::by_samples: no function given");
        fn_ = by_sample(std::move(s.size));
    }
    /// A user function of (epoch, step within the epoch); it may change the size at any step.
    template <class F>
        requires std::is_invocable_r_v<std::size_t, F, std::uint64_t, std::uint64_t>
    batch_schedule(F f)  // NOLINT
        : fn_([f = std::move(f)](std::uint64_t e, std::uint64_t s, std::uint64_t) { return f(e, s); }),
          per_step_(true) {}

    /// Size of batch `step` of `epoch`, which starts after `samples` samples have been read
    /// since training began; a zero or a size past max_batch_size from a user function is a
    /// usage_error.
    [[nodiscard]] std::size_t size(std::uint64_t epoch, std::uint64_t step, std::uint64_t samples = 0) const {
        const std::size_t s = fn_(epoch, step, samples);
        if (s == 0) {
            throw usage_error("batch schedule returned size 0 for epoch " + std::to_string(epoch) +
                              ", step " + std::to_string(step));
        }
        // The message is built only for a size that fails: this runs for every batch.
        if (s > max_batch_size) {
            (void)detail::checked_batch_size(
                s, "batch schedule (epoch " + std::to_string(epoch) + ", step " + std::to_string(step) + ")");
        }
        return s;
    }
    /// Whether the size may change between batches of one epoch; if not, an epoch's batches
    /// are counted from its one size, without walking the epoch.
    [[nodiscard]] bool changes_within_epoch() const { return per_step_; }

private:
    using function = std::function<std::size_t(std::uint64_t, std::uint64_t, std::uint64_t)>;
    template <class F>
    static function by_epoch(F f) {
        return [f = std::move(f)](std::uint64_t e, std::uint64_t s, std::uint64_t) { return f(e, s); };
    }
    template <class F>
    static function by_sample(F f) {
        return [f = std::move(f)](std::uint64_t, std::uint64_t, std::uint64_t n) { return f(n); };
    }
    static std::size_t checked_size(int size) {
        if (size <= 0) throw usage_error("batch: the batch size must be positive");
        return static_cast<std::size_t>(size);
    }

    function fn_;
    bool per_step_;
};

}  // namespace batchwise
