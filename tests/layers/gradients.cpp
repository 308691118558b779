// A finite-difference gradient check for every layer, over both batch policies. Each layer is
// placed after a Dense, so that the Dense's kernel gradient checks the layer's input gradient
// too, and before a Dense feeding a mean-squared-error loss.
#include "../gradient_check.hpp"

namespace bw = batchwise;

namespace {

constexpr std::size_t rows = 6;

template <class LayerUnderTest>
using probe_net = bw::Sequential<bw::Input<5>, bw::Dense<4>, LayerUnderTest, bw::Dense<3>>;

template <class Net, class Batch>
void check_net(std::uint64_t s, float step = 1e-2f, double tolerance = 2e-2) {
    bw_test::check_network_gradients<Net, Batch>(s, rows, step, tolerance);
}

/// Runs the same check under static_batch<rows> and dynamic_batch.
template <class LayerUnderTest>
void check_layer(std::uint64_t s, float step = 1e-2f, double tolerance = 2e-2) {
    {
        INFO("static_batch");
        check_net<probe_net<LayerUnderTest>, bw::static_batch<rows>>(s, step, tolerance);
    }
    {
        INFO("dynamic_batch");
        check_net<probe_net<LayerUnderTest>, bw::dynamic_batch>(s, step, tolerance);
    }
}
template <class Net>
void check_both(std::uint64_t s, float step = 1e-2f, double tolerance = 2e-2) {
    check_net<Net, bw::static_batch<rows>>(s, step, tolerance);
    check_net<Net, bw::dynamic_batch>(s, step, tolerance);
}

}  // namespace

TEST_CASE("gradient: Dense (with and without bias, each initializer)") {
    check_layer<bw::Dense<6>>(1);
    check_layer<bw::Dense<6, bw::no_bias, bw::he_uniform>>(2);
    check_layer<bw::Dense<6, bw::he_normal>>(3);
}

TEST_CASE("gradient: ReLU") {
    // A small step keeps the probes off ReLU's kink.
    check_layer<bw::ReLU>(4, 1e-3f, 3e-2);
}

TEST_CASE("gradient: Sigmoid") {
    check_layer<bw::Sigmoid>(5);
}

TEST_CASE("gradient: Tanh") {
    check_layer<bw::Tanh>(6);
}

TEST_CASE("gradient: Softmax") {
    check_layer<bw::Softmax>(7);
}

// Rates are written as Keras users write them, double or float, and mean the same float.
static_assert(bw::Dropout<0.2>::rate == 0.2f && bw::Dropout<0.2f>::rate == 0.2f);
static_assert(std::is_same_v<bw::Dropout<0.2>, bw::Dropout<0.2>> && bw::SpatialDropout2D<0.1>::rate == 0.1f);
static_assert(bw::BatchNormalization<0.9, 1e-5>::epsilon == 1e-5f && bw::BatchNormalization<0.9, 1e-5>::momentum == 0.9f);

TEST_CASE("gradient: Normalization (the input gradient through the scaling)") {
    check_layer<bw::Normalization>(16);
}

TEST_CASE("gradient: Dropout (masks fixed by seed, epoch and sample)") {
    check_layer<bw::Dropout<0.3>>(8);
}

TEST_CASE("gradient: BatchNormalization in training mode") {
    check_layer<bw::BatchNorm>(9);
    check_layer<bw::BatchNormalization<0.9f, 1e-5f>>(10);
}

TEST_CASE("gradient: LayerNormalization and GroupNormalization on flat features") {
    check_layer<bw::LayerNormalization<>>(14, 1e-3f);
    check_layer<bw::GroupNormalization<2>>(15, 1e-3f);
}

TEST_CASE("gradient: Flatten and Reshape pass gradients through") {
    check_both<bw::Sequential<bw::Input<2, 3>, bw::Flatten, bw::Dense<4>, bw::Reshape<2, 2>,
                             bw::Flatten, bw::Tanh, bw::Dense<3>>>(11);
}

TEST_CASE("gradient: a deep mixed network") {
    check_both<bw::Sequential<bw::Input<5>, bw::Dense<8>, bw::BatchNorm, bw::ReLU,
                             bw::Dropout<0.2f>, bw::Dense<6>, bw::Sigmoid, bw::Dense<4>,
                             bw::Softmax>>(12, 1e-3f, 3e-2);
}

