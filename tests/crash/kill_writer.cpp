// What a checkpoint file holds after its writer is killed, runs out of space or is cut short:
// the previous checkpoint or the new one, whole, and no temporary left once a write succeeds
// (data/atomic_file.hpp, Note [Atomic replacement]). A program of its own, since it forks writers,
// kills them, limits its own file size and watches its own fsync calls.
//
//   kill_writer --child DIR FIRST   the writer: checkpoints states FIRST, FIRST+1, ... to
//                                   DIR/ckpt.npz, reporting each finished one on stdout
//   kill_writer [doctest options]   the cases below (tests/crash/CMakeLists.txt runs them)
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <batchwise/batchwise.hpp>

#include "faults.hpp"
#include "../temp_files.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

namespace bw = batchwise;
namespace fs = std::filesystem;
using Net = bw::Sequential<bw::Input<8>, bw::Dense<16>, bw::ReLU, bw::Dense<4>>;
using small_model = bw::Model<Net, bw::dynamic_batch, bw::cpu_blas>;
using bytes = std::vector<unsigned char>;

void compile(small_model& m) { m.compile(bw::Adam{{.learning_rate = 1e-3f}}, bw::MeanSquaredError{}); }

// State i in the weights: the first value is i, the others a function of i and their position,
// all integers below 2^24 so float holds them exactly.
float state_value(std::uint64_t i, std::size_t j) {
    return j == 0 ? static_cast<float>(i) : static_cast<float>((i * 31 + j) % 65536);
}

void set_state(small_model& m, std::uint64_t i) {
    auto weights = m.get_weights();
    std::size_t j = 0;
    for (auto& w : weights)
        for (float& v : w.value) v = state_value(i, j++);
    m.set_weights(weights);
}

/// The state the weights hold, or nothing if they are not exactly one of set_state's.
std::optional<std::uint64_t> state_of(const small_model& m) {
    const auto weights = m.get_weights();
    const float first = *weights.at(0).value.begin();
    if (!(first >= 0.0f && first < 16777216.0f)) return std::nullopt;
    const auto i = static_cast<std::uint64_t>(first);
    std::size_t j = 0;
    for (const auto& w : weights)
        for (const float v : w.value)
            if (v != state_value(i, j++)) return std::nullopt;
    return i;
}

bytes read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// A directory of its own for one case, so everything a write leaves beside its file shows.
struct temp_dir : bw_test::temp_path {
    temp_dir() : bw_test::temp_path("crash") { fs::create_directory(path()); }
};

constexpr std::uint64_t ready = ~std::uint64_t{0};

int run_child(const fs::path& dir, std::uint64_t first) {
    try {
        small_model m{bw::seed{3}};
        compile(m);
        if (::write(STDOUT_FILENO, &ready, sizeof ready) != sizeof ready) return 2;
        for (std::uint64_t i = first;; ++i) {
            set_state(m, i);
            m.save_checkpoint(dir / "ckpt.npz");
            if (::write(STDOUT_FILENO, &i, sizeof i) != sizeof i) return 2;
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "kill_writer --child: %s\n", e.what());
        return 3;
    }
}

// fsync as the library calls it, watched: which file or directory, and which file the target
// path named at that moment. Only a spy: every call still reaches the kernel.
struct sync_call {
    bool directory;
    ino_t synced;
    ino_t target;  // the inode at the target path during the call (0: none)
};
std::vector<sync_call>* watched_syncs = nullptr;
const char* watched_target = nullptr;

}  // namespace

extern "C" int fsync(int fd) {
    if (watched_syncs != nullptr) {
        struct stat synced{}, target{};
        ::fstat(fd, &synced);
        const bool has_target = ::stat(watched_target, &target) == 0;
        watched_syncs->push_back({S_ISDIR(synced.st_mode), synced.st_ino, has_target ? target.st_ino : 0});
    }
    return static_cast<int>(::syscall(SYS_fsync, fd));
}

int main(int argc, char** argv) {
    if (argc == 4 && std::string_view(argv[1]) == "--child") return run_child(argv[2], std::stoull(argv[3]));
    doctest::Context context(argc, argv);
    return context.run();
}

namespace {

/// Starts a writer at state `first`: its pid and the read end of its report pipe.
std::pair<pid_t, int> start_writer(const fs::path& dir, std::uint64_t first) {
    int pipe_fds[2];
    REQUIRE(::pipe(pipe_fds) == 0);
    const std::string first_text = std::to_string(first);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::dup2(pipe_fds[1], STDOUT_FILENO);
        ::close(pipe_fds[0]);
        ::close(pipe_fds[1]);
        ::execl("/proc/self/exe", "kill_writer", "--child", dir.c_str(), first_text.c_str(), nullptr);
        ::_exit(127);
    }
    ::close(pipe_fds[1]);
    return {pid, pipe_fds[0]};
}

