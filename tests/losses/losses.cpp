// Every loss, with and without from_logits: values against Keras's documented examples and
// independent double-precision formulas, gradients by finite differences, and stability for
// extreme scores.
#include "../gradient_check.hpp"

#include <type_traits>
#include <vector>

namespace bw = batchwise;

namespace {

template <class Loss>
double loss_mean(const Loss& loss, const xt::xtensor<float, 2>& pred,
                 const xt::xtensor<float, 2>& target, xt::xtensor<float, 2>* grad = nullptr) {
    // In the policy's memory, as a model would hand them over.
    bw_test::device_array rows(pred.shape()[0]);
    bw_test::device_array p_dev(std::vector<float>(pred.begin(), pred.end()));
    bw_test::device_array t_dev(std::vector<float>(target.begin(), target.end()));
    bw_test::device_array g_dev(grad ? grad->size() : 0);
    const bw::const_matrix_view p{p_dev.data(), pred.shape()[0], pred.shape()[1]};
    const bw::const_matrix_view t{t_dev.data(), target.shape()[0], target.shape()[1]};
    const float scale = 1.0f / static_cast<float>(pred.shape()[0]);
    const double sum = loss.template sum<bw_test::exec>(p, t, grad ? g_dev.data() : nullptr, scale, rows.data());
    if (grad) {
        const std::vector<float> g = g_dev.host();
        std::copy(g.begin(), g.end(), grad->begin());
    }
    return sum / static_cast<double>(pred.shape()[0]);
}

/// d(mean loss)/d(pred) by central differences in double, against the loss's own gradient.
template <class Loss>
void check_loss_gradient(const Loss& loss, xt::xtensor<float, 2> pred,
                         const xt::xtensor<float, 2>& target, float step = 1e-3f) {
    xt::xtensor<float, 2> grad = xt::zeros<float>(pred.shape());
    loss_mean(loss, pred, target, &grad);
    for (std::size_t i = 0; i < pred.size(); ++i) {
        const float saved = pred.data()[i];
        pred.data()[i] = saved + step;
        const double up = loss_mean(loss, pred, target);
        pred.data()[i] = saved - step;
        const double down = loss_mean(loss, pred, target);
        pred.data()[i] = saved;
        const double numeric = (up - down) / (2.0 * step);
        INFO(Loss::name << " element " << i << ": analytic " << grad.data()[i] << ", numeric "
                        << numeric);
        CHECK(grad.data()[i] == doctest::Approx(numeric).epsilon(2e-2).scale(1e-2));
    }
}

}  // namespace

TEST_CASE("MeanSquaredError: Keras's example and gradient") {
    const xt::xtensor<float, 2> y = {{0, 1}, {0, 0}};
    const xt::xtensor<float, 2> p = {{1, 1}, {1, 0}};
    CHECK(loss_mean(bw::MeanSquaredError{}, p, y) == doctest::Approx(0.5));
    check_loss_gradient(bw::MeanSquaredError{}, bw_test::random_matrix(5, 3, 1),
                        bw_test::random_matrix(5, 3, 2));
}

TEST_CASE("BinaryCrossentropy: probabilities and logits") {
    const xt::xtensor<float, 2> y = {{0, 1}, {0, 0}};
    const xt::xtensor<float, 2> p = {{0.6f, 0.4f}, {0.4f, 0.6f}};
    CHECK(loss_mean(bw::BinaryCrossentropy{}, p, y) == doctest::Approx(0.81492).epsilon(1e-4));
    // The same predictions given as logits must give the same loss.
    const xt::xtensor<float, 2> logits = xt::log(p / (1.0f - p));
    CHECK(loss_mean(bw::BinaryCrossentropy{{.from_logits = true}}, logits, y) ==
          doctest::Approx(0.81492).epsilon(1e-4));

    const auto targets = bw_test::random_matrix(6, 2, 3, 0.0f, 1.0f);
    check_loss_gradient(bw::BinaryCrossentropy{}, bw_test::random_matrix(6, 2, 4, 0.05f, 0.95f),
                        targets);
    check_loss_gradient(bw::BinaryCrossentropy{{.from_logits = true}},
                        bw_test::random_matrix(6, 2, 5, -4.0f, 4.0f), targets);
}

TEST_CASE("CategoricalCrossentropy: probabilities (renormalised like Keras) and logits") {
    const xt::xtensor<float, 2> y = {{0, 1, 0}, {0, 0, 1}};
    const xt::xtensor<float, 2> p = {{0.05f, 0.95f, 0.0f}, {0.1f, 0.8f, 0.1f}};
    CHECK(loss_mean(bw::CategoricalCrossentropy{}, p, y) == doctest::Approx(1.1769).epsilon(1e-3));
    const xt::xtensor<float, 2> z = {{1.0f, 2.0f, 0.5f}, {-1.0f, 0.0f, 3.0f}};
    // Reference in double: logsumexp(z) - z[true].
    const double ref = ((std::log(std::exp(1.0) + std::exp(2.0) + std::exp(0.5)) - 2.0) +
                        (std::log(std::exp(-1.0) + std::exp(0.0) + std::exp(3.0)) - 3.0)) /
                       2.0;
    CHECK(loss_mean(bw::CategoricalCrossentropy{{.from_logits = true}}, z, y) ==
          doctest::Approx(ref).epsilon(1e-6));

    xt::xtensor<float, 2> soft = bw_test::random_matrix(5, 4, 6, 0.1f, 1.0f);
    soft /= xt::view(xt::sum(soft, {1}), xt::all(), xt::newaxis());
    check_loss_gradient(bw::CategoricalCrossentropy{{.from_logits = true}},
                        bw_test::random_matrix(5, 4, 7, -3.0f, 3.0f), soft);
    check_loss_gradient(bw::CategoricalCrossentropy{},
                        bw_test::random_matrix(5, 4, 8, 0.1f, 0.9f), soft);
}

