// Training data kept in the execution policy's memory (fit's data_on_device): the arrays are
// copied there once, and a replayed step gathers its rows on the device from their indices, so
// that a step sends a few bytes per sample instead of its rows.
#pragma once

#include <algorithm>
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
/// A number no resident copy had before in this process (one counter for every instantiation).
inline std::uint64_t next_resident_identity() {
    static std::atomic<std::uint64_t> copies{0};
    return ++copies;
}
}  // namespace detail

/// One set of a dataset's arrays (features and targets) in the policy's memory, and the host
/// arrays it was copied from.
template <class Exec>
class resident_data {
public:
    /// Makes `source` the resident data: copied once (again only when it is another set of
    /// arrays), after every input and target has been checked as a trained batch is
    /// (`validate(x, y, n)` raises the same errors). Device memory is checked first.
    template <class Validate>
    void hold(const data::detail::source_data& source, Validate&& validate) {
        if (&source == host_) return;
        validate(source.features.data(), source.targets.data(), source.count);
        const std::size_t floats = source.features.size() + source.targets.size();
        detail::require_memory_for_growth<Exec>(0, floats * sizeof(float));
        host_ = nullptr;
        Exec::reserve(features_, source.features.size());
        Exec::reserve(targets_, source.targets.size());
        Exec::from_host(source.features.data(), source.features.size(), Exec::data(features_));
        Exec::from_host(source.targets.data(), source.targets.size(), Exec::data(targets_));
        host_ = &source;
        identity_ = detail::next_resident_identity();
    }
    /// The host arrays held, or null.
    [[nodiscard]] const data::detail::source_data* host() const { return host_; }
    /// Features in the policy's memory, feature_size floats per sample.
    [[nodiscard]] const float* features() const { return Exec::data(features_); }
    /// Targets in the policy's memory.
    [[nodiscard]] const float* targets() const { return Exec::data(targets_); }
    /// Changes whenever arrays are copied in, never 0: captured graphs gather from the addresses
    /// of one copy.
    [[nodiscard]] std::uint64_t identity() const { return identity_; }

    /// Gathers rows by index from the host arrays (a step that runs eagerly reads host memory).
    void gather_on_host(const std::size_t* ids, std::size_t n, std::vector<float>& x, std::vector<float>& y) const {
        const std::size_t fs = host_->feature_size;
        const std::size_t ts = host_->target_size;
        if (x.size() < n * fs) x.resize(n * fs);
        if (y.size() < n * ts) y.resize(n * ts);
        for (std::size_t r = 0; r < n; ++r) {
            std::copy_n(host_->features.data() + ids[r] * fs, fs, x.data() + r * fs);
            std::copy_n(host_->targets.data() + ids[r] * ts, ts, y.data() + r * ts);
        }
    }

private:
    const data::detail::source_data* host_ = nullptr;
    std::uint64_t identity_ = 0;
    typename Exec::vector features_, targets_;
};

namespace detail {
/// What fit holds for data_on_device: resident_data where the policy has memory of its own,
/// nothing where it computes in host memory.
struct no_resident_data {};
template <class Exec, bool OwnMemory>
struct resident_for_policy {
    using type = no_resident_data;
};
template <class Exec>
struct resident_for_policy<Exec, true> {
    using type = resident_data<Exec>;
};
template <class Exec, bool OwnMemory>
using resident_for = typename resident_for_policy<Exec, OwnMemory>::type;
}  // namespace detail

/// A batch read by index (Dataset::read_ids) trained on resident data: a full static batch
/// that is a whole optimizer step is replayed from graphs that gather its rows on the device;
/// any other step (the eager warm-up, a ragged tail, weighted samples, an accumulation window)
/// gathers its rows on the host into `x` and `y` and is fed as usual.
template <class Engine, class Exec>
logs feed_resident(Engine& e, const resident_data<Exec>& data, const data::batch_data& b, std::vector<float>& x,
                   std::vector<float>& y, const char* call) {
    const std::size_t n = b.rows;
    if constexpr (Engine::can_capture) {
        if (b.sample_weights() == nullptr && n == Engine::static_rows && e.window().whole_step(n) &&
            n <= e.planner().limit() && e.captured().ready(e.optimizer())) {
            (void)e.captured().take_undone();  // of an earlier call
            step_sums sums;
            if (e.captured().train_resident(e, data, b.ids.data(), n, call, sums)) {
                logs out = e.objective().make_logs(sums, std::max<std::size_t>(sums.samples, 1));
                out.samples = sums.samples;
                return out;
            }
        }
    }
    data.gather_on_host(b.ids.data(), n, x, y);
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
