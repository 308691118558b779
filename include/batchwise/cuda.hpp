// Umbrella header for the CUDA build: everything <batchwise/batchwise.hpp> has, plus the `cuda`
// execution policy (Thrust and cuBLAS on an NVIDIA GPU). Compile with nvcc and link
// batchwise::cuda (the CUDA runtime and cuBLAS).
#pragma once

#include "batchwise/batchwise.hpp"
#include "batchwise/exec/cuda.hpp"
