#!/usr/bin/env python3
"""Golden training runs for sdc's training-step parity test (tests/data/train/).

Runs three short trainings of the tiny UNet (tests/data/tiny-sd/unet) in
float64 with torch + diffusers (+ peft for LoRA), the way diffusers'
examples/text_to_image/train_text_to_image.py and train_text_to_image_lora.py
do one step, and stores every input so the C side needs no matching RNG.

Usage: python3 tools/make_train_goldens.py [out.safetensors]
       (default tests/data/train/goldens.safetensors; needs torch, diffusers,
       safetensors, peft; CPU only, ~1 minute)

Cases (tensor names are prefixed "<case>/"):
  full_eps          full UNet, epsilon target, plain MSE, S=3 optimizer steps of
                    B=2, AdamW lr 1e-4 wd 1e-2, clip 1.0, constant_with_warmup
                    (warmup 2), EMAModel(decay 0.9999, defaults).
  full_v_snr_accum  full UNet (fresh from disk), v_prediction target, min-SNR
                    gamma 5 weights min(snr, 5)/(snr + 1), gradient accumulation
                    2 (4 micro-batches of B=2, S=2 optimizer steps), AdamW lr 5e-5
                    wd 0, clip 0.5 on the accumulated grads (both steps clip),
                    cosine (warmup 1).
  lora              frozen UNet + PEFT LoRA r=4 alpha=4 on to_q/to_k/to_v/to_out.0,
                    lora_A from peft's "gaussian" init (std 1/r) and lora_B
                    re-drawn N(0, 0.01^2) (both rounded to float32 and stored),
                    epsilon, S=3 steps of B=2, AdamW lr 1e-3 wd 1e-2 over the LoRA
                    params, clip 1.0 over the LoRA params, constant lr.

Per case tensors (M = micro-batches = S * accumulation):
  in/x0, in/noise            F32 [M, B, 4, 16, 16]  (x0 = already scaled latents)
  in/timesteps               I64 [M, B]   (0 and 999 appear in every case)
  in/encoder_hidden_states   F32 [M, B, 77, 32]
  out/loss                   F64 [M]  loss of each micro-batch before the
                                      division by the accumulation count
  out/grad_norm              F64 [S]  clip_grad_norm_'s return (pre-clip total L2)
  out/param_grad_norms       F64 [S, P] per-parameter L2 norm of the accumulated
                                      grad before clipping (P in "param_names" /
                                      "lora/param_names" order), for debugging
  out/lr                     F64 [S]  the lr optimizer.step() used
  full cases:
  out/param_norms            F64 [P]  ||p_final|| per trainable param, in the
                                      order of metadata "param_names"
  out/delta_norms            F64 [P]  ||p_final - p_initial||
  out/param/<diffusers name> F64      final values of ~35 small params
  full_v_snr_accum only:
  out/snr_weight             F64 [M, B] the min-SNR loss weights used
  full_eps only (EMA):
  out/ema_decay              F64 [S]  EMAModel.cur_decay_value after each step
  out/ema_delta_norms        F64 [P]  ||shadow_final - p_initial||
  out/ema/<diffusers name>   F64      final shadow values of a few params
  lora only:
  in/lora/<peft name>        F32      initial LoRA weights (exact: the run used
                                      these float32 values)
  out/lora/<peft name>       F64      final LoRA weights
  peft names are get_peft_model_state_dict's keys, e.g.
  "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"
  ([r, in]) and "...to_q.lora_B.weight" ([out, r]); forward adds
  (alpha/r) * B(A(x)) with alpha/r = 1.

Top level:
  alphas_cumprod             F32 [1000] DDPMScheduler's alphas_cumprod (float32, as
                                      diffusers computes them: betas, 1 - betas and
                                      cumprod all in float32)

Metadata (safetensors __metadata__, JSON strings):
  "param_names"     the UNet's 304 parameters in model.parameters() order (NOT
                    file order: down_blocks.1 lists attentions before resnets,
                    mid_block comes after up_blocks) for the full cases.
  "lora/param_names" the LoRA tensors in optimizer order (peft names).
  "<case>/meta"     hyper-parameters of the case.
  "zero_grad_params" params whose gradient is zero in exact arithmetic (a bias or
                    time_emb_proj output added per channel right before a
                    GroupNorm with one channel per group, which removes it): the
                    float64 grads are ~1e-17 (rounding noise), so in float32 AdamW
                    turns noise into updates up to ~lr * g / (|g| + eps); compare
                    these with an absolute tolerance, not relatively.

Semantics reproduced (float64 throughout; model_pred.float() of the scripts is
not applied, everything stays float64):
  noisy = sqrt(acp[t]) x0 + sqrt(1 - acp[t]) noise, acp = DDPMScheduler's
    float32 alphas_cumprod cast to float64 before the sqrt (add_noise);
    v target = sqrt(acp[t]) noise - sqrt(1 - acp[t]) x0 (get_velocity), same cast.
  snr = compute_snr(): sqrt in float32 of the float32 acp, squared ratio in
    float32; weight = min(snr, gamma) / (snr + 1) in float32, then to float64.
  UNet timestep embedding: diffusers computes the sinusoid in float32 and casts.
  accumulation: each micro-batch loss / 2 before backward (accelerate); grads add.
  clip: torch clip_grad_norm_, coef = min(1, max_norm / (total + 1e-6)), applied
    once per optimizer step on the accumulated grads.
  lr of optimizer step k (0-based) = base * lambda(k): constant_with_warmup(2)
    gives 0, 0.5, 1 (the first step runs with lr 0: moments update, params don't);
    cosine(warmup 1, 2 steps) gives 0, 1.
  EMA: EMAModel default decay schedule min(0.9999, (1+n)/(10+n)) with
    n = optimization_step - 1, and 0 at the first step (shadow = params).
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, compute_snr

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODEL = os.path.join(ROOT, "tests", "data", "tiny-sd")
B, C, H, W, L, D = 2, 4, 16, 16, 77, 32

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
EMA_PARAMS = ["conv_in.bias", "time_embedding.linear_1.bias", BLK + "attn1.to_out.0.bias",
              BLK + "ff.net.2.bias", "conv_norm_out.weight", "conv_out.bias"]


def load_unet():
    unet = UNet2DConditionModel.from_pretrained(MODEL, subfolder="unet").to(torch.float64)
    unet.train()
    return unet


def make_inputs(seed, micro):
    """Float32 draws (stored as is); timesteps include 0 and 999."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(micro, B, C, H, W, generator=g)
    noise = torch.randn(micro, B, C, H, W, generator=g)
    t = torch.randint(0, 1000, (micro, B), generator=g, dtype=torch.int64)
    t[0, 0] = 0
    t[1, 1] = 999
    ehs = torch.randn(micro, B, L, D, generator=g)
    return {"x0": x0, "noise": noise, "timesteps": t, "encoder_hidden_states": ehs}


