// The MPI transport of data-parallel training (MPI-3: a non-blocking barrier before each
// collective, all-reduce, all-gather, point-to-point failure notices). Every wait has a deadline,
// and a process that fails tells the others on a channel of its own, so a failure anywhere ends
// every process with distributed_error instead of a hang.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "batchwise/core/errors.hpp"
#include "batchwise/distributed/communicator.hpp"
#include "batchwise/distributed/data_parallel.hpp"
#include "batchwise/exec/capabilities.hpp"

namespace batchwise {

/// A Communicator over an MPI communicator (MPI_COMM_WORLD unless given one). MPI itself is
/// initialised and finalised by the program (MPI_Init before compile(), MPI_Finalize after the
/// model is gone); nothing is called on MPI before connect().
class mpi_communicator {
public:
    /// The clock timeouts are measured on.
    using clock = std::chrono::steady_clock;

    /// The processes of MPI_COMM_WORLD.
    mpi_communicator() = default;
    /// The processes of `base`: a sub-communicator, for several groups in one job.
    explicit mpi_communicator(MPI_Comm base) : base_(base) {}

    /// Not copyable: it owns the communicators it duplicated.
    mpi_communicator(const mpi_communicator&) = delete;
    /// Not copyable, as above.
    mpi_communicator& operator=(const mpi_communicator&) = delete;
    /// Takes over o's communicators and state; o is left unconnected.
    mpi_communicator(mpi_communicator&& o) noexcept { take(o); }
    /// Releases this one's communicators, then takes over o's.
    mpi_communicator& operator=(mpi_communicator&& o) noexcept {
        if (this != &o) {
            release();
            take(o);
        }
        return *this;
    }
    /// Frees the duplicated communicators, unless MPI is already finalised.
    ~mpi_communicator() { release(); }

    /// Duplicates the base communicator twice (collectives, failure notices) with errors
    /// returned rather than fatal, and starts listening for notices.
    void connect() {
        if (connected_) return;
        int up = 0;
        int down = 0;
        MPI_Initialized(&up);
        MPI_Finalized(&down);
        if (!up || down) {
            throw distributed_error(std::string("data_parallel: MPI is ") + (down ? "already finalised" : "not initialised") +
                                    "; call MPI_Init before compile() (and MPI_Finalize after the model is "
                                    "destroyed), and start the program with mpirun");
        }
        check(MPI_Comm_dup(base_, &collective_), "MPI_Comm_dup");
        check(MPI_Comm_dup(base_, &notices_), "MPI_Comm_dup");
        MPI_Comm_set_errhandler(collective_, MPI_ERRORS_RETURN);
        MPI_Comm_set_errhandler(notices_, MPI_ERRORS_RETURN);
        MPI_Comm_rank(collective_, &rank_);
        MPI_Comm_size(collective_, &size_);
        connected_ = true;
        listen();
    }
    /// Whether connect() has run.
    [[nodiscard]] bool connected() const { return connected_; }
    /// This process's rank in the group, once connected.
    [[nodiscard]] int rank() const { return rank_; }
    /// The number of processes in the group, once connected.
    [[nodiscard]] int size() const { return size_; }

    /// How long any collective may wait for the other processes (default 10 minutes: longer
    /// than any step should take, shorter than a batch job's patience).
    void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }
    /// How long a collective may wait, as set_timeout set it.
    [[nodiscard]] std::chrono::milliseconds timeout() const { return timeout_; }
    /// Whether a failure (a notice, a timeout) has made the communicator unusable.
    [[nodiscard]] bool broken() const { return broken_; }

    /// Sums n host doubles over all processes, in place (loss and metric sums).
    void allreduce_sum(double* data, std::size_t n) { allreduce(data, n, MPI_DOUBLE, "the all-reduce of loss sums"); }
    /// Sums n host floats over all processes, in place (gradients staged on the host).
    void allreduce_sum(float* data, std::size_t n) { allreduce(data, n, MPI_FLOAT, "the all-reduce of gradients"); }

