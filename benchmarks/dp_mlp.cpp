// dp-mlp (BENCHMARKS.md): mlp-bench's model and data (784 -> 256 -> 256 -> 10 ReLU MLP, softmax
// cross-entropy from logits, plain SGD lr 0.01, 16384 synthetic samples) trained under
// data_parallel<> across MPI processes. Always started by mpirun (-np 1 included), so that every
// configuration pays the same launcher; OPENBLAS_NUM_THREADS is set by the caller.
//
//   dp_mlp --mode dp --batch G        Model<Net, dynamic_batch, cpu_blas, data_parallel<>>: every
//                                     rank is given each global batch of G rows and trains its
//                                     share. Afterwards, in the same processes, the bare all-reduce
//                                     of the step's buffer is timed alone (MPI_Allreduce, and the
//                                     library's mpi_communicator), to tell transfer from waiting
//   dp_mlp --mode plain --batch G     Model<Net, dynamic_batch>: no data_parallel (run at -np 1)
//   dp_mlp --mode rank --batch G --ranks P
//                                     one rank's share of a P-rank step on a single process: a
//                                     communicator that says "rank 0 of P" and sums nothing, so
//                                     the step validates all G rows and trains G/P of them, as each
//                                     rank of a real job does, without any communication (run at
//                                     -np 1; the per-rank compute time of the scaling estimate)
//   dp_mlp --mode allreduce           MPI_Allreduce of 1 ... 2^20 floats, and the model's buffer,
//                                     alone: latency and bandwidth of the transport
//
// Prints one JSON line per measurement on rank 0 (bench_common.hpp's format plus dp fields).
#include <batchwise/batchwise.hpp>
#include <batchwise/distributed/mpi.hpp>

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "bench_common.hpp"

namespace bw = batchwise;

namespace {

using Net = bw::Sequential<bw::Input<784>, bw::Dense<256>, bw::ReLU, bw::Dense<256>, bw::ReLU,
                           bw::Dense<10>>;

/// One rank of a `size`-process job, alone: the configuration check sees identical peers and
/// the all-reduce adds nothing but the other ranks' sample counts (equal shares), which the
/// window checks against the global count. Gradients stay this rank's own; only the time of the
/// rank's own work matters here.
class solo_rank {
public:
    void set_size(int size) { size_ = size; }
    void connect() { connected_ = true; }
    [[nodiscard]] bool connected() const { return connected_; }
    [[nodiscard]] int rank() const { return 0; }
    [[nodiscard]] int size() const { return size_; }
    void allreduce_sum(double*, std::size_t) {}
    [[nodiscard]] std::vector<std::uint64_t> allgather(std::span<const std::uint64_t> mine) {
        std::vector<std::uint64_t> all;
        for (int r = 0; r < size_; ++r) all.insert(all.end(), mine.begin(), mine.end());
        return all;
    }
    void announce_failure(std::string_view) {}
    template <class Exec>
    float* buffer(std::size_t n) {
        if (host_.size() < n) host_.resize(n);
        return host_.data();
    }
    template <class Exec>
    void allreduce_gradients(float* data, std::size_t n) {
        data[n - 1] *= static_cast<float>(size_);  // the sample count rides last
    }

private:
    bool connected_ = false;
    int size_ = 1;
    std::vector<float> host_;
};
static_assert(bw::GradientCommunicator<solo_rank, bw::cpu_blas>);

int world_rank() {
    int r = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}
int world_size() {
    int s = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &s);
    return s;
}

template <class Model>
void compile(Model& model) {
    model.compile(bw::SGD{{.learning_rate = 0.01f}},
                  bw::SparseCategoricalCrossentropy{{.from_logits = true}});
}

struct global_batches {
    std::vector<xt::xtensor<float, 2>> x;
    std::vector<xt::xtensor<float, 1>> y;
};

