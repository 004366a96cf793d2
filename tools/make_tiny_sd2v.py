#!/usr/bin/env python3
"""Makes tests/data/tiny-sd2v/: a tiny SD 2.x-style (v-prediction) model in
the diffusers folder layout, float16 weights like an SD 2 fp16 release,
random but seeded, plus its golden.safetensors (made by tools/make_goldens.py).

    python3 tools/make_tiny_sd2v.py [--seed 7] [--channels 32,64,64] [--no-golden]

What it writes (paths relative to the repository root):
  tests/data/tiny-sd2v/model_index.json          StableDiffusionPipeline
  tests/data/tiny-sd2v/unet/                     UNet2DConditionModel, 3 levels
      block_out_channels (32, 64, 64), down (CrossAttnDownBlock2D, CrossAttnDownBlock2D,
      DownBlock2D), up (UpBlock2D, CrossAttnUpBlock2D, CrossAttnUpBlock2D),
      layers_per_block 1, attention_head_dim [2, 4, 4] per block (SD 2 style: in
      diffusers this number is the head count), use_linear_projection,
      upcast_attention, cross_attention_dim 32, norm_num_groups 32, sample_size 16
  tests/data/tiny-sd2v/vae/                      AutoencoderKL, 3 levels (32, 64, 64),
      layers_per_block 1, latent_channels 4, sample_size 64, scaling_factor 0.18215;
      downsampling factor 2^(3-1) = 4, so 64x96 px <-> 16x24 latents
  tests/data/tiny-sd2v/scheduler/                DDIMScheduler, v_prediction, scaled_linear,
      timestep_spacing "leading", steps_offset 1, set_alpha_to_one false
  tests/data/tiny-sd2v/text_encoder -> ../tiny-sd2/text_encoder   (relative symlinks:
  tests/data/tiny-sd2v/tokenizer    -> ../tiny-sd2/tokenizer       gelu OpenCLIP-style
                                                                   CLIPTextModel, "!" padding)
  tests/data/tiny-sd2v/golden.safetensors        see below

Every parameter gets its own seeded values (diffusers' default init leaves
norms at 1/0, which would hide a swapped weight and bias): matrices and
kernels N(0, 1/fan_in), norm weights 1 + 0.1 N(0,1), biases 0.1 N(0,1).
The float16 rounding happens when saving; the goldens use those rounded
values (upcast to float64).

Golden (unless --no-golden), through tools/make_goldens.py: seed 7, samplers
ddim, ddim_eta, euler, euler_a, euler_karras, dpmpp_2m, dpmpp_2m_karras, pndm,
lms; guidance 7.5; negative prompt "" (prompt 1); 4 steps; pipeline 64x96 px
(height x width, non-square); unet/in/sample [2,4,8,12] with timesteps
(999, 1); vae/in/image [1,3,32,48]. No parameter gradients (--grads off).

Re-running rebuilds the same weight files bit for bit and the same golden
tensors (same seed, same diffusers; the safetensors writer may order the
golden's metadata differently).

Size: the UNet is 1.47 M parameters (2.97 MB in fp16) and the VAE 0.95 M
(1.93 MB), 4.9 MB together; --channels 32,32,32 would make 1.1 + 0.6 MB.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data")
DST = os.path.join(DATA, "tiny-sd2v")


def seeded_init(model, g):
    for name, p in model.named_parameters():
        n = torch.randn(p.shape, generator=g, dtype=torch.float32)
        with torch.no_grad():
            if p.dim() >= 2:
                p.copy_(n / (p[0].numel() ** 0.5))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * n)
            else:
                p.copy_(0.1 * n)


def build(seed, channels):
    import diffusers
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=channels,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=[2, 4, 4], use_linear_projection=True, upcast_attention=True,
        cross_attention_dim=32, norm_num_groups=32)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=channels, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4, norm_num_groups=32, sample_size=64, scaling_factor=0.18215)
    g = torch.Generator().manual_seed(seed)
    seeded_init(unet, g)
    seeded_init(vae, g)
    sched = DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction",
        timestep_spacing="leading")

    if os.path.lexists(DST):
        shutil.rmtree(DST)
    os.makedirs(DST)
    unet.to(torch.float16).save_pretrained(os.path.join(DST, "unet"))
    vae.to(torch.float16).save_pretrained(os.path.join(DST, "vae"))
    sched.save_pretrained(os.path.join(DST, "scheduler"))
    for comp in ("text_encoder", "tokenizer"):
        os.symlink(os.path.join("..", "tiny-sd2", comp), os.path.join(DST, comp))
    index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False,
        "safety_checker": [None, None], "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
    }
    with open(os.path.join(DST, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    for root, _, files in os.walk(DST):  # save_pretrained leaves some files 0600
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)


def check():
    """Loads the folder back through diffusers (symlinks included) and checks
    what matters about it."""
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(DST, safety_checker=None, requires_safety_checker=False)
    te = pipe.text_encoder.config
    assert te.hidden_act == "gelu" and te.hidden_size == 32, te
    assert pipe.tokenizer.pad_token == "!", pipe.tokenizer.pad_token
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.vae_scale_factor == 4, pipe.vae_scale_factor
    for comp in ("unet", "vae"):
        dt = {p.dtype for p in getattr(pipe, comp).parameters()}
        assert dt == {torch.float32}, dt  # loaded without torch_dtype: upcast from the fp16 file
    total = 0
    for root, dirs, files in os.walk(DST):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path) and name != "golden.safetensors":
                total += os.path.getsize(path)
    print(f"{DST}: loads through the symlinks; {total} bytes without the symlinked parts and the golden")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--channels", default="32,64,64", help="block_out_channels of the UNet and the VAE")
    ap.add_argument("--no-golden", action="store_true")
    args = ap.parse_args()
    channels = tuple(int(c) for c in args.channels.split(","))
    assert len(channels) == 3, "three levels"
    build(args.seed, channels)
    check()
    if args.no_golden:
        return
    cmd = [sys.executable, os.path.join(REPO, "tools", "make_goldens.py"), DST, os.path.join(DST, "golden.safetensors"),
           "--seed", str(args.seed), "--negative", "--height", "64", "--width", "96", "--steps", "4",
           "--guidance", "7.5",
           "--samplers", "ddim,ddim_eta,euler,euler_a,euler_karras,dpmpp_2m,dpmpp_2m_karras,pndm,lms",
           "--unet-shape", "2,4,8,12", "--unet-timesteps", "999,1", "--vae-shape", "1,3,32,48"]
    subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
