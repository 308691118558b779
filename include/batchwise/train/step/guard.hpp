// What keeps a replayed step's non-finite guarantee without the host waiting inside the step:
// the guard the graph runs on the device after the loss, and what the host keeps of each queued
// step to undo it when its results, read later, show it was halted.
#pragma once

#include <cstddef>
#include <cstdint>

#include "batchwise/core/config.hpp"
#include "batchwise/layers/layer.hpp"

namespace batchwise {

namespace detail {

/// The guard a replayed step runs on one device thread after its loss: it halts the step when
/// the loss or an input is not finite, and writes its verdict beside the step's results.
struct step_guard {
    /// The loss, each metric, the count of non-finite inputs (where the device checks them).
    double* slots;
    /// The slot of the non-finite input count, or `none`.
    std::size_t inputs;
    /// The slot the guard writes its verdict into.
    std::size_t halted;
    /// Set by the first bad step and kept until the host, having read it, clears it: steps
    /// queued after a bad one change nothing either.
    std::uint32_t* sticky;
    step_scalars* scalars;
    static constexpr std::size_t none = static_cast<std::size_t>(-1);
    BATCHWISE_HOST_DEVICE void operator()(std::size_t) const {
        const double loss = slots[0];
        // loss - loss is 0 for every finite loss and NaN otherwise.
        const bool bad = !(loss - loss == 0.0) || (inputs != none && slots[inputs] != 0.0);
        if (bad) *sticky = 1;
        scalars->halted = *sticky;
        slots[halted] = static_cast<double>(*sticky);
    }
};

/// A step the host has queued and not yet read the results of: where training stood before it,
/// so that a step found non-finite is undone with every step queued after it.
struct queued_step {
    std::uint64_t sequence = 0;
    std::uint64_t iterations = 0;
    std::uint64_t samples_seen = 0;
    std::size_t reference_batch = 0;
    std::uint64_t epoch = 0;
    std::uint64_t first_sample = 0;
    std::size_t rows = 0;
};

/// A replayed step found non-finite, undone, and not yet reported.
struct step_fault {
    queued_step step;
    double loss = 0.0;
    /// The device counted a non-finite input in the step's batch.
    bool inputs = false;
    /// Steps queued after it, which changed nothing and were undone with it.
    std::size_t later = 0;
};

}  // namespace detail

}  // namespace batchwise
