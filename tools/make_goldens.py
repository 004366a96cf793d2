#!/usr/bin/env python3
"""Writes a golden.safetensors for a diffusers model folder, with diffusers
(+ transformers) as the reference, computed in float64 on the CPU and stored
as float32 (integer tensors as int64), in the key layout of
/work/shared/reference/README.md, so the same C test code reads every pack.

    python3 tools/make_goldens.py MODEL_DIR OUT.safetensors [options]

Sections (--sections, default all of text,unet,vae,scheduler,pipeline):
  text_encoder[_2]/{input_ids, last_hidden_state, penultimate_hidden_state,
                    pooler_output | text_embeds}        the 4 prompts
  unet/in/{sample, timestep, encoder_hidden_states[, text_embeds, time_ids], target}
  unet/out/{sample, mse_loss}    loss = mean((out - target)^2)
  unet/grad/{sample, encoder_hidden_states}       d loss / d input (always)
  unet/grad/param/<name>         d loss / d parameter (only with --grads: large)
  vae/in/image, vae/out/{posterior_mean, posterior_logvar, decoded_from_mean}
  scheduler/alphas_cumprod, scheduler/<sampler>/timesteps_<n>, sigmas_<n>
                                 for n in (--steps, 50), after set_timesteps(n)
  pipeline/in/latents            initial noise passed as latents=
  pipeline/<sampler>/latents     output_type="latent" (before / scaling_factor)
  pipeline/<sampler>/noise       [k, *latent_shape]: the k tensors the sampler's
                                 step() drew, in order (ddim_eta, euler_a)
  pipeline/<first sampler>/image VAE decode of latents / scaling_factor, [-1,1]
                                 before clamping
  pipeline/meta/{guidance_scale, steps}
Metadata: prompts (JSON list), seed, family, dtype, stored (weights' dtype),
samplers (JSON: class, overrides, eta and the effective scheduler config of
each sampler key), pipeline (height, width, negative_prompt), diffusers.

Samplers (--samplers, comma list; each <Class>.from_config(pipe.scheduler.config,
**overrides)): ddim (eta 0), ddim_eta (eta 0.5), euler, euler_a
(EulerAncestralDiscreteScheduler), euler_karras, euler_a_karras (skipped when
the installed diffusers has no karras sigmas for it), dpmpp_2m,
dpmpp_2m_karras, pndm, lms. Samplers that draw noise inside step() get it
from a list pre-drawn with a seeded float64 torch generator: the
`randn_tensor` name the scheduler's module imported is replaced for the run,
and the run must consume exactly one tensor per step. Every other sampler
gets a replacement that fails if called, so no hidden randomness slips in.

Weights are read as stored and upcast (from_pretrained(torch_dtype=float64)):
fp16 files give their fp16 values exactly; this is checked against the files.
Note that diffusers keeps some float32 inside a float64 run: the schedulers'
betas, alphas_cumprod and sigmas, the sample in the Euler and DPM++ step(),
and the UNet's sinusoidal timestep embedding (exp, sin, cos in float32, so
CPU and GPU libm differ there by an ulp, which moves the UNet output ~1e-7
and the time-embedding parameter gradients ~5e-6 relative). That is part of
the reference, not an error of this script.

Inputs are drawn from torch.Generator().manual_seed(--seed) in a fixed order
(unet sample, unet target, vae image, pipeline latents), float64; --inputs-from
GOLDEN takes unet/in/*, vae/in/image and pipeline/in/latents from another
golden instead (for reproducing it, or for sharing its latents). A sampler's
noise comes from torch.Generator().manual_seed(seed * 1000 + crc32(name) % 1000).
Every input (*/in/*, the UNet conditioning, the noise) is rounded to float32
values before it is used, so what is stored is exactly what was used.

Options: --height/--width (pipeline, pixels, non-square allowed), --steps (4),
--guidance (7.5 SD, 5.0 SDXL), --negative (SD: prompt 1 "" as negative prompt;
without it SD runs without a negative prompt and SDXL uses zeros through
force_zeros_for_empty_prompt), --unet-shape 2,4,16,16, --unet-timesteps 10,900,
--vae-shape 1,3,64,64, --prompts-from (default tests/data/tiny-sd/golden.safetensors,
the shared packs' 4 prompts), --family (default from the folder), --compare REF
(prints max|ours-ref|/max|ref| for each key in both files), --config-defaults
KEYS (drop these keys from the model's scheduler config before from_config, so
each sampler class uses its own default for them).

Every sampler starts from the scheduler config loaded from the folder, with
diffusers' from_config rules: a key the file does not set (listed in the
config's _use_default_values) takes the new class's own default. So
tests/data/tiny-sd (whose scheduler_config.json sets no timestep_spacing, like
the config the shared golden was made from) gives "leading" to DDIM and PNDM
but "linspace" to Euler, Euler a, DPM++ and LMS; tests/data/tiny-sdxl and
tiny-sd2v set "leading" for all. The metadata's samplers entry records the
effective config of each. (The copy in /work/shared/reference/tiny-sd/tiny-sd
does set "leading"; with it, --config-defaults timestep_spacing reproduces
the shared golden.)

Examples (from the repository root):
  # reproduce the shared tiny-sd golden's outputs from its own inputs
  python3 tools/make_goldens.py tests/data/tiny-sd /tmp/sd.safetensors --seed 1 --negative --grads \\
      --inputs-from /work/shared/reference/tiny-sd/golden.safetensors \\
      --compare /work/shared/reference/tiny-sd/golden.safetensors
  # reproduce the shared tiny-sdxl golden (euler first: its image is euler's)
  python3 tools/make_goldens.py tests/data/tiny-sdxl /tmp/sdxl.safetensors --seed 3 --grads \\
      --samplers euler,ddim,dpmpp_2m,pndm --inputs-from /work/shared/reference/tiny-sdxl/golden.safetensors \\
      --compare /work/shared/reference/tiny-sdxl/golden.safetensors
  # the extra-sampler files (pipeline/* only), on the shared packs' latents
  python3 tools/make_goldens.py tests/data/tiny-sd tests/data/tiny-sd/golden_samplers.safetensors \\
      --seed 1 --negative --sections pipeline --samplers euler_a,euler_karras,dpmpp_2m_karras,ddim_eta,lms \\
      --inputs-from tests/data/tiny-sd/golden.safetensors
  python3 tools/make_goldens.py tests/data/tiny-sdxl tests/data/tiny-sdxl/golden_samplers.safetensors \\
      --seed 3 --sections pipeline --samplers euler_a,dpmpp_2m_karras \\
      --inputs-from tests/data/tiny-sdxl/golden.safetensors
  # tests/data/tiny-sd2v/golden.safetensors: see tools/make_tiny_sd2v.py
"""
import argparse
import glob
import json
import os
import sys
import zlib

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
F64 = torch.float64

