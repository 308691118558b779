#!/usr/bin/env python3
"""PyTorch peers of gpu_mlp (gpu-mlp in BENCHMARKS.md): eager, or the whole step captured.

The same network, loss, optimizer, data and epochs as benchmarks/gpu_mlp.cu, in PyTorch's
ordinary GPU style: nn.Sequential of Linear/ReLU on the device, F.cross_entropy on logits,
torch.optim.SGD(lr=0.01), zero_grad(set_to_none=True). Batches wait in pinned host memory.
TF32 is off, as in batchwise's `cuda`. The device is synchronised before the clock is read.

Eager (the default) sends each batch with .to(device, non_blocking=True), as a DataLoader with
pin_memory feeds a training loop, so both programs move the same bytes.

--capture follows PyTorch's documented whole-network capture (notes/cuda.html,
"Whole-network capture"): static input and target tensors on the device, three warm-up steps
on real batches on a side stream, zero_grad(set_to_none=True), then forward, loss, backward and
optimizer.step() captured once with torch.cuda.graph. Each step copies its batch from pinned
memory into the static tensors (copy_(..., non_blocking=True)) and calls replay(). SGD keeps no
step count on the host, so unlike Adam it needs no capturable=True; its lr is baked into the
graph, which is what a constant lr wants.

    torch_gpu_bench.py --batch N [--reps R] [--samples S] [--device cuda|cpu] [--capture]

--device cpu exists only to smoke-test the eager script where there is no GPU; --capture needs
CUDA and exits with status 3 without it. Prints one JSON line.
"""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

GPU_SAMPLES = 131072
CAPTURE_WARMUP_STEPS = 3  # the count in PyTorch's whole-network capture example


def take_flag(name):
    if name not in sys.argv:
        return False
    sys.argv.remove(name)
    return True


def take_option(name, default):
    if name not in sys.argv:
        return default
    i = sys.argv.index(name)
    value = sys.argv[i + 1]
    del sys.argv[i:i + 2]
    return value


def eager_step(model, opt, dev, pin):
    import torch.nn.functional as F

    def step(xb, yb):
        xb = xb.to(dev, non_blocking=pin)
        yb = yb.to(dev, non_blocking=pin)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    return step


def captured_step(model, opt, dev, xs, ys):
    """Captures one whole training step; the returned step refills the static batch, replays."""
    import torch
    import torch.nn.functional as F

    static_x = torch.empty(xs[0].shape, dtype=xs[0].dtype, device=dev)
    static_y = torch.empty(ys[0].shape, dtype=ys[0].dtype, device=dev)
    # Warm-up runs eagerly on a side stream so that cuBLAS handles, workspaces and autograd's
    # buffers exist before capture and none of it lands on the legacy default stream; it trains
    # on real batches because optimizer.step() changes the weights.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(CAPTURE_WARMUP_STEPS):
            static_x.copy_(xs[i % len(xs)], non_blocking=True)
            static_y.copy_(ys[i % len(ys)], non_blocking=True)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(static_x), static_y).backward()
            opt.step()
    torch.cuda.current_stream().wait_stream(side)

    graph = torch.cuda.CUDAGraph()
    # Grads set to None so that the captured backward allocates them from the graph's private
    # pool; each replay then overwrites them in place, so no zero_grad between replays.
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = F.cross_entropy(model(static_x), static_y)
        static_loss.backward()
        opt.step()

    def step(xb, yb):
        static_x.copy_(xb, non_blocking=True)
        static_y.copy_(yb, non_blocking=True)
        graph.replay()
        return static_loss

    return step


def main():
    device = take_option("--device", "cuda")
    capture = take_flag("--capture")
    # bench_common's parser, with this workload's defaults: one mode, 131072 samples.
    if "--samples" not in sys.argv:
        sys.argv += ["--samples", str(GPU_SAMPLES)]
    if "--mode" not in sys.argv:
        sys.argv += ["--mode", "mlp"]
    a = bc.parse_args(__doc__.split("\n\n")[0], ["mlp"])
    if capture and device != "cuda":
        print(f"torch_gpu_bench: --capture needs --device cuda (CUDA graphs), not {device}",
              file=sys.stderr)
        sys.exit(3)
    # bc.parse_args has refused a --samples that is not a multiple of --batch (exit 2), which
    # --capture relies on: a graph replays one fixed shape, so a ragged last batch could not run.
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        print("torch_gpu_bench: torch sees no CUDA device", file=sys.stderr)
        sys.exit(3)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(42)
    dev = torch.device(device)
    pin = device == "cuda"

    x, y = bc.make_dataset(a.samples)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    xs = [x[i:i + a.batch].contiguous() for i in range(0, a.samples, a.batch)]
    ys = [y[i:i + a.batch].contiguous() for i in range(0, a.samples, a.batch)]
    if pin:
        xs = [t.pin_memory() for t in xs]
        ys = [t.pin_memory() for t in ys]
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 10)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    if capture:
        step = captured_step(model, opt, dev, xs, ys)
        system = "PyTorch captured (torch.cuda.graph)"
    else:
        step = eager_step(model, opt, dev, pin)
        system = "PyTorch eager"

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    rates, others = [], 0.0
    for rep in range(a.reps + 1):
        sync()
        with bc.Region() as r:
            for xb, yb in zip(xs, ys):
                loss = step(xb, yb)
            last = loss.item()
            sync()
        if rep > 0:
            rates.append(a.samples / r.wall)
            others += r.others
    if not math.isfinite(last):
        print("torch_gpu_bench: the loss is not finite", file=sys.stderr)
        sys.exit(1)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    bc.print_result("gpu-mlp", system, a.batch, "samples/s", rates, others / a.reps,
                    version=torch.__version__, device=name, tf32=False)


if __name__ == "__main__":
    main()
