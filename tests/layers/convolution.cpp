// Convolutional layers: Conv2D, the poolings, LayerNormalization, GroupNormalization, batch norm
// over channels and SpatialDropout2D. Forward passes against PyTorch (tests/layers/conv_fixture.npz,
// made by make_conv_fixture.py) and against a direct convolution loop written here; a
// finite-difference check of every layer over both batch policies and every stride and padding
// kind; exact accumulation and the out-of-memory split on a small CNN.
#include "../gradient_check.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace bw = batchwise;

namespace {

using fixture_map = std::map<std::string, bw::data::npz_array>;

const fixture_map& fixture() {
    static const fixture_map arrays = [] {
        fixture_map m;
        for (auto& [name, a] : bw::data::read_npz(std::string(BATCHWISE_TEST_SOURCE_DIR) + "/layers/conv_fixture.npz")) {
            m.emplace(name, std::move(a));
        }
        return m;
    }();
    return arrays;
}
const std::vector<float>& values(const std::string& name) {
    const auto it = fixture().find(name);
    REQUIRE_MESSAGE(it != fixture().end(), "conv_fixture.npz has no array " << name);
    return it->second.values;
}

/// Runs the network of Net forward on `x` (rows samples), with `weights` (by variable name, in
/// layer order) copied in first: the layer alone, below the Model, in training or inference.
template <class Net>
std::vector<float> forward(const std::vector<float>& x, std::size_t rows,
                           const std::vector<std::vector<float>>& weights, bool training = false) {
    typename Net::template network<bw_test::exec> net;
    net.initialize(1);
    net.reserve(rows);
    std::size_t next = 0;
    net.for_each_variable([&](std::size_t, const bw::variable_ref& v) {
        if (next < weights.size()) {
            REQUIRE(weights[next].size() == v.size());
            bw_test::exec::from_host(weights[next].data(), v.size(), v.value);
        }
        ++next;
    });
    bw_test::device_array input{x};
    const bw::pass_context ctx{.training = training, .seed = 1};
    const bw::const_matrix_view y = net.forward({input.data(), rows, Net::input_shape::size}, ctx);
    return bw_test::host_copy(y.data, y.size());
}

void check_equal(const std::vector<float>& got, const std::vector<float>& want, double tolerance = 1e-5) {
    REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
        INFO("element " << i);
        CHECK(got[i] == doctest::Approx(want[i]).epsilon(tolerance).scale(1.0));
    }
}

/// A direct 2-D convolution, TensorFlow's padding rule, written independently of the library:
/// x (n, h, w, c), kernel (kh, kw, c, f).
std::vector<float> direct_conv(const std::vector<float>& x, const std::vector<float>& kernel, std::size_t n,
                               std::size_t h, std::size_t w, std::size_t c, std::size_t f, std::size_t kh,
                               std::size_t kw, std::size_t sh, std::size_t sw, std::size_t dh, std::size_t dw,
                               bool same) {
    const long eh = long((kh - 1) * dh + 1), ew = long((kw - 1) * dw + 1);
    const long oh = same ? (long(h) + long(sh) - 1) / long(sh) : (long(h) - eh) / long(sh) + 1;
    const long ow = same ? (long(w) + long(sw) - 1) / long(sw) : (long(w) - ew) / long(sw) + 1;
    const long top = same ? std::max((oh - 1) * long(sh) + eh - long(h), 0L) / 2 : 0;
    const long left = same ? std::max((ow - 1) * long(sw) + ew - long(w), 0L) / 2 : 0;
    std::vector<float> y(n * std::size_t(oh * ow) * f, 0.0f);
    for (std::size_t s = 0; s < n; ++s)
        for (long i = 0; i < oh; ++i)
            for (long j = 0; j < ow; ++j)
                for (std::size_t o = 0; o < f; ++o) {
                    double acc = 0.0;
                    for (std::size_t a = 0; a < kh; ++a)
                        for (std::size_t b = 0; b < kw; ++b) {
                            const long r = i * long(sh) + long(a * dh) - top, q = j * long(sw) + long(b * dw) - left;
                            if (r < 0 || q < 0 || r >= long(h) || q >= long(w)) continue;
                            for (std::size_t k = 0; k < c; ++k)
                                acc += double(x[((s * h + std::size_t(r)) * w + std::size_t(q)) * c + k]) *
                                       kernel[((a * kw + b) * c + k) * f + o];
                        }
                    y[((s * std::size_t(oh) + std::size_t(i)) * std::size_t(ow) + std::size_t(j)) * f + o] = float(acc);
                }
    return y;
}

