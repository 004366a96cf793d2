#!/usr/bin/env python3
"""Golden values for src/core/torch_rng.c: torch.randn / torch.rand (float32,
CPU generator) for a table of seeds and call sequences.

For each case (fn, kernel, seed, sizes) the calls are made one after another
on one torch.Generator("cpu").manual_seed(seed), and for call k we store
  "<fn>/<kernel>/<seed>/<n1,n2,..>/<k>/head"  float32, the first <= 256 values
  "<fn>/<kernel>/<seed>/<n1,n2,..>/<k>/stats" float64 [sum, sum of squares, crc32]
where sum and sum of squares are accumulated in order in float64 (each
square of a float32 is exact in float64, so a C loop gets the same bits) and
crc32 is zlib's over the little-endian float32 bytes of the whole output.

kernel "avx2" is torch's default CPU kernel on an AVX2 machine; "scalar" is
its generic kernel, forced with ATEN_CPU_CAPABILITY=default in a child
process. The test (tests/test_torch_rng.c) holds the same case table.

Usage: python3 tools/make_torch_rng_goldens.py [out=tests/data/torch_randn.safetensors]
"""
import json
import os
import subprocess
import sys
import zlib

import numpy as np

HEAD = 256
SEEDS = [0, 1, 42, 2**40 + 7]
SINGLE = [1, 3, 15, 16, 17, 31, 100, 1000, 4 * 64 * 64, 2 * 4 * 96 * 64]
SEQUENCES = [[7, 16, 4096], [3, 5, 17, 2], [3, 16, 5], [1, 1, 1]]


def cases():
    out = []
    for seed in SEEDS:
        for n in SINGLE:
            out.append(("randn", "avx2", seed, [n]))
    for seed in (0, 42):
        for seq in SEQUENCES:
            out.append(("randn", "avx2", seed, seq))
    for sizes in ([17], [100], [4 * 64 * 64], [7, 16, 4096]):
        out.append(("randn", "scalar", 42, sizes))
    for seed in (0, 42):
        for sizes in ([5], [1000], [3, 17]):
            out.append(("rand", "avx2", seed, sizes))
    return out


def run_cases(case_list):
    """Runs the cases in this process; returns {name: (dtype, shape, bytes)}."""
    import torch

    res = {}
    for fn, kernel, seed, sizes in case_list:
        g = torch.Generator("cpu").manual_seed(seed)
        f = torch.randn if fn == "randn" else torch.rand
        for k, n in enumerate(sizes):
            x = f(n, generator=g, dtype=torch.float32).numpy().astype("<f4")
            base = "%s/%s/%d/%s/%d" % (fn, kernel, seed, ",".join(map(str, sizes)), k)
            x64 = x.astype(np.float64)
            stats = np.array([np.cumsum(x64)[-1], np.cumsum(x64 * x64)[-1], zlib.crc32(x.tobytes())], dtype="<f8")
            res[base + "/head"] = ("F32", [min(n, HEAD)], x[:HEAD].tobytes().hex())
            res[base + "/stats"] = ("F64", [3], stats.tobytes().hex())
    return res


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        # run the given cases and print them as JSON (used for the scalar kernel)
        import torch

        assert torch.backends.cpu.get_cpu_capability() == "DEFAULT", torch.backends.cpu.get_cpu_capability()
        print(json.dumps(run_cases([tuple(c) for c in json.loads(sys.stdin.read())])))
        return
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/torch_randn.safetensors"
    import torch
    from safetensors.numpy import save_file

    if torch.backends.cpu.get_cpu_capability() != "AVX2":
        sys.exit("the avx2 goldens need torch's AVX2 kernel (this CPU gives %s)" % torch.backends.cpu.get_cpu_capability())
    # torch seeds MT19937 with the low 32 bits only: 2**40+7 must equal 7
    a = torch.randn(100, generator=torch.Generator("cpu").manual_seed(7))
    b = torch.randn(100, generator=torch.Generator("cpu").manual_seed(2**40 + 7))
    assert torch.equal(a, b)

    all_cases = cases()
    here = [c for c in all_cases if c[1] == "avx2"]
    scalar = [c for c in all_cases if c[1] == "scalar"]
    res = run_cases(here)
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    child = subprocess.run([sys.executable, __file__, "--child"], input=json.dumps(scalar), env=env,
                           capture_output=True, text=True, check=True)
    res.update(json.loads(child.stdout))

    tensors = {}
    for name, (dt, shape, hexdata) in res.items():
        arr = np.frombuffer(bytes.fromhex(hexdata), dtype="<f4" if dt == "F32" else "<f8").reshape(shape)
        tensors[name] = arr.copy()
    save_file(tensors, out, metadata={"torch": torch.__version__, "cases": str(len(all_cases))})
    print("wrote %s: %d cases, %d tensors, %d bytes" % (out, len(all_cases), len(tensors), os.path.getsize(out)))


if __name__ == "__main__":
    main()