TEST_CASE("BatchNorm: training uses batch statistics, inference the moving averages") {
    using Net = bw::Sequential<bw::Input<2>, bw::BatchNormalization<0.5f, 1e-3f>>;
    bw_test::Model<Net> model;
    model.compile(bw::SGD{{.learning_rate = 0.0f}}, bw::MeanSquaredError{});
    xt::xtensor<float, 2> x = {{1.0f, 10.0f}, {3.0f, 30.0f}};
    xt::xtensor<float, 2> y = xt::zeros<float>({2, 2});
    // Training output is normalised per feature: (x - mean) / sqrt(var + eps).
    model.train_on_batch(x, y);
    const auto w = model.get_weights();  // gamma, beta, moving_mean, moving_variance
    REQUIRE(w.size() == 4);
    CHECK(w[2].name == "batch_normalization/moving_mean");
    // moving = 0.5 * initial + 0.5 * batch: mean (2, 20), biased variance (1, 100).
    CHECK(w[2].value.flat(0) == doctest::Approx(1.0f));
    CHECK(w[2].value.flat(1) == doctest::Approx(10.0f));
    CHECK(w[3].value.flat(0) == doctest::Approx(1.0f));
    CHECK(w[3].value.flat(1) == doctest::Approx(50.5f));
    const auto p = model.predict(x);
    CHECK(p(0, 0) == doctest::Approx((1.0f - 1.0f) / std::sqrt(1.0f + 1e-3f)));
    CHECK(p(1, 1) == doctest::Approx((30.0f - 10.0f) / std::sqrt(50.5f + 1e-3f)));
}

TEST_CASE("Dropout: inference is the identity, training keeps about 1 - rate scaled up") {
    using Net = bw::Sequential<bw::Input<1000>, bw::Dropout<0.25f>>;
    bw_test::Model<Net> model{bw::seed{5}};
    model.compile(bw::SGD{}, bw::MeanSquaredError{});
    const xt::xtensor<float, 2> x = xt::ones<float>({4, 1000});
    CHECK(model.predict(x) == x);
    // Training forward through the public API: the loss against zeros is the mean of y^2.
    const xt::xtensor<float, 2> zeros = xt::zeros<float>({4, 1000});
    const float loss = model.loss_and_gradients(x, zeros);
    // Kept units are 1 / 0.75, so mean(y^2) = keep_fraction / 0.5625.
    const float keep_fraction = loss * 0.5625f;
    CHECK(keep_fraction == doctest::Approx(0.75f).epsilon(0.03));
}

TEST_CASE("activations run in place only over memory nobody reads again") {
    using net = bw::Sequential<bw::Input<5>, bw::ReLU, bw::Dense<4>, bw::Sigmoid, bw::ReLU, bw::Flatten, bw::Tanh,
                               bw::Dense<3>>;
    using impl = net::network<bw_test::exec>;
    static_assert(!impl::runs_in_place<0>(), "the first layer's input is the caller's batch");
    static_assert(impl::runs_in_place<2>(), "a Dense's output is scratch");
    static_assert(!impl::runs_in_place<3>(), "Sigmoid's backward reads its own output");
    static_assert(!impl::runs_in_place<5>(), "Flatten's output is its input");
    // An activation written over the Sigmoid's output would corrupt the Sigmoid's derivative:
    // the finite differences catch it.
    check_both<net>(13, 1e-3f, 3e-2);

    // The caller's batch is read in place (cpu_blas), so a leading activation must not write it.
    bw_test::Model<bw::Sequential<bw::Input<5>, bw::Tanh, bw::Dense<3>>> model{bw::seed{14}};
    model.compile(bw::SGD{}, bw::MeanSquaredError{});
    const auto x = bw_test::random_matrix(rows, 5, 15);
    const auto y = bw_test::random_matrix(rows, 3, 16);
    const xt::xtensor<float, 2> x_before = x;
    const xt::xtensor<float, 2> y_before = y;
    model.train_on_batch(x, y);
    model.predict(x);
    CHECK(x == x_before);
    CHECK(y == y_before);
}
