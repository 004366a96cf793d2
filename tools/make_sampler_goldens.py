#!/usr/bin/env python3
"""Golden sampling runs for tests/test_samplers.c, made by diffusers.

Each case builds a scheduler as `Class.from_config(config, **overrides)`,
then runs diffusers' sampling loop in float64 on the CPU with a small
deterministic fake model instead of a UNet:

    sched.set_timesteps(steps)
    x = x0 * sched.init_noise_sigma
    for t in sched.timesteps:
        inp = sched.scale_model_input(x, t)
        out = fake_model(inp, t)
        x = sched.step(out, t, x, **kw).prev_sample

Noise that a step draws (DDIM with eta > 0, Euler ancestral) comes from a
pre-drawn list through a patched `randn_tensor` in the scheduler's module,
and is stored as `<case>/noise` [k, n], k = the number of draws.

Output: tests/data/samplers/goldens.safetensors with, per case,
`<case>/timesteps` (F64), `<case>/sigmas` (F32, where the scheduler has
them), `<case>/x` (F64, the final latents), `<case>/noise` (F32), the shared
`x0` [1,4,5,7] (F32), and metadata "cases": a JSON list of
{name, kind, steps, config, karras, eta, init_noise_sigma}.

Usage: python3 tools/make_sampler_goldens.py [out.safetensors]
"""
import json
import math
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

import importlib
import inspect

import diffusers
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, LMSDiscreteScheduler, PNDMScheduler)

CLASSES = {
    "ddim": (DDIMScheduler, importlib.import_module("diffusers.schedulers.scheduling_ddim")),
    "euler": (EulerDiscreteScheduler, importlib.import_module("diffusers.schedulers.scheduling_euler_discrete")),
    "euler_a": (EulerAncestralDiscreteScheduler, importlib.import_module("diffusers.schedulers.scheduling_euler_ancestral_discrete")),
    "dpmpp_2m": (DPMSolverMultistepScheduler, importlib.import_module("diffusers.schedulers.scheduling_dpmsolver_multistep")),
    "pndm": (PNDMScheduler, importlib.import_module("diffusers.schedulers.scheduling_pndm")),
    "lms": (LMSDiscreteScheduler, importlib.import_module("diffusers.schedulers.scheduling_lms_discrete")),
}

SHAPE = (1, 4, 5, 7)
N = int(np.prod(SHAPE))

# Scheduler configs as model folders ship them.
SD_PNDM = {  # SD 1.x (as tests/data/tiny-sd)
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "epsilon", "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None,
}
SDXL_EULER = {  # SDXL (as tests/data/tiny-sdxl): no clip_sample / set_alpha_to_one / skip_prk_steps keys
    "_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "beta_start": 0.00085, "final_sigmas_type": "zero", "interpolation_type": "linear", "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "rescale_betas_zero_snr": False, "sigma_max": None, "sigma_min": None,
    "steps_offset": 1, "timestep_spacing": "leading", "timestep_type": "discrete", "trained_betas": None,
    "use_beta_sigmas": False, "use_exponential_sigmas": False, "use_karras_sigmas": False,
}
SD2_V = {  # SD 2.x 768 (v-prediction)
    "_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction", "set_alpha_to_one": False,
    "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None,
}
ZERO_SNR = {  # "Common Diffusion Noise Schedules are Flawed": trailing, zero terminal SNR, v-prediction
    "_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction", "set_alpha_to_one": False,
    "steps_offset": 0, "timestep_spacing": "trailing", "rescale_betas_zero_snr": True,
}
LINSPACE = {  # DDPM-style linear betas, linspace spacing
    "_class_name": "DDPMScheduler", "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
    "num_train_timesteps": 1000, "timestep_spacing": "linspace", "prediction_type": "epsilon",
}
COSINE = {  # squaredcos_cap_v2, set_alpha_to_one, no offset, 500 train steps
    "_class_name": "DDIMScheduler", "beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 500,
    "clip_sample": False, "set_alpha_to_one": True, "steps_offset": 0, "timestep_spacing": "leading",
}
SAMPLE_CLIP = {  # x0-prediction with clipping (DDIM's clip_sample default True applies)
    "_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "prediction_type": "sample", "clip_sample_range": 0.8, "steps_offset": 1,
}


