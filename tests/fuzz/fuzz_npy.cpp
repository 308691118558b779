// Fuzz target: read_npy. Seeds: write_npy's float32 and int64 files, and headers numpy writes
// that write_npy does not ('<f8', '|u1', '<i4', Fortran order, a 0-d scalar).
#include <cstddef>
#include <cstdint>

#include "batchwise/data/npy.hpp"
#include "fuzz_common.hpp"
#include "npz_inputs.hpp"

namespace {

const std::filesystem::path& scratch() {
    static const std::filesystem::path path = bw_fuzz::scratch_path("npy", ".npy");
    return path;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
    bw_fuzz::maybe_write_seeds(argc, argv, bw_fuzz::npy_seeds);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    bw_fuzz::write_file(scratch(), data, size);
    return bw_fuzz::run_one([] { (void)batchwise::data::read_npy(scratch()); });
}
