#!/usr/bin/env python3
"""Keras peer of batchwise's Fashion-MNIST example (the fashion-mnist benchmark).

Trains the same model as examples/fashion_mnist with the same optimizer, batch size and epochs:
Flatten -> Dense(256, relu) -> Dropout(0.2) -> Dense(256, relu) -> Dropout(0.2) -> Dense(10),
softmax cross-entropy on logits, Adam(1e-3), batch 128, shuffled every epoch, 20 epochs, then
evaluates on the test set. Ends with three lines the driver (benchmarks/fashion_mnist.sh) parses:

    Test accuracy: 0.XXXX
    Wall time: NN.NNs     (model.fit + model.evaluate)
    Fit time: NN.NNs      (model.fit alone)

The data are read from Debian's dataset-fashion-mnist package, never downloaded, so both
systems see the same bytes.
"""

import argparse
import gzip
import os
import struct
import sys
import time

DATA_DIR = "/usr/share/datasets/fashion-mnist"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2,
                        help="intra-op threads (and OMP/OpenBLAS threads); the machine has 2 cores")
    parser.add_argument("--inter-op-threads", type=int, default=1,
                        help="1: in 5 paired 20-epoch runs on the 2-core machine it was as fast as "
                             "2 or faster (median epoch 1.05-1.61s vs 1.11-1.93s; partly noise). An "
                             "MLP step is a chain of dependent ops, so a second inter-op thread "
                             "mostly competes with the intra-op ones for the 2 cores")
    parser.add_argument("--eval-batch-size", type=int, default=1000,
                        help="test-set batch; 1000 as in the C++ example (no effect on accuracy)")
    parser.add_argument("--seed", type=int, default=1,
                        help="weights, dropout and shuffle seed; vary it to see the run-to-run spread")
    parser.add_argument("--data-dir", default=DATA_DIR)
    parser.add_argument("--verbose", type=int, default=2, help="model.fit verbosity (2: a line per epoch)")
    return parser.parse_args()


def read_idx(path):
    """An IDX file (gzip) as a numpy array: big-endian header, magic 0x0000 08 NDIM, uint8 data."""
    import numpy as np

    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(data_dir, split):
    images = read_idx(os.path.join(data_dir, f"{split}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, f"{split}-labels-idx1-ubyte.gz"))
    # Same scaling as the C++ example: bytes to [0, 1] floats.
    return images.astype("float32") / 255.0, labels.astype("int32")


def machine_busy_seconds():
    """CPU-seconds all processes on the machine have spent busy so far (Linux /proc/stat), or None.

    Compared with this process's own CPU time it tells whether something else ran during the
    timed region: on a 2-core machine a concurrent compile easily slows training by half.
    """
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user..steal; guest is in user


def print_timed_region(start, fit_end, end, busy_start, busy_end, own_cpu, test_accuracy):
    """The lines every Fashion-MNIST peer ends with, which the drivers parse: evaluate time, the
    CPU this process and everything else used over start..end, then test accuracy, wall time
    (fit + evaluate) and fit time."""
    print(f"Evaluate time: {end - fit_end:.2f}s")
    line = f"CPU during the timed region: this process {own_cpu / (end - start):.2f} cores"
    if busy_start is not None:
        # Rounding of the tick counters can make this slightly negative on an idle machine.
        other = max(0.0, (busy_end - busy_start) - own_cpu)
        line += f", everything else {other / (end - start):.2f} cores (should be ~0)"
    print(line)
    print(f"Test accuracy: {test_accuracy:.4f}")
    print(f"Wall time: {end - start:.2f}s")
    print(f"Fit time: {fit_end - start:.2f}s")


def main():
    args = parse_args()

    # Thread pools must be sized before TensorFlow (and any OpenMP/BLAS it loads) starts, so the
    # environment is set before the import. TF's own pools are set again through tf.config below,
    # which is what actually governs its kernels; the variables cover anything else it loads.
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

    # Keras defaults: glorot_uniform kernels, zero biases -- as the C++ example initialises.
    model = keras.Sequential([
        keras.Input(shape=(28, 28)),
        keras.layers.Flatten(),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(10),  # logits; the softmax is inside the loss
    ])
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),  # beta 0.9/0.999, epsilon 1e-7
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, numpy {np.__version__}; "
          f"intra-op threads {args.threads}, inter-op threads {args.inter_op_threads}; "
          f"epochs {args.epochs}, batch {args.batch_size}", flush=True)

    # Per-epoch wall times, so a slow first epoch (tracing the graph) shows up on its own.
    epoch_times = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.start)

    # The timed region is model.fit + model.evaluate, the same span the C++ example times
    # (data loading and model construction excluded on both sides).
    busy_start, cpu_start = machine_busy_seconds(), time.process_time()
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, shuffle=True,
              verbose=args.verbose, callbacks=[EpochTimer()])
    fit_end = time.perf_counter()
    _, test_accuracy = model.evaluate(x_test, y_test, batch_size=args.eval_batch_size, verbose=0)
    end = time.perf_counter()
    busy_end, cpu_end = machine_busy_seconds(), time.process_time()

    later = epoch_times[1:] or epoch_times
    print("Epoch times: " + " ".join(f"{t:.2f}" for t in epoch_times) + " s")
    print(f"Epoch time: first {epoch_times[0]:.2f}s, median of the rest "
          f"{float(np.median(later)):.2f}s")
    print_timed_region(start, fit_end, end, busy_start, busy_end, cpu_end - cpu_start, test_accuracy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
