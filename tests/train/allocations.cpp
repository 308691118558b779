// Heap behaviour, observed at the malloc level (this binary interposes malloc and friends, so
// operator new, xtensor and OpenBLAS are all seen): DESIGN decision 10, no allocation in the
// steady state; the memory estimate against the measured peak; and recovery from an allocation
// that really fails (std::bad_alloc) by splitting the step.
#include <doctest/doctest.h>

#include <batchwise/batchwise.hpp>
#include <xtensor/xnorm.hpp>

#include <dlfcn.h>
#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "../gradient_check.hpp"
#include "../../examples/fashion_mnist_cnn.hpp"

// AddressSanitizer replaces malloc before main runs, and hooks that call glibc's allocator behind
// its back crash the process before the first test. The sanitizer build (preset sanitize) leaves
// this file's cases out: it looks for memory errors, the release build checks heap behaviour.
#if defined(__SANITIZE_ADDRESS__)
#define BATCHWISE_TEST_UNDER_ASAN
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BATCHWISE_TEST_UNDER_ASAN
#endif
#endif
#if !defined(BATCHWISE_TEST_UNDER_ASAN)

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);
}

namespace {
std::atomic<bool> counting{false};
std::atomic<std::size_t> allocations{0};
// Debian's multithreaded OpenBLAS mallocs a job array (512 KiB in its build) in every threaded
// GEMM call and exits the process if that fails. Those allocations are the BLAS's, not the
// library's: they are counted apart, by the shared object the caller of malloc belongs to.
std::atomic<std::size_t> blas_allocations{0};
// The NVIDIA driver (libcuda) now and then mallocs for its own bookkeeping during a stream
// synchronisation or a launch: once in 6 steady steps in 1 of 9 runs on an H100. Those are
// counted apart too; a test requires fewer of them than steps, which catches an allocation in
// every step (a reduction's temporary storage, say) without failing on the driver's own.
std::atomic<std::size_t> driver_allocations{0};

bool called_from_driver(void* return_address) {
    Dl_info info{};
    return dladdr(return_address, &info) != 0 && info.dli_fname != nullptr &&
           std::strstr(info.dli_fname, "libcuda.so") != nullptr;
}

bool called_from_openblas(void* return_address) {
    static const void* const blas_base = [] {
        Dl_info info{};
        if (openblas_get_corename == nullptr ||
            dladdr(reinterpret_cast<void*>(openblas_get_corename), &info) == 0) {
            return static_cast<void*>(nullptr);
        }
        return info.dli_fbase;
    }();
    Dl_info info{};
    return blas_base != nullptr && dladdr(return_address, &info) != 0 && info.dli_fbase == blas_base;
}
// Live and peak heap bytes while `tracking`, from malloc_usable_size.
std::atomic<bool> tracking{false};
std::atomic<long long> live_bytes{0};
std::atomic<long long> peak_bytes{0};
// Allocations larger than this fail (0: none), as they would on a full machine.
std::atomic<std::size_t> fail_above{0};
// The k-th allocation made while armed fails (0: none), and only that one: fault injection at
// every allocation site of a step, one site per run. OpenBLAS's own are not counted (they are
// made before the model's: cpu_blas maps its buffers when a model is built).
std::atomic<std::size_t> fail_nth{0};
std::atomic<std::size_t> seen_while_armed{0};

bool refuse(std::size_t n, void* caller) {
    const std::size_t limit = fail_above.load(std::memory_order_relaxed);
    const std::size_t nth = fail_nth.load(std::memory_order_relaxed);
    if (nth != 0 && !called_from_openblas(caller) && seen_while_armed.fetch_add(1) + 1 == nth) return true;
    return limit != 0 && n > limit && !called_from_openblas(caller);
}
// Which shared objects the counted allocations came from, for the failure message: the loader's
// own strings, kept in a fixed table (nothing may allocate in here).
constexpr std::size_t max_sources = 8;
std::atomic<const char*> source_names[max_sources];
std::atomic<std::size_t> source_counts[max_sources];
void note_source(void* caller) {
    Dl_info info{};
    const char* name = dladdr(caller, &info) != 0 && info.dli_fname != nullptr ? info.dli_fname : "?";
    for (std::size_t i = 0; i < max_sources; ++i) {
        const char* expected = nullptr;
        if (source_names[i].compare_exchange_strong(expected, name) || expected == name) {
            source_counts[i].fetch_add(1, std::memory_order_relaxed);
            return;
        }
    }
}
void* note(void* p, void* caller) {
    if (counting.load(std::memory_order_relaxed)) {
        if (called_from_openblas(caller)) {
            blas_allocations.fetch_add(1, std::memory_order_relaxed);
        } else if (called_from_driver(caller)) {
            driver_allocations.fetch_add(1, std::memory_order_relaxed);
        } else {
            allocations.fetch_add(1, std::memory_order_relaxed);
            note_source(caller);
        }
    }
    if (p != nullptr && tracking.load(std::memory_order_relaxed)) {
        const long long now = live_bytes.fetch_add(static_cast<long long>(malloc_usable_size(p))) +
                              static_cast<long long>(malloc_usable_size(p));
        long long peak = peak_bytes.load();
        while (now > peak && !peak_bytes.compare_exchange_weak(peak, now)) {
        }
    }
    return p;
}
void forget(void* p) {
    if (p != nullptr && tracking.load(std::memory_order_relaxed)) {
        live_bytes.fetch_sub(static_cast<long long>(malloc_usable_size(p)));
    }
}
}  // namespace

