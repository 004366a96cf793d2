#!/usr/bin/env python3
"""Prints the config files of `sdc init`'s presets as diffusers / transformers
write them (every key of the class's signature, sorted, indent 2), for
pasting into src/models/presets.c; with --check DIR it instead compares a
folder written by `sdc init` with what this script produces.

    python3 tools/make_presets.py > /tmp/presets.txt
    python3 tools/make_presets.py --check /tmp/sd15 sd15

The values are those of the public model repositories
(runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-2-1,
stabilityai/stable-diffusion-xl-base-1.0) and of tests/data/tiny-sd; keys a
class no longer takes are left out (diffusers would warn about them), keys
a newer diffusers added get its defaults. The UNet/VAE are built on the
meta device, so nothing is allocated. The text encoders' "dtype" is left as
the placeholder @DTYPE@ that sdc init fills in."""
import json
import sys

import torch
from diffusers import AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig

SCHED = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
             steps_offset=1, timestep_spacing="leading")

UNET_SD = dict(block_out_channels=[320, 640, 1280, 1280],
               down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
               up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, layers_per_block=2)
VAE_SD = dict(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
              up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2, latent_channels=4)

CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
              projection_dim=768, hidden_act="quick_gelu")

PRESETS = {
    "sd15": dict(
        pipeline="StableDiffusionPipeline",
        scheduler=(PNDMScheduler, dict(SCHED, set_alpha_to_one=False, skip_prk_steps=True, prediction_type="epsilon")),
        unet=dict(UNET_SD, cross_attention_dim=768, attention_head_dim=8, sample_size=64),
        vae=dict(VAE_SD, sample_size=512),
        text_encoders=[("text_encoder", "CLIPTextModel", CLIP_L)],
        pads=["<|endoftext|>"],
    ),
    "sd21": dict(
        pipeline="StableDiffusionPipeline",
        scheduler=(DDIMScheduler, dict(SCHED, clip_sample=False, set_alpha_to_one=False,
                                       prediction_type="v_prediction")),
        unet=dict(UNET_SD, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], sample_size=96,
                  use_linear_projection=True, upcast_attention=True),
        vae=dict(VAE_SD, sample_size=768),
        text_encoders=[("text_encoder", "CLIPTextModel",
                        dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23,
                             projection_dim=512, hidden_act="gelu"))],
        pads=["!"],
    ),
    "sdxl": dict(
        pipeline="StableDiffusionXLPipeline",
        scheduler=(EulerDiscreteScheduler, dict(SCHED, interpolation_type="linear", use_karras_sigmas=False,
                                                prediction_type="epsilon")),
        unet=dict(block_out_channels=[320, 640, 1280],
                  down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                  up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], layers_per_block=2,
                  cross_attention_dim=2048, attention_head_dim=[5, 10, 20], transformer_layers_per_block=[1, 2, 10],
                  use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                  projection_class_embeddings_input_dim=2816, sample_size=128),
        vae=dict(VAE_SD, sample_size=1024, scaling_factor=0.13025, force_upcast=True),
        text_encoders=[("text_encoder", "CLIPTextModel", CLIP_L),
                       ("text_encoder_2", "CLIPTextModelWithProjection",
                        dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                             projection_dim=1280, hidden_act="gelu"))],
        pads=["<|endoftext|>", "!"],
    ),
    # tests/data/tiny-sd's values
    "tiny": dict(
        pipeline="StableDiffusionPipeline",
        scheduler=(PNDMScheduler, dict(SCHED, set_alpha_to_one=False, skip_prk_steps=True, prediction_type="epsilon")),
        unet=dict(block_out_channels=[32, 64], down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                  up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], layers_per_block=2, attention_head_dim=8,
                  cross_attention_dim=32, sample_size=32),
        vae=dict(block_out_channels=[32, 64], down_block_types=["DownEncoderBlock2D"] * 2,
                 up_block_types=["UpDecoderBlock2D"] * 2, layers_per_block=1, latent_channels=4, sample_size=64),
        text_encoders=[("text_encoder", "CLIPTextModel",
                        dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5,
                             projection_dim=32, hidden_act="quick_gelu", pad_token_id=49407))],
        pads=["<|endoftext|>"],
    ),
}


