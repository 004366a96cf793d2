#!/usr/bin/env python3
"""Golden training runs for sdc's training-step parity test (tests/data/train/).

Runs six short trainings (ten optimizer steps each) of the tiny UNets
(tests/data/tiny-sd/unet, tests/data/tiny-sdxl/unet) in float64 with torch +
diffusers (+ peft for LoRA, + transformers for the text encoder), the way
diffusers' examples/text_to_image/train_text_to_image.py,
train_text_to_image_lora.py, train_text_to_image_sdxl.py and
examples/dreambooth/train_dreambooth_lora.py (--train_text_encoder) do one
step, and stores every input so the C side needs no matching RNG.

Usage: python3 tools/make_train_goldens.py [out.safetensors]
       (default tests/data/train/goldens.safetensors; needs torch, diffusers,
       transformers, safetensors, peft; CPU only, a few minutes; two runs give
       identical files)

Cases (tensor names are prefixed "<case>/"; S = 10 optimizer steps of B=2):
  full_eps          tiny-sd, full UNet, epsilon target, plain MSE, S=10,
                    AdamW lr 1e-4 wd 1e-2, clip 1.0, constant_with_warmup
                    (warmup 2), EMAModel(decay 0.9999, defaults).
  full_v_snr_accum  tiny-sd, full UNet (fresh from disk), v_prediction target,
                    min-SNR gamma 5 weights min(snr, 5)/(snr + 1), gradient
                    accumulation 2 (20 micro-batches, S=10), AdamW lr 5e-5 wd 0,
                    clip 0.5 on the accumulated grads, cosine (warmup 1).
  lora              tiny-sd, frozen UNet + PEFT LoRA r=4 alpha=4 on
                    to_q/to_k/to_v/to_out.0, lora_A from peft's "gaussian" init
                    (std 1/r) and lora_B re-drawn N(0, 0.01^2) (both rounded to
                    float32 and stored), epsilon, S=10, AdamW lr 1e-3 wd 1e-2
                    over the LoRA params, clip 1.0 over the LoRA params,
                    constant lr.
  lora_te           "lora" plus LoRA (same r, alpha, init, B re-draw) on the
                    text encoder's q_proj/k_proj/v_proj/out_proj
                    (tests/data/tiny-sd/text_encoder, CLIPTextModel in float64),
                    which runs inside the step:
                    encoder_hidden_states = text_encoder(input_ids)[0]
                    (last_hidden_state, after final_layer_norm; no attention
                    mask, causal only). One AdamW over UNet LoRA then text-encoder
                    LoRA params, clip 1.0 over all of them, lr 1e-3 wd 1e-2,
                    constant, S=10.
  sdxl_full         tiny-sdxl (fp16 file, loaded then cast to float64), full
                    UNet, epsilon, S=10, AdamW lr 1e-4 wd 1e-2, clip 1.0,
                    constant_with_warmup (warmup 2), no EMA.
  sdxl_lora         tiny-sdxl, UNet LoRA exactly as "lora", S=10.

Per case tensors (M = micro-batches = S * accumulation). Float inputs are
float16 draws (stored as F16 so the file stays small; the run used exactly
these values, cast up to float64). Scalars and norms are F64; final parameter
values (out/param, out/ema, out/lora, out/te_lora) are the float64 results
rounded to F32 (6e-8 relative: far below any fp32 comparison, and F64 would
put the file over 3 MB):
  in/x0, in/noise            F16 [M, B, 4, 16, 16]  (x0 = already scaled latents)
  in/timesteps               I64 [M, B]   (0 and 999 appear in every case)
  in/encoder_hidden_states   F16 [M, B, 77, 32]  (tiny-sd cases except lora_te)
                                 [M, B, 77, 64]  (sdxl cases)
  lora_te only:
  in/input_ids               I64 [M, B, 77]  prompts tokenized with
                                      tests/data/tiny-sd/tokenizer, padding
                                      "max_length" 77, truncation (one prompt is
                                      longer than 77 tokens)
  sdxl cases only (added_cond_kwargs={"text_embeds", "time_ids"}, as
  train_text_to_image_sdxl.py passes them):
  in/text_embeds             F16 [M, B, 32]  pooled text embeddings
  in/time_ids                F32 [M, B, 6]   (orig h, orig w, crop top, crop left,
                                      target h, target w): (64,64,0,0,64,64) and
                                      (96,64,8,0,64,64), sample b of micro-batch m
                                      gets variant (m + b) % 2
  out/loss                   F64 [M]  loss of each micro-batch before the
                                      division by the accumulation count
  out/grad_norm              F64 [S]  clip_grad_norm_'s return (pre-clip total L2)
  out/lr                     F64 [S]  the lr optimizer.step() used
  full cases:
  out/param_norms            F64 [P]  ||p_final|| per trainable param, in the
                                      order of metadata "param_names"
                                      ("sdxl/param_names" for sdxl_full)
  out/delta_norms            F64 [P]  ||p_final - p_initial||
  out/param/<diffusers name> F32      final values of 35 (tiny-sd) / 29 (sdxl)
                                      small params (none in the zero-grad lists)
  full_v_snr_accum only:
  out/snr_weight             F64 [M, B] the min-SNR loss weights used
  full_eps only (EMA):
  out/ema_decay              F64 [S]  EMAModel.cur_decay_value after each step
  out/ema_delta_norms        F64 [P]  ||shadow_final - p_initial||
  out/ema/<diffusers name>   F32      final shadow values of a few params
  lora cases (lora, lora_te, sdxl_lora):
  in/lora/<peft name>        F32      initial UNet LoRA weights (exact: the run
                                      used these float32 values)
  out/lora/<peft name>       F32      final UNet LoRA weights
  peft names are get_peft_model_state_dict's keys, e.g.
  "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"
  ([r, in]) and "...to_q.lora_B.weight" ([out, r]); forward adds
  (alpha/r) * B(A(x)) with alpha/r = 1.
  lora_te only:
  in/te_lora/<name>          F32      initial text-encoder LoRA weights
  out/te_lora/<name>         F32      final text-encoder LoRA weights
  names are get_peft_model_state_dict(text_encoder)'s keys with "text_model."
  put in front (transformers 5's CLIPTextModel has no text_model submodule and
  gives "encoder.layers.0..."; transformers 4 and the PEFT files diffusers
  writes use "text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight").

The per-parameter gradient norms (out/param_grad_norms of earlier versions) are
no longer stored; they only serve to find "zero_grad_params".

Top level:
  alphas_cumprod             F32 [1000] DDPMScheduler's alphas_cumprod (float32, as
                                      diffusers computes them: betas, 1 - betas and
                                      cumprod all in float32); tiny-sd and
                                      tiny-sdxl have the same schedule
                                      (scaled_linear 0.00085..0.012), checked

Metadata (safetensors __metadata__, JSON strings):
  "param_names"     the tiny-sd UNet's 304 parameters in model.parameters() order
                    (NOT file order: down_blocks.1 lists attentions before resnets,
                    mid_block comes after up_blocks) for full_eps and
                    full_v_snr_accum.
  "sdxl/param_names" the tiny-sdxl UNet's parameters in model.parameters() order
                    (add_embedding comes right after time_embedding) for sdxl_full.
  "lora/param_names" the LoRA tensors of "lora" in optimizer order (peft names;
                    model.parameters() order: to_q, to_k, to_v, to_out.0).
  "lora_te/lora_param_names", "lora_te/te_param_names"  the UNet LoRA then the
                    text-encoder LoRA tensors of lora_te in optimizer order (the
                    text encoder's is k_proj, v_proj, q_proj, out_proj per layer:
                    CLIPAttention's module order).
  "sdxl_lora/lora_param_names"  the LoRA tensors of sdxl_lora in optimizer order.
  "<case>/meta"     hyper-parameters of the case.
  "zero_grad_params" tiny-sd UNet params whose gradient is zero in exact
                    arithmetic (a bias or time_emb_proj output added per channel
                    right before a GroupNorm with one channel per group, which
                    removes it): the float64 grads are ~1e-17 (rounding noise), so
                    in float32 AdamW turns noise into updates up to
                    ~lr * g / (|g| + eps); compare these with an absolute
                    tolerance, not relatively.
  "sdxl/zero_grad_params" the same for the tiny-sdxl UNet (sdxl_full).

Semantics reproduced (float64 throughout; model_pred.float() of the scripts is
not applied, everything stays float64):
  noisy = sqrt(acp[t]) x0 + sqrt(1 - acp[t]) noise, acp = DDPMScheduler's
    float32 alphas_cumprod cast to float64 before the sqrt (add_noise);
    v target = sqrt(acp[t]) noise - sqrt(1 - acp[t]) x0 (get_velocity), same cast.
  snr = compute_snr(): sqrt in float32 of the float32 acp, squared ratio in
    float32; weight = min(snr, gamma) / (snr + 1) in float32, then to float64.
  UNet timestep embedding: diffusers computes the sinusoid in float32 and casts.
  SDXL added conditioning: add_time_proj's sinusoid (8 per time id, flip to
    cos-sin) is computed in float32 from the time ids (get_timestep_embedding
    casts them with .float()), then [text_embeds, time_embeds] (32 + 48 = 80) is
    cast to float64 and goes through add_embedding; its output is added to the
    timestep embedding.
  accumulation: each micro-batch loss / 2 before backward (accelerate); grads add.
  clip: torch clip_grad_norm_, coef = min(1, max_norm / (total + 1e-6)), applied
    once per optimizer step on the accumulated grads.
  lr of optimizer step k (0-based) = base * lambda(k): constant_with_warmup(2)
    gives 0, 0.5, 1, 1, ... (the first step runs with lr 0: moments update,
    params don't); cosine(warmup 1, 10 steps) gives 0, then
    0.5 (1 + cos(pi (k - 1) / 9)).
  EMA: EMAModel default decay schedule min(0.9999, (1+n)/(10+n)) with
    n = optimization_step - 1, and 0 at the first step (shadow = params).
"""
import json
import os
import struct
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, compute_snr

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODELS = {"sd": os.path.join(ROOT, "tests", "data", "tiny-sd"),
          "sdxl": os.path.join(ROOT, "tests", "data", "tiny-sdxl")}
