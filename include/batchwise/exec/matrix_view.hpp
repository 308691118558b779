// Non-owning views of row-major matrices in an execution policy's memory. Every activation in a
// batchwise network is a (rows = samples) x (cols = features of one sample) matrix, so these two
// types are all a layer needs to talk to a policy.
#pragma once

#include <cstddef>

#include "batchwise/core/config.hpp"

namespace batchwise {

/// Read-only view: `rows` x `cols`, row-major, contiguous (leading dimension == cols).
struct const_matrix_view {
    const float* data = nullptr;
    std::size_t rows = 0;
    std::size_t cols = 0;
    [[nodiscard]] BATCHWISE_HOST_DEVICE std::size_t size() const { return rows * cols; }
};

/// Writable view; converts to the read-only one.
struct matrix_view {
    float* data = nullptr;
    std::size_t rows = 0;
    std::size_t cols = 0;
    [[nodiscard]] BATCHWISE_HOST_DEVICE std::size_t size() const { return rows * cols; }
    BATCHWISE_HOST_DEVICE operator const_matrix_view() const { return {data, rows, cols}; }
};

/// Whether a GEMM operand is used as stored or transposed.
enum class transpose : bool { no = false, yes = true };

}  // namespace batchwise
