// Fashion-MNIST across processes: the main job's model, trained under data_parallel so that every
// global batch of 128 is shared among the processes mpirun starts, and the update is that of the
// whole batch. With the same seed and global batch it reaches the test accuracy the
// single-process example prints (fashion_mnist), at any number of processes: identical at one
// process (same BLAS thread count), and within the spread that summing in another order gives
// over thousands of Adam steps otherwise (docs/data_parallel.md, measured):
//
//   mpirun -np 2 build/release/examples/data_parallel 20
//
// Rank 0 shows the progress bar and the results; every process holds the same weights. Compiled
// by nvcc (target data_parallel_cuda) the gradients are summed by NCCL on the GPUs instead.
//
// usage: data_parallel [epochs]      (default 20)
#if defined(__CUDACC__)
#include <batchwise/cuda.hpp>
#include <batchwise/distributed/nccl.hpp>
#else
#include <batchwise/batchwise.hpp>
#include <batchwise/distributed/mpi.hpp>
#endif

#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace bw = batchwise;

#if defined(__CUDACC__)
using exec = bw::cuda;
using shared = bw::data_parallel<bw::no_accumulation, bw::nccl_communicator>;
#else
using exec = bw::cpu_blas;
using shared = bw::data_parallel<>;
#endif

namespace {

int train(std::uint64_t epochs) {
    using Net = bw::Sequential<bw::Input<28, 28>, bw::Flatten,
                               bw::Dense<256>, bw::ReLU, bw::Dropout<0.2f>,
                               bw::Dense<256>, bw::ReLU, bw::Dropout<0.2f>,
                               bw::Dense<10>>;  // logits
    bw::Model<Net, bw::dynamic_batch, exec, shared> model{bw::seed{42}};
    model.compile(bw::Adam{{.learning_rate = 1e-3f}},
                  bw::SparseCategoricalCrossentropy{{.from_logits = true}}, bw::metrics::accuracy);
    const int rank = model.accumulation().rank();
    const int processes = model.accumulation().size();
    if (model.is_chief()) model.summary();

    // Every process reads the whole dataset in the same shuffled order and trains its share of
    // each batch: no sample is trained twice or left out, and dropout masks are those of one
    // process.
    const auto [train, test] = bw::data::fashion_mnist();
    const auto start = std::chrono::steady_clock::now();
    const bw::History history =
        model.fit(train.shuffle(60000, bw::seed{1}).batch(128).prefetch(2), {.epochs = epochs});
    const double fit_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const bw::logs result = model.evaluate(test.batch(1000));  // each process scores its share

    const bw::reduction_statistics& r = model.accumulation().reductions();
    if (model.is_chief()) {
        std::printf("Processes: %d (global batch 128)\n", processes);
        std::printf("Trained %zu epochs on %zu samples each\n", history.size(),
                    history.samples.empty() ? std::size_t{0} : history.samples.back());
        std::printf("Test loss: %.4f\n", static_cast<double>(result.loss));
        std::printf("Test accuracy: %.4f\n", static_cast<double>(result["accuracy"]));
        std::printf("Fit time: %.2fs\n", fit_seconds);
    }
    std::printf("Rank %d: %llu all-reduces of %.1f MB in %.3fs (%.1f%% of the fit)\n", rank,
                static_cast<unsigned long long>(r.reductions),
                r.reductions ? 4.0 * static_cast<double>(r.floats) / static_cast<double>(r.reductions) / 1e6 : 0.0,
                r.seconds, 100.0 * r.seconds / fit_seconds);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int status = 0;
    try {
        status = train(argc > 1 ? std::stoull(argv[1]) : 20);
    } catch (const bw::error& e) {
        // A failure on any process ends every process with a typed error: say it and stop.
        std::fprintf(stderr, "data_parallel: %s\n", e.what());
        status = 2;
    }
    MPI_Finalize();
    return status;
}
