// Shapes, the counter-based generator, the error hierarchy, the BLAS kernel check, naming.
#include <doctest/doctest.h>

#include "../concept_only_policy.hpp"
#include "../policy.hpp"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <set>
#include <string_view>

namespace bw = batchwise;

TEST_CASE("shape: rank, size and Keras-style printing") {
    using S = bw::shape<28, 28>;
    CHECK(S::rank == 2);
    CHECK(S::size == 784);
    CHECK(S::str() == "(28, 28)");
    CHECK(bw::shape<10>::str() == "(10,)");
    CHECK(bw::Shape<S>);
    CHECK_FALSE(bw::Shape<int>);
}

TEST_CASE("Sequential infers shapes along the list") {
    using Net = bw::Sequential<bw::Input<4, 3>, bw::Flatten, bw::Dense<8>, bw::ReLU,
                               bw::Reshape<2, 4>, bw::Flatten, bw::Dense<5>, bw::Softmax>;
    static_assert(std::is_same_v<Net::output_shape, bw::shape<5>>);
    static_assert(std::is_same_v<Net::layer_input_shape<1>, bw::shape<12>>);
    static_assert(std::is_same_v<Net::layer_output_shape<3>, bw::shape<2, 4>>);
    static_assert(Net::well_formed);
    using Impl = Net::network<bw_test::exec>;
    static_assert(Impl::trainable_count == 12 * 8 + 8 + 8 * 5 + 5);
    // Only layers after the first trainable one need an input gradient.
    CHECK_FALSE(Impl::needs_input_grad[0]);
    CHECK_FALSE(Impl::needs_input_grad[1]);
    CHECK(Impl::needs_input_grad[2]);
    CHECK(Impl::needs_input_grad[6]);
}

TEST_CASE("concepts accept the library's types and reject others") {
    CHECK(bw::ExecutionPolicy<bw_test::exec>);
    CHECK_FALSE(bw::ExecutionPolicy<int>);
    CHECK(bw::BatchPolicy<bw::static_batch<32>>);
    CHECK(bw::BatchPolicy<bw::dynamic_batch>);
    CHECK_FALSE(bw::BatchPolicy<bw_test::exec>);
    CHECK(bw::AccumulationPolicy<bw::no_accumulation>);
    CHECK(bw::Layer<bw::Dense<3>>);
    CHECK(bw::Layer<bw::ReLU>);
    CHECK(bw::Layer<bw::Dropout<0.5f>>);
    CHECK(bw::Layer<bw::BatchNorm>);
    CHECK_FALSE(bw::Layer<bw::Input<3>>);
    CHECK_FALSE(bw::Layer<double>);
    CHECK(bw::LayerImpl<bw::Dense<3>::impl<bw::shape<4>, bw_test::exec>>);
    CHECK(bw::LayerImpl<bw::BatchNorm::impl<bw::shape<4>, bw_test::exec>>);
    CHECK(bw::OptimizerFor<bw::Adam, bw_test::exec>);
    CHECK(bw::LossFor<bw::SparseCategoricalCrossentropy, bw_test::exec>);
    CHECK(bw::MetricFor<bw::metrics::accuracy_metric, bw_test::exec>);
}

TEST_CASE("a policy written to the concept alone trains as cpu_blas does, and checks its inputs") {
    static_assert(bw::ExecutionPolicy<bw_test::concept_only>);
    using Net = bw::Sequential<bw::Input<4>, bw::Dense<6>, bw::ReLU, bw::Dense<3>>;
    bw::Model<Net, bw::dynamic_batch, bw_test::concept_only> custom{bw::seed{8}};
    bw::Model<Net, bw::dynamic_batch, bw::cpu_blas> reference{bw::seed{8}};
    custom.compile(bw::Adam{}, bw::MeanSquaredError{});
    reference.compile(bw::Adam{}, bw::MeanSquaredError{});
    xt::xtensor<float, 2> x = xt::zeros<float>({std::size_t{10}, std::size_t{4}});
    xt::xtensor<float, 2> y = xt::zeros<float>({std::size_t{10}, std::size_t{3}});
    for (std::size_t i = 0; i < x.size(); ++i) x.data()[i] = std::sin(0.7f * static_cast<float>(i));
    for (std::size_t i = 0; i < y.size(); ++i) y.data()[i] = std::cos(0.3f * static_cast<float>(i));
    for (int step = 0; step < 3; ++step) CHECK(custom.train_on_batch(x, y).loss == reference.train_on_batch(x, y).loss);
    // The model has buffers for the batch now, so the check is the one made while staging.
    auto bad = x;
    bad(7, 2) = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_WITH_AS(custom.train_on_batch(bad, y), doctest::Contains("sample 7"), bw::data_error);
    CHECK(custom.iterations() == 3);
    const auto a = custom.get_weights(), b = reference.get_weights();
    for (std::size_t v = 0; v < a.size(); ++v) CHECK(a[v].value == b[v].value);
}

