// mlp-bench (BENCHMARKS.md) for batchwise: 784 -> 256 -> 256 -> 10 ReLU MLP, softmax
// cross-entropy from logits, plain SGD lr 0.01, float32, 16384 synthetic samples. Training
// samples/s over whole epochs, median of --reps repetitions after a warm-up epoch.
//
//   mlp_bench --batch N --mode static    Model<Net, static_batch<N>>, train_on_batch on batches
//                                        built before the clock starts (N in 1 8 32 128 512 2048)
//   mlp_bench --batch N --mode dynamic   Model<Net, dynamic_batch>, the same loop
//   mlp_bench --batch N --mode fit       Model<Net, dynamic_batch>::fit on a data::Dataset
//                                        batched by N: what the data pipeline adds
//
// Prints one JSON line (bench_common.hpp). Threads: OPENBLAS_NUM_THREADS, set by the caller.
#include <batchwise/batchwise.hpp>

#include <cmath>
#include <cstdio>
#include <utility>

#include "bench_common.hpp"

namespace bw = batchwise;

namespace {

using Net = bw::Sequential<bw::Input<784>, bw::Dense<256>, bw::ReLU, bw::Dense<256>, bw::ReLU,
                           bw::Dense<10>>;

template <class Model>
void compile(Model& model) {
    model.compile(bw::SGD{{.learning_rate = 0.01f}},
                  bw::SparseCategoricalCrossentropy{{.from_logits = true}});
}

/// train_on_batch over pre-built batches of the model's own input type.
template <class Model>
std::vector<double> train_epochs(Model& model, const bench::dataset& d, const bench::options& o,
                                 double& others) {
    using X = typename Model::input_batch;
    constexpr bool fixed = Model::batch_policy::is_static;
    using Y = std::conditional_t<fixed,
                                 xt::xtensor_fixed<float, xt::xshape<Model::batch_policy::extent>>,
                                 xt::xtensor<float, 1>>;
    const std::size_t n = o.batch;
    const std::size_t steps = d.samples / n;
    std::vector<X> xs(steps);
    std::vector<Y> ys(steps);
    for (std::size_t s = 0; s < steps; ++s) {
        if constexpr (!fixed) {
            xs[s] = X::from_shape({n, bench::in_features});
            ys[s] = Y::from_shape({n});
        }
        std::copy_n(d.x.data() + s * n * bench::in_features, n * bench::in_features, xs[s].data());
        for (std::size_t i = 0; i < n; ++i) ys[s].data()[i] = static_cast<float>(d.y[s * n + i]);
    }
    float last = 0.0f;
    const bench::timings t = bench::time_runs(o.reps, [&] {
        for (std::size_t s = 0; s < steps; ++s) last = model.train_on_batch(xs[s], ys[s]).loss;
    });
    if (!std::isfinite(last)) {
        std::fprintf(stderr, "mlp_bench: the loss is not finite (%g)\n", static_cast<double>(last));
        std::exit(1);
    }
    others = t.others;
    return t.rates(static_cast<double>(d.samples));
}

template <std::size_t N>
bool run_static(const bench::dataset& d, const bench::options& o) {
    if (o.batch != N) return false;
    bw::Model<Net, bw::static_batch<N>> model{bw::seed{42}};
    compile(model);
    double others = 0.0;
    const auto rates = train_epochs(model, d, o, others);
    bench::print_result("mlp-bench", "batchwise static", N, "samples/s", rates, others);
    return true;
}

void run_dynamic(const bench::dataset& d, const bench::options& o) {
    bw::Model<Net, bw::dynamic_batch> model{bw::seed{42}};
    compile(model);
    double others = 0.0;
    const auto rates = train_epochs(model, d, o, others);
    bench::print_result("mlp-bench", "batchwise dynamic", o.batch, "samples/s", rates, others);
}

void run_fit(const bench::dataset& d, const bench::options& o) {
    bw::Model<Net, bw::dynamic_batch> model{bw::seed{42}};
    compile(model);
    xt::xtensor<float, 2> x = xt::empty<float>({d.samples, bench::in_features});
    xt::xtensor<float, 1> y = xt::empty<float>({d.samples});
    std::copy(d.x.begin(), d.x.end(), x.begin());
    for (std::size_t i = 0; i < d.samples; ++i) y(i) = static_cast<float>(d.y[i]);
    const bw::data::Dataset train = bw::data::Dataset(x, y).batch(o.batch);
    const bench::timings t = bench::time_runs(o.reps, [&] {
        const bw::History h = model.fit(train, {.epochs = 1, .verbose = 0});
        if (h.samples.empty() || h.samples.back() != d.samples) {
            std::fprintf(stderr, "mlp_bench: fit trained %zu samples, expected %zu\n",
                         h.samples.empty() ? std::size_t{0} : h.samples.back(), d.samples);
            std::exit(1);
        }
    });
    bench::print_result("mlp-bench", "batchwise fit", o.batch, "samples/s",
                        t.rates(static_cast<double>(d.samples)), t.others);
}

}  // namespace

int main(int argc, char** argv) {
    const char* usage =
        "usage: mlp_bench --batch N --mode static|dynamic|fit [--reps R] [--samples S]\n";
    const bench::options o = bench::parse(argc, argv, usage);
    const bench::dataset d = bench::make_dataset(o.samples);
    if (o.mode == "static") {
        const bool ran = [&]<std::size_t... N>(std::index_sequence<N...>) {
            return (run_static<N>(d, o) || ...);
        }(std::index_sequence<1, 8, 32, 128, 512, 2048>{});
        if (!ran) {
            std::fprintf(stderr, "mlp_bench: static batch %zu is not instantiated (1 8 32 128 512 2048)\n",
                         o.batch);
            return 2;
        }
    } else if (o.mode == "dynamic") {
        run_dynamic(d, o);
    } else if (o.mode == "fit") {
        run_fit(d, o);
    } else {
        std::fputs(usage, stderr);
        return 2;
    }
    return 0;
}
