#!/usr/bin/env python3
"""Checks a folder written by `sdc init` against diffusers / transformers:

1. the pipeline loads with from_pretrained and no warning (missing or
   unexpected keys, ignored config attributes, ...): every log record of
   level WARNING or above from diffusers/transformers and every Python
   warning is printed and counted;
2. each weighted component's tensors are distributed as a freshly
   constructed reference model's (Model(config), PyTorch/transformers
   default init): constants (norms, zeroed biases) must match exactly,
   random tensors must have the same kind (uniform: max|x|/std = √3; normal:
   larger) and the same std; PyTorch Linear/Conv2d parameters must lie in
   ±1/√fan_in.

    python3 tools/check_init.py DIR [--no-load] [--no-stats] [--components unet,vae]

Exit status 1 when anything differs."""
import argparse
import json
import logging
import math
import os
import sys
import warnings

import torch


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(f"{record.name}: {record.getMessage()}")


def load_pipeline(d):
    with open(os.path.join(d, "model_index.json")) as f:
        idx = json.load(f)
    import diffusers
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.set_verbosity_warning()
    tlog.set_verbosity_warning()
    h = Collect()
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).addHandler(h)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        # the weights' dtype, as sdc init wrote into the text encoder's config
        with open(os.path.join(d, "text_encoder", "config.json")) as f:
            dtype = json.load(f).get("dtype", "float32")
        pipe = getattr(diffusers, idx["_class_name"]).from_pretrained(d, dtype=getattr(torch, dtype))
    msgs = h.records + [f"{x.category.__name__}: {x.message}" for x in w]
    # about this machine's packages (no torchvision / accelerate), not the folder
    env = [m for m in msgs if "torchvision" in m or "accelerate" in m]
    return pipe, [m for m in msgs if m not in env], env


def stats(t):
    t = t.detach().double().flatten()
    return dict(n=t.numel(), mn=t.min().item(), mx=t.max().item(), mean=t.mean().item(),
                std=t.std().item() if t.numel() > 1 else 0.0)


def fan_in_bounds(model):
    """name -> 1/√fan_in for the parameters of nn.Linear / nn.Conv2d."""
    out = {}
    for mname, m in model.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            fan_in = m.weight[0].numel()
            for p in ("weight", "bias"):
                if getattr(m, p, None) is not None:
                    out[f"{mname}.{p}" if mname else p] = 1.0 / math.sqrt(fan_in)
    return out


def check_files(d, pipe):
    """Every tensor of every weight file is in the loaded model, unchanged."""
    from safetensors.torch import load_file

    bad = 0
    for comp in ("text_encoder", "text_encoder_2", "unet", "vae"):
        model = getattr(pipe, comp, None)
        if model is None:
            continue
        fname = "model.safetensors" if comp.startswith("text_encoder") else "diffusion_pytorch_model.safetensors"
        f = load_file(os.path.join(d, comp, fname))
        sd = model.state_dict()
        # transformers 5's CLIPTextModel has no "text_model." level (it maps the key on load)
        f = {k[len("text_model."):] if k not in sd and k.startswith("text_model.") else k: v for k, v in f.items()}
        n = 0
        for k, v in f.items():
            if k not in sd or sd[k].dtype != v.dtype or not torch.equal(sd[k], v):
                print(f"  {comp}.{k}: loaded model differs from the file")
                n += 1
        missing = [k for k in sd if k not in f and not k.endswith("position_ids")]
        for k in missing:
            print(f"  {comp}.{k}: not in the file")
        n += len(missing)
        print(f"{comp}: {len(f)} tensors in {fname}, {sum(p.numel() for p in model.parameters()):,} parameters, "
              + ("all loaded unchanged" if not n else f"{n} problems"))
        bad += n
        del f, sd
    return bad


