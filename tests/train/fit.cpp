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

std::vector<float> weights_of(const model_t& m) {
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
                                {.epochs = 6, .validation = val.batch(50), .verbose = 0});
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
    m.fit(two_blobs(10, 4).batch(4), {.epochs = 2, .validation = two_blobs(4, 5).batch(4), .verbose = 0}, r);
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
    CHECK(h.size() == 4);  // best at epoch 1, then 3 epochs without improvement
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
                                 {.epochs = 30, .validation = two_blobs(60, 8).batch(60), .verbose = 0}, snap, restore);
    REQUIRE(restore.best());
    // Validation accuracy saturates long before 30 epochs, so training must stop early, and the
    // weights put back are those of an earlier epoch than the last one trained.
    REQUIRE(h2.size() < 30);
    CHECK(h2.stop_reason.find("restored the weights of epoch") != std::string::npos);
    CHECK(restore.best_epoch() + 1 < h2.size());
    std::vector<float> now;
    for (const auto& [n, v] : r.get_weights()) now.insert(now.end(), v.begin(), v.end());
    CHECK(now == snap.per_epoch[restore.best_epoch()]);
    CHECK(now != snap.per_epoch.back());
    bw::EarlyStopping missing({.monitor = "val_loss"});
    CHECK_THROWS_WITH_AS(m.fit(two_blobs(8, 1).batch(8), {.epochs = 1, .verbose = 0}, missing),
                         doctest::Contains("needs validation data"), bw::usage_error);
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
    CHECK_THROWS_AS(m.fit(two_blobs(10, 1), {.verbose = 0}), bw::usage_error);
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
        CHECK(entry.path().extension() != ".tmp");  // no temporary file is left behind
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
    const bw::History h = m.fit(two_blobs(32, 1).batch(16), {.epochs = 3, .validation = two_blobs(16, 2).batch(16), .verbose = 0},
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
    m.fit(two_blobs(40, 1).batch(10), {.epochs = 2, .validation = two_blobs(10, 2).batch(10)}, log_bar);
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
    CHECK_THROWS_AS(two_blobs(8, 1).batch(bw::schedule::ramp{.multiple_of = 0}), bw::usage_error);
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
