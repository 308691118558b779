// Weights and whole training state in NumPy .npz archives: one array per variable named as
// Keras names it ("dense_1/kernel"), plus, in a checkpoint, the optimizer and the position.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
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

/// Weight arrays by name into the variables; the optimizer and training state of a checkpoint
/// are skipped. All arrays are checked before any is copied, so a bad file changes nothing.
template <ExecutionPolicy Exec>
void load_weight_arrays(const variable_set& vars, const named_arrays& arrays, const std::filesystem::path& path,
                        const std::string& call = "load_weights") {
    std::vector<const data::npz_array*> found(vars.size(), nullptr);
    for (const auto& [name, array] : arrays) {
        if (name.starts_with("optimizer/") || name.starts_with("training/") || name.starts_with("state/")) continue;
        std::size_t i = 0;
        while (i < vars.size() && vars[i].name != name) ++i;
        if (i == vars.size()) {
            throw shape_error(call + ": " + path.string() + " holds an array '" + name +
                              "' that this model does not have; its variables are " + vars.names());
        }
        const std::vector<std::size_t> expected = detail::variable_shape(vars[i].ref);
        if (array.shape != expected || array.dtype != data::npz_dtype::float32) {
            throw shape_error(call + ": array '" + name + "' in " + path.string() + " has shape " +
                              detail::runtime_shape_str(array.shape) +
                              (array.dtype != data::npz_dtype::float32 ? " of integers" : "") +
                              " but the model's variable has shape " + detail::runtime_shape_str(expected) +
                              " of floats");
        }
        found[i] = &array;
    }
    for (std::size_t i = 0; i < vars.size(); ++i) {
        if (found[i] == nullptr) throw shape_error(call + ": " + path.string() + " has no array '" + vars[i].name + "'");
    }
    for (std::size_t i = 0; i < vars.size(); ++i) {
        Exec::from_host(found[i]->values.data(), vars[i].ref.size(), vars[i].ref.value);
    }
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
    load_weight_arrays<Exec>(vars, arrays, "the arrays given", "set_weights");
}

/// Every array of a checkpoint: the weights, the optimizer's slots and step count, the learning
/// rate, and the training position.
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

/// Copies a checkpoint's weights and optimizer slots into the model and returns the rest of its
/// state. Everything is checked before anything is changed; the slots must be those of the
/// compiled optimizer.
template <ExecutionPolicy Exec>
restored_state restore_checkpoint(const named_arrays& arrays, const std::filesystem::path& path,
                                  const variable_set& vars, const optimizer_state<Exec>& opt) {
    auto find = [&](const std::string& name) -> const data::npz_array& {
        for (const auto& [n, a] : arrays) {
            if (n == name) return a;
        }
        throw shape_error("load_checkpoint: " + path.string() + " has no array '" + name +
                          "' (a file from save_weights holds weights only; use load_weights)");
    };
    const auto& iterations = find("optimizer/iterations");
    const auto& lr = find("optimizer/learning_rate");
    const auto& position = find("training/position");
    if (iterations.integers.size() != 1 || lr.values.size() != 1 || position.integers.size() != 5) {
        throw shape_error("load_checkpoint: " + path.string() + " has malformed training state");
    }
    std::vector<std::int64_t> counters{0, 0};
    for (const auto& [n, a] : arrays) {
        if (n != "optimizer/samples_seen") continue;
        if (a.integers.size() != 2 || a.integers[0] < 0 || a.integers[1] < 0) {
            throw shape_error("load_checkpoint: " + path.string() + " has a malformed optimizer/samples_seen");
        }
        counters = a.integers;
    }
    const std::size_t slots = opt.slot_count();
    std::vector<std::pair<const data::npz_array*, float*>> slot_copies;
    for (std::size_t i = 0; i < vars.size(); ++i) {
        if (!vars[i].ref.trainable()) continue;
        for (std::size_t k = 0; k < slots; ++k) {
            const auto& a = find("optimizer/" + vars[i].name + "/slot" + std::to_string(k));
            if (a.values.size() != vars[i].ref.size()) {
                throw shape_error("load_checkpoint: optimizer slot of '" + vars[i].name + "' has " +
                                  std::to_string(a.values.size()) + " values, expected " +
                                  std::to_string(vars[i].ref.size()));
            }
            slot_copies.emplace_back(&a, opt.slots(i)[k]);
        }
    }
    const std::string extra_slot =
        vars.size() == 0 ? "" : "optimizer/" + vars[0].name + "/slot" + std::to_string(slots);
    for (const auto& [n, a] : arrays) {
        if (n == extra_slot) {
            throw shape_error("load_checkpoint: " + path.string() +
                              " was written with an optimizer that keeps more state than the compiled " +
                              std::string(opt.optimizer().name()));
        }
    }
    load_weight_arrays<Exec>(vars, arrays, path);  // checks all weights, then copies them
    for (const auto& [a, dst] : slot_copies) Exec::from_host(a->values.data(), a->values.size(), dst);
    const auto& p = position.integers;
    restored_state r{static_cast<std::uint64_t>(iterations.integers[0]), lr.values[0],
                     {static_cast<std::uint64_t>(p[0]), static_cast<std::size_t>(p[1]), static_cast<std::uint64_t>(p[2]),
                      static_cast<std::uint64_t>(p[3]), static_cast<std::size_t>(p[4] > 0 ? p[4] : 0)}};
    r.samples_seen = static_cast<std::uint64_t>(counters[0]);
    r.reference_batch = static_cast<std::size_t>(counters[1]);
    return r;
}

}  // namespace batchwise
