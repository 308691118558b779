// An execution policy written to the ExecutionPolicy concept and nothing more: no host_memory,
// no double_vector, no pinned memory, no device check, no step capture. It computes through
// cpu_blas. tests/core/core.cpp trains with it; compile_fail/double_accumulator_policy.cpp asks
// it for double accumulators it cannot hold.
#pragma once

#include <batchwise/batchwise.hpp>

#include <cstddef>
#include <string_view>

namespace bw_test {

struct concept_only {
    static constexpr std::string_view name = "concept_only";
    using vector = batchwise::cpu_blas::vector;
    static void prepare() {}
    static void reserve(vector& v, std::size_t n) { batchwise::cpu_blas::reserve(v, n); }
    static float* data(vector& v) { return v.data(); }
    static const float* data(const vector& v) { return v.data(); }
    static std::size_t size(const vector& v) { return v.size(); }
    static void gemm(batchwise::transpose ta, batchwise::transpose tb, float alpha, batchwise::const_matrix_view a,
                     batchwise::const_matrix_view b, float beta, batchwise::matrix_view c) {
        batchwise::cpu_blas::gemm(ta, tb, alpha, a, b, beta, c);
    }
    template <class F>
    static void for_each(std::size_t n, const F& f) {
        batchwise::cpu_blas::for_each(n, f);
    }
    static void column_sums(batchwise::const_matrix_view a, float* out, float beta) {
        batchwise::cpu_blas::column_sums(a, out, beta);
    }
    static double sum(const float* p, std::size_t n) { return batchwise::cpu_blas::sum(p, n); }
    static void fill(float* p, std::size_t n, float v) { batchwise::cpu_blas::fill(p, n, v); }
    static void copy(const float* s, std::size_t n, float* d) { batchwise::cpu_blas::copy(s, n, d); }
    static void to_host(const float* s, std::size_t n, float* d) { batchwise::cpu_blas::copy(s, n, d); }
    static void from_host(const float* s, std::size_t n, float* d) { batchwise::cpu_blas::copy(s, n, d); }
};

}  // namespace bw_test
