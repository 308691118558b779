// The Dense layer's fused GEMMs on the GPU: cuBLASLt with epilogues, y = act(x W + b) in the
// forward GEMM (BIAS, RELU_BIAS) and the bias gradient in the weight-gradient GEMM (BGRADA).
// Compiled by nvcc only, as part of <batchwise/exec/cuda.hpp>.
#pragma once

#if !defined(__CUDACC__)
#error "<batchwise/exec/cuda_lt_gemm.hpp> is compiled by nvcc; on the host use cpu_blas or thrust_host"
#endif

#include <cstddef>
#include <cstdint>
#include <vector>

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "batchwise/exec/cuda_runtime.hpp"
#include "batchwise/exec/dense_epilogue.hpp"
#include "batchwise/exec/matrix_view.hpp"

namespace batchwise {

namespace detail {

/// Note [row-major Dense under cuBLASLt]. cuBLASLt is column-major; a row-major (r x c) matrix
/// is the column-major (c x r) one with leading dimension c, so nothing is copied:
///  - forward, Y (M x N) = X (M x K) W (K x N) + b: column-major Y^T = W^T X^T, so the GEMM is
///    m = N, n = M, k = K with A = W (N x K, ld N) and B = X (K x M, ld K), both untransposed.
///    The epilogue's bias runs along the rows of D = Y^T, one value per unit: BIAS.
///  - weight gradient, dW (K x N) = X^T dY: column-major dW^T = dY^T X, so m = N, n = K, k = M
///    with A = dY (N x M, ld N) and B = X stored (K x M, ld K) and transposed. The bias gradient,
///    the sum of dY over the samples, is A summed over k: BGRADA.
///  - input gradient, dX (M x K) = dY (M x N) W^T: column-major dX^T = W dY^T, so m = K, n = M,
///    k = N with A = W stored (N x K, ld N) and transposed and B = dY (N x M, ld N). D = dX^T has
///    the shape of the D of the forward GEMM before the ReLU (its units by the samples), so the
///    ReLU bit mask that forward wrote (RELU_AUX_BIAS, one column of whole 128-bit words per
///    sample) is the one DRELU reads here.
enum class lt_gemm { forward_none, forward_relu, forward_relu_mask, weight_grad, input_grad_drelu };

/// Bits of one sample's column of a ReLU bit mask over `units` outputs: cuBLASLt's leading
/// dimension of the mask, a multiple of 128 (CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD).
constexpr std::int64_t lt_relu_mask_ld(std::size_t units) {
    return static_cast<std::int64_t>((units + 127) / 128 * 128);
}

/// One GEMM shape with its epilogue, planned once: the descriptors and the algorithm cuBLASLt's
/// heuristic chose. Alignments are part of the shape, since the heuristic assumes them.
struct lt_plan_key {
    lt_gemm kind;
    bool bias;
    bool tf32;
    int m, n, k;
    std::uint16_t align_a, align_b, align_d, align_bias;
    bool operator==(const lt_plan_key&) const = default;
};

struct lt_plan {
    lt_plan_key key;
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
    /// False when cuBLASLt offers no algorithm (or refused one): the unfused calls run instead.
    bool usable = false;
};

/// The largest power of two up to 256 that divides the address: what cuBLASLt's heuristic must
/// assume of a pointer (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES).
inline std::uint16_t lt_alignment(const void* p) {
    const auto v = reinterpret_cast<std::uintptr_t>(p);
    std::uint16_t a = 256;
    while (a > 1 && v % a != 0) a = static_cast<std::uint16_t>(a / 2);
    return a;
}

/// Where a GEMM runs: the compute stream and cuda_context's cuBLAS workspace, with TF32 or not.
struct lt_launch {
    bool tf32;
    cudaStream_t stream;
    void* workspace;
    std::size_t workspace_bytes;
};

/// The plan key of the GEMM `kind`, D (m x n) = op(A) op(B) over k, from its operands' addresses
/// (their alignments) and its bias, if any.
inline lt_plan_key lt_key(lt_gemm kind, const lt_launch& l, std::size_t m, std::size_t n, std::size_t k,
                          const void* a, const void* b, const void* d, const void* bias) {
    return {.kind = kind,
            .bias = bias != nullptr,
            .tf32 = l.tf32,
            .m = static_cast<int>(m),
            .n = static_cast<int>(n),
            .k = static_cast<int>(k),
            .align_a = lt_alignment(a),
            .align_b = lt_alignment(b),
            .align_d = lt_alignment(d),
            .align_bias = bias != nullptr ? lt_alignment(bias) : std::uint16_t{0}};
}

/// The process's cuBLASLt handle and plans. The workspace is cuda_context's cuBLAS workspace:
/// both libraries run on the one compute stream, one call at a time, and a captured step may
/// not allocate one.
class cublaslt_gemms {
public:
    static cublaslt_gemms& get() {
        static cublaslt_gemms g;
        return g;
    }

