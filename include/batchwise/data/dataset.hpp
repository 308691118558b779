// Dataset: a tf.data-style input pipeline over in-memory arrays (shuffle, batch by size or schedule,
// map, concatenate, take, skip, prefetch); an immutable description read per epoch into reused buffers.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "batchwise/batch/schedule.hpp"
#include "batchwise/core/errors.hpp"
#include "batchwise/core/rng.hpp"
// Datasets are mostly built from xtensor arrays, so including this header is enough for that.
#include "batchwise/core/xtensor.hpp"
#include "batchwise/data/batch_pipeline.hpp"
#include "batchwise/data/sample_pipeline.hpp"

namespace batchwise::data {

/// An immutable description of an input pipeline over in-memory arrays (tf.data's Dataset): each
/// transformation returns a new Dataset that shares the data, and read() turns it into one epoch's
/// batches in reused buffers. fit, evaluate and predict take one; see docs/batch_sizes.md for
/// batching by schedule.
class Dataset {
public:
    /// A dataset over features (n, sample dims...) and targets: class indices (n,) or target
    /// rows (n, k). The values are copied once, as floats, and shared by derived datasets
    /// (of_bytes keeps uint8 images as bytes).
    template <class X, class Y>
    Dataset(const X& features, const Y& targets)
        : Dataset(detail::make_source(features, targets)) {}
    /// A dataset whose samples carry weights (Keras's sample_weight, shape (n,)): each sample's
    /// training loss and gradient are multiplied by its weight, and so is its loss in evaluate.
    /// Every weight must be finite and not negative. Weights follow their samples through
    /// shuffle, take, skip and batch.
    template <class X, class Y, class W>
    Dataset(const X& features, const Y& targets, const W& sample_weights)
        : Dataset(detail::with_weights(detail::make_source(features, targets), sample_weights)) {}

    /// A dataset whose features are kept as they are stored, uint8 (images): a quarter of the
    /// memory of floats, and of the bytes that reach a device (fit's data_on_device copies them
    /// once and converts each batch there). Every layer sees float(byte) / divisor, the same
    /// value on the host and on a device; divisor 255 gives what read_fashion_mnist loads.
    /// Targets as the constructor takes them; usage_error for a divisor that is not finite and
    /// positive.
    template <class X, class Y>
    [[nodiscard]] static Dataset of_bytes(const X& images, const Y& targets, float divisor) {
        return Dataset(detail::make_byte_source(images, targets, divisor));
    }
    /// of_bytes with one weight per sample, as the three-array constructor.
    template <class X, class Y, class W>
    [[nodiscard]] static Dataset of_bytes(const X& images, const Y& targets, const W& sample_weights, float divisor) {
        return Dataset(detail::with_weights(detail::make_byte_source(images, targets, divisor), sample_weights));
    }

    /// Shuffles samples with a buffer of `buffer_size`; a buffer at least as large as the data
    /// gives a uniform permutation, deterministic per seed. Each epoch is shuffled anew unless
    /// reshuffle_each_iteration is false (tf.data's flag). Do not split a reshuffled dataset with
    /// take and skip: each epoch would split a new permutation and move samples between the
    /// parts; data::split shuffles once.
    [[nodiscard]] Dataset shuffle(std::size_t buffer_size, seed s, bool reshuffle_each_iteration = true) const {
        require_unbatched("shuffle", "shuffle samples before batch()");
        if (buffer_size == 0) throw usage_error("Dataset::shuffle: buffer_size must be positive");
        return with(std::make_shared<detail::shuffle_node>(samples_, buffer_size, s.value, reshuffle_each_iteration));
    }

    /// Groups samples into batches of a fixed size or of a schedule's sizes. A smaller last batch
    /// is kept unless drop_remainder is true; dropped samples are counted and reported by fit.
    [[nodiscard]] Dataset batch(batch_schedule s, bool drop_remainder = false) const {
        require_unbatched("batch", "a dataset is batched once");
        Dataset d = *this;
        d.batches_ = std::make_shared<detail::batching_node>(samples_, std::move(s), drop_remainder,
                                                             feature_size_, target_size_, weighted_);
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
        if (weighted() != other.weighted()) {
            throw usage_error("Dataset::concatenate: both datasets must have sample weights, or neither");
        }
        Dataset d = *this;
        if (batched()) {
            d.batches_ = std::make_shared<detail::concat_batch_node>(batches_, other.batches_);
            d.by_index_ = by_index_ && other.by_index_;
        } else {
            d.samples_ = std::make_shared<detail::concat_sample_node>(samples_, other.samples_);
            d.by_index_ = false;  // a batch may take samples of both
        }
        d.bytes_ = bytes_ && other.bytes_;
        return d;
    }

