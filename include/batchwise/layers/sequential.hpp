// Sequential: a network written as a flat list of layer types, read left to right. Shapes are
// inferred along the list at compile time; a layer that cannot take the shape before it stops
// the build with a sentence that names its position and both shapes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "batchwise/core/conventions.hpp"
#include "batchwise/core/concepts.hpp"
#include "batchwise/layers/hooks.hpp"
#include "batchwise/layers/layer.hpp"
#include "batchwise/layers/reshape.hpp"

namespace batchwise {

namespace detail {

/// std::lcm is not a constant expression under nvcc (libstdc++ checks overflow with a builtin
/// nvcc's front end cannot evaluate), and the granularity below must be one.
constexpr std::size_t least_common_multiple(std::size_t a, std::size_t b) {
    std::size_t x = a;
    std::size_t y = b;
    while (y != 0) {
        const std::size_t r = x % y;
        x = y;
        y = r;
    }
    return x == 0 ? 0 : a / x * b;
}

template <class T>
inline constexpr bool always_false = false;

/// Instantiated for every element after Input; its template arguments are what the compiler
/// prints next to the message, so they carry the position (1 = first layer after Input).
template <std::size_t Position, class T>
struct sequential_element_check {
    static constexpr bool value = Layer<T>;
    static_assert(value,
                  "batchwise::Sequential: the element at this position (see "
                  "'sequential_element_check<position, type>' in the lines above) is not a layer: "
                  "it must satisfy batchwise::Layer (name, accepts<In>, requirement<In>, "
                  "output<In>, impl<In, Exec>), like Dense<64> or ReLU.");
};

/// The layer at `Position` is given `Given` but needs `Needs`; both appear in the diagnostic.
template <std::size_t Position, class LayerT, class Given, class Needs>
struct layer_shape_check {
    static constexpr bool value = LayerT::template accepts<Given>;
    static_assert(value,
                  "batchwise::Sequential: shape mismatch. The layer at this position cannot take "
                  "the output shape of the layer before it; 'layer_shape_check<position, layer, "
                  "given shape, needed shape>' in the lines above names the layer's position "
                  "(1 = first layer after Input), the shape it is given and the shape it needs. "
                  "A Dense after a multi-dimensional shape (an image Input, a Conv2D) needs a Flatten "
                  "before it; a kernel or pool larger than its image needs same_padding; a 2-D layer "
                  "needs a (height, width, channels) shape, a Reshape<h, w, 1> after Input<h, w>.");
};

template <class LayerT, class In, bool Ok>
struct lazy_output {
    using type = In;  // Keep going after a mismatch so that only the one message is printed.
};
template <class LayerT, class In>
struct lazy_output<LayerT, In, true> {
    using type = typename LayerT::template output<In>;
};

/// Input shape of every layer and the final output shape, one step of inference per layer.
/// After the first problem, later layers are no longer checked, so exactly one message shows.
template <std::size_t Position, bool Checking, class In, class... Ls>
struct shape_chain {
    using inputs = std::tuple<>;
    using output = In;
    static constexpr bool ok = true;
};
template <std::size_t Position, bool Checking, class In, class L, class... Rest>
struct shape_chain<Position, Checking, In, L, Rest...> {
    static constexpr bool fits = [] {
        if constexpr (!Checking) {
            return false;
        } else if constexpr (!sequential_element_check<Position, L>::value) {
            return false;
        } else {
            return layer_shape_check<Position, L, In,
                                     typename L::template requirement<In>>::value;
        }
    }();
    using next_in = typename lazy_output<L, In, fits>::type;
    using rest = shape_chain<Position + 1, fits, next_in, Rest...>;
    using inputs = decltype(std::tuple_cat(std::declval<std::tuple<In>>(),
                                           std::declval<typename rest::inputs>()));
    using output = typename rest::output;
    static constexpr bool ok = fits && rest::ok;
};

}  // namespace detail

/// A network as a flat list of layer types after its Input, read left to right:
/// `Sequential<Input<784>, Dense<128>, ReLU, Dense<10>>`. Each layer's input shape is inferred
/// along the list at compile time; a layer that cannot take it stops the build with one
/// sentence, and the instantiation line above it names the position and both shapes.
template <class InputLayer, class... Layers>
struct Sequential {
    static_assert(is_input_v<InputLayer>,
                  "batchwise::Sequential: the first element must be batchwise::Input<dims...>, "
                  "the shape of one sample (for example Input<28, 28> or Input<784>).");
    static_assert(sizeof...(Layers) > 0, "batchwise::Sequential needs at least one layer.");