/// The whole dataset cut into global batches of n rows before any clock starts; every rank holds
/// all of them, as every rank of a data-parallel job reads the same data.
global_batches make_batches(const bench::dataset& d, std::size_t n) {
    global_batches b;
    const std::size_t steps = d.samples / n;
    for (std::size_t s = 0; s < steps; ++s) {
        xt::xtensor<float, 2> x = xt::xtensor<float, 2>::from_shape({n, bench::in_features});
        xt::xtensor<float, 1> y = xt::xtensor<float, 1>::from_shape({n});
        std::copy_n(d.x.data() + s * n * bench::in_features, n * bench::in_features, x.data());
        for (std::size_t i = 0; i < n; ++i) y.data()[i] = static_cast<float>(d.y[s * n + i]);
        b.x.push_back(std::move(x));
        b.y.push_back(std::move(y));
    }
    return b;
}

/// Per timed epoch: the slowest rank's wall time (the job's epoch), each rank's own wall time and
/// seconds inside the all-reduce, and the cores other processes used (the machine's busy time
/// less all ranks' own CPU).
struct epoch_record {
    double wall = 0.0;
    std::vector<double> rank_wall, rank_reduce;
    double others = 0.0;
};

template <class Epoch, class ReduceSeconds>
std::vector<epoch_record> time_epochs(int reps, Epoch&& epoch, ReduceSeconds&& reduce_seconds) {
    const int p = world_size();
    std::vector<epoch_record> out;
    for (int rep = 0; rep <= reps; ++rep) {
        MPI_Barrier(MPI_COMM_WORLD);
        const double busy0 = bench::machine_busy_seconds();
        const double self0 = bench::process_cpu_seconds();
        const double red0 = reduce_seconds();
        const auto t0 = bench::clock::now();
        epoch();
        const double wall = bench::seconds_since(t0);
        const double mine[3] = {wall, reduce_seconds() - red0, bench::process_cpu_seconds() - self0};
        const double busy = bench::machine_busy_seconds() - busy0;
        std::vector<double> all(3 * static_cast<std::size_t>(p));
        MPI_Gather(mine, 3, MPI_DOUBLE, all.data(), 3, MPI_DOUBLE, 0, MPI_COMM_WORLD);
        if (rep == 0) continue;  // warm-up
        epoch_record e;
        double self = 0.0;
        for (int r = 0; r < p; ++r) {
            e.rank_wall.push_back(all[3 * r]);
            e.rank_reduce.push_back(all[3 * r + 1]);
            self += all[3 * r + 2];
            e.wall = std::max(e.wall, all[3 * r]);
        }
        e.others = std::max(0.0, busy - self) / std::max(e.wall, 1e-9);
        out.push_back(std::move(e));
    }
    return out;
}

double median(std::vector<double> v) { return bench::summarize(std::move(v)).median; }

