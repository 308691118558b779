// The CUDA runtime as the cuda policy meets it: failed calls as typed errors (an allocation
// failure as std::bad_alloc, for out-of-memory recovery), page-locked host memory for batches,
// and the reason a process cannot use a GPU. Compiled by nvcc only.
#pragma once

#if !defined(__CUDACC__)
#error "<batchwise/exec/cuda_runtime.hpp> is compiled by nvcc; on the host use cpu_blas or thrust_host"
#endif

#include <cstddef>
#include <limits>
#include <new>
#include <string>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "batchwise/core/errors.hpp"
#include "batchwise/core/xtensor.hpp"

namespace batchwise {

/// Which arithmetic cuBLAS may use for fp32 GEMMs. TF32 tensor cores are several times faster
/// on Ampere and later but round the inputs to 10 mantissa bits, so the default is plain fp32,
/// the precision the CPU policies and the exactness tests assume.
enum class cuda_math { fp32, tf32 };
/// \var cuda_math::fp32
/// Plain fp32 GEMMs: the default, the precision the CPU policies have.
/// \var cuda_math::tf32
/// TF32 tensor cores (bw::cuda_tf32): faster, with inputs rounded to 10 mantissa bits.

namespace detail {

inline std::string cuda_version_string(int v) {
    return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

/// A failed runtime call as device_error, naming the call. An allocation failure is a
/// std::bad_alloc instead, so that out-of-memory recovery retries the step smaller.
inline void check_cuda(cudaError_t status, const char* call) {
    if (status == cudaSuccess) return;
    if (status == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();  // clear the sticky-free error so the retry starts clean
        throw std::bad_alloc();
    }
    throw device_error(std::string("CUDA: ") + call + " failed: " + cudaGetErrorName(status) + " (" +
                       cudaGetErrorString(status) + ")");
}

inline void check_cublas(cublasStatus_t status, const char* call) {
    if (status == CUBLAS_STATUS_SUCCESS) return;
    if (status == CUBLAS_STATUS_ALLOC_FAILED) throw std::bad_alloc();
    throw device_error(std::string("cuBLAS: ") + call + " failed: " + cublasGetStatusName(status) + " (" +
                       cublasGetStatusString(status) + ")");
}

}  // namespace detail

/// Page-locked host memory as a standard allocator, for the tensors batches are kept in: the
/// cuda policy copies a batch from such memory to the GPU directly, and the GPU checks it for
/// non-finite values, instead of the host copying it into staging first (PyTorch's
/// pin_memory()). Throws std::bad_alloc when the memory cannot be had, device_error when there
/// is no usable driver.
template <class T>
struct pinned_allocator {
    /// What it allocates.
    using value_type = T;
    /// Allocators hold nothing: every one allocates from the same pinned heap.
    pinned_allocator() noexcept = default;
    /// From an allocator of another type: all of them share the one pinned heap.
    template <class U>
    pinned_allocator(const pinned_allocator<U>&) noexcept {}  // NOLINT: converting, as allocators are
    /// Room for n objects in page-locked memory (cudaMallocHost).
    T* allocate(std::size_t n) {
        if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
        void* p = nullptr;
        detail::check_cuda(cudaMallocHost(&p, n * sizeof(T)), "cudaMallocHost");
        return static_cast<T*>(p);
    }
    /// Returns memory that allocate() gave.
    void deallocate(T* p, std::size_t) noexcept { (void)cudaFreeHost(p); }
};
/// Any two can free each other's memory.
template <class T, class U>
bool operator==(const pinned_allocator<T>&, const pinned_allocator<U>&) noexcept {
    return true;
}

/// A row-major xtensor in pinned memory: `bw::pinned_tensor<float, 2> x = xt::zeros<float>({n, 784});`
template <class T, std::size_t N>
using pinned_tensor = xt::xtensor<T, N, xt::layout_type::row_major, pinned_allocator<T>>;

namespace detail {

/// Why this process cannot use a GPU, or an empty string when it can: no driver, a driver older
/// than the runtime the program was built with, no device, or a device the program has no code
/// for. Checked before anything is allocated, because without a driver the first allocation
/// fails deep inside Thrust.
inline std::string cuda_unusable_reason() {
    int driver = 0;
    int runtime = 0;
    (void)cudaRuntimeGetVersion(&runtime);
    if (cudaDriverGetVersion(&driver) != cudaSuccess || driver == 0) {
        (void)cudaGetLastError();
        return "no NVIDIA driver is installed (libcuda could not be loaded); this program needs a GPU "
               "with a driver for CUDA " + cuda_version_string(runtime) + " or newer";
    }
    if (driver < runtime) {
        return "the NVIDIA driver is too old: it supports CUDA " + cuda_version_string(driver) +
               " but this program was built with CUDA " + cuda_version_string(runtime) + "; update the driver";
    }
    int count = 0;
    const cudaError_t counted = cudaGetDeviceCount(&count);
    if (counted != cudaSuccess || count == 0) {
        (void)cudaGetLastError();
        return std::string("no CUDA device is available") +
               (counted != cudaSuccess ? std::string(" (") + cudaGetErrorName(counted) + ": " +
                                             cudaGetErrorString(counted) + ")"
                                       : std::string(" (the driver sees none; check CUDA_VISIBLE_DEVICES)"));
    }
    return {};
}

}  // namespace detail

}  // namespace batchwise
