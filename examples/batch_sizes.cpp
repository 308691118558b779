// Answers, by running them, the batch-size questions Keras users ask most (docs/batch_sizes.md
// explains each): how to train with varying batch sizes, how to change the batch size during
// training, and why training goes wrong once a batch size is chosen (ordered data, noisy small
// batches). Every scenario trains the same MLP on Fashion-MNIST and prints its test accuracy.
//
// usage: batch_sizes [epochs per scenario]     (default 3)
#include <batchwise/batchwise.hpp>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

namespace bw = batchwise;
using bw::data::Dataset;

namespace {

using Net = bw::Sequential<bw::Input<28, 28>, bw::Flatten, bw::Dense<128>, bw::ReLU, bw::Dense<10>>;

struct outcome {
    double accuracy;
    double final_loss;
    std::string sizes;
};

/// "(32 x 1875)" or "(32 x 4), (64 x 3)": the batch sizes History recorded for an epoch.
std::string describe(const std::vector<std::pair<std::size_t, std::size_t>>& runs) {
    std::string s;
    for (const auto& [size, count] : runs) {
        s += (s.empty() ? "" : ", ") + std::to_string(size) + " x " + std::to_string(count);
    }
    return s;
}

outcome train_and_test(const Dataset& data, const Dataset& test, std::uint64_t epochs, float learning_rate = 1e-3f) {
    bw::Model<Net> model{bw::seed{7}};
    model.compile(bw::Adam{{.learning_rate = learning_rate}},
                  bw::SparseCategoricalCrossentropy{{.from_logits = true}}, bw::metrics::accuracy);
    const bw::History h = model.fit(data, {.epochs = epochs, .verbose = 0});
    std::string sizes;
    for (std::size_t e = 0; e < h.size(); ++e) {
        sizes += "epoch " + std::to_string(e + 1) + ": " + describe(h.batch_sizes[e]) + (e + 1 < h.size() ? "; " : "");
    }
    return {model.evaluate(test)["accuracy"], h["loss"].back(), sizes};
}

void report(const char* title, const outcome& o) {
    std::printf("%-58s test accuracy %.4f  (last epoch loss %.4f)\n    batches: %s\n", title, o.accuracy,
                o.final_loss, o.sizes.c_str());
}

}  // namespace

int main(int argc, char** argv) {
    const std::uint64_t epochs = argc > 1 ? std::stoull(argv[1]) : 3;
    const auto arrays = bw::data::read_fashion_mnist();
    const Dataset train(arrays.train_images, arrays.train_labels);
    const Dataset test = Dataset(arrays.test_images, arrays.test_labels).batch(1000);
    const Dataset shuffled = train.shuffle(60000, bw::seed{1});

    std::printf("Fashion-MNIST, MLP 784-128-10, Adam 1e-3, %llu epochs per scenario\n\n",
                static_cast<unsigned long long>(epochs));

    // Q: How do I train with batches of different sizes? Build the dataset that yields them:
    // here the first 20000 samples in batches of 32, the rest in batches of 64.
    report("concatenate: 32-batches, then 64-batches",
           train_and_test(shuffled.take(20000).batch(32).concatenate(shuffled.skip(20000).batch(64)), test, epochs));

    // Q: How do I change the batch size during training? Schedule it like a learning rate:
    // 32 for the first epoch(s), 128 after (bigger batches instead of a decaying rate).
    report("phased schedule: 32, then 128 from epoch 2",
           train_and_test(shuffled.batch(bw::schedule::phased{{0, 32}, {1, 128}}), test, epochs));

    // A cyclic schedule: the size changes every epoch, round robin.
    report("cyclic schedule: 64, 128, 256, ...",
           train_and_test(shuffled.batch(bw::schedule::cyclic{{64, 128, 256}}), test, epochs));

    // Q: Why does training go wrong once I pass a batch size? Often the data is ordered (here:
    // sorted by class) and not shuffled, so every batch holds one class and each step undoes
    // the last. Shuffling (each epoch anew) fixes it.
    std::vector<std::size_t> order(arrays.train_labels.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return arrays.train_labels(a) < arrays.train_labels(b); });
    xt::xtensor<float, 3> sorted_images = xt::empty<float>(arrays.train_images.shape());
    xt::xtensor<int, 1> sorted_labels = xt::empty<int>(arrays.train_labels.shape());
    for (std::size_t i = 0; i < order.size(); ++i) {
        xt::view(sorted_images, i) = xt::view(arrays.train_images, order[i]);
        sorted_labels(i) = arrays.train_labels(order[i]);
    }
    const Dataset ordered(sorted_images, sorted_labels);
    report("ordered by class, not shuffled, batch 128", train_and_test(ordered.batch(128), test, epochs));
    report("same data shuffled, batch 128", train_and_test(ordered.shuffle(60000, bw::seed{1}).batch(128), test, epochs));

    // Q: Are small batches too noisy? The gradient of 8 samples is a noisy estimate, but an epoch
    // of them is 7500 steps instead of 469. Measured here (docs/batch_sizes.md), Adam at 1e-3
    // copes well with batch 8; a lower rate only slows it; growing the batch (8, then 32, then
    // 128) keeps the fast start and ends with the lowest training loss.
    report("batch 8, learning rate 1e-3", train_and_test(shuffled.batch(8), test, epochs));
    report("batch 8, learning rate 2.5e-4", train_and_test(shuffled.batch(8), test, epochs, 2.5e-4f));
    report("batch 8 growing to 128 (phased 8/32/128)",
           train_and_test(shuffled.batch(bw::schedule::phased{{0, 8}, {1, 32}, {2, 128}}), test, epochs));
    return 0;
}
