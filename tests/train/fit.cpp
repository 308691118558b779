// fit(): History, batch sizes from the dataset, validation, callbacks (order, EarlyStopping,
// TerminateOnNaN, ModelCheckpoint, LearningRateScheduler, CsvLogger, ProgressBar), resuming
// from a checkpoint bit-identically, and the errors fit reports before training.
#include "../gradient_check.hpp"

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace bw = batchwise;
using bw::data::Dataset;

namespace {

std::filesystem::path temp_path(const std::string& name) {
    return std::filesystem::temp_directory_path() /
           ("batchwise_fit_test_" + std::to_string(::getpid()) + "_" + name);
}

/// Two classes in 8 dimensions, separable with some overlap.
Dataset two_blobs(std::size_t n, std::uint64_t s) {
    auto x = bw_test::random_matrix(n, 8, s);
    xt::xtensor<int, 1> y = xt::zeros<int>({n});
    for (std::size_t i = 0; i < n; ++i) {
        y(i) = static_cast<int>(i % 2);
        for (std::size_t j = 0; j < 8; ++j) x(i, j) += y(i) ? 0.6f : -0.6f;
    }
    return Dataset(x, y);
}

using net = bw::Sequential<bw::Input<8>, bw::Dense<16>, bw::BatchNorm, bw::ReLU, bw::Dropout<0.25f>,
                           bw::Dense<2>>;
using model_t = bw_test::Model<net>;

template <class M>
void compile(M& m) {
    m.compile(bw::Adam{{.learning_rate = 1e-2f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}},
              bw::metrics::accuracy);
}

template <class M>
std::vector<float> weights_of(const M& m) {
    std::vector<float> w;
    for (const auto& [name, v] : m.get_weights()) w.insert(w.end(), v.begin(), v.end());
    return w;
}

/// Records every event, for checking order and arguments.
struct recorder final : bw::Callback {
    std::vector<std::string> events;
    void on_train_begin(bw::training_context&) override { events.push_back("train_begin"); }
    void on_train_end(bw::training_context&, const bw::History&) override { events.push_back("train_end"); }
    void on_epoch_begin(bw::training_context&, std::uint64_t e, std::size_t steps) override {
        events.push_back("epoch_begin " + std::to_string(e) + " steps " + std::to_string(steps));
    }
    void on_epoch_end(bw::training_context&, std::uint64_t e, const bw::epoch_logs& l) override {
        events.push_back("epoch_end " + std::to_string(e) + (l.contains("val_loss") ? " val" : ""));
    }
    void on_batch_begin(bw::training_context&, std::uint64_t s, std::size_t n) override {
        events.push_back("batch_begin " + std::to_string(s) + " size " + std::to_string(n));
    }
    void on_batch_end(bw::training_context&, std::uint64_t s, const bw::logs&, const bw::logs&) override {
        events.push_back("batch_end " + std::to_string(s));
    }
};

/// Stops training after a given number of steps of a given epoch.
struct stop_at final : bw::Callback {
    std::uint64_t epoch, steps, current = 0;
    stop_at(std::uint64_t e, std::uint64_t s) : epoch(e), steps(s) {}
    void on_epoch_begin(bw::training_context&, std::uint64_t e, std::size_t) override { current = e; }
    void on_batch_end(bw::training_context& ctx, std::uint64_t s, const bw::logs&, const bw::logs&) override {
        if (current == epoch && s + 1 == steps) ctx.stop_training("test stop");
    }
};

}  // namespace

TEST_CASE("fit trains, reports a History with batch sizes, and validates each epoch") {
    model_t m{bw::seed{1}};
    compile(m);
    const Dataset train = two_blobs(250, 1), val = two_blobs(100, 2);
    const bw::History h = m.fit(train.shuffle(250, bw::seed{3}).batch(32),
                                {.epochs = 6, .validation_data = val.batch(50), .verbose = 0});
    REQUIRE(h.size() == 6);
    CHECK(h.epochs == std::vector<std::uint64_t>{0, 1, 2, 3, 4, 5});
    CHECK(h["loss"].back() < h["loss"].front());
    CHECK(h["val_accuracy"].back() > 0.9);
    CHECK(h.history.count("val_loss") == 1);
    CHECK(h["learning_rate"].front() == doctest::Approx(1e-2));
    // 250 = 7 x 32 + 26: the ragged tail is trained and recorded.
    CHECK(h.batch_sizes[0] == std::vector<std::pair<std::size_t, std::size_t>>{{32, 7}, {26, 1}});
    CHECK(h.samples[0] == 250);
    CHECK(h.steps[0] == 8);
    CHECK(h.dropped_samples[0] == 0);
    CHECK(h.stop_reason.empty());
    CHECK(m.iterations() == 48);
    CHECK(h.seconds.size() == 6);

    // evaluate and predict take datasets too, with the same answers as on arrays.
    const auto via_dataset = m.evaluate(val.batch(7));
    const auto p = m.predict(val.batch(13));
    CHECK(p.shape()[0] == 100);
    CHECK(via_dataset["accuracy"] == doctest::Approx(h["val_accuracy"].back()));
}

TEST_CASE("each batch may have its own size: schedules and concatenation drive fit") {
    model_t m{bw::seed{2}};
    compile(m);
    const Dataset d = two_blobs(128, 3);
    const bw::History h = m.fit(d.batch(bw::schedule::phased{{0, 32}, {2, 64}}), {.epochs = 3, .verbose = 0});
    CHECK(h.batch_sizes[0] == std::vector<std::pair<std::size_t, std::size_t>>{{32, 4}});
    CHECK(h.batch_sizes[2] == std::vector<std::pair<std::size_t, std::size_t>>{{64, 2}});

    const bw::History c = m.fit(d.take(64).batch(32).concatenate(d.skip(64).batch(64)), {.epochs = 1, .verbose = 0});
    CHECK(c.batch_sizes[0] == std::vector<std::pair<std::size_t, std::size_t>>{{32, 2}, {64, 1}});

    const bw::History s = m.fit(d.batch(16), {.epochs = 2, .steps_per_epoch = 3, .verbose = 0});
    CHECK(s.steps == std::vector<std::size_t>{3, 3});
    CHECK(s.samples == std::vector<std::size_t>{48, 48});

    const bw::History dropped = m.fit(d.batch(48, true), {.epochs = 1, .verbose = 0});
    CHECK(dropped.dropped_samples[0] == 32);
    CHECK(dropped.samples[0] == 96);
}

TEST_CASE("fit stopping early shuts a prefetching dataset down cleanly") {
    model_t m{bw::seed{3}};
    compile(m);
    const Dataset data = two_blobs(400, 4).shuffle(400, bw::seed{1}).batch(8).prefetch(4);
    for (std::uint64_t epoch = 0; epoch < 3; ++epoch) {
        stop_at stop(epoch, 2);
        const bw::History h = m.fit(data, {.epochs = 3, .verbose = 0}, stop);
        CHECK(h.stop_reason == "test stop");
        CHECK(h.steps.back() == 2);
    }
}

TEST_CASE("callbacks see every event in order, with batch sizes") {
    model_t m{bw::seed{3}};
    compile(m);
    recorder r;
    m.fit(two_blobs(10, 4).batch(4), {.epochs = 2, .validation_data = two_blobs(4, 5).batch(4), .verbose = 0}, r);
    const std::vector<std::string> expected{
        "train_begin",  "epoch_begin 0 steps 3", "batch_begin 0 size 4", "batch_end 0",
        "batch_begin 1 size 4", "batch_end 1", "batch_begin 2 size 2", "batch_end 2", "epoch_end 0 val",
        "epoch_begin 1 steps 3", "batch_begin 0 size 4", "batch_end 0", "batch_begin 1 size 4",
        "batch_end 1", "batch_begin 2 size 2", "batch_end 2", "epoch_end 1 val", "train_end"};
    CHECK(r.events == expected);
}

TEST_CASE("EarlyStopping stops after patience and restores the best weights") {
    model_t m{bw::seed{4}};
    compile(m);
    // A learning rate of zero: after the first epoch only dropout noise moves the loss, never
    // by the required min_delta.
    m.set_learning_rate(0.0f);
    bw::EarlyStopping stop({.monitor = "loss", .min_delta = 0.5, .patience = 2});
    const bw::History h = m.fit(two_blobs(64, 6).batch(16), {.epochs = 20, .verbose = 0}, stop);
    CHECK(h.size() == 3);  // best at the first epoch, then 2 epochs without improvement (Keras's rule)
    CHECK(h.stop_reason.find("EarlyStopping: loss did not improve") != std::string::npos);

    model_t r{bw::seed{5}};
    compile(r);
    bw::EarlyStopping restore({.monitor = "val_accuracy", .patience = 1, .restore_best_weights = true});
    recorder rec;
    struct snapshot final : bw::Callback {
        std::vector<std::vector<float>> per_epoch;
        void on_epoch_end(bw::training_context& ctx, std::uint64_t, const bw::epoch_logs&) override {
            per_epoch.push_back(ctx.weights());
        }
    } snap;
    const bw::History h2 = r.fit(two_blobs(200, 7).batch(20),
                                 {.epochs = 30, .validation_data = two_blobs(60, 8).batch(60), .verbose = 0}, snap, restore);
    REQUIRE(restore.best());
    // Validation accuracy saturates long before 30 epochs, so training must stop early, and the
    // weights put back are those of an earlier epoch than the last one trained.
    REQUIRE(h2.size() < 30);
    CHECK(restore.stopped_epoch() == h2.size() - 1);
    CHECK(restore.best_epoch() + 1 < h2.size());
    std::vector<float> now;
    for (const auto& [n, v] : r.get_weights()) now.insert(now.end(), v.begin(), v.end());
    CHECK(now == snap.per_epoch[restore.best_epoch()]);
    CHECK(now != snap.per_epoch.back());
    bw::EarlyStopping missing({.monitor = "val_loss"});
    CHECK_THROWS_WITH_AS(m.fit(two_blobs(8, 1).batch(8), {.epochs = 1, .verbose = 0}, missing),
                         doctest::Contains("needs validation data"), bw::usage_error);
}

namespace {
/// A training_context with one weight and a learning rate: enough to drive a callback by hand.
struct scripted_context final : bw::training_context {
    float lr = 1.0f;
    std::vector<float> w{0.0f};
    [[nodiscard]] float learning_rate() const override { return lr; }
    void set_learning_rate(float v) override { lr = v; }
    [[nodiscard]] std::vector<float> weights() const override { return w; }
    void set_weights(const std::vector<float>& v) override { w = v; }
    [[nodiscard]] bool weights_finite() const override { return true; }
    void save_weights(const std::filesystem::path&) const override {}
    void save_checkpoint(const std::filesystem::path&) const override {}
    [[nodiscard]] std::uint64_t epochs() const override { return 100; }
    [[nodiscard]] bool at_step_boundary() const override { return true; }
};

/// Feeds `values` as the monitored value of consecutive epochs (the weight is the epoch number)
/// until the callback stops training; returns the number of epochs run.
std::size_t run_sequence(bw::Callback& cb, scripted_context& ctx, const std::vector<double>& values,
                         const std::string& key = "val_loss") {
    cb.on_train_begin(ctx);
    std::size_t epoch = 0;
    for (; epoch < values.size() && !ctx.stop_requested(); ++epoch) {
        ctx.w = {static_cast<float>(epoch)};
        bw::epoch_logs logs;
        logs.set(key, values[epoch]);
        cb.on_epoch_end(ctx, epoch, logs);
    }
    cb.on_train_end(ctx, bw::History{});
    return epoch;
}
}  // namespace

