#!/usr/bin/env python3
"""Writes the LoRA test files in tests/data/lora/ (about 400 KB in all).

    python3 tools/make_lora_tests.py [outdir]

Needs torch and safetensors. The reference is the diffusers-format LoRA of
the tiny SD UNet, tests/data/tiny-sd-lora/pytorch_lora_weights.safetensors
(rank 4, no alpha: scale 1). It is rewritten in the other formats so that
each merges to exactly the same weights (tests/test_lora.c checks 1e-6):

  peft.safetensors            "unet.<m>.lora_A/B.weight", lora_adapter_metadata
                              {"unet.lora_alpha": 8, "unet.r": 4} -> scale 2, so
                              lora_B = up / 2; one module in alpha_pattern (alpha 4,
                              scale 1, lora_B = up)
  kohya_diffusers.safetensors "lora_unet_<m with _>.lora_down/up.weight" + alpha 2
                              (fp16, as sd-scripts stores it) -> scale 1/2, up · 2
  kohya_sgm.safetensors       the same modules by their SGM/CompVis names
                              ("lora_unet_input_blocks_4_1_..."), no alpha. The SGM
                              name of each diffusers parameter is found by value in
                              tests/data/single/tiny-sd.safetensors (the same
                              weights in fp16), not by a hand-written table.

Files checked against W + s·up·down computed by the C test:

  kohya_te_conv.safetensors   SD1 text encoder q_proj (lora_te_, alpha 8, r 4), a
                              LoCon conv on down_blocks.0.resnets.0.conv1, a linear
                              LoRA on the 1x1-conv proj_in, a conv on the up
                              sampler by its SGM name (output_blocks.2.2.conv)
  diffusers_old.safetensors   attention-processor keys ("processor.to_q_lora"),
                              lora_linear_layer and "to_out_lora" text-encoder keys,
                              an ".alpha" key, and a key without "unet."
  peft_raw/adapter_model.safetensors + adapter_config.json
                              raw PEFT ("base_model.model."), alpha 4, r 2 -> scale 2
  sdxl.safetensors            lora_te1_, lora_te2_ and an SGM UNet key of tiny-sdxl
  tucker.safetensors / tucker_ref.safetensors
                              a LyCORIS Tucker conv (lora_mid) and the same change
                              as a plain conv LoRA (down' = mid ∘ down); tucker_ref.pt
                              is that file written by torch.save
  unknown.safetensors         one good module, a kohya module that names nothing in
                              the model, and a key of no LoRA format

Error cases: err_missing_up (down without up), err_rank (ranks differ),
err_shape (a to_q LoRA of the wrong in-features), err_dora (dora_scale),
err_no_param (a diffusers key for a block the UNet lacks), err_twice (one
module under its kohya and its PEFT name).
"""
import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DATA = os.path.join(ROOT, "tests", "data")
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(DATA, "lora")

g = torch.Generator().manual_seed(1234)


def rand(*shape, std=0.1):
    return (torch.randn(*shape, generator=g) * std).float().contiguous()


def load(path):
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def save(name, sd, metadata=None):
    path = os.path.join(OUT, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, path, metadata=metadata or {"format": "pt"})


def reference_modules():
    """{diffusers module: (down, up)} of the reference LoRA."""
    sd = load(os.path.join(DATA, "tiny-sd-lora", "pytorch_lora_weights.safetensors"))
    mods = {}
    for k, v in sd.items():
        assert k.startswith("unet.") and (k.endswith(".lora.down.weight") or k.endswith(".lora.up.weight")), k
        if k.endswith(".lora.down.weight"):
            m = k[len("unet."):-len(".lora.down.weight")]
            mods[m] = (v, sd[k.replace(".lora.down.", ".lora.up.")])
    return mods


def sgm_names():
    """diffusers UNet parameter -> SGM name, by matching values with the single file."""
    unet = load(os.path.join(DATA, "tiny-sd", "unet", "diffusion_pytorch_model.safetensors"))
    single = load(os.path.join(DATA, "single", "tiny-sd.safetensors"))
    pre = "model.diffusion_model."
    cands = {k[len(pre):]: v for k, v in single.items() if k.startswith(pre)}
    out = {}
    for name, w in unet.items():
        hits = [k for k, v in cands.items() if v.shape == w.shape and torch.equal(v, w.to(v.dtype))]
        if len(hits) == 1:
            out[name] = hits[0]
    return out