// noexcept as glibc declares them (__THROW). nvcc also knows malloc and free as device functions
// and so takes these for __host__ __device__; they are only ever called on the host.
#if defined(__CUDACC__)
#pragma nv_diag_suppress 20011
#endif
extern "C" {
void* malloc(std::size_t n) noexcept {
    void* caller = __builtin_return_address(0);
    return refuse(n, caller) ? nullptr : note(__libc_malloc(n), caller);
}
void* calloc(std::size_t n, std::size_t size) noexcept {
    void* caller = __builtin_return_address(0);
    return refuse(n * size, caller) ? nullptr : note(__libc_calloc(n, size), caller);
}
void* realloc(void* p, std::size_t n) noexcept {
    void* caller = __builtin_return_address(0);
    if (refuse(n, caller)) return nullptr;
    forget(p);
    return note(__libc_realloc(p, n), caller);
}
void free(void* p) noexcept {
    forget(p);
    __libc_free(p);
}
void* aligned_alloc(std::size_t alignment, std::size_t n) noexcept {
    void* caller = __builtin_return_address(0);
    return refuse(n, caller) ? nullptr : note(__libc_memalign(alignment, n), caller);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t n) noexcept {
    void* caller = __builtin_return_address(0);
    *out = refuse(n, caller) ? nullptr : note(__libc_memalign(alignment, n), caller);
    return *out == nullptr ? 12 /* ENOMEM */ : 0;
}
}

namespace bw = batchwise;