template <std::size_t H, std::size_t W, std::size_t C, std::size_t F, std::size_t KH, std::size_t KW, std::size_t SH,
          std::size_t SW, std::size_t DH, std::size_t DW, class Padding>
void check_against_direct_loop(std::uint64_t s) {
    using conv = bw::Conv2D<F, KH, KW, bw::strides<SH, SW>, bw::dilation<DH, DW>, Padding, bw::no_bias>;
    using Net = bw::Sequential<bw::Input<H, W, C>, conv>;
    constexpr std::size_t rows = 3;
    const auto xm = bw_test::random_matrix(rows, H * W * C, s);
    const auto km = bw_test::random_matrix(1, KH * KW * C * F, s + 1);
    const std::vector<float> x(xm.begin(), xm.end()), kernel(km.begin(), km.end());
    INFO("Conv2D<" << F << ", " << KH << ", " << KW << "> strides " << SH << "x" << SW << " dilation " << DH << "x"
                   << DW << (std::is_same_v<Padding, bw::same_padding> ? " same" : " valid") << " on " << H << "x" << W
                   << "x" << C);
    const auto want = direct_conv(x, kernel, rows, H, W, C, F, KH, KW, SH, SW, DH, DW,
                                  std::is_same_v<Padding, bw::same_padding>);
    CHECK(want.size() == rows * Net::output_shape::size);
    check_equal(forward<Net>(x, rows, {kernel}), want);
}

constexpr std::size_t rows = 6;

template <class Net, class Batch>
void check_net(std::uint64_t s, float step, double tolerance) {
    bw_test::check_network_gradients<Net, Batch>(s, rows, step, tolerance, 32);
}
/// Under a static batch of 8 the 6 rows come with 2 rows of padding, which must move nothing.
template <class Net>
void check_both(std::uint64_t s, float step = 1e-2f, double tolerance = 2e-2) {
    {
        INFO("static_batch");
        check_net<Net, bw::static_batch<rows + 2>>(s, step, tolerance);
    }
    {
        INFO("dynamic_batch");
        check_net<Net, bw::dynamic_batch>(s, step, tolerance);
    }
}

}  // namespace

TEST_CASE("Conv2D: forward against PyTorch for each stride, padding and dilation kind") {
    const auto& x = values("x");
    using In = bw::Input<7, 6, 3>;
    check_equal(forward<bw::Sequential<In, bw::Conv2D<4, 3, 3>>>(x, 2, {values("conv_a_kernel"), values("conv_a_bias")}),
                values("conv_a_y"));
    // Stride 2 with "same": TensorFlow puts the odd row of padding at the bottom.
    check_equal(forward<bw::Sequential<In, bw::Conv2D<2, 4, 2, bw::strides<2>, bw::same_padding, bw::no_bias>>>(
                    x, 2, {values("conv_b_kernel")}),
                values("conv_b_y"));
    check_equal(forward<bw::Sequential<In, bw::Conv2D<3, 2, 3, bw::dilation<2>>>>(
                    x, 2, {values("conv_c_kernel"), values("conv_c_bias")}),
                values("conv_c_y"));
    check_equal(forward<bw::Sequential<In, bw::Conv2D<2, 3, 3, bw::dilation<2, 1>, bw::same_padding>>>(
                    x, 2, {values("conv_d_kernel"), values("conv_d_bias")}),
                values("conv_d_y"));
}

