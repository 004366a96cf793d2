#!/usr/bin/env python3
"""Golden values for tests/test_train_math.c, computed by torch and diffusers.

Sections (tensor names are prefixes in one safetensors file):
  adamw/       torch.optim.AdamW (CPU, fp32, default single-tensor path):
               p0 [N], grads [5, N], lrs [5] (F64, the lr of each step), and per
               hyper-parameter set k: adamw/k/{p,m,v} after 5 steps, its
               hyper-parameters in metadata "adamw_sets" (JSON list).
  clip/        torch.nn.utils.clip_grad_norm_: g [N]; per case k (max_norm =
               0.5·norm and 2·norm, metadata "clip_max_norms"): clip/k/norm [1]
               (torch's float32 total norm) and clip/k/g (the clipped grads);
               clip/nan_g has one NaN.
  lr/          diffusers.optimization.get_scheduler: lr/k [steps+1] (F64) the
               optimizer's lr before the first scheduler.step() and after each
               one; cases in metadata "lr_cases".
  ema/         diffusers.training_utils.EMAModel: params [30, N] (the
               parameters after each training step), init [N]; per config k:
               ema/k/decay [30] (F64, cur_decay_value after each step),
               ema/k/shadow5 and ema/k/shadow30 (after steps 5 and 30);
               configs in metadata "ema_cases".
  diff/        DDPMScheduler (SD's scaled_linear 0.00085..0.012):
               alphas_cumprod, x0/noise/r_offset/r_perturb/pred [3, 4, 8, 8] or
               [3, 4], t = (0, 500, 999); outputs noise_off (noise with the
               offset), new_noise (input perturbation), noisy, velocity, snr,
               w_eps / w_v (min-SNR weights, gamma 5), loss_* and grad_* (autograd);
               randint: timesteps from torch.randint with a seeded generator.

Usage: python3 tools/make_train_math_goldens.py [out.safetensors]
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, compute_snr

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data",
                                                         "train_math", "goldens.safetensors")
torch.manual_seed(20240607)
T = {}
META = {}


def adamw():
    n = 1000
    p0 = torch.randn(n)
    p0[:16] = 0.0  # like the zero padding between parameters: must stay exactly zero
    grads = torch.randn(5, n) * torch.logspace(-4, 1, n)  # magnitudes over five decades
    grads[:, :16] = 0.0
    grads[2, 100:150] = 0.0  # a step without gradient for some
    lrs = torch.tensor([1e-3, 5e-4, 2e-3, 1e-4, 3e-3], dtype=torch.float64)
    sets = [
        dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),
        dict(betas=(0.9, 0.999), eps=1e-6, weight_decay=1e-2),
        dict(betas=(0.95, 0.98), eps=1e-8, weight_decay=1e-2),
        dict(betas=(0.95, 0.98), eps=1e-6, weight_decay=0.0),
        dict(betas=(0.3, 0.9), eps=1e-8, weight_decay=1e-2),  # 1 - beta1 >= 0.5: torch's other lerp formula
    ]
    for k, hp in enumerate(sets):
        p = torch.nn.Parameter(p0.clone())
        opt = torch.optim.AdamW([p], lr=float(lrs[0]), **hp)
        for s in range(5):
            opt.param_groups[0]["lr"] = float(lrs[s])
            p.grad = grads[s].clone()
            opt.step()
        st = opt.state[p]
        T[f"adamw/{k}/p"] = p.detach().clone()
        T[f"adamw/{k}/m"] = st["exp_avg"].clone()
        T[f"adamw/{k}/v"] = st["exp_avg_sq"].clone()
    T["adamw/p0"], T["adamw/grads"], T["adamw/lrs"] = p0, grads, lrs
    META["adamw_sets"] = json.dumps([dict(beta1=h["betas"][0], beta2=h["betas"][1], eps=h["eps"],
                                          weight_decay=h["weight_decay"]) for h in sets])


def clip():
    n = 1000
    g = torch.randn(n) * 0.3
    norm = float(torch.linalg.vector_norm(g))
    max_norms = [0.5 * norm, 2.0 * norm]
    for k, mx in enumerate(max_norms):
        p = torch.nn.Parameter(torch.zeros(n))
        p.grad = g.clone()
        tn = torch.nn.utils.clip_grad_norm_([p], mx)
        T[f"clip/{k}/norm"] = tn.reshape(1).float()
        T[f"clip/{k}/g"] = p.grad.clone()
    T["clip/g"] = g
    bad = g.clone()
    bad[537] = float("nan")
    T["clip/nan_g"] = bad
    META["clip_max_norms"] = json.dumps(max_norms)


def lr():
    cases = [
        dict(name="linear", warmup=10, total=100),
        dict(name="linear", warmup=0, total=50),
        dict(name="cosine", warmup=10, total=100),
        dict(name="cosine", warmup=7, total=60, num_cycles=3),  # get_scheduler ignores num_cycles for cosine
        dict(name="cosine_with_restarts", warmup=10, total=100, num_cycles=3),
        dict(name="cosine_with_restarts", warmup=0, total=77, num_cycles=1),
        dict(name="polynomial", warmup=10, total=100, power=2.0),
        dict(name="polynomial", warmup=5, total=90, power=1.0),
        dict(name="polynomial", warmup=0, total=80, power=0.5),
        dict(name="constant", warmup=10, total=100),
        dict(name="constant_with_warmup", warmup=10, total=100),
        dict(name="constant_with_warmup", warmup=0, total=100),
    ]
    base_lr = 1e-4
    steps = 110  # past the end: clamps and polynomial's lr_end
    for k, c in enumerate(cases):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.AdamW([p], lr=base_lr)
        sch = get_scheduler(c["name"], optimizer=opt, num_warmup_steps=c["warmup"], num_training_steps=c["total"],
                            num_cycles=c.get("num_cycles", 1), power=c.get("power", 1.0))
        out = [opt.param_groups[0]["lr"]]
        for _ in range(steps):
            opt.step()
            sch.step()
            out.append(opt.param_groups[0]["lr"])
        T[f"lr/{k}"] = torch.tensor(out, dtype=torch.float64)
        c.setdefault("num_cycles", 1)
        c.setdefault("power", 1.0)
        c["base_lr"] = base_lr
    META["lr_cases"] = json.dumps(cases)


def ema():
    n = 128
    init = torch.randn(n)
    params = []
    cur = init.clone()
    for s in range(30):
        cur = cur + 0.05 * torch.randn(n)
        params.append(cur.clone())
    cases = [
        dict(),  # EMAModel's defaults, as train_text_to_image.py builds it
        dict(use_ema_warmup=True, inv_gamma=2.0, power=0.75, update_after_step=3),
        dict(decay=0.8, min_decay=0.3, update_after_step=3),  # both clamps
    ]
    for k, c in enumerate(cases):
        p = torch.nn.Parameter(init.clone())
        e = EMAModel([p], **c)
        decays = []
        for s in range(30):
            with torch.no_grad():
                p.copy_(params[s])
            e.step([p])
            decays.append(e.cur_decay_value)
            if s == 4:
                T[f"ema/{k}/shadow5"] = e.shadow_params[0].clone()
        T[f"ema/{k}/shadow30"] = e.shadow_params[0].clone()
        T[f"ema/{k}/decay"] = torch.tensor(decays, dtype=torch.float64)
    T["ema/init"] = init
    T["ema/params"] = torch.stack(params)
    META["ema_cases"] = json.dumps(cases)


def diffusion():
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    shape = (3, 4, 8, 8)
    x0 = torch.randn(shape)
    noise = torch.randn(shape)
    r_off = torch.randn(3, 4, 1, 1)
    r_pert = torch.randn(shape)
    pred = torch.randn(shape)
    t = torch.tensor([0, 500, 999], dtype=torch.long)
    noise_offset, input_perturbation, snr_gamma = 0.1, 0.1, 5.0
    # train_text_to_image.py, in order
    n = noise.clone()
    n += noise_offset * r_off
    new_noise = n + input_perturbation * r_pert
    noisy = sched.add_noise(x0, new_noise, t)
    velocity = sched.get_velocity(x0, n, t)
    snr = compute_snr(sched, t)
    w = {}
    for pt in ("epsilon", "v_prediction"):
        mw = torch.stack([snr, snr_gamma * torch.ones_like(t)], dim=1).min(dim=1)[0]
        mw = mw / snr if pt == "epsilon" else mw / (snr + 1)
        w[pt] = mw
    T["diff/w_eps"], T["diff/w_v"] = w["epsilon"], w["v_prediction"]
    for pt, target in (("eps", n), ("v", velocity)):
        pp = pred.clone().requires_grad_(True)
        loss = torch.nn.functional.mse_loss(pp.float(), target.float(), reduction="mean")
        loss.backward()
        T[f"diff/loss_{pt}"] = loss.detach().reshape(1).double()
        T[f"diff/grad_{pt}"] = pp.grad.clone()
        pp = pred.clone().requires_grad_(True)
        loss = torch.nn.functional.mse_loss(pp.float(), target.float(), reduction="none")
        loss = loss.mean(dim=list(range(1, len(loss.shape)))) * w["epsilon" if pt == "eps" else "v_prediction"]
        loss = loss.mean()
        loss.backward()
        T[f"diff/loss_{pt}_snr"] = loss.detach().reshape(1).double()
        T[f"diff/grad_{pt}_snr"] = pp.grad.clone()
    gen = torch.Generator("cpu").manual_seed(1234)
    T["diff/randint"] = torch.randint(0, 1000, (8,), generator=gen)
    T["diff/alphas_cumprod"] = sched.alphas_cumprod.clone()
    T.update({"diff/x0": x0, "diff/noise": noise, "diff/r_offset": r_off.reshape(3, 4), "diff/r_perturb": r_pert,
              "diff/pred": pred, "diff/t": t, "diff/noise_off": n, "diff/new_noise": new_noise,
              "diff/noisy": noisy, "diff/velocity": velocity, "diff/snr": snr})
    META["diff"] = json.dumps(dict(noise_offset=noise_offset, input_perturbation=input_perturbation,
                                   snr_gamma=snr_gamma, randint_seed=1234))


adamw()
clip()
lr()
ema()
diffusion()
os.makedirs(os.path.dirname(os.path.abspath(OUT)), exist_ok=True)
save_file({k: v.contiguous() for k, v in T.items()}, OUT, metadata=META)
print(OUT, os.path.getsize(OUT), "bytes,", len(T), "tensors")