# sampler key -> (scheduler class name, from_config overrides, eta)
SAMPLERS = {
    "ddim": ("DDIMScheduler", {}, 0.0),
    "ddim_eta": ("DDIMScheduler", {}, 0.5),
    "euler": ("EulerDiscreteScheduler", {}, 0.0),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}, 0.0),
    "euler_karras": ("EulerDiscreteScheduler", {"use_karras_sigmas": True}, 0.0),
    "euler_a_karras": ("EulerAncestralDiscreteScheduler", {"use_karras_sigmas": True}, 0.0),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}, 0.0),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, 0.0),
    "pndm": ("PNDMScheduler", {}, 0.0),
    "lms": ("LMSDiscreteScheduler", {}, 0.0),
}
# the samplers whose step() draws one noise tensor per call
NOISY = {"ddim_eta", "euler_a", "euler_a_karras"}


def ints(s):
    return [int(x) for x in s.split(",")] if s else []


def f32(t):
    """float64 holding float32 values: stored inputs are then exactly the used ones."""
    return t.to(torch.float32).to(F64) if t.is_floating_point() else t


def store(t):
    """float -> float32, integer -> int64, contiguous, detached, on the CPU."""
    t = t.detach().cpu()
    if t.is_floating_point():
        return t.to(torch.float32).contiguous()
    return t.to(torch.int64).contiguous()


def sampler_supported(name):
    import inspect
    import diffusers
    cls_name, over, _ = SAMPLERS[name]
    params = inspect.signature(getattr(diffusers, cls_name).__init__).parameters
    return all(k in params for k in over)


