// Real I/O faults for the tests of atomic file replacement (data/atomic_file.hpp): a file size
// limit that makes write() stop after k bytes, and what a write left beside its target.
#pragma once

#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include <signal.h>
#include <sys/resource.h>

namespace bw_test {

/// Every write past `bytes` in a file fails while this lives: write() writes what fits (a real
/// short write) and then fails with EFBIG. SIGXFSZ, which the kernel sends as well and which
/// would end the process, is ignored meanwhile. Process-wide: keep other file writes out of it.
class file_size_limit {
public:
    explicit file_size_limit(rlim_t bytes) {
        struct sigaction ignore{};
        ignore.sa_handler = SIG_IGN;
        sigemptyset(&ignore.sa_mask);
        ::sigaction(SIGXFSZ, &ignore, &saved_action_);
        ::getrlimit(RLIMIT_FSIZE, &saved_);
        rlimit limit = saved_;
        limit.rlim_cur = bytes;
        ok_ = ::setrlimit(RLIMIT_FSIZE, &limit) == 0;
    }
    ~file_size_limit() {
        ::setrlimit(RLIMIT_FSIZE, &saved_);
        ::sigaction(SIGXFSZ, &saved_action_, nullptr);
    }
    file_size_limit(const file_size_limit&) = delete;
    file_size_limit& operator=(const file_size_limit&) = delete;
    /// Whether the limit was set (it cannot exceed the hard limit).
    [[nodiscard]] bool ok() const { return ok_; }

private:
    rlimit saved_{};
    struct sigaction saved_action_{};
    bool ok_ = false;
};

/// The names in `dir` other than `keep`: what a write to dir/keep left behind.
inline std::vector<std::string> other_files(const std::filesystem::path& dir, const std::string& keep) {
    std::vector<std::string> names;
    std::error_code ec;
    for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
        if (it->path().filename() != keep) names.push_back(it->path().filename().string());
    return names;
}

}  // namespace bw_test
