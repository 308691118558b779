// Batches a replayed step reads by index (Dataset::read_ids) on a policy with memory of its own:
// the arrays kept there for a whole fit (data_on_device), or a byte dataset's rows sent as bytes
// step by step. Either way the graph's first nodes make the batch on the device, so that a step
// sends a few bytes per sample, or a quarter of its floats, instead of its rows as floats.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "batchwise/batch/memory.hpp"
#include "batchwise/core/config.hpp"
#include "batchwise/core/errors.hpp"
#include "batchwise/data/dataset.hpp"
#include "batchwise/train/logs.hpp"
#include "batchwise/train/step/objective.hpp"

namespace batchwise {

namespace detail {
/// out[r * width + j] = source[ids[r] * width + j]: a batch's rows gathered by index.
struct gather_rows {
    const float* source;
    const std::size_t* ids;
    std::size_t width;
    float* out;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t r = i / width;
        out[i] = source[ids[r] * width + (i - r * width)];
    }
};
/// gather_rows from rows kept as bytes, each converted as the host converts it (byte_value).
struct gather_byte_rows {
    const std::uint8_t* source;
    const std::size_t* ids;
    std::size_t width;
    float divisor;
    float* out;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        const std::size_t r = i / width;
        out[i] = data::detail::byte_value(source[ids[r] * width + (i - r * width)], divisor);
    }
};
/// out[i] = byte_value(in[i]): a batch sent as bytes, as floats.
struct convert_bytes {
    const std::uint8_t* in;
    float divisor;
    float* out;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const { out[i] = data::detail::byte_value(in[i], divisor); }
};
/// A number no source of a replayed step's batch had before in this process (one counter for
/// every instantiation): graphs read the buffers of one source.
inline std::uint64_t next_source_identity() {
    static std::atomic<std::uint64_t> sources{0};
    return ++sources;
}
/// Rows gathered by index from the host arrays, as floats (a step that runs eagerly reads host
/// memory).
inline void gather_on_host(const data::detail::source_data& s, const std::size_t* ids, std::size_t n,
                           std::vector<float>& x, std::vector<float>& y) {
    const std::size_t fs = s.feature_size;
    const std::size_t ts = s.target_size;
    if (x.size() < n * fs) x.resize(n * fs);
    if (y.size() < n * ts) y.resize(n * ts);
    for (std::size_t r = 0; r < n; ++r) {
        s.read_features(ids[r], x.data() + r * fs);
        std::copy_n(s.targets.data() + ids[r] * ts, ts, y.data() + r * ts);
    }
}
}  // namespace detail

/// Where a replayed graph finds a batch its first nodes made.
struct graph_batch {
    const float* inputs;   ///< rows x the network's input width
    const float* targets;  ///< rows x the loss's target columns
};

namespace detail {
/// The source of a batch staged as rows: the graph reads its input buffers as they are.
struct staged_rows {
    static constexpr std::uint64_t identity() { return 0; }
    static void reserve(std::size_t) {}
    static graph_batch record_gather(std::size_t, std::size_t, float* inputs, float* targets) {
        return {inputs, targets};
    }
};
}  // namespace detail

/// One set of a dataset's arrays (features and targets) in the policy's memory, and the host
/// arrays it was copied from (fit's data_on_device). A step sends its rows' indices.
template <class Exec>
class resident_data {
public:
    /// Makes `source` the resident data: copied once (again only when it is another set of
    /// arrays), after every input and target has been checked as a trained batch is
    /// (`validate(x, y, n)` raises the same errors; x is null for features kept as bytes, which
    /// are finite by construction). Features kept as bytes stay bytes on the device and are
    /// converted by the gather. Device memory is checked first.
    template <class Validate>
    void hold(const data::detail::source_data& source, Validate&& validate) {
        if (&source == host_) return;
        validate(source.bytes() ? nullptr : source.features.data(), source.targets.data(), source.count);
        const std::size_t bytes =
            source.feature_bytes.size() + (source.features.size() + source.targets.size()) * sizeof(float);
        detail::require_memory_for_growth<Exec>(0, bytes);
        host_ = nullptr;
        if (source.bytes()) {
            Exec::reserve(feature_bytes_, source.feature_bytes.size());
            Exec::from_host(source.feature_bytes.data(), source.feature_bytes.size(), Exec::data(feature_bytes_));
        } else {
            Exec::reserve(features_, source.features.size());
            Exec::from_host(source.features.data(), source.features.size(), Exec::data(features_));
        }
        Exec::reserve(targets_, source.targets.size());
        Exec::from_host(source.targets.data(), source.targets.size(), Exec::data(targets_));
        host_ = &source;
        identity_ = detail::next_source_identity();
    }
    /// The host arrays held, or null.
    [[nodiscard]] const data::detail::source_data* host() const { return host_; }
    /// Changes whenever arrays are copied in or buffers grow, never 0.
    [[nodiscard]] std::uint64_t identity() const { return identity_; }

