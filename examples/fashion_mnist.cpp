// The main job: an MLP trained on the real Fashion-MNIST (Debian's dataset-fashion-mnist) with
// Adam, a shuffled and prefetched dataset, and the Keras progress bar; prints the test accuracy
// and the wall time. benchmarks/fashion_mnist.sh runs the same model in Keras beside it.
//
// The same source compiled by nvcc (target fashion_mnist_cuda) trains on the GPU: only the
// execution policy changes.
//
// usage: fashion_mnist [epochs]      (default 20)
#if defined(__CUDACC__)
#include <batchwise/cuda.hpp>
#else
#include <batchwise/batchwise.hpp>
#endif

#include <chrono>
#include <cstdio>
#include <string>

namespace bw = batchwise;

#if defined(__CUDACC__)
using exec = bw::cuda;
#else
using exec = bw::cpu_blas;
#endif

namespace {

int train(std::uint64_t epochs) {
    using Net = bw::Sequential<bw::Input<28, 28>, bw::Flatten,
                               bw::Dense<256>, bw::ReLU, bw::Dropout<0.2f>,
                               bw::Dense<256>, bw::ReLU, bw::Dropout<0.2f>,
                               bw::Dense<10>>;  // logits
    bw::Model<Net, bw::dynamic_batch, exec> model{bw::seed{42}};
    model.compile(bw::Adam{{.learning_rate = 1e-3f}},
                  bw::SparseCategoricalCrossentropy{{.from_logits = true}}, bw::metrics::accuracy);
    model.summary();

    const auto load_start = std::chrono::steady_clock::now();
    const auto [train, test] = bw::data::fashion_mnist();  // Debian's dataset-fashion-mnist
    const double load_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();

    const auto start = std::chrono::steady_clock::now();
    const bw::History history =
        model.fit(train.shuffle(60000, bw::seed{1}).batch(128).prefetch(2), {.epochs = epochs});
    const double fit_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const bw::logs result = model.evaluate(test.batch(1000));
    const double wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    std::printf("Trained %zu epochs on %zu samples each; data loaded in %.2fs\n", history.size(),
                history.samples.empty() ? std::size_t{0} : history.samples.back(), load_seconds);
    std::printf("Test loss: %.4f\n", static_cast<double>(result.loss));
    std::printf("Test accuracy: %.4f\n", static_cast<double>(result["accuracy"]));
    std::printf("Wall time: %.2fs\n", wall_seconds);
    std::printf("Fit time: %.2fs\n", fit_seconds);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const std::uint64_t epochs = argc > 1 ? std::stoull(argv[1]) : 20;
    try {
        return train(epochs);
    } catch (const bw::device_error& e) {
        // No usable GPU for the CUDA build: say why, without a crash.
        std::fprintf(stderr, "fashion_mnist: %s\n", e.what());
        return 2;
    }
}
