// Where a micro-batch's inputs and targets come from: the caller's own rows, the model's host
// staging, or the policy's memory, with the input check deferred to the copy where it can be.
#pragma once

#include <algorithm>
#include <cstddef>
#include <exception>
#include <string>

#include "batchwise/core/concepts.hpp"
#include "batchwise/core/errors.hpp"
#include "batchwise/exec/capabilities.hpp"
#include "batchwise/train/tensor_io.hpp"

namespace batchwise {

// Note [deferred input check]
// Every input is checked for NaN and infinity before any of its batch is trained, so that a bad
// sample stops the call with nothing half-accumulated. On a policy whose memory is not the
// host's, a batch is copied anyway, and the check can ride on that copy instead of costing a
// pass of its own: the staging copy checks as it copies (detail::copy_checked), and rows sent
// straight from the caller's pinned memory are counted on the device
// (DeviceInputCheckPolicy::count_non_finite), so the host never reads them unless the count is
// not zero. This is allowed only where the call is one micro-batch that allocates nothing:
// then no part of it can be trained before the check has seen all of it.

/// Host and device buffers a training or inference step reads its batch from, grown with the
/// model's capacity (never in the steady state).
template <ExecutionPolicy Exec, std::size_t InFeatures, std::size_t OutFeatures, bool StaticBatch>
class batch_staging {
public:
    /// Whether the policy's memory is the host's.
    static constexpr bool host_memory = HostMemoryPolicy<Exec>;
    /// Whether batches are ever copied into the model's own buffers: always on a policy with its
    /// own memory, and for a static batch's zero-padded tail; a dynamic batch on host memory is
    /// read where the caller keeps it.
    static constexpr bool copies_batches = !host_memory || StaticBatch;
    /// Whether the device can count non-finite inputs (Note [deferred input check]).
    static constexpr bool device_checks_inputs = DeviceInputCheckPolicy<Exec>;

    /// Floats the staging holds per row of capacity (for memory estimates): inputs and targets,
    /// and off the host their host side and a sample weight.
    static constexpr std::size_t floats_per_row =
        (copies_batches ? InFeatures + OutFeatures : 0) + (host_memory ? 0 : InFeatures + OutFeatures + 1);

    /// Where the network reads a micro-batch.
    struct source {
        /// The inputs, row-major.
        const float* x;
        /// The targets; null where none were given (inference).
        const float* y;
    };

    /// Grows the buffers to `rows` rows: called by the engine's reserve(), only when its capacity
    /// grows, before a micro-batch changes anything.
    void reserve(std::size_t rows) {
        if constexpr (device_checks_inputs) Exec::reserve_reduction(rows * InFeatures);
        if constexpr (copies_batches) {
            Exec::reserve(x_, rows * InFeatures);
            Exec::reserve(y_, rows * OutFeatures);
        }
        if constexpr (!host_memory) {
            host_x_.resize(rows * InFeatures);
            host_y_.resize(rows * OutFeatures);
            Exec::reserve(w_, rows);
        }
    }

    /// Starts a call whose input check waits for the staging copy (Note [deferred input
    /// check]); the returned guard ends it.
    class deferral {
    public:
        /// Made by defer_check.
        explicit deferral(batch_staging& s) : s_(s) {}
        deferral(const deferral&) = delete;
        deferral& operator=(const deferral&) = delete;
        /// If an error is unwinding, copies from the caller's pinned rows that are still queued
        /// are waited for, since the caller may free those rows next. Errors of that wait are
        /// dropped: one is already on its way.
        ~deferral() {
            s_.check_.active = false;
            if constexpr (device_checks_inputs) {
                if (std::uncaught_exceptions() > unwinding_) {
                    try {
                        Exec::await_copies();
                        Exec::synchronize();
                    } catch (...) {
                    }
                }
            }
        }

    private:
        batch_staging& s_;
        int unwinding_ = std::uncaught_exceptions();
    };
    /// Starts a call, with its input check deferred to the staging copy when `active`; `ids` and
    /// `call` name a bad sample in the error. Hold the returned guard for the whole call.
    [[nodiscard]] deferral defer_check(const std::size_t* ids, const char* call, bool active) {
        check_ = {ids, call, active};
        return deferral(*this);
    }
    /// Whether the open call's input check is still waiting for a copy; taking it ends the wait.
    bool take_deferred_check() {
        const bool active = check_.active;
        check_.active = false;
        return active;
    }

    /// Makes n rows of inputs (and targets, when y is given) readable by the policy as a batch of
    /// `rows` rows. On host memory a full batch is read where the caller keeps it: the copy would
    /// write the whole input once more per step (6.4 MB at batch 2048 of mlp-bench, about 4% of
    /// its step on 2 threads) for nothing. Padding needs the copy.
    source stage_batch(const float* x, const float* y, std::size_t n, std::size_t rows, std::size_t target_cols) {
        if constexpr (!copies_batches) {
            return {x, y};  // a dynamic batch has no padding: rows == n
        } else {
            if (host_memory && rows == n) return {x, y};
            stage(x, y, n, rows, target_cols);
            return {Exec::data(x_), Exec::data(y_)};
        }
    }

