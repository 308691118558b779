// The NCCL transport of data-parallel training, for the cuda policy: the step's all-reduce runs
// on the policy's stream over NVLink or the network, on device memory; everything else (the
// unique id at connect, loss sums, configuration checks, failure notices) goes over MPI, so one
// launcher, mpirun, starts both. Compiled by nvcc (batchwise::nccl).
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "batchwise/core/errors.hpp"
#include "batchwise/distributed/mpi.hpp"
#include "batchwise/exec/capabilities.hpp"
#include "batchwise/exec/cuda.hpp"

namespace batchwise {

/// A Communicator whose gradient all-reduce is NCCL's, on the cuda policy's stream. One GPU per
/// process: the process selects its device (cudaSetDevice, by local rank) before compile().
class nccl_communicator {
public:
    /// The processes of MPI_COMM_WORLD.
    nccl_communicator() = default;
    /// The processes of `base`: a sub-communicator, for several groups in one job.
    explicit nccl_communicator(MPI_Comm base) : host_(base) {}

    /// Not copyable: it owns an NCCL communicator and device memory.
    nccl_communicator(const nccl_communicator&) = delete;
    /// Not copyable, as above.
    nccl_communicator& operator=(const nccl_communicator&) = delete;
    /// Takes over o's NCCL communicator and device buffer; o is left unconnected.
    nccl_communicator(nccl_communicator&& o) noexcept
        : host_(std::move(o.host_)),
          comm_(std::exchange(o.comm_, nullptr)),
          buffer_(std::exchange(o.buffer_, nullptr)),
          capacity_(std::exchange(o.capacity_, 0)) {}
    /// Releases this one's NCCL communicator and buffer, then takes over o's.
    nccl_communicator& operator=(nccl_communicator&& o) noexcept {
        if (this != &o) {
            release();
            host_ = std::move(o.host_);
            comm_ = std::exchange(o.comm_, nullptr);
            buffer_ = std::exchange(o.buffer_, nullptr);
            capacity_ = std::exchange(o.capacity_, 0);
        }
        return *this;
    }
    /// Frees the NCCL communicator and the device buffer.
    ~nccl_communicator() { release(); }

    /// Joins the MPI group, then the NCCL clique: rank 0's unique id is broadcast over MPI.
    void connect() {
        if (comm_ != nullptr) return;
        host_.connect();
        ncclUniqueId id{};
        if (host_.rank() == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
        host_.broadcast(&id, sizeof id, 0);
        check(ncclCommInitRank(&comm_, host_.size(), id, host_.rank()), "ncclCommInitRank");
    }
    /// Whether connect() has joined the NCCL clique.
    [[nodiscard]] bool connected() const { return comm_ != nullptr; }
    /// This process's rank, once connected.
    [[nodiscard]] int rank() const { return host_.rank(); }
    /// The number of processes, once connected.
    [[nodiscard]] int size() const { return host_.size(); }
    /// How long the collectives that go over MPI may wait (mpi_communicator::set_timeout).
    void set_timeout(std::chrono::milliseconds t) { host_.set_timeout(t); }
    /// The MPI communicator underneath, which carries everything but the gradients.
    [[nodiscard]] mpi_communicator& host() { return host_; }

    /// Sums n host doubles over MPI (loss and metric sums).
    void allreduce_sum(double* data, std::size_t n) { host_.allreduce_sum(data, n); }
    /// Every process's `mine` over MPI, rank by rank.
    [[nodiscard]] std::vector<std::uint64_t> allgather(std::span<const std::uint64_t> mine) {
        return host_.allgather(mine);
    }
    /// Tells the other processes, over MPI, that this one is about to throw `what`.
    void announce_failure(std::string_view what) { host_.announce_failure(what); }

    /// Device memory for the step's buffer, grown once and kept.
    template <class Exec>
    float* buffer(std::size_t n) {
        static_assert(!HostMemoryPolicy<Exec>,
                      "batchwise::nccl_communicator sums the cuda policy's device memory; with a host "
                      "policy use mpi_communicator");
        if (n > capacity_) {
            if (buffer_ != nullptr) cudaFree(buffer_);
            buffer_ = nullptr;
            capacity_ = 0;
            check_cuda(cudaMalloc(reinterpret_cast<void**>(&buffer_), n * sizeof(float)), "cudaMalloc");
            capacity_ = n;
        }
        return buffer_;
    }

    /// The in-place sum on the policy's stream, then a wait for it with the MPI side's timeout:
    /// NCCL's own errors are polled (ncclCommGetAsyncError) and a stuck clique is aborted
    /// rather than waited on for ever.
    template <class Exec>
    void allreduce_gradients(float* data, std::size_t n) {
        const cudaStream_t stream = detail::cuda_context::get().stream();
        check(ncclAllReduce(data, data, n, ncclFloat, ncclSum, comm_, stream), "ncclAllReduce");
        const auto start = std::chrono::steady_clock::now();
        for (;;) {
            const cudaError_t state = cudaStreamQuery(stream);
            if (state == cudaSuccess) return;
            if (state != cudaErrorNotReady) check_cuda(state, "cudaStreamQuery");
            ncclResult_t async = ncclSuccess;
            check(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError");
            check(async, "ncclAllReduce (asynchronous)");
            if (std::chrono::steady_clock::now() - start > host_.timeout()) {
                ncclCommAbort(comm_);
                comm_ = nullptr;
                throw distributed_error("data_parallel: the NCCL all-reduce did not complete within " +
                                        std::to_string(std::chrono::duration_cast<std::chrono::seconds>(host_.timeout()).count()) +
                                        " s on rank " + std::to_string(host_.rank()) +
                                        ": another process has stopped or hangs");
            }
            std::this_thread::yield();
        }
    }

private:
    void check(ncclResult_t r, const char* call) const {
        if (r == ncclSuccess) return;
        throw distributed_error(std::string("data_parallel: ") + call + " failed on rank " + std::to_string(host_.rank()) +
                                ": " + ncclGetErrorString(r));
    }
    static void check_cuda(cudaError_t e, const char* call) { detail::check_cuda(e, call); }

    void release() noexcept {
        if (comm_ != nullptr) ncclCommDestroy(comm_);
        if (buffer_ != nullptr) cudaFree(buffer_);
        comm_ = nullptr;
        buffer_ = nullptr;
        capacity_ = 0;
    }

    mpi_communicator host_;
    ncclComm_t comm_ = nullptr;
    float* buffer_ = nullptr;
    std::size_t capacity_ = 0;
};

static_assert(Communicator<nccl_communicator>);

}  // namespace batchwise