TEST_CASE("EarlyStopping follows Keras's rule on fixed sequences") {
    // The expected epochs are Keras 3's (keras/src/callbacks/early_stopping.py): wait counts
    // every epoch, an improvement resets it, and training stops once wait >= patience.
    const std::vector<double> losses{1.0, 0.9, 0.95, 0.93, 0.91, 0.92, 0.5};
    {
        scripted_context ctx;
        bw::EarlyStopping es({.patience = 2});
        CHECK(run_sequence(es, ctx, losses) == 4);  // epochs 2 and 3 do not improve on 0.9
        CHECK(es.stopped_epoch() == 3u);
        CHECK(es.best_epoch() == 1u);
    }
    {
        scripted_context ctx;
        bw::EarlyStopping es({.patience = 0});
        CHECK(run_sequence(es, ctx, losses) == 3);  // the first epoch without improvement stops
    }
    {
        // min_delta: 0.9 is not better than 1.0 by more than 0.2, so nothing after epoch 0 improves.
        scripted_context ctx;
        bw::EarlyStopping es({.min_delta = 0.2, .patience = 3});
        CHECK(run_sequence(es, ctx, losses) == 4);
        CHECK(es.best_epoch() == 0u);
    }
    {
        // A baseline of 0.8: improvements that do not beat it do not restart the count, so the
        // third epoch is the third without a restart.
        scripted_context ctx;
        bw::EarlyStopping es({.patience = 3, .baseline = 0.8});
        CHECK(run_sequence(es, ctx, losses) == 3);
        CHECK(es.best_epoch() == 1u);
    }
    {
        // start_from_epoch: the first three epochs are not monitored.
        scripted_context ctx;
        bw::EarlyStopping es({.patience = 1, .start_from_epoch = 3});
        CHECK(run_sequence(es, ctx, losses) == 6);  // best 0.93 at 3, 0.91 at 4, then 0.92 stops
    }
    {
        // Upwards for accuracies; restore_best_weights restores at the end even without a stop.
        scripted_context ctx;
        bw::EarlyStopping es({.monitor = "val_accuracy", .patience = 5, .restore_best_weights = true});
        CHECK(run_sequence(es, ctx, {0.5, 0.7, 0.6, 0.65}, "val_accuracy") == 4);
        CHECK_FALSE(es.stopped_epoch());
        CHECK(ctx.w == std::vector<float>{1.0f});  // the weights of epoch 1, the best
    }
    CHECK_THROWS_AS(bw::EarlyStopping({.min_delta = -1.0}), bw::usage_error);
}


namespace {
/// The arrays behind two_blobs, for fit(x, y).
struct blob_arrays {
    xt::xtensor<float, 2> x;
    xt::xtensor<int, 1> y;
};
blob_arrays blob_arrays_of(std::size_t n, std::uint64_t s) {
    blob_arrays a{bw_test::random_matrix(n, 8, s), xt::zeros<int>({n})};
    for (std::size_t i = 0; i < n; ++i) {
        a.y(i) = static_cast<int>(i % 2);
        for (std::size_t j = 0; j < 8; ++j) a.x(i, j) += a.y(i) ? 0.6f : -0.6f;
    }
    return a;
}
}  // namespace

TEST_CASE("fit on arrays: batch_size, validation_split from the end, shuffle, validation_data") {
    const blob_arrays a = blob_arrays_of(100, 21);
    {
        // Without shuffling, arrays train exactly as the same samples in a batched Dataset.
        model_t m{bw::seed{3}}, d{bw::seed{3}};
        compile(m);
        compile(d);
        const bw::History h = m.fit(a.x, a.y, {.epochs = 2, .batch_size = 16, .shuffle = false, .verbose = 0});
        (void)d.fit(Dataset(a.x, a.y).batch(16), {.epochs = 2, .verbose = 0});
        CHECK(weights_of(m) == weights_of(d));
        REQUIRE(h.batch_sizes.size() == 2);
        CHECK(h.batch_sizes[0] == std::vector<std::pair<std::size_t, std::size_t>>{{16, 6}, {4, 1}});
    }
    {
        // validation_split 0.25 holds out the last 25 samples, before any shuffling (Keras's
        // rule), and trains on the first 75, shuffled each epoch.
        model_t m{bw::seed{4}};
        compile(m);
        const bw::History h = m.fit(a.x, a.y, {.epochs = 3, .validation_split = 0.25, .verbose = 0});
        CHECK(h.samples == std::vector<std::size_t>{75, 75, 75});
        CHECK(h.batch_sizes[0] == std::vector<std::pair<std::size_t, std::size_t>>{{32, 2}, {11, 1}});
        const auto tail_x = xt::view(a.x, xt::range(75, 100), xt::all());
        const auto tail_y = xt::view(a.y, xt::range(75, 100));
        const bw::logs v = m.evaluate(xt::xtensor<float, 2>(tail_x), xt::xtensor<int, 1>(tail_y));
        CHECK(h["val_loss"].back() == doctest::Approx(v.loss).epsilon(1e-6));
        CHECK(h["val_accuracy"].back() == doctest::Approx(v.values[0]).epsilon(1e-6));

        // Shuffled and unshuffled training differ; shuffling is keyed by the model's seed.
        model_t same{bw::seed{4}}, unshuffled{bw::seed{4}};
        compile(same);
        compile(unshuffled);
        (void)same.fit(a.x, a.y, {.epochs = 3, .validation_split = 0.25, .verbose = 0});
        (void)unshuffled.fit(a.x, a.y, {.epochs = 3, .validation_split = 0.25, .shuffle = false, .verbose = 0});
        CHECK(weights_of(same) == weights_of(m));
        CHECK(weights_of(unshuffled) != weights_of(m));
    }
    {
        // validation_data as arrays in an unbatched Dataset: batched with batch_size.
        model_t m{bw::seed{5}};
        compile(m);
        const blob_arrays v = blob_arrays_of(30, 22);
        const bw::History h = m.fit(a.x, a.y, {.epochs = 1, .batch_size = 25, .validation_data = Dataset(v.x, v.y), .verbose = 0});
        CHECK(h["val_loss"].front() == doctest::Approx(m.evaluate(v.x, v.y).loss).epsilon(1e-6));
        // An unbatched dataset is batched with batch_size too.
        const bw::History hd = m.fit(Dataset(a.x, a.y), {.epochs = 1, .batch_size = 50, .verbose = 0});
        CHECK(hd.steps.front() == 2);
    }
    model_t m{bw::seed{6}};
    compile(m);
    CHECK_THROWS_WITH_AS(m.fit(a.x, a.y, {.validation_split = 0.2, .validation_data = Dataset(a.x, a.y), .verbose = 0}),
                         doctest::Contains("not both"), bw::usage_error);
    CHECK_THROWS_WITH_AS(m.fit(Dataset(a.x, a.y).batch(10), {.validation_split = 0.2, .verbose = 0}),
                         doctest::Contains("data::split"), bw::usage_error);
    CHECK_THROWS_WITH_AS(m.fit(Dataset(a.x, a.y).batch(10), {.batch_size = 5, .verbose = 0}),
                         doctest::Contains("batched already"), bw::usage_error);
    CHECK_THROWS_WITH_AS(m.fit(a.x, a.y, {.validation_split = 0.999, .verbose = 0}),
                         doctest::Contains("leaves no training samples"), bw::data_error);
    CHECK_THROWS_WITH_AS(m.fit(a.x, a.y, {.validation_split = 1e-17, .verbose = 0}),
                         doctest::Contains("leaves no validation samples"), bw::data_error);
    CHECK_THROWS_WITH_AS(m.fit(a.x, a.y, {.validation_split = 1.5, .verbose = 0}),
                         doctest::Contains("validation_split must be in [0, 1)"), bw::usage_error);
    const xt::xtensor<float, 2> wrong = xt::zeros<float>({10, 7});
    CHECK_THROWS_WITH_AS(m.fit(wrong, xt::xtensor<int, 1>(xt::zeros<int>({10})), {.verbose = 0}),
                         doctest::Contains("fit: inputs have shape (10, 7)"), bw::shape_error);
    CHECK_THROWS_WITH(m.fit(a.x, xt::xtensor<int, 1>(xt::zeros<int>({99})), {.verbose = 0}),
                      doctest::Contains("fit: 100 input samples but 99 targets"));
    // A dataset is checked by its whole sample shape, as arrays are.
    const xt::xtensor<float, 3> square = xt::zeros<float>({10, 2, 4});
    CHECK_THROWS_WITH_AS(m.fit(Dataset(square, xt::xtensor<int, 1>(xt::zeros<int>({10}))).batch(5), {.verbose = 0}),
                         doctest::Contains("samples have shape (2, 4) but the network's Input is (8,)"), bw::shape_error);
}

TEST_CASE("a second fit continues the first: one longer fit, bit for bit") {
    const Dataset d = two_blobs(48, 23).shuffle(48, bw::seed{9}).batch(8);
    model_t whole{bw::seed{7}}, parts{bw::seed{7}};
    compile(whole);
    compile(parts);
    (void)whole.fit(d, {.epochs = 5, .verbose = 0});
    (void)parts.fit(d, {.epochs = 2, .verbose = 0});
    const bw::History second = parts.fit(d, {.epochs = 3, .verbose = 0});
    // Keras numbers a later call's epochs from 0; shuffles and dropout masks continue.
    CHECK(second.epochs == std::vector<std::uint64_t>{0, 1, 2});
    CHECK(weights_of(parts) == weights_of(whole));

    // initial_epoch counts over the whole training, as a checkpoint does.
    model_t explicit_epochs{bw::seed{7}};
    compile(explicit_epochs);
    (void)explicit_epochs.fit(d, {.epochs = 2, .verbose = 0});
    (void)explicit_epochs.fit(d, {.epochs = 5, .initial_epoch = 2, .verbose = 0});
    CHECK(weights_of(explicit_epochs) == weights_of(whole));
}