std::string json_array(const std::vector<double>& v) {
    std::ostringstream os;
    os.precision(6);
    os << '[';
    for (std::size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
    os << ']';
    return os.str();
}

/// Seconds per call of `call` on the slowest rank: the median of `rounds` loops of `calls`
/// calls each, after a warm-up loop, every loop starting together.
template <class Call>
double seconds_per_call(int calls, int rounds, Call&& call) {
    std::vector<double> per;
    for (int round = 0; round <= rounds; ++round) {
        MPI_Barrier(MPI_COMM_WORLD);
        const auto t0 = bench::clock::now();
        for (int i = 0; i < calls; ++i) call();
        double s = bench::seconds_since(t0) / calls;
        MPI_Allreduce(MPI_IN_PLACE, &s, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (round > 0) per.push_back(s);
    }
    return median(per);
}

double mpi_allreduce_seconds(std::size_t n, int calls, int rounds) {
    std::vector<float> buf(n, 1.0f);
    return seconds_per_call(calls, rounds, [&] {
        MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    });
}

/// The library's transport alone (non-blocking all-reduce, polled), on its own communicator.
double communicator_allreduce_seconds(std::size_t n, int calls, int rounds) {
    std::vector<float> buf(n, 1.0f);
    bw::mpi_communicator comm;
    comm.connect();
    return seconds_per_call(calls, rounds, [&] { comm.allreduce_sum(buf.data(), n); });
}

/// Enough calls for about 0.1 s per loop at a guessed 2 GB/s plus 10 us per call.
int calls_for(std::size_t floats) {
    const double guess = 10e-6 + 4.0 * static_cast<double>(floats) / 2e9;
    return std::clamp(static_cast<int>(0.1 / guess), 20, 5000);
}

template <class Model>
void train(Model& model, const global_batches& b, const bench::options& o, const std::string& system,
           std::size_t simulated_ranks) {
    float last = 0.0f;
    auto epoch = [&] {
        for (std::size_t s = 0; s < b.x.size(); ++s) last = model.train_on_batch(b.x[s], b.y[s]).loss;
    };
    constexpr bool dp = bw::ShardingAccumulation<typename Model::accumulation_policy>;
    auto reduce_seconds = [&]() -> double {
        if constexpr (dp) return model.accumulation().reductions().seconds;
        return 0.0;
    };
    const std::vector<epoch_record> epochs = time_epochs(o.reps, epoch, reduce_seconds);
    float loss_max = std::isfinite(last) ? std::fabs(last) : INFINITY;
    MPI_Allreduce(MPI_IN_PLACE, &loss_max, 1, MPI_FLOAT, MPI_MAX, MPI_COMM_WORLD);
    if (!std::isfinite(loss_max)) {
        if (world_rank() == 0) std::fprintf(stderr, "dp_mlp: the loss is not finite\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }

    // The step's buffer (gradients and the sample count) timed alone in the same processes.
    std::size_t floats = 0;
    double pure_mpi = 0.0, pure_comm = 0.0;
    std::uint64_t reductions = 0;
    if constexpr (dp) {
        const bw::reduction_statistics& r = model.accumulation().reductions();
        reductions = r.reductions;
        floats = r.reductions ? static_cast<std::size_t>(r.floats / r.reductions) : 0;
        if (simulated_ranks == 0 && floats > 0) {
            pure_mpi = mpi_allreduce_seconds(floats, calls_for(floats), 5);
            pure_comm = communicator_allreduce_seconds(floats, calls_for(floats), 5);
        }
    }
    if (world_rank() != 0) return;

    const auto p = static_cast<std::size_t>(world_size());
    const std::size_t steps = b.x.size();
    std::vector<double> rates, walls, others_v;
    std::vector<std::vector<double>> share(p), reduce_us(p), wall_us(p);
    double others = 0.0;
    for (const epoch_record& e : epochs) {
        rates.push_back(static_cast<double>(o.samples) / e.wall);
        walls.push_back(e.wall);
        others += e.others;
        for (std::size_t r = 0; r < p; ++r) {
            share[r].push_back(e.rank_reduce[r] / e.rank_wall[r]);
            reduce_us[r].push_back(1e6 * e.rank_reduce[r] / static_cast<double>(steps));
            wall_us[r].push_back(1e6 * e.rank_wall[r] / static_cast<double>(steps));
        }
    }
    others /= static_cast<double>(std::max<std::size_t>(epochs.size(), 1));
    std::vector<double> share_med, reduce_med, step_med;
    for (std::size_t r = 0; r < p; ++r) {
        share_med.push_back(median(share[r]));
        reduce_med.push_back(median(reduce_us[r]));
        step_med.push_back(median(wall_us[r]));
    }
    std::ostringstream extra;
    extra.precision(6);
    extra << "\"ranks\": " << p << ", \"simulated_ranks\": " << simulated_ranks
          << ", \"rows_per_rank\": " << (simulated_ranks ? o.batch / simulated_ranks : o.batch / p)
          << ", \"steps_per_epoch\": " << steps << ", \"epoch_s\": " << json_array(walls)
          << ", \"step_us_ranks\": " << json_array(step_med) << ", \"reduce_us_ranks\": " << json_array(reduce_med)
          << ", \"reduce_share_ranks\": " << json_array(share_med) << ", \"floats_per_reduction\": " << floats
          << ", \"reductions\": " << reductions << ", \"pure_mpi_allreduce_us\": " << 1e6 * pure_mpi
          << ", \"pure_communicator_allreduce_us\": " << 1e6 * pure_comm
          << ", \"last_loss\": " << static_cast<double>(last);
    bench::print_result("dp-mlp", system, o.batch, "samples/s", rates, others, extra.str());
}

void run_allreduce() {
    const int p = world_size();
    const std::size_t model_floats = 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10 + 1;
    std::vector<std::size_t> sizes{1, 16, 256, 4096, 16384, 65536, model_floats, 1u << 20};
    for (std::size_t n : sizes) {
        const int calls = calls_for(n);
        const double mpi = mpi_allreduce_seconds(n, calls, 5);
        const double comm = communicator_allreduce_seconds(n, calls, 5);
        if (world_rank() != 0) continue;
        std::printf("{\"workload\": \"dp-mlp allreduce\", \"system\": \"allreduce\", \"ranks\": %d, \"floats\": %zu, "
                    "\"bytes\": %zu, \"calls\": %d, \"mpi_allreduce_us\": %.3f, \"communicator_allreduce_us\": %.3f, "
                    "\"mpi_GB_per_s\": %.4f}\n",
                    p, n, 4 * n, calls, 1e6 * mpi, 1e6 * comm, 4.0 * static_cast<double>(n) / mpi / 1e9);
        std::fflush(stdout);
    }
}

int run(int argc, char** argv) {
    const char* usage =
        "usage: mpirun -np P dp_mlp --mode dp|plain|rank|allreduce [--batch G] [--ranks P] [--reps R] "
        "[--samples S]\n";
    // --ranks is this program's own option; the rest are bench_common's.
    std::size_t ranks = 0;
    std::vector<char*> args{argv[0]};
    for (int i = 1; i < argc; ++i) {
        if (std::string_view(argv[i]) == "--ranks" && i + 1 < argc) {
            ranks = std::stoul(argv[++i]);
        } else {
            args.push_back(argv[i]);
        }
    }
    const bench::options o = bench::parse(static_cast<int>(args.size()), args.data(), usage);
    if (o.mode == "allreduce") {
        run_allreduce();
        return 0;
    }
    const bench::dataset d = bench::make_dataset(o.samples);
    const global_batches b = make_batches(d, o.batch);
    if (o.mode == "dp") {
        bw::Model<Net, bw::dynamic_batch, bw::cpu_blas, bw::data_parallel<>> model{bw::seed{42}};
        compile(model);
        train(model, b, o, "batchwise data_parallel", 0);
    } else if (o.mode == "plain") {
        bw::Model<Net, bw::dynamic_batch> model{bw::seed{42}};
        compile(model);
        train(model, b, o, "batchwise plain", 0);
    } else if (o.mode == "rank") {
        if (ranks == 0 || o.batch % ranks != 0 || world_size() != 1) {
            std::fprintf(stderr, "dp_mlp: --mode rank needs --ranks P dividing --batch, at -np 1\n");
            return 2;
        }
        bw::Model<Net, bw::dynamic_batch, bw::cpu_blas, bw::data_parallel<bw::no_accumulation, solo_rank>> model{
            bw::seed{42}};
        model.accumulation().communicator().set_size(static_cast<int>(ranks));
        compile(model);
        train(model, b, o, "batchwise simulated rank", ranks);
    } else {
        if (world_rank() == 0) std::fputs(usage, stderr);
        return 2;
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int status = 0;
    try {
        status = run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "dp_mlp (rank %d): %s\n", world_rank(), e.what());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Finalize();
    return status;
}
