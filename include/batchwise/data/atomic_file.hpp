// Replacing a file so that a reader, a killed writer or a power loss sees the old file or the new
// one, never a mixture: what write_npz, write_npy, save_weights and save_checkpoint write through.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <ostream>
#include <streambuf>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batchwise/core/errors.hpp"

// Note [Atomic replacement]
// A file is written to a temporary beside it, PATH.tmp.<pid>.<n>, flushed to disk (fsync), renamed
// over PATH, and then the directory is synced, so that the rename itself survives a power loss.
// Without the first sync a power loss can leave a renamed but empty PATH (ext4 and XFS may commit
// the rename before the data); without the second, the old PATH can come back.
//
// A writer killed mid-write (SIGKILL, OOM killer) cannot remove its temporary, so every successful
// write removes the temporaries of PATH that dead writers left. "Dead" is decided by a lock, not
// by the pid in the name: the writer holds flock(LOCK_EX) on its temporary from creation to
// rename, the kernel drops that lock when the process dies however it dies, and a temporary whose
// lock can be taken has no live writer. A pid test (kill(pid, 0)) would keep a temporary whose pid
// was reused by an unrelated process, and would not see writers in another pid namespace. The pid
// in the name only keeps concurrent writers apart and tells a person whose file it was. flock is
// per open file, so two threads of one process do not mistake each other's temporary for stale
// (except on NFS, which emulates flock with per-process locks: there two threads writing one
// path at the same moment could fail the later rename with an io_error, never a damaged file).
//
// The race between creating a temporary and locking it is closed from both sides: a cleaner that
// takes the lock removes the name only if it still names the file it locked, and a writer that
// gets its lock checks that its name still names its file, starting over under a new name if a
// cleaner removed it in between. Where flock is not supported, writers go on without the lock
// and cleaners never take one, so nothing is removed that might be live.
namespace batchwise::data::npz_detail {

inline std::string errno_text(int error) { return std::generic_category().message(error); }

[[noreturn]] inline void fail_replace(std::string_view who, const std::filesystem::path& path,
                                      const std::string& what) {
    throw io_error(std::string(who) + ": " + batchwise::detail::in_quotes(path.string()) + ": " + what);
}

/// An ostream buffer writing to a file descriptor that keeps the errno of the first failed
/// write (EFBIG, ENOSPC, EIO ...) so the error can say why, which std::ofstream cannot.
class fd_writer : public std::streambuf {
public:
    explicit fd_writer(int fd) : fd_(fd), buffer_(std::size_t{1} << 16) { reset(); }

    /// Writes out what is buffered; false once any write has failed.
    bool flush() {
        const bool ok = write_all(pbase(), static_cast<std::size_t>(pptr() - pbase()));
        reset();
        return ok;
    }
    /// The errno of the first failed write, 0 if none failed.
    [[nodiscard]] int error() const noexcept { return error_; }

protected:
    int_type overflow(int_type c) override {
        if (!flush()) return traits_type::eof();
        if (!traits_type::eq_int_type(c, traits_type::eof())) {
            *pptr() = traits_type::to_char_type(c);
            pbump(1);
        }
        return traits_type::not_eof(c);
    }
    // A whole serialised array goes straight to the file instead of through the buffer.
    std::streamsize xsputn(const char* data, std::streamsize n) override {
        if (n < epptr() - pptr()) {
            traits_type::copy(pptr(), data, static_cast<std::size_t>(n));
            pbump(static_cast<int>(n));
            return n;
        }
        return flush() && write_all(data, static_cast<std::size_t>(n)) ? n : 0;
    }
    int sync() override { return flush() ? 0 : -1; }

private:
    void reset() { setp(buffer_.data(), buffer_.data() + buffer_.size()); }
    // write() may take less than asked (a file size limit, a full disk, a signal); the rest is
    // written again until it fails with the reason.
    bool write_all(const char* data, std::size_t n) {
        while (n > 0 && error_ == 0) {
            const ssize_t written = ::write(fd_, data, n);
            if (written < 0 && errno == EINTR) continue;
            if (written <= 0) {
                error_ = written < 0 ? errno : EIO;
                break;
            }
            data += written;
            n -= static_cast<std::size_t>(written);
        }
        return error_ == 0;
    }

