// The model's variables in order with the names they are saved under ("dense_1/kernel"), and
// the gradient views the accumulation window hands to its reduction hook and observers.
#pragma once

#include <array>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "batchwise/batch/accumulation.hpp"
#include "batchwise/layers/layer.hpp"

namespace batchwise {

/// A variable with the name it is saved under.
struct variable_entry {
    /// The saved name, "<layer name>/<variable>" ("dense_1/kernel").
    std::string name;
    /// Its layer's index in the network.
    std::size_t layer = 0;
    /// Its values and gradient.
    variable_ref ref;
    /// Whether its layer can update it inside the weight-gradient GEMM (GemmUpdateLayer).
    bool updatable_in_gemm = false;
};

/// Every variable of a network, named after Keras's layer names, built once with the model.
class variable_set {
public:
    variable_set() = default;

    /// `layer_names[i]` names layer i; `in_gemm[i]` is the variable layer i updates in its GEMM
    /// (empty when none).
    template <class Network, std::size_t N>
    variable_set(Network& net, const std::array<std::string, N>& layer_names,
                 const std::array<std::string_view, N>& in_gemm) {
        net.for_each_variable([&](std::size_t layer, const variable_ref& v) {
            entries_.push_back({layer_names[layer] + "/" + std::string(v.name), layer, v,
                                !in_gemm[layer].empty() && v.name == in_gemm[layer]});
        });
        // Views of the gradients, made once, so that no step allocates to describe itself.
        for (const auto& e : entries_) {
            if (!e.ref.trainable()) continue;
            const gradient_buffer g{e.name, e.ref.grad, e.ref.size()};
            all_.push_back(g);
            if (!e.updatable_in_gemm) after_gemm_.push_back(g);
        }
    }

    /// Every variable, in the network's order.
    [[nodiscard]] const std::vector<variable_entry>& entries() const { return entries_; }
    /// The number of variables.
    [[nodiscard]] std::size_t size() const { return entries_.size(); }
    /// Variable i of entries().
    [[nodiscard]] const variable_entry& operator[](std::size_t i) const { return entries_[i]; }

    /// The gradients still to be applied at the end of a window: all trainable variables, or
    /// those the GEMM did not update when the step was folded into it.
    [[nodiscard]] std::span<const gradient_buffer> gradients(bool updated_in_gemm) const {
        return updated_in_gemm ? std::span<const gradient_buffer>(after_gemm_) : std::span<const gradient_buffer>(all_);
    }

    /// "dense/kernel, dense/bias, ...", for error messages.
    [[nodiscard]] std::string names() const {
        std::string s;
        for (const auto& v : entries_) s += (s.empty() ? "" : ", ") + v.name;
        return s;
    }

private:
    std::vector<variable_entry> entries_;
    std::vector<gradient_buffer> all_, after_gemm_;
};

}  // namespace batchwise
