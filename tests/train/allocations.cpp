// DESIGN decision 10: once a step has run at the largest batch size, training steps of any size
// up to it perform no heap allocation. Allocations are counted at the malloc level (this binary
// interposes malloc and friends), so operator new, xtensor and OpenBLAS are all seen.
#include <doctest/doctest.h>

#include <batchwise/batchwise.hpp>

#include <atomic>
#include <cstdlib>
#include <vector>

#include "../gradient_check.hpp"

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
}

namespace {
std::atomic<bool> counting{false};
std::atomic<std::size_t> allocations{0};
void note() {
    if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

extern "C" {
void* malloc(std::size_t n) {
    note();
    return __libc_malloc(n);
}
void* calloc(std::size_t n, std::size_t size) {
    note();
    return __libc_calloc(n, size);
}
void* realloc(void* p, std::size_t n) {
    note();
    return __libc_realloc(p, n);
}
void* aligned_alloc(std::size_t alignment, std::size_t n) {
    note();
    return __libc_memalign(alignment, n);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t n) {
    note();
    *out = __libc_memalign(alignment, n);
    return *out == nullptr ? 12 /* ENOMEM */ : 0;
}
}

namespace bw = batchwise;

namespace {

/// Counts the allocations made while f runs.
template <class F>
std::size_t allocations_during(F&& f) {
    allocations = 0;
    counting = true;
    f();
    counting = false;
    return allocations.load();
}

template <class Model, class Y>
void check_steady_state(Model& model, std::size_t largest, const std::vector<std::size_t>& sizes,
                        Y make_targets) {
    // Every batch is prepared before counting starts: only the model's own work is measured.
    std::vector<xt::xtensor<float, 2>> xs;
    std::vector<decltype(make_targets(std::size_t{}))> ys;
    for (std::size_t n : sizes) {
        xs.push_back(bw_test::random_matrix(n, Model::in_features, n));
        ys.push_back(make_targets(n));
    }
    const auto big_x = bw_test::random_matrix(largest, Model::in_features, 1);
    const auto big_y = make_targets(largest);

    // The counter does see allocations: the first step at a new largest size must make some.
    CHECK(allocations_during([&] { model.train_on_batch(big_x, big_y); }) > 0);
    const std::size_t steady = allocations_during([&] {
        for (int round = 0; round < 3; ++round) {
            for (std::size_t i = 0; i < sizes.size(); ++i) model.train_on_batch(xs[i], ys[i]);
        }
    });
    CHECK(steady == 0);
}

}  // namespace

TEST_CASE("no heap allocation in steady state: dynamic batch, varying sizes") {
    using Net = bw::Sequential<bw::Input<20>, bw::Dense<32>, bw::BatchNorm, bw::ReLU,
                               bw::Dropout<0.3f>, bw::Dense<16>, bw::Tanh, bw::Dense<5>>;
    bw::Model<Net> model{bw::seed{1}};
    model.compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}},
                  bw::metrics::accuracy);
    auto labels = [](std::size_t n) {
        xt::xtensor<int, 1> y = xt::zeros<int>({n});
        for (std::size_t i = 0; i < n; ++i) y(i) = static_cast<int>(i % 5);
        return y;
    };
    check_steady_state(model, 128, {1, 7, 128, 3, 64, 127, 2}, labels);
    CHECK(model.capacity() == 128);
}

TEST_CASE("no heap allocation in steady state: static batch, every optimizer") {
    using Net = bw::Sequential<bw::Input<8>, bw::Dense<16>, bw::Sigmoid, bw::Dense<3>, bw::Softmax>;
    auto one_hot = [](std::size_t n) {
        xt::xtensor<float, 2> y = xt::zeros<float>({n, std::size_t{3}});
        for (std::size_t i = 0; i < n; ++i) y(i, i % 3) = 1.0f;
        return y;
    };
    auto run = [&](auto optimizer) {
        bw::Model<Net, bw::static_batch<32>> model{bw::seed{2}};
        model.compile(optimizer, bw::CategoricalCrossentropy{}, bw::metrics::accuracy,
                      bw::metrics::mse);
        // Static buffers are sized at construction, so even the first step allocates nothing.
        const auto x = bw_test::random_matrix(32, 8, 3);
        const auto y = one_hot(32);
        CHECK(allocations_during([&] {
                  for (int i = 0; i < 5; ++i) model.train_on_batch(x, y);
              }) == 0);
    };
    run(bw::SGD{{.momentum = 0.9f, .nesterov = true}});
    run(bw::Adam{{.amsgrad = true}});
    run(bw::AdamW{});
    run(bw::RMSprop{{.momentum = 0.5f, .centered = true}});
}
