// Tests of the .npz reader and writer: round trips, archives laid out as NumPy writes them, and
// every way a damaged archive must be refused with an io_error that says where and why.
#include "batchwise/data/npz.hpp"

#include <doctest/doctest.h>

#include "../crash/faults.hpp"
#include "../temp_files.hpp"
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;
using batchwise::io_error;
using batchwise::data::npz_array;
using batchwise::data::read_npz;
using batchwise::data::write_npz;
using bytes = std::vector<unsigned char>;
using named_arrays = std::vector<std::pair<std::string, npz_array>>;

/// Scratch files named after this test file.
struct temp_path : bw_test::temp_path {
    explicit temp_path(const std::string& suffix = ".npz") : bw_test::temp_path("npz_test", suffix) {}
};
using bw_test::write_file;

bytes read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void put_le(bytes& out, std::uint64_t value, int size) {
    for (int i = 0; i < size; ++i) out.push_back(static_cast<unsigned char>(value >> (8 * i)));
}

void patch_le(bytes& data, std::uint64_t offset, std::uint64_t value, int size) {
    for (int i = 0; i < size; ++i) data.at(offset + static_cast<std::uint64_t>(i)) = static_cast<unsigned char>(value >> (8 * i));
}

bytes le_floats(const std::vector<float>& values) {
    bytes out;
    for (const float v : values) put_le(out, std::bit_cast<std::uint32_t>(v), 4);
    return out;
}

bytes le_doubles(const std::vector<double>& values) {
    bytes out;
    for (const double v : values) put_le(out, std::bit_cast<std::uint64_t>(v), 8);
    return out;
}

/// An .npy file with this header dict, padded as NumPy pads it (data on a 64-byte boundary).
bytes make_npy(std::string dict, const bytes& data, unsigned char major = 1) {
    const std::size_t preamble = major == 1 ? 10 : 12;
    dict.append((64 - (preamble + dict.size() + 1) % 64) % 64, ' ');
    dict += '\n';
    bytes out = {0x93, 'N', 'U', 'M', 'P', 'Y', major, 0};
    put_le(out, dict.size(), major == 1 ? 2 : 4);
    out.insert(out.end(), dict.begin(), dict.end());
    out.insert(out.end(), data.begin(), data.end());
    return out;
}