    /// The shape of one input sample (the Input's).
    using input_shape = typename InputLayer::shape_type;
    /// The shape inference along the list, one step per layer.
    using chain = detail::shape_chain<1, true, input_shape, Layers...>;
    /// Whether every layer accepts the shape before it (the build stops at the first that does
    /// not).
    static constexpr bool well_formed = chain::ok;
    /// The shape of one output sample.
    using output_shape = typename chain::output;
    /// Number of layers, Input not counted.
    static constexpr std::size_t layer_count = sizeof...(Layers);
    /// The layer types, in order.
    using layer_types = std::tuple<Layers...>;
    /// Each layer's Keras class name, in order.
    static constexpr std::array<std::string_view, sizeof...(Layers)> layer_names{Layers::name...};

    /// The input shape of layer I (0: the first after Input).
    template <std::size_t I>
    using layer_input_shape = std::tuple_element_t<I, typename chain::inputs>;
    /// The output shape of layer I.
    template <std::size_t I>
    using layer_output_shape = typename std::tuple_element_t<I, layer_types>::template output<
        layer_input_shape<I>>;

    /// The network bound to an execution policy: one implementation object per layer.
    template <ExecutionPolicy Exec>
    class network {
        template <class Impl>
        static constexpr std::size_t granularity_of() {
            if constexpr (SplitGranularLayer<Impl>) {
                return Impl::split_granularity;
            } else {
                return 1;
            }
        }

        template <class Impl>
        static constexpr std::size_t rows_per_sample_of() {
            if constexpr (requires { Impl::rows_per_sample; }) {
                return Impl::rows_per_sample;
            } else {
                return 1;
            }
        }

        template <std::size_t... I>
        static auto make_tuple_type(std::index_sequence<I...>)
            -> std::tuple<typename Layers::template impl<layer_input_shape<I>, Exec>...>;

    public:
        /// One implementation object per layer, in order.
        using layers_tuple = decltype(make_tuple_type(std::index_sequence_for<Layers...>{}));
        /// Number of layers.
        static constexpr std::size_t size = sizeof...(Layers);

        /// The implementation of layer I, bound to its input shape and Exec.
        template <std::size_t I>
        using layer_impl = std::tuple_element_t<I, layers_tuple>;
        static_assert(detail::layer_hooks_check<layers_tuple>::value);

        /// Trainable parameters of each layer, in order.
        static constexpr std::array<std::size_t, size> trainable_counts = []<std::size_t... I>(
            std::index_sequence<I...>) {
            return std::array<std::size_t, size>{layer_impl<I>::trainable_count...};
        }(std::index_sequence_for<Layers...>{});

        /// Layer I needs an input gradient only if some layer before it has trainable variables.
        static constexpr std::array<bool, size> needs_input_grad = [] {
            std::array<bool, size> needs{};
            bool trainable_before = false;
            for (std::size_t i = 0; i < size; ++i) {
                needs[i] = trainable_before;
                trainable_before = trainable_before || trainable_counts[i] > 0;
            }
            return needs;
        }();

        /// Trainable parameters of the whole network.
        static constexpr std::size_t trainable_count = [] {
            std::size_t n = 0;
            for (auto c : trainable_counts) n += c;
            return n;
        }();
        /// Non-trainable parameters (batch norm's moving averages) of the whole network.
        static constexpr std::size_t non_trainable_count = []<std::size_t... I>(
            std::index_sequence<I...>) {
            return (layer_impl<I>::non_trainable_count + ... + 0);
        }(std::index_sequence_for<Layers...>{});
        /// Floats every layer holds whatever the batch size (parameters, gradients, state).
        static constexpr std::size_t state_floats = []<std::size_t... I>(std::index_sequence<I...>) {
            return (layer_impl<I>::state_floats + ... + 0);
        }(std::index_sequence_for<Layers...>{});

        /// Whether layer I computes over its input's memory: it can (computes_in_place), and the
        /// layer before owns that memory and will not read it again (output_is_scratch). The
        /// first layer never does: its input is the caller's batch.
        template <std::size_t I>
        static constexpr bool runs_in_place() {
            if constexpr (I == 0) {
                return false;
            } else {
                return InPlaceLayer<layer_impl<I>> && ScratchOutputLayer<layer_impl<I - 1>>;
            }
        }

        /// Whether layer I applies layer I + 1 (an activation) in its own forward: the policy
        /// fuses it into I's GEMM (ActivationFusingLayer), and I + 1 would have run in place over
        /// I's output anyway, so the buffers and what backward reads stay as they were.
        template <std::size_t I>
        static constexpr bool fuses_next() {
            if constexpr (I + 1 >= size) {
                return false;
            } else {
                return runs_in_place<I + 1>() && ActivationFusingLayer<layer_impl<I>, layer_impl<I + 1>>;
            }
        }

        /// Whether layer I's forward was done by the layer before it (fuses_next).
        template <std::size_t I>
        static constexpr bool fused_into_previous() {
            if constexpr (I == 0) {
                return false;
            } else {
                return fuses_next<I - 1>();
            }
        }

