"""Shared by the Python peers (PyTorch, Keras): data, clock, statistics and the one-line JSON
result, the same as benchmarks/bench_common.hpp does for the C++ programs.

Imports nothing outside the standard library and numpy, so that both interpreters can use it
(Debian's /usr/bin/python3 for PyTorch, the pip interpreter for TensorFlow).
"""

import argparse
import json
import os
import resource
import statistics
import time

IN_FEATURES = 784
CLASSES = 10
DEFAULT_SAMPLES = 16384
DATA_SEED = 20261122


def parse_args(description, modes):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--mode", required=True, choices=modes)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=3, help="timed epochs after one warm-up epoch")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    p.add_argument("--steps", type=int, default=20000, help="tiny-step: steps per timed block")
    p.add_argument("--intra-threads", type=int, default=1)
    a = p.parse_args()
    if a.batch <= 0 or a.samples % a.batch:
        p.error(f"--samples ({a.samples}) must be a multiple of --batch ({a.batch})")
    return a


def make_dataset(samples=DEFAULT_SAMPLES, features=IN_FEATURES, classes=CLASSES):
    """Uniform [0, 1) float32 inputs and int64 labels 0..classes-1 from a fixed seed."""
    import numpy as np

    rng = np.random.default_rng(DATA_SEED)
    x = rng.random((samples, features), dtype=np.float32)
    y = rng.integers(0, classes, size=samples, dtype=np.int64)
    return x, y


def machine_busy_seconds():
    """CPU seconds all processes spent busy so far (/proc/stat), or 0 where unreadable."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Region:
    """A timed region: wall seconds (time.perf_counter, monotonic) and the cores other processes
    used meanwhile."""

    def __enter__(self):
        self.busy0 = machine_busy_seconds()
        self.self0 = process_cpu_seconds()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        others = (machine_busy_seconds() - self.busy0) - (process_cpu_seconds() - self.self0)
        self.others = max(0.0, others) / max(self.wall, 1e-9)
        return False


def print_result(workload, system, batch, unit, values, others, **extra):
    values = sorted(values)
    rec = {
        "workload": workload,
        "system": system,
        "batch": batch,
        "unit": unit,
        "median": statistics.median(values),
        "min": values[0],
        "max": values[-1],
        "reps": len(values),
        "others_cores": others,
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", ""),
        "coretype": os.environ.get("OPENBLAS_CORETYPE", ""),
    }
    rec.update(extra)
    print(json.dumps(rec), flush=True)