def with_(cfg, **kw):
    c = dict(cfg)
    c.update(kw)
    return c


# (name, kind, config, steps, karras, eta)
CASES = [
    ("ddim_sd_4", "ddim", SD_PNDM, 4, False, 0.0),
    ("ddim_sd_10", "ddim", SD_PNDM, 10, False, 0.0),
    ("ddim_sdxl_4", "ddim", SDXL_EULER, 4, False, 0.0),  # clip_sample, set_alpha_to_one: DDIM defaults (True)
    ("ddim_v_10", "ddim", SD2_V, 10, False, 0.0),
    ("ddim_zsnr_10", "ddim", ZERO_SNR, 10, False, 0.0),
    ("ddim_linspace_10", "ddim", LINSPACE, 10, False, 0.0),
    ("ddim_cos_4", "ddim", COSINE, 4, False, 0.0),
    ("ddim_sample_4", "ddim", SAMPLE_CLIP, 4, False, 0.0),
    ("ddim_eta_sd_10", "ddim", SD_PNDM, 10, False, 0.7),
    ("ddim_eta_v_4", "ddim", SD2_V, 4, False, 0.7),
    ("ddim_eta_zsnr_4", "ddim", ZERO_SNR, 4, False, 0.7),
    ("euler_sd_4", "euler", SD_PNDM, 4, False, 0.0),
    ("euler_sd_10", "euler", SD_PNDM, 10, False, 0.0),
    ("euler_sdxl_10", "euler", SDXL_EULER, 10, False, 0.0),
    ("euler_karras_sd_10", "euler", SD_PNDM, 10, True, 0.0),
    ("euler_karras_sdxl_4", "euler", SDXL_EULER, 4, True, 0.0),
    ("euler_karras_cfg_10", "euler", with_(SDXL_EULER, use_karras_sigmas=True, sigma_min=0.05, sigma_max=10.0),
     10, False, 0.0),
    ("euler_v_10", "euler", SD2_V, 10, False, 0.0),
    ("euler_zsnr_10", "euler", ZERO_SNR, 10, False, 0.0),
    ("euler_linspace_10", "euler", LINSPACE, 10, False, 0.0),
    ("euler_karras_linspace_10", "euler", LINSPACE, 10, True, 0.0),
    ("euler_sample_4", "euler", SAMPLE_CLIP, 4, False, 0.0),
    ("euler_sigmamin_4", "euler", with_(SDXL_EULER, final_sigmas_type="sigma_min"), 4, False, 0.0),
    ("euler_continuous_v_4", "euler", with_(SD2_V, timestep_type="continuous"), 4, False, 0.0),
    ("euler_a_sd_10", "euler_a", SD_PNDM, 10, False, 0.0),
    ("euler_a_sdxl_4", "euler_a", SDXL_EULER, 4, False, 0.0),
    ("euler_a_v_4", "euler_a", SD2_V, 4, False, 0.0),
    ("euler_a_zsnr_10", "euler_a", ZERO_SNR, 10, False, 0.0),
    ("euler_a_linspace_10", "euler_a", LINSPACE, 10, False, 0.0),
    # "Euler a Karras": diffusers has no such option; the reference is EulerDiscreteScheduler's Karras
    # tables (from the keys EulerAncestralDiscreteScheduler knows) put into the ancestral scheduler
    ("euler_a_karras_sd_10", "euler_a", SD_PNDM, 10, True, 0.0),
    ("euler_a_karras_sdxl_4", "euler_a", with_(SDXL_EULER, sigma_min=0.05), 4, True, 0.0),
    ("euler_a_karras_linspace_10", "euler_a", LINSPACE, 10, True, 0.0),
    ("dpmpp_sd_4", "dpmpp_2m", SD_PNDM, 4, False, 0.0),
    ("dpmpp_sd_10", "dpmpp_2m", SD_PNDM, 10, False, 0.0),
    ("dpmpp_sdxl_10", "dpmpp_2m", SDXL_EULER, 10, False, 0.0),
    ("dpmpp_karras_sd_10", "dpmpp_2m", SD_PNDM, 10, True, 0.0),
    ("dpmpp_karras_sdxl_4", "dpmpp_2m", SDXL_EULER, 4, True, 0.0),
    ("dpmpp_karras_linspace_10", "dpmpp_2m", LINSPACE, 10, True, 0.0),
    ("dpmpp_v_10", "dpmpp_2m", SD2_V, 10, False, 0.0),
    ("dpmpp_zsnr_10", "dpmpp_2m", ZERO_SNR, 10, False, 0.0),
    ("dpmpp_linspace_10", "dpmpp_2m", LINSPACE, 10, False, 0.0),
    ("dpmpp_sample_4", "dpmpp_2m", SAMPLE_CLIP, 4, False, 0.0),
    ("dpmpp_order3_10", "dpmpp_2m", with_(SD_PNDM, solver_order=3), 10, False, 0.0),
    ("dpmpp_order3_20", "dpmpp_2m", with_(SD_PNDM, solver_order=3), 20, False, 0.0),
    ("dpmpp_heun_10", "dpmpp_2m", with_(SD_PNDM, solver_type="heun"), 10, False, 0.0),
    ("dpmpp_dpmsolver_10", "dpmpp_2m", with_(SD_PNDM, algorithm_type="dpmsolver", final_sigmas_type="sigma_min"),
     10, False, 0.0),
    ("dpmpp_sigmamin_20", "dpmpp_2m", with_(SD_PNDM, final_sigmas_type="sigma_min"), 20, False, 0.0),
    ("dpmpp_lambda_clip_10", "dpmpp_2m", with_(COSINE, lambda_min_clipped=-5.1), 10, False, 0.0),
    ("pndm_sd_4", "pndm", SD_PNDM, 4, False, 0.0),
    ("pndm_sd_10", "pndm", SD_PNDM, 10, False, 0.0),
    ("pndm_prk_sdxl_4", "pndm", SDXL_EULER, 4, False, 0.0),  # no skip_prk_steps key: PNDM's default False
    ("pndm_prk_sdxl_10", "pndm", SDXL_EULER, 10, False, 0.0),
    ("pndm_v_10", "pndm", SD2_V, 10, False, 0.0),
    ("pndm_trailing_10", "pndm", with_(SD_PNDM, timestep_spacing="trailing", steps_offset=0), 10, False, 0.0),
    ("pndm_prk_linspace_10", "pndm", LINSPACE, 10, False, 0.0),
    ("pndm_sd_1", "pndm", SD_PNDM, 1, False, 0.0),
    ("lms_sd_4", "lms", SD_PNDM, 4, False, 0.0),
    ("lms_sd_10", "lms", SD_PNDM, 10, False, 0.0),
    ("lms_karras_sd_10", "lms", SD_PNDM, 10, True, 0.0),
    ("lms_v_10", "lms", SD2_V, 10, False, 0.0),
    ("lms_linspace_10", "lms", LINSPACE, 10, False, 0.0),
    ("lms_trailing_10", "lms", with_(SD_PNDM, timestep_spacing="trailing"), 10, False, 0.0),
    ("lms_sample_4", "lms", SAMPLE_CLIP, 4, False, 0.0),
    # trailing with 61 steps: numpy's arange yields 62 entries, the last timestep -1; diffusers runs them all
    ("ddim_trailing_61", "ddim", ZERO_SNR, 61, False, 0.0),
    ("euler_trailing_61", "euler", with_(SD_PNDM, timestep_spacing="trailing"), 61, False, 0.0),
    ("dpmpp_trailing_61", "dpmpp_2m", ZERO_SNR, 61, False, 0.0),
    ("pndm_trailing_61", "pndm", with_(SD_PNDM, timestep_spacing="trailing"), 61, False, 0.0),
    ("lms_trailing_61", "lms", with_(SD_PNDM, timestep_spacing="trailing"), 61, False, 0.0),
]


