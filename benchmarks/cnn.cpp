// The Fashion-MNIST CNN (examples/fashion_mnist_cnn.hpp) measured two ways the example does not:
//
//   cnn --mode memory [--batch 256] [--steps 20]
//       What training costs in resident memory against the library's estimate. Method of
//       benchmarks/memory.cpp: the data are loaded and OpenBLAS has run one GEMM of the step's
//       largest shape before the peak RSS (VmHWM) is reset; the figure is the peak minus the RSS
//       at the reset, over building and compiling the model (Adam) and `steps` steps of fit (whose
//       dataset batch buffers, about 1 MiB, are counted in the growth but not in the estimate).
//
//   cnn --mode norms [--samples 12000] [--steps 0]
//       Batch norm against group and layer norm in the same CNN at small and large batches: one
//       epoch over the first `samples` training images at batch 8 and at 128, then the test
//       accuracy. Batch norm's momentum is 0.9 here (Keras's 0.99 needs more steps than 94 to
//       forget its initial moving averages, which would blur the comparison at batch 128).
#include <batchwise/batchwise.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "fashion_mnist_cnn.hpp"

namespace bw = batchwise;

namespace {

constexpr double mib = 1024.0 * 1024.0;

int memory(std::size_t batch, std::size_t steps) {
    using M = bw::Model<example::fashion_mnist_cnn, bw::dynamic_batch, bw::cpu_blas>;
    const auto [train, test] = bw::data::fashion_mnist();
    (void)test;
    const bw::data::Dataset data = train.take(steps * batch).batch(batch);
    {
        // The second convolution's forward GEMM: (batch x 196 windows, 288) x (288, 64).
        std::vector<float> a(batch * 196 * 288, 0.5f), k(288 * 64, 0.5f), c(batch * 196 * 64);
        bw::cpu_blas::gemm(bw::transpose::no, bw::transpose::no, 1.0f, {a.data(), batch * 196, 288},
                           {k.data(), 288, 64}, 0.0f, {c.data(), batch * 196, 64});
    }
    if (!bench::reset_peak_rss()) {
        std::fputs("cnn: cannot reset the peak RSS (/proc/self/clear_refs)\n", stderr);
        return 1;
    }
    const double base = bench::rss_mib();
    M model{bw::seed{1}};
    model.compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    model.fit(data, {.epochs = 1, .verbose = 0});
    const double growth = bench::peak_rss_mib() - base;
    const bw::memory_estimate e = M::estimate_memory(batch, 2);
    const double estimate = static_cast<double>(e.total_bytes()) / mib;
    std::printf("batch %zu, %zu steps: peak RSS grew by %.1f MiB; estimate %.1f MiB (fixed %.1f, batch %.1f); "
                "growth / estimate %.3f\n",
                batch, steps, growth, estimate, static_cast<double>(e.fixed_bytes()) / mib,
                static_cast<double>(e.batch_bytes) / mib, growth / estimate);
    return 0;
}

template <class Norm>
void norm_run(const char* label, const bw::data::Dataset& train, const bw::data::Dataset& test, std::size_t batch) {
    bw::Model<example::cnn<Norm>, bw::dynamic_batch, bw::cpu_blas> model{bw::seed{42}};
    model.compile(bw::Adam{{.learning_rate = 1e-3f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}},
                  bw::metrics::accuracy);
    const auto start = std::chrono::steady_clock::now();
    const bw::History h = model.fit(train.shuffle(train.cardinality(), bw::seed{1}).batch(batch), {.epochs = 1, .verbose = 0});
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const bw::logs r = model.evaluate(test.batch(1000));
    std::printf("| %s | %zu | %.4f | %.4f | %.1f |\n", label, batch, h["accuracy"].back(),
                static_cast<double>(r["accuracy"]), seconds);
    std::fflush(stdout);
}

int norms(std::size_t samples) {
    const auto [full, test] = bw::data::fashion_mnist();
    const bw::data::Dataset train = full.take(samples);
    std::printf("One epoch over %zu training images, Adam 1e-3; test accuracy on 10000.\n\n", samples);
    std::printf("| normalisation | batch | train accuracy | test accuracy | fit s |\n|---|---|---|---|---|\n");
    for (const std::size_t batch : {std::size_t{8}, std::size_t{128}}) {
        norm_run<bw::BatchNormalization<0.9f>>("BatchNormalization (momentum 0.9)", train, test, batch);
        norm_run<bw::GroupNormalization<8>>("GroupNormalization<8>", train, test, batch);
        norm_run<bw::LayerNormalization<>>("LayerNormalization", train, test, batch);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const char* usage = "usage: cnn --mode memory [--batch 256] [--steps 20] | --mode norms [--samples 12000]\n";
    bool batch_given = false, samples_given = false, steps_given = false;
    for (int i = 1; i < argc; ++i) {
        batch_given = batch_given || std::strcmp(argv[i], "--batch") == 0;
        samples_given = samples_given || std::strcmp(argv[i], "--samples") == 0;
        steps_given = steps_given || std::strcmp(argv[i], "--steps") == 0;
    }
    bench::options o = bench::parse(argc, argv, usage, 12000);
    if (!batch_given) o.batch = o.mode == "memory" ? 256 : 8;
    if (!steps_given) o.steps = 20;
    if (o.mode == "memory") return memory(o.batch, o.steps);
    if (o.mode == "norms") return norms(samples_given ? o.samples : 12000);
    std::fputs(usage, stderr);
    return 2;
}
