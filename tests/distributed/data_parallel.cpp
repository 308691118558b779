// Data-parallel training, run for real under mpirun at 1, 2 and 3 processes (tests/CMakeLists.txt),
// on cpu_blas and, compiled again, on thrust_host (the two policies MPI serves):
// the weights after several steps equal one process trained on the same steps, whatever the
// shares, a process's out-of-memory split, or a process holding no rows; checkpoints move between
// world sizes; mismatches and failures end every process with a typed error in bounded time.
// Its own main: MPI_Init comes after the case that needs MPI not to be initialised.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "../policy.hpp"

#include <batchwise/distributed/mpi.hpp>
#include <batchwise/testing/gradient_check.hpp>

#include <mpi.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

namespace bw = batchwise;
using bw::data::Dataset;

namespace {

// Batch norm normalises each process's rows with their own statistics, as one process does each
// micro-batch's; with virtual batches of 8 (ghost batch norm) and shares that are multiples of 8,
// both see the same groups of rows, so a process's result can be compared with one process's. A
// bias before batch norm has a gradient of pure rounding noise, which Adam amplifies: none here.
using Net = bw::Sequential<bw::Input<12>, bw::Dense<32, bw::no_bias>, bw::BatchNormalization<0.9f, 1e-3f, 8>, bw::ReLU,
                           bw::Dropout<0.25f>, bw::Dense<16>, bw::Tanh, bw::Dense<4>>;
// Without batch norm any sharing of rows gives the single-process step.
using PlainNet = bw::Sequential<bw::Input<12>, bw::Dense<32>, bw::ReLU, bw::Dropout<0.25f>, bw::Dense<16>, bw::Tanh,
                                bw::Dense<4>>;
// Synchronized batch norm normalises with the statistics of all processes' rows together, so
// against plain batch norm in one process it needs no virtual batches and any shares do.
using SyncNet = bw::Sequential<bw::Input<12>, bw::Dense<32, bw::no_bias>, bw::SyncBatchNormalization<0.9f>, bw::ReLU,
                               bw::Dropout<0.25f>, bw::Dense<16>, bw::Tanh, bw::Dense<4>>;
using WholeBatchNet = bw::Sequential<bw::Input<12>, bw::Dense<32, bw::no_bias>, bw::BatchNormalization<0.9f>, bw::ReLU,
                                     bw::Dropout<0.25f>, bw::Dense<16>, bw::Tanh, bw::Dense<4>>;
// The same on images: batch norm's statistics are per channel over samples and positions, so
// what travels between processes counts samples x positions values.
using ImageNet = bw::Sequential<bw::Input<12>, bw::Reshape<2, 2, 3>, bw::Conv2D<4, 1, 1, bw::no_bias>,
                                bw::BatchNormalization<0.9f, 1e-3f, 8>, bw::ReLU, bw::Flatten, bw::Dense<4>>;
using SyncImageNet = bw::Sequential<bw::Input<12>, bw::Reshape<2, 2, 3>, bw::Conv2D<4, 1, 1, bw::no_bias>,
                                    bw::SyncBatchNormalization<0.9f>, bw::ReLU, bw::Flatten, bw::Dense<4>>;
using WholeBatchImageNet = bw::Sequential<bw::Input<12>, bw::Reshape<2, 2, 3>, bw::Conv2D<4, 1, 1, bw::no_bias>,
                                          bw::BatchNormalization<0.9f>, bw::ReLU, bw::Flatten, bw::Dense<4>>;
template <class Accum, class N = Net>
using Model = bw::Model<N, bw::dynamic_batch, bw_test::exec, Accum>;
using shared = bw::data_parallel<>;

int world_rank() {
    int r = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}
int world_size() {
    int p = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &p);
    return p;
}

struct samples {
    xt::xtensor<float, 2> x;
    xt::xtensor<int, 1> y;
};
samples make_samples(std::size_t n, std::uint64_t s) {
    samples d{bw::testing::random_matrix(n, 12, s), xt::zeros<int>({n})};
    for (std::size_t i = 0; i < n; ++i) d.y(i) = static_cast<int>((i * 7 + s) % 4);
    return d;
}
Dataset shuffled(std::size_t n) {
    const samples d = make_samples(n, 3);
    return Dataset(d.x, d.y).shuffle(n, bw::seed{5});
}