        /// Whether layer I takes its input gradient through the activation before it, which the
        /// layer before that applied (fuses_next): the activation's backward is then skipped.
        template <std::size_t I>
        static constexpr bool folds_previous_gradient() {
            if constexpr (I < 2) {
                return false;
            } else {
                return fused_into_previous<I - 1>() && needs_input_grad[I] &&
                       ActivationGradientFusingLayer<layer_impl<I>, layer_impl<I - 1>>;
            }
        }

        /// Whether the layer after I took its input gradient through layer I (folds_previous_
        /// gradient), so that I's backward is skipped.
        template <std::size_t I>
        static constexpr bool gradient_taken_by_next() {
            if constexpr (I + 1 >= size) {
                return false;
            } else {
                return folds_previous_gradient<I + 1>();
            }
        }

        /// Floats of the per-batch buffers reserve(rows) allocates, exactly.
        static constexpr std::size_t buffer_floats(std::size_t rows) {
            return [&]<std::size_t... I>(std::index_sequence<I...>) {
                return ((runs_in_place<I>() ? 0 : layer_impl<I>::buffer_floats(rows, needs_input_grad[I])) + ... + 0);
            }(std::index_sequence_for<Layers...>{});
        }

        /// Whether a layer sums its training statistics across processes: then every process
        /// must run the same micro-batches (SynchronizedStatisticsLayer).
        static constexpr bool synchronizes_statistics = []<std::size_t... I>(std::index_sequence<I...>) {
            return (SynchronizedStatisticsLayer<layer_impl<I>> || ... || false);
        }(std::index_sequence_for<Layers...>{});

        /// Micro-batch sizes that are multiples of this leave every layer's training statistics
        /// unchanged (1 unless a batch norm uses virtual batches).
        static constexpr std::size_t split_granularity = []<std::size_t... I>(std::index_sequence<I...>) {
            std::size_t g = 1;
            ((g = detail::least_common_multiple(g, granularity_of<layer_impl<I>>())), ...);
            return g;
        }(std::index_sequence_for<Layers...>{});

        /// Rows one sample becomes in the longest column sum a layer takes (a convolution's bias
        /// gradient, batch norm over an image: samples x positions rows); per-row scratch of the
        /// policy (RowScratchPolicy) is reserved for that many rows per sample.
        static constexpr std::size_t column_rows_per_sample = []<std::size_t... I>(std::index_sequence<I...>) {
            std::size_t r = 1;
            ((r = rows_per_sample_of<layer_impl<I>>() > r ? rows_per_sample_of<layer_impl<I>>() : r), ...);
            return r;
        }(std::index_sequence_for<Layers...>{});

        /// Sets every layer's variables from seed `s` and the layer's index, so that initial
        /// values depend on nothing else.
        void initialize(std::uint64_t s) {
            for_each_layer([&]<std::size_t I>(auto& layer) {
                layer.initialize(s, static_cast<std::uint32_t>(I));
            });
        }

        /// Makes every per-batch buffer hold `rows` samples: buffer_floats(rows) floats in all.
        void reserve(std::size_t rows) {
            for_each_layer([&]<std::size_t I>(auto& layer) {
                if constexpr (!runs_in_place<I>()) layer.reserve(rows, needs_input_grad[I]);
            });
        }

        /// Gives every layer whose definition differs between Keras and PyTorch (batch norm's
        /// moving variance) the model's conventions.
        void set_conventions(conventions c) {
            for_each_layer([&]<std::size_t>(auto& layer) {
                if constexpr (requires { layer.set_conventions(c); }) layer.set_conventions(c);
            });
        }
        /// An optimizer step begins: layers that gather statistics over the whole step (batch
        /// norm's moving averages) reset them.
        void begin_step() {
            for_each_layer([&]<std::size_t>(auto& layer) {
                if constexpr (StepBeginLayer<std::decay_t<decltype(layer)>>) layer.begin_step();
            });
        }
        /// An optimizer step has been applied: layers that gather statistics over the step apply
        /// them.
        void end_step() {
            for_each_layer([&]<std::size_t>(auto& layer) {
                if constexpr (StepEndLayer<std::decay_t<decltype(layer)>>) layer.end_step();
            });
        }

        /// Layers' step statistics packed for summing across processes (StepStatisticsLayer).
        void step_statistics(std::vector<gradient_buffer>& out) {
            out.clear();
            for_each_layer([&]<std::size_t>(auto& layer) {
                if constexpr (StepStatisticsLayer<std::decay_t<decltype(layer)>>) out.push_back(layer.step_statistics());
            });
        }
        /// Unpacks the step statistics once summed, over `samples` samples in all.
        void set_step_statistics(std::size_t samples) {
            for_each_layer([&]<std::size_t>(auto& layer) {
                if constexpr (StepStatisticsLayer<std::decay_t<decltype(layer)>>) layer.set_step_statistics(samples);
            });
        }

