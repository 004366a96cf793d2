#!/usr/bin/env python3
"""Replaces the tiny single-file checkpoints by recipes made of the folders' bytes.

    python3 tools/make_single_recipes.py [--check] [--remove] [NAME ...]

NAME is tiny-sd, tiny-sd2 or tiny-sdxl (default: all three). For each,
tests/data/single/NAME.safetensors (made by tools/make_single_files.py from
the diffusers folder tests/data/NAME) is read and
tests/data/single/NAME.recipe.json is written: for every tensor of the file,
in the file's order, its name, dtype, shape, CRC-32 and where its bytes come
from. Nearly every tensor of those files is a tensor of the folder under
another name, so the recipe is a few hundred kB where the file is MBs;
tests/single_recipe.c materializes the file at test time.

A tensor entry is one of (sources are [file index, tensor name], the file
index into "sources", paths relative to tests/data):

  {"from": [[f, t]]}                        the source's bytes as they are
                                            (any shape of the same element
                                            count: 1x1 convolution vs linear)
  {"from": [[f, t]], "rows": [0, 1024]}     rows [a, b) along dim 0 of the
                                            source (the truncated vocabulary)
  {"from": [[f, q], [f, k], [f, v]], "combine": "concat0"}
                                            the sources concatenated along
                                            dim 0 (OpenCLIP's fused in_proj)
  {"from": [[f, t]], "combine": "transpose"} a 2-D source transposed
                                            (OpenCLIP's text_projection [D, P]
                                            from a Linear weight [P, D])
  {"data": "<base64>"}                      inline bytes, for the tensors
                                            that match nothing (schedules,
                                            position ids, random extras)

A source of dtype F32 under a target of dtype F16 is rounded to the nearest
half (ties to even), as torch's .half() does (tiny-sd's folder is fp32, its
single file fp16); that is the only conversion. "crc32" is zlib's CRC-32 of
the target bytes, which the materializer checks, so a recipe can never give
a file other than the one it was made from.

The recipe is matched by comparing bytes, then VERIFIED: it is materialized
here, the same way the C helper does it, and the result must equal the
original file byte for byte (header included: the header is rebuilt in the
file's order, with safetensors' own formatting). --check re-materializes the
existing recipes and compares them with the originals where those exist
(otherwise only the CRCs are checked). --remove deletes the originals after a
successful run. --restore writes the originals back from the recipes (byte
for byte), for tools that read them (tools/make_lora_tests.py).

Making the test data from scratch: tools/make_single_files.py, then this
tool with --remove (tests/data/single keeps tiny-sd2.ckpt and the recipes).
"""

import argparse
import base64
import json
import os
import struct
import sys
import zlib

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
SINGLE = os.path.join(DATA, "single")
NAMES = ("tiny-sd", "tiny-sd2", "tiny-sdxl")
FORMAT = "sdc-single-file-recipe-1"