    /// Every process's `mine`, rank by rank (configuration checks); `mine` has the same
    /// size on every process.
    [[nodiscard]] std::vector<std::uint64_t> allgather(std::span<const std::uint64_t> mine) {
        require_usable("an all-gather");
        std::vector<std::uint64_t> all(mine.size() * static_cast<std::size_t>(size_));
        MPI_Request req = MPI_REQUEST_NULL;
        check(MPI_Iallgather(mine.data(), static_cast<int>(mine.size()), MPI_UINT64_T, all.data(),
                             static_cast<int>(mine.size()), MPI_UINT64_T, collective_, &req),
              "MPI_Iallgather");
        wait(req, "the all-gather of configurations");
        return all;
    }

    /// `bytes` bytes of rank `root`'s `data` to every process (NCCL's unique id).
    void broadcast(void* data, std::size_t bytes, int root) {
        require_usable("a broadcast");
        MPI_Request req = MPI_REQUEST_NULL;
        check(MPI_Ibcast(data, static_cast<int>(bytes), MPI_BYTE, root, collective_, &req), "MPI_Ibcast");
        wait(req, "a broadcast");
    }

    /// The step's buffer in the policy's memory. MPI reads host memory: a policy whose buffers
    /// are elsewhere (thrust_host's Thrust vectors, cuda's device memory) is staged through a
    /// host copy, which works everywhere; on GPUs nccl_communicator sums device memory instead.
    template <class Exec>
    float* buffer(std::size_t n) {
        if (host_.size() < n) host_.resize(n);
        if constexpr (HostMemoryPolicy<Exec>) {
            return host_.data();
        } else {
            if (!staged_ || staged_capacity_ < n) {
                auto s = std::make_unique<policy_buffer<Exec>>();
                Exec::reserve(s->values, n);
                staged_ = std::move(s);
                staged_capacity_ = n;
            }
            return Exec::data(static_cast<policy_buffer<Exec>&>(*staged_).values);
        }
    }
    /// Sums n floats of the policy's memory at `data` over all processes, in place, through a
    /// host copy when the policy's memory is not the host's.
    template <class Exec>
    void allreduce_gradients(float* data, std::size_t n) {
        if constexpr (HostMemoryPolicy<Exec>) {
            allreduce_sum(data, n);
        } else {
            if (host_.size() < n) host_.resize(n);
            Exec::to_host(data, n, host_.data());
            allreduce_sum(host_.data(), n);
            Exec::from_host(host_.data(), n, data);
        }
    }

    /// Tells every other process that this one is about to throw `what`, and waits (at most the
    /// timeout, and at most 30 s) until each has heard, so that none is still waiting in a
    /// collective when this process exits. Does nothing once the communicator is broken: a
    /// failure is announced once.
    void announce_failure(std::string_view what) {
        if (!connected_ || broken_) return;
        broken_ = true;
        const std::string message(what.substr(0, max_notice - 1));
        std::vector<MPI_Request> requests;
        for (int r = 0; r < size_; ++r) {
            if (r == rank_) continue;
            MPI_Request send = MPI_REQUEST_NULL;
            MPI_Request ack = MPI_REQUEST_NULL;
            MPI_Isend(message.data(), static_cast<int>(message.size()), MPI_CHAR, r, notice_tag, notices_, &send);
            MPI_Irecv(nullptr, 0, MPI_CHAR, r, ack_tag, notices_, &ack);
            requests.push_back(send);
            requests.push_back(ack);
        }
        const auto since = clock::now();
        const auto deadline = since + std::min<std::chrono::milliseconds>(timeout_, std::chrono::seconds(30));
        for (;;) {
            int all = 0;
            MPI_Testall(static_cast<int>(requests.size()), requests.data(), &all, MPI_STATUSES_IGNORE);
            if (all) break;
            // Other processes failing at the same time wait for this one's acknowledgement.
            if (received_notice()) acknowledge_notices();
            if (clock::now() > deadline) break;
            pause(since);
        }
        for (MPI_Request& r : requests) {
            if (r != MPI_REQUEST_NULL) {
                MPI_Cancel(&r);
                MPI_Request_free(&r);
            }
        }
    }

private:
    struct any_buffer {
        virtual ~any_buffer() = default;
    };
    template <class Exec>
    struct policy_buffer final : any_buffer {
        typename Exec::vector values;
    };

