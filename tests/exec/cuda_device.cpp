// What the cuda policy does on the machine at hand. Without a usable GPU (no driver, a driver
// too old, no device) building a model raises device_error naming the reason, and nothing
// aborts; with one, the model builds. The CI machine has no GPU, so the first half is what CI
// checks of the CUDA build beyond compiling and linking it.
#include <doctest/doctest.h>

#include "../gradient_check.hpp"
#include "../policy.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace bw = batchwise;

TEST_CASE("cuda: building a model needs a usable GPU, and says why there is none") {
    using Net = bw::Sequential<bw::Input<4>, bw::Dense<3>>;
    using cuda_model = bw::Model<Net, bw::dynamic_batch, bw::cuda>;
    const std::string reason = bw::detail::cuda_unusable_reason();
    if (!reason.empty()) {
        INFO("this machine: " << reason);
        CHECK_THROWS_AS(cuda_model{bw::seed{1}}, bw::device_error);
        try {
            cuda_model model{bw::seed{1}};
            FAIL("no device_error");
        } catch (const bw::device_error& e) {
            const std::string what = e.what();
            CHECK(what.find("batchwise::cuda: ") == 0);
            CHECK(what.find(reason) != std::string::npos);
        }
        // The CPU policies still work in the same program.
        bw::Model<Net> cpu{bw::seed{1}};
        CHECK(cpu.variables().size() == 2);
    } else {
        cuda_model model{bw::seed{1}};
        model.compile(bw::SGD{}, bw::MeanSquaredError{});
        xt::xtensor<float, 2> x = xt::ones<float>({2, 4});
        xt::xtensor<float, 2> y = xt::zeros<float>({2, 3});
        CHECK(std::isfinite(model.train_on_batch(x, y).loss));
    }
}

// A batch in pinned memory goes to the GPU straight from the caller's rows and the GPU checks
// it; one in pageable memory is checked while it is copied into the model's pinned staging. The
// two must train identically, and a bad value in either must stop the call before anything is
// trained, naming the sample.
TEST_CASE("cuda: batches in pinned memory train as pageable ones do, and are checked as strictly") {
    if (!bw::detail::cuda_unusable_reason().empty()) return;  // the test above covers that
    // Batch norm and dropout keep step state (the step's statistics, the sample counter), which a
    // rejected batch must not disturb.
    using Net = bw::Sequential<bw::Input<6>, bw::Dense<8, bw::no_bias>, bw::BatchNorm, bw::ReLU, bw::Dropout<0.25f>,
                               bw::Dense<3>>;
    const auto x = bw_test::random_matrix(16, 6, 1);
    const auto y = bw_test::random_matrix(16, 3, 2);
    bw::pinned_tensor<float, 2> px = x;
    bw::pinned_tensor<float, 2> py = y;
    CHECK(bw::cuda::is_pinned(px.data()));
    CHECK_FALSE(bw::cuda::is_pinned(x.data()));

    auto check_policy = [&](auto& pageable, auto& pinned, const char* what) {
        INFO(what);
        for (auto* m : {&pageable, &pinned}) m->compile(bw::SGD{{.momentum = 0.9f}}, bw::MeanSquaredError{});
        for (int step = 0; step < 4; ++step) {
            const float a = pageable.train_on_batch(x, y).loss;
            const float b = pinned.train_on_batch(px, py).loss;
            CHECK(a == b);
        }
        CHECK(bw_test::all_weights(pageable) == bw_test::all_weights(pinned));
        const auto before = bw_test::all_weights(pinned);
        const std::size_t steps = pinned.iterations();
        const float values[] = {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()};
        for (const float v : values) {
            for (const std::size_t r : {std::size_t{0}, std::size_t{9}, std::size_t{15}}) {
                const std::string named = "sample " + std::to_string(r) + " holds a non-finite";
                bw::pinned_tensor<float, 2> bad = px;
                bad(r, r % 6) = v;
                CHECK_THROWS_WITH_AS(pinned.train_on_batch(bad, py),
                                     doctest::Contains(named.c_str()),
                                     bw::data_error);
                auto bad_pageable = x;
                bad_pageable(r, r % 6) = v;
                CHECK_THROWS_WITH_AS(pinned.train_on_batch(bad_pageable, py),
                                     doctest::Contains(named.c_str()),
                                     bw::data_error);
            }
        }
        CHECK(pinned.iterations() == steps);
        CHECK(bw_test::all_weights(pinned) == before);
        // And it trains on afterwards exactly as the model that never saw a bad batch.
        CHECK(pinned.train_on_batch(px, py).loss == pageable.train_on_batch(x, y).loss);
        CHECK(pinned.iterations() == steps + 1);
        CHECK(bw_test::all_weights(pageable) == bw_test::all_weights(pinned));
    };
    using captured = bw::Model<Net, bw::static_batch<16>, bw::cuda>;
    captured graphs_a{bw::seed{3}}, graphs_b{bw::seed{3}};
    check_policy(graphs_a, graphs_b, "static batch, captured graphs");
    CHECK(graphs_b.step_captured());
    captured eager_a{bw::seed{3}}, eager_b{bw::seed{3}};
    eager_a.set_step_capture(false);
    eager_b.set_step_capture(false);
    check_policy(eager_a, eager_b, "static batch, eager");
    using dynamic = bw::Model<Net, bw::dynamic_batch, bw::cuda>;
    dynamic dynamic_a{bw::seed{3}}, dynamic_b{bw::seed{3}};
    check_policy(dynamic_a, dynamic_b, "dynamic batch");
}

