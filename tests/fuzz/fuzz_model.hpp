// The model-loading fuzz targets share one heavy translation unit (fuzz_model.cpp: the Model
// headers take most of a minute to compile); each target's own source is a few lines on top.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_common.hpp"

namespace bw_fuzz {

// Both take their input as archive_input does (npz_inputs.hpp): a byte that asks for the CRCs to
// be repaired, then the file.

/// Model::load_weights on the input written to a scratch .npz, then predict with what it loaded.
int load_weights_one(const std::uint8_t* data, std::size_t size);
/// Model::load_checkpoint on the input written to a scratch .npz, then one fit epoch from there.
int load_checkpoint_one(const std::uint8_t* data, std::size_t size);
/// Files written by save_weights and save_checkpoint of the fuzzed model (and of a model with
/// another optimizer, which load_checkpoint must refuse).
std::vector<seed> model_seeds();

}  // namespace bw_fuzz
