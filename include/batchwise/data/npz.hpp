// NumPy .npz archives (a ZIP of NAME.npy arrays) and standalone .npy files: the format of weights,
// checkpoints and array datasets, written so numpy.load reads it and read from np.save(z).
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <zlib.h>

#include "batchwise/core/errors.hpp"

namespace batchwise::data {

/// Element type of an npz_array, which decides which of its vectors holds the data.
enum class npz_dtype { float32, int64 };

/// One array of an archive in C (row-major) order: float32 `values`, or, for dtype int64,
/// exact 64-bit `integers` (step counters and seeds do not survive a trip through float).
/// The vector that does not match `dtype` stays empty; `npz_array{shape, values}` is float32.
struct npz_array {
    std::vector<std::size_t> shape;        // C order; {} means a 0-d scalar
    std::vector<float> values;             // float32: shape product elements, row-major
    std::vector<std::int64_t> integers{};  // int64: shape product elements, row-major
    npz_dtype dtype = npz_dtype::float32;
};

/// An int64 array, the counterpart of aggregate-initialising a float32 one.
inline npz_array int64_array(std::vector<std::size_t> shape, std::vector<std::int64_t> integers) {
    return npz_array{std::move(shape), {}, std::move(integers), npz_dtype::int64};
}

namespace npz_detail {

using bytes = std::vector<unsigned char>;

// Record signatures and fixed sizes from PKWARE's APPNOTE.TXT, section 4.3.
inline constexpr std::uint32_t local_header_signature = 0x04034b50;
inline constexpr std::uint32_t central_header_signature = 0x02014b50;
inline constexpr std::uint32_t end_record_signature = 0x06054b50;
inline constexpr std::uint32_t zip64_locator_signature = 0x07064b50;
inline constexpr std::uint64_t local_header_size = 30;
inline constexpr std::uint64_t central_header_size = 46;
inline constexpr std::uint64_t end_record_size = 22;
inline constexpr std::uint64_t zip64_locator_size = 20;
inline constexpr std::uint64_t max_comment_size = 0xFFFF;
inline constexpr std::uint16_t method_stored = 0;
inline constexpr std::uint16_t method_deflate = 8;
// A 32-bit field of all ones means "the real value is in a ZIP64 record".
inline constexpr std::uint32_t zip64_marker = 0xFFFFFFFF;
inline constexpr std::string_view npy_magic = "\x93NUMPY";
inline constexpr std::string_view npy_suffix = ".npy";

inline std::uint64_t get_le(const unsigned char* p, int size) {
    std::uint64_t v = 0;
    for (int i = size - 1; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}
inline std::uint16_t get_u16(const unsigned char* p) { return static_cast<std::uint16_t>(get_le(p, 2)); }
inline std::uint32_t get_u32(const unsigned char* p) { return static_cast<std::uint32_t>(get_le(p, 4)); }

inline void put_le(bytes& out, std::uint64_t v, int size) {
    for (int i = 0; i < size; ++i) out.push_back(static_cast<unsigned char>(v >> (8 * i)));
}
inline void put_u16(bytes& out, std::uint64_t v) { put_le(out, v, 2); }
inline void put_u32(bytes& out, std::uint64_t v) { put_le(out, v, 4); }

using batchwise::detail::in_quotes;

inline std::string hex32(std::uint32_t v) {
    constexpr std::string_view digits = "0123456789abcdef";
    std::string s = "0x";
    for (int shift = 28; shift >= 0; shift -= 4) s += digits[(v >> shift) & 0xF];
    return s;
}

/// A shape as Python writes the tuple: (), (5,), (2, 3).
inline std::string shape_text(const std::vector<std::size_t>& shape) {
    std::string text = "(";
    for (std::size_t d = 0; d < shape.size(); ++d)
        text += std::to_string(shape[d]) + (shape.size() == 1 ? "," : d + 1 < shape.size() ? ", " : "");
    return text + ")";
}

// `who` is the public function a message starts with, so a standalone .npy error says read_npy.
[[noreturn]] inline void fail_at(std::string_view who, const std::filesystem::path& file,
                                 std::uint64_t offset, const std::string& what) {
    throw io_error(std::string(who) + ": " + in_quotes(file.string()) + ", byte " +
                   std::to_string(offset) + ": " + what);
}

[[noreturn]] inline void fail_at(const std::filesystem::path& file, std::uint64_t offset,
                                 const std::string& what) {
    fail_at("read_npz", file, offset, what);
}

[[noreturn]] inline void fail_file(std::string_view who, const std::filesystem::path& file,
                                   const std::string& what) {
    throw io_error(std::string(who) + ": " + in_quotes(file.string()) + ": " + what);
}

[[noreturn]] inline void fail_write(const std::filesystem::path& file, const std::string& what) {
    fail_file("write_npz", file, what);
}

/// Checked a * b; false on overflow.
inline bool multiply(std::uint64_t a, std::uint64_t b, std::uint64_t& result) {
    if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return false;
    result = a * b;
    return true;
}

inline std::uint32_t crc32_of(const bytes& data) {
    uLong crc = crc32(0L, Z_NULL, 0);
    // zlib takes 32-bit lengths, so feed long buffers in pieces.
    constexpr std::size_t piece = std::size_t{1} << 30;
    for (std::size_t done = 0; done < data.size(); done += piece) {
        const std::size_t n = std::min(piece, data.size() - done);
        crc = crc32(crc, data.data() + done, static_cast<uInt>(n));
    }
    return static_cast<std::uint32_t>(crc);
}

/// Reads byte ranges of one file, refusing any range that is not inside it, so a corrupt
/// length field can neither read out of bounds nor make us allocate more than the file holds.
class input_file {
public:
    explicit input_file(const std::filesystem::path& path, std::string_view who = "read_npz")
        : path_(path), who_(who) {
        std::error_code ec;
        const auto status = std::filesystem::status(path, ec);
        if (!std::filesystem::exists(status)) fail_file(who_, path, "no such file");
        if (!std::filesystem::is_regular_file(status)) fail_file(who_, path, "not a regular file");
        size_ = std::filesystem::file_size(path, ec);
        stream_.open(path, std::ios::binary);
        if (ec || !stream_)
            fail_file(who_, path, "cannot open for reading" + (ec ? " (" + ec.message() + ")" : std::string()));
    }

    [[nodiscard]] std::uint64_t size() const noexcept { return size_; }
    [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

    bytes read(std::uint64_t offset, std::uint64_t count, const std::string& what) {
        if (offset > size_ || count > size_ - offset)
            fail_at(who_, path_, offset,
                    "expected " + std::to_string(count) + " bytes of " + what +
                        ", but the file ends at byte " + std::to_string(size_) + " (truncated?)");
        bytes buffer(static_cast<std::size_t>(count));
        stream_.clear();
        stream_.seekg(static_cast<std::streamoff>(offset));
        stream_.read(reinterpret_cast<char*>(buffer.data()), static_cast<std::streamsize>(count));
        if (!stream_ || static_cast<std::uint64_t>(stream_.gcount()) != count)
            fail_at(who_, path_, offset, "read error while reading " + what);
        return buffer;
    }

private:
    std::filesystem::path path_;
    std::string_view who_;
    std::ifstream stream_;
    std::uint64_t size_ = 0;
};

/// What the central directory says about one entry.
struct central_entry {
    std::string name;
    std::uint64_t record_offset = 0;  // of this central directory record
    std::uint16_t flags = 0;
    std::uint16_t method = 0;
    std::uint32_t crc = 0;
    std::uint64_t compressed_size = 0;
    std::uint64_t size = 0;
    std::uint64_t local_offset = 0;
};

/// Where an entry's bytes came from, so errors inside its .npy data can say where they are.
struct entry_place {
    const std::filesystem::path& file;
    const std::string& name;
    std::uint64_t data_offset;  // file byte where the entry's (compressed) data starts
    bool stored;
    bool standalone = false;  // a .npy file of its own (read_npy), not an archive entry

    [[nodiscard]] const char* unit() const noexcept { return standalone ? "file" : "entry"; }
};

[[noreturn]] inline void fail_in_entry(const entry_place& at, std::uint64_t npy_offset,
                                       const std::string& what) {
    if (at.standalone) fail_at("read_npy", at.file, npy_offset, what);
    if (at.stored)
        fail_at(at.file, at.data_offset + npy_offset,
                "(byte " + std::to_string(npy_offset) + " of entry " + in_quotes(at.name) + ") " + what);
    throw io_error("read_npz: " + in_quotes(at.file.string()) + ", entry " + in_quotes(at.name) +
                   " (deflated, data at byte " + std::to_string(at.data_offset) + "), byte " +
                   std::to_string(npy_offset) + " after inflating: " + what);
}

struct end_record {
    std::uint64_t entries = 0;
    std::uint64_t directory_offset = 0;
    std::uint64_t directory_size = 0;
};

inline end_record read_end_record(input_file& in) {
    const auto& path = in.path();
    if (in.size() < end_record_size)
        fail_at(path, 0,
                "expected a ZIP archive of at least 22 bytes, the file has " +
                    std::to_string(in.size()) + " (not an .npz archive, or truncated)");
    // The end record is followed only by its comment, so it lies in the last 64 KiB + 22 bytes;
    // a match must also have a comment length that reaches exactly to the end of the file.
    const std::uint64_t tail_size = std::min(in.size(), end_record_size + max_comment_size);
    const std::uint64_t tail_start = in.size() - tail_size;
    const bytes tail = in.read(tail_start, tail_size, "end of archive");
    std::uint64_t pos = tail_size - end_record_size;
    for (;; --pos) {
        const unsigned char* p = tail.data() + pos;
        if (get_u32(p) == end_record_signature && get_u16(p + 20) == tail_size - pos - end_record_size)
            break;
        if (pos == 0)
            fail_at(path, tail_start,
                    "expected a ZIP end-of-central-directory record (signature PK\\5\\6) in the "
                    "last " + std::to_string(tail_size) +
                        " bytes, found none (not an .npz archive, or truncated)");
    }
    const unsigned char* p = tail.data() + pos;
    const std::uint64_t at = tail_start + pos;
    const bool zip64_locator =
        pos >= zip64_locator_size && get_u32(p - zip64_locator_size) == zip64_locator_signature;
    if (zip64_locator || get_u16(p + 10) == 0xFFFF || get_u32(p + 12) == zip64_marker ||
        get_u32(p + 16) == zip64_marker)
        fail_at(path, at,
                "ZIP64 archive; expected a plain ZIP (read_npz does not support ZIP64, which "
                "only archives over 4 GiB or 65535 entries need)");
    if (get_u16(p + 4) != 0 || get_u16(p + 6) != 0 || get_u16(p + 8) != get_u16(p + 10))
        fail_at(path, at, "multi-disk ZIP archive; expected a single-file archive");
    end_record record{get_u16(p + 10), get_u32(p + 16), get_u32(p + 12)};
    if (record.directory_offset + record.directory_size > at)
        fail_at(path, at + 12,
                "central directory of " + std::to_string(record.directory_size) +
                    " bytes at byte " + std::to_string(record.directory_offset) +
                    " overruns the end record at byte " + std::to_string(at) + "; expected it before");
    if (record.entries * central_header_size > record.directory_size)
        fail_at(path, at + 10,
                std::to_string(record.entries) + " entries cannot fit a central directory of " +
                    std::to_string(record.directory_size) + " bytes; expected at least " +
                    std::to_string(central_header_size) + " bytes per entry");
    return record;
}

inline std::vector<central_entry> read_central_directory(input_file& in, const end_record& end) {
    const auto& path = in.path();
    const bytes dir = in.read(end.directory_offset, end.directory_size, "central directory");
    std::vector<central_entry> entries;
    entries.reserve(static_cast<std::size_t>(end.entries));
    std::set<std::string> names;
    std::uint64_t pos = 0;
    for (std::uint64_t i = 0; i < end.entries; ++i) {
        const std::uint64_t at = end.directory_offset + pos;
        if (end.directory_size - pos < central_header_size)
            fail_at(path, at, "expected central directory record " + std::to_string(i) +
                                  " of 46 bytes, the directory ends at byte " +
                                  std::to_string(end.directory_offset + end.directory_size));
        const unsigned char* p = dir.data() + pos;
        if (get_u32(p) != central_header_signature)
            fail_at(path, at, "expected central directory record signature PK\\1\\2, found " +
                                  hex32(get_u32(p)));
        const std::uint64_t name_size = get_u16(p + 28);
        const std::uint64_t record_size = central_header_size + name_size + get_u16(p + 30) + get_u16(p + 32);
        if (end.directory_size - pos < record_size)
            fail_at(path, at, "central directory record of " + std::to_string(record_size) +
                                  " bytes runs past the end of the directory");
        central_entry entry;
        entry.name.assign(reinterpret_cast<const char*>(p + central_header_size),
                          static_cast<std::size_t>(name_size));
        entry.record_offset = at;
        entry.flags = get_u16(p + 8);
        entry.method = get_u16(p + 10);
        entry.crc = get_u32(p + 16);
        entry.compressed_size = get_u32(p + 20);
        entry.size = get_u32(p + 24);
        entry.local_offset = get_u32(p + 42);
        if (entry.compressed_size == zip64_marker || entry.size == zip64_marker ||
            entry.local_offset == zip64_marker)
            fail_at(path, at, "entry " + in_quotes(entry.name) +
                                  " needs ZIP64 (over 4 GiB); expected a plain ZIP entry");
        if ((entry.flags & 0x41) != 0)
            fail_at(path, at + 8, "entry " + in_quotes(entry.name) +
                                      " is encrypted; expected an unencrypted entry");
        if (entry.name.size() <= npy_suffix.size() || !entry.name.ends_with(npy_suffix))
            fail_at(path, at + central_header_size,
                    "entry " + in_quotes(entry.name) + ": expected a name ending in .npy");
        if (!names.insert(entry.name).second)
            fail_at(path, at, "duplicate entry name " + in_quotes(entry.name) +
                                  "; expected each array name once");
        entries.push_back(std::move(entry));
        pos += record_size;
    }
    return entries;
}

inline bytes inflate_entry(const bytes& compressed, std::uint64_t expected_size, const entry_place& at) {
    const auto fail = [&](std::uint64_t compressed_offset, const std::string& what) {
        fail_at(at.file, at.data_offset + compressed_offset,
                "entry " + in_quotes(at.name) + ": " + what);
    };
    z_stream stream{};
    // Negative window bits: ZIP holds raw deflate data, without a zlib header or trailer.
    if (inflateInit2(&stream, -MAX_WBITS) != Z_OK) fail(0, "cannot initialise zlib inflate");
    struct end_inflate {
        z_stream& s;
        ~end_inflate() { inflateEnd(&s); }
    } guard{stream};
    stream.next_in = const_cast<Bytef*>(compressed.data());
    stream.avail_in = static_cast<uInt>(compressed.size());
    // Grow the output as data actually arrives instead of trusting the recorded size, so a corrupt
    // size field cannot make us allocate far more than the compressed data can produce. One byte
    // past the recorded size is room enough to notice a stream that is longer than recorded.
    const std::uint64_t limit = expected_size + 1;
    bytes out(static_cast<std::size_t>(std::min<std::uint64_t>(limit, compressed.size() * 4 + 65536)));
    for (;;) {
        stream.next_out = out.data() + stream.total_out;
        stream.avail_out = static_cast<uInt>(std::min<std::uint64_t>(
            out.size() - stream.total_out, std::numeric_limits<uInt>::max()));
        const int rc = inflate(&stream, Z_NO_FLUSH);
        if (rc == Z_STREAM_END) break;
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            fail(stream.total_in, std::string("corrupt deflate data (zlib: ") +
                                      (stream.msg ? stream.msg : "error " + std::to_string(rc)) +
                                      "); expected a valid deflate stream");
        if (stream.total_out > expected_size) break;
        if (stream.avail_out == 0)
            out.resize(static_cast<std::size_t>(std::min<std::uint64_t>(limit, out.size() * 2)));
        else if (stream.avail_in == 0)
            fail(stream.total_in, "deflate stream ends without its final block after " +
                                      std::to_string(stream.total_in) +
                                      " bytes; expected more data (truncated?)");
    }
    if (stream.total_out > expected_size)
        fail(stream.total_in, "inflates to more than the " + std::to_string(expected_size) +
                                  " bytes recorded in the central directory");
    if (stream.total_out != expected_size)
        fail(stream.total_in, "inflates to " + std::to_string(stream.total_out) + " bytes, expected " +
                                  std::to_string(expected_size) + " as recorded in the central directory");
    out.resize(static_cast<std::size_t>(stream.total_out));
    return out;
}

// Keeps "expected '<f4' or '<f8'" first: callers that only want floats match on that text.
inline constexpr const char* supported_dtypes =
    "; expected '<f4' or '<f8' (read as float32), or '<i8', '<i4', '<i2', '|i1', '<u8', '<u4', '<u2' "
    "or '|u1' (read as int64)";

/// The few Python literals an .npy header holds: a dict of strings, True/False and int tuples.
class npy_header_parser {
public:
    npy_header_parser(std::string_view text, std::uint64_t base, const entry_place& at)
        : text_(text), base_(base), at_(at) {}

    [[noreturn]] void fail(const std::string& what) const {
        fail_in_entry(at_, base_ + pos_, ".npy header: " + what + ", found " + in_quotes(excerpt()));
    }

    void skip_space() {
        while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n'))
            ++pos_;
    }

    bool accept(char c) {
        skip_space();
        if (pos_ < text_.size() && text_[pos_] == c) {
            ++pos_;
            return true;
        }
        return false;
    }

    void expect(char c) {
        if (!accept(c)) fail(std::string("expected '") + c + "'");
    }

    [[nodiscard]] bool at_quote() {
        skip_space();
        return pos_ < text_.size() && (text_[pos_] == '\'' || text_[pos_] == '"');
    }

    std::string string_literal() {
        if (!at_quote()) fail("expected a quoted string");
        const char quote = text_[pos_];
        const std::size_t end = text_.find(quote, pos_ + 1);
        if (end == std::string_view::npos) fail("expected a closing quote");
        std::string value(text_.substr(pos_ + 1, end - pos_ - 1));
        pos_ = end + 1;
        return value;
    }

    bool boolean() {
        skip_space();
        if (text_.substr(pos_).starts_with("True")) {
            pos_ += 4;
            return true;
        }
        if (text_.substr(pos_).starts_with("False")) {
            pos_ += 5;
            return false;
        }
        fail("expected True or False");
    }

    std::vector<std::size_t> int_tuple() {
        expect('(');
        std::vector<std::size_t> values;
        while (!accept(')')) {
            skip_space();
            if (pos_ >= text_.size() || text_[pos_] < '0' || text_[pos_] > '9')
                fail("expected a non-negative dimension");
            std::uint64_t value = 0;
            while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
                const auto digit = static_cast<std::uint64_t>(text_[pos_] - '0');
                if (!multiply(value, 10, value) || value > std::numeric_limits<std::size_t>::max() - digit)
                    fail("dimension too large");
                value += digit;
                ++pos_;
            }
            if (pos_ < text_.size() && text_[pos_] == 'L') ++pos_;  // Python 2 long, as in old files
            values.push_back(static_cast<std::size_t>(value));
            if (!accept(',')) {
                expect(')');
                break;
            }
        }
        return values;
    }

    /// The unparsed text from here, for messages about values we do not support.
    [[nodiscard]] std::string excerpt() const {
        std::string_view rest = text_.substr(std::min(pos_, text_.size()));
        rest = rest.substr(0, std::min<std::size_t>(rest.find('\n'), 40));
        return std::string(rest);
    }

    [[nodiscard]] std::uint64_t offset() const noexcept { return base_ + pos_; }

private:
    std::string_view text_;
    std::uint64_t base_;
    const entry_place& at_;
    std::size_t pos_ = 0;
};

struct npy_header {
    std::string descr;
    bool fortran_order = false;
    std::vector<std::size_t> shape;
};

inline npy_header parse_npy_header(std::string_view text, std::uint64_t base, const entry_place& at) {
    npy_header_parser parser(text, base, at);
    npy_header header;
    bool seen_descr = false, seen_order = false, seen_shape = false;
    parser.expect('{');
    while (!parser.accept('}')) {
        const std::uint64_t key_offset = parser.offset();
        const std::string key = parser.string_literal();
        parser.expect(':');
        bool* seen = nullptr;
        if (key == "descr") {
            // Structured dtypes are lists; name them in the message rather than fail to parse.
            if (!parser.at_quote())
                fail_in_entry(at, parser.offset(), "unsupported dtype " + parser.excerpt() + supported_dtypes);
            header.descr = parser.string_literal();
            seen = &seen_descr;
        } else if (key == "fortran_order") {
            header.fortran_order = parser.boolean();
            seen = &seen_order;
        } else if (key == "shape") {
            header.shape = parser.int_tuple();
            seen = &seen_shape;
        } else {
            fail_in_entry(at, key_offset,
                          ".npy header: unexpected key '" + key +
                              "'; expected only 'descr', 'fortran_order' and 'shape'");
        }
        if (*seen) fail_in_entry(at, key_offset, ".npy header: key '" + key + "' appears twice");
        *seen = true;
        if (!parser.accept(',')) {
            parser.expect('}');
            break;
        }
    }
    if (!seen_descr || !seen_order || !seen_shape)
        fail_in_entry(at, base,
                      ".npy header lacks '" +
                          std::string(!seen_descr ? "descr" : !seen_order ? "fortran_order" : "shape") +
                          "'; expected 'descr', 'fortran_order' and 'shape'");
    return header;
}

/// Fortran (column-major) order to C order: walk the C-order indices and follow the matching
/// Fortran offset, which changes by that dimension's Fortran stride as an index steps.
template <class T>
std::vector<T> fortran_to_c(const std::vector<T>& in, const std::vector<std::size_t>& shape) {
    if (shape.size() < 2 || in.empty()) return in;
    std::vector<std::size_t> stride(shape.size(), 1);
    for (std::size_t d = 1; d < shape.size(); ++d) stride[d] = stride[d - 1] * shape[d - 1];
    std::vector<std::size_t> index(shape.size(), 0);
    std::vector<T> out(in.size());
    std::size_t from = 0;
    for (T& value : out) {
        value = in[from];
        for (std::size_t d = shape.size(); d-- > 0;) {
            from += stride[d];
            if (++index[d] < shape[d]) break;
            from -= stride[d] * shape[d];
            index[d] = 0;
        }
    }
    return out;
}

/// What an .npy descr names: NumPy writes one-byte types with '|' (no byte order), and we also
/// take '<' for them, as some writers use it.
struct npy_dtype {
    bool floating = false;
    bool is_signed = false;
    unsigned size = 0;  // bytes per element; 0: unsupported
};

inline npy_dtype dtype_of(std::string_view descr) {
    if (descr.size() != 3) return {};
    const char order = descr[0], kind = descr[1], digit = descr[2];
    const unsigned size = digit == '1' ? 1 : digit == '2' ? 2 : digit == '4' ? 4 : digit == '8' ? 8 : 0;
    if (size == 0 || !(order == '<' || (order == '|' && size == 1))) return {};
    if (kind == 'f') return size >= 4 ? npy_dtype{true, true, size} : npy_dtype{};
    if (kind == 'i') return {false, true, size};
    if (kind == 'u') return {false, false, size};
    return {};
}

inline npz_array parse_npy(const bytes& npy, const entry_place& at) {
    if (npy.size() < 10 || std::string_view(reinterpret_cast<const char*>(npy.data()), 6) != npy_magic)
        fail_in_entry(at, 0, std::string("expected the .npy magic \\x93NUMPY at the start of the ") + at.unit());
    const unsigned major = npy[6], minor = npy[7];
    std::uint64_t header_start = 0, header_size = 0;
    if (major == 1) {
        header_start = 10;
        header_size = get_u16(npy.data() + 8);
    } else if ((major == 2 || major == 3) && npy.size() >= 12) {
        header_start = 12;
        header_size = get_u32(npy.data() + 8);
    } else {
        fail_in_entry(at, 6, "unsupported .npy format version " + std::to_string(major) + "." +
                                 std::to_string(minor) + "; expected 1.0, 2.0 or 3.0");
    }
    if (header_size > npy.size() - header_start)
        fail_in_entry(at, 8, ".npy header length " + std::to_string(header_size) + " runs past the end of the " +
                                 at.unit() + " (" + std::to_string(npy.size()) + " bytes)");
    const npy_header header = parse_npy_header(
        std::string_view(reinterpret_cast<const char*>(npy.data() + header_start),
                         static_cast<std::size_t>(header_size)),
        header_start, at);

    const npy_dtype dtype = dtype_of(header.descr);
    if (dtype.size == 0)
        fail_in_entry(at, header_start, "unsupported dtype '" + header.descr + "'" + std::string(supported_dtypes));
    const std::uint64_t item_size = dtype.size;

    const std::uint64_t data_start = header_start + header_size;
    const std::uint64_t data_size = npy.size() - data_start;
    std::uint64_t count = 1, needed = 0;
    bool fits = true;
    for (const std::size_t dim : header.shape) fits = fits && multiply(count, dim, count);
    if (!fits || !multiply(count, item_size, needed))
        fail_in_entry(at, header_start,
                      "shape " + shape_text(header.shape) +
                          " has more elements than can be addressed; expected a valid shape");
    if (needed != data_size)
        fail_in_entry(at, data_start,
                      "expected " + std::to_string(needed) + " bytes of array data for shape " +
                          shape_text(header.shape) + " of '" + header.descr + "', the " + at.unit() +
                          " has " + std::to_string(data_size));

    npz_array array;
    array.shape = header.shape;
    const unsigned char* data = npy.data() + data_start;
    const auto n = static_cast<std::size_t>(count);
    if (!dtype.floating) {
        array.dtype = npz_dtype::int64;
        array.integers.resize(n);
        const unsigned bits = 8 * dtype.size;
        for (std::size_t i = 0; i < n; ++i) {
            const std::uint64_t raw = get_le(data + item_size * i, static_cast<int>(item_size));
            if (!dtype.is_signed && raw > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
                fail_in_entry(at, data_start + item_size * i,
                              "element " + std::to_string(i) + " of the '" + header.descr + "' array is " +
                                  std::to_string(raw) + ", which does not fit int64; expected at most 2^63-1");
            // Shift the sign bit to the top and back (arithmetic in C++20) to sign-extend.
            array.integers[i] = dtype.is_signed && bits < 64
                                    ? static_cast<std::int64_t>(raw << (64 - bits)) >> (64 - bits)
                                    : static_cast<std::int64_t>(raw);
        }
        if (header.fortran_order) array.integers = fortran_to_c(array.integers, array.shape);
        return array;
    }
    array.values.resize(n);
    if (item_size == 4) {
        for (std::size_t i = 0; i < n; ++i)
            array.values[i] = std::bit_cast<float>(static_cast<std::uint32_t>(get_le(data + 4 * i, 4)));
    } else {
        for (std::size_t i = 0; i < n; ++i) {
            const double value = std::bit_cast<double>(get_le(data + 8 * i, 8));
            // Out-of-range doubles become infinities, as NumPy's astype does; the cast alone
            // would be undefined behaviour for them.
            constexpr float infinity = std::numeric_limits<float>::infinity();
            array.values[i] = value >= 0x1p128    ? infinity
                              : value <= -0x1p128 ? -infinity
                                                  : static_cast<float>(value);
        }
    }
    if (header.fortran_order) array.values = fortran_to_c(array.values, array.shape);
    return array;
}

inline std::pair<std::string, npz_array> read_entry(input_file& in, const central_entry& entry) {
    const auto& path = in.path();
    const std::string context = " of entry " + in_quotes(entry.name) + " (per the central directory record at byte " +
                                std::to_string(entry.record_offset) + ")";
    const bytes local = in.read(entry.local_offset, local_header_size, "local file header" + context);
    if (get_u32(local.data()) != local_header_signature)
        fail_at(path, entry.local_offset,
                "expected local file header signature PK\\3\\4" + context + ", found " +
                    hex32(get_u32(local.data())));
    // Sizes, CRC and method come from the central directory: the local header may defer them to
    // a data descriptor, or (np.savez forces ZIP64 on every entry) hold ZIP64 placeholders.
    const std::uint64_t name_size = get_u16(local.data() + 26);
    const std::uint64_t extra_size = get_u16(local.data() + 28);
    const bytes local_name = in.read(entry.local_offset + local_header_size, name_size, "entry name" + context);
    if (std::string_view(reinterpret_cast<const char*>(local_name.data()), local_name.size()) != entry.name)
        fail_at(path, entry.local_offset + local_header_size,
                "local file header names " + in_quotes(std::string(local_name.begin(), local_name.end())) +
                    "; expected " + in_quotes(entry.name) + " as in the central directory");
    const std::uint64_t data_offset = entry.local_offset + local_header_size + name_size + extra_size;
    const entry_place place{path, entry.name, data_offset, entry.method == method_stored};

    if (entry.method != method_stored && entry.method != method_deflate)
        fail_at(path, entry.record_offset + 10,
                "entry " + in_quotes(entry.name) + " uses compression method " + std::to_string(entry.method) +
                    "; expected 0 (stored) or 8 (deflate)");
    if (entry.method == method_stored && entry.compressed_size != entry.size)
        fail_at(path, entry.record_offset + 20,
                "stored entry " + in_quotes(entry.name) + " records compressed size " +
                    std::to_string(entry.compressed_size) + " and size " + std::to_string(entry.size) +
                    "; expected them equal");
    bytes data = in.read(data_offset, entry.compressed_size, "data" + context);
    if (entry.method == method_deflate) data = inflate_entry(data, entry.size, place);
    const std::uint32_t crc = crc32_of(data);
    if (crc != entry.crc)
        fail_at(path, data_offset,
                "CRC-32 of entry " + in_quotes(entry.name) + " is " + hex32(crc) + ", expected " +
                    hex32(entry.crc) + " from the central directory (corrupt data)");
    return {entry.name.substr(0, entry.name.size() - npy_suffix.size()), parse_npy(data, place)};
}

/// The .npy v1.0 header numpy itself writes for a C-order array of this dtype and shape.
inline bytes npy_preamble(const std::vector<std::size_t>& shape, std::string_view descr = "<f4") {
    std::string dict = "{'descr': '" + std::string(descr) + "', 'fortran_order': False, 'shape': " +
                       shape_text(shape) + ", }";
    // Like numpy, pad with spaces so the data starts on a 64-byte boundary (aligned memory
    // mapping) and end the header with a newline.
    const bool version_2 = 10 + dict.size() + 1 > 0xFFFF;
    const std::size_t preamble = version_2 ? 12 : 10;
    dict.append((64 - (preamble + dict.size() + 1) % 64) % 64, ' ');
    dict += '\n';
    bytes out(npy_magic.begin(), npy_magic.end());
    out.push_back(version_2 ? 2 : 1);
    out.push_back(0);
    put_le(out, dict.size(), version_2 ? 4 : 2);
    out.insert(out.end(), dict.begin(), dict.end());
    return out;
}

inline bytes npy_bytes(const npz_array& array) {
    if (array.dtype == npz_dtype::int64) {
        bytes out = npy_preamble(array.shape, "<i8");
        out.reserve(out.size() + 8 * array.integers.size());
        for (const std::int64_t value : array.integers) put_le(out, static_cast<std::uint64_t>(value), 8);
        return out;
    }
    bytes out = npy_preamble(array.shape);
    out.reserve(out.size() + 4 * array.values.size());
    for (const float value : array.values) put_u32(out, std::bit_cast<std::uint32_t>(value));
    return out;
}

/// Checks that the vector `dtype` selects holds the shape's element count and the other is
/// empty, so a half-converted array is refused instead of silently losing its other half.
inline void validate_array(std::string_view who, const std::filesystem::path& path, const std::string& label,
                           const npz_array& array) {
    const bool integer = array.dtype == npz_dtype::int64;
    if (!integer && array.dtype != npz_dtype::float32)
        fail_file(who, path, label + " has an unknown dtype; expected float32 or int64");
    const std::size_t held = integer ? array.integers.size() : array.values.size();
    const std::size_t other = integer ? array.values.size() : array.integers.size();
    std::uint64_t count = 1;
    bool fits = true;
    for (const std::size_t dim : array.shape) fits = fits && multiply(count, dim, count);
    if (!fits || count != held)
        fail_file(who, path, label + " has " + std::to_string(held) + (integer ? " integers" : " values") +
                                  "; expected the product of its shape" +
                                  (fits ? " (" + std::to_string(count) + ")" : std::string()));
    if (other != 0)
        fail_file(who, path, label + " is " + (integer ? "int64" : "float32") + " but also holds " +
                                  std::to_string(other) + (integer ? " float values" : " integers") +
                                  "; expected only the vector its dtype selects");
}

/// Checks everything that can be checked before the first byte is written, so bad arguments
/// never leave a temporary file behind.
inline void validate_for_write(const std::filesystem::path& path,
                               const std::vector<std::pair<std::string, npz_array>>& arrays) {
    if (arrays.size() >= 0xFFFF)
        fail_write(path, std::to_string(arrays.size()) +
                             " arrays; a plain ZIP holds at most 65534 (ZIP64 is not supported)");
    std::set<std::string_view> names;
    for (const auto& [name, array] : arrays) {
        if (name.empty()) fail_write(path, "an array has an empty name; expected a non-empty name");
        if (name.find('\0') != std::string::npos)
            fail_write(path, "array name " + in_quotes(name) + " contains a NUL byte");
        if (name.size() + npy_suffix.size() > 0xFFFF)
            fail_write(path, "array name of " + std::to_string(name.size()) + " bytes is too long for ZIP");
        if (!names.insert(name).second)
            fail_write(path, "duplicate array name " + in_quotes(name) + "; expected each name once");
        validate_array("write_npz", path, "array " + in_quotes(name), array);
    }
}

inline void write_archive(std::ofstream& out, const std::filesystem::path& path,
                          const std::vector<std::pair<std::string, npz_array>>& arrays) {
    // A fixed timestamp (1980-01-01 00:00, the DOS epoch) makes saving the same arrays produce
    // the same bytes, so weight files can be compared and cached by content.
    constexpr std::uint16_t dos_time = 0, dos_date = (0 << 9) | (1 << 5) | 1;
    constexpr std::uint16_t version_needed = 20;            // 2.0: plain stored entries
    constexpr std::uint16_t version_made_by = (3 << 8) | 20;  // Unix, so unzip applies the mode below
    constexpr std::uint32_t unix_regular_file_0644 = 0100644u << 16;
    bytes directory;
    std::uint64_t offset = 0;
    for (const auto& [name, array] : arrays) {
        const std::string entry_name = name + std::string(npy_suffix);
        const bytes npy = npy_bytes(array);
        if (npy.size() >= zip64_marker || offset >= zip64_marker)
            fail_write(path, "array " + in_quotes(name) + " would put the archive past 4 GiB, which needs "
                                                     "ZIP64 (not supported)");
        const std::uint32_t crc = crc32_of(npy);
        // Bit 11: the name is UTF-8, which is how std::string names reach us.
        const bool non_ascii = std::any_of(entry_name.begin(), entry_name.end(),
                                           [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
        const std::uint16_t flags = non_ascii ? 0x800 : 0;

        bytes local;
        put_u32(local, local_header_signature);
        put_u16(local, version_needed);
        put_u16(local, flags);
        put_u16(local, method_stored);
        put_u16(local, dos_time);
        put_u16(local, dos_date);
        put_u32(local, crc);
        put_u32(local, npy.size());
        put_u32(local, npy.size());
        put_u16(local, entry_name.size());
        put_u16(local, 0);
        local.insert(local.end(), entry_name.begin(), entry_name.end());

        put_u32(directory, central_header_signature);
        put_u16(directory, version_made_by);
        put_u16(directory, version_needed);
        put_u16(directory, flags);
        put_u16(directory, method_stored);
        put_u16(directory, dos_time);
        put_u16(directory, dos_date);
        put_u32(directory, crc);
        put_u32(directory, npy.size());
        put_u32(directory, npy.size());
        put_u16(directory, entry_name.size());
        put_u16(directory, 0);  // extra field
        put_u16(directory, 0);  // comment
        put_u16(directory, 0);  // disk
        put_u16(directory, 0);  // internal attributes
        put_u32(directory, unix_regular_file_0644);
        put_u32(directory, offset);
        directory.insert(directory.end(), entry_name.begin(), entry_name.end());

        out.write(reinterpret_cast<const char*>(local.data()), static_cast<std::streamsize>(local.size()));
        out.write(reinterpret_cast<const char*>(npy.data()), static_cast<std::streamsize>(npy.size()));
        offset += local.size() + npy.size();
    }
    if (offset + directory.size() >= zip64_marker)
        fail_write(path, "archive would exceed 4 GiB, which needs ZIP64 (not supported)");
    bytes end;
    put_u32(end, end_record_signature);
    put_u16(end, 0);  // this disk
    put_u16(end, 0);  // disk of the central directory
    put_u16(end, arrays.size());
    put_u16(end, arrays.size());
    put_u32(end, directory.size());
    put_u32(end, offset);
    put_u16(end, 0);  // comment
    out.write(reinterpret_cast<const char*>(directory.data()), static_cast<std::streamsize>(directory.size()));
    out.write(reinterpret_cast<const char*>(end.data()), static_cast<std::streamsize>(end.size()));
}

/// Writes through PATH.tmp and renames, so a crash never leaves a half-written file at PATH.
template <class Write>
void write_atomically(std::string_view who, const std::filesystem::path& path, Write&& write) {
    std::filesystem::path temporary = path;
    temporary += ".tmp";
    std::error_code ec;
    try {
        std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
        if (!out) fail_file(who, path, "cannot open " + in_quotes(temporary.string()) + " for writing");
        write(out);
        out.close();
        if (!out) fail_file(who, path, "writing " + in_quotes(temporary.string()) + " failed (disk full?)");
        std::filesystem::rename(temporary, path, ec);
        if (ec)
            fail_file(who, path, "cannot rename " + in_quotes(temporary.string()) + " into place: " + ec.message());
    } catch (...) {
        std::filesystem::remove(temporary, ec);
        throw;
    }
}

}  // namespace npz_detail

/// Writes all arrays (names without ".npy"; names may contain '/') as little-endian C-order .npy
/// entries, float32 ('<f4') or int64 ('<i8') by each array's dtype, ZIP "stored" (method 0, like
/// np.savez). Writes to PATH.tmp then renames,
/// so a crash never leaves a half-written file at PATH. Throws batchwise::io_error on any failure.
inline void write_npz(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, npz_array>>& arrays) {
    npz_detail::validate_for_write(path, arrays);
    npz_detail::write_atomically("write_npz", path,
                                 [&](std::ofstream& out) { npz_detail::write_archive(out, path, arrays); });
}

/// Reads every entry of an .npz archive, in archive order, names without ".npy". Accepts stored
/// and deflated entries (np.savez, np.savez_compressed) of dtype '<f4' or '<f8' (converted to
/// float32 `values`) or a little-endian integer dtype up to 64 bits ('<i8', '<i4', '|u1', '<u8'
/// when it fits, ...: exact int64 `integers`), C or Fortran order (returned in C order). Throws batchwise::io_error naming the file,
/// the byte offset and what was expected on anything else.
inline std::vector<std::pair<std::string, npz_array>> read_npz(const std::filesystem::path& path) {
    npz_detail::input_file in(path);
    const npz_detail::end_record end = npz_detail::read_end_record(in);
    const std::vector<npz_detail::central_entry> entries = npz_detail::read_central_directory(in, end);
    std::vector<std::pair<std::string, npz_array>> arrays;
    arrays.reserve(entries.size());
    for (const auto& entry : entries) arrays.push_back(npz_detail::read_entry(in, entry));
    return arrays;
}

/// Writes one array as a standalone .npy file (what np.save writes, and np.load reads):
/// '<f4' or '<i8' by its dtype, C order. Atomic like write_npz; throws batchwise::io_error.
inline void write_npy(const std::filesystem::path& path, const npz_array& array) {
    npz_detail::validate_array("write_npy", path, "the array", array);
    const npz_detail::bytes npy = npz_detail::npy_bytes(array);
    npz_detail::write_atomically("write_npy", path, [&](std::ofstream& out) {
        out.write(reinterpret_cast<const char*>(npy.data()), static_cast<std::streamsize>(npy.size()));
    });
}

/// Reads a standalone .npy file (np.save), with the dtypes and orders read_npz accepts. Throws
/// batchwise::io_error naming the file, the byte offset and what was expected.
inline npz_array read_npy(const std::filesystem::path& path) {
    npz_detail::input_file in(path, "read_npy");
    const npz_detail::bytes npy = in.read(0, in.size(), ".npy file");
    const std::string no_name;
    const npz_detail::entry_place place{path, no_name, 0, true, true};
    return npz_detail::parse_npy(npy, place);
}

}  // namespace batchwise::data
