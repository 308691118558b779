// Three interleaved spirals, a classic task no linear model can solve: an MLP with batch norm
// and dropout learns it with Adam. The dynamic batch trains the ragged last batch of each epoch
// (3000 = 93 x 32 + 24) instead of dropping it.
//
// usage: spirals [epochs]
#include <batchwise/batchwise.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

namespace bw = batchwise;

namespace {

struct split {
    xt::xtensor<float, 2> x;
    xt::xtensor<int, 1> y;
};

/// n points per class on three noisy arms; the noise comes from the counter-based generator.
split make_spirals(std::size_t per_class, std::uint64_t seed) {
    constexpr std::size_t classes = 3;
    split s{xt::zeros<float>({per_class * classes, std::size_t{2}}),
            xt::zeros<int>({per_class * classes})};
    const auto key = bw::rng::make_key(seed, bw::rng::stream::data, 0);
    for (std::size_t c = 0; c < classes; ++c) {
        for (std::size_t i = 0; i < per_class; ++i) {
            const std::size_t row = c * per_class + i;
            const float r = static_cast<float>(i) / static_cast<float>(per_class);
            const float noise = 0.25f * (bw::rng::uniform(key, 0, row, 0) - 0.5f);
            const float angle = 4.0f * r + 2.0944f * static_cast<float>(c) + noise;
            s.x(row, 0) = r * std::sin(angle);
            s.x(row, 1) = r * std::cos(angle);
            s.y(row) = static_cast<int>(c);
        }
    }
    return s;
}

/// A permutation of [0, n) for one epoch (Fisher-Yates on counter-based draws).
std::vector<std::size_t> epoch_order(std::size_t n, std::uint64_t seed, std::uint64_t epoch) {
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), std::size_t{0});
    const auto key = bw::rng::make_key(seed, bw::rng::stream::shuffle, 0);
    for (std::size_t i = n - 1; i > 0; --i) {
        const auto j = static_cast<std::size_t>(bw::rng::uniform(key, epoch, i, 0) *
                                                static_cast<float>(i + 1));
        std::swap(order[i], order[std::min(j, i)]);
    }
    return order;
}

}  // namespace

int main(int argc, char** argv) {
    const int epochs = argc > 1 ? std::stoi(argv[1]) : 40;
    constexpr std::size_t batch_size = 32;

    using Net = bw::Sequential<bw::Input<2>, bw::Dense<64, bw::he_uniform>, bw::BatchNorm, bw::ReLU,
                               bw::Dense<64, bw::he_uniform>, bw::BatchNorm, bw::ReLU,
                               bw::Dropout<0.1f>, bw::Dense<3>>;
    bw::Model<Net, bw::dynamic_batch, bw::cpu_blas> model{bw::seed{42}};
    model.compile(bw::Adam{{.learning_rate = 3e-3f}},
                  bw::SparseCategoricalCrossentropy{{.from_logits = true}}, bw::metrics::accuracy);
    model.summary();

    const split train = make_spirals(1000, 1);
    const split test = make_spirals(400, 2);
    const std::size_t n = train.y.size();
    xt::xtensor<float, 2> xb = xt::zeros<float>({batch_size, std::size_t{2}});
    xt::xtensor<int, 1> yb = xt::zeros<int>({batch_size});

    const auto start = std::chrono::steady_clock::now();
    for (int epoch = 0; epoch < epochs; ++epoch) {
        const auto t0 = std::chrono::steady_clock::now();
        const auto order = epoch_order(n, 7, static_cast<std::uint64_t>(epoch));
        model.set_position(static_cast<std::uint64_t>(epoch), 0);
        double loss_sum = 0.0, acc_sum = 0.0;
        std::size_t steps = 0;
        for (std::size_t first = 0; first < n; first += batch_size) {
            const std::size_t rows = std::min(batch_size, n - first);
            for (std::size_t r = 0; r < rows; ++r) {
                xb(r, 0) = train.x(order[first + r], 0);
                xb(r, 1) = train.x(order[first + r], 1);
                yb(r) = train.y(order[first + r]);
            }
            // The last batch has 24 samples: a view of that size, not a padded or dropped one.
            const bw::logs l = model.train_on_batch(xt::view(xb, xt::range(0, rows)),
                                                    xt::view(yb, xt::range(0, rows)));
            loss_sum += l.loss * static_cast<double>(rows);
            acc_sum += l["accuracy"] * static_cast<double>(rows);
            ++steps;
        }
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        std::printf("Epoch %d/%d - %zu steps - %.0fms - loss: %.4f - accuracy: %.4f\n", epoch + 1,
                    epochs, steps, ms, loss_sum / static_cast<double>(n),
                    acc_sum / static_cast<double>(n));
    }
    const bw::logs result = model.evaluate(test.x, test.y);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("Test: %s - samples: %zu\n", [&] {
        char buf[96];
        std::snprintf(buf, sizeof buf, "loss %.4f - accuracy %.4f", static_cast<double>(result.loss),
                      static_cast<double>(result["accuracy"]));
        return std::string(buf);
    }().c_str(), result.samples);
    std::printf("Wall time: %.2fs\n", seconds);
    return 0;
}