bytes raw_deflate(const bytes& data) {
    z_stream stream{};
    REQUIRE(deflateInit2(&stream, Z_BEST_COMPRESSION, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    bytes out(deflateBound(&stream, static_cast<uLong>(data.size())));
    stream.next_in = const_cast<Bytef*>(data.data());
    stream.avail_in = static_cast<uInt>(data.size());
    stream.next_out = out.data();
    stream.avail_out = static_cast<uInt>(out.size());
    REQUIRE(deflate(&stream, Z_FINISH) == Z_STREAM_END);
    out.resize(stream.total_out);
    deflateEnd(&stream);
    return out;
}

/// A ZIP entry for the test's own archive builder, written independently of npz.hpp so the
/// reader is checked against a second implementation of the format.
struct zip_entry {
    std::string name;
    bytes content;  // uncompressed
    std::uint16_t method = 0;
    bool zip64_local_extra = false;  // as np.savez writes: ZIP64 placeholders in the local header
};

struct zip_image {
    bytes data;
    std::vector<std::uint64_t> local_offsets, data_offsets, central_offsets;
    std::uint64_t directory_offset = 0, end_offset = 0;
};

zip_image build_zip(const std::vector<zip_entry>& entries) {
    zip_image zip;
    bytes directory;
    for (const auto& entry : entries) {
        const bytes stored = entry.method == 8 ? raw_deflate(entry.content) : entry.content;
        const auto crc = crc32(0L, entry.content.data(), static_cast<uInt>(entry.content.size()));
        zip.local_offsets.push_back(zip.data.size());
        bytes& d = zip.data;
        put_le(d, 0x04034b50, 4);
        put_le(d, entry.zip64_local_extra ? 45 : 20, 2);
        put_le(d, 0, 2);
        put_le(d, entry.method, 2);
        put_le(d, 0, 4);  // time, date
        put_le(d, crc, 4);
        put_le(d, entry.zip64_local_extra ? 0xFFFFFFFF : stored.size(), 4);
        put_le(d, entry.zip64_local_extra ? 0xFFFFFFFF : entry.content.size(), 4);
        put_le(d, entry.name.size(), 2);
        put_le(d, entry.zip64_local_extra ? 20 : 0, 2);
        d.insert(d.end(), entry.name.begin(), entry.name.end());
        if (entry.zip64_local_extra) {
            put_le(d, 1, 2);
            put_le(d, 16, 2);
            put_le(d, entry.content.size(), 8);
            put_le(d, stored.size(), 8);
        }
        zip.data_offsets.push_back(d.size());
        d.insert(d.end(), stored.begin(), stored.end());

        zip.central_offsets.push_back(directory.size());
        put_le(directory, 0x02014b50, 4);
        put_le(directory, 20, 2);
        put_le(directory, 20, 2);
        put_le(directory, 0, 2);
        put_le(directory, entry.method, 2);
        put_le(directory, 0, 4);
        put_le(directory, crc, 4);
        put_le(directory, stored.size(), 4);
        put_le(directory, entry.content.size(), 4);
        put_le(directory, entry.name.size(), 2);
        put_le(directory, 0, 2);
        put_le(directory, 0, 2);
        put_le(directory, 0, 2);
        put_le(directory, 0, 2);
        put_le(directory, 0, 4);
        put_le(directory, zip.local_offsets.back(), 4);
        directory.insert(directory.end(), entry.name.begin(), entry.name.end());
    }
    zip.directory_offset = zip.data.size();
    for (auto& offset : zip.central_offsets) offset += zip.directory_offset;
    zip.data.insert(zip.data.end(), directory.begin(), directory.end());
    zip.end_offset = zip.data.size();
    put_le(zip.data, 0x06054b50, 4);
    put_le(zip.data, 0, 4);
    put_le(zip.data, entries.size(), 2);
    put_le(zip.data, entries.size(), 2);
    put_le(zip.data, directory.size(), 4);
    put_le(zip.data, zip.directory_offset, 4);
    put_le(zip.data, 0, 2);
    return zip;
}

bytes f4_npy(const std::string& shape, const std::vector<float>& values) {
    return make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }", le_floats(values));
}

/// Checks that reading PATH throws io_error naming the file (and the byte offset, if given)
/// and containing EXPECTATION.
void check_read_error(const fs::path& path, std::optional<std::uint64_t> offset, const std::string& expectation) {
    const std::string where =
        "\"" + path.string() + "\"" + (offset ? ", byte " + std::to_string(*offset) + ":" : std::string());
    CHECK_THROWS_AS((void)read_npz(path), io_error);
    CHECK_THROWS_WITH_AS((void)read_npz(path), doctest::Contains(where.c_str()), io_error);
    CHECK_THROWS_WITH_AS((void)read_npz(path), doctest::Contains(expectation.c_str()), io_error);
}

void check_zip_error(const bytes& archive, std::optional<std::uint64_t> offset, const std::string& expectation) {
    const temp_path file;
    write_file(file.path(), archive);
    check_read_error(file.path(), offset, expectation);
}

void check_bits_equal(const std::vector<float>& actual, const std::vector<float>& expected) {
    REQUIRE(actual.size() == expected.size());
    std::size_t i = 0;
    while (i < actual.size() && std::bit_cast<std::uint32_t>(actual[i]) == std::bit_cast<std::uint32_t>(expected[i])) ++i;
    INFO("first differing element " << i << ": " << (i < actual.size() ? actual[i] : 0.0f) << " vs "
                                    << (i < actual.size() ? expected[i] : 0.0f));
    CHECK(i == actual.size());
}

/// The arrays both the C++ tests and npz_numpy_interop.py expect, so either side can check the other.
named_arrays interop_arrays() {
    std::vector<float> kernel(12);
    for (std::size_t i = 0; i < kernel.size(); ++i) kernel[i] = static_cast<float>(i) * 0.5f - 2.0f;
    kernel[0] = -0.0f;
    kernel[1] = std::numeric_limits<float>::denorm_min();
    kernel[2] = std::numeric_limits<float>::max();
    kernel[3] = std::numeric_limits<float>::infinity();
    kernel[4] = -std::numeric_limits<float>::infinity();
    kernel[5] = std::numeric_limits<float>::quiet_NaN();
    return {
        {"layer0/kernel", {{3, 4}, kernel}},
        {"layer0/bias", {{4}, {0.1f, 0.2f, 0.3f, 0.4f}}},
        {"step", {{}, {42.0f}}},
        {"empty", {{0, 3}, {}}},
    };
}

void check_same(const named_arrays& actual, const named_arrays& expected) {
    REQUIRE(actual.size() == expected.size());
    for (std::size_t i = 0; i < actual.size(); ++i) {
        INFO("array " << expected[i].first);
        CHECK(actual[i].first == expected[i].first);
        CHECK(actual[i].second.shape == expected[i].second.shape);
        check_bits_equal(actual[i].second.values, expected[i].second.values);
    }
}

}  // namespace