    /// Runs the GEMM of `key` (a plan made on first use); false, having queued nothing, when
    /// cuBLASLt cannot run it. `aux` is the ReLU bit mask of the kinds that write or read one.
    bool run(const lt_plan_key& key, const float* a, const float* b, float* d, const void* bias, const lt_launch& l,
             const void* aux = nullptr) {
        lt_plan* p = plan(key, l.workspace_bytes);
        if (p == nullptr || !p->usable) return false;
        if (key.bias &&
            cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)) !=
                CUBLAS_STATUS_SUCCESS) {
            return false;
        }
        if (uses_mask(key.kind) &&
            cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)) !=
                CUBLAS_STATUS_SUCCESS) {
            return false;
        }
        const float alpha = 1.0f;
        const float beta = 0.0f;
        const cublasStatus_t s = cublasLtMatmul(handle_, p->desc, &alpha, a, p->a, b, p->b, &beta, d, p->d, d, p->d,
                                                &p->algo, l.workspace, l.workspace_bytes, l.stream);
        if (s == CUBLAS_STATUS_SUCCESS) return true;
        // Refused at launch (nothing was queued): this shape takes the unfused calls from now on.
        p->usable = false;
        return false;
    }

    cublaslt_gemms(const cublaslt_gemms&) = delete;
    cublaslt_gemms& operator=(const cublaslt_gemms&) = delete;

