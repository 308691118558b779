#!/usr/bin/env python3
"""Turns the JSON lines benchmarks/run.sh collected into benchmarks/results/mlp_bench.md (tables:
samples/s per system and batch size, ratios to the fastest peer and to the GEMM roofline,
tiny-step) and benchmarks/results/mlp_bench.png (log-log samples/s against batch size).

    report.py RESULTS.jsonl META.json OUT_DIR

META.json holds the run's context (machine, date, command, BLAS, versions, load averages).
"""

import json
import sys
from collections import defaultdict

BATCHES = [1, 8, 32, 128, 512, 2048]
ROOFLINE = "OpenBLAS roofline (8 GEMMs)"
OURS = ("batchwise static", "batchwise dynamic", "batchwise fit")


def is_peer(system):
    return not system.startswith("batchwise") and not system.startswith("OpenBLAS")


def fmt_rate(v):
    if v is None:
        return "-"
    if v >= 100e3:
        return f"{v / 1e3:.0f}k"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def fmt_ratio(v):
    return "-" if v is None else f"{v:.2f}x"


def order_key(system):
    if system.startswith("batchwise"):
        return (0, OURS.index(system) if system in OURS else 9, system)
    if system.startswith("OpenBLAS"):
        return (2, 0 if system == ROOFLINE else 1, system)
    return (1, 0, system)