# scheduler config keys to drop before from_config, so that each scheduler
# class uses its own default for them (--config-defaults)
CONFIG_DEFAULTS = []
# the model's own scheduler config, as loaded: every sampler starts from it,
# not from whatever scheduler the pipeline holds after an earlier run
BASE_CONFIG = {}


def make_scheduler(pipe, name):
    import diffusers
    cls_name, over, _ = SAMPLERS[name]
    config = {k: v for k, v in BASE_CONFIG.items() if k not in CONFIG_DEFAULTS}
    return getattr(diffusers, cls_name).from_config(config, **over)


def sampler_meta(pipe, name):
    """What the C side needs to rebuild the sampler: class, eta and the
    effective config (after from_config and overrides)."""
    s = make_scheduler(pipe, name)
    cfg = {k: v for k, v in s.config.items() if not k.startswith("_") and k != "trained_betas"}
    return {"class": SAMPLERS[name][0], "overrides": SAMPLERS[name][1], "eta": SAMPLERS[name][2], "config": cfg}


# ---- loading ---------------------------------------------------------------


def detect_family(folder):
    with open(os.path.join(folder, "model_index.json")) as f:
        index = json.load(f)
    if "XL" in index["_class_name"]:
        return "sdxl"
    with open(os.path.join(folder, "unet", "config.json")) as f:
        unet = json.load(f)
    # SD 2.x: linear projections in the transformers (SD 1.x has 1x1 convs)
    return "sd2" if unet.get("use_linear_projection") else "sd"


def load_pipeline(folder, family):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    kw = {} if family == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
    pipe = cls.from_pretrained(folder, torch_dtype=F64, **kw)
    pipe.set_progress_bar_config(disable=True)
    BASE_CONFIG.clear()
    BASE_CONFIG.update(pipe.scheduler.config)
    return pipe


def check_weights(pipe, folder):
    """Every stored tensor must be in the model as exactly its stored value
    upcast to float64. Returns the set of stored dtypes."""
    from safetensors import safe_open
    dtypes = set()
    for comp in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, comp, None)
        if module is None:
            continue
        sd = module.state_dict()
        files = sorted(glob.glob(os.path.join(folder, comp, "*.safetensors")))
        if not files:
            sys.exit(f"{folder}/{comp}: no .safetensors weights")
        n = 0
        for path in files:
            with safe_open(path, "pt") as f:
                for k in f.keys():
                    t = f.get_tensor(k)
                    dtypes.add(str(t.dtype).replace("torch.", ""))
                    if k not in sd:
                        sys.exit(f"{path}: {k} is not a parameter of the loaded {comp}")
                    if sd[k].dtype != F64 or not torch.equal(sd[k], t.to(F64)):
                        sys.exit(f"{path}: {k} differs from its stored value upcast to float64")
                    n += 1
        missing = [k for k in sd if k not in set().union(*[safe_open(p, "pt").keys() for p in files])
                   and not k.endswith("position_ids")]
        if missing:
            sys.exit(f"{folder}/{comp}: parameters not in the files: {missing[:5]}")
        print(f"  {comp}: {n} tensors, float64 = stored values", file=sys.stderr)
    return dtypes


# ---- sections --------------------------------------------------------------


def encode_text(pipe, prompts, out):
    """text_encoder[_2]/*: all 4 prompts, padded to 77."""
    res = {}
    for tok_name, te_name in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")):
        tok, te = getattr(pipe, tok_name, None), getattr(pipe, te_name, None)
        if te is None:
            continue
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        with torch.no_grad():
            o = te(ids, output_hidden_states=True)
        r = {"input_ids": ids, "last_hidden_state": o.last_hidden_state,
             "penultimate_hidden_state": o.hidden_states[-2]}
        if getattr(o, "text_embeds", None) is not None:
            r["text_embeds"] = o.text_embeds
        else:
            r["pooler_output"] = o.pooler_output
        for k, v in r.items():
            out[f"{te_name}/{k}"] = v
        res[te_name] = r
    return res


