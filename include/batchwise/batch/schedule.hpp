// Batch-size schedules: the batch size as a function of (epoch, step), scheduled the way a
// learning rate is. A dataset batched with a schedule asks it for the size of every batch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "batchwise/core/errors.hpp"

namespace batchwise {
namespace schedule {

/// The same size for every batch.
struct constant {
    std::size_t size = 32;
    [[nodiscard]] std::size_t operator()(std::uint64_t, std::uint64_t) const { return size; }
};

/// Sizes by epoch: phased{{0, 32}, {5, 128}} trains epochs 0-4 with 32, then 128 from epoch 5.
class phased {
public:
    struct phase {
        std::uint64_t from_epoch;
        std::size_t size;
    };

    phased(std::initializer_list<phase> phases) : phases_(phases) {
        if (phases_.empty() || phases_.front().from_epoch != 0) {
            throw usage_error("schedule::phased: the first phase must start at epoch 0");
        }
        for (std::size_t i = 0; i < phases_.size(); ++i) {
            if (phases_[i].size == 0) throw usage_error("schedule::phased: a batch size must be positive");
            if (i > 0 && phases_[i].from_epoch <= phases_[i - 1].from_epoch) {
                throw usage_error("schedule::phased: phases must start at increasing epochs");
            }
        }
    }

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
    cyclic(std::initializer_list<std::size_t> sizes) : sizes_(sizes) {
        if (sizes_.empty()) throw usage_error("schedule::cyclic: needs at least one batch size");
        for (auto s : sizes_) {
            if (s == 0) throw usage_error("schedule::cyclic: a batch size must be positive");
        }
    }
    [[nodiscard]] std::size_t operator()(std::uint64_t epoch, std::uint64_t) const {
        return sizes_[epoch % sizes_.size()];
    }

private:
    std::vector<std::size_t> sizes_;
};

}  // namespace schedule

/// Any of the schedules above, a plain size, or a function (epoch, step) -> size. Remembers
/// whether the size may change within an epoch, which decides how batches are counted.
class batch_schedule {
public:
    batch_schedule(std::size_t size) : batch_schedule(schedule::constant{size}) {}  // NOLINT
    batch_schedule(int size) : batch_schedule(checked_size(size)) {}               // NOLINT
    batch_schedule(schedule::constant s) : fn_(s), per_step_(false) {              // NOLINT
        if (s.size == 0) throw usage_error("batch: the batch size must be positive");
    }
    batch_schedule(schedule::phased s) : fn_(std::move(s)), per_step_(false) {}  // NOLINT
    batch_schedule(schedule::cyclic s) : fn_(std::move(s)), per_step_(false) {}  // NOLINT
    /// A user function of (epoch, step within the epoch); it may change the size at any step.
    template <class F>
        requires std::is_invocable_r_v<std::size_t, F, std::uint64_t, std::uint64_t>
    batch_schedule(F f) : fn_(std::move(f)), per_step_(true) {}  // NOLINT

    /// Size of batch `step` of `epoch`; a zero from a user function is a usage_error.
    [[nodiscard]] std::size_t size(std::uint64_t epoch, std::uint64_t step) const {
        const std::size_t s = fn_(epoch, step);
        if (s == 0) {
            throw usage_error("batch schedule returned size 0 for epoch " + std::to_string(epoch) +
                              ", step " + std::to_string(step));
        }
        return s;
    }
    [[nodiscard]] bool changes_within_epoch() const { return per_step_; }

private:
    static std::size_t checked_size(int size) {
        if (size <= 0) throw usage_error("batch: the batch size must be positive");
        return static_cast<std::size_t>(size);
    }

    std::function<std::size_t(std::uint64_t, std::uint64_t)> fn_;
    bool per_step_;
};

}  // namespace batchwise
