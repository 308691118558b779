// Optimizers: each update rule against an independent double-precision reference of Keras's
// formula over several steps, and every optimizer training small nets to a stated loss with a
// static and with a dynamic batch; PyTorch's conventions against trajectories PyTorch computed.
#include "../gradient_check.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace bw = batchwise;

namespace {

constexpr std::size_t n = 5;
using vec = std::array<double, n>;

/// Gradient of step t (1-based) for element i: varied in sign and size so that every branch of
/// every rule is exercised.
double grad_at(std::size_t t, std::size_t i) {
    return std::sin(1.3 * static_cast<double>(t) + 0.7 * static_cast<double>(i)) *
           (1.0 + 0.5 * static_cast<double>(i));
}

/// Runs `steps` updates of `opt` through its public apply on the test policy and compares with
/// `reference(w, t, g)`, which updates w in double.
template <class Opt>
void check_against_reference(const Opt& opt, std::size_t steps,
                             const std::function<void(vec&, std::size_t, const vec&)>& reference) {
    std::vector<float> w(n), g(n);
    vec w_ref{};
    for (std::size_t i = 0; i < n; ++i) w[i] = static_cast<float>(w_ref[i] = 0.5 - 0.3 * i);
    // Weights, gradients and slots in the policy's memory, as a model holds them.
    bw_test::device_array w_dev(w);
    bw_test::device_array g_dev(n);
    std::vector<bw_test::device_array> slots;
    for (std::size_t k = 0; k < opt.slot_count(); ++k) slots.emplace_back(n);
    std::vector<float*> slot_ptrs;
    for (auto& s : slots) slot_ptrs.push_back(s.data());
    for (std::size_t t = 1; t <= steps; ++t) {
        vec g_ref{};
        // Gradients arrive as sums; grad_scale turns them into the mean: pass twice the gradient
        // with a scale of one half.
        for (std::size_t i = 0; i < n; ++i) g[i] = 2.0f * static_cast<float>(g_ref[i] = grad_at(t, i));
        bw_test::exec::from_host(g.data(), n, g_dev.data());
        opt.template apply<bw_test::exec>(bw::variable_ref{"w", w_dev.data(), g_dev.data(), n, 0},
                                          slot_ptrs.data(), t, opt.learning_rate(), 0.5f);
        reference(w_ref, t, g_ref);
    }
    w = w_dev.host();
    for (std::size_t i = 0; i < n; ++i) {
        INFO(Opt::name << " element " << i);
        CHECK(w[i] == doctest::Approx(w_ref[i]).epsilon(1e-5).scale(1.0));
    }
}

}  // namespace

TEST_CASE("optimizer defaults are Keras's") {
    CHECK(bw::SGD{}.options.learning_rate == 0.01f);
    CHECK(bw::SGD{}.options.momentum == 0.0f);
    CHECK(bw::Adam{}.options.learning_rate == 0.001f);
    CHECK(bw::Adam{}.options.beta_1 == 0.9f);
    CHECK(bw::Adam{}.options.beta_2 == 0.999f);
    CHECK(bw::Adam{}.options.epsilon == 1e-7f);
    CHECK(bw::AdamW{}.options.weight_decay == 0.004f);
    CHECK(bw::RMSprop{}.options.learning_rate == 0.001f);
    CHECK(bw::RMSprop{}.options.rho == 0.9f);
}

TEST_CASE("SGD update rules: plain, momentum, Nesterov, weight decay") {
    check_against_reference(bw::SGD{{.learning_rate = 0.1f}}, 6, [](vec& w, std::size_t, const vec& g) {
        for (std::size_t i = 0; i < n; ++i) w[i] -= 0.1 * g[i];
    });
    for (bool nesterov : {false, true}) {
        vec velocity{};
        check_against_reference(
            bw::SGD{{.learning_rate = 0.05f, .momentum = 0.9f, .nesterov = nesterov, .weight_decay = 0.01f}},
            6, [&](vec& w, std::size_t, const vec& g) {
                for (std::size_t i = 0; i < n; ++i) {
                    w[i] -= 0.05 * 0.01 * w[i];
                    velocity[i] = 0.9 * velocity[i] - 0.05 * g[i];
                    w[i] += nesterov ? 0.9 * velocity[i] - 0.05 * g[i] : velocity[i];
                }
            });
    }
}