TEST_CASE("philox: known answer, determinism and independence of streams") {
    // Known-answer vector of Random123's Philox4x32-10 (counter and key all zero: first word).
    CHECK(bw::rng::philox({0, 0}, {0, 0, 0, 0}) == 0x6627e8d5u);
    // Known-answer vector with all bits set.
    CHECK(bw::rng::philox({0xffffffffu, 0xffffffffu},
                          {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}) == 0x408f276du);

    const auto key = bw::rng::make_key(42, bw::rng::stream::dropout, 3);
    CHECK(bw::rng::uniform(key, 1, 12345, 7) == bw::rng::uniform(key, 1, 12345, 7));
    const auto other_layer = bw::rng::make_key(42, bw::rng::stream::dropout, 4);
    const auto other_stream = bw::rng::make_key(42, bw::rng::stream::init, 3);
    int differ_layer = 0, differ_stream = 0;
    for (std::uint64_t s = 0; s < 100; ++s) {
        differ_layer += bw::rng::uniform(key, 0, s, 0) != bw::rng::uniform(other_layer, 0, s, 0);
        differ_stream += bw::rng::uniform(key, 0, s, 0) != bw::rng::uniform(other_stream, 0, s, 0);
    }
    CHECK(differ_layer > 95);
    CHECK(differ_stream > 95);
}

TEST_CASE("philox: uniform values fill the unit interval evenly") {
    const auto key = bw::rng::make_key(7, bw::rng::stream::data, 0);
    constexpr int n = 100000, bins = 10;
    int count[bins] = {};
    double sum = 0.0;
    for (int i = 0; i < n; ++i) {
        const float u = bw::rng::uniform(key, 0, static_cast<std::uint64_t>(i), 0);
        REQUIRE(u >= 0.0f);
        REQUIRE(u < 1.0f);
        sum += u;
        ++count[static_cast<int>(u * bins)];
    }
    CHECK(sum / n == doctest::Approx(0.5).epsilon(0.01));
    double chi2 = 0.0;
    for (int c : count) chi2 += (c - n / bins) * (c - n / bins) / double(n / bins);
    CHECK(chi2 < 27.9);  // 99.9% quantile of chi-square with 9 degrees of freedom
}

TEST_CASE("initializers: Glorot and He limits, seeded and order-independent") {
    const auto w = bw::initial_kernel<bw::glorot_uniform>(1, 0, 300, 100);
    const float limit = std::sqrt(6.0f / 400.0f);
    float lo = 1, hi = -1;
    for (float v : w) {
        lo = std::min(lo, v);
        hi = std::max(hi, v);
    }
    CHECK(lo >= -limit);
    CHECK(hi <= limit);
    CHECK(hi > 0.95f * limit);  // 30000 draws reach close to both ends
    CHECK(lo < -0.95f * limit);
    CHECK(bw::initial_kernel<bw::glorot_uniform>(1, 0, 300, 100) == w);
    CHECK(bw::initial_kernel<bw::glorot_uniform>(2, 0, 300, 100) != w);
    CHECK(bw::initial_kernel<bw::glorot_uniform>(1, 1, 300, 100) != w);

    const auto h = bw::initial_kernel<bw::he_normal>(1, 0, 200, 200);
    double var = 0.0;
    float max_abs = 0.0f;
    for (float v : h) {
        var += double(v) * v;
        max_abs = std::max(max_abs, std::fabs(v));
    }
    var /= static_cast<double>(h.size());
    CHECK(var == doctest::Approx(2.0 / 200.0).epsilon(0.05));  // Keras's truncation correction
    CHECK(max_abs <= 2.0f * std::sqrt(2.0f / 200.0f) / 0.87962566f);
}

TEST_CASE("errors: one base type, precise subtypes") {
    CHECK_THROWS_AS(throw bw::shape_error("s"), bw::error);
    CHECK_THROWS_AS(throw bw::data_error("d", 3), bw::error);
    CHECK_THROWS_AS(throw bw::io_error("i"), bw::error);
    CHECK_THROWS_AS(throw bw::device_error("g"), bw::error);
    CHECK_THROWS_AS(throw bw::out_of_memory("m"), bw::error);
    CHECK_THROWS_AS(throw bw::numeric_error("n"), bw::error);
    CHECK_THROWS_AS(throw bw::usage_error("u"), std::runtime_error);
    CHECK(bw::data_error("d", 3).sample() == 3);
    CHECK(bw::data_error("d").sample() == bw::data_error::no_sample);
}

TEST_CASE("the slow-OpenBLAS-kernel check") {
    CHECK(bw::detail::openblas_kernel_is_slow("Prescott", true));
    CHECK(bw::detail::openblas_kernel_is_slow("Haswell", true));
    CHECK_FALSE(bw::detail::openblas_kernel_is_slow("SkylakeX", true));
    CHECK_FALSE(bw::detail::openblas_kernel_is_slow("Cooperlake", true));
    CHECK_FALSE(bw::detail::openblas_kernel_is_slow("Haswell", false));
    if (openblas_get_corename != nullptr && bw::detail::cpu_has_avx512() &&
        std::getenv("OPENBLAS_CORETYPE") != nullptr) {
        // The project's scripts set OPENBLAS_CORETYPE on AVX-512 machines; the kernel actually
        // loaded must then be a fast one, or the setting did not reach OpenBLAS.
        CHECK_FALSE(bw::detail::openblas_kernel_is_slow(openblas_get_corename(), true));
    }
}

TEST_CASE("layer names follow Keras") {
    CHECK(bw::detail::snake_case("Dense") == "dense");
    CHECK(bw::detail::snake_case("BatchNormalization") == "batch_normalization");
    CHECK(bw::detail::snake_case("ReLU") == "re_lu");
    CHECK(bw::detail::with_thousands(235146) == "235,146");
    CHECK(bw::detail::with_thousands(12) == "12");
}
