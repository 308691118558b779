// The sample level of a Dataset pipeline: the source arrays, and the stages that shuffle, map,
// take, skip and concatenate samples before they are batched. Included by dataset.hpp.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <ranges>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "batchwise/core/config.hpp"
#include "batchwise/core/errors.hpp"
#include "batchwise/core/rng.hpp"

namespace batchwise::data {

/// A per-sample transformation applied in place to one sample's features and targets. It must
/// be a pure function of the sample: it may run on the prefetch thread, and at any time before
/// the sample is batched.
using sample_fn = std::function<void(std::span<float> features, std::span<float> targets)>;

namespace detail {

/// The arrays a dataset reads from, stored once and shared by every dataset derived from it.
struct source_data {
    std::vector<std::size_t> sample_shape;
    std::size_t feature_size = 0;
    std::size_t target_size = 0;
    std::size_t count = 0;
    /// The features as floats; empty when they are kept as bytes.
    std::vector<float> features;
    /// The features in their source type, uint8 (Dataset::of_bytes), a quarter of the memory and
    /// of the bytes copied to a device; empty when they are floats. Read as byte_value.
    std::vector<std::uint8_t> feature_bytes;
    /// What each byte is divided by when it is read.
    float byte_divisor = 1.0f;
    std::vector<float> targets;
    /// One weight per sample (Keras's sample_weight); empty when the dataset has none.
    std::vector<float> weights;

    /// Whether the features are kept as bytes.
    [[nodiscard]] bool bytes() const { return !feature_bytes.empty(); }
    /// Sample i's features as floats, into out (feature_size of them).
    void read_features(std::size_t i, float* out) const;
};

/// A stored byte as the float a layer sees: float(b) / divisor, the same on the host and on a
/// device. A division, not a multiply by 1 / divisor, so that 255 / 255 is exactly 1 and the
/// values equal those of images divided when loaded (read_fashion_mnist).
BATCHWISE_HOST_DEVICE inline float byte_value(std::uint8_t b, float divisor) {
    return static_cast<float>(b) / divisor;
}

inline void source_data::read_features(std::size_t i, float* out) const {
    if (bytes()) {
        const std::uint8_t* in = feature_bytes.data() + i * feature_size;
        for (std::size_t j = 0; j < feature_size; ++j) out[j] = byte_value(in[j], byte_divisor);
    } else {
        std::copy_n(features.data() + i * feature_size, feature_size, out);
    }
}

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
    bool reshuffle;
    shuffle_node(std::shared_ptr<const sample_node> p, std::size_t b, std::uint64_t s, bool each_epoch)
        : parent(std::move(p)), buffer_size(b), seed_value(s), reshuffle(each_epoch) {}

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
        s->epoch = reshuffle ? epoch : 0;  // a fixed shuffle draws epoch 0's order every epoch
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

/// The shape checks and sizes shared by both kinds of source, and the targets as floats, each
/// checked finite.
template <class X, class Y>
std::shared_ptr<source_data> make_source_frame(const X& features, const Y& targets) {
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
    s->targets.resize(s->count * s->target_size);
    std::size_t i = 0;
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

/// Features (n, dims...) and targets (n,) or (n, k) of any numeric types, as floats; every
/// value is checked so that a NaN is reported with its sample before any training.
template <class X, class Y>
std::shared_ptr<source_data> make_source(const X& features, const Y& targets) {
    auto s = make_source_frame(features, targets);
    s->features.resize(s->count * s->feature_size);
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
    return s;
}

/// Features of uint8 kept as bytes, each read as byte / divisor; targets as make_source.
template <class X, class Y>
std::shared_ptr<source_data> make_byte_source(const X& features, const Y& targets, float divisor) {
    static_assert(std::is_same_v<std::remove_cv_t<typename X::value_type>, std::uint8_t>,
                  "Dataset::of_bytes: the features must be an array of std::uint8_t (images as stored); "
                  "other types go to the Dataset constructor, which keeps floats.");
    if (!(divisor > 0.0f) || !std::isfinite(divisor)) {
        throw usage_error("Dataset::of_bytes: the divisor must be finite and positive, got " +
                          std::to_string(divisor));
    }
    auto s = make_source_frame(features, targets);
    s->byte_divisor = divisor;
    s->feature_bytes.assign(features.begin(), features.end());
    return s;
}

/// Copies n per-sample weights (shape (n,)) into out, each checked finite and not negative:
/// a weight scales its sample's loss and gradient, and a NaN or a negative one would train on
/// without a word.
/// An array with a shape (xtensor) or any sized range of numbers (std::vector<float>).
template <class W>
void copy_sample_weights(const W& w, std::size_t n, float* out, const char* call) {
    std::size_t count = 0;
    if constexpr (requires { w.shape(); }) {
        const auto& sh = w.shape();
        if (sh.size() != 1) {
            throw shape_error(std::string(call) + ": sample weights must have shape (n,), one per sample; got rank " +
                              std::to_string(sh.size()));
        }
        count = sh[0];
    } else {
        count = static_cast<std::size_t>(std::ranges::size(w));
    }
    if (count != n) {
        throw data_error(std::string(call) + ": " + std::to_string(n) + " samples but " + std::to_string(count) +
                         " sample weights");
    }
    std::size_t i = 0;
    for (auto it = std::ranges::begin(w); it != std::ranges::end(w); ++it, ++i) {
        const auto v = static_cast<float>(*it);
        if (!(v >= 0.0f) || !std::isfinite(v)) {
            throw data_error(std::string(call) + ": the sample weight of sample " + std::to_string(i) + " is " +
                                 std::to_string(v) + "; weights must be finite and >= 0",
                             i);
        }
        out[i] = v;
    }
}

/// A source with one weight per sample.
template <class W>
std::shared_ptr<const source_data> with_weights(std::shared_ptr<source_data> s, const W& weights) {
    s->weights.resize(s->count);
    copy_sample_weights(weights, s->count, s->weights.data(), "Dataset");
    return s;
}

}  // namespace detail

}  // namespace batchwise::data
