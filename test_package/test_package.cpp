// Trains a small classifier on two interleaved half-moons and exits non-zero unless it learned
// them: the package must not only compile, it must compute (BLAS linked, HAVE_CBLAS set).
#include <batchwise/batchwise.hpp>

#include <cmath>
#include <cstdio>

namespace bw = batchwise;

int main() {
    // Two half-circles of radius 1, the second shifted and flipped so that they interlock.
    constexpr std::size_t n = 1024;
    xt::xtensor<float, 2> x = xt::zeros<float>({n, std::size_t{2}});
    xt::xtensor<int, 1> y = xt::zeros<int>({n});
    const auto key = bw::rng::make_key(5, bw::rng::stream::data, 0);
    for (std::size_t i = 0; i < n; ++i) {
        const int label = static_cast<int>(i % 2);
        const float t = 3.14159265f * bw::rng::uniform(key, 0, i, 0);
        const float noise = 0.1f * (bw::rng::uniform(key, 0, i, 1) - 0.5f);
        x(i, 0) = label == 0 ? std::cos(t) : 1.0f - std::cos(t);
        x(i, 1) = (label == 0 ? std::sin(t) : 0.5f - std::sin(t)) + noise;
        y(i) = label;
    }
    const bw::data::Dataset moons(x, y);

    using Net = bw::Sequential<bw::Input<2>, bw::Dense<16>, bw::Tanh, bw::Dense<16>, bw::Tanh,
                               bw::Dense<2>>;
    bw::Model<Net, bw::static_batch<32>> model{bw::seed{1}};
    model.compile(bw::Adam{{.learning_rate = 1e-2f}},
                  bw::SparseCategoricalCrossentropy{{.from_logits = true}}, bw::metrics::accuracy);
    model.fit(moons.take(768).shuffle(768, bw::seed{2}).batch(32), {.epochs = 30, .verbose = 0});
    const bw::logs result = model.evaluate(moons.skip(768).batch(32));

    std::printf("batchwise test_package: two moons, test accuracy %.4f\n",
                static_cast<double>(result["accuracy"]));
    return result["accuracy"] > 0.95f ? 0 : 1;
}
