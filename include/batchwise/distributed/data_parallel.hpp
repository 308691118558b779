// Data parallelism as an accumulation policy: the micro-batches of a window live on several
// processes, and the window's end sums their gradients, statistics and sample counts in one
// all-reduce, so the update is that of one batch of all their samples (docs/data_parallel.md).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <typeinfo>
#include <utility>
#include <vector>

#include "batchwise/batch/accumulation.hpp"
#include "batchwise/core/errors.hpp"
#include "batchwise/distributed/communicator.hpp"
#include "batchwise/train/step/variables.hpp"

namespace batchwise {

class mpi_communicator;  // batchwise/distributed/mpi.hpp, which includes this header

/// What one process spent in the step's all-reduce, for benchmarks and logs.
struct reduction_statistics {
    /// All-reduces of the step's buffer (gradients, statistics and the sample count), one per
    /// optimizer step.
    std::uint64_t reductions = 0;
    std::uint64_t floats = 0;  ///< summed per process over all reductions
    /// Wall time spent in those all-reduces.
    double seconds = 0.0;
    std::uint64_t statistics_reductions = 0;  ///< synchronized batch norm's, in the passes
};

/// Every process is given the same rows (the same dataset, batch sizes and seed), trains the
/// share shard() gives it, and `Inner` (any accumulation policy) decides the window in rows of
/// all processes together: data_parallel<accumulate_to<1024>> steps every 1024 samples of the
/// whole job. The optimizer divides by the global sample count, so the update does not depend
/// on how the rows were shared, on a process holding none, or on a process's out-of-memory
/// splits (each process splits its own share, inside the same step).
template <AccumulationPolicy Inner = no_accumulation, class Comm = mpi_communicator>
class data_parallel {
    static_assert(!ShardingAccumulation<Inner>, "data_parallel<Inner, Comm>: Inner cannot be data_parallel itself.");
    static_assert(Communicator<Comm>,
                  "data_parallel<Inner, Comm>: Comm must be a batchwise::Communicator "
                  "(mpi_communicator from batchwise/distributed/mpi.hpp, nccl_communicator from "
                  "batchwise/distributed/nccl.hpp).");

public:
    /// The accumulation policy that decides the window (Inner).
    using inner_policy = Inner;
    /// The transport between processes (Comm).
    using communicator_type = Comm;
    /// Inner's micro-batches per step: every process sees the same micro-batches.
    static constexpr std::size_t micro_batches = Inner::micro_batches;
    /// Inner's samples per step, counted over all processes together.
    static constexpr std::size_t samples = Inner::samples;
    /// Whether Inner's window is set while training.
    static constexpr bool runtime = Inner::runtime;
    /// The type Inner sums gradients in.
    using accumulator_type = typename Inner::accumulator_type;
    /// The kernels' gradients must be summed across processes, so the GEMM never applies them.
    static constexpr bool updates_in_gemm = false;
    /// Batch norm's statistics of the step travel in the same all-reduce.
    static constexpr bool reduces_layer_statistics = true;
    /// A shared step trains part of a call's rows, which a replayed whole-batch graph cannot.
    static constexpr bool capturable = false;

    /// Over a default transport: all the processes of MPI_COMM_WORLD for mpi_communicator.
    data_parallel() = default;
    /// Over a given transport (an mpi_communicator of a sub-communicator, say).
    explicit data_parallel(Comm comm) : comm_(std::move(comm)) {}

    /// The transport, to set its timeout or ask its rank.
    [[nodiscard]] Comm& communicator() { return comm_; }
    /// The transport, read-only.
    [[nodiscard]] const Comm& communicator() const { return comm_; }
    /// This process's rank (joining the group if not yet done).
    [[nodiscard]] int rank() {
        comm_.connect();
        return comm_.rank();
    }
    /// The number of processes (joining the group if not yet done).
    [[nodiscard]] int size() {
        comm_.connect();
        return comm_.size();
    }

    /// How each call's rows are shared: process r trains shares[r] / sum(shares) of them (a
    /// faster machine can take more). Empty: equal shares. Checked against the number of
    /// processes at compile(), and compared across processes there.
    void set_shares(std::vector<std::size_t> shares) {
        std::size_t total = 0;
        for (std::size_t s : shares) {
            if (s > max_share_total || total + s > max_share_total) {
                throw usage_error("data_parallel::set_shares: the shares must sum to less than 2^32");
            }
            total += s;
        }
        if (!shares.empty() && total == 0) throw usage_error("data_parallel::set_shares: the shares sum to zero");
        shares_ = std::move(shares);
    }
    /// The shares set_shares set; empty: equal shares.
    [[nodiscard]] const std::vector<std::size_t>& shares() const { return shares_; }

    /// This process's rows of `rows`: contiguous, in rank order, sized by the shares (rounded
    /// down at each boundary, so every row belongs to exactly one process).
    [[nodiscard]] row_range shard(std::size_t rows) const {
        if (!comm_.connected()) throw usage_error("data_parallel: training before compile()");
        const auto r = static_cast<std::size_t>(comm_.rank());
        const auto p = static_cast<std::size_t>(comm_.size());
        if (shares_.empty()) return {boundary(rows, r, p), boundary(rows, r + 1, p)};
        const std::size_t total = std::accumulate(shares_.begin(), shares_.end(), std::size_t{0});
        const std::size_t before = std::accumulate(shares_.begin(), shares_.begin() + static_cast<std::ptrdiff_t>(r),
                                                   std::size_t{0});
        return {boundary(rows, before, total), boundary(rows, before + shares_[r], total)};
    }

