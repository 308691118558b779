#!/usr/bin/env python3
"""dp-mlp report: benchmarks/dp_mlp.sh's JSON lines and its context into a Markdown report, also
printed.

    dp_mlp_report.py RESULTS.jsonl META.json OUT.md

Figures: each configuration's samples/s is the median over rounds of each process's median epoch
(min and max over every timed epoch of every round); the all-reduce's share of a step is
reductions().seconds over the timed epochs divided by the epoch's wall time, per rank, measured.
The scaling estimate applies the ring all-reduce cost model to the measured per-rank compute
(one rank's share of the step timed alone, dp_mlp --mode rank) under the stated network figures.
"""

import json
import statistics
import sys

BATCHES = (512, 2048)
CONFIGS = [  # (label in dp_mlp.sh, what it is)
    ("batchwise data_parallel 1x2", "batchwise data_parallel, 1 rank x 2 BLAS threads"),
    ("batchwise data_parallel 2x1", "batchwise data_parallel, 2 ranks x 1 thread"),
    ("batchwise plain 1x2", "batchwise plain model, 1 process x 2 BLAS threads"),
    ("batchwise plain 1x1", "batchwise plain model, 1 process x 1 thread"),
    ("PyTorch DDP gloo 1x2", "PyTorch DDP (gloo), 1 process, intra-op 1, 2 BLAS threads"),
    ("PyTorch DDP gloo 1x2 intra-op 2", "PyTorch DDP (gloo), 1 process, intra-op 2 (set_num_threads(2)), 2 BLAS threads"),
    ("PyTorch DDP gloo 2x1", "PyTorch DDP (gloo), 2 processes x 1 thread"),
    ("PyTorch plain 1x2", "PyTorch plain model, 1 process, intra-op 1, 2 BLAS threads"),
]
# Networks of a real cluster for the estimate: (name, bandwidth bytes/s, latency per ring step s).
# Line rates, so the estimate is a best case for the transfer; latencies typical of MPI over
# TCP on 10 GbE and over InfiniBand verbs.
NETWORKS = [
    ("10 GbE (1.25 GB/s, 30 us)", 1.25e9, 30e-6),
    ("100 Gb/s InfiniBand (12.5 GB/s, 2 us)", 12.5e9, 2e-6),
]


