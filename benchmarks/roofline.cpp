// roofline (BENCHMARKS.md): the SGEMMs of one mlp-bench training step (784 -> 256 -> 256 -> 10),
// timed alone through the same OpenBLAS call batchwise makes (batchwise::cpu_blas::gemm, i.e.
// cxxblas -> cblas_sgemm), over whole epochs of 16384 samples, median of --reps after a warm-up.
// Reported as samples/s = 1 / (time of the step's GEMMs per sample): what a framework doing
// nothing but these GEMMs would reach.
//
//   roofline --batch N [--mode M]
//     M = 8     the 8 GEMMs a step needs: 3 forward, 3 weight gradients, 2 input gradients
//               (default; the first layer's input gradient is not needed)
//     M = 9     the same plus the unneeded first-layer input gradient (the table)
//     M = 8t    the 8 GEMMs with kernels stored (out, in) as PyTorch stores them, for comparing
//               operand layouts: x W^T, dY^T x, dY W
//     M = parts each GEMM alone, microseconds per call, one JSON line per GEMM (for profiling)
//     M = 8+sgd the 8 GEMMs plus one plain SGD pass over the 268k parameters (w -= lr g): the
//               floor of any implementation that materialises gradients and then updates
//     M = 8fused the 8 GEMMs with plain SGD fused into the weight-gradient GEMMs
//               (W = W - lr X^T dY as one GEMM with alpha = -lr, beta = 1, after the input
//               gradient that needs the old W): what fusing the update into the GEMM allows
//
// Operand layouts of M = 8/9 are those of batchwise's Dense (kernel (in, out), Keras's layout):
// forward Y = X W (NN); weight gradient dW = X^T dY (TN); input gradient dX = dY W^T (NT).
// Each step reads its own slice of the 16384-sample input, as training does.
#include <batchwise/exec/cpu_blas.hpp>

#include <cstdio>
#include <functional>
#include <string>

#include "bench_common.hpp"

namespace bw = batchwise;

