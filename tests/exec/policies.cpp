// The binary's policy against cpu_blas: the same network, seed and data must give the same
// forward pass, the same gradients and the same weights after training, within 1e-5 relative
// (a norm over each variable: single elements near zero carry only rounding). Compiled into the
// thrust_host and cuda test binaries, so it compares cpu_blas with the Thrust path on the host
// and on the GPU. On the host the two must agree exactly: same GEMM, same functors, same
// summation order.
#include "../gradient_check.hpp"

#include <cmath>
#include <string>
#include <vector>

namespace bw = batchwise;

namespace {

#if defined(BATCHWISE_TEST_THRUST_HOST)
constexpr bool bitwise_expected = true;
#else
constexpr bool bitwise_expected = false;
#endif

/// ||a - b|| / ||a||, with ||a|| floored so that all-zero vectors compare absolutely.
double relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
    REQUIRE(a.size() == b.size());
    double diff = 0.0;
    double norm = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        diff += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
        norm += static_cast<double>(a[i]) * a[i];
    }
    return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-6);
}

void check_close(const std::vector<float>& reference, const std::vector<float>& other, const std::string& what) {
    const double d = relative_difference(reference, other);
    INFO(what << ": relative difference " << d);
    CHECK(d <= 1e-5);
    if (bitwise_expected) CHECK(reference == other);
}

template <class M>
std::vector<std::vector<float>> gradients(const M& model) {
    std::vector<std::vector<float>> out;
    for (const auto& v : model.variables()) {
        // The reference reads host memory; the policy under test copies back.
        std::vector<float> g(v.ref.size());
        using exec = typename M::execution_policy;
        if (v.ref.grad != nullptr) exec::to_host(v.ref.grad, v.ref.size(), g.data());
        out.push_back(std::move(g));
    }
    return out;
}

std::vector<float> as_vector(const auto& tensor) { return {tensor.begin(), tensor.end()}; }

// Every layer kind, every loss kind and every optimizer appear in one of the configurations.
using classifier = bw::Sequential<bw::Input<12>, bw::Dense<24>, bw::BatchNorm, bw::ReLU, bw::Dropout<0.25f>,
                                  bw::Dense<16>, bw::Tanh, bw::Dense<5>, bw::Softmax>;
using regressor = bw::Sequential<bw::Input<3, 4>, bw::Flatten, bw::Dense<20>, bw::Sigmoid,
                                 bw::BatchNormalization<0.9f, 1e-3f, 4>,
                                 bw::Dense<2>>;

struct classifier_adam_dynamic {
    using net = classifier;
    using batch = bw::dynamic_batch;
    using accum = bw::no_accumulation;
    static auto optimizer() { return bw::Adam{{.learning_rate = 0.01f}}; }
    static auto loss() { return bw::SparseCategoricalCrossentropy{}; }
    static auto metric() { return bw::metrics::accuracy; }
    static constexpr std::size_t rows = 37;
    static constexpr bool sparse = true;
};
struct classifier_sgd_static_padded {
    using net = classifier;
    using batch = bw::static_batch<16>;
    using accum = bw::no_accumulation;
    static auto optimizer() { return bw::SGD{{.learning_rate = 0.05f, .momentum = 0.9f, .nesterov = true}}; }
    static auto loss() { return bw::SparseCategoricalCrossentropy{}; }
    static auto metric() { return bw::metrics::accuracy; }
    static constexpr std::size_t rows = 13;  // a ragged batch: 3 padded rows
    static constexpr bool sparse = true;
};
struct regressor_rmsprop_accumulated {
    using net = regressor;
    using batch = bw::dynamic_batch;
    using accum = bw::accumulate<3, bw::compensated_float>;
    static auto optimizer() { return bw::RMSprop{{.learning_rate = 0.005f}}; }
    static auto loss() { return bw::MeanSquaredError{}; }
    static auto metric() { return bw::metrics::mae; }
    static constexpr std::size_t rows = 24;
    static constexpr bool sparse = false;
};
struct regressor_adamw_split {
    using net = regressor;
    using batch = bw::dynamic_batch;
    using accum = bw::accumulate_to<40>;
    static auto optimizer() { return bw::AdamW{{.learning_rate = 0.01f}}; }
    static auto loss() { return bw::MeanSquaredError{}; }
    static auto metric() { return bw::metrics::mae; }
    static constexpr std::size_t rows = 28;  // windows of 40 split batches at 12 + 16
    static constexpr bool sparse = false;
};

}  // namespace