def unet_inputs(pipe, family, text, draws, size):
    """The conditioning for prompts 0 and 1, as the pipelines build it."""
    if family == "sdxl":
        ehs = torch.cat([text["text_encoder"]["penultimate_hidden_state"][:2],
                         text["text_encoder_2"]["penultimate_hidden_state"][:2]], dim=-1)
        h, w = size
        return {"encoder_hidden_states": ehs, "text_embeds": text["text_encoder_2"]["text_embeds"][:2],
                # row 0 as the pipeline builds it (original size, crop top-left, target size);
                # row 1 varies every field, as the shared SDXL pack does
                "time_ids": torch.tensor([[h, w, 0, 0, h, w], [2 * h, w, 3, 5, h, w]], dtype=F64)}
    return {"encoder_hidden_states": text["text_encoder"]["last_hidden_state"][:2]}


def run_unet(pipe, inp, grads, out):
    unet = pipe.unet
    sample = inp["sample"].clone().requires_grad_(True)
    ehs = inp["encoder_hidden_states"].clone().requires_grad_(True)
    added = None
    if "text_embeds" in inp:
        added = {"text_embeds": inp["text_embeds"], "time_ids": inp["time_ids"]}
    unet.zero_grad(set_to_none=True)
    for p in unet.parameters():
        p.requires_grad_(grads)
    pred = unet(sample, inp["timestep"], encoder_hidden_states=ehs, added_cond_kwargs=added).sample
    loss = ((pred - inp["target"]) ** 2).mean()
    loss.backward()
    for k, v in inp.items():
        out[f"unet/in/{k}"] = v
    out["unet/out/sample"] = pred
    out["unet/out/mse_loss"] = loss.reshape(1)
    out["unet/grad/sample"] = sample.grad
    out["unet/grad/encoder_hidden_states"] = ehs.grad
    if grads:
        for name, p in unet.named_parameters():
            out[f"unet/grad/param/{name}"] = p.grad
    for p in unet.parameters():
        p.requires_grad_(False)


def run_vae(pipe, image, out):
    vae = pipe.vae
    with torch.no_grad():
        post = vae.encode(image).latent_dist
        dec = vae.decode(post.mean).sample
    out["vae/in/image"] = image
    out["vae/out/posterior_mean"] = post.mean
    out["vae/out/posterior_logvar"] = post.logvar
    out["vae/out/decoded_from_mean"] = dec


def run_schedules(pipe, samplers, steps, out):
    out["scheduler/alphas_cumprod"] = pipe.scheduler.alphas_cumprod
    for name in samplers:
        for n in sorted({steps, 50}):
            s = make_scheduler(pipe, name)
            s.set_timesteps(n, device="cpu")
            out[f"scheduler/{name}/timesteps_{n}"] = s.timesteps
            if isinstance(getattr(s, "sigmas", None), torch.Tensor):
                out[f"scheduler/{name}/sigmas_{n}"] = s.sigmas


class NoiseFeed:
    """Stands in for randn_tensor in a scheduler module: hands out pre-drawn
    tensors in order and counts them."""

    def __init__(self, tensors):
        self.tensors, self.used = tensors, 0

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        if self.tensors is None:
            raise RuntimeError("this sampler drew noise but was not expected to")
        if self.used >= len(self.tensors):
            raise RuntimeError(f"sampler drew more than {len(self.tensors)} noise tensors")
        t = self.tensors[self.used]
        if tuple(shape) != tuple(t.shape):
            raise RuntimeError(f"noise of shape {tuple(shape)} asked, {tuple(t.shape)} drawn")
        self.used += 1
        return t.to(dtype=dtype or F64)