namespace {

/// The shared objects whose code called malloc in the last allocations_during, with counts.
std::string allocation_sources() {
    std::string out;
    for (std::size_t i = 0; i < max_sources; ++i) {
        if (const char* name = source_names[i].load()) out += std::string(name) + ": " + std::to_string(source_counts[i].load()) + "; ";
    }
    return out;
}

/// Counts the allocations made while f runs, except those OpenBLAS makes itself.
template <class F>
std::size_t allocations_during(F&& f) {
    allocations = 0;
    blas_allocations = 0;
    driver_allocations = 0;
    for (std::size_t i = 0; i < max_sources; ++i) {
        source_names[i] = nullptr;
        source_counts[i] = 0;
    }
    counting = true;
    f();
    counting = false;
    return allocations.load();
}

template <class Model, class Y>
void check_steady_state(Model& model, std::size_t largest, const std::vector<std::size_t>& sizes,
                        Y make_targets) {
    // Every batch is prepared before counting starts: only the model's own work is measured.
    std::vector<xt::xtensor<float, 2>> xs;
    std::vector<decltype(make_targets(std::size_t{}))> ys;
    for (std::size_t n : sizes) {
        xs.push_back(bw_test::random_matrix(n, Model::in_features, n));
        ys.push_back(make_targets(n));
    }
    const auto big_x = bw_test::random_matrix(largest, Model::in_features, 1);
    const auto big_y = make_targets(largest);

    // The counter does see allocations: the first step at a new largest size must make some.
    CHECK(allocations_during([&] { model.train_on_batch(big_x, big_y); }) > 0);
    // cuBLAS chooses and caches a kernel on the host the first time it meets a GEMM shape: a
    // round over the sizes first, so that what is counted is the steady state.
    if constexpr (!bw_test::buffers_on_heap) {
        for (std::size_t i = 0; i < sizes.size(); ++i) model.train_on_batch(xs[i], ys[i]);
    }
    const std::size_t steady = allocations_during([&] {
        for (int round = 0; round < 3; ++round) {
            for (std::size_t i = 0; i < sizes.size(); ++i) model.train_on_batch(xs[i], ys[i]);
        }
    });
    INFO("allocated from: " << allocation_sources());
    CHECK(steady == 0);
    INFO("the driver's own allocations: " << driver_allocations.load());
    CHECK(driver_allocations.load() < 3 * sizes.size());
}

}  // namespace

TEST_CASE("no heap allocation in steady state: dynamic batch, varying sizes") {
    using Net = bw::Sequential<bw::Input<20>, bw::Dense<32>, bw::BatchNorm, bw::ReLU,
                               bw::Dropout<0.3f>, bw::Dense<16>, bw::Tanh, bw::Dense<5>>;
    bw_test::Model<Net> model{bw::seed{1}};
    model.compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}},
                  bw::metrics::accuracy);
    auto labels = [](std::size_t n) {
        xt::xtensor<int, 1> y = xt::zeros<int>({n});
        for (std::size_t i = 0; i < n; ++i) y(i) = static_cast<int>(i % 5);
        return y;
    };
    check_steady_state(model, 128, {1, 7, 128, 3, 64, 127, 2}, labels);
    CHECK(model.capacity() == 128);
}

TEST_CASE("no heap allocation in steady state: static batch, every optimizer") {
    using Net = bw::Sequential<bw::Input<8>, bw::Dense<16>, bw::Sigmoid, bw::Dense<3>, bw::Softmax>;
    auto one_hot = [](std::size_t n) {
        xt::xtensor<float, 2> y = xt::zeros<float>({n, std::size_t{3}});
        for (std::size_t i = 0; i < n; ++i) y(i, i % 3) = 1.0f;
        return y;
    };
    auto run = [&](auto optimizer) {
        bw_test::Model<Net, bw::static_batch<32>> model{bw::seed{2}};
        model.compile(optimizer, bw::CategoricalCrossentropy{}, bw::metrics::accuracy,
                      bw::metrics::mse);
        // Static buffers are sized at construction, so even the first step allocates nothing,
        // except where the policy captures the step: the first step runs eagerly and the second
        // records the graphs, which is its cost.
        const auto x = bw_test::random_matrix(32, 8, 3);
        const auto y = one_hot(32);
        if constexpr (decltype(model)::can_capture_steps) {
            model.train_on_batch(x, y);
            CHECK_FALSE(model.step_captured());
            model.train_on_batch(x, y);
            CHECK(model.step_captured());
        }
        const std::size_t steady = allocations_during([&] {
            for (int i = 0; i < 5; ++i) model.train_on_batch(x, y);
        });
        INFO("allocated from: " << allocation_sources());
        CHECK(steady == 0);
        INFO("the driver's own allocations: " << driver_allocations.load());
        CHECK(driver_allocations.load() < 5);
    };
    run(bw::SGD{{.momentum = 0.9f, .nesterov = true}});
    run(bw::Adam{{.amsgrad = true}});
    run(bw::AdamW{});
    run(bw::RMSprop{{.momentum = 0.5f, .centered = true}});
}

