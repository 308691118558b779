// The .npy array format: headers (dtype, order, shape) parsed into an npz_array and written as
// numpy writes them, and standalone .npy files for np.save and np.load.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "batchwise/core/errors.hpp"
// For the byte, error and file helpers and entry_place: an .npy read from an archive entry
// reports its errors at the archive's byte offsets, so it shares the container's error helpers.
#include "batchwise/data/zip.hpp"

namespace batchwise::data {

// npz_array is named for the archives that hold it, but lives here with the format it is read
// from and written as; zip.hpp's container code never needs to know it.

/// Element type of an npz_array, which decides which of its vectors holds the data.
enum class npz_dtype { float32, int64 };
/// \var npz_dtype::float32
/// Floats in npz_array::values: written as '<f4', read from '<f4' or '<f8'.
/// \var npz_dtype::int64
/// Integers in npz_array::integers: written as '<i8', read from any integer dtype.

/// One array of an archive in C (row-major) order: float32 `values`, or, for dtype int64,
/// exact 64-bit `integers` (step counters and seeds do not survive a trip through float).
/// The vector that does not match `dtype` stays empty; `npz_array{shape, values}` is float32.
struct npz_array {
    std::vector<std::size_t> shape;        ///< C order; {} means a 0-d scalar
    std::vector<float> values;             ///< float32: shape product elements, row-major
    std::vector<std::int64_t> integers{};  ///< int64: shape product elements, row-major
    /// Which of `values` and `integers` holds the data.
    npz_dtype dtype = npz_dtype::float32;
};

/// An int64 array, the counterpart of aggregate-initialising a float32 one.
inline npz_array int64_array(std::vector<std::size_t> shape, std::vector<std::int64_t> integers) {
    return npz_array{std::move(shape), {}, std::move(integers), npz_dtype::int64};
}

namespace npz_detail {

inline constexpr std::string_view npy_magic = "\x93NUMPY";

/// A shape as Python writes the tuple: (), (5,), (2, 3).
inline std::string shape_text(const std::vector<std::size_t>& shape) {
    std::string text = "(";
    for (std::size_t d = 0; d < shape.size(); ++d)
        text += std::to_string(shape[d]) + (shape.size() == 1 ? "," : d + 1 < shape.size() ? ", " : "");
    return text + ")";
}

/// Checked a * b; false on overflow.
inline bool multiply(std::uint64_t a, std::uint64_t b, std::uint64_t& result) {
    if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return false;
    result = a * b;
    return true;
}

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

}  // namespace npz_detail

/// Writes one array as a standalone .npy file (what np.save writes, and np.load reads):
/// '<f4' or '<i8' by its dtype, C order. Atomic like write_npz; throws batchwise::io_error.
inline void write_npy(const std::filesystem::path& path, const npz_array& array) {
    npz_detail::validate_array("write_npy", path, "the array", array);
    const npz_detail::bytes npy = npz_detail::npy_bytes(array);
    npz_detail::write_atomically("write_npy", path, [&](std::ostream& out) {
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
