// The consumer projects' program: trains a small network on a task no linear model can solve
// (the sign of x * y, "XOR" on the plane) and exits non-zero unless it learned it, so that a
// package that builds but computes wrongly (no BLAS, a wrong define) fails the test too.
#include <batchwise/batchwise.hpp>

#include <cstdio>
#include <random>

namespace bw = batchwise;

namespace {

/// n points uniform in [-1, 1]^2, labelled 1 where x * y > 0.
bw::data::Dataset quadrants(std::size_t n, unsigned seed) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    xt::xtensor<float, 2> x = xt::zeros<float>({n, std::size_t{2}});
    xt::xtensor<int, 1> y = xt::zeros<int>({n});
    for (std::size_t i = 0; i < n; ++i) {
        x(i, 0) = u(gen);
        x(i, 1) = u(gen);
        y(i) = x(i, 0) * x(i, 1) > 0.0f ? 1 : 0;
    }
    return bw::data::Dataset(x, y);
}

}  // namespace

int main() {
    using Net = bw::Sequential<bw::Input<2>, bw::Dense<32>, bw::ReLU, bw::Dense<32>, bw::ReLU,
                               bw::Dense<2>>;
    bw::Model<Net, bw::dynamic_batch, bw::cpu_blas> model{bw::seed{7}};
    model.compile(bw::Adam{{.learning_rate = 1e-2f}},
                  bw::SparseCategoricalCrossentropy{{.from_logits = true}}, bw::metrics::accuracy);

    const auto train = quadrants(2000, 1);
    const auto test = quadrants(1000, 2);
    const bw::History history =
        model.fit(train.shuffle(2000, bw::seed{3}).batch(32), {.epochs = 15, .verbose = 2});
    const bw::logs result = model.evaluate(test.batch(500));

    const double first_loss = history["loss"].front();
    const double last_loss = history["loss"].back();
    const double accuracy = result["accuracy"];
    std::printf("loss %.4f -> %.4f, test accuracy %.4f\n", first_loss, last_loss, accuracy);
    if (!(accuracy > 0.95 && last_loss < 0.5 * first_loss)) {
        std::printf("FAILED: the model did not learn (expected test accuracy > 0.95 and the "
                    "training loss at least halved)\n");
        return 1;
    }
    std::printf("OK: the model learned\n");
    return 0;
}
