// Model behaviour: varying batch sizes against an independent reference, static against
// dynamic batch, determinism, split-invariant dropout, predict/evaluate, weights on disk,
// summary, and every error path with its type and message.
#include "../gradient_check.hpp"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <vector>

namespace bw = batchwise;

namespace {

std::filesystem::path temp_file(const std::string& name) {
    return std::filesystem::temp_directory_path() /
           ("batchwise_model_test_" + std::to_string(::getpid()) + "_" + name);
}

/// Plain double-precision MLP (Dense, ReLU, Dense, MSE, SGD) written from the textbook
/// formulas, independent of the library's code paths.
struct reference_mlp {
    std::size_t in, hidden, out;
    std::vector<double> w1, b1, w2, b2;

    void step(const xt::xtensor<float, 2>& x, const xt::xtensor<float, 2>& y, double lr) {
        const std::size_t n = x.shape()[0];
        std::vector<double> h(n * hidden), a(n * hidden), p(n * out), dp(n * out), da(n * hidden);
        for (std::size_t r = 0; r < n; ++r) {
            for (std::size_t j = 0; j < hidden; ++j) {
                double s = b1[j];
                for (std::size_t i = 0; i < in; ++i) s += x(r, i) * w1[i * hidden + j];
                h[r * hidden + j] = s;
                a[r * hidden + j] = s > 0 ? s : 0;
            }
            for (std::size_t k = 0; k < out; ++k) {
                double s = b2[k];
                for (std::size_t j = 0; j < hidden; ++j) s += a[r * hidden + j] * w2[j * out + k];
                p[r * out + k] = s;
                dp[r * out + k] = 2.0 * (s - y(r, k)) / static_cast<double>(out * n);
            }
        }
        std::vector<double> gw1(w1.size()), gb1(b1.size()), gw2(w2.size()), gb2(b2.size());
        for (std::size_t r = 0; r < n; ++r) {
            for (std::size_t k = 0; k < out; ++k) {
                gb2[k] += dp[r * out + k];
                for (std::size_t j = 0; j < hidden; ++j) {
                    gw2[j * out + k] += a[r * hidden + j] * dp[r * out + k];
                    da[r * hidden + j] += w2[j * out + k] * dp[r * out + k];
                }
            }
            for (std::size_t j = 0; j < hidden; ++j) {
                const double dh = h[r * hidden + j] > 0 ? da[r * hidden + j] : 0.0;
                gb1[j] += dh;
                for (std::size_t i = 0; i < in; ++i) gw1[i * hidden + j] += x(r, i) * dh;
            }
        }
        auto apply = [lr](std::vector<double>& w, const std::vector<double>& g) {
            for (std::size_t i = 0; i < w.size(); ++i) w[i] -= lr * g[i];
        };
        apply(w1, gw1), apply(b1, gb1), apply(w2, gw2), apply(b2, gb2);
    }
};

using small_net = bw::Sequential<bw::Input<4>, bw::Dense<6>, bw::ReLU, bw::Dense<3>>;

}  // namespace

TEST_CASE("varying batch sizes step to step match an independent reference") {
    bw_test::Model<small_net> model{bw::seed{11}};
    model.compile(bw::SGD{{.learning_rate = 0.1f}}, bw::MeanSquaredError{});
    const auto w = model.get_weights();
    auto to_double = [](const xt::xarray<float>& v) { return std::vector<double>(v.begin(), v.end()); };
    reference_mlp ref{4, 6, 3, to_double(w[0].value), to_double(w[1].value),
                      to_double(w[2].value), to_double(w[3].value)};
    std::uint64_t s = 100;
    for (std::size_t n : {1, 7, 128, 3, 32, 1, 64, 5}) {
        const auto x = bw_test::random_matrix(n, 4, ++s);
        const auto y = bw_test::random_matrix(n, 3, ++s);
        model.train_on_batch(x, y);
        ref.step(x, y, 0.1);
        const auto got = model.get_weights();
        const std::vector<const std::vector<double>*> expected{&ref.w1, &ref.b1, &ref.w2, &ref.b2};
        for (std::size_t v = 0; v < 4; ++v) {
            for (std::size_t i = 0; i < got[v].value.size(); ++i) {
                INFO("batch " << n << ", " << got[v].name << "[" << i << "]");
                REQUIRE(got[v].value.flat(i) == doctest::Approx((*expected[v])[i]).epsilon(1e-4).scale(1e-3));
            }
        }
    }
    CHECK(model.capacity() == 128);
    CHECK(model.iterations() == 8);
}