    /// Applies fn to every sample (features, targets) in place, before or after batching.
    [[nodiscard]] Dataset map(sample_fn fn) const {
        Dataset d = *this;
        d.by_index_ = false;
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

    /// Whether batch() has been applied: elements are batches, and read() may be called.
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
    /// The shape of one sample's features, without the sample axis.
    [[nodiscard]] const std::vector<std::size_t>& sample_shape() const { return sample_shape_; }
    /// Floats of one sample's features: the product of sample_shape().
    [[nodiscard]] std::size_t feature_size() const { return feature_size_; }
    /// Floats of one sample's target: 1 for a class index, k for a row of k.
    [[nodiscard]] std::size_t target_size() const { return target_size_; }
    /// Whether each sample carries a weight (the three-array constructor).
    [[nodiscard]] bool weighted() const { return weighted_; }
    /// Whether every sample's features are kept as bytes (of_bytes).
    [[nodiscard]] bool stores_bytes() const { return bytes_; }
    /// Whether read_ids reads every batch: no map(), and no batch that could take samples of
    /// two sets of arrays (concatenate before batch()).
    [[nodiscard]] bool readable_by_index() const { return by_index_; }

    /// The batches of one epoch, in order.
    class reader {
    public:
        /// Reads the next batch into b, reusing its buffers; false once the epoch is over.
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

    /// Opens the batches of `epoch`, which keys its shuffle and a schedule's sizes; usage_error
    /// before batch().
    [[nodiscard]] reader read(std::uint64_t epoch = 0) const {
        if (!batched()) {
            throw usage_error("Dataset: call batch(n) before reading batches (fit, evaluate and "
                              "predict take batched datasets)");
        }
        return reader(batches_, batches_->open(epoch));
    }
    /// read(), gathering only each row's index (batch_data::ids) and weight, for data kept where
    /// the model computes (fit's data_on_device): batch_data::source is the arrays they index.
    /// usage_error for a dataset with map() or a batch that mixes concatenated arrays.
    [[nodiscard]] reader read_ids(std::uint64_t epoch = 0) const {
        if (!batched()) {
            throw usage_error("Dataset: call batch(n) before reading batches (fit, evaluate and "
                              "predict take batched datasets)");
        }
        return reader(batches_, batches_->open(epoch, detail::gather_mode::ids));
    }

private:
    explicit Dataset(std::shared_ptr<const detail::source_data> source)
        : samples_(std::make_shared<detail::source_node>(source)),
          sample_shape_(source->sample_shape),
          feature_size_(source->feature_size),
          target_size_(source->target_size),
          weighted_(!source->weights.empty()),
          bytes_(source->bytes()) {}

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
    bool weighted_ = false;
    bool bytes_ = false;
    bool by_index_ = true;
};

/// Splits a dataset's samples once into two datasets (Keras's keras.utils.split_dataset): the
/// first floor(left_fraction x n) samples and the rest, after one shuffle keyed by
/// `shuffle_seed` when one is given. Unlike shuffle(...).take(k) / skip(k), whose shuffle is
/// drawn anew every epoch so that samples move between the parts (validation data leaking into
/// training), both parts hold the same samples in every epoch. Shuffle the training part again
/// (split(...).first.shuffle(...)) for a new order each epoch within it.
inline std::pair<Dataset, Dataset> split(const Dataset& ds, double left_fraction,
                                         std::optional<seed> shuffle_seed = std::nullopt) {
    if (ds.batched()) throw usage_error("data::split: split samples before batch()");
    if (!(left_fraction > 0.0 && left_fraction < 1.0)) {
        throw usage_error("data::split: left_fraction must be in (0, 1), got " + std::to_string(left_fraction));
    }
    const std::size_t n = ds.cardinality();
    const auto left = static_cast<std::size_t>(std::floor(left_fraction * static_cast<double>(n)));
    if (left == 0 || left == n) {
        throw data_error("data::split: " + std::to_string(left_fraction) + " of " + std::to_string(n) +
                         " samples leaves no samples on one side");
    }
    const Dataset fixed = shuffle_seed ? ds.shuffle(n, *shuffle_seed, false) : ds;
    return {fixed.take(left), fixed.skip(left)};
}

}  // namespace batchwise::data
