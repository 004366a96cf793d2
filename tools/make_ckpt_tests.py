#!/usr/bin/env python3
"""Writes the PyTorch-checkpoint test files in tests/data/ckpt/ (a few KB each).

    python3 tools/make_ckpt_tests.py [outdir]

Needs torch and safetensors. Each good checkpoint comes with
<name>_expected.safetensors, written by safetensors.torch.save_file from
contiguous copies of the same tensors, so the C test (tests/test_ckpt.c)
compares every tensor byte for byte.

The evil_*.pt files are malicious on purpose: each asks the unpickler to run
a command that creates /tmp/sdc_pwned_<name>. Nothing here loads them; the C
test checks sdc refuses them and that the marker never appears. Do not
torch.load them with weights_only=False.
"""
import os
import pickle
import subprocess
import sys
import types
import zipfile

import warnings

import numpy as np
import torch
from safetensors.torch import save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data", "ckpt")


def expected(sd, path):
    save_file({k: v.detach().contiguous().clone() for k, v in sd.items()}, path)


def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, torch.Tensor):
            out[name] = v
        elif isinstance(v, dict):
            out.update(flatten(v, name))
    return out


def dtypes_state_dict():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 4, generator=g)
    sd = {
        "f32": torch.randn(2, 3, generator=g),
        "f16": torch.randn(4, generator=g).half(),
        "bf16": torch.randn(2, 2, generator=g).bfloat16(),
        "f64": torch.randn(3, generator=g).double(),
        "i64": torch.tensor([1, -2, 3_000_000_000_000], dtype=torch.int64),
        "i32": torch.tensor([[7, -8], [9, 2**31 - 1]], dtype=torch.int32),
        "i16": torch.tensor([-300, 300], dtype=torch.int16),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 200, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        # dtypes without a legacy storage class: _rebuild_tensor_v3 + UntypedStorage
        "u16": torch.tensor([1, 65535], dtype=torch.uint16),
        "f8": torch.tensor([1.0, -2.0, 448.0]).to(torch.float8_e4m3fn),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 5),
        # two views of one storage (rows 0 and 1..2), a transposed view, a
        # column (offset + stride), a broadcast (stride 0) and a permutation
        "view_a": base[0],
        "view_b": base[1:],
        "transposed": base.t(),
        "column": base[:, 1],
        "expanded": torch.tensor([2.0]).expand(2, 3),
        "permuted": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4).permute(2, 0, 1),
        "nested": {"inner": {"w": torch.tensor([[1.0, 2.0]])}},
    }
    return sd


def save_archive(path, records, compress=zipfile.ZIP_STORED):
    """A zip in torch.save's layout: <archive>/data.pkl, version, byteorder, data/..."""
    arc = os.path.splitext(os.path.basename(path))[0]
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        for name, data in records:
            z.writestr(f"{arc}/{name}", data)


def rezip(src, dst, compress):
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", compression=compress) as zo:
        for info in zi.infolist():
            zo.writestr(info.filename, zi.read(info.filename))