def micro_loss(unet, sched, inp, i, pred_type, snr_gamma):
    """Loss of micro-batch i as the scripts compute it; returns (loss, weights)."""
    x0 = inp["x0"][i].double()
    noise = inp["noise"][i].double()
    t = inp["timesteps"][i]
    ehs = inp["encoder_hidden_states"][i].double()
    noisy = sched.add_noise(x0, noise, t)
    target = noise if pred_type == "epsilon" else sched.get_velocity(x0, noise, t)
    pred = unet(noisy, t, ehs).sample
    if snr_gamma is None:
        return F.mse_loss(pred, target, reduction="mean"), None
    snr = compute_snr(sched, t)  # float32, as in the script
    w = torch.stack([snr, snr_gamma * torch.ones_like(t)], dim=1).min(dim=1)[0]
    w = w / snr if pred_type == "epsilon" else w / (snr + 1)
    w = w.double()
    loss = F.mse_loss(pred, target, reduction="none")
    loss = loss.mean(dim=list(range(1, loss.ndim))) * w
    return loss.mean(), w


def train(unet, params, inp, cfg, ema=None):
    """Runs cfg["steps"] optimizer steps of cfg["accum"] micro-batches each."""
    sched = DDPMScheduler.from_pretrained(MODEL, subfolder="scheduler")
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
                                 cfg["prediction_type"], cfg["snr_gamma"])
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
           "out/lr": torch.tensor(lr_used, dtype=torch.float64),
           "out/param_grad_norms": torch.stack(pgn)}
    if weights:
        out["out/snr_weight"] = torch.stack(weights)
    if decays:
        out["out/ema_decay"] = torch.tensor(decays, dtype=torch.float64)
    return out


