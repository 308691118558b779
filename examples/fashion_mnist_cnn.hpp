// The Fashion-MNIST CNN of examples/fashion_mnist_cnn.cpp, shared with benchmarks/cnn.cpp so that
// the memory and normalisation measurements are of the same network. Keras's layout: 28 x 28 x 1
// images, "same" 3 x 3 convolutions without bias (the normalisation's beta is the shift), 2 x 2
// max pooling halving the image each block.
#pragma once

#include <batchwise/batchwise.hpp>

namespace example {

template <class Normalization>
using cnn = batchwise::Sequential<
    batchwise::Input<28, 28>, batchwise::Reshape<28, 28, 1>,
    batchwise::Conv2D<32, 3, 3, batchwise::same_padding, batchwise::no_bias>, Normalization, batchwise::ReLU,
    batchwise::MaxPooling2D<2>,
    batchwise::Conv2D<64, 3, 3, batchwise::same_padding, batchwise::no_bias>, Normalization, batchwise::ReLU,
    batchwise::MaxPooling2D<2>, batchwise::Dropout<0.25f>,
    batchwise::Flatten, batchwise::Dense<128>, batchwise::ReLU, batchwise::Dropout<0.5f>,
    batchwise::Dense<10>>;  // logits

/// The example's network: batch norm with Keras's defaults.
using fashion_mnist_cnn = cnn<batchwise::BatchNorm>;

}  // namespace example
