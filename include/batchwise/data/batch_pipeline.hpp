// The batch level of a Dataset pipeline: grouping samples into batches by a size or a schedule,
// then map, take, skip, concatenate and prefetch on whole batches. Included by dataset.hpp.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "batchwise/batch/schedule.hpp"
#include "batchwise/core/errors.hpp"
#include "batchwise/data/sample_pipeline.hpp"

namespace batchwise::data {

/// One batch in host memory. Buffers grow to the largest batch seen and are reused, so reading
/// batch after batch allocates nothing once the largest has passed.
struct batch_data {
    /// Samples in this batch; the vectors may be longer, left from a larger batch.
    std::size_t rows = 0;
    /// Floats of one sample's features.
    std::size_t feature_size = 0;
    /// Floats of one sample's target (1 for a class index).
    std::size_t target_size = 0;
    std::vector<float> features;     ///< rows x feature_size, row-major
    std::vector<float> targets;      ///< rows x target_size
    std::vector<std::size_t> ids;    ///< each row's index in the arrays it came from
    std::vector<float> weights;      ///< each row's sample weight, when `weighted`
    bool weighted = false;           ///< Whether the dataset has sample weights.
    /// Read by index only (Dataset::read_ids): features and targets are not gathered, and every
    /// row's id indexes these arrays. Null otherwise.
    const detail::source_data* source = nullptr;

    /// Makes this a batch of n rows of fs feature and ts target floats (and a weight each when
    /// `w`), growing a buffer only when it is too small.
    void resize(std::size_t n, std::size_t fs, std::size_t ts, bool w = false, bool ids_only = false) {
        if (ids_only) fs = ts = 0;  // nothing is gathered, so no room is kept for it
        if ((fs != 0 && n > features.max_size() / fs) || (ts != 0 && n > targets.max_size() / ts)) {
            throw usage_error("batch_data::resize: " + std::to_string(n) + " rows of " + std::to_string(fs) +
                              " features and " + std::to_string(ts) + " targets overflow the size of a buffer");
        }
        rows = n;
        feature_size = fs;
        target_size = ts;
        weighted = w;
        if (features.size() < n * fs) features.resize(n * fs);
        if (targets.size() < n * ts) targets.resize(n * ts);
        if (ids.size() < n) ids.resize(n);
        if (w && weights.size() < n) weights.resize(n);
    }
    /// The rows' sample weights, or null when the dataset has none.
    [[nodiscard]] const float* sample_weights() const { return weighted ? weights.data() : nullptr; }
};

namespace detail {

/// What reading a batch gathers: the rows themselves, or only their indices into the arrays
/// they come from (for data kept where the model computes, which gathers the rows there).
enum class gather_mode { rows, ids };

struct batch_stream {
    virtual ~batch_stream() = default;
    virtual bool next(batch_data& b) = 0;
    /// Samples left out by drop_remainder so far in this epoch.
    [[nodiscard]] virtual std::size_t dropped() const = 0;
};

struct batch_node {
    virtual ~batch_node() = default;
    [[nodiscard]] virtual std::unique_ptr<batch_stream> open(std::uint64_t epoch,
                                                             gather_mode mode = gather_mode::rows) const = 0;
    /// Batches in `epoch`.
    [[nodiscard]] virtual std::size_t count(std::uint64_t epoch) const = 0;
    /// Samples delivered in `epoch` (after any drop_remainder).
    [[nodiscard]] virtual std::size_t samples(std::uint64_t epoch) const = 0;
};

/// Copies one sample into row r of a batch and applies its pending maps.
inline void gather(const element& e, batch_data& b, std::size_t r) {
    const source_data& s = *e.source;
    float* x = b.features.data() + r * b.feature_size;
    float* y = b.targets.data() + r * b.target_size;
    s.read_features(e.index, x);
    std::copy_n(s.targets.data() + e.index * s.target_size, s.target_size, y);
    b.ids[r] = e.index;
    if (b.weighted) b.weights[r] = s.weights[e.index];
    for (std::size_t m = 0; m < e.map_count; ++m) {
        (*e.maps[m])(std::span<float>(x, b.feature_size), std::span<float>(y, b.target_size));
    }
}

/// Row r of an index-only batch: the sample's index and weight; its arrays must be the
/// batch's.
inline void gather_id(const element& e, batch_data& b, std::size_t r) {
    if (e.map_count != 0) {
        throw usage_error("Dataset: a dataset with map() cannot be read by sample index (fit's data_on_device "
                          "gathers the rows where the model computes); apply the function to the arrays first");
    }
    if (r == 0) {
        b.source = e.source;
    } else if (b.source != e.source) {
        throw usage_error("Dataset: a batch mixes samples of two sets of arrays (concatenate), which cannot be "
                          "read by sample index (fit's data_on_device)");
    }
    b.ids[r] = e.index;
    if (b.weighted) b.weights[r] = e.source->weights[e.index];
}

struct batching_node final : batch_node {
    std::shared_ptr<const sample_node> parent;
    batch_schedule schedule;
    bool drop_remainder;
    std::size_t feature_size, target_size;
    bool weighted;
    batching_node(std::shared_ptr<const sample_node> p, batch_schedule s, bool drop, std::size_t fs,
                  std::size_t ts, bool w)
        : parent(std::move(p)),
          schedule(std::move(s)),
          drop_remainder(drop),
          feature_size(fs),
          target_size(ts),
          weighted(w) {}