def fmt_rate(v):
    return f"{v / 1e3:,.1f}k"


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    meta = json.load(open(sys.argv[2]))
    md = []
    w = md.append

    w("# dp-mlp: data-parallel mlp-bench, batchwise data_parallel<> (MPI) against PyTorch DDP (gloo)\n")
    w(f"- date: {meta['date']}; command: {meta['command']} ({meta['duration']})")
    w(f"- machine: {meta['machine']}; {meta['blas']}")
    w(f"- {meta['mpi']}; {meta['torch']}")
    if meta.get("torch_note"):
        w(f"- **{meta['torch_note']}**")
    w(f"- {meta['compiler']}")
    w(f"- {meta['reps']}; every configuration alternately (batchwise, PyTorch, ...), rotated each round")
    w(f"- load average (1, 5, 15 min) before: {meta['load_before']}, after: {meta['load_after']}")
    w("- model: 784-256-256-10 MLP, ReLU, softmax cross-entropy from logits, plain SGD lr 0.01, "
      "16384 synthetic samples; every rank is given each global batch and trains its contiguous "
      "share (batchwise: `train_on_batch` on the global batch; PyTorch: each process's "
      "global/world rows, and DDP averages gradients over the processes, so both update with the "
      "global batch's mean gradient)\n")

    def pick(label, batch):
        return [r for r in rows if r.get("label") == label and r.get("batch") == batch]

    summary = {}
    for b in BATCHES:
        w(f"## Global batch {b}\n")
        w("| configuration | samples/s, median (min-max) | others (cores, max) | all-reduce share of "
          "the step, measured (per rank) | all-reduce us/step (per rank) | bare all-reduce of "
          "the same buffer, us |")
        w("|---|---|---|---|---|---|")
        for label, name in CONFIGS:
            rs = pick(label, b)
            if not rs:
                continue
            med = statistics.median(r["median"] for r in rs)
            lo = min(r["min"] for r in rs)
            hi = max(r["max"] for r in rs)
            others = max(r["others_cores"] for r in rs)
            s = {"median": med, "min": lo, "max": hi, "rows": rs}
            summary[(label, b)] = s
            share = reduce_us = bare = "-"
            if "reduce_share_ranks" in rs[0] and rs[0].get("reductions", 0):
                ranks = len(rs[0]["reduce_share_ranks"])
                sh = [statistics.median(r["reduce_share_ranks"][k] for r in rs) for k in range(ranks)]
                us = [statistics.median(r["reduce_us_ranks"][k] for r in rs) for k in range(ranks)]
                step = [statistics.median(r["step_us_ranks"][k] for r in rs) for k in range(ranks)]
                s.update(share=sh, reduce_us=us, step_us=step)
                share = " / ".join(f"{100 * v:.1f}%" for v in sh)
                reduce_us = " / ".join(f"{v:,.0f}" for v in us) + f" of a {statistics.median(step):,.0f} us step"
                if ranks > 1:
                    mpi = statistics.median(r["pure_mpi_allreduce_us"] for r in rs)
                    comm = statistics.median(r["pure_communicator_allreduce_us"] for r in rs)
                    s.update(bare_mpi=mpi, bare_comm=comm)
                    # Beyond the bare transfer, a rank inside the all-reduce waits for the other.
                    wait = " / ".join(f"{max(0.0, v - comm):,.0f}" for v in us)
                    bare = (f"{comm:,.0f} (mpi_communicator), {mpi:,.0f} (MPI_Allreduce); so waiting "
                            f"for the other rank: {wait}")
            elif rs[0].get("pure_gloo_allreduce_us"):
                g = statistics.median(r["pure_gloo_allreduce_us"] for r in rs)
                s.update(bare_gloo=g)
                if rs[0].get("ranks", 1) > 1:
                    bare = f"{g:,.0f} (gloo all_reduce); DDP overlaps it with the backward pass, not measured inside the step"
            w(f"| {name} | **{fmt_rate(med)}** ({fmt_rate(lo)}-{fmt_rate(hi)}) | {others:.2f} | {share} | "
              f"{reduce_us} | {bare} |")
        w("")

    w("## Ratios (medians)\n")
    w("| ratio | " + " | ".join(f"batch {b}" for b in BATCHES) + " |")
    w("|---|" + "---|" * len(BATCHES))
    ratio_rows = [
        ("batchwise: 2 ranks x 1 thread / 1 rank x 2 threads", "batchwise data_parallel 2x1", "batchwise data_parallel 1x2"),
        ("batchwise: 2 ranks x 1 thread / plain model x 1 thread", "batchwise data_parallel 2x1", "batchwise plain 1x1"),
        ("PyTorch DDP: 2 processes x 1 thread / 1 process (intra-op 1, 2 BLAS threads)", "PyTorch DDP gloo 2x1", "PyTorch DDP gloo 1x2"),
        ("PyTorch DDP: 2 processes x 1 thread / 1 process (intra-op 2)", "PyTorch DDP gloo 2x1", "PyTorch DDP gloo 1x2 intra-op 2"),
        ("batchwise / PyTorch DDP, 1 process, 2 threads (PyTorch's faster setting)", "batchwise data_parallel 1x2", "PyTorch DDP gloo 1x2"),
        ("batchwise / PyTorch DDP, 2 processes x 1 thread", "batchwise data_parallel 2x1", "PyTorch DDP gloo 2x1"),
        ("batchwise / PyTorch, plain models at 2 threads", "batchwise plain 1x2", "PyTorch plain 1x2"),
        ("batchwise data_parallel 1x2 / batchwise plain 1x2", "batchwise data_parallel 1x2", "batchwise plain 1x2"),
        ("batchwise data_parallel 2x1 / batchwise plain 1x2", "batchwise data_parallel 2x1", "batchwise plain 1x2"),
        ("PyTorch DDP 1x2 / PyTorch plain 1x2 (both intra-op 1)", "PyTorch DDP gloo 1x2", "PyTorch plain 1x2"),
    ]
    for name, a, c in ratio_rows:
        cells = []
        for b in BATCHES:
            if (a, b) in summary and (c, b) in summary:
                cells.append(f"{summary[(a, b)]['median'] / summary[(c, b)]['median']:.2f}x")
            else:
                cells.append("-")
        w(f"| {name} | " + " | ".join(cells) + " |")
    w("")

    # The bare all-reduce: latency and bandwidth at 2 ranks.
    # Each size's median over the rounds' sweeps (separate processes).
    by_size = {}
    for r in rows:
        if r.get("workload") == "dp-mlp allreduce":
            by_size.setdefault(r["floats"], []).append(r)
    sweep = []
    for n, rs in sorted(by_size.items()):
        mpi = statistics.median(r["mpi_allreduce_us"] for r in rs)
        comm = statistics.median(r["communicator_allreduce_us"] for r in rs)
        sweep.append({"floats": n, "bytes": rs[0]["bytes"], "mpi_allreduce_us": mpi,
                      "communicator_allreduce_us": comm, "mpi_GB_per_s": rs[0]["bytes"] / mpi / 1e3,
                      "comm_lo": min(r["communicator_allreduce_us"] for r in rs),
                      "comm_hi": max(r["communicator_allreduce_us"] for r in rs),
                      "mpi_lo": min(r["mpi_allreduce_us"] for r in rs),
                      "mpi_hi": max(r["mpi_allreduce_us"] for r in rs), "n": len(rs)})
    fit = {}
    if sweep:
        w("## The bare all-reduce at 2 ranks (same machine, shared memory)\n")
        w(f"Median over {sweep[0]['n']} processes (min-max); each the median of 5 loops after a warm-up loop.\n")
        w("| floats | bytes | MPI_Allreduce us | batchwise mpi_communicator us (MPI_Ibarrier polled, then MPI_Allreduce) | MPI_Allreduce GB/s |")
        w("|---|---|---|---|---|")
        for r in sweep:
            w(f"| {r['floats']:,} | {r['bytes']:,} | {r['mpi_allreduce_us']:,.1f} ({r['mpi_lo']:,.1f}-{r['mpi_hi']:,.1f}) | "
              f"{r['communicator_allreduce_us']:,.1f} ({r['comm_lo']:,.1f}-{r['comm_hi']:,.1f}) | {r['mpi_GB_per_s']:.2f} |")
        # The model's buffer was also timed alone after every 2-rank training run: all those
        # process pairs together give its cost, spread included.
        smallest = min(sweep, key=lambda r: r["floats"])
        model_floats = 269323
        samples = {"mpi_allreduce_us": [], "communicator_allreduce_us": []}
        for r in rows:
            if r.get("workload") == "dp-mlp allreduce" and r["floats"] == model_floats:
                samples["mpi_allreduce_us"].append(r["mpi_allreduce_us"])
                samples["communicator_allreduce_us"].append(r["communicator_allreduce_us"])
            elif r.get("system") == "batchwise data_parallel" and r.get("ranks", 1) == 2 and r.get("pure_mpi_allreduce_us"):
                samples["mpi_allreduce_us"].append(r["pure_mpi_allreduce_us"])
                samples["communicator_allreduce_us"].append(r["pure_communicator_allreduce_us"])
        nbytes = model_floats * 4
        for key, name in (("mpi_allreduce_us", "MPI_Allreduce"), ("communicator_allreduce_us", "mpi_communicator")):
            v = sorted(samples[key])
            if not v:
                continue
            # p = 2: T(n) = 2(p-1)/p n/B + 2(p-1) a = n/B + 2a
            a = smallest[key] / 2 * 1e-6
            t = statistics.median(v) * 1e-6
            bw = nbytes / max(t - 2 * a, 1e-12)
            fit[name] = (a, bw)
            slow = sum(x > 2 * v[0] for x in v)
            w(f"\n{name}, the model's buffer ({nbytes:,} bytes) alone in {len(v)} process pairs (after "
              f"each 2-rank training run and in each sweep): median {1e6 * t:,.0f} us, "
              f"{v[0]:,.0f}-{v[-1]:,.0f}; {slow} of {len(v)} pairs above twice the fastest (this VM "
              f"gives some process pairs a slower transfer for their whole life). Latency "
              f"a = {1e6 * a:.1f} us (half the {smallest['bytes']}-byte all-reduce), bandwidth "
              f"B = {bw / 1e9:.2f} GB/s (bytes / (T - 2a), medians).")
        w("")

    # One rank's compute, and the estimate.
    # One rank's compute per step: the median over rounds (separate processes).
    runs = {}
    for r in rows:
        if r.get("system") == "batchwise simulated rank":
            runs.setdefault((r["batch"], r["simulated_ranks"]), []).append(r)
    sim = {}
    for key, rs in runs.items():
        us = [r["step_us_ranks"][0] - r["reduce_us_ranks"][0] for r in rs]
        sim[key] = {"rows_per_rank": rs[0]["rows_per_rank"], "compute_us": statistics.median(us),
                    "lo": min(us), "hi": max(us), "n": len(us)}
    if sim:
        w("## One rank's share of a P-rank step, alone on 1 thread (no communication)\n")
        w("`dp_mlp --mode rank`: a communicator that reports rank 0 of P and sums nothing, so the step "
          "checks all G rows, trains G/P of them, copies the gradients into the reduction buffer and "
          "applies SGD, as each rank of a P-rank job does.\n")
        w("| global batch | P | rows per rank | compute us per step, median over processes (min-max) |")
        w("|---|---|---|---|")
        for (b, p), r in sorted(sim.items()):
            w(f"| {b} | {p} | {r['rows_per_rank']} | **{r['compute_us']:,.0f}** ({r['lo']:,.0f}-{r['hi']:,.0f}, "
              f"{r['n']} processes) |")
        w("")
        for b in BATCHES:
            real = summary.get(("batchwise data_parallel 2x1", b))
            if real and "step_us" in real and (b, 2) in sim:
                own = [s - u for s, u in zip(real["step_us"], real["reduce_us"])]
                w(f"- check at batch {b}: the real 2-rank run's ranks spent "
                  + " / ".join(f"{v:,.0f}" for v in own)
                  + f" us per step outside the all-reduce; the simulated rank of 2 alone: "
                  f"{sim[(b, 2)]['compute_us']:,.0f} us")
        fixed = [sim.get((b, p)) for b, p in ((128, 4), (512, 16), (2048, 64))]
        if all(fixed):
            per_row = (fixed[2]["compute_us"] - fixed[0]["compute_us"]) / (2048 - 128)
            w(f"- 32 rows per rank at global batch 128 / 512 / 2048: "
              + " / ".join(f"{f['compute_us']:,.0f}" for f in fixed)
              + f" us per step. Every rank checks the whole global batch it is given (`feed_shard` "
              f"validates all rows so that a bad sample stops every rank alike): {per_row:.2f} us per "
              f"row, {per_row * 2048:,.0f} us of each step at global batch 2048, whatever p is.")
        w("")

        nbytes = 269323 * 4
        w("## Expected scaling (on paper)\n")
        w(f"Ring all-reduce of {nbytes:,} bytes: T(p) = 2(p-1)/p x bytes / B + 2(p-1) x a, added to the "
          "measured per-rank compute C(G, p) (batchwise sums the gradients after the backward pass, "
          "no overlap). Speed-up against one rank on one thread, C(G, 1); above 1.0 efficiency at "
          "p = 2 comes from a rank's rows fitting the cache better and from the spread between "
          "processes (see the min-max above), not from the model.\n")
        w("| network | global batch | p | rows/rank | compute us | all-reduce us | step us | all-reduce share | samples/s | speed-up | efficiency |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        # Not this machine's shared memory: two processes on one host say nothing of the
        # latency of 2(p-1) ring steps between hosts.
        for net, bw, a in NETWORKS:
            for b in BATCHES:
                if (b, 1) not in sim:
                    continue
                c1 = sim[(b, 1)]["compute_us"]
                for p in (2, 8, 64):
                    if (b, p) not in sim:
                        continue
                    c = sim[(b, p)]["compute_us"]
                    ar = 1e6 * (2 * (p - 1) / p * nbytes / bw + 2 * (p - 1) * a)
                    step = c + ar
                    w(f"| {net} | {b} | {p} | {b // p} | {c:,.0f} | {ar:,.0f} | {step:,.0f} | {ar / step:.0%} | "
                      f"{fmt_rate(b / step * 1e6)} | {c1 / step:.2f}x | {c1 / step / p:.0%} |")
        w("")

    text = "\n".join(md) + "\n"
    open(sys.argv[3], "w").write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