template <class M>
void compile(M& m) {
    m.compile(bw::Adam{{.learning_rate = 0.01f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}},
              bw::metrics::accuracy);
}

/// Per variable (moving statistics included): ||a - b|| <= 1e-5 ||a||.
template <class A, class B>
void check_close(const A& a, const B& b, double rel = 1e-5) {
    const auto wa = a.get_weights();
    const auto wb = b.get_weights();
    REQUIRE(wa.size() == wb.size());
    for (std::size_t v = 0; v < wa.size(); ++v) {
        double sq_diff = 0.0;
        double sq_value = 0.0;
        for (std::size_t i = 0; i < wa[v].value.size(); ++i) {
            const double x = wa[v].value.flat(i);
            const double d = x - static_cast<double>(wb[v].value.flat(i));
            sq_diff += d * d;
            sq_value += x * x;
        }
        INFO("rank " << world_rank() << ", " << wa[v].name << ": relative difference "
                     << std::sqrt(sq_diff / sq_value));
        CHECK(std::sqrt(sq_diff) <= rel * std::sqrt(sq_value));
    }
}

/// Uneven shares at every world size, multiples of 8: 96-sample steps as 96, 72/24, 40/40/16.
std::vector<std::size_t> uneven_shares(int p) {
    switch (p) {
        case 1: return {1};
        case 2: return {72, 24};
        case 3: return {40, 40, 16};
        default: return std::vector<std::size_t>(static_cast<std::size_t>(p), 1);
    }
}

/// A budget that holds micro-batches of 20 rows but not 40, with Adam's two slots.
std::size_t budget_for_20_rows() { return Model<shared>::estimate_memory(20, 2).total_bytes(); }

/// A path every process of `comm` agrees on (rank 0's process id).
std::filesystem::path shared_path(MPI_Comm comm, const std::string& name) {
    long pid = static_cast<long>(::getpid());
    MPI_Bcast(&pid, 1, MPI_LONG, 0, comm);
    return std::filesystem::temp_directory_path() / ("batchwise_dp_" + std::to_string(pid) + "_" + name);
}

}  // namespace

TEST_CASE("without MPI initialised, compile() is a distributed_error that says so" * doctest::test_suite("no_mpi")) {
    Model<shared> m{bw::seed{1}};
    CHECK_THROWS_WITH_AS(compile(m), doctest::Contains("MPI is not initialised"), bw::distributed_error);
}

TEST_CASE("the update equals one process's on the same 96-sample steps: uneven shares, dropout, Adam, batch "
          "norm, and one process split by its memory budget") {
    const int p = world_size();
    const Dataset data = shuffled(96 * 5);

    Model<bw::no_accumulation> single{bw::seed{7}};
    compile(single);
    const bw::History h1 = single.fit(data.batch(96), {.epochs = 3, .verbose = 0});

    // Rank 1's share of 40 (24 at two processes) does not fit: it trains in micro-batches of 16
    // (20 rounded down to the virtual batch).
    const std::size_t budget = world_rank() == 1 ? budget_for_20_rows() : bw::memory_budget{}.bytes;
    Model<shared> dp{bw::seed{7}, bw::memory_budget{budget}};
    dp.accumulation().set_shares(uneven_shares(p));
    compile(dp);
    const bw::History h = dp.fit(data.batch(96), {.epochs = 3, .verbose = 0});

    CHECK(dp.iterations() == single.iterations());
    check_close(single, dp);
    REQUIRE(h.history.at("loss").size() == 3);
    for (std::size_t e = 0; e < 3; ++e) {
        CHECK(h.history.at("loss")[e] == doctest::Approx(h1.history.at("loss")[e]).epsilon(1e-5));
        CHECK(h.history.at("accuracy")[e] == doctest::Approx(h1.history.at("accuracy")[e]).epsilon(1e-5));
        CHECK(h.samples[e] == h1.samples[e]);
    }
    if (world_rank() == 1) {
        CHECK(dp.micro_batch_limit() <= 20);
        CHECK_FALSE(h.micro_batch_splits.empty());
    }
    CHECK(dp.accumulation().reductions().reductions == dp.iterations());
}

