// tiny-step (BENCHMARKS.md): 16 -> 16 -> 1 MLP, ReLU, mean squared error, SGD, batch 1.
// Microseconds per training step (train_on_batch) — the framework's own overhead, since the
// arithmetic is ~1 kFLOP. 256 pre-built samples are cycled; --steps steps per block, the median
// of --reps blocks after a warm-up block.
//
//   tiny_step --mode static|dynamic [--steps K] [--reps R]
#include <batchwise/batchwise.hpp>

#include <cstdio>
#include <random>

#include "bench_common.hpp"

namespace bw = batchwise;

namespace {

using Net = bw::Sequential<bw::Input<16>, bw::Dense<16>, bw::ReLU, bw::Dense<1>>;
constexpr std::size_t pool = 256;

template <class Batch>
void run(const bench::options& o, const char* system) {
    using Model = bw::Model<Net, Batch>;
    Model model{bw::seed{42}};
    model.compile(bw::SGD{{.learning_rate = 0.01f}}, bw::MeanSquaredError{});
    using X = typename Model::input_batch;
    using Y = typename Model::output_batch;
    std::vector<X> xs(pool);
    std::vector<Y> ys(pool);
    std::mt19937 gen(bench::data_seed);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (std::size_t s = 0; s < pool; ++s) {
        if constexpr (!Batch::is_static) {
            xs[s] = X::from_shape({1, 16});
            ys[s] = Y::from_shape({1, 1});
        }
        for (std::size_t j = 0; j < 16; ++j) xs[s].data()[j] = u(gen);
        ys[s].data()[0] = u(gen);
    }
    float last = 0.0f;
    const bench::timings t = bench::time_runs(o.reps, [&] {
        for (std::size_t k = 0; k < o.steps; ++k) last = model.train_on_batch(xs[k % pool], ys[k % pool]).loss;
    });
    const std::vector<double> us = t.micros_per(static_cast<double>(o.steps));
    if (!(last >= 0.0f)) {
        std::fprintf(stderr, "tiny_step: bad loss %g\n", static_cast<double>(last));
        std::exit(1);
    }
    bench::print_result("tiny-step", system, 1, "us/step", us, t.others);
}

}  // namespace

int main(int argc, char** argv) {
    const char* usage = "usage: tiny_step --mode static|dynamic [--steps K] [--reps R]\n";
    bench::options o = bench::parse(argc, argv, usage);
    if (o.mode == "static") {
        run<bw::static_batch<1>>(o, "batchwise static");
    } else if (o.mode == "dynamic") {
        run<bw::dynamic_batch>(o, "batchwise dynamic");
    } else {
        std::fputs(usage, stderr);
        return 2;
    }
    return 0;
}
