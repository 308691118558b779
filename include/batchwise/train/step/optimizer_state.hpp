// The compiled optimizer and everything it keeps between steps: its per-variable slots
// (zero-initialised, in the policy's memory), the learning rate and the step counter.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "batchwise/core/concepts.hpp"
#include "batchwise/core/errors.hpp"
#include "batchwise/optimizers/any_optimizer.hpp"
#include "batchwise/train/step/variables.hpp"

namespace batchwise {

template <ExecutionPolicy Exec>
class optimizer_state {
public:
    static constexpr std::size_t max_slots = 4;

    /// Replaces the optimizer, with fresh slots and the step counter at 0. The new slots are
    /// allocated before anything is replaced: if that fails, the old optimizer stays.
    template <class Optimizer>
    void compile(Optimizer optimizer, const variable_set& vars) {
        const std::size_t slots = optimizer.slot_count();
        if (slots > max_slots) throw usage_error("Model::compile: the optimizer keeps too many slots");
        std::vector<typename Exec::vector> storage;
        for (const auto& v : vars.entries()) {
            if (!v.ref.trainable()) continue;
            for (std::size_t k = 0; k < slots; ++k) {
                storage.emplace_back();
                Exec::reserve(storage.back(), v.ref.size());
                Exec::fill(Exec::data(storage.back()), v.ref.size(), 0.0f);
            }
        }
        // Pointers are taken once the storage has stopped moving.
        std::vector<std::array<float*, max_slots>> pointers(vars.size());
        std::size_t next = 0;
        for (std::size_t i = 0; i < vars.size(); ++i) {
            if (!vars[i].ref.trainable()) continue;
            for (std::size_t k = 0; k < slots; ++k) pointers[i][k] = Exec::data(storage[next++]);
        }
        auto holder = std::make_unique<detail::optimizer_holder<Optimizer, Exec>>(std::move(optimizer));
        learning_rate_ = holder->learning_rate();
        optimizer_ = std::move(holder);
        storage_ = std::move(storage);
        pointers_ = std::move(pointers);
        iterations_ = 0;
    }

    [[nodiscard]] bool compiled() const { return optimizer_ != nullptr; }
    [[nodiscard]] const detail::optimizer_base<Exec>& optimizer() const { return *optimizer_; }
    [[nodiscard]] std::size_t slot_count() const { return optimizer_ ? optimizer_->slot_count() : 0; }
    /// The slots of variable i (nullptr entries for a variable that is not trainable).
    [[nodiscard]] float* const* slots(std::size_t i) const { return pointers_[i].data(); }

    [[nodiscard]] float learning_rate() const { return learning_rate_; }
    void set_learning_rate(float lr) { learning_rate_ = lr; }

    /// Optimizer steps taken since compile(); the step being computed is iterations() + 1.
    [[nodiscard]] std::uint64_t iterations() const { return iterations_; }
    /// Counts a step as taken: the last thing step_window::finish does.
    void count_step() { ++iterations_; }
    /// A checkpoint's step count.
    void restore_iterations(std::uint64_t n) { iterations_ = n; }

    /// The update of variable i for the step being taken, from its summed gradient.
    void apply(std::size_t i, const variable_ref& v, float grad_scale) const {
        optimizer_->apply(v, slots(i), iterations_ + 1, learning_rate_, grad_scale);
    }

private:
    std::unique_ptr<detail::optimizer_base<Exec>> optimizer_;
    std::vector<typename Exec::vector> storage_;
    std::vector<std::array<float*, max_slots>> pointers_;
    float learning_rate_ = 0.0f;
    std::uint64_t iterations_ = 0;
};

}  // namespace batchwise
