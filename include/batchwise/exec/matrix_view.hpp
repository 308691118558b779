// Non-owning views of row-major matrices in an execution policy's memory. Every activation in a
// batchwise network is a (rows = samples) x (cols = features of one sample) matrix, so these two
// types are all a layer needs to talk to a policy.
#pragma once

#include <cstddef>

#include "batchwise/core/config.hpp"

namespace batchwise {

/// Read-only view: `rows` x `cols`, row-major, contiguous (leading dimension == cols).
struct const_matrix_view {
    /// The first element; row r starts at data + r * cols.
    const float* data = nullptr;
    /// Rows: one per sample.
    std::size_t rows = 0;
    /// Columns: the features of one sample.
    std::size_t cols = 0;
    /// rows * cols.
    [[nodiscard]] BATCHWISE_HOST_DEVICE std::size_t size() const { return rows * cols; }
};

/// Writable view; converts to the read-only one.
struct matrix_view {
    /// The first element; row r starts at data + r * cols.
    float* data = nullptr;
    /// Rows: one per sample.
    std::size_t rows = 0;
    /// Columns: the features of one sample.
    std::size_t cols = 0;
    /// rows * cols.
    [[nodiscard]] BATCHWISE_HOST_DEVICE std::size_t size() const { return rows * cols; }
    /// The same matrix, read-only.
    BATCHWISE_HOST_DEVICE operator const_matrix_view() const { return {data, rows, cols}; }
};

/// Whether a GEMM operand is used as stored or transposed.
enum class transpose : bool { no = false, yes = true };
/// \var transpose::no
/// The operand as stored.
/// \var transpose::yes
/// The operand transposed.

}  // namespace batchwise
