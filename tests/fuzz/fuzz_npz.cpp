// Fuzz target: read_npz (the ZIP container and the .npy entries in it). The first byte chooses
// whether the CRCs are repaired (archive_input); the rest is the archive. Seeds: write_npz's
// stored archives and deflated ones as np.savez_compressed writes them.
#include <cstddef>
#include <cstdint>

#include "batchwise/data/npz.hpp"
#include "fuzz_common.hpp"
#include "npz_inputs.hpp"

namespace {

const std::filesystem::path& scratch() {
    static const std::filesystem::path path = bw_fuzz::scratch_path("npz", ".npz");
    return path;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
    bw_fuzz::maybe_write_seeds(argc, argv, [] { return bw_fuzz::archive_seeds(bw_fuzz::npz_seeds()); });
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    bw_fuzz::write_file(scratch(), bw_fuzz::archive_input(data, size));
    return bw_fuzz::run_one([] { (void)batchwise::data::read_npz(scratch()); });
}
