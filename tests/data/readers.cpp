// Tests of the file readers: IDX (plain and gzip), CSV, .npz/.npy int64 arrays and Fashion-MNIST;
// round trips, and every way a bad file must be refused with an error that says where and why.
#include "batchwise/data/csv.hpp"
#include "batchwise/data/fashion_mnist.hpp"
#include "batchwise/data/idx.hpp"
#include "batchwise/data/npz.hpp"

#include <doctest/doctest.h>

#include "../temp_files.hpp"
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
namespace bd = batchwise::data;
using batchwise::data_error;
using batchwise::io_error;
using batchwise::usage_error;
using bytes = std::vector<unsigned char>;

/// Scratch files named after this test file.
struct temp_path : bw_test::temp_path {
    explicit temp_path(const std::string& suffix = "") : bw_test::temp_path("readers_test", suffix) {}
};
using bw_test::write_file;

void write_text(const fs::path& path, const std::string& text) { write_file(path, bytes(text.begin(), text.end())); }

bytes read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// Writes DATA gzip-compressed with zlib's own gz* API, a second implementation to read back.
void write_gzip(const fs::path& path, const bytes& data) {
    gzFile file = gzopen(path.string().c_str(), "wb9");
    REQUIRE(file != nullptr);
    if (!data.empty()) REQUIRE(gzwrite(file, data.data(), static_cast<unsigned>(data.size())) == static_cast<int>(data.size()));
    REQUIRE(gzclose(file) == Z_OK);
}

bytes gzip_bytes(const bytes& data) {
    const temp_path file(".gz");
    write_gzip(file.path(), data);
    return read_file(file.path());
}

void put_be(bytes& out, std::uint64_t value, int size) {
    for (int i = size - 1; i >= 0; --i) out.push_back(static_cast<unsigned char>(value >> (8 * i)));
}

/// An IDX file: magic 00 00 TYPE NDIMS, big-endian dimensions, then PAYLOAD as given.
bytes make_idx(unsigned char type, const std::vector<std::uint32_t>& dims, const bytes& payload) {
    bytes out = {0, 0, type, static_cast<unsigned char>(dims.size())};
    for (const std::uint32_t dim : dims) put_be(out, dim, 4);
    out.insert(out.end(), payload.begin(), payload.end());
    return out;
}

/// N bytes that deflate compresses only a little, so cut and flipped streams stay interesting.
bytes noise(std::size_t n) {
    bytes out(n);
    std::uint32_t state = 12345;
    for (auto& b : out) {
        state = state * 1664525u + 1013904223u;
        b = static_cast<unsigned char>(state >> 24);
    }
    return out;
}

template <class F>
void check_io_error(F&& read, const std::vector<std::string>& needles) {
    for (const auto& needle : needles) {
        INFO("expected in the message: " << needle);
        CHECK_THROWS_WITH_AS(read(), doctest::Contains(needle.c_str()), io_error);
    }
}

void check_idx_error(const fs::path& path, const std::vector<std::string>& needles) {
    check_io_error([&] { (void)bd::read_idx(path); }, needles);
    std::vector<std::string> with_file = needles;
    with_file.push_back("read_idx: \"" + path.string() + "\"");
    check_io_error([&] { (void)bd::read_idx_raw(path); }, with_file);
}

std::string byte_at(std::uint64_t offset) { return ", byte " + std::to_string(offset) + ": "; }
std::string decompressed_byte_at(std::uint64_t offset) {
    return " (gzip), byte " + std::to_string(offset) + " of the decompressed data: ";
}

}  // namespace

// ---------------------------------------------------------------------------------------- IDX

TEST_CASE("idx: every element type reads back, plain and gzip, whatever the file is named") {
    struct sample {
        unsigned char type;
        bytes payload;
        std::vector<float> expected;
    };
    bytes floats, doubles;
    for (const float v : {1.5f, -0.25f, 3e38f, -0.0f}) put_be(floats, std::bit_cast<std::uint32_t>(v), 4);
    for (const double v : {1.0 / 3.0, -2.5, 1e300, 1e-300}) put_be(doubles, std::bit_cast<std::uint64_t>(v), 8);
    const float inf = std::numeric_limits<float>::infinity();
    const std::vector<sample> samples = {
        {0x08, {0, 1, 128, 255}, {0, 1, 128, 255}},
        {0x09, {0, 1, 0x80, 0xFF}, {0, 1, -128, -1}},
        {0x0B, {0x00, 0x01, 0xFF, 0xFF, 0x80, 0x00, 0x7F, 0xFF}, {1, -1, -32768, 32767}},
        {0x0C, {0, 0, 0, 7, 0xFF, 0xFF, 0xFF, 0xFE, 0x80, 0, 0, 0, 0, 1, 0, 0}, {7, -2, -2147483648.0f, 65536}},
        {0x0D, floats, {1.5f, -0.25f, 3e38f, -0.0f}},
        {0x0E, doubles, {static_cast<float>(1.0 / 3.0), -2.5f, inf, 0.0f}},
    };
    for (const auto& s : samples) {
        for (const bool gz : {false, true}) {
            INFO("type " << int(s.type) << (gz ? " gzip" : " plain"));
            // A plain file named .gz and a gzip file without .gz: detection is by content.
            const temp_path file(gz ? ".idx" : ".idx.gz");
            const bytes idx = make_idx(s.type, {2, 1, 2}, s.payload);
            if (gz)
                write_gzip(file.path(), idx);
            else
                write_file(file.path(), idx);
            const bd::idx_array array = bd::read_idx(file.path());
            CHECK(static_cast<int>(array.type) == s.type);
            CHECK(array.shape == std::vector<std::size_t>{2, 1, 2});
            REQUIRE(array.values.size() == s.expected.size());
            for (std::size_t i = 0; i < s.expected.size(); ++i) {
                CHECK(array.values[i] == s.expected[i]);
                CHECK(std::signbit(array.values[i]) == std::signbit(s.expected[i]));
            }
            const bd::idx_raw raw = bd::read_idx_raw(file.path());
            CHECK(raw.data == s.payload);
        }
    }
}