TEST_CASE("npz: round trip keeps names, order, shapes and bit-identical values") {
    named_arrays arrays = interop_arrays();
    arrays.push_back({"dense/nested/w", {{2, 3, 2}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}}});
    arrays.push_back({"empty/3d", {{2, 0, 3}, {}}});
    arrays.push_back({"gr\xc3\xb6\xc3\x9f" "e", {{1}, {std::numeric_limits<float>::lowest()}}});
    const temp_path file;
    write_npz(file.path(), arrays);
    CHECK(file.temporaries().empty());
    check_same(read_npz(file.path()), arrays);
}

TEST_CASE("npz: write_npz lays out entries as np.savez does, deterministically") {
    const temp_path file;
    const named_arrays arrays = {{"w", {{3, 4}, std::vector<float>(12, 1.5f)}}, {"b", {{5}, std::vector<float>(5)}}};
    write_npz(file.path(), arrays);
    const bytes data = read_file(file.path());
    REQUIRE(data.size() > 30);
    CHECK(data[0] == 'P');
    CHECK(data[1] == 'K');
    CHECK(data[8] == 0);  // method: stored
    const std::string name(data.begin() + 30, data.begin() + 35);
    CHECK(name == "w.npy");
    const bytes npy(data.begin() + 35, data.end());
    const std::size_t header_size = static_cast<std::size_t>(npy[8] | (npy[9] << 8));
    CHECK((10 + header_size) % 64 == 0);
    const std::string header(npy.begin() + 10, npy.begin() + 10 + static_cast<std::ptrdiff_t>(header_size));
    CHECK(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }"));
    CHECK(header.ends_with(" \n"));

    const temp_path again;
    write_npz(again.path(), arrays);
    CHECK(read_file(again.path()) == data);

    SUBCASE("a 1-d shape is written as a Python 1-tuple, a 0-d one as ()") {
        write_npz(file.path(), {{"v", {{7}, std::vector<float>(7)}}, {"s", {{}, {1.0f}}}});
        const bytes rewritten = read_file(file.path());
        const std::string text(rewritten.begin(), rewritten.end());
        CHECK(text.find("'shape': (7,), }") != std::string::npos);
        CHECK(text.find("'shape': (), }") != std::string::npos);
    }
}

TEST_CASE("npz: write_npz replaces an existing file and refuses bad arguments without touching it") {
    const temp_path file;
    const named_arrays old_arrays = {{"old", {{2}, {1.0f, 2.0f}}}};
    write_npz(file.path(), old_arrays);
    const named_arrays new_arrays = {{"new", {{1}, {3.0f}}}};
    write_npz(file.path(), new_arrays);
    check_same(read_npz(file.path()), new_arrays);

    const std::string name = "\"" + file.path().string() + "\"";
    SUBCASE("values do not match the shape") {
        const named_arrays bad = {{"w", {{2, 3}, std::vector<float>(5)}}};
        CHECK_THROWS_AS(write_npz(file.path(), bad), io_error);
        CHECK_THROWS_WITH_AS(write_npz(file.path(), bad), doctest::Contains(name.c_str()), io_error);
        CHECK_THROWS_WITH_AS(write_npz(file.path(), bad), doctest::Contains("expected the product of its shape (6)"),
                             io_error);
    }
    SUBCASE("duplicate names") {
        const named_arrays bad = {{"w", {{1}, {1.0f}}}, {"w", {{1}, {2.0f}}}};
        CHECK_THROWS_WITH_AS(write_npz(file.path(), bad), doctest::Contains("duplicate array name \"w\""), io_error);
    }
    SUBCASE("empty name") {
        const named_arrays bad = {{"", {{1}, {1.0f}}}};
        CHECK_THROWS_WITH_AS(write_npz(file.path(), bad), doctest::Contains("empty name"), io_error);
    }
    check_same(read_npz(file.path()), new_arrays);
    CHECK(file.temporaries().empty());
}

TEST_CASE("npz: write_npz into a missing directory is an io_error naming the file") {
    const temp_path dir;
    const fs::path target = dir.path() / "no" / "such" / "weights.npz";
    CHECK_THROWS_WITH_AS(write_npz(target, {{"w", {{1}, {1.0f}}}}), doctest::Contains(target.string().c_str()), io_error);
    CHECK_THROWS_WITH_AS(write_npz(target, {{"w", {{1}, {1.0f}}}}), doctest::Contains("cannot open"), io_error);
}