TEST_CASE("static and dynamic batch give bit-identical training") {
    using Net = bw::Sequential<bw::Input<2, 3>, bw::Flatten, bw::Dense<8>, bw::BatchNorm,
                               bw::Tanh, bw::Dropout<0.25f>, bw::Dense<2>>;
    bw_test::Model<Net, bw::static_batch<4>> fixed{bw::seed{5}};
    bw_test::Model<Net, bw::dynamic_batch> dynamic{bw::seed{5}};
    fixed.compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}}, bw::metrics::accuracy);
    dynamic.compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}}, bw::metrics::accuracy);
    static_assert(std::is_same_v<decltype(fixed)::input_batch, xt::xtensor_fixed<float, xt::xshape<4, 2, 3>>>);
    static_assert(std::is_same_v<decltype(dynamic)::input_batch, xt::xtensor<float, 3>>);
    for (int step = 0; step < 10; ++step) {
        decltype(fixed)::input_batch xf;
        xt::xtensor<float, 3> xd = xt::empty<float>({4, 2, 3});
        const auto r = bw_test::random_matrix(4, 6, static_cast<std::uint64_t>(step));
        std::copy(r.begin(), r.end(), xf.begin());
        std::copy(r.begin(), r.end(), xd.begin());
        const xt::xtensor<int, 1> y = {step % 2, 1, 0, (step / 2) % 2};
        const auto lf = fixed.train_on_batch(xf, y);
        const auto ld = dynamic.train_on_batch(xd, y);
        CHECK(lf.loss == ld.loss);
    }
    CHECK(bw_test::all_weights(fixed) == bw_test::all_weights(dynamic));
}

TEST_CASE("same seed and threads: bit-identical weights, another seed: different weights") {
    using Net = bw::Sequential<bw::Input<16>, bw::Dense<64>, bw::BatchNorm, bw::ReLU,
                               bw::Dropout<0.5f>, bw::Dense<10>>;
    auto train = [](std::uint64_t s) {
        bw_test::Model<Net> model{bw::seed{s}};
        model.compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
        for (std::size_t step = 0; step < 20; ++step) {
            const std::size_t n = 8 + step * 5;
            const auto x = bw_test::random_matrix(n, 16, step);
            xt::xtensor<float, 1> y = xt::zeros<float>({n});
            for (std::size_t i = 0; i < n; ++i) y(i) = static_cast<float>((i * 7 + step) % 10);
            model.train_on_batch(x, y);
        }
        return bw_test::all_weights(model);
    };
    const auto a = train(42), b = train(42), c = train(43);
    REQUIRE(a.size() == b.size());
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    CHECK(a != c);
}

TEST_CASE("dropout masks do not depend on how a batch is split") {
    using Net = bw::Sequential<bw::Input<6>, bw::Dense<32>, bw::Dropout<0.5f>, bw::Dense<3>>;
    bw_test::Model<Net> model{bw::seed{9}};
    model.compile(bw::SGD{}, bw::MeanSquaredError{});
    const auto x = bw_test::random_matrix(8, 6, 1);
    const auto y = bw_test::random_matrix(8, 3, 2);
    auto grads = [&] {
        std::vector<float> g;
        for (const auto& v : model.variables()) {
            const std::vector<float> h = bw_test::host_copy(v.ref.grad, v.ref.size());
            g.insert(g.end(), h.begin(), h.end());
        }
        return g;
    };
    model.set_position(3, 100);
    const float whole = model.loss_and_gradients(x, y);
    const auto g_whole = grads();

    const xt::xtensor<float, 2> x1 = xt::view(x, xt::range(0, 4)), x2 = xt::view(x, xt::range(4, 8));
    const xt::xtensor<float, 2> y1 = xt::view(y, xt::range(0, 4)), y2 = xt::view(y, xt::range(4, 8));
    model.set_position(3, 100);
    const float first = model.loss_and_gradients(x1, y1);
    const auto g1 = grads();
    model.set_position(3, 104);
    const float second = model.loss_and_gradients(x2, y2);
    const auto g2 = grads();
    CHECK(whole == doctest::Approx((first + second) / 2).epsilon(1e-6));
    for (std::size_t i = 0; i < g_whole.size(); ++i) {
        REQUIRE(g_whole[i] == doctest::Approx((g1[i] + g2[i]) / 2).epsilon(1e-5).scale(1e-6));
    }
    // A different epoch draws different masks.
    model.set_position(4, 100);
    CHECK(model.loss_and_gradients(x, y) != whole);
}

TEST_CASE("predict and evaluate: any chunking gives the same answer") {
    bw_test::Model<small_net> model{bw::seed{3}};
    model.compile(bw::SGD{}, bw::MeanSquaredError{}, bw::metrics::mae);
    const auto x = bw_test::random_matrix(50, 4, 1);
    const auto y = bw_test::random_matrix(50, 3, 2);
    const auto p32 = model.predict(x);
    const auto p7 = model.predict(x, 7);
    const auto p50 = model.predict(x, 50);
    CHECK(p32.shape()[0] == 50);
    CHECK(xt::allclose(p32, p7, 1e-6, 1e-6));
    CHECK(xt::allclose(p32, p50, 1e-6, 1e-6));
    const auto e = model.evaluate(x, y, 9);
    const double mse = xt::mean(xt::square(p32 - y))();
    const double mae = xt::mean(xt::abs(p32 - y))();
    CHECK(e.loss == doctest::Approx(mse).epsilon(1e-5));
    CHECK(e["mae"] == doctest::Approx(mae).epsilon(1e-5));
    CHECK(e.samples == 50);

    // A static-batch model predicts any number of samples, the last chunk partly filled.
    bw_test::Model<small_net, bw::static_batch<16>> fixed{bw::seed{3}};
    const auto pf = fixed.predict(x);
    CHECK(xt::allclose(pf, p32, 1e-6, 1e-6));
    CHECK(xt::allclose(fixed.predict(x, 17), p32, 1e-6, 1e-6));  // chunks of 17 run as 16 + 1
    CHECK_THROWS_AS(model.predict(x, 0), bw::shape_error);
}