TEST_CASE("pooling: forward against PyTorch, padding never wins a max and never counts in a mean") {
    const auto& x = values("x");
    using In = bw::Input<7, 6, 3>;
    check_equal(forward<bw::Sequential<In, bw::MaxPooling2D<2>>>(x, 2, {}), values("maxpool_a_y"));
    check_equal(forward<bw::Sequential<In, bw::MaxPooling2D<3, 3, bw::strides<2>, bw::same_padding>>>(x, 2, {}),
                values("maxpool_b_y"));
    check_equal(forward<bw::Sequential<In, bw::AveragePooling2D<2>>>(x, 2, {}), values("avgpool_a_y"));
    check_equal(forward<bw::Sequential<In, bw::AveragePooling2D<3, 3, bw::strides<2>, bw::same_padding>>>(x, 2, {}),
                values("avgpool_b_y"));
    check_equal(forward<bw::Sequential<In, bw::GlobalAveragePooling2D>>(x, 2, {}), values("gap_y"));
}

TEST_CASE("normalisation over channels: group, layer and batch norm against PyTorch") {
    const auto& x = values("norm_x");
    using In = bw::Input<5, 4, 4>;
    check_equal(forward<bw::Sequential<In, bw::GroupNormalization<2>>>(x, 2, {values("gn_gamma"), values("gn_beta")}),
                values("gn_y"), 1e-4);
    check_equal(forward<bw::Sequential<In, bw::LayerNormalization<>>>(x, 2, {values("ln_gamma"), values("ln_beta")}),
                values("ln_y"), 1e-4);
    // Batch norm in training: statistics over samples and positions, per channel.
    check_equal(forward<bw::Sequential<In, bw::BatchNorm>>(x, 2, {values("bn_gamma"), values("bn_beta")}, true),
                values("bn_y"), 1e-4);
}

TEST_CASE("Conv2D: forward against a direct convolution loop, every stride, padding and dilation") {
    check_against_direct_loop<5, 5, 2, 3, 3, 3, 1, 1, 1, 1, bw::valid_padding>(1);
    check_against_direct_loop<5, 5, 2, 3, 3, 3, 1, 1, 1, 1, bw::same_padding>(2);
    check_against_direct_loop<7, 6, 3, 2, 3, 2, 2, 2, 1, 1, bw::valid_padding>(3);
    check_against_direct_loop<7, 6, 3, 2, 3, 2, 2, 3, 1, 1, bw::same_padding>(4);
    check_against_direct_loop<8, 7, 2, 2, 2, 3, 1, 1, 2, 2, bw::valid_padding>(5);
    check_against_direct_loop<8, 7, 2, 2, 2, 3, 2, 1, 3, 1, bw::same_padding>(6);
    check_against_direct_loop<4, 3, 5, 4, 1, 1, 1, 1, 1, 1, bw::valid_padding>(7);  // pointwise: no gather
    check_against_direct_loop<4, 3, 5, 4, 1, 1, 2, 2, 1, 1, bw::same_padding>(8);   // 1 x 1, strided
    check_against_direct_loop<3, 3, 1, 2, 5, 5, 1, 1, 1, 1, bw::same_padding>(9);   // kernel larger than the image
}

TEST_CASE("output shapes follow Keras's rules") {
    using a = bw::Sequential<bw::Input<28, 28, 1>, bw::Conv2D<32, 3, 3>, bw::MaxPooling2D<2>,
                             bw::Conv2D<64, 3, 3, bw::same_padding, bw::strides<2>>, bw::GlobalAveragePooling2D>;
    static_assert(std::is_same_v<a::layer_output_shape<0>, bw::shape<26, 26, 32>>);
    static_assert(std::is_same_v<a::layer_output_shape<1>, bw::shape<13, 13, 32>>);
    static_assert(std::is_same_v<a::layer_output_shape<2>, bw::shape<7, 7, 64>>);
    static_assert(std::is_same_v<a::output_shape, bw::shape<64>>);
    using b = bw::Sequential<bw::Input<7, 6, 3>, bw::Conv2D<2, 3, 3, bw::dilation<2>>,
                             bw::AveragePooling2D<2, 1, bw::strides<1>, bw::same_padding>, bw::SpatialDropout2D<0.5f>>;
    static_assert(std::is_same_v<b::output_shape, bw::shape<3, 2, 2>>);
    // Keras names: conv2d, max_pooling2d, group_normalization.
    bw_test::Model<bw::Sequential<bw::Input<4, 4, 2>, bw::Conv2D<2, 3, 3>, bw::GroupNormalization<2>,
                                  bw::MaxPooling2D<2>, bw::Flatten, bw::Dense<1>>>
        m;
    CHECK(m.variables()[0].name == "conv2d/kernel");
    CHECK(m.variables()[2].name == "group_normalization/gamma");
    CHECK(m.variables()[0].ref.rows == 3 * 3 * 2);
    CHECK(m.variables()[0].ref.cols == 2);
}