class Reduce:
    """Pickles as fn(*args): what an attacker's object does."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def marker(name):
    return f"/tmp/sdc_pwned_{name}"


def evil_files():
    def torch_layout(path, pkl):
        save_archive(path, [("data.pkl", pkl), ("byteorder", b"little"), ("version", b"3\n")])

    # os.system spelled as an attacker would type it (pickle itself writes posix.system)
    cmd = f"touch {marker('os_system')}".encode()
    pkl = b"\x80\x02cos\nsystem\nq\x00X" + len(cmd).to_bytes(4, "little") + cmd + b"\x85R."
    torch_layout(os.path.join(OUT, "evil_os_system.pt"), pkl)
    # what pickle.dumps writes for os.system on Linux
    torch_layout(os.path.join(OUT, "evil_posix_system.pt"),
                 pickle.dumps(Reduce(os.system, (f"touch {marker('posix_system')}",)), protocol=2))
    # protocol 4: builtins.eval through STACK_GLOBAL, with FRAME and MEMOIZE
    torch_layout(os.path.join(OUT, "evil_eval.pt"),
                 pickle.dumps(Reduce(eval, (f"__import__('os').system('touch {marker('eval')}')",)), protocol=4))
    torch_layout(os.path.join(OUT, "evil_popen.pt"),
                 pickle.dumps(Reduce(subprocess.Popen, (["touch", marker("popen")],)), protocol=2,
                              fix_imports=False))  # else pickle writes commands.Popen
    # hidden inside an otherwise valid state dict, saved by torch itself
    sd = {"w": torch.ones(2), "meta": {"config": Reduce(os.system, (f"touch {marker('nested')}",))}}
    torch.save(sd, os.path.join(OUT, "evil_nested.pt"))


def lightning_callback_class():
    """A stand-in for pytorch_lightning's ModelCheckpoint: pickle names a
    class by __module__ and __qualname__ and checks the module really holds
    it, so a fake module in sys.modules is enough (no Lightning needed)."""
    modname = "pytorch_lightning.callbacks.model_checkpoint"
    cls = type("ModelCheckpoint", (), {"__module__": modname})
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", modname):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules[modname].ModelCheckpoint = cls
    return cls


def lightning_checkpoint(path):
    """What Lightning saves (sd-v1-4.ckpt has the same shape): callback states
    keyed by the callback class, numpy scalars, and protocol 2, where bytes
    pickle through _codecs.encode."""
    g = torch.Generator().manual_seed(2)
    inner = {
        "model.diffusion_model.out.2.weight": torch.randn(2, 3, generator=g),
        "model.diffusion_model.out.2.bias": torch.randn(2, generator=g).half(),
    }
    ck = {
        "state_dict": inner,
        "callbacks": {lightning_callback_class(): {"best_model_score": np.float64(0.5), "dirpath": "x"}},
        "global_step": 5,
        "blob": b"\x00\xffab",
    }
    torch.save(ck, path, pickle_protocol=2)
    return inner


def main():
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)

    sd = dtypes_state_dict()
    torch.save(sd, os.path.join(OUT, "dtypes.pt"))
    expected(flatten(sd), os.path.join(OUT, "dtypes_expected.safetensors"))
    # the same archive with every entry DEFLATE-compressed
    rezip(os.path.join(OUT, "dtypes.pt"), os.path.join(OUT, "deflate.pt"), zipfile.ZIP_DEFLATED)

    # CompVis / Lightning layout, with non-tensor leaves of every kind beside the state dict
    inner = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.randn(4, 2, 3, 3),
        "model.diffusion_model.input_blocks.0.0.bias": torch.randn(4),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(5).unsqueeze(0),
    }
    ck = {
        "state_dict": inner,
        "global_step": 5,
        "epoch": 1,
        "big_step": 2**40,
        "neg": -3,
        "lr": 0.5,
        # (no bytes: protocol 2 pickles them through _codecs.encode, a global sdc refuses)
        "hparams": {"name": "sd", "list": [1, 2, 3], "tuple": (1, "a"), "none": None, "flag": True},
    }
    torch.save(ck, os.path.join(OUT, "compvis.ckpt"))
    expected(inner, os.path.join(OUT, "compvis_expected.safetensors"))

    inner = lightning_checkpoint(os.path.join(OUT, "lightning.ckpt"))
    expected(inner, os.path.join(OUT, "lightning_expected.safetensors"))

    # nn.Parameter via _rebuild_parameter; buffers stay plain tensors; the
    # OrderedDict carries _metadata (a BUILD)
    torch.manual_seed(1)
    m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    psd = m.state_dict(keep_vars=True)
    torch.save(psd, os.path.join(OUT, "params.pt"))
    expected(dict(psd), os.path.join(OUT, "params_expected.safetensors"))

    # before PyTorch 1.6: a bare pickle stream, refused with a hint
    torch.save({"w": torch.ones(2)}, os.path.join(OUT, "legacy.pt"), _use_new_zipfile_serialization=False)

    # torch.jit.save: a module, not a state dict (refused with a hint)
    torch.jit.save(torch.jit.script(torch.nn.Linear(1, 1)), os.path.join(OUT, "torchscript.pt"))

    evil_files()
    total = 0
    for f in sorted(os.listdir(OUT)):
        n = os.path.getsize(os.path.join(OUT, f))
        total += n
        print(f"{n:7d}  {f}")
    print(f"{total:7d}  total")


if __name__ == "__main__":
    main()
