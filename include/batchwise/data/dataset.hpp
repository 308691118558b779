// Dataset: an input pipeline over in-memory arrays in the spirit of tf.data (shuffle, batch with
// a size or a schedule, concatenate, map, take, skip, prefetch). A Dataset is an immutable
// description; reading it for an epoch yields batches into reused buffers.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "batchwise/batch/schedule.hpp"
#include "batchwise/core/errors.hpp"
#include "batchwise/core/rng.hpp"
#include "batchwise/core/xtensor.hpp"

namespace batchwise::data {

/// A per-sample transformation applied in place to one sample's features and targets. It must
/// be a pure function of the sample: it may run on the prefetch thread, and at any time before
/// the sample is batched.
using sample_fn = std::function<void(std::span<float> features, std::span<float> targets)>;

/// One batch in host memory. Buffers grow to the largest batch seen and are reused, so reading
/// batch after batch allocates nothing once the largest has passed.
struct batch_data {
    std::size_t rows = 0;
    std::size_t feature_size = 0;
    std::size_t target_size = 0;
    std::vector<float> features;     // rows x feature_size, row-major
    std::vector<float> targets;      // rows x target_size
    std::vector<std::size_t> ids;    // each row's index in the arrays it came from

    void resize(std::size_t n, std::size_t fs, std::size_t ts) {
        rows = n;
        feature_size = fs;
        target_size = ts;
        if (features.size() < n * fs) features.resize(n * fs);
        if (targets.size() < n * ts) targets.resize(n * ts);
        if (ids.size() < n) ids.resize(n);
    }
};

namespace detail {

/// The arrays a dataset reads from, stored once and shared by every dataset derived from it.
struct source_data {
    std::vector<std::size_t> sample_shape;
    std::size_t feature_size = 0;
    std::size_t target_size = 0;
    std::size_t count = 0;
    std::vector<float> features;
    std::vector<float> targets;
};

inline constexpr std::size_t max_chained_maps = 8;

/// A sample on its way to a batch: where it lives and the maps still to apply to it. Maps are
/// applied when the sample is copied into its batch, which is the same for pure functions and
/// lets shuffling move small descriptors instead of data.
struct element {
    const source_data* source = nullptr;
    std::size_t index = 0;
    std::array<const sample_fn*, max_chained_maps> maps{};
    std::size_t map_count = 0;
};

struct sample_stream {
    virtual ~sample_stream() = default;
    virtual bool next(element& e) = 0;
};

struct sample_node {
    virtual ~sample_node() = default;
    [[nodiscard]] virtual std::unique_ptr<sample_stream> open(std::uint64_t epoch) const = 0;
    [[nodiscard]] virtual std::size_t count() const = 0;
};

struct batch_stream {
    virtual ~batch_stream() = default;
    virtual bool next(batch_data& b) = 0;
    /// Samples left out by drop_remainder so far in this epoch.
    [[nodiscard]] virtual std::size_t dropped() const = 0;
};

struct batch_node {
    virtual ~batch_node() = default;
    [[nodiscard]] virtual std::unique_ptr<batch_stream> open(std::uint64_t epoch) const = 0;
    /// Batches in `epoch`.
    [[nodiscard]] virtual std::size_t count(std::uint64_t epoch) const = 0;
    /// Samples delivered in `epoch` (after any drop_remainder).
    [[nodiscard]] virtual std::size_t samples(std::uint64_t epoch) const = 0;
};

// ---- sample level ----------------------------------------------------------------------------

struct source_node final : sample_node {
    std::shared_ptr<const source_data> data;
    explicit source_node(std::shared_ptr<const source_data> d) : data(std::move(d)) {}

    struct stream final : sample_stream {
        const source_data* data;
        std::size_t next_index = 0;
        explicit stream(const source_data* d) : data(d) {}
        bool next(element& e) override {
            if (next_index == data->count) return false;
            e = element{data, next_index++, {}, 0};
            return true;
        }
    };
    [[nodiscard]] std::unique_ptr<sample_stream> open(std::uint64_t) const override {
        return std::make_unique<stream>(data.get());
    }
    [[nodiscard]] std::size_t count() const override { return data->count; }
};

/// Buffer shuffle as tf.data's: keep `buffer_size` samples, emit a random one, refill. With a
/// buffer at least as large as the data this is a uniform permutation; the draw for the k-th
/// emitted sample is keyed by (seed, epoch, k), so each epoch has its own order and the same
/// seed always gives the same orders.
struct shuffle_node final : sample_node {
    std::shared_ptr<const sample_node> parent;
    std::size_t buffer_size;
    std::uint64_t seed_value;
    shuffle_node(std::shared_ptr<const sample_node> p, std::size_t b, std::uint64_t s)
        : parent(std::move(p)), buffer_size(b), seed_value(s) {}

