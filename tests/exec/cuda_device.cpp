// What the cuda policy does on the machine at hand. Without a usable GPU (no driver, a driver
// too old, no device) building a model raises device_error naming the reason, and nothing
// aborts; with one, the model builds. The CI machine has no GPU, so the first half is what CI
// checks of the CUDA build beyond compiling and linking it.
#include <doctest/doctest.h>

#include "../policy.hpp"

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