namespace {

constexpr std::size_t d0 = 784, d1 = 256, d2 = 256, d3 = 10;

struct buffers {
    std::size_t n;
    std::vector<float> w1, w2, w3, h1, h2, z, dz, dh2, dh1, dx, g1, g2, g3;
    explicit buffers(std::size_t rows)
        : n(rows), w1(d0 * d1, 0.01f), w2(d1 * d2, 0.01f), w3(d2 * d3, 0.01f), h1(n * d1, 0.5f),
          h2(n * d2, 0.5f), z(n * d3), dz(n * d3, 0.1f), dh2(n * d2, 0.1f), dh1(n * d1, 0.1f),
          dx(n * d0), g1(d0 * d1), g2(d1 * d2), g3(d2 * d3) {}
};

bw::const_matrix_view cv(const std::vector<float>& v, std::size_t r, std::size_t c) {
    return {v.data(), r, c};
}
bw::matrix_view mv(std::vector<float>& v, std::size_t r, std::size_t c) {
    return {v.data(), r, c};
}

using bw::transpose;
constexpr auto N = transpose::no;
constexpr auto T = transpose::yes;

/// The GEMMs of one step, each a named call; x is this step's input slice.
std::vector<std::pair<std::string, std::function<void(const float*)>>> step_gemms(buffers& b,
                                                                                  const std::string& mode) {
    const std::size_t n = b.n;
    auto g = [](transpose ta, transpose tb, bw::const_matrix_view a, bw::const_matrix_view bb,
                bw::matrix_view c) { bw::cpu_blas::gemm(ta, tb, 1.0f, a, bb, 0.0f, c); };
    std::vector<std::pair<std::string, std::function<void(const float*)>>> v;
    if (mode == "8t") {
        // Kernels (out, in): forward X W^T (NT), weight gradient dY^T X (TN), input gradient dY W (NN).
        v.emplace_back("fwd1 X.W1^T", [&, n, g](const float* x) { g(N, T, {x, n, d0}, cv(b.w1, d1, d0), mv(b.h1, n, d1)); });
        v.emplace_back("fwd2 H1.W2^T", [&, n, g](const float*) { g(N, T, cv(b.h1, n, d1), cv(b.w2, d2, d1), mv(b.h2, n, d2)); });
        v.emplace_back("fwd3 H2.W3^T", [&, n, g](const float*) { g(N, T, cv(b.h2, n, d2), cv(b.w3, d3, d2), mv(b.z, n, d3)); });
        v.emplace_back("wgrad3 dZ^T.H2", [&, n, g](const float*) { g(T, N, cv(b.dz, n, d3), cv(b.h2, n, d2), mv(b.g3, d3, d2)); });
        v.emplace_back("igrad3 dZ.W3", [&, n, g](const float*) { g(N, N, cv(b.dz, n, d3), cv(b.w3, d3, d2), mv(b.dh2, n, d2)); });
        v.emplace_back("wgrad2 dH2^T.H1", [&, n, g](const float*) { g(T, N, cv(b.dh2, n, d2), cv(b.h1, n, d1), mv(b.g2, d2, d1)); });
        v.emplace_back("igrad2 dH2.W2", [&, n, g](const float*) { g(N, N, cv(b.dh2, n, d2), cv(b.w2, d2, d1), mv(b.dh1, n, d1)); });
        v.emplace_back("wgrad1 dH1^T.X", [&, n, g](const float* x) { g(T, N, cv(b.dh1, n, d1), {x, n, d0}, mv(b.g1, d1, d0)); });
        return v;
    }
    v.emplace_back("fwd1 X.W1", [&, n, g](const float* x) { g(N, N, {x, n, d0}, cv(b.w1, d0, d1), mv(b.h1, n, d1)); });
    v.emplace_back("fwd2 H1.W2", [&, n, g](const float*) { g(N, N, cv(b.h1, n, d1), cv(b.w2, d1, d2), mv(b.h2, n, d2)); });
    v.emplace_back("fwd3 H2.W3", [&, n, g](const float*) { g(N, N, cv(b.h2, n, d2), cv(b.w3, d2, d3), mv(b.z, n, d3)); });
    v.emplace_back("wgrad3 H2^T.dZ", [&, n, g](const float*) { g(T, N, cv(b.h2, n, d2), cv(b.dz, n, d3), mv(b.g3, d2, d3)); });
    v.emplace_back("igrad3 dZ.W3^T", [&, n, g](const float*) { g(N, T, cv(b.dz, n, d3), cv(b.w3, d2, d3), mv(b.dh2, n, d2)); });
    v.emplace_back("wgrad2 H1^T.dH2", [&, n, g](const float*) { g(T, N, cv(b.h1, n, d1), cv(b.dh2, n, d2), mv(b.g2, d1, d2)); });
    v.emplace_back("igrad2 dH2.W2^T", [&, n, g](const float*) { g(N, T, cv(b.dh2, n, d2), cv(b.w2, d1, d2), mv(b.dh1, n, d1)); });
    v.emplace_back("wgrad1 X^T.dH1", [&, n, g](const float* x) { g(T, N, {x, n, d0}, cv(b.dh1, n, d1), mv(b.g1, d0, d1)); });
    if (mode == "8fused") {
        // Weight-gradient GEMMs write the updated weights directly (alpha = -lr, beta = 1); each
        // layer's input gradient is computed first, from the weights before the update.
        v.clear();
        auto u = [](transpose ta, transpose tb, bw::const_matrix_view a, bw::const_matrix_view bb,
                    bw::matrix_view c) { bw::cpu_blas::gemm(ta, tb, -0.01f, a, bb, 1.0f, c); };
        v.emplace_back("fwd1 X.W1", [&, n, g](const float* x) { g(N, N, {x, n, d0}, cv(b.w1, d0, d1), mv(b.h1, n, d1)); });
        v.emplace_back("fwd2 H1.W2", [&, n, g](const float*) { g(N, N, cv(b.h1, n, d1), cv(b.w2, d1, d2), mv(b.h2, n, d2)); });
        v.emplace_back("fwd3 H2.W3", [&, n, g](const float*) { g(N, N, cv(b.h2, n, d2), cv(b.w3, d2, d3), mv(b.z, n, d3)); });
        v.emplace_back("igrad3 dZ.W3^T", [&, n, g](const float*) { g(N, T, cv(b.dz, n, d3), cv(b.w3, d2, d3), mv(b.dh2, n, d2)); });
        v.emplace_back("update3 W3 -= lr H2^T.dZ", [&, n, u](const float*) { u(T, N, cv(b.h2, n, d2), cv(b.dz, n, d3), mv(b.w3, d2, d3)); });
        v.emplace_back("igrad2 dH2.W2^T", [&, n, g](const float*) { g(N, T, cv(b.dh2, n, d2), cv(b.w2, d1, d2), mv(b.dh1, n, d1)); });
        v.emplace_back("update2 W2 -= lr H1^T.dH2", [&, n, u](const float*) { u(T, N, cv(b.h1, n, d1), cv(b.dh2, n, d2), mv(b.w2, d1, d2)); });
        v.emplace_back("update1 W1 -= lr X^T.dH1", [&, n, u](const float* x) { u(T, N, {x, n, d0}, cv(b.dh1, n, d1), mv(b.w1, d0, d1)); });
        return v;
    }
    if (mode == "8+sgd") {
        v.emplace_back("sgd w -= lr g", [&](const float*) {
            auto update = [](std::vector<float>& w, const std::vector<float>& grad) {
                float* __restrict wp = w.data();
                const float* __restrict gp = grad.data();
                for (std::size_t i = 0; i < w.size(); ++i) wp[i] -= 0.01f * gp[i];
            };
            update(b.w1, b.g1);
            update(b.w2, b.g2);
            update(b.w3, b.g3);
        });
    }
    if (mode == "9" || mode == "parts") {
        v.emplace_back("igrad1 dH1.W1^T", [&, n, g](const float*) { g(N, T, cv(b.dh1, n, d1), cv(b.w1, d0, d1), mv(b.dx, n, d0)); });
    }
    return v;
}

}  // namespace