TEST_CASE("no heap allocation in steady state at mlp-bench size, where OpenBLAS runs threaded") {
    using Net = bw::Sequential<bw::Input<784>, bw::Dense<256>, bw::ReLU, bw::Dropout<0.2f>, bw::Dense<256>, bw::ReLU,
                               bw::Dense<10>>;
    bw_test::Model<Net> model{bw::seed{2}};
    model.compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}}, bw::metrics::accuracy);
    const auto x = bw_test::random_matrix(512, 784, 3, 0.0f, 1.0f);
    xt::xtensor<float, 1> y = xt::zeros<float>({std::size_t{512}});
    for (std::size_t i = 0; i < 512; ++i) y(i) = static_cast<float>(i % 10);
    const xt::xtensor<float, 2> small_x = xt::view(x, xt::range(0, 100));
    const xt::xtensor<float, 1> small_y = xt::view(y, xt::range(0, 100));
    model.train_on_batch(x, y);
    if constexpr (!bw_test::buffers_on_heap) model.train_on_batch(small_x, small_y);  // cuBLAS meets the shape
    const std::size_t steady = allocations_during([&] {
        for (int i = 0; i < 3; ++i) {
            model.train_on_batch(x, y);
            model.train_on_batch(small_x, small_y);
        }
    });
    INFO("allocated from: " << allocation_sources());
    CHECK(steady == 0);
    INFO("the driver's own allocations: " << driver_allocations.load());
    CHECK(driver_allocations.load() < 6);
    MESSAGE("OpenBLAS's own allocations in those 6 steps (threaded GEMM job arrays): " << blas_allocations.load());
}

TEST_CASE("the memory estimate is within 10% of the measured heap peak (mlp-bench, batch 2048)") {
    if constexpr (!bw_test::buffers_on_heap) {
        MESSAGE("skipped: the policy's buffers are device memory, which the malloc hooks do not see");
        return;
    }
    using Net = bw::Sequential<bw::Input<784>, bw::Dense<256>, bw::ReLU, bw::Dense<256>, bw::ReLU, bw::Dense<10>>;
    using M = bw_test::Model<Net>;
    // The data exists before measuring starts: it is the caller's, not the model's.
    const auto x = bw_test::random_matrix(2048, 784, 1, 0.0f, 1.0f);
    xt::xtensor<float, 1> y = xt::zeros<float>({std::size_t{2048}});
    for (std::size_t i = 0; i < 2048; ++i) y(i) = static_cast<float>(i % 10);

    live_bytes = 0;
    peak_bytes = 0;
    tracking = true;
    double measured = 0.0;
    {
        M model{bw::seed{1}};
        model.compile(bw::SGD{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
        model.train_on_batch(x, y);
        model.train_on_batch(x, y);
        measured = static_cast<double>(peak_bytes.load());
    }
    tracking = false;
    const double estimate = static_cast<double>(M::estimate_memory(2048, 0).total_bytes());
    MESSAGE("mlp-bench at batch 2048: estimate " << estimate / 1e6 << " MB, measured heap peak " << measured / 1e6
                                                 << " MB (ratio " << estimate / measured << ")");
    CHECK(estimate >= 0.9 * measured);
    CHECK(estimate <= 1.1 * measured);
}

namespace {
/// Fashion-MNIST-shaped images and labels, made before any counting starts.
struct image_batch {
    xt::xtensor<float, 3> x;
    xt::xtensor<float, 1> y;
    explicit image_batch(std::size_t n) : x(xt::xtensor<float, 3>::from_shape({n, 28, 28})), y(xt::zeros<float>({n})) {
        const auto flat = bw_test::random_matrix(n, 784, n, 0.0f, 1.0f);
        std::copy(flat.begin(), flat.end(), x.begin());
        for (std::size_t i = 0; i < n; ++i) y(i) = static_cast<float>(i % 10);
    }
};
}  // namespace

TEST_CASE("no heap allocation in steady state: the Fashion-MNIST CNN's window matrices are reserved once") {
    bw_test::Model<example::fashion_mnist_cnn> model{bw::seed{3}};
    model.compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}}, bw::metrics::accuracy);
    const image_batch big(64), small(7), one(1);
    CHECK(allocations_during([&] { model.train_on_batch(big.x, big.y); }) > 0);
    if constexpr (!bw_test::buffers_on_heap) {
        model.train_on_batch(small.x, small.y);
        model.train_on_batch(one.x, one.y);
    }
    const std::size_t steady = allocations_during([&] {
        for (int round = 0; round < 2; ++round) {
            model.train_on_batch(small.x, small.y);
            model.train_on_batch(big.x, big.y);
            model.train_on_batch(one.x, one.y);
        }
    });
    INFO("allocated from: " << allocation_sources());
    CHECK(steady == 0);
}