TEST_CASE("gradient: Conv2D, every stride and padding kind, with and without bias") {
    // valid at stride 1, same at stride 2 (he_uniform), then valid at stride 2 and same at stride 1.
    check_both<bw::Sequential<bw::Input<7, 6, 2>, bw::Conv2D<3, 3, 3>, bw::Tanh,
                              bw::Conv2D<2, 2, 2, bw::strides<2>, bw::same_padding, bw::he_uniform>, bw::Flatten,
                              bw::Dense<3>>>(21);
    check_both<bw::Sequential<bw::Input<7, 7, 2>, bw::Conv2D<3, 3, 3, bw::strides<2>, bw::no_bias>, bw::Tanh,
                              bw::Conv2D<2, 3, 2, bw::same_padding>, bw::Flatten, bw::Dense<3>>>(22);
    // Dilated with "same", and a pointwise (1 x 1) convolution, which reads its input in place.
    check_both<bw::Sequential<bw::Input<7, 6, 2>, bw::Conv2D<3, 2, 3, bw::dilation<2, 1>, bw::same_padding>,
                              bw::Sigmoid, bw::Conv2D<2, 1, 1>, bw::Flatten, bw::Dense<3>>>(23);
}

TEST_CASE("gradient: MaxPooling2D and AveragePooling2D, valid and same, overlapping windows") {
    // A small step keeps the probes from moving a window's maximum to another pixel.
    check_both<bw::Sequential<bw::Input<7, 6, 2>, bw::Conv2D<3, 2, 2>, bw::MaxPooling2D<2>,
                              bw::Conv2D<2, 1, 1>, bw::MaxPooling2D<3, 3, bw::strides<2>, bw::same_padding>,
                              bw::Flatten, bw::Dense<3>>>(24, 1e-3f, 3e-2);
    check_both<bw::Sequential<bw::Input<7, 6, 2>, bw::Conv2D<3, 2, 2>, bw::AveragePooling2D<2>, bw::Conv2D<2, 1, 1>,
                              bw::AveragePooling2D<3, 3, bw::strides<2>, bw::same_padding>, bw::Flatten,
                              bw::Dense<3>>>(25);
    check_both<bw::Sequential<bw::Input<5, 4, 3>, bw::Conv2D<4, 3, 3, bw::same_padding>, bw::GlobalAveragePooling2D,
                              bw::Dense<3>>>(26);
}

TEST_CASE("gradient: batch norm over channels, GroupNormalization, LayerNormalization, SpatialDropout2D") {
    // Normalising a handful of values curves the loss strongly: a probe of 1e-2 is too coarse.
    // One of 1e-3 is too fine: the float loss's rounding is then read as a slope as large as the
    // 2e-4 the check allows a gradient that is exactly zero (the first BatchNorm's beta, which
    // the second takes out: under OpenBLAS's SkylakeX kernel the two losses differed by 4.8e-7,
    // a few ulps, a slope of 2.4e-4), so the kernel decided the outcome. 3e-3 reads the same
    // rounding as a third of that.
    // A bias before batch norm has no gradient (the batch mean takes it out): no_bias, as in practice.
    check_both<bw::Sequential<bw::Input<5, 4, 2>, bw::Conv2D<4, 3, 3, bw::same_padding, bw::no_bias>, bw::BatchNorm,
                              bw::Conv2D<4, 1, 1, bw::no_bias>, bw::BatchNormalization<0.9f, 1e-3f, 2>, bw::Flatten,
                              bw::Dense<3>>>(27, 3e-3f);
    check_both<bw::Sequential<bw::Input<5, 4, 2>, bw::Conv2D<4, 3, 3, bw::same_padding>, bw::GroupNormalization<2>,
                              bw::Conv2D<4, 1, 1>, bw::LayerNormalization<>, bw::Flatten, bw::Dense<3>>>(28, 3e-3f);
    check_both<bw::Sequential<bw::Input<5, 4, 2>, bw::Conv2D<4, 3, 3, bw::same_padding>, bw::SpatialDropout2D<0.4f>,
                              bw::GroupNormalization<1>, bw::Flatten, bw::Dense<3>>>(29, 3e-3f);
}