def compare(comp, path, ref_model):
    """Each tensor of the file at path against the same parameter of ref_model."""
    from safetensors import safe_open

    bad = 0
    # PyTorch's default init holds in diffusers models; transformers re-initialises
    pytorch_default = type(ref_model).__module__.startswith("diffusers")
    bounds = fan_in_bounds(ref_model) if pytorch_default else {}
    ref = dict(ref_model.named_parameters())
    with safe_open(path, "pt") as f:
        keys = list(f.keys())
        for key in keys:
            name = key if key in ref else key[len("text_model."):]
            t = f.get_tensor(key)
            # 16-bit files: values rounded to 11 (fp16) or 8 (bf16) significant bits
            rel = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}.get(t.dtype, 1e-6)
            g, e = stats(t), stats(ref[name])
            n = g["n"]
            if e["mn"] == e["mx"]:
                if not (g["mn"] == g["mx"] == e["mn"]):
                    print(f"  {comp}.{name}: reference is constant {e['mn']}, sdc has [{g['mn']}, {g['mx']}]")
                    bad += 1
                continue
            if name in bounds:
                for who, s, r in (("sdc", g, rel), ("reference", e, 1e-6)):
                    b = bounds[name] * (1 + r)
                    if s["mn"] < -b or s["mx"] > b:
                        print(f"  {comp}.{name}: {who} values outside ±1/√fan_in = {bounds[name]:.5g}")
                        bad += 1
            # the std of a sample std is ~ std·sqrt((kurtosis−1)/(4n)) <= std/sqrt(2n)·1.3:
            # 6 of those plus 1%
            tol = 0.01 + 6 * math.sqrt(1.0 / n)
            if abs(g["std"] / e["std"] - 1) > tol:
                print(f"  {comp}.{name}: std {g['std']:.5g} vs reference {e['std']:.5g} (n={n})")
                bad += 1
            if n >= 1000:
                kind = lambda s: "uniform" if max(-s["mn"], s["mx"]) / s["std"] < 1.8 else "normal"
                if kind(g) != kind(e):
                    print(f"  {comp}.{name}: sdc looks {kind(g)}, the reference {kind(e)}")
                    bad += 1
    if len(keys) != len(ref):
        print(f"  {comp}: {len(keys)} tensors in the file, the reference has {len(ref)} parameters")
        bad += 1
    print(f"{comp}: {len(keys)} tensors compared with a fresh {type(ref_model).__name__}, {bad} differ")
    return bad


def reference(d, comp, library, cls_name):
    """A freshly constructed model of the component's class and config."""
    torch.manual_seed(0)
    if library == "diffusers":
        import diffusers

        cls = getattr(diffusers, cls_name)
        return cls.from_config(cls.load_config(os.path.join(d, comp)))
    import transformers

    cfg = transformers.CLIPTextConfig.from_pretrained(os.path.join(d, comp))
    return getattr(transformers, cls_name)(cfg).float()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--no-load", action="store_true", help="skip loading the pipeline")
    ap.add_argument("--no-stats", action="store_true")
    ap.add_argument("--components", default=None)
    a = ap.parse_args()
    bad = 0
    if not a.no_load:
        pipe, msgs, env = load_pipeline(a.dir)
        for m in msgs:
            print("WARNING:", m)
        print(f"loaded {type(pipe).__name__} from {a.dir}: {len(msgs)} warnings "
              f"(+{len(env)} about missing torchvision/accelerate)")
        bad = len(msgs) + check_files(a.dir, pipe)
        del pipe
    if not a.no_stats:
        with open(os.path.join(a.dir, "model_index.json")) as f:
            idx = json.load(f)
        names = a.components.split(",") if a.components else ["text_encoder", "text_encoder_2", "unet", "vae"]
        for comp in names:
            if comp not in idx:
                continue
            library, cls_name = idx[comp]
            fname = "model.safetensors" if library == "transformers" else "diffusion_pytorch_model.safetensors"
            ref = reference(a.dir, comp, library, cls_name)
            bad += compare(comp, os.path.join(a.dir, comp, fname), ref)
            del ref
    print("OK" if bad == 0 else f"{bad} problems")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