private:
    cublaslt_gemms() { check_cublas(cublasLtCreate(&handle_), "cublasLtCreate"); }
    // Destroyed at exit, when the driver may already be shutting down: errors are ignored.
    ~cublaslt_gemms() {
        for (lt_plan& p : plans_) release(p);
        if (handle_ != nullptr) (void)cublasLtDestroy(handle_);
    }

    static bool uses_mask(lt_gemm kind) {
        return kind == lt_gemm::forward_relu_mask || kind == lt_gemm::input_grad_drelu;
    }

    static void release(lt_plan& p) {
        if (p.d != nullptr) (void)cublasLtMatrixLayoutDestroy(p.d);
        if (p.b != nullptr) (void)cublasLtMatrixLayoutDestroy(p.b);
        if (p.a != nullptr) (void)cublasLtMatrixLayoutDestroy(p.a);
        if (p.desc != nullptr) (void)cublasLtMatmulDescDestroy(p.desc);
    }

    lt_plan* plan(const lt_plan_key& key, std::size_t workspace_bytes) {
        for (lt_plan& p : plans_) {
            if (p.key == key) return &p;
        }
        lt_plan p{.key = key};
        p.usable = make(p, workspace_bytes);
        if (!p.usable) {
            release(p);
            p = lt_plan{.key = key};
        }
        plans_.push_back(p);
        return &plans_.back();
    }

    bool make(lt_plan& p, std::size_t workspace_bytes) {
        const lt_plan_key& k = p.key;
        const bool weight_grad = k.kind == lt_gemm::weight_grad;
        const bool input_grad = k.kind == lt_gemm::input_grad_drelu;
        const cublasComputeType_t compute = k.tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
        if (cublasLtMatmulDescCreate(&p.desc, compute, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) return false;
        const cublasOperation_t op_a = input_grad ? CUBLAS_OP_T : CUBLAS_OP_N;
        const cublasOperation_t op_b = weight_grad ? CUBLAS_OP_T : CUBLAS_OP_N;
        cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
        if (weight_grad) {
            epilogue = k.bias ? CUBLASLT_EPILOGUE_BGRADA : CUBLASLT_EPILOGUE_DEFAULT;
        } else if (input_grad) {
            epilogue = CUBLASLT_EPILOGUE_DRELU;
        } else if (k.kind == lt_gemm::forward_relu) {
            epilogue = k.bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU;
        } else if (k.kind == lt_gemm::forward_relu_mask) {
            epilogue = k.bias ? CUBLASLT_EPILOGUE_RELU_AUX_BIAS : CUBLASLT_EPILOGUE_RELU_AUX;
        } else {
            epilogue = k.bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
        }
        if (uses_mask(k.kind)) {
            const std::int64_t ld = lt_relu_mask_ld(static_cast<std::size_t>(k.m));
            // The heuristic reads the mask's alignment from the descriptor: masks are buffers of
            // their own, allocated whole (256-byte aligned); a stand-in address says so.
            void* aligned_like_mask = reinterpret_cast<void*>(std::uintptr_t{256});
            if (cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof(ld)) !=
                    CUBLAS_STATUS_SUCCESS ||
                cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aligned_like_mask,
                                               sizeof(aligned_like_mask)) != CUBLAS_STATUS_SUCCESS) {
                return false;
            }
        }
        if (cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)) !=
                CUBLAS_STATUS_SUCCESS ||
            cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)) !=
                CUBLAS_STATUS_SUCCESS ||
            cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)) !=
                CUBLAS_STATUS_SUCCESS) {
            return false;
        }
        if (k.bias) {
            const cudaDataType_t bias_type = CUDA_R_32F;
            if (cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                               sizeof(bias_type)) != CUBLAS_STATUS_SUCCESS) {
                return false;
            }
        }
        // Stored shapes (column-major rows x cols, ld = rows): Note [row-major Dense under cuBLASLt].
        const auto rows_a = static_cast<std::uint64_t>(input_grad ? k.k : k.m);
        const auto cols_a = static_cast<std::uint64_t>(input_grad ? k.m : k.k);
        const auto rows_b = static_cast<std::uint64_t>(weight_grad ? k.n : k.k);
        const auto cols_b = static_cast<std::uint64_t>(weight_grad ? k.k : k.n);
        if (cublasLtMatrixLayoutCreate(&p.a, CUDA_R_32F, rows_a, cols_a, static_cast<std::int64_t>(rows_a)) !=
                CUBLAS_STATUS_SUCCESS ||
            cublasLtMatrixLayoutCreate(&p.b, CUDA_R_32F, rows_b, cols_b, static_cast<std::int64_t>(rows_b)) !=
                CUBLAS_STATUS_SUCCESS ||
            cublasLtMatrixLayoutCreate(&p.d, CUDA_R_32F, static_cast<std::uint64_t>(k.m),
                                       static_cast<std::uint64_t>(k.n), k.m) != CUBLAS_STATUS_SUCCESS) {
            return false;
        }

        cublasLtMatmulPreference_t pref = nullptr;
        if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS) return false;
        const std::uint32_t align_a = k.align_a;
        const std::uint32_t align_b = k.align_b;
        const std::uint32_t align_d = k.align_d;
        const bool set = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                              &workspace_bytes, sizeof(workspace_bytes)) ==
                             CUBLAS_STATUS_SUCCESS &&
                         cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                              &align_a, sizeof(align_a)) == CUBLAS_STATUS_SUCCESS &&
                         cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                              &align_b, sizeof(align_b)) == CUBLAS_STATUS_SUCCESS &&
                         cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                              &align_d, sizeof(align_d)) == CUBLAS_STATUS_SUCCESS &&
                         cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                              &align_d, sizeof(align_d)) == CUBLAS_STATUS_SUCCESS;
        // The heuristic reads the bias pointer's alignment from the descriptor: an address with
        // the alignment of the real one stands in for it.
        void* aligned_like_bias = reinterpret_cast<void*>(static_cast<std::uintptr_t>(k.align_bias));
        const bool bias_set = !k.bias || cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                                        &aligned_like_bias,
                                                                        sizeof(aligned_like_bias)) ==
                                             CUBLAS_STATUS_SUCCESS;
        cublasLtMatmulHeuristicResult_t result{};
        int found = 0;
        const bool ok = set && bias_set &&
                        cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.d, p.d, pref, 1, &result,
                                                       &found) == CUBLAS_STATUS_SUCCESS &&
                        found > 0 && result.state == CUBLAS_STATUS_SUCCESS &&
                        result.workspaceSize <= workspace_bytes;
        (void)cublasLtMatmulPreferenceDestroy(pref);
        if (ok) p.algo = result.algo;
        return ok;
    }

    cublasLtHandle_t handle_ = nullptr;
    // A handful of shapes per network (one per Dense and batch size): a linear search is enough,
    // and after the first step at a batch size nothing is allocated.
    std::vector<lt_plan> plans_;
};