def main():
    results_path, meta_path, out_dir = sys.argv[1:4]
    rows = [json.loads(line) for line in open(results_path) if line.strip().startswith("{")]
    meta = json.load(open(meta_path))

    # (threads, system, batch) -> record; threads is OPENBLAS_NUM_THREADS of the run.
    mlp = defaultdict(dict)
    tiny = {}
    memory = {}
    for r in rows:
        if r["workload"] in ("mlp-bench", "roofline"):
            mlp[r["blas_threads"]][(r["system"], r["batch"])] = r
        elif r["workload"] == "tiny-step":
            tiny[r["system"]] = r
        elif r["workload"] == "memory":
            memory[r["system"]] = r

    out = []
    out.append("# mlp-bench: batchwise against its peers and the OpenBLAS roofline\n")
    out.append("Written by `benchmarks/run.sh` (do not edit; re-run it). Workload, peers and method: "
               "BENCHMARKS.md. Training samples/s (forward, backward, SGD update) over whole epochs of "
               "16384 synthetic samples, the median of the repetitions after one warm-up epoch; "
               "batchwise and every peer run alternately, batch size by batch size, in one run.\n")
    out.append("| | |\n|---|---|")
    for k in ("date", "command", "machine", "blas", "threads", "processes", "load_before", "load_after",
              "duration", "compiler"):
        if k in meta:
            out.append(f"| {k.replace('_', ' ')} | {meta[k]} |")
    out.append("")
    if meta.get("peers"):
        out.append("Peers and the BLAS each one uses:\n")
        out.append("| peer | version | matrix products run in |\n|---|---|---|")
        for p in meta["peers"]:
            out.append(f"| {p['name']} | {p['version']} | {p['blas']} |")
        out.append("")

    for threads in sorted(mlp, key=lambda t: -int(t or 0)):
        table = mlp[threads]
        systems = sorted({s for s, _ in table}, key=order_key)
        out.append(f"## OPENBLAS_NUM_THREADS={threads}\n")
        worst = max((r.get("others_cores", 0.0) for r in table.values()), default=0.0)
        if worst > 0.1:
            busy = sum(r.get("others_cores", 0.0) > 0.1 for r in table.values())
            out.append(f"**Measured under contention:** other processes used up to {worst:.2f} cores "
                       f"during {busy} of the {len(table)} measurements below (`others` > 0.1). On a "
                       "2-core machine those figures are unreliable, multi-threaded ones most (BLAS "
                       "and OpenMP threads spin-wait against the foreign process). Re-run in a quiet "
                       "period.\n")
        out.append("Median samples/s (higher is better). `others` is the most CPU (in cores) that "
                   "other processes used during any one measurement of the row: above ~0.1 the "
                   "row was measured under contention.\n")
        out.append("| system | " + " | ".join(f"b={b}" for b in BATCHES) + " | others |")
        out.append("|---|" + "---|" * (len(BATCHES) + 1))
        for s in systems:
            cells = [fmt_rate(table[(s, b)]["median"]) if (s, b) in table else "-" for b in BATCHES]
            others = max((table[(s, b)].get("others_cores", 0.0) for b in BATCHES if (s, b) in table),
                         default=0.0)
            name = f"**{s}**" if s.startswith("batchwise") else s
            out.append(f"| {name} | " + " | ".join(cells) + f" | {others:.2f} |")
        out.append("")

        out.append("Spread (min-max over the repetitions, samples/s):\n")
        out.append("| system | " + " | ".join(f"b={b}" for b in BATCHES) + " |")
        out.append("|---|" + "---|" * len(BATCHES))
        for s in systems:
            cells = []
            for b in BATCHES:
                r = table.get((s, b))
                cells.append("-" if r is None else f"{fmt_rate(r['min'])}-{fmt_rate(r['max'])}")
            out.append(f"| {s} | " + " | ".join(cells) + " |")
        out.append("")

        def fastest_peer(b):
            best = None
            for s in systems:
                if is_peer(s) and (s, b) in table:
                    if best is None or table[(s, b)]["median"] > table[best]["median"]:
                        best = (s, b)
            return best

        out.append("Ratios (batchwise's median over the other's median):\n")
        out.append("| ratio | " + " | ".join(f"b={b}" for b in BATCHES) + " |")
        out.append("|---|" + "---|" * len(BATCHES))
        peers_row = []
        for b in BATCHES:
            fp = fastest_peer(b)
            peers_row.append("-" if fp is None else f"{fp[0]}")
        out.append("| fastest peer | " + " | ".join(peers_row) + " |")
        for ours in OURS:
            if not any((ours, b) in table for b in BATCHES):
                continue
            vs_peer, vs_roof = [], []
            for b in BATCHES:
                r = table.get((ours, b))
                fp = fastest_peer(b)
                roof = table.get((ROOFLINE, b))
                vs_peer.append(fmt_ratio(r["median"] / table[fp]["median"]) if r and fp else "-")
                vs_roof.append(fmt_ratio(r["median"] / roof["median"]) if r and roof else "-")
            out.append(f"| {ours} / fastest peer | " + " | ".join(vs_peer) + " |")
            out.append(f"| {ours} / roofline (8 GEMMs) | " + " | ".join(vs_roof) + " |")
        out.append("")

    if tiny:
        out.append("## tiny-step\n")
        out.append("16 -> 16 -> 1 MLP, ReLU, MSE, SGD, batch 1: microseconds per training step "
                   "(lower is better), median of the timed blocks; OPENBLAS_NUM_THREADS="
                   f"{next(iter(tiny.values()))['blas_threads']}.\n")
        out.append("| system | us/step | min | max | others |\n|---|---|---|---|---|")
        for s in sorted(tiny, key=lambda s: tiny[s]["median"]):
            r = tiny[s]
            name = f"**{s}**" if s.startswith("batchwise") else s
            out.append(f"| {name} | {r['median']:.3g} | {r['min']:.3g} | {r['max']:.3g} | "
                       f"{r.get('others_cores', 0.0):.2f} |")
        out.append("")

    if memory:
        batch = next(iter(memory.values()))["batch"]
        out.append("## memory\n")
        out.append(f"mlp-bench at batch {batch}: how far the peak resident memory (VmHWM) grew over "
                   "building the model and two epochs of training, after the batches were built and "
                   "OpenBLAS had run one GEMM of the first layer's shape (lower is better); each "
                   "system in its own process.\n")
        out.append("| system | peak RSS growth, MiB | library's estimate, MiB | notes |\n|---|---|---|---|")
        for s in sorted(memory, key=lambda s: memory[s]["median"]):
            r = memory[s]
            name = f"**{s}**" if s.startswith("batchwise") else s
            est = f"{r['estimate_mib']:.1f}" if "estimate_mib" in r else "-"
            notes = ""
            if "budget_mib" in r:
                notes = (f"budget {r['budget_mib']:.1f} MiB: trained in micro-batches of {r['micro_batch']}, "
                         f"weights within {r['max_weight_difference']:.2g} of the unsplit model's")
            out.append(f"| {name} | {r['median']:.1f} | {est} | {notes} |")
        out.append("")

    open(f"{out_dir}/mlp_bench.md", "w").write("\n".join(out))

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report.py: matplotlib is not installed; no plot written", file=sys.stderr)
        return 0
    configs = sorted(mlp, key=lambda t: -int(t or 0))
    all_systems = sorted({s for t in configs for s, _ in mlp[t]}, key=order_key)
    # Peers in blues, greens, purples, greys; batchwise alone in red, orange and brown.
    palette = ["#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#7f7f7f", "#bcbd22", "#e377c2",
               "#aec7e8", "#98df8a", "#c5b0d5", "#9edae5", "#c7c7c7"]
    peers = [s for s in all_systems if is_peer(s)]
    colors = {s: palette[i % len(palette)] for i, s in enumerate(peers)}
    colors.update({"batchwise static": "#d62728", "batchwise dynamic": "#ff7f0e", "batchwise fit": "#8c564b"})
    fig, axes = plt.subplots(1, len(configs), figsize=(6.5 * len(configs) + 3, 5.5), squeeze=False)
    for ax, threads in zip(axes[0], configs):
        table = mlp[threads]
        for s in all_systems:
            bs = [b for b in BATCHES if (s, b) in table]
            if not bs:
                continue
            ys = [table[(s, b)]["median"] for b in bs]
            if s.startswith("batchwise"):
                style = dict(marker="o", linewidth=2.4, color=colors.get(s))
            elif s.startswith("OpenBLAS"):
                style = dict(linestyle="--" if s == ROOFLINE else ("-." if "out,in" in s else ":"),
                             linewidth=1.4, color="black" if s == ROOFLINE else "grey")
            else:
                style = dict(marker=".", linewidth=1.2, color=colors.get(s))
            ax.plot(bs, ys, label=s, **style)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(BATCHES, [str(b) for b in BATCHES])
        ax.set_xlabel("batch size")
        ax.set_ylabel("training samples/s")
        ax.set_title(f"mlp-bench, OPENBLAS_NUM_THREADS={threads}")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.suptitle(f"{meta.get('machine', '')} - {meta.get('date', '')}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1 - 2.9 / (6.5 * len(configs) + 3), 1))
    fig.savefig(f"{out_dir}/mlp_bench.png", dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
