// Gradient accumulation that is really a large batch: the same model trained with batches of
// 256, and with micro-batches of 32 accumulated 8 at a time. One step agrees to float rounding;
// whole runs reach the same accuracy; a step of 8 x 32 needs a fraction of the memory.
//
// usage: gradient_accumulation [epochs]     (default 3)
#include <batchwise/batchwise.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

namespace bw = batchwise;

using Net = bw::Sequential<bw::Input<28, 28>, bw::Flatten, bw::Dense<256>, bw::ReLU, bw::Dropout<0.2f>,
                           bw::Dense<10>>;

template <class Model>
void report(const char* title, Model& model, std::size_t micro_batch, const bw::History& h,
            const bw::data::Dataset& test, double seconds) {
    const bw::logs r = model.evaluate(test);
    std::printf("%-30s steps/epoch %4zu  micro-batches/epoch %4zu  memory for a step %5.2f MB  "
                "test accuracy %.4f  %.1fs\n",
                title, h.optimizer_steps.back(), h.steps.back(),
                static_cast<double>(Model::estimate_memory(micro_batch, 2).total_bytes()) / 1e6,
                static_cast<double>(r["accuracy"]), seconds);
}

/// Per variable ||a - b|| / ||a||, the largest over the model.
template <class A, class B>
double relative_difference(const A& a_model, const B& b_model) {
    const auto a = a_model.get_weights(), b = b_model.get_weights();
    double worst = 0.0;
    for (std::size_t v = 0; v < a.size(); ++v) {
        double d = 0.0, n = 0.0;
        for (std::size_t i = 0; i < a[v].value.size(); ++i) {
            d += std::pow(double(a[v].value.flat(i)) - b[v].value.flat(i), 2);
            n += std::pow(double(a[v].value.flat(i)), 2);
        }
        worst = std::max(worst, std::sqrt(d / n));
    }
    return worst;
}

int main(int argc, char** argv) {
    const std::uint64_t epochs = argc > 1 ? std::stoull(argv[1]) : 3;
    const auto [train, test] = bw::data::fashion_mnist();
    const bw::data::Dataset shuffled = train.shuffle(60000, bw::seed{1});
    const bw::data::Dataset test_batches = test.batch(1000);

    bw::Model<Net> large{bw::seed{7}};
    large.compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}}, bw::metrics::accuracy);
    auto t0 = std::chrono::steady_clock::now();
    const bw::History h1 = large.fit(shuffled.batch(256), {.epochs = epochs, .verbose = 0});
    const double s1 = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    bw::Model<Net, bw::dynamic_batch, bw::cpu_blas, bw::accumulate<8>> accumulated{bw::seed{7}};
    accumulated.compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}}, bw::metrics::accuracy);
    t0 = std::chrono::steady_clock::now();
    const bw::History h2 = accumulated.fit(shuffled.batch(32), {.epochs = epochs, .verbose = 0});
    const double s2 = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::printf("Fashion-MNIST, 784-256-10 with dropout, Adam, %llu epochs; the last step of each epoch has "
                "60000 - 234 x 256 = 96 samples in both runs\n\n",
                static_cast<unsigned long long>(epochs));
    report("1 x 256 (one batch per step)", large, 256, h1, test_batches, s1);
    report("8 x 32 (accumulate<8>)", accumulated, 32, h2, test_batches, s2);

    // One step: the update of 8 x 32 is the update of 1 x 256, to float rounding.
    bw::Model<Net> one{bw::seed{9}};
    bw::Model<Net, bw::dynamic_batch, bw::cpu_blas, bw::accumulate<8>> eight{bw::seed{9}};
    one.compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    eight.compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    one.fit(shuffled.take(256).batch(256), {.verbose = 0});
    eight.fit(shuffled.take(256).batch(32), {.verbose = 0});
    std::printf("\nAfter one optimizer step, the largest relative difference between the weights: %.2e\n",
                relative_difference(one, eight));
    // Over hundreds of steps, training amplifies that rounding (as any change in summation
    // order does, in any framework): the runs drift apart while reaching the same accuracy.
    std::printf("After %zu steps: %.2e\n", h1.optimizer_steps.back() * h1.size(), relative_difference(large, accumulated));
    return 0;
}
