// How large a micro-batch may be: the static batch, or what out-of-memory recovery has settled
// on; and the loop that redoes a micro-batch that ran out of memory as smaller ones.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "batchwise/batch/memory.hpp"
#include "batchwise/core/errors.hpp"
#include "batchwise/train/history.hpp"

namespace batchwise {

/// `StaticExtent` is the static batch (never split), or 0 for a dynamic batch; `Granularity`
/// the network's split granularity (SplitGranularLayer).
template <std::size_t StaticExtent, std::size_t Granularity>
class micro_batch_planner {
public:
    /// limit() of a dynamic batch that has not run out of memory.
    static constexpr std::size_t unlimited = std::numeric_limits<std::size_t>::max();

    /// The largest micro-batch a step currently runs.
    [[nodiscard]] std::size_t limit() const { return limit_; }
    /// Whether out-of-memory recovery has capped a dynamic batch.
    [[nodiscard]] bool limited() const { return StaticExtent == 0 && limit_ != unlimited; }
    /// A checkpoint's limit (0: none).
    void restore_limit(std::size_t n) {
        if (StaticExtent == 0 && n > 0) limit_ = n;
    }
    /// Every out-of-memory split since the model was built.
    [[nodiscard]] const std::vector<micro_batch_split>& splits() const { return splits_; }

    /// Reported as each split happens (fit forwards it to callbacks and History).
    std::function<void(const micro_batch_split&)> on_split;

    /// Runs f(offset, rows) over [0, n) in pieces no larger than the limit, redoing a piece as
    /// smaller ones when it runs out of memory. f must allocate before it changes any state.
    /// `bytes_at(rows)` is what the model needs at that size, and `budget` what it may use: a
    /// micro-batch refused by the budget continues at once at the largest size that fits it.
    /// `epoch` and `step` say where in training the split happens.
    template <class F, class Bytes>
    void run(std::size_t n, std::uint64_t epoch, std::uint64_t step, F&& f, Bytes&& bytes_at, std::size_t budget) {
        std::size_t done = 0;
        while (done < n) {
            const std::size_t rows = std::min(n - done, limit_);
            try {
                f(done, rows);
                done += rows;
            } catch (const out_of_memory& e) {
                // The budget's own refusal knows the size that fits; halving towards it would
                // stop at 256 where 300 fits, and report every step on the way.
                shrink(rows, e.what(), epoch, step, std::optional<std::size_t>(largest_rows_within(budget, bytes_at)));
            } catch (const std::bad_alloc&) {
                shrink(rows,
                       "allocating buffers for a micro-batch of " + std::to_string(rows) +
                           " failed (std::bad_alloc; the model needs " + std::to_string(bytes_at(rows)) +
                           " bytes at that size)",
                       epoch, step, std::nullopt);
            }
        }
    }

private:
    /// A micro-batch of `failed` rows did not fit: continue with `fitting` rows when the budget
    /// says so, else with half (a multiple of the network's split granularity where possible),
    /// keep that size, and report it.
    void shrink(std::size_t failed, const std::string& reason, std::uint64_t epoch, std::uint64_t step,
                std::optional<std::size_t> fitting) {
        if constexpr (StaticExtent != 0) {
            throw out_of_memory(reason + "; a static batch is never split into smaller micro-batches");
        } else {
            if (failed <= 1 || fitting == std::size_t{0}) throw out_of_memory("not even one sample fits: " + reason);
            std::size_t next = fitting && *fitting < failed ? *fitting : failed / 2;
            if (Granularity > 1 && next >= Granularity) next -= next % Granularity;
            limit_ = std::max<std::size_t>(next, 1);
            splits_.push_back({epoch, step, failed, limit_, reason});
            if (on_split) on_split(splits_.back());
        }
    }

    std::size_t limit_ = StaticExtent != 0 ? StaticExtent : unlimited;
    std::vector<micro_batch_split> splits_;
};

}  // namespace batchwise