MODEL = MODELS["sd"]
B, C, H, W, L, D = 2, 4, 16, 16, 77, 32
D_XL, POOL_XL = 64, 32  # tiny-sdxl: cross_attention_dim, pooled text embedding
IN_DTYPE = torch.float16  # float inputs are drawn, rounded to this and stored
VALUE_DTYPE = torch.float32  # stored final values (out/param, ema, lora, te_lora)
TIME_IDS = [(64, 64, 0, 0, 64, 64), (96, 64, 8, 0, 64, 64)]
PROMPTS = [
    "a photo of a cat",
    "an oil painting of a lighthouse at dusk, dramatic clouds",
    "sks dog",
    "a red cube on top of a blue sphere",
    "a watercolor of snowy mountains above a quiet lake in the early morning mist",
    "A Portrait of an Astronaut, 35mm, f/1.8 -- highly detailed!",
    # longer than 77 tokens: exercises truncation (the last id is then EOS)
    "a very long caption " + ", ".join(f"with detail number {i}" for i in range(30)),
]

# Small parameters whose final values are stored in full (one of each kind).
BLK = "down_blocks.1.attentions.0.transformer_blocks.0."
FULL_PARAMS = [
    "conv_in.weight", "conv_in.bias",
    "time_embedding.linear_1.weight", "time_embedding.linear_1.bias",
    "time_embedding.linear_2.bias",
    "down_blocks.0.resnets.0.norm1.weight", "down_blocks.0.resnets.0.norm1.bias",
    "down_blocks.0.resnets.0.conv1.weight",
    "down_blocks.0.resnets.0.norm2.weight", "down_blocks.0.resnets.0.conv2.bias",
    # 32-channel resnets' conv1.bias / time_emb_proj get zero grads (see
    # "zero_grad_params"); the 64-channel mid-block resnet's do not
    "mid_block.resnets.0.conv1.bias", "mid_block.resnets.0.time_emb_proj.weight",
    "down_blocks.0.downsamplers.0.conv.bias",
    "down_blocks.1.resnets.0.conv_shortcut.weight",
    "down_blocks.1.attentions.0.norm.weight", "down_blocks.1.attentions.0.norm.bias",
    "down_blocks.1.attentions.0.proj_in.weight", "down_blocks.1.attentions.0.proj_in.bias",
    BLK + "norm1.weight", BLK + "attn1.to_q.weight", BLK + "attn1.to_out.0.bias",
    BLK + "norm2.bias", BLK + "attn2.to_k.weight", BLK + "attn2.to_v.weight",
    BLK + "attn2.to_out.0.bias", BLK + "norm3.weight",
    BLK + "ff.net.0.proj.bias", BLK + "ff.net.2.bias",
    "down_blocks.1.attentions.0.proj_out.bias",
    "mid_block.resnets.0.time_emb_proj.bias",
    "up_blocks.0.upsamplers.0.conv.bias",
    "conv_norm_out.weight", "conv_norm_out.bias",
    "conv_out.weight", "conv_out.bias",
]
# tiny-sdxl: mostly biases and norms (the weights are larger than tiny-sd's),
# the SDXL-only add_embedding, both transformer blocks of an attention, the
# 64-channel cross-attention key and the mid block's two-layer transformer.
BLK1 = "down_blocks.1.attentions.0.transformer_blocks.1."
MID = "mid_block.attentions.0.transformer_blocks.1."
FULL_PARAMS_XL = [
    "conv_in.weight", "conv_in.bias",
    "time_embedding.linear_1.bias", "time_embedding.linear_2.bias",
    "add_embedding.linear_1.bias", "add_embedding.linear_2.bias",
    "down_blocks.0.resnets.0.norm1.weight", "down_blocks.0.resnets.0.conv2.bias",
    "down_blocks.1.resnets.0.conv1.bias", "down_blocks.1.resnets.0.time_emb_proj.bias",
    "down_blocks.1.resnets.0.conv_shortcut.weight",
    "down_blocks.1.attentions.0.norm.weight", "down_blocks.1.attentions.0.proj_in.bias",
    BLK + "norm1.weight", BLK + "attn1.to_out.0.bias", BLK + "attn2.to_k.weight",
    BLK + "attn2.to_out.0.bias", BLK + "ff.net.0.proj.bias",
    BLK1 + "norm2.bias", BLK1 + "ff.net.2.bias",
    MID + "attn2.to_out.0.bias", "mid_block.resnets.1.time_emb_proj.bias",
    "up_blocks.0.resnets.2.norm1.weight", "up_blocks.0.upsamplers.0.conv.bias",
    "up_blocks.1.resnets.0.conv_shortcut.bias",
    "conv_norm_out.weight", "conv_norm_out.bias", "conv_out.weight", "conv_out.bias",
]
EMA_PARAMS = ["conv_in.bias", "time_embedding.linear_1.bias", BLK + "attn1.to_out.0.bias",
              BLK + "ff.net.2.bias", "conv_norm_out.weight", "conv_out.bias"]