TEST_CASE("gradients and apply_gradients: summed micro-batches step as accumulate<N>, the mean of means does not") {
    using mlp = bw::Sequential<bw::Input<8>, bw::Dense<16>, bw::ReLU, bw::Dropout<0.2>, bw::Dense<2>>;
    bw_test::Model<mlp> custom{bw::seed{12}}, naive{bw::seed{12}};
    bw_test::Model<mlp, bw::dynamic_batch, bw_test::exec, bw::accumulate<3>> accumulated{bw::seed{12}};
    compile(custom);
    compile(naive);
    compile(accumulated);
    const blob_arrays a = blob_arrays_of(64, 30);
    const std::size_t sizes[] = {7, 25, 32};
    for (int step = 0; step < 4; ++step) {
        bw::gradient_sums total, mean_of_means;
        std::size_t first = 0;
        for (std::size_t n : sizes) {
            const xt::xtensor<float, 2> x = xt::view(a.x, xt::range(first, first + n), xt::all());
            const xt::xtensor<int, 1> y = xt::view(a.y, xt::range(first, first + n));
            first += n;
            total += custom.gradients(x, y);
            (void)accumulated.train_on_batch(x, y);
            // The literal GradientTape port: each batch's mean gradient, averaged over batches.
            bw::gradient_sums g = naive.gradients(x, y);
            for (auto& s : g.sums) s.value /= static_cast<float>(g.samples * 3);
            g.samples = 1;
            mean_of_means += g;
        }
        CHECK(total.samples == 64);
        CHECK(custom.iterations() == static_cast<std::uint64_t>(step));  // gradients change nothing
        custom.apply_gradients(total);
        mean_of_means.samples = 1;
        naive.apply_gradients(mean_of_means);
    }
    CHECK(custom.iterations() == 4);
    const auto w = weights_of(custom), w_acc = weights_of(accumulated), w_naive = weights_of(naive);
    double diff = 0.0, naive_diff = 0.0, norm = 0.0;
    for (std::size_t i = 0; i < w.size(); ++i) {
        diff = std::max(diff, std::fabs(double(w[i]) - w_acc[i]));
        naive_diff = std::max(naive_diff, std::fabs(double(w_naive[i]) - w_acc[i]));
        norm = std::max(norm, std::fabs(double(w_acc[i])));
    }
    CHECK(diff <= 1e-6 * norm);
    CHECK(naive_diff > 1e-3 * norm);

    // Wrong sums change nothing.
    const auto before = weights_of(custom);
    bw::gradient_sums bad = custom.gradients(a.x, a.y);
    bad.sums[0].value(0, 0) = std::nanf("");
    CHECK_THROWS_WITH_AS(custom.apply_gradients(bad), doctest::Contains("not finite"), bw::numeric_error);
    bad.sums.pop_back();
    CHECK_THROWS_WITH_AS(custom.apply_gradients(bad), doctest::Contains("trainable"), bw::shape_error);
    CHECK_THROWS_AS(custom.apply_gradients(bw::gradient_sums{}), bw::usage_error);
    CHECK(weights_of(custom) == before);
    CHECK(custom.iterations() == 4);
}

