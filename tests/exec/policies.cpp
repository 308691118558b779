// The binary's policy against cpu_blas: the same network, seed and data must give the same
// forward pass, the same gradients and the same weights after training, within 1e-5 relative
// (a norm over each variable: single elements near zero carry only rounding). Compiled into the
// thrust_host and cuda test binaries, so it compares cpu_blas with the Thrust path on the host
// and on the GPU. On the host the two must agree exactly: same GEMM, same functors, same
// summation order.
#include "../gradient_check.hpp"
#include "../recording_accumulation.hpp"
#include "../temp_files.hpp"

#include <algorithm>
#include <cmath>
#include <utility>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bw = batchwise;

namespace {

#if defined(BATCHWISE_TEST_THRUST_HOST)
constexpr bool bitwise_expected = true;
#else
constexpr bool bitwise_expected = false;
#endif

void check_close(const std::vector<float>& reference, const std::vector<float>& other, const std::string& what) {
    const double d = bw_test::relative_difference(reference, other);
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
// The Dense before batch norm has no bias: that bias's gradient is zero but for rounding, which
// Adam scales up to full-size steps, so on the GPU (another summation order) it would compare
// noise with noise.
using classifier = bw::Sequential<bw::Input<12>, bw::Dense<24, bw::no_bias>, bw::BatchNorm, bw::ReLU, bw::Dropout<0.25f>,
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
struct classifier_amsgrad_static_captured {
    using net = classifier;
    using batch = bw::static_batch<16>;
    using accum = bw::no_accumulation;
    static auto optimizer() { return bw::Adam{{.learning_rate = 0.01f, .amsgrad = true}}; }
    static auto loss() { return bw::SparseCategoricalCrossentropy{}; }
    static auto metric() { return bw::metrics::accuracy; }
    static constexpr std::size_t rows = 16;  // full batches: every step replays the captured graphs
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
                   classifier_adam_dynamic, classifier_amsgrad_static_captured, classifier_sgd_static_padded,
                   regressor_rmsprop_accumulated, regressor_adamw_split) {
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
    for (std::size_t k = 0; k < w_ref.size(); ++k) check_close(as_vector(w_ref[k].value), as_vector(w_tested[k].value), w_ref[k].name);
    CHECK(reference.iterations() == tested.iterations());
    // Full static batches replay a captured step; a padded one (or a dynamic batch) is eager.
    CHECK(tested.step_captured() == (Config::batch::is_static && Config::rows == Config::batch::extent));
    CHECK(tested.step_capture_refused().empty());

    // And the trained network's inference (moving averages in batch norm).
    check_close(as_vector(reference.predict(x)), as_vector(tested.predict(x)), "trained predictions");
    const bw::logs ea = reference.evaluate(x, y);
    const bw::logs eb = tested.evaluate(x, y);
    CHECK(eb.loss == doctest::Approx(ea.loss).epsilon(1e-5));
}

// ---- captured steps ---------------------------------------------------------------------------
// Both policies of these binaries capture a full static batch's step into two graphs and replay
// them. A replayed kernel keeps the arguments it was captured with, so anything that changes
// between steps (dropout's sample position, Adam's bias-corrected step size, a scheduled learning
// rate) must be read from memory: a value frozen at capture would show here as a different
// training run.

namespace {

using captured_net = bw::Sequential<bw::Input<6>, bw::Dense<16>, bw::BatchNorm, bw::ReLU, bw::Dropout<0.3f>,
                                    bw::Dense<3>>;

bw::data::Dataset three_classes(std::size_t n) {
    xt::xtensor<float, 2> x = bw_test::random_matrix(n, 6, 11, -1.0f, 1.0f);
    xt::xtensor<float, 2> y = xt::zeros<float>({n, std::size_t{1}});
    for (std::size_t i = 0; i < n; ++i) {
        y(i, 0) = static_cast<float>(i % 3);
        x(i, i % 3) += 1.5f;  // learnable
    }
    return bw::data::Dataset(x, y);
}

/// Equal on the host (same arithmetic), within 1e-5 relative on the GPU.
bool same_value(double a, double b) {
    return bitwise_expected ? a == b : std::abs(a - b) <= 1e-5 * std::max(std::abs(a), 1e-6);
}

/// Every epoch's loss and accuracy the same (same_value) in two trainings of `epochs` epochs.
void check_same_epochs(const bw::History& a, const bw::History& b, std::size_t epochs) {
    for (std::size_t e = 0; e < epochs; ++e) {
        INFO("epoch " << e << ": loss " << a.history.at("loss")[e] << " against " << b.history.at("loss")[e]);
        CHECK(same_value(a.history.at("loss")[e], b.history.at("loss")[e]));
        CHECK(same_value(a.history.at("accuracy")[e], b.history.at("accuracy")[e]));
    }
}

/// A metric that reads the predictions back to the host, as a user's metric might: correct,
/// but nothing a captured graph can hold.
struct host_side_mean {
    static constexpr std::string_view name = "host_side_mean";
    template <bw::ExecutionPolicy Exec>
    double sum(bw::const_matrix_view pred, bw::const_matrix_view, bw::target_description, float*) const {
        std::vector<float> host(pred.size());
        Exec::to_host(pred.data, pred.size(), host.data());
        double s = 0.0;
        for (float v : host) s += v;
        return s / static_cast<double>(pred.cols);
    }
};

/// A metric with no reduction at all (a constant): the graph would read a slot nobody wrote.
struct constant_metric {
    static constexpr std::string_view name = "constant_metric";
    template <bw::ExecutionPolicy Exec>
    double sum(bw::const_matrix_view pred, bw::const_matrix_view, bw::target_description, float*) const {
        return static_cast<double>(pred.rows);
    }
};

/// A loss that reduces twice: the graph has one slot for it, so the step is not captured.
struct mse_reduced_twice {
    static constexpr std::string_view name = "mse_reduced_twice";
    [[nodiscard]] bw::target_description describe() const { return {}; }
    template <bw::ExecutionPolicy Exec>
    double sum(bw::const_matrix_view pred, bw::const_matrix_view target, float* grad, float scale,
               float* row_loss) const {
        const double s = bw::MeanSquaredError{}.sum<Exec>(pred, target, grad, scale, row_loss);
        return s + 0.0 * Exec::sum(row_loss, pred.rows);
    }
};

}  // namespace

TEST_CASE("a replayed step trains exactly as eager steps do: schedule, dropout, ragged tail") {
    using M = bw_test::Model<captured_net, bw::static_batch<8>>;
    static_assert(M::can_capture_steps);
    M captured{bw::seed{4}};
    M eager{bw::seed{4}};
    eager.set_step_capture(false);
    for (M* m : {&captured, &eager}) {
        m->compile(bw::Adam{{.learning_rate = 0.02f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}},
                   bw::metrics::accuracy);
    }
    // 60 samples: 7 full batches replayed, then a padded tail of 4 trained eagerly, each epoch.
    const auto data = three_classes(60).shuffle(60, bw::seed{2}).batch(8);
    auto schedule = [](std::uint64_t epoch, float lr) { return epoch == 0 ? lr : lr * 0.5f; };
    bw::LearningRateScheduler s1(schedule), s2(schedule);
    const bw::History a = captured.fit(data, {.epochs = 3, .verbose = 0}, s1);
    const bw::History b = eager.fit(data, {.epochs = 3, .verbose = 0}, s2);
    CHECK(captured.step_captured());
    CHECK_FALSE(eager.step_captured());
    CHECK(captured.iterations() == 24);
    check_same_epochs(a, b, 3);
    check_close(bw_test::all_weights(eager), bw_test::all_weights(captured), "weights after 3 epochs");
    // It learned: the last epoch's loss is well below the first's.
    CHECK(a.history.at("loss")[2] < 0.8 * a.history.at("loss")[0]);
}

TEST_CASE("the reduction hook runs once per optimizer step: replayed steps") {
    // The hook runs on the host between the backward graph and a graph of its own for the
    // update; the weights must be those of the fused graphs of a model without a hook.
    using recording = bw_test::recording_accumulation<bw::no_accumulation>;
    using doubling = bw_test::doubling_accumulation<bw::no_accumulation>;
    bw_test::Model<captured_net, bw::static_batch<8>> plain{bw::seed{4}};
    bw_test::Model<captured_net, bw::static_batch<8>, bw_test::exec, recording> recorded{bw::seed{4}};
    bw_test::Model<captured_net, bw::static_batch<8>, bw_test::exec, doubling> doubled{bw::seed{4}};
    static_assert(decltype(recorded)::can_capture_steps && decltype(doubled)::can_capture_steps);
    auto compile = [](auto& m) {
        m.compile(bw::Adam{{.learning_rate = 0.02f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}},
                  bw::metrics::accuracy);
    };
    compile(plain);
    compile(recorded);
    compile(doubled);
    // 60 samples: 7 full batches (the first eager, the second captured, then replayed) and a
    // padded tail of 4 trained eagerly, each epoch.
    const auto data = three_classes(60).shuffle(60, bw::seed{2}).batch(8);
    const bw::History a = plain.fit(data, {.epochs = 2, .verbose = 0});
    const bw::History b = recorded.fit(data, {.epochs = 2, .verbose = 0});
    doubled.fit(data, {.epochs = 2, .verbose = 0});
    CHECK(plain.step_captured());
    CHECK(recorded.step_captured());
    CHECK(doubled.step_captured());
    std::size_t trainable = 0;
    for (const auto& v : recorded.variables()) trainable += v.ref.trainable() ? 1 : 0;
    std::vector<bw_test::seen_window> want;
    for (std::uint64_t step = 1; step <= 16; ++step) want.push_back({step, step % 8 == 0 ? 4u : 8u, trainable, false});
    CHECK(recorded.accumulation().seen == want);
    CHECK(doubled.accumulation().calls == 16);
    CHECK(same_value(a.history.at("loss")[1], b.history.at("loss")[1]));
    check_close(bw_test::all_weights(plain), bw_test::all_weights(recorded), "weights with a recording hook");
    check_close(bw_test::all_weights(plain), bw_test::all_weights(doubled), "weights with a doubling hook");
}

TEST_CASE("a refused capture reaches the callbacks and History, the library prints nothing") {
    using net = bw::Sequential<bw::Input<6>, bw::Dense<8>, bw::Tanh, bw::Dense<2>>;
    struct refusals final : bw::Callback {
        std::vector<bw::step_capture_refusal> seen;
        void on_step_capture_refused(bw::training_context&, const bw::step_capture_refusal& r) override {
            seen.push_back(r);
        }
    } log;
    bw_test::Model<net, bw::static_batch<8>> m{bw::seed{9}};
    m.compile(bw::RMSprop{}, bw::MeanSquaredError{}, host_side_mean{});
    const bw::data::Dataset data(bw_test::random_matrix(32, 6, 3), bw_test::random_matrix(32, 2, 4));
    const bw::History h = m.fit(data.batch(8), {.epochs = 2, .verbose = 0}, log);
    CHECK(m.iterations() == 8);
    REQUIRE(h.capture_refusals.size() == 1);  // refused once; compile() would try again
    CHECK(h.capture_refusals[0].epoch == 0);
    CHECK(h.capture_refusals[0].optimizer_step == 2);  // the first step is the eager warm-up
    CHECK(h.capture_refusals[0].reason == m.step_capture_refused());
    CHECK(m.step_capture_refused().find("a read of device memory on the host") != std::string::npos);
    REQUIRE(log.seen.size() == 1);
    CHECK(log.seen[0].reason == h.capture_refusals[0].reason);
}

TEST_CASE("a step that cannot be captured trains eagerly and says why") {
    using net = bw::Sequential<bw::Input<6>, bw::Dense<8>, bw::Tanh, bw::Dense<2>>;
    const auto x = bw_test::random_matrix(8, 6, 3);
    const auto y = bw_test::random_matrix(8, 2, 4);
    bw_test::Model<net, bw::static_batch<8>> reference{bw::seed{9}};
    reference.set_step_capture(false);
    reference.compile(bw::RMSprop{}, bw::MeanSquaredError{});

    SUBCASE("a metric that reads back to the host") {
        bw_test::Model<net, bw::static_batch<8>> m{bw::seed{9}};
        m.compile(bw::RMSprop{}, bw::MeanSquaredError{}, host_side_mean{});
        for (int i = 0; i < 3; ++i) {
            const bw::logs got = m.train_on_batch(x, y);
            const bw::logs want = reference.train_on_batch(x, y);
            CHECK(same_value(got.loss, want.loss));
        }
        CHECK_FALSE(m.step_captured());
        CHECK(m.step_capture_refused().find("a read of device memory on the host") != std::string::npos);
        check_close(bw_test::all_weights(reference), bw_test::all_weights(m), "weights");
        // compile() tries again: without that metric the step is captured (at the second step).
        m.compile(bw::RMSprop{}, bw::MeanSquaredError{});
        m.train_on_batch(x, y);
        m.train_on_batch(x, y);
        CHECK(m.step_captured());
        CHECK(m.step_capture_refused().empty());
    }
    SUBCASE("a metric that does not reduce") {
        bw_test::Model<net, bw::static_batch<8>> m{bw::seed{9}};
        m.compile(bw::RMSprop{}, bw::MeanSquaredError{}, constant_metric{});
        for (int i = 0; i < 2; ++i) {
            const bw::logs got = m.train_on_batch(x, y);
            const bw::logs want = reference.train_on_batch(x, y);
            CHECK(same_value(got.loss, want.loss));
            CHECK(got.values[0] == 1.0f);
        }
        CHECK_FALSE(m.step_captured());
        CHECK(m.step_capture_refused().find("reduced 1 times, not one each") != std::string::npos);
    }
    SUBCASE("a loss that reduces twice") {
        bw_test::Model<net, bw::static_batch<8>> m{bw::seed{9}};
        m.compile(bw::RMSprop{}, mse_reduced_twice{});
        for (int i = 0; i < 3; ++i) {
            const bw::logs got = m.train_on_batch(x, y);
            const bw::logs want = reference.train_on_batch(x, y);
            CHECK(same_value(got.loss, want.loss));
        }
        CHECK_FALSE(m.step_captured());
        INFO("refused: " << m.step_capture_refused());
        CHECK(m.step_capture_refused().find("more reductions than one each") != std::string::npos);
        check_close(bw_test::all_weights(reference), bw_test::all_weights(m), "weights");
    }
}

TEST_CASE("a replayed step with a non-finite loss applies nothing") {
    using net = bw::Sequential<bw::Input<3>, bw::Dense<2>>;
    bw_test::Model<net, bw::static_batch<4>> m{bw::seed{1}};
    m.compile(bw::Adam{}, bw::MeanSquaredError{});
    const auto x = bw_test::random_matrix(4, 3, 1);
    const auto y = bw_test::random_matrix(4, 2, 2);
    m.train_on_batch(x, y);  // eager: capture waits for the second step
    CHECK_FALSE(m.step_captured());
    m.train_on_batch(x, y);
    REQUIRE(m.step_captured());
    const std::vector<float> before = bw_test::all_weights(m);
    const xt::xtensor<float, 2> huge = xt::ones<float>({4, 2}) * 3e38f;
    CHECK_THROWS_WITH_AS(m.train_on_batch(x, huge), doctest::Contains("the loss is not finite"), bw::numeric_error);
    CHECK(bw_test::all_weights(m) == before);
    CHECK(m.iterations() == 2);
    // The graphs stay valid: the next good batch trains.
    m.train_on_batch(x, y);
    CHECK(m.iterations() == 3);
    CHECK(bw_test::all_weights(m) != before);
}

namespace {

/// 64 samples of three classes (8 batches of 8) with one-hot targets for a squared error; with
/// `poison`, the targets of samples 40 to 47 (the sixth batch, optimizer step 6) are so large that
/// their squared error overflows: finite data, which the host's check passes, and a non-finite
/// loss, which only the device sees.
std::pair<xt::xtensor<float, 2>, xt::xtensor<float, 2>> eight_batches(bool poison, std::size_t rows = 64) {
    xt::xtensor<float, 2> x = bw_test::random_matrix(rows, 6, 11, -1.0f, 1.0f);
    xt::xtensor<float, 2> y = xt::zeros<float>({rows, std::size_t{3}});
    for (std::size_t i = 0; i < rows; ++i) {
        y(i, i % 3) = 1.0f;
        x(i, i % 3) += 1.5f;
        if (poison && i >= 40 && i < 48) y(i, 0) = 3e38f;
    }
    return {x, y};
}

template <class M>
void compile_for_faults(M& m) {
    m.compile(bw::Adam{{.learning_rate = 0.02f}}, bw::MeanSquaredError{}, bw::metrics::mae);
}

}  // namespace

TEST_CASE("fit reads replayed steps late: a non-finite step and the step queued after it change nothing") {
    // fit queues each replayed step and reads its results two steps later, so the bad step 6 is
    // found when step 8 is about to reuse its buffers, with step 7 already queued behind it: the
    // device's sticky flag must have halted both, and the host must undo its counters for both.
    using M = bw_test::Model<captured_net, bw::static_batch<8>>;
    M faulted{bw::seed{4}};
    M reference{bw::seed{4}};
    compile_for_faults(faulted);
    compile_for_faults(reference);
    const auto [x, y] = eight_batches(true);
    const auto [x_good, y_good] = eight_batches(false, 40);
    reference.fit(bw::data::Dataset(x_good, y_good).batch(8), {.epochs = 1, .verbose = 0});
    REQUIRE(reference.iterations() == 5);
    std::string message;
    try {
        faulted.fit(bw::data::Dataset(x, y).batch(8), {.epochs = 1, .verbose = 0});
    } catch (const bw::numeric_error& e) {
        message = e.what();
    }
    INFO(message);
    CHECK(faulted.step_captured());
    CHECK(message.find("fit: the loss is not finite") != std::string::npos);
    CHECK(message.find("at optimizer step 6 (samples 40 to 47 of epoch 0, found when one more step had been "
                       "queued, which changed nothing either); no update was applied") != std::string::npos);
    CHECK(faulted.iterations() == 5);
    // Weights, batch norm's moving averages: those after step 5.
    check_close(bw_test::all_weights(reference), bw_test::all_weights(faulted), "weights after the fault");
    // Adam's moments, its step count and the sample position too: both models train on alike.
    const xt::xtensor<float, 2> xb = xt::view(x, xt::range(0, 8), xt::all());
    const xt::xtensor<float, 2> yb = xt::view(y, xt::range(0, 8), xt::all());
    for (int i = 0; i < 3; ++i) {
        const bw::logs a = faulted.train_on_batch(xb, yb);
        const bw::logs b = reference.train_on_batch(xb, yb);
        CHECK(same_value(a.loss, b.loss));
    }
    CHECK(faulted.iterations() == 8);
    check_close(bw_test::all_weights(reference), bw_test::all_weights(faulted), "weights after training on");
}

TEST_CASE("a handled non-finite step found late: the epoch's logs and the checkpoint's position are of the steps applied") {
    using M = bw_test::Model<captured_net, bw::static_batch<8>>;
    struct skip_non_finite final : bw::Callback {
        std::size_t seen = 0;
        bool on_non_finite_loss(bw::training_context&, const bw::numeric_error&) override {
            ++seen;
            return true;
        }
    } handler;
    M faulted{bw::seed{4}};
    M reference{bw::seed{4}};
    compile_for_faults(faulted);
    compile_for_faults(reference);
    const auto [x, y] = eight_batches(true);
    const auto [x_good, y_good] = eight_batches(false, 40);
    const bw::History a = faulted.fit(bw::data::Dataset(x, y).batch(8), {.epochs = 1, .verbose = 0}, handler);
    const bw::History b = reference.fit(bw::data::Dataset(x_good, y_good).batch(8), {.epochs = 1, .verbose = 0});
    CHECK(handler.seen == 1);
    CHECK(faulted.iterations() == 5);
    // The epoch's loss and mean absolute error are the means over the 40 samples of the applied steps, read
    // late or not.
    CHECK(same_value(a.history.at("loss")[0], b.history.at("loss")[0]));
    CHECK(same_value(a.history.at("mae")[0], b.history.at("mae")[0]));
    check_close(bw_test::all_weights(reference), bw_test::all_weights(faulted), "weights");
    // A checkpoint resumes at the bad batch (the sixth), not after the two steps that were undone.
    const bw_test::temp_path file("late_fault", ".npz");
    faulted.save_checkpoint(file.path());
    const auto saved = bw::data::read_npz(file.path());
    const auto position =
        std::find_if(saved.begin(), saved.end(), [](const auto& entry) { return entry.first == "training/position"; });
    REQUIRE(position != saved.end());
    REQUIRE(position->second.integers.size() >= 3);
    CHECK(position->second.integers[1] == 5);   // step
    CHECK(position->second.integers[2] == 40);  // sample
}

TEST_CASE("train_on_batch with late results: the same training, logs as steps are read, a fault raised when read") {
    using M = bw_test::Model<captured_net, bw::static_batch<8>>;
    const auto batch = [](const xt::xtensor<float, 2>& a, std::size_t s) {
        return xt::xtensor<float, 2>(xt::view(a, xt::range(8 * s, 8 * s + 8), xt::all()));
    };
    M late{bw::seed{4}};
    M now{bw::seed{4}};
    compile_for_faults(late);
    compile_for_faults(now);
    late.set_late_results(true);
    const auto [x, y] = eight_batches(false);
    double late_sum = 0.0;
    double now_sum = 0.0;
    std::size_t late_samples = 0;
    for (std::size_t s = 0; s < 8; ++s) {
        const bw::logs a = late.train_on_batch(batch(x, s), batch(y, s));
        const bw::logs b = now.train_on_batch(batch(x, s), batch(y, s));
        CHECK(b.samples == 8);
        late_sum += static_cast<double>(a.loss) * static_cast<double>(a.samples);
        late_samples += a.samples;
        now_sum += static_cast<double>(b.loss) * 8.0;
    }
    CHECK(late.step_captured());
    CHECK(late_samples < 64);  // the last steps are still queued
    const bw::logs rest = late.read_results();
    late_sum += static_cast<double>(rest.loss) * static_cast<double>(rest.samples);
    CHECK(late_samples + rest.samples == 64);
    CHECK(late.read_results().samples == 0);
    CHECK(std::abs(late_sum - now_sum) <= 1e-6 * std::abs(now_sum));
    check_close(bw_test::all_weights(now), bw_test::all_weights(late), "weights");

    M faulted{bw::seed{4}};
    compile_for_faults(faulted);
    faulted.set_late_results(true);
    const auto [px, py] = eight_batches(true);
    std::string message;
    std::size_t returned = 0;
    try {
        for (std::size_t s = 0; s < 8; ++s) {
            faulted.train_on_batch(batch(px, s), batch(py, s));
            ++returned;
        }
        faulted.read_results();
    } catch (const bw::numeric_error& e) {
        message = e.what();
    }
    INFO(message);
    CHECK(returned == 7);  // step 6 is read when step 8 is about to reuse its buffers
    CHECK(message.find("train_on_batch: the loss is not finite") != std::string::npos);
    CHECK(message.find("at optimizer step 6 (samples 40 to 47 of epoch 0, found when one more step") != std::string::npos);
    CHECK(faulted.iterations() == 5);
    M reference{bw::seed{4}};
    compile_for_faults(reference);
    for (std::size_t s = 0; s < 5; ++s) reference.train_on_batch(batch(x, s), batch(y, s));
    check_close(bw_test::all_weights(reference), bw_test::all_weights(faulted), "weights after the fault");
}

TEST_CASE("fit with data_on_device trains exactly as from host memory: shuffle, ragged tail, dropout, batch norm") {
    using M = bw_test::Model<captured_net, bw::static_batch<8>>;
    M resident{bw::seed{4}};
    M host{bw::seed{4}};
    for (M* m : {&resident, &host}) {
        m->compile(bw::Adam{{.learning_rate = 0.02f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}},
                   bw::metrics::accuracy);
    }
    // 60 samples reshuffled every epoch: 7 full batches gathered on the device from their
    // indices (the first step of the first epoch eagerly, on the host), then a padded tail of 4
    // gathered on the host and trained eagerly.
    const auto data = three_classes(60).shuffle(60, bw::seed{2}).batch(8);
    const bw::History a = resident.fit(data, {.epochs = 3, .verbose = 0, .data_on_device = true});
    const bw::History b = host.fit(data, {.epochs = 3, .verbose = 0});
    CHECK(resident.step_captured());
    CHECK(resident.iterations() == 24);
    check_same_epochs(a, b, 3);
    check_close(bw_test::all_weights(host), bw_test::all_weights(resident), "weights after 3 epochs");
    // A second fit copies the arrays again and captures the gathering graphs anew.
    resident.fit(data, {.epochs = 4, .initial_epoch = 3, .verbose = 0, .data_on_device = true});
    host.fit(data, {.epochs = 4, .initial_epoch = 3, .verbose = 0});
    check_close(bw_test::all_weights(host), bw_test::all_weights(resident), "weights after a second fit");
}

TEST_CASE("fit with data_on_device: weighted samples train as from host memory, map() and mixed arrays are refused") {
    using M = bw_test::Model<captured_net, bw::static_batch<8>>;
    const xt::xtensor<float, 2> x = bw_test::random_matrix(24, 6, 11, -1.0f, 1.0f);
    xt::xtensor<float, 1> y = xt::zeros<float>({std::size_t{24}});
    xt::xtensor<float, 1> w = xt::ones<float>({std::size_t{24}});
    for (std::size_t i = 0; i < 24; ++i) {
        y(i) = static_cast<float>(i % 3);
        w(i) = 0.5f + static_cast<float>(i % 4);
    }
    M resident{bw::seed{6}};
    M host{bw::seed{6}};
    for (M* m : {&resident, &host}) m->compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    const auto weighted = bw::data::Dataset(x, y, w).batch(8);
    resident.fit(weighted, {.epochs = 2, .verbose = 0, .data_on_device = true});
    host.fit(weighted, {.epochs = 2, .verbose = 0});
    check_close(bw_test::all_weights(host), bw_test::all_weights(resident), "weights with sample weights");

    const auto plain = bw::data::Dataset(x, y);
    const auto mapped = plain.map([](std::span<float> f, std::span<float>) { f[0] *= 2.0f; }).batch(8);
    CHECK_THROWS_WITH_AS(resident.fit(mapped, {.verbose = 0, .data_on_device = true}),
                         doctest::Contains("a dataset with map() cannot be read by sample index"), bw::usage_error);
    const auto mapped_batches = plain.batch(8).map([](std::span<float> f, std::span<float>) { f[0] *= 2.0f; });
    CHECK_THROWS_WITH_AS(resident.fit(mapped_batches, {.verbose = 0, .data_on_device = true}),
                         doctest::Contains("a dataset with map() cannot be read by sample index"), bw::usage_error);
    const auto mixed = plain.take(20).concatenate(bw::data::Dataset(x, y).take(4)).batch(8);
    CHECK_THROWS_WITH_AS(resident.fit(mixed, {.verbose = 0, .data_on_device = true}),
                         doctest::Contains("a batch mixes samples of two sets of arrays"), bw::usage_error);
}

TEST_CASE("uint8 images on a device: kept there (data_on_device) or sent as bytes per step, converted there as on the host") {
    using M = bw_test::Model<captured_net, bw::static_batch<8>>;
    const std::size_t n = 60;
    xt::xtensor<std::uint8_t, 2> images = xt::zeros<std::uint8_t>({n, std::size_t{6}});
    xt::xtensor<float, 2> divided = xt::zeros<float>({n, std::size_t{6}});
    xt::xtensor<int, 1> labels = xt::zeros<int>({n});
    for (std::size_t i = 0; i < n; ++i) {
        labels(i) = static_cast<int>(i % 3);
        for (std::size_t j = 0; j < 6; ++j) {
            const auto b = static_cast<std::uint8_t>(j == i % 3 ? 200 + i % 56 : (i * 37 + j * 11) % 120);
            images(i, j) = b;
            divided(i, j) = static_cast<float>(b) / 255.0f;
        }
    }
    M resident{bw::seed{4}};
    M host{bw::seed{4}};
    M streamed{bw::seed{4}};
    for (M* m : {&resident, &host, &streamed}) {
        m->compile(bw::Adam{{.learning_rate = 0.02f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}},
                   bw::metrics::accuracy);
    }
    // Full batches gathered from device bytes, the first step and the padded tail of 4 from the
    // host's bytes; the reference reads floats divided on the host.
    const auto bytes = bw::data::Dataset::of_bytes(images, labels, 255.0f).shuffle(n, bw::seed{2}).batch(8);
    const auto floats = bw::data::Dataset(divided, labels).shuffle(n, bw::seed{2}).batch(8);
    const bw::History a = resident.fit(bytes, {.epochs = 3, .verbose = 0, .data_on_device = true});
    const bw::History b = host.fit(floats, {.epochs = 3, .verbose = 0});
    CHECK(resident.step_captured());
    check_same_epochs(a, b, 3);
    check_close(bw_test::all_weights(host), bw_test::all_weights(resident), "weights after 3 epochs");
    // From host memory: a replayed step's rows cross as bytes and its graph converts them; the
    // other steps gather floats on the host. The same training again.
    const bw::History c = streamed.fit(bytes, {.epochs = 3, .verbose = 0});
    CHECK(streamed.step_captured());
    check_same_epochs(c, b, 3);
    check_close(bw_test::all_weights(host), bw_test::all_weights(streamed), "weights from bytes sent per step");
    // A bad label is found on the host before its bytes are sent, and named.
    xt::xtensor<int, 1> bad = labels;
    bad(45) = 7;
    M refused{bw::seed{4}};
    refused.compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    try {
        refused.fit(bw::data::Dataset::of_bytes(images, bad, 255.0f).batch(8), {.epochs = 1, .verbose = 0});
        FAIL("a label of 7 for 3 classes must be refused");
    } catch (const bw::data_error& e) {
        INFO(e.what());
        CHECK(e.sample() == 45);
        CHECK(refused.iterations() == 5);  // the batches before it trained
    }
}

TEST_CASE("a loaded checkpoint's seed reaches the replayed dropout masks") {
    using M = bw_test::Model<captured_net, bw::static_batch<8>>;
    const auto x = bw_test::random_matrix(8, 6, 21);
    xt::xtensor<float, 1> y = {0, 1, 2, 0, 1, 2, 0, 1};
    M source{bw::seed{1}};
    M target{bw::seed{2}};
    for (M* m : {&source, &target}) {
        m->compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
        for (int i = 0; i < 3; ++i) m->train_on_batch(x, y);
        REQUIRE(m->step_captured());
    }
    const bw_test::temp_path file("captured_checkpoint", ".npz");
    source.save_checkpoint(file.path());
    target.load_checkpoint(file.path());
    // Both continue from the same state with seed 1: the same masks, the same weights.
    for (int i = 0; i < 4; ++i) {
        source.train_on_batch(x, y);
        target.train_on_batch(x, y);
    }
    CHECK(target.step_captured());
    check_close(bw_test::all_weights(source), bw_test::all_weights(target), "weights after resuming");
}

TEST_CASE("plain SGD replayed: its own pass instead of the fold into the GEMM, the same update") {
    using M = bw_test::Model<captured_net, bw::static_batch<8>>;
    M captured{bw::seed{3}};
    M eager{bw::seed{3}};
    eager.set_step_capture(false);
    const auto x = bw_test::random_matrix(8, 6, 22);
    xt::xtensor<float, 1> y = {2, 1, 0, 0, 1, 2, 2, 1};
    for (M* m : {&captured, &eager}) {
        m->compile(bw::SGD{{.learning_rate = 0.05f, .weight_decay = 0.01f}},
                   bw::SparseCategoricalCrossentropy{{.from_logits = true}});
        for (int i = 0; i < 8; ++i) m->train_on_batch(x, y);
    }
    CHECK(captured.step_captured());
    const std::vector<float> a = bw_test::all_weights(eager);
    const std::vector<float> b = bw_test::all_weights(captured);
    INFO("relative difference " << bw_test::relative_difference(a, b));
    CHECK(bw_test::relative_difference(a, b) <= 1e-5);
}

#if defined(BATCHWISE_TEST_THRUST_HOST)
namespace {

// gpu-mlp's layer kinds (benchmarks/gpu_mlp.cu) at a size the sanitizer build runs quickly: the
// number of kernels a step launches does not depend on the widths.
using mlp_net = bw::Sequential<bw::Input<20>, bw::Dense<16>, bw::ReLU, bw::Dense<16>, bw::ReLU, bw::Dense<4>>;

template <class Optimizer>
std::uint64_t nodes_per_replayed_step(const Optimizer& optimizer) {
    bw_test::Model<mlp_net, bw::static_batch<8>> model{bw::seed{7}};
    model.compile(optimizer, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    const auto x = bw_test::random_matrix(8, 20, 31);
    xt::xtensor<float, 1> y = {0, 1, 2, 3, 3, 2, 1, 0};
    for (int i = 0; i < 3; ++i) model.train_on_batch(x, y);
    REQUIRE(model.step_captured());
    const std::uint64_t before = bw_test::exec::launched_graph_nodes();
    model.train_on_batch(x, y);
    return bw_test::exec::launched_graph_nodes() - before;
}

template <class Optimizer>
void check_mlp_trains_as_cpu_blas(const Optimizer& optimizer) {
    bw::Model<mlp_net, bw::static_batch<8>, bw::cpu_blas> reference{bw::seed{9}};
    bw_test::Model<mlp_net, bw::static_batch<8>> tested{bw::seed{9}};
    reference.compile(optimizer, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    tested.compile(optimizer, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    xt::xtensor<float, 1> y = {3, 1, 2, 0, 0, 2, 1, 3};
    for (int i = 0; i < 6; ++i) {
        const auto x = bw_test::random_matrix(8, 20, 40 + static_cast<std::uint64_t>(i), -2.0f, 2.0f);
        const bw::logs a = reference.train_on_batch(x, y);
        const bw::logs b = tested.train_on_batch(x, y);
        CHECK(a.loss == b.loss);
    }
    CHECK(tested.step_captured());
    CHECK(bw_test::all_weights(reference) == bw_test::all_weights(tested));
    check_close(as_vector(reference.predict(bw_test::random_matrix(5, 20, 50))),
                as_vector(tested.predict(bw_test::random_matrix(5, 20, 50))), "predictions after training");
}

}  // namespace

// Per step: the scalars' copy 1, forward 3 (one fused call per Dense, its ReLU included),
// loss 1 (the rows and their sum), input check 1, guard 1, backward 5 (per Dense the weight and
// bias gradients in one call, and the input gradient but for the first, through the ReLU before
// it), update 1 (one pass over all six variables, optimizers/multi_tensor.hpp), results' copy 1.
// Before the fusions it was 30: forward 8 (bias copy and GEMM per Dense, a pass per ReLU), loss
// 2, backward 10 (the bias gradients apart, a pass per ReLU), update 6 (a pass per variable).
TEST_CASE("a replayed step of gpu-mlp's network launches a pinned number of kernels") {
    CHECK(nodes_per_replayed_step(bw::SGD{{.learning_rate = 0.05f}}) == 14);
    CHECK(nodes_per_replayed_step(bw::Adam{}) == 14);
}

TEST_CASE("a replayed update of more variables than one launch takes is split over launches, bit for bit") {
    // 20 Dense layers, 40 variables: Adam's functors go 32 to a launch (the parameter block holds
    // more), so the update is two passes, the second over 8 variables.
    using deep = bw::Sequential<bw::Input<3>, bw::Dense<3>, bw::Dense<3>, bw::Dense<3>, bw::Dense<3>, bw::Dense<3>,
                                bw::Dense<3>, bw::Dense<3>, bw::Dense<3>, bw::Dense<3>, bw::Dense<3>, bw::Dense<3>,
                                bw::Dense<3>, bw::Dense<3>, bw::Dense<3>, bw::Dense<3>, bw::Dense<3>, bw::Dense<3>,
                                bw::Dense<3>, bw::Dense<3>, bw::Dense<2>>;
    static_assert(bw::detail::multi_tensor_width<bw::detail::adam_update<false, bw::scalars_in_memory>> == 32);
    bw::Model<deep, bw::static_batch<4>, bw::cpu_blas> reference{bw::seed{3}};
    bw_test::Model<deep, bw::static_batch<4>> tested{bw::seed{3}};
    reference.compile(bw::Adam{{.learning_rate = 0.01f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    tested.compile(bw::Adam{{.learning_rate = 0.01f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    xt::xtensor<float, 1> y = {0, 1, 1, 0};
    std::uint64_t nodes = 0;
    for (int i = 0; i < 5; ++i) {
        const auto x = bw_test::random_matrix(4, 3, 60 + static_cast<std::uint64_t>(i));
        const std::uint64_t before = bw_test::exec::launched_graph_nodes();
        CHECK(reference.train_on_batch(x, y).loss == tested.train_on_batch(x, y).loss);
        nodes = bw_test::exec::launched_graph_nodes() - before;
    }
    CHECK(tested.step_captured());
    CHECK(bw_test::all_weights(reference) == bw_test::all_weights(tested));
    // scalars 1, forward 20, loss 1, input check 1, guard 1, backward 39 (20 weight and bias
    // gradients, 19 input gradients), update 2, results 1.
    CHECK(nodes == 66);
}

// SGD with momentum: plain SGD is folded into the weight-gradient GEMM on cpu_blas (an eager
// step), not in a replayed one, and the two round differently with some OpenBLAS kernels.
TEST_CASE("gpu-mlp's network trains on thrust_host bit for bit as on cpu_blas") {
    check_mlp_trains_as_cpu_blas(bw::SGD{{.learning_rate = 0.05f, .momentum = 0.9f}});
    check_mlp_trains_as_cpu_blas(bw::Adam{{.learning_rate = 0.01f}});
}
#endif

// The fused Dense paths gpu-mlp does not take: a ReLU after a Dense without bias (no bias in the
// epilogue), a Dense without an activation after it, and micro-batches that accumulate (the
// bias gradient then takes its own call, since an epilogue's would overwrite).
TEST_CASE("Dense + ReLU without bias, and accumulated micro-batches, train as on cpu_blas") {
    using net = bw::Sequential<bw::Input<7>, bw::Dense<9, bw::no_bias>, bw::ReLU, bw::Dense<6>, bw::ReLU, bw::Dense<3>>;
    bw::Model<net, bw::dynamic_batch, bw::cpu_blas, bw::accumulate<3>> reference{bw::seed{12}};
    bw_test::Model<net, bw::dynamic_batch, bw_test::exec, bw::accumulate<3>> tested{bw::seed{12}};
    reference.compile(bw::Adam{{.learning_rate = 0.01f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    tested.compile(bw::Adam{{.learning_rate = 0.01f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    for (std::uint64_t i = 0; i < 6; ++i) {
        const auto x = bw_test::random_matrix(11, 7, 60 + i, -2.0f, 2.0f);
        const xt::xtensor<float, 2> y = xt::floor(bw_test::random_matrix(11, 1, 70 + i, 0.0f, 2.999f));
        reference.train_on_batch(x, y);
        tested.train_on_batch(x, y);
    }
    check_close(bw_test::all_weights(reference), bw_test::all_weights(tested), "weights after accumulated steps");
    const auto x = bw_test::random_matrix(4, 7, 80);
    check_close(as_vector(reference.predict(x)), as_vector(tested.predict(x)), "predictions");
}