    /// The host half of staging: into the staging buffers, or straight into the policy's buffers
    /// when they are host memory; rows past n are zero padding. Returns where the copy to the
    /// device reads the inputs: the caller's own rows when they are in pinned memory and need no
    /// padding (checked on the device later if the check was deferred), else the staging buffer,
    /// checked in the same pass that fills it when the check was deferred.
    const float* stage_on_host(const float* x, const float* y, std::size_t n, std::size_t rows, std::size_t ty) {
        // A replayed step returns while its batch may still be copied from these buffers.
        if constexpr (requires { Exec::drain_copies(); }) Exec::drain_copies();
        const float* from = host_x();
        if constexpr (device_checks_inputs) {
            // Both ends: a batch that runs past a registered range is staged instead.
            if (rows == n && Exec::is_pinned(x) && Exec::is_pinned(x + n * InFeatures - 1)) from = x;
        }
        if (from != x) {
            if (check_.active) {
                check_.active = false;
                detail::copy_checked(x, n, InFeatures, host_x(), 0, check_.call, "input", check_.ids);
            } else {
                std::copy_n(x, n * InFeatures, host_x());
            }
            if (rows > n) std::fill_n(host_x() + n * InFeatures, (rows - n) * InFeatures, 0.0f);
        }
        if (y != nullptr) {
            std::copy_n(y, n * ty, host_y());
            if (rows > n) std::fill_n(host_y() + n * ty, (rows - n) * ty, 0.0f);
        }
        return from;
    }

    /// The device counted a non-finite value among inputs sent from the caller's pinned rows:
    /// the host finds it, to name the sample. Nothing has read the copy but the count and, in a
    /// captured step, the forward graph, whose only lasting writes are the step's batch-norm
    /// statistics, which the next step's forward pass starts afresh; the backward graph, which
    /// updates weights, moving averages and optimizer state, is never launched.
    [[noreturn]] void reject_non_finite_inputs(const float* x, std::size_t n) const {
        detail::check_finite(x, n, InFeatures, check_.ids, check_.call, "input");
        throw device_error(std::string(check_.call) +
                           ": the device counted a non-finite input that the host does not find");
    }

    /// Targets of `count` rows where the policy reads them (evaluation: inputs were staged by
    /// the inference pass).
    const float* targets(const float* y, std::size_t count, std::size_t ty) {
        if constexpr (host_memory) {
            return y;
        } else {
            std::copy_n(y, count * ty, host_y());
            Exec::from_host(host_y(), count * ty, Exec::data(y_));
            return Exec::data(y_);
        }
    }

    /// Where the step's functors read n sample weights from host memory `w`: in place on host
    /// memory, else a copy in the policy's memory. Null (no weights) stays null.
    const float* weights(const float* w, std::size_t n) {
        if constexpr (host_memory) {
            return w;
        } else {
            if (w == nullptr) return nullptr;
            Exec::from_host(w, n, Exec::data(w_));
            return Exec::data(w_);
        }
    }

    /// The host staging of targets, which a captured step copies from.
    [[nodiscard]] const float* staged_targets() {
        return host_y();
    }

private:
    void stage(const float* x, const float* y, std::size_t n, std::size_t rows, std::size_t ty) {
        const float* from = stage_on_host(x, y, n, rows, ty);
        if constexpr (!host_memory) {
            Exec::from_host(from, rows * InFeatures, Exec::data(x_));
            if (y != nullptr) Exec::from_host(host_y_.data(), rows * ty, Exec::data(y_));
            if constexpr (device_checks_inputs) {
                if (take_deferred_check() && Exec::count_non_finite(Exec::data(x_), n * InFeatures) != 0.0) {
                    reject_non_finite_inputs(x, n);
                }
            }
        }
    }

    float* host_x() {
        if constexpr (host_memory) return Exec::data(x_);
        else return host_x_.data();
    }
    float* host_y() {
        if constexpr (host_memory) return Exec::data(y_);
        else return host_y_.data();
    }

    struct deferred_check {
        const std::size_t* ids = nullptr;
        const char* call = nullptr;
        bool active = false;
    };

    typename Exec::vector x_, y_;
    typename Exec::vector w_;  // sample weights, off the host
    // Host side of the staging when the policy's memory is not the host's, in the memory the
    // policy copies from fastest (page-locked for CUDA).
    host_staging_t<Exec> host_x_, host_y_;
    deferred_check check_;
};

}  // namespace batchwise