TEST_CASE("npz: read_npz inflates deflated entries and skips np.savez's ZIP64 local extras") {
    std::vector<float> big(20000);
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i % 7);
    const std::vector<float> small = {0.5f, -1.25f, 3.0f};
    const zip_image zip = build_zip({
        {"big.npy", f4_npy("(100, 200)", big), 8, true},
        {"a/b.npy", f4_npy("(3,)", small), 0, true},
        {"c.npy", f4_npy("(3,)", small), 8, false},
        {"zeros.npy", f4_npy("(0,)", {}), 8, false},
    });
    const temp_path file;
    write_file(file.path(), zip.data);
    check_same(read_npz(file.path()), {{"big", {{100, 200}, big}},
                                       {"a/b", {{3}, small}},
                                       {"c", {{3}, small}},
                                       {"zeros", {{0}, {}}}});
}

TEST_CASE("npz: read_npz converts '<f8' to float and Fortran order to C order") {
    const std::vector<double> doubles = {1.0 / 3.0, 1e300, -1e300, -1e-300, 2.5};
    std::vector<float> fortran(24);
    for (std::size_t i = 0; i < 2; ++i)
        for (std::size_t j = 0; j < 3; ++j)
            for (std::size_t k = 0; k < 4; ++k) fortran[i + 2 * j + 6 * k] = static_cast<float>(100 * i + 10 * j + k);
    std::vector<float> c_order(24);
    for (std::size_t n = 0; n < 24; ++n) c_order[n] = static_cast<float>(100 * (n / 12) + 10 * (n / 4 % 3) + n % 4);
    const zip_image zip = build_zip({
        {"f8.npy", make_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }", le_doubles(doubles))},
        {"f.npy", make_npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 4), }", le_floats(fortran))},
        {"f2.npy", make_npy("{'fortran_order': True, 'shape': (2L, 2L), 'descr': '<f8'}", le_doubles({1, 3, 2, 4})), 8},
    });
    const temp_path file;
    write_file(file.path(), zip.data);
    const float inf = std::numeric_limits<float>::infinity();
    check_same(read_npz(file.path()), {{"f8", {{5}, {static_cast<float>(1.0 / 3.0), inf, -inf, -0.0f, 2.5f}}},
                                       {"f", {{2, 3, 4}, c_order}},
                                       {"f2", {{2, 2}, {1, 2, 3, 4}}}});
}

TEST_CASE("npz: read_npz refuses missing files, non-archives and truncated archives") {
    SUBCASE("missing file") {
        const temp_path file;
        check_read_error(file.path(), std::nullopt, "no such file");
    }
    SUBCASE("a directory") {
        const temp_path dir;
        fs::create_directory(dir.path());
        check_read_error(dir.path(), std::nullopt, "not a regular file");
    }
    SUBCASE("too short to be a zip") {
        check_zip_error({'P', 'K', 5, 6}, 0, "expected a ZIP archive of at least 22 bytes");
    }
    SUBCASE("not a zip") {
        const std::string text(1000, 'x');
        check_zip_error(bytes(text.begin(), text.end()), 0, "expected a ZIP end-of-central-directory record");
    }
    SUBCASE("truncated") {
        const temp_path source;
        write_npz(source.path(), interop_arrays());
        const bytes whole = read_file(source.path());
        const bytes half(whole.begin(), whole.begin() + static_cast<std::ptrdiff_t>(whole.size() / 2));
        check_zip_error(half, 0, "(not an .npz archive, or truncated)");
    }
}

