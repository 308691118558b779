// Dataset operations: shuffle is a deterministic permutation, batching never loses or duplicates
// a sample, schedules give the sizes they promise, concatenate/map/take/skip compose, prefetch
// yields the same batches and stops cleanly, and bad data is refused with its sample.
#include <doctest/doctest.h>

#include <batchwise/batchwise.hpp>

#include <algorithm>
#include <atomic>
#include <numeric>
#include <set>
#include <span>
#include <tuple>
#include <stdexcept>
#include <vector>

namespace bw = batchwise;
using bw::data::Dataset;

namespace {

/// n samples whose single feature and label both equal the sample's index.
Dataset indexed(std::size_t n) {
    xt::xtensor<float, 2> x = xt::zeros<float>({n, std::size_t{1}});
    xt::xtensor<float, 1> y = xt::zeros<float>({n});
    for (std::size_t i = 0; i < n; ++i) x(i, 0) = y(i) = static_cast<float>(i);
    return Dataset(x, y);
}

/// Every batch of one epoch, as the feature values in order, and the batch sizes.
struct epoch_read {
    std::vector<float> values;
    std::vector<std::size_t> sizes;
    std::size_t dropped = 0;
};
epoch_read read_all(const Dataset& ds, std::uint64_t epoch = 0) {
    epoch_read r;
    auto reader = ds.read(epoch);
    bw::data::batch_data b;
    while (reader.next(b)) {
        r.sizes.push_back(b.rows);
        for (std::size_t i = 0; i < b.rows; ++i) {
            REQUIRE(b.targets[i] == b.features[i]);  // features and targets stay together
            r.values.push_back(b.features[i]);
        }
    }
    r.dropped = reader.dropped();
    return r;
}

std::vector<float> iota_values(std::size_t n) {
    std::vector<float> v(n);
    std::iota(v.begin(), v.end(), 0.0f);
    return v;
}

}  // namespace

TEST_CASE("batch without drop_remainder keeps the ragged tail, nothing lost or duplicated") {
    const auto r = read_all(indexed(103).batch(10));
    CHECK(r.values == iota_values(103));
    CHECK(r.sizes == std::vector<std::size_t>{10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 3});
    CHECK(r.dropped == 0);
    CHECK(indexed(103).batch(10).cardinality() == 11);
    CHECK(indexed(103).batch(10).samples() == 103);
}

TEST_CASE("batch with drop_remainder drops only the tail, and says how many") {
    const Dataset ds = indexed(103).batch(10, true);
    const auto r = read_all(ds);
    CHECK(r.values == iota_values(100));
    CHECK(r.sizes == std::vector<std::size_t>(10, 10));
    CHECK(r.dropped == 3);
    CHECK(ds.cardinality() == 10);
    CHECK(ds.samples() == 100);
}

TEST_CASE("shuffle: a permutation, deterministic per seed and epoch, new each epoch") {
    const Dataset ds = indexed(1000).shuffle(1000, bw::seed{7}).batch(64);
    const auto e0 = read_all(ds, 0), e0_again = read_all(ds, 0), e1 = read_all(ds, 1);
    auto sorted = e0.values;
    std::sort(sorted.begin(), sorted.end());
    CHECK(sorted == iota_values(1000));
    CHECK(e0.values == e0_again.values);
    CHECK(e0.values != e1.values);
    CHECK(e0.values != iota_values(1000));
    CHECK(read_all(indexed(1000).shuffle(1000, bw::seed{8}).batch(64)).values != e0.values);

    // A small buffer shuffles locally but still yields every sample exactly once.
    auto local = read_all(indexed(1000).shuffle(10, bw::seed{7}).batch(64)).values;
    CHECK(local != iota_values(1000));
    for (std::size_t i = 0; i < local.size(); ++i) {
        CHECK(std::abs(local[i] - static_cast<float>(i)) < 1000.0f);
    }
    std::sort(local.begin(), local.end());
    CHECK(local == iota_values(1000));
}