def main():
    mods = reference_modules()
    kohya = lambda m: m.replace(".", "_")

    # PEFT: alpha 8 / r 4 = scale 2, one module back to alpha 4 by alpha_pattern
    special = "mid_block.attentions.0.transformer_blocks.0.attn1.to_q"
    peft = {}
    for m, (down, up) in mods.items():
        peft[f"unet.{m}.lora_A.weight"] = down
        peft[f"unet.{m}.lora_B.weight"] = up if m == special else up / 2
    meta = {"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern": {special: 4}, "unet.rank_pattern": {},
            "unet.use_rslora": False, "unet.target_modules": ["to_q", "to_k", "to_v", "to_out.0"]}
    save("peft.safetensors", peft, {"format": "pt", "lora_adapter_metadata": json.dumps(meta, indent=2, sort_keys=True)})

    # kohya, diffusers naming: alpha 2 / r 4 = scale 1/2, up doubled
    kd = {}
    for m, (down, up) in mods.items():
        kd[f"lora_unet_{kohya(m)}.lora_down.weight"] = down
        kd[f"lora_unet_{kohya(m)}.lora_up.weight"] = up * 2
        kd[f"lora_unet_{kohya(m)}.alpha"] = torch.tensor(2.0, dtype=torch.float16)
    save("kohya_diffusers.safetensors", kd)

    # kohya, SGM naming
    sgm = sgm_names()
    ks = {}
    for m, (down, up) in mods.items():
        s = sgm[m + ".weight"][: -len(".weight")]
        ks[f"lora_unet_{kohya(s)}.lora_down.weight"] = down
        ks[f"lora_unet_{kohya(s)}.lora_up.weight"] = up
    save("kohya_sgm.safetensors", ks)
    assert sgm["up_blocks.0.upsamplers.0.conv.weight"] == "output_blocks.2.2.conv.weight"

    # text encoder + conv LoRAs
    tc = {
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": rand(4, 32),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": rand(32, 4),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha": torch.tensor(8.0),
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": rand(4, 32, 3, 3),
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": rand(32, 4, 1, 1),
        "lora_unet_down_blocks_0_resnets_0_conv1.alpha": torch.tensor(4.0),
        "lora_unet_down_blocks_1_attentions_0_proj_in.lora_down.weight": rand(4, 64),
        "lora_unet_down_blocks_1_attentions_0_proj_in.lora_up.weight": rand(64, 4),
        "lora_unet_output_blocks_2_2_conv.lora_down.weight": rand(2, 64, 3, 3),
        "lora_unet_output_blocks_2_2_conv.lora_up.weight": rand(64, 2, 1, 1),
        "lora_unet_output_blocks_2_2_conv.alpha": torch.tensor(1.0, dtype=torch.bfloat16),
    }
    save("kohya_te_conv.safetensors", tc)

    # old diffusers formats
    a = "down_blocks.1.attentions.0.transformer_blocks.0"
    old = {
        f"unet.{a}.attn1.processor.to_q_lora.down.weight": rand(4, 64),
        f"unet.{a}.attn1.processor.to_q_lora.up.weight": rand(64, 4),
        f"unet.{a}.attn2.processor.to_out_lora.down.weight": rand(4, 64),
        f"unet.{a}.attn2.processor.to_out_lora.up.weight": rand(64, 4),
        f"unet.{a}.attn2.to_out.0.alpha": torch.tensor(2.0),
        "up_blocks.0.attentions.1.transformer_blocks.0.attn2.processor.to_k_lora.down.weight": rand(4, 32),
        "up_blocks.0.attentions.1.transformer_blocks.0.attn2.processor.to_k_lora.up.weight": rand(64, 4),
        "text_encoder.text_model.encoder.layers.1.self_attn.q_proj.lora_linear_layer.down.weight": rand(4, 32),
        "text_encoder.text_model.encoder.layers.1.self_attn.q_proj.lora_linear_layer.up.weight": rand(32, 4),
        "text_encoder.text_model.encoder.layers.2.self_attn.to_out_lora.down.weight": rand(4, 32),
        "text_encoder.text_model.encoder.layers.2.self_attn.to_out_lora.up.weight": rand(32, 4),
        "text_encoder.text_model.encoder.layers.2.mlp.fc1.lora_linear_layer.down.weight": rand(4, 32),
        "text_encoder.text_model.encoder.layers.2.mlp.fc1.lora_linear_layer.up.weight": rand(37, 4),
    }
    save("diffusers_old.safetensors", old)

    # raw PEFT with its adapter_config.json
    raw = {
        "base_model.model.mid_block.attentions.0.transformer_blocks.0.ff.net.2.lora_A.weight": rand(2, 256),
        "base_model.model.mid_block.attentions.0.transformer_blocks.0.ff.net.2.lora_B.weight": rand(64, 2),
    }
    save("peft_raw/adapter_model.safetensors", raw)
    with open(os.path.join(OUT, "peft_raw", "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["ff.net.2"], "use_rslora": False}, f,
                  indent=2)

    # SDXL: both text encoders and an SGM UNet name
    xl = {
        "lora_te1_text_model_encoder_layers_0_self_attn_k_proj.lora_down.weight": rand(2, 32),
        "lora_te1_text_model_encoder_layers_0_self_attn_k_proj.lora_up.weight": rand(32, 2),
        "lora_te2_text_model_encoder_layers_1_self_attn_v_proj.lora_down.weight": rand(2, 32),
        "lora_te2_text_model_encoder_layers_1_self_attn_v_proj.lora_up.weight": rand(32, 2),
        "lora_te2_text_model_encoder_layers_1_self_attn_v_proj.alpha": torch.tensor(1.0, dtype=torch.float16),
        "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q.lora_down.weight": rand(2, 64).half(),
        "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q.lora_up.weight": rand(64, 2).half(),
    }
    save("sdxl.safetensors", xl)

    # LyCORIS Tucker: ΔW[o,c,y,x] = Σ_ab up[o,a] mid[a,b,y,x] down[b,c]
    t = "lora_unet_down_blocks_0_resnets_1_conv2"
    down, mid, up = rand(4, 32, 1, 1), rand(4, 4, 3, 3), rand(32, 4, 1, 1)
    save("tucker.safetensors", {f"{t}.lora_down.weight": down, f"{t}.lora_mid.weight": mid, f"{t}.lora_up.weight": up,
                                f"{t}.alpha": torch.tensor(2.0)})
    flat = torch.einsum("abyx,bc->acyx", mid, down[:, :, 0, 0])
    ref = {f"{t}.lora_down.weight": flat, f"{t}.lora_up.weight": up, f"{t}.alpha": torch.tensor(2.0)}
    save("tucker_ref.safetensors", ref)
    torch.save(ref, os.path.join(OUT, "tucker_ref.pt"))  # the same as a PyTorch zip checkpoint

    # unknown keys: one that names nothing in the model, one of no format
    m0 = f"{a}.attn1.to_k"
    down, up = mods[m0]
    save("unknown.safetensors", {
        f"lora_unet_{kohya(m0)}.lora_down.weight": down,
        f"lora_unet_{kohya(m0)}.lora_up.weight": up,
        "lora_unet_down_blocks_7_attentions_0_to_q.lora_down.weight": rand(2, 64),
        "lora_unet_down_blocks_7_attentions_0_to_q.lora_up.weight": rand(64, 2),
        "lora_unet_down_blocks_7_attentions_0_to_q.alpha": torch.tensor(2.0),
        "model_ema.decay": torch.tensor(0.999),
    })

    # errors
    save("err_missing_up.safetensors", {f"lora_unet_{kohya(m0)}.lora_down.weight": rand(2, 64)})
    save("err_rank.safetensors", {f"lora_unet_{kohya(m0)}.lora_down.weight": rand(3, 64),
                                  f"lora_unet_{kohya(m0)}.lora_up.weight": rand(64, 2)})
    save("err_shape.safetensors", {f"lora_unet_{kohya(a)}_attn1_to_q.lora_down.weight": rand(2, 32),
                                   f"lora_unet_{kohya(a)}_attn1_to_q.lora_up.weight": rand(64, 2)})
    save("err_dora.safetensors", {f"lora_unet_{kohya(m0)}.lora_down.weight": rand(2, 64),
                                  f"lora_unet_{kohya(m0)}.lora_up.weight": rand(64, 2),
                                  f"lora_unet_{kohya(m0)}.dora_scale": rand(1, 64)})
    save("err_no_param.safetensors", {"unet.down_blocks.5.attentions.0.proj_in.lora_A.weight": rand(2, 64),
                                      "unet.down_blocks.5.attentions.0.proj_in.lora_B.weight": rand(64, 2)})
    save("err_twice.safetensors", {f"lora_unet_{kohya(m0)}.lora_down.weight": rand(2, 64),
                                   f"lora_unet_{kohya(m0)}.lora_up.weight": rand(64, 2),
                                   f"unet.{m0}.lora_A.weight": rand(2, 64), f"unet.{m0}.lora_B.weight": rand(64, 2)})


if __name__ == "__main__":
    main()
