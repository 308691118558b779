// One launch for the update of many variables (PyTorch's foreach / multi-tensor apply): a
// captured step would otherwise hold one kernel per variable for an update that is the same
// element-wise functor over each. The per-element arithmetic is the optimizer's own functor, so
// the update is bit for bit the one a launch per variable gives.
#pragma once

#include <cstddef>
#include <functional>
#include <vector>

#include "batchwise/core/config.hpp"

namespace batchwise {

/// An optimizer whose update (apply_from) is nothing but Exec::for_each passes that read and
/// write each element of its own variable and slots: the passes of several variables may then
/// run as one (SGD, Adam, AdamW, RMSprop declare it).
template <class O>
concept ElementWiseOptimizer = requires { requires bool(O::element_wise_update); };

namespace detail {

/// Bytes of a kernel's parameters that the functors of one launch may take (CUDA passes a
/// kernel's arguments in a 4 KiB block; some of it is Thrust's own).
inline constexpr std::size_t multi_tensor_parameter_bytes = 3072;

/// Variables one launch updates with functor F: as many as fit the parameter block, at most 32.
template <class F>
inline constexpr std::size_t multi_tensor_width = [] {
    const std::size_t fit = multi_tensor_parameter_bytes / (sizeof(F) + sizeof(std::size_t));
    return fit < 32 ? fit : 32;
}();

/// parts[k] over elements [ends[k - 1], ends[k]) of one index range: the functors travel by
/// value in the launch, so nothing is allocated on the device and a capture holds one node.
template <class F, std::size_t Width>
struct multi_tensor_pass {
    F parts[Width];
    std::size_t ends[Width];
    std::size_t count;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const {
        std::size_t k = 0;
        while (k + 1 < count && ends[k] <= i) ++k;  // a handful of variables: a scan beats a search
        parts[k](k == 0 ? i : i - ends[k - 1]);
    }
};

/// The passes of one functor type collected since the last flush.
template <class Exec, class F>
struct collected_passes {
    std::vector<F> functors;
    std::vector<std::size_t> sizes;

    /// Launches the collected passes (run) or forgets them; either way the store is empty after.
    void flush(bool run) {
        std::vector<F> fs;
        std::vector<std::size_t> ns;
        fs.swap(functors);
        ns.swap(sizes);
        if (!run) return;
        constexpr std::size_t width = multi_tensor_width<F>;
        static_assert(width >= 2, "an optimizer functor too large to launch several in one kernel");
        for (std::size_t first = 0; first < fs.size(); first += width) {
            multi_tensor_pass<F, width> pass{};
            pass.count = 0;
            std::size_t total = 0;
            for (std::size_t k = first; k < fs.size() && pass.count < width; ++k) {
                pass.parts[pass.count] = fs[k];
                total += ns[k];
                pass.ends[pass.count] = total;
                ++pass.count;
            }
            Exec::for_each(total, pass);
        }
    }
};

/// What collecting_policy::for_each adds to until the passes are launched together: a flush of
/// each functor type's store, run or discarding.
struct pass_collector {
    std::vector<std::function<void(bool)>> flushes;
};
inline pass_collector*& active_pass_collector() {
    thread_local pass_collector* active = nullptr;
    return active;
}

/// Exec, with for_each collected instead of launched while a launch_together is open.
template <class Exec>
struct collecting_policy : Exec {
    template <class F>
    static void for_each(std::size_t n, const F& f) {
        pass_collector* c = active_pass_collector();
        if (c == nullptr) return Exec::for_each(n, f);
        if (n == 0) return;
        // One store per functor type, created at its first pass after a flush.
        thread_local collected_passes<Exec, F> store;
        if (store.functors.empty()) c->flushes.emplace_back([](bool run) { store.flush(run); });
        store.functors.push_back(f);
        store.sizes.push_back(n);
    }
};

/// While it lives, collecting_policy<Exec>::for_each collects; its end launches what was
/// collected, one pass per functor type (per multi_tensor_width variables).
class launch_together {
public:
    launch_together() : previous_(active_pass_collector()) { active_pass_collector() = &collector_; }
    launch_together(const launch_together&) = delete;
    launch_together& operator=(const launch_together&) = delete;
    /// Launches the collected passes, in the order their types first came.
    void launch() {
        active_pass_collector() = previous_;
        std::vector<std::function<void(bool)>> flushes;
        flushes.swap(collector_.flushes);
        for (std::size_t k = 0; k < flushes.size(); ++k) {
            try {
                flushes[k](true);
            } catch (...) {
                for (std::size_t j = k + 1; j < flushes.size(); ++j) flushes[j](false);
                throw;
            }
        }
    }
    /// Without launch() (an exception while collecting): the collected passes are forgotten.
    ~launch_together() {
        if (active_pass_collector() == &collector_) active_pass_collector() = previous_;
        for (const auto& f : collector_.flushes) f(false);
    }

private:
    pass_collector collector_;
    pass_collector* previous_;
};

}  // namespace detail

}  // namespace batchwise