TEST_CASE("Adam, AMSGrad and AdamW update rules") {
    auto adam_reference = [](double lr, double decay, bool amsgrad) {
        return [=, m = vec{}, v = vec{}, v_max = vec{}](vec& w, std::size_t t, const vec& g) mutable {
            const double b1 = 0.9, b2 = 0.999, eps = 1e-7;
            for (std::size_t i = 0; i < n; ++i) {
                w[i] -= lr * decay * w[i];
                m[i] = b1 * m[i] + (1 - b1) * g[i];
                v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
                v_max[i] = std::max(v_max[i], v[i]);
                const double m_hat = m[i] / (1 - std::pow(b1, double(t)));
                const double denom = std::sqrt(amsgrad ? v_max[i] : v[i]);
                // Keras folds the bias correction into the step: epsilon is scaled with it.
                w[i] -= lr * m_hat / (denom / std::sqrt(1 - std::pow(b2, double(t))) +
                                      eps / std::sqrt(1 - std::pow(b2, double(t))));
            }
        };
    };
    check_against_reference(bw::Adam{{.learning_rate = 0.01f}}, 8, adam_reference(0.01, 0.0, false));
    check_against_reference(bw::Adam{{.learning_rate = 0.01f, .amsgrad = true}}, 8,
                            adam_reference(0.01, 0.0, true));
    check_against_reference(bw::AdamW{{.learning_rate = 0.01f, .weight_decay = 0.1f}}, 8,
                            adam_reference(0.01, 0.1, false));
    check_against_reference(bw::AdamW{}, 8, adam_reference(0.001, 0.004, false));
}

TEST_CASE("RMSprop update rules: plain, centred, with momentum") {
    for (bool centered : {false, true}) {
        for (float momentum : {0.0f, 0.5f}) {
            vec velocity{}, average{}, moment{};
            check_against_reference(
                bw::RMSprop{{.learning_rate = 0.01f, .momentum = momentum, .centered = centered}}, 7,
                [&](vec& w, std::size_t, const vec& g) {
                    for (std::size_t i = 0; i < n; ++i) {
                        velocity[i] = 0.9 * velocity[i] + 0.1 * g[i] * g[i];
                        double denominator = velocity[i];
                        if (centered) {
                            average[i] = 0.9 * average[i] + 0.1 * g[i];
                            denominator -= average[i] * average[i];
                        }
                        const double increment = 0.01 * g[i] / std::sqrt(denominator + 1e-7);
                        if (momentum != 0.0f) {
                            moment[i] = momentum * moment[i] + increment;
                            w[i] -= moment[i];
                        } else {
                            w[i] -= increment;
                        }
                    }
                });
        }
    }
}

TEST_CASE("the optimizer step count advances once per train_on_batch and resets on compile") {
    using Net = bw::Sequential<bw::Input<2>, bw::Dense<1>>;
    bw_test::Model<Net> m;
    m.compile(bw::Adam{}, bw::MeanSquaredError{});
    const xt::xtensor<float, 2> x = {{1, 2}, {3, 4}};
    const xt::xtensor<float, 2> y = {{1}, {2}};
    for (int i = 0; i < 3; ++i) m.train_on_batch(x, y);
    CHECK(m.iterations() == 3);
    m.compile(bw::Adam{}, bw::MeanSquaredError{});
    CHECK(m.iterations() == 0);
    CHECK(m.learning_rate() == 0.001f);
}

// ---- Learnable tasks, every optimizer, both batch policies -------------------------------