TEST_CASE_TEMPLATE("the test policy computes what cpu_blas computes: forward, gradients, training", Config,
                   classifier_adam_dynamic, classifier_sgd_static_padded, regressor_rmsprop_accumulated,
                   regressor_adamw_split) {
    using net = typename Config::net;
    bw::Model<net, typename Config::batch, bw::cpu_blas, typename Config::accum> reference{bw::seed{17}};
    bw_test::Model<net, typename Config::batch, bw_test::exec, typename Config::accum> tested{bw::seed{17}};
    reference.compile(Config::optimizer(), Config::loss(), Config::metric());
    tested.compile(Config::optimizer(), Config::loss(), Config::metric());
    INFO("policy " << bw_test::exec::name);

    constexpr std::size_t n = Config::rows;
    constexpr std::size_t in = net::input_shape::size;
    constexpr std::size_t out = net::output_shape::size;
    xt::xtensor<float, 2> x2 = bw_test::random_matrix(n, in, 5, -2.0f, 2.0f);
    std::array<std::size_t, net::input_shape::rank + 1> shape{n};
    for (std::size_t d = 0; d < net::input_shape::rank; ++d) shape[d + 1] = net::input_shape::dims[d];
    xt::xtensor<float, net::input_shape::rank + 1> x = xt::empty<float>(shape);
    std::copy(x2.begin(), x2.end(), x.begin());
    xt::xtensor<float, 2> y = Config::sparse ? xt::xtensor<float, 2>(xt::floor(bw_test::random_matrix(n, 1, 6, 0.0f, 4.999f)))
                                             : bw_test::random_matrix(n, out, 6);

    // Inference before any training: the forward pass alone.
    check_close(as_vector(reference.predict(x)), as_vector(tested.predict(x)), "initial predictions");

    // Gradients of one pass, with dropout and batch-norm statistics in training mode.
    reference.set_position(0, 0);
    tested.set_position(0, 0);
    const float loss_ref = reference.loss_and_gradients(x, y);
    const float loss_tested = tested.loss_and_gradients(x, y);
    CHECK(loss_tested == doctest::Approx(loss_ref).epsilon(1e-5));
    const auto g_ref = gradients(reference);
    const auto g_tested = gradients(tested);
    for (std::size_t k = 0; k < g_ref.size(); ++k) check_close(g_ref[k], g_tested[k], reference.variables()[k].name + " gradient");

    // N training steps: optimizer state, accumulation windows, moving averages, dropout masks.
    for (int step = 0; step < 6; ++step) {
        const bw::logs a = reference.train_on_batch(x, y);
        const bw::logs b = tested.train_on_batch(x, y);
        INFO("step " << step);
        CHECK(b.loss == doctest::Approx(a.loss).epsilon(1e-5));
        CHECK(b.values[0] == doctest::Approx(a.values[0]).epsilon(1e-5));
    }
    const auto w_ref = reference.get_weights();
    const auto w_tested = tested.get_weights();
    REQUIRE(w_ref.size() == w_tested.size());
    for (std::size_t k = 0; k < w_ref.size(); ++k) check_close(as_vector(w_ref[k].second), as_vector(w_tested[k].second), w_ref[k].first);
    CHECK(reference.iterations() == tested.iterations());

    // And the trained network's inference (moving averages in batch norm).
    check_close(as_vector(reference.predict(x)), as_vector(tested.predict(x)), "trained predictions");
    const bw::logs ea = reference.evaluate(x, y);
    const bw::logs eb = tested.evaluate(x, y);
    CHECK(eb.loss == doctest::Approx(ea.loss).epsilon(1e-5));
}