TEST_CASE("accuracy metric for sparse, one-hot and binary targets") {
    using Net = bw::Sequential<bw::Input<3>, bw::Dense<3>>;
    bw_test::Model<Net> model{bw::seed{1}};
    model.compile(bw::SGD{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}}, bw::metrics::accuracy);
    const auto x = bw_test::random_matrix(40, 3, 5);
    const auto p = model.predict(x);
    xt::xtensor<int, 1> labels = xt::zeros<int>({40});
    for (std::size_t i = 0; i < 40; ++i) {
        for (int j = 1; j < 3; ++j) labels(i) = p(i, j) > p(i, labels(i)) ? j : labels(i);
    }
    for (std::size_t i = 0; i < 10; ++i) labels(i) = (labels(i) + 1) % 3;  // 10 of 40 wrong
    CHECK(model.evaluate(x, labels)["accuracy"] == doctest::Approx(0.75));

    model.compile(bw::SGD{}, bw::CategoricalCrossentropy{{.from_logits = true}}, bw::metrics::accuracy);
    xt::xtensor<float, 2> one_hot = xt::zeros<float>({40, 3});
    for (std::size_t i = 0; i < 40; ++i) one_hot(i, static_cast<std::size_t>(labels(i))) = 1.0f;
    CHECK(model.evaluate(x, one_hot)["accuracy"] == doctest::Approx(0.75));

    using Binary = bw::Sequential<bw::Input<3>, bw::Dense<1>>;
    bw_test::Model<Binary> b{bw::seed{2}};
    b.compile(bw::SGD{}, bw::BinaryCrossentropy{{.from_logits = true}}, bw::metrics::accuracy);
    const auto z = b.predict(x);
    xt::xtensor<float, 2> t = xt::cast<float>(z > 0.0f);
    for (std::size_t i = 0; i < 4; ++i) t(i, 0) = 1.0f - t(i, 0);
    CHECK(b.evaluate(x, t)["accuracy"] == doctest::Approx(0.9));
}

TEST_CASE("weights: save and load bit-identical, Keras-style names") {
    using Net = bw::Sequential<bw::Input<5>, bw::Dense<7>, bw::BatchNorm, bw::ReLU, bw::Dense<2, bw::no_bias>>;
    bw_test::Model<Net> a{bw::seed{1}};
    a.compile(bw::Adam{}, bw::MeanSquaredError{});
    const auto x = bw_test::random_matrix(16, 5, 3);
    const auto y = bw_test::random_matrix(16, 2, 4);
    for (int i = 0; i < 5; ++i) a.train_on_batch(x, y);
    const auto path = temp_file("weights.npz");
    a.save_weights(path);

    std::vector<std::string> names;
    for (const auto& v : a.variables()) names.push_back(v.name);
    CHECK(names == std::vector<std::string>{"dense/kernel", "dense/bias", "batch_normalization/gamma",
                                            "batch_normalization/beta", "batch_normalization/moving_mean",
                                            "batch_normalization/moving_variance", "dense_1/kernel"});
    const auto arrays = bw::data::read_npz(path);
    REQUIRE(arrays.size() == 7);
    CHECK(arrays[0].second.shape == std::vector<std::size_t>{5, 7});

    bw_test::Model<Net> b{bw::seed{2}};
    CHECK(bw_test::all_weights(a) != bw_test::all_weights(b));
    b.load_weights(path);
    CHECK(bw_test::all_weights(a) == bw_test::all_weights(b));
    CHECK(a.predict(x) == b.predict(x));
    std::filesystem::remove(path);
}

TEST_CASE("weights: a wrong or damaged file is a typed error and changes nothing") {
    using Net = bw::Sequential<bw::Input<5>, bw::Dense<7>, bw::Dense<2>>;
    using Other = bw::Sequential<bw::Input<5>, bw::Dense<8>, bw::Dense<2>>;
    using Fewer = bw::Sequential<bw::Input<5>, bw::Dense<7>>;
    bw_test::Model<Net> model{bw::seed{1}};
    const auto before = bw_test::all_weights(model);

    const auto other_path = temp_file("other.npz");
    bw_test::Model<Other>{bw::seed{3}}.save_weights(other_path);
    CHECK_THROWS_WITH_AS(model.load_weights(other_path),
                         doctest::Contains("array 'dense/kernel' in"), bw::shape_error);
    CHECK_THROWS_WITH_AS(model.load_weights(other_path), doctest::Contains("(5, 8)"), bw::shape_error);

    const auto fewer_path = temp_file("fewer.npz");
    bw_test::Model<Fewer>{bw::seed{3}}.save_weights(fewer_path);
    CHECK_THROWS_WITH_AS(model.load_weights(fewer_path), doctest::Contains("has no array 'dense_1/kernel'"),
                         bw::shape_error);
    bw_test::Model<Fewer> small{bw::seed{4}};
    const auto path = temp_file("good.npz");
    model.save_weights(path);
    CHECK_THROWS_WITH_AS(small.load_weights(path), doctest::Contains("that this model does not have"),
                         bw::shape_error);

    // Truncate a good file: an io_error, never a crash.
    const auto size = std::filesystem::file_size(path);
    std::filesystem::resize_file(path, size / 2);
    CHECK_THROWS_AS(model.load_weights(path), bw::io_error);
    CHECK_THROWS_AS(model.load_weights(temp_file("does_not_exist.npz")), bw::io_error);
    CHECK(bw_test::all_weights(model) == before);
    for (const auto& p : {other_path, fewer_path, path}) std::filesystem::remove(p);
}

