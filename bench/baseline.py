#!/usr/bin/env python3
"""The PyTorch + diffusers side of bench/gpu_bench.sh: the same measurements
as bench/sdc_bench.c, on models built from the same configs (the folder
`sdc_bench config --preset P --out DIR` writes) with random weights, one JSON
line on stdout per run (everything else goes to stderr).

  baseline.py train   --config DIR --size PX --batch N [--lora RANK] [--steps N] [--warmup N]
                      [--checkpointing] [--precision bf16|fp16|fp32] [--compile]
  baseline.py unet    --config DIR --size PX --batch N [--cfg] [--precision fp16|bf16] [--calls N] [--compile]
  baseline.py txt2img --config DIR --size 512 --steps 50 [--compile]
  baseline.py vae     --config DIR --size 512 [--precision fp16|bf16] [--calls N] [--compile]

Training is what diffusers' train_text_to_image(.py/_lora.py) does per step
with accelerate's mixed precision: fp32 weights (LoRA: frozen weights in the
autocast dtype, adapters in fp32, as cast_training_params leaves them),
bf16 autocast, add_noise, MSE on ε, clip_grad_norm_(1.0), fused AdamW.
Inference runs eager, or with --compile under torch.compile (default mode
"reduce-overhead" = CUDA graphs; training: the default mode).

Under torchrun (WORLD_SIZE > 1) training runs DistributedDataParallel, one
GPU per process, and rank 0 prints img_s per GPU and img_s_total.

--device cpu runs everything on the CPU in fp32 (a smoke test of the script).
When diffusers is not installed, a folder of carried wheels unpacked into
$SDC_BENCH_SITE is appended to sys.path (after site-packages, so the
installed torch/numpy/transformers win).
"""
import argparse
import json
import os
import resource
import sys
import time

if os.environ.get("SDC_BENCH_SITE"):
    sys.path.append(os.environ["SDC_BENCH_SITE"])

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

PEAK_FLOPS = 790e12  # H200 dense bf16, as sdc_bench.c


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def load_json(path):
    with open(path) as f:
        return json.load(f)


def dtype_of(name):
    return {"fp32": torch.float32, "no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def peak_gib(dev):
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def unet_fwd_flops(cfg, h, w, S=77):
    """One image's UNet forward FLOPs as torch's flop counter counts them
    (2·M·N·K per matrix product, convolutions and attention included), on a
    copy of the model on the meta device: the same number sdc_bench.c
    computes from the config."""
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        u = UNet2DConditionModel.from_config(cfg)
        x = torch.empty(1, cfg["in_channels"], h, w)
        ctx = torch.empty(1, S, cfg["cross_attention_dim"])
        with FlopCounterMode(display=False) as fc:
            u(x, torch.tensor([500]), encoder_hidden_states=ctx, **added_cond(cfg, 1, h * 8, "meta"))
    return fc.get_total_flops()


def added_cond(cfg, B, size, dev, dtype=torch.float32):
    """SDXL's text_time conditioning: pooled text embeddings and the six
    micro-conditioning ids (original size, crop top-left, target size)."""
    if cfg.get("addition_embed_type") != "text_time":
        return {}
    P = cfg["projection_class_embeddings_input_dim"] - 6 * cfg["addition_time_embed_dim"]
    ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=dtype, device=dev).repeat(B, 1)
    return {"added_cond_kwargs": {"text_embeds": torch.randn(B, P, device=dev, dtype=dtype), "time_ids": ids}}


def build_unet(args, dev, dtype=torch.float32):
    from diffusers import UNet2DConditionModel

    cfg = load_json(os.path.join(args.config, "unet", "config.json"))
    torch.manual_seed(args.seed)
    with torch.device(dev):
        u = UNet2DConditionModel.from_config(cfg)
    return u.to(dtype=dtype), cfg


def maybe_compile(m, args, default_mode):
    if not args.compile:
        return m
    mode = args.compile_mode or default_mode
    log(f"baseline: torch.compile(mode={mode})")
    return torch.compile(m, mode=mode)


def impl_name(args):
    return "torch-compile" if args.compile else "torch"


def sig(x, digits=4):
    """x to `digits` significant digits, as the C side's %.4g."""
    return float(f"{x:.{digits}g}")


def emit(d):
    d["torch"] = torch.__version__
    print(json.dumps(d), flush=True)


# ---- modes --------------------------------------------------------------------------------------------------------


