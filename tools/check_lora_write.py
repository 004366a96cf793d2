#!/usr/bin/env python3
"""Checks that the LoRA files sdc writes (io/lora_write.c) load in diffusers
and change the model as sdc merges them.

    mkdir -p /tmp/lwk && SDC_LORA_WRITE_KEEP=/tmp/lwk build/sdc_tests lora_write
    python tools/check_lora_write.py /tmp/lwk

For the diffusers-format file: pipe.load_lora_weights + fuse_lora, then every
targeted weight must equal W + (alpha/r)·up·down computed from the file's own
tensors and its lora_adapter_metadata (the rule sdc's reader applies, which
tests/test_lora_write.c checks against sdc's in-memory merge). For the kohya
files (diffusers' and SGM UNet names): diffusers' kohya conversion must give
the same fused weights as the diffusers-format file written from the same
adapters. Not run by `make test` (needs torch + diffusers)."""
import json
import os
import sys

import torch
from diffusers import StableDiffusionPipeline
from safetensors import safe_open

MODEL = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "tiny-sd")


def fused(lora_path):
    pipe = StableDiffusionPipeline.from_pretrained(MODEL, safety_checker=None, torch_dtype=torch.float32)
    base = {"unet": {k: v.clone() for k, v in pipe.unet.state_dict().items()},
            "text_encoder": {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()}}
    pipe.load_lora_weights(os.path.dirname(lora_path), weight_name=os.path.basename(lora_path))
    pipe.fuse_lora(lora_scale=1.0)
    pipe.unload_lora_weights()
    after = {"unet": pipe.unet.state_dict(), "text_encoder": pipe.text_encoder.state_dict()}
    return base, after


def expected_from_diffusers_file(path, base):
    """W + (alpha/r)·up·down for every module in the file, in float64."""
    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["lora_adapter_metadata"])
        keys = list(f.keys())
        exp = {c: {k: v.double().clone() for k, v in base[c].items()} for c in base}
        for k in keys:
            if not k.endswith(".down.weight"):
                continue
            comp, mod = k.split(".", 1)
            mod = mod[: -len(".lora.down.weight")] if comp == "unet" else mod[: -len(".lora_linear_layer.down.weight")]
            down = f.get_tensor(k).double()
            up = f.get_tensor(k.replace(".down.", ".up.")).double()
            r = down.shape[0]
            alpha = meta[f"{comp}.alpha_pattern"].get(mod, meta[f"{comp}.lora_alpha"])
            # transformers 5 names CLIP's modules without "text_model."
            name = mod + ".weight"
            if name not in exp[comp] and name.startswith("text_model."):
                name = name[len("text_model."):]
            w = exp[comp][name]
            d = (up.flatten(1) @ down.flatten(1)).reshape(w.shape)
            exp[comp][name] = w + alpha / r * d
    return exp


def worst(a, b):
    m, at = 0.0, None
    for c in a:
        for k in a[c]:
            e = (a[c][k].double() - b[c][k].double()).abs().max().item()
            if e > m:
                m, at = e, f"{c}.{k}"
    return m, at


def main(d):
    ok = True
    diff_after = {}
    for name in ["w_diffusers.safetensors", "w_diffusers16.safetensors"]:
        p = os.path.join(d, name)
        base, after = fused(p)
        exp = expected_from_diffusers_file(p, base)
        moved, _ = worst(exp, base)
        e, at = worst(after, exp)
        # fp32 fuse of a rank-r product: a few ulp of |W| < 4
        good = e < 1e-6 and moved > 1e-2
        ok &= good
        print(f"{name}: diffusers fused vs W + scale·up·down: max err {e:.3g} at {at} (update max {moved:.3g}) {'OK' if good else 'FAIL'}")
        diff_after[name] = after
    for name in ["w_kohya.safetensors", "w_kohya_sgm.safetensors"]:
        p = os.path.join(d, name)
        try:
            _, after = fused(p)
        except Exception as ex:  # report, keep checking the others
            ok = False
            print(f"{name}: diffusers could not load it: {type(ex).__name__}: {ex}")
            continue
        # the kohya files were written from the same adapters as w_diffusers (fp32; the SGM one in bf16)
        ref = diff_after["w_diffusers.safetensors"]
        e, at = worst(after, ref)
        tol = 1e-6 if "sgm" not in name else 5e-2  # bf16 A, B: relative 2^-8 of each
        good = e < tol
        ok &= good
        print(f"{name}: diffusers fused vs diffusers-format file: max err {e:.3g} at {at} {'OK' if good else 'FAIL'}")
    print("ALL OK" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/lwk"))