def meta_of(cfg):
    m = {k: cfg[k] for k in ("lr", "schedule", "warmup", "betas", "eps", "weight_decay",
                             "max_grad_norm", "accum", "snr_gamma", "prediction_type",
                             "steps")}
    m["accumulation"] = m.pop("accum")
    m["batch"] = B
    m["micro_batches"] = cfg["steps"] * cfg["accum"]
    for k in ("ema", "lora"):
        m[k] = cfg.get(k)
    return m


def full_case(name, cfg, seed):
    unet = load_unet()
    names = [n for n, _ in unet.named_parameters()]
    params = [p for _, p in unet.named_parameters()]
    init = [p.detach().clone() for p in params]
    inp = make_inputs(seed, cfg["steps"] * cfg["accum"])
    ema = EMAModel(params, **cfg["ema_args"]) if cfg.get("ema") else None
    out = train(unet, params, inp, cfg, ema)
    # exact-zero grads: tiny against the whole model's grad in every step
    gn = out["out/param_grad_norms"]
    zero = [n for n, col in zip(names, gn.T) if (col < 1e-12 * gn.max()).all()]
    for p in params:
        assert p.grad is None
    out["out/param_norms"] = torch.stack([p.detach().norm() for p in params])
    out["out/delta_norms"] = torch.stack([(p.detach() - p0).norm() for p, p0 in zip(params, init)])
    named = dict(zip(names, params))
    for n in FULL_PARAMS:
        out["out/param/" + n] = named[n].detach().clone()
    if ema is not None:
        shadow = dict(zip(names, ema.shadow_params))
        out["out/ema_delta_norms"] = torch.stack(
            [(shadow[n] - p0).norm() for n, p0 in zip(names, init)])
        for n in EMA_PARAMS:
            out["out/ema/" + n] = shadow[n].clone()
    tensors = {"in/" + k: v for k, v in inp.items()}
    tensors.update(out)
    return {f"{name}/{k}": v.contiguous() for k, v in tensors.items()}, names, zero


def lora_case(name, cfg, seed):
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = load_unet()
    unet.requires_grad_(False)
    torch.manual_seed(seed)  # peft's gaussian init draws from the global RNG
    lc = cfg["lora"]
    unet.add_adapter(LoraConfig(r=lc["r"], lora_alpha=lc["lora_alpha"],
                                init_lora_weights=lc["init_lora_weights"],
                                target_modules=lc["target_modules"]))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mn, p in unet.named_parameters():
            if not p.requires_grad:
                continue
            assert p.dtype == torch.float64, (mn, p.dtype)
            if ".lora_B." in mn:
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
            p.copy_(p.float().double())  # the stored float32 values are exact
    # peft names of the trainable params, in optimizer (model.parameters()) order
    sd_keys = {v.data_ptr(): k for k, v in get_peft_model_state_dict(unet).items()}
    params = [p for p in unet.parameters() if p.requires_grad]
    pnames = [sd_keys[p.data_ptr()] for p in params]
    assert len(set(pnames)) == len(params) == len(sd_keys)
    tensors = {"in/lora/" + n: p.detach().float().clone() for n, p in zip(pnames, params)}
    inp = make_inputs(seed, cfg["steps"] * cfg["accum"])
    out = train(unet, params, inp, cfg)
    for n, p in zip(pnames, params):
        out["out/lora/" + n] = p.detach().clone()
    tensors.update({"in/" + k: v for k, v in inp.items()})
    tensors.update(out)
    return {f"{name}/{k}": v.contiguous() for k, v in tensors.items()}, pnames, []


