// The CPU execution policy: storage in xtensor containers, GEMM through xtensor-blas's cxxblas
// onto OpenBLAS, element-wise work as plain loops the compiler vectorises.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <string_view>
#include <vector>

#include "batchwise/core/xtensor.hpp"
#include "batchwise/exec/matrix_view.hpp"

// cxxblas is xtensor-blas's raw-pointer BLAS layer; with HAVE_CBLAS it calls cblas_sgemm. The
// system <cblas.h> must never be included beside it: both declare the cblas_* functions.
// cxxblas is not self-contained: it uses std::complex and <type_traits> without including them.
#include <complex>
#include <type_traits>
#include <xtensor-blas/xblas_config.hpp>
#include <xflens/cxxblas/cxxblas.cxx>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

// OpenBLAS reports the kernel it picked. Declared weak so that a program linked against another
// BLAS still links; the pointer is then null and no check is made.
extern "C" char* openblas_get_corename(void) __attribute__((weak));
extern "C" int openblas_get_num_threads(void) __attribute__((weak));

namespace batchwise {

namespace detail {

/// True when OpenBLAS runs a kernel far slower than this CPU allows (Debian's 0.3.21 picks
/// "Prescott" on AVX-512 machines unless OPENBLAS_CORETYPE is set before the program starts).
inline bool openblas_kernel_is_slow(std::string_view corename, bool cpu_has_avx512) {
    if (!cpu_has_avx512) return false;
    for (std::string_view fast : {"SkylakeX", "skylakex", "Cooperlake", "cooperlake",
                                  "SapphireRapids", "sapphirerapids"}) {
        if (corename.find(fast) != std::string_view::npos) return false;
    }
    return true;
}

inline bool cpu_has_avx512() {
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("avx512f");
#else
    return false;
#endif
}

/// Prints one warning per process when the slow kernel is in use; the fix has to happen before
/// the program starts, so the message says how.
inline void warn_if_slow_blas_kernel() {
    static const bool once = [] {
        if (openblas_get_corename == nullptr) return false;
        const char* name = openblas_get_corename();
        if (name != nullptr && openblas_kernel_is_slow(name, cpu_has_avx512())) {
            std::fprintf(stderr,
                         "batchwise: warning: OpenBLAS is using its '%s' kernel on a CPU with "
                         "AVX-512; SGEMM runs several times slower than it could. Set "
                         "OPENBLAS_CORETYPE=SkylakeX in the environment before starting the "
                         "program.\n",
                         name);
            return true;
        }
        return false;
    }();
    (void)once;
}

/// Multithreaded OpenBLAS (Debian's build) mallocs and frees a 512 KiB job array in every
/// threaded GEMM call. With glibc's default thresholds that memory goes back to the kernel at
/// each free and is faulted in again at the next call, which halves mlp-bench's throughput at
/// batch 32 on 2 threads (69.7k against 153k samples/s measured). Raising the thresholds once
/// keeps freed memory for reuse. Skipped when the user has chosen thresholds
/// (MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_) or set BATCHWISE_KEEP_MALLOC_SETTINGS.
inline void keep_freed_memory_for_reuse() {
#if defined(__GLIBC__)
    static const bool once = [] {
        if (std::getenv("MALLOC_TRIM_THRESHOLD_") != nullptr || std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr ||
            std::getenv("BATCHWISE_KEEP_MALLOC_SETTINGS") != nullptr) {
            return false;
        }
        mallopt(M_MMAP_THRESHOLD, 16 << 20);
        mallopt(M_TRIM_THRESHOLD, 256 << 20);
        return true;
    }();
    (void)once;
#endif
}

/// OpenBLAS maps a work buffer for each of its threads the first time that thread computes a
/// GEMM, and when the mapping fails it retries for ever: under an address-space limit
/// (`ulimit -v`, a container's) a process that ran out of memory hung inside cblas_sgemm, and
/// out-of-memory recovery never ran. One GEMM large enough to engage every thread, before the
/// model allocates anything, maps those buffers while memory is there; OpenBLAS keeps and reuses
/// them. With keep_freed_memory_for_reuse, which keeps the job array that each threaded GEMM
/// mallocs, the allocation that fails first is then the model's own, a std::bad_alloc that
/// splits the step. Costs one GEMM of 4 MFLOP per thread, once per process.
inline void map_blas_buffers() {
    static const bool once = [] {
        const int threads = openblas_get_num_threads != nullptr ? std::max(openblas_get_num_threads(), 1) : 1;
        // OpenBLAS divides a GEMM's rows among its threads once there are enough of them.
        const int m = 256 * threads, n = 256, k = 32;
        std::vector<float> a(static_cast<std::size_t>(m) * k, 0.0f), b(static_cast<std::size_t>(k) * n, 0.0f),
            c(static_cast<std::size_t>(m) * n);
        cxxblas::gemm(cxxblas::RowMajor, cxxblas::NoTrans, cxxblas::NoTrans, m, n, k, 1.0f, a.data(), k, b.data(), n,
                      0.0f, c.data(), n);
        return true;
    }();
    (void)once;
}

}  // namespace detail

/// Execution policy running on the host CPU with OpenBLAS.
struct cpu_blas {
    /// The policy's name in summaries and messages.
    static constexpr std::string_view name = "cpu_blas";
    /// Buffers live in host memory: the model stages batches straight into them.
    static constexpr bool host_memory = true;

    /// Owning storage for parameters, activations and gradients.
    using vector = xt::xtensor<float, 1>;

