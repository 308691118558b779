// libtorch (Debian libtorch-dev, the PyTorch C++ API) peer of mlp_bench and tiny_step: the same
// network, loss, optimizer, data and clock, in libtorch's ordinary style (a Module with Linear
// layers, torch::optim::SGD, cross_entropy from logits), batches built before the clock starts.
//
//   libtorch_bench --mode mlp --batch N [--intra-threads T] [--reps R]
//   libtorch_bench --mode tiny [--intra-threads T] [--steps K] [--reps R]
//   libtorch_bench --mode memory --batch N       (peak RSS growth, as batchwise's memory program)
//
// --intra-threads sets at::set_num_threads (ATen's OpenMP pool); the GEMMs go to the system BLAS
// (OpenBLAS) with OPENBLAS_NUM_THREADS threads. The issue measured 1 intra-op thread with 2
// OpenBLAS threads as libtorch's fastest setting on this 2-core machine.
#include <torch/torch.h>

#include <cstdio>
#include <string>

#include "../bench_common.hpp"

namespace {

/// The set-to-none reset of PyTorch 2's Optimizer::zero_grad(true), missing from 1.13's C++ API.
void zero_grad_set_to_none(torch::nn::Module& m) {
    for (auto& p : m.parameters()) p.mutable_grad() = torch::Tensor();
}

struct MlpImpl : torch::nn::Module {
    torch::nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
    MlpImpl(std::int64_t in, std::int64_t hidden, std::int64_t out, bool two_hidden) {
        fc1 = register_module("fc1", torch::nn::Linear(in, hidden));
        if (two_hidden) fc2 = register_module("fc2", torch::nn::Linear(hidden, hidden));
        fc3 = register_module("fc3", torch::nn::Linear(hidden, out));
    }
    torch::Tensor forward(torch::Tensor x) {
        x = torch::relu(fc1->forward(x));
        if (fc2) x = torch::relu(fc2->forward(x));
        return fc3->forward(x);
    }
};
TORCH_MODULE(Mlp);

std::string system_name(const bench::options& o) {
    return "libtorch (intra-op " + std::to_string(o.intra_threads) + ")";
}

struct batches {
    std::vector<torch::Tensor> xs, ys;
};

/// The dataset cut into contiguous batches of o.batch samples.
batches make_batches(const bench::dataset& d, const bench::options& o) {
    const auto n = static_cast<std::int64_t>(o.batch);
    const std::size_t steps = d.samples / o.batch;
    const torch::Tensor all_x =
        torch::from_blob(const_cast<float*>(d.x.data()),
                         {static_cast<std::int64_t>(d.samples), static_cast<std::int64_t>(bench::in_features)},
                         torch::kFloat32)
            .clone();
    const torch::Tensor all_y =
        torch::from_blob(const_cast<std::int64_t*>(d.y.data()), {static_cast<std::int64_t>(d.samples)},
                         torch::kInt64)
            .clone();
    batches b;
    for (std::size_t s = 0; s < steps; ++s) {
        b.xs.push_back(all_x.slice(0, static_cast<std::int64_t>(s) * n, static_cast<std::int64_t>(s + 1) * n).contiguous());
        b.ys.push_back(all_y.slice(0, static_cast<std::int64_t>(s) * n, static_cast<std::int64_t>(s + 1) * n).contiguous());
    }
    return b;
}

/// One epoch of training steps; returns the last loss.
float train_epoch(Mlp& model, torch::optim::SGD& opt, const batches& b) {
    torch::Tensor loss;
    for (std::size_t s = 0; s < b.xs.size(); ++s) {
        zero_grad_set_to_none(*model);
        loss = torch::nn::functional::cross_entropy(model->forward(b.xs[s]), b.ys[s]);
        loss.backward();
        opt.step();
    }
    return loss.item<float>();
}

void run_mlp(const bench::options& o) {
    const bench::dataset d = bench::make_dataset(o.samples);
    const batches b = make_batches(d, o);
    torch::manual_seed(42);
    Mlp model(784, 256, 10, true);
    torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.01));
    std::vector<double> rates;
    double others = 0.0;
    float last = 0.0f;
    for (int rep = 0; rep <= o.reps; ++rep) {
        bench::region r;
        last = train_epoch(model, opt, b);
        r.stop();
        if (rep > 0) {
            rates.push_back(static_cast<double>(d.samples) / r.wall());
            others += r.others();
        }
    }
    if (!std::isfinite(last)) return;
    bench::print_result("mlp-bench", system_name(o), o.batch, "samples/s", rates, others / o.reps);
}

/// memory (BENCHMARKS.md), measured as batchwise's `memory --mode full`: peak RSS growth over
/// building the model and two epochs, after the batches exist and OpenBLAS has run one GEMM of
/// the first layer's shape.
void run_memory(const bench::options& o) {
    const bench::dataset d = bench::make_dataset(o.samples);
    const batches b = make_batches(d, o);
    const auto n = static_cast<std::int64_t>(o.batch);
    (void)torch::mm(torch::full({n, 784}, 0.5f), torch::full({784, 256}, 0.5f));
    if (!bench::reset_peak_rss()) {
        std::fputs("libtorch_bench: cannot reset the peak RSS (/proc/self/clear_refs)\n", stderr);
        std::exit(1);
    }
    const double base = bench::rss_mib();
    torch::manual_seed(42);
    Mlp model(784, 256, 10, true);
    torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.01));
    train_epoch(model, opt, b);
    train_epoch(model, opt, b);
    const double growth = bench::peak_rss_mib() - base;
    bench::print_result("memory", system_name(o), o.batch, "MiB", {growth}, 0.0,
                        "\"baseline_rss_mib\": " + std::to_string(base));
}

void run_tiny(const bench::options& o) {
    constexpr std::size_t pool = 256;
    torch::manual_seed(42);
    const torch::Tensor x = torch::rand({static_cast<std::int64_t>(pool), 1, 16});
    const torch::Tensor y = torch::rand({static_cast<std::int64_t>(pool), 1, 1});
    std::vector<torch::Tensor> xs, ys;
    for (std::size_t s = 0; s < pool; ++s) {
        xs.push_back(x[static_cast<std::int64_t>(s)].contiguous());
        ys.push_back(y[static_cast<std::int64_t>(s)].contiguous());
    }
    Mlp model(16, 16, 1, false);
    torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.01));
    std::vector<double> us;
    double others = 0.0;
    for (int rep = 0; rep <= o.reps; ++rep) {
        bench::region r;
        for (std::size_t k = 0; k < o.steps; ++k) {
            zero_grad_set_to_none(*model);
            auto loss = torch::mse_loss(model->forward(xs[k % pool]), ys[k % pool]);
            loss.backward();
            opt.step();
        }
        r.stop();
        if (rep > 0) {
            us.push_back(r.wall() * 1e6 / static_cast<double>(o.steps));
            others += r.others();
        }
    }
    bench::print_result("tiny-step", system_name(o), 1, "us/step", us, others / o.reps);
}

}  // namespace

int main(int argc, char** argv) {
    const char* usage =
        "usage: libtorch_bench --mode mlp|tiny|memory [--batch N] [--intra-threads T] [--reps R] [--steps K]\n";
    const bench::options o = bench::parse(argc, argv, usage);
    at::set_num_threads(o.intra_threads);
    at::set_num_interop_threads(1);
    if (o.mode == "mlp") {
        run_mlp(o);
    } else if (o.mode == "tiny") {
        run_tiny(o);
    } else if (o.mode == "memory") {
        run_memory(o);
    } else {
        std::fputs(usage, stderr);
        return 2;
    }
    return 0;
}
