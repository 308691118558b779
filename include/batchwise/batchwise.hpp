// Umbrella header for the CPU build of batchwise: every layer, loss, optimizer, metric and the
// Model. The CUDA policy lives in <batchwise/cuda.hpp>, compiled with nvcc only.
#pragma once

#include "batchwise/batch/accumulation.hpp"
#include "batchwise/batch/batch_policy.hpp"
#include "batchwise/batch/coupling.hpp"
#include "batchwise/batch/schedule.hpp"
#include "batchwise/core/concepts.hpp"
#include "batchwise/core/errors.hpp"
#include "batchwise/core/rng.hpp"
#include "batchwise/core/shape.hpp"
#include "batchwise/data/csv.hpp"
#include "batchwise/data/dataset.hpp"
#include "batchwise/data/fashion_mnist.hpp"
#include "batchwise/data/idx.hpp"
#include "batchwise/data/npz.hpp"
#include "batchwise/exec/cpu_blas.hpp"
#include "batchwise/layers/activations.hpp"
#include "batchwise/layers/batch_norm.hpp"
#include "batchwise/layers/convolution.hpp"
#include "batchwise/layers/dense.hpp"
#include "batchwise/layers/dropout.hpp"
#include "batchwise/layers/normalization.hpp"
#include "batchwise/layers/pooling.hpp"
#include "batchwise/layers/preprocessing.hpp"
#include "batchwise/layers/reshape.hpp"
#include "batchwise/layers/sequential.hpp"
#include "batchwise/layers/softmax.hpp"
#include "batchwise/losses/binary_crossentropy.hpp"
#include "batchwise/losses/categorical_crossentropy.hpp"
#include "batchwise/losses/mean_squared_error.hpp"
#include "batchwise/metrics/metrics.hpp"
#include "batchwise/optimizers/adam.hpp"
#include "batchwise/optimizers/rmsprop.hpp"
#include "batchwise/optimizers/sgd.hpp"
#include "batchwise/train/adapt.hpp"
#include "batchwise/train/adaptive_batch.hpp"
#include "batchwise/train/callbacks.hpp"
#include "batchwise/train/history.hpp"
#include "batchwise/train/model.hpp"
#include "batchwise/train/noise_scale.hpp"
#include "batchwise/train/progress_bar.hpp"

/// \namespace batchwise
/// Everything the library offers: layers, losses, optimizers, metrics, and the Model with its
/// batch, execution and accumulation policies. Examples write `namespace bw = batchwise;`.

/// \namespace batchwise::data
/// Datasets and the files they are read from: Dataset (a tf.data-style pipeline: shuffle, batch
/// by size or schedule, map, prefetch), CSV, IDX, .npy and .npz files, and Fashion-MNIST.