namespace {

using checkpoint_net = bw::Sequential<bw::Input<5>, bw::Dense<7>, bw::ReLU, bw::Dense<2>>;
using checkpoint_model = bw_test::Model<checkpoint_net>;

/// Compiles `m` with `opt` and trains it `steps` steps on fixed data, so its optimizer state is
/// not zero.
template <class Opt>
void train_steps(checkpoint_model& m, const Opt& opt, int steps) {
    m.compile(opt, bw::MeanSquaredError{});
    const auto x = bw_test::random_matrix(16, 5, 3);
    const auto y = bw_test::random_matrix(16, 2, 4);
    for (int i = 0; i < steps; ++i) m.train_on_batch(x, y);
}

/// Copies the .npz file `from` to `to` with one array changed (or, with `remove`, left out).
template <class Change>
void rewrite_array(const std::filesystem::path& from, const std::filesystem::path& to, const std::string& name,
                   Change change, bool remove = false) {
    const auto arrays = bw::data::read_npz(from);
    std::vector<std::pair<std::string, bw::data::npz_array>> out;
    bool found = false;
    for (const auto& entry : arrays) {
        if (entry.first != name) {
            out.push_back(entry);
            continue;
        }
        found = true;
        if (remove) continue;
        out.push_back(entry);
        change(out.back().second);
    }
    REQUIRE(found);
    bw::data::write_npz(to, out);
}

}  // namespace

TEST_CASE("weights: a NaN or an infinity in a weights file, a checkpoint or set_weights is refused and changes "
          "nothing") {
    checkpoint_model model{bw::seed{1}};
    train_steps(model, bw::Adam{}, 2);
    const auto weights = temp_file("finite_weights.npz"), checkpoint = temp_file("finite_checkpoint.npz"),
               bad = temp_file("non_finite.npz");
    model.save_weights(weights);
    model.save_checkpoint(checkpoint);
    const auto before = bw_test::all_weights(model);
    const std::uint64_t iterations = model.iterations();
    for (const float value : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity()}) {
        INFO("value " << value);
        const auto poison = [value](bw::data::npz_array& a) { a.values[1] = value; };
        rewrite_array(weights, bad, "dense_1/bias", poison);
        CHECK_THROWS_WITH_AS(model.load_weights(bad),
                             doctest::Contains(("load_weights: array 'dense_1/bias' in " + bad.string() + " holds " +
                                                std::to_string(value) + " at flat index 1; expected finite values")
                                                   .c_str()),
                             bw::io_error);
        CHECK(bw_test::all_weights(model) == before);

        rewrite_array(checkpoint, bad, "dense/kernel", poison);
        CHECK_THROWS_WITH_AS(model.load_checkpoint(bad), doctest::Contains("load_checkpoint: array 'dense/kernel'"),
                             bw::io_error);
        CHECK_THROWS_WITH_AS(model.load_weights(bad), doctest::Contains("array 'dense/kernel'"), bw::io_error);
        rewrite_array(checkpoint, bad, "optimizer/dense_1/kernel/slot0", poison);
        CHECK_THROWS_WITH_AS(model.load_checkpoint(bad), doctest::Contains("'optimizer/dense_1/kernel/slot0'"),
                             bw::io_error);
        CHECK(bw_test::all_weights(model) == before);
        CHECK(model.iterations() == iterations);
        CHECK(!model.resume_pending());

        auto given = model.get_weights();
        given[2].value(1, 0) = value;
        CHECK_THROWS_WITH_AS(model.set_weights(given),
                             doctest::Contains("set_weights: array 'dense_1/kernel' in the arrays given holds"),
                             bw::data_error);
        for (auto& w : given) w.name.clear();  // in order, unnamed: the same check
        CHECK_THROWS_AS(model.set_weights(given), bw::data_error);
        CHECK(bw_test::all_weights(model) == before);
    }
    // The untouched files still load.
    model.load_weights(weights);
    model.load_checkpoint(checkpoint);
    CHECK(bw_test::all_weights(model) == before);
    for (const auto& p : {weights, checkpoint, bad}) std::filesystem::remove(p);
}