TEST_CASE("shuffle with a full buffer is close to uniform") {
    // Where sample 0 lands over 2000 epochs: each of 10 positions about 200 times.
    const Dataset ds = indexed(10).shuffle(10, bw::seed{3}).batch(10);
    std::array<int, 10> landed{};
    for (std::uint64_t epoch = 0; epoch < 2000; ++epoch) {
        const auto v = read_all(ds, epoch).values;
        landed[static_cast<std::size_t>(std::find(v.begin(), v.end(), 0.0f) - v.begin())]++;
    }
    for (int c : landed) CHECK(c == doctest::Approx(200).epsilon(0.25));
}

TEST_CASE("schedules: constant, phased, cyclic and a per-step function") {
    const Dataset base = indexed(100);
    const Dataset phased = base.batch(bw::schedule::phased{{0, 32}, {2, 50}});
    CHECK(read_all(phased, 0).sizes == std::vector<std::size_t>{32, 32, 32, 4});
    CHECK(read_all(phased, 1).sizes == std::vector<std::size_t>{32, 32, 32, 4});
    CHECK(read_all(phased, 2).sizes == std::vector<std::size_t>{50, 50});
    CHECK(phased.cardinality(0) == 4);
    CHECK(phased.cardinality(5) == 2);

    const Dataset cyclic = base.batch(bw::schedule::cyclic{{25, 40}});
    CHECK(read_all(cyclic, 0).sizes == std::vector<std::size_t>{25, 25, 25, 25});
    CHECK(read_all(cyclic, 1).sizes == std::vector<std::size_t>{40, 40, 20});
    CHECK(read_all(cyclic, 2).sizes == std::vector<std::size_t>{25, 25, 25, 25});

    // Growing within the epoch: 10, 20, 30, then what is left.
    const Dataset growing = base.batch([](std::uint64_t, std::uint64_t step) { return 10 * (step + 1); });
    const auto g = read_all(growing);
    CHECK(g.sizes == std::vector<std::size_t>{10, 20, 30, 40});
    CHECK(g.values == iota_values(100));
    CHECK(growing.cardinality() == 4);
    const Dataset growing_drop =
        base.batch([](std::uint64_t, std::uint64_t step) { return 30 * (step + 1); }, true);
    CHECK(read_all(growing_drop).sizes == std::vector<std::size_t>{30, 60});
    CHECK(growing_drop.cardinality() == 2);
    CHECK(growing_drop.samples() == 90);
    CHECK(read_all(growing_drop).dropped == 10);

    CHECK_THROWS_AS((void)base.batch(0), bw::usage_error);
    CHECK_THROWS_AS((bw::schedule::phased{{1, 32}}), bw::usage_error);
    CHECK_THROWS_AS((bw::schedule::phased{{0, 32}, {0, 64}}), bw::usage_error);
    CHECK_THROWS_AS((bw::schedule::cyclic{{32, 0}}), bw::usage_error);
    const Dataset zero = base.batch([](std::uint64_t, std::uint64_t) { return std::size_t{0}; });
    CHECK_THROWS_AS(read_all(zero), bw::usage_error);
}

TEST_CASE("concatenate: 32-batches then 64-batches, as tf.data users build") {
    const Dataset a = indexed(96).batch(32);
    const Dataset b = indexed(128).map([](std::span<float> x, std::span<float> y) {
                                      x[0] += 1000;
                                      y[0] += 1000;
                                  }).batch(64);
    const Dataset both = a.concatenate(b);
    const auto r = read_all(both);
    CHECK(r.sizes == std::vector<std::size_t>{32, 32, 32, 64, 64});
    CHECK(r.values.front() == 0.0f);
    CHECK(r.values[96] == 1000.0f);
    CHECK(both.cardinality() == 5);
    CHECK(both.samples() == 224);

    // Unbatched concatenation, then one batching over the seam.
    CHECK(read_all(indexed(5).concatenate(indexed(5)).batch(4)).sizes == std::vector<std::size_t>{4, 4, 2});

    xt::xtensor<float, 2> wide = xt::zeros<float>({4, 3});
    xt::xtensor<float, 1> labels = xt::zeros<float>({4});
    CHECK_THROWS_AS((void)indexed(4).concatenate(Dataset(wide, labels)), bw::shape_error);
    CHECK_THROWS_AS((void)indexed(4).batch(2).concatenate(indexed(4)), bw::usage_error);
}