/// Everything a writer reported until its end.
std::vector<std::uint64_t> read_reports(int fd) {
    std::vector<std::uint64_t> reports;
    std::uint64_t value = 0;
    std::size_t have = 0;
    unsigned char buffer[4096];
    for (;;) {
        const ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (ssize_t k = 0; k < n; ++k) {
            reinterpret_cast<unsigned char*>(&value)[have++] = buffer[k];
            if (have == sizeof value) reports.push_back(value), have = 0;
        }
    }
    return reports;
}

}  // namespace

TEST_CASE("crash: a checkpoint writer killed with SIGKILL at random moments leaves the old or the new checkpoint") {
    const temp_dir dir;
    const fs::path file = dir.path() / "ckpt.npz";
    small_model reader{bw::seed{5}};
    compile(reader);
    set_state(reader, 0);
    reader.save_checkpoint(file);

    constexpr int max_kills = 200;
    constexpr auto budget = std::chrono::seconds(25);
    constexpr std::uint64_t seed = 20261130;
    std::mt19937_64 random(seed);
    std::uniform_int_distribution<int> delay_us(0, 20000);
    const auto start = std::chrono::steady_clock::now();
    int kills = 0, old_found = 0, new_found = 0, stale_after_kill = 0;
    std::uint64_t next = 1, written = 0;
    std::set<std::string> stale;  // temporaries seen after earlier kills
    ::setenv("OPENBLAS_NUM_THREADS", "1", 1);  // for the writers: one BLAS thread starts faster
    while (kills < max_kills && std::chrono::steady_clock::now() - start < budget) {
        const std::pair<pid_t, int> writer = start_writer(dir.path(), next);
        const pid_t pid = writer.first;
        const int reports_fd = writer.second;
        std::uint64_t first_report = 0;
        REQUIRE_MESSAGE(::read(reports_fd, &first_report, sizeof first_report) == sizeof first_report,
                        "the writer did not start");
        REQUIRE(first_report == ready);
        std::this_thread::sleep_for(std::chrono::microseconds(delay_us(random)));
        REQUIRE(::kill(pid, SIGKILL) == 0);
        int status = 0;
        REQUIRE(::waitpid(pid, &status, 0) == pid);
        const std::vector<std::uint64_t> reports = read_reports(reports_fd);
        ::close(reports_fd);
        REQUIRE_MESSAGE((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL), "the writer ended on its own, status "
                                                                                   << status);
        ++kills;
        written += reports.size();
        INFO("kill " << kills << ", writer started at state " << next << ", " << reports.size()
                     << " checkpoints finished");
        // Finished writes are reported in order; the last one, or the one after it if the kill
        // came between its rename and its report, must be what the file holds.
        const std::uint64_t last_finished = reports.empty() ? next - 1 : reports.back();
        REQUIRE_NOTHROW(reader.load_checkpoint(file));
        const std::optional<std::uint64_t> found = state_of(reader);
        REQUIRE_MESSAGE(found.has_value(), "the checkpoint holds weights no writer wrote");
        REQUIRE_MESSAGE((*found == last_finished || *found == last_finished + 1),
                        "the checkpoint holds state " << *found << " after state " << last_finished << " finished");
        ++(*found == last_finished ? old_found : new_found);

        const std::vector<std::string> left = bw_test::other_files(dir.path(), "ckpt.npz");
        const std::string prefix = "ckpt.npz.tmp." + std::to_string(pid) + ".";
        for (const std::string& name : left) {
            if (stale.count(name) != 0) {
                // A write finished since it was left: that write must have removed it.
                CHECK_MESSAGE(reports.empty(), name << " survived a successful write");
                continue;
            }
            CHECK_MESSAGE(name.starts_with(prefix), "an unexpected file beside the checkpoint: " << name);
            ++stale_after_kill;
            stale.insert(name);
        }
        if (!reports.empty()) std::erase_if(stale, [&](const std::string& name) { return !name.starts_with(prefix); });
        next = *found + 1;
    }
    // The parent's own write now removes what the last writers left.
    set_state(reader, next);
    reader.save_checkpoint(file);
    CHECK(bw_test::other_files(dir.path(), "ckpt.npz").empty());
    reader.load_checkpoint(file);
    CHECK(state_of(reader) == next);

    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    MESSAGE(kills << " SIGKILLs (seed " << seed << ", 0-20 ms after the writer started) in " << seconds << " s, "
                  << written << " checkpoints finished: the old checkpoint found " << old_found
                  << " times, the new one (renamed, not yet reported) " << new_found << " times; " << stale_after_kill
                  << " kills left a temporary, each removed by the next successful write");
    CHECK(kills >= 20);
    CHECK(old_found + new_found == kills);
}