TEST_CASE("weights: a non-finite weight or optimizer slot is never written") {
    checkpoint_model model{bw::seed{2}};
    train_steps(model, bw::Adam{}, 1);
    const auto path = temp_file("never_written.npz");
    std::filesystem::remove(path);

    // A finite gradient whose square overflows: Adam's v turns infinite, the weights stay finite.
    const auto x = bw_test::random_matrix(16, 5, 3);
    const auto y = bw_test::random_matrix(16, 2, 4);
    bw::gradient_sums g = model.gradients(x, y);
    g.sums[0].value(0, 0) = 1e30f;
    model.apply_gradients(g);
    for (const float w : bw_test::all_weights(model)) REQUIRE(std::isfinite(w));
    model.save_weights(path);  // the weights are finite: they are written
    std::filesystem::remove(path);
    CHECK_THROWS_WITH_AS(model.save_checkpoint(path),
                         doctest::Contains("save_checkpoint: 'optimizer/dense/kernel/slot1' holds inf at flat index 0; "
                                           "nothing was written"),
                         bw::numeric_error);
    CHECK(!std::filesystem::exists(path));

    bw_test::set_element(model.variables()[1].ref.value, 3, std::numeric_limits<float>::quiet_NaN());
    CHECK_THROWS_WITH_AS(model.save_weights(path), doctest::Contains("save_weights: 'dense/bias' holds nan"),
                         bw::numeric_error);
    CHECK_THROWS_WITH_AS(model.save_checkpoint(path), doctest::Contains("'dense/bias'"), bw::numeric_error);
    CHECK(!std::filesystem::exists(path));

    // A learning rate load_checkpoint would refuse is not written either.
    checkpoint_model frozen{bw::seed{3}};
    train_steps(frozen, bw::SGD{}, 1);
    frozen.set_learning_rate(-0.5f);
    CHECK_THROWS_WITH_AS(frozen.save_checkpoint(path), doctest::Contains("save_checkpoint: the learning rate is -0.5"),
                         bw::usage_error);
    CHECK(!std::filesystem::exists(path));
    // A rate of 0 (a frozen phase, a warmup's start; LearningRateScheduler allows it) is saved
    // and loaded.
    frozen.set_learning_rate(0.0f);
    frozen.save_checkpoint(path);
    frozen.load_checkpoint(path);
    CHECK(frozen.learning_rate() == 0.0f);
    std::filesystem::remove(path);
}

TEST_CASE("checkpoints: slots load only into an optimizer whose state means the same") {
    const auto adam_path = temp_file("adam.npz"), rmsprop_path = temp_file("rmsprop.npz"),
               momentum_path = temp_file("momentum.npz");
    checkpoint_model adam{bw::seed{1}}, rmsprop{bw::seed{1}}, momentum{bw::seed{1}};
    train_steps(adam, bw::Adam{}, 2);
    train_steps(rmsprop, bw::RMSprop{}, 2);
    train_steps(momentum, bw::SGD{{.momentum = 0.9f}}, 2);
    adam.save_checkpoint(adam_path);
    rmsprop.save_checkpoint(rmsprop_path);
    momentum.save_checkpoint(momentum_path);

    // Each pair keeps as many slots of the same shapes, or the checkpoint fewer.
    const auto refused = [](const auto& compile, const std::filesystem::path& path, const std::string& written,
                            const std::string& compiled) {
        checkpoint_model target{bw::seed{5}};
        compile(target);
        const auto before = bw_test::all_weights(target);
        CHECK_THROWS_WITH_AS(target.load_checkpoint(path),
                             doctest::Contains(("load_checkpoint: " + path.string() + " holds the optimizer state of '" +
                                                written + "' but the model is compiled with '" + compiled + "'")
                                                   .c_str()),
                             bw::io_error);
        CHECK(bw_test::all_weights(target) == before);
        CHECK(target.iterations() == 1);
        CHECK(!target.resume_pending());
    };
    refused([](checkpoint_model& m) { train_steps(m, bw::RMSprop{{.centered = true}}, 1); }, adam_path, "Adam: m, v",
            "RMSprop(centered): mean_square, mean_grad");
    refused([](checkpoint_model& m) { train_steps(m, bw::SGD{{.momentum = 0.9f}}, 1); }, rmsprop_path,
            "RMSprop: mean_square", "SGD(momentum): velocity");
    refused([](checkpoint_model& m) { train_steps(m, bw::Adam{{.amsgrad = true}}, 1); }, adam_path, "Adam: m, v",
            "Adam(amsgrad): m, v, v_hat");
    refused([](checkpoint_model& m) { train_steps(m, bw::AdamW{}, 1); }, adam_path, "Adam: m, v", "AdamW: m, v");
    refused([](checkpoint_model& m) { train_steps(m, bw::RMSprop{{.momentum = 0.5f}}, 1); }, adam_path, "Adam: m, v",
            "RMSprop(momentum): mean_square, momentum");
    // PyTorch's momentum buffer holds the gradients without the learning rate: another state.
    refused(
        [](checkpoint_model& m) {
            m.set_conventions(bw::conventions::pytorch);
            train_steps(m, bw::SGD{{.momentum = 0.9f}}, 1);
        },
        momentum_path, "SGD(momentum): velocity", "SGD(momentum, pytorch): momentum_buffer");

    // The same optimizer loads, options that keep the state's meaning (nesterov, the rates) aside.
    checkpoint_model same{bw::seed{6}};
    train_steps(same, bw::SGD{{.learning_rate = 0.1f, .momentum = 0.5f, .nesterov = true}}, 1);
    same.load_checkpoint(momentum_path);
    CHECK(bw_test::all_weights(same) == bw_test::all_weights(momentum));
    CHECK(same.iterations() == 2);

    // A checkpoint from before the record: refused where the compiled optimizer keeps state,
    // loaded where it keeps none.
    const auto legacy = temp_file("legacy.npz");
    rewrite_array(adam_path, legacy, "optimizer/state_layout", [](bw::data::npz_array&) {}, true);
    checkpoint_model old_adam{bw::seed{7}};
    train_steps(old_adam, bw::Adam{}, 1);
    CHECK_THROWS_WITH_AS(old_adam.load_checkpoint(legacy),
                         doctest::Contains("does not say which optimizer wrote its state"), bw::io_error);
    CHECK(old_adam.iterations() == 1);
    checkpoint_model plain{bw::seed{1}}, plain_target{bw::seed{8}};
    train_steps(plain, bw::SGD{}, 2);
    plain.save_checkpoint(legacy);
    rewrite_array(legacy, legacy, "optimizer/state_layout", [](bw::data::npz_array&) {}, true);
    train_steps(plain_target, bw::SGD{}, 1);
    plain_target.load_checkpoint(legacy);
    CHECK(bw_test::all_weights(plain_target) == bw_test::all_weights(plain));
    for (const auto& p : {adam_path, rmsprop_path, momentum_path, legacy}) std::filesystem::remove(p);
}