def run_train(args, dev):
    from diffusers import DDPMScheduler

    amp = dtype_of(args.precision)
    lora = args.lora > 0
    # full fine-tune: fp32 weights under autocast; LoRA: the frozen model in
    # the autocast dtype, the adapters in fp32 (train_text_to_image_lora.py)
    unet, cfg = build_unet(args, dev, amp if lora else torch.float32)
    if lora:
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=args.lora, lora_alpha=args.lora, init_lora_weights="gaussian",
                                    target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
        for p in unet.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    if args.checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8,
                            fused=dev.type == "cuda")
    sched = DDPMScheduler.from_config(load_json(os.path.join(args.config, "scheduler", "scheduler_config.json")))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        # torchrun: DistributedDataParallel, one GPU per process, gradients
        # all-reduced in 25 MB buckets during backward (the DDP defaults)
        unet = torch.nn.parallel.DistributedDataParallel(unet, device_ids=[dev.index])
    model = maybe_compile(unet, args, None)

    B, h = args.batch, args.size // 8
    g = torch.Generator(device="cpu").manual_seed(args.seed + 11)
    x0 = torch.randn(B, cfg["in_channels"], h, h, generator=g).to(dev)
    noise = torch.randn(B, cfg["in_channels"], h, h, generator=g).to(dev)
    ctx = torch.randn(B, 77, cfg["cross_attention_dim"], generator=g).to(dev)
    ts = torch.tensor([(b * 7919 + 101) % sched.config.num_train_timesteps for b in range(B)], device=dev)
    cond = added_cond(cfg, B, args.size, dev)
    use_amp = amp != torch.float32

    def step():
        noisy = sched.add_noise(x0, noise, ts)
        with torch.autocast(dev.type, dtype=amp, enabled=use_amp):
            pred = model(noisy, ts, encoder_hidden_states=ctx, **cond).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t_setup = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync(dev)
    log(f"baseline: warm-up {time.perf_counter() - t_setup:.1f} s")
    if world > 1:
        torch.distributed.barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync(dev)
    if world > 1:
        torch.distributed.barrier()
    dt = (time.perf_counter() - t0) / args.steps
    flops = 3.0 * unet_fwd_flops(cfg, h, h) * B
    if world > 1 and torch.distributed.get_rank() != 0:
        return
    emit({"mode": "train", "impl": impl_name(args) + ("-ddp" if world > 1 else ""), "preset": args.preset,
          "size": args.size, "batch": B, "gpus": world, "img_s_total": sig(B * world / dt),
          "method": "lora" if lora else "full", "lora_rank": args.lora, "precision": args.precision,
          "checkpointing": bool(args.checkpointing), "device": dev.type, "steps": args.steps,
          "img_s": sig(B / dt), "step_ms": sig(1e3 * dt), "peak_gib": sig(peak_gib(dev)),
          "tflop_step": sig(flops / 1e12), "mfu": sig(flops / dt / PEAK_FLOPS),
          "loss": float(loss.detach().float().cpu())})


def run_unet(args, dev):
    dt_ = dtype_of(args.precision)
    unet, cfg = build_unet(args, dev, dt_)
    unet.eval()
    model = maybe_compile(unet, args, "reduce-overhead")
    B, h = args.batch * (2 if args.cfg else 1), args.size // 8
    x = torch.randn(B, cfg["in_channels"], h, h, device=dev, dtype=dt_)
    ctx = torch.randn(B, 77, cfg["cross_attention_dim"], device=dev, dtype=dt_)
    t = torch.full((B,), 500, device=dev)
    cond = added_cond(cfg, B, args.size, dev, dt_)
    with torch.no_grad():
        for _ in range(args.warmup):
            model(x, t, encoder_hidden_states=ctx, **cond)
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(args.calls):
            model(x, t, encoder_hidden_states=ctx, **cond)
        sync(dev)
    per = (time.perf_counter() - t0) / args.calls
    fl = unet_fwd_flops(cfg, h, h) * B
    emit({"mode": "unet", "impl": impl_name(args), "preset": args.preset, "size": args.size, "batch": args.batch,
          "unet_batch": B, "precision": args.precision, "device": dev.type, "calls": args.calls,
          "ms": sig(1e3 * per), "peak_gib": sig(peak_gib(dev)), "mfu": sig(fl / per / PEAK_FLOPS)})


