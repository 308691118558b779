// `cuda`: the Thrust execution policy on an NVIDIA GPU. Storage is device memory, element-wise
// work and reductions are the Thrust algorithms and functors of exec/thrust.hpp (the same ones
// thrust_host runs in CI), GEMM and column sums are cuBLAS. Compiled by nvcc only.
//
// All work runs on one non-blocking stream per process, without synchronising between kernels
// (thrust::cuda::par_nosync); the host waits only where it reads a result (loss and metric sums,
// predictions, saved weights) or before memory is reallocated. A second stream carries the
// batch copies of replayed steps, so that they overlap the previous step's backward pass.
#pragma once

#if !defined(__CUDACC__)
#error "<batchwise/exec/cuda.hpp> is compiled by nvcc; on the host use cpu_blas or thrust_host"
#endif

#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <string>
#include <string_view>
#include <utility>

#include <cub/device/device_reduce.cuh>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <thrust/functional.h>
#include <thrust/system/cuda/execution_policy.h>

#include "batchwise/core/errors.hpp"
#include "batchwise/core/xtensor.hpp"
#include "batchwise/exec/cuda_lt_gemm.hpp"
#include "batchwise/exec/cuda_graph.hpp"
#include "batchwise/exec/cuda_runtime.hpp"
#include "batchwise/exec/thrust.hpp"

namespace batchwise {

namespace detail {

/// Clears the element it is given; launched once to learn whether the program carries code the
/// device can run (a binary built for other architectures fails here, not mid-training).
struct probe_kernel {
    float* p;
    BATCHWISE_HOST_DEVICE void operator()(std::size_t i) const { p[i] = 0.0f; }
};

/// Runs row r, then reads the value it wrote, widened: the transform of a fused loss reduction.
/// cub applies the transform once per item, so each row runs once.
template <class F>
struct row_then_value {
    F f;
    const float* p;
    BATCHWISE_HOST_DEVICE double operator()(std::size_t r) const {
        f(r);
        return static_cast<double>(p[r]);
    }
};

/// The process's device state: stream, cuBLAS handle and the ones vector column sums multiply by.
class cuda_context {
public:
    static cuda_context& get() {
        static cuda_context context;
        return context;
    }

    cudaStream_t stream() const { return stream_; }
    cublasHandle_t cublas() const { return cublas_; }
    auto policy() const { return thrust::cuda::par_nosync.on(stream_); }
    /// cuBLAS's workspace, which cuBLASLt's GEMMs share: same stream, one call at a time.
    void* workspace() { return thrust::raw_pointer_cast(workspace_.data()); }
    std::size_t workspace_bytes() const { return workspace_.size(); }

    /// Ones for rows rows; grown where the model allocates (reserve_rows).
    const float* ones(std::size_t rows) const { return ones_.size() >= rows ? thrust::raw_pointer_cast(ones_.data()) : nullptr; }
    /// Grows what a step of `rows` rows needs besides the model's buffers: the ones vector, and
    /// the scratch of a reduction into a device slot (a captured step cannot allocate it).
    void reserve_rows(std::size_t rows) {
        if (ones_.size() < rows) {
            check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
            ones_.resize(rows, 1.0f);
            ++generation_;
        }
        reserve_reduction(rows);
    }
    /// Scratch for reductions over up to `items` values (the number of inputs of a batch, for
    /// the device's check of it).
    void reserve_reduction(std::size_t items) {
        if (items <= reduce_items_) return;
        check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
        std::size_t bytes = 0;
        check_cuda(cub::DeviceReduce::TransformReduce(nullptr, bytes, static_cast<const float*>(nullptr),
                                                      static_cast<double*>(nullptr), items, thrust::plus<double>(),
                                                      widen_to_double{}, 0.0, stream_),
                   "cub::DeviceReduce::TransformReduce (sizing)");
        if (bytes > reduce_scratch_.size()) {
            reduce_scratch_.resize(bytes);
            ++generation_;
        }
        reduce_items_ = items;
    }
    /// Changes whenever the buffers above move. Every model shares them and a captured graph
    /// holds their addresses, so a model whose graphs are older captures again.
    std::uint64_t generation() const { return generation_; }

