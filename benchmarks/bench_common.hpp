// Shared by the C++ benchmark programs (batchwise's and the libtorch and dlib peers): the
// synthetic mlp-bench data, the clock, the statistics, a measure of what else ran on the machine
// meanwhile, and the one-line JSON result every program prints for benchmarks/report.py.
//
// Deliberately free of batchwise headers, so that the peers include it too.
#pragma once

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace bench {

/// mlp-bench: 784 -> 256 -> 256 -> 10, 16384 samples (BENCHMARKS.md).
inline constexpr std::size_t in_features = 784;
inline constexpr std::size_t classes = 10;
inline constexpr std::size_t default_samples = 16384;
inline constexpr std::uint32_t data_seed = 20261122;

/// Synthetic data: uniform [0, 1) inputs and labels 0..9 from a fixed seed (std::mt19937, so
/// every C++ program sees the same values).
struct dataset {
    std::size_t samples = 0;
    std::vector<float> x;            // samples x 784, row-major
    std::vector<std::int64_t> y;     // samples
};

inline dataset make_dataset(std::size_t samples = default_samples,
                            std::size_t features = in_features, std::size_t n_classes = classes) {
    dataset d;
    d.samples = samples;
    d.x.resize(samples * features);
    d.y.resize(samples);
    std::mt19937 gen(data_seed);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (auto& v : d.x) v = u(gen);
    std::uniform_int_distribution<int> label(0, static_cast<int>(n_classes) - 1);
    for (auto& v : d.y) v = label(gen);
    return d;
}

using clock = std::chrono::steady_clock;

inline double seconds_since(clock::time_point t0) {
    return std::chrono::duration<double>(clock::now() - t0).count();
}

/// CPU seconds the whole machine spent busy (all processes, /proc/stat), and this process
/// (all threads). Their difference over a timed region is what *other* processes took: on a
/// 2-core machine a concurrent compile shows up there.
inline double machine_busy_seconds() {
    std::ifstream f("/proc/stat");
    std::string cpu;
    f >> cpu;
    std::vector<double> v;
    double x;
    for (int i = 0; i < 8 && (f >> x); ++i) v.push_back(x);
    if (v.size() < 8) return 0.0;
    const double idle = v[3] + v[4];
    double total = 0.0;
    for (double t : v) total += t;
    return (total - idle) / static_cast<double>(sysconf(_SC_CLK_TCK));
}
inline double process_cpu_seconds() {
    rusage r{};
    getrusage(RUSAGE_SELF, &r);
    return static_cast<double>(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
           1e-6 * static_cast<double>(r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

/// Measures one timed region: wall seconds, and the CPU (in cores) others used meanwhile.
class region {
public:
    region() : busy0_(machine_busy_seconds()), self0_(process_cpu_seconds()), t0_(clock::now()) {}
    double stop() {
        wall_ = seconds_since(t0_);
        const double others = (machine_busy_seconds() - busy0_) - (process_cpu_seconds() - self0_);
        others_ = std::max(0.0, others) / std::max(wall_, 1e-9);
        return wall_;
    }
    [[nodiscard]] double wall() const { return wall_; }
    /// Average number of cores busy with other processes during the region.
    [[nodiscard]] double others() const { return others_; }

private:
    double busy0_, self0_;
    clock::time_point t0_;
    double wall_ = 0.0, others_ = 0.0;
};

/// Wall seconds of each timed run of a block, and the mean CPU (in cores) other processes used
/// during them.
struct timings {
    std::vector<double> seconds;
    double others = 0.0;
    /// `work` per second for each run (samples/s when work is the samples a run trains).
    [[nodiscard]] std::vector<double> rates(double work) const {
        std::vector<double> out;
        for (double s : seconds) out.push_back(work / s);
        return out;
    }
    /// Microseconds per unit for each run (per step, per call).
    [[nodiscard]] std::vector<double> micros_per(double units) const {
        std::vector<double> out;
        for (double s : seconds) out.push_back(s * 1e6 / units);
        return out;
    }
};

/// Runs `block` reps + 1 times, the first as a warm-up that is not timed.
template <class Block>
timings time_runs(int reps, Block&& block) {
    timings t;
    double others = 0.0;
    for (int rep = 0; rep <= reps; ++rep) {
        region r;
        block();
        r.stop();
        if (rep > 0) {
            t.seconds.push_back(r.wall());
            others += r.others();
        }
    }
    t.others = reps > 0 ? others / reps : 0.0;
    return t;
}

struct stats {
    double median = 0.0, min = 0.0, max = 0.0;
};
inline stats summarize(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    stats s;
    if (v.empty()) return s;
    s.min = v.front();
    s.max = v.back();
    const std::size_t n = v.size();
    s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    return s;
}

inline std::string env_or(const char* name, const char* fallback) {
    const char* v = std::getenv(name);
    return v != nullptr ? v : fallback;
}

/// One result, one line of JSON on stdout. `rates` are per repetition (samples/s, or
/// microseconds per step for tiny-step); `others` is the mean CPU of other processes (cores).
inline void print_result(const std::string& workload, const std::string& system,
                         std::size_t batch, const std::string& unit, const std::vector<double>& rates,
                         double others, const std::string& extra = "") {
    const stats s = summarize(rates);
    std::ostringstream os;
    os.precision(6);
    os << "{\"workload\": \"" << workload << "\", \"system\": \"" << system
       << "\", \"batch\": " << batch << ", \"unit\": \"" << unit << "\", \"median\": " << s.median
       << ", \"min\": " << s.min << ", \"max\": " << s.max << ", \"reps\": " << rates.size()
       << ", \"others_cores\": " << others << ", \"blas_threads\": \""
       << env_or("OPENBLAS_NUM_THREADS", "") << "\", \"coretype\": \""
       << env_or("OPENBLAS_CORETYPE", "") << "\"";
    if (!extra.empty()) os << ", " << extra;
    os << "}\n";
    std::fputs(os.str().c_str(), stdout);
    std::fflush(stdout);
}

/// Resident memory of this process from /proc/self/status, in MiB: `VmRSS` now, `VmHWM` its
/// peak since the process started or since reset_peak_rss().
inline double status_mib(const char* field) {
    std::ifstream in("/proc/self/status");
    std::string line;
    const std::string key = std::string(field) + ":";
    while (std::getline(in, line)) {
        if (line.compare(0, key.size(), key) == 0) return std::stod(line.substr(key.size())) / 1024.0;
    }
    return -1.0;
}
inline double rss_mib() { return status_mib("VmRSS"); }
inline double peak_rss_mib() { return status_mib("VmHWM"); }
/// Sets VmHWM back to the current RSS (Linux >= 4.0), so that a later peak_rss_mib() is the peak
/// of what ran in between.
inline bool reset_peak_rss() {
    std::ofstream out("/proc/self/clear_refs");
    out << "5";
    out.flush();
    return static_cast<bool>(out);
}

/// Command-line options common to the programs: --batch N, --reps R, --samples S, --mode M,
/// --steps K (tiny-step), --intra-threads T (libtorch).
struct options {
    std::size_t batch = 32;
    int reps = 3;
    std::size_t samples = default_samples;
    std::string mode;
    std::size_t steps = 20000;
    int intra_threads = 1;
};

inline options parse(int argc, char** argv, const char* usage, std::size_t samples = default_samples) {
    options o;
    o.samples = samples;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "%s: %s needs a value\n%s", argv[0], a.c_str(), usage);
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--batch") o.batch = std::stoul(value());
        else if (a == "--reps") o.reps = std::stoi(value());
        else if (a == "--samples") o.samples = std::stoul(value());
        else if (a == "--mode") o.mode = value();
        else if (a == "--steps") o.steps = std::stoul(value());
        else if (a == "--intra-threads") o.intra_threads = std::stoi(value());
        else {
            std::fprintf(stderr, "%s: unknown argument %s\n%s", argv[0], a.c_str(), usage);
            std::exit(2);
        }
    }
    if (o.batch == 0 || o.samples % o.batch != 0) {
        std::fprintf(stderr, "%s: --samples (%zu) must be a multiple of --batch (%zu)\n", argv[0],
                     o.samples, o.batch);
        std::exit(2);
    }
    return o;
}

}  // namespace bench
