// The state a Model trains and the verbs that move it in and out: its variables as arrays in
// memory (get_weights, set_weights), weight files and checkpoints. Model derives from it.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "batchwise/core/errors.hpp"
#include "batchwise/data/npz.hpp"
#include "batchwise/train/checkpoint.hpp"
#include "batchwise/train/fit.hpp"
#include "batchwise/train/step/processes.hpp"
#include "batchwise/train/step/variables.hpp"

namespace batchwise {

/// A Model's state: the step engine (variables, optimizer, position), where fit stands, and the
/// outside state checkpoints carry; with Keras's weight verbs and checkpoints.
template <class Engine>
class model_state {
    using Exec = typename Engine::execution_policy;
    using Accum = typename Engine::accumulation_policy;

public:
    using variable_entry = batchwise::variable_entry;  ///< A named variable (variables()).

    /// The model's variables in order, with their saved names.
    [[nodiscard]] const std::vector<variable_entry>& variables() const { return step_.variables().entries(); }

    /// Every variable, in order, as a shaped host array with its saved name: Keras's
    /// get_weights, with names (PyTorch's state_dict).
    [[nodiscard]] std::vector<named_weight> get_weights() const { return host_weights<Exec>(step_.variables()); }
    /// Sets the variables from arrays of their shapes, by name (get_weights's names) or, when
    /// none is named, in order. All are checked before any is copied.
    void set_weights(const std::vector<named_weight>& w) { set_host_weights<Exec>(step_.variables(), w); }

    /// Writes every variable to a NumPy .npz archive, one array per variable named
    /// "layer/variable" (e.g. "dense_1/kernel", shape (in, out) as Keras stores it). A non-finite
    /// weight is a numeric_error and writes nothing: every file written is one load_weights reads.
    void save_weights(const std::filesystem::path& path) const {
        const named_arrays arrays = weight_arrays<Exec>(step_.variables());
        detail::refuse_non_finite(arrays, "save_weights");  // on every process, which all hold the same
        if (!is_chief()) return;  // every process holds the same weights: rank 0 writes them
        data::write_npz(path, arrays);
    }

    /// Reads weights written by save_weights or save_checkpoint (or by numpy with the same names
    /// and shapes). All arrays are checked before any is copied, so a bad file leaves the model
    /// untouched.
    void load_weights(const std::filesystem::path& path) {
        load_weight_arrays<Exec>(step_.variables(), data::read_npz(path), path);
    }

    /// Writes the whole training state: every variable (as save_weights), the optimizer's slots
    /// and step count, the learning rate, the seed, the micro-batch limit and the position in
    /// training (epoch, step, sample). fit() after load_checkpoint() continues exactly where this
    /// left off. Only between optimizer steps: an open accumulation window is a usage_error. What
    /// load_checkpoint would refuse is not written: a non-finite weight or optimizer slot is a
    /// numeric_error, a learning rate that is negative or not finite a usage_error.
    void save_checkpoint(const std::filesystem::path& path) const {
        require_compiled("save_checkpoint");
        if (window_open()) {
            throw usage_error("save_checkpoint: an accumulation window is open (" + std::to_string(window_samples()) +
                              " samples); checkpoint between optimizer steps");
        }
        // Checked on every process, which all hold the same state, so that all of them refuse.
        named_arrays arrays = step_.checkpoint(fit_.epoch(), fit_.step());
        detail::refuse_non_finite(arrays, "save_checkpoint");
        if (const float lr = step_.optimizer().learning_rate(); !(lr >= 0.0f) || !std::isfinite(lr)) {
            throw usage_error("save_checkpoint: the learning rate is " + std::to_string(lr) +
                              "; a checkpoint holds a finite learning rate >= 0, which load_checkpoint checks");
        }
        if (!is_chief()) return;  // rank 0 writes it
        extras_.append_to(arrays);
        data::write_npz(path, arrays);
    }

    /// State outside the model that checkpoints carry (an adaptive batch schedule, the noise
    /// scale's averages): saved by save_checkpoint, restored by load_checkpoint, which then
    /// requires it. It must outlive the model or be removed first.
    void add_checkpoint_state(checkpoint_state& s) { extras_.add(s); }
    void remove_checkpoint_state(checkpoint_state& s) { extras_.remove(s); }  ///< Forgets s.

    /// Restores what save_checkpoint wrote. The model must be compiled with an optimizer whose
    /// state means what the writer's did (the checkpoint records it: "Adam(amsgrad): m, v, v_hat"),
    /// and every value must be one training can leave; everything is checked before anything is
    /// changed (docs/errors.md lists what is refused). With
    /// `resume` false, the next fit() does not start where the checkpoint was taken (a state put
    /// back after a detour, as measure_step_times does).
    void load_checkpoint(const std::filesystem::path& path, bool resume = true) {
        require_compiled("load_checkpoint");
        const named_arrays arrays = data::read_npz(path);
        const auto extra = extras_.read(arrays, path);
        const training_position at = step_.restore(arrays, path);
        extras_.restore(extra);
        resume ? fit_.resume_at(at.epoch, at.step) : fit_.set_position(at.epoch, at.step);
    }
    /// Whether the next fit() (without initial_epoch) resumes where a loaded checkpoint left off.
    [[nodiscard]] bool resume_pending() const { return fit_.resume_pending(); }

    /// Whether gradients are waiting in an accumulation window for their optimizer step.
    [[nodiscard]] bool window_open() const { return step_.window().open(); }
    /// Samples accumulated in the open window.
    [[nodiscard]] std::size_t window_samples() const { return step_.window().samples(); }
    /// Whether this process writes files (save_weights, save_checkpoint, CsvLogger) and shows
    /// the progress bar: rank 0 under data_parallel, where every process holds the same state;
    /// always otherwise.
    [[nodiscard]] bool is_chief() const { return detail::processes<Accum>::is_chief(step_.window().policy()); }

protected:
    /// A network initialised from `seed`, held to `budget` bytes (Model's constructors).
    model_state(std::uint64_t seed, std::size_t budget) : step_(seed, budget) {}

    /// A usage_error naming `call` unless compile() has been called.
    void require_compiled(const char* call) const {
        if (!step_.objective().compiled()) {
            throw usage_error(std::string(call) +
                              ": the model is not compiled; call compile(optimizer, loss, metrics...) first");
        }
    }

    Engine step_;               ///< The training step and everything it owns.
    fit_loop fit_;              ///< Where fit stands, for checkpoints and the next fit.
    checkpoint_extras extras_;  ///< Outside state that checkpoints carry.
};

}  // namespace batchwise