TEST_CASE("the memory estimate is within 10% of the measured heap peak (the Fashion-MNIST CNN, batch 256)") {
    if constexpr (!bw_test::buffers_on_heap) {
        MESSAGE("skipped: the policy's buffers are device memory, which the malloc hooks do not see");
        return;
    }
    using M = bw_test::Model<example::fashion_mnist_cnn>;
    const image_batch data(256);
    live_bytes = 0;
    peak_bytes = 0;
    tracking = true;
    double measured = 0.0;
    {
        M model{bw::seed{1}};
        model.compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
        model.train_on_batch(data.x, data.y);
        model.train_on_batch(data.x, data.y);
        measured = static_cast<double>(peak_bytes.load());
    }
    tracking = false;
    const double estimate = static_cast<double>(M::estimate_memory(256, 2).total_bytes());
    MESSAGE("Fashion-MNIST CNN at batch 256: estimate " << estimate / 1e6 << " MB, measured heap peak "
                                                        << measured / 1e6 << " MB (ratio " << estimate / measured << ")");
    CHECK(estimate >= 0.9 * measured);
    CHECK(estimate <= 1.1 * measured);
}

TEST_CASE("an allocation that really fails (std::bad_alloc) splits the step, with the same result") {
    if constexpr (!bw_test::buffers_on_heap) {
        MESSAGE("skipped: the policy's buffers are device memory, which the malloc hooks cannot make fail");
        return;
    }
    using Net = bw::Sequential<bw::Input<64>, bw::Dense<128>, bw::ReLU, bw::Dropout<0.2f>, bw::Dense<8>>;
    const auto x = bw_test::random_matrix(512, 64, 2);
    xt::xtensor<int, 1> y = xt::zeros<int>({std::size_t{512}});
    for (std::size_t i = 0; i < 512; ++i) y(i) = static_cast<int>(i % 8);

    bw_test::Model<Net> reference{bw::seed{3}};
    bw_test::Model<Net> constrained{bw::seed{3}};
    for (auto* m : {&reference, &constrained}) m->compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    const xt::xtensor<float, 2> warm_x = xt::view(x, xt::range(0, 64));
    const xt::xtensor<int, 1> warm_y = xt::view(y, xt::range(0, 64));
    reference.train_on_batch(warm_x, warm_y);
    constrained.train_on_batch(warm_x, warm_y);

    // Buffers for 512 rows (the largest is 512 x 128 floats, 256 KiB) cannot be had; those for
    // 128 rows can.
    fail_above = 128 * 128 * sizeof(float) + 64;
    const bw::logs l = constrained.train_on_batch(x, y);
    fail_above = 0;
    reference.train_on_batch(x, y);

    REQUIRE(constrained.micro_batch_splits().size() == 2);  // 512 -> 256 -> 128
    CHECK(constrained.micro_batch_splits()[0].reason.find("bad_alloc") != std::string::npos);
    CHECK(constrained.micro_batch_limit() == 128);
    CHECK(constrained.iterations() == 2);
    CHECK(std::isfinite(l.loss));
    const auto a = reference.get_weights(), b = constrained.get_weights();
    for (std::size_t v = 0; v < a.size(); ++v) {
        const double diff = xt::norm_l2(a[v].value - b[v].value)();
        CHECK(diff <= 1e-5 * xt::norm_l2(a[v].value)());
    }
}

