// accum (BENCHMARKS.md): mlp-bench at an effective batch of 512, trained as 1 x 512, 4 x 128 and
// 16 x 32 micro-batches per optimizer step. Training samples/s of each, as a ratio to 1 x 512:
// what accumulating costs. The three run interleaved, repetition by repetition, so that drift on
// the machine hits all of them alike.
//
//   accum [--reps R] [--samples S]      (S a multiple of 512; default 16384, R 5)
//
// Prints one JSON line per configuration (bench_common.hpp), then a table.
#include <batchwise/batchwise.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include "bench_common.hpp"

namespace bw = batchwise;

namespace {

using Net = bw::Sequential<bw::Input<784>, bw::Dense<256>, bw::ReLU, bw::Dense<256>, bw::ReLU, bw::Dense<10>>;
constexpr std::size_t effective = 512;

/// One configuration: a model whose window is `K` micro-batches of effective / K samples.
template <std::size_t K>
struct run {
    using accumulation = std::conditional_t<K == 1, bw::no_accumulation, bw::accumulate<K>>;
    static constexpr std::size_t micro = effective / K;
    bw::Model<Net, bw::dynamic_batch, bw::cpu_blas, accumulation> model{bw::seed{1}};
    std::vector<xt::xtensor<float, 2>> xs;
    std::vector<xt::xtensor<float, 1>> ys;
    std::vector<double> rates;
    double others = 0.0;

    explicit run(const bench::dataset& d) {
        model.compile(bw::SGD{{.learning_rate = 0.01f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
        for (std::size_t first = 0; first < d.samples; first += micro) {
            xs.push_back(xt::xtensor<float, 2>::from_shape({micro, bench::in_features}));
            ys.push_back(xt::xtensor<float, 1>::from_shape({micro}));
            std::copy_n(d.x.data() + first * bench::in_features, micro * bench::in_features, xs.back().data());
            for (std::size_t i = 0; i < micro; ++i) ys.back()(i) = static_cast<float>(d.y[first + i]);
        }
    }
    /// One epoch; the first call is the warm-up and is not recorded.
    void epoch(bool record) {
        bench::region r;
        for (std::size_t s = 0; s < xs.size(); ++s) model.train_on_batch(xs[s], ys[s]);
        r.stop();
        if (!record) return;
        rates.push_back(static_cast<double>(xs.size() * micro) / r.wall());
        others += r.others();
    }
};

}  // namespace

int main(int argc, char** argv) {
    bench::options o = bench::parse(argc, argv, "usage: accum [--reps R] [--samples S]\n");
    if (o.samples % effective != 0) {
        std::fprintf(stderr, "accum: --samples must be a multiple of %zu\n", effective);
        return 2;
    }
    if (o.reps < 3) o.reps = 5;
    const bench::dataset d = bench::make_dataset(o.samples);
    run<1> one(d);
    run<4> four(d);
    run<16> sixteen(d);
    for (int rep = 0; rep <= o.reps; ++rep) {
        one.epoch(rep > 0);
        four.epoch(rep > 0);
        sixteen.epoch(rep > 0);
    }
    const double base = bench::summarize(one.rates).median;
    auto report = [&](const char* name, auto& r) {
        const double ratio = bench::summarize(r.rates).median / base;
        bench::print_result("accum", std::string("batchwise ") + name, r.micro, "samples/s", r.rates,
                            r.others / static_cast<double>(r.rates.size()),
                            "\"effective_batch\": 512, \"ratio_to_1x512\": " + std::to_string(ratio));
        return ratio;
    };
    const double r1 = report("1x512", one), r4 = report("4x128", four), r16 = report("16x32", sixteen);
    std::printf("\n| effective batch 512 as | samples/s (median) | ratio to 1 x 512 |\n|---|---|---|\n");
    std::printf("| 1 x 512 | %.0f | %.3f |\n| 4 x 128 | %.0f | %.3f |\n| 16 x 32 | %.0f | %.3f |\n", base, r1,
                bench::summarize(four.rates).median, r4, bench::summarize(sixteen.rates).median, r16);
    return 0;
}