    /// Called once when a model is built on this policy.
    static void prepare() {
        detail::warn_if_slow_blas_kernel();
        detail::keep_freed_memory_for_reuse();
        detail::map_blas_buffers();
    }

    /// Memory the model keeps free beside its buffers when they grow: each threaded OpenBLAS GEMM
    /// mallocs a job array (512 KiB in Debian's build) and exits the process when it cannot.
    /// With keep_freed_memory_for_reuse the released probe stays in the heap for it.
    static constexpr std::size_t headroom_bytes = std::size_t{1} << 20;
    /// Throws std::bad_alloc unless `bytes` can be had at once; they are released again. The
    /// model asks for the whole growth of its buffers before growing any of them: a failure half
    /// way would leave some grown, holding memory that the smaller retry needs. The bytes are
    /// asked for in up to 64 pieces, as the buffers themselves are many: one block of the sum
    /// could fail where the buffers would fit.
    static void require_free_memory(std::size_t bytes) {
        constexpr std::size_t max_pieces = 64;
        const std::size_t piece = std::max<std::size_t>((bytes + max_pieces - 1) / max_pieces, 1);
        std::array<void*, max_pieces> held{};
        std::size_t taken = 0;
        bool failed = false;
        for (std::size_t asked = 0; asked < bytes && !failed; asked += piece) {
            held[taken] = std::malloc(std::min(piece, bytes - asked));
            failed = held[taken] == nullptr;
            // Escapes the pointer: a malloc whose result is only tested and freed may be
            // removed by the compiler, and with it the check.
            asm volatile("" : : "r"(held[taken]) : "memory");
            if (!failed) ++taken;
        }
        for (std::size_t i = 0; i < taken; ++i) std::free(held[i]);
        if (failed) throw std::bad_alloc();
    }

    /// Storage for double-precision gradient accumulators (accumulate<K, double>).
    using double_vector = xt::xtensor<double, 1>;

    /// Grows `v` to at least `n` elements; never shrinks, so a later smaller batch reuses it.
    static void reserve(vector& v, std::size_t n) {
        if (v.size() < n) v.resize({n});
    }
    /// The same for double accumulators.
    static void reserve(double_vector& v, std::size_t n) {
        if (v.size() < n) v.resize({n});
    }
    /// The first element of an accumulator.
    static double* data(double_vector& v) { return v.data(); }
    /// The first element, for views and raw loops.
    static float* data(vector& v) { return v.data(); }
    /// The first element, read-only.
    static const float* data(const vector& v) { return v.data(); }
    /// Elements held (at least as many as reserved).
    static std::size_t size(const vector& v) { return v.size(); }

    /// C = alpha * op(A) * op(B) + beta * C, all row-major.
    static void gemm(transpose ta, transpose tb, float alpha, const_matrix_view a,
                     const_matrix_view b, float beta, matrix_view c) {
        const auto m = static_cast<int>(c.rows);
        const auto n = static_cast<int>(c.cols);
        const auto k = static_cast<int>(ta == transpose::yes ? a.rows : a.cols);
        if (m == 0 || n == 0) return;
        cxxblas::gemm(cxxblas::RowMajor, ta == transpose::yes ? cxxblas::Trans : cxxblas::NoTrans,
                      tb == transpose::yes ? cxxblas::Trans : cxxblas::NoTrans, m, n, k, alpha,
                      a.data, static_cast<int>(a.cols), b.data, static_cast<int>(b.cols), beta,
                      c.data, n);
    }

    /// Calls f(i) for every i in [0, n). The Thrust policy runs the same functor on the device.
    template <class F>
    static void for_each(std::size_t n, const F& f) {
        // Functors are index-parallel by contract (Thrust runs them in any order, at once), so no
        // iteration depends on another: telling GCC lets it vectorise loops over pointers it
        // would otherwise have to assume alias. clang vectorises behind a run-time overlap check
        // instead, and its own spelling of the promise warns wherever the vectoriser is off (-O1).
#if !defined(__clang__)
#pragma GCC ivdep
#endif
        for (std::size_t i = 0; i < n; ++i) f(i);
    }

    /// out[j] = beta * out[j] + sum_i a(i, j): bias and batch-norm parameter gradients.
    static void column_sums(const_matrix_view a, float* out, float beta) {
        if (beta == 0.0f) {
            std::memset(out, 0, a.cols * sizeof(float));
        } else if (beta != 1.0f) {
            for (std::size_t j = 0; j < a.cols; ++j) out[j] *= beta;
        }
        for (std::size_t i = 0; i < a.rows; ++i) {
            const float* row = a.data + i * a.cols;
            for (std::size_t j = 0; j < a.cols; ++j) out[j] += row[j];
        }
    }

    /// Sum of n floats in double, returned to the host (losses and metrics).
    static double sum(const float* p, std::size_t n) {
        double s = 0.0;
        for (std::size_t i = 0; i < n; ++i) s += p[i];
        return s;
    }

    /// Sets n floats at p to value.
    static void fill(float* p, std::size_t n, float value) {
        for (std::size_t i = 0; i < n; ++i) p[i] = value;
    }
    /// Copies n floats; the two ranges may overlap.
    static void copy(const float* src, std::size_t n, float* dst) {
        if (n != 0 && src != dst) std::memmove(dst, src, n * sizeof(float));
    }
    /// Policy memory to host memory: a plain copy here, where the two are one.
    static void to_host(const float* src, std::size_t n, float* host_dst) { copy(src, n, host_dst); }
    /// Host memory to policy memory: a plain copy here.
    static void from_host(const float* host_src, std::size_t n, float* dst) {
        copy(host_src, n, dst);
    }
};

}  // namespace batchwise
