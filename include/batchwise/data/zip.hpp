// The ZIP container of .npz archives: the central directory, stored and deflated (zlib) entries
// checked against their CRC-32, and stored entries written the way np.savez writes them.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <ostream>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <zlib.h>

#include "batchwise/core/errors.hpp"
// write_atomically, which npy.hpp and npz.hpp write through.
#include "batchwise/data/atomic_file.hpp"

// The helpers are shared with npy.hpp and npz.hpp, so all three keep the one detail namespace.
namespace batchwise::data::npz_detail {

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
// Every entry of an .npz archive is one array, stored as NAME.npy.
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

/// An entry's uncompressed bytes, CRC-checked, and where they lie in the archive.
struct entry_contents {
    bytes data;
    entry_place place;
};

inline entry_contents read_entry_contents(input_file& in, const central_entry& entry) {
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
    return {std::move(data), place};
}

/// Writes `arrays` as stored entries NAME.npy, like np.savez. The container does not know the
/// array type: `serialise` turns one array into its entry's bytes, called as each entry is
/// written so only one serialised array is held at a time.
template <class Array, class Serialise>
void write_archive(std::ostream& out, const std::filesystem::path& path,
                   const std::vector<std::pair<std::string, Array>>& arrays, Serialise&& serialise) {
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
        const bytes npy = serialise(array);
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

}  // namespace batchwise::data::npz_detail
