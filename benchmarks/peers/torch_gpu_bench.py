#!/usr/bin/env python3
"""PyTorch eager peer of gpu_mlp (gpu-mlp in BENCHMARKS.md).

The same network, loss, optimizer, data and epochs as benchmarks/gpu_mlp.cu, in PyTorch's
ordinary GPU style: nn.Sequential of Linear/ReLU on the device, F.cross_entropy on logits,
torch.optim.SGD(lr=0.01), zero_grad(set_to_none=True). Batches wait in pinned host memory and are
sent with .to(device, non_blocking=True) each step, as a DataLoader with pin_memory feeds a
training loop, so both programs move the same bytes. TF32 is off, as in batchwise's `cuda`.
The device is synchronised before the clock is read.

    torch_gpu_bench.py --batch N [--reps R] [--samples S] [--device cuda|cpu]

--device cpu exists only to smoke-test the script where there is no GPU. Prints one JSON line.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

GPU_SAMPLES = 131072


def main():
    device = "cuda"
    if "--device" in sys.argv:
        i = sys.argv.index("--device")
        device = sys.argv[i + 1]
        del sys.argv[i:i + 2]
    # bench_common's parser, with this workload's defaults: one mode, 131072 samples.
    if "--samples" not in sys.argv:
        sys.argv += ["--samples", str(GPU_SAMPLES)]
    if "--mode" not in sys.argv:
        sys.argv += ["--mode", "mlp"]
    a = bc.parse_args(__doc__.split("\n\n")[0], ["mlp"])
    import torch
    import torch.nn.functional as F

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

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    rates, others = [], 0.0
    for rep in range(a.reps + 1):
        sync()
        with bc.Region() as r:
            for xb, yb in zip(xs, ys):
                xb = xb.to(dev, non_blocking=pin)
                yb = yb.to(dev, non_blocking=pin)
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(xb), yb)
                loss.backward()
                opt.step()
            last = loss.item()
            sync()
        if rep > 0:
            rates.append(a.samples / r.wall)
            others += r.others
    if last != last:
        print("torch_gpu_bench: the loss is not finite", file=sys.stderr)
        sys.exit(1)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    bc.print_result("gpu-mlp", "PyTorch eager", a.batch, "samples/s", rates, others / a.reps,
                    version=torch.__version__, device=name, tf32=False)


if __name__ == "__main__":
    main()