def dumps(d):
    return json.dumps(d, indent=2, sort_keys=True) + "\n"


def model_config(cls, cfg):
    with torch.device("meta"):
        m = cls(**cfg)
    return m.to_json_string()


def text_config(arch, cfg):
    c = CLIPTextConfig(architectures=[arch], dtype="float32", **cfg)
    return c.to_json_string().replace('"dtype": "float32"', '"dtype": "@DTYPE@"')


def tokenizer_files(pad):
    cfg = {"add_prefix_space": False, "bos_token": "<|startoftext|>", "do_lower_case": True,
           "eos_token": "<|endoftext|>", "errors": "replace", "model_max_length": 77, "pad_token": pad,
           "tokenizer_class": "CLIPTokenizer", "unk_token": "<|endoftext|>"}
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": pad,
               "unk_token": "<|endoftext|>"}
    return dumps(cfg), dumps(special)


def files(name):
    p = PRESETS[name]
    sched_cls, sched = p["scheduler"]
    out = {}
    idx = {"_class_name": p["pipeline"], "_diffusers_version": __import__("diffusers").__version__,
           "feature_extractor": [None, None], "image_encoder": [None, None],
           "scheduler": ["diffusers", sched_cls.__name__], "unet": ["diffusers", "UNet2DConditionModel"],
           "vae": ["diffusers", "AutoencoderKL"]}
    if p["pipeline"] == "StableDiffusionXLPipeline":
        idx["force_zeros_for_empty_prompt"] = True
    else:
        idx["requires_safety_checker"] = False
        idx["safety_checker"] = [None, None]
    for i, (comp, arch, cfg) in enumerate(p["text_encoders"]):
        idx[comp] = ["transformers", arch]
        idx["tokenizer" + comp[len("text_encoder"):]] = ["transformers", "CLIPTokenizer"]
        out[comp + "/config.json"] = text_config(arch, cfg)
        tc, sm = tokenizer_files(p["pads"][i])
        tok = "tokenizer" + comp[len("text_encoder"):]
        out[tok + "/tokenizer_config.json"] = tc
        out[tok + "/special_tokens_map.json"] = sm
    out["model_index.json"] = dumps(idx)
    out["scheduler/scheduler_config.json"] = sched_cls(**sched).to_json_string()
    out["unet/config.json"] = model_config(UNet2DConditionModel, p["unet"])
    out["vae/config.json"] = model_config(AutoencoderKL, p["vae"])
    return out


def c_literal(text):
    """One C string line per JSON line, a list's lines joined into one."""
    body, cur = [], ""
    for ln in text.split("\n")[:-1]:
        cur += ln.replace("\\", "\\\\").replace('"', '\\"') + "\\n"
        if ln.endswith("[") or (cur.count("[") > cur.count("]")):
            continue
        body.append('    "' + cur + '"')
        cur = ""
    return "\n".join(body)


def c_name(name, path):
    return "k_" + name + "_" + path.split("/")[0].replace(".json", "")


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "--check":
        d, name = sys.argv[2], sys.argv[3]
        bad = 0
        for path, text in files(name).items():
            got = open(f"{d}/{path}").read()
            want = json.loads(text.replace("@DTYPE@", json.loads(got).get("dtype", "")) if "@DTYPE@" in text else text)
            if json.loads(got) != want:
                print("DIFFERS:", path)
                bad = 1
        print("configs match" if not bad else "configs differ")
        sys.exit(bad)
    for name in PRESETS:
        for path, text in sorted(files(name).items()):
            if path.startswith("tokenizer"):
                continue  # written by presets.c from the pad token
            print(f"static const char {c_name(name, path)}[] = /* {path} */")
            print(c_literal(text) + ";")
            print()


if __name__ == "__main__":
    main()