TEST_CASE("idx: large, empty and multi-member gzip files read back") {
    const bytes pixels = noise(3 * 500 * 700);
    const bytes idx = make_idx(0x08, {3, 500, 700}, pixels);
    const temp_path file(".gz");
    SUBCASE("large gzip file") {
        write_gzip(file.path(), idx);
        const bd::idx_raw raw = bd::read_idx_raw(file.path());
        CHECK(raw.shape == std::vector<std::size_t>{3, 500, 700});
        CHECK(raw.data == pixels);
    }
    SUBCASE("two gzip members back to back, as cat a.gz b.gz makes") {
        const std::size_t half = idx.size() / 2;
        bytes joined = gzip_bytes(bytes(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(half)));
        const bytes second = gzip_bytes(bytes(idx.begin() + static_cast<std::ptrdiff_t>(half), idx.end()));
        joined.insert(joined.end(), second.begin(), second.end());
        write_file(file.path(), joined);
        CHECK(bd::read_idx_raw(file.path()).data == pixels);
    }
    SUBCASE("a dimension of zero") {
        write_gzip(file.path(), make_idx(0x0D, {0, 28}, {}));
        const bd::idx_array array = bd::read_idx(file.path());
        CHECK(array.shape == std::vector<std::size_t>{0, 28});
        CHECK(array.values.empty());
    }
}

TEST_CASE("idx: a missing file or a directory is an io_error naming it") {
    const temp_path missing(".idx");
    check_idx_error(missing.path(), {"no such file"});
    const temp_path dir;
    fs::create_directory(dir.path());
    check_idx_error(dir.path(), {"not a regular file"});
}

TEST_CASE("idx: bad magic, unknown type and no dimensions name the byte") {
    const temp_path file(".idx");
    SUBCASE("bad magic") {
        write_file(file.path(), {'P', 'K', 3, 4, 0, 0, 0, 0});
        check_idx_error(file.path(), {byte_at(0), "expected the IDX magic number 00 00 TYPE NDIMS, found 50 4b 03 04"});
    }
    SUBCASE("bad magic inside gzip counts decompressed bytes") {
        write_gzip(file.path(), {0, 1, 8, 1, 0, 0, 0, 0});
        check_idx_error(file.path(), {decompressed_byte_at(0), "found 00 01 08 01"});
    }
    SUBCASE("unknown type") {
        write_file(file.path(), make_idx(0x07, {1}, {0}));
        check_idx_error(file.path(), {byte_at(2), "unknown IDX element type 0x07"});
    }
    SUBCASE("no dimensions") {
        write_file(file.path(), make_idx(0x08, {}, {}));
        check_idx_error(file.path(), {byte_at(3), "expected at least 1 dimension"});
    }
    SUBCASE("shorter than the magic") {
        write_file(file.path(), {0, 0});
        check_idx_error(file.path(), {byte_at(0), "expected 4 bytes of IDX magic number, the data ends after 2"});
    }
    SUBCASE("dimensions cut short") {
        bytes idx = make_idx(0x08, {5, 5}, {});
        idx.resize(10);
        write_file(file.path(), idx);
        check_idx_error(file.path(), {byte_at(4), "expected 8 bytes of 2 big-endian dimension sizes, the data ends after 6"});
    }
}

