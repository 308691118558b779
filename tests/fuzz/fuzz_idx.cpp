// Fuzz target: read_idx on the input as a file, plain or gzip as its first bytes say (the reader
// decides by content). Seeds: an IDX file of every element type, and gzip copies of some.
#include <cstddef>
#include <cstdint>

#include "batchwise/data/idx.hpp"
#include "fuzz_common.hpp"

namespace {

std::vector<bw_fuzz::seed> seeds() {
    using bw_fuzz::idx_file;
    std::vector<bw_fuzz::seed> out = {
        {"ubyte_2x3.idx", idx_file(0x08, {2, 3}, {0, 1, 2, 253, 254, 255})},
        {"sbyte_4.idx", idx_file(0x09, {4}, {0x80, 0xFF, 0, 0x7F})},
        {"short_2.idx", idx_file(0x0B, {2}, {0x80, 0x00, 0x12, 0x34})},
        {"int_1x2.idx", idx_file(0x0C, {1, 2}, {0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x00, 0x00})},
        {"float_2.idx", idx_file(0x0D, {2}, {0x3F, 0x80, 0, 0, 0x7F, 0xC0, 0, 0})},
        {"double_1.idx", idx_file(0x0E, {1}, {0x7F, 0xEF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF})},
        {"empty_0x5.idx", idx_file(0x08, {0, 5}, {})},
        {"labels_10.idx", idx_file(0x08, {10}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9})},
    };
    out.push_back({"ubyte_2x3.idx.gz", bw_fuzz::gzip(out[0].data)});
    out.push_back({"float_2.idx.gz", bw_fuzz::gzip(out[4].data)});
    out.push_back({"labels_10.idx.gz", bw_fuzz::gzip(out[7].data)});
    return out;
}

const std::filesystem::path& scratch() {
    static const std::filesystem::path path = bw_fuzz::scratch_path("idx");
    return path;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
    bw_fuzz::maybe_write_seeds(argc, argv, seeds);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    bw_fuzz::write_file(scratch(), data, size);
    return bw_fuzz::run_one([] { (void)batchwise::data::read_idx(scratch()); });
}
