#!/usr/bin/env python3
"""PyTorch DistributedDataParallel peer of dp_mlp (dp-mlp in BENCHMARKS.md), on the CPU with gloo.

The model, loss, optimizer and data of torch_bench.py (nn.Sequential of Linear/ReLU,
F.cross_entropy on logits, torch.optim.SGD(lr=0.01), zero_grad(set_to_none=True)), wrapped in
DistributedDataParallel over the gloo backend. Every process builds the same dataset and the
same global batches of --batch rows, and trains the contiguous rows of its rank, as dp_mlp's
ranks do; DDP averages the gradients over the processes (sum / world size), and each process's
loss is the mean over its global/world rows, so the update is that of the global batch.

    torch_ddp_bench.py --mode ddp --world P --batch G [--intra-threads T] [--reps R]
    torch_ddp_bench.py --mode plain --batch G [--intra-threads T]    (no DDP, one process)

--world P starts P processes itself (torch.multiprocessing, spawn) on 127.0.0.1; rank 0 prints
one JSON line with the slowest rank's epoch time, and the time of gloo's all-reduce of the
model's gradient size alone in the same processes (DDP overlaps its all-reduce with the backward
pass, so its share of a step is not measured directly). OPENBLAS_NUM_THREADS is set by the
caller; torch.set_num_threads(--intra-threads). On 2 cores, intra-op 1 with 2 OpenBLAS threads is
PyTorch's faster 2-thread setting: with intra-op 2, ATen's OpenMP threads and OpenBLAS's spin
against each other.
"""

import argparse
import os
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", required=True, choices=["ddp", "plain"])
    p.add_argument("--world", type=int, default=1)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--reps", type=int, default=3, help="timed epochs after one warm-up epoch")
    p.add_argument("--samples", type=int, default=bc.DEFAULT_SAMPLES)
    p.add_argument("--intra-threads", type=int, default=1)
    a = p.parse_args()
    if a.batch <= 0 or a.samples % a.batch or a.batch % a.world:
        p.error("--samples must be a multiple of --batch, and --batch of --world")
    if a.mode == "plain" and a.world != 1:
        p.error("--mode plain runs one process")
    return a


def make_model(torch):
    return torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 10))


def worker(rank, a, port):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(a.intra_threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(42)
    ddp = a.mode == "ddp"
    dist = None
    if ddp:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=a.world)

    x, y = bc.make_dataset(a.samples)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    local = a.batch // a.world
    lo, hi = rank * local, (rank + 1) * local
    xs = [x[i + lo:i + hi].contiguous() for i in range(0, a.samples, a.batch)]
    ys = [y[i + lo:i + hi].contiguous() for i in range(0, a.samples, a.batch)]
    model = make_model(torch)
    gradient_floats = sum(p.numel() for p in model.parameters())
    if ddp:
        model = DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    walls, others = [], []
    last = None
    for rep in range(a.reps + 1):
        if ddp:
            dist.barrier()
        busy0, self0 = bc.machine_busy_seconds(), bc.process_cpu_seconds()
        t0 = time.perf_counter()
        for xb, yb in zip(xs, ys):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
        last = loss.item()
        wall = time.perf_counter() - t0
        busy = bc.machine_busy_seconds() - busy0
        mine = torch.tensor([wall, bc.process_cpu_seconds() - self0], dtype=torch.float64)
        if ddp:
            # the slowest rank's epoch, and all ranks' own CPU (the rest of the busy time is others')
            w = mine[:1].clone()
            s = mine[1:].clone()
            dist.all_reduce(w, op=dist.ReduceOp.MAX)
            dist.all_reduce(s, op=dist.ReduceOp.SUM)
            mine = torch.cat([w, s])
        if rep > 0:
            walls.append(float(mine[0]))
            others.append(max(0.0, busy - float(mine[1])) / max(float(mine[0]), 1e-9))

    pure_us = 0.0
    if ddp:
        buf = torch.ones(gradient_floats)
        calls = 200
        per = []
        for rnd in range(6):
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(calls):
                dist.all_reduce(buf)
            t = torch.tensor([(time.perf_counter() - t0) / calls], dtype=torch.float64)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            if rnd > 0:
                per.append(float(t[0]))
        pure_us = 1e6 * statistics.median(per)

    if rank == 0:
        steps = a.samples // a.batch
        threads = f"intra-op {a.intra_threads}, BLAS {os.environ.get('OPENBLAS_NUM_THREADS', '?')}"
        system = (f"PyTorch DDP gloo, {a.world} processes, {threads}" if ddp
                  else f"PyTorch plain, {threads}")
        bc.print_result("dp-mlp", system, a.batch, "samples/s", [a.samples / w for w in walls],
                        sum(others) / len(others), version=torch.__version__, ranks=a.world,
                        rows_per_rank=local, steps_per_epoch=steps, epoch_s=walls,
                        gradient_floats=gradient_floats, pure_gloo_allreduce_us=pure_us,
                        last_loss=last)
    if ddp:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    a = parse()
    if a.mode == "plain":
        worker(0, a, 0)
        return
    import torch.multiprocessing as mp

    mp.spawn(worker, args=(a, free_port()), nprocs=a.world, join=True)


if __name__ == "__main__":
    main()