TEST_CASE("class_weight: Keras's weighting, exact under accumulation and in a captured step") {
    const Dataset d = two_blobs(64, 31);
    const std::map<std::size_t, float> weights{{0, 1.0f}, {1, 3.0f}};
    using mlp = bw::Sequential<bw::Input<8>, bw::Dense<16>, bw::ReLU, bw::Dense<2>>;
    bw_test::Model<mlp> whole{bw::seed{13}}, plain{bw::seed{13}};
    bw_test::Model<mlp, bw::dynamic_batch, bw_test::exec, bw::accumulate<4>> split{bw::seed{13}};
    bw_test::Model<mlp, bw::static_batch<64>> fixed{bw::seed{13}};  // captured where the policy captures
    compile(whole);
    compile(plain);
    compile(split);
    compile(fixed);
    const bw::History hw = whole.fit(d.batch(64), {.epochs = 3, .class_weight = weights, .verbose = 0});
    (void)split.fit(d.batch(16), {.epochs = 3, .class_weight = weights, .verbose = 0});
    (void)fixed.fit(d.batch(64), {.epochs = 3, .class_weight = weights, .verbose = 0});
    const bw::History hp = plain.fit(d.batch(64), {.epochs = 3, .verbose = 0});
    const auto w = weights_of(whole);
    auto max_rel = [&](const std::vector<float>& v) {
        double diff = 0.0, norm = 0.0;
        for (std::size_t i = 0; i < w.size(); ++i) {
            diff = std::max(diff, std::fabs(double(w[i]) - v[i]));
            norm = std::max(norm, std::fabs(double(w[i])));
        }
        return diff / norm;
    };
    CHECK(max_rel(weights_of(split)) <= 1e-6);
    CHECK(max_rel(weights_of(fixed)) <= 1e-6);
    CHECK(max_rel(weights_of(plain)) > 1e-3);  // the weights change training
    // The first epoch's loss, before any update, is the weighted mean over samples.
    CHECK(hw["loss"][0] > hp["loss"][0]);
    // Class weights last as long as fit: afterwards the training loss is the unweighted mean
    // (this network has no dropout or batch norm, so training and inference losses agree).
    const blob_arrays after = blob_arrays_of(32, 33);
    CHECK(whole.gradients(after.x, after.y).loss_sum / 32.0 ==
          doctest::Approx(whole.evaluate(after.x, after.y).loss).epsilon(1e-5));

    // A uniform weight of 2 under plain SGD is a learning rate twice as large.
    bw_test::Model<mlp> doubled{bw::seed{14}}, faster{bw::seed{14}};
    doubled.compile(bw::SGD{{.learning_rate = 0.05f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    faster.compile(bw::SGD{{.learning_rate = 0.1f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    (void)doubled.fit(d.batch(16), {.epochs = 2, .class_weight = {{0, 2.0f}, {1, 2.0f}}, .verbose = 0});
    (void)faster.fit(d.batch(16), {.epochs = 2, .verbose = 0});
    const auto a = weights_of(doubled), b = weights_of(faster);
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-5));

    CHECK_THROWS_WITH_AS(plain.fit(d.batch(16), {.class_weight = {{0, 1.0f}}, .verbose = 0}),
                         doctest::Contains("weights for 1 of the 2 classes"), bw::usage_error);
    CHECK_THROWS_WITH_AS(plain.fit(d.batch(16), {.class_weight = {{0, 1.0f}, {2, 1.0f}}, .verbose = 0}),
                         doctest::Contains("has class 2 but the loss has classes 0..1"), bw::usage_error);
    CHECK_THROWS_WITH_AS(plain.fit(d.batch(16), {.class_weight = {{0, 1.0f}, {1, -1.0f}}, .verbose = 0}),
                         doctest::Contains("finite and >= 0"), bw::usage_error);
}

TEST_CASE("sample_weight: each sample's weight, exact under accumulation, following its sample through shuffles") {
    const blob_arrays a = blob_arrays_of(64, 32);
    // Weights that vary from sample to sample, and the weights of class_weight {1, 3} per sample.
    xt::xtensor<float, 1> varied = xt::zeros<float>({std::size_t{64}});
    xt::xtensor<float, 1> by_class = xt::zeros<float>({std::size_t{64}});
    for (std::size_t i = 0; i < 64; ++i) {
        varied(i) = 0.25f + 0.5f * static_cast<float>(i % 5);
        by_class(i) = a.y(i) == 1 ? 3.0f : 1.0f;
    }
    using mlp = bw::Sequential<bw::Input<8>, bw::Dense<16>, bw::ReLU, bw::Dense<2>>;
    auto max_rel = [](const std::vector<float>& w, const std::vector<float>& v) {
        double diff = 0.0, norm = 0.0;
        for (std::size_t i = 0; i < w.size(); ++i) {
            diff = std::max(diff, std::fabs(double(w[i]) - v[i]));
            norm = std::max(norm, std::fabs(double(w[i])));
        }
        return diff / norm;
    };
    {
        // The weighted mean over the effective batch: whole, in accumulated quarters, and as a
        // static batch (which runs weighted steps eagerly where it would replay graphs).
        const Dataset d(a.x, a.y, varied);
        bw_test::Model<mlp> whole{bw::seed{15}}, plain{bw::seed{15}};
        bw_test::Model<mlp, bw::dynamic_batch, bw_test::exec, bw::accumulate<4>> split{bw::seed{15}};
        bw_test::Model<mlp, bw::static_batch<64>> fixed{bw::seed{15}};
        compile(whole);
        compile(plain);
        compile(split);
        compile(fixed);
        (void)whole.fit(d.batch(64), {.epochs = 3, .verbose = 0});
        (void)split.fit(d.batch(16), {.epochs = 3, .verbose = 0});
        (void)fixed.fit(d.batch(64), {.epochs = 3, .verbose = 0});
        (void)plain.fit(Dataset(a.x, a.y).batch(64), {.epochs = 3, .verbose = 0});
        const auto w = weights_of(whole);
        CHECK(max_rel(w, weights_of(split)) <= 1e-6);
        CHECK(max_rel(w, weights_of(fixed)) <= 1e-6);
        CHECK(max_rel(w, weights_of(plain)) > 1e-3);  // the weights change training
        CHECK_FALSE(fixed.step_captured());
    }
    {
        // A sample's weight travels with it: per-sample weights equal to the class weights give
        // class_weight's training bit for bit, through a dataset shuffled every epoch and through
        // fit on arrays (shuffled, with validation_split taking the weights it holds out).
        model_t by_weight{bw::seed{16}}, by_class_weight{bw::seed{16}};
        compile(by_weight);
        compile(by_class_weight);
        (void)by_weight.fit(Dataset(a.x, a.y, by_class).shuffle(64, bw::seed{2}).batch(16), {.epochs = 3, .verbose = 0});
        (void)by_class_weight.fit(Dataset(a.x, a.y).shuffle(64, bw::seed{2}).batch(16),
                                  {.epochs = 3, .class_weight = {{0, 1.0f}, {1, 3.0f}}, .verbose = 0});
        CHECK(weights_of(by_weight) == weights_of(by_class_weight));

        model_t arrays{bw::seed{17}}, classes{bw::seed{17}};
        compile(arrays);
        compile(classes);
        const bw::History h = arrays.fit(
            a.x, a.y, {.epochs = 2, .batch_size = 8, .validation_split = 0.25, .sample_weight = by_class, .verbose = 0});
        (void)classes.fit(a.x, a.y,
                          {.epochs = 2, .batch_size = 8, .validation_split = 0.25,
                           .class_weight = {{0, 1.0f}, {1, 3.0f}}, .verbose = 0});
        CHECK(weights_of(arrays) == weights_of(classes));
        // The held-out samples' loss is weighted by their weights, unlike class weights.
        const xt::xtensor<float, 2> xv = xt::view(a.x, xt::range(48, 64), xt::all());
        const xt::xtensor<int, 1> yv = xt::view(a.y, xt::range(48, 64));
        const xt::xtensor<float, 1> wv = xt::view(by_class, xt::range(48, 64));
        const bw::logs weighted = arrays.evaluate(xv, yv, wv);
        CHECK(h["val_loss"].back() == doctest::Approx(weighted.loss).epsilon(1e-6));
        CHECK(weighted.loss > arrays.evaluate(xv, yv).loss);
    }
    {
        // evaluate: weights of 1 change nothing, weights of 2 double the loss and not the metric.
        model_t m{bw::seed{18}};
        compile(m);
        const xt::xtensor<float, 1> ones = xt::ones<float>({std::size_t{64}});
        const bw::logs plain = m.evaluate(a.x, a.y);
        const bw::logs one = m.evaluate(a.x, a.y, ones);
        const bw::logs two = m.evaluate(a.x, a.y, xt::xtensor<float, 1>(2.0f * ones), 16);
        CHECK(one.loss == plain.loss);
        CHECK(two.loss == doctest::Approx(2.0 * plain.loss).epsilon(1e-6));
        CHECK(two.values[0] == plain.values[0]);
    }
    {
        // Under SGD a weight of 0 on half the batch is the other half's step at half the rate
        // (the mean stays over all 64 samples), and gradients() scales with the weights.
        bw_test::Model<mlp> half{bw::seed{19}}, first_half{bw::seed{19}};
        half.compile(bw::SGD{{.learning_rate = 0.1f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
        first_half.compile(bw::SGD{{.learning_rate = 0.05f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
        xt::xtensor<float, 1> zeros_after = xt::ones<float>({std::size_t{64}});
        xt::view(zeros_after, xt::range(32, 64)) = 0.0f;
        const xt::xtensor<float, 2> x32 = xt::view(a.x, xt::range(0, 32), xt::all());
        const xt::xtensor<int, 1> y32 = xt::view(a.y, xt::range(0, 32));
        const bw::gradient_sums g1 = half.gradients(x32, y32);
        const bw::gradient_sums g2 = half.gradients(x32, y32, xt::xtensor<float, 1>(2.0f * xt::ones<float>({std::size_t{32}})));
        CHECK(g2.loss_sum == doctest::Approx(2.0 * g1.loss_sum).epsilon(1e-6));
        for (std::size_t v = 0; v < g1.sums.size(); ++v) {
            for (std::size_t i = 0; i < g1.sums[v].value.size(); ++i) {
                CHECK(g2.sums[v].value.flat(i) == doctest::Approx(2.0f * g1.sums[v].value.flat(i)).epsilon(1e-6));
            }
        }
        half.set_position(0, 0);
        const std::vector<float> zeros_after_vector(zeros_after.begin(), zeros_after.end());  // any sized range
        for (int step = 0; step < 3; ++step) {
            (void)half.train_on_batch(a.x, a.y, zeros_after_vector);
            (void)first_half.train_on_batch(x32, y32);
        }
        const auto wa = weights_of(half), wb = weights_of(first_half);
        for (std::size_t i = 0; i < wa.size(); ++i) CHECK(wa[i] == doctest::Approx(wb[i]).epsilon(1e-5));
    }
    {
        // The weighted loss's gradient, against finite differences (through tanh: a ReLU's kink
        // inside the difference's width would be measured instead).
        using smooth = bw::Sequential<bw::Input<8>, bw::Dense<16>, bw::Tanh, bw::Dense<2>>;
        bw_test::Model<smooth> m{bw::seed{20}};
        m.compile(bw::SGD{}, bw::MeanSquaredError{});
        const auto x = bw_test::random_matrix(12, 8, 21);
        const auto y = bw_test::random_matrix(12, 2, 22);
        const xt::xtensor<float, 1> w = xt::view(varied, xt::range(0, 12));
        const bw::testing::gradient_check_report report = bw::testing::check_parameter_gradients(
            m, x, y, {.step = 1e-2f, .tolerance = 2e-2, .max_elements = 24}, w);
        for (const auto& e : report.entries) {
            INFO(e.name << "[" << e.index << "]: analytic " << e.analytic << ", numeric " << e.numeric);
            CHECK(e.error <= e.allowed);
        }
        CHECK(report.checked > 0);
    }
    {
        // Bad weights are refused before anything trains, naming the sample.
        model_t m{bw::seed{21}};
        compile(m);
        const auto before = weights_of(m);
        xt::xtensor<float, 1> bad = varied;
        bad(5) = -1.0f;
        CHECK_THROWS_WITH_AS(Dataset(a.x, a.y, bad), doctest::Contains("sample weight of sample 5 is -1"), bw::data_error);
        CHECK_THROWS_WITH_AS(m.train_on_batch(a.x, a.y, bad), doctest::Contains("finite and >= 0"), bw::data_error);
        bad(5) = std::nanf("");
        CHECK_THROWS_WITH_AS(m.fit(a.x, a.y, {.sample_weight = bad, .verbose = 0}),
                             doctest::Contains("sample weight of sample 5"), bw::data_error);
        const xt::xtensor<float, 1> short_w = xt::view(varied, xt::range(0, 63));
        CHECK_THROWS_WITH_AS(m.fit(a.x, a.y, {.sample_weight = short_w, .verbose = 0}),
                             doctest::Contains("64 samples but 63 sample weights"), bw::data_error);
        CHECK_THROWS_WITH_AS(m.gradients(a.x, a.y, xt::xtensor<float, 2>(xt::ones<float>({64, 1}))),
                             doctest::Contains("shape (n,)"), bw::shape_error);
        CHECK_THROWS_WITH_AS(m.fit(Dataset(a.x, a.y).batch(16), {.sample_weight = varied, .verbose = 0}),
                             doctest::Contains("Dataset(x, y, sample_weight)"), bw::usage_error);
        CHECK_THROWS_WITH_AS((void)Dataset(a.x, a.y, varied).concatenate(Dataset(a.x, a.y)),
                             doctest::Contains("sample weights, or neither"), bw::usage_error);
        CHECK(weights_of(m) == before);
        CHECK(m.iterations() == 0);
    }
}

TEST_CASE("Normalization: adapt sets Keras's per-channel statistics, saved with the weights, it trains badly scaled data") {
    // Three features on very different scales, as in a CSV of raw measurements.
    const std::size_t n = 400;
    xt::xtensor<float, 2> x = bw_test::random_matrix(n, 3, 41);
    xt::xtensor<int, 1> y = xt::zeros<int>({n});
    for (std::size_t i = 0; i < n; ++i) {
        y(i) = x(i, 0) + x(i, 1) > 0.0f ? 1 : 0;
        x(i, 0) = 1000.0f * x(i, 0) + 5000.0f;
        x(i, 1) = 0.001f * x(i, 1) - 2.0f;
        x(i, 2) = 3.0f;  // constant: variance 0, kept finite by Keras's epsilon
    }
    using Net = bw::Sequential<bw::Input<3>, bw::Normalization, bw::Dense<16>, bw::ReLU, bw::Dense<2>>;
    bw_test::Model<Net> m{bw::seed{2}};
    compile(m);
    bw::adapt(m, x);
    const auto w = m.get_weights();
    REQUIRE(w[0].name == "normalization/mean");
    REQUIRE(w[1].name == "normalization/variance");
    for (std::size_t c = 0; c < 3; ++c) {
        double mean = 0.0, var = 0.0;
        for (std::size_t i = 0; i < n; ++i) mean += x(i, c);
        mean /= n;
        for (std::size_t i = 0; i < n; ++i) var += (x(i, c) - mean) * (x(i, c) - mean);
        var /= n;  // biased, as Keras's adapt
        CHECK(w[0].value(c) == doctest::Approx(mean).epsilon(1e-6));
        CHECK(w[1].value(c) == doctest::Approx(var).epsilon(1e-5).scale(1e-12));
    }
    // The same statistics from a dataset, batched or not.
    bw_test::Model<Net> from_dataset{bw::seed{2}};
    compile(from_dataset);
    bw::adapt(from_dataset, Dataset(x, y).batch(37));
    CHECK(from_dataset.get_weights()[0].value == w[0].value);

    // The layer computes (x - mean) / sqrt(variance).
    using Only = bw::Sequential<bw::Input<3>, bw::Normalization>;
    bw_test::Model<Only> norm{bw::seed{1}};
    norm.compile(bw::SGD{}, bw::MeanSquaredError{});
    bw::adapt(norm, x);
    const auto out = norm.predict(xt::xtensor<float, 2>(xt::view(x, xt::range(0, 5), xt::all())));
    for (std::size_t i = 0; i < 5; ++i) {
        CHECK(out(i, 0) == doctest::Approx((x(i, 0) - w[0].value(0)) / std::sqrt(w[1].value(0))).epsilon(1e-4));
        CHECK(out(i, 2) == 0.0f);
    }

    // It trains where the raw features do not.
    (void)m.fit(x, y, {.epochs = 20, .batch_size = 32, .verbose = 0});
    using Raw = bw::Sequential<bw::Input<3>, bw::Dense<16>, bw::ReLU, bw::Dense<2>>;
    bw_test::Model<Raw> raw{bw::seed{2}};
    compile(raw);
    (void)raw.fit(x, y, {.epochs = 20, .batch_size = 32, .verbose = 0});
    const float normalized_accuracy = m.evaluate(x, y)["accuracy"], raw_accuracy = raw.evaluate(x, y)["accuracy"];
    MESSAGE("accuracy with Normalization " << normalized_accuracy << ", on raw features " << raw_accuracy);
    CHECK(normalized_accuracy >= 0.95f);
    CHECK(normalized_accuracy > raw_accuracy + 0.05f);

    // Saved with the weights.
    const auto path = temp_path("normalization.npz");
    m.save_weights(path);
    bw_test::Model<Net> loaded{bw::seed{9}};
    compile(loaded);
    loaded.load_weights(path);
    CHECK(loaded.get_weights()[1].value == m.get_weights()[1].value);
    std::filesystem::remove(path);

    xt::xtensor<float, 2> bad = x;
    bad(7, 1) = std::nanf("");
    CHECK_THROWS_WITH_AS(bw::adapt(m, bad), doctest::Contains("adapt: sample 7 holds a non-finite value"), bw::data_error);
    CHECK_THROWS_WITH_AS(bw::adapt(m, xt::xtensor<float, 2>(xt::zeros<float>({4, 5}))),
                         doctest::Contains("adapt: inputs have shape (4, 5)"), bw::shape_error);
}

TEST_CASE("ProgressBar: lines that fit the terminal, a second's tenths, one line per epoch with verbose = 2") {
    model_t m{bw::seed{9}};
    compile(m);
    // A 40-column terminal: every redraw (the text after each \r) fits in 39 columns, so it
    // never wraps, and lines are padded to clear a longer previous one.
    std::ostringstream tty_out;
    bw::ProgressBar narrow({.out = &tty_out, .interactive = true, .min_interval_seconds = 0.0, .columns = 40});
    (void)m.fit(two_blobs(40, 1).batch(10), {.epochs = 1}, narrow);
    const std::string t = tty_out.str();
    std::size_t redraws = 0;
    for (std::size_t at = t.find('\r'); at != std::string::npos; at = t.find('\r', at + 1)) {
        const std::size_t end = t.find_first_of("\r\n", at + 1);
        const std::size_t length = (end == std::string::npos ? t.size() : end) - at - 1;
        if (t.compare(at + 1, 4, "4/4 ") == 0 && t.find('\n', at) == end) continue;  // the final line may be long
        CHECK(length == 39);
        ++redraws;
    }
    CHECK(redraws >= 4);
    // A short epoch reports its time in tenths of a second, not as "0s".
    CHECK(t.find(" - 0s ") == std::string::npos);
    CHECK(t.find("] - 0.") != std::string::npos);

    // verbose = 2: exactly one line per epoch, nothing redrawn.
    std::ostringstream one_line_out;
    bw::ProgressBar per_epoch({.out = &one_line_out, .one_line = true});
    (void)m.fit(two_blobs(40, 1).batch(10), {.epochs = 3}, per_epoch);
    const std::string o = one_line_out.str();
    CHECK(std::count(o.begin(), o.end(), '\n') == 3);
    CHECK(o.find('\r') == std::string::npos);
    CHECK(o.rfind("Epoch 1/3 - 4 steps - ", 0) == 0);
    CHECK(o.find("Epoch 3/3 - 4 steps - ") != std::string::npos);
}

TEST_CASE("History: a missing series lists those there are") {
    model_t m{bw::seed{9}};
    compile(m);
    const bw::History h = m.fit(two_blobs(20, 1).batch(10), {.epochs = 1, .verbose = 0});
    CHECK_THROWS_WITH_AS((void)h["val_loss"],
                         doctest::Contains("History has no series 'val_loss'; it has accuracy, learning_rate, loss "
                                           "(val_ series need validation_data or validation_split in fit)"),
                         bw::usage_error);
}

TEST_CASE("targets that do not fit the loss: the error names the usual fix") {
    model_t m{bw::seed{1}};
    compile(m);  // SparseCategoricalCrossentropy on Dense<2>
    const xt::xtensor<float, 2> x = bw_test::random_matrix(4, 8, 1);
    const xt::xtensor<float, 2> one_hot = {{1, 0}, {0, 1}, {1, 0}, {0, 1}};
    CHECK_THROWS_WITH_AS(m.train_on_batch(x, one_hot), doctest::Contains("use CategoricalCrossentropy"), bw::shape_error);
    CHECK_THROWS_WITH_AS(m.fit(Dataset(x, one_hot).batch(2), {.verbose = 0}),
                         doctest::Contains("these look like one-hot rows"), bw::shape_error);
    model_t binary{bw::seed{1}};
    binary.compile(bw::Adam{}, bw::BinaryCrossentropy{{.from_logits = true}});
    const xt::xtensor<int, 1> labels = {0, 1, 0, 1};
    CHECK_THROWS_WITH_AS(binary.train_on_batch(x, labels), doctest::Contains("or a binary loss on Dense<1>"),
                         bw::shape_error);
    CHECK(m.iterations() == 0);
    CHECK(binary.iterations() == 0);
}

TEST_CASE("callbacks that set the base learning rate refuse to run under a learning-rate schedule") {
    model_t m{bw::seed{3}};
    compile(m);
    bw::ReduceLROnPlateau plateau({.monitor = "loss"});
    bw::LearningRateScheduler scheduler([](std::uint64_t, float lr) { return lr; });
    const bw::fit_options scheduled{.epochs = 1, .verbose = 0,
                                    .learning_rate_schedule = [](std::uint64_t) { return 1e-3f; }};
    CHECK_THROWS_WITH_AS(m.fit(two_blobs(16, 1).batch(8), scheduled, plateau),
                         doctest::Contains("ReduceLROnPlateau: fit's learning_rate_schedule sets every step's"),
                         bw::usage_error);
    CHECK_THROWS_WITH_AS(m.fit(two_blobs(16, 1).batch(8), scheduled, scheduler),
                         doctest::Contains("LearningRateScheduler: fit's learning_rate_schedule"), bw::usage_error);
    CHECK(m.iterations() == 0);
    // Without a schedule both run.
    CHECK(m.fit(two_blobs(16, 1).batch(8), {.epochs = 1, .verbose = 0}, plateau, scheduler).size() == 1);
}

TEST_CASE("get_weights and set_weights: shaped, named, checked before anything is copied") {
    model_t a{bw::seed{8}}, b{bw::seed{9}};
    compile(a);
    compile(b);
    const auto w = a.get_weights();
    REQUIRE(w.size() == b.get_weights().size());
    CHECK(w[0].name == "dense/kernel");
    CHECK(w[0].value.shape() == std::vector<std::size_t>{8, 16});
    CHECK(w[1].value.shape() == std::vector<std::size_t>{16});
    b.set_weights(w);
    CHECK(weights_of(b) == weights_of(a));
    const xt::xtensor<float, 2> x = bw_test::random_matrix(5, 8, 3);
    CHECK(b.predict(x) == a.predict(x));

    // In order, without names (Keras's set_weights).
    model_t c{bw::seed{10}};
    compile(c);
    auto unnamed = w;
    for (auto& e : unnamed) e.name.clear();
    c.set_weights(unnamed);
    CHECK(weights_of(c) == weights_of(a));

    // A wrong shape or name changes nothing.
    model_t d{bw::seed{11}};
    compile(d);
    const auto before = weights_of(d);
    auto bad = w;
    bad[0].value = xt::zeros<float>({16, 8});
    CHECK_THROWS_WITH_AS(d.set_weights(bad), doctest::Contains("set_weights: array 'dense/kernel'"), bw::shape_error);
    bad = w;
    bad[2].name = "dense_9/kernel";
    CHECK_THROWS_WITH_AS(d.set_weights(bad), doctest::Contains("that this model does not have"), bw::shape_error);
    unnamed.pop_back();
    CHECK_THROWS_WITH_AS(d.set_weights(unnamed), doctest::Contains("unnamed arrays for"), bw::shape_error);
    CHECK(weights_of(d) == before);
}

TEST_CASE("ReduceLROnPlateau follows Keras's rule: factor, patience, cooldown, min_lr") {
    const std::vector<double> flat{1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0};
    {
        scripted_context ctx;
        bw::ReduceLROnPlateau r({.factor = 0.5, .patience = 2});
        run_sequence(r, ctx, flat);
        // Epochs 1 and 2 without improvement: reduce at 2, then at 4 and 6.
        REQUIRE(r.reductions().size() == 3);
        CHECK(r.reductions()[0].epoch == 2u);
        CHECK(r.reductions()[1].epoch == 4u);
        CHECK(r.reductions()[2].epoch == 6u);
        CHECK(ctx.lr == 0.125f);
    }
    {
        // A cooldown of 2 epochs after the reduction at 2: epoch 3 is in cooldown, epoch 4 ends
        // it and counts, epoch 5 reduces again.
        scripted_context ctx;
        bw::ReduceLROnPlateau r({.factor = 0.5, .patience = 2, .cooldown = 2});
        run_sequence(r, ctx, flat);
        REQUIRE(r.reductions().size() == 2);
        CHECK(r.reductions()[1].epoch == 5u);
    }
    {
        scripted_context ctx;
        bw::ReduceLROnPlateau r({.factor = 0.1, .patience = 1, .min_lr = 0.05});
        run_sequence(r, ctx, flat);
        CHECK(ctx.lr == 0.05f);  // 1 -> 0.1 -> 0.05, then no further
        CHECK(r.reductions().size() == 2);
    }
    {
        // Improvements by more than min_delta reset the count.
        scripted_context ctx;
        bw::ReduceLROnPlateau r({.patience = 2});
        run_sequence(r, ctx, {1.0, 0.9, 0.89995, 0.8, 0.79, 0.7});
        CHECK(r.reductions().empty());
    }
    CHECK_THROWS_AS(bw::ReduceLROnPlateau({.factor = 1.0}), bw::usage_error);
}

TEST_CASE("a non-finite loss: an error without TerminateOnNaN, a clean stop with it") {
    using regression = bw::Sequential<bw::Input<2>, bw::Dense<1>>;
    xt::xtensor<float, 2> x = bw_test::random_matrix(64, 2, 1);
    xt::xtensor<float, 2> y = xt::ones<float>({64, 1});
    y(40, 0) = 3e38f;  // squared, this overflows to infinity
    const Dataset d(x, y);
    bw_test::Model<regression> m{bw::seed{1}};
    m.compile(bw::SGD{}, bw::MeanSquaredError{});
    CHECK_THROWS_AS(m.fit(d.batch(8), {.epochs = 2, .verbose = 0}), bw::numeric_error);

    bw_test::Model<regression> t{bw::seed{1}};
    t.compile(bw::SGD{}, bw::MeanSquaredError{});
    bw::TerminateOnNaN guard;
    const bw::History h = t.fit(d.batch(8), {.epochs = 2, .verbose = 0}, guard);
    CHECK(h.stop_reason.find("TerminateOnNaN") != std::string::npos);
    CHECK(t.iterations() == 5);  // batches 0-4 trained; batch 5 holds sample 40
    CHECK(h.size() == 1);
    CHECK(h.steps[0] == 5);
    for (const auto& [n, w] : t.get_weights()) CHECK(xt::all(xt::isfinite(w)));
}

TEST_CASE("a bad label in a dataset is reported with its index in the dataset") {
    model_t m{bw::seed{1}};
    compile(m);
    auto x = bw_test::random_matrix(40, 8, 1);
    xt::xtensor<int, 1> y = xt::zeros<int>({40});
    y(27) = 2;  // two classes: 0 and 1
    try {
        m.fit(Dataset(x, y).shuffle(40, bw::seed{1}).batch(8), {.epochs = 1, .verbose = 0});
        FAIL("label 2 must be refused");
    } catch (const bw::data_error& e) {
        CHECK(e.sample() == 27);
    }
}

TEST_CASE("fit refuses a dataset that does not fit the model, before training") {
    model_t m{bw::seed{1}};
    compile(m);
    xt::xtensor<float, 2> x = xt::zeros<float>({10, 7});
    xt::xtensor<int, 1> y = xt::zeros<int>({10});
    CHECK_THROWS_WITH_AS(m.fit(Dataset(x, y).batch(5), {.verbose = 0}), doctest::Contains("(7,)"), bw::shape_error);
    xt::xtensor<float, 2> x8 = xt::zeros<float>({10, 8});
    xt::xtensor<float, 2> y2 = xt::zeros<float>({10, 2});
    CHECK_THROWS_WITH_AS(m.fit(Dataset(x8, y2).batch(5), {.verbose = 0}), doctest::Contains("one class index"),
                         bw::shape_error);
    CHECK(m.iterations() == 0);
}

TEST_CASE("static batch: a ragged tail is padded and masked, or dropped and reported") {
    const Dataset data = two_blobs(40, 1).batch(16);  // 16, 16, 8
    bw_test::Model<net, bw::static_batch<16>> padded{bw::seed{1}};
    compile(padded);
    const bw::History h = padded.fit(data, {.epochs = 2, .verbose = 0});
    CHECK(h.samples == std::vector<std::size_t>{40, 40});
    CHECK(h.dropped_samples == std::vector<std::size_t>{0, 0});
    CHECK(padded.iterations() == 6);

    bw_test::Model<net, bw::static_batch<16, bw::ragged_tail::drop>> dropping{bw::seed{1}};
    compile(dropping);
    const bw::History d = dropping.fit(data, {.epochs = 2, .verbose = 0});
    CHECK(d.dropped_samples == std::vector<std::size_t>{8, 8});
    CHECK(d.samples == std::vector<std::size_t>{32, 32});
    CHECK(dropping.iterations() == 4);

    // Batches larger than the static batch run as micro-batches of 16 in one optimizer step.
    bw_test::Model<net, bw::static_batch<16>> big{bw::seed{1}};
    compile(big);
    const bw::History b = big.fit(two_blobs(64, 1).batch(32), {.epochs = 1, .verbose = 0});
    CHECK(b.optimizer_steps == std::vector<std::size_t>{2});
    // Inference takes batches of any size, in chunks of 16.
    CHECK(padded.predict(two_blobs(40, 1).batch(40)).shape()[0] == 40);
    CHECK(padded.evaluate(two_blobs(40, 1).batch(33)).samples == 40);
}

TEST_CASE("resume from a checkpoint after epoch k is bit-identical to an uninterrupted run") {
    const Dataset data = two_blobs(100, 9).shuffle(100, bw::seed{4}).batch(12).prefetch(2);
    model_t whole{bw::seed{11}};
    compile(whole);
    whole.fit(data, {.epochs = 4, .verbose = 0});

    const auto path = temp_path("resume_epoch.npz");
    {
        model_t first{bw::seed{11}};
        compile(first);
        bw::ModelCheckpoint save({.filepath = path});
        first.fit(data, {.epochs = 2, .verbose = 0}, save);
        CHECK(save.saved().size() == 2);
    }
    model_t resumed{bw::seed{99}};  // a different seed: the checkpoint's is restored
    compile(resumed);
    resumed.load_checkpoint(path);
    const bw::History h = resumed.fit(data, {.epochs = 4, .verbose = 0});
    CHECK(h.epochs == std::vector<std::uint64_t>{2, 3});
    CHECK(resumed.iterations() == whole.iterations());
    const auto a = weights_of(whole), b = weights_of(resumed);
    REQUIRE(a.size() == b.size());
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    std::filesystem::remove(path);
}

TEST_CASE("resume from a checkpoint taken inside an epoch is bit-identical too") {
    const Dataset data = two_blobs(100, 10).shuffle(100, bw::seed{5}).batch(bw::schedule::cyclic{{8, 20}});
    model_t whole{bw::seed{12}};
    compile(whole);
    whole.fit(data, {.epochs = 3, .verbose = 0});

    const auto path = temp_path("resume_step.npz");
    {
        model_t first{bw::seed{12}};
        compile(first);
        bw::ModelCheckpoint every_step({.filepath = path, .save_freq = 1});
        stop_at stop(1, 2);  // stop after the 2nd batch of epoch 1
        const bw::History h = first.fit(data, {.epochs = 3, .verbose = 0}, every_step, stop);
        CHECK(h.stop_reason == "test stop");
    }
    model_t resumed{bw::seed{12}};
    compile(resumed);
    resumed.load_checkpoint(path);
    resumed.fit(data, {.epochs = 3, .verbose = 0});
    CHECK(resumed.iterations() == whole.iterations());
    const auto a = weights_of(whole), b = weights_of(resumed);
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);

    // A checkpoint needs a matching optimizer, and a weights file is not a checkpoint.
    model_t other{bw::seed{1}};
    other.compile(bw::SGD{{.momentum = 0.9f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    const auto before = weights_of(other);
    CHECK_THROWS_AS(other.load_checkpoint(path), bw::shape_error);
    CHECK(weights_of(other) == before);
    const auto weights_only = temp_path("weights_only.npz");
    whole.save_weights(weights_only);
    CHECK_THROWS_WITH_AS(resumed.load_checkpoint(weights_only), doctest::Contains("use load_weights"), bw::shape_error);
    // load_weights reads the weights out of a full checkpoint.
    model_t reader{bw::seed{3}};
    reader.load_weights(path);
    std::filesystem::remove(path);
    std::filesystem::remove(weights_only);
}

TEST_CASE("ModelCheckpoint writes atomically, per epoch or only when the monitor improves") {
    const auto dir = temp_path("ckpt_dir");
    std::filesystem::create_directories(dir);
    model_t m{bw::seed{6}};
    compile(m);
    bw::ModelCheckpoint every({.filepath = dir / "w_{epoch}.npz", .save_weights_only = true});
    bw::ModelCheckpoint best({.filepath = dir / "best.npz", .monitor = "loss", .save_best_only = true});
    m.fit(two_blobs(64, 1).batch(16), {.epochs = 3, .verbose = 0}, every, best);
    CHECK(every.saved().size() == 3);
    CHECK(std::filesystem::exists(dir / "w_1.npz"));
    CHECK(std::filesystem::exists(dir / "w_3.npz"));
    CHECK(std::filesystem::exists(dir / "best.npz"));
    CHECK(best.saved().size() >= 1);
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
        CHECK(entry.path().filename().string().find(".tmp") == std::string::npos);  // no temporary is left behind
    }
    model_t loaded{bw::seed{7}};
    loaded.load_weights(dir / "w_3.npz");
    CHECK(weights_of(loaded) == weights_of(m));
    std::filesystem::remove_all(dir);
    CHECK_THROWS_AS(bw::ModelCheckpoint({.filepath = ""}), bw::usage_error);
    CHECK_THROWS_WITH_AS(bw::ModelCheckpoint({.filepath = "x.npz", .save_best_only = true, .save_freq = 3}),
                         doctest::Contains("save_best_only needs epoch logs"), bw::usage_error);
}

TEST_CASE("LearningRateScheduler and CsvLogger") {
    model_t m{bw::seed{8}};
    compile(m);
    bw::LearningRateScheduler halve([](std::uint64_t epoch, float lr) { return epoch == 0 ? lr : lr / 2; });
    const auto csv = temp_path("log.csv");
    bw::CsvLogger log({.filename = csv});
    const bw::History h = m.fit(two_blobs(32, 1).batch(16), {.epochs = 3, .validation_data = two_blobs(16, 2).batch(16), .verbose = 0},
                                halve, log);
    CHECK(h["learning_rate"] == std::vector<double>{0.01f, 0.005f, 0.0025f});
    std::ifstream in(csv);
    std::string header, line;
    std::getline(in, header);
    CHECK(header == "epoch,loss,accuracy,val_loss,val_accuracy,learning_rate");
    int rows = 0;
    while (std::getline(in, line)) ++rows;
    CHECK(rows == 3);
    std::filesystem::remove(csv);
    // A log that cannot be written is an io_error naming the file, before any training.
    const auto before = m.iterations();
    bw::CsvLogger unwritable({.filename = temp_path("no_such_dir") / "log.csv"});
    CHECK_THROWS_WITH_AS(m.fit(two_blobs(8, 1).batch(8), {.verbose = 0}, unwritable),
                         doctest::Contains("log.csv"), bw::io_error);
    CHECK(m.iterations() == before);
    bw::LearningRateScheduler broken([](std::uint64_t, float) { return -1.0f; });
    CHECK_THROWS_AS(m.fit(two_blobs(8, 1).batch(8), {.verbose = 0}, broken), bw::usage_error);
}

TEST_CASE("ProgressBar: one line per epoch in a log, redrawn in place on a terminal") {
    model_t m{bw::seed{9}};
    compile(m);
    std::ostringstream log_out;
    bw::ProgressBar log_bar({.out = &log_out, .interactive = false});
    m.fit(two_blobs(40, 1).batch(10), {.epochs = 2, .validation_data = two_blobs(10, 2).batch(10)}, log_bar);
    const std::string s = log_out.str();
    CHECK(s.find("Epoch 1/2\n4/4 [==============================] - ") != std::string::npos);
    CHECK(s.find("/step - loss: ") != std::string::npos);
    CHECK(s.find(" - val_accuracy: ") != std::string::npos);
    CHECK(s.find('\r') == std::string::npos);
    CHECK(s.find("learning_rate") == std::string::npos);

    std::ostringstream tty_out;
    bw::ProgressBar tty_bar({.out = &tty_out, .interactive = true, .min_interval_seconds = 0.0});
    m.fit(two_blobs(40, 1).batch(10), {.epochs = 1}, tty_bar);
    const std::string t = tty_out.str();
    CHECK(t.find("\r1/4 [======>.......................] - ETA: ") != std::string::npos);
    CHECK(t.find("\r4/4 [==============================]") != std::string::npos);
}

// ---- batch-size science: schedules by samples, coupling, the noise scale, the adaptive batch ----

namespace {

using accumulating_t = bw_test::Model<net, bw::dynamic_batch, bw_test::exec, bw::accumulate<4>>;

/// learning rate by samples seen before each logged step.
std::map<std::uint64_t, float> rates_by_sample(const bw::History& h) {
    std::map<std::uint64_t, float> out;
    for (const auto& r : h.optimizer_step_log) out[r.samples_seen] = r.learning_rate;
    return out;
}

}  // namespace

TEST_CASE("the learning rate at sample s is the same for batch 32, batch 128 and accumulate<4> of 32") {
    const Dataset data = two_blobs(512, 21).shuffle(512, bw::seed{2});
    const bw::lr::exponential_decay decay{.initial = 0.01f, .rate = 0.5, .every_samples = 200, .staircase = true};
    const bw::fit_options o{.epochs = 2, .verbose = 0, .learning_rate_schedule = decay};
    model_t small{bw::seed{1}}, large{bw::seed{1}};
    accumulating_t accumulated{bw::seed{1}};
    compile(small);
    compile(large);
    compile(accumulated);
    const bw::History h32 = small.fit(data.batch(32), o);
    const bw::History h128 = large.fit(data.batch(128), o);
    const bw::History hacc = accumulated.fit(data.batch(32), o);
    REQUIRE(h32.optimizer_step_log.size() == 32);
    REQUIRE(h128.optimizer_step_log.size() == 8);
    REQUIRE(hacc.optimizer_step_log.size() == 8);
    for (const bw::History* h : {&h32, &h128, &hacc}) {
        for (const auto& r : h->optimizer_step_log) CHECK(r.learning_rate == decay(r.samples_seen));
        // The epoch's logged rate is the one its last step used.
        CHECK(h->history.at("learning_rate").back() == h->optimizer_step_log.back().learning_rate);
    }
    const auto r32 = rates_by_sample(h32), r128 = rates_by_sample(h128), racc = rates_by_sample(hacc);
    CHECK(r128 == racc);
    for (const auto& [s, lr] : r128) CHECK(r32.at(s) == lr);
    CHECK(r128.at(0) == 0.01f);
    CHECK(r128.at(896) == decay(896));  // 4 halvings by then
    for (std::size_t i = 0; i < h128.optimizer_step_log.size(); ++i) {
        CHECK(hacc.optimizer_step_log[i].batch == 128);
        CHECK(h128.optimizer_step_log[i].batch == 128);
    }
}

TEST_CASE("a batch that grows under a ramp, with linear coupling, logs the rates it used") {
    const bw::schedule::ramp ramp{.from = 8, .to = 64, .over_samples = 800, .multiple_of = 8};
    const Dataset data = two_blobs(400, 22).shuffle(400, bw::seed{3}).batch(ramp);
    CHECK(data.cardinality(0) > data.cardinality(1));  // counted by samples read since training began
    model_t m{bw::seed{2}};
    compile(m);  // Adam at 1e-2
    const bw::History h =
        m.fit(data, {.epochs = 3, .verbose = 0, .coupling = {.rule = bw::coupling_rule::linear, .reference_batch = 8}});
    REQUIRE(!h.optimizer_step_log.empty());
    std::uint64_t seen = 0;
    std::size_t full = 0;
    for (const auto& r : h.optimizer_step_log) {
        CHECK(r.samples_seen == seen);
        // Every batch has the ramp's size at its first sample, but an epoch's ragged last one.
        if (r.batch == ramp(seen)) ++full;
        CHECK(r.learning_rate == static_cast<float>(double{0.01f} * static_cast<double>(r.batch) / 8.0));
        seen += r.batch;
    }
    CHECK(full + 3 >= h.optimizer_step_log.size());
    CHECK(h.optimizer_step_log.front().batch == 8);
    CHECK(h.optimizer_step_log.front().learning_rate == 0.01f);
    CHECK(h.batch_sizes[2].front().first == 64);
    CHECK(h["learning_rate"].back() == h.optimizer_step_log.back().learning_rate);

    // RMSprop adds epsilon inside the root: Adam's rule divides it by k there, and leaves no beta_1.
    model_t r{bw::seed{3}};
    r.compile(bw::RMSprop{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    const bw::History hr = r.fit(two_blobs(64, 3).batch(32), {.epochs = 1, .verbose = 0,
                                                              .coupling = {.rule = bw::coupling_rule::adam_sqrt,
                                                                           .reference_batch = 8}});
    REQUIRE(hr.optimizer_step_log.size() == 2);
    CHECK(hr.optimizer_step_log[0].beta_1 == 0.0f);
    CHECK(hr.optimizer_step_log[0].beta_2 == bw::coupled_decay(0.9f, 4.0));
    CHECK(hr.optimizer_step_log[0].epsilon == static_cast<float>(1e-7f * 0.25));
    CHECK(hr["beta_2"].back() == hr.optimizer_step_log.back().beta_2);
    // fit's rules last as long as fit: a later call without them trains at the plain rate.
    const bw::History after = r.fit(two_blobs(64, 3).batch(32), {.epochs = 1, .verbose = 0});
    CHECK(after.optimizer_step_log.empty());
    CHECK(after["learning_rate"].back() == 0.001f);

    // Smith et al.'s converter: the batch grows by the factor the rate would have fallen, and
    // the rate takes over what is left once the batch is at its largest.
    const bw::lr::exponential_decay decay{.initial = 0.1f, .rate = 0.2, .every_samples = 1000, .staircase = true};
    const bw::schedule::from_lr_decay grow{.decay = decay, .initial_batch = 32, .max_batch = 1024};
    CHECK(grow(0) == 32);
    CHECK(grow(1000) == 160);
    CHECK(grow(2000) == 800);
    CHECK(grow(3000) == 1024);
    const auto lr = grow.learning_rate();
    CHECK(lr(0) == 0.1f);
    CHECK(std::fabs(lr(2000) - 0.1f) < 1e-6f);
    CHECK(lr(3000) == doctest::Approx(decay(3000) * 1024.0 / 32.0));
    CHECK_THROWS_AS((void)bw::schedule::from_lr_decay{}(0), bw::usage_error);
}

TEST_CASE("resume from a checkpoint taken mid-ramp, with coupling and warmup, is bit-identical") {
    const Dataset data =
        two_blobs(200, 23).shuffle(200, bw::seed{4}).batch(bw::schedule::ramp{.from = 4, .to = 48, .over_samples = 500,
                                                                                .shape = bw::schedule::ramp_shape::geometric});
    const bw::fit_options o{.epochs = 4, .verbose = 0,
                            .coupling = {.rule = bw::coupling_rule::sqrt, .reference_batch = 4, .warmup_samples = 300}};
    model_t whole{bw::seed{13}};
    compile(whole);
    const bw::History all = whole.fit(data, o);

    const auto path = temp_path("resume_ramp.npz");
    {
        model_t first{bw::seed{13}};
        compile(first);
        bw::ModelCheckpoint every_step({.filepath = path, .save_freq = 1});
        stop_at stop(1, 3);  // inside epoch 1, while the batch is still growing
        first.fit(data, o, every_step, stop);
    }
    model_t resumed{bw::seed{13}};
    compile(resumed);
    resumed.load_checkpoint(path);
    const bw::History rest = resumed.fit(data, o);
    CHECK(resumed.iterations() == whole.iterations());
    const auto a = weights_of(whole), b = weights_of(resumed);
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    // The resumed steps used the rates and sizes the unbroken run used for the same steps.
    REQUIRE(rest.optimizer_step_log.size() < all.optimizer_step_log.size());
    const std::size_t offset = all.optimizer_step_log.size() - rest.optimizer_step_log.size();
    for (std::size_t i = 0; i < rest.optimizer_step_log.size(); ++i) {
        CHECK(rest.optimizer_step_log[i].samples_seen == all.optimizer_step_log[offset + i].samples_seen);
        CHECK(rest.optimizer_step_log[i].learning_rate == all.optimizer_step_log[offset + i].learning_rate);
    }
    std::filesystem::remove(path);
}

namespace {
/// Step times dominated by a fixed cost, so that larger batches promise more goodput.
bw::step_time_table overhead_bound_times() { return bw::step_time_table({{8, 1.0e-3}, {16, 1.02e-3}, {64, 1.1e-3}}); }
}  // namespace

TEST_CASE("the adaptive batch follows the noise scale, and resumes bit-identically from a checkpoint") {
    const Dataset shuffled = two_blobs(240, 24).shuffle(240, bw::seed{5});
    auto run = [&](model_t& m, bw::adaptive_batch& adaptive, bw::gradient_noise_scale<bw_test::exec>& gns,
                   auto&... callbacks) {
        m.add_step_observer(gns);
        m.add_checkpoint_state(gns);
        m.add_checkpoint_state(adaptive);
        return m.fit(shuffled.batch(adaptive.schedule()), {.epochs = 4, .verbose = 0}, adaptive, callbacks...);
    };
    const bw::adaptive_batch::options o{.initial_batch = 8, .min_batch = 8, .max_batch = 64, .hysteresis = 0.1};
    model_t whole{bw::seed{14}};
    compile(whole);
    bw::adaptive_batch adaptive(overhead_bound_times(), o);
    bw::gradient_noise_scale<bw_test::exec> gns;
    const bw::History h = run(whole, adaptive, gns);
    // The noise scale is logged every epoch, and the batch changed at most once per epoch.
    REQUIRE(h.history.count("noise_scale") == 1);
    for (const double v : h["noise_scale"]) CHECK(std::isfinite(v));
    CHECK(h["noise_scale_micro_batch_steps"] == std::vector<double>{0.0, 0.0, 0.0, 0.0});
    REQUIRE(adaptive.decisions().size() == 4);
    CHECK(adaptive.decisions()[0].from == 8);
    CHECK(adaptive.decisions()[0].to > 8);
    for (std::size_t e = 0; e < 4; ++e) {
        CHECK(h.batch_sizes[e].front().first == adaptive.size(e));
        CHECK(adaptive.decisions()[e].from == adaptive.size(e));
    }

    const auto path = temp_path("resume_adaptive.npz");
    {
        model_t first{bw::seed{14}};
        compile(first);
        bw::adaptive_batch a(overhead_bound_times(), o);
        bw::gradient_noise_scale<bw_test::exec> g;
        bw::ModelCheckpoint every_step({.filepath = path, .save_freq = 1});
        stop_at stop(2, 1);
        run(first, a, g, every_step, stop);
    }
    model_t resumed{bw::seed{14}};
    compile(resumed);
    bw::adaptive_batch a2(bw::step_time_table({{8, 1.0}, {16, 9.0}}), o);  // replaced by the checkpoint's
    bw::gradient_noise_scale<bw_test::exec> g2;
    resumed.add_step_observer(g2);
    resumed.add_checkpoint_state(g2);
    resumed.add_checkpoint_state(a2);
    resumed.load_checkpoint(path);
    CHECK(a2.times().points() == overhead_bound_times().points());
    resumed.fit(shuffled.batch(a2.schedule()), {.epochs = 4, .verbose = 0}, a2);
    CHECK(resumed.iterations() == whole.iterations());
    const auto w1 = weights_of(whole), w2 = weights_of(resumed);
    CHECK(std::memcmp(w1.data(), w2.data(), w1.size() * sizeof(float)) == 0);
    CHECK(a2.size(3) == adaptive.size(3));
    CHECK(g2.value() == gns.value());

    // A checkpoint without the added state, or with a state that cannot be, changes nothing.
    model_t plain{bw::seed{15}};
    compile(plain);
    const auto plain_path = temp_path("plain.npz");
    plain.save_checkpoint(plain_path);
    const auto before = weights_of(resumed);
    CHECK_THROWS_WITH_AS(resumed.load_checkpoint(plain_path), doctest::Contains("state/gradient_noise_scale"),
                         bw::shape_error);
    CHECK(weights_of(resumed) == before);
    std::filesystem::remove(plain_path);
    std::filesystem::remove(path);
}

TEST_CASE("adaptive batch and step times: errors, and measuring leaves the model as it was") {
    CHECK_THROWS_AS(bw::step_time_table({{8, 1.0}}), bw::usage_error);
    CHECK_THROWS_AS(bw::step_time_table({{8, 1.0}, {8, 2.0}}), bw::usage_error);
    CHECK_THROWS_AS(bw::step_time_table({{8, 1.0}, {16, -1.0}}), bw::usage_error);
    const bw::step_time_table t({{10, 1.0}, {20, 2.0}, {40, 3.0}});
    CHECK(t.seconds(15) == doctest::Approx(1.5));
    CHECK(t.seconds(80) == doctest::Approx(5.0));
    CHECK(t.seconds(1) == doctest::Approx(1.0));  // never below the fastest measured step
    CHECK_THROWS_AS(bw::adaptive_batch(t, {.min_batch = 64, .max_batch = 32}), bw::usage_error);

    // Without a registered noise scale the adaptive batch has nothing to decide from.
    model_t m{bw::seed{16}};
    compile(m);
    bw::adaptive_batch adaptive(t, {.initial_batch = 16});
    CHECK_THROWS_WITH_AS(m.fit(two_blobs(64, 1).batch(adaptive.schedule()), {.verbose = 0}, adaptive),
                         doctest::Contains("register a gradient_noise_scale"), bw::usage_error);

    // Timing steps goes through a checkpoint: afterwards the model trains exactly as one that
    // was never timed.
    const Dataset pool = two_blobs(256, 9).shuffle(256, bw::seed{2});
    model_t timed{bw::seed{17}}, untimed{bw::seed{17}};
    compile(timed);
    compile(untimed);
    const bw::step_time_table measured = bw::measure_step_times(timed, pool, {8, 32, 64}, temp_path("timing.npz"), 2);
    CHECK(measured.points().size() == 3);
    for (const auto& [b, seconds] : measured.points()) CHECK(seconds > 0.0);
    CHECK(timed.iterations() == 0);
    CHECK(!std::filesystem::exists(temp_path("timing.npz")));
    const Dataset data = two_blobs(96, 5).shuffle(96, bw::seed{1}).batch(16);
    timed.fit(data, {.epochs = 2, .verbose = 0});
    untimed.fit(data, {.epochs = 2, .verbose = 0});
    CHECK(weights_of(timed) == weights_of(untimed));
    // After a fit, too: the next fit starts at epoch 0 as it would have, not where timing left it,
    // and a checkpoint taken after timing holds the position it would have held.
    (void)bw::measure_step_times(timed, pool, {8, 16}, temp_path("timing.npz"), 2);
    const auto after_timing = temp_path("after_timing.npz"), untimed_cp = temp_path("untimed.npz");
    timed.save_checkpoint(after_timing);
    untimed.save_checkpoint(untimed_cp);
    const auto position = [](const std::filesystem::path& p) {
        for (const auto& [name, a] : bw::data::read_npz(p)) {
            if (name == "training/position") return a.integers;
        }
        return std::vector<std::int64_t>{};
    };
    CHECK(position(after_timing) == position(untimed_cp));
    const bw::History again = timed.fit(data, {.epochs = 1, .verbose = 0});
    untimed.fit(data, {.epochs = 1, .verbose = 0});
    CHECK(again.epochs == std::vector<std::uint64_t>{0});
    CHECK(weights_of(timed) == weights_of(untimed));
    // A resume point loaded before timing is still pending after it.
    timed.load_checkpoint(after_timing);
    (void)bw::measure_step_times(timed, pool, {8, 16}, temp_path("timing.npz"), 2);
    CHECK(timed.resume_pending());
    std::filesystem::remove(after_timing);
    std::filesystem::remove(untimed_cp);
    CHECK_THROWS_AS(bw::measure_step_times(timed, pool.batch(8), {8, 16}, temp_path("timing.npz")), bw::usage_error);
    CHECK_THROWS_AS(bw::measure_step_times(timed, pool, {8, 128}, temp_path("timing.npz")), bw::shape_error);
}

TEST_CASE("batch-size science errors: a schedule's bad rate, bad ramps, and saved states that cannot be") {
    // A learning-rate schedule that gives NaN stops before the step: nothing is applied.
    model_t m{bw::seed{18}};
    compile(m);
    const auto before = weights_of(m);
    CHECK_THROWS_WITH_AS(m.fit(two_blobs(32, 1).batch(16),
                               {.verbose = 0, .learning_rate_schedule = [](std::uint64_t) { return NAN; }}),
                         doctest::Contains("learning-rate schedule gave nan"), bw::usage_error);
    CHECK(m.iterations() == 0);
    CHECK(!m.window_open());
    CHECK(weights_of(m) == before);
    CHECK_THROWS_AS((void)bw::schedule::ramp{.from = 0}(0), bw::usage_error);
    CHECK_THROWS_AS((void)two_blobs(8, 1).batch(bw::schedule::ramp{.multiple_of = 0}), bw::usage_error);
    CHECK_THROWS_AS((void)bw::lr::exponential_decay{}(10), bw::usage_error);

    // Two states under one name, and a state whose saved values it could not have written.
    bw::gradient_noise_scale<bw_test::exec> gns, other;
    m.add_step_observer(gns);
    m.add_checkpoint_state(gns);
    CHECK_THROWS_WITH_AS(m.add_checkpoint_state(other), doctest::Contains("already added"), bw::usage_error);
    m.fit(two_blobs(64, 2).batch(16), {.verbose = 0});
    const auto path = temp_path("bad_state.npz");
    m.save_checkpoint(path);
    auto arrays = bw::data::read_npz(path);
    for (auto& [name, a] : arrays) {
        if (name == "state/gradient_noise_scale") a.integers[4] = std::bit_cast<std::int64_t>(-1.0);  // a count
    }
    bw::data::write_npz(path, arrays);
    model_t fresh{bw::seed{19}};
    compile(fresh);
    bw::gradient_noise_scale<bw_test::exec> restored;
    fresh.add_checkpoint_state(restored);
    const auto fresh_weights = weights_of(fresh);
    CHECK_THROWS_WITH_AS(fresh.load_checkpoint(path), doctest::Contains("is not a count"), bw::io_error);
    CHECK(weights_of(fresh) == fresh_weights);
    CHECK(fresh.iterations() == 0);
    std::filesystem::remove(path);
}

TEST_CASE("fit refuses data that yields no samples before anything changes, as evaluate does") {
    model_t m{bw::seed{1}};
    compile(m);
    const Dataset data = two_blobs(16, 1);
    const std::vector<float> before = weights_of(m);
    // evaluate's answer to the same data, which fit now shares: a data_error.
    CHECK_THROWS_WITH_AS((void)m.evaluate(data.take(0).batch(4)), doctest::Contains("yielded no samples"),
                         bw::data_error);
    CHECK_THROWS_WITH_AS(m.fit(data.take(0).batch(4), {.verbose = 0}),
                         doctest::Contains("fit: epoch 0 of the training data yields no samples"), bw::data_error);
    CHECK_THROWS_AS(m.fit(data.batch(4).skip(100), {.verbose = 0}), bw::data_error);
    CHECK_THROWS_AS(m.fit(data.skip(16), {.batch_size = 4, .verbose = 0}), bw::data_error);
    CHECK_THROWS_AS(m.fit(data.batch(32, true), {.epochs = 2, .verbose = 0}), bw::data_error);
    // Empty validation data is refused up front, not after an epoch has trained.
    CHECK_THROWS_WITH_AS(m.fit(data.batch(4), {.validation_data = data.take(0).batch(4), .verbose = 0}),
                         doctest::Contains("fit: the validation data yields no samples"), bw::data_error);
    CHECK(m.iterations() == 0);
    CHECK(weights_of(m) == before);
    // Arrays of no samples.
    const xt::xtensor<float, 2> no_x = xt::zeros<float>({std::size_t{0}, std::size_t{8}});
    const xt::xtensor<int, 1> no_y = xt::zeros<int>({std::size_t{0}});
    CHECK_THROWS_WITH_AS(m.fit(no_x, no_y, {.verbose = 0}), doctest::Contains("no samples"), bw::data_error);
    CHECK(m.iterations() == 0);

    // A static batch that drops its ragged tail can leave out every sample of an epoch.
    bw_test::Model<net, bw::static_batch<32, bw::ragged_tail::drop>> dropping{bw::seed{1}};
    compile(dropping);
    CHECK_THROWS_WITH_AS(dropping.fit(data.batch(10), {.verbose = 0}),
                         doctest::Contains("ragged_tail::drop left out all 16 samples of epoch 0"), bw::data_error);

    // A later epoch that a schedule leaves empty stops fit there; what was trained stays.
    const bw::schedule::phased grows{{0, 4}, {1, 32}};
    CHECK_THROWS_WITH_AS(m.fit(data.batch(grows, true), {.epochs = 3, .verbose = 0}),
                         doctest::Contains("epoch 1 of the training data"), bw::data_error);
    CHECK(m.iterations() == 4);
}

TEST_CASE("fit accepts the batch size max_batch_for gives, even for a budget no data fills") {
    model_t m{bw::seed{1}};
    compile(m);
    const std::size_t most = m.max_batch_for(SIZE_MAX);
    CHECK(most <= bw::max_batch_size);
    const bw::History h = m.fit(two_blobs(16, 1).batch(most), {.verbose = 0});
    CHECK(h.batch_sizes[0] == std::vector<std::pair<std::size_t, std::size_t>>{{16, 1}});
}

namespace {
/// Sets one value of a variable to `value` after the first batch of epoch `epoch`, as a weight
/// overflowing in training would, where the loss does not see it.
template <class M>
struct poison final : bw::Callback {
    M& model;
    std::string variable;
    std::size_t index;
    float value;
    std::uint64_t epoch, current = 0, epochs_ended = 0;
    poison(M& m, std::string v, std::size_t i, float x, std::uint64_t e)
        : model(m), variable(std::move(v)), index(i), value(x), epoch(e) {}
    void on_epoch_begin(bw::training_context&, std::uint64_t e, std::size_t) override { current = e; }
    void on_epoch_end(bw::training_context&, std::uint64_t, const bw::epoch_logs&) override { ++epochs_ended; }
    void on_batch_end(bw::training_context&, std::uint64_t s, const bw::logs& l, const bw::logs&) override {
        REQUIRE(std::isfinite(l.loss));
        if (current != epoch || s != 0) return;
        for (const auto& v : model.variables()) {
            if (v.name == variable) bw_test::set_element(v.ref.value, index, value);
        }
    }
};
}  // namespace

TEST_CASE("fit stops at the end of an epoch in which a variable became non-finite, naming it") {
    SUBCASE("a kernel or bias behind a ReLU: -inf silences the unit, the loss stays finite") {
        using relu_net = bw::Sequential<bw::Input<8>, bw::Dense<16>, bw::ReLU, bw::Dense<2>>;
        bw_test::Model<relu_net> m{bw::seed{2}};
        compile(m);
        poison<decltype(m)> p(m, "dense/bias", 3, -std::numeric_limits<float>::infinity(), 1);
        // The optimizer's step may turn -inf into NaN by the end of the epoch: either is named.
        try {
            (void)m.fit(two_blobs(64, 1).batch(8), {.epochs = 3, .verbose = 0}, p);
            FAIL("fit must refuse a non-finite weight");
        } catch (const bw::numeric_error& e) {
            const std::string what = e.what();
            CHECK(what.find("fit: after epoch 1, variable dense/bias holds a non-finite value (") == 0);
            CHECK(what.find(") at index 3;") != std::string::npos);
        }
        CHECK(p.epochs_ended == 1);  // epoch 1's callbacks (a checkpoint) never saw the weight
    }
    SUBCASE("a non-trainable variable: batch norm's moving statistics") {
        model_t m{bw::seed{2}};
        compile(m);
        poison<model_t> p(m, "batch_normalization/moving_mean", 5, std::numeric_limits<float>::quiet_NaN(), 0);
        CHECK_THROWS_WITH_AS(m.fit(two_blobs(64, 1).batch(8), {.epochs = 2, .verbose = 0}, p),
                             doctest::Contains("after epoch 0, variable batch_normalization/moving_mean holds a "
                                               "non-finite value (nan) at index 5"),
                             bw::numeric_error);
        CHECK(p.epochs_ended == 0);
    }
}

TEST_CASE("a float label must be an integer exactly: no truncation as Keras casts, and the value in full") {
    model_t m{bw::seed{1}};
    compile(m);
    auto x = bw_test::random_matrix(4, 8, 1);
    auto refused = [&](float label, const std::string& shown) {
        xt::xtensor<float, 1> y = {0.0f, 1.0f, label, 0.0f};
        const std::string expected = "fit: label " + shown + " of sample 2 is not a class index in [0, 2)";
        CHECK_THROWS_WITH_AS(m.fit(x, y, {.batch_size = 4, .shuffle = false, .verbose = 0}),
                             doctest::Contains(expected.c_str()), bw::data_error);
    };
    refused(0.9999f, "0.9999");
    refused(0.5f, "0.5");
    // The float just below 1 was printed "1.000000", a message that contradicted itself.
    refused(std::nextafter(1.0f, 0.0f), "0.99999994");
    refused(2.0f, "2");
    CHECK(m.iterations() == 0);
    // 0.99999999 is 1.0f once it is a float: class 1, trained.
    const xt::xtensor<double, 1> close = {0.0, 1.0, 0.99999999, 0.0};
    (void)m.fit(x, close, {.batch_size = 4, .verbose = 0});
    CHECK(m.iterations() == 1);
}

TEST_CASE("adaptive batch sizes from the user cannot overflow") {
    const bw::step_time_table t({{10, 1.0}, {20, 2.0}});
    // max_batch = SIZE_MAX made the candidates' doubling wrap to 0 and loop for ever.
    CHECK_THROWS_WITH_AS(bw::adaptive_batch(t, {.min_batch = 8, .max_batch = SIZE_MAX}),
                         doctest::Contains("adaptive_batch: a batch size of 18446744073709551615"), bw::usage_error);
    model_t m{bw::seed{1}};
    compile(m);
    const Dataset pool = two_blobs(64, 1);
    // 16 x (2 + steps) wrapped to a small count, and measuring went ahead.
    CHECK_THROWS_AS(bw::measure_step_times(m, pool, {8, 16}, temp_path("timing.npz"), SIZE_MAX / 8), bw::shape_error);
    CHECK_THROWS_AS(bw::measure_step_times(m, pool, {8, SIZE_MAX}, temp_path("timing.npz")), bw::usage_error);
}