    struct stream final : batch_stream {
        std::unique_ptr<sample_stream> upstream;
        const batching_node* node;
        std::uint64_t epoch;
        std::uint64_t step = 0;
        std::uint64_t read = 0;  // samples read this epoch
        std::size_t total = 0;   // samples the parent yields this epoch
        std::size_t dropped_samples = 0;
        gather_mode mode = gather_mode::rows;
        bool next(batch_data& b) override {
            const bool ids_only = mode == gather_mode::ids;
            const std::size_t want =
                node->schedule.size(epoch, step, batchwise::detail::saturating_add(node->samples_before(epoch), read));
            // Buffers hold what the batch can get, not what was asked: batch(1 << 24) on 4
            // samples allocates 4 rows. Should a count fall short, the buffer grows as rows come.
            std::size_t room = std::min<std::size_t>(want, total > read ? total - read : 0);
            b.resize(room, node->feature_size, node->target_size, node->weighted, ids_only);
            b.source = nullptr;
            std::size_t got = 0;
            element e;
            while (got < want && upstream->next(e)) {
                if (got == room) {
                    room = std::min(want, 2 * room + 1);
                    b.resize(room, node->feature_size, node->target_size, node->weighted, ids_only);
                }
                if (ids_only) {
                    gather_id(e, b, got++);
                } else {
                    gather(e, b, got++);
                }
            }
            b.rows = got;
            if (got == 0) return false;
            if (got < want && node->drop_remainder) {
                dropped_samples += got;
                b.rows = 0;
                return false;
            }
            ++step;
            read += got;
            return true;
        }
        [[nodiscard]] std::size_t dropped() const override { return dropped_samples; }
    };
    [[nodiscard]] std::unique_ptr<batch_stream> open(std::uint64_t epoch,
                                                     gather_mode mode = gather_mode::rows) const override {
        auto s = std::make_unique<stream>();
        s->upstream = parent->open(epoch);
        s->mode = mode;
        s->node = this;
        s->epoch = epoch;
        s->total = parent->count();
        return s;
    }
    /// (batches, samples) of an epoch, by walking the schedule; no data is touched. Sizes are
    /// taken as min(size, samples left), so no sum of them wraps around.
    [[nodiscard]] std::pair<std::size_t, std::size_t> plan(std::uint64_t epoch) const {
        const std::size_t n = parent->count();
        if (!schedule.changes_within_epoch()) {
            const std::size_t size = schedule.size(epoch, 0);
            if (drop_remainder) return {n / size, (n / size) * size};
            return {n / size + (n % size != 0 ? 1 : 0), n};
        }
        std::size_t batches = 0, used = 0;
        while (used < n) {
            const std::size_t size = schedule.size(epoch, batches, batchwise::detail::saturating_add(samples_before(epoch), used));
            if (size > n - used && drop_remainder) break;
            used += std::min(size, n - used);
            ++batches;
        }
        return {batches, used};
    }
    /// Samples read before `epoch` began: what a schedule keyed by samples counts from (the
    /// largest count for an epoch so late that it would wrap).
    [[nodiscard]] std::uint64_t samples_before(std::uint64_t epoch) const {
        return batchwise::detail::saturating_mul(epoch, parent->count());
    }
    [[nodiscard]] std::size_t count(std::uint64_t epoch) const override { return plan(epoch).first; }
    [[nodiscard]] std::size_t samples(std::uint64_t epoch) const override { return plan(epoch).second; }
};

struct batch_map_node final : batch_node {
    std::shared_ptr<const batch_node> parent;
    sample_fn fn;
    batch_map_node(std::shared_ptr<const batch_node> p, sample_fn f) : parent(std::move(p)), fn(std::move(f)) {}

