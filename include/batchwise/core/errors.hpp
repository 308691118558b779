// Typed errors of batchwise: every run-time failure the library reports derives from
// batchwise::error, so callers can catch one type or the precise one they can recover from.
#pragma once

#include <concepts>
#include <cstddef>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

namespace batchwise {

/// Base of every exception batchwise throws on purpose.
class error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// A tensor's shape does not fit what the network or the batch policy requires.
class shape_error : public error {
public:
    using error::error;
};

/// The data itself is unusable: a label outside its range, a NaN input, mismatched counts.
/// `sample()` is the index of the offending sample within the call, when there is one.
class data_error : public error {
public:
    /// What sample() returns when no one sample is to blame.
    static constexpr std::size_t no_sample = static_cast<std::size_t>(-1);
    /// `what` is the message; `sample` the offending sample's index within the call, if any.
    explicit data_error(const std::string& what, std::size_t sample = no_sample)
        : error(what), sample_(sample) {}
    /// The offending sample's index within the call, or no_sample.
    [[nodiscard]] std::size_t sample() const noexcept { return sample_; }

private:
    std::size_t sample_;
};

/// A file could not be read or written; the message names the file and, where known, the
/// byte offset and what was expected there.
class io_error : public error {
public:
    using error::error;
};

/// The execution device is unusable (no GPU, driver too old, a failed device call).
class device_error : public error {
public:
    using error::error;
};

/// A step cannot fit in the memory it is allowed, even after splitting.
class out_of_memory : public error {
public:
    using error::error;
};

/// Training produced a non-finite loss (the update of that step was not applied, so the weights
/// are still those after the last good step), a weight became non-finite during an epoch (fit
/// checks every variable at each epoch's end), or a save would have written a non-finite value.
class numeric_error : public error {
public:
    using error::error;
};

/// The model is used in a way its configuration does not allow (training before compile()).
class usage_error : public error {
public:
    using error::error;
};

/// Data-parallel training failed across processes: another rank failed or never arrived, the
/// ranks disagree on the model or its configuration, or the transport (MPI, NCCL) is missing.
/// `rank()` is the rank the failure is attributed to, or no_rank when it cannot be named.
class distributed_error : public error {
public:
    /// What rank() returns when the failure cannot be attributed to one process.
    static constexpr int no_rank = -1;
    /// `what` is the message; `rank` the process the failure is attributed to, if known.
    explicit distributed_error(const std::string& what, int rank = no_rank) : error(what), rank_(rank) {}
    /// The rank of the process the failure is attributed to, or no_rank.
    [[nodiscard]] int rank() const noexcept { return rank_; }

private:
    int rank_;
};

namespace detail {
/// A file name (or any text) in double quotes, as every error message that names a file writes
/// it. Appending instead of `"\"" + std::string(s)` sidesteps a GCC 12 -Wrestrict false positive.
inline std::string in_quotes(std::string_view s) {
    std::string quoted;
    quoted.reserve(s.size() + 2);
    quoted.append(1, '"').append(s).append(1, '"');
    return quoted;
}
/// Exactly a path (a template, so a std::string, which converts to both, takes the overload above).
template <class P>
    requires std::same_as<P, std::filesystem::path>
std::string in_quotes(const P& path) {
    return in_quotes(std::string_view(path.native()));
}
}  // namespace detail

}  // namespace batchwise