def run_pipeline(pipe, family, prompts, samplers, args, latents, out):
    guidance = args.guidance if args.guidance is not None else (5.0 if family == "sdxl" else 7.5)
    neg = prompts[1] if args.negative else None
    out["pipeline/in/latents"] = latents
    out["pipeline/meta/guidance_scale"] = torch.tensor([guidance])
    out["pipeline/meta/steps"] = torch.tensor([args.steps])
    for i, name in enumerate(samplers):
        sched = make_scheduler(pipe, name)
        pipe.scheduler = sched
        module = sys.modules[type(sched).__module__]
        noise = None
        if name in NOISY:
            g = torch.Generator().manual_seed(args.seed * 1000 + zlib.crc32(name.encode()) % 1000)
            noise = [f32(torch.randn(latents.shape, generator=g, dtype=F64)) for _ in range(args.steps)]
        feed = NoiseFeed(noise)
        saved = getattr(module, "randn_tensor", None)
        if saved is None and noise is not None:
            sys.exit(f"{name}: {module.__name__} has no randn_tensor to replace")
        if saved is not None:
            module.randn_tensor = feed
        try:
            with torch.no_grad():
                res = pipe(prompt=prompts[0], negative_prompt=neg, height=args.height, width=args.width,
                           num_inference_steps=args.steps, guidance_scale=guidance, latents=latents.clone(),
                           eta=SAMPLERS[name][2], output_type="latent").images
        finally:
            if saved is not None:
                module.randn_tensor = saved
        if noise is not None:
            if feed.used != len(noise):
                sys.exit(f"{name}: {feed.used} noise tensors used, {len(noise)} drawn")
            out[f"pipeline/{name}/noise"] = torch.stack(noise)
        out[f"pipeline/{name}/latents"] = res
        if i == 0:
            vae = pipe.vae
            if getattr(vae.config, "latents_mean", None) is not None or getattr(vae.config, "shift_factor", None):
                sys.exit("latents_mean / shift_factor VAEs are not handled")
            with torch.no_grad():
                out[f"pipeline/{name}/image"] = vae.decode(res / vae.config.scaling_factor).sample
        print(f"  pipeline {name}: done", file=sys.stderr)


# ---- comparison ------------------------------------------------------------


def compare(path, ref_path):
    from safetensors import safe_open
    a, b = safe_open(path, "pt"), safe_open(ref_path, "pt")
    ka, kb = set(a.keys()), set(b.keys())
    worst = worst_param = 0.0
    nparam = 0
    for k in sorted(ka & kb):
        x, y = a.get_tensor(k), b.get_tensor(k)
        if x.shape != y.shape:
            print(f"{k}: shape {tuple(x.shape)} vs {tuple(y.shape)}")
            continue
        if not x.is_floating_point():
            print(f"{k}: {'equal' if torch.equal(x, y) else 'DIFFERENT'}")
            continue
        x, y = x.double(), y.double()
        rel = ((x - y).abs().max() / y.abs().max().clamp_min(1e-300)).item()
        if k.startswith("unet/grad/param/"):
            worst_param = max(worst_param, rel)
            nparam += 1
        else:
            print(f"{k}: max|d|/max|ref| = {rel:.3e}")
        worst = max(worst, rel)
    if nparam:
        print(f"unet/grad/param/* ({nparam} keys): worst max|d|/max|ref| = {worst_param:.3e}")
    print(f"worst over {len(ka & kb)} common keys: {worst:.3e}")
    if ka - kb:
        print(f"only in {path}: {len(ka - kb)} keys")
    if kb - ka:
        print(f"only in {ref_path}: {len(kb - ka)} keys, e.g. {sorted(kb - ka)[:3]}")