namespace {

constexpr std::size_t task_rows = 64;

/// y = 3 x0 - 2 x1 + 0.5 x2 + 0.25, learned by a single Dense.
struct linear_regression {
    using net = bw::Sequential<bw::Input<3>, bw::Dense<1>>;
    static constexpr float target_loss = 1e-3f;
    static auto loss() { return bw::MeanSquaredError{}; }
    static std::pair<xt::xtensor<float, 2>, xt::xtensor<float, 2>> data() {
        auto x = bw_test::random_matrix(task_rows, 3, 21);
        xt::xtensor<float, 2> y = xt::zeros<float>({task_rows, std::size_t{1}});
        for (std::size_t i = 0; i < task_rows; ++i) {
            y(i, 0) = 3 * x(i, 0) - 2 * x(i, 1) + 0.5f * x(i, 2) + 0.25f;
        }
        return {x, y};
    }
};

/// XOR of the signs of two inputs: not linearly separable, needs the hidden layer.
struct xor_task {
    using net = bw::Sequential<bw::Input<2>, bw::Dense<16>, bw::Tanh, bw::Dense<1>>;
    static constexpr float target_loss = 0.05f;
    static auto loss() { return bw::BinaryCrossentropy{{.from_logits = true}}; }
    static std::pair<xt::xtensor<float, 2>, xt::xtensor<float, 2>> data() {
        xt::xtensor<float, 2> x = xt::zeros<float>({task_rows, std::size_t{2}});
        xt::xtensor<float, 2> y = xt::zeros<float>({task_rows, std::size_t{1}});
        for (std::size_t i = 0; i < task_rows; ++i) {
            const bool a = i & 1, b = (i >> 1) & 1;
            x(i, 0) = a ? 1.0f : -1.0f;
            x(i, 1) = b ? 1.0f : -1.0f;
            y(i, 0) = a != b ? 1.0f : 0.0f;
        }
        return {x, y};
    }
};

/// Two Gaussian-like blobs in 4-d, one per class, classified with softmax over 2 classes.
struct separable_task {
    using net = bw::Sequential<bw::Input<4>, bw::Dense<8>, bw::ReLU, bw::Dense<2>>;
    static constexpr float target_loss = 0.05f;
    static auto loss() { return bw::SparseCategoricalCrossentropy{{.from_logits = true}}; }
    static std::pair<xt::xtensor<float, 2>, xt::xtensor<float, 2>> data() {
        auto x = bw_test::random_matrix(task_rows, 4, 22, -0.5f, 0.5f);
        xt::xtensor<float, 2> y = xt::zeros<float>({task_rows, std::size_t{1}});
        for (std::size_t i = 0; i < task_rows; ++i) {
            const float side = i % 2 ? 1.5f : -1.5f;
            for (std::size_t j = 0; j < 4; ++j) x(i, j) += side;
            y(i, 0) = i % 2 ? 1.0f : 0.0f;
        }
        return {x, y};
    }
};

template <class Task, class Batch, class Opt>
float train_task(const Opt& opt, int steps) {
    bw_test::Model<typename Task::net, Batch> model{bw::seed{7}};
    model.compile(opt, Task::loss());
    const auto [x, y] = Task::data();
    for (int s = 0; s < steps; ++s) model.train_on_batch(x, y);
    return model.evaluate(x, y).loss;
}

template <class Task>
void learn_with_every_optimizer(int steps, float sgd_lr) {
    const auto check = [&](const auto& opt, const char* name) {
        const float static_loss = train_task<Task, bw::static_batch<task_rows>>(opt, steps);
        const float dynamic_loss = train_task<Task, bw::dynamic_batch>(opt, steps);
        INFO(name << ": static-batch loss " << static_loss << ", dynamic-batch loss "
                  << dynamic_loss << ", target " << Task::target_loss);
        CHECK(static_loss < Task::target_loss);
        CHECK(dynamic_loss < Task::target_loss);
        // The batch policy changes where buffers live, never the arithmetic.
        CHECK(static_loss == dynamic_loss);
    };
    check(bw::SGD{{.learning_rate = sgd_lr}}, "SGD");
    check(bw::SGD{{.learning_rate = sgd_lr, .momentum = 0.9f, .nesterov = true}}, "SGD+Nesterov");
    check(bw::Adam{{.learning_rate = 0.02f}}, "Adam");
    check(bw::AdamW{{.learning_rate = 0.02f, .weight_decay = 1e-4f}}, "AdamW");
    check(bw::RMSprop{{.learning_rate = 0.01f}}, "RMSprop");
}

}  // namespace

TEST_CASE("every optimizer learns a linear regression to MSE < 1e-3") {
    learn_with_every_optimizer<linear_regression>(600, 0.1f);
}

TEST_CASE("every optimizer learns XOR to cross-entropy < 0.05") {
    learn_with_every_optimizer<xor_task>(600, 0.5f);
}