BASE = {"betas": [0.9, 0.999], "eps": 1e-8, "max_grad_norm": 1.0}
CASES = {
    "full_eps": dict(BASE, lr=1e-4, weight_decay=1e-2, schedule="constant_with_warmup",
                     warmup=2, steps=3, accum=1, snr_gamma=None, prediction_type="epsilon",
                     ema={"decay": 0.9999, "min_decay": 0.0, "update_after_step": 0,
                          "use_ema_warmup": False, "inv_gamma": 1.0, "power": 2 / 3,
                          "decay_rule": "min(decay, (1+n)/(10+n)), n = step-1; 0 at step 1"},
                     ema_args={"decay": 0.9999}),
    # max_grad_norm 0.5 (not 1.0): the accumulated grad norms are ~0.5-0.65, so
    # 1.0 would never clip and could not tell clip-after-accumulation from
    # clipping each micro-batch.
    "full_v_snr_accum": dict(BASE, lr=5e-5, weight_decay=0.0, schedule="cosine", warmup=1,
                             steps=2, accum=2, snr_gamma=5.0, prediction_type="v_prediction",
                             max_grad_norm=0.5),
    "lora": dict(BASE, lr=1e-3, weight_decay=1e-2, schedule="constant", warmup=0, steps=3,
                 accum=1, snr_gamma=None, prediction_type="epsilon",
                 lora={"r": 4, "lora_alpha": 4, "init_lora_weights": "gaussian",
                       "target_modules": ["to_k", "to_q", "to_v", "to_out.0"],
                       "lora_A_init": "N(0, (1/r)^2) from peft, rounded to float32",
                       "lora_B_init": "N(0, 0.01^2) seeded, rounded to float32",
                       "scaling": 1.0,
                       "clip_over": "LoRA params only (the script's exhausted filter "
                                    "would clip nothing)"}),
}
SEEDS = {"full_eps": 1000, "full_v_snr_accum": 2000, "lora": 3000}


def build():
    torch.manual_seed(0)
    sched = DDPMScheduler.from_pretrained(MODEL, subfolder="scheduler")
    tensors = {"alphas_cumprod": sched.alphas_cumprod.clone()}
    meta, zero_sets = {}, []
    for name, cfg in CASES.items():
        fn = lora_case if name == "lora" else full_case
        t, names, zero = fn(name, cfg, SEEDS[name])
        if name != "lora":
            zero_sets.append(zero)
        tensors.update(t)
        meta[name + "/meta"] = json.dumps(meta_of(cfg))
        meta["lora/param_names" if name == "lora" else "param_names"] = json.dumps(names)
    assert all(z == zero_sets[0] for z in zero_sets)
    meta["zero_grad_params"] = json.dumps(zero_sets[0])
    meta["format"] = "see tools/make_train_goldens.py"
    return tensors, meta


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        ROOT, "tests", "data", "train", "goldens.safetensors")
    tensors, meta = build()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_file(tensors, out, metadata=meta)
    os.chmod(out, 0o644)
    n = sum(v.numel() * v.element_size() for v in tensors.values())
    print(f"wrote {out}: {len(tensors)} tensors, {n} bytes of data")
    for name in CASES:
        print(name, "loss", tensors[name + "/out/loss"].tolist())
        print(name, "grad_norm", tensors[name + "/out/grad_norm"].tolist())
        print(name, "lr", tensors[name + "/out/lr"].tolist())


if __name__ == "__main__":
    main()