TEST_CASE("the shares of every call cover its rows exactly once, in rank order, whatever their sizes") {
    const int p = world_size();
    Model<shared> m{bw::seed{19}};
    m.accumulation().set_shares(uneven_shares(p));
    compile(m);
    for (const std::size_t rows : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{96},
                                   std::size_t{1} << 40, std::size_t{1} << 62}) {
        const bw::row_range mine = m.accumulation().shard(rows);
        const unsigned long long bounds[2] = {mine.begin, mine.end};
        std::vector<unsigned long long> all(2 * static_cast<std::size_t>(p));
        MPI_Allgather(bounds, 2, MPI_UNSIGNED_LONG_LONG, all.data(), 2, MPI_UNSIGNED_LONG_LONG, MPI_COMM_WORLD);
        INFO("rows " << rows);
        CHECK(all.front() == 0);
        CHECK(all.back() == rows);
        for (std::size_t r = 0; r + 1 < static_cast<std::size_t>(p); ++r) CHECK(all[2 * r + 1] == all[2 * r + 2]);
    }
    if (p == 3) CHECK(m.accumulation().shard(96).size() == uneven_shares(3)[static_cast<std::size_t>(world_rank())]);
    shared policy;
    CHECK_THROWS_WITH_AS(policy.set_shares({0, 0}), "data_parallel::set_shares: the shares sum to zero", bw::usage_error);
    CHECK_THROWS_AS(policy.set_shares({std::size_t{1} << 31, std::size_t{1} << 31}), bw::usage_error);
}

TEST_CASE("a ragged last batch, and a process given no rows at all: the update is still that of all the rows") {
    const int p = world_size();
    const Dataset data = shuffled(96 * 3 + 41);
    std::vector<std::size_t> shares(static_cast<std::size_t>(p), 1);
    if (p >= 2) shares[1] = 0;  // rank 1 holds nothing, ever

    Model<bw::no_accumulation, PlainNet> single{bw::seed{8}};
    compile(single);
    single.fit(data.batch(96), {.epochs = 2, .verbose = 0});
    Model<shared, PlainNet> dp{bw::seed{8}};
    dp.accumulation().set_shares(shares);
    compile(dp);
    dp.fit(data.batch(96), {.epochs = 2, .verbose = 0});
    check_close(single, dp);
}

TEST_CASE("synchronized batch norm equals one process's batch norm on the global batch: any shares, a ragged "
          "last batch, a process with no rows") {
    const int p = world_size();
    const Dataset data = shuffled(96 * 4 + 41);
    Model<bw::no_accumulation, WholeBatchNet> single{bw::seed{17}};
    compile(single);
    const bw::History h1 = single.fit(data.batch(96), {.epochs = 2, .verbose = 0});

    Model<shared, SyncNet> dp{bw::seed{17}};
    if (p == 2) dp.accumulation().set_shares({61, 35});
    if (p == 3) dp.accumulation().set_shares({50, 0, 46});
    compile(dp);
    const bw::History h = dp.fit(data.batch(96), {.epochs = 2, .verbose = 0});
    check_close(single, dp);
    CHECK(h.history.at("loss").back() == doctest::Approx(h1.history.at("loss").back()).epsilon(1e-5));
    if (p > 1) CHECK(dp.accumulation().reductions().statistics_reductions > 0);
    // In inference batch norm uses the moving averages, which match too.
    const samples d = make_samples(50, 21);
    CHECK(dp.evaluate(d.x, d.y).loss == doctest::Approx(single.evaluate(d.x, d.y).loss).epsilon(1e-5));
}

TEST_CASE("batch norm over images: moving averages and synchronized statistics over every process's samples "
          "and positions") {
    const int p = world_size();
    const Dataset data = shuffled(96 * 3);
    Model<bw::no_accumulation, ImageNet> single{bw::seed{23}};
    compile(single);
    single.fit(data.batch(96), {.epochs = 2, .verbose = 0});
    Model<shared, ImageNet> dp{bw::seed{23}};
    dp.accumulation().set_shares(uneven_shares(p));
    compile(dp);
    dp.fit(data.batch(96), {.epochs = 2, .verbose = 0});
    check_close(single, dp);

    Model<bw::no_accumulation, WholeBatchImageNet> whole{bw::seed{29}};
    compile(whole);
    whole.fit(data.batch(96), {.epochs = 2, .verbose = 0});
    Model<shared, SyncImageNet> synced{bw::seed{29}};
    if (p == 3) synced.accumulation().set_shares({50, 0, 46});
    compile(synced);
    synced.fit(data.batch(96), {.epochs = 2, .verbose = 0});
    check_close(whole, synced);
}

