// Scratch files for tests that read and write real files: unique paths under the system temp
// directory, removed (with the temporaries PATH.tmp.<pid>.<n> an atomic write may leave) when the
// test is done.
#pragma once

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

#include <unistd.h>

namespace bw_test {

class temp_path {
public:
    /// A path named batchwise_<prefix>_<process>_<time>_<counter><suffix>. The process id is
    /// what keeps two test processes that CTest runs at once apart: the clock alone did not
    /// (two read cases once got the same stamp and removed each other's file).
    explicit temp_path(const std::string& prefix, const std::string& suffix = "") {
        static std::atomic<unsigned> counter{0};
        const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
        path_ = std::filesystem::temp_directory_path() /
                ("batchwise_" + prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(stamp) + "_" +
                 std::to_string(counter++) + suffix);
    }
    ~temp_path() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
        for (const auto& t : temporaries()) std::filesystem::remove(t, ec);
    }
    temp_path(const temp_path&) = delete;
    temp_path& operator=(const temp_path&) = delete;

    [[nodiscard]] const std::filesystem::path& path() const { return path_; }
    /// The temporaries of an atomic write to this path still beside it (PATH.tmp.<pid>.<n>).
    [[nodiscard]] std::vector<std::filesystem::path> temporaries() const {
        std::vector<std::filesystem::path> out;
        std::error_code ec;
        const std::string prefix = path_.filename().string() + ".tmp";
        for (const auto& entry : std::filesystem::directory_iterator(path_.parent_path(), ec)) {
            if (entry.path().filename().string().starts_with(prefix)) out.push_back(entry.path());
        }
        return out;
    }
    /// The path as error messages quote it.
    [[nodiscard]] std::string quoted() const { return "\"" + path_.string() + "\""; }

private:
    std::filesystem::path path_;
};

inline void write_file(const std::filesystem::path& path, const std::vector<unsigned char>& data) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    REQUIRE(out.good());
}

}  // namespace bw_test
