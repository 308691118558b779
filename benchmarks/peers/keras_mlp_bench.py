#!/usr/bin/env python3
"""TensorFlow/Keras peer of mlp_bench and tiny_step (pip tensorflow-cpu, Keras 3).

The same network (Dense 256 relu, Dense 256 relu, Dense 10 logits; glorot_uniform kernels, zero
biases), loss (SparseCategoricalCrossentropy from logits), optimizer (SGD lr 0.01, no momentum),
data and clock as benchmarks/mlp_bench.cpp, in the two ways Keras users train:

    --mode step      a custom training step under tf.function (GradientTape, apply_gradients),
                     called on batches converted to tensors before the clock starts
    --mode step-xla  the same step with tf.function(jit_compile=True) (XLA)
    --mode fit       model.fit(x, y, batch_size=N, shuffle=False) on numpy arrays; epochs are
                     timed by a callback (Keras 3 turns XLA off for fit on CPU-only machines)
    --mode tiny      tiny-step: 16 -> 16 -> 1, MSE, SGD, batch 1, the tf.function step

Threads: --intra-threads sets tf.config.threading intra-op (inter-op is 1: an MLP step is a
chain of dependent ops), and OMP/OpenBLAS/MKL threads in the environment before TF loads.
TensorFlow does its matrix products with its own kernels (Eigen and oneDNN), not OpenBLAS.
Prints one JSON line.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402


def main():
    a = bc.parse_args(__doc__.split("\n\n")[0], ["step", "step-xla", "fit", "tiny"])
    os.environ["OMP_NUM_THREADS"] = str(a.intra_threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    import keras

    tf.config.threading.set_intra_op_parallelism_threads(a.intra_threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(42)
    versions = {"version": f"TF {tf.__version__}, Keras {keras.__version__}"}
    system = {"step": "Keras tf.function step", "step-xla": "Keras tf.function step (XLA)",
              "fit": "Keras model.fit", "tiny": "Keras tf.function step"}[a.mode]

    if a.mode == "tiny":
        model = keras.Sequential([keras.Input(shape=(16,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(1)])
        loss_fn = keras.losses.MeanSquaredError()
        rng = np.random.default_rng(bc.DATA_SEED)
        pool = 256
        xs = [tf.constant(rng.random((1, 16), dtype=np.float32)) for _ in range(pool)]
        ys = [tf.constant(rng.random((1, 1), dtype=np.float32)) for _ in range(pool)]
    else:
        model = keras.Sequential([
            keras.Input(shape=(784,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10),
        ])
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        x, y = bc.make_dataset(a.samples)
    opt = keras.optimizers.SGD(learning_rate=0.01)

    if a.mode == "fit":
        model.compile(optimizer=opt, loss=loss_fn)
        times = []

        class EpochTimer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.region = bc.Region().__enter__()

            def on_epoch_end(self, epoch, logs=None):
                self.region.__exit__(None, None, None)
                times.append(self.region)

        model.fit(x, y, batch_size=a.batch, epochs=a.reps + 1, shuffle=False, verbose=0,
                  callbacks=[EpochTimer()])
        timed = times[1:]  # the first epoch is the warm-up (it traces the step)
        bc.print_result("mlp-bench", system, a.batch, "samples/s", [a.samples / r.wall for r in timed],
                        sum(r.others for r in timed) / len(timed), **versions)
        return 0

    @tf.function(jit_compile=(a.mode == "step-xla"))
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    if a.mode == "tiny":
        us, others = [], 0.0
        for rep in range(a.reps + 1):
            with bc.Region() as r:
                for k in range(a.steps):
                    loss = train_step(xs[k % pool], ys[k % pool])
                loss.numpy()
            if rep > 0:
                us.append(r.wall * 1e6 / a.steps)
                others += r.others
        bc.print_result("tiny-step", system, 1, "us/step", us, others / a.reps, **versions)
        return 0

    xs = [tf.constant(x[i:i + a.batch]) for i in range(0, a.samples, a.batch)]
    ys = [tf.constant(y[i:i + a.batch]) for i in range(0, a.samples, a.batch)]
    rates, others = [], 0.0
    for rep in range(a.reps + 1):
        with bc.Region() as r:
            for xb, yb in zip(xs, ys):
                loss = train_step(xb, yb)
            loss.numpy()  # waits for the last step
        if rep > 0:
            rates.append(a.samples / r.wall)
            others += r.others
    bc.print_result("mlp-bench", system, a.batch, "samples/s", rates, others / a.reps, **versions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