int main(int argc, char** argv) {
    const char* usage = "usage: roofline --batch N [--mode 8|9|8t|8+sgd|8fused|parts] [--reps R] [--samples S]\n";
    bench::options o = bench::parse(argc, argv, usage);
    if (o.mode.empty()) o.mode = "8";
    if (o.mode != "8" && o.mode != "9" && o.mode != "8t" && o.mode != "parts" && o.mode != "8+sgd" &&
        o.mode != "8fused") {
        std::fputs(usage, stderr);
        return 2;
    }
    bw::cpu_blas::prepare();
    const bench::dataset d = bench::make_dataset(o.samples);
    buffers b(o.batch);
    const auto gemms = step_gemms(b, o.mode);
    const std::size_t steps = d.samples / o.batch;
    auto x_of = [&](std::size_t s) { return d.x.data() + s * o.batch * d0; };

    if (o.mode == "parts") {
        for (const auto& [name, f] : gemms) {
            const bench::timings t = bench::time_runs(o.reps, [&] {
                for (std::size_t s = 0; s < steps; ++s) f(x_of(s));
            });
            bench::print_result("roofline-parts", name, o.batch, "us/call",
                                t.micros_per(static_cast<double>(steps)), t.others);
        }
        return 0;
    }

    const bench::timings t = bench::time_runs(o.reps, [&] {
        for (std::size_t s = 0; s < steps; ++s) {
            for (const auto& [name, f] : gemms) f(x_of(s));
        }
    });
    const std::vector<double> rates = t.rates(static_cast<double>(d.samples));
    const std::string system = o.mode == "8"       ? "OpenBLAS roofline (8 GEMMs)"
                               : o.mode == "9"     ? "OpenBLAS 9 GEMMs (incl. unneeded dX)"
                               : o.mode == "8t"    ? "OpenBLAS 8 GEMMs, kernels (out,in)"
                               : o.mode == "8+sgd" ? "OpenBLAS 8 GEMMs + SGD pass"
                                                   : "OpenBLAS 8 GEMMs, SGD fused in GEMM";
    bench::print_result("roofline", system, o.batch, "samples/s", rates, t.others);
    return 0;
}
