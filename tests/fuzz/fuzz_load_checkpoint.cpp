// Fuzz target: Model::load_checkpoint (the model and the checks are in fuzz_model.cpp).
#include "fuzz_model.hpp"

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
    bw_fuzz::maybe_write_seeds(argc, argv, bw_fuzz::model_seeds);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    return bw_fuzz::load_checkpoint_one(data, size);
}