NP = {"F32": np.float32, "F16": np.float16, "BF16": None, "F64": np.float64, "I64": np.int64, "I32": np.int32,
      "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
SIZE = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
        "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


# ---- safetensors, raw ----------------------------------------------------------


def read_raw(path):
    """(header dict in file order, metadata or None, data bytes)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", None)
    return header, meta, data


def tensors(path):
    """name -> (dtype, shape, bytes), in file order."""
    header, _, data = read_raw(path)
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in header.items()}


def safetensors_bytes(entries, meta):
    """A file as the safetensors library writes it: the header in the given
    order (metadata first), no spaces, padded with spaces to a multiple of 8.
    entries: [(name, dtype, shape, bytes)]."""
    header, off = {}, 0
    if meta is not None:
        header["__metadata__"] = meta
    for name, dtype, shape, b in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(b)]}
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(e[3] for e in entries)


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def to_f16(b):
    return np.frombuffer(b, np.float32).astype(np.float16).tobytes()


# ---- matching ------------------------------------------------------------------


def folder_sources(name):
    """The folder's model files (paths relative to tests/data) and their tensors."""
    out = []
    folder = os.path.join(DATA, name)
    for comp in sorted(os.listdir(folder)):
        d = os.path.join(folder, comp)
        if not os.path.isdir(d) or os.path.islink(d):
            continue
        for f in sorted(os.listdir(d)):
            if f.endswith(".safetensors"):
                rel = os.path.relpath(os.path.join(d, f), DATA)
                out.append((rel, tensors(os.path.join(d, f))))
    return out


def build_index(sources):
    """bytes -> (file index, tensor), as stored and (F32 sources) as F16."""
    index = {}
    for fi, (_, ts) in enumerate(sources):
        for k, (dtype, shape, b) in ts.items():
            index.setdefault((dtype, b), (fi, k))
            if dtype == "F32":
                index.setdefault(("F16", to_f16(b)), (fi, k))
    return index


def match(name, dtype, shape, b, sources, index):
    """The recipe entry (without name/dtype/shape/crc) for one target tensor."""
    hit = index.get((dtype, b))
    if hit:
        return {"from": [list(hit)]}
    # concatenation of equal parts along dim 0 (fused q, k, v)
    if len(shape) >= 1 and shape[0] % 3 == 0 and len(b) % 3 == 0:
        third = len(b) // 3
        parts = [index.get((dtype, b[i * third:(i + 1) * third])) for i in range(3)]
        if all(parts):
            return {"from": [list(p) for p in parts], "combine": "concat0"}
    # a 2-D transpose
    if len(shape) == 2 and dtype in NP and NP[dtype] is not None:
        t = np.frombuffer(b, NP[dtype]).reshape(shape).T.copy().tobytes()
        hit = index.get((dtype, t))
        if hit:
            return {"from": [list(hit)], "combine": "transpose"}
    # the first rows of a larger source (the truncated vocabulary)
    if len(shape) >= 1:
        for fi, (_, ts) in enumerate(sources):
            for k, (sd, ss, sb) in ts.items():
                if len(ss) != len(shape) or ss[1:] != shape[1:] or ss[0] <= shape[0]:
                    continue
                row = numel(ss[1:]) * SIZE[sd]
                head = sb[:shape[0] * row]
                if sd == dtype and head == b or sd == "F32" and dtype == "F16" and to_f16(head) == b:
                    return {"from": [[fi, k]], "rows": [0, shape[0]]}
    return {"data": base64.b64encode(b).decode()}


# ---- materializing (the same rules as tests/single_recipe.c) --------------------


def materialize(recipe):
    """[(name, dtype, shape, bytes)] in the recipe's order; checks every CRC."""
    files = [tensors(os.path.join(DATA, rel)) for rel in recipe["sources"]]
    out = []
    for e in recipe["tensors"]:
        dtype, shape = e["dtype"], e["shape"]
        if "data" in e:
            b = base64.b64decode(e["data"])
        else:
            parts = []
            for fi, k in e["from"]:
                sd, ss, sb = files[fi][k]
                if "rows" in e:
                    a, z = e["rows"]
                    row = numel(ss[1:]) * SIZE[sd]
                    sb, ss = sb[a * row:z * row], [z - a] + ss[1:]
                if sd != dtype:
                    assert sd == "F32" and dtype == "F16", f"{e['name']}: {sd} -> {dtype}"
                    sb = to_f16(sb)
                parts.append((ss, sb))
            combine = e.get("combine", "plain")
            if combine == "transpose":
                (ss, sb), = parts
                b = np.frombuffer(sb, NP[dtype]).reshape(ss).T.copy().tobytes()
            else:
                assert combine in ("plain", "concat0") and (combine == "concat0" or len(parts) == 1), e["name"]
                b = b"".join(p[1] for p in parts)
        assert len(b) == numel(shape) * SIZE[dtype], f"{e['name']}: {len(b)} bytes for {dtype}{shape}"
        assert zlib.crc32(b) == int(e["crc32"], 16), f"{e['name']}: CRC-32 differs (sources changed?)"
        out.append((e["name"], dtype, shape, b))
    return out


# ---- main ----------------------------------------------------------------------


def dump(recipe):
    """One tensor per line, so a diff shows which tensor changed."""
    head = {k: v for k, v in recipe.items() if k != "tensors"}
    lines = [json.dumps(e, separators=(",", ":")) for e in recipe["tensors"]]
    text = json.dumps(head, indent=1)[:-2] + ',\n "tensors": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"
    assert json.loads(text) == recipe
    return text


def make(name):
    src = os.path.join(SINGLE, name + ".safetensors")
    with open(src, "rb") as f:
        original = f.read()
    header, meta, _ = read_raw(src)
    target = tensors(src)
    sources = folder_sources(name)
    index = build_index(sources)
    entries, kinds = [], {}
    for k, (dtype, shape, b) in target.items():
        e = {"name": k, "dtype": dtype, "shape": shape, "crc32": "%08x" % zlib.crc32(b)}
        e.update(match(k, dtype, shape, b, sources, index))
        kind = "inline" if "data" in e else e.get("combine", "rows" if "rows" in e else "plain")
        kinds[kind] = kinds.get(kind, 0) + 1
        entries.append(e)
    recipe = {"format": FORMAT,
              "made_by": "tools/make_single_recipes.py from single/%s.safetensors" % name,
              "original_bytes": len(original),
              "metadata": meta,
              "sources": [rel for rel, _ in sources],
              "tensors": entries}
    # verify: the recipe gives back the original file, byte for byte
    made = safetensors_bytes(materialize(recipe), meta)
    assert made == original, f"{name}: the materialized file differs from the original"
    out = os.path.join(SINGLE, name + ".recipe.json")
    with open(out, "w") as f:
        f.write(dump(recipe))
    print(f"{name}: {len(entries)} tensors ({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))}); "
          f"{os.path.getsize(out)} bytes for a {len(original)}-byte file, verified byte for byte")


def check(name):
    with open(os.path.join(SINGLE, name + ".recipe.json")) as f:
        recipe = json.load(f)
    assert recipe["format"] == FORMAT
    made = safetensors_bytes(materialize(recipe), recipe["metadata"])
    assert len(made) == recipe["original_bytes"], f"{name}: {len(made)} bytes, want {recipe['original_bytes']}"
    orig = os.path.join(SINGLE, name + ".safetensors")
    if os.path.exists(orig):
        with open(orig, "rb") as f:
            assert f.read() == made, f"{name}: the materialized file differs from {orig}"
        print(f"{name}: recipe gives back {orig} byte for byte")
    else:
        print(f"{name}: recipe materializes ({len(made)} bytes, every CRC-32 matches)")


def restore(name):
    with open(os.path.join(SINGLE, name + ".recipe.json")) as f:
        recipe = json.load(f)
    made = safetensors_bytes(materialize(recipe), recipe["metadata"])
    assert len(made) == recipe["original_bytes"]
    out = os.path.join(SINGLE, name + ".safetensors")
    with open(out, "wb") as f:
        f.write(made)
    print(f"wrote {out} ({len(made)} bytes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", default=list(NAMES))
    ap.add_argument("--check", action="store_true", help="only check the existing recipes")
    ap.add_argument("--remove", action="store_true", help="delete the original files afterwards")
    ap.add_argument("--restore", action="store_true", help="write the original files back from the recipes")
    args = ap.parse_args()
    for name in args.names:
        if name not in NAMES:
            sys.exit(f"unknown name {name!r} (one of {', '.join(NAMES)})")
        if args.restore:
            restore(name)
        elif args.check:
            check(name)
        else:
            make(name)
    if args.remove:
        for name in args.names:
            p = os.path.join(SINGLE, name + ".safetensors")
            if os.path.exists(p):
                os.remove(p)
                print(f"removed {p}")


if __name__ == "__main__":
    sys.exit(main())
