// dlib (Debian libdlib-dev 19.24) peer of mlp_bench and tiny_step: the same network, loss,
// optimizer, data and clock. dlib's layers are compile-time types like batchwise's. A step is
// what dnn_trainer does for each mini-batch, without its background thread:
// compute_parameter_gradients(x, labels) then update_parameters(solvers, lr), with sgd(0, 0)
// (no weight decay, no momentum: plain SGD). Input tensors are built (to_tensor) before the
// clock starts. fc layers call the system BLAS (OpenBLAS) through dlib's matrix expressions.
//
//   dlib_bench --mode mlp --batch N [--reps R]
//   dlib_bench --mode tiny [--steps K] [--reps R]
#include <dlib/dnn.h>

#include <cstdio>

#include "../bench_common.hpp"

namespace {

using sample = dlib::matrix<float, 0, 1>;

template <class Net>
std::vector<dlib::sgd> plain_sgd() {
    return std::vector<dlib::sgd>(Net::num_computational_layers, dlib::sgd(0.0f, 0.0f));
}

void run_mlp(const bench::options& o) {
    using net_type = dlib::loss_multiclass_log<
        dlib::fc<10, dlib::relu<dlib::fc<256, dlib::relu<dlib::fc<256, dlib::input<sample>>>>>>>;
    const bench::dataset d = bench::make_dataset(o.samples);
    const std::size_t steps = d.samples / o.batch;
    net_type net;
    std::vector<dlib::resizable_tensor> xs(steps);
    std::vector<std::vector<unsigned long>> ys(steps);
    std::vector<sample> rows(o.batch);
    for (std::size_t s = 0; s < steps; ++s) {
        for (std::size_t i = 0; i < o.batch; ++i) {
            rows[i].set_size(bench::in_features);
            const float* src = d.x.data() + (s * o.batch + i) * bench::in_features;
            for (std::size_t j = 0; j < bench::in_features; ++j) rows[i](static_cast<long>(j)) = src[j];
            ys[s].push_back(static_cast<unsigned long>(d.y[s * o.batch + i]));
        }
        net.to_tensor(rows.begin(), rows.end(), xs[s]);
    }
    auto solvers = plain_sgd<net_type>();
    std::vector<double> rates;
    double others = 0.0, last = 0.0;
    for (int rep = 0; rep <= o.reps; ++rep) {
        bench::region r;
        for (std::size_t s = 0; s < steps; ++s) {
            last = net.compute_parameter_gradients(xs[s], ys[s].begin());
            net.update_parameters(solvers, 0.01);
        }
        r.stop();
        if (rep > 0) {
            rates.push_back(static_cast<double>(d.samples) / r.wall());
            others += r.others();
        }
    }
    if (!std::isfinite(last)) return;
    bench::print_result("mlp-bench", "dlib", o.batch, "samples/s", rates, others / o.reps);
}

void run_tiny(const bench::options& o) {
    using net_type = dlib::loss_mean_squared<dlib::fc<1, dlib::relu<dlib::fc<16, dlib::input<sample>>>>>;
    constexpr std::size_t pool = 256;
    net_type net;
    dlib::rand rnd(bench::data_seed);
    std::vector<dlib::resizable_tensor> xs(pool);
    std::vector<std::vector<float>> ys(pool);
    for (std::size_t s = 0; s < pool; ++s) {
        std::vector<sample> one(1);
        one[0].set_size(16);
        for (long j = 0; j < 16; ++j) one[0](j) = static_cast<float>(rnd.get_random_float());
        net.to_tensor(one.begin(), one.end(), xs[s]);
        ys[s] = {static_cast<float>(rnd.get_random_float())};
    }
    auto solvers = plain_sgd<net_type>();
    std::vector<double> us;
    double others = 0.0;
    for (int rep = 0; rep <= o.reps; ++rep) {
        bench::region r;
        for (std::size_t k = 0; k < o.steps; ++k) {
            net.compute_parameter_gradients(xs[k % pool], ys[k % pool].begin());
            net.update_parameters(solvers, 0.01);
        }
        r.stop();
        if (rep > 0) {
            us.push_back(r.wall() * 1e6 / static_cast<double>(o.steps));
            others += r.others();
        }
    }
    bench::print_result("tiny-step", "dlib", 1, "us/step", us, others / o.reps);
}

}  // namespace

int main(int argc, char** argv) {
    const char* usage = "usage: dlib_bench --mode mlp|tiny [--batch N] [--reps R] [--steps K]\n";
    const bench::options o = bench::parse(argc, argv, usage);
    if (o.mode == "mlp") {
        run_mlp(o);
    } else if (o.mode == "tiny") {
        run_tiny(o);
    } else {
        std::fputs(usage, stderr);
        return 2;
    }
    return 0;
}