TEST_CASE("faults: save_checkpoint syncs its data before the rename and the directory after it") {
    const temp_dir dir;
    const fs::path file = dir.path() / "ckpt.npz";
    small_model m{bw::seed{3}};
    compile(m);
    set_state(m, 1);
    m.save_checkpoint(file);
    struct stat before{}, after{}, directory{};
    REQUIRE(::stat(file.c_str(), &before) == 0);
    REQUIRE(::stat(dir.path().c_str(), &directory) == 0);

    std::vector<sync_call> syncs;
    const std::string target = file.string();
    watched_target = target.c_str();
    watched_syncs = &syncs;
    set_state(m, 2);
    m.save_checkpoint(file);
    watched_syncs = nullptr;
    REQUIRE(::stat(file.c_str(), &after) == 0);
    REQUIRE(after.st_ino != before.st_ino);

    // The new file's data, synced while the old file still stood at the path (before the rename),
    // then the directory, synced once the new file stood there (after the rename).
    const auto data_sync = std::find_if(syncs.begin(), syncs.end(), [&](const sync_call& c) {
        return !c.directory && c.synced == after.st_ino && c.target == before.st_ino;
    });
    const auto directory_sync = std::find_if(syncs.begin(), syncs.end(), [&](const sync_call& c) {
        return c.directory && c.synced == directory.st_ino && c.target == after.st_ino;
    });
    CHECK_MESSAGE(data_sync != syncs.end(), "the temporary was not synced before the rename");
    CHECK_MESSAGE(directory_sync != syncs.end(), "the directory was not synced after the rename");
    CHECK(data_sync < directory_sync);
}

namespace {

/// Saves with the file size limited to every byte count from 0 to the file's full size. Each
/// short write must raise an io_error naming the file and leave the previous file, byte for byte
/// and loading as `previous_state`, with nothing beside it; the full size must succeed.
template <class Save, class Load>
std::size_t fail_at_every_byte(const fs::path& file, Save&& save_new, Load&& load) {
    const bytes previous = read_file(file);
    const std::optional<std::uint64_t> previous_state = load(file);
    REQUIRE(previous_state.has_value());
    const temp_dir probe;
    save_new(probe.path() / "probe.npz");
    const bytes complete = read_file(probe.path() / "probe.npz");
    std::size_t tries = 0;
    for (std::size_t limit = 0; limit <= complete.size(); ++limit) {
        INFO("file size limited to " << limit << " of " << complete.size() << " bytes");
        std::string error;
        bool limited = false;
        {
            const bw_test::file_size_limit guard(limit);
            limited = guard.ok();
            try {
                save_new(file);
            } catch (const bw::io_error& e) {
                error = e.what();
            }
        }
        REQUIRE(limited);
        ++tries;
        REQUIRE(bw_test::other_files(file.parent_path(), file.filename().string()).empty());
        if (limit == complete.size()) {
            CHECK(error.empty());
            CHECK(read_file(file) == complete);
            break;
        }
        REQUIRE_MESSAGE(!error.empty(), "a save cut short at byte " << limit << " did not throw");
        REQUIRE(error.find("\"" + file.string() + "\"") != std::string::npos);
        REQUIRE(error.ends_with("failed: File too large"));
        REQUIRE(read_file(file) == previous);
        REQUIRE(load(file) == previous_state);
    }
    return tries;
}

}  // namespace

TEST_CASE("faults: save_checkpoint and save_weights cut short at any byte raise io_error and keep the previous file") {
    const temp_dir dir;
    small_model m{bw::seed{3}};
    compile(m);
    small_model loader{bw::seed{4}};
    compile(loader);
    set_state(m, 1);
    SUBCASE("save_checkpoint") {
        const fs::path file = dir.path() / "ckpt.npz";
        m.save_checkpoint(file);
        set_state(m, 2);
        const std::size_t tries = fail_at_every_byte(
            file, [&](const fs::path& to) { m.save_checkpoint(to); },
            [&](const fs::path& from) {
                loader.load_checkpoint(from);
                return state_of(loader);
            });
        MESSAGE("save_checkpoint: " << tries << " fault points tried (every byte offset of the file)");
    }
    SUBCASE("save_weights") {
        const fs::path file = dir.path() / "weights.npz";
        m.save_weights(file);
        set_state(m, 2);
        const std::size_t tries = fail_at_every_byte(
            file, [&](const fs::path& to) { m.save_weights(to); },
            [&](const fs::path& from) {
                loader.load_weights(from);
                return state_of(loader);
            });
        MESSAGE("save_weights: " << tries << " fault points tried (every byte offset of the file)");
    }
}
