#!/usr/bin/env python3
"""PyTorch peer of batchwise's Fashion-MNIST CNN example (the fashion-mnist-cnn benchmark).

The model, data, optimizer, batch size and epochs of keras_fashion_mnist_cnn.py, written the
ordinary PyTorch way (nn.Sequential, F.cross_entropy, torch.optim.Adam, an explicit loop), with
Keras's conventions reproduced so that the comparison is like for like:

    Conv2d(1, 32, 3, padding=1, bias=False) -> BatchNorm2d(32) -> ReLU -> MaxPool2d(2)
    -> Conv2d(32, 64, 3, padding=1, bias=False) -> BatchNorm2d(64) -> ReLU -> MaxPool2d(2)
    -> Dropout(0.25) -> Flatten -> Linear(3136, 128) -> ReLU -> Dropout(0.5) -> Linear(128, 10)

- glorot (xavier) uniform kernels and zero biases, as Keras initialises Conv2D and Dense
  (PyTorch's own default is kaiming uniform with a fan-in-scaled bias);
- BatchNorm2d(momentum=0.01, eps=1e-3): Keras's momentum 0.99 is the weight of the old moving
  average, PyTorch's momentum the weight of the new batch statistic;
- Adam(lr=1e-3 x 0.9^epoch, set at each epoch's start, betas (0.9, 0.999), eps=1e-7), Keras's
  epsilon;
- inputs scaled to [0, 1], mean softmax cross-entropy over the batch, batch 128 with the last
  partial batch kept (as model.fit does), a fresh shuffle every epoch, evaluation in batches of
  1000 with dropout off and the moving BN statistics (model.eval()).

The data are channels-last (N, 28, 28[, 1]) as Keras sees them; they are converted to PyTorch's
NCHW once, before the clock starts, not per step (with one channel the two layouts hold the same
bytes). Remaining differences, none of which should matter at this scale: Flatten takes the
feature map in (C, H, W) order instead of Keras's (H, W, C), a permutation of the Dense layer's
inputs that a symmetric random initialisation does not see; Keras's Adam adds epsilon to
sqrt(v) before the bias correction and PyTorch after it; PyTorch's BN moving variance uses the
unbiased batch variance (n / (n - 1), n = 128 * 28 * 28 samples per channel at the first BN);
PyTorch computes each step's training loss and accuracy (as Keras's compiled metrics do) without
reading them back until the epoch ends.

Prints a line per epoch ("Epoch 3 seconds: 41.20 ...") and ends with the same four lines as the
Keras peer, which the driver (benchmarks/fashion_mnist_cnn.sh) parses:

    Test accuracy: 0.XXXX
    Wall time: NN.NNs     (training loop + evaluation)
    Fit time: NN.NNs      (training loop alone)
    Median epoch: NN.NNs  (median of the per-epoch seconds, all epochs)

Interpreter: Debian's /usr/bin/python3, which has python3-torch (PyTorch 1.13, CPU). The first
python3 on PATH on this machine is pyenv's 3.11.7, which has TensorFlow (pip) but no torch; the
driver uses /usr/bin/python3 as benchmarks/run.sh does for torch_bench.py, so PyTorch is the
Debian build whose GEMMs go through the same OpenBLAS as batchwise (libblas.so.3 alternative,
openblas-pthread) and whose convolutions run on its bundled oneDNN (aten::mkldnn_convolution)
with ATen's OpenMP threads. Runs on any PyTorch >= 1.13 and numpy.

Threads: torch.set_num_threads(--threads) sizes ATen's OpenMP pool (convolutions, batch norm,
pooling, element-wise work), inter-op 1. OpenBLAS (only the two Linear layers' GEMMs) gets
--blas-threads, set before torch loads it; see that option's help.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The IDX reader and the machine-load probe of the Keras MLP peer; that module imports neither
# TensorFlow nor Keras at load time, only the standard library and numpy.
from keras_fashion_mnist import DATA_DIR, load, machine_busy_seconds, print_timed_region  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2,
                        help="torch.set_num_threads: ATen's intra-op (OpenMP) threads; the machine "
                             "has 2 cores")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="OPENBLAS_NUM_THREADS for the Linear layers' GEMMs (default: --threads, "
                             "the same count the other systems get). On 2 cores OpenBLAS's pthreads "
                             "and ATen's OpenMP threads can spin against each other; the MLP peers "
                             "measured that (benchmarks/README.md), so try 1 when in doubt")
    parser.add_argument("--eval-batch-size", type=int, default=1000,
                        help="test-set batch; 1000 as in the C++ example (no effect on accuracy)")
    parser.add_argument("--seed", type=int, default=1,
                        help="weights, dropout and shuffle seed; vary it to see the run-to-run spread")
    parser.add_argument("--limit", type=int, default=0,
                        help="train on the first N training samples only (0: all 60,000); for smoke tests")
    parser.add_argument("--data-dir", default=DATA_DIR)
    args = parser.parse_args()
    if args.blas_threads is None:
        args.blas_threads = args.threads
    if min(args.epochs, args.batch_size, args.threads, args.blas_threads) < 1 or args.limit < 0:
        parser.error("--epochs, --batch-size, --threads and --blas-threads must be positive, "
                     "--limit not negative")
    return args


def build_model(torch):
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False),  # Keras padding="same" at stride 1
        nn.BatchNorm2d(32, eps=1e-3, momentum=0.01),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False),
        nn.BatchNorm2d(64, eps=1e-3, momentum=0.01),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, 10),  # logits; the softmax is inside the loss
    )
    # Keras's initialisers: glorot_uniform kernels (for a conv, fan_in = in * kh * kw and
    # fan_out = out * kh * kw in both frameworks), zero biases. BN keeps gamma 1, beta 0.
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def main():
    args = parse_args()

    # OpenMP and OpenBLAS read their thread counts when they load, i.e. when torch (or numpy) is
    # imported; torch.set_num_threads below is what sizes ATen's pool.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["MKL_NUM_THREADS"] = str(args.threads)
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)

    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(args.seed)  # initial weights and dropout masks
    shuffle = torch.Generator().manual_seed(args.seed + 1)  # the order of every epoch

    x_train, y_train = load(args.data_dir, "train")
    x_test, y_test = load(args.data_dir, "t10k")
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]

    def nchw(images):
        """Channels-last (N, 28, 28) as Keras sees them -> (N, 1, 28, 28), contiguous, once."""
        nhwc = images.reshape(images.shape[0], 28, 28, 1)
        return torch.from_numpy(np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)))

    x_train, x_test = nchw(x_train), nchw(x_test)
    y_train = torch.from_numpy(y_train.astype(np.int64))
    y_test = torch.from_numpy(y_test.astype(np.int64))
    n = x_train.shape[0]

    model = build_model(torch)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)

    print(f"PyTorch {torch.__version__} (oneDNN {torch.backends.mkldnn.is_available()}), "
          f"numpy {np.__version__}, Python {sys.version.split()[0]} ({sys.executable}); "
          f"intra-op threads {torch.get_num_threads()}, inter-op threads 1, OpenBLAS threads "
          f"{args.blas_threads}; epochs {args.epochs}, batch {args.batch_size}, training samples "
          f"{n}, trainable parameters {sum(p.numel() for p in model.parameters())}", flush=True)

    epoch_times = []
    # The timed region is training + evaluation, as in the Keras peer (fit + evaluate) and the
    # C++ example; data loading and model construction are outside it.
    busy_start, cpu_start = machine_busy_seconds(), time.process_time()
    start = time.perf_counter()
    for epoch in range(args.epochs):
        epoch_start = time.perf_counter()
        for group in optimizer.param_groups:  # the example's decay: 1e-3 x 0.9^epoch
            group["lr"] = 1e-3 * 0.9 ** epoch
        model.train()
        order = torch.randperm(n, generator=shuffle)
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.int64)
        for first in range(0, n, args.batch_size):
            idx = order[first:first + args.batch_size]
            xb, yb = x_train.index_select(0, idx), y_train.index_select(0, idx)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # what Keras's compiled loss and accuracy metrics do per step
                loss_sum += loss.detach() * yb.shape[0]
                correct += (logits.argmax(1) == yb).sum()
        train_loss, train_acc = loss_sum.item() / n, correct.item() / n
        seconds = time.perf_counter() - epoch_start
        epoch_times.append(seconds)
        print(f"Epoch {epoch + 1} seconds: {seconds:.2f} (training loss {train_loss:.4f}, "
              f"accuracy {train_acc:.4f})", flush=True)
    fit_end = time.perf_counter()

    model.eval()
    hits = 0
    with torch.no_grad():
        for first in range(0, x_test.shape[0], args.eval_batch_size):
            logits = model(x_test[first:first + args.eval_batch_size])
            hits += (logits.argmax(1) == y_test[first:first + args.eval_batch_size]).sum().item()
    test_accuracy = hits / x_test.shape[0]
    end = time.perf_counter()
    busy_end, cpu_end = machine_busy_seconds(), time.process_time()

    print_timed_region(start, fit_end, end, busy_start, busy_end, cpu_end - cpu_start, test_accuracy)
    print(f"Median epoch: {statistics.median(epoch_times):.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