TEST_CASE("map before and after batch give the same batches, maps apply in order") {
    auto scale = [](std::span<float> x, std::span<float> y) {
        x[0] = x[0] * 2 + 1;
        y[0] = y[0] * 2 + 1;
    };
    auto shift = [](std::span<float> x, std::span<float> y) {
        x[0] -= 5;
        y[0] -= 5;
    };
    const auto before = read_all(indexed(20).map(scale).map(shift).shuffle(20, bw::seed{1}).batch(6));
    const auto after = read_all(indexed(20).shuffle(20, bw::seed{1}).batch(6).map(scale).map(shift));
    CHECK(before.values == after.values);
    CHECK(std::find(before.values.begin(), before.values.end(), 2.0f * 19 + 1 - 5) != before.values.end());
}

TEST_CASE("take and skip count samples before batch and batches after") {
    const auto all = iota_values(35);
    CHECK(read_all(indexed(50).skip(10).take(25).batch(10)).values == std::vector<float>(all.begin() + 10, all.end()));
    CHECK(indexed(50).skip(10).take(25).cardinality() == 25);
    const Dataset batches = indexed(50).batch(8).skip(2).take(3);
    const auto r = read_all(batches);
    CHECK(r.sizes == std::vector<std::size_t>{8, 8, 8});
    CHECK(r.values.front() == 16.0f);
    CHECK(batches.cardinality() == 3);
    CHECK(batches.samples() == 24);
    CHECK(indexed(50).batch(8).skip(6).samples() == 2);
    CHECK(indexed(50).skip(60).cardinality() == 0);
}

TEST_CASE("prefetch yields the same batches, and stops cleanly when reading stops early") {
    const Dataset plain = indexed(1000).shuffle(1000, bw::seed{2}).batch(bw::schedule::cyclic{{7, 64}});
    for (std::uint64_t epoch = 0; epoch < 3; ++epoch) {
        const auto a = read_all(plain, epoch);
        const auto b = read_all(plain.prefetch(3), epoch);
        CHECK(a.values == b.values);
        CHECK(a.sizes == b.sizes);
    }
    // Reading one batch and dropping the reader must join the producer thread, not hang.
    for (int i = 0; i < 20; ++i) {
        auto reader = plain.prefetch(1).read(0);
        bw::data::batch_data b;
        CHECK(reader.next(b));
    }
    // A dataset (and its nodes) may go away while a reader still runs.
    auto reader = indexed(100).batch(10).prefetch(2).read(0);
    bw::data::batch_data b;
    std::size_t total = 0;
    while (reader.next(b)) total += b.rows;
    CHECK(total == 100);
    CHECK(indexed(100).batch(10, true).prefetch(2).read(0).dropped() == 0);
}

TEST_CASE("an exception while preparing a batch reaches the reader through prefetch") {
    const Dataset failing = indexed(50)
                                .map([](std::span<float> x, std::span<float>) {
                                    if (x[0] == 33.0f) throw std::runtime_error("bad sample 33");
                                })
                                .batch(10)
                                .prefetch(2);
    auto reader = failing.read(0);
    bw::data::batch_data b;
    std::size_t batches = 0;
    CHECK_THROWS_WITH_AS(
        [&] {
            while (reader.next(b)) ++batches;
        }(),
        "bad sample 33", std::runtime_error);
    CHECK(batches == 3);
}

