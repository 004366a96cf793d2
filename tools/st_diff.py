#!/usr/bin/env python3
"""Relative L2 difference between the same-named tensors of two safetensors
files (numpy only: F32/F16/BF16), for the multi-GPU checks:
  st_diff.py A.safetensors B.safetensors [--tol T]
Prints the difference; exits 1 when it is above --tol (or names differ)."""
import json
import struct
import sys

import numpy as np


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in head.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        raw = data[a:b]
        if t["dtype"] == "F32":
            x = np.frombuffer(raw, np.float32)
        elif t["dtype"] == "F16":
            x = np.frombuffer(raw, np.float16).astype(np.float32)
        elif t["dtype"] == "BF16":
            x = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            continue
        out[name] = x.astype(np.float64)
    return out


def main():
    tol = float(sys.argv[sys.argv.index("--tol") + 1]) if "--tol" in sys.argv else None
    a, b = load(sys.argv[1]), load(sys.argv[2])
    if set(a) != set(b):
        print(f"different tensors: {len(set(a) ^ set(b))} names differ")
        sys.exit(1)
    num = sum(float(((a[k] - b[k]) ** 2).sum()) for k in a)
    den = sum(float((a[k] ** 2).sum()) for k in a)
    rel = (num / den) ** 0.5 if den > 0 else num ** 0.5
    ok = tol is None or rel <= tol
    print(f"relative difference {rel:.3g}" + ("" if tol is None else f" (tolerance {tol:g}: {'ok' if ok else 'FAIL'})"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