TEST_CASE("npz: read_npz refuses damaged ZIP structure with the offset and what was expected") {
    const bytes npy = f4_npy("(3,)", {1, 2, 3});
    const zip_image zip = build_zip({{"a.npy", npy}, {"b.npy", npy}});
    const std::uint64_t b_central = zip.central_offsets[1];

    SUBCASE("intact archive reads") {
        const temp_path file;
        write_file(file.path(), zip.data);
        CHECK(read_npz(file.path()).size() == 2);
    }
    SUBCASE("bad CRC-32") {
        bytes data = zip.data;
        data[zip.data_offsets[1] + npy.size() - 1] ^= 0x01;  // in the last float
        check_zip_error(data, zip.data_offsets[1], "CRC-32 of entry \"b.npy\"");
    }
    SUBCASE("bad local header signature") {
        bytes data = zip.data;
        data[zip.local_offsets[1]] = 'X';
        check_zip_error(data, zip.local_offsets[1], "expected local file header signature PK\\3\\4");
    }
    SUBCASE("local and central names differ") {
        bytes data = zip.data;
        data[zip.local_offsets[1] + 30] = 'z';
        check_zip_error(data, zip.local_offsets[1] + 30, "expected \"b.npy\" as in the central directory");
    }
    SUBCASE("bad central directory signature") {
        bytes data = zip.data;
        data[b_central] = 'X';
        check_zip_error(data, b_central, "expected central directory record signature");
    }
    SUBCASE("central directory overruns the end record") {
        bytes data = zip.data;
        patch_le(data, zip.end_offset + 16, zip.directory_offset + 10, 4);
        check_zip_error(data, zip.end_offset + 12, "overruns the end record");
    }
    SUBCASE("more entries than the central directory can hold") {
        bytes data = zip.data;
        patch_le(data, zip.end_offset + 8, 1000, 2);
        patch_le(data, zip.end_offset + 10, 1000, 2);
        check_zip_error(data, zip.end_offset + 10, "1000 entries cannot fit");
    }
    SUBCASE("a recorded size past the end of the file allocates nothing absurd") {
        bytes data = zip.data;
        patch_le(data, b_central + 20, 0x7FFFFFFF, 4);
        patch_le(data, b_central + 24, 0x7FFFFFFF, 4);
        check_zip_error(data, zip.data_offsets[1], "expected 2147483647 bytes of data of entry \"b.npy\"");
    }
    SUBCASE("a local header offset past the end of the file") {
        bytes data = zip.data;
        patch_le(data, b_central + 42, 0x10000000, 4);
        check_zip_error(data, 0x10000000, "(truncated?)");
    }
    SUBCASE("stored entry whose sizes disagree") {
        bytes data = zip.data;
        patch_le(data, b_central + 24, npy.size() + 1, 4);
        check_zip_error(data, b_central + 20, "expected them equal");
    }
    SUBCASE("unsupported compression method") {
        bytes data = zip.data;
        patch_le(data, b_central + 10, 12, 2);
        check_zip_error(data, b_central + 10, "compression method 12; expected 0 (stored) or 8 (deflate)");
    }
    SUBCASE("encrypted entry") {
        bytes data = zip.data;
        patch_le(data, b_central + 8, 1, 2);
        check_zip_error(data, b_central + 8, "is encrypted");
    }
    SUBCASE("ZIP64 end record") {
        bytes data = zip.data;
        patch_le(data, zip.end_offset + 16, 0xFFFFFFFF, 4);
        check_zip_error(data, zip.end_offset, "ZIP64 archive; expected a plain ZIP");
    }
    SUBCASE("ZIP64 entry") {
        bytes data = zip.data;
        patch_le(data, b_central + 20, 0xFFFFFFFF, 4);
        check_zip_error(data, b_central, "needs ZIP64");
    }
    SUBCASE("duplicate entry names") {
        const zip_image twice = build_zip({{"a.npy", npy}, {"a.npy", npy}});
        check_zip_error(twice.data, twice.central_offsets[1], "duplicate entry name \"a.npy\"");
    }
    SUBCASE("an entry that is not .npy") {
        const zip_image other = build_zip({{"a.npy", npy}, {"readme.txt", {'h', 'i'}}});
        check_zip_error(other.data, other.central_offsets[1] + 46, "expected a name ending in .npy");
    }
}

TEST_CASE("npz: read_npz refuses damaged deflate data") {
    std::vector<float> values(1000);
    for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i);
    const bytes npy = f4_npy("(1000,)", values);
    const zip_image zip = build_zip({{"d.npy", npy, 8}});
    const std::uint64_t data_at = zip.data_offsets[0];
    const std::uint64_t compressed_size = zip.directory_offset - data_at;

    SUBCASE("garbage instead of deflate data") {
        bytes data = zip.data;
        std::fill(data.begin() + static_cast<std::ptrdiff_t>(data_at),
                  data.begin() + static_cast<std::ptrdiff_t>(zip.directory_offset), 0xFF);
        check_zip_error(data, std::nullopt, "corrupt deflate data");
        check_zip_error(data, std::nullopt, "entry \"d.npy\"");
    }
    SUBCASE("deflate stream cut short") {
        // Keep the first half of the compressed bytes, and make the directory agree with it.
        zip_image cut = zip;
        const std::uint64_t kept = compressed_size / 2;
        bytes data(cut.data.begin(), cut.data.begin() + static_cast<std::ptrdiff_t>(data_at + kept));
        const bytes tail(cut.data.begin() + static_cast<std::ptrdiff_t>(zip.directory_offset), cut.data.end());
        data.insert(data.end(), tail.begin(), tail.end());
        const std::uint64_t directory_at = data_at + kept;
        patch_le(data, directory_at + 20, kept, 4);
        patch_le(data, data.size() - 22 + 16, directory_at, 4);
        check_zip_error(data, data_at + kept, "deflate stream ends without its final block");
    }
    SUBCASE("recorded size smaller than the inflated data") {
        bytes data = zip.data;
        patch_le(data, zip.central_offsets[0] + 24, npy.size() - 1, 4);
        check_zip_error(data, std::nullopt, "inflates to more than the " + std::to_string(npy.size() - 1) + " bytes");
    }
    SUBCASE("recorded size absurdly larger than the inflated data") {
        bytes data = zip.data;
        patch_le(data, zip.central_offsets[0] + 24, 0xFFFFFFF0, 4);
        check_zip_error(data, std::nullopt,
                        "inflates to " + std::to_string(npy.size()) + " bytes, expected 4294967280");
    }
}

