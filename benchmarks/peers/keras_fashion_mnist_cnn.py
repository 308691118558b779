#!/usr/bin/env python3
"""Keras peer of batchwise's Fashion-MNIST CNN example (the fashion-mnist-cnn benchmark).

Trains the same model as examples/fashion_mnist_cnn with the same optimizer, batch size and
epochs, channels-last, inputs scaled to [0, 1]:

    Input(28, 28) -> Reshape(28, 28, 1)
    -> Conv2D(32, 3x3, same, no bias) -> BatchNormalization -> ReLU -> MaxPooling2D(2x2)
    -> Conv2D(64, 3x3, same, no bias) -> BatchNormalization -> ReLU -> MaxPooling2D(2x2)
    -> Dropout(0.25) -> Flatten -> Dense(128) -> ReLU -> Dropout(0.5) -> Dense(10) logits

softmax cross-entropy on the logits (SparseCategoricalCrossentropy(from_logits=True)),
Adam(1e-3 x 0.9^epoch, Keras's LearningRateScheduler), batch 128, shuffled every epoch, 20
epochs, then evaluates on the test set in
batches of 1000. Keras defaults everywhere else: glorot_uniform kernels, zero biases,
BatchNormalization(momentum=0.99, epsilon=1e-3), Adam beta 0.9/0.999, epsilon 1e-7.

Prints a line per epoch ("Epoch 3 seconds: 41.20 ...") and ends with four lines the driver
(benchmarks/fashion_mnist_cnn.sh) parses:

    Test accuracy: 0.XXXX
    Wall time: NN.NNs     (model.fit + model.evaluate)
    Fit time: NN.NNs      (model.fit alone)
    Median epoch: NN.NNs  (median of the per-epoch seconds inside model.fit, all epochs)

Runs on the interpreter that has TensorFlow: the driver pip-installs tensorflow-cpu==2.21.0 into
the first python3 on PATH (pyenv's here, not Debian's /usr/bin/python3). The data are read from
Debian's dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist), never downloaded, so
every system sees the same bytes. --limit N trains on the first N training samples only (smoke
tests; the test set is always the full 10,000).
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The IDX reader and the machine-load probe of the MLP peer; that module imports neither
# TensorFlow nor Keras at load time.
from keras_fashion_mnist import DATA_DIR, load, machine_busy_seconds, print_timed_region  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2,
                        help="intra-op threads (and OMP/OpenBLAS threads); the machine has 2 cores")
    parser.add_argument("--inter-op-threads", type=int, default=1,
                        help="1, as in the MLP peer (keras_fashion_mnist.py): on 2 cores a second "
                             "inter-op thread competes with the intra-op ones")
    parser.add_argument("--eval-batch-size", type=int, default=1000,
                        help="test-set batch; 1000 as in the C++ example (no effect on accuracy)")
    parser.add_argument("--seed", type=int, default=1,
                        help="weights, dropout and shuffle seed; vary it to see the run-to-run spread")
    parser.add_argument("--limit", type=int, default=0,
                        help="train on the first N training samples only (0: all 60,000); for smoke tests")
    parser.add_argument("--data-dir", default=DATA_DIR)
    parser.add_argument("--verbose", type=int, default=0,
                        help="model.fit verbosity (0: only this script's line per epoch)")
    args = parser.parse_args()
    if args.epochs < 1 or args.batch_size < 1 or args.threads < 1 or args.limit < 0:
        parser.error("--epochs, --batch-size and --threads must be positive, --limit not negative")
    return args


def main():
    args = parse_args()

    # Thread pools must be sized before TensorFlow (and any OpenMP/BLAS it loads) starts, so the
    # environment is set before the import; tf.config below is what governs TF's own kernels.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # keep TF's info chatter out of the log

    import numpy as np
    import tensorflow as tf
    import keras

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    # Fixes Python, numpy and TF seeds: initial weights, dropout masks and the shuffle order.
    keras.utils.set_random_seed(args.seed)

    x_train, y_train = load(args.data_dir, "train")
    x_test, y_test = load(args.data_dir, "t10k")
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]

    layers = keras.layers
    model = keras.Sequential([
        keras.Input(shape=(28, 28)),
        layers.Reshape((28, 28, 1)),  # channels-last (Keras's default data format)
        layers.Conv2D(32, (3, 3), padding="same", use_bias=False),
        layers.BatchNormalization(),  # momentum 0.99, epsilon 1e-3
        layers.ReLU(),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), padding="same", use_bias=False),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.MaxPooling2D((2, 2)),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(128),
        layers.ReLU(),
        layers.Dropout(0.5),
        layers.Dense(10),  # logits; the softmax is inside the loss
    ])
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),  # beta 0.9/0.999, epsilon 1e-7
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, numpy {np.__version__}; "
          f"intra-op threads {args.threads}, inter-op threads {args.inter_op_threads}; "
          f"epochs {args.epochs}, batch {args.batch_size}, training samples {len(x_train)}, "
          f"trainable parameters {trainable}", flush=True)

    # Per-epoch wall times inside fit; the first includes tracing the step into a graph.
    epoch_times = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.start
            epoch_times.append(seconds)
            logs = logs or {}
            print(f"Epoch {epoch + 1} seconds: {seconds:.2f} (training loss "
                  f"{logs.get('loss', float('nan')):.4f}, accuracy "
                  f"{logs.get('accuracy', float('nan')):.4f})", flush=True)

    # The timed region is model.fit + model.evaluate, the same span the C++ example times
    # (data loading and model construction excluded on both sides).
    busy_start, cpu_start = machine_busy_seconds(), time.process_time()
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, shuffle=True,
              verbose=args.verbose,
              callbacks=[EpochTimer(), keras.callbacks.LearningRateScheduler(lambda epoch, lr: 1e-3 * 0.9 ** epoch)])
    fit_end = time.perf_counter()
    _, test_accuracy = model.evaluate(x_test, y_test, batch_size=args.eval_batch_size, verbose=0)
    end = time.perf_counter()
    busy_end, cpu_end = machine_busy_seconds(), time.process_time()

    print_timed_region(start, fit_end, end, busy_start, busy_end, cpu_end - cpu_start, test_accuracy)
    print(f"Median epoch: {statistics.median(epoch_times):.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