# ---- main ------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--samplers", default="ddim,euler,dpmpp_2m,pndm")
    ap.add_argument("--negative", action="store_true")
    ap.add_argument("--grads", action="store_true")
    ap.add_argument("--sections", default="text,unet,vae,scheduler,pipeline")
    ap.add_argument("--inputs-from")
    ap.add_argument("--unet-shape", default="2,4,16,16")
    ap.add_argument("--unet-timesteps", default="10,900")
    ap.add_argument("--vae-shape", default="1,3,64,64")
    ap.add_argument("--prompts-from", default=os.path.join(REPO, "tests", "data", "tiny-sd", "golden.safetensors"))
    ap.add_argument("--family")
    ap.add_argument("--compare")
    ap.add_argument("--config-defaults", default="")
    args = ap.parse_args()
    CONFIG_DEFAULTS.extend(k for k in args.config_defaults.split(",") if k)

    from safetensors import safe_open
    from safetensors.torch import save_file
    import diffusers

    torch.set_grad_enabled(True)
    torch.use_deterministic_algorithms(True)
    sections = set(args.sections.split(","))
    unknown = sections - {"text", "unet", "vae", "scheduler", "pipeline"}
    if unknown:
        sys.exit(f"unknown sections {sorted(unknown)}")
    samplers = []
    for name in args.samplers.split(","):
        if name not in SAMPLERS:
            sys.exit(f"unknown sampler {name}; known: {', '.join(SAMPLERS)}")
        if not sampler_supported(name):
            print(f"skipping {name}: diffusers {diffusers.__version__} has no "
                  f"{SAMPLERS[name][1]} for {SAMPLERS[name][0]}", file=sys.stderr)
            continue
        samplers.append(name)

    with safe_open(args.prompts_from, "pt") as f:
        prompts = json.loads(f.metadata()["prompts"])
    assert len(prompts) == 4 and prompts[1] == ""
    family = args.family or detect_family(args.model)
    print(f"{args.model}: family {family}", file=sys.stderr)
    pipe = load_pipeline(args.model, family)
    stored = check_weights(pipe, args.model)

    # fixed draw order, whatever is later replaced or left out
    g = torch.Generator().manual_seed(args.seed)
    ushape = ints(args.unet_shape)
    vsf = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    if args.height % vsf or args.width % vsf:
        sys.exit(f"--height/--width must be multiples of {vsf}")
    draws = {
        "unet/in/sample": torch.randn(ushape, generator=g, dtype=F64),
        "unet/in/target": torch.randn(ushape, generator=g, dtype=F64),
        "vae/in/image": torch.rand(ints(args.vae_shape), generator=g, dtype=F64) * 2 - 1,
        "pipeline/in/latents": torch.randn([1, pipe.unet.config.in_channels, args.height // vsf,
                                            args.width // vsf], generator=g, dtype=F64),
        "unet/in/timestep": torch.tensor(ints(args.unet_timesteps), dtype=torch.int64),
    }
    given = {}
    if args.inputs_from:
        with safe_open(args.inputs_from, "pt") as f:
            for k in f.keys():
                if k.startswith("unet/in/") or k in ("vae/in/image", "pipeline/in/latents"):
                    t = f.get_tensor(k)
                    given[k] = t.to(F64) if t.is_floating_point() else t
        draws.update({k: v for k, v in given.items() if k in draws})
    draws = {k: f32(v) for k, v in draws.items()}
    lat = draws["pipeline/in/latents"]
    if tuple(lat.shape[2:]) != (args.height // vsf, args.width // vsf):
        sys.exit(f"pipeline/in/latents {tuple(lat.shape)} does not fit {args.height}x{args.width}")

    out = {}
    text = encode_text(pipe, prompts, out) if sections & {"text", "unet"} else None
    if "unet" in sections:
        inp = {"sample": draws["unet/in/sample"], "timestep": draws["unet/in/timestep"]}
        inp.update({k: f32(v) for k, v in unet_inputs(pipe, family, text, draws, (args.height, args.width)).items()})
        for k, v in given.items():  # conditioning given by the file wins, but must agree
            if k.startswith("unet/in/") and k[8:] in inp and k[8:] not in ("sample", "timestep"):
                d = (inp[k[8:]] - v).abs().max().item()
                print(f"  {k}: given vs computed max|d| = {d:.3e}", file=sys.stderr)
                inp[k[8:]] = v
        inp["target"] = draws["unet/in/target"]
        run_unet(pipe, inp, args.grads, out)
    if "text" not in sections:
        out = {k: v for k, v in out.items() if not k.startswith("text_encoder")}
    if "vae" in sections:
        run_vae(pipe, draws["vae/in/image"], out)
    if "scheduler" in sections:
        run_schedules(pipe, samplers, args.steps, out)
    if "pipeline" in sections:
        run_pipeline(pipe, family, prompts, samplers, args, lat, out)

    meta = {
        "prompts": json.dumps(prompts), "seed": str(args.seed), "family": json.dumps(family),
        "dtype": json.dumps("float64 on CPU"), "stored": json.dumps(",".join(sorted(stored))),
        "samplers": json.dumps({n: sampler_meta(pipe, n) for n in samplers}),
        "diffusers": json.dumps(diffusers.__version__),
    }
    if "pipeline" in sections:
        meta["pipeline"] = json.dumps({"height": args.height, "width": args.width,
                                       "negative_prompt": prompts[1] if args.negative else None})
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file({k: store(v) for k, v in sorted(out.items())}, args.out, metadata=meta)
    os.chmod(args.out, 0o644)
    print(f"wrote {args.out}: {len(out)} tensors, {os.path.getsize(args.out)} bytes", file=sys.stderr)
    if args.compare:
        compare(args.out, args.compare)


if __name__ == "__main__":
    main()