/// y = Fn(x w + bias) through cuBLASLt, for activations with an epilogue, and where `mask` is
/// given, Fn's ReLU bit mask into it: 2 when y and the mask were written, 1 when y alone (no
/// algorithm writes the mask for this shape), 0 when nothing was queued.
template <class Fn>
int lt_dense_forward(const_matrix_view x, const_matrix_view w, const float* bias, matrix_view y, void* mask,
                     const lt_launch& l) {
    if (x.rows == 0 || x.cols == 0 || y.cols == 0) return 0;
    constexpr bool relu = Fn::epilogue == epilogue_activation::relu;
    cublaslt_gemms& gemms = cublaslt_gemms::get();
    const auto key = [&](lt_gemm kind) { return lt_key(kind, l, y.cols, y.rows, x.cols, w.data, x.data, y.data, bias); };
    if (relu && mask != nullptr &&
        gemms.run(key(lt_gemm::forward_relu_mask), w.data, x.data, y.data, bias, l, mask)) {
        return 2;
    }
    return gemms.run(key(relu ? lt_gemm::forward_relu : lt_gemm::forward_none), w.data, x.data, y.data, bias, l) ? 1
                                                                                                                 : 0;
}

/// dx = (dy w^T) with the ReLU gradient of `mask` applied (DRELU) through cuBLASLt; false when
/// it cannot.
inline bool lt_dense_input_grad_drelu(const_matrix_view dy, const_matrix_view w, const void* mask, matrix_view dx,
                                      const lt_launch& l) {
    if (dx.rows == 0 || dx.cols == 0 || dy.cols == 0) return false;
    return cublaslt_gemms::get().run(
        lt_key(lt_gemm::input_grad_drelu, l, dx.cols, dx.rows, dy.cols, w.data, dy.data, dx.data, nullptr), w.data,
        dy.data, dx.data, nullptr, l, mask);
}

/// dw = x^T dy and bias_grad = the column sums of dy through cuBLASLt; false when it cannot.
inline bool lt_dense_weight_grad(const_matrix_view x, const_matrix_view dy, matrix_view dw, float* bias_grad,
                                 const lt_launch& l) {
    if (x.rows == 0 || dw.rows == 0 || dw.cols == 0) return false;
    return cublaslt_gemms::get().run(
        lt_key(lt_gemm::weight_grad, l, dw.cols, dw.rows, x.rows, dy.data, x.data, dw.data, bias_grad), dy.data,
        x.data, dw.data, bias_grad, l);
}

}  // namespace detail

}  // namespace batchwise