def fake_model(inp, t):
    """Nonlinear in the input and in t, roughly an epsilon predictor so that no run blows up; t as the
    float the C test sees."""
    tf = float(t)
    q = inp * inp
    return 0.9 * inp + 0.1 * math.sin(tf / 100.0) * (q / (1.0 + q)) - 0.05


class NoiseFeed:
    """Stands in for diffusers.utils.torch_utils.randn_tensor: returns the next pre-drawn tensor."""

    def __init__(self, gen):
        self.gen = gen
        self.drawn = []

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        assert tuple(shape) == SHAPE, shape
        z = torch.randn(SHAPE, generator=self.gen, dtype=torch.float32)
        self.drawn.append(z.reshape(-1).clone())
        return z.to(dtype or torch.float32)


def run_case(name, kind, cfg, steps, karras, eta, x0, gen):
    cls, mod = CLASSES[kind]
    kw = {"use_karras_sigmas": True} if karras else {}
    sched = cls.from_config(cfg, **kw)
    feed = NoiseFeed(gen)
    saved = getattr(mod, "randn_tensor", None)
    mod.randn_tensor = feed
    try:
        sched.set_timesteps(steps)
        if kind == "euler_a" and karras:
            own = set(inspect.signature(cls.__init__).parameters)
            ecfg = {k: v for k, v in cfg.items() if k in own or k == "_class_name"}
            euler = EulerDiscreteScheduler.from_config(ecfg, use_karras_sigmas=True)
            euler.set_timesteps(steps)
            sched.sigmas = euler.sigmas.clone()
            sched.timesteps = euler.timesteps.clone()
        x = x0.to(torch.float64) * sched.init_noise_sigma
        step_kw = {"eta": eta} if kind == "ddim" else {}
        for t in sched.timesteps:
            inp = sched.scale_model_input(x, t)
            out = fake_model(inp, t)
            x = sched.step(out, t, x, **step_kw).prev_sample
    finally:
        if saved is None:
            del mod.randn_tensor
        else:
            mod.randn_tensor = saved
    assert x.dtype == torch.float64
    tensors = {
        f"{name}/timesteps": sched.timesteps.to(torch.float64).contiguous(),
        f"{name}/x": x.reshape(-1).contiguous(),
    }
    sig = getattr(sched, "sigmas", None)
    if isinstance(sig, torch.Tensor) and kind != "ddim" and kind != "pndm":
        tensors[f"{name}/sigmas"] = sig.to(torch.float32).contiguous()
    if feed.drawn:
        tensors[f"{name}/noise"] = torch.stack(feed.drawn).contiguous()
    ins = sched.init_noise_sigma
    meta = {"name": name, "kind": kind, "steps": steps, "config": cfg, "karras": karras, "eta": eta,
            "init_noise_sigma": float(ins)}
    return tensors, meta


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "tests", "data", "samplers", "goldens.safetensors")
    gen = torch.Generator().manual_seed(1234)
    x0 = torch.randn(SHAPE, generator=gen, dtype=torch.float32)
    tensors = {"x0": x0.reshape(-1).contiguous()}
    metas = []
    for name, kind, cfg, steps, karras, eta in CASES:
        t, m = run_case(name, kind, cfg, steps, karras, eta, x0, gen)
        tensors.update(t)
        metas.append(m)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_file(tensors, out, metadata={"cases": json.dumps(metas), "shape": json.dumps(list(SHAPE)),
                                      "diffusers": diffusers.__version__,
                                      "model": "out = 0.9*inp + 0.1*sin(t/100)*q/(1+q) - 0.05, q = inp*inp"})
    print(f"{out}: {len(metas)} cases, {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
