// What the cuda policy does on the machine at hand. Without a usable GPU (no driver, a driver
// too old, no device) building a model raises device_error naming the reason, and nothing
// aborts; with one, the model builds. The CI machine has no GPU, so the first half is what CI
// checks of the CUDA build beyond compiling and linking it.
#include <doctest/doctest.h>

#include "../gradient_check.hpp"
#include "../policy.hpp"

#include <cmath>
#include <limits>
#include <string>

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