namespace {
using fault_net = bw::Sequential<bw::Input<16>, bw::Dense<32>, bw::ReLU, bw::Dropout<0.25f>, bw::Dense<4>>;

/// Runs f with the k-th allocation failing; returns how many allocations f made in all.
template <class F>
std::size_t with_failing_allocation(std::size_t k, F&& f) {
    seen_while_armed = 0;
    fail_nth = k;
    f();
    fail_nth = 0;
    return seen_while_armed.load();
}

template <class M>
bool weights_equal(const M& a, const M& b) {
    return bw_test::all_weights(a) == bw_test::all_weights(b);
}

template <class M>
bool weights_close(const M& a, const M& b) {
    const auto x = bw_test::all_weights(a), y = bw_test::all_weights(b);
    if (x.size() != y.size()) return false;
    for (std::size_t i = 0; i < x.size(); ++i) {
        if (std::fabs(x[i] - y[i]) > 1e-5f * (1.0f + std::fabs(x[i]))) return false;
    }
    return true;
}

/// Fails every allocation of one step in turn, on a model whose buffers must grow for it, and
/// checks each outcome: the step completes as without the fault (out-of-memory recovery), or a
/// batchwise error leaves weights, optimizer state and position as they were, which the next
/// step proves by landing exactly where a model that never saw the fault lands.
template <class Accum>
void fail_every_allocation_of_a_step(const char* what) {
    using M = bw_test::Model<fault_net, bw::dynamic_batch, bw_test::exec, Accum>;
    const auto x = bw_test::random_matrix(96, 16, 4);
    xt::xtensor<int, 1> y = xt::zeros<int>({std::size_t{96}});
    for (std::size_t i = 0; i < 96; ++i) y(i) = static_cast<int>(i % 4);
    const xt::xtensor<float, 2> warm_x = xt::view(x, xt::range(0, 8));
    const xt::xtensor<int, 1> warm_y = xt::view(y, xt::range(0, 8));
    auto fresh = [&] {
        auto m = std::make_unique<M>(bw::seed{5});
        m->compile(bw::Adam{}, bw::SparseCategoricalCrossentropy{{.from_logits = true}}, bw::metrics::accuracy);
        m->train_on_batch(warm_x, warm_y);
        return m;
    };
    const auto before = fresh();
    const auto one_step = fresh();
    const auto two_steps = fresh();
    one_step->train_on_batch(x, y);
    two_steps->train_on_batch(x, y);
    two_steps->train_on_batch(x, y);

    std::size_t sites = 0;
    {
        const auto m = fresh();
        sites = with_failing_allocation(std::numeric_limits<std::size_t>::max(), [&] { m->train_on_batch(x, y); });
    }
    REQUIRE(sites > 0);
    std::size_t recovered = 0, refused = 0;
    for (std::size_t k = 1; k <= sites; ++k) {
        CAPTURE(k);
        live_bytes = 0;
        tracking = true;
        {
            const auto m = fresh();
            bool failed = false;
            std::string untyped;
            with_failing_allocation(k, [&] {
                try {
                    m->train_on_batch(x, y);
                } catch (const bw::error&) {
                    failed = true;
                } catch (const std::exception& e) {
                    untyped = e.what();
                }
            });
            REQUIRE_MESSAGE(untyped.empty(), "an exception outside batchwise::error: " << untyped);
            if (failed) {
                ++refused;
                CHECK(m->iterations() == before->iterations());
                CHECK(weights_equal(*m, *before));
                m->train_on_batch(x, y);  // the state behind the weights is unchanged too
                CHECK(weights_equal(*m, *one_step));
            } else {
                ++recovered;
                CHECK(m->iterations() == one_step->iterations());
                CHECK(weights_close(*m, *one_step));
            }
            m->train_on_batch(x, y);
            CHECK(weights_close(*m, *two_steps));
        }
        tracking = false;
        CHECK(live_bytes.load() == 0);  // nothing the failed run allocated is left behind
    }
    MESSAGE(std::string(what) << ": " << sites << " allocation sites of a step failed in turn: " << recovered
                 << " recovered by splitting or retrying, " << refused << " refused with a typed error and the model unchanged");
}
}  // namespace