TEST_CASE("npz: read_npz refuses bad .npy entries, naming entry, offset and expectation") {
    const auto check_npy = [](const bytes& npy, std::optional<std::uint64_t> npy_offset, const std::string& expectation) {
        const zip_image zip = build_zip({{"ok.npy", f4_npy("(1,)", {1})}, {"bad/entry.npy", npy}});
        std::optional<std::uint64_t> at;
        if (npy_offset) at = zip.data_offsets[1] + *npy_offset;
        check_zip_error(zip.data, at, expectation);
        check_zip_error(zip.data, at, "entry \"bad/entry.npy\"");
    };
    const bytes three = le_floats({1, 2, 3});

    SUBCASE("bad magic") {
        bytes npy = f4_npy("(3,)", {1, 2, 3});
        npy[1] = 'X';
        check_npy(npy, 0, "expected the .npy magic");
    }
    SUBCASE("entry shorter than the magic") {
        check_npy({0x93, 'N', 'U'}, 0, "expected the .npy magic");
    }
    SUBCASE("unknown format version") {
        bytes npy = f4_npy("(3,)", {1, 2, 3});
        npy[6] = 9;
        check_npy(npy, 6, "unsupported .npy format version 9.0");
    }
    SUBCASE("header length past the end") {
        bytes npy = f4_npy("(3,)", {1, 2, 3});
        patch_le(npy, 8, 0xFFFF, 2);
        check_npy(npy, 8, ".npy header length 65535 runs past the end of the entry");
    }
    SUBCASE("malformed header") {
        const std::string dict = "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (3,), }";
        check_npy(make_npy(dict, three), 10 + dict.find("Maybe"), "expected True or False, found \"Maybe");
    }
    SUBCASE("unterminated header") {
        const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,)";
        check_npy(make_npy(dict, three), std::nullopt, "expected '}'");
    }
    SUBCASE("missing key") {
        check_npy(make_npy("{'descr': '<f4', 'fortran_order': False}", three), 10, "lacks 'shape'");
    }
    SUBCASE("unexpected key") {
        check_npy(make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'x': 1}", three),
                  std::nullopt, "unexpected key 'x'");
    }
    SUBCASE("unsupported dtype") {
        check_npy(make_npy("{'descr': '<c8', 'fortran_order': False, 'shape': (3,), }", three), 10,
                  "unsupported dtype '<c8'; expected '<f4' or '<f8'");
    }
    SUBCASE("big-endian float") {
        check_npy(make_npy("{'descr': '>f4', 'fortran_order': False, 'shape': (3,), }", three), 10,
                  "unsupported dtype '>f4'");
    }
    SUBCASE("structured dtype") {
        check_npy(make_npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }", three),
                  std::nullopt, "unsupported dtype [('a', '<f4')]");
    }
    SUBCASE("data shorter than the shape needs") {
        const bytes npy = make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (10,), }", three);
        check_npy(npy, npy.size() - three.size(),
                  "expected 40 bytes of array data for shape (10,) of '<f4', the entry has 12");
    }
    SUBCASE("data longer than the shape needs") {
        const bytes npy = make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", three);
        check_npy(npy, npy.size() - three.size(),
                  "expected 8 bytes of array data for shape (2,) of '<f4', the entry has 12");
    }
    SUBCASE("a shape whose size overflows") {
        check_npy(make_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", three),
                  10, "more elements than can be addressed");
    }
    SUBCASE("a dimension too large to parse") {
        check_npy(make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }", three),
                  std::nullopt, "dimension too large");
    }
    SUBCASE("inside a deflated entry the offset is counted after inflating") {
        const zip_image zip = build_zip({{"z.npy", make_npy("{'descr': '<c8', 'fortran_order': False, 'shape': (3,), }", three), 8}});
        const temp_path file;
        write_file(file.path(), zip.data);
        const std::string where = "entry \"z.npy\" (deflated, data at byte " + std::to_string(zip.data_offsets[0]) +
                                  "), byte 10 after inflating: unsupported dtype '<c8'";
        CHECK_THROWS_WITH_AS((void)read_npz(file.path()), doctest::Contains(where.c_str()), io_error);
        CHECK_THROWS_WITH_AS((void)read_npz(file.path()), doctest::Contains(file.path().string().c_str()), io_error);
    }
}