    struct stream final : sample_stream {
        std::unique_ptr<sample_stream> upstream;
        std::vector<element> buffer;
        std::size_t capacity;
        rng::philox_key key;
        std::uint64_t epoch;
        std::uint64_t emitted = 0;
        bool exhausted = false;
        bool next(element& e) override {
            while (!exhausted && buffer.size() < capacity) {
                element incoming;
                if (upstream->next(incoming)) {
                    buffer.push_back(incoming);
                } else {
                    exhausted = true;
                }
            }
            if (buffer.empty()) return false;
            const float u = rng::uniform(key, epoch, emitted++, 0);
            const std::size_t j =
                std::min(buffer.size() - 1, static_cast<std::size_t>(u * static_cast<float>(buffer.size())));
            e = buffer[j];
            buffer[j] = buffer.back();
            buffer.pop_back();
            return true;
        }
    };
    [[nodiscard]] std::unique_ptr<sample_stream> open(std::uint64_t epoch) const override {
        auto s = std::make_unique<stream>();
        s->upstream = parent->open(epoch);
        s->capacity = buffer_size;
        s->buffer.reserve(std::min(buffer_size, parent->count()));
        s->key = rng::make_key(seed_value, rng::stream::shuffle, 0);
        s->epoch = epoch;
        return s;
    }
    [[nodiscard]] std::size_t count() const override { return parent->count(); }
};

struct map_node final : sample_node {
    std::shared_ptr<const sample_node> parent;
    sample_fn fn;
    map_node(std::shared_ptr<const sample_node> p, sample_fn f) : parent(std::move(p)), fn(std::move(f)) {}

    struct stream final : sample_stream {
        std::unique_ptr<sample_stream> upstream;
        const sample_fn* fn;
        bool next(element& e) override {
            if (!upstream->next(e)) return false;
            if (e.map_count == max_chained_maps) {
                throw usage_error("Dataset::map: at most " + std::to_string(max_chained_maps) +
                                  " maps can be chained; combine them into one function");
            }
            e.maps[e.map_count++] = fn;
            return true;
        }
    };
    [[nodiscard]] std::unique_ptr<sample_stream> open(std::uint64_t epoch) const override {
        auto s = std::make_unique<stream>();
        s->upstream = parent->open(epoch);
        s->fn = &fn;
        return s;
    }
    [[nodiscard]] std::size_t count() const override { return parent->count(); }
};

/// take (keep the first n) and skip (drop the first n), on samples.
struct slice_node final : sample_node {
    std::shared_ptr<const sample_node> parent;
    std::size_t skip_n, take_n;
    slice_node(std::shared_ptr<const sample_node> p, std::size_t skip, std::size_t take)
        : parent(std::move(p)), skip_n(skip), take_n(take) {}

    struct stream final : sample_stream {
        std::unique_ptr<sample_stream> upstream;
        std::size_t to_skip, remaining;
        bool next(element& e) override {
            for (; to_skip > 0; --to_skip) {
                if (!upstream->next(e)) return false;
            }
            if (remaining == 0 || !upstream->next(e)) return false;
            --remaining;
            return true;
        }
    };
    [[nodiscard]] std::unique_ptr<sample_stream> open(std::uint64_t epoch) const override {
        auto s = std::make_unique<stream>();
        s->upstream = parent->open(epoch);
        s->to_skip = skip_n;
        s->remaining = take_n;
        return s;
    }
    [[nodiscard]] std::size_t count() const override {
        const std::size_t n = parent->count();
        return std::min(take_n, n > skip_n ? n - skip_n : 0);
    }
};

struct concat_sample_node final : sample_node {
    std::shared_ptr<const sample_node> first, second;
    concat_sample_node(std::shared_ptr<const sample_node> a, std::shared_ptr<const sample_node> b)
        : first(std::move(a)), second(std::move(b)) {}