TEST_CASE("fault injection: every allocation of a training step fails in turn, recovery or a typed error, nothing lost") {
    if constexpr (!bw_test::buffers_on_heap) {
        MESSAGE("skipped: the policy's buffers are device memory, which the malloc hooks cannot make fail");
        return;
    }
    fail_every_allocation_of_a_step<bw::no_accumulation>("one micro-batch per step");
    fail_every_allocation_of_a_step<bw::accumulate<3>>("accumulate<3>");
}

namespace {
long virtual_memory_kb() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("VmSize:", 0) == 0) return std::atol(line.c_str() + 7);
    }
    return 0;
}
}  // namespace

// Run alone in its own process by CTest (allocations.real_limit): the limit is the process's.
// Before cpu_blas mapped OpenBLAS's buffers when a model is built, the first allocation to fail
// under such a limit was OpenBLAS's own, inside the GEMM, which retries for ever: this test then
// hung until CTest's timeout.
TEST_CASE("a real address-space limit (RLIMIT_AS): the step splits and continues" * doctest::skip()) {
    using Net = bw::Sequential<bw::Input<256>, bw::Dense<512>, bw::ReLU, bw::Dense<512>, bw::ReLU, bw::Dense<10>>;
    using M = bw_test::Model<Net>;
    constexpr std::size_t rows = 8192;
    const auto x = bw_test::random_matrix(rows, 256, 6);
    xt::xtensor<int, 1> y = xt::zeros<int>({rows});
    for (std::size_t i = 0; i < rows; ++i) y(i) = static_cast<int>(i % 10);
    // Nothing has run a GEMM before the limit is set but what building a model runs itself.
    M reference{bw::seed{8}}, limited{bw::seed{8}};
    for (M* m : {&reference, &limited}) {
        m->compile(bw::SGD{{.learning_rate = 0.05f}}, bw::SparseCategoricalCrossentropy{{.from_logits = true}});
    }

    // Room for a quarter of what the whole batch needs: its buffers cannot be had, a micro-batch
    // of a quarter or less can.
    const std::size_t whole = M::estimate_memory(rows, 0).total_bytes();
    const long now_kb = virtual_memory_kb();
    REQUIRE(now_kb > 0);
    rlimit old{};
    REQUIRE(getrlimit(RLIMIT_AS, &old) == 0);
    const rlimit limit{static_cast<rlim_t>(now_kb) * 1024 + whole / 4, old.rlim_max};
    REQUIRE(setrlimit(RLIMIT_AS, &limit) == 0);
    bw::logs l;
    std::string failure;
    try {
        l = limited.train_on_batch(x, y);
    } catch (const std::exception& e) {
        failure = e.what();
    }
    REQUIRE(setrlimit(RLIMIT_AS, &old) == 0);
    REQUIRE_MESSAGE(failure.empty(), failure);
    reference.train_on_batch(x, y);
    MESSAGE("the whole batch needs " << whole / 1e6 << " MB, the limit left " << whole / 4e6 << " MB; micro-batches: "
                                     << limited.micro_batch_limit() << " rows after " << limited.micro_batch_splits().size()
                                     << " splits");
    REQUIRE_FALSE(limited.micro_batch_splits().empty());
    CHECK(limited.micro_batch_splits()[0].reason.find("bad_alloc") != std::string::npos);
    CHECK(limited.micro_batch_limit() < rows);
    CHECK(std::isfinite(l.loss));
    const auto a = reference.get_weights(), b = limited.get_weights();
    for (std::size_t v = 0; v < a.size(); ++v) {
        const double diff = xt::norm_l2(a[v].value - b[v].value)();
        CHECK(diff <= 1e-5 * xt::norm_l2(a[v].value)());
    }
}

#endif  // !BATCHWISE_TEST_UNDER_ASAN