    int fd_;
    std::vector<char> buffer_;
    int error_ = 0;
};

// Temporaries are named <file>.tmp.<pid>.<n>: only names of exactly that form are ever removed.
inline bool is_temporary_of(const std::string& name, const std::string& file) {
    const std::string prefix = file + ".tmp.";
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return false;
    const std::string_view rest = std::string_view(name).substr(prefix.size());
    const std::size_t dot = rest.find('.');
    const auto digits = [](std::string_view s) {
        return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
    };
    return dot != std::string_view::npos && digits(rest.substr(0, dot)) && digits(rest.substr(dot + 1));
}

inline bool same_file(const struct stat& a, const struct stat& b) {
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/// Removes the temporaries of `path` whose writers are gone (Note [Atomic replacement]). Best
/// effort: the write it follows has succeeded, and what is left is tried again next time.
inline void remove_stale_temporaries(const std::filesystem::path& path) {
    const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    const std::string file = path.filename().string();
    std::error_code ec;
    for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        if (!is_temporary_of(it->path().filename().string(), file)) continue;
        const std::string name = it->path().string();
        const int fd = ::open(name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0) continue;
        struct stat locked{}, named{};
        if (::flock(fd, LOCK_EX | LOCK_NB) == 0 && ::fstat(fd, &locked) == 0 && ::lstat(name.c_str(), &named) == 0 &&
            same_file(locked, named))
            ::unlink(name.c_str());
        ::close(fd);
    }
}

/// A new, locked temporary beside `path`: its descriptor and name.
inline int create_temporary(std::string_view who, const std::filesystem::path& path, std::filesystem::path& name) {
    static std::atomic<unsigned long> counter{0};
    int last_error = 0;
    for (int attempt = 0; attempt < 100; ++attempt) {
        name = path;
        name += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
        const int fd = ::open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0) {
            last_error = errno;
            if (last_error == EEXIST) continue;  // a dead writer's, with our pid: take the next name
            break;
        }
        int locked;
        do locked = ::flock(fd, LOCK_EX);
        while (locked != 0 && errno == EINTR);
        struct stat mine{}, named{};
        if (locked != 0 || (::fstat(fd, &mine) == 0 && ::lstat(name.c_str(), &named) == 0 && same_file(mine, named)))
            return fd;
        ::close(fd);  // a cleaner took the name between open and flock: start over
        last_error = ENOENT;
    }
    fail_replace(who, path, "cannot open " + batchwise::detail::in_quotes(name.string()) +
                                " for writing: " + errno_text(last_error));
}

/// Writes `path` through a temporary, `write(std::ostream&)` producing the contents, as Note
/// [Atomic replacement] says. Every failure is an io_error naming `path`; any failure up to the
/// rename leaves the previous file at `path` as it was and no temporary behind.
template <class Write>
void write_atomically(std::string_view who, const std::filesystem::path& path, Write&& write) {
    std::filesystem::path temporary;
    const int fd = create_temporary(who, path, temporary);
    const std::string quoted = batchwise::detail::in_quotes(temporary.string());
    try {
        fd_writer buffer(fd);
        std::ostream out(&buffer);
        write(out);
        if (!buffer.flush() || !out)
            fail_replace(who, path,
                         "writing " + quoted + " failed: " + errno_text(buffer.error() ? buffer.error() : EIO));
        if (::fsync(fd) != 0) {
            const int error = errno;
            fail_replace(who, path, "cannot flush " + quoted + " to disk: " + errno_text(error));
        }
        if (std::rename(temporary.c_str(), path.c_str()) != 0) {
            const int error = errno;
            fail_replace(who, path, "cannot rename " + quoted + " into place: " + errno_text(error));
        }
    } catch (...) {
        ::unlink(temporary.c_str());  // still locked by us, so no cleaner removes it meanwhile
        ::close(fd);
        throw;
    }
    // The data was synced before the rename, so closing cannot lose any of it.
    ::close(fd);
    const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    // EINVAL: the file system cannot sync a directory (some FUSE and network file systems).
    if (dir_fd < 0 || (::fsync(dir_fd) != 0 && errno != EINVAL)) {
        const int error = errno;
        if (dir_fd >= 0) ::close(dir_fd);
        fail_replace(who, path, "the new file is in place, but syncing its directory failed (" + errno_text(error) +
                                    "), so a power loss may undo the rename");
    }
    ::close(dir_fd);
    remove_stale_temporaries(path);
}

}  // namespace batchwise::data::npz_detail
