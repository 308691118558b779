#!/usr/bin/python3
"""NumPy side of the .npz interop test, which the "npz: numpy interop" doctest case drives.

Usage: npz_numpy_interop.py TEST_BINARY   (what CTest runs)
  Runs that doctest case of TEST_BINARY, which writes an archive, calls this script back with a
  directory, and reads what NumPy wrote there.
Usage: npz_numpy_interop.py DIR           (the call back)
  Checks DIR/from_cpp.npz, written by batchwise::data::write_npz, bit for bit, then writes
  DIR/from_numpy.npz (np.savez) and DIR/from_numpy_compressed.npz (np.savez_compressed) with the
  arrays the C++ side expects. Exits non-zero, with a message, on any mismatch.
"""
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np


def expected_from_cpp():
    kernel = np.arange(12, dtype=np.float32) * np.float32(0.5) - np.float32(2.0)
    kernel[0] = -0.0
    kernel[1] = np.finfo(np.float32).smallest_subnormal
    kernel[2] = np.finfo(np.float32).max
    kernel[3] = np.inf
    kernel[4] = -np.inf
    kernel[5] = np.nan
    return {
        "layer0/kernel": kernel.reshape(3, 4),
        "layer0/bias": np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32),
        "step": np.array(42.0, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


def check_from_cpp(path):
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
        if bad is not None:
            sys.exit(f"{path}: CRC check failed for {bad}")
        methods = {info.filename: info.compress_type for info in archive.infolist()}
        if any(method != zipfile.ZIP_STORED for method in methods.values()):
            sys.exit(f"{path}: expected only stored entries, found {methods}")
    expected = expected_from_cpp()
    with np.load(path) as npz:
        if npz.files != list(expected):
            sys.exit(f"{path}: entries {npz.files}, expected {list(expected)}")
        for name, want in expected.items():
            got = npz[name]
            if got.dtype != np.float32 or got.shape != want.shape:
                sys.exit(f"{path}: {name} is {got.dtype}{got.shape}, expected float32{want.shape}")
            if not got.flags.c_contiguous or not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
                sys.exit(f"{path}: {name} values differ:\n{got}\nexpected\n{want}")


def arrays_for_cpp():
    return {
        "a/f32": np.arange(6, dtype=np.float32).reshape(2, 3) / np.float32(7),
        "b/f64": np.array([1 / 3, 1e300, -1e-300, 2.5], dtype=np.float64),
        "c/fortran": np.asfortranarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4)),
        "d/scalar": np.array(-1.5, dtype=np.float32),
        "e/big": (np.arange(100000) % 7).astype(np.float32),
    }


def run_test_binary(binary):
    environment = dict(os.environ, BATCHWISE_NPZ_INTEROP_SCRIPT=os.path.abspath(__file__),
                       BATCHWISE_PYTHON=sys.executable)
    result = subprocess.run([binary, "--test-case=npz: numpy interop", "--no-skip"], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(result.stdout, end="")
    # A filter that matches nothing also exits 0, so insist the case actually ran and passed.
    if result.returncode != 0 or not re.search(r"test cases:\s*1\s*\|\s*1 passed", result.stdout):
        sys.exit(f"{binary}: the 'npz: numpy interop' test case did not run and pass")


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} TEST_BINARY | DIR")
    if not os.path.isdir(sys.argv[1]):
        run_test_binary(sys.argv[1])
        return
    directory = Path(sys.argv[1])
    check_from_cpp(directory / "from_cpp.npz")
    arrays = arrays_for_cpp()
    assert arrays["c/fortran"].flags.f_contiguous and not arrays["c/fortran"].flags.c_contiguous
    np.savez(directory / "from_numpy.npz", **arrays)
    np.savez_compressed(directory / "from_numpy_compressed.npz", **arrays)


if __name__ == "__main__":
    main()