TEST_CASE("checkpoints: a value no training can leave is refused, and the state stays as it was") {
    checkpoint_model model{bw::seed{1}}, twin{bw::seed{1}};
    train_steps(model, bw::Adam{}, 3);
    train_steps(twin, bw::Adam{}, 3);
    const auto good = temp_file("good_checkpoint.npz"), bad = temp_file("bad_checkpoint.npz");
    model.save_checkpoint(good);
    model.set_learning_rate(0.002f);  // differs from the checkpoint's, so a partial restore shows
    twin.set_learning_rate(0.002f);

    struct bad_value {
        std::string array;
        std::function<void(bw::data::npz_array&)> change;
        std::string message;
    };
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const std::vector<bad_value> cases{
        {"optimizer/iterations", [](auto& a) { a.integers[0] = -1; },
         "array 'optimizer/iterations' in " + bad.string() + " is -1; expected an optimizer step count >= 0"},
        {"optimizer/learning_rate", [nan](auto& a) { a.values[0] = nan; },
         "array 'optimizer/learning_rate' in " + bad.string() + " is nan; expected a finite learning rate >= 0"},
        {"optimizer/learning_rate", [](auto& a) { a.values[0] = -0.001f; }, "is -0.001000; expected a finite"},
        {"optimizer/learning_rate", [](auto& a) { a.values[0] = std::numeric_limits<float>::infinity(); },
         "is inf; expected a finite"},
        {"optimizer/dense/kernel/slot1", [](auto& a) { a.values[4] = -1.0f; },
         "array 'optimizer/dense/kernel/slot1' in " + bad.string() +
             " holds -1.000000 at flat index 4, but slot 1 of 'Adam: m, v' is a mean of squares; expected values >= 0"},
        {"optimizer/dense/kernel/slot0", [](auto& a) { a.values[2] = std::numeric_limits<float>::infinity(); },
         "'optimizer/dense/kernel/slot0' in " + bad.string() + " holds inf at flat index 2"},
        {"optimizer/dense/kernel/slot0", [](auto& a) { a.shape = {7, 5}; }, "has shape (7, 5) but the variable"},
        {"training/position", [](auto& a) { a.integers[0] = -1; },
         "array 'training/position' in " + bad.string() +
             " holds epoch -1; expected epoch, step, sample and micro-batch limit >= 0"},
        {"training/position", [](auto& a) { a.integers[1] = -2; }, "holds step -2"},
        {"training/position", [](auto& a) { a.integers[2] = -3; }, "holds sample -3"},
        {"optimizer/samples_seen", [](auto& a) { a.integers[0] = -5; },
         "holds -5; expected the samples seen and the reference batch, both >= 0"},
    };
    const auto before = bw_test::all_weights(model);
    for (const bad_value& c : cases) {
        INFO(c.array << ": " << c.message);
        rewrite_array(good, bad, c.array, c.change);
        const bool structure = c.message.find("has shape") != std::string::npos;
        if (structure) {
            CHECK_THROWS_WITH_AS(model.load_checkpoint(bad), doctest::Contains(c.message.c_str()), bw::shape_error);
        } else {
            CHECK_THROWS_WITH_AS(model.load_checkpoint(bad), doctest::Contains(c.message.c_str()), bw::io_error);
        }
        CHECK(bw_test::all_weights(model) == before);
        CHECK(model.iterations() == 3);
        CHECK(model.learning_rate() == 0.002f);
        CHECK(!model.resume_pending());
    }
    // The optimizer's slots are untouched too: the next step is the twin's.
    const auto x = bw_test::random_matrix(16, 5, 3);
    const auto y = bw_test::random_matrix(16, 2, 4);
    model.train_on_batch(x, y);
    twin.train_on_batch(x, y);
    CHECK(bw_test::all_weights(model) == bw_test::all_weights(twin));
    // The good file still loads.
    model.load_checkpoint(good);
    CHECK(model.iterations() == 3);
    for (const auto& p : {good, bad}) std::filesystem::remove(p);
}

