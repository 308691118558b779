// A caller's batch as contiguous host floats: xtensor containers of floats are read where they
// are; other element types and layouts are converted once into buffers kept for reuse.
#pragma once

#include <cstddef>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "batchwise/batch/batch_policy.hpp"
#include "batchwise/core/errors.hpp"
#include "batchwise/core/xtensor.hpp"
#include "batchwise/data/sample_pipeline.hpp"
#include "batchwise/train/tensor_io.hpp"

namespace batchwise {

/// Rows of host floats ready to be fed to a step.
struct host_rows {
    /// Inputs, `rows` samples, row-major.
    const float* x;
    /// Targets, `rows` rows.
    const float* y;
    /// The number of samples.
    std::size_t rows;
};

/// The default of the sample_weight arguments (Model::train_on_batch, gradients,
/// loss_and_gradients): every sample weighs 1.
struct no_sample_weights {};

namespace detail {
/// Calls f(pointer to row-major float samples of shape InputShape), converting x only if it is
/// not already so.
template <class InputShape, class X, class F>
void with_float_rows(const X& x, F&& f) {
    if constexpr (contiguous_float_rows<X>) {
        f(x.data());
    } else {
        const xt::xtensor<float, InputShape::rank + 1> converted = xt::cast<float>(x);
        f(converted.data());
    }
}
}  // namespace detail

/// train_on_batch's contiguous host copies, used when the caller's tensors are not already.
template <std::size_t InFeatures>
class host_batch_buffers {
public:
    /// A batch whose type fixes its size must fix the static batch's.
    template <class X, class Batch>
    static constexpr void check_static_rows() {
        constexpr std::size_t fixed = detail::fixed_leading_extent<std::decay_t<X>>::value;
        if constexpr (Batch::is_static && fixed != dynamic_extent) {
            static_assert(fixed == Batch::extent,
                          "batchwise::Model: this batch's size is fixed at compile time and "
                          "differs from the model's static_batch<N>; use Model::input_batch.");
        }
    }

    /// A batch of `rows` samples must fit the static batch: not more than N, and exactly N when
    /// the policy drops ragged batches.
    template <class Batch>
    static void check_rows_fit(std::size_t rows, const char* call) {
        if constexpr (Batch::is_static) {
            if (rows > Batch::extent || (Batch::tail == ragged_tail::drop && rows != Batch::extent)) {
                throw shape_error(std::string(call) + ": the model has static_batch<" + std::to_string(Batch::extent) +
                                  "> but the batch has " + std::to_string(rows) + " samples" +
                                  (rows > Batch::extent ? "" : " and the policy drops ragged batches"));
            }
        }
    }

    /// Sizes the target buffer now, so that converting class indices of other types does not
    /// allocate in a step.
    void reserve_targets(std::size_t n) { y_.resize(n); }
    /// Sizes the weight buffer now, so that a weighted batch of up to n samples does not
    /// allocate in a step.
    void reserve_weights(std::size_t n) { w_.resize(n); }

    /// `rows` sample weights (shape (rows,), each finite and >= 0) as host floats, or null for
    /// no_sample_weights.
    template <class W>
    const float* sample_weights(const W& w, std::size_t rows, const char* call) {
        if constexpr (std::is_same_v<W, no_sample_weights>) {
            return nullptr;
        } else {
            if (w_.size() < rows) w_.resize(rows);
            data::detail::copy_sample_weights(w, rows, w_.data(), call);
            return w_.data();
        }
    }

    /// x and y (already checked: `rows` rows, `target_cols` targets each) as host floats.
    template <class X, class Y>
    host_rows convert(const X& x, const Y& y, std::size_t rows, std::size_t target_cols, const char* call) {
        host_rows out{nullptr, nullptr, rows};
        if constexpr (detail::contiguous_float_rows<X>) {
            out.x = x.data();
        } else {
            if (x_.size() < rows * InFeatures) x_.resize(rows * InFeatures);
            detail::copy_checked(x, InFeatures, x_.data(), call, "input");
            out.x = x_.data();
        }
        if constexpr (detail::contiguous_float_rows<Y>) {
            out.y = y.data();
        } else {
            if (y_.size() < rows * target_cols) y_.resize(rows * target_cols);
            std::size_t k = 0;
            for (auto it = y.begin(); it != y.end(); ++it) y_[k++] = static_cast<float>(*it);
            out.y = y_.data();
        }
        return out;
    }

private:
    std::vector<float> x_, y_, w_;
};

namespace detail {
/// Runs a training verb, reporting a std::bad_alloc that escapes out-of-memory recovery (the
/// host copy of a caller's batch, made before any of it trains) as out_of_memory, a batchwise
/// error like every other refusal. Only verbs that change nothing before such an allocation
/// use it: tests/train/allocations.cpp fails each allocation of a step in turn and checks it.
template <class F>
decltype(auto) with_typed_allocation_failures(const char* call, F&& f) {
    try {
        return f();
    } catch (const std::bad_alloc&) {
        throw out_of_memory(std::string(call) +
                            ": an allocation failed before the step could start (std::bad_alloc); nothing was trained");
    }
}
}  // namespace detail

}  // namespace batchwise
