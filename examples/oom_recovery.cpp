// Out of memory is a batch-size event, not a crash: a model held to a memory budget that cannot
// hold the requested batch of 4096 keeps training. Each step is completed as smaller
// micro-batches (the same samples, the same update), and the smaller size is kept and reported.
//
// usage: oom_recovery [epochs]     (default 2)
#include <batchwise/batchwise.hpp>

#include <cstdio>
#include <string>

namespace bw = batchwise;

using Net = bw::Sequential<bw::Input<28, 28>, bw::Flatten, bw::Dense<512>, bw::ReLU, bw::Dense<512>, bw::ReLU,
                           bw::Dense<10>>;
using M = bw::Model<Net>;

int main(int argc, char** argv) {
    const std::uint64_t epochs = argc > 1 ? std::stoull(argv[1]) : 2;
    const auto [train, test] = bw::data::fashion_mnist();
    const bw::data::Dataset data = train.shuffle(60000, bw::seed{1}).batch(4096);
    constexpr std::size_t adam_slots = 2;

    // The memory a step needs is known from the types before anything is allocated.
    constexpr std::size_t budget = M::estimate_memory(1000, adam_slots).total_bytes();
    M limited{bw::seed{3}, bw::memory_budget{budget}};
    limited.compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}}, bw::metrics::accuracy);
    std::printf("A step at batch 4096 needs %.1f MB; the budget is %.1f MB, enough for %zu samples.\n\n",
                static_cast<double>(M::estimate_memory(4096, adam_slots).total_bytes()) / 1e6,
                static_cast<double>(budget) / 1e6, limited.max_batch_for(budget));
    const bw::History h = limited.fit(data, {.epochs = epochs});

    std::printf("\nWhat happened:\n");
    for (const auto& s : h.micro_batch_splits) {
        std::printf("  epoch %llu, optimizer step %llu: micro-batch %zu did not fit, continued with %zu\n",
                    static_cast<unsigned long long>(s.epoch + 1), static_cast<unsigned long long>(s.optimizer_step),
                    s.from, s.to);
    }
    std::printf("  optimizer steps per epoch: %zu (batches of 4096, as asked), micro-batch kept at %zu\n",
                h.optimizer_steps.back(), limited.micro_batch_limit());
    std::printf("  memory in use: %.1f MB of the %.1f MB budget\n",
                static_cast<double>(limited.memory().total_bytes()) / 1e6, static_cast<double>(budget) / 1e6);

    // The same training without a budget reaches the same model.
    M unlimited{bw::seed{3}};
    unlimited.compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}}, bw::metrics::accuracy);
    unlimited.fit(data, {.epochs = epochs, .verbose = 0});
    std::printf("  test accuracy with the budget %.4f, without %.4f\n",
                static_cast<double>(limited.evaluate(test.batch(1000))["accuracy"]),
                static_cast<double>(unlimited.evaluate(test.batch(1000))["accuracy"]));

    // When not even one sample fits, the model says so before training, with the numbers.
    try {
        M tiny{bw::seed{1}, bw::memory_budget{M::estimate_memory(0, adam_slots).total_bytes() + 1000}};
        tiny.compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
        tiny.fit(data.take(1), {.verbose = 0});
    } catch (const bw::out_of_memory& e) {
        std::printf("\nWith a budget below one sample: batchwise::out_of_memory: %s\n", e.what());
    }
    return 0;
}
