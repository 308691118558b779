// accumulate<K, double> on a policy that has no storage for doubles (no double_vector).
#include <batchwise/batchwise.hpp>
namespace bw = batchwise;

/// cpu_blas's vocabulary, without double_vector.
struct float_only {
    static constexpr std::string_view name = "float_only";
    using vector = bw::cpu_blas::vector;
    static void prepare() {}
    static void reserve(vector& v, std::size_t n) { bw::cpu_blas::reserve(v, n); }
    static float* data(vector& v) { return v.data(); }
    static const float* data(const vector& v) { return v.data(); }
    static std::size_t size(const vector& v) { return v.size(); }
    static void gemm(bw::transpose ta, bw::transpose tb, float alpha, bw::const_matrix_view a, bw::const_matrix_view b,
                     float beta, bw::matrix_view c) {
        bw::cpu_blas::gemm(ta, tb, alpha, a, b, beta, c);
    }
    template <class F>
    static void for_each(std::size_t n, const F& f) { bw::cpu_blas::for_each(n, f); }
    static void column_sums(bw::const_matrix_view a, float* out, float beta) { bw::cpu_blas::column_sums(a, out, beta); }
    static double sum(const float* p, std::size_t n) { return bw::cpu_blas::sum(p, n); }
    static void fill(float* p, std::size_t n, float v) { bw::cpu_blas::fill(p, n, v); }
    static void copy(const float* s, std::size_t n, float* d) { bw::cpu_blas::copy(s, n, d); }
    static void to_host(const float* s, std::size_t n, float* d) { bw::cpu_blas::copy(s, n, d); }
    static void from_host(const float* s, std::size_t n, float* d) { bw::cpu_blas::copy(s, n, d); }
};

using Net = bw::Sequential<bw::Input<4>, bw::Dense<2>>;
int main() { bw::Model<Net, bw::dynamic_batch, float_only, bw::accumulate<2, double>> model; }
