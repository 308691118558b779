// adapt(): sets a model's Normalization layer to the statistics of the training data, as
// Keras's Normalization.adapt(data) does, before training.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include "batchwise/core/errors.hpp"
#include "batchwise/data/dataset.hpp"
#include "batchwise/layers/preprocessing.hpp"
#include "batchwise/layers/sequential.hpp"
#include "batchwise/train/checkpoint.hpp"
#include "batchwise/train/step/host_batch.hpp"
#include "batchwise/train/tensor_io.hpp"

namespace batchwise {

namespace detail {
template <class Net>
struct first_layer;
template <class In, class First, class... Rest>
struct first_layer<Sequential<In, First, Rest...>> {
    using type = First;
};

/// Per-channel count, mean and sum of squared deviations (Welford's update, in double, so that
/// millions of values do not lose the mean's digits).
class channel_moments {
public:
    explicit channel_moments(std::size_t channels) : mean_(channels, 0.0), m2_(channels, 0.0) {}

    /// Adds `rows` samples of `sample_size` values each; channel = position % channels.
    void add(const float* x, std::size_t rows, std::size_t sample_size, const std::size_t* ids, std::size_t first_row) {
        const std::size_t channels = mean_.size();
        for (std::size_t r = 0; r < rows; ++r) {
            for (std::size_t k = 0; k < sample_size; ++k) {
                const double v = x[r * sample_size + k];
                if (!std::isfinite(v)) {
                    const std::size_t sample = ids != nullptr ? ids[r] : first_row + r;
                    throw data_error("adapt: sample " + std::to_string(sample) + " holds a non-finite value at position " +
                                         std::to_string(k) + " of the sample",
                                     sample);
                }
                const std::size_t c = k % channels;
                const double n = static_cast<double>(++counts_[c]);
                const double delta = v - mean_[c];
                mean_[c] += delta / n;
                m2_[c] += delta * (v - mean_[c]);
            }
        }
        samples_ += rows;
    }
    [[nodiscard]] std::size_t samples() const { return samples_; }
    /// The mean and the biased variance (M2 / n, as Keras's adapt) of every channel, as floats.
    [[nodiscard]] std::vector<float> means() const { return {mean_.begin(), mean_.end()}; }
    [[nodiscard]] std::vector<float> variances() const {
        std::vector<float> v(mean_.size());
        for (std::size_t c = 0; c < v.size(); ++c) v[c] = static_cast<float>(m2_[c] / static_cast<double>(counts_[c]));
        return v;
    }

private:
    std::vector<double> mean_, m2_;
    std::vector<std::size_t> counts_ = std::vector<std::size_t>(mean_.size(), 0);
    std::size_t samples_ = 0;
};

/// Writes the statistics into the model's first Normalization layer through set_weights, so
/// that every check of a weight update applies.
template <class M>
void set_normalization(M& model, const channel_moments& m) {
    if (m.samples() == 0) throw data_error("adapt: the data holds no samples");
    std::vector<named_weight> w = model.get_weights();
    for (auto& v : w) {
        if (v.name == "normalization/mean") std::copy_n(m.means().begin(), v.value.size(), v.value.begin());
        if (v.name == "normalization/variance") std::copy_n(m.variances().begin(), v.value.size(), v.value.begin());
    }
    model.set_weights(w);
}

template <class M>
constexpr void check_adaptable() {
    static_assert(std::is_same_v<typename first_layer<typename M::sequential_type>::type, Normalization>,
                  "batchwise::adapt: the model's first layer after Input must be batchwise::Normalization.");
}
}  // namespace detail

/// Keras's Normalization.adapt: sets the model's first layer, a Normalization, to the mean and
/// (biased) variance of every channel over all of the dataset's samples, read once in order.
template <class M>
void adapt(M& model, const data::Dataset& ds) {
    detail::check_adaptable<M>();
    using In = typename M::input_shape;
    const auto& sh = ds.sample_shape();
    if (!std::equal(sh.begin(), sh.end(), In::dims.begin(), In::dims.end())) {
        throw shape_error("adapt: the dataset's samples have shape " + detail::runtime_shape_str(sh) +
                          " but the network's Input is " + In::str());
    }
    detail::channel_moments m(In::dims[In::rank - 1]);
    auto reader = (ds.batched() ? ds : ds.batch(1024)).read(0);
    data::batch_data b;
    while (reader.next(b)) m.add(b.features.data(), b.rows, In::size, b.ids.data(), 0);
    detail::set_normalization(model, m);
}

/// The same from arrays (n, input dims...).
template <class M, class X>
    requires(!std::is_same_v<X, data::Dataset>)
void adapt(M& model, const X& x) {
    detail::check_adaptable<M>();
    using In = typename M::input_shape;
    const std::size_t n = detail::checked_rows<In>(x, "inputs", "adapt");
    detail::channel_moments m(In::dims[In::rank - 1]);
    detail::with_float_rows<In>(x, [&](const float* src) { m.add(src, n, In::size, nullptr, 0); });
    detail::set_normalization(model, m);
}

}  // namespace batchwise