    struct stream final : batch_stream {
        std::unique_ptr<batch_stream> upstream;
        const sample_fn* fn;
        bool next(batch_data& b) override {
            if (!upstream->next(b)) return false;
            for (std::size_t r = 0; r < b.rows; ++r) {
                (*fn)(std::span<float>(b.features.data() + r * b.feature_size, b.feature_size),
                      std::span<float>(b.targets.data() + r * b.target_size, b.target_size));
            }
            return true;
        }
        [[nodiscard]] std::size_t dropped() const override { return upstream->dropped(); }
    };
    [[nodiscard]] std::unique_ptr<batch_stream> open(std::uint64_t epoch,
                                                     gather_mode mode = gather_mode::rows) const override {
        if (mode == gather_mode::ids) {
            throw usage_error("Dataset: a dataset with map() cannot be read by sample index (fit's data_on_device "
                              "gathers the rows where the model computes); apply the function to the arrays first");
        }
        auto s = std::make_unique<stream>();
        s->upstream = parent->open(epoch);
        s->fn = &fn;
        return s;
    }
    [[nodiscard]] std::size_t count(std::uint64_t epoch) const override { return parent->count(epoch); }
    [[nodiscard]] std::size_t samples(std::uint64_t epoch) const override { return parent->samples(epoch); }
};

/// take and skip on whole batches. Counting skipped batches' samples needs their sizes, so the
/// counts walk the parent's batches only when the schedule makes them unequal.
struct batch_slice_node final : batch_node {
    std::shared_ptr<const batch_node> parent;
    std::size_t skip_n, take_n;
    batch_slice_node(std::shared_ptr<const batch_node> p, std::size_t skip, std::size_t take)
        : parent(std::move(p)), skip_n(skip), take_n(take) {}

    struct stream final : batch_stream {
        std::unique_ptr<batch_stream> upstream;
        std::size_t to_skip, remaining;
        bool next(batch_data& b) override {
            for (; to_skip > 0; --to_skip) {
                if (!upstream->next(b)) return false;
            }
            if (remaining == 0 || !upstream->next(b)) return false;
            --remaining;
            return true;
        }
        [[nodiscard]] std::size_t dropped() const override { return upstream->dropped(); }
    };
    [[nodiscard]] std::unique_ptr<batch_stream> open(std::uint64_t epoch,
                                                     gather_mode mode = gather_mode::rows) const override {
        auto s = std::make_unique<stream>();
        s->upstream = parent->open(epoch, mode);
        s->to_skip = skip_n;
        s->remaining = take_n;
        return s;
    }
    [[nodiscard]] std::size_t count(std::uint64_t epoch) const override {
        const std::size_t n = parent->count(epoch);
        return std::min(take_n, n > skip_n ? n - skip_n : 0);
    }
    [[nodiscard]] std::size_t samples(std::uint64_t epoch) const override {
        if (skip_n == 0 && take_n >= parent->count(epoch)) return parent->samples(epoch);
        auto s = open(epoch);
        batch_data b;
        std::size_t total = 0;
        while (s->next(b)) total += b.rows;
        return total;
    }
};

struct concat_batch_node final : batch_node {
    std::shared_ptr<const batch_node> first, second;
    concat_batch_node(std::shared_ptr<const batch_node> a, std::shared_ptr<const batch_node> b)
        : first(std::move(a)), second(std::move(b)) {}