def build_vae(args, dev, dtype):
    from diffusers import AutoencoderKL

    torch.manual_seed(args.seed + 1)
    with torch.device(dev):
        v = AutoencoderKL.from_config(load_json(os.path.join(args.config, "vae", "config.json")))
    return v.to(dtype=dtype).eval()


def run_vae(args, dev):
    dt_ = dtype_of(args.precision)
    vae = build_vae(args, dev, dt_)
    dec = maybe_compile(vae.decode, args, "reduce-overhead")
    s = 2 ** (len(vae.config.block_out_channels) - 1)
    z = torch.randn(args.batch, vae.config.latent_channels, args.size // s, args.size // s, device=dev, dtype=dt_)
    with torch.no_grad():
        for _ in range(args.warmup):
            dec(z)
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(args.calls):
            dec(z)
        sync(dev)
    per = (time.perf_counter() - t0) / args.calls
    emit({"mode": "vae", "impl": impl_name(args), "preset": args.preset, "size": args.size, "batch": args.batch,
          "precision": args.precision, "device": dev.type, "calls": args.calls, "ms": sig(1e3 * per),
          "peak_gib": sig(peak_gib(dev))})


def run_txt2img(args, dev):
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    dt_ = dtype_of(args.precision)
    index = load_json(os.path.join(args.config, "model_index.json"))
    xl = "text_encoder_2" in index
    unet, _ = build_unet(args, dev, dt_)
    vae = build_vae(args, dev, dt_)
    parts = {"unet": unet.eval(), "vae": vae}
    for i, name in enumerate(["text_encoder", "text_encoder_2"] if xl else ["text_encoder"]):
        cls = CLIPTextModelWithProjection if i == 1 else CLIPTextModel
        torch.manual_seed(args.seed + 2 + i)
        te = cls(CLIPTextConfig.from_pretrained(os.path.join(args.config, name)))
        parts[name] = te.to(dev, dtype=dt_).eval()
        parts["tokenizer" + name[len("text_encoder"):]] = CLIPTokenizer.from_pretrained(
            os.path.join(args.config, "tokenizer" + name[len("text_encoder"):]))
    sc = load_json(os.path.join(args.config, "scheduler", "scheduler_config.json"))
    parts["scheduler"] = getattr(diffusers, sc["_class_name"]).from_config(sc)
    if xl:
        pipe = diffusers.StableDiffusionXLPipeline(**parts)
    else:
        pipe = diffusers.StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                                 requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    if args.compile:
        pipe.unet = maybe_compile(pipe.unet, args, "reduce-overhead")
    kw = dict(prompt="a photograph of an astronaut riding a horse", height=args.size, width=args.size,
              guidance_scale=5.0 if xl else 7.5, num_images_per_prompt=args.batch, output_type="np",
              generator=torch.Generator(device="cpu").manual_seed(args.seed))
    with torch.no_grad():
        pipe(num_inference_steps=min(args.steps, 3), **kw)  # warm-up
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(args.repeat):
            pipe(num_inference_steps=args.steps, **kw)  # returns numpy images: the GPU is done
        per = (time.perf_counter() - t0) / args.repeat
    emit({"mode": "txt2img", "impl": impl_name(args), "preset": args.preset, "size": args.size, "batch": args.batch,
          "steps": args.steps, "precision": args.precision, "device": dev.type, "scheduler": sc["_class_name"],
          "s": sig(per), "peak_gib": sig(peak_gib(dev))})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["train", "unet", "txt2img", "vae"])
    ap.add_argument("--config", required=True, help="a folder written by `sdc_bench config --preset P --out DIR`")
    ap.add_argument("--preset", default=None, help="label for the output (default: the folder's name)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--lora", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--checkpointing", action="store_true")
    ap.add_argument("--cfg", action="store_true", help="unet: batch doubled, as classifier-free guidance calls it")
    ap.add_argument("--precision", default=None)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--compile-mode", default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    dev = torch.device(args.device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun
        torch.distributed.init_process_group("nccl")
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(dev)
    if args.preset is None:
        args.preset = os.path.basename(os.path.normpath(args.config))
    if args.precision is None:
        args.precision = "fp32" if dev.type == "cpu" else "bf16" if args.mode == "train" else "fp16"
    if args.steps is None:
        args.steps = 10 if args.mode == "train" else 50
    if args.warmup is None:
        args.warmup = (3 if args.mode == "train" else 5) + (2 if args.compile else 0)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    {"train": run_train, "unet": run_unet, "txt2img": run_txt2img, "vae": run_vae}[args.mode](args, dev)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
