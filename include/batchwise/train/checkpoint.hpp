// Weights and whole training state in NumPy .npz archives: one array per variable named as
// Keras names it ("dense_1/kernel"), plus, in a checkpoint, the optimizer and the position.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "batchwise/core/concepts.hpp"
#include "batchwise/core/errors.hpp"
#include "batchwise/data/npz.hpp"
#include "batchwise/train/step/optimizer_state.hpp"
#include "batchwise/train/step/variables.hpp"
#include "batchwise/train/tensor_io.hpp"

namespace batchwise {

/// An .npz archive's arrays with their names, in file order.
using named_arrays = std::vector<std::pair<std::string, data::npz_array>>;

/// Where training stands between optimizer steps: what fit() resumes from.
struct training_position {
    /// The epoch to resume, counted over the model's whole training.
    std::uint64_t epoch = 0;
    std::size_t step = 0;  ///< batches of `epoch` already trained
    /// The sample position within that epoch, which dropout masks are keyed by.
    std::uint64_t sample = 0;
    /// The model's seed, which shuffles and dropout masks are keyed by.
    std::uint64_t seed = 0;
    /// The micro-batch size out-of-memory recovery had settled on.
    std::size_t micro_batch_limit = 0;  // 0: none
};

/// A checkpoint's training state, restored.
struct restored_state {
    /// Optimizer steps taken.
    std::uint64_t iterations = 0;
    /// The base learning rate.
    float learning_rate = 0.0f;
    /// Where training stood.
    training_position position;
    /// Samples of the steps taken (0 in checkpoints written before it was saved).
    std::uint64_t samples_seen = 0;
    /// The coupling's reference batch (0 in checkpoints written before it was saved).
    std::size_t reference_batch = 0;
};

/// Training state kept outside the model that a checkpoint must carry for an exact resume (an
/// adaptive schedule's decisions, the noise scale's averages): Model::add_checkpoint_state.
/// Saved as "state/<name>", doubles stored bit for bit in int64 (.npz holds no float64 here).
class checkpoint_state {
public:
    virtual ~checkpoint_state() = default;
    /// Names its array, "state/<name>"; unique among the states added to a model.
    [[nodiscard]] virtual std::string checkpoint_name() const = 0;
    /// The state to save; check_state accepts what this returns.
    [[nodiscard]] virtual std::vector<double> save_state() const = 0;
    /// Throws io_error when `values` is not a state this object could have saved.
    virtual void check_state(const std::vector<double>& values) const = 0;
    /// Restores a state check_state accepted; called only after the whole checkpoint is checked.
    virtual void restore_state(const std::vector<double>& values) = 0;
};

/// The states added with Model::add_checkpoint_state, written into and read out of a checkpoint
/// as "state/<name>" arrays.
class checkpoint_extras {
public:
    /// Adds a state, kept by reference; usage_error when one of the same name is already added.
    void add(checkpoint_state& s) {
        for (const checkpoint_state* other : states_) {
            if (other->checkpoint_name() == s.checkpoint_name()) {
                throw usage_error("add_checkpoint_state: a state named '" + s.checkpoint_name() + "' is already added");
            }
        }
        states_.push_back(&s);
    }
    /// Removes a state; nothing happens when it was not added.
    void remove(checkpoint_state& s) { std::erase(states_, &s); }

