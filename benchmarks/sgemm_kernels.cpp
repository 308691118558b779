// SGEMM throughput of the OpenBLAS kernel this process loaded: the ceiling of every CPU figure,
// and the evidence for choosing OPENBLAS_CORETYPE. Run once per kernel by sgemm_kernels.sh.
#include <batchwise/exec/cpu_blas.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

int main() {
    const char* core = openblas_get_corename != nullptr ? openblas_get_corename() : "unknown";
    for (int n : {128, 512, 1024}) {
        std::vector<float> a(static_cast<std::size_t>(n) * n, 1.0f), b(a), c(a.size());
        const batchwise::const_matrix_view av{a.data(), std::size_t(n), std::size_t(n)};
        const batchwise::const_matrix_view bv{b.data(), std::size_t(n), std::size_t(n)};
        const batchwise::matrix_view cv{c.data(), std::size_t(n), std::size_t(n)};
        const int reps = std::max(3, static_cast<int>(2e9 / (2.0 * n * n * n)));
        std::vector<double> rates;
        for (int trial = 0; trial < 4; ++trial) {  // the first is the warm-up
            const auto t0 = std::chrono::steady_clock::now();
            for (int r = 0; r < reps; ++r) {
                batchwise::cpu_blas::gemm(batchwise::transpose::no, batchwise::transpose::no, 1.0f,
                                          av, bv, 0.0f, cv);
            }
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (trial > 0) rates.push_back(2.0 * n * n * n * reps / s / 1e9);
        }
        std::sort(rates.begin(), rates.end());
        std::printf("kernel %-10s n=%-5d median %.1f GFLOP/s (min %.1f, max %.1f)\n", core, n,
                    rates[1], rates[0], rates[2]);
    }
}
