// Keras's layer names ("dense_1") and Model::summary's table: layers, output shapes with the
// batch dimension, parameter counts.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

namespace batchwise {
namespace detail {

/// "BatchNormalization" -> "batch_normalization", "ReLU" -> "re_lu": Keras's layer names.
inline std::string snake_case(std::string_view camel) {
    std::string s;
    for (std::size_t i = 0; i < camel.size(); ++i) {
        const char c = camel[i];
        const bool upper = c >= 'A' && c <= 'Z';
        if (upper && i > 0) {
            const char prev = camel[i - 1];
            const bool next_lower = i + 1 < camel.size() && camel[i + 1] >= 'a' && camel[i + 1] <= 'z';
            if ((prev >= 'a' && prev <= 'z') || next_lower) s += '_';
        }
        s += upper ? static_cast<char>(c - 'A' + 'a') : c;
    }
    return s;
}

/// "1,234,567", as Keras prints parameter counts.
inline std::string with_thousands(std::size_t n) {
    std::string digits = std::to_string(n), out;
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
        out += digits[i];
    }
    return out;
}

/// Each layer's name: its snake_case type, numbered from the second of a type on ("dense",
/// "dense_1").
template <class Net>
std::array<std::string, Net::layer_names.size()> keras_layer_names() {
    std::array<std::string, Net::layer_names.size()> names;
    for (std::size_t i = 0; i < names.size(); ++i) {
        const std::string base = snake_case(Net::layer_names[i]);
        std::size_t k = 0;
        for (std::size_t j = 0; j < i; ++j) k += Net::layer_names[j] == Net::layer_names[i];
        names[i] = k == 0 ? base : base + "_" + std::to_string(k);
    }
    return names;
}

/// "(None, 256)": layer I's output shape with the batch dimension.
template <class Net, class Batch, std::size_t I>
std::string batch_shape_str() {
    std::string s = "(" + Batch::str();
    for (auto d : Net::template layer_output_shape<I>::dims) s += ", " + std::to_string(d);
    return s + ")";
}

}  // namespace detail

/// Writes the table Keras's model.summary() prints, for network `Network` (Net bound to Exec)
/// under batch policy `Batch`.
template <class Net, class Network, class Batch, class Exec>
void write_summary(std::ostream& os, const std::array<std::string, Network::size>& layer_names) {
    const std::string rule(65, '_'), double_rule(65, '=');
    auto row = [&](const std::string& a, const std::string& b, const std::string& c) {
        std::string line = " " + a;
        line.resize(std::max<std::size_t>(line.size() + 1, 29), ' ');
        line += b;
        line.resize(std::max<std::size_t>(line.size() + 1, 55), ' ');
        os << line << c << "\n";
    };
    os << "Model: \"sequential\" (batch " << Batch::str() << ", " << Exec::name << ")\n" << rule << "\n";
    row("Layer (type)", "Output Shape", "Param #");
    os << double_rule << "\n";
    [&]<std::size_t... I>(std::index_sequence<I...>) {
        ((row(layer_names[I] + " (" + std::string(Net::layer_names[I]) + ")", detail::batch_shape_str<Net, Batch, I>(),
              detail::with_thousands(Network::template layer_impl<I>::trainable_count +
                                     Network::template layer_impl<I>::non_trainable_count)),
          (I + 1 < sizeof...(I) ? void(os << "\n") : void())),
         ...);
    }(std::make_index_sequence<Network::size>{});
    os << double_rule << "\n"
       << "Total params: " << detail::with_thousands(Network::trainable_count + Network::non_trainable_count) << "\n"
       << "Trainable params: " << detail::with_thousands(Network::trainable_count) << "\n"
       << "Non-trainable params: " << detail::with_thousands(Network::non_trainable_count) << "\n"
       << rule << "\n";
}

}  // namespace batchwise