    /// Called by compile(): joins the group and checks that every process built the same model
    /// with the same configuration (`config`, a fingerprint of the types and settings) and the
    /// same initial weights; names the first process that differs.
    template <class Exec>
    void attach(const variable_set& vars, std::uint64_t config) {
        comm_.connect();
        if (!shares_.empty() && shares_.size() != static_cast<std::size_t>(comm_.size())) {
            throw usage_error("data_parallel: " + std::to_string(shares_.size()) + " shares were set for " +
                              std::to_string(comm_.size()) + " processes");
        }
        detail::fnv1a settings;
        settings.add_value(config);
        settings.add_value(Inner::micro_batches);
        settings.add_value(Inner::samples);
        for (std::size_t s : shares_) settings.add_value(s);
        detail::fnv1a weights;
        std::vector<float> host;
        for (const variable_entry& v : vars.entries()) {
            host.resize(v.ref.size());
            Exec::to_host(v.ref.value, v.ref.size(), host.data());
            weights.add(v.name);
            weights.add(host.data(), host.size() * sizeof(float));
        }
        const std::uint64_t mine[2] = {settings.value, weights.value};
        const std::vector<std::uint64_t> all = comm_.allgather(mine);
        for (int r = 1; r < comm_.size(); ++r) {
            const auto at = static_cast<std::size_t>(r) * 2;
            if (all[at] != all[0]) {
                throw distributed_error("data_parallel: rank " + std::to_string(r) +
                                            " differs from rank 0 in its model, optimizer, loss, metrics, batch "
                                            "policy, accumulation or shares (compile() must be the same call on "
                                            "every process)",
                                        r);
            }
            if (all[at + 1] != all[1]) {
                throw distributed_error("data_parallel: rank " + std::to_string(r) +
                                            " starts from other weights than rank 0 (give every process the same "
                                            "seed, or load the same weights before compile())",
                                        r);
            }
        }
    }

    /// The window's end: this process's gradient sums, its layers' statistics and its sample
    /// count are summed over all processes in one all-reduce (the count rides in the same
    /// buffer), and g.samples becomes the global count the optimizer divides by.
    template <class Exec>
    void reduce(step_gradients& g) {
        static_assert(GradientCommunicator<Comm, Exec>,
                      "data_parallel: this communicator cannot sum the execution policy's memory");
        std::size_t total = 1;
        for (const gradient_buffer& b : g.gradients) total += b.size;
        for (const gradient_buffer& b : g.statistics) total += b.size;
        float* buffer = comm_.template buffer<Exec>(total);
        std::size_t at = 0;
        for (const gradient_buffer& b : g.gradients) Exec::copy(b.data, b.size, buffer + (at += b.size) - b.size);
        for (const gradient_buffer& b : g.statistics) Exec::copy(b.data, b.size, buffer + (at += b.size) - b.size);
        // Exact in a float up to 2^24 samples per step.
        const auto count = static_cast<float>(g.samples);
        Exec::from_host(&count, 1, buffer + at);
        const auto t0 = std::chrono::steady_clock::now();
        comm_.template allreduce_gradients<Exec>(buffer, total);
        stats_.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        ++stats_.reductions;
        stats_.floats += total;
        at = 0;
        for (const gradient_buffer& b : g.gradients) Exec::copy(buffer + (at += b.size) - b.size, b.size, b.data);
        for (const gradient_buffer& b : g.statistics) Exec::copy(buffer + (at += b.size) - b.size, b.size, b.data);
        float global = 0.0f;
        Exec::to_host(buffer + at, 1, &global);
        g.samples = static_cast<std::size_t>(global);
    }

    /// Sums a buffer of synchronized batch norm's statistics over all processes, in place.
    template <class Exec>
    void sum_statistics(float* data, std::size_t n) {
        comm_.template allreduce_gradients<Exec>(data, n);
        ++stats_.statistics_reductions;
    }

    /// Sums host values (loss and metric sums of an epoch or an evaluation) over all processes.
    void reduce_sums(std::span<double> values) { comm_.allreduce_sum(values.data(), values.size()); }

    /// Tells the other processes that this one is about to throw `what` (see Communicator).
    void announce_failure(std::string_view what) { comm_.announce_failure(what); }

    /// Time and volume of the all-reduces so far on this process (measured, for benchmarks).
    [[nodiscard]] const reduction_statistics& reductions() const { return stats_; }

private:
    static constexpr std::size_t max_share_total = (std::size_t{1} << 32) - 1;

    /// floor(rows * k / n) for k <= n < 2^32 (set_shares keeps the total there), without
    /// overflowing rows * k.
    static std::size_t boundary(std::size_t rows, std::size_t k, std::size_t n) {
        return rows / n * k + rows % n * k / n;
    }

    Comm comm_{};
    std::vector<std::size_t> shares_;
    reduction_statistics stats_;
};

}  // namespace batchwise