    struct stream final : batch_stream {
        std::unique_ptr<batch_stream> a, b;
        bool next(batch_data& out) override { return a->next(out) || b->next(out); }
        [[nodiscard]] std::size_t dropped() const override { return a->dropped() + b->dropped(); }
    };
    [[nodiscard]] std::unique_ptr<batch_stream> open(std::uint64_t epoch,
                                                     gather_mode mode = gather_mode::rows) const override {
        auto s = std::make_unique<stream>();
        s->a = first->open(epoch, mode);
        s->b = second->open(epoch, mode);
        return s;
    }
    [[nodiscard]] std::size_t count(std::uint64_t epoch) const override {
        return first->count(epoch) + second->count(epoch);
    }
    [[nodiscard]] std::size_t samples(std::uint64_t epoch) const override {
        return first->samples(epoch) + second->samples(epoch);
    }
};

/// Prepares up to `depth` batches ahead on a background thread while the caller trains on the
/// current one. Batches are handed over by swapping buffers, so nothing is copied twice and the
/// ring of buffers is reused. Destroying the stream stops and joins the thread, also when the
/// consumer stops early; an exception on the thread reaches the consumer at the next batch.
struct prefetch_node final : batch_node {
    std::shared_ptr<const batch_node> parent;
    std::size_t depth;
    prefetch_node(std::shared_ptr<const batch_node> p, std::size_t d) : parent(std::move(p)), depth(d) {}

    class stream final : public batch_stream {
    public:
        stream(std::unique_ptr<batch_stream> upstream, std::size_t depth)
            : upstream_(std::move(upstream)), slots_(depth) {
            for (std::size_t i = 0; i < depth; ++i) free_.push_back(i);
            worker_ = std::thread([this] { produce(); });
        }
        stream(const stream&) = delete;
        stream& operator=(const stream&) = delete;
        ~stream() override {
            {
                std::lock_guard lock(mutex_);
                stop_ = true;
            }
            changed_.notify_all();
            worker_.join();
        }

        bool next(batch_data& out) override {
            std::unique_lock lock(mutex_);
            changed_.wait(lock, [&] { return !ready_.empty() || finished_; });
            if (ready_.empty()) {
                if (error_) std::rethrow_exception(error_);
                return false;
            }
            const std::size_t slot = ready_.front();
            ready_.pop_front();
            std::swap(out, slots_[slot]);
            free_.push_back(slot);
            lock.unlock();
            changed_.notify_all();
            return true;
        }

        [[nodiscard]] std::size_t dropped() const override {
            std::lock_guard lock(mutex_);
            return dropped_;
        }

    private:
        void produce() {
            try {
                for (;;) {
                    std::size_t slot;
                    {
                        std::unique_lock lock(mutex_);
                        changed_.wait(lock, [&] { return !free_.empty() || stop_; });
                        if (stop_) break;
                        slot = free_.front();
                        free_.pop_front();
                    }
                    const bool more = upstream_->next(slots_[slot]);
                    std::lock_guard lock(mutex_);
                    dropped_ = upstream_->dropped();
                    if (!more) break;
                    ready_.push_back(slot);
                    changed_.notify_all();
                }
            } catch (...) {
                std::lock_guard lock(mutex_);
                error_ = std::current_exception();
            }
            {
                std::lock_guard lock(mutex_);
                finished_ = true;
            }
            changed_.notify_all();
        }

        std::unique_ptr<batch_stream> upstream_;
        std::vector<batch_data> slots_;
        std::deque<std::size_t> free_, ready_;
        mutable std::mutex mutex_;
        std::condition_variable changed_;
        bool stop_ = false;
        bool finished_ = false;
        std::size_t dropped_ = 0;
        std::exception_ptr error_;
        std::thread worker_;
    };

    [[nodiscard]] std::unique_ptr<batch_stream> open(std::uint64_t epoch,
                                                     gather_mode mode = gather_mode::rows) const override {
        return std::make_unique<stream>(parent->open(epoch, mode), depth);
    }
    [[nodiscard]] std::size_t count(std::uint64_t epoch) const override { return parent->count(epoch); }
    [[nodiscard]] std::size_t samples(std::uint64_t epoch) const override { return parent->samples(epoch); }
};

}  // namespace detail

}  // namespace batchwise::data
