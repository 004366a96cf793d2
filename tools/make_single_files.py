#!/usr/bin/env python3
"""Makes the single-file checkpoint test data from the tiny diffusers folders.

    python3 tools/make_single_files.py [--scripts DIR] [--remake-sd2]

Writes (paths relative to the repository root; sizes as made):
  tests/data/tiny-sd2/                    a tiny SD 2.x-style diffusers folder, fp16, full
                                          49408-token vocabulary, 6.0 MB (made once;
                                          --remake-sd2 rebuilds it, bit for bit, from its seed)
  tests/data/single/tiny-sd.safetensors   SD 1.x, CompVis layout, fp16, plus non-model keys (4.4 MB)
  tests/data/single/tiny-sd2.safetensors  SD 2.x, OpenCLIP text encoder with fused in_proj, fp16 (3.1 MB)
  tests/data/single/tiny-sd2.ckpt         the same as a CompVis .ckpt ({"state_dict", "global_step"}),
                                          the whole model (3.1 MB)
  (the UNet-only case is cut by tests/test_single_file.c from tiny-sd2.safetensors'
   model.diffusion_model.* keys at test time, so it is not shipped twice)
  tests/data/single/tiny-sdxl.safetensors SDXL, sgm layout (conditioner.embedders.0/1), fp16 (5.6 MB)

TRUNCATED VOCABULARY: in the single files every text encoder's token
embedding keeps only its first VOCAB (1024) rows, 64 KB instead of 3.2 MB
each (cond_stage_model.transformer.text_model.embeddings.token_embedding.weight,
cond_stage_model.model.token_embedding.weight,
conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight,
conditioner.embedders.1.model.token_embedding.weight). The cut is made here,
after diffusers' conversion and before the verification, which compares those
embeddings with the folder's first 1024 rows (every other tensor in full);
from_single_file is given the folder's configs with vocab_size 1024 for the
text encoders. A synthesised config for these files says vocab_size 1024;
tests/test_single_file.c checks that, and the 49408 derivation on a
full-vocabulary file it writes itself. These files are for the key mapping,
not for encoding prompts: the tokenizer's ids (49406, 49407, ...) lie beyond
their vocabulary. The folders keep the full vocabulary and stay usable end to end.

The key conversion is done by diffusers' own scripts,
scripts/convert_diffusers_to_original_stable_diffusion.py and
scripts/convert_diffusers_to_original_sdxl.py of the diffusers repository
(not part of the pip package: from a clone of the diffusers repository,
`git show HEAD:scripts/<name> > /tmp/diffusers-scripts/<name>`; --scripts
names the folder). Never copy them into this repository. Their block maps
are written out for the full-size models (4 or 3 levels, 2 resnets per
level); this tool rebuilds those module-level tables with the same formulas
for the tiny models' number of levels, resnets per level and attention
placement, then calls the scripts' own convert_* functions.

from_single_file cannot build the tiny SDXL's text_encoder_2 (it takes the
CLIP-L weights for any CLIP whose width equals embedder 0's, 32 here); that
encoder is verified by the converter check alone.

Every file is then VERIFIED by diffusers itself: the diffusers single-file
converters (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
convert_ldm_clip_checkpoint, convert_open_clip_checkpoint) must give back
exactly the folder's tensors (fp16-rounded; token embeddings: their first
VOCAB rows), key for key, and
from_single_file(..., config=<folder>, local_files_only=True) must build
pipelines whose state dicts equal the folder's. So the test files are proven
correct by diffusers, not by sdc.
"""

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
OUT = os.path.join(DATA, "single")

# The single files keep only the first VOCAB rows of every text encoder's
# token embedding: at 49408 x 32 the embedding is most of a tiny file. The
# folders keep the full vocabulary.
VOCAB = 1024
TOKEN_EMBEDDINGS = (
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",  # SD 1.x
    "cond_stage_model.model.token_embedding.weight",  # SD 2.x
    "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",  # SDXL CLIP-L
    "conditioner.embedders.1.model.token_embedding.weight",  # SDXL OpenCLIP bigG
)