    /// sum(t(p[0 .. n))) in double into *slot, on the stream, without waiting: the reduction a
    /// captured step makes.
    template <class Transform = widen_to_double>
    void sum_into(const float* p, std::size_t n, double* slot, Transform t = {}) {
        if (n > reduce_items_) throw capture_unsupported("a reduction over more values than the model reserved");
        std::size_t bytes = reduce_scratch_.size();
        check_cuda(cub::DeviceReduce::TransformReduce(thrust::raw_pointer_cast(reduce_scratch_.data()), bytes, p, slot,
                                                      n, thrust::plus<double>(), t, 0.0, stream_),
                   "cub::DeviceReduce::TransformReduce");
    }

    /// f(r) for every row r and the sum of p[0 .. n) in double into *slot, in one reduction
    /// whose transform runs the row and reads back the value it wrote (a loss's rows and their
    /// sum: thrust_policy::for_each_then_sum). False, having queued nothing, where the reserved
    /// scratch is too small for this reduction.
    template <class F>
    bool try_rows_sum_into(std::size_t n, const F& f, const float* p, double* slot) {
        if (n == 0 || n > reduce_items_) return false;
        const thrust::counting_iterator<std::size_t> rows(0);
        const row_then_value<F> t{f, p};
        std::size_t bytes = 0;
        if (cub::DeviceReduce::TransformReduce(nullptr, bytes, rows, slot, n, thrust::plus<double>(), t, 0.0, stream_) !=
                cudaSuccess ||
            bytes > reduce_scratch_.size()) {
            (void)cudaGetLastError();
            return false;
        }
        bytes = reduce_scratch_.size();
        check_cuda(cub::DeviceReduce::TransformReduce(thrust::raw_pointer_cast(reduce_scratch_.data()), bytes, rows,
                                                      slot, n, thrust::plus<double>(), t, 0.0, stream_),
                   "cub::DeviceReduce::TransformReduce (rows)");
        return true;
    }

    /// sum(t(p[0 .. n))) in double, returned to the host, through the scratch reserve_rows
    /// sized: an eager step allocates nothing. thrust::transform_reduce would cudaMalloc and
    /// cudaFree its temporary storage on every loss and metric, and the free waits for the
    /// whole device. False, having done nothing, for more values than were reserved (a network
    /// used without a Model).
    template <class Transform = widen_to_double>
    bool try_sum(const float* p, std::size_t n, double& out, Transform t = {}) {
        if (n == 0 || n > reduce_items_) return false;
        sum_into(p, n, device_sum_, t);
        check_cuda(cudaMemcpyAsync(host_sum_, device_sum_, sizeof(double), cudaMemcpyDeviceToHost, stream_),
                   "cudaMemcpyAsync (device to host)");
        check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
        out = *host_sum_;
        return true;
    }

    /// Host-to-device copies on the side stream, overlapping the compute stream's queued work;
    /// await_copies makes the compute stream wait for them.
    void copy_ahead(const void* host_src, std::size_t bytes, void* dst) {
        check_cuda(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, copy_stream_),
                   "cudaMemcpyAsync (host to device, side stream)");
    }
    void await_copies() {
        check_cuda(cudaEventRecord(copies_done_, copy_stream_), "cudaEventRecord");
        check_cuda(cudaStreamWaitEvent(stream_, copies_done_, 0), "cudaStreamWaitEvent");
    }
    /// Returns when the side stream's copies have read their host memory.
    void drain_copies() { check_cuda(cudaStreamSynchronize(copy_stream_), "cudaStreamSynchronize (copies)"); }