namespace {

/// Device memory taken until only `leave` bytes stay free, and given back at the end of scope.
class device_filler {
public:
    explicit device_filler(std::size_t leave) {
        std::size_t free = 0;
        std::size_t total = 0;
        REQUIRE(cudaMemGetInfo(&free, &total) == cudaSuccess);
        while (free > leave) {
            const std::size_t chunk = std::min<std::size_t>(free - leave, std::size_t{1} << 30);
            void* p = nullptr;
            if (chunk < (std::size_t{1} << 20) || cudaMalloc(&p, chunk) != cudaSuccess) break;
            held_.push_back(p);
            REQUIRE(cudaMemGetInfo(&free, &total) == cudaSuccess);
        }
        (void)cudaGetLastError();
    }
    device_filler(const device_filler&) = delete;
    device_filler& operator=(const device_filler&) = delete;
    ~device_filler() {
        for (void* p : held_) (void)cudaFree(p);
    }

private:
    std::vector<void*> held_;
};

}  // namespace

TEST_CASE("cuda: a step larger than the free device memory is split into micro-batches and trains as the whole batch") {
    if (!bw::detail::cuda_unusable_reason().empty()) return;  // the first test covers that
    using Net = bw::Sequential<bw::Input<512>, bw::Dense<1024>, bw::ReLU, bw::Dense<10>>;
    using M = bw::Model<Net, bw::dynamic_batch, bw::cuda>;
    constexpr std::size_t rows = 16384;
    const auto x = bw_test::random_matrix(rows, 512, 3);
    xt::xtensor<float, 1> y = xt::zeros<float>({rows});
    for (std::size_t i = 0; i < rows; ++i) y(i) = static_cast<float>(i % 10);
    auto compile = [](M& m) {
        m.compile(bw::SGD{{.learning_rate = 0.05f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    };
    M whole{bw::seed{5}};
    compile(whole);
    whole.train_on_batch(x, y);
    REQUIRE(whole.micro_batch_splits().empty());
    const std::vector<float> want = bw_test::all_weights(whole);
    // What a step of all rows needs beyond the fixed state; the device keeps a third of it free.
    const std::size_t batch_bytes = M::estimate_memory(rows, 0).batch_bytes;
    const std::size_t leave = batch_bytes / 3 + bw::cuda::headroom_bytes;

    SUBCASE("memory taken after the model was built: the step's own check fails and the step splits") {
        M model{bw::seed{5}};
        compile(model);
        const device_filler filler(leave);
        model.train_on_batch(x, y);
        INFO("free when the step ran: about " << leave << " bytes; batch needs " << batch_bytes);
        CHECK_FALSE(model.micro_batch_splits().empty());
        CHECK(model.micro_batch_limit() < rows);
        CHECK(bw_test::relative_difference(want, bw_test::all_weights(model)) <= 1e-5);
    }
    SUBCASE("memory taken before: the budget is the device's free memory, and max_batch_for answers for it") {
        const device_filler filler(leave);
        M model{bw::seed{5}};
        compile(model);
        CHECK(model.memory_budget_bytes() <= leave + (std::size_t{64} << 20));
        const std::size_t fits = model.max_batch_for(model.memory_budget_bytes());
        CHECK(fits > 0);
        CHECK(fits < rows);
        model.train_on_batch(x, y);
        CHECK(model.micro_batch_limit() <= fits);
        CHECK(bw_test::relative_difference(want, bw_test::all_weights(model)) <= 1e-5);
    }
}