TEST_CASE("SparseCategoricalCrossentropy equals the one-hot categorical loss") {
    const xt::xtensor<float, 2> labels = {{1}, {2}};
    const xt::xtensor<float, 2> one_hot = {{0, 1, 0}, {0, 0, 1}};
    const xt::xtensor<float, 2> p = {{0.05f, 0.95f, 0.0f}, {0.1f, 0.8f, 0.1f}};
    CHECK(loss_mean(bw::SparseCategoricalCrossentropy{}, p, labels) ==
          doctest::Approx(1.1769).epsilon(1e-3));
    const auto z = bw_test::random_matrix(2, 3, 9, -2.0f, 2.0f);
    CHECK(loss_mean(bw::SparseCategoricalCrossentropy{{.from_logits = true}}, z, labels) ==
          doctest::Approx(loss_mean(bw::CategoricalCrossentropy{{.from_logits = true}}, z,
                                    one_hot)));
    const xt::xtensor<float, 2> many = {{0}, {3}, {1}, {2}, {3}};
    check_loss_gradient(bw::SparseCategoricalCrossentropy{{.from_logits = true}},
                        bw_test::random_matrix(5, 4, 10, -3.0f, 3.0f), many);
    check_loss_gradient(bw::SparseCategoricalCrossentropy{},
                        bw_test::random_matrix(5, 4, 11, 0.1f, 0.9f), many);
}

TEST_CASE("losses from logits stay finite and exact for extreme scores") {
    const xt::xtensor<float, 2> z = {{1000.0f, -1000.0f, 0.0f}};
    const xt::xtensor<float, 2> label = {{1}};
    xt::xtensor<float, 2> grad = xt::zeros<float>({1, 3});
    const double l = loss_mean(bw::SparseCategoricalCrossentropy{{.from_logits = true}}, z, label, &grad);
    CHECK(l == doctest::Approx(2000.0));
    CHECK(std::isfinite(grad(0, 0)));
    CHECK(grad(0, 0) == doctest::Approx(1.0));
    CHECK(grad(0, 1) == doctest::Approx(-1.0));

    const xt::xtensor<float, 2> b = {{200.0f, -200.0f}};
    const xt::xtensor<float, 2> t = {{0.0f, 1.0f}};
    const double bl = loss_mean(bw::BinaryCrossentropy{{.from_logits = true}}, b, t);
    CHECK(bl == doctest::Approx(200.0));
}

namespace {
/// Gradient check of every loss through a model, under one batch policy.
template <class Batch>
void check_losses_through_model() {
    using Net = bw::Sequential<bw::Input<4>, bw::Dense<3>>;
    using Probabilities = bw::Sequential<bw::Input<4>, bw::Dense<3>, bw::Softmax>;
    using Yes_no = bw::Sequential<bw::Input<4>, bw::Dense<3>, bw::Sigmoid>;
    const auto x = bw_test::random_matrix(6, 4, 12);
    const xt::xtensor<float, 2> labels = {{0}, {2}, {1}, {1}, {0}, {2}};
    xt::xtensor<float, 2> one_hot = xt::zeros<float>({6, 3});
    for (std::size_t i = 0; i < 6; ++i) one_hot(i, static_cast<std::size_t>(labels(i, 0))) = 1.0f;
    auto check = [&](auto net_tag, auto loss, const auto& y) {
        bw_test::Model<typename decltype(net_tag)::type, Batch> m{bw::seed{1}};
        m.compile(bw::SGD{}, loss);
        INFO(decltype(loss)::name);
        bw_test::check_parameter_gradients(m, x, y);
    };
    check(std::type_identity<Net>{}, bw::MeanSquaredError{}, one_hot);
    check(std::type_identity<Net>{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}}, labels);
    check(std::type_identity<Net>{}, bw::CategoricalCrossentropy{{.from_logits = true}}, one_hot);
    check(std::type_identity<Net>{}, bw::BinaryCrossentropy{{.from_logits = true}}, one_hot);
    check(std::type_identity<Probabilities>{}, bw::SparseCategoricalCrossentropy{}, labels);
    check(std::type_identity<Probabilities>{}, bw::CategoricalCrossentropy{}, one_hot);
    check(std::type_identity<Yes_no>{}, bw::BinaryCrossentropy{}, one_hot);
}
}  // namespace

TEST_CASE("every loss back-propagates through a model, static and dynamic batch") {
    check_losses_through_model<bw::static_batch<6>>();
    check_losses_through_model<bw::dynamic_batch>();
}