TEST_CASE("SpatialDropout2D drops whole channels, the same ones however the batch is split") {
    using Net = bw::Sequential<bw::Input<3, 3, 64>, bw::SpatialDropout2D<0.25f>>;
    constexpr std::size_t n = 8;
    const std::vector<float> ones(n * Net::input_shape::size, 1.0f);
    typename Net::template network<bw_test::exec> net;
    net.reserve(n);
    bw_test::device_array x{ones};
    const auto masks = [&](std::size_t first, std::size_t count) {
        const bw::pass_context ctx{.training = true, .seed = 9, .epoch = 2, .first_sample = first};
        const auto y = net.forward({x.data(), count, Net::input_shape::size}, ctx);
        return bw_test::host_copy(y.data, y.size());
    };
    const auto whole = masks(0, n);
    std::size_t dropped = 0;
    for (std::size_t s = 0; s < n; ++s) {
        for (std::size_t c = 0; c < 64; ++c) {
            const float v = whole[s * 576 + c];
            CHECK((v == 0.0f || v == doctest::Approx(1.0f / 0.75f)));
            dropped += v == 0.0f;
            for (std::size_t p = 1; p < 9; ++p) CHECK(whole[s * 576 + p * 64 + c] == v);  // the whole map
        }
    }
    CHECK(double(dropped) / (n * 64) == doctest::Approx(0.25).epsilon(0.3));
    const auto tail = masks(5, 3);  // samples 5..7 as a micro-batch of their own
    CHECK(std::equal(tail.begin(), tail.end(), whole.begin() + 5 * 576));
    const bw::pass_context inference{.training = false};
    CHECK(bw_test::host_copy(net.forward({x.data(), n, 576}, inference).data, n * 576) == ones);
}

namespace {

// A small CNN with every batch-sensitive piece: ghost batch norm over channels (virtual batch 4),
// SpatialDropout2D and Dropout, group norm, both poolings.
using small_cnn = bw::Sequential<bw::Input<8, 8, 1>, bw::Conv2D<4, 3, 3, bw::same_padding, bw::no_bias>,
                                 bw::BatchNormalization<0.9f, 1e-3f, 4>, bw::ReLU, bw::MaxPooling2D<2>,
                                 bw::SpatialDropout2D<0.25f>, bw::Conv2D<6, 3, 3>, bw::GroupNormalization<2>, bw::ReLU,
                                 bw::AveragePooling2D<2>, bw::Flatten, bw::Dropout<0.2f>, bw::Dense<3>>;

struct images {
    xt::xtensor<float, 4> x;
    xt::xtensor<int, 1> y;
};
images make_images(std::size_t n, std::uint64_t s) {
    const auto flat = bw_test::random_matrix(n, 64, s);
    images b{xt::xtensor<float, 4>::from_shape({n, 8, 8, 1}), xt::zeros<int>({n})};
    std::copy(flat.begin(), flat.end(), b.x.begin());
    for (std::size_t i = 0; i < n; ++i) b.y(i) = static_cast<int>((i * 5 + s) % 3);
    return b;
}

template <class M1, class M2>
void check_same_weights(const M1& a, const M2& b) {
    const auto wa = a.get_weights(), wb = b.get_weights();
    REQUIRE(wa.size() == wb.size());
    for (std::size_t v = 0; v < wa.size(); ++v) {
        double diff = 0.0, norm = 0.0;
        for (std::size_t i = 0; i < wa[v].value.size(); ++i) {
            diff = std::max(diff, std::fabs(double(wa[v].value.flat(i)) - wb[v].value.flat(i)));
            norm = std::max(norm, std::fabs(double(wa[v].value.flat(i))));
        }
        INFO(wa[v].name << ": max difference " << diff << " of max value " << norm);
        CHECK(diff <= 1e-5 * norm);
    }
}

}  // namespace

