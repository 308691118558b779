// Fuzz target: read_idx behind a valid gzip layer. Random bytes almost never pass gzip's CRC,
// so fuzz_idx alone would test the IDX parser of gzip files hardly at all: here the input after
// its first byte is the IDX content, compressed with zlib before it is read, and the first byte
// damages the gzip layer in the ways a download does:
//   bit 0: two gzip members (cat a.gz b.gz), split where bits 4-7 say;
//   bit 1: bytes of garbage after the last member;
//   bit 2: the compressed file truncated by 1 + bits 4-7 bytes;
//   bit 3: one compressed byte flipped.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "batchwise/data/idx.hpp"
#include "fuzz_common.hpp"

namespace {

std::vector<bw_fuzz::seed> seeds() {
    using bw_fuzz::bytes;
    using bw_fuzz::idx_file;
    const auto with_mode = [](unsigned char mode, bytes idx) {
        idx.insert(idx.begin(), mode);
        return idx;
    };
    const bytes images = idx_file(0x08, {2, 2, 2}, {0, 64, 128, 255, 1, 2, 3, 4});
    const bytes floats = idx_file(0x0D, {3}, {0x3F, 0x80, 0, 0, 0xBF, 0x80, 0, 0, 0x7F, 0x80, 0, 0});
    return {
        {"plain_images", with_mode(0x00, images)},
        {"plain_floats", with_mode(0x00, floats)},
        {"two_members", with_mode(0x51, images)},
        {"trailing_garbage", with_mode(0x22, images)},
        {"truncated", with_mode(0x34, floats)},
        {"flipped", with_mode(0x08, floats)},
    };
}

const std::filesystem::path& scratch() {
    static const std::filesystem::path path = bw_fuzz::scratch_path("idx_gzip", ".gz");
    return path;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
    bw_fuzz::maybe_write_seeds(argc, argv, seeds);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const unsigned mode = data[0];
    const unsigned amount = mode >> 4;
    const unsigned char* idx = data + 1;
    const std::size_t idx_size = size - 1;
    bw_fuzz::bytes file;
    if (mode & 1) {
        const std::size_t cut = std::min<std::size_t>(idx_size, amount);
        file = bw_fuzz::gzip(idx, cut);
        const bw_fuzz::bytes second = bw_fuzz::gzip(idx + cut, idx_size - cut);
        file.insert(file.end(), second.begin(), second.end());
    } else {
        file = bw_fuzz::gzip(idx, idx_size);
    }
    if (mode & 2) file.insert(file.end(), amount + 1, static_cast<unsigned char>(amount));
    if (mode & 4) file.resize(file.size() - std::min<std::size_t>(file.size(), amount + 1));
    if ((mode & 8) && !file.empty()) file[(amount * 7) % file.size()] ^= 0x5A;
    bw_fuzz::write_file(scratch(), file);
    return bw_fuzz::run_one([] { (void)batchwise::data::read_idx(scratch()); });
}