        /// Runs every layer; remembers each layer's input and output for backward.
        const_matrix_view forward(const_matrix_view x, pass_context ctx) {
            for_each_layer([&]<std::size_t I>(auto& layer) {
                ctx.layer_index = static_cast<std::uint32_t>(I);
                inputs_[I] = x;
                if constexpr (fused_into_previous<I>()) {
                    // The layer before has applied this one (fuses_next): x is already its output.
                } else if constexpr (fuses_next<I>()) {
                    using activation = typename layer_impl<I + 1>::activation_function;
                    x = layer.template forward_activated<activation>(x, ctx);
                } else if constexpr (runs_in_place<I>()) {
                    // x is the previous layer's own buffer (output_is_scratch), not const memory.
                    x = layer.forward_in_place({const_cast<float*>(x.data), x.rows, x.cols}, ctx);
                } else {
                    x = layer.forward(x, ctx);
                }
                outputs_[I] = x;
            });
            return x;
        }

        /// Back-propagates dy (the loss gradient w.r.t. the network output) through every layer
        /// in reverse, writing (or, when accumulating, adding to) every parameter gradient.
        void backward(const_matrix_view dy, bool accumulate) {
            [&]<std::size_t... I>(std::index_sequence<I...>) {
                ((dy = backward_layer<size - 1 - I>(dy, accumulate)), ...);
            }(std::make_index_sequence<size>{});
        }

        /// Whether layer I can apply an optimizer step inside its gradient GEMM, and to which of
        /// its variables (update_in_gemm).
        template <std::size_t I>
        static constexpr std::string_view variable_updated_in_gemm() {
            if constexpr (GemmUpdateLayer<layer_impl<I>>) {
                return layer_impl<I>::variable_updated_in_gemm;
            } else {
                return {};
            }
        }

        /// The gradients of a micro-batch that is a whole optimizer step, with layers that can
        /// (Dense) applying the step `u` to their kernel inside the gradient GEMM instead.
        void backward_and_update(const_matrix_view dy, const update_in_gemm& u) {
            [&]<std::size_t... I>(std::index_sequence<I...>) {
                ((dy = backward_layer_and_update<size - 1 - I>(dy, u)), ...);
            }(std::make_index_sequence<size>{});
        }

        /// `f.template operator()<I>(layer)` for every layer, in order.
        template <class F>
        void for_each_layer(F&& f) {
            [&]<std::size_t... I>(std::index_sequence<I...>) {
                (f.template operator()<I>(std::get<I>(layers_)), ...);
            }(std::make_index_sequence<size>{});
        }

        /// f(layer_index, variable_ref) for every variable of every layer, trainable or not.
        template <class F>
        void for_each_variable(F&& f) {
            for_each_layer([&]<std::size_t I>(auto& layer) {
                layer.for_each_variable([&](const variable_ref& v) { f(I, v); });
            });
        }

    private:
        template <std::size_t I>
        const_matrix_view backward_layer(const_matrix_view dy, bool accumulate) {
            auto& layer = std::get<I>(layers_);
            if constexpr (gradient_taken_by_next<I>()) {
                return dy;  // the layer after took its input gradient through this one
            } else if constexpr (folds_previous_gradient<I>()) {
                using activation = typename layer_impl<I - 1>::activation_function;
                const void* mask = nullptr;
                if constexpr (requires { std::get<I - 2>(layers_).activation_mask(); }) {
                    mask = std::get<I - 2>(layers_).activation_mask();
                }
                return layer.template backward_through<activation>(inputs_[I], outputs_[I], dy, accumulate,
                                                                   outputs_[I - 1], mask);
            } else {
                return layer.backward(inputs_[I], outputs_[I], dy, needs_input_grad[I], accumulate);
            }
        }

        template <std::size_t I>
        const_matrix_view backward_layer_and_update(const_matrix_view dy, const update_in_gemm& u) {
            auto& layer = std::get<I>(layers_);
            if constexpr (!variable_updated_in_gemm<I>().empty()) {
                return layer.backward_and_update(inputs_[I], outputs_[I], dy, needs_input_grad[I], u);
            } else {
                return layer.backward(inputs_[I], outputs_[I], dy, needs_input_grad[I], false);
            }
        }

        layers_tuple layers_;
        std::array<const_matrix_view, size> inputs_{};
        std::array<const_matrix_view, size> outputs_{};
    };
};

/// Whether T is a Sequential<...>.
template <class T>
inline constexpr bool is_sequential_v = false;
/// Every Sequential<...> is one.
template <class In, class... Ls>
inline constexpr bool is_sequential_v<Sequential<In, Ls...>> = true;

}  // namespace batchwise