    /// Room for the indices of a step of n rows per parity (before a capture).
    void reserve(std::size_t n) {
        if (host_ids_.size() >= 2 * n) return;
        for (auto& ids : ids_) Exec::reserve(ids, n);
        host_ids_.resize(2 * n);
        identity_ = detail::next_source_identity();
    }
    /// Sends the indices of parity p's step through page-locked memory, on the side stream.
    template <class Objective>
    void stage(std::size_t p, const std::size_t* ids, std::size_t n, const Objective&, const char*) {
        std::copy_n(ids, n, host_ids_.data() + p * n);
        Exec::copy_ahead(host_ids_.data() + p * n, n, Exec::data(ids_[p]));
    }
    /// Records the gather of parity p's rows and targets into the graph's buffers.
    graph_batch record_gather(std::size_t p, std::size_t rows, float* inputs, float* targets) {
        const std::size_t width = host_->feature_size;
        const std::size_t* ids = Exec::data(ids_[p]);
        if (host_->bytes()) {
            Exec::for_each(rows * width, detail::gather_byte_rows{Exec::data(feature_bytes_), ids, width,
                                                                  host_->byte_divisor, inputs});
        } else {
            Exec::for_each(rows * width, detail::gather_rows{Exec::data(features_), ids, width, inputs});
        }
        const std::size_t ty = host_->target_size;
        Exec::for_each(rows * ty, detail::gather_rows{Exec::data(targets_), ids, ty, targets});
        return {inputs, targets};
    }

private:
    const data::detail::source_data* host_ = nullptr;
    std::uint64_t identity_ = 0;
    typename Exec::vector features_, targets_;
    typename Exec::template array<std::uint8_t> feature_bytes_;
    /// The row indices per parity, and their page-locked staging.
    std::array<typename Exec::template array<std::size_t>, 2> ids_;
    typename Exec::template host_array<std::size_t> host_ids_;
};

/// A byte dataset (Dataset::of_bytes) read from host memory by a policy with memory of its own:
/// a replayed step gathers its rows' bytes on the host straight into page-locked memory, sends
/// them as bytes, a quarter of their floats, and its graph converts them on the device as the
/// host would (byte_value). Its targets are checked on the host first, as a batch's are.
template <class Exec>
class streamed_bytes {
public:
    /// Makes `source` the arrays steps are gathered from; nothing is copied.
    void hold(const data::detail::source_data& source) {
        if (&source == host_) return;
        host_ = &source;
        identity_ = detail::next_source_identity();  // the divisor is part of the graph
    }
    /// The host arrays held, or null.
    [[nodiscard]] const data::detail::source_data* host() const { return host_; }
    /// Changes whenever the arrays or the buffers change, never 0.
    [[nodiscard]] std::uint64_t identity() const { return identity_; }