TEST_CASE("data_parallel<accumulate_to<64>>: a global window of 64 samples across batches of 40 and processes") {
    const Dataset data = shuffled(40 * 9);
    Model<bw::accumulate_to<64>, PlainNet> single{bw::seed{9}};
    compile(single);
    single.fit(data.batch(40), {.epochs = 2, .verbose = 0});
    Model<bw::data_parallel<bw::accumulate_to<64>>, PlainNet> dp{bw::seed{9}};
    compile(dp);
    dp.fit(data.batch(40), {.epochs = 2, .verbose = 0});
    CHECK(dp.iterations() == single.iterations());
    check_close(single, dp);
}

TEST_CASE("train_on_batch and evaluate: every process is given the whole batch and trains or scores its share") {
    const samples d = make_samples(60, 11);
    Model<bw::no_accumulation, PlainNet> single{bw::seed{10}};
    Model<shared, PlainNet> dp{bw::seed{10}};
    compile(single);
    compile(dp);
    const bw::logs e0 = single.evaluate(d.x, d.y, 16);
    const bw::logs e1 = dp.evaluate(d.x, d.y, 16);
    CHECK(e1.loss == doctest::Approx(e0.loss).epsilon(1e-6));
    CHECK(e1.samples == 60);
    CHECK(e1["accuracy"] == doctest::Approx(e0["accuracy"]).epsilon(1e-6));
    for (int step = 0; step < 4; ++step) {
        single.train_on_batch(d.x, d.y);
        dp.train_on_batch(d.x, d.y);
    }
    check_close(single, dp);
    const Dataset ds = Dataset(d.x, d.y).batch(25);
    CHECK(dp.evaluate(ds).loss == doctest::Approx(single.evaluate(ds).loss).epsilon(1e-4));
}

TEST_CASE("sample weights: each process weights the rows of its share, and the update is one process's") {
    const int p = world_size();
    const samples d = make_samples(96 * 3, 12);
    xt::xtensor<float, 1> w = xt::zeros<float>({d.y.size()});
    for (std::size_t i = 0; i < w.size(); ++i) w(i) = 0.5f + static_cast<float>((i * 5) % 7) * 0.25f;
    const Dataset data = Dataset(d.x, d.y, w).shuffle(w.size(), bw::seed{6});
    Model<bw::no_accumulation, PlainNet> single{bw::seed{11}};
    Model<shared, PlainNet> dp{bw::seed{11}};
    dp.accumulation().set_shares(uneven_shares(p));
    compile(single);
    compile(dp);
    const bw::History h1 = single.fit(data.batch(96), {.epochs = 2, .validation_data = data, .verbose = 0});
    const bw::History h = dp.fit(data.batch(96), {.epochs = 2, .validation_data = data, .verbose = 0});
    check_close(single, dp);
    for (std::size_t e = 0; e < 2; ++e) {
        CHECK(h.history.at("loss")[e] == doctest::Approx(h1.history.at("loss")[e]).epsilon(1e-5));
        CHECK(h.history.at("val_loss")[e] == doctest::Approx(h1.history.at("val_loss")[e]).epsilon(1e-5));
    }
    // Unweighted training differs: the weights reached every process's share.
    Model<shared, PlainNet> unweighted{bw::seed{11}};
    unweighted.accumulation().set_shares(uneven_shares(p));
    compile(unweighted);
    (void)unweighted.fit(Dataset(d.x, d.y).shuffle(w.size(), bw::seed{6}).batch(96), {.epochs = 2, .verbose = 0});
    const auto a = dp.get_weights(), b = unweighted.get_weights();
    CHECK(xt::amax(xt::abs(a[0].value - b[0].value))() > 1e-4f);
}

