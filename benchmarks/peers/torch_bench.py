#!/usr/bin/env python3
"""PyTorch (Python) peer of mlp_bench and tiny_step.

The same network, loss, optimizer, data and clock as benchmarks/mlp_bench.cpp, in PyTorch's
ordinary style: nn.Sequential of Linear/ReLU, F.cross_entropy on logits, torch.optim.SGD(lr=0.01),
zero_grad(set_to_none=True), batches sliced before the clock starts. Runs on Debian's
python3-torch (1.13, CPU; GEMMs through the system BLAS = OpenBLAS), i.e. /usr/bin/python3.

    torch_bench.py --mode mlp --batch N [--intra-threads T] [--reps R]
    torch_bench.py --mode tiny [--intra-threads T] [--steps K] [--reps R]

--intra-threads sets torch.set_num_threads (ATen's OpenMP pool); OpenBLAS's own threads come from
OPENBLAS_NUM_THREADS. Prints one JSON line.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402


def main():
    a = bc.parse_args(__doc__.split("\n\n")[0], ["mlp", "tiny"])
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(a.intra_threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(42)
    system = f"PyTorch (intra-op {a.intra_threads})"

    if a.mode == "mlp":
        x, y = bc.make_dataset(a.samples)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        xs = [x[i:i + a.batch].contiguous() for i in range(0, a.samples, a.batch)]
        ys = [y[i:i + a.batch].contiguous() for i in range(0, a.samples, a.batch)]
        model = torch.nn.Sequential(
            torch.nn.Linear(784, 256), torch.nn.ReLU(),
            torch.nn.Linear(256, 256), torch.nn.ReLU(),
            torch.nn.Linear(256, 10))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        rates, others = [], 0.0
        for rep in range(a.reps + 1):
            with bc.Region() as r:
                for xb, yb in zip(xs, ys):
                    opt.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(model(xb), yb)
                    loss.backward()
                    opt.step()
                loss.item()
            if rep > 0:
                rates.append(a.samples / r.wall)
                others += r.others
        bc.print_result("mlp-bench", system, a.batch, "samples/s", rates, others / a.reps,
                        version=torch.__version__)
    else:
        pool = 256
        xs = list(torch.rand(pool, 1, 16).unbind(0))
        ys = list(torch.rand(pool, 1, 1).unbind(0))
        model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        us, others = [], 0.0
        for rep in range(a.reps + 1):
            with bc.Region() as r:
                for k in range(a.steps):
                    opt.zero_grad(set_to_none=True)
                    loss = F.mse_loss(model(xs[k % pool]), ys[k % pool])
                    loss.backward()
                    opt.step()
            if rep > 0:
                us.append(r.wall * 1e6 / a.steps)
                others += r.others
        bc.print_result("tiny-step", system, 1, "us/step", us, others / a.reps,
                        version=torch.__version__)


if __name__ == "__main__":
    main()
