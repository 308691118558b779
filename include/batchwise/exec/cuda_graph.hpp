// A captured step on the GPU as an instantiated CUDA graph, and the events the host waits on
// for its results. Compiled by nvcc only, as part of <batchwise/exec/cuda.hpp>.
#pragma once

#if !defined(__CUDACC__)
#error "<batchwise/exec/cuda_graph.hpp> is compiled by nvcc; on the host use cpu_blas or thrust_host"
#endif

#include <cstddef>
#include <cstdint>
#include <utility>

#include <cuda_runtime_api.h>

#include "batchwise/exec/cuda_runtime.hpp"

namespace batchwise {

namespace detail {

/// An instantiated CUDA graph: one captured part of a training step.
class cuda_graph {
public:
    cuda_graph() = default;
    /// Instantiated and uploaded to the device at once: otherwise the driver does the upload,
    /// allocating host memory, at the first launch, which for the second of the alternating
    /// pairs of graphs is a steady-state step.
    cuda_graph(cudaGraph_t g, cudaStream_t stream) {
        // The node count is read before instantiation, which may split or merge nothing but
        // leaves only the executable form.
        if (cudaGraphGetNodes(g, nullptr, &nodes_) != cudaSuccess) nodes_ = 0;
        const cudaError_t status = cudaGraphInstantiate(&exec_, g, 0);
        (void)cudaGraphDestroy(g);
        check_cuda(status, "cudaGraphInstantiate");
        const cudaError_t uploaded = cudaGraphUpload(exec_, stream);
        if (uploaded != cudaSuccess) {
            (void)cudaGraphExecDestroy(std::exchange(exec_, nullptr));
            check_cuda(uploaded, "cudaGraphUpload");
        }
    }
    cuda_graph(const cuda_graph&) = delete;
    cuda_graph& operator=(const cuda_graph&) = delete;
    cuda_graph(cuda_graph&& o) noexcept : exec_(std::exchange(o.exec_, nullptr)), nodes_(std::exchange(o.nodes_, 0)) {}
    cuda_graph& operator=(cuda_graph&& o) noexcept {
        std::swap(exec_, o.exec_);
        std::swap(nodes_, o.nodes_);
        return *this;
    }
    ~cuda_graph() {
        if (exec_ != nullptr) (void)cudaGraphExecDestroy(exec_);
    }
    void launch(cudaStream_t stream) const {
        check_cuda(cudaGraphLaunch(exec_, stream), "cudaGraphLaunch");
        launched_nodes() += nodes_;
    }
    /// The graph's nodes (kernels, copies, cuBLAS's kernels), as cudaGraphGetNodes counts them.
    [[nodiscard]] std::size_t size() const { return nodes_; }
    /// Nodes of every graph launched on this thread so far (thrust_policy::launched_graph_nodes).
    static std::uint64_t& launched_nodes() {
        thread_local std::uint64_t n = 0;
        return n;
    }

private:
    cudaGraphExec_t exec_ = nullptr;
    std::size_t nodes_ = 0;
};

/// A point in the compute stream's work the host can wait for. The CUDA event is made at the
/// first mark, so that an unused one costs nothing.
class cuda_event {
public:
    cuda_event() = default;
    cuda_event(const cuda_event&) = delete;
    cuda_event& operator=(const cuda_event&) = delete;
    cuda_event(cuda_event&& o) noexcept : event_(std::exchange(o.event_, nullptr)) {}
    cuda_event& operator=(cuda_event&& o) noexcept {
        std::swap(event_, o.event_);
        return *this;
    }
    ~cuda_event() {
        if (event_ != nullptr) (void)cudaEventDestroy(event_);
    }
    void mark(cudaStream_t stream) {
        if (event_ == nullptr) check_cuda(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreateWithFlags");
        check_cuda(cudaEventRecord(event_, stream), "cudaEventRecord");
    }
    void wait() const {
        if (event_ != nullptr) check_cuda(cudaEventSynchronize(event_), "cudaEventSynchronize");
    }

private:
    cudaEvent_t event_ = nullptr;
};

}  // namespace detail

}  // namespace batchwise