TEST_CASE("CNN: accumulation over uneven micro-batches equals the whole batch, batch norm and dropouts included") {
    bw_test::Model<small_cnn> whole{bw::seed{31}};
    bw_test::Model<small_cnn, bw::dynamic_batch, bw_test::exec, bw::accumulate_runtime<>> split{bw::seed{31}};
    whole.compile(bw::Adam{{.learning_rate = 1e-2f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    split.compile(bw::Adam{{.learning_rate = 1e-2f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    // Splits at multiples of the virtual batch (4) keep batch norm's statistics; 16 = 4 + 8 + 4.
    const std::vector<std::size_t> sizes{4, 8, 4};
    split.set_accumulation({.micro_batches = sizes.size()});
    for (std::size_t step = 0; step < 3; ++step) {
        const images b = make_images(16, step + 1);
        whole.train_on_batch(b.x, b.y);
        std::size_t first = 0;
        for (const std::size_t n : sizes) {
            split.train_on_batch(xt::xtensor<float, 4>(xt::view(b.x, xt::range(first, first + n))),
                                 xt::xtensor<int, 1>(xt::view(b.y, xt::range(first, first + n))));
            first += n;
        }
    }
    CHECK(split.iterations() == whole.iterations());
    check_same_weights(whole, split);
}

TEST_CASE("CNN: a memory budget that splits the batch leaves the same weights, and counts the window matrix") {
    using M = bw_test::Model<small_cnn>;
    // Each convolution counts its output, its window matrix and (past the first) its input
    // gradient: the first sees 8 x 8 positions of 3 x 3 taps on one channel; the second, after
    // pooling, 2 x 2 positions of 3 x 3 taps on 4 channels, its input 4 x 4 x 4.
    using network = small_cnn::network<bw_test::exec>;
    static_assert(network::layer_impl<0>::buffer_floats(1, false) == 8 * 8 * 4 + 8 * 8 * 9);
    static_assert(network::layer_impl<5>::buffer_floats(1, true) == 2 * 2 * 6 + 2 * 2 * 36 + 4 * 4 * 4);
    const std::size_t budget = M::estimate_memory(8, 2).total_bytes();
    M unsplit{bw::seed{32}};
    M limited{bw::seed{32}, bw::memory_budget{budget}};
    unsplit.compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    limited.compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    for (std::size_t step = 0; step < 2; ++step) {
        const images b = make_images(16, step + 7);
        unsplit.train_on_batch(b.x, b.y);
        limited.train_on_batch(b.x, b.y);
    }
    CHECK(limited.micro_batch_limit() == 8);
    CHECK(limited.memory().total_bytes() <= budget);
    CHECK(limited.iterations() == unsplit.iterations());
    check_same_weights(unsplit, limited);
}

TEST_CASE("batch norm over channels: moving statistics per channel over samples and positions") {
    // Momentum 0: after one step the moving averages are that batch's statistics, so inference
    // on the same batch normalises with its per-channel mean and biased variance.
    using Net = bw::Sequential<bw::Input<3, 2, 2>, bw::BatchNormalization<0.0f, 1e-3f>>;
    bw_test::Model<Net> model;
    model.compile(bw::SGD{{.learning_rate = 0.0f}}, bw::MeanSquaredError{});
    constexpr std::size_t n = 5;
    const auto flat = bw_test::random_matrix(n, 12, 41, -2.0f, 3.0f);
    xt::xtensor<float, 4> x = xt::xtensor<float, 4>::from_shape({n, 3, 2, 2});
    std::copy(flat.begin(), flat.end(), x.begin());
    model.train_on_batch(x, xt::xtensor<float, 4>(xt::zeros<float>({n, std::size_t{3}, std::size_t{2}, std::size_t{2}})));
    const auto y = model.predict(x);
    for (std::size_t c = 0; c < 2; ++c) {
        double s = 0.0, s2 = 0.0;
        for (std::size_t i = c; i < flat.size(); i += 2) s += flat.data()[i];
        const double mean = s / (n * 6);
        for (std::size_t i = c; i < flat.size(); i += 2) s2 += (flat.data()[i] - mean) * (flat.data()[i] - mean);
        const double var = s2 / (n * 6);
        for (std::size_t i = c; i < flat.size(); i += 2) {
            CHECK(y.data()[i] == doctest::Approx((flat.data()[i] - mean) / std::sqrt(var + 1e-3)).epsilon(1e-4));
        }
    }
}
