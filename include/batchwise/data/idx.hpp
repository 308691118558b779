// IDX files, the format of MNIST and Fashion-MNIST, plain or gzip-compressed: every size in the
// header is checked against the bytes actually there before anything is allocated for it.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <zlib.h>

#include "batchwise/core/errors.hpp"

namespace batchwise::data {

/// Element type of an IDX file: the third byte of its magic number.
enum class idx_type : std::uint8_t {
    /// Unsigned bytes (MNIST's pixels and labels).
    ubyte = 0x08,
    /// Signed bytes.
    sbyte = 0x09,
    /// Big-endian 16-bit integers.
    int16 = 0x0B,
    /// Big-endian 32-bit integers.
    int32 = 0x0C,
    /// Big-endian IEEE single precision.
    float32 = 0x0D,
    /// Big-endian IEEE double precision.
    float64 = 0x0E,
};

/// Bytes per element of TYPE; 0 for a value that is not an IDX type.
[[nodiscard]] inline std::size_t idx_item_size(idx_type type) noexcept {
    switch (type) {
        case idx_type::ubyte:
        case idx_type::sbyte: return 1;
        case idx_type::int16: return 2;
        case idx_type::int32:
        case idx_type::float32: return 4;
        case idx_type::float64: return 8;
    }
    return 0;
}

/// The name the IDX description uses for TYPE ("unsigned byte" is ubyte, and so on).
[[nodiscard]] inline std::string_view idx_type_name(idx_type type) noexcept {
    switch (type) {
        case idx_type::ubyte: return "ubyte";
        case idx_type::sbyte: return "byte";
        case idx_type::int16: return "short";
        case idx_type::int32: return "int";
        case idx_type::float32: return "float";
        case idx_type::float64: return "double";
    }
    return "unknown";
}

/// An IDX file's contents as stored: for callers that want the bytes themselves (MNIST pixels
/// are ubyte, and going through float would quadruple their memory for nothing).
struct idx_raw {
    std::vector<std::size_t> shape;  ///< C order, one entry per dimension of the file
    /// The element type the file declares.
    idx_type type = idx_type::ubyte;
    std::vector<unsigned char> data;  ///< product(shape) * idx_item_size(type) bytes, big-endian
};

/// An IDX file's contents as float, C order. int32 values beyond 2^24 and doubles are rounded.
struct idx_array {
    /// C order, one entry per dimension of the file.
    std::vector<std::size_t> shape;
    std::vector<float> values;  ///< product(shape) elements
    /// The element type the file stored, before conversion to float.
    idx_type type = idx_type::ubyte;
};

namespace idx_detail {

using bytes = std::vector<unsigned char>;

// Deflate cannot expand data by more than 1032:1 (RFC 1951 code lengths: a 258-byte match costs
// at least 2 bits), so a header that promises more than this from the compressed size is corrupt,
// and we can say so before decompressing or allocating anything.
inline constexpr std::uint64_t max_deflate_ratio = 1032;
inline constexpr std::size_t compressed_chunk = std::size_t{1} << 20;

using batchwise::detail::in_quotes;

inline std::string shape_text(const std::vector<std::size_t>& shape) {
    std::string text = "(";
    for (std::size_t d = 0; d < shape.size(); ++d) text += (d ? ", " : "") + std::to_string(shape[d]);
    return text + (shape.size() == 1 ? ",)" : ")");
}

inline std::string hex_bytes(const unsigned char* p, std::size_t n) {
    constexpr std::string_view digits = "0123456789abcdef";
    std::string text;
    for (std::size_t i = 0; i < n; ++i) {
        if (i) text += ' ';
        text += digits[p[i] >> 4];
        text += digits[p[i] & 0xF];
    }
    return text;
}

inline std::uint32_t get_be32(const unsigned char* p) {
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

/// The decompressed bytes of a plain or gzip file, read front to back. Offsets in messages
/// count decompressed bytes, and say so, since those are what the IDX header describes.
class byte_source {
public:
    explicit byte_source(const std::filesystem::path& path) : path_(path) {
        std::error_code ec;
        const auto status = std::filesystem::status(path, ec);
        if (!std::filesystem::exists(status)) fail_file("no such file");
        if (!std::filesystem::is_regular_file(status)) fail_file("not a regular file");
        file_size_ = std::filesystem::file_size(path, ec);
        stream_.open(path, std::ios::binary);
        if (ec || !stream_) fail_file("cannot open for reading" + (ec ? " (" + ec.message() + ")" : std::string()));
        unsigned char magic[2] = {0, 0};
        stream_.read(reinterpret_cast<char*>(magic), 2);
        // By content, not by name: ".gz" files are sometimes stored decompressed under their
        // old name, as some browsers and mirrors do.
        gzip_ = stream_.gcount() == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
        stream_.clear();
        stream_.seekg(0);
        if (gzip_) {
            // No larger than the file: a small file then costs no 1 MiB buffer (fuzzing reads
            // tens of thousands of them a second). refill asks for at most 2 bytes.
            input_.resize(static_cast<std::size_t>(std::clamp<std::uint64_t>(file_size_, 2, compressed_chunk)));
            // 16 + MAX_WBITS: expect a gzip wrapper and check its CRC-32 and length trailer.
            if (inflateInit2(&z_, 16 + MAX_WBITS) != Z_OK) fail_file("cannot initialise zlib inflate");
            z_ready_ = true;
        }
    }
    ~byte_source() {
        if (z_ready_) inflateEnd(&z_);
    }
    byte_source(const byte_source&) = delete;
    byte_source& operator=(const byte_source&) = delete;

    [[nodiscard]] bool gzip() const noexcept { return gzip_; }
    [[nodiscard]] std::uint64_t file_size() const noexcept { return file_size_; }
    /// Decompressed bytes delivered so far.
    [[nodiscard]] std::uint64_t position() const noexcept { return position_; }

    /// The most bytes that can still come: exact for a plain file, the deflate bound for gzip.
    [[nodiscard]] std::uint64_t max_remaining() const noexcept {
        if (!gzip_) return file_size_ - position_;
        return file_size_ > (std::numeric_limits<std::uint64_t>::max() - 1024) / max_deflate_ratio
                   ? std::numeric_limits<std::uint64_t>::max()
                   : file_size_ * max_deflate_ratio + 1024;
    }

    /// Fills up to N bytes at DST; fewer only where the data ends.
    std::size_t read(unsigned char* dst, std::size_t n) {
        if (gzip_) return inflate_into(dst, n);  // counts position_ as it goes, for its messages
        const std::size_t got = read_plain(dst, n);
        position_ += got;
        return got;
    }

    /// Counts the bytes left, discarding them, for a message about trailing data.
    std::uint64_t drain() {
        unsigned char scratch[65536];
        std::uint64_t total = 0;
        for (std::size_t got; (got = read(scratch, sizeof scratch)) != 0;) total += got;
        return total;
    }

    [[noreturn]] void fail_file(const std::string& what) const {
        throw io_error("read_idx: " + in_quotes(path_.string()) + ": " + what);
    }

    /// An error about the IDX content at decompressed byte OFFSET.
    [[noreturn]] void fail_at(std::uint64_t offset, const std::string& what) const {
        throw io_error("read_idx: " + in_quotes(path_.string()) +
                       (gzip_ ? " (gzip), byte " + std::to_string(offset) + " of the decompressed data: "
                              : ", byte " + std::to_string(offset) + ": ") +
                       what);
    }

private:
    /// An error in the gzip layer itself, at a byte of the compressed file.
    [[noreturn]] void fail_compressed(const std::string& what) const {
        throw io_error("read_idx: " + in_quotes(path_.string()) + " (gzip), compressed byte " +
                       std::to_string(compressed_position()) + " (after " + std::to_string(position_) +
                       " decompressed bytes): " + what);
    }

    [[nodiscard]] std::uint64_t compressed_position() const noexcept { return file_read_ - z_.avail_in; }

    std::size_t read_plain(unsigned char* dst, std::size_t n) {
        stream_.read(reinterpret_cast<char*>(dst), static_cast<std::streamsize>(n));
        const auto got = static_cast<std::size_t>(stream_.gcount());
        if (got < n && stream_.bad()) fail_at(position_ + got, "read error");
        return got;
    }

    /// Makes at least WANT compressed bytes available unless the file ends first.
    void refill(std::size_t want) {
        if (z_.avail_in >= want || file_read_ == file_size_) return;
        if (z_.avail_in > 0) std::memmove(input_.data(), z_.next_in, z_.avail_in);
        const std::size_t kept = z_.avail_in;
        stream_.read(reinterpret_cast<char*>(input_.data() + kept), static_cast<std::streamsize>(input_.size() - kept));
        const auto got = static_cast<std::size_t>(stream_.gcount());
        if (got == 0 && stream_.bad()) fail_compressed("read error");
        file_read_ += got;
        z_.next_in = input_.data();
        z_.avail_in = static_cast<uInt>(kept + got);
    }

    std::size_t inflate_into(unsigned char* dst, std::size_t n) {
        std::size_t done = 0;
        while (done < n && !finished_) {
            refill(1);
            const std::size_t space = std::min<std::size_t>(n - done, std::numeric_limits<uInt>::max());
            z_.next_out = dst + done;
            z_.avail_out = static_cast<uInt>(space);
            const int rc = inflate(&z_, Z_NO_FLUSH);
            done += space - z_.avail_out;
            position_ += space - z_.avail_out;
            if (rc == Z_STREAM_END) {
                // RFC 1952 lets a file hold several gzip members back to back (cat a.gz b.gz);
                // anything else after a member is not gzip data.
                refill(2);
                if (z_.avail_in == 0) {
                    finished_ = true;
                } else if (z_.avail_in >= 2 && z_.next_in[0] == 0x1f && z_.next_in[1] == 0x8b) {
                    inflateReset(&z_);
                } else {
                    fail_compressed(std::to_string(file_size_ - compressed_position()) +
                                    " bytes follow the end of the gzip stream; expected the file to end "
                                    "there, or another gzip member");
                }
            } else if (rc == Z_BUF_ERROR) {
                // No progress was possible: with output space given, that means input ran out.
                if (z_.avail_in == 0 && file_read_ == file_size_)
                    fail_compressed("the gzip stream ends without its final block and trailer; expected "
                                    "more compressed data (truncated?)");
            } else if (rc != Z_OK) {
                fail_compressed(std::string("corrupt gzip data (zlib: ") +
                                (z_.msg ? z_.msg : "error " + std::to_string(rc)) +
                                "); expected a valid gzip stream");
            }
        }
        return done;
    }

    std::filesystem::path path_;
    std::ifstream stream_;
    std::uint64_t file_size_ = 0;
    std::uint64_t position_ = 0;
    bool gzip_ = false;
    z_stream z_{};
    bool z_ready_ = false;
    bool finished_ = false;
    bytes input_;
    std::uint64_t file_read_ = 0;  // compressed bytes read from the file so far
};

}  // namespace idx_detail

/// Reads an IDX file (plain, or gzip-compressed: detected by its 1f 8b magic, not by its name)
/// without converting its elements. Throws batchwise::io_error naming the file, the byte offset
/// (counted in the decompressed data for gzip, and saying so) and what was expected there: bad
/// magic, unknown type, dimensions that overflow or need more data than the file can hold,
/// truncated data, trailing bytes, and corrupt or truncated gzip data.
inline idx_raw read_idx_raw(const std::filesystem::path& path) {
    idx_detail::byte_source in(path);
    const auto read_exact = [&](unsigned char* dst, std::size_t n, const std::string& what) {
        const std::uint64_t start = in.position();
        const std::size_t got = in.read(dst, n);
        if (got != n)
            in.fail_at(start, "expected " + std::to_string(n) + " bytes of " + what + ", the data ends after " +
                                  std::to_string(got) + " (truncated?)");
    };

    unsigned char magic[4];
    read_exact(magic, 4, "IDX magic number");
    if (magic[0] != 0 || magic[1] != 0)
        in.fail_at(0, "expected the IDX magic number 00 00 TYPE NDIMS, found " + idx_detail::hex_bytes(magic, 4) +
                          " (not an IDX file" + (in.gzip() ? ")" : ", or compressed other than with gzip)"));
    idx_raw result;
    result.type = static_cast<idx_type>(magic[2]);
    const std::size_t item_size = idx_item_size(result.type);
    if (item_size == 0)
        in.fail_at(2, "unknown IDX element type 0x" + idx_detail::hex_bytes(magic + 2, 1) +
                          "; expected 08 (ubyte), 09 (byte), 0b (short), 0c (int), 0d (float) or 0e (double)");
    const std::size_t ndims = magic[3];
    if (ndims == 0) in.fail_at(3, "IDX dimension count 0; expected at least 1 dimension");

    unsigned char dims[255 * 4];
    read_exact(dims, 4 * ndims, std::to_string(ndims) + " big-endian dimension sizes");
    std::uint64_t count = 1, needed = 0;
    bool fits = true;
    for (std::size_t d = 0; d < ndims; ++d) {
        const std::uint64_t dim = idx_detail::get_be32(dims + 4 * d);
        result.shape.push_back(static_cast<std::size_t>(dim));
        fits = fits && (dim == 0 || count <= std::numeric_limits<std::uint64_t>::max() / dim);
        if (fits) count *= dim;
    }
    fits = fits && count <= std::numeric_limits<std::uint64_t>::max() / item_size;
    if (fits) needed = count * item_size;
    const std::string layout = "shape " + idx_detail::shape_text(result.shape) + " of " +
                               std::string(idx_type_name(result.type));
    if (!fits || needed > std::numeric_limits<std::size_t>::max())
        in.fail_at(4, "the dimensions of " + layout + " overflow 64 bits; expected a valid shape (corrupt header?)");
    const std::uint64_t header_size = in.position();
    if (needed > in.max_remaining())
        in.fail_at(header_size,
                   "expected " + std::to_string(needed) + " bytes of data for " + layout + ", but " +
                       (in.gzip() ? "the " + std::to_string(in.file_size()) +
                                        "-byte compressed file cannot hold more than " +
                                        std::to_string(in.max_remaining()) + " (corrupt header or truncated?)"
                                  : "the file has only " + std::to_string(in.max_remaining()) +
                                        " after the header (truncated, or corrupt header?)"));

    // For gzip the decompressed size is only known by decompressing, so grow towards `needed`
    // as data arrives instead of trusting the header with one large allocation.
    const std::uint64_t first = in.gzip() ? std::min<std::uint64_t>(needed, 4 * in.file_size() + (1 << 16)) : needed;
    result.data.resize(static_cast<std::size_t>(first));
    std::size_t filled = 0;
    for (;;) {
        filled += in.read(result.data.data() + filled, result.data.size() - filled);
        if (filled < result.data.size() || result.data.size() == needed) break;
        result.data.resize(static_cast<std::size_t>(std::min<std::uint64_t>(needed, 2 * result.data.size())));
    }
    if (filled < needed)
        in.fail_at(header_size + filled, "expected " + std::to_string(needed) + " bytes of data for " + layout +
                                             ", the data ends after " + std::to_string(filled) + " (truncated?)");
    const std::uint64_t end = in.position();
    if (const std::uint64_t extra = in.drain(); extra != 0)
        in.fail_at(end, std::to_string(extra) + " bytes follow the " + std::to_string(needed) + " bytes of data for " +
                            layout + "; expected the data to end here (trailing garbage, or a wrong header)");
    return result;
}

/// Reads an IDX file as read_idx_raw does and converts its elements to float.
inline idx_array read_idx(const std::filesystem::path& path) {
    idx_raw raw = read_idx_raw(path);
    idx_array result;
    result.type = raw.type;
    const std::size_t item_size = idx_item_size(raw.type);
    const std::size_t n = raw.data.size() / item_size;
    result.values.resize(n);
    const unsigned char* p = raw.data.data();
    float* out = result.values.data();
    switch (raw.type) {
        case idx_type::ubyte:
            for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(p[i]);
            break;
        case idx_type::sbyte:
            for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<std::int8_t>(p[i]));
            break;
        case idx_type::int16:
            for (std::size_t i = 0; i < n; ++i)
                out[i] = static_cast<float>(static_cast<std::int16_t>((p[2 * i] << 8) | p[2 * i + 1]));
            break;
        case idx_type::int32:
            for (std::size_t i = 0; i < n; ++i)
                out[i] = static_cast<float>(static_cast<std::int32_t>(idx_detail::get_be32(p + 4 * i)));
            break;
        case idx_type::float32:
            for (std::size_t i = 0; i < n; ++i) out[i] = std::bit_cast<float>(idx_detail::get_be32(p + 4 * i));
            break;
        case idx_type::float64:
            for (std::size_t i = 0; i < n; ++i) {
                const std::uint64_t bits =
                    (std::uint64_t{idx_detail::get_be32(p + 8 * i)} << 32) | idx_detail::get_be32(p + 8 * i + 4);
                const double value = std::bit_cast<double>(bits);
                // Out-of-range doubles become infinities; the plain cast would be undefined.
                constexpr float infinity = std::numeric_limits<float>::infinity();
                out[i] = value >= 0x1p128 ? infinity : value <= -0x1p128 ? -infinity : static_cast<float>(value);
            }
            break;
    }
    result.shape = std::move(raw.shape);
    return result;
}

}  // namespace batchwise::data