    struct stream final : sample_stream {
        std::unique_ptr<sample_stream> a, b;
        bool next(element& e) override { return a->next(e) || b->next(e); }
    };
    [[nodiscard]] std::unique_ptr<sample_stream> open(std::uint64_t epoch) const override {
        auto s = std::make_unique<stream>();
        s->a = first->open(epoch);
        s->b = second->open(epoch);
        return s;
    }
    [[nodiscard]] std::size_t count() const override { return first->count() + second->count(); }
};

// ---- batch level -----------------------------------------------------------------------------

/// Copies one sample into row r of a batch and applies its pending maps.
inline void gather(const element& e, batch_data& b, std::size_t r) {
    const source_data& s = *e.source;
    float* x = b.features.data() + r * b.feature_size;
    float* y = b.targets.data() + r * b.target_size;
    std::copy_n(s.features.data() + e.index * s.feature_size, s.feature_size, x);
    std::copy_n(s.targets.data() + e.index * s.target_size, s.target_size, y);
    b.ids[r] = e.index;
    for (std::size_t m = 0; m < e.map_count; ++m) {
        (*e.maps[m])(std::span<float>(x, b.feature_size), std::span<float>(y, b.target_size));
    }
}

struct batching_node final : batch_node {
    std::shared_ptr<const sample_node> parent;
    batch_schedule schedule;
    bool drop_remainder;
    std::size_t feature_size, target_size;
    batching_node(std::shared_ptr<const sample_node> p, batch_schedule s, bool drop, std::size_t fs,
                  std::size_t ts)
        : parent(std::move(p)), schedule(std::move(s)), drop_remainder(drop), feature_size(fs), target_size(ts) {}