TEST_CASE("every optimizer separates two classes to cross-entropy < 0.05") {
    learn_with_every_optimizer<separable_task>(300, 0.1f);
}

namespace {
const bw::data::npz_array& trajectory(const std::string& name) {
    static const std::vector<std::pair<std::string, bw::data::npz_array>> arrays =
        bw::data::read_npz(std::string(BATCHWISE_TEST_SOURCE_DIR) + "/optimizers/pytorch_trajectory.npz");
    for (const auto& [n, a] : arrays) {
        if (n == name) return a;
    }
    FAIL("pytorch_trajectory.npz has no array " << name);
    throw std::logic_error("unreachable");
}

/// Trains the fixture's network under `c` for its 8 steps and returns the largest difference
/// from PyTorch's variables after any step, relative to the variable's largest value.
template <class Optimizer>
double pytorch_trajectory_error(const std::string& kind, Optimizer opt, bw::conventions c) {
    using Net = bw::Sequential<bw::Input<6>, bw::Dense<8, bw::no_bias>, bw::BatchNormalization<0.9, 1e-3>, bw::ReLU,
                               bw::Dense<3>>;
    bw_test::Model<Net> m{bw::seed{1}};
    m.compile(opt, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    m.set_conventions(c);
    std::vector<bw::named_weight> init = m.get_weights();
    for (auto& w : init) {
        const auto& a = trajectory("init/" + w.name);
        REQUIRE(a.values.size() == w.value.size());
        std::copy(a.values.begin(), a.values.end(), w.value.begin());
    }
    m.set_weights(init);
    const auto& x = trajectory("x");
    const auto& y = trajectory("y");
    const auto& lr = trajectory("lr_sgd");
    double worst = 0.0;
    for (std::size_t step = 0; step < 8; ++step) {
        xt::xtensor<float, 2> xs = xt::zeros<float>({std::size_t{16}, std::size_t{6}});
        xt::xtensor<int, 1> ys = xt::zeros<int>({std::size_t{16}});
        for (std::size_t i = 0; i < 16; ++i) {
            for (std::size_t j = 0; j < 6; ++j) xs(i, j) = x.values[(step * 16 + i) * 6 + j];
            ys(i) = static_cast<int>(y.integers[step * 16 + i]);
        }
        if (kind == "sgd") m.set_learning_rate(lr.values[step]);
        (void)m.train_on_batch(xs, ys);
        for (const auto& w : m.get_weights()) {
            const auto& expected = trajectory(kind + "/" + std::to_string(step + 1) + "/" + w.name);
            double diff = 0.0, scale = 1e-3;
            for (std::size_t i = 0; i < w.value.size(); ++i) {
                diff = std::max(diff, std::fabs(double(w.value.flat(i)) - expected.values[i]));
                scale = std::max(scale, std::fabs(double(expected.values[i])));
            }
            worst = std::max(worst, diff / scale);
        }
    }
    return worst;
}
}  // namespace

TEST_CASE("conventions::pytorch reproduces PyTorch's Adam + BatchNorm and SGD-momentum trajectories") {
    // tests/optimizers/pytorch_trajectory.npz, made by make_pytorch_trajectory.py with PyTorch.
    const bw::Adam adam{{.learning_rate = 0.01f, .beta_1 = 0.9f, .beta_2 = 0.999f, .epsilon = 0.1f}};
    const bw::SGD sgd{{.learning_rate = 0.2f, .momentum = 0.9f}};
    const double adam_error = pytorch_trajectory_error("adam", adam, bw::conventions::pytorch);
    const double sgd_error = pytorch_trajectory_error("sgd", sgd, bw::conventions::pytorch);
    MESSAGE("largest relative difference from PyTorch: Adam + BatchNorm " << adam_error << ", SGD " << sgd_error);
    CHECK(adam_error <= 1e-5);
    CHECK(sgd_error <= 1e-5);
    // Keras's conventions are another trajectory: the fixture tells them apart.
    CHECK(pytorch_trajectory_error("adam", adam, bw::conventions::keras) > 1e-3);
    CHECK(pytorch_trajectory_error("sgd", sgd, bw::conventions::keras) > 1e-3);
}
