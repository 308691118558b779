// memory (BENCHMARKS.md): mlp-bench at batch 2048. What training costs in resident memory
// beyond the data, against the library's own estimate (`--mode full`); and a batch larger than
// a memory_budget allows, which must still complete by splitting into micro-batches, to the
// same weights as the unsplit model (`--mode budget`, the budget being the estimate for a
// quarter of the batch).
//
//   memory --mode full|budget [--batch N] [--samples S]      (defaults: 2048, 16384)
//
// Method, the same in `libtorch_bench --mode memory`: the batches are built and OpenBLAS has
// run one GEMM of the step's largest shape (its buffers are the BLAS's, shared by every system)
// before the peak RSS (VmHWM) is reset; the figure is that peak minus the RSS at the reset, over
// building the model and two epochs of training. One mode per process: memory freed by one
// model stays resident and would hide the next one's.
#include <batchwise/batchwise.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench_common.hpp"

namespace bw = batchwise;

namespace {

using Net = bw::Sequential<bw::Input<784>, bw::Dense<256>, bw::ReLU, bw::Dense<256>, bw::ReLU, bw::Dense<10>>;
using M = bw::Model<Net, bw::dynamic_batch, bw::cpu_blas>;
constexpr double mib = 1024.0 * 1024.0;

struct batches {
    std::vector<xt::xtensor<float, 2>> xs;
    std::vector<xt::xtensor<float, 1>> ys;
    batches(const bench::dataset& d, std::size_t n) {
        for (std::size_t first = 0; first < d.samples; first += n) {
            xs.push_back(xt::xtensor<float, 2>::from_shape({n, bench::in_features}));
            ys.push_back(xt::xtensor<float, 1>::from_shape({n}));
            std::copy_n(d.x.data() + first * bench::in_features, n * bench::in_features, xs.back().data());
            for (std::size_t i = 0; i < n; ++i) ys.back()(i) = static_cast<float>(d.y[first + i]);
        }
    }
    void epoch(M& model) const {
        for (std::size_t s = 0; s < xs.size(); ++s) model.train_on_batch(xs[s], ys[s]);
    }
};

/// One GEMM of the first layer's forward shape, so that OpenBLAS's own buffers are resident
/// before the measurement starts.
void warm_blas(std::size_t n) {
    std::vector<float> a(n * 784, 0.5f), b(784 * 256, 0.5f), c(n * 256);
    bw::cpu_blas::gemm(bw::transpose::no, bw::transpose::no, 1.0f, bw::const_matrix_view{a.data(), n, 784},
                       bw::const_matrix_view{b.data(), 784, 256}, 0.0f, bw::matrix_view{c.data(), n, 256});
}

void compile(M& model) {
    model.compile(bw::SGD{{.learning_rate = 0.01f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
}

std::string number(double v, const char* format = "%.3f") {
    char buf[64];
    std::snprintf(buf, sizeof buf, format, v);
    return buf;
}

}  // namespace

int main(int argc, char** argv) {
    const char* usage = "usage: memory --mode full|budget [--batch N] [--samples S]\n";
    bool batch_given = false;
    for (int i = 1; i < argc; ++i) batch_given = batch_given || std::strcmp(argv[i], "--batch") == 0;
    bench::options o = bench::parse(argc, argv, usage);
    if (!batch_given) o.batch = 2048;
    if (o.samples % o.batch != 0 || (o.mode != "full" && o.mode != "budget")) {
        std::fputs(usage, stderr);
        return 2;
    }
    const bench::dataset d = bench::make_dataset(o.samples);
    const batches data(d, o.batch);
    warm_blas(o.batch);
    if (!bench::reset_peak_rss()) {
        std::fputs("memory: cannot reset the peak RSS (/proc/self/clear_refs)\n", stderr);
        return 1;
    }
    const double base = bench::rss_mib();

    if (o.mode == "full") {
        M model{bw::seed{1}};
        compile(model);
        data.epoch(model);
        data.epoch(model);
        const double growth = bench::peak_rss_mib() - base;
        const double estimate = static_cast<double>(M::estimate_memory(o.batch, 0).total_bytes()) / mib;
        bench::print_result("memory", "batchwise dynamic", o.batch, "MiB", {growth}, 0.0,
                            "\"estimate_mib\": " + number(estimate) + ", \"growth_to_estimate\": " +
                                number(growth / estimate) + ", \"baseline_rss_mib\": " + number(base));
        std::printf("\nbatch %zu: peak RSS grew by %.1f MiB over building the model and 2 epochs; the library's "
                    "estimate is %.1f MiB (ratio %.3f)\n",
                    o.batch, growth, estimate, growth / estimate);
        return 0;
    }

    // A budget that fits a quarter of the batch: every call must split, and still train.
    const std::size_t budget = M::estimate_memory(o.batch / 4, 0).total_bytes();
    M limited{bw::seed{1}, bw::memory_budget{budget}};
    compile(limited);
    data.epoch(limited);
    data.epoch(limited);
    const double growth = bench::peak_rss_mib() - base;
    const std::size_t micro = limited.micro_batch_limit();

    M reference{bw::seed{1}};
    compile(reference);
    data.epoch(reference);
    data.epoch(reference);
    double max_diff = 0.0;
    const auto wl = limited.get_weights();
    const auto wr = reference.get_weights();
    for (std::size_t v = 0; v < wl.size(); ++v) {
        for (std::size_t i = 0; i < wl[v].value.size(); ++i) {
            max_diff = std::max(max_diff, static_cast<double>(std::fabs(wl[v].value.flat(i) - wr[v].value.flat(i))));
        }
    }
    const bool split = micro < o.batch;
    bench::print_result("memory", "batchwise dynamic, memory_budget", o.batch, "MiB", {growth}, 0.0,
                        "\"budget_mib\": " + number(static_cast<double>(budget) / mib) +
                            ", \"micro_batch\": " + std::to_string(micro) + ", \"max_weight_difference\": " +
                            number(max_diff, "%.3g") + ", \"baseline_rss_mib\": " + number(base));
    std::printf("\nbatch %zu under a budget of %.1f MiB: trained in micro-batches of %zu, peak RSS grew by %.1f "
                "MiB; after 2 epochs the weights differ from the unsplit model's by at most %.3g\n",
                o.batch, static_cast<double>(budget) / mib, micro, growth, max_diff);
    return split ? 0 : 1;
}
