// Accumulation policies with a reduction hook, for the tests that show the hook runs once per
// optimizer step, with the whole window's sample count, however the step is executed.
#pragma once

#include <batchwise/batchwise.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace bw_test {

/// What a reduction hook saw at one window's end.
struct seen_window {
    std::uint64_t step = 0;
    std::size_t samples = 0;
    std::size_t gradients = 0;
    bool updated_in_gemm = false;
    bool operator==(const seen_window&) const = default;
};

/// Inner's window, with a hook that records each call. It only reads, so it lets the window fold
/// plain SGD into the GEMM (InGemm) like any policy that needs no kernel gradients.
template <class Inner, bool InGemm = true>
struct recording_accumulation : Inner {
    static constexpr bool updates_in_gemm = InGemm;
    std::vector<seen_window> seen;

    template <class Exec>
    void reduce(batchwise::step_gradients& g) {
        seen.push_back({g.step, g.samples, g.gradients.size(), g.updated_in_gemm});
    }
};

struct scale_by {
    float* p;
    float factor;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const { p[i] *= factor; }
};

/// Inner's window, with a hook that doubles every gradient sum and the sample count: the update
/// (sum / count) must come out bit for bit as without it, which it does only if the optimizer
/// divides by the count the hook leaves. Doubling is exact in floating point.
template <class Inner>
struct doubling_accumulation : Inner {
    std::size_t calls = 0;

    template <class Exec>
    void reduce(batchwise::step_gradients& g) {
        for (const batchwise::gradient_buffer& b : g.gradients) Exec::for_each(b.size, scale_by{b.data, 2.0f});
        g.samples *= 2;
        ++calls;
    }
};

/// Counts the steps it observes and the samples of each.
class counting_observer final : public batchwise::step_observer {
public:
    std::vector<seen_window> seen;
    void observe(batchwise::step_gradients& g) override {
        seen.push_back({g.step, g.samples, g.gradients.size(), g.updated_in_gemm});
    }
};

}  // namespace bw_test