TEST_CASE("summary prints layers, output shapes and parameter counts as Keras does") {
    using Net = bw::Sequential<bw::Input<28, 28>, bw::Flatten, bw::Dense<256>, bw::ReLU,
                               bw::Dense<256>, bw::ReLU, bw::BatchNorm, bw::Dense<10>>;
    bw_test::Model<Net> model;
    std::ostringstream os;
    model.summary(os);
    const std::string s = os.str();
    CHECK(s.find("flatten (Flatten)") != std::string::npos);
    CHECK(s.find("(None, 784)") != std::string::npos);
    CHECK(s.find("dense_1 (Dense)") != std::string::npos);
    CHECK(s.find("200,960") != std::string::npos);
    CHECK(s.find("re_lu_1 (ReLU)") != std::string::npos);
    CHECK(s.find("Total params: 270,346") != std::string::npos);
    CHECK(s.find("Trainable params: 269,834") != std::string::npos);
    CHECK(s.find("Non-trainable params: 512") != std::string::npos);
    static_assert(decltype(model)::count_params() == 270346);

    bw_test::Model<Net, bw::static_batch<64>> fixed;
    std::ostringstream fs;
    fixed.summary(fs);
    CHECK(fs.str().find("(64, 256)") != std::string::npos);
}

TEST_CASE("bad input: typed errors that name the problem and lose nothing") {
    bw_test::Model<small_net> model{bw::seed{1}};
    const auto x = bw_test::random_matrix(6, 4, 1);
    const auto y = bw_test::random_matrix(6, 3, 2);
    CHECK_THROWS_WITH_AS(model.train_on_batch(x, y), doctest::Contains("not compiled"), bw::usage_error);
    // An error metric against class indices would read past the labels.
    CHECK_THROWS_WITH_AS(model.compile(bw::SGD{}, bw::SparseCategoricalCrossentropy{}, bw::metrics::accuracy,
                                       bw::metrics::mse),
                         doctest::Contains("metric 'mse' compares outputs with targets of the same shape"),
                         bw::usage_error);

    model.compile(bw::SGD{}, bw::MeanSquaredError{});
    model.train_on_batch(x, y);
    const auto before = bw_test::all_weights(model);

    const auto wrong = bw_test::random_matrix(6, 5, 1);
    CHECK_THROWS_WITH_AS(model.train_on_batch(wrong, y), doctest::Contains("have shape (6, 5)"), bw::shape_error);
    CHECK_THROWS_WITH_AS(model.train_on_batch(x, bw_test::random_matrix(5, 3, 2)),
                         doctest::Contains("6 input samples but 5 targets"), bw::data_error);
    CHECK_THROWS_AS(model.train_on_batch(bw_test::random_matrix(0, 4, 1), bw_test::random_matrix(0, 3, 1)),
                    bw::data_error);

    auto nan_x = x;
    nan_x(4, 2) = std::numeric_limits<float>::quiet_NaN();
    try {
        model.train_on_batch(nan_x, y);
        FAIL("a NaN input must not train");
    } catch (const bw::data_error& e) {
        CHECK(e.sample() == 4);
        CHECK(std::string(e.what()).find("sample 4") != std::string::npos);
    }
    CHECK_THROWS_AS(model.predict(nan_x), bw::data_error);
    CHECK(bw_test::all_weights(model) == before);

    // A loss that overflows is reported before the update, which is not applied.
    model.compile(bw::SGD{}, bw::MeanSquaredError{});
    const xt::xtensor<float, 2> huge = xt::ones<float>({6, 3}) * 3e38f;
    CHECK_THROWS_AS(model.train_on_batch(x, huge), bw::numeric_error);
    CHECK(bw_test::all_weights(model) == before);
    CHECK(model.iterations() == 0);
}