namespace {

/// A directory of its own for one test, so everything a write leaves beside its file shows.
struct temp_dir : temp_path {
    temp_dir() : temp_path("") { fs::create_directory(path()); }
};

/// Arrays of a few KB, `salt` telling two versions apart in every value.
named_arrays versioned_arrays(float salt) {
    std::vector<float> kernel(16 * 40);
    for (std::size_t i = 0; i < kernel.size(); ++i) kernel[i] = salt + static_cast<float>(i) / 64.0f;
    return {{"dense/kernel", {{16, 40}, kernel}},
            {"dense/bias", {{40}, std::vector<float>(40, salt)}},
            {"step", batchwise::data::int64_array({}, {static_cast<std::int64_t>(salt)})}};
}

/// Writes with the file size limited to every byte count from 0 to the file's full size: each
/// short write must fail with an io_error naming the file and saying why, leaving the previous
/// file byte for byte and nothing beside it; the full size must succeed. Returns the tries.
template <class Write>
std::size_t fail_at_every_byte(const fs::path& file, const std::string& who, Write&& write_new) {
    const bytes previous = read_file(file);
    const temp_dir probe;  // the size of the new file, written once without a limit
    write_new(probe.path() / "probe");
    const bytes written = read_file(probe.path() / "probe");
    const std::size_t size = written.size();
    REQUIRE(size > 1000);
    std::size_t tries = 0;
    for (std::size_t limit = 0; limit <= size; ++limit) {
        INFO("file size limited to " << limit << " of " << size << " bytes");
        std::string error;
        bool limited = false;
        {
            const bw_test::file_size_limit guard(limit);
            limited = guard.ok();
            try {
                write_new(file);
            } catch (const io_error& e) {
                error = e.what();
            }
        }
        REQUIRE(limited);
        ++tries;
        REQUIRE(bw_test::other_files(file.parent_path(), file.filename().string()).empty());
        if (limit == size) {
            CHECK(error.empty());
            CHECK(read_file(file) == written);
            break;
        }
        REQUIRE_MESSAGE(!error.empty(), "a write cut short at byte " << limit << " did not throw");
        REQUIRE(error.starts_with(who + ": \"" + file.string() + "\": writing \""));
        REQUIRE(error.ends_with("failed: File too large"));
        REQUIRE(read_file(file) == previous);
    }
    return tries;
}

}  // namespace

TEST_CASE("npz: a write cut short at any byte (file size limit) is an io_error and keeps the previous file") {
    const temp_dir dir;
    SUBCASE("write_npz") {
        const fs::path file = dir.path() / "w.npz";
        write_npz(file, versioned_arrays(1.0f));
        const std::size_t tries =
            fail_at_every_byte(file, "write_npz", [](const fs::path& to) { write_npz(to, versioned_arrays(2.0f)); });
        MESSAGE("write_npz: " << tries << " fault points tried (every byte offset)");
        check_same(read_npz(file), versioned_arrays(2.0f));
    }
    SUBCASE("write_npy") {
        const fs::path file = dir.path() / "w.npy";
        batchwise::data::write_npy(file, versioned_arrays(1.0f)[0].second);
        const std::size_t tries = fail_at_every_byte(file, "write_npy", [](const fs::path& to) {
            batchwise::data::write_npy(to, versioned_arrays(2.0f)[0].second);
        });
        MESSAGE("write_npy: " << tries << " fault points tried (every byte offset)");
        CHECK(batchwise::data::read_npy(file).values == versioned_arrays(2.0f)[0].second.values);
    }
}