    /// Appends every added state's "state/<name>" array.
    void append_to(named_arrays& arrays) const;
    /// Every added state's values from a checkpoint, each checked; nothing is restored yet.
    [[nodiscard]] std::vector<std::vector<double>> read(const named_arrays& arrays,
                                                        const std::filesystem::path& path) const;
    /// Restores what read() returned.
    void restore(const std::vector<std::vector<double>>& values) const {
        for (std::size_t i = 0; i < states_.size(); ++i) states_[i]->restore_state(values[i]);
    }

private:
    std::vector<checkpoint_state*> states_;
};

namespace detail {
inline data::npz_array doubles_array(const std::vector<double>& values) {
    std::vector<std::int64_t> bits(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) bits[i] = std::bit_cast<std::int64_t>(values[i]);
    return data::int64_array({values.size()}, std::move(bits));
}
inline std::vector<double> array_doubles(const data::npz_array& a) {
    std::vector<double> values(a.integers.size());
    for (std::size_t i = 0; i < values.size(); ++i) values[i] = std::bit_cast<double>(a.integers[i]);
    return values;
}

}  // namespace detail

inline void checkpoint_extras::append_to(named_arrays& arrays) const {
    for (const checkpoint_state* s : states_) {
        arrays.emplace_back("state/" + s->checkpoint_name(), detail::doubles_array(s->save_state()));
    }
}

inline std::vector<std::vector<double>> checkpoint_extras::read(const named_arrays& arrays,
                                                                const std::filesystem::path& path) const {
    std::vector<std::vector<double>> values;
    for (const checkpoint_state* s : states_) {
        const std::string name = "state/" + s->checkpoint_name();
        const auto it = std::find_if(arrays.begin(), arrays.end(), [&](const auto& a) { return a.first == name; });
        if (it == arrays.end() || it->second.dtype != data::npz_dtype::int64) {
            throw shape_error("load_checkpoint: " + path.string() + " has no array '" + name +
                              "' for the state added with add_checkpoint_state");
        }
        values.push_back(detail::array_doubles(it->second));
        s->check_state(values.back());
    }
    return values;
}

namespace detail {
inline std::vector<std::size_t> variable_shape(const variable_ref& v) {
    return v.cols == 0 ? std::vector<std::size_t>{v.rows} : std::vector<std::size_t>{v.rows, v.cols};
}
}  // namespace detail

/// Host copies of every variable, as the arrays save_weights writes.
template <ExecutionPolicy Exec>
named_arrays weight_arrays(const variable_set& vars) {
    named_arrays arrays;
    for (const auto& v : vars.entries()) {
        data::npz_array a{detail::variable_shape(v.ref), std::vector<float>(v.ref.size())};
        Exec::to_host(v.ref.value, v.ref.size(), a.values.data());
        arrays.emplace_back(v.name, std::move(a));
    }
    return arrays;
}

/// Where weights being loaded come from: a file (a bad value is an io_error) or arrays in memory
/// (a data_error).
enum class weights_source { file, memory };

namespace detail {
/// A float as messages write it ("nan", "-inf", "0.500000").
inline std::string value_str(float v) { return std::to_string(v); }

/// Throws when `a` holds a non-finite value: io_error from a file, data_error from memory.
inline void check_finite_array(const data::npz_array& a, const std::string& name, const std::string& where,
                               const std::string& call, weights_source from) {
    const std::size_t i = first_non_finite(a.values.data(), a.values.size());
    if (i == a.values.size()) return;
    const std::string what = call + ": array '" + name + "' in " + where + " holds " + value_str(a.values[i]) +
                             " at flat index " + std::to_string(i) + "; expected finite values";
    if (from == weights_source::memory) throw data_error(what);
    throw io_error(what);
}

/// Each variable's array among `arrays` (matched by name), all checked: names, shapes and values.
/// The optimizer and training state of a checkpoint are skipped.
inline std::vector<const data::npz_array*> checked_weight_arrays(const variable_set& vars, const named_arrays& arrays,
                                                                 const std::string& where, const std::string& call,
                                                                 weights_source from) {
    std::vector<const data::npz_array*> found(vars.size(), nullptr);
    for (const auto& [name, array] : arrays) {
        if (name.starts_with("optimizer/") || name.starts_with("training/") || name.starts_with("state/")) continue;
        std::size_t i = 0;
        while (i < vars.size() && vars[i].name != name) ++i;
        if (i == vars.size()) {
            throw shape_error(call + ": " + where + " holds an array '" + name +
                              "' that this model does not have; its variables are " + vars.names());
        }
        const std::vector<std::size_t> expected = variable_shape(vars[i].ref);
        if (array.shape != expected || array.dtype != data::npz_dtype::float32) {
            throw shape_error(call + ": array '" + name + "' in " + where + " has shape " +
                              runtime_shape_str(array.shape) +
                              (array.dtype != data::npz_dtype::float32 ? " of integers" : "") +
                              " but the model's variable has shape " + runtime_shape_str(expected) + " of floats");
        }
        check_finite_array(array, name, where, call, from);
        found[i] = &array;
    }
    for (std::size_t i = 0; i < vars.size(); ++i) {
        if (found[i] == nullptr) throw shape_error(call + ": " + where + " has no array '" + vars[i].name + "'");
    }
    return found;
}

/// Copies what checked_weight_arrays found into the variables.
template <ExecutionPolicy Exec>
void copy_weights(const variable_set& vars, const std::vector<const data::npz_array*>& found) {
    for (std::size_t i = 0; i < vars.size(); ++i) {
        Exec::from_host(found[i]->values.data(), vars[i].ref.size(), vars[i].ref.value);
    }
}
}  // namespace detail

/// Weight arrays by name into the variables; the optimizer and training state of a checkpoint
/// are skipped. All arrays are checked (shapes, and every value finite) before any is copied, so
/// a bad file changes nothing.
template <ExecutionPolicy Exec>
void load_weight_arrays(const variable_set& vars, const named_arrays& arrays, const std::filesystem::path& path,
                        const std::string& call = "load_weights") {
    detail::copy_weights<Exec>(vars, detail::checked_weight_arrays(vars, arrays, path.string(), call,
                                                                   weights_source::file));
}

/// A variable's host copy: its saved name ("dense_1/kernel") and its shape ((in, out) for a
/// kernel, as Keras stores it).
struct named_weight {
    /// The saved name; empty entries given to set_host_weights match by position.
    std::string name;
    /// The values, in the variable's shape.
    xt::xarray<float> value;
};

/// Host copies of every variable with their saved names, in order (Model::get_weights).
template <ExecutionPolicy Exec>
std::vector<named_weight> host_weights(const variable_set& vars) {
    std::vector<named_weight> out;
    for (const auto& v : vars.entries()) {
        xt::xarray<float> value = xt::zeros<float>(detail::variable_shape(v.ref));
        Exec::to_host(v.ref.value, v.ref.size(), value.data());
        out.push_back({v.name, std::move(value)});
    }
    return out;
}

/// Sets every variable from host arrays: matched by name when they are named, in order when
/// none is. Checked as load_weights checks a file: all of them before any is copied.
template <ExecutionPolicy Exec>
void set_host_weights(const variable_set& vars, const std::vector<named_weight>& weights) {
    const bool by_name = std::ranges::any_of(weights, [](const named_weight& w) { return !w.name.empty(); });
    if (!by_name && weights.size() != vars.size()) {
        throw shape_error("set_weights: " + std::to_string(weights.size()) + " unnamed arrays for " +
                          std::to_string(vars.size()) + " variables (" + vars.names() + ")");
    }
    named_arrays arrays;
    for (std::size_t i = 0; i < weights.size(); ++i) {
        const auto& w = weights[i];
        if (by_name && w.name.empty()) {
            throw shape_error("set_weights: array " + std::to_string(i) + " has no name; name all of them or none");
        }
        data::npz_array a{{w.value.shape().begin(), w.value.shape().end()}, {w.value.begin(), w.value.end()}};
        arrays.emplace_back(by_name ? w.name : vars[i].name, std::move(a));
    }
    detail::copy_weights<Exec>(vars, detail::checked_weight_arrays(vars, arrays, "the arrays given", "set_weights",
                                                                   weights_source::memory));
}

namespace detail {
/// The name of the array that says which optimizer wrote a checkpoint's slots.
inline constexpr std::string_view layout_array = "optimizer/state_layout";

/// A text as an int64 array of its character codes (.npz here holds no strings).
inline data::npz_array text_array(std::string_view text) {
    std::vector<std::int64_t> codes;
    for (const char c : text) codes.push_back(static_cast<unsigned char>(c));
    const std::size_t n = codes.size();  // before the move: arguments are evaluated in any order
    return data::int64_array({n}, std::move(codes));
}

/// Refuses to write a non-finite float among `arrays` (numeric_error naming the array), so that
/// every file the library writes is one it can load.
inline void refuse_non_finite(const named_arrays& arrays, const std::string& call) {
    for (const auto& [name, a] : arrays) {
        const std::size_t i = first_non_finite(a.values.data(), a.values.size());
        if (i == a.values.size()) continue;
        throw numeric_error(call + ": '" + name + "' holds " + value_str(a.values[i]) + " at flat index " +
                            std::to_string(i) +
                            "; nothing was written (the model has diverged: load an earlier checkpoint, or lower "
                            "the learning rate)");
    }
}
}  // namespace detail

/// Every array of a checkpoint: the weights, what the optimizer's slots hold and the slots, its
/// step count, the learning rate, and the training position.
template <ExecutionPolicy Exec>
named_arrays checkpoint_arrays(const variable_set& vars, const optimizer_state<Exec>& opt,
                               const training_position& at) {
    named_arrays arrays = weight_arrays<Exec>(vars);
    const std::size_t slots = opt.slot_count();
    for (std::size_t i = 0; i < vars.size(); ++i) {
        if (!vars[i].ref.trainable()) continue;
        for (std::size_t k = 0; k < slots; ++k) {
            data::npz_array a{detail::variable_shape(vars[i].ref), std::vector<float>(vars[i].ref.size())};
            Exec::to_host(opt.slots(i)[k], vars[i].ref.size(), a.values.data());
            arrays.emplace_back("optimizer/" + vars[i].name + "/slot" + std::to_string(k), std::move(a));
        }
    }
    arrays.emplace_back(detail::layout_array, detail::text_array(opt.optimizer().state_layout().description));
    arrays.emplace_back("optimizer/iterations", data::int64_array({}, {static_cast<std::int64_t>(opt.iterations())}));
    arrays.emplace_back("optimizer/learning_rate", data::npz_array{{}, {opt.learning_rate()}});
    arrays.emplace_back("optimizer/samples_seen", data::int64_array({2}, {static_cast<std::int64_t>(opt.samples_seen()),
                                                                          static_cast<std::int64_t>(opt.reference_batch())}));
    arrays.emplace_back("training/position",
                        data::int64_array({5}, {static_cast<std::int64_t>(at.epoch), static_cast<std::int64_t>(at.step),
                                                static_cast<std::int64_t>(at.sample), static_cast<std::int64_t>(at.seed),
                                                static_cast<std::int64_t>(at.micro_batch_limit)}));
    return arrays;
}

namespace detail {
/// What a checkpoint says its optimizer's slots hold; empty when it predates the record.
inline std::string written_layout(const named_arrays& arrays, const std::string& file) {
    const auto it = std::find_if(arrays.begin(), arrays.end(), [](const auto& a) { return a.first == layout_array; });
    if (it == arrays.end()) return {};
    std::string written;
    for (const std::int64_t c : it->second.integers) {
        if (c < 1 || c > 255) {
            throw io_error("load_checkpoint: array 'optimizer/state_layout' in " + file + " holds " +
                           std::to_string(c) + "; expected character codes 1..255");
        }
        written += static_cast<char>(c);
    }
    if (it->second.dtype != data::npz_dtype::int64 || written.empty()) {
        throw io_error("load_checkpoint: array 'optimizer/state_layout' in " + file +
                       " is not a text; expected character codes 1..255");
    }
    return written;
}

/// Refuses a checkpoint whose slots were written by an optimizer whose state means something else
/// than the compiled one's. A checkpoint from before the layout was recorded is accepted only
/// when the compiled optimizer keeps no state, so that there is nothing to misread.
inline void check_state_layout(const std::string& written, const std::string& file,
                               const optimizer_state_layout& compiled, std::size_t compiled_slots) {
    if (written.empty()) {
        if (compiled_slots == 0) return;
        throw io_error("load_checkpoint: " + file +
                       " does not say which optimizer wrote its state (it predates 'optimizer/state_layout'), so "
                       "its slots cannot be told from another optimizer's; the compiled optimizer is '" +
                       compiled.description +
                       "'. Read its weights with load_weights and train on with fresh optimizer state");
    }
    if (written != compiled.description) {
        throw io_error("load_checkpoint: " + file + " holds the optimizer state of '" + written +
                       "' but the model is compiled with '" + compiled.description +
                       "', whose state means something else; compile the optimizer that wrote it, or read only "
                       "the weights with load_weights");
    }
}

/// Refuses a slot holding a value its optimizer cannot have left there.
inline void check_slot_values(const data::npz_array& a, const std::string& name, const std::string& file,
                              const optimizer_state_layout& layout, std::size_t k) {
    check_finite_array(a, name, file, "load_checkpoint", weights_source::file);
    if ((layout.non_negative >> k & 1u) == 0) return;
    for (std::size_t i = 0; i < a.values.size(); ++i) {
        if (a.values[i] < 0.0f) {
            throw io_error("load_checkpoint: array '" + name + "' in " + file + " holds " + value_str(a.values[i]) +
                           " at flat index " + std::to_string(i) + ", but slot " + std::to_string(k) + " of '" +
                           layout.description + "' is a mean of squares; expected values >= 0");
        }
    }
}

/// Refuses counters and a learning rate that no training can have saved.
inline void check_training_values(std::int64_t iterations, float lr, const std::vector<std::int64_t>& counters,
                                  const std::vector<std::int64_t>& position, const std::string& file) {
    if (iterations < 0) {
        throw io_error("load_checkpoint: array 'optimizer/iterations' in " + file + " is " +
                       std::to_string(iterations) + "; expected an optimizer step count >= 0");
    }
    if (!(lr >= 0.0f) || !std::isfinite(lr)) {
        throw io_error("load_checkpoint: array 'optimizer/learning_rate' in " + file + " is " + value_str(lr) +
                       "; expected a finite learning rate >= 0");
    }
    if (counters[0] < 0 || counters[1] < 0) {
        throw io_error("load_checkpoint: array 'optimizer/samples_seen' in " + file + " holds " +
                       std::to_string(std::min(counters[0], counters[1])) +
                       "; expected the samples seen and the reference batch, both >= 0");
    }
    // position[3] is the seed, any 64 bits.
    static constexpr std::array<const char*, 5> fields{"epoch", "step", "sample", "seed", "micro-batch limit"};
    for (const std::size_t f : {0u, 1u, 2u, 4u}) {
        if (position[f] < 0) {
            throw io_error("load_checkpoint: array 'training/position' in " + file + " holds " + fields[f] + " " +
                           std::to_string(position[f]) + "; expected epoch, step, sample and micro-batch limit >= 0");
        }
    }
}
}  // namespace detail

/// Copies a checkpoint's weights and optimizer slots into the model and returns the rest of its
/// state. Everything is checked before anything is changed: the slots must have been written by
/// an optimizer whose state means what the compiled one's does (optimizer_state_layout), and every
/// value must be one training can have left (finite weights and slots, non-negative means of
/// squares and counters, a finite learning rate >= 0, as LearningRateScheduler allows).
template <ExecutionPolicy Exec>
restored_state restore_checkpoint(const named_arrays& arrays, const std::filesystem::path& path,
                                  const variable_set& vars, const optimizer_state<Exec>& opt) {
    const std::string file = path.string();
    auto find = [&](const std::string& name) -> const data::npz_array& {
        for (const auto& [n, a] : arrays) {
            if (n == name) return a;
        }
        throw shape_error("load_checkpoint: " + file + " has no array '" + name +
                          "' (a file from save_weights holds weights only; use load_weights)");
    };
    const auto& iterations = find("optimizer/iterations");
    const auto& lr = find("optimizer/learning_rate");
    const auto& position = find("training/position");
    if (iterations.integers.size() != 1 || lr.values.size() != 1 || position.integers.size() != 5) {
        throw shape_error("load_checkpoint: " + file + " has malformed training state");
    }
    std::vector<std::int64_t> counters{0, 0};
    for (const auto& [n, a] : arrays) {
        if (n != "optimizer/samples_seen") continue;
        if (a.integers.size() != 2) {
            throw shape_error("load_checkpoint: " + file + " has a malformed optimizer/samples_seen");
        }
        counters = a.integers;
    }
    const std::size_t slots = opt.slot_count();
    const optimizer_state_layout layout = opt.optimizer().state_layout();
    const std::string written = detail::written_layout(arrays, file);
    const std::string extra_slot =
        vars.size() == 0 ? "" : "optimizer/" + vars[0].name + "/slot" + std::to_string(slots);
    for (const auto& [n, a] : arrays) {
        if (n == extra_slot) {
            throw shape_error("load_checkpoint: " + file +
                              " was written with an optimizer that keeps more state than the compiled " +
                              std::string(opt.optimizer().name()) +
                              (written.empty() ? "" : " ('" + layout.description + "'); it was written by '" + written + "'"));
        }
    }
    detail::check_state_layout(written, file, layout, slots);
    std::vector<std::pair<const data::npz_array*, float*>> slot_copies;
    for (std::size_t i = 0; i < vars.size(); ++i) {
        if (!vars[i].ref.trainable()) continue;
        for (std::size_t k = 0; k < slots; ++k) {
            const std::string name = "optimizer/" + vars[i].name + "/slot" + std::to_string(k);
            const auto& a = find(name);
            const std::vector<std::size_t> expected = detail::variable_shape(vars[i].ref);
            if (a.shape != expected || a.dtype != data::npz_dtype::float32) {
                throw shape_error("load_checkpoint: array '" + name + "' in " + file + " has shape " +
                                  detail::runtime_shape_str(a.shape) +
                                  (a.dtype != data::npz_dtype::float32 ? " of integers" : "") + " but the variable '" +
                                  vars[i].name + "' has shape " + detail::runtime_shape_str(expected) + " of floats");
            }
            detail::check_slot_values(a, name, file, layout, k);
            slot_copies.emplace_back(&a, opt.slots(i)[k]);
        }
    }
    const auto& p = position.integers;
    detail::check_training_values(iterations.integers[0], lr.values[0], counters, p, file);
    const auto weights = detail::checked_weight_arrays(vars, arrays, file, "load_checkpoint", weights_source::file);
    // Everything is checked: from here on nothing throws but a failed copy.
    detail::copy_weights<Exec>(vars, weights);
    for (const auto& [a, dst] : slot_copies) Exec::from_host(a->values.data(), a->values.size(), dst);
    restored_state r{static_cast<std::uint64_t>(iterations.integers[0]), lr.values[0],
                     {static_cast<std::uint64_t>(p[0]), static_cast<std::size_t>(p[1]), static_cast<std::uint64_t>(p[2]),
                      static_cast<std::uint64_t>(p[3]), static_cast<std::size_t>(p[4])}};
    r.samples_seen = static_cast<std::uint64_t>(counters[0]);
    r.reference_batch = static_cast<std::size_t>(counters[1]);
    return r;
}

}  // namespace batchwise