TEST_CASE("every infinity and NaN in a batch is rejected wherever it sits, finite extremes are not") {
    // The check reads exponent bits in vector lanes: cover every kind of non-finite value, in
    // the first, a middle and the last position (the vector body and its scalar tail), and the
    // finite values nearest to them.
    bw_test::Model<small_net> model{bw::seed{5}};
    model.compile(bw::SGD{}, bw::MeanSquaredError{});
    const auto x = bw_test::random_matrix(37, 4, 1);
    const auto y = bw_test::random_matrix(37, 3, 2);
    const auto before = bw_test::all_weights(model);
    const float inf = std::numeric_limits<float>::infinity();
    const float bad[] = {inf, -inf, std::numeric_limits<float>::quiet_NaN(),
                         -std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::signaling_NaN()};
    const std::size_t rows[] = {0, 17, 36};
    // Twice: before the model has buffers for the batch, and after, when a policy with its own
    // memory checks the inputs in the pass that stages them.
    for (const bool reserved : {false, true}) {
    INFO("buffers reserved: " << reserved);
    if (reserved) (void)model.predict(x);
    for (const float v : bad) {
        for (const std::size_t r : rows) {
            auto x_bad = x;
            x_bad(r, r == 36 ? 3 : 0) = v;
            try {
                model.train_on_batch(x_bad, y);
                FAIL("a non-finite input must not train: " << v << " in sample " << r);
            } catch (const bw::data_error& e) {
                CHECK(e.sample() == r);
            }
            auto y_bad = y;
            y_bad(r, 2) = v;
            try {
                model.train_on_batch(x, y_bad);
                FAIL("a non-finite target must not train: " << v << " in sample " << r);
            } catch (const bw::data_error& e) {
                CHECK(e.sample() == r);
            }
        }
    }
    }
    CHECK(model.iterations() == 0);
    CHECK(bw_test::all_weights(model) == before);

    const float extremes[] = {std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                              std::numeric_limits<float>::denorm_min(), -0.0f};
    for (const float v : extremes) {
        auto x_edge = x;
        x_edge(36, 3) = v;
        CHECK_NOTHROW(model.predict(x_edge));
    }
    // The copying check, for inputs that are not already contiguous floats.
    const xt::xtensor<double, 2> as_double = xt::cast<double>(x);
    for (const float v : bad) {
        auto d = as_double;
        d(36, 3) = static_cast<double>(v);
        CHECK_THROWS_WITH_AS(model.train_on_batch(d, y), doctest::Contains("sample 36"), bw::data_error);
    }
    CHECK(bw_test::all_weights(model) == before);
}

TEST_CASE("bad labels name the sample") {
    bw_test::Model<small_net> model{bw::seed{1}};
    model.compile(bw::SGD{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    const auto x = bw_test::random_matrix(5, 4, 1);
    const xt::xtensor<int, 1> out_of_range = {0, 1, 2, 3, 1};
    try {
        model.train_on_batch(x, out_of_range);
        FAIL("label 3 of 3 classes must be rejected");
    } catch (const bw::data_error& e) {
        CHECK(e.sample() == 3);
        CHECK(std::string(e.what()).find("[0, 3)") != std::string::npos);
    }
    const xt::xtensor<float, 1> fractional = {0, 1, 1.5f, 2, 1};
    CHECK_THROWS_AS(model.train_on_batch(x, fractional), bw::data_error);
    const xt::xtensor<int, 1> negative = {0, -1, 2, 2, 1};
    CHECK_THROWS_AS(model.evaluate(x, negative), bw::data_error);
    const xt::xtensor<int, 2> wide = xt::zeros<int>({5, 2});
    CHECK_THROWS_AS(model.train_on_batch(x, wide), bw::shape_error);
    CHECK(model.iterations() == 0);
}

TEST_CASE("static batch: a smaller batch is padded and masked, a larger one is a shape_error") {
    // No bias before batch norm: its gradient is zero but for rounding, which Adam scales up
    // to full-size steps, so a bias there would compare two summation orders' rounding noise.
    using Net = bw::Sequential<bw::Input<4>, bw::Dense<6, bw::no_bias>, bw::BatchNorm, bw::ReLU, bw::Dropout<0.3f>,
                               bw::Dense<3>>;
    bw_test::Model<Net, bw::static_batch<8>> fixed{bw::seed{4}};
    bw_test::Model<Net, bw::dynamic_batch> dynamic{bw::seed{4}};
    fixed.compile(bw::Adam{}, bw::MeanSquaredError{});
    dynamic.compile(bw::Adam{}, bw::MeanSquaredError{});
    // Padded rows never reach the loss, the gradients or batch norm's statistics: the static
    // model follows the dynamic one on the same (ragged) batches.
    for (std::size_t n : {8, 7, 3, 8, 5}) {
        const auto x = bw_test::random_matrix(n, 4, n);
        const auto y = bw_test::random_matrix(n, 3, n + 50);
        const auto a = fixed.train_on_batch(x, y);
        const auto b = dynamic.train_on_batch(x, y);
        CHECK(a.loss == doctest::Approx(b.loss).epsilon(1e-5));
    }
    const auto wf = bw_test::all_weights(fixed), wd = bw_test::all_weights(dynamic);
    for (std::size_t i = 0; i < wf.size(); ++i) REQUIRE(wf[i] == doctest::Approx(wd[i]).epsilon(1e-5).scale(1e-6));

    CHECK_THROWS_WITH_AS(fixed.train_on_batch(bw_test::random_matrix(9, 4, 1), bw_test::random_matrix(9, 3, 1)),
                         doctest::Contains("static_batch<8> but the batch has 9 samples"), bw::shape_error);
    bw_test::Model<Net, bw::static_batch<8, bw::ragged_tail::drop>> dropping;
    dropping.compile(bw::SGD{}, bw::MeanSquaredError{});
    CHECK_THROWS_WITH_AS(dropping.train_on_batch(bw_test::random_matrix(7, 4, 1), bw_test::random_matrix(7, 3, 1)),
                         doctest::Contains("drops ragged batches"), bw::shape_error);
}
