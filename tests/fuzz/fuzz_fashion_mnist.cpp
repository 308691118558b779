// Fuzz target: read_fashion_mnist on a directory of four fuzzed files. The input is split:
//   byte 0, bits 0-3: file i is stored gzip-compressed, as NAME.gz (the Debian layout);
//   bytes 1-6: the sizes of the first three files (16-bit little-endian); the rest is the fourth.
// The files, in order: train images, train labels, t10k images, t10k labels.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "batchwise/data/fashion_mnist.hpp"
#include "fuzz_common.hpp"

namespace {

constexpr std::array<const char*, 4> names = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

bw_fuzz::bytes pack(unsigned char gzip_mask, const std::array<bw_fuzz::bytes, 4>& files) {
    bw_fuzz::bytes out = {gzip_mask};
    for (std::size_t i = 0; i < 3; ++i) {
        out.push_back(static_cast<unsigned char>(files[i].size() & 0xFF));
        out.push_back(static_cast<unsigned char>(files[i].size() >> 8));
    }
    for (const auto& f : files) out.insert(out.end(), f.begin(), f.end());
    return out;
}

std::vector<bw_fuzz::seed> seeds() {
    using bw_fuzz::bytes;
    using bw_fuzz::idx_file;
    bytes pixels(28 * 28);
    for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<unsigned char>(i * 7);
    bytes two_images = pixels;
    two_images.insert(two_images.end(), pixels.rbegin(), pixels.rend());
    const bytes train_images = idx_file(0x08, {2, 28, 28}, two_images);
    const bytes train_labels = idx_file(0x08, {2}, {9, 0});
    const bytes test_images = idx_file(0x08, {1, 28, 28}, pixels);
    const bytes test_labels = idx_file(0x08, {1}, {3});
    return {
        {"plain", pack(0x0, {train_images, train_labels, test_images, test_labels})},
        {"gzip_all", pack(0xF, {train_images, train_labels, test_images, test_labels})},
        {"gzip_some", pack(0x5, {train_images, train_labels, test_images, test_labels})},
        {"empty_splits", pack(0x0, {idx_file(0x08, {0, 28, 28}, {}), idx_file(0x08, {0}, {}),
                                    idx_file(0x08, {0, 28, 28}, {}), idx_file(0x08, {0}, {})})},
        {"label_10", pack(0x0, {test_images, idx_file(0x08, {1}, {10}), test_images, test_labels})},
    };
}

const std::filesystem::path& directory() {
    static const std::filesystem::path dir = [] {
        const std::filesystem::path d = bw_fuzz::scratch_path("fashion_mnist");
        std::filesystem::create_directories(d);
        return d;
    }();
    return dir;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
    bw_fuzz::maybe_write_seeds(argc, argv, seeds);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 7) return 0;
    const unsigned gzip_mask = data[0];
    std::size_t at = 7;
    for (std::size_t i = 0; i < 4; ++i) {
        const std::size_t declared = i < 3 ? data[1 + 2 * i] | (std::size_t{data[2 + 2 * i]} << 8) : size - at;
        const std::size_t n = std::min(declared, size - at);
        const std::filesystem::path plain = directory() / names[i];
        const std::filesystem::path gz = directory() / (std::string(names[i]) + ".gz");
        // The reader prefers NAME.gz: only the file this input asks for may be there.
        if (gzip_mask & (1u << i)) {
            std::filesystem::remove(plain);
            bw_fuzz::write_file(gz, bw_fuzz::gzip(data + at, n));
        } else {
            std::filesystem::remove(gz);
            bw_fuzz::write_file(plain, data + at, n);
        }
        at += n;
    }
    return bw_fuzz::run_one([] { (void)batchwise::data::read_fashion_mnist(directory()); });
}