    static constexpr int notice_tag = 1;
    static constexpr int ack_tag = 2;
    static constexpr std::size_t max_notice = 1024;

    /// Waits, with the deadline and the failure notices, until every process has arrived
    /// (MPI_Ibarrier, microseconds), then sums with the blocking MPI_Allreduce: Open MPI's
    /// non-blocking MPI_Iallreduce took 2.1x as long for a 1 MB gradient here (359 against 168
    /// us, benchmarks/README.md, dp-mlp). A process that dies between the two is left to the
    /// MPI runtime, which ends the job.
    template <class T>
    void allreduce(T* data, std::size_t n, MPI_Datatype type, const char* what) {
        require_usable(what);
        MPI_Request arrival = MPI_REQUEST_NULL;
        check(MPI_Ibarrier(collective_, &arrival), "MPI_Ibarrier");
        wait(arrival, what);
        // MPI counts are int: larger buffers go in pieces.
        constexpr std::size_t piece = INT_MAX / 2;
        for (std::size_t at = 0; at < n; at += piece) {
            check(MPI_Allreduce(MPI_IN_PLACE, data + at, static_cast<int>(std::min(piece, n - at)), type, MPI_SUM,
                                collective_),
                  "MPI_Allreduce");
        }
    }

    void require_usable(const char* what) const {
        if (!connected_) throw usage_error(std::string("data_parallel: ") + what + " before compile()");
        if (broken_) {
            throw distributed_error(std::string("data_parallel: ") + what + " after an earlier failure" +
                                        (failed_rank_ >= 0 ? " of rank " + std::to_string(failed_rank_) : std::string()) +
                                        "; the processes no longer run the same steps" +
                                        (notice_message_.empty() ? std::string() : ": " + notice_message_),
                                    failed_rank_);
        }
    }

    /// Drives MPI's progress until `req` completes, a notice arrives, or the timeout passes.
    void wait(MPI_Request& req, const char* what) {
        const auto start = clock::now();
        for (;;) {
            int done = 0;
            check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Test");
            if (done) return;
            if (received_notice()) {
                const int first = failed_rank_;
                const std::string message = notice_message_;
                acknowledge_notices();
                failed_rank_ = first;
                notice_message_ = message;
                broken_ = true;
                // A process that failed right after this collective completed everywhere: the
                // collective's result stands, and the next call raises the failure.
                check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Test");
                if (done) return;
                throw distributed_error("data_parallel: rank " + std::to_string(failed_rank_) + " failed during " + what +
                                            " (seen on rank " + std::to_string(rank_) + "): " + notice_message_,
                                        failed_rank_);
            }
            if (clock::now() - start > timeout_) {
                broken_ = true;
                throw distributed_error(
                    "data_parallel: " + std::string(what) + " did not complete within " + seconds(timeout_) +
                    " s on rank " + std::to_string(rank_) +
                    ": another process has stopped, hangs, or runs a different sequence of steps");
            }
            pause(start);
        }
    }

    /// "2", "0.5": a timeout as a person wrote it.
    static std::string seconds(std::chrono::milliseconds t) {
        char text[32];
        std::snprintf(text, sizeof text, "%g", std::chrono::duration<double>(t).count());
        return text;
    }