    /// Room for a step of n rows per parity (before a capture).
    void reserve(std::size_t n) {
        const std::size_t width = host_->feature_size;
        const std::size_t ty = host_->target_size;
        if (host_bytes_.size() >= 2 * n * width && host_targets_.size() >= 2 * n * ty) return;
        for (std::size_t p = 0; p < 2; ++p) {
            Exec::reserve(bytes_[p], n * width);
            Exec::reserve(targets_[p], n * ty);
        }
        host_bytes_.resize(2 * n * width);
        host_targets_.resize(2 * n * ty);
        identity_ = detail::next_source_identity();
    }
    /// Gathers parity p's rows into page-locked memory, checks the targets, and sends both on
    /// the side stream.
    template <class Objective>
    void stage(std::size_t p, const std::size_t* ids, std::size_t n, const Objective& objective, const char* call) {
        const std::size_t width = host_->feature_size;
        const std::size_t ty = host_->target_size;
        std::uint8_t* x = host_bytes_.data() + p * n * width;
        float* y = host_targets_.data() + p * n * ty;
        for (std::size_t r = 0; r < n; ++r) {
            std::copy_n(host_->feature_bytes.data() + ids[r] * width, width, x + r * width);
            std::copy_n(host_->targets.data() + ids[r] * ty, ty, y + r * ty);
        }
        objective.validate(nullptr, y, ids, n, call, false);
        Exec::copy_ahead(x, n * width, Exec::data(bytes_[p]));
        Exec::copy_ahead(y, n * ty, Exec::data(targets_[p]));
    }
    /// Records the conversion of parity p's bytes into the graph's input buffer; the graph reads
    /// the targets where they arrived.
    graph_batch record_gather(std::size_t p, std::size_t rows, float* inputs, float*) {
        const std::size_t width = host_->feature_size;
        Exec::for_each(rows * width, detail::convert_bytes{Exec::data(bytes_[p]), host_->byte_divisor, inputs});
        return {inputs, Exec::data(targets_[p])};
    }

private:
    const data::detail::source_data* host_ = nullptr;
    std::uint64_t identity_ = 0;
    std::array<typename Exec::template array<std::uint8_t>, 2> bytes_;
    std::array<typename Exec::vector, 2> targets_;
    typename Exec::template host_array<std::uint8_t> host_bytes_;
    typename Exec::template host_array<float> host_targets_;
};

namespace detail {
/// What fit holds for batches read by index: a source where the policy has memory of its own,
/// nothing where it computes in host memory.
struct no_indexed_source {
    [[nodiscard]] const data::detail::source_data* host() const { return nullptr; }
};
template <template <class> class Source, class Exec, bool OwnMemory>
struct indexed_for_policy {
    using type = no_indexed_source;
};
template <template <class> class Source, class Exec>
struct indexed_for_policy<Source, Exec, true> {
    using type = Source<Exec>;
};
template <template <class> class Source, class Exec, bool OwnMemory>
using indexed_for = typename indexed_for_policy<Source, Exec, OwnMemory>::type;
}  // namespace detail

/// A batch read by index (Dataset::read_ids) from `source` (resident_data or streamed_bytes):
/// a full static batch that is a whole optimizer step is replayed from graphs that make its
/// rows on the device; any other step (the eager warm-up, a ragged tail, weighted samples, an
/// accumulation window) gathers its rows on the host into `x` and `y` as floats and is fed as
/// usual.
template <class Engine, class Source>
logs feed_indexed(Engine& e, Source& source, const data::batch_data& b, std::vector<float>& x, std::vector<float>& y,
                  const char* call) {
    const std::size_t n = b.rows;
    if constexpr (Engine::can_capture) {
        if (b.sample_weights() == nullptr && n == Engine::static_rows && e.window().whole_step(n) &&
            n <= e.planner().limit() && e.captured().ready(e.optimizer())) {
            (void)e.captured().take_undone();  // of an earlier call
            step_sums sums;
            if (e.captured().train_indexed(e, source, b.ids.data(), n, call, sums)) return e.objective().logs_of(sums);
        }
    }
    detail::gather_on_host(*source.host(), b.ids.data(), n, x, y);
    // Eagerly: graphs captured from staged rows would replace the ones that gather.
    struct suspended {
        decltype(e.captured())& c;
        explicit suspended(decltype(e.captured())& captured) : c(captured) { c.suspend_staged(true); }
        suspended(const suspended&) = delete;
        suspended& operator=(const suspended&) = delete;
        ~suspended() { c.suspend_staged(false); }
    } guard(e.captured());
    return e.feed(x.data(), y.data(), b.sample_weights(), b.ids.data(), n, call);
}

}  // namespace batchwise
