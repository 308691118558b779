// Inputs of the .npy and .npz targets (read_npy, read_npz, load_weights, load_checkpoint): seed
// files (what write_npy and write_npz write, plus the dtypes, orders and ZIP methods numpy writes
// and batchwise does not, made here byte by byte since the library has no writer for them), and
// the CRC repair that lets mutations reach the arrays inside an archive.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "batchwise/data/npy.hpp"
#include "batchwise/data/npz.hpp"
#include "fuzz_common.hpp"

namespace bw_fuzz {

/// An .npy file as numpy 1.0 format writes it: magic, version, header padded to 64 bytes.
inline bytes npy_file(std::string_view descr, bool fortran, std::string_view shape, const bytes& payload) {
    std::string header = "{'descr': '" + std::string(descr) + "', 'fortran_order': " +
                         (fortran ? "True" : "False") + ", 'shape': " + std::string(shape) + ", }";
    while ((10 + header.size() + 1) % 64 != 0) header += ' ';
    header += '\n';
    bytes out = as_bytes("\x93NUMPY");
    out.push_back(1);
    out.push_back(0);
    out.push_back(static_cast<unsigned char>(header.size() & 0xFF));
    out.push_back(static_cast<unsigned char>(header.size() >> 8));
    out.insert(out.end(), header.begin(), header.end());
    out.insert(out.end(), payload.begin(), payload.end());
    return out;
}

inline std::vector<std::pair<std::string, batchwise::data::npz_array>> sample_arrays() {
    using batchwise::data::npz_array;
    return {
        {"dense_1/kernel", npz_array{{2, 3}, {1.f, -2.f, 0.5f, 0.f, 3.25f, -0.f}}},
        {"dense_1/bias", npz_array{{3}, {0.1f, 0.2f, 0.3f}}},
        {"optimizer/iterations", batchwise::data::int64_array({}, {42})},
        {"empty", npz_array{{0, 4}, {}}},
    };
}

inline std::vector<seed> npy_seeds() {
    const std::filesystem::path path = scratch_path("npy_seed", ".npy");
    std::vector<seed> out;
    for (const auto& [name, array] : sample_arrays()) {
        batchwise::data::write_npy(path, array);
        std::string file = name;
        for (char& c : file)
            if (c == '/') c = '_';
        out.push_back({"write_npy_" + file + ".npy", read_file(path)});
    }
    std::filesystem::remove(path);
    out.push_back({"f8_fortran.npy", npy_file("<f8", true, "(2, 2)",
                                              {0, 0, 0, 0, 0, 0, 0xF0, 0x3F, 0, 0, 0, 0, 0, 0, 0, 0x40,
                                               0, 0, 0, 0, 0, 0, 0x08, 0x40, 0, 0, 0, 0, 0, 0, 0x10, 0x40})});
    out.push_back({"u1.npy", npy_file("|u1", false, "(3,)", {0, 128, 255})});
    out.push_back({"i4_scalar.npy", npy_file("<i4", false, "()", {0xFF, 0xFF, 0xFF, 0x7F})});
    out.push_back({"u8.npy", npy_file("<u8", false, "(1,)", {1, 0, 0, 0, 0, 0, 0, 0})});
    return out;
}

namespace zip_seed {

inline void put(bytes& out, std::uint64_t v, int size) {
    for (int i = 0; i < size; ++i) out.push_back(static_cast<unsigned char>(v >> (8 * i)));
}

/// Raw deflate (no zlib or gzip wrapper), as ZIP method 8 stores it.
inline bytes deflate_raw(const bytes& data) {
    return bw_fuzz::deflate_bytes(data.data(), data.size(), -MAX_WBITS, Z_BEST_COMPRESSION);
}

}  // namespace zip_seed

/// A ZIP of NAME.npy entries, each deflated (method 8) as np.savez_compressed writes them.
inline bytes deflated_npz(const std::vector<std::pair<std::string, bytes>>& entries) {
    using zip_seed::put;
    bytes out, central;
    for (const auto& entry : entries) {
        // Named copies: clang 14 cannot capture structured bindings in the lambda below.
        const std::string& name = entry.first;
        const bytes& npy = entry.second;
        const bytes packed = zip_seed::deflate_raw(npy);
        const auto crc = crc32(0L, npy.data(), static_cast<uInt>(npy.size()));
        const std::uint64_t offset = out.size();
        const auto common = [&](bytes& b) {
            put(b, 20, 2);  // version needed
            put(b, 0, 2);   // flags
            put(b, 8, 2);   // method: deflate
            put(b, 0, 2);   // time
            put(b, 0x21, 2);  // date
            put(b, crc, 4);
            put(b, packed.size(), 4);
            put(b, npy.size(), 4);
            put(b, name.size(), 2);
            put(b, 0, 2);  // extra length
        };
        put(out, 0x04034b50, 4);
        common(out);
        out.insert(out.end(), name.begin(), name.end());
        out.insert(out.end(), packed.begin(), packed.end());
        put(central, 0x02014b50, 4);
        put(central, 20, 2);  // version made by
        common(central);
        put(central, 0, 2);  // comment length
        put(central, 0, 2);  // disk
        put(central, 0, 2);  // internal attributes
        put(central, 0, 4);  // external attributes
        put(central, offset, 4);
        central.insert(central.end(), name.begin(), name.end());
    }
    const std::uint64_t central_offset = out.size();
    out.insert(out.end(), central.begin(), central.end());
    put(out, 0x06054b50, 4);
    put(out, 0, 2);
    put(out, 0, 2);
    put(out, entries.size(), 2);
    put(out, entries.size(), 2);
    put(out, central.size(), 4);
    put(out, central_offset, 4);
    put(out, 0, 2);  // comment length
    return out;
}

inline std::vector<seed> npz_seeds() {
    const std::filesystem::path path = scratch_path("npz_seed", ".npz");
    std::vector<seed> out;
    batchwise::data::write_npz(path, sample_arrays());
    out.push_back({"write_npz.npz", read_file(path)});
    batchwise::data::write_npz(path, {{"x", batchwise::data::npz_array{{}, {2.5f}}}});
    out.push_back({"write_npz_scalar.npz", read_file(path)});
    std::filesystem::remove(path);
    const std::vector<seed> npys = npy_seeds();
    out.push_back({"deflated.npz", deflated_npz({{"a.npy", npys[0].data}, {"b.npy", npys[4].data}})});
    out.push_back({"deflated_u1.npz", deflated_npz({{"labels.npy", npys[5].data}})});
    return out;
}

/// Sets the CRC-32 of every stored entry whose data lies inside FILE to what its data has. The
/// reader checks each entry's CRC, so without this almost every mutation of an array inside an
/// archive (a shape, a step count, a value) would be refused there and never reach the code
/// that reads the array. Anything malformed is left as it is, for the reader to refuse.
inline void repair_zip_crcs(bytes& file) {
    const auto get = [&](std::size_t at, int size) {
        std::uint64_t v = 0;
        for (int i = size - 1; i >= 0; --i) v = (v << 8) | file[at + static_cast<std::size_t>(i)];
        return v;
    };
    const auto put = [&](std::size_t at, std::uint64_t v) {
        for (int i = 0; i < 4; ++i) file[at + static_cast<std::size_t>(i)] = static_cast<unsigned char>(v >> (8 * i));
    };
    if (file.size() < 22) return;
    std::size_t end = file.size() - 22;
    while (get(end, 4) != 0x06054b50) {
        if (end == 0 || file.size() - end > 22 + 0xFFFF) return;
        --end;
    }
    const std::uint64_t count = get(end + 10, 2);
    std::uint64_t at = get(end + 16, 4);
    for (std::uint64_t i = 0; i < count; ++i) {
        if (at + 46 > file.size() || get(at, 4) != 0x02014b50) return;
        const std::uint64_t method = get(at + 10, 2), size = get(at + 20, 4), local = get(at + 42, 4);
        const std::uint64_t next = at + 46 + get(at + 28, 2) + get(at + 30, 2) + get(at + 32, 2);
        if (method == 0 && local + 30 <= file.size() && get(local, 4) == 0x04034b50) {
            const std::uint64_t data = local + 30 + get(local + 26, 2) + get(local + 28, 2);
            if (data <= file.size() && size <= file.size() - data) {
                const auto crc = crc32(0L, file.data() + data, static_cast<uInt>(size));
                put(at + 16, crc);
                put(local + 14, crc);
            }
        }
        at = next;
    }
}

/// The file an archive target reads: its input after the first byte, whose bit 0 asks for the
/// CRCs to be repaired (clear, the CRC check itself is what is fuzzed).
inline bytes archive_input(const unsigned char* data, std::size_t size) {
    if (size == 0) return {};
    bytes file(data + 1, data + size);
    if (data[0] & 1) repair_zip_crcs(file);
    return file;
}

/// SEEDS as archive_input takes them: each with CRC repair, and the first also without.
inline std::vector<seed> archive_seeds(std::vector<seed> seeds) {
    std::vector<seed> out;
    for (std::size_t i = 0; i < seeds.size(); ++i) {
        for (const unsigned char mode : {1, 0}) {
            if (mode == 0 && i != 0) continue;
            bytes data = {mode};
            data.insert(data.end(), seeds[i].data.begin(), seeds[i].data.end());
            out.push_back({seeds[i].name + (mode ? "" : ".crc_checked"), std::move(data)});
        }
    }
    return out;
}

}  // namespace bw_fuzz
