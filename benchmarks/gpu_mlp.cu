// gpu-mlp (BENCHMARKS.md) for batchwise on the cuda policy: mlp-bench's network (784 -> 256 ->
// 256 -> 10, ReLU, softmax cross-entropy from logits, plain SGD lr 0.01, fp32, TF32 off) on the
// GPU at batch 128 ... 65536, and the cuBLAS roofline of the step's 8 GEMMs.
//
//   gpu_mlp --mode static  --batch N   Model<Net, static_batch<N>, cuda>, train_on_batch over
//                                      batches held in pinned host memory (bw::pinned_tensor,
//                                      as PyTorch's peer pins its batches): each is copied to
//                                      the GPU from there and checked by the GPU; the step is
//                                      captured as CUDA graphs and replayed
//   gpu_mlp --mode static-eager ...    the same with step capture off: one launch per kernel
//   gpu_mlp --mode static-pageable ... the graphs with batches in ordinary (pageable) memory:
//                                      each is checked while it is copied into the model's
//                                      pinned staging, then sent
//   gpu_mlp --mode static-resident ... fit(data_on_device) on the images as bytes
//                                      (Dataset::of_bytes, pixel / 255, as Fashion-MNIST is
//                                      stored; the same data quantized to 256 levels): the
//                                      arrays are copied to the GPU once, each step sends its
//                                      samples' indices and the graph gathers and converts
//                                      the rows on the GPU; one fit of reps + 1
//                                      epochs, each timed by a callback (the first, with the
//                                      copy and the capture, is the warm-up)
//   gpu_mlp --mode dynamic --batch N   Model<Net, dynamic_batch, cuda>, pinned batches
//   gpu_mlp --mode roofline --batch N  the 8 SGEMMs of one step through cuBLAS on device
//                                      buffers, timed with CUDA events: the GEMM limit
//
// Samples/s over whole epochs (default 131072 samples, so that batch 65536 makes two steps),
// median of --reps after a warm-up epoch; the device is synchronised before the clock is read.
// Prints one JSON line (bench_common.hpp). benchmarks/gpu.sh runs it beside PyTorch.
#include <batchwise/cuda.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>
#include <utility>

#include "bench_common.hpp"

namespace bw = batchwise;

namespace {

using Net = bw::Sequential<bw::Input<784>, bw::Dense<256>, bw::ReLU, bw::Dense<256>, bw::ReLU, bw::Dense<10>>;
constexpr std::size_t gpu_samples = 131072;

void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) {
        std::fprintf(stderr, "gpu_mlp: %s: %s\n", what, cudaGetErrorString(e));
        std::exit(1);
    }
}

std::string device_name() {
    cudaDeviceProp p{};
    int d = 0;
    check(cudaGetDevice(&d), "cudaGetDevice");
    check(cudaGetDeviceProperties(&p, d), "cudaGetDeviceProperties");
    return p.name;
}

template <class Model, class X, class Y>
std::vector<double> train_epochs(Model& model, const bench::dataset& d, const bench::options& o, double& others,
                                 std::uint64_t& graph_nodes) {
    const std::size_t n = o.batch;
    const std::size_t steps = d.samples / n;
    std::vector<std::unique_ptr<X>> xs(steps);
    std::vector<std::unique_ptr<Y>> ys(steps);
    for (std::size_t s = 0; s < steps; ++s) {
        xs[s] = std::make_unique<X>(X::from_shape({n, bench::in_features}));
        ys[s] = std::make_unique<Y>(Y::from_shape({n}));
        std::copy_n(d.x.data() + s * n * bench::in_features, n * bench::in_features, xs[s]->data());
        for (std::size_t i = 0; i < n; ++i) ys[s]->data()[i] = static_cast<float>(d.y[s * n + i]);
    }
    float last = 0.0f;
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    // Each epoch ends with the device idle, so the next one's clock starts on an idle device.
    // Replayed steps report two steps late, so the host queues the next step without waiting
    // (the loss is read once per epoch, as the PyTorch peers read it).
    model.set_late_results(true);
    const bench::timings t = bench::time_runs(o.reps, [&] {
        for (std::size_t s = 0; s < steps; ++s) {
            const bw::logs l = model.train_on_batch(*xs[s], *ys[s]);
            if (l.samples != 0) last = l.loss;
        }
        if (const bw::logs rest = model.read_results(); rest.samples != 0) last = rest.loss;
        check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    });
    if (!std::isfinite(last)) {
        std::fprintf(stderr, "gpu_mlp: the loss is not finite (%g)\n", static_cast<double>(last));
        std::exit(1);
    }
    others = t.others;
    // One more step, untimed: the nodes the replayed step's graphs hold (0 when it runs eagerly).
    const std::uint64_t before = bw::cuda::launched_graph_nodes();
    (void)model.train_on_batch(*xs[0], *ys[0]);
    (void)model.read_results();
    graph_nodes = bw::cuda::launched_graph_nodes() - before;
    return t.rates(static_cast<double>(d.samples));
}