TEST_CASE("of_bytes: uint8 images read as byte / divisor, the floats of images divided when loaded") {
    const std::size_t n = 37;
    const std::size_t side = 3;
    xt::xtensor<std::uint8_t, 3> images = xt::zeros<std::uint8_t>({n, side, side});
    xt::xtensor<float, 3> divided = xt::zeros<float>({n, side, side});
    xt::xtensor<int, 1> labels = xt::zeros<int>({n});
    xt::xtensor<float, 1> weights = xt::zeros<float>({n});
    for (std::size_t i = 0; i < n; ++i) {
        labels(i) = static_cast<int>(i % 10);
        weights(i) = 0.25f * static_cast<float>(i % 5);
        for (std::size_t r = 0; r < side; ++r) {
            for (std::size_t c = 0; c < side; ++c) {
                const auto b = static_cast<std::uint8_t>((i * 31 + r * 7 + c * 3) % 256);
                images(i, r, c) = b;
                divided(i, r, c) = static_cast<float>(b) / 255.0f;
            }
        }
    }
    images(5, 0, 0) = 255;  // read as exactly 1
    divided(5, 0, 0) = 1.0f;
    const auto batches = [](const Dataset& ds) {
        std::vector<float> x;
        std::vector<float> y;
        std::vector<float> w;
        for (std::uint64_t epoch = 0; epoch < 2; ++epoch) {
            auto reader = ds.read(epoch);
            bw::data::batch_data b;
            while (reader.next(b)) {
                x.insert(x.end(), b.features.begin(), b.features.begin() + b.rows * b.feature_size);
                y.insert(y.end(), b.targets.begin(), b.targets.begin() + b.rows);
                if (b.weighted) w.insert(w.end(), b.weights.begin(), b.weights.begin() + b.rows);
            }
        }
        return std::tuple{x, y, w};
    };
    const auto double_first = [](std::span<float> f, std::span<float>) { f[0] *= 2.0f; };
    const auto pipeline = [&](const Dataset& ds) {
        return ds.shuffle(n, bw::seed{7}).map(double_first).concatenate(ds.take(4)).batch(8);
    };
    const Dataset bytes = Dataset::of_bytes(images, labels, 255.0f);
    const Dataset floats = Dataset(divided, labels);
    CHECK(bytes.feature_size() == side * side);
    // What fit asks before it reads batches by index and sends bytes.
    CHECK(bytes.stores_bytes());
    CHECK_FALSE(floats.stores_bytes());
    CHECK_FALSE(bytes.concatenate(floats).stores_bytes());
    CHECK(bytes.shuffle(n, bw::seed{1}).take(9).batch(4).prefetch().stores_bytes());
    CHECK(bytes.shuffle(n, bw::seed{1}).batch(4).readable_by_index());
    CHECK(bytes.batch(4).concatenate(bytes.batch(8)).readable_by_index());
    CHECK_FALSE(bytes.map(double_first).batch(4).readable_by_index());
    CHECK_FALSE(bytes.batch(4).map(double_first).readable_by_index());
    CHECK_FALSE(bytes.concatenate(bytes).batch(4).readable_by_index());
    CHECK(bytes.sample_shape() == std::vector<std::size_t>{side, side});
    const auto [bx, by, bw_] = batches(pipeline(bytes));
    const auto [fx, fy, fw] = batches(pipeline(floats));
    CHECK(bx.size() == 2 * (n + 4) * side * side);
    CHECK(bx == fx);  // bit for bit: the same division on the same values
    CHECK(by == fy);
    CHECK(std::find(bx.begin(), bx.end(), 1.0f) != bx.end());

    const auto [wx, wy, ww] = batches(Dataset::of_bytes(images, labels, weights, 255.0f).shuffle(n, bw::seed{3}).batch(5));
    const auto [vx, vy, vw] = batches(Dataset(divided, labels, weights).shuffle(n, bw::seed{3}).batch(5));
    CHECK(wx == vx);
    CHECK(ww == vw);
    CHECK(ww.size() == 2 * n);

    for (const float bad : {0.0f, -1.0f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
        CHECK_THROWS_WITH_AS((void)Dataset::of_bytes(images, labels, bad),
                             doctest::Contains("Dataset::of_bytes: the divisor must be finite and positive"),
                             bw::usage_error);
    }
    xt::xtensor<int, 1> short_labels = xt::zeros<int>({n - 1});
    CHECK_THROWS_WITH_AS((void)Dataset::of_bytes(images, short_labels, 255.0f),
                         doctest::Contains("37 feature samples but 36 targets"), bw::data_error);
}

TEST_CASE("bad datasets are refused with a clear, typed error") {
    xt::xtensor<float, 2> x = xt::zeros<float>({5, 2});
    xt::xtensor<float, 1> y4 = xt::zeros<float>({4});
    CHECK_THROWS_WITH_AS(Dataset(x, y4), doctest::Contains("5 feature samples but 4 targets"), bw::data_error);
    xt::xtensor<float, 2> empty = xt::zeros<float>({0, 2});
    xt::xtensor<float, 1> no_labels = xt::zeros<float>({0});
    CHECK_THROWS_WITH_AS(Dataset(empty, no_labels), doctest::Contains("no samples"), bw::data_error);
    x(3, 1) = std::numeric_limits<float>::quiet_NaN();
    xt::xtensor<float, 1> y5 = xt::zeros<float>({5});
    try {
        Dataset bad(x, y5);
        FAIL("a NaN feature must be refused");
    } catch (const bw::data_error& e) {
        CHECK(e.sample() == 3);
    }
    const Dataset ok = indexed(10);
    CHECK_THROWS_AS((void)ok.read(0), bw::usage_error);
    CHECK_THROWS_AS((void)ok.prefetch(2), bw::usage_error);
    CHECK_THROWS_AS((void)ok.batch(2).batch(2), bw::usage_error);
    CHECK_THROWS_AS((void)ok.batch(2).shuffle(10, bw::seed{1}), bw::usage_error);
    CHECK_THROWS_AS((void)ok.shuffle(0, bw::seed{1}), bw::usage_error);
}

TEST_CASE("split: disjoint, complete and the same every epoch, a fixed shuffle stays fixed") {
    const Dataset all = indexed(50);
    const auto [left, right] = bw::data::split(all, 0.8, bw::seed{3});
    CHECK(left.cardinality() == 40);
    CHECK(right.cardinality() == 10);
    const std::vector<float> l0 = read_all(left.batch(7)).values, r0 = read_all(right.batch(7)).values;
    std::vector<float> both = l0;
    both.insert(both.end(), r0.begin(), r0.end());
    std::sort(both.begin(), both.end());
    CHECK(both == iota_values(50));                  // disjoint and nothing lost
    CHECK(l0 != std::vector<float>(iota_values(40)));  // shuffled once
    for (std::uint64_t epoch = 1; epoch < 4; ++epoch) {
        CHECK(read_all(left.batch(7), epoch).values == l0);
        CHECK(read_all(right.batch(7), epoch).values == r0);
    }
    // Reshuffling the training part each epoch keeps it within its half.
    const auto reshuffled = read_all(left.shuffle(40, bw::seed{4}).batch(40), 2).values;
    CHECK(reshuffled != l0);
    CHECK(std::is_permutation(reshuffled.begin(), reshuffled.end(), l0.begin()));
    // Without a seed the split keeps the order: the first 80 %, then the rest.
    const auto [head, tail] = bw::data::split(all, 0.8);
    CHECK(read_all(tail.batch(10)).values == std::vector<float>{40, 41, 42, 43, 44, 45, 46, 47, 48, 49});
    (void)head;

    // The trap the split avoids: a per-epoch shuffle followed by take/skip draws a new split
    // every epoch, so samples move between the parts.
    const Dataset leaky = all.shuffle(50, bw::seed{3});
    const auto t0 = read_all(leaky.take(40).batch(40), 0).values, t1 = read_all(leaky.take(40).batch(40), 1).values;
    CHECK_FALSE(std::is_permutation(t0.begin(), t0.end(), t1.begin()));
    // shuffle(..., reshuffle_each_iteration = false) is the fixed kind.
    const Dataset fixed = all.shuffle(50, bw::seed{3}, false);
    CHECK(read_all(fixed.batch(50), 0).values == read_all(fixed.batch(50), 5).values);

    CHECK_THROWS_WITH_AS(bw::data::split(all, 1.0), doctest::Contains("in (0, 1)"), bw::usage_error);
    CHECK_THROWS_WITH_AS(bw::data::split(indexed(3), 0.1), doctest::Contains("leaves no samples"), bw::data_error);
    CHECK_THROWS_AS(bw::data::split(all.batch(5), 0.5), bw::usage_error);
}

TEST_CASE("batch sizes from the user: served as min(size, samples left), or refused up front") {
    const Dataset four = indexed(4);
    // A size past max_batch_size is an unsigned wrap, not a batch: refused where it is given,
    // naming the call and the size, instead of zero batches and then std::length_error.
    CHECK_THROWS_WITH_AS((void)four.batch(SIZE_MAX), doctest::Contains("batch: a batch size of 18446744073709551615"),
                         bw::usage_error);
    CHECK_THROWS_AS((void)four.batch(bw::schedule::cyclic{{2, bw::max_batch_size + 1}}), bw::usage_error);
    CHECK_THROWS_AS((void)four.batch(bw::schedule::ramp{.from = 2, .to = SIZE_MAX / 2, .over_samples = 8}), bw::usage_error);

    // Buffers hold what a batch can get: batch(1 << 24) on 4 samples is 4 rows, not 16M, and
    // batch(1 << 40) (max_batch_for's answer for a huge budget) is not std::bad_alloc.
    for (const std::size_t size : {std::size_t{1} << 24, std::size_t{1} << 40, bw::max_batch_size}) {
        CAPTURE(size);
        const Dataset one = four.batch(size);
        CHECK(one.cardinality() == 1);
        CHECK(one.samples() == 4);
        bw::data::batch_data b;
        auto reader = one.read(0);
        REQUIRE(reader.next(b));
        CHECK(b.rows == 4);
        CHECK(b.features.size() == 4);
        CHECK_FALSE(reader.next(b));
        CHECK(four.batch(size, true).cardinality() == 0);
    }

    // A schedule whose sizes would sum past size_t: counted and read by what is left, so
    // neither cardinality nor reading loops or over-allocates.
    const Dataset ten = indexed(10);
    const bw::batch_schedule huge = [](std::uint64_t, std::uint64_t step) -> std::size_t {
        return step == 0 ? 3 : bw::max_batch_size;
    };
    CHECK(ten.batch(huge).cardinality() == 2);
    CHECK(read_all(ten.batch(huge)).sizes == std::vector<std::size_t>{3, 7});
    CHECK(read_all(ten.batch(huge)).values == iota_values(10));
    CHECK(ten.batch(huge, true).cardinality() == 1);
    const bw::batch_schedule wraps = [](std::uint64_t, std::uint64_t step) -> std::size_t {
        return step == 0 ? 3 : SIZE_MAX - 1;
    };
    CHECK_THROWS_WITH_AS((void)ten.batch(wraps).cardinality(), doctest::Contains("(epoch 0, step 1)"),
                         bw::usage_error);

    // The samples read before a late epoch saturate instead of wrapping to a small count:
    // 2^63 epochs of 10 samples are past 2^63 samples, not 0.
    const bw::schedule::by_samples late{[](std::uint64_t read) -> std::size_t {
        return read >= (std::uint64_t{1} << 63) ? 5 : 2;
    }};
    CHECK(ten.batch(late).cardinality(std::uint64_t{1} << 63) == 2);
    CHECK(ten.batch(late).cardinality(0) == 5);
}