    /// A non-blocking collective advances only while MPI is called, so a wait keeps polling
    /// (yielding the core to any process still computing) for as long as a step's exchange
    /// takes; a wait longer than that is for a slow or failed process, and sleeps between polls.
    static void pause(clock::time_point since) {
        if (clock::now() - since < std::chrono::milliseconds(200)) {
            std::this_thread::yield();
        } else {
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
    }

    void listen() {
        MPI_Irecv(notice_.data(), static_cast<int>(max_notice), MPI_CHAR, MPI_ANY_SOURCE, notice_tag, notices_,
                  &notice_request_);
    }
    bool received_notice() {
        if (notice_request_ == MPI_REQUEST_NULL) return false;
        int flag = 0;
        MPI_Status status;
        MPI_Test(&notice_request_, &flag, &status);
        if (!flag) return false;
        int length = 0;
        MPI_Get_count(&status, MPI_CHAR, &length);
        failed_rank_ = status.MPI_SOURCE;
        notice_message_.assign(notice_.data(), static_cast<std::size_t>(std::max(length, 0)));
        return true;
    }
    /// Acknowledges the notice just received and any others waiting, listening again after each.
    void acknowledge_notices() {
        do {
            if (failed_rank_ >= 0) MPI_Send(nullptr, 0, MPI_CHAR, failed_rank_, ack_tag, notices_);
            listen();
        } while (received_notice());
    }

    void check(int code, const char* call) {
        if (code == MPI_SUCCESS) return;
        char text[MPI_MAX_ERROR_STRING];
        int length = 0;
        MPI_Error_string(code, text, &length);
        broken_ = true;
        throw distributed_error(std::string("data_parallel: ") + call + " failed on rank " + std::to_string(rank_) +
                                ": " + std::string(text, static_cast<std::size_t>(length)));
    }

    void take(mpi_communicator& o) {
        base_ = o.base_;
        collective_ = std::exchange(o.collective_, MPI_COMM_NULL);
        notices_ = std::exchange(o.notices_, MPI_COMM_NULL);
        notice_request_ = std::exchange(o.notice_request_, MPI_REQUEST_NULL);
        notice_ = o.notice_;
        connected_ = std::exchange(o.connected_, false);
        broken_ = o.broken_;
        rank_ = o.rank_;
        size_ = o.size_;
        failed_rank_ = o.failed_rank_;
        timeout_ = o.timeout_;
        notice_message_ = std::move(o.notice_message_);
        host_ = std::move(o.host_);
        staged_ = std::move(o.staged_);
        staged_capacity_ = std::exchange(o.staged_capacity_, 0);
        // The pending receive writes into notice_'s old address: post it again here.
        if (notice_request_ != MPI_REQUEST_NULL) {
            MPI_Cancel(&notice_request_);
            MPI_Request_free(&notice_request_);
            listen();
        }
    }

    /// Stops listening and frees the duplicated communicators, unless MPI is already finalised
    /// (then there is nothing left to free).
    void release() noexcept {
        if (!connected_) return;
        connected_ = false;
        int down = 0;
        MPI_Finalized(&down);
        if (down) return;
        // A process announcing its failure waits for this one's acknowledgement.
        if (received_notice()) acknowledge_notices();
        if (notice_request_ != MPI_REQUEST_NULL) {
            MPI_Cancel(&notice_request_);
            MPI_Request_free(&notice_request_);
        }
        // A collective left pending by a failure keeps its communicator alive.
        if (!broken_) MPI_Comm_free(&collective_);
        MPI_Comm_free(&notices_);
    }

    MPI_Comm base_ = MPI_COMM_WORLD;
    MPI_Comm collective_ = MPI_COMM_NULL;
    MPI_Comm notices_ = MPI_COMM_NULL;
    MPI_Request notice_request_ = MPI_REQUEST_NULL;
    std::array<char, max_notice> notice_{};
    bool connected_ = false;
    bool broken_ = false;
    int rank_ = 0;
    int size_ = 1;
    int failed_rank_ = distributed_error::no_rank;
    std::chrono::milliseconds timeout_{std::chrono::minutes(10)};
    std::string notice_message_;
    std::vector<float> host_;
    std::unique_ptr<any_buffer> staged_;  // the step's buffer in a non-host policy's memory
    std::size_t staged_capacity_ = 0;
};

static_assert(Communicator<mpi_communicator>);

}  // namespace batchwise