TEST_CASE("idx: truncated data and trailing bytes name the byte where they start") {
    const temp_path file(".idx");
    const bytes six = {1, 2, 3, 4, 5, 6};
    SUBCASE("plain, truncated") {
        write_file(file.path(), make_idx(0x08, {2, 3}, {1, 2, 3, 4}));
        check_idx_error(file.path(), {byte_at(12), "expected 6 bytes of data for shape (2, 3) of ubyte",
                                      "the file has only 4 after the header (truncated"});
    }
    SUBCASE("gzip, complete stream of a truncated file") {
        write_gzip(file.path(), make_idx(0x0C, {2, 3}, bytes(20, 1)));
        check_idx_error(file.path(), {decompressed_byte_at(32), "expected 24 bytes of data for shape (2, 3) of int",
                                      "the data ends after 20 (truncated?)"});
    }
    SUBCASE("plain, trailing garbage") {
        bytes idx = make_idx(0x08, {2, 3}, six);
        idx.push_back(0);
        idx.push_back(0);
        write_file(file.path(), idx);
        check_idx_error(file.path(), {byte_at(18), "2 bytes follow the 6 bytes of data for shape (2, 3) of ubyte"});
    }
    SUBCASE("gzip, trailing garbage inside the stream") {
        bytes idx = make_idx(0x08, {6}, six);
        idx.insert(idx.end(), 100, 7);
        write_gzip(file.path(), idx);
        check_idx_error(file.path(), {decompressed_byte_at(14), "100 bytes follow the 6 bytes of data for shape (6,)"});
    }
    SUBCASE("gzip, garbage after the stream") {
        bytes data = gzip_bytes(make_idx(0x08, {6}, six));
        const std::size_t end = data.size();
        data.insert(data.end(), {'j', 'u', 'n', 'k'});
        write_file(file.path(), data);
        check_idx_error(file.path(), {"(gzip), compressed byte " + std::to_string(end),
                                      "4 bytes follow the end of the gzip stream"});
    }
}

TEST_CASE("idx: a cut or corrupted gzip stream is refused with the compressed byte") {
    const bytes idx = make_idx(0x08, {100, 100}, noise(10000));
    const bytes gz = gzip_bytes(idx);
    const temp_path file(".gz");
    SUBCASE("intact") {
        write_file(file.path(), gz);
        CHECK(bd::read_idx(file.path()).values.size() == 10000);
    }
    SUBCASE("cut in half") {
        write_file(file.path(), bytes(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(gz.size() / 2)));
        check_idx_error(file.path(), {"(gzip), compressed byte " + std::to_string(gz.size() / 2),
                                      "the gzip stream ends without its final block and trailer",
                                      "(truncated?)"});
    }
    SUBCASE("cut inside the trailer") {
        write_file(file.path(), bytes(gz.begin(), gz.end() - 3));
        check_idx_error(file.path(), {"compressed byte " + std::to_string(gz.size() - 3), "(truncated?)"});
    }
    SUBCASE("CRC-32 flipped") {
        bytes bad = gz;
        bad[bad.size() - 8] ^= 0xFF;
        write_file(file.path(), bad);
        // zlib notices once it has read the CRC, before the length that ends the file.
        check_idx_error(file.path(), {"compressed byte " + std::to_string(gz.size() - 4) + " (after " +
                                          std::to_string(idx.size()) + " decompressed bytes)",
                                      "corrupt gzip data (zlib: incorrect data check)"});
    }
    SUBCASE("length flipped") {
        bytes bad = gz;
        bad[bad.size() - 1] ^= 0xFF;
        write_file(file.path(), bad);
        check_idx_error(file.path(), {"corrupt gzip data (zlib: incorrect length check)"});
    }
    SUBCASE("deflate data flipped") {
        bytes bad = gz;
        // Past the IDX header: damage there shows as a bad header before zlib can notice.
        for (std::size_t i = bad.size() / 2; i < bad.size() / 2 + 20; ++i) bad[i] ^= 0xFF;
        write_file(file.path(), bad);
        check_idx_error(file.path(), {"(gzip), compressed byte ", "corrupt gzip data (zlib: "});
    }
    SUBCASE("header flipped") {
        bytes bad = gz;
        bad[2] = 7;  // compression method: not deflate
        write_file(file.path(), bad);
        check_idx_error(file.path(), {"(gzip), compressed byte ", "corrupt gzip data (zlib: unknown compression method)"});
    }
}