def load_unet(model=MODEL):
    # tiny-sdxl's file is fp16: float64 holds those values exactly
    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet").to(torch.float64)
    unet.train()
    return unet


def tokenize(model, micro):
    """input_ids [micro, B, 77]: sample b of micro-batch m gets prompt m*B + b."""
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
    caps = [PROMPTS[k % len(PROMPTS)] for k in range(micro * B)]
    ids = tok(caps, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    assert ids.shape == (micro * B, L)
    return ids.reshape(micro, B, L).to(torch.int64)


def make_inputs(seed, micro, ctx=D, sdxl=False, model=None):
    """Float draws rounded to IN_DTYPE (stored as is); timesteps include 0 and
    999. With model: input_ids of real prompts instead of random states."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(micro, B, C, H, W, generator=g)
    noise = torch.randn(micro, B, C, H, W, generator=g)
    t = torch.randint(0, 1000, (micro, B), generator=g, dtype=torch.int64)
    t[0, 0] = 0
    t[1, 1] = 999
    inp = {"x0": x0.to(IN_DTYPE), "noise": noise.to(IN_DTYPE), "timesteps": t}
    if model is None:
        inp["encoder_hidden_states"] = torch.randn(micro, B, L, ctx, generator=g).to(IN_DTYPE)
    else:
        inp["input_ids"] = tokenize(model, micro)
    if sdxl:
        inp["text_embeds"] = torch.randn(micro, B, POOL_XL, generator=g).to(IN_DTYPE)
        inp["time_ids"] = torch.tensor([[TIME_IDS[(m + b) % 2] for b in range(B)]
                                        for m in range(micro)], dtype=torch.float32)
    return inp


def conditioning(inp, i, text_encoder):
    """encoder_hidden_states (and SDXL's added_cond_kwargs) of micro-batch i."""
    if "input_ids" in inp:
        ehs = text_encoder(inp["input_ids"][i])[0]  # last_hidden_state
    else:
        ehs = inp["encoder_hidden_states"][i].double()
    added = None
    if "text_embeds" in inp:
        added = {"text_embeds": inp["text_embeds"][i].double(),
                 "time_ids": inp["time_ids"][i].double()}
    return ehs, added


def micro_loss(unet, sched, inp, i, pred_type, snr_gamma, text_encoder=None):
    """Loss of micro-batch i as the scripts compute it; returns (loss, weights)."""
    x0 = inp["x0"][i].double()
    noise = inp["noise"][i].double()
    t = inp["timesteps"][i]
    ehs, added = conditioning(inp, i, text_encoder)
    noisy = sched.add_noise(x0, noise, t)
    target = noise if pred_type == "epsilon" else sched.get_velocity(x0, noise, t)
    pred = unet(noisy, t, ehs, added_cond_kwargs=added).sample
    if snr_gamma is None:
        return F.mse_loss(pred, target, reduction="mean"), None
    snr = compute_snr(sched, t)  # float32, as in the script
    w = torch.stack([snr, snr_gamma * torch.ones_like(t)], dim=1).min(dim=1)[0]
    w = w / snr if pred_type == "epsilon" else w / (snr + 1)
    w = w.double()
    loss = F.mse_loss(pred, target, reduction="none")
    loss = loss.mean(dim=list(range(1, loss.ndim))) * w
    return loss.mean(), w


def train(unet, params, inp, cfg, ema=None, text_encoder=None):
    """Runs cfg["steps"] optimizer steps of cfg["accum"] micro-batches each."""
    sched = DDPMScheduler.from_pretrained(MODELS[cfg["model"]], subfolder="scheduler")
    sched.register_to_config(prediction_type=cfg["prediction_type"])
    opt = torch.optim.AdamW(params, lr=cfg["lr"], betas=tuple(cfg["betas"]),
                            weight_decay=cfg["weight_decay"], eps=cfg["eps"])
    lrs = get_scheduler(cfg["schedule"], optimizer=opt, num_warmup_steps=cfg["warmup"],
                        num_training_steps=cfg["steps"])
    losses, norms, lr_used, weights, decays, pgn = [], [], [], [], [], []
    accum = cfg["accum"]
    for s in range(cfg["steps"]):
        for a in range(accum):
            loss, w = micro_loss(unet, sched, inp, s * accum + a,
                                 cfg["prediction_type"], cfg["snr_gamma"], text_encoder)
            losses.append(loss.item())
            if w is not None:
                weights.append(w)
            (loss / accum).backward()
        pgn.append(torch.stack([p.grad.norm() if p.grad is not None else
                                torch.zeros((), dtype=torch.float64) for p in params]))
        norms.append(torch.nn.utils.clip_grad_norm_(params, cfg["max_grad_norm"]).item())
        lr_used.append(opt.param_groups[0]["lr"])
        opt.step()
        lrs.step()
        opt.zero_grad()
        if ema is not None:
            ema.step(params)
            decays.append(ema.cur_decay_value)
    out = {"out/loss": torch.tensor(losses, dtype=torch.float64),
           "out/grad_norm": torch.tensor(norms, dtype=torch.float64),
           "out/lr": torch.tensor(lr_used, dtype=torch.float64)}
    if weights:
        out["out/snr_weight"] = torch.stack(weights)
    if decays:
        out["out/ema_decay"] = torch.tensor(decays, dtype=torch.float64)
    return out, torch.stack(pgn)


def meta_of(cfg):
    m = {k: cfg[k] for k in ("lr", "schedule", "warmup", "betas", "eps", "weight_decay",
                             "max_grad_norm", "accum", "snr_gamma", "prediction_type",
                             "steps")}
    m["accumulation"] = m.pop("accum")
    m["batch"] = B
    m["micro_batches"] = cfg["steps"] * cfg["accum"]
    for k in ("ema", "lora"):
        m[k] = cfg.get(k)
    m["model"] = os.path.relpath(MODELS[cfg["model"]], ROOT)
    if cfg.get("te_lora"):
        m["te_lora"] = cfg["te_lora"]
    if cfg["model"] == "sdxl":
        m["time_ids"] = "sample b of micro-batch m: %s[(m + b) %% 2]" % json.dumps(TIME_IDS)
    return m


def case_inputs(cfg, seed):
    sdxl = cfg["model"] == "sdxl"
    return make_inputs(seed, cfg["steps"] * cfg["accum"], ctx=D_XL if sdxl else D, sdxl=sdxl,
                       model=MODELS[cfg["model"]] if cfg.get("te_lora") else None)


def full_case(name, cfg, seed):
    unet = load_unet(MODELS[cfg["model"]])
    names = [n for n, _ in unet.named_parameters()]
    params = [p for _, p in unet.named_parameters()]
    init = [p.detach().clone() for p in params]
    inp = case_inputs(cfg, seed)
    ema = EMAModel(params, **cfg["ema_args"]) if cfg.get("ema") else None
    out, gn = train(unet, params, inp, cfg, ema)
    # exact-zero grads: tiny against the whole model's grad in every step
    zero = [n for n, col in zip(names, gn.T) if (col < 1e-12 * gn.max()).all()]
    for p in params:
        assert p.grad is None
    out["out/param_norms"] = torch.stack([p.detach().norm() for p in params])
    out["out/delta_norms"] = torch.stack([(p.detach() - p0).norm() for p, p0 in zip(params, init)])
    named = dict(zip(names, params))
    for n in cfg["full_params"]:
        assert n not in zero, n  # relative comparison would be meaningless
        out["out/param/" + n] = named[n].detach().to(VALUE_DTYPE)
    if ema is not None:
        shadow = dict(zip(names, ema.shadow_params))
        out["out/ema_delta_norms"] = torch.stack(
            [(shadow[n] - p0).norm() for n, p0 in zip(names, init)])
        for n in EMA_PARAMS:
            out["out/ema/" + n] = shadow[n].to(VALUE_DTYPE)
    tensors = {"in/" + k: v for k, v in inp.items()}
    tensors.update(out)
    return {f"{name}/{k}": v.contiguous() for k, v in tensors.items()}, {"param_names": names}, zero


def add_lora(model, lc, g):
    """PEFT LoRA on `model` (gaussian A from the global RNG), B re-drawn from g,
    both rounded to float32; returns the trainable params and their peft names
    in model.parameters() order."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    model.requires_grad_(False)
    model.add_adapter(LoraConfig(r=lc["r"], lora_alpha=lc["lora_alpha"],
                                 init_lora_weights=lc["init_lora_weights"],
                                 target_modules=lc["target_modules"]))
    with torch.no_grad():
        for mn, p in model.named_parameters():
            if not p.requires_grad:
                continue
            assert p.dtype == torch.float64, (mn, p.dtype)
            if ".lora_B." in mn:
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
            p.copy_(p.float().double())  # the stored float32 values are exact
    sd_keys = {v.data_ptr(): k for k, v in get_peft_model_state_dict(model).items()}
    params = [p for p in model.parameters() if p.requires_grad]
    pnames = [sd_keys[p.data_ptr()] for p in params]
    assert len(set(pnames)) == len(params) == len(sd_keys)
    return params, pnames


def lora_case(name, cfg, seed):
    unet = load_unet(MODELS[cfg["model"]])
    torch.manual_seed(seed)  # peft's gaussian init draws from the global RNG
    g = torch.Generator().manual_seed(seed + 1)
    # the UNet's adapters first (A, then B re-drawn), then the text encoder's
    params, pnames = add_lora(unet, cfg["lora"], g)
    tensors = {"in/lora/" + n: p.detach().float().clone() for n, p in zip(pnames, params)}
    names = {"lora_param_names": pnames}
    te, te_params, te_names = None, [], []
    if cfg.get("te_lora"):
        from transformers import CLIPTextModel

        te = CLIPTextModel.from_pretrained(MODELS[cfg["model"]], subfolder="text_encoder")
        te = te.to(torch.float64)
        te.train()  # as the scripts do with --train_text_encoder (no dropout here)
        te_params, te_names = add_lora(te, cfg["te_lora"], g)
        te_names = [n if n.startswith("text_model.") else "text_model." + n for n in te_names]
        tensors.update({"in/te_lora/" + n: p.detach().float().clone()
                        for n, p in zip(te_names, te_params)})
        names["te_param_names"] = te_names
    inp = case_inputs(cfg, seed)
    out, _ = train(unet, params + te_params, inp, cfg, text_encoder=te)
    for n, p in zip(pnames, params):
        out["out/lora/" + n] = p.detach().to(VALUE_DTYPE)
    for n, p in zip(te_names, te_params):
        out["out/te_lora/" + n] = p.detach().to(VALUE_DTYPE)
    tensors.update({"in/" + k: v for k, v in inp.items()})
    tensors.update(out)
    return {f"{name}/{k}": v.contiguous() for k, v in tensors.items()}, names, []


BASE = {"betas": [0.9, 0.999], "eps": 1e-8, "max_grad_norm": 1.0, "model": "sd"}
LORA = {"r": 4, "lora_alpha": 4, "init_lora_weights": "gaussian",
        "target_modules": ["to_k", "to_q", "to_v", "to_out.0"],
        "lora_A_init": "N(0, (1/r)^2) from peft, rounded to float32",
        "lora_B_init": "N(0, 0.01^2) seeded, rounded to float32",
        "scaling": 1.0,
        "clip_over": "LoRA params only (the script's exhausted filter "
                     "would clip nothing)"}
TE_LORA = {"r": 4, "lora_alpha": 4, "init_lora_weights": "gaussian",
           "target_modules": ["q_proj", "k_proj", "v_proj", "out_proj"],
           "lora_A_init": "N(0, (1/r)^2) from peft, rounded to float32",
           "lora_B_init": "N(0, 0.01^2) seeded (after the UNet's), rounded to float32",
           "scaling": 1.0,
           "optimizer": "one AdamW, params = UNet LoRA then text-encoder LoRA; "
                        "clip over both"}
FULL_EPS = dict(BASE, lr=1e-4, weight_decay=1e-2, schedule="constant_with_warmup",
                warmup=2, steps=10, accum=1, snr_gamma=None, prediction_type="epsilon",
                full_params=FULL_PARAMS)
LORA_CASE = dict(BASE, lr=1e-3, weight_decay=1e-2, schedule="constant", warmup=0, steps=10,
                 accum=1, snr_gamma=None, prediction_type="epsilon", lora=LORA)
CASES = {
    "full_eps": dict(FULL_EPS,
                     ema={"decay": 0.9999, "min_decay": 0.0, "update_after_step": 0,
                          "use_ema_warmup": False, "inv_gamma": 1.0, "power": 2 / 3,
                          "decay_rule": "min(decay, (1+n)/(10+n)), n = step-1; 0 at step 1"},
                     ema_args={"decay": 0.9999}),
    # max_grad_norm 0.5 (not 1.0): the accumulated grad norms are 0.13-0.66, so
    # 1.0 would never clip and could not tell clip-after-accumulation from
    # clipping each micro-batch; at 0.5 steps 4, 7 and 9 clip, the others not.
    "full_v_snr_accum": dict(BASE, lr=5e-5, weight_decay=0.0, schedule="cosine", warmup=1,
                             steps=10, accum=2, snr_gamma=5.0, prediction_type="v_prediction",
                             max_grad_norm=0.5, full_params=FULL_PARAMS),
    "lora": LORA_CASE,
    "lora_te": dict(LORA_CASE, te_lora=TE_LORA),
    "sdxl_full": dict(FULL_EPS, model="sdxl", full_params=FULL_PARAMS_XL),
    "sdxl_lora": dict(LORA_CASE, model="sdxl"),
}
SEEDS = {"full_eps": 1000, "full_v_snr_accum": 2000, "lora": 3000, "lora_te": 4000,
         "sdxl_full": 5000, "sdxl_lora": 6000}
# metadata key of each case's name lists (kept from the first version's layout)
NAME_KEYS = {("full_eps", "param_names"): "param_names",
             ("full_v_snr_accum", "param_names"): "param_names",
             ("sdxl_full", "param_names"): "sdxl/param_names",
             ("lora", "lora_param_names"): "lora/param_names"}


def build():
    torch.manual_seed(0)
    acp = {m: DDPMScheduler.from_pretrained(p, subfolder="scheduler").alphas_cumprod
           for m, p in MODELS.items()}
    assert torch.equal(acp["sd"], acp["sdxl"])
    tensors = {"alphas_cumprod": acp["sd"].clone()}
    meta, zero_sets = {}, {"sd": [], "sdxl": []}
    for name, cfg in CASES.items():
        fn = lora_case if cfg.get("lora") else full_case
        t, names, zero = fn(name, cfg, SEEDS[name])
        if fn is full_case:
            zero_sets[cfg["model"]].append(zero)
        tensors.update(t)
        meta[name + "/meta"] = json.dumps(meta_of(cfg))
        for k, v in names.items():
            key = NAME_KEYS.get((name, k), f"{name}/{k}")
            assert meta.get(key, json.dumps(v)) == json.dumps(v), key
            meta[key] = json.dumps(v)
    for m, sets in zero_sets.items():
        assert sets and all(z == sets[0] for z in sets), m
    meta["zero_grad_params"] = json.dumps(zero_sets["sd"][0])
    meta["sdxl/zero_grad_params"] = json.dumps(zero_sets["sdxl"][0])
    meta["format"] = "see tools/make_train_goldens.py"
    return tensors, meta


def sort_metadata(path):
    """safetensors writes __metadata__ in hash order, which changes from run to
    run; rewrite the header (same length, same tensor offsets) with the keys
    sorted so that regenerating gives the same bytes."""
    with open(path, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        head["__metadata__"] = dict(sorted(head["__metadata__"].items()))
        text = json.dumps(head, separators=(",", ":")).encode()
        assert len(text) <= n
        f.seek(8)
        f.write(text + b" " * (n - len(text)))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        ROOT, "tests", "data", "train", "goldens.safetensors")
    tensors, meta = build()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_file(tensors, out, metadata=meta)
    sort_metadata(out)
    os.chmod(out, 0o644)
    n = sum(v.numel() * v.element_size() for v in tensors.values())
    print(f"wrote {out}: {len(tensors)} tensors, {n} bytes of data")
    for name in CASES:
        size = sum(v.numel() * v.element_size() for k, v in tensors.items()
                   if k.startswith(name + "/"))
        print(f"{name}: {size} bytes")
        print(name, "loss", tensors[name + "/out/loss"].tolist())
        print(name, "grad_norm", tensors[name + "/out/grad_norm"].tolist())
        print(name, "lr", tensors[name + "/out/lr"].tolist())


if __name__ == "__main__":
    main()
