// The main job: an MLP trained on the real Fashion-MNIST (Debian's dataset-fashion-mnist) with
// Adam, a shuffled and prefetched dataset, and the Keras progress bar; prints the test accuracy
// and the wall time. benchmarks/fashion_mnist.sh runs the same model in Keras beside it.
//
// The same source compiled by nvcc (target fashion_mnist_cuda) trains on the GPU with the same
// batches: the execution policy changes, the batch size is fixed (static_batch<128>, so that each
// step replays one captured graph; the ragged last batch is padded and masked), and the images
// are kept on the GPU as bytes (fashion_mnist_bytes, data_on_device), so that nothing but the
// samples' indices crosses the bus per step.
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
using batch_policy = bw::static_batch<128>;
constexpr bool on_device = true;
#else
using exec = bw::cpu_blas;
using batch_policy = bw::dynamic_batch;
constexpr bool on_device = false;
#endif

namespace {

int train(std::uint64_t epochs) {
    using Net = bw::Sequential<bw::Input<28, 28>, bw::Flatten,
                               bw::Dense<256>, bw::ReLU, bw::Dropout<0.2f>,
                               bw::Dense<256>, bw::ReLU, bw::Dropout<0.2f>,
                               bw::Dense<10>>;  // logits
    bw::Model<Net, batch_policy, exec> model{bw::seed{42}};
    model.compile(bw::Adam{{.learning_rate = 1e-3f}},
                  bw::SparseCategoricalCrossentropy{{.from_logits = true}}, bw::metrics::accuracy);
    model.summary();

    const auto load_start = std::chrono::steady_clock::now();
    // Debian's dataset-fashion-mnist; as bytes, each pixel reads as the same float, pixel / 255.
    const auto [train, test] = on_device ? bw::data::fashion_mnist_bytes() : bw::data::fashion_mnist();
    const double load_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();

    const auto start = std::chrono::steady_clock::now();
    const bw::History history =
        model.fit(train.shuffle(60000, bw::seed{1}).batch(128).prefetch(2), {.epochs = epochs, .data_on_device = on_device});
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