TEST_CASE("a checkpoint written by 2 processes resumes at 2 bit-identically, and at 1 and at 3 with the weights of an "
          "uninterrupted run") {
    if (world_size() != 3) return;
    const int rank = world_rank();
    const Dataset data = shuffled(96 * 4);
    // Stops fit() after the third batch of epoch 1, having saved a checkpoint there.
    struct save_and_stop final : bw::Callback {
        std::filesystem::path path;
        void on_batch_end(bw::training_context& ctx, std::uint64_t step, const bw::logs&, const bw::logs&) override {
            if (ctx.epochs() == 2 && step == 2) {
                ctx.save_checkpoint(path);
                ctx.stop_training("checkpoint taken");
            }
        }
    };
    Model<bw::no_accumulation> reference{bw::seed{12}};
    compile(reference);
    reference.fit(data.batch(96), {.epochs = 3, .verbose = 0});

    const std::filesystem::path path = shared_path(MPI_COMM_WORLD, "resume.npz");
    MPI_Comm pair = MPI_COMM_NULL;
    MPI_Comm_split(MPI_COMM_WORLD, rank < 2 ? 0 : MPI_UNDEFINED, rank, &pair);
    if (pair != MPI_COMM_NULL) {
        Model<shared> two{bw::seed{12}};
        two.accumulation() = shared(bw::mpi_communicator(pair));
        compile(two);
        two.fit(data.batch(96), {.epochs = 1, .verbose = 0});
        save_and_stop cb;
        cb.path = path;
        two.fit(data.batch(96), {.epochs = 2, .initial_epoch = 1, .verbose = 0}, cb);
        MPI_Barrier(pair);
        // At the same number of processes the sums run in the same order: bit-identical.
        Model<shared> uninterrupted{bw::seed{12}};
        uninterrupted.accumulation() = shared(bw::mpi_communicator(pair));
        compile(uninterrupted);
        uninterrupted.fit(data.batch(96), {.epochs = 3, .verbose = 0});
        Model<shared> resumed{bw::seed{12}};
        resumed.accumulation() = shared(bw::mpi_communicator(pair));
        compile(resumed);
        resumed.load_checkpoint(path);
        resumed.fit(data.batch(96), {.epochs = 3, .verbose = 0});
        const auto a = uninterrupted.get_weights();
        const auto b = resumed.get_weights();
        for (std::size_t v = 0; v < a.size(); ++v) {
            INFO(a[v].name);
            CHECK(a[v].value == b[v].value);
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    REQUIRE(std::filesystem::exists(path));

    if (rank == 0) {
        Model<bw::data_parallel<bw::no_accumulation>> one{bw::seed{12}};
        one.accumulation() = shared(bw::mpi_communicator(MPI_COMM_SELF));
        compile(one);
        one.load_checkpoint(path);
        one.fit(data.batch(96), {.epochs = 3, .verbose = 0});
        check_close(reference, one);
    }
    Model<shared> three{bw::seed{12}};
    compile(three);
    three.load_checkpoint(path);
    three.fit(data.batch(96), {.epochs = 3, .verbose = 0});
    check_close(reference, three);
    CHECK(three.iterations() == reference.iterations());
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) std::filesystem::remove(path);
    if (pair != MPI_COMM_NULL) MPI_Comm_free(&pair);
}

TEST_CASE("compile() names the process whose configuration or initial weights differ") {
    const int p = world_size();
    if (p < 2) return;
    const bool odd = world_rank() == 1;
    Model<shared> rate{bw::seed{13}};
    try {
        rate.compile(bw::Adam{{.learning_rate = odd ? 0.02f : 0.01f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
        FAIL("compile() accepted a learning rate that differs on rank 1");
    } catch (const bw::distributed_error& e) {
        CHECK(e.rank() == 1);
        CHECK(std::string(e.what()).find("rank 1 differs from rank 0") != std::string::npos);
    }
    Model<shared> weights{bw::seed{13}};
    if (odd) weights.variables()[0].ref.value[0] += 1.0f;
    try {
        compile(weights);
        FAIL("compile() accepted initial weights that differ on rank 1");
    } catch (const bw::distributed_error& e) {
        CHECK(e.rank() == 1);
        CHECK(std::string(e.what()).find("other weights") != std::string::npos);
    }
    Model<shared> shares{bw::seed{13}};
    shares.accumulation().set_shares(std::vector<std::size_t>(static_cast<std::size_t>(p) + 1, 1));
    CHECK_THROWS_WITH_AS(compile(shares), doctest::Contains("shares were set for"), bw::usage_error);
}

// The two cases below leave their communicators broken: each runs alone (tests/CMakeLists.txt).

TEST_CASE("a process that throws mid-epoch ends every process with a typed error naming it" *
          doctest::test_suite("failure")) {
    if (world_size() < 2) return;
    const int rank = world_rank();
    struct fail_on_rank_1 final : bw::Callback {
        int rank = 0;
        void on_batch_begin(bw::training_context&, std::uint64_t step, std::size_t) override {
            if (rank == 1 && step == 3) throw std::runtime_error("injected failure on rank 1");
        }
    } cb;
    cb.rank = rank;
    Model<shared> dp{bw::seed{15}};
    dp.accumulation().communicator().set_timeout(std::chrono::seconds(60));
    compile(dp);
    const auto t0 = std::chrono::steady_clock::now();
    if (rank == 1) {
        CHECK_THROWS_WITH_AS(dp.fit(shuffled(96 * 6).batch(96), {.epochs = 1, .verbose = 0}, cb),
                             "injected failure on rank 1", std::runtime_error);
    } else {
        try {
            dp.fit(shuffled(96 * 6).batch(96), {.epochs = 1, .verbose = 0}, cb);
            FAIL("fit() returned although rank 1 failed");
        } catch (const bw::distributed_error& e) {
            CHECK(e.rank() == 1);
            CHECK(std::string(e.what()).find("injected failure on rank 1") != std::string::npos);
        }
    }
    // Told at once, not after the 60-second timeout.
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30));
}

TEST_CASE("a process that never arrives: the others stop at the timeout with a typed error" *
          doctest::test_suite("failure")) {
    if (world_size() < 2) return;
    Model<shared> dp{bw::seed{16}};
    dp.accumulation().communicator().set_timeout(std::chrono::seconds(2));
    compile(dp);
    if (world_rank() != 1) {
        const auto t0 = std::chrono::steady_clock::now();
        CHECK_THROWS_WITH_AS(dp.fit(shuffled(96 * 2).batch(96), {.epochs = 1, .verbose = 0}),
                             doctest::Contains("did not complete within 2"), bw::distributed_error);
        CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20));
    }
    MPI_Barrier(MPI_COMM_WORLD);  // rank 1 stands in for a hung process until the others gave up
}