TEST_CASE("npz: a write that cannot rename or create its temporary keeps the previous file") {
    const temp_dir dir;
    SUBCASE("the target is a non-empty directory: the rename fails") {
        const fs::path file = dir.path() / "w.npz";
        fs::create_directory(file);
        write_file(file / "inside", {1, 2, 3});
        CHECK_THROWS_WITH_AS(write_npz(file, versioned_arrays(1.0f)),
                             doctest::Contains(("write_npz: \"" + file.string() + "\": cannot rename \"").c_str()),
                             io_error);
        CHECK(read_file(file / "inside") == bytes{1, 2, 3});
        CHECK(bw_test::other_files(dir.path(), "w.npz").empty());
    }
    SUBCASE("a read-only directory") {
        const fs::path file = dir.path() / "w.npz";
        write_npz(file, versioned_arrays(1.0f));
        const bytes previous = read_file(file);
        fs::permissions(dir.path(), fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                                        fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
        if (::geteuid() == 0) {
            MESSAGE("skipped the read-only directory: running as root, which permission bits do not stop");
        } else {
            CHECK_THROWS_WITH_AS(write_npz(file, versioned_arrays(2.0f)), doctest::Contains("Permission denied"),
                                 io_error);
            CHECK(read_file(file) == previous);
            CHECK(bw_test::other_files(dir.path(), "w.npz").empty());
        }
        fs::permissions(dir.path(), fs::perms::owner_all);
    }
}

TEST_CASE("npz: a successful write removes the temporaries of dead writers, and only those") {
    const temp_dir dir;
    const fs::path file = dir.path() / "w.npz";
    write_npz(file, versioned_arrays(1.0f));
    const auto make = [&](const std::string& name) { write_file(dir.path() / name, {'P', 'K'}); };
    // Left by killed writers: no process holds their lock. The second carries this process's own
    // pid, as when a dead writer's pid has been reused: the lock, not the pid, says it is dead.
    make("w.npz.tmp.4000000000.0");
    make("w.npz.tmp." + std::to_string(::getpid()) + ".999999");
    // A writer still at work holds the lock on its temporary: it must survive.
    make("w.npz.tmp.1.3");
    const int live = ::open((dir.path() / "w.npz.tmp.1.3").c_str(), O_RDONLY);
    REQUIRE(live >= 0);
    REQUIRE(::flock(live, LOCK_EX) == 0);
    // Not temporaries of w.npz: never touched.
    for (const char* name : {"w.npz.tmp", "w.npz.tmp.backup", "w.npz.tmp.1.x", "w.npz.tmpx.1.2", "v.npz.tmp.1.2"})
        make(name);

    write_npz(file, versioned_arrays(2.0f));
    ::close(live);
    std::vector<std::string> left = bw_test::other_files(dir.path(), "w.npz");
    std::sort(left.begin(), left.end());
    CHECK(left == std::vector<std::string>{"v.npz.tmp.1.2", "w.npz.tmp", "w.npz.tmp.1.3", "w.npz.tmp.1.x",
                                           "w.npz.tmp.backup", "w.npz.tmpx.1.2"});
    check_same(read_npz(file), versioned_arrays(2.0f));

    // Its writer gone (the lock released), the next successful write removes it.
    write_npz(file, versioned_arrays(3.0f));
    CHECK_FALSE(fs::exists(dir.path() / "w.npz.tmp.1.3"));
}

// Runs only when BATCHWISE_NPZ_INTEROP_SCRIPT names tests/data/npz_numpy_interop.py, as that script
// sets it when CTest runs it on this binary: NumPy reads what write_npz wrote, then writes
// np.savez and np.savez_compressed archives for us to read.
TEST_CASE("npz: numpy interop" * doctest::skip()) {
    const char* script = std::getenv("BATCHWISE_NPZ_INTEROP_SCRIPT");
    // Run alone it would check nothing: it is marked skip (so CTest's discovery leaves it out)
    // and the script runs it with --no-skip (CTest entry npz.numpy_interop).
    REQUIRE_MESSAGE(script != nullptr, "run this case through tests/data/npz_numpy_interop.py");
    const char* python_env = std::getenv("BATCHWISE_PYTHON");
    const std::string python = python_env ? python_env : "/usr/bin/python3";
    const temp_path dir("");
    fs::create_directory(dir.path());
    write_npz(dir.path() / "from_cpp.npz", interop_arrays());
    const std::string command = "'" + python + "' '" + script + "' '" + dir.path().string() + "'";
    INFO("command: " << command);
    REQUIRE(std::system(command.c_str()) == 0);

    std::vector<float> f32(6), fortran(24), big(100000);
    for (std::size_t i = 0; i < f32.size(); ++i) f32[i] = static_cast<float>(i) / 7.0f;
    for (std::size_t i = 0; i < fortran.size(); ++i) fortran[i] = static_cast<float>(i);
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i % 7);
    const float inf = std::numeric_limits<float>::infinity();
    const named_arrays expected = {
        {"a/f32", {{2, 3}, f32}},
        {"b/f64", {{4}, {static_cast<float>(1.0 / 3.0), inf, -0.0f, 2.5f}}},
        {"c/fortran", {{2, 3, 4}, fortran}},
        {"d/scalar", {{}, {-1.5f}}},
        {"e/big", {{100000}, big}},
    };
    for (const char* name : {"from_numpy.npz", "from_numpy_compressed.npz"}) {
        INFO("archive " << name);
        check_same(read_npz(dir.path() / name), expected);
    }
}
