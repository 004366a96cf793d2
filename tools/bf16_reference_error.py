#!/usr/bin/env python3
"""How far is PyTorch's own bf16 from the float64 goldens? (issue 7)

Recomputes every output that `sdc check` compares in the tiny packs' goldens
(tests/data/{tiny-sd,tiny-sdxl,tiny-sd2v}/golden*.safetensors), from the
inputs the goldens store, the way tools/make_goldens.py made them, but in
reduced precision, and prints sdc's relative error for each:

    rel err = sqrt( sum (out - ref)^2 / sum ref^2 )    (src/pipeline/golden.c:
              sdc_rel_err, in double over float32 values; sqrt(num) if ref = 0)

Modes (--modes, comma list):
  fp64      weights and activations float64 (reproduces the golden itself)
  fp32      weights and activations float32: the sanity check of this script
            (should be ~1e-6, as `sdc check` on the CPU)
  autocast  the training setting: weights float32 (fp16 files upcast),
            torch.autocast("cpu", dtype=torch.bfloat16) around the model calls;
            the UNet loss as diffusers' training scripts write it,
            F.mse_loss(pred.float(), target.float()), outside autocast;
            the pipeline call as a whole under autocast, as diffusers'
            training scripts run their validation pipelines (so the UNet's
            bf16 output also goes through classifier-free guidance in bf16)
  bf16      the inference setting: from_pretrained(torch_dtype=torch.bfloat16),
            every input cast to bfloat16 (the initial latents and the injected
            step noise too, as a bf16 pipeline would draw them); the pipeline
            is run unchanged, so the scheduler math is whatever diffusers does
            (Euler and DPM++ upcast the sample to float32 inside step() and
            cast back; DDIM, PNDM and LMS compute in bfloat16)
  autocast32  diagnostic, not a user setting: as autocast, but in the
            pipelines only the text encoders' and the UNet's forward run under
            autocast and the UNet's output is cast to float32, so guidance and
            the scheduler see float32 (what is left is the error of the bf16
            model calls alone); other sections are the same as autocast

Outputs: the 119 that `sdc check` counts over the five golden files
(text_encoder*, the tokenizer ids, unet/out/sample, unet/grad/{sample,
encoder_hidden_states}, vae/out/*, scheduler/*, pipeline/*), plus, with
--params, the parameter gradients of golden_grads.safetensors (full values
where stored, skipping reference norms < 1e-12 as sdc check does) and the
worst relative error of the 300-odd gradient norms, and with --lora the
tiny-sd pipeline_lora/ddim entries (LoRA applied at scale 1.0).
Scheduler tables and token ids do not depend on the model precision; they
are computed once and shown in every mode.

    python3 tools/bf16_reference_error.py [--models tiny-sd,tiny-sdxl,tiny-sd2v]
        [--modes fp32,autocast,bf16] [--tol 2e-2] [--params] [--lora]
        [--json OUT.json] [--markdown OUT.md] [--threads N]

Reuses tools/make_goldens.py (sampler table, scheduler construction, the
noise feed that stands in for the schedulers' randn_tensor).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
import make_goldens as mg  # noqa: E402

DATA = os.path.join(REPO, "tests", "data")
GOLDENS = {  # the files `sdc check` is run on, in its order
    "tiny-sd": ["golden.safetensors", "golden_samplers.safetensors"],
    "tiny-sdxl": ["golden.safetensors", "golden_samplers.safetensors"],
    "tiny-sd2v": ["golden.safetensors"],
}
DTYPE = {"fp64": torch.float64, "fp32": torch.float32, "autocast": torch.float32, "autocast32": torch.float32,
         "bf16": torch.bfloat16}
LOWP = ("autocast", "autocast32", "bf16")


def rel_err(out, ref):
    """sdc_rel_err: out and ref as float32 values, sums in double."""
    o = out.detach().to(torch.float32).reshape(-1).numpy().astype(np.float64)
    r = ref.detach().to(torch.float32).reshape(-1).numpy().astype(np.float64)
    if o.size != r.size:
        return float("nan")
    num, den = float(np.sum((o - r) ** 2)), float(np.sum(r * r))
    return float(np.sqrt(num)) if den == 0 else float(np.sqrt(num / den))


def amp(mode):
    """The context the model calls run in."""
    if mode in ("autocast", "autocast32"):
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return torch.autocast(device_type="cpu", enabled=False)


class Golden:
    def __init__(self, path):
        from safetensors import safe_open
        self.path = path
        with safe_open(path, "pt") as f:
            self.meta = f.metadata() or {}
            self.t = {k: f.get_tensor(k) for k in f.keys()}

    def has(self, k):
        return k in self.t

    def inp(self, k, mode):
        """An input as the mode's user would hold it (floats in the mode's dtype)."""
        v = self.t[k]
        return v.to(DTYPE[mode]) if v.is_floating_point() else v


# ---- loading -----------------------------------------------------------------


def load_pipeline(folder, family, mode):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    kw = {} if family == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
    pipe = cls.from_pretrained(folder, torch_dtype=DTYPE[mode], **kw)
    pipe.set_progress_bar_config(disable=True)
    # make_goldens.make_scheduler builds every sampler from the folder's config
    mg.BASE_CONFIG.clear()
    mg.BASE_CONFIG.update(pipe.scheduler.config)
    return pipe


class ModelCallsInAutocast:
    """autocast32: each model call under autocast, the UNet's output (a tuple
    with return_dict=False, else an output object) cast back to float32."""

    def __init__(self, pipe):
        self.mods = [m for m in (pipe.unet, getattr(pipe, "text_encoder", None),
                                 getattr(pipe, "text_encoder_2", None)) if m is not None]
        self.unet = pipe.unet

    def __enter__(self):
        for m in self.mods:
            orig = m.forward

            def fwd(*a, _orig=orig, _is_unet=m is self.unet, **k):
                with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
                    out = _orig(*a, **k)
                if _is_unet:
                    if isinstance(out, tuple):
                        return tuple(o.float() for o in out)
                    out.sample = out.sample.float()
                return out
            m.forward = fwd
        return self

    def __exit__(self, *exc):
        for m in self.mods:
            del m.forward  # back to the class's method
        return False


# ---- sections (each yields (key, output tensor)) ------------------------------


def text_outputs(pipe, g, mode):
    for tok_name, te_name in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")):
        te = getattr(pipe, te_name, None)
        if te is None or not g.has(f"{te_name}/input_ids"):
            continue
        ids = g.t[f"{te_name}/input_ids"]
        with torch.no_grad(), amp(mode):
            o = te(ids, output_hidden_states=True)
        yield f"{te_name}/last_hidden_state", o.last_hidden_state
        yield f"{te_name}/penultimate_hidden_state", o.hidden_states[-2]
        if getattr(o, "text_embeds", None) is not None:
            yield f"{te_name}/text_embeds", o.text_embeds
        else:
            yield f"{te_name}/pooler_output", o.pooler_output


def tokenizer_ok(pipe, g, te_name, tok_name):
    prompts = json.loads(g.meta["prompts"])
    tok = getattr(pipe, tok_name)
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    return torch.equal(ids.to(torch.int64), g.t[f"{te_name}/input_ids"].to(torch.int64))


def unet_outputs(pipe, g, mode, grads):
    """Forward, loss = mean((out - target)^2) in float32, backward; the input
    gradients, and the parameter gradients when asked."""
    unet = pipe.unet
    sample = g.inp("unet/in/sample", mode).clone().requires_grad_(True)
    ehs = g.inp("unet/in/encoder_hidden_states", mode).clone().requires_grad_(True)
    added = None
    if g.has("unet/in/text_embeds"):
        added = {"text_embeds": g.inp("unet/in/text_embeds", mode), "time_ids": g.inp("unet/in/time_ids", mode)}
    unet.zero_grad(set_to_none=True)
    for p in unet.parameters():
        p.requires_grad_(grads)
    with torch.enable_grad():
        with amp(mode):
            pred = unet(sample, g.t["unet/in/timestep"], encoder_hidden_states=ehs, added_cond_kwargs=added).sample
        wide = torch.float64 if mode == "fp64" else torch.float32
        loss = F.mse_loss(pred.to(wide), g.t["unet/in/target"].to(wide), reduction="mean")
        loss.backward()
    res = [("unet/out/sample", pred.detach()), ("unet/grad/sample", sample.grad),
           ("unet/grad/encoder_hidden_states", ehs.grad)]
    pgrads = {n: p.grad for n, p in unet.named_parameters()} if grads else None
    for p in unet.parameters():
        p.requires_grad_(False)
    return res, loss.detach(), pgrads


def vae_outputs(pipe, g, mode):
    image = g.inp("vae/in/image", mode)
    with torch.no_grad(), amp(mode):
        post = pipe.vae.encode(image).latent_dist
        dec = pipe.vae.decode(post.mean).sample
    return [("vae/out/posterior_mean", post.mean), ("vae/out/posterior_logvar", post.logvar),
            ("vae/out/decoded_from_mean", dec)]


def scheduler_outputs(pipe, g):
    """Precision-independent tables, as make_goldens.run_schedules builds them."""
    res = []
    if g.has("scheduler/alphas_cumprod"):
        res.append(("scheduler/alphas_cumprod", pipe.scheduler.alphas_cumprod))
    for name in mg.SAMPLERS:
        for n in (4, 50):
            tk = f"scheduler/{name}/timesteps_{n}"
            if not g.has(tk):
                continue
            s = mg.make_scheduler(pipe, name)
            s.set_timesteps(n, device="cpu")
            res.append((tk, s.timesteps))
            sk = f"scheduler/{name}/sigmas_{n}"
            if g.has(sk):
                res.append((sk, s.sigmas))
    return res


def negative_prompt(g, family, prompts):
    """As sdc check: SD uses prompt 1 (""), SDXL none, unless the golden's
    metadata says otherwise."""
    neg = prompts[1] if family != "sdxl" else None
    if "pipeline" in g.meta:
        neg = json.loads(g.meta["pipeline"]).get("negative_prompt", neg)
    return neg


def pipeline_outputs(pipe, g, family, mode, prefix="pipeline"):
    if not g.has(f"{prefix}/in/latents"):
        return []
    prompts = json.loads(g.meta["prompts"])
    neg = negative_prompt(g, family, prompts)
    latents = g.inp(f"{prefix}/in/latents", mode)
    guidance = float(g.t[f"{prefix}/meta/guidance_scale"].reshape(-1)[0])
    steps = int(g.t[f"{prefix}/meta/steps"].reshape(-1)[0])
    vsf = pipe.vae_scale_factor
    h, w = latents.shape[2] * vsf, latents.shape[3] * vsf
    res = []
    for name in mg.SAMPLERS:
        if not g.has(f"{prefix}/{name}/latents"):
            continue
        sched = mg.make_scheduler(pipe, name)
        pipe.scheduler = sched
        module = sys.modules[type(sched).__module__]
        nk = f"{prefix}/{name}/noise"
        noise = [z for z in g.inp(nk, mode)] if g.has(nk) else None
        feed = mg.NoiseFeed(noise)
        saved = getattr(module, "randn_tensor", None)
        if saved is not None:
            module.randn_tensor = feed
        try:
            with torch.no_grad(), (ModelCallsInAutocast(pipe) if mode == "autocast32" else amp(mode)):
                lat = pipe(prompt=prompts[0], negative_prompt=neg, height=h, width=w, num_inference_steps=steps,
                           guidance_scale=guidance, latents=latents.clone(), eta=mg.SAMPLERS[name][2],
                           output_type="latent").images
        finally:
            if saved is not None:
                module.randn_tensor = saved
        if noise is not None and feed.used != len(noise):
            raise RuntimeError(f"{name}: {feed.used} noise tensors used, {len(noise)} stored")
        res.append((f"{prefix}/{name}/latents", lat))
        if g.has(f"{prefix}/{name}/image"):
            with torch.no_grad(), amp(mode):
                img = pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample
            res.append((f"{prefix}/{name}/image", img))
    return res


# ---- driver --------------------------------------------------------------------


def run_model(model, modes, params, lora, rows, prows):
    folder = os.path.join(DATA, model)
    family = mg.detect_family(folder)
    goldens = [Golden(os.path.join(folder, f)) for f in GOLDENS[model]]
    gg_path = os.path.join(folder, "golden_grads.safetensors")
    gg = Golden(gg_path) if params and os.path.exists(gg_path) else None
    table = {}  # (file, key) -> {mode: err}
    order = []

    def put(fname, key, mode, err):
        if (fname, key) not in table:
            table[(fname, key)] = {}
            order.append((fname, key))
        table[(fname, key)][mode] = err

    for mode in modes:
        t0 = time.time()
        pipe = load_pipeline(folder, family, mode)
        for g in goldens:
            fname = os.path.basename(g.path)
            outs = []
            for te_name, tok_name in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
                if g.has(f"{te_name}/input_ids") and getattr(pipe, te_name, None) is not None:
                    ok = tokenizer_ok(pipe, g, te_name, tok_name)
                    put(fname, f"{te_name}/input_ids (tokenizer)", mode, 0.0 if ok else float("inf"))
            outs += list(text_outputs(pipe, g, mode))
            if g.has("unet/in/sample"):
                u, loss, pg = unet_outputs(pipe, g, mode, gg is not None and fname == "golden.safetensors")
                outs += u
                put(fname, "(unet/out/mse_loss)", mode, rel_err(loss.reshape(1), g.t["unet/out/mse_loss"]))
                if pg is not None:
                    param_errors(model, gg, pg, mode, prows)
            if g.has("vae/in/image"):
                outs += vae_outputs(pipe, g, mode)
            outs += scheduler_outputs(pipe, g)
            outs += pipeline_outputs(pipe, g, family, mode)
            for key, out in outs:
                if g.has(key):
                    put(fname, key, mode, rel_err(out, g.t[key]))
            if lora and g.has("pipeline_lora/in/latents"):
                pipe.load_lora_weights(os.path.join(DATA, f"{model}-lora"))
                for key, out in pipeline_outputs(pipe, g, family, mode, "pipeline_lora"):
                    put(fname, key, mode, rel_err(out, g.t[key]))
                pipe.unload_lora_weights()
        print(f"  {model} {mode}: {time.time() - t0:.1f} s", file=sys.stderr)
        del pipe
    for fname, key in order:
        rows.append({"model": model, "file": fname, "key": key, "err": table[(fname, key)]})


def param_errors(model, gg, pgrads, mode, prows):
    names = json.loads(gg.meta["param_names"])
    norms = gg.t["unet/grad/param_norms"].to(torch.float64)
    worst_norm, worst_name = 0.0, ""
    for i, name in enumerate(names):
        gp = pgrads[name]
        got = 0.0 if gp is None else float(gp.to(torch.float64).norm())
        ref = float(norms[i])
        if ref > 1e-8:
            r = abs(got - ref) / ref
            if r > worst_norm:
                worst_norm, worst_name = r, name
        key = f"unet/grad/param/{name}"
        if gg.has(key) and float(gg.t[key].to(torch.float64).norm()) >= 1e-12:
            e = rel_err(gp if gp is not None else torch.zeros_like(gg.t[key]), gg.t[key])
            prows.setdefault((model, key), {})[mode] = e
    prows.setdefault((model, f"(worst grad-norm rel err, {len(names)} params)"), {})[mode] = worst_norm
    prows.setdefault((model, "(worst norm is of)"), {})[mode] = worst_name


def fmt(e):
    if isinstance(e, str):
        return e
    return "-" if e is None else f"{e:.3e}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="tiny-sd,tiny-sdxl,tiny-sd2v")
    ap.add_argument("--modes", default="fp32,autocast,bf16")
    ap.add_argument("--tol", type=float, default=2e-2)
    ap.add_argument("--params", action="store_true", help="also golden_grads.safetensors parameter gradients")
    ap.add_argument("--lora", action="store_true", help="also tiny-sd pipeline_lora/* (not counted by sdc check)")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = args.modes.split(",")
    for m in modes:
        if m not in DTYPE:
            sys.exit(f"unknown mode {m}; known: {', '.join(DTYPE)}")
    models = args.models.split(",")
    for m in models:
        if m not in GOLDENS:
            sys.exit(f"unknown model {m}; known: {', '.join(GOLDENS)}")
    rows, prows = [], {}
    for model in models:
        run_model(model, modes, args.params, args.lora, rows, prows)

    lowp = [m for m in modes if m in LOWP]

    def passes(e):
        return e is not None and not np.isnan(e) and e <= args.tol

    head = f"{'model':10} {'file':28} {'output':52} " + " ".join(f"{m:>10}" for m in modes) + \
        "  " + " ".join(f"{m + '<=tol':>13}" for m in lowp)
    print(head)
    # what `sdc check` counts: not the loss, not pipeline_lora (needs --lora there)
    counted = [r for r in rows if not r["key"].startswith(("(", "pipeline_lora/"))]
    for r in rows:
        errs = " ".join(f"{fmt(r['err'].get(m)):>10}" for m in modes)
        ok = " ".join(f"{('yes' if passes(r['err'].get(m)) else 'NO'):>13}" for m in lowp)
        print(f"{r['model']:10} {r['file']:28} {r['key']:52} {errs}  {ok}")
    for (model, key), e in sorted(prows.items()):
        errs = " ".join(f"{fmt(e.get(m)):>10}" for m in modes)
        ok = "" if key.startswith("(") else " ".join(
            f"{('yes' if passes(e.get(m)) else 'NO'):>13}" for m in lowp)
        print(f"{model:10} {'golden_grads.safetensors':28} {key[:52]:52} {errs}  {ok}")
    print(f"\n{len(counted)} outputs (as sdc check counts them; tolerance {args.tol:g}):")
    for m in modes:
        bad = [r for r in counted if not passes(r["err"].get(m))]
        worst = max(counted, key=lambda r: -1 if np.isnan(r["err"].get(m, 0)) else r["err"].get(m, 0))
        print(f"  {m:9}: {len(bad)} exceed; worst {fmt(worst['err'].get(m))} "
              f"({worst['model']} {worst['file']} {worst['key']})")
    pfull = {k: v for k, v in prows.items() if not k[1].startswith("(")}
    if pfull:
        print(f"{len(pfull)} parameter gradients with full values:")
        for m in modes:
            bad = [k for k, v in pfull.items() if not passes(v.get(m))]
            print(f"  {m:9}: {len(bad)} exceed; worst {fmt(max(v.get(m, 0) for v in pfull.values()))}")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"modes": modes, "tol": args.tol, "rows": rows,
                       "params": [{"model": k[0], "key": k[1], "err": v} for k, v in sorted(prows.items())]},
                      f, indent=1)
    if args.markdown:
        write_markdown(args.markdown, rows, prows, modes, lowp, passes)


def write_markdown(path, rows, prows, modes, lowp, passes):
    """One row per output; each file's scheduler tables (precision-independent)
    folded into one row with their worst error; the parameter gradients as a
    summary per model."""
    folded, seen = [], {}
    for r in rows:
        if r["key"].startswith("scheduler/"):
            k = (r["model"], r["file"])
            if k not in seen:
                seen[k] = {"model": r["model"], "file": r["file"], "n": 0, "err": {}}
                folded.append(seen[k])
            s = seen[k]
            s["n"] += 1
            for m, e in r["err"].items():
                s["err"][m] = max(s["err"].get(m, 0.0), e)
            s["key"] = f"scheduler/* ({s['n']} tables, worst)"
        else:
            folded.append(r)
    with open(path, "w") as f:
        f.write("| model | golden file | output | " + " | ".join(modes) + " | " +
                " | ".join(f"{m} ≤ tol" for m in lowp) + " |\n")
        f.write("|---|---|---|" + "---:|" * len(modes) + ":---:|" * len(lowp) + "\n")
        for r in folded:
            ok = " | ".join("pass" if passes(r["err"].get(m)) else "**FAIL**" for m in lowp)
            f.write(f"| {r['model']} | {r['file']} | {r['key']} | " +
                    " | ".join(fmt(r["err"].get(m)) for m in modes) + f" | {ok} |\n")
        models = sorted({k[0] for k in prows})
        if not models:
            return
        f.write("\n| model | parameter gradients (golden_grads.safetensors) | " + " | ".join(modes) + " |\n")
        f.write("|---|---|" + "---:|" * len(modes) + "\n")
        for model in models:
            full = [v for k, v in prows.items() if k[0] == model and not k[1].startswith("(")]
            for label, fn in (("median rel err", np.median), ("worst rel err", np.max)):
                f.write(f"| {model} | {len(full)} full tensors: {label} | " +
                        " | ".join(fmt(float(fn([v[m] for v in full]))) for m in modes) + " |\n")
            f.write(f"| {model} | {len(full)} full tensors: number > tol | " +
                    " | ".join(str(sum(not passes(v[m]) for v in full)) for m in modes) + " |\n")
            for k, v in prows.items():
                if k[0] == model and k[1].startswith("(worst grad-norm"):
                    f.write(f"| {model} | {k[1][1:-1]} | " +
                            " | ".join(fmt(v.get(m)) for m in modes) + " |\n")

if __name__ == "__main__":
    main()
