// Input, Flatten and Reshape: layers that only change how a sample's features are indexed.
// Activations are stored flat (samples x features), so none of them moves data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "batchwise/layers/layer.hpp"

namespace batchwise {

/// The shape of one sample; the first element of every Sequential. Not a layer itself.
template <std::size_t... Dims>
struct Input {
    /// shape<Dims...>.
    using shape_type = shape<Dims...>;
};

/// Whether T is an Input<...>.
template <class T>
inline constexpr bool is_input_v = false;
/// Every Input<...> is one.
template <std::size_t... D>
inline constexpr bool is_input_v<Input<D...>> = true;

namespace detail {
/// Implementation shared by the layers that reinterpret without copying.
template <class In, ExecutionPolicy Exec>
class identity_impl {
public:
    static constexpr std::size_t in_features = In::size;
    static constexpr std::size_t out_features = In::size;
    static constexpr std::size_t trainable_count = 0;
    static constexpr std::size_t non_trainable_count = 0;
    static constexpr std::size_t state_floats = 0;
    static constexpr std::size_t buffer_floats(std::size_t, bool) { return 0; }

    void initialize(std::uint64_t, std::uint32_t) {}
    void reserve(std::size_t, bool) {}
    const_matrix_view forward(const_matrix_view x, const pass_context&) { return x; }
    const_matrix_view backward(const_matrix_view, const_matrix_view, const_matrix_view dy,
                               bool need_dx, bool) {
        return need_dx ? dy : const_matrix_view{};
    }
    template <class F>
    void for_each_variable(F&&) {}
};
}  // namespace detail

/// Flattens a sample of any rank to a vector, as Keras's Flatten.
struct Flatten {
    /// The Keras class name, shown by summary(); layer and weight names are its snake_case form.
    static constexpr std::string_view name = "Flatten";
    /// Takes a sample of any shape.
    template <class In>
    static constexpr bool accepts = true;
    /// What a shape-mismatch diagnostic says it needs: any shape.
    template <class In>
    using requirement = any_shape;
    /// Every element of the sample, in one vector.
    template <class In>
    using output = shape<In::size>;
    template <class In, ExecutionPolicy Exec>
    using impl = detail::identity_impl<In, Exec>;
};

/// Reinterprets a sample as shape<Dims...>; the element count must match.
template <std::size_t... Dims>
struct Reshape {
    /// The Keras class name, shown by summary(); layer and weight names are its snake_case form.
    static constexpr std::string_view name = "Reshape";
    /// Takes a sample of as many elements as shape<Dims...>.
    template <class In>
    static constexpr bool accepts = In::size == shape<Dims...>::size;
    /// What a shape-mismatch diagnostic says it needs: that many elements.
    template <class In>
    using requirement = any_shape_with_elements<shape<Dims...>::size>;
    /// shape<Dims...>.
    template <class In>
    using output = shape<Dims...>;
    template <class In, ExecutionPolicy Exec>
    using impl = detail::identity_impl<In, Exec>;
};

}  // namespace batchwise