TEST_CASE("idx: absurd dimensions are refused before anything is allocated for them") {
    const temp_path file(".idx");
    SUBCASE("plain: more data than the file holds") {
        write_file(file.path(), make_idx(0x08, {60000, 60000, 60000}, bytes(10)));
        check_idx_error(file.path(), {byte_at(16), "expected 216000000000000 bytes of data for shape (60000, 60000, 60000)",
                                      "the file has only 10 after the header"});
    }
    SUBCASE("gzip: more than the compressed size can inflate to") {
        write_gzip(file.path(), make_idx(0x0E, {60000, 60000, 60000}, bytes(10)));
        check_idx_error(file.path(), {decompressed_byte_at(16), "expected 1728000000000000 bytes of data",
                                      "compressed file cannot hold more than"});
    }
    SUBCASE("dimensions whose product overflows 64 bits") {
        write_file(file.path(), make_idx(0x0E, {0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, bytes(10)));
        check_idx_error(file.path(), {byte_at(4), "overflow 64 bits"});
    }
    SUBCASE("element size pushes the byte count past 64 bits") {
        write_file(file.path(), make_idx(0x0E, {0xFFFFFFFF, 0xFFFFFFFF}, bytes(10)));
        check_idx_error(file.path(), {byte_at(4), "overflow 64 bits"});
    }
}

// ---------------------------------------------------------------------------------------- CSV

TEST_CASE("csv: header, label chosen by name, CRLF, spaces, BOM and blank trailing lines") {
    const temp_path file(".csv");
    write_text(file.path(),
               "\xEF\xBB\xBF" "a, label ,b\r\n1.5,0,-2\r\n 3e2 , 1 ,+4\r\nnan,2,1e-50\r\n\r\n  \n\n");
    const bd::csv_data data = bd::read_csv(file.path(), {.label_column = "label"});
    REQUIRE(data.features.shape() == std::array<std::size_t, 2>{3, 2});
    CHECK(data.features(0, 0) == 1.5f);
    CHECK(data.features(0, 1) == -2.0f);
    CHECK(data.features(1, 0) == 300.0f);
    CHECK(data.features(1, 1) == 4.0f);
    CHECK(std::isnan(data.features(2, 0)));
    CHECK(data.features(2, 1) == 0.0f);  // underflow reads as the nearest float
    REQUIRE(data.labels.shape(0) == 3);
    CHECK(data.labels(0) == 0.0f);
    CHECK(data.labels(1) == 1.0f);
    CHECK(data.labels(2) == 2.0f);
    CHECK(data.feature_names == std::vector<std::string>{"a", "b"});
}

TEST_CASE("csv: label chosen by index, no labels, no header, other delimiters") {
    const temp_path file(".csv");
    SUBCASE("by index, with a header") {
        write_text(file.path(), "x,y,z\n1,2,3\n4,5,6");  // no final newline
        const bd::csv_data data = bd::read_csv(file.path(), {.label_index = 0});
        REQUIRE(data.features.shape() == std::array<std::size_t, 2>{2, 2});
        CHECK(data.features(1, 0) == 5.0f);
        CHECK(data.features(1, 1) == 6.0f);
        CHECK(data.labels(0) == 1.0f);
        CHECK(data.labels(1) == 4.0f);
        CHECK(data.feature_names == std::vector<std::string>{"y", "z"});
    }
    SUBCASE("no labels") {
        write_text(file.path(), "x,y\n1,2\n");
        const bd::csv_data data = bd::read_csv(file.path());
        CHECK(data.features.shape() == std::array<std::size_t, 2>{1, 2});
        CHECK(data.labels.shape(0) == 0);
        CHECK(data.feature_names == std::vector<std::string>{"x", "y"});
    }
    SUBCASE("no header, label last, semicolons") {
        write_text(file.path(), "1;2;0\n3;4;1\n5;6;1\n");
        const bd::csv_data data = bd::read_csv(file.path(), {.header = false, .label_index = 2, .delimiter = ';'});
        REQUIRE(data.features.shape() == std::array<std::size_t, 2>{3, 2});
        CHECK(data.features(2, 1) == 6.0f);
        CHECK(data.labels(2) == 1.0f);
        CHECK(data.feature_names.empty());
    }
    SUBCASE("tabs") {
        write_text(file.path(), "a\tb\n1\t2\n");
        CHECK(bd::read_csv(file.path(), {.delimiter = '\t'}).features(0, 1) == 2.0f);
    }
}

TEST_CASE("csv: a wrong field count names the line") {
    const temp_path file(".csv");
    write_text(file.path(), "a,b,c\n1,2,3\n4,5\n");
    check_io_error([&] { (void)bd::read_csv(file.path()); },
                   {file.quoted(), ", line 3: ", "expected 3 fields as in the header, found 2"});
    write_text(file.path(), "1,2\n3,4,5\n");
    check_io_error([&] { (void)bd::read_csv(file.path(), {.header = false}); },
                   {file.quoted(), ", line 2: ", "expected 2 fields as on the first line, found 3"});
}

TEST_CASE("csv: a field that is not a number names line, column and text") {
    const temp_path file(".csv");
    const auto read = [&] { (void)bd::read_csv(file.path(), {.label_column = "y"}); };
    SUBCASE("text") {
        write_text(file.path(), "a,b,y\r\n1,2,3\r\n4,5x,6\r\n");
        check_io_error(read, {file.quoted(), ", line 3, column 2 (\"b\"): expected a number, found \"5x\""});
    }
    SUBCASE("in the label column") {
        write_text(file.path(), "a,b,y\n1,2,cat\n");
        check_io_error(read, {", line 2, column 3 (\"y\"): expected a number, found \"cat\""});
    }
    SUBCASE("empty field") {
        write_text(file.path(), "a,b,y\n1,,3\n");
        check_io_error(read, {", line 2, column 2 (\"b\"): empty field; expected a number"});
    }
    SUBCASE("out of float range") {
        write_text(file.path(), "a,b,y\n1e39,2,3\n");
        check_io_error(read, {", line 2, column 1 (\"a\"): number \"1e39\" is outside the range of float"});
    }
    SUBCASE("quoted field") {
        write_text(file.path(), "a,b,y\n1,\"2\",3\n");
        check_io_error(read, {", line 2, column 2 (\"b\"): quoted field \"2\"", "does not support quoting"});
    }
    SUBCASE("without a header the column has no name") {
        write_text(file.path(), "1,2\n3,four\n");
        check_io_error([&] { (void)bd::read_csv(file.path(), {.header = false}); },
                       {", line 2, column 2: expected a number, found \"four\""});
    }
}

TEST_CASE("csv: a missing label column, empty files and bad options") {
    const temp_path file(".csv");
    SUBCASE("label column name not in the header") {
        write_text(file.path(), "a,b\n1,2\n");
        check_io_error([&] { (void)bd::read_csv(file.path(), {.label_column = "label"}); },
                       {file.quoted(), ", line 1: no column named \"label\" for the labels; the header has \"a\", \"b\""});
    }
    SUBCASE("label index past the last column") {
        write_text(file.path(), "1,2\n");
        check_io_error([&] { (void)bd::read_csv(file.path(), {.header = false, .label_index = 2}); },
                       {", line 1: label_index 2 but the line has 2 fields"});
    }
    SUBCASE("empty file") {
        write_text(file.path(), "");
        check_io_error([&] { (void)bd::read_csv(file.path()); },
                       {file.quoted() + ": empty file; expected a header line and at least one data row"});
    }
    SUBCASE("only blank lines") {
        write_text(file.path(), "\r\n\n  \n");
        check_io_error([&] { (void)bd::read_csv(file.path(), {.header = false}); }, {"empty file"});
    }
    SUBCASE("header without data rows") {
        write_text(file.path(), "a,b\n\n");
        check_io_error([&] { (void)bd::read_csv(file.path()); },
                       {", line 1: the header is the only line; expected at least one data row"});
    }
    SUBCASE("blank line between rows") {
        write_text(file.path(), "a,b\n1,2\n\n3,4\n");
        check_io_error([&] { (void)bd::read_csv(file.path()); }, {", line 3: empty line"});
    }
    SUBCASE("missing file") {
        check_io_error([&] { (void)bd::read_csv(file.path()); }, {file.quoted() + ": no such file"});
    }
    SUBCASE("contradictory options") {
        write_text(file.path(), "a,b\n1,2\n");
        CHECK_THROWS_AS((void)bd::read_csv(file.path(), {.label_column = "a", .label_index = 1}), usage_error);
        CHECK_THROWS_AS((void)bd::read_csv(file.path(), {.header = false, .label_column = "a"}), usage_error);
        CHECK_THROWS_AS((void)bd::read_csv(file.path(), {.label_index = -2}), usage_error);
    }
}

// ------------------------------------------------------------------------------- npz and npy

TEST_CASE("npz: int64 arrays round trip exactly beside float arrays") {
    const std::int64_t big = (std::int64_t{1} << 62) + 1;  // not representable as float or double
    const std::vector<std::int64_t> integers = {big, -big, std::numeric_limits<std::int64_t>::min(),
                                                std::numeric_limits<std::int64_t>::max(), 0, -1};
    const std::vector<std::pair<std::string, bd::npz_array>> arrays = {
        {"weights", {{2}, {0.5f, -1.0f}}},  // the float aggregate form existing callers use
        {"step", bd::int64_array({}, {big})},
        {"seeds", bd::int64_array({2, 3}, integers)},
        {"none", bd::int64_array({0}, {})},
    };
    const temp_path file(".npz");
    bd::write_npz(file.path(), arrays);
    CHECK(file.temporaries().empty());
    const bytes written = read_file(file.path());
    CHECK(std::string(written.begin(), written.end()).find("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }") !=
          std::string::npos);
    const auto read = bd::read_npz(file.path());
    REQUIRE(read.size() == 4);
    CHECK(read[0].second.dtype == bd::npz_dtype::float32);
    CHECK(read[0].second.values == std::vector<float>{0.5f, -1.0f});
    CHECK(read[0].second.integers.empty());
    CHECK(read[1].second.dtype == bd::npz_dtype::int64);
    CHECK(read[1].second.shape.empty());
    CHECK(read[1].second.integers == std::vector<std::int64_t>{big});
    CHECK(read[1].second.values.empty());
    CHECK(read[2].second.shape == std::vector<std::size_t>{2, 3});
    CHECK(read[2].second.integers == integers);
    CHECK(read[3].second.dtype == bd::npz_dtype::int64);
    CHECK(read[3].second.integers.empty());

    SUBCASE("an int64 array whose count does not match its shape is refused") {
        check_io_error([&] { bd::write_npz(file.path(), {{"s", bd::int64_array({3}, {1, 2})}}); },
                       {"write_npz: " + file.quoted(), "array \"s\" has 2 integers; expected the product of its shape (3)"});
    }
    SUBCASE("an array holding both vectors is refused") {
        bd::npz_array both = bd::int64_array({1}, {1});
        both.values = {1.0f};
        check_io_error([&] { bd::write_npz(file.path(), {{"b", both}}); },
                       {"array \"b\" is int64 but also holds 1 float values"});
    }
    CHECK(bd::read_npz(file.path()).size() == 4);  // refused writes left the file alone
}

TEST_CASE("npy: standalone files round trip, laid out as np.save writes them") {
    const temp_path file(".npy");
    SUBCASE("float32") {
        const bd::npz_array array{{2, 2}, {1.0f, -2.0f, 0.25f, std::numeric_limits<float>::infinity()}};
        bd::write_npy(file.path(), array);
        CHECK(file.temporaries().empty());
        const bytes data = read_file(file.path());
        REQUIRE(data.size() == 128 + 16);  // the data starts on a 64-byte boundary
        CHECK(std::string(data.begin(), data.begin() + 6) == "\x93NUMPY");
        CHECK(std::string(data.begin() + 10, data.begin() + 128).starts_with(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }"));
        CHECK(data[127] == '\n');
        const bd::npz_array back = bd::read_npy(file.path());
        CHECK(back.dtype == bd::npz_dtype::float32);
        CHECK(back.shape == array.shape);
        CHECK(back.values == array.values);
    }
    SUBCASE("int64") {
        const std::int64_t big = (std::int64_t{1} << 62) + 1;
        bd::write_npy(file.path(), bd::int64_array({3}, {big, -big, 7}));
        const bd::npz_array back = bd::read_npy(file.path());
        CHECK(back.dtype == bd::npz_dtype::int64);
        CHECK(back.shape == std::vector<std::size_t>{3});
        CHECK(back.integers == std::vector<std::int64_t>{big, -big, 7});
    }
}

namespace {

/// An .npy file with this header dict and data, padded as NumPy pads it.
bytes make_npy(std::string dict, const bytes& data) {
    dict.append((64 - (10 + dict.size() + 1) % 64) % 64, ' ');
    dict += '\n';
    bytes out = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    out.push_back(static_cast<unsigned char>(dict.size()));
    out.push_back(static_cast<unsigned char>(dict.size() >> 8));
    out.insert(out.end(), dict.begin(), dict.end());
    out.insert(out.end(), data.begin(), data.end());
    return out;
}

bytes le(std::initializer_list<std::uint64_t> values, int size) {
    bytes out;
    for (const std::uint64_t v : values)
        for (int i = 0; i < size; ++i) out.push_back(static_cast<unsigned char>(v >> (8 * i)));
    return out;
}

std::string npy_dict(const std::string& descr, const std::string& shape, bool fortran = false) {
    return "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") + ", 'shape': " + shape + ", }";
}

}  // namespace

TEST_CASE("npy: the integer dtypes NumPy writes are read as exact int64") {
    const temp_path file(".npy");
    const auto read_as = [&](const std::string& dict, const bytes& data) {
        write_file(file.path(), make_npy(dict, data));
        const bd::npz_array array = bd::read_npy(file.path());
        CHECK(array.dtype == bd::npz_dtype::int64);
        CHECK(array.values.empty());
        return array.integers;
    };
    using ints = std::vector<std::int64_t>;
    CHECK(read_as(npy_dict("<i8", "(2,)"), le({0x4000000000000001ull, 0xFFFFFFFFFFFFFFFFull}, 8)) ==
          ints{(std::int64_t{1} << 62) + 1, -1});
    CHECK(read_as(npy_dict("<i4", "(3,)"), le({1, 0xFFFFFFFF, 0x80000000}, 4)) == ints{1, -1, -2147483648LL});
    CHECK(read_as(npy_dict("<i2", "(2,)"), le({0x7FFF, 0x8000}, 2)) == ints{32767, -32768});
    CHECK(read_as(npy_dict("|i1", "(2,)"), {0x7F, 0x80}) == ints{127, -128});
    CHECK(read_as(npy_dict("|u1", "(3,)"), {0, 128, 255}) == ints{0, 128, 255});
    CHECK(read_as(npy_dict("<u1", "(1,)"), {200}) == ints{200});
    CHECK(read_as(npy_dict("<u4", "(1,)"), le({0xFFFFFFFF}, 4)) == ints{4294967295LL});
    CHECK(read_as(npy_dict("<u8", "(1,)"), le({0x7FFFFFFFFFFFFFFFull}, 8)) == ints{std::numeric_limits<std::int64_t>::max()});
    // Fortran order: the column-major bytes 1 3 2 4 are the C-order matrix [[1, 2], [3, 4]].
    CHECK(read_as(npy_dict("<i4", "(2, 2)", true), le({1, 3, 2, 4}, 4)) == ints{1, 2, 3, 4});
}

TEST_CASE("npy: read_npy and write_npy refuse bad files and arrays, naming file and byte") {
    const temp_path file(".npy");
    const auto read = [&] { (void)bd::read_npy(file.path()); };
    SUBCASE("missing") {
        check_io_error(read, {"read_npy: " + file.quoted() + ": no such file"});
    }
    SUBCASE("not an .npy file") {
        write_text(file.path(), "hello, this is text and not an array");
        check_io_error(read, {"read_npy: " + file.quoted() + ", byte 0: expected the .npy magic",
                              "at the start of the file"});
    }
    SUBCASE("truncated data") {
        const bytes npy = make_npy(npy_dict("<i8", "(4,)"), le({1, 2, 3}, 8));
        write_file(file.path(), npy);
        check_io_error(read, {"read_npy: " + file.quoted() + byte_at(npy.size() - 24),
                              "expected 32 bytes of array data for shape (4,) of '<i8', the file has 24"});
    }
    SUBCASE("'<u8' past int64") {
        const bytes npy = make_npy(npy_dict("<u8", "(2,)"), le({5, 0x8000000000000000ull}, 8));
        write_file(file.path(), npy);
        check_io_error(read, {byte_at(npy.size() - 8), "element 1 of the '<u8' array is 9223372036854775808, "
                                                       "which does not fit int64"});
    }
    SUBCASE("unsupported dtype") {
        write_file(file.path(), make_npy(npy_dict("<c8", "(1,)"), bytes(8)));
        check_io_error(read, {byte_at(10), "unsupported dtype '<c8'; expected '<f4' or '<f8'", "'<i8'"});
    }
    SUBCASE("write_npy: values that do not match the shape") {
        check_io_error([&] { bd::write_npy(file.path(), {{2, 2}, {1.0f}}); },
                       {"write_npy: " + file.quoted(), "has 1 values; expected the product of its shape (4)"});
        CHECK_FALSE(fs::exists(file.path()));
        CHECK(file.temporaries().empty());
    }
    SUBCASE("write_npy into a missing directory") {
        const fs::path target = file.path() / "no" / "x.npy";
        check_io_error([&] { bd::write_npy(target, bd::int64_array({1}, {1})); },
                       {"write_npy: \"" + target.string() + "\"", "cannot open"});
    }
}

// --------------------------------------------------------------------------- Fashion-MNIST

TEST_CASE("fashion_mnist: the Debian files load quickly, with the published counts and ranges") {
    const fs::path dir = "/usr/share/datasets/fashion-mnist";
    if (!fs::is_directory(dir)) {
        MESSAGE("no " << dir << " (Debian package dataset-fashion-mnist); skipping");
        return;
    }
    const auto start = std::chrono::steady_clock::now();
    const bd::fashion_mnist_arrays data = bd::read_fashion_mnist();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    MESSAGE("read_fashion_mnist took " << seconds << " s");
    WARN(seconds < 1.0);

    CHECK(data.train_images.shape() == std::array<std::size_t, 3>{60000, 28, 28});
    CHECK(data.test_images.shape() == std::array<std::size_t, 3>{10000, 28, 28});
    CHECK(data.train_labels.shape(0) == 60000);
    CHECK(data.test_labels.shape(0) == 10000);
    for (const auto* images : {&data.train_images, &data.test_images}) {
        const auto [low, high] = std::minmax_element(images->data(), images->data() + images->size());
        CHECK(*low == 0.0f);
        CHECK(*high == 1.0f);
    }
    // Zalando's README: the first training image is an ankle boot (9), and every class has
    // 6000 training and 1000 test images.
    CHECK(data.train_labels(0) == 9);
    CHECK(bd::fashion_mnist_class_names[9] == "Ankle boot");
    for (const auto& [labels, per_class] : {std::pair{&data.train_labels, 6000}, std::pair{&data.test_labels, 1000}}) {
        std::vector<int> counts(10, 0);
        for (const int label : *labels) {
            REQUIRE(label >= 0);
            REQUIRE(label <= 9);
            ++counts[static_cast<std::size_t>(label)];
        }
        CHECK(counts == std::vector<int>(10, per_class));
    }
    // Every pixel is a multiple of 1/255 exactly as the division makes it.
    CHECK(data.train_images(0, 0, 0) * 255.0f == std::round(data.train_images(0, 0, 0) * 255.0f));
}

namespace {

/// A Fashion-MNIST-shaped directory: N_IMAGES blank 28x28 train images, the given train labels
/// and a consistent one-image test set; images gzip-compressed, labels plain (both are accepted).
void write_fashion_dir(const fs::path& dir, std::uint32_t n_images, const bytes& train_labels) {
    fs::create_directory(dir);
    write_gzip(dir / "train-images-idx3-ubyte.gz", make_idx(0x08, {n_images, 28, 28}, bytes(n_images * 784u, 255)));
    write_file(dir / "train-labels-idx1-ubyte", make_idx(0x08, {static_cast<std::uint32_t>(train_labels.size())}, train_labels));
    write_gzip(dir / "t10k-images-idx3-ubyte.gz", make_idx(0x08, {1, 28, 28}, bytes(784, 0)));
    write_gzip(dir / "t10k-labels-idx1-ubyte.gz", make_idx(0x08, {1}, {3}));
}

}  // namespace

TEST_CASE("fashion_mnist: small files with or without .gz read, bad counts and labels are data_errors") {
    const temp_path dir;
    SUBCASE("consistent") {
        write_fashion_dir(dir.path(), 2, {0, 9});
        const bd::fashion_mnist_arrays data = bd::read_fashion_mnist(dir.path());
        CHECK(data.train_images.shape() == std::array<std::size_t, 3>{2, 28, 28});
        CHECK(data.train_images(1, 27, 27) == 1.0f);
        CHECK(data.train_labels(1) == 9);
        CHECK(data.test_images(0, 0, 0) == 0.0f);
        CHECK(data.test_labels(0) == 3);
        // Kept as bytes, the same samples read as the same floats.
        const auto floats = bd::fashion_mnist(dir.path());
        const auto kept = bd::fashion_mnist_bytes(dir.path());
        for (const auto& [a, b] : {std::pair{&floats.train, &kept.train}, std::pair{&floats.test, &kept.test}}) {
            auto ra = a->batch(4).read();
            auto rb = b->batch(4).read();
            bd::batch_data ba;
            bd::batch_data bb;
            REQUIRE(ra.next(ba));
            REQUIRE(rb.next(bb));
            CHECK(ba.rows == bb.rows);
            CHECK(std::equal(ba.features.begin(), ba.features.begin() + ba.rows * 784, bb.features.begin()));
            CHECK(std::equal(ba.targets.begin(), ba.targets.begin() + ba.rows, bb.targets.begin()));
        }
    }
    SUBCASE("images and labels of different counts") {
        write_fashion_dir(dir.path(), 3, {1, 2});
        const std::string images = (dir.path() / "train-images-idx3-ubyte.gz").string();
        const std::string labels = (dir.path() / "train-labels-idx1-ubyte").string();
        const auto read = [&] { (void)bd::read_fashion_mnist(dir.path()); };
        CHECK_THROWS_WITH_AS(read(), doctest::Contains(("\"" + images + "\" holds 3 images").c_str()), data_error);
        CHECK_THROWS_WITH_AS(read(), doctest::Contains(("\"" + labels + "\" holds 2 labels").c_str()), data_error);
    }
    SUBCASE("a label above 9") {
        write_fashion_dir(dir.path(), 3, {1, 2, 12});
        const std::string labels = (dir.path() / "train-labels-idx1-ubyte").string();
        CHECK_THROWS_WITH_AS((void)bd::read_fashion_mnist(dir.path()),
                             doctest::Contains(("\"" + labels + "\": label 12 of sample 2; expected 0..9").c_str()),
                             data_error);
        try {
            (void)bd::read_fashion_mnist(dir.path());
            FAIL("expected a data_error");
        } catch (const data_error& e) {
            CHECK(e.sample() == 2);
        }
    }
    SUBCASE("images that are not 28x28") {
        write_fashion_dir(dir.path(), 1, {0});
        write_gzip(dir.path() / "train-images-idx3-ubyte.gz", make_idx(0x08, {1, 32, 32}, bytes(1024)));
        CHECK_THROWS_WITH_AS((void)bd::read_fashion_mnist(dir.path()),
                             doctest::Contains("holds (1, 32, 32) of ubyte; expected (n, 28, 28) of ubyte images"),
                             data_error);
    }
    SUBCASE("a damaged file is the IDX reader's io_error") {
        write_fashion_dir(dir.path(), 1, {0});
        write_file(dir.path() / "t10k-labels-idx1-ubyte.gz", {0x1f, 0x8b, 8, 0});
        CHECK_THROWS_WITH_AS((void)bd::read_fashion_mnist(dir.path()),
                             doctest::Contains("t10k-labels-idx1-ubyte.gz\" (gzip), compressed byte"), io_error);
    }
}

TEST_CASE("fashion_mnist: a missing directory or file is an io_error naming the Debian package") {
    const temp_path dir;
    check_io_error([&] { (void)bd::read_fashion_mnist(dir.path()); },
                   {"read_fashion_mnist: \"" + dir.path().string() + "\" is not a directory",
                    "the Debian package dataset-fashion-mnist provides"});
    write_fashion_dir(dir.path(), 1, {0});
    fs::remove(dir.path() / "t10k-images-idx3-ubyte.gz");
    check_io_error([&] { (void)bd::read_fashion_mnist(dir.path()); },
                   {"neither \"" + (dir.path() / "t10k-images-idx3-ubyte.gz").string() + "\" nor \"" +
                        (dir.path() / "t10k-images-idx3-ubyte").string() + "\" exists",
                    "dataset-fashion-mnist"});
}
