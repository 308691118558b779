// DESIGN decisions 4, 6 and 8: an optimizer step over micro-batches n1..nk equals the step of one
// batch of n1+..+nk (relative 1e-5), for every way of splitting, every optimizer family, with and
// without dropout; out-of-memory splitting keeps the result; ghost batch norm is split-invariant
// at its virtual batch; accumulator types agree.
#include "../gradient_check.hpp"
#include "../recording_accumulation.hpp"

#include <cmath>
#include <random>
#include <type_traits>
#include <utility>
#include <vector>

namespace bw = batchwise;
using bw::data::Dataset;

namespace {

constexpr std::size_t N = 128;

using plain_net = bw::Sequential<bw::Input<12>, bw::Dense<24>, bw::Tanh, bw::Dense<16>, bw::ReLU, bw::Dense<4>>;
using dropout_net = bw::Sequential<bw::Input<12>, bw::Dense<24>, bw::Tanh, bw::Dropout<0.3f>, bw::Dense<16>,
                                   bw::ReLU, bw::Dropout<0.2f>, bw::Dense<4>>;

/// Equal to relative 1e-5, per variable: ||a - b|| / ||a|| (2-norm). With `elementwise`, also
/// max |a - b| / max |a|. Both optimizers see gradients whose float rounding depends on the
/// summation order (one GEMM over 128 rows, or four over 32); SGD passes that on unchanged
/// (measured max-norm 2e-7), Adam divides by sqrt(v) and so amplifies the rounding of gradients
/// that nearly cancel to ~1e-3 of the learning rate on a few elements (measured max-norm 1.1e-5,
/// 2-norm 1.7e-6): the 2-norm bound holds for every optimizer, the element bound for SGD's.
template <class M1, class M2>
void check_close(const M1& a, const M2& b, bool elementwise = false, double rel = 1e-5) {
    const auto wa = a.get_weights(), wb = b.get_weights();
    REQUIRE(wa.size() == wb.size());
    for (std::size_t v = 0; v < wa.size(); ++v) {
        double max_diff = 0.0, max_value = 0.0, sq_diff = 0.0, sq_value = 0.0;
        for (std::size_t i = 0; i < wa[v].value.size(); ++i) {
            const double x = wa[v].value.flat(i), d = x - double(wb[v].value.flat(i));
            max_diff = std::max(max_diff, std::fabs(d));
            max_value = std::max(max_value, std::fabs(x));
            sq_diff += d * d;
            sq_value += x * x;
        }
        INFO(wa[v].name << ": 2-norm relative difference " << std::sqrt(sq_diff / sq_value)
                         << ", max-norm relative difference " << max_diff / max_value);
        CHECK(std::sqrt(sq_diff) <= rel * std::sqrt(sq_value));
        if (elementwise) CHECK(max_diff <= rel * max_value);
    }
}

struct batch {
    xt::xtensor<float, 2> x;
    xt::xtensor<int, 1> y;
};
batch make_batch(std::size_t n, std::uint64_t s) {
    batch b{bw_test::random_matrix(n, 12, s), xt::zeros<int>({n})};
    for (std::size_t i = 0; i < n; ++i) b.y(i) = static_cast<int>((i * 7 + s) % 4);
    return b;
}
batch rows_of(const batch& b, std::size_t first, std::size_t count) {
    return {xt::view(b.x, xt::range(first, first + count)), xt::view(b.y, xt::range(first, first + count))};
}

template <class M, class Opt>
void compile(M& m, const Opt& opt) {
    m.compile(opt, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
}

/// `steps` optimizer steps: the reference trains each step's N samples as one batch; the other
/// model trains the same samples as micro-batches of the given sizes through an accumulation
/// window set to their count.
template <class Net, class Opt>
void compare_split(const Opt& opt, const std::vector<std::size_t>& sizes, std::size_t steps) {
    bw_test::Model<Net> whole{bw::seed{21}};
    bw_test::Model<Net, bw::dynamic_batch, bw_test::exec, bw::accumulate_runtime<>> split{bw::seed{21}};
    compile(whole, opt);
    compile(split, opt);
    split.set_accumulation({.micro_batches = sizes.size()});
    for (std::size_t s = 0; s < steps; ++s) {
        const batch b = make_batch(N, s + 1);
        whole.train_on_batch(b.x, b.y);
        std::size_t first = 0;
        for (std::size_t n : sizes) {
            const batch part = rows_of(b, first, n);
            split.train_on_batch(part.x, part.y);
            first += n;
        }
        REQUIRE(first == N);
        CHECK_FALSE(split.window_open());
    }
    CHECK(whole.iterations() == steps);
    CHECK(split.iterations() == steps);
    check_close(whole, split, /*elementwise=*/std::is_same_v<Opt, bw::SGD>);
}

template <class Net>
void every_split_every_optimizer() {
    const std::vector<std::vector<std::size_t>> splits{
        {32, 32, 32, 32},         // even
        {96, 32},                 // uneven
        {50, 50, 28},             // ragged last micro-batch
        {1, 63, 7, 57},           // anything
    };
    for (const auto& sizes : splits) {
        INFO("split of " << sizes.size() << " micro-batches, first " << sizes.front());
        for (std::size_t steps : {1, 4}) {
            // Plain SGD: the whole batch steps each Dense kernel inside its gradient GEMM, the
            // split one in a separate pass after the window; with decay, beta = 1 - lr * decay.
            compare_split<Net>(bw::SGD{{.learning_rate = 0.1f}}, sizes, steps);
            compare_split<Net>(bw::SGD{{.learning_rate = 0.1f, .weight_decay = 0.2f}}, sizes, steps);
            compare_split<Net>(bw::SGD{{.learning_rate = 0.05f, .momentum = 0.9f, .nesterov = true}}, sizes, steps);
            compare_split<Net>(bw::Adam{{.learning_rate = 0.01f}}, sizes, steps);
            compare_split<Net>(bw::AdamW{{.learning_rate = 0.01f, .weight_decay = 0.1f}}, sizes, steps);
        }
    }
}

}  // namespace

TEST_CASE("accumulation is exact for every split, optimizer and step count, without dropout") {
    every_split_every_optimizer<plain_net>();
}

TEST_CASE("accumulation is exact with dropout: masks do not depend on the split") {
    every_split_every_optimizer<dropout_net>();
}

TEST_CASE("accumulate_to<N> steps every N samples, splitting a batch that crosses the boundary") {
    bw_test::Model<plain_net> whole{bw::seed{3}};
    bw_test::Model<plain_net, bw::dynamic_batch, bw_test::exec, bw::accumulate_to<100>> to100{bw::seed{3}};
    compile(whole, bw::Adam{});
    compile(to100, bw::Adam{});
    const batch b = make_batch(300, 9);
    for (std::size_t first = 0; first < 300; first += 100) {
        const batch part = rows_of(b, first, 100);
        whole.train_on_batch(part.x, part.y);
    }
    // 300 samples in batches of 64: steps fall inside the 2nd and 4th batches.
    for (std::size_t first = 0; first < 300; first += 64) {
        const batch part = rows_of(b, first, std::min<std::size_t>(64, 300 - first));
        to100.train_on_batch(part.x, part.y);
    }
    CHECK(to100.iterations() == 3);
    CHECK_FALSE(to100.window_open());
    check_close(whole, to100);
}

TEST_CASE("accumulate<K> in fit: a ragged last micro-batch and a partial window at the epoch's end") {
    // 112 samples as 32, 32, 32, 16 with accumulate<4>: one step of 112. 100 samples with
    // accumulate<8>: a window of 4 micro-batches (32, 32, 32, 4) stepped at the epoch's end.
    for (std::size_t n : {112, 100}) {
        const Dataset data = Dataset(make_batch(n, 4).x, make_batch(n, 4).y).shuffle(n, bw::seed{2});
        bw_test::Model<dropout_net> whole{bw::seed{5}};
        compile(whole, bw::Adam{});
        whole.fit(data.batch(n), {.epochs = 3, .verbose = 0});

        bw_test::Model<dropout_net, bw::dynamic_batch, bw_test::exec, bw::accumulate<4>> four{bw::seed{5}};
        bw_test::Model<dropout_net, bw::dynamic_batch, bw_test::exec, bw::accumulate<8>> eight{bw::seed{5}};
        compile(four, bw::Adam{});
        compile(eight, bw::Adam{});
        const bw::History h4 = four.fit(data.batch(32), {.epochs = 3, .verbose = 0});
        const bw::History h8 = eight.fit(data.batch(32), {.epochs = 3, .verbose = 0});
        CHECK(h4.optimizer_steps == std::vector<std::size_t>{1, 1, 1});
        CHECK(h8.optimizer_steps == std::vector<std::size_t>{1, 1, 1});
        CHECK(h4.steps == std::vector<std::size_t>{4, 4, 4});
        check_close(whole, four);
        check_close(whole, eight);
    }
}

TEST_CASE("the optimizer state advances once per optimizer step, not per micro-batch") {
    bw_test::Model<plain_net, bw::dynamic_batch, bw_test::exec, bw::accumulate<4>> m{bw::seed{1}};
    compile(m, bw::Adam{});
    const batch b = make_batch(64, 1);
    for (int i = 0; i < 3; ++i) m.train_on_batch(rows_of(b, 16 * i, 16).x, rows_of(b, 16 * i, 16).y);
    CHECK(m.iterations() == 0);
    CHECK(m.window_open());
    CHECK(m.window_samples() == 48);
    CHECK_THROWS_AS(m.save_checkpoint("unused.npz"), bw::usage_error);
    CHECK_THROWS_AS(m.loss_and_gradients(b.x, b.y), bw::usage_error);
    m.train_on_batch(rows_of(b, 48, 16).x, rows_of(b, 48, 16).y);
    CHECK(m.iterations() == 1);
    CHECK_FALSE(m.apply_accumulated());  // nothing open
    bw_test::Model<plain_net, bw::dynamic_batch, bw_test::exec, bw::accumulate_runtime<>> runtime{bw::seed{1}};
    compile(runtime, bw::Adam{});
    CHECK_THROWS_WITH_AS(runtime.set_accumulation({.micro_batches = 0, .samples = 0}),
                         doctest::Contains("needs micro_batches > 0 or samples > 0"), bw::usage_error);
    m.train_on_batch(rows_of(b, 0, 5).x, rows_of(b, 0, 5).y);
    CHECK(m.apply_accumulated());        // a partial window, stepped with its 5 samples
    CHECK(m.iterations() == 2);
}

TEST_CASE("double and compensated accumulators agree with float sums") {
    const std::vector<std::size_t> sizes{16, 16, 16, 16, 16, 16, 16, 16};
    bw_test::Model<plain_net> whole{bw::seed{8}};
    compile(whole, bw::SGD{{.learning_rate = 0.1f}});
    bw_test::Model<plain_net, bw::dynamic_batch, bw_test::exec, bw::accumulate<8, double>> d{bw::seed{8}};
    bw_test::Model<plain_net, bw::dynamic_batch, bw_test::exec, bw::accumulate<8, bw::compensated_float>> k{bw::seed{8}};
    compile(d, bw::SGD{{.learning_rate = 0.1f}});
    compile(k, bw::SGD{{.learning_rate = 0.1f}});
    for (std::uint64_t s = 0; s < 3; ++s) {
        const batch b = make_batch(N, 40 + s);
        whole.train_on_batch(b.x, b.y);
        for (std::size_t i = 0; i < 8; ++i) {
            d.train_on_batch(rows_of(b, 16 * i, 16).x, rows_of(b, 16 * i, 16).y);
            k.train_on_batch(rows_of(b, 16 * i, 16).x, rows_of(b, 16 * i, 16).y);
        }
    }
    check_close(whole, d);
    check_close(whole, k);
    static_assert(decltype(d)::estimate_memory(1, 0).accumulator_bytes == 8 * decltype(d)::network_type::trainable_count);
}

TEST_CASE("ghost batch norm: statistics per virtual batch, moving averages from the whole step") {
    // No bias before batch norm: its gradient is zero in exact arithmetic, so the bias would only
    // carry rounding noise (Keras users drop it for the same reason).
    using ghost = bw::Sequential<bw::Input<12>, bw::Dense<16, bw::no_bias>, bw::BatchNormalization<0.9f, 1e-3f, 16>,
                                 bw::ReLU, bw::Dense<4>>;
    // Split points at multiples of the virtual batch (16) leave every statistic unchanged.
    bw_test::Model<ghost> whole{bw::seed{2}};
    bw_test::Model<ghost, bw::dynamic_batch, bw_test::exec, bw::accumulate<3>> split{bw::seed{2}};
    compile(whole, bw::Adam{});
    compile(split, bw::Adam{});
    for (std::uint64_t s = 0; s < 3; ++s) {
        const batch b = make_batch(96, 60 + s);
        whole.train_on_batch(b.x, b.y);
        split.train_on_batch(rows_of(b, 0, 32).x, rows_of(b, 0, 32).y);
        split.train_on_batch(rows_of(b, 32, 48).x, rows_of(b, 32, 48).y);
        split.train_on_batch(rows_of(b, 80, 16).x, rows_of(b, 80, 16).y);
    }
    check_close(whole, split);  // includes moving mean and variance
    static_assert(decltype(split)::network_type::split_granularity == 16);

    // Without virtual batches the statistics are per micro-batch (documented), and the moving
    // averages still come from the whole step: after one step of two halves they equal those of
    // one batch of both halves.
    using per_micro = bw::Sequential<bw::Input<12>, bw::BatchNormalization<0.5f>>;
    bw_test::Model<per_micro> one{bw::seed{1}};
    bw_test::Model<per_micro, bw::dynamic_batch, bw_test::exec, bw::accumulate<2>> two{bw::seed{1}};
    one.compile(bw::SGD{{.learning_rate = 0.0f}}, bw::MeanSquaredError{});
    two.compile(bw::SGD{{.learning_rate = 0.0f}}, bw::MeanSquaredError{});
    const auto x = bw_test::random_matrix(40, 12, 3, -2.0f, 5.0f);
    const xt::xtensor<float, 2> y = xt::zeros<float>({40, 12});
    one.train_on_batch(x, y);
    const xt::xtensor<float, 2> x1 = xt::view(x, xt::range(0, 25)), x2 = xt::view(x, xt::range(25, 40));
    const xt::xtensor<float, 2> y1 = xt::view(y, xt::range(0, 25)), y2 = xt::view(y, xt::range(25, 40));
    two.train_on_batch(x1, y1);
    two.train_on_batch(x2, y2);
    const auto a = one.get_weights(), b = two.get_weights();
    CHECK(a[2].name == "batch_normalization/moving_mean");
    CHECK(xt::allclose(a[2].value, b[2].value, 1e-5, 1e-6));
    CHECK(xt::allclose(a[3].value, b[3].value, 1e-5, 1e-6));
}

TEST_CASE("out of memory: a budget that forces a split mid-epoch leaves the same weights") {
    using Net = bw::Sequential<bw::Input<12>, bw::Dense<64>, bw::ReLU, bw::Dropout<0.25f>, bw::Dense<64>, bw::ReLU,
                               bw::Dense<4>>;
    const Dataset data = Dataset(make_batch(600, 3).x, make_batch(600, 3).y).shuffle(600, bw::seed{4});
    bw_test::Model<Net> unsplit{bw::seed{6}};
    compile(unsplit, bw::Adam{});
    unsplit.fit(data.batch(bw::schedule::phased{{0, 40}, {1, 200}}), {.epochs = 3, .verbose = 0});

    // A budget that holds a micro-batch of 150 but not 200: epoch 0 (batches of 40) fits, the
    // larger batches of epoch 1 are split in the middle of training, into the 150 that fit.
    bw_test::Model<Net> probe{bw::seed{6}};
    compile(probe, bw::Adam{});
    const std::size_t budget = decltype(probe)::estimate_memory(150, 2).total_bytes();
    bw_test::Model<Net> limited{bw::seed{6}, bw::memory_budget{budget}};
    compile(limited, bw::Adam{});
    struct split_log final : bw::Callback {
        std::vector<bw::micro_batch_split> seen;
        void on_micro_batch_split(bw::training_context&, const bw::micro_batch_split& e) override { seen.push_back(e); }
    } log;
    const bw::History h = limited.fit(data.batch(bw::schedule::phased{{0, 40}, {1, 200}}), {.epochs = 3, .verbose = 0}, log);
    REQUIRE(h.micro_batch_splits.size() == 1);
    CHECK(h.micro_batch_splits[0].from == 200);
    CHECK(h.micro_batch_splits[0].to == 150);
    CHECK(h.micro_batch_splits[0].epoch == 1);
    CHECK(h.micro_batch_splits[0].reason.find("memory budget") != std::string::npos);
    CHECK(log.seen.size() == 1);
    CHECK(h.micro_batch_limit == std::vector<std::size_t>{0, 150, 150});
    CHECK(h.optimizer_steps == std::vector<std::size_t>{15, 3, 3});  // same steps as unsplit
    CHECK(limited.micro_batch_limit() == 150);
    CHECK(limited.memory().total_bytes() <= budget);
    CHECK(limited.iterations() == unsplit.iterations());
    check_close(unsplit, limited);
}

TEST_CASE("out of memory: not even one sample fits, and static batches never split") {
    using Net = bw::Sequential<bw::Input<12>, bw::Dense<64>, bw::ReLU, bw::Dense<4>>;
    using M = bw_test::Model<Net>;
    const std::size_t fixed = M::estimate_memory(0, 0).total_bytes();
    const std::size_t one = M::estimate_memory(1, 0).total_bytes();
    M tight{bw::seed{1}, bw::memory_budget{one}};
    CHECK_THROWS_WITH_AS((void)tight.max_batch_for(one), doctest::Contains("not compiled"), bw::usage_error);
    compile(tight, bw::SGD{});
    CHECK(tight.max_batch_for(one) == 1);
    tight.set_memory_budget(bw::memory_budget{fixed + 10});
    const batch b = make_batch(8, 1);
    // The budget knows at once that no size fits: one error, no halving on the way.
    CHECK_THROWS_WITH_AS(tight.train_on_batch(b.x, b.y), doctest::Contains("not even one sample fits"), bw::out_of_memory);
    CHECK(tight.micro_batch_splits().empty());
    CHECK(tight.iterations() == 0);
    CHECK(tight.max_batch_for(fixed + 10) == 0);
    CHECK(tight.max_batch_for(M::estimate_memory(37, 0).total_bytes()) == 37);

    // A budget below one sample is refused when the model is built, and names the cost of one.
    CHECK_THROWS_WITH_AS((bw_test::Model<Net>{bw::seed{1}, bw::memory_budget{fixed / 2}}),
                         doctest::Contains("one sample needs"), bw::out_of_memory);
    CHECK_THROWS_WITH_AS((bw_test::Model<Net>{bw::seed{1}, bw::memory_budget{one - 1}}),
                         doctest::Contains("one sample needs"), bw::out_of_memory);

    // A step refused by the budget continues at the largest size that fits (300 of 1000), not
    // at the power of two that halving would reach.
    M exact{bw::seed{1}, bw::memory_budget{M::estimate_memory(300, 0).total_bytes()}};
    compile(exact, bw::SGD{});
    const batch big = make_batch(1000, 2);
    (void)exact.train_on_batch(big.x, big.y);
    REQUIRE(exact.micro_batch_splits().size() == 1);
    CHECK(exact.micro_batch_splits()[0].from == 1000);
    CHECK(exact.micro_batch_splits()[0].to == 300);
    CHECK(exact.micro_batch_limit() == 300);
    using S = bw_test::Model<Net, bw::static_batch<64>>;
    CHECK_THROWS_WITH_AS((S{bw::seed{1}, bw::memory_budget{S::estimate_memory(32, 0).total_bytes()}}),
                         doctest::Contains("a static batch is never split"), bw::out_of_memory);
    // The Adam state that compile() adds must fit too.
    M small{bw::seed{1}, bw::memory_budget{M::estimate_memory(0, 1).total_bytes()}};
    CHECK_THROWS_AS(small.compile(bw::Adam{}, bw::MeanSquaredError{}), bw::out_of_memory);
}

namespace {
/// Floats of the activation mask a Dense of `units` keeps for `rows` samples on the tested policy.
constexpr std::size_t mask_floats(std::size_t rows, std::size_t units) {
    return (bw::detail::activation_mask_bytes<bw_test::exec>(rows, units) + 3) / 4;
}
}  // namespace

TEST_CASE("memory estimates are constant expressions that grow with the batch") {
    using M = bw_test::Model<bw::Sequential<bw::Input<784>, bw::Dense<256>, bw::ReLU, bw::Dense<256>, bw::ReLU, bw::Dense<10>>>;
    constexpr auto e = M::estimate_memory(2048, 0);
    static_assert(e.parameter_bytes == 4 * 269322);
    static_assert(e.gradient_bytes == 4 * 269322);
    static_assert(M::estimate_memory(2048, 2).optimizer_bytes == 2 * 4 * 269322);
    // The first Dense keeps no input gradient: no layer before it learns.
    // The ReLUs run over their Dense's output and write their input gradient over dy: no buffers.
    static_assert(e.batch_bytes == 4 * 2048 * ((256) + 0 + (256 + 256) + 0 + (10 + 256) +
                                               (2 * 10 + 1) +
                                               // A dynamic batch in host memory is read where the
                                               // caller keeps it; other policies copy it into their
                                               // own buffers, through host staging, with a sample
                                               // weight per row.
                                               (bw_test::exec::host_memory ? 0 : 2 * (784 + 10) + 1)) +
                                          // Under cuda each Dense keeps the ReLU bit mask of its
                                          // fused forward (none on the host policies).
                                          4 * (2 * mask_floats(2048, 256) + mask_floats(2048, 10)));
    CHECK(e.total_bytes() > M::estimate_memory(1024, 0).total_bytes());
}

// DESIGN decision 13: every optimizer step ends in one window's finish(), which runs the
// accumulation policy's reduction hook once, with the whole window's sample count.
TEST_CASE("the reduction hook runs once per optimizer step with the window's samples: eager steps") {
    using policy = bw_test::recording_accumulation<bw::accumulate<3>>;
    bw_test::Model<plain_net, bw::dynamic_batch, bw_test::exec, policy> m{bw::seed{2}};
    compile(m, bw::Adam{});
    const batch b = make_batch(64, 3);
    // Micro-batches of 5, 4, 3 | 9, 1, 2 | 6 (a partial window, stepped by apply_accumulated).
    const std::vector<std::size_t> sizes{5, 4, 3, 9, 1, 2, 6};
    std::size_t first = 0;
    for (std::size_t n : sizes) {
        m.train_on_batch(rows_of(b, first, n).x, rows_of(b, first, n).y);
        first += n;
    }
    CHECK(m.accumulation().seen.size() == 2);
    CHECK(m.apply_accumulated());
    const std::size_t trainable = 6;  // three Dense layers, kernel and bias each
    const std::vector<bw_test::seen_window> want{{1, 12, trainable, false}, {2, 12, trainable, false},
                                                 {3, 6, trainable, false}};
    CHECK(m.accumulation().seen == want);
    CHECK(m.iterations() == 3);
    // A policy that reduces and says nothing about the GEMM fold is refused it: the fold never
    // computes the kernels' gradients, which a reduction needs.
    static_assert(!bw::permits_update_in_gemm<bw_test::doubling_accumulation<bw::no_accumulation>, bw_test::exec>);
    static_assert(bw::permits_update_in_gemm<policy, bw_test::exec>);
    static_assert(bw::permits_update_in_gemm<bw::no_accumulation, bw_test::exec>);
    static_assert(bw::permits_capture<policy> && bw::permits_capture<bw::accumulate<2>>);
}

TEST_CASE("the reduction hook runs once per optimizer step: steps folded into the gradient GEMM") {
    // Plain SGD and one micro-batch per step: the kernels are updated inside their gradient GEMM,
    // and the hook sees the variables still to be stepped (the three biases).
    using policy = bw_test::recording_accumulation<bw::no_accumulation>;
    bw_test::Model<plain_net, bw::dynamic_batch, bw_test::exec, policy> m{bw::seed{2}};
    bw_test::Model<plain_net> reference{bw::seed{2}};
    compile(m, bw::SGD{{.learning_rate = 0.1f}});
    compile(reference, bw::SGD{{.learning_rate = 0.1f}});
    const batch b = make_batch(40, 5);
    for (std::size_t first = 0, n = 7; first < 40; first += n) {
        const std::size_t rows = std::min<std::size_t>(n, 40 - first);
        m.train_on_batch(rows_of(b, first, rows).x, rows_of(b, first, rows).y);
        reference.train_on_batch(rows_of(b, first, rows).x, rows_of(b, first, rows).y);
    }
    const std::vector<bw_test::seen_window> want{{1, 7, 3, true}, {2, 7, 3, true}, {3, 7, 3, true},
                                                 {4, 7, 3, true}, {5, 7, 3, true}, {6, 5, 3, true}};
    CHECK(m.accumulation().seen == want);
    CHECK(bw_test::all_weights(m) == bw_test::all_weights(reference));

    // A step observer needs every gradient: while one is registered nothing is folded.
    bw_test::counting_observer observer;
    m.add_step_observer(observer);
    m.train_on_batch(rows_of(b, 0, 8).x, rows_of(b, 0, 8).y);
    m.remove_step_observer(observer);
    m.train_on_batch(rows_of(b, 8, 8).x, rows_of(b, 8, 8).y);
    REQUIRE(m.accumulation().seen.size() == 8);
    CHECK(m.accumulation().seen[6] == bw_test::seen_window{7, 8, 6, false});
    CHECK(m.accumulation().seen[7] == bw_test::seen_window{8, 8, 3, true});
    CHECK(observer.seen == std::vector<bw_test::seen_window>{{7, 8, 6, false}});
}

TEST_CASE("the optimizer divides by the sample count the reduction hook leaves") {
    // Doubling every gradient sum and the count leaves the mean, exactly: the weights must match
    // those of the same policy without a hook bit for bit, for every optimizer family.
    const batch b = make_batch(96, 8);
    auto run = [&](auto& m) {
        for (std::size_t first = 0; first < 96; first += 12) m.train_on_batch(rows_of(b, first, 12).x, rows_of(b, first, 12).y);
        m.apply_accumulated();
    };
    auto check = [&](const auto& opt) {
        bw_test::Model<dropout_net, bw::dynamic_batch, bw_test::exec, bw::accumulate_to<40>> plain{bw::seed{6}};
        bw_test::Model<dropout_net, bw::dynamic_batch, bw_test::exec,
                       bw_test::doubling_accumulation<bw::accumulate_to<40>>>
            doubled{bw::seed{6}};
        compile(plain, opt);
        compile(doubled, opt);
        run(plain);
        run(doubled);
        CHECK(doubled.accumulation().calls == 3);  // 40, 40, 16
        CHECK(doubled.iterations() == 3);
        CHECK(bw_test::all_weights(plain) == bw_test::all_weights(doubled));
    };
    check(bw::SGD{{.learning_rate = 0.1f, .momentum = 0.9f}});
    check(bw::Adam{{.learning_rate = 0.01f}});
    check(bw::RMSprop{});
}

// ---- the gradient noise scale ------------------------------------------------------------------
//
// Linear regression y = w*.x + sigma e with x ~ N(0, I_D), e ~ N(0, 1) and the squared error
// (w.x - y)^2: at weights w, with d = w - w*, the per-sample gradient g = 2 (x.d - sigma e) x has
// mean G = 2 d and E[g g^T] = 4 (|d|^2 I + 2 d d^T + sigma^2 I), so tr(Sigma) = 4 ((D + 1) |d|^2 +
// D sigma^2), and B_simple = tr(Sigma) / |G|^2 = D + 1 + D sigma^2 / |d|^2 in closed form. With a
// zero learning rate the weights stay put and every step is an independent draw.

namespace {

struct batch_of_floats {
    xt::xtensor<float, 2> x;
    xt::xtensor<float, 2> y;
};

constexpr std::size_t regression_dims = 16;
constexpr float regression_noise = 2.0f;
using regression_net = bw::Sequential<bw::Input<regression_dims>, bw::Dense<1, bw::no_bias>>;

struct regression_data {
    std::mt19937_64 rng{2024};
    std::normal_distribution<float> normal{0.0f, 1.0f};
    std::vector<float> target = std::vector<float>(regression_dims);
    regression_data() {
        for (std::size_t j = 0; j < regression_dims; ++j) target[j] = 0.3f * static_cast<float>(j % 4) - 0.2f;
    }
    batch_of_floats draw(std::size_t n) {
        batch_of_floats b{xt::zeros<float>({n, regression_dims}), xt::zeros<float>({n, std::size_t{1}})};
        for (std::size_t i = 0; i < n; ++i) {
            float y = 0.0f;
            for (std::size_t j = 0; j < regression_dims; ++j) {
                b.x(i, j) = normal(rng);
                y += b.x(i, j) * target[j];
            }
            b.y(i, 0) = y + regression_noise * normal(rng);
        }
        return b;
    }
    template <class M>
    double true_noise_scale(const M& m) const {
        const auto w = m.get_weights()[0].value;
        double d2 = 0.0;
        for (std::size_t j = 0; j < regression_dims; ++j) d2 += std::pow(double(w.flat(j)) - double(target[j]), 2);
        const double dims = regression_dims, s2 = double(regression_noise) * double(regression_noise);
        return dims + 1.0 + dims * s2 / d2;
    }
};

/// Trains `steps` optimizer steps of micro-batches of the given sizes (one train_on_batch each)
/// at a zero learning rate, and returns the estimator's mean over all steps and the truth.
template <class Accum>
std::pair<double, double> estimated_noise_scale(const std::vector<std::size_t>& sizes, std::size_t steps,
                                                bw::noise_scale_estimator expected) {
    bw_test::Model<regression_net, bw::dynamic_batch, bw_test::exec, Accum> m{bw::seed{3}};
    m.compile(bw::SGD{{.learning_rate = 0.0f}}, bw::MeanSquaredError{});
    bw::gradient_noise_scale<bw_test::exec> gns;
    m.add_step_observer(gns);
    regression_data data;
    for (std::size_t s = 0; s < steps; ++s) {
        for (const std::size_t n : sizes) {
            const batch_of_floats b = data.draw(n);
            m.train_on_batch(b.x, b.y);
        }
    }
    CHECK(m.iterations() == steps);
    CHECK(gns.last().estimator == expected);
    CHECK(gns.estimates() == (expected == bw::noise_scale_estimator::micro_batches ? steps : steps - 1));
    return {gns.mean_value(), data.true_noise_scale(m)};
}

}  // namespace

TEST_CASE("the gradient noise scale is within 10% of B_simple for equal, uneven and single micro-batches") {
    using micro = bw::noise_scale_estimator;
    // Plain names, not structured bindings: INFO captures them in a lambda, which clang 14 refuses
    // for bindings.
    const auto first = estimated_noise_scale<bw::accumulate<4>>({32, 32, 32, 32}, 400, micro::micro_batches);
    const double equal = first.first, truth = first.second;
    INFO("true B_simple " << truth << ", 4 x 32: " << equal);
    CHECK(truth > 20.0);  // comparable to the micro-batches, so that both terms matter
    CHECK(std::fabs(equal - truth) <= 0.1 * truth);
    // Unequal sizes are weighted by their real counts: no equal-size assumption.
    const auto second = estimated_noise_scale<bw::accumulate<4>>({7, 25, 64, 32}, 400, micro::micro_batches);
    const double uneven = second.first, truth2 = second.second;
    INFO("7 + 25 + 64 + 32: " << uneven);
    CHECK(truth2 == truth);
    CHECK(std::fabs(uneven - truth) <= 0.1 * truth);
    // One micro-batch per step: consecutive steps pair up.
    const auto third = estimated_noise_scale<bw::no_accumulation>({128}, 400, micro::consecutive_steps);
    const double single = third.first;
    INFO("one micro-batch of 128: " << single);
    CHECK(std::fabs(single - truth) <= 0.1 * truth);
    // The compensated accumulator takes the micro-batch norms from its own path.
    const auto [kahan, truth4] = estimated_noise_scale<bw::accumulate<4, bw::compensated_float>>(
        {7, 25, 64, 32}, 200, micro::micro_batches);
    CHECK(std::fabs(kahan - truth) <= 0.1 * truth);
}

TEST_CASE("observing micro-batches leaves the accumulated step what it was") {
    // With the estimator registered a window sums its micro-batches outside the GEMMs: the same
    // sums in another order, so the weights agree to rounding, not bit for bit.
    const batch b = make_batch(96, 11);
    bw_test::Model<plain_net, bw::dynamic_batch, bw_test::exec, bw::accumulate<3>> plain{bw::seed{4}}, observed{bw::seed{4}};
    compile(plain, bw::Adam{{.learning_rate = 0.01f}});
    compile(observed, bw::Adam{{.learning_rate = 0.01f}});
    bw::gradient_noise_scale<bw_test::exec> gns;
    observed.add_step_observer(gns);
    for (std::size_t first = 0; first < 96; first += 16) {
        plain.train_on_batch(rows_of(b, first, 16).x, rows_of(b, first, 16).y);
        observed.train_on_batch(rows_of(b, first, 16).x, rows_of(b, first, 16).y);
    }
    CHECK(observed.iterations() == 2);
    check_close(plain, observed);
    CHECK(std::isfinite(gns.last().trace));
    // Adam's second moments precondition the second estimate from its second step on.
    CHECK(std::isfinite(gns.last().preconditioned_trace));
    CHECK(std::isfinite(gns.last().preconditioned_squared_mean));
    // Observers come and go between steps only.
    observed.train_on_batch(rows_of(b, 0, 16).x, rows_of(b, 0, 16).y);
    CHECK_THROWS_AS(observed.remove_step_observer(gns), bw::usage_error);
    CHECK_THROWS_AS(bw::gradient_noise_scale<bw_test::exec>({.smoothing = 1.0}), bw::usage_error);
}

// ---- learning-rate coupling ----------------------------------------------------------------------

TEST_CASE("coupling rules match their formulas, and the update uses exactly the coupled values") {
    using bw::coupling_rule;
    const auto f = [](coupling_rule r, std::size_t b, std::uint64_t seen = 0, std::uint64_t warmup = 0) {
        return bw::coupling_factors_for({.rule = r, .warmup_samples = warmup}, b, 32, seen);
    };
    CHECK(f(coupling_rule::none, 128).learning_rate == 1.0);
    CHECK(f(coupling_rule::linear, 128).learning_rate == 4.0);
    CHECK(f(coupling_rule::linear, 8).learning_rate == 0.25);
    CHECK(f(coupling_rule::sqrt, 128).learning_rate == 2.0);
    CHECK(f(coupling_rule::sqrt, 128).moment_rate == 1.0);
    const bw::coupling_factors adam = f(coupling_rule::adam_sqrt, 128);
    CHECK(adam.learning_rate == 2.0);
    CHECK(adam.moment_rate == 4.0);
    CHECK(adam.epsilon == 0.5);
    // Goyal et al.'s warmup: from the unscaled rate to the scaled one, linearly in samples.
    CHECK(f(coupling_rule::linear, 128, 0, 1000).learning_rate == 1.0);
    CHECK(f(coupling_rule::linear, 128, 500, 1000).learning_rate == 2.5);
    CHECK(f(coupling_rule::linear, 128, 1000, 1000).learning_rate == 4.0);
    CHECK(bw::coupled_decay(0.9f, 4.0) == doctest::Approx(0.6).epsilon(1e-6));  // 1 - 4 x 0.1
    CHECK(bw::coupled_decay(0.999f, 0.5) == doctest::Approx(0.9995).epsilon(1e-6));
    CHECK(bw::coupled_decay(0.5f, 4.0) == 0.0f);  // kept a decay

    // A step of 128 under adam_sqrt with reference 32 is exactly Adam with the coupled options.
    const batch b = make_batch(128, 12);
    bw_test::Model<plain_net> coupled{bw::seed{8}}, direct{bw::seed{8}};
    compile(coupled, bw::Adam{{.learning_rate = 1e-3f}});
    coupled.set_step_rules({.coupling = {.rule = coupling_rule::adam_sqrt, .reference_batch = 32}});
    const float beta_1 = bw::coupled_decay(0.9f, 4.0), beta_2 = bw::coupled_decay(0.999f, 4.0);
    compile(direct, bw::Adam{{.learning_rate = 2e-3f, .beta_1 = beta_1, .beta_2 = beta_2,
                              .epsilon = static_cast<float>(1e-7f * 0.5)}});
    for (int s = 0; s < 3; ++s) {
        coupled.train_on_batch(b.x, b.y);
        direct.train_on_batch(b.x, b.y);
    }
    CHECK(bw_test::all_weights(coupled) == bw_test::all_weights(direct));

    // linear for SGD with momentum, with the reference taken from the first step (16): a later
    // step of 64 uses 4x the rate.
    bw_test::Model<plain_net> sgd{bw::seed{9}}, sgd_direct{bw::seed{9}};
    compile(sgd, bw::SGD{{.learning_rate = 0.05f, .momentum = 0.9f}});
    compile(sgd_direct, bw::SGD{{.learning_rate = 0.05f, .momentum = 0.9f}});
    sgd.set_step_rules({.coupling = {.rule = coupling_rule::linear}});
    sgd.train_on_batch(rows_of(b, 0, 16).x, rows_of(b, 0, 16).y);
    sgd_direct.train_on_batch(rows_of(b, 0, 16).x, rows_of(b, 0, 16).y);
    sgd_direct.set_learning_rate(0.2f);
    sgd.train_on_batch(rows_of(b, 16, 64).x, rows_of(b, 16, 64).y);
    sgd_direct.train_on_batch(rows_of(b, 16, 64).x, rows_of(b, 16, 64).y);
    CHECK(bw_test::all_weights(sgd) == bw_test::all_weights(sgd_direct));

    // A static batch replays its step from captured graphs where the policy captures
    // (thrust_host, cuda): the coupled decays are those of the eager steps, bit for bit.
    bw_test::Model<plain_net, bw::static_batch<32>> captured{bw::seed{10}}, captured_direct{bw::seed{10}};
    compile(captured, bw::Adam{{.learning_rate = 1e-3f}});
    captured.set_step_rules({.coupling = {.rule = coupling_rule::adam_sqrt, .reference_batch = 8}});
    compile(captured_direct, bw::Adam{{.learning_rate = 2e-3f, .beta_1 = beta_1, .beta_2 = beta_2,
                                       .epsilon = static_cast<float>(1e-7f * 0.5)}});
    for (std::size_t first = 0; first + 32 <= 128; first += 32) {
        captured.train_on_batch(rows_of(b, first, 32).x, rows_of(b, first, 32).y);
        captured_direct.train_on_batch(rows_of(b, first, 32).x, rows_of(b, first, 32).y);
    }
    CHECK(captured.step_captured() == captured_direct.step_captured());
    CHECK(bw_test::all_weights(captured) == bw_test::all_weights(captured_direct));

    // adam_sqrt needs moment decays to rescale.
    CHECK_THROWS_WITH_AS(sgd.set_step_rules({.coupling = {.rule = coupling_rule::adam_sqrt}}),
                         doctest::Contains("use linear or sqrt"), bw::usage_error);
}
