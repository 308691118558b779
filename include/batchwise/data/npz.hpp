// NumPy .npz archives (a ZIP of NAME.npy arrays), the format of weights, checkpoints and array
// datasets: written so numpy.load reads them, and read from np.savez and np.savez_compressed.
#pragma once

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// npy.hpp: npz_array, the entry format and read_npy/write_npy; zip.hpp: the container.
#include "batchwise/data/npy.hpp"
#include "batchwise/data/zip.hpp"

namespace batchwise::data {

namespace npz_detail {

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

/// One entry as read_npz returns it: the array under its name without ".npy".
inline std::pair<std::string, npz_array> read_entry(input_file& in, const central_entry& entry) {
    const entry_contents contents = read_entry_contents(in, entry);
    return {entry.name.substr(0, entry.name.size() - npy_suffix.size()),
            parse_npy(contents.data, contents.place)};
}

}  // namespace npz_detail

/// Writes all arrays (names without ".npy"; names may contain '/') as little-endian C-order .npy
/// entries, float32 ('<f4') or int64 ('<i8') by each array's dtype, ZIP "stored" (method 0, like
/// np.savez). Writes a temporary beside PATH, syncs it, renames it over PATH and syncs the
/// directory (data/atomic_file.hpp), so a crash or power loss leaves the old file or the new one,
/// never a half-written one. Throws batchwise::io_error on any failure.
inline void write_npz(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, npz_array>>& arrays) {
    npz_detail::validate_for_write(path, arrays);
    npz_detail::write_atomically("write_npz", path, [&](std::ostream& out) {
        npz_detail::write_archive(out, path, arrays, npz_detail::npy_bytes);
    });
}

/// Reads every entry of an .npz archive, in archive order, names without ".npy". Accepts stored
/// and deflated entries (np.savez, np.savez_compressed) of dtype '<f4' or '<f8' (converted to
/// float32 `values`) or a little-endian integer dtype up to 64 bits ('<i8', '<i4', '|u1', '<u8'
/// when it fits, ...: exact int64 `integers`), C or Fortran order (returned in C order). Throws
/// batchwise::io_error naming the file, the byte offset and what was expected on anything else.
inline std::vector<std::pair<std::string, npz_array>> read_npz(const std::filesystem::path& path) {
    npz_detail::input_file in(path);
    const npz_detail::end_record end = npz_detail::read_end_record(in);
    const std::vector<npz_detail::central_entry> entries = npz_detail::read_central_directory(in, end);
    std::vector<std::pair<std::string, npz_array>> arrays;
    arrays.reserve(entries.size());
    for (const auto& entry : entries) arrays.push_back(npz_detail::read_entry(in, entry));
    return arrays;
}

}  // namespace batchwise::data