def load_script(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- the scripts' block tables, for any number of levels -------------------


def unet_layer_map(cfg):
    """(original prefix, diffusers prefix) pairs, as the scripts' loops build
    them, for cfg's levels / layers_per_block / attention placement."""
    n = len(cfg["block_out_channels"])
    r = cfg["layers_per_block"]
    down_attn = [t.startswith("CrossAttn") for t in cfg["down_block_types"]]
    up_attn = [t.startswith("CrossAttn") for t in cfg["up_block_types"]]
    m = []
    for i in range(n):
        for j in range(r):
            m.append((f"input_blocks.{(r + 1) * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            if down_attn[i]:
                m.append((f"input_blocks.{(r + 1) * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}."))
        for j in range(r + 1):
            m.append((f"output_blocks.{(r + 1) * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            if up_attn[i]:
                m.append((f"output_blocks.{(r + 1) * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < n - 1:
            m.append((f"input_blocks.{(r + 1) * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
            # the upsampler follows the attention when the level has one
            m.append((f"output_blocks.{(r + 1) * i + r}.{2 if up_attn[i] else 1}.", f"up_blocks.{i}.upsamplers.0."))
    m.append(("middle_block.1.", "mid_block.attentions.0."))
    for j in range(2):
        m.append((f"middle_block.{2 * j}.", f"mid_block.resnets.{j}."))
    return m


def vae_map(cfg):
    n = len(cfg["block_out_channels"])
    r = cfg["layers_per_block"]
    m = [("nin_shortcut", "conv_shortcut"), ("norm_out", "conv_norm_out"), ("mid.attn_1.", "mid_block.attentions.0.")]
    for i in range(n):
        for j in range(r):
            m.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
        if i < n - 1:
            m.append((f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."))
            m.append((f"up.{n - 1 - i}.upsample.", f"up_blocks.{i}.upsamplers.0."))
        for j in range(r + 1):
            m.append((f"decoder.up.{n - 1 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}."))
    for i in range(2):
        m.append((f"mid.block_{i + 1}.", f"mid_block.resnets.{i}."))
    return m


def with_text_model(sd):
    # transformers >= 5.6 saves CLIPTextModel without "text_model."; the
    # original checkpoints (and the scripts' tables) have it
    return {(k if k.startswith("text_model.") or k.startswith("text_projection") else "text_model." + k): v
            for k, v in sd.items()}


def component(folder, name):
    d = os.path.join(folder, name)
    files = [f for f in os.listdir(d) if f.endswith(".safetensors")]
    assert len(files) == 1, d
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    return load_file(os.path.join(d, files[0])), cfg


def convert_folder(folder, sd_script, xl_script, family):
    unet, ucfg = component(folder, "unet")
    vae, vcfg = component(folder, "vae")
    te, _ = component(folder, "text_encoder")
    script = xl_script if family == "sdxl" else sd_script
    script.unet_conversion_map_layer = unet_layer_map(ucfg)
    script.vae_conversion_map = vae_map(vcfg)
    out = {"model.diffusion_model." + k: v for k, v in script.convert_unet_state_dict(unet).items()}
    out.update({"first_stage_model." + k: v for k, v in script.convert_vae_state_dict(vae).items()})
    te = with_text_model(te)
    if family == "sd1":
        out.update({"cond_stage_model.transformer." + k: v for k, v in sd_script.convert_text_enc_state_dict(te).items()})
    elif family == "sd2":
        # the fused in_proj layout of the SDXL script's OpenCLIP converter, under SD 2's prefix
        out.update({"cond_stage_model.model." + k: v for k, v in xl_script.convert_openclip_text_enc_state_dict(te).items()})
    else:
        te2, _ = component(folder, "text_encoder_2")
        out.update({"conditioner.embedders.0.transformer." + k: v
                    for k, v in xl_script.convert_openai_text_enc_state_dict(te).items()})
        te2 = xl_script.convert_openclip_text_enc_state_dict(with_text_model(te2))
        te2 = {"conditioner.embedders.1.model." + k: v for k, v in te2.items()}
        te2["conditioner.embedders.1.model.text_projection"] = te2.pop(
            "conditioner.embedders.1.model.text_projection.weight").T.contiguous()
        out.update(te2)
    # the scripts' --half
    return {k: v.half() for k, v in out.items()}


def truncate_vocab(sd):
    """The original-layout state dict sd with its token embeddings cut to the
    first VOCAB rows (copies: a view would keep the whole storage in a .ckpt)."""
    n = 0
    for k in TOKEN_EMBEDDINGS:
        if k in sd:
            assert sd[k].shape[0] > VOCAB, k
            sd[k] = sd[k][:VOCAB].clone()
            n += 1
    assert n, "no token embedding to truncate"
    return sd


def truncated_want(sd):
    """A folder's (diffusers-named) text encoder tensors as a truncated single
    file must give them back: the token embedding's first VOCAB rows."""
    return {k: v[:VOCAB] if k.endswith("embeddings.token_embedding.weight") else v for k, v in sd.items()}


# ---- tiny SD 2.x-style folder ----------------------------------------------


def make_tiny_sd2(dst):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(2)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        # SD 2's pattern: attention in the upper levels, none in the last one
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=[2, 4], use_linear_projection=True, upcast_attention=True)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        latent_channels=4, sample_size=64)
    te = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=77, hidden_act="gelu", projection_dim=32, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=0))
    # default inits leave zeros and ones (zero-initialised projections, unit
    # norms) that would hide a swapped tensor: give every parameter its own values
    g = torch.Generator().manual_seed(2)
    for model in (unet, vae, te):
        for name, p in model.named_parameters():
            with torch.no_grad():
                noise = torch.randn(p.shape, generator=g)
                if "norm" in name and name.endswith("weight"):
                    p.copy_(1 + 0.1 * noise)
                elif name.endswith("bias") or "norm" in name:
                    p.copy_(0.1 * noise)
                elif "embedding" in name:
                    p.copy_(0.02 * noise)
                else:
                    fan_in = max(1, p[0].numel())
                    p.copy_(noise / fan_in ** 0.5)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction",
                          timestep_spacing="leading")
    if os.path.exists(dst):
        shutil.rmtree(dst)
    os.makedirs(dst)
    # fp16 like the tiny-sdxl pack: the 49408x32 token embedding alone is 6 MB in fp32
    unet.to(torch.float16).save_pretrained(os.path.join(dst, "unet"))
    vae.to(torch.float16).save_pretrained(os.path.join(dst, "vae"))
    te.to(torch.float16).save_pretrained(os.path.join(dst, "text_encoder"))
    sched.save_pretrained(os.path.join(dst, "scheduler"))
    tok = os.path.join(dst, "tokenizer")
    os.makedirs(tok)
    for f in ("vocab.json", "merges.txt"):
        os.symlink(os.path.join("..", "..", "tiny-sd", "tokenizer", f), os.path.join(tok, f))
    with open(os.path.join(DATA, "tiny-sd", "tokenizer", "tokenizer_config.json")) as f:
        tc = json.load(f)
    tc["pad_token"] = "!"  # SD 2's tokenizer pads with "!" (id 0), not with <|endoftext|>
    with open(os.path.join(tok, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f, indent=2)
    with open(os.path.join(tok, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                   "pad_token": "!"}, f, indent=2)
    import diffusers
    index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False,
        "safety_checker": [None, None], "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
    }
    with open(os.path.join(dst, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)


# ---- verification by diffusers ---------------------------------------------


def expect_equal(got, want, what):
    """got: dict from the single file through diffusers; want: the folder's
    tensors rounded to fp16 as the file stores them."""
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    assert not missing and not extra, f"{what}: missing {missing[:5]} extra {extra[:5]}"
    for k in want:
        a, b = got[k], want[k].half()
        assert tuple(a.shape) == tuple(b.shape), f"{what}: {k}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
        assert torch.equal(a.half(), b), f"{what}: {k}: values differ"
    print(f"  verified {what}: {len(want)} tensors")


def verify(path, folder, family):
    from diffusers.loaders import single_file_utils as su
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if path.endswith(".ckpt"):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    else:
        ckpt = load_file(path)
    unet, ucfg = component(folder, "unet")
    expect_equal(su.convert_ldm_unet_checkpoint(ckpt, ucfg), unet, f"{os.path.basename(path)} unet")
    if not any(k.startswith("first_stage_model.") for k in ckpt):
        return  # UNet-only file
    vae, vcfg = component(folder, "vae")
    expect_equal(su.convert_ldm_vae_checkpoint(ckpt, vcfg), vae, f"{os.path.basename(path)} vae")
    te, _ = component(folder, "text_encoder")
    te = truncated_want(with_text_model(te))
    if family == "sd2":
        model = CLIPTextModel(CLIPTextConfig.from_pretrained(os.path.join(folder, "text_encoder")))
        got = su.convert_open_clip_checkpoint(model, ckpt, prefix="cond_stage_model.model.")
    else:
        got = su.convert_ldm_clip_checkpoint(ckpt)
        if family == "sdxl":
            got = {k: v for k, v in got.items() if not k.startswith("conditioner.")}
    got = {k: v for k, v in got.items() if not k.endswith("position_ids")}
    expect_equal(got, te, f"{os.path.basename(path)} text_encoder")
    if family == "sdxl":
        te2, _ = component(folder, "text_encoder_2")
        model = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(os.path.join(folder, "text_encoder_2")))
        got = su.convert_open_clip_checkpoint(model, ckpt, prefix="conditioner.embedders.1.model.")
        expect_equal(got, truncated_want(with_text_model(te2)), f"{os.path.basename(path)} text_encoder_2")


def verify_pipeline(path, folder, family):
    """The whole from_single_file machinery, against from_pretrained."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel

    if path.endswith("-unet.safetensors"):
        a = {"unet": UNet2DConditionModel.from_single_file(path, config=folder, subfolder="unet",
                                                           local_files_only=True)}
        b = {"unet": UNet2DConditionModel.from_pretrained(folder, subfolder="unet")}
    else:
        cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
        with tempfile.TemporaryDirectory() as cfg:
            # the folder's configs, but with the file's truncated vocabulary:
            # from_single_file builds the text encoders from config= and
            # refuses an embedding of another size
            for name in os.listdir(folder):
                src = os.path.join(folder, name)
                if name.startswith("text_encoder") and os.path.isdir(src):
                    os.makedirs(os.path.join(cfg, name))
                    with open(os.path.join(src, "config.json")) as f:
                        c = json.load(f)
                    c["vocab_size"] = VOCAB
                    with open(os.path.join(cfg, name, "config.json"), "w") as f:
                        json.dump(c, f)
                else:
                    os.symlink(src, os.path.join(cfg, name))
            a = cls.from_single_file(path, config=cfg, local_files_only=True).components
        b = cls.from_pretrained(folder).components
    for name, m in b.items():
        if not isinstance(m, torch.nn.Module):
            continue
        if family == "sdxl" and name == "text_encoder_2":
            # from_single_file picks the CLIP-L weights for any CLIP model whose
            # width equals conditioner.embedders.0's (768 vs 1280 in real SDXL,
            # 32 and 32 here), so it cannot build the tiny text_encoder_2; the
            # converter check above covers it
            continue
        sa, sb = a[name].state_dict(), m.state_dict()
        assert sa.keys() == sb.keys(), f"{path}: {name}: key sets differ"
        if name.startswith("text_encoder"):
            sb = truncated_want(sb)
        for k in sb:
            assert torch.equal(sa[k].half(), sb[k].half()), f"{path}: {name}.{k} differs"
        print(f"  from_single_file {os.path.basename(path)} {name}: {len(sb)} tensors equal")


# ---- main --------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scripts", default="/tmp/diffusers-scripts",
                    help="folder holding the diffusers repo's convert_diffusers_to_original_*.py")
    ap.add_argument("--remake-sd2", action="store_true", help="rebuild tests/data/tiny-sd2 from its seed")
    args = ap.parse_args()
    sd_script = load_script(os.path.join(args.scripts, "convert_diffusers_to_original_stable_diffusion.py"), "conv_sd")
    xl_script = load_script(os.path.join(args.scripts, "convert_diffusers_to_original_sdxl.py"), "conv_sdxl")

    sd2 = os.path.join(DATA, "tiny-sd2")
    if args.remake_sd2 or not os.path.exists(os.path.join(sd2, "model_index.json")):
        make_tiny_sd2(sd2)
    os.makedirs(OUT, exist_ok=True)

    # SD 1.x, with the non-model keys real files carry (and one sdc must call unknown)
    sd = convert_folder(os.path.join(DATA, "tiny-sd"), sd_script, xl_script, "sd1")
    sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    sd["model_ema.decay"] = torch.tensor(0.9999)
    sd["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
    sd["model_ema.diffusion_modelout0weight"] = sd["model.diffusion_model.out.0.weight"].clone()
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    sd["betas"] = betas.float()
    sd["alphas_cumprod"] = torch.cumprod(1 - betas, 0).float()
    sd["junk.tensor"] = torch.ones(3)
    truncate_vocab(sd)
    save_file(sd, os.path.join(OUT, "tiny-sd.safetensors"))

    # SD 2.x: SD 2's checkpoints also hold OpenCLIP's (unused) text_projection and logit_scale
    sd = convert_folder(sd2, sd_script, xl_script, "sd2")
    g = torch.Generator().manual_seed(3)
    sd["cond_stage_model.model.text_projection"] = torch.randn(32, 32, generator=g).half()
    sd["cond_stage_model.model.logit_scale"] = torch.tensor(4.6052)
    truncate_vocab(sd)
    save_file(sd, os.path.join(OUT, "tiny-sd2.safetensors"))
    torch.save({"state_dict": sd, "global_step": 1}, os.path.join(OUT, "tiny-sd2.ckpt"))

    # SDXL
    sd = convert_folder(os.path.join(DATA, "tiny-sdxl"), sd_script, xl_script, "sdxl")
    sd["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    sd["conditioner.embedders.1.model.logit_scale"] = torch.tensor(4.6052)
    truncate_vocab(sd)
    assert sum(k in sd for k in TOKEN_EMBEDDINGS) == 2
    save_file(sd, os.path.join(OUT, "tiny-sdxl.safetensors"))

    for f in os.listdir(OUT):
        os.chmod(os.path.join(OUT, f), 0o644)  # safetensors writes through a 0600 temporary file

    print("verifying with diffusers' single-file converters")
    checks = [("tiny-sd.safetensors", "tiny-sd", "sd1"), ("tiny-sd2.safetensors", "tiny-sd2", "sd2"),
              ("tiny-sd2.ckpt", "tiny-sd2", "sd2"),
              ("tiny-sdxl.safetensors", "tiny-sdxl", "sdxl")]
    for f, folder, fam in checks:
        verify(os.path.join(OUT, f), os.path.join(DATA, folder), fam)
    print("verifying with from_single_file")
    for f, folder, fam in checks:
        verify_pipeline(os.path.join(OUT, f), os.path.join(DATA, folder), fam)
    print("all files verified")


if __name__ == "__main__":
    sys.exit(main())