TEST_CASE("under synchronized batch norm a process that runs out of memory stops every process" *
          doctest::test_suite("failure")) {
    if (world_size() < 2) return;
    const bool small = world_rank() == 1;
    Model<shared, SyncNet> dp{bw::seed{18},
                              bw::memory_budget{small ? Model<shared, SyncNet>::estimate_memory(20, 2).total_bytes()
                                                      : bw::memory_budget{}.bytes}};
    dp.accumulation().communicator().set_timeout(std::chrono::seconds(60));
    compile(dp);
    if (small) {
        CHECK_THROWS_WITH_AS(dp.fit(shuffled(96 * 2).batch(96), {.epochs = 1, .verbose = 0}),
                             doctest::Contains("with synchronized batch norm every process trains its share"),
                             bw::out_of_memory);
    } else {
        try {
            dp.fit(shuffled(96 * 2).batch(96), {.epochs = 1, .verbose = 0});
            FAIL("fit() returned although rank 1 ran out of memory");
        } catch (const bw::distributed_error& e) {
            CHECK(e.rank() == 1);
        }
    }
}

int main(int argc, char** argv) {
    // First, and only in a process started without MPI_Init, the case that needs MPI down.
    // (Its own filter only: doctest adds command-line filters to those set here.)
    doctest::Context before;
    before.setOption("test-suite", "no_mpi");
    const int no_mpi = before.run();
    if (before.shouldExit()) return no_mpi;

    MPI_Init(&argc, &argv);
    doctest::Context context(argc, argv);
    context.setOption("test-suite-exclude", "no_mpi");
    const int result = context.run();
    // A failure case leaves a collective pending forever on the processes that gave up on it,
    // which MPI_Finalize would wait for: such a run ends without it.
    MPI_Finalize();
    return result | no_mpi;
}