    struct stream final : batch_stream {
        std::unique_ptr<sample_stream> upstream;
        const batching_node* node;
        std::uint64_t epoch;
        std::uint64_t step = 0;
        std::size_t dropped_samples = 0;
        bool next(batch_data& b) override {
            const std::size_t want = node->schedule.size(epoch, step);
            b.resize(want, node->feature_size, node->target_size);
            std::size_t got = 0;
            element e;
            while (got < want && upstream->next(e)) gather(e, b, got++);
            b.rows = got;
            if (got == 0) return false;
            if (got < want && node->drop_remainder) {
                dropped_samples += got;
                b.rows = 0;
                return false;
            }
            ++step;
            return true;
        }
        [[nodiscard]] std::size_t dropped() const override { return dropped_samples; }
    };
    [[nodiscard]] std::unique_ptr<batch_stream> open(std::uint64_t epoch) const override {
        auto s = std::make_unique<stream>();
        s->upstream = parent->open(epoch);
        s->node = this;
        s->epoch = epoch;
        return s;
    }
    /// (batches, samples) of an epoch, by walking the schedule; no data is touched.
    [[nodiscard]] std::pair<std::size_t, std::size_t> plan(std::uint64_t epoch) const {
        const std::size_t n = parent->count();
        if (!schedule.changes_within_epoch()) {
            const std::size_t size = schedule.size(epoch, 0);
            if (drop_remainder) return {n / size, (n / size) * size};
            return {(n + size - 1) / size, n};
        }
        std::size_t batches = 0, used = 0;
        while (used < n) {
            const std::size_t size = schedule.size(epoch, batches);
            if (used + size > n && drop_remainder) break;
            used = std::min(n, used + size);
            ++batches;
        }
        return {batches, used};
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
    [[nodiscard]] std::unique_ptr<batch_stream> open(std::uint64_t epoch) const override {
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
    [[nodiscard]] std::unique_ptr<batch_stream> open(std::uint64_t epoch) const override {
        auto s = std::make_unique<stream>();
        s->upstream = parent->open(epoch);
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
    [[nodiscard]] std::unique_ptr<batch_stream> open(std::uint64_t epoch) const override {
        auto s = std::make_unique<stream>();
        s->a = first->open(epoch);
        s->b = second->open(epoch);
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

    [[nodiscard]] std::unique_ptr<batch_stream> open(std::uint64_t epoch) const override {
        return std::make_unique<stream>(parent->open(epoch), depth);
    }
    [[nodiscard]] std::size_t count(std::uint64_t epoch) const override { return parent->count(epoch); }
    [[nodiscard]] std::size_t samples(std::uint64_t epoch) const override { return parent->samples(epoch); }
};

/// Features (n, dims...) and targets (n,) or (n, k) of any numeric types, as floats; every
/// value is checked so that a NaN is reported with its sample before any training.
template <class X, class Y>
std::shared_ptr<const source_data> make_source(const X& features, const Y& targets) {
    auto s = std::make_shared<source_data>();
    const auto& fs = features.shape();
    const auto& ts = targets.shape();
    if (fs.size() < 2) {
        throw shape_error("Dataset: features must have shape (n, sample dims...), got rank " +
                          std::to_string(fs.size()));
    }
    if (ts.size() < 1 || ts.size() > 2) {
        throw shape_error("Dataset: targets must have shape (n,) or (n, k), got rank " +
                          std::to_string(ts.size()));
    }
    if (fs[0] != ts[0]) {
        throw data_error("Dataset: " + std::to_string(fs[0]) + " feature samples but " +
                         std::to_string(ts[0]) + " targets");
    }
    if (fs[0] == 0) throw data_error("Dataset: no samples (the arrays are empty)");
    s->count = fs[0];
    s->sample_shape.assign(fs.begin() + 1, fs.end());
    s->feature_size = 1;
    for (auto d : s->sample_shape) s->feature_size *= d;
    s->target_size = ts.size() == 2 ? ts[1] : 1;
    s->features.resize(s->count * s->feature_size);
    s->targets.resize(s->count * s->target_size);
    std::size_t i = 0;
    for (auto it = features.begin(); it != features.end(); ++it, ++i) {
        const auto v = static_cast<float>(*it);
        if (!std::isfinite(v)) {
            throw data_error("Dataset: sample " + std::to_string(i / s->feature_size) +
                                 " holds a non-finite feature value at position " +
                                 std::to_string(i % s->feature_size),
                             i / s->feature_size);
        }
        s->features[i] = v;
    }
    i = 0;
    for (auto it = targets.begin(); it != targets.end(); ++it, ++i) {
        const auto v = static_cast<float>(*it);
        if (!std::isfinite(v)) {
            throw data_error("Dataset: the target of sample " + std::to_string(i / s->target_size) +
                                 " is not finite",
                             i / s->target_size);
        }
        s->targets[i] = v;
    }
    return s;
}

}  // namespace detail

class Dataset {
public:
    /// A dataset over features (n, sample dims...) and targets: class indices (n,) or target
    /// rows (n, k). The values are copied once, as floats, and shared by derived datasets.
    template <class X, class Y>
    Dataset(const X& features, const Y& targets)
        : Dataset(detail::make_source(features, targets)) {}

    /// Shuffles samples with a buffer of `buffer_size`; a buffer at least as large as the data
    /// gives a uniform permutation. Each epoch is shuffled anew, deterministically per seed.
    [[nodiscard]] Dataset shuffle(std::size_t buffer_size, seed s) const {
        require_unbatched("shuffle", "shuffle samples before batch()");
        if (buffer_size == 0) throw usage_error("Dataset::shuffle: buffer_size must be positive");
        return with(std::make_shared<detail::shuffle_node>(samples_, buffer_size, s.value));
    }

    /// Groups samples into batches of a fixed size or of a schedule's sizes. A smaller last batch
    /// is kept unless drop_remainder is true; dropped samples are counted and reported by fit.
    [[nodiscard]] Dataset batch(batch_schedule s, bool drop_remainder = false) const {
        require_unbatched("batch", "a dataset is batched once");
        Dataset d = *this;
        d.batches_ = std::make_shared<detail::batching_node>(samples_, std::move(s), drop_remainder,
                                                             feature_size_, target_size_);
        return d;
    }

    /// This dataset's elements, then other's. Both batched or both not; same sample sizes.
    [[nodiscard]] Dataset concatenate(const Dataset& other) const {
        if (other.feature_size_ != feature_size_ || other.target_size_ != target_size_) {
            throw shape_error("Dataset::concatenate: samples of " + std::to_string(feature_size_) +
                              " features and " + std::to_string(target_size_) +
                              " targets cannot be followed by samples of " +
                              std::to_string(other.feature_size_) + " and " +
                              std::to_string(other.target_size_));
        }
        if (batched() != other.batched()) {
            throw usage_error("Dataset::concatenate: both datasets must be batched, or neither");
        }
        Dataset d = *this;
        if (batched()) {
            d.batches_ = std::make_shared<detail::concat_batch_node>(batches_, other.batches_);
        } else {
            d.samples_ = std::make_shared<detail::concat_sample_node>(samples_, other.samples_);
        }
        return d;
    }

    /// Applies fn to every sample (features, targets) in place, before or after batching.
    [[nodiscard]] Dataset map(sample_fn fn) const {
        Dataset d = *this;
        if (batched()) {
            d.batches_ = std::make_shared<detail::batch_map_node>(batches_, std::move(fn));
        } else {
            d.samples_ = std::make_shared<detail::map_node>(samples_, std::move(fn));
        }
        return d;
    }

    /// The first n elements (samples, or batches once batched).
    [[nodiscard]] Dataset take(std::size_t n) const { return slice(0, n); }
    /// All but the first n elements (samples, or batches once batched).
    [[nodiscard]] Dataset skip(std::size_t n) const { return slice(n, static_cast<std::size_t>(-1)); }

    /// Prepares up to n batches ahead on a background thread.
    [[nodiscard]] Dataset prefetch(std::size_t n = 2) const {
        if (!batched()) throw usage_error("Dataset::prefetch: call batch() first; prefetch works on batches");
        if (n == 0) throw usage_error("Dataset::prefetch: needs at least one batch of room");
        Dataset d = *this;
        d.batches_ = std::make_shared<detail::prefetch_node>(batches_, n);
        return d;
    }

    [[nodiscard]] bool batched() const { return batches_ != nullptr; }

    /// Elements per epoch: batches once batched (they may depend on the epoch under a
    /// schedule), samples before.
    [[nodiscard]] std::size_t cardinality(std::uint64_t epoch = 0) const {
        return batched() ? batches_->count(epoch) : samples_->count();
    }
    /// Samples read in an epoch (after drop_remainder).
    [[nodiscard]] std::size_t samples(std::uint64_t epoch = 0) const {
        return batched() ? batches_->samples(epoch) : samples_->count();
    }
    [[nodiscard]] const std::vector<std::size_t>& sample_shape() const { return sample_shape_; }
    [[nodiscard]] std::size_t feature_size() const { return feature_size_; }
    [[nodiscard]] std::size_t target_size() const { return target_size_; }

    /// The batches of one epoch, in order.
    class reader {
    public:
        bool next(batch_data& b) { return stream_->next(b); }
        /// Samples dropped by drop_remainder so far.
        [[nodiscard]] std::size_t dropped() const { return stream_->dropped(); }

    private:
        friend class Dataset;
        reader(std::shared_ptr<const detail::batch_node> root, std::unique_ptr<detail::batch_stream> s)
            : root_(std::move(root)), stream_(std::move(s)) {}
        // Streams point into their nodes: the reader keeps the whole description alive, even
        // if the Dataset it came from is gone. Declared first, so it is destroyed last.
        std::shared_ptr<const detail::batch_node> root_;
        std::unique_ptr<detail::batch_stream> stream_;
    };

    [[nodiscard]] reader read(std::uint64_t epoch = 0) const {
        if (!batched()) {
            throw usage_error("Dataset: call batch(n) before reading batches (fit, evaluate and "
                              "predict take batched datasets)");
        }
        return reader(batches_, batches_->open(epoch));
    }

private:
    explicit Dataset(std::shared_ptr<const detail::source_data> source)
        : samples_(std::make_shared<detail::source_node>(source)),
          sample_shape_(source->sample_shape),
          feature_size_(source->feature_size),
          target_size_(source->target_size) {}

    [[nodiscard]] Dataset with(std::shared_ptr<const detail::sample_node> node) const {
        Dataset d = *this;
        d.samples_ = std::move(node);
        return d;
    }

    [[nodiscard]] Dataset slice(std::size_t skip_n, std::size_t take_n) const {
        Dataset d = *this;
        if (batched()) {
            d.batches_ = std::make_shared<detail::batch_slice_node>(batches_, skip_n, take_n);
        } else {
            d.samples_ = std::make_shared<detail::slice_node>(samples_, skip_n, take_n);
        }
        return d;
    }

    void require_unbatched(const char* op, const char* hint) const {
        if (batched()) {
            throw usage_error(std::string("Dataset::") + op + " on a batched dataset: " + hint);
        }
    }

    std::shared_ptr<const detail::sample_node> samples_;
    std::shared_ptr<const detail::batch_node> batches_;
    std::vector<std::size_t> sample_shape_;
    std::size_t feature_size_ = 0;
    std::size_t target_size_ = 0;
};

}  // namespace batchwise::data