    bool capturing() const { return capturing_; }
    /// One thread drives the policy at a time: every model shares this stream, so work another
    /// thread queued on it during a capture would be captured too.
    void begin_capture() {
        check_cuda(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
        capturing_ = true;
    }
    cudaGraph_t end_capture() {
        capturing_ = false;
        cudaGraph_t g = nullptr;
        check_cuda(cudaStreamEndCapture(stream_, &g), "cudaStreamEndCapture");
        return g;
    }
    void abort_capture() noexcept {
        if (!capturing_) return;
        capturing_ = false;
        cudaGraph_t g = nullptr;
        if (cudaStreamEndCapture(stream_, &g) == cudaSuccess && g != nullptr) (void)cudaGraphDestroy(g);
        (void)cudaGetLastError();  // an invalidated capture leaves its error behind
    }

    cuda_context(const cuda_context&) = delete;
    cuda_context& operator=(const cuda_context&) = delete;

private:
    cuda_context() {
        const std::string reason = cuda_unusable_reason();
        if (!reason.empty()) throw device_error("batchwise::cuda: " + reason);
        check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
        check_cuda(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
        check_cuda(cudaEventCreateWithFlags(&copies_done_, cudaEventDisableTiming), "cudaEventCreateWithFlags");
        check_cuda(cudaMalloc(reinterpret_cast<void**>(&device_sum_), sizeof(double)), "cudaMalloc");
        host_sum_ = pinned_allocator<double>{}.allocate(1);
        check_cublas(cublasCreate(&cublas_), "cublasCreate");
        check_cublas(cublasSetStream(cublas_, stream_), "cublasSetStream");
        // cuBLAS's own workspace is allocated behind the caller's back, which a captured step
        // must not do: give it one up front (the size NVIDIA recommends for Hopper).
        workspace_.resize(std::size_t{32} << 20);
        check_cublas(cublasSetWorkspace(cublas_, thrust::raw_pointer_cast(workspace_.data()), workspace_.size()),
                     "cublasSetWorkspace");
        try {
            thrust::device_vector<float> probe(1);
            thrust::for_each_n(thrust::cuda::par.on(stream_), thrust::counting_iterator<std::size_t>(0), 1,
                               probe_kernel{thrust::raw_pointer_cast(probe.data())});
        } catch (const thrust::system_error& e) {
            int device = 0;
            cudaDeviceProp props{};
            (void)cudaGetDevice(&device);
            (void)cudaGetDeviceProperties(&props, device);
            throw device_error("batchwise::cuda: the GPU '" + std::string(props.name) + "' (sm_" +
                               std::to_string(props.major) + std::to_string(props.minor) +
                               ") cannot run this program's kernels (" + e.what() +
                               "); build with CMAKE_CUDA_ARCHITECTURES including " + std::to_string(props.major) +
                               std::to_string(props.minor));
        }
    }
    // Destroyed at exit, when the driver may already be shutting down: errors are ignored.
    ~cuda_context() {
        if (cublas_ != nullptr) (void)cublasDestroy(cublas_);
        if (host_sum_ != nullptr) pinned_allocator<double>{}.deallocate(host_sum_, 1);
        if (device_sum_ != nullptr) (void)cudaFree(device_sum_);
        if (copies_done_ != nullptr) (void)cudaEventDestroy(copies_done_);
        if (copy_stream_ != nullptr) (void)cudaStreamDestroy(copy_stream_);
        if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
    }

    cudaStream_t stream_ = nullptr;
    cudaStream_t copy_stream_ = nullptr;
    cudaEvent_t copies_done_ = nullptr;
    cublasHandle_t cublas_ = nullptr;
    double* device_sum_ = nullptr;
    double* host_sum_ = nullptr;
    thrust::device_vector<float> ones_;
    thrust::device_vector<unsigned char> workspace_;
    thrust::device_vector<unsigned char> reduce_scratch_;
    std::size_t reduce_items_ = 0;
    std::uint64_t generation_ = 0;
    bool capturing_ = false;
};

/// Page-locked host memory for batch staging: cudaMemcpyAsync from it neither waits for the
/// copy nor goes through a driver bounce buffer, and a captured graph may copy from it (not from
/// pageable memory). Grows, never shrinks; contents are transient.
template <class T>
class pinned_host_array {
public:
    pinned_host_array() = default;
    pinned_host_array(const pinned_host_array&) = delete;
    pinned_host_array& operator=(const pinned_host_array&) = delete;
    pinned_host_array(pinned_host_array&& o) noexcept
        : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
    pinned_host_array& operator=(pinned_host_array&& o) noexcept {
        std::swap(data_, o.data_);
        std::swap(size_, o.size_);
        return *this;
    }
    ~pinned_host_array() {
        if (data_ != nullptr) pinned_allocator<T>{}.deallocate(data_, size_);
    }

    void resize(std::size_t n) {
        if (n <= size_) return;
        // A pending copy may still read the old buffer.
        check_cuda(cudaStreamSynchronize(cuda_context::get().stream()), "cudaStreamSynchronize");
        T* fresh = pinned_allocator<T>{}.allocate(n);
        if (data_ != nullptr) pinned_allocator<T>{}.deallocate(data_, size_);
        data_ = fresh;
        size_ = n;
    }
    T* data() { return data_; }
    const T* data() const { return data_; }
    std::size_t size() const { return size_; }
    T& operator[](std::size_t i) { return data_[i]; }
    const T& operator[](std::size_t i) const { return data_[i]; }

private:
    T* data_ = nullptr;
    std::size_t size_ = 0;
};

template <cuda_math Math>
struct cublas_backend {
    static constexpr std::string_view name = Math == cuda_math::tf32 ? "cuda (tf32)" : "cuda";
    template <class T>
    using host_array = pinned_host_array<T>;
    using host_vector = host_array<float>;
    using graph = cuda_graph;

    static void prepare() { (void)cuda_context::get(); }
    static auto policy() { return cuda_context::get().policy(); }
    static void synchronize() {
        check_cuda(cudaStreamSynchronize(cuda_context::get().stream()), "cudaStreamSynchronize");
    }
    static void reserve_rows(std::size_t rows) { cuda_context::get().reserve_rows(rows); }
    /// Free device memory as the driver counts it (other processes' allocations included).
    static std::size_t free_memory_bytes() {
        std::size_t free = 0;
        std::size_t total = 0;
        check_cuda(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
        return free;
    }
    static void require_free_memory(std::size_t bytes) {
        if (free_memory_bytes() < bytes) throw std::bad_alloc();
    }
    /// Page-locked by cudaMallocHost (pinned_allocator) or cudaHostRegister.
    static bool is_pinned(const void* p) {
        cudaPointerAttributes a{};
        if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
            (void)cudaGetLastError();
            return false;
        }
        return a.type == cudaMemoryTypeHost;
    }

    static void reserve_reduction(std::size_t items) { cuda_context::get().reserve_reduction(items); }
    template <class Transform>
    static void sum_into(const float* p, std::size_t n, double* slot, Transform t) {
        cuda_context::get().sum_into(p, n, slot, t);
    }
    template <class F>
    static bool try_rows_sum_into(std::size_t n, const F& f, const float* p, double* slot) {
        return cuda_context::get().try_rows_sum_into(n, f, p, slot);
    }
    template <class Transform>
    static bool try_sum(const float* p, std::size_t n, double& out, Transform t) {
        return cuda_context::get().try_sum(p, n, out, t);
    }

    static bool capturing() { return cuda_context::get().capturing(); }
    static std::uint64_t shared_buffers_generation() { return cuda_context::get().generation(); }
    static void begin_capture() { cuda_context::get().begin_capture(); }
    static cuda_graph end_capture() {
        cuda_context& ctx = cuda_context::get();
        return cuda_graph(ctx.end_capture(), ctx.stream());
    }
    static void abort_capture() noexcept { cuda_context::get().abort_capture(); }
    static void launch(const cuda_graph& g) { g.launch(cuda_context::get().stream()); }
    static std::uint64_t launched_graph_nodes() { return cuda_graph::launched_nodes(); }

    /// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the operands swap and
    /// keep their own transposes, with no copy.
    static void gemm(transpose ta, transpose tb, float alpha, const_matrix_view a, const_matrix_view b,
                     float beta, matrix_view c) {
        cublasHandle_t h = cuda_context::get().cublas();
        check_cublas(cublasSetMathMode(h, Math == cuda_math::tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
                     "cublasSetMathMode");
        const int m = static_cast<int>(c.rows);
        const int n = static_cast<int>(c.cols);
        const int k = static_cast<int>(ta == transpose::yes ? a.rows : a.cols);
        check_cublas(cublasSgemm(h, tb == transpose::yes ? CUBLAS_OP_T : CUBLAS_OP_N,
                                 ta == transpose::yes ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b.data,
                                 static_cast<int>(b.cols), a.data, static_cast<int>(a.cols), &beta, c.data, n),
                     "cublasSgemm");
    }

    /// A Dense's forward as one cuBLASLt GEMM with a BIAS, RELU_BIAS or (writing `mask`)
    /// RELU_AUX_BIAS epilogue (FusedDensePolicy): 2 with the mask written, 1 without, 0 having
    /// queued nothing where cuBLASLt has no algorithm for it.
    template <class Fn>
    static int try_dense_forward(const_matrix_view x, const_matrix_view w, const float* bias, matrix_view y,
                                 void* mask) {
        return lt_dense_forward<Fn>(x, w, bias, y, mask, lt());
    }
    /// A Dense's input gradient through the ReLU before it as one cuBLASLt GEMM with the DRELU
    /// epilogue, reading the bit mask the Dense before wrote; false where it cannot.
    template <class Fn>
    static bool try_dense_input_grad(const_matrix_view dy, const_matrix_view w, const void* mask, matrix_view dx) {
        if constexpr (Fn::epilogue != epilogue_activation::relu) {
            return false;
        } else {
            return lt_dense_input_grad_drelu(dy, w, mask, dx, lt());
        }
    }
    /// Bytes of the ReLU bit mask of rows x cols outputs: a column of whole 128-bit words per
    /// sample (cuBLASLt's layout).
    static constexpr std::size_t activation_mask_bytes(std::size_t rows, std::size_t cols) {
        return static_cast<std::size_t>(lt_relu_mask_ld(cols)) / 8 * rows;
    }
    /// A Dense's weight and bias gradients as one cuBLASLt GEMM with a BGRADA epilogue.
    static bool try_dense_weight_grad(const_matrix_view x, const_matrix_view dy, matrix_view dw, float* bias_grad) {
        return lt_dense_weight_grad(x, dy, dw, bias_grad, lt());
    }
    /// Where this policy's cuBLASLt GEMMs run: the compute stream, cuBLAS's workspace, Math.
    static lt_launch lt() {
        cuda_context& ctx = cuda_context::get();
        return {Math == cuda_math::tf32, ctx.stream(), ctx.workspace(), ctx.workspace_bytes()};
    }

    /// Row-major A (rows x cols) is column-major A^T; its row sums are A^T times ones. Without
    /// reserved ones (a network used outside a Model) the per-column functor does it.
    static void column_sums(const_matrix_view a, float* out, float beta) {
        cuda_context& ctx = cuda_context::get();
        const float* ones = ctx.ones(a.rows);
        if (ones == nullptr || a.rows == 0) {
            thrust::for_each_n(ctx.policy(), thrust::counting_iterator<std::size_t>(0), a.cols,
                               column_sum{a.data, a.rows, a.cols, out, beta});
            return;
        }
        const float alpha = 1.0f;
        check_cublas(cublasSgemv(ctx.cublas(), CUBLAS_OP_N, static_cast<int>(a.cols), static_cast<int>(a.rows),
                                 &alpha, a.data, static_cast<int>(a.cols), ones, 1, &beta, out, 1),
                     "cublasSgemv");
    }

    template <class T>
    static void copy_ahead(const T* host_src, std::size_t n, T* dst) {
        cuda_context::get().copy_ahead(host_src, n * sizeof(T), dst);
    }
    static void await_copies() { cuda_context::get().await_copies(); }
    static void drain_copies() { cuda_context::get().drain_copies(); }
    using event = cuda_event;
    static void mark(cuda_event& e) { e.mark(cuda_context::get().stream()); }
    static void wait_for(const cuda_event& e) { e.wait(); }
    /// Queued on the compute stream into page-locked memory: a captured graph's copy node.
    template <class T>
    static void send_to_host(const T* src, std::size_t n, T* pinned_dst) {
        check_cuda(cudaMemcpyAsync(pinned_dst, src, n * sizeof(T), cudaMemcpyDeviceToHost, cuda_context::get().stream()),
                   "cudaMemcpyAsync (device to pinned host)");
    }

    template <class T>
    static void to_host(const T* src, std::size_t n, T* host_dst) {
        cuda_context& ctx = cuda_context::get();
        check_cuda(cudaMemcpyAsync(host_dst, src, n * sizeof(T), cudaMemcpyDeviceToHost, ctx.stream()),
                   "cudaMemcpyAsync (device to host)");
        check_cuda(cudaStreamSynchronize(ctx.stream()), "cudaStreamSynchronize");
    }
    /// Queued on the stream, so ordered before the kernels that read it. The model rewrites its
    /// staging only after a result has come back to the host (a loss sum, a prediction), which
    /// waits for this copy too.
    template <class T>
    static void from_host(const T* host_src, std::size_t n, T* dst) {
        check_cuda(cudaMemcpyAsync(dst, host_src, n * sizeof(T), cudaMemcpyHostToDevice,
                                   cuda_context::get().stream()),
                   "cudaMemcpyAsync (host to device)");
    }
};

}  // namespace detail


/// The CUDA execution policy with a chosen GEMM precision.
template <cuda_math Math = cuda_math::fp32>
using cuda_policy = thrust_policy<detail::cublas_backend<Math>>;

/// The CUDA execution policy: Thrust and cuBLAS in fp32.
using cuda = cuda_policy<>;
/// The CUDA execution policy with TF32 tensor-core GEMMs.
using cuda_tf32 = cuda_policy<cuda_math::tf32>;
static_assert(!cuda::records_calls, "cuda captures a step by CUDA stream capture, running every call");

}  // namespace batchwise