template <class Model>
std::vector<double> train_epochs(Model& model, const bench::dataset& d, const bench::options& o, double& others,
                                 bool pinned, std::uint64_t& graph_nodes) {
    if (pinned) {
        return train_epochs<Model, bw::pinned_tensor<float, 2>, bw::pinned_tensor<float, 1>>(model, d, o, others,
                                                                                            graph_nodes);
    }
    return train_epochs<Model, xt::xtensor<float, 2>, xt::xtensor<float, 1>>(model, d, o, others, graph_nodes);
}

template <class Model>
void compile(Model& model) {
    model.compile(bw::SGD{{.learning_rate = 0.01f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
}

std::string extra() { return "\"device\": \"" + device_name() + "\", \"tf32\": false"; }

template <std::size_t N>
bool run_static(const bench::dataset& d, const bench::options& o, bool capture, bool pinned) {
    if (o.batch != N) return false;
    auto model = std::make_unique<bw::Model<Net, bw::static_batch<N>, bw::cuda>>(bw::seed{42});
    model->set_step_capture(capture);
    compile(*model);
    double others = 0.0;
    std::uint64_t graph_nodes = 0;
    const auto rates = train_epochs(*model, d, o, others, pinned, graph_nodes);
    if (capture && !model->step_captured()) {
        std::fprintf(stderr, "gpu_mlp: the step was not captured: %s\n", model->step_capture_refused().c_str());
        std::exit(4);
    }
    const char* system = !pinned ? "batchwise static (graphs, pageable)"
                         : capture ? "batchwise static (graphs)"
                                   : "batchwise static (eager)";
    bench::print_result("gpu-mlp", system, N, "samples/s", rates, others,
                        extra() + ", \"graph_nodes_per_step\": " + std::to_string(graph_nodes));
    return true;
}

template <std::size_t N>
bool run_resident(const bench::dataset& d, const bench::options& o) {
    if (o.batch != N) return false;
    auto model = std::make_unique<bw::Model<Net, bw::static_batch<N>, bw::cuda>>(bw::seed{42});
    compile(*model);
    xt::xtensor<std::uint8_t, 2> x = xt::zeros<std::uint8_t>({d.samples, bench::in_features});
    xt::xtensor<float, 1> y = xt::zeros<float>({d.samples});
    std::transform(d.x.begin(), d.x.begin() + static_cast<std::ptrdiff_t>(d.samples * bench::in_features), x.begin(),
                   [](float v) { return static_cast<std::uint8_t>(std::lround(v * 255.0f)); });
    for (std::size_t i = 0; i < d.samples; ++i) y(i) = static_cast<float>(d.y[i]);
    // fit reads the queued steps at each epoch's end, so an epoch's time includes its last step.
    struct epoch_clock final : bw::Callback {
        std::chrono::steady_clock::time_point start;
        std::vector<double> seconds;
        void on_epoch_begin(bw::training_context&, std::uint64_t, std::size_t) override {
            start = std::chrono::steady_clock::now();
        }
        void on_epoch_end(bw::training_context&, std::uint64_t, const bw::epoch_logs&) override {
            seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        }
    } clock;
    const bw::History h = model->fit(bw::data::Dataset::of_bytes(x, y, 255.0f).batch(N),
                                     {.epochs = static_cast<std::uint64_t>(o.reps) + 1, .verbose = 0,
                                      .data_on_device = true},
                                     clock);
    const float last = h.history.at("loss").back();
    if (!std::isfinite(last) || !model->step_captured()) {
        std::fprintf(stderr, "gpu_mlp: resident training failed (loss %g, captured %d: %s)\n",
                     static_cast<double>(last), static_cast<int>(model->step_captured()),
                     model->step_capture_refused().c_str());
        std::exit(1);
    }
    std::vector<double> rates;
    for (std::size_t e = 1; e < clock.seconds.size(); ++e) rates.push_back(static_cast<double>(d.samples) / clock.seconds[e]);
    bench::print_result("gpu-mlp", "batchwise static (graphs, device-resident uint8 data)", N, "samples/s", rates, 0.0,
                        extra());
    return true;
}

void run_dynamic(const bench::dataset& d, const bench::options& o) {
    bw::Model<Net, bw::dynamic_batch, bw::cuda> model{bw::seed{42}};
    compile(model);
    double others = 0.0;
    std::uint64_t graph_nodes = 0;  // a dynamic batch is not captured
    const auto rates = train_epochs(model, d, o, others, true, graph_nodes);
    bench::print_result("gpu-mlp", "batchwise dynamic", o.batch, "samples/s", rates, others, extra());
}

/// The 8 GEMMs of a step with the operand layouts batchwise's Dense uses (kernel (in, out)):
/// forward Y = X W, weight gradient dW = X^T dY, input gradient dX = dY W^T, through the same
/// cuda policy call (cublasSgemm, default math).
void run_roofline(const bench::options& o) {
    using E = bw::cuda;
    E::prepare();
    const std::size_t n = o.batch;
    constexpr std::size_t d0 = 784, d1 = 256, d2 = 256, d3 = 10;
    E::vector x, w1, w2, w3, h1, h2, z, dz, dh2, dh1, g1, g2, g3;
    for (auto [v, size] : {std::pair{&x, n * d0}, {&w1, d0 * d1}, {&w2, d1 * d2}, {&w3, d2 * d3}, {&h1, n * d1},
                           {&h2, n * d2}, {&z, n * d3}, {&dz, n * d3}, {&dh2, n * d2}, {&dh1, n * d1},
                           {&g1, d0 * d1}, {&g2, d1 * d2}, {&g3, d2 * d3}}) {
        E::reserve(*v, size);
        E::fill(E::data(*v), size, 0.01f);
    }
    using bw::transpose;
    auto m = [&](E::vector& v, std::size_t r, std::size_t c) { return bw::matrix_view{E::data(v), r, c}; };
    auto step = [&] {
        E::gemm(transpose::no, transpose::no, 1.0f, m(x, n, d0), m(w1, d0, d1), 0.0f, m(h1, n, d1));
        E::gemm(transpose::no, transpose::no, 1.0f, m(h1, n, d1), m(w2, d1, d2), 0.0f, m(h2, n, d2));
        E::gemm(transpose::no, transpose::no, 1.0f, m(h2, n, d2), m(w3, d2, d3), 0.0f, m(z, n, d3));
        E::gemm(transpose::yes, transpose::no, 1.0f, m(h2, n, d2), m(dz, n, d3), 0.0f, m(g3, d2, d3));
        E::gemm(transpose::no, transpose::yes, 1.0f, m(dz, n, d3), m(w3, d2, d3), 0.0f, m(dh2, n, d2));
        E::gemm(transpose::yes, transpose::no, 1.0f, m(h1, n, d1), m(dh2, n, d2), 0.0f, m(g2, d1, d2));
        E::gemm(transpose::no, transpose::yes, 1.0f, m(dh2, n, d2), m(w2, d1, d2), 0.0f, m(dh1, n, d1));
        E::gemm(transpose::yes, transpose::no, 1.0f, m(x, n, d0), m(dh1, n, d1), 0.0f, m(g1, d0, d1));
    };
    const cudaStream_t stream = bw::detail::cuda_context::get().stream();
    cudaEvent_t start{}, stop{};
    check(cudaEventCreate(&start), "cudaEventCreate");
    check(cudaEventCreate(&stop), "cudaEventCreate");
    const std::size_t steps = std::max<std::size_t>(1, o.samples / n);
    std::vector<double> rates;
    for (int rep = 0; rep <= o.reps; ++rep) {
        check(cudaEventRecord(start, stream), "cudaEventRecord");
        for (std::size_t s = 0; s < steps; ++s) step();
        check(cudaEventRecord(stop, stream), "cudaEventRecord");
        check(cudaEventSynchronize(stop), "cudaEventSynchronize");
        float ms = 0.0f;
        check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
        if (rep > 0) rates.push_back(static_cast<double>(steps * n) / (1e-3 * ms));
    }
    bench::print_result("gpu-mlp", "cuBLAS roofline (8 GEMMs)", n, "samples/s", rates, 0.0, extra());
}

}  // namespace

int main(int argc, char** argv) {
    const char* usage =
        "usage: gpu_mlp --batch N --mode static|static-eager|static-pageable|static-resident|dynamic|roofline "
        "[--reps R] "
        "[--samples S]\n";
    const bench::options o = bench::parse(argc, argv, usage, gpu_samples);
    try {
        if (o.mode == "roofline") {
            run_roofline(o);
            return 0;
        }
        const bench::dataset d = bench::make_dataset(o.samples);
        if (o.mode == "static" || o.mode == "static-eager" || o.mode == "static-pageable") {
            const bool ran = [&]<std::size_t... N>(std::index_sequence<N...>) {
                return (run_static<N>(d, o, o.mode != "static-eager", o.mode != "static-pageable") || ...);
            }(std::index_sequence<128, 256, 512, 1024, 2048, 8192, 32768, 65536>{});
            if (!ran) {
                std::fprintf(stderr, "gpu_mlp: static batch %zu is not instantiated (128 256 512 1024 2048 8192 "
                             "32768 65536)\n", o.batch);
                return 2;
            }
        } else if (o.mode == "static-resident") {
            const bool ran = [&]<std::size_t... N>(std::index_sequence<N...>) {
                return (run_resident<N>(d, o) || ...);
            }(std::index_sequence<128, 256, 512, 1024, 2048, 8192, 32768, 65536>{});
            if (!ran) {
                std::fprintf(stderr, "gpu_mlp: static batch %zu is not instantiated\n", o.batch);
                return 2;
            }
        } else if (o.mode == "dynamic") {
            run_dynamic(d, o);
        } else {
            std::fprintf(stderr, "%s", usage);
            return 2;
        }
    } catch (const bw::device_error& e) {
        std::fprintf(stderr, "gpu_mlp: %s\n", e.what());
        return 3;
    }
    return 0;
}
