/* sdc_bench: the sdc side of bench/gpu_bench.sh (the PyTorch side is
 * bench/baseline.py). Each run measures one thing on randomly initialised
 * models built from a preset's configs (no weights needed) and prints ONE
 * JSON line on stdout (logs and errors go to stderr):
 *
 *   sdc_bench train   --preset sd15|sdxl --size PX --batch N [--lora RANK] [--steps N] [--warmup N]
 *                     [--checkpointing] [--device cuda|cpu] [--precision bf16|fp16|fp32]
 *   sdc_bench unet    --preset P --size PX --batch N [--cfg] [--precision fp16|bf16] [--calls N]
 *   sdc_bench txt2img --preset sd15 --size 512 --steps 50 [--batch N] [--repeat N]
 *   sdc_bench vae     --size 512 [--batch N] [--precision fp16|bf16] [--calls N]
 *   sdc_bench config  --preset P --out DIR     (the preset's configs + tokenizer files, no
 *                                               weights: what baseline.py builds its models from)
 *   sdc_bench flops   --preset P --size PX     (the UNet's forward FLOPs per image)
 *
 * Common: --arena-gib N (activation arena size; default from free memory),
 * --seed N. Timing reads CLOCK_MONOTONIC around the timed loop, after a
 * device→host copy of 4 bytes (the CUDA backend's mem_download waits for
 * the stream) so that all queued GPU work is inside the measured time. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "backend/cuda/cuda_runtime.h"
#include "backend/device.h"
#include "backend/ops.h"
#include "core/clock.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/rng.h"
#include "data/clip_vocab_write.h"
#include "models/presets.h"
#include "nn/lora_attach.h"
#include "pipeline/sd_model.h"
#include "pipeline/trainer.h"
#include "pipeline/txt2img.h"
#include "train/dp.h"

#define GIB ((size_t)1 << 30)
/* H200 dense bf16 tensor-core peak used for MFU (what an 8192³ bf16 GEMM
 * reaches on random data there: ~790 TFLOP/s) */
#define PEAK_FLOPS 790e12

typedef struct opts {
    const char *mode, *preset, *device, *precision, *out;
    int size, batch, lora, steps, warmup, ckpt, cfg, calls, repeat, zero, graph;
    int tokens, keys, heads, head_dim; /* attn */
    double arena_gib;
    unsigned long long seed;
} opts;

static double gib(double bytes) { return bytes / (double)GIB; }

/* ---- forward FLOPs of the UNet, counted from its config ---------------------------------------------------------
 * Walks the config exactly as sdc_unet_build lays the model out, counting
 * 2·M·N·K per matrix product (linear layers, convolutions as implicit GEMMs,
 * attention's q·kᵀ and p·v), the convention of torch.utils.flop_counter.
 * Norms, activations and elementwise ops are not counted (≪ 1%). */

/* k×k convolution producing npx output pixels */
static double conv_flops(double npx, int64_t cin, int64_t cout, int k) { return 2.0 * npx * (double)(cin * cout * k * k); }

/* ResnetBlock2D: conv1 3×3, time_emb_proj, conv2 3×3, 1×1 shortcut when the channels change */
static double resnet_flops(double npx, int64_t cin, int64_t cout, int64_t temb) {
    double f = conv_flops(npx, cin, cout, 3) + conv_flops(npx, cout, cout, 3) + 2.0 * (double)(temb * cout);
    if (cin != cout) f += conv_flops(npx, cin, cout, 1);
    return f;
}

/* Transformer2DModel over N tokens of C channels (inner dim = C for every SD
 * config), S context tokens of width D: proj_in/out, and per block
 * self-attention (or cross-attention when only_cross), cross-attention and
 * the GEGLU feed-forward (C → 2·4C, 4C → C). */
static double transformer_flops(double N, int64_t C64, int64_t layers, double S, int64_t D64, int only_cross) {
    const double C = (double)C64, D = (double)D64;
    double f = 2 * (2 * N * C * C); /* proj_in, proj_out */
    for (int64_t l = 0; l < layers; l++) {
        /* attn1: q and out over N tokens; k, v over N tokens (or the context) */
        double kv1 = only_cross ? 2 * (2 * S * D * C) : 2 * (2 * N * C * C);
        f += 2 * (2 * N * C * C) + kv1 + 2 * (2 * N * (only_cross ? S : N) * C);
        /* attn2: q, out over N; k, v over S context tokens; scores and mix N×S */
        f += 2 * (2 * N * C * C) + 2 * (2 * S * D * C) + 2 * (2 * N * S * C);
        /* feed-forward */
        f += 2 * N * C * (8 * C) + 2 * N * (4 * C) * C;
    }
    return f;
}

/* One image's UNet forward at latent size h×w with S context tokens. */
static double unet_flops(const sdc_unet_config *cfg, int64_t h, int64_t w, int64_t S) {
    const int L = cfg->levels;
    const int64_t *boc = cfg->block_out_channels, T = cfg->time_embed_dim, D = cfg->cross_attention_dim;
    double f = conv_flops((double)(h * w), cfg->in_channels, boc[0], 3);
    f += 2.0 * (double)(boc[0] * T + T * T); /* time embedding */
    if (cfg->text_time) f += 2.0 * (double)(cfg->projection_class_embeddings_input_dim * T + T * T);
    int64_t out_ch = boc[0];
    for (int i = 0; i < L; i++) {
        int64_t in_ch = out_ch;
        out_ch = boc[i];
        double npx = (double)((h >> i) * (w >> i));
        for (int j = 0; j < cfg->layers_per_block[i]; j++) {
            f += resnet_flops(npx, j == 0 ? in_ch : out_ch, out_ch, T);
            if (cfg->down_attn[i])
                f += transformer_flops(npx, out_ch, cfg->transformer_layers[i], (double)S, D, cfg->only_cross_attention[i]);
        }
        if (i < L - 1) f += conv_flops(npx / 4, out_ch, out_ch, 3); /* stride-2 downsampler */
    }
    if (cfg->mid_block) {
        int64_t ch = boc[L - 1];
        double npx = (double)((h >> (L - 1)) * (w >> (L - 1)));
        f += 2 * resnet_flops(npx, ch, ch, T) + transformer_flops(npx, ch, cfg->transformer_layers[L - 1], (double)S, D, 0);
    }
    out_ch = boc[L - 1];
    for (int i = 0; i < L; i++) {
        int64_t prev_out = out_ch;
        int d = L - 1 - i;
        out_ch = boc[d];
        int64_t in_ch = boc[d > 0 ? d - 1 : 0];
        int nres = (int)cfg->layers_per_block[d] + 1;
        double npx = (double)((h >> d) * (w >> d));
        for (int j = 0; j < nres; j++) {
            int64_t skip = j == nres - 1 ? in_ch : out_ch, rin = j == 0 ? prev_out : out_ch;
            f += resnet_flops(npx, rin + skip, out_ch, T);
            if (cfg->up_attn[i])
                f += transformer_flops(npx, out_ch, cfg->reverse_transformer_layers[i], (double)S, D,
                                       cfg->only_cross_attention[d]);
        }
        if (i < L - 1) f += conv_flops(npx * 4, out_ch, out_ch, 3); /* upsampler conv after 2× nearest */
    }
    f += conv_flops((double)(h * w), boc[0], cfg->out_channels, 3);
    return f;
}

/* ---- models from presets ------------------------------------------------------------------------------------------ */


static const sdc_preset_model *preset_model(const sdc_preset *p, sdc_preset_kind kind, int nth) {
    for (int i = 0; i < p->nmodels; i++) {
        int k = p->models[i].kind;
        int same = kind == SDC_PRESET_CLIP_TEXT ? (k == SDC_PRESET_CLIP_TEXT || k == SDC_PRESET_CLIP_TEXT_PROJ) : k == (int)kind;
        if (same && nth-- == 0) return &p->models[i];
    }
    return NULL;
}

static sdc_status unet_config(const sdc_preset *p, sdc_unet_config *cfg, sdc_error *err) {
    const sdc_preset_model *m = preset_model(p, SDC_PRESET_UNET, 0);
    if (!m) return sdc_fail(err, SDC_EINVAL, "preset %s has no UNet", p->name);
    cJSON *j = NULL;
    SDC_TRY(sdc_preset_model_config(m, "float32", &j, err));
    sdc_status s = sdc_unet_config_parse(j, "preset unet/config.json", cfg, err);
    cJSON_Delete(j);
    return s;
}

/* A randomly initialised UNet of the preset, on the host. */
static sdc_status build_unet(const sdc_preset *p, uint64_t seed, sdc_unet **out, sdc_error *err) {
    sdc_unet_config cfg;
    SDC_TRY(unet_config(p, &cfg, err));
    sdc_unet *u = calloc(1, sizeof *u);
    if (!u) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    if (sdc_unet_build(u, &cfg, "unet", err) != SDC_OK) {
        free(u);
        return err->code;
    }
    sdc_params_init_random(&u->params, seed);
    *out = u;
    return SDC_OK;
}

static sdc_status build_vae(const sdc_preset *p, uint64_t seed, sdc_vae **out, sdc_error *err) {
    const sdc_preset_model *m = preset_model(p, SDC_PRESET_VAE, 0);
    if (!m) return sdc_fail(err, SDC_EINVAL, "preset %s has no VAE", p->name);
    cJSON *j = NULL;
    SDC_TRY(sdc_preset_model_config(m, "float32", &j, err));
    sdc_vae_config cfg;
    sdc_status s = sdc_vae_config_parse(j, "preset vae/config.json", &cfg, err);
    cJSON_Delete(j);
    SDC_TRY(s);
    sdc_vae *v = calloc(1, sizeof *v);
    if (!v) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    if (sdc_vae_build(v, &cfg, "vae", err) != SDC_OK) {
        free(v);
        return err->code;
    }
    sdc_params_init_random(&v->params, seed + 1);
    *out = v;
    return SDC_OK;
}

/* A whole pipeline in memory, as sdc_sd_load would assemble it from a
 * folder that `sdc init --preset` wrote (tokenizers: the built-in CLIP
 * vocabulary with the preset's pad tokens). */
static sdc_status build_sd(const sdc_preset *p, uint64_t seed, sdc_sd *sd, sdc_error *err) {
    memset(sd, 0, sizeof *sd);
    SDC_TRY(build_unet(p, seed, &sd->unet, err));
    SDC_TRY(build_vae(p, seed, &sd->vae, err));
    static const char *const comp[2] = {"text_encoder", "text_encoder_2"};
    for (int i = 0; i < 2; i++) {
        const sdc_preset_model *m = preset_model(p, SDC_PRESET_CLIP_TEXT, i);
        if (!m) break;
        cJSON *j = NULL;
        SDC_TRY(sdc_preset_model_config(m, "float32", &j, err));
        sd->te[i] = calloc(1, sizeof *sd->te[i]);
        sdc_status s = sd->te[i] ? sdc_clip_text_build(sd->te[i], j, m->kind == SDC_PRESET_CLIP_TEXT_PROJ, comp[i],
                                                       "preset text encoder config", err)
                                 : sdc_fail(err, SDC_ENOMEM, "out of memory");
        cJSON_Delete(j);
        if (s != SDC_OK) {
            free(sd->te[i]);
            sd->te[i] = NULL;
            return s;
        }
        sdc_params_init_random(&sd->te[i]->params, seed + 2 + (uint64_t)i);
        SDC_TRY(sdc_clip_tokenizer_default(p->pad[i], &sd->tok[i], err));
        sd->nte = i + 1;
    }
    if (!sd->nte) return sdc_fail(err, SDC_EINVAL, "preset %s has no text encoder", p->name);
    sd->family = sd->unet->cfg.text_time ? SDC_FAMILY_SDXL
                 : sd->unet->cfg.use_linear_projection ? SDC_FAMILY_SD2
                                                       : SDC_FAMILY_SD1;
    cJSON *sj = cJSON_Parse(p->scheduler);
    if (!sj) return sdc_fail(err, SDC_EFORMAT, "preset %s: bad scheduler config", p->name);
    sdc_status s = sdc_sched_config_parse(sj, "preset scheduler_config.json", &sd->sched, err);
    cJSON_Delete(sj);
    SDC_TRY(s);
    if (sd->nte == 1) {
        /* what sdc_sd_load (and StableDiffusionPipeline.__init__) repair */
        sd->sched.steps_offset = 1;
        sd->sched.clip_sample = 0;
        sd->sched.present |= (1ull << SDC_SK_STEPS_OFFSET) | (1ull << SDC_SK_CLIP_SAMPLE);
    }
    sd->force_zeros_for_empty_prompt = sd->nte == 2;
    return SDC_OK;
}

/* ---- device ----------------------------------------------------------------------------------------------------------- */

typedef struct dev_state {
    sdc_device dev;
    const sdc_backend *be;
    sdc_dtype dtype;
    size_t used0; /* device memory in use before the benchmark allocated any (the CUDA context's own) */
} dev_state;

static size_t device_used(const dev_state *d) {
    size_t free_b = 0, total_b = 0;
    if (d->dev.type == SDC_CPU || sdc_cuda_mem_info(&free_b, &total_b) != 0) return 0;
    return total_b - free_b;
}

static sdc_status device_open(const opts *o, int training, dev_state *d, sdc_error *err) {
    const char *name = o->device ? o->device : sdc_cuda_device_count() > 0 ? "cuda" : "cpu";
    SDC_TRY(sdc_device_parse(name, &d->dev, err));
    /* under mpirun: one GPU per process, by local rank (as sdc train) */
    const char *lr = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    if (!lr) lr = getenv("SLURM_LOCALID");
    if (d->dev.type == SDC_CUDA && lr && !strchr(name, ':') && sdc_cuda_device_count() > 0)
        d->dev.index = atoi(lr) % sdc_cuda_device_count();
    const char *prec = o->precision;
    if (!prec) prec = d->dev.type == SDC_CPU ? "fp32" : training ? "bf16" : "fp16";
    if (!strcmp(prec, "fp32") || !strcmp(prec, "no")) d->dtype = SDC_F32;
    else if (!strcmp(prec, "bf16")) d->dtype = SDC_BF16;
    else if (!strcmp(prec, "fp16")) d->dtype = SDC_F16;
    else return sdc_fail(err, SDC_EINVAL, "--precision %s: expected bf16, fp16 or fp32", prec);
    if (d->dev.type == SDC_CPU && d->dtype != SDC_F32)
        return sdc_fail(err, SDC_EUNSUPPORTED, "--precision %s: the CPU computes in fp32 only", prec);
    SDC_TRY(sdc_backend_open(d->dev, &d->be, err));
    d->used0 = device_used(d);
    return SDC_OK;
}

static const char *prec_name(sdc_dtype t) { return t == SDC_BF16 ? "bf16" : t == SDC_F16 ? "fp16" : "fp32"; }

/* Activation arena: on the CPU reserved address space (committed as
 * touched); on a GPU what is free less `keep` (memory still to be
 * allocated after the arena) and 6 GiB for the libraries' workspaces, at
 * most 32 GiB for inference. Training takes its activations' gradients from
 * the same arena (the tape's planned pool). */
static size_t arena_bytes(const opts *o, const dev_state *d, size_t keep, int training) {
    if (o->arena_gib > 0) return (size_t)(o->arena_gib * (double)GIB);
    if (d->dev.type == SDC_CPU) return 48 * GIB;
    size_t free_b = 0, total_b = 0;
    if (sdc_cuda_mem_info(&free_b, &total_b) != 0) return 8 * GIB;
    size_t reserve = 6 * GIB + keep;
    size_t avail = free_b > reserve + GIB ? free_b - reserve : GIB;
    if (!training && avail > 32 * GIB) avail = 32 * GIB;
    return avail & ~(size_t)0xFFFFF;
}

/* Waits until the device has finished all queued work. */
static void device_sync(const sdc_ctx *c) {
    unsigned char b[4];
    if (c->be != sdc_cpu_backend()) c->be->mem_download(b, c->arena->base, sizeof b);
}

/* Memory a run needed: on a GPU what it allocated since start, with the
 * arena (which holds the activations, their gradients and the backward's
 * temporaries) counted up to its high-water mark rather than its reserved
 * size — comparable to PyTorch's max_memory_allocated; on the CPU the
 * process's peak RSS. */
static double peak_gib(const dev_state *d, const sdc_arena *a) {
    if (d->dev.type == SDC_CPU) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        return (double)ru.ru_maxrss / (1 << 20);
    }
    double used = (double)device_used(d) - (double)d->used0;
    return gib(used - (double)(a->cap - a->peak));
}

/* ---- modes ------------------------------------------------------------------------------------------------------------- */

static sdc_status run_train(const opts *o, const sdc_preset *p, sdc_error *err) {
    sdc_dist dist; /* under mpirun: data parallel, each rank on its own GPU with the same batch */
    sdc_dist_init(&dist);
    dev_state d;
    SDC_TRY(device_open(o, 1, &d, err));
    sdc_unet *u;
    SDC_TRY(build_unet(p, o->seed, &u, err));
    const sdc_unet_config *cfg = &u->cfg;
    SDC_TRY(sdc_unet_check_size(cfg, o->size / 8, o->size / 8, err));
    sdc_sched_config sched;
    cJSON *sj = cJSON_Parse(p->scheduler);
    if (!sj) return sdc_fail(err, SDC_EFORMAT, "preset %s: bad scheduler config", p->name);
    sdc_status s = sdc_sched_config_parse(sj, "preset scheduler_config.json", &sched, err);
    cJSON_Delete(sj);
    SDC_TRY(s);

    sdc_lora_set ls;
    sdc_params *train = &u->params;
    SDC_TRY(sdc_params_to_device(&u->params, d.be, d.dev, d.dtype, err));
    if (o->lora > 0) {
        sdc_lora_config lc = {.targets = sdc_lora_targets_diffusers, .ntargets = 4, .rank = o->lora,
                              .alpha = (float)o->lora, .init = SDC_LORA_INIT_GAUSSIAN};
        SDC_TRY(sdc_lora_attach(&ls, &u->params, &lc, "unet_lora", err));
        sdc_params_init_random(&ls.params, o->seed + 7);
        SDC_TRY(sdc_params_to_device(&ls.params, d.be, d.dev, d.dtype, err));
        train = &ls.params;
    }
    /* gradients (and fp32 master weights) now, so the arena is sized from
     * what is left; the AdamW moments (2 × 4 bytes per trained parameter)
     * come after it */
    SDC_TRY(sdc_params_alloc_grad(train, err));
    sdc_arena arena;
    sdc_ctx c;
    const size_t moments = train->total * 8 / (o->zero && dist.size > 1 ? (size_t)dist.size : 1);
    SDC_TRY(sdc_ctx_open(&c, &arena, d.dev, d.dtype, arena_bytes(o, &d, moments, 1), err));

    sdc_trainer_opts to = {.prediction = sched.prediction_type, .grad_accum = 1, .max_grad_norm = 1.0,
                           .gradient_checkpointing = o->ckpt, .zero_stage = o->zero,
                           /* SDC_BENCH_NO_DP: each process trains alone (what N GPUs do without any exchange) */
                           .dist = getenv("SDC_BENCH_NO_DP") ? NULL : &dist,
                           .reduce_bf16 = getenv("SDC_BENCH_REDUCE_BF16") != NULL, .loss_scaling = d.dtype == SDC_F16};
    sdc_adamw_hparams_default(&to.adam);
    to.adam.lr = 1e-5;
    int total = o->warmup + o->steps;
    SDC_TRY(sdc_lr_schedule_init(&to.lr, SDC_LR_CONSTANT, 1e-5, 0, total + 1, 1, 1.0, err));
    sdc_trainer t;
    SDC_TRY(sdc_trainer_init(&t, u, NULL, 0, &train, 1, &sched, &to, &c, err));
    if (t.dp) t.dp->timing = 1; /* how long the reductions outlast the backward pass */

    /* random data: latents, noise, text states of 77 tokens, timesteps spread over the schedule */
    const int B = o->batch;
    const int64_t h = o->size / 8, w = o->size / 8, per = cfg->in_channels * h * w, S = 77, D = cfg->cross_attention_dim;
    const int64_t P = cfg->text_time ? cfg->projection_class_embeddings_input_dim - 6 * cfg->addition_time_embed_dim : 0;
    float *x0 = malloc((size_t)(B * per) * sizeof *x0), *noise = malloc((size_t)(B * per) * sizeof *noise);
    float *ctx = malloc((size_t)(B * S * D) * sizeof *ctx), *te = malloc((size_t)(B * (P ? P : 1)) * sizeof *te);
    double *tids = malloc((size_t)B * 6 * sizeof *tids);
    int64_t *ts = malloc((size_t)B * sizeof *ts);
    if (!x0 || !noise || !ctx || !te || !tids || !ts) return sdc_fail(err, SDC_ENOMEM, "out of memory for a batch");
    sdc_rng r;
    sdc_rng_init(&r, o->seed + 11);
    sdc_rng_fill_normal(&r, x0, (size_t)(B * per));
    sdc_rng_fill_normal(&r, noise, (size_t)(B * per));
    sdc_rng_fill_normal(&r, ctx, (size_t)(B * S * D));
    if (P) sdc_rng_fill_normal(&r, te, (size_t)(B * P));
    for (int b = 0; b < B; b++) {
        ts[b] = (int64_t)((b * 7919 + 101) % sched.num_train_timesteps);
        double id6[6] = {o->size, o->size, 0, 0, o->size, o->size};
        memcpy(tids + 6 * b, id6, sizeof id6);
    }
    sdc_train_batch bt = {.B = B, .x0 = x0, .noise = noise, .t = ts, .context = ctx, .h = h, .w = w, .S = S,
                          .text_embeds = P ? te : NULL, .time_ids = tids};

    double loss = 0, gn, lr, t0 = sdc_monotonic_s();
    int skipped;
    for (int i = 0; i < total; i++) {
        if (i == o->warmup) {
            device_sync(&c);
            sdc_dist_barrier(&dist);
            t0 = sdc_monotonic_s();
            if (t.dp) t.dp->exposed_s = 0;
        }
        SDC_TRY(sdc_trainer_micro_step(&t, &bt, &loss, err));
        SDC_TRY(sdc_trainer_optimizer_step(&t, &gn, &lr, &skipped, err));
    }
    device_sync(&c);
    sdc_dist_barrier(&dist);
    double step = (sdc_monotonic_s() - t0) / o->steps;
    double fwd = unet_flops(cfg, h, w, S), flops = 3.0 * fwd * B;
    double pk = peak_gib(&d, &arena);
    /* every rank's worst: the slowest sets the pace, the fullest GPU the memory */
    double exposed = t.dp ? t.dp->exposed_s / o->steps : 0;
    step = sdc_dist_max_f64(&dist, step), pk = sdc_dist_max_f64(&dist, pk), exposed = sdc_dist_max_f64(&dist, exposed);
    if (dist.rank == 0)
        printf("{\"mode\":\"train\",\"impl\":\"sdc\",\"preset\":\"%s\",\"size\":%d,\"batch\":%d,\"method\":\"%s\","
               "\"lora_rank\":%d,\"precision\":\"%s\",\"checkpointing\":%s,\"device\":\"%s\",\"steps\":%d,"
               "\"gpus\":%d,\"zero_stage\":%d,\"comm\":\"%s%s\",\"exposed_comm_ms\":%.4g,"
               "\"img_s\":%.4g,\"step_ms\":%.4g,\"peak_gib\":%.4g,\"arena_peak_gib\":%.4g,\"device_used_gib\":%.4g,"
               "\"tflop_step\":%.4g,\"mfu\":%.4g,\"loss\":%.6g}\n",
               p->name, o->size, B, o->lora > 0 ? "lora" : "full", o->lora, prec_name(d.dtype),
               o->ckpt ? "true" : "false", d.dev.type == SDC_CPU ? "cpu" : "cuda", o->steps, dist.size,
               t.dp ? t.dp->zero : 0, t.dp ? sdc_comm_name(&t.dp->comm) : "none", t.dp && t.dp->bf16 ? " bf16" : "", 1e3 * exposed,
               B * dist.size / step, 1e3 * step, pk, gib((double)arena.peak), gib((double)device_used(&d)),
               flops / 1e12, flops / step / PEAK_FLOPS, loss);
    sdc_trainer_free(&t);
    sdc_ctx_close(&c);
    if (o->lora > 0) sdc_lora_detach(&ls);
    sdc_unet_free(u);
    free(u);
    free(x0), free(noise), free(ctx), free(te), free(tids), free(ts);
    return SDC_OK;
}

static sdc_status run_unet(const opts *o, const sdc_preset *p, sdc_error *err) {
    dev_state d;
    SDC_TRY(device_open(o, 0, &d, err));
    sdc_unet *u;
    SDC_TRY(build_unet(p, o->seed, &u, err));
    const sdc_unet_config *cfg = &u->cfg;
    const int64_t B = (int64_t)o->batch * (o->cfg ? 2 : 1), h = o->size / 8, w = o->size / 8, S = 77,
                  D = cfg->cross_attention_dim;
    const int64_t P = cfg->text_time ? cfg->projection_class_embeddings_input_dim - 6 * cfg->addition_time_embed_dim : 0;
    SDC_TRY(sdc_unet_check_size(cfg, h, w, err));
    SDC_TRY(sdc_params_to_device(&u->params, d.be, d.dev, d.dtype, err));
    sdc_arena arena;
    sdc_ctx c;
    SDC_TRY(sdc_ctx_open(&c, &arena, d.dev, d.dtype, arena_bytes(o, &d, 0, 0), err));
    size_t nx = (size_t)(B * cfg->in_channels * h * w), nc = (size_t)(B * S * D);
    float *x = malloc(nx * sizeof *x), *ctx = malloc(nc * sizeof *ctx), *te = calloc((size_t)(B * (P ? P : 1)), sizeof *te);
    double *ts = malloc((size_t)B * sizeof *ts), *tids = malloc((size_t)B * 6 * sizeof *tids);
    if (!x || !ctx || !te || !ts || !tids) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    sdc_rng r;
    sdc_rng_init(&r, o->seed + 11);
    sdc_rng_fill_normal(&r, x, nx);
    sdc_rng_fill_normal(&r, ctx, nc);
    for (int64_t b = 0; b < B; b++) {
        ts[b] = 500;
        double id6[6] = {o->size, o->size, 0, 0, o->size, o->size};
        memcpy(tids + 6 * b, id6, sizeof id6);
    }
    sdc_tensor xt = sdc_op_upload(&c, NULL, 4, SDC_SHAPE(B, cfg->in_channels, h, w), x);
    sdc_tensor ct = sdc_op_upload(&c, NULL, 3, SDC_SHAPE(B, S, D), ctx);
    sdc_tensor tt = {0};
    if (P) tt = sdc_op_upload(&c, NULL, 2, SDC_SHAPE(B, P), te);
    sdc_unet_cond cond = {.context = &ct, .timesteps = ts, .text_embeds = P ? &tt : NULL, .time_ids = tids,
                          .n_time_ids = 6};
    /* --graph: the call captured once (after the warm-up) and replayed, its
     * timestep sinusoids in device buffers, as the sampling loop does */
    sdc_tensor tsin = {0}, tid = {0};
    void *graph = NULL;
    int graphed = o->graph && d.dev.type == SDC_CUDA;
    if (graphed) {
        const int64_t TD = cfg->block_out_channels[0], NTA = P ? 6 * cfg->addition_time_embed_dim : 0;
        float *hs = malloc((size_t)(B * (TD > NTA ? TD : NTA)) * sizeof *hs);
        if (!hs) return sdc_fail(err, SDC_ENOMEM, "out of memory");
        sdc_timestep_embedding(ts, B, TD, cfg->flip_sin_to_cos, cfg->freq_shift, hs);
        tsin = sdc_op_upload(&c, NULL, 2, SDC_SHAPE(B, TD), hs);
        cond.t_sinusoid = &tsin;
        if (NTA) {
            sdc_timestep_embedding(tids, B * 6, cfg->addition_time_embed_dim, cfg->flip_sin_to_cos, cfg->freq_shift, hs);
            tid = sdc_op_upload(&c, NULL, 2, SDC_SHAPE(B, NTA), hs);
            cond.time_ids_sinusoid = &tid;
        }
        free(hs);
    }
    size_t mark = sdc_arena_mark(&arena);
    double t0 = 0;
    for (int i = 0; i < o->warmup + o->calls; i++) {
        if (i == o->warmup) {
            if (graphed && sdc_cuda_graph_begin() == 0) {
                sdc_unet_forward(&c, NULL, u, &xt, &cond);
                sdc_cuda_graph_end(&graph);
                sdc_arena_release(&arena, mark);
            }
            device_sync(&c);
            t0 = sdc_monotonic_s();
        }
        if (graph) sdc_cuda_graph_launch(graph);
        else sdc_unet_forward(&c, NULL, u, &xt, &cond);
        sdc_arena_release(&arena, mark);
    }
    device_sync(&c);
    double per = (sdc_monotonic_s() - t0) / o->calls;
    double fl = unet_flops(cfg, h, w, S) * (double)B;
    printf("{\"mode\":\"unet\",\"impl\":\"sdc\",\"preset\":\"%s\",\"size\":%d,\"batch\":%d,\"unet_batch\":%lld,"
           "\"precision\":\"%s\",\"device\":\"%s\",\"graph\":%s,\"calls\":%d,\"ms\":%.4g,\"peak_gib\":%.4g,"
           "\"mfu\":%.4g}\n",
           p->name, o->size, o->batch, (long long)B, prec_name(d.dtype), d.dev.type == SDC_CPU ? "cpu" : "cuda",
           graph ? "true" : "false", o->calls, 1e3 * per, peak_gib(&d, &arena), fl / per / PEAK_FLOPS);
    sdc_cuda_graph_free(graph);
    sdc_ctx_close(&c);
    sdc_unet_free(u);
    free(u);
    free(x), free(ctx), free(te), free(ts), free(tids);
    return SDC_OK;
}

static sdc_status run_txt2img(const opts *o, const sdc_preset *p, sdc_error *err) {
    dev_state d;
    SDC_TRY(device_open(o, 0, &d, err));
    sdc_sd sd;
    sdc_status s = build_sd(p, o->seed, &sd, err);
    sdc_arena arena;
    sdc_ctx c = {0};
    if (s == SDC_OK) s = sdc_ctx_open(&c, &arena, d.dev, d.dtype, arena_bytes(o, &d, 0, 0), err);
    if (s == SDC_OK) s = sdc_sd_to_device(&sd, &c, err);
    sdc_txt2img_opts to = {.prompt = "a photograph of an astronaut riding a horse",
                           .steps = o->steps,
                           .guidance = sd.nte == 2 ? 5.0 : 7.5,
                           .sampler_from_config = 1,
                           .seed = o->seed,
                           .height = o->size,
                           .width = o->size,
                           .batch = o->batch,
                           .decode = 1};
    sdc_txt2img_out out;
    /* warm-up: a short run touches every kernel and library plan once */
    sdc_txt2img_opts warm = to;
    warm.steps = o->steps < 3 ? o->steps : 3;
    if (s == SDC_OK) s = sdc_txt2img(&c, &sd, &warm, &out, err);
    if (s == SDC_OK) sdc_txt2img_out_free(&out);
    double t0 = sdc_monotonic_s();
    for (int i = 0; s == SDC_OK && i < o->repeat; i++) {
        s = sdc_txt2img(&c, &sd, &to, &out, err); /* returns images on the host: the device is done */
        if (s == SDC_OK) sdc_txt2img_out_free(&out);
    }
    double per = (sdc_monotonic_s() - t0) / o->repeat;
    if (s == SDC_OK)
        printf("{\"mode\":\"txt2img\",\"impl\":\"sdc\",\"preset\":\"%s\",\"size\":%d,\"batch\":%d,\"steps\":%d,"
               "\"precision\":\"%s\",\"device\":\"%s\",\"scheduler\":\"%s\",\"s\":%.4g,\"peak_gib\":%.4g}\n",
               p->name, o->size, o->batch, o->steps, prec_name(d.dtype), d.dev.type == SDC_CPU ? "cpu" : "cuda",
               sd.sched.class_name, per, peak_gib(&d, &arena));
    if (c.arena) sdc_ctx_close(&c);
    sdc_sd_free(&sd);
    return s;
}

static sdc_status run_vae(const opts *o, const sdc_preset *p, sdc_error *err) {
    dev_state d;
    SDC_TRY(device_open(o, 0, &d, err));
    sdc_vae *v;
    SDC_TRY(build_vae(p, o->seed, &v, err));
    int sc = sdc_vae_scale(&v->cfg);
    if (o->size % sc) return sdc_fail(err, SDC_EINVAL, "--size %d must be a multiple of %d", o->size, sc);
    SDC_TRY(sdc_params_to_device(&v->params, d.be, d.dev, d.dtype, err));
    sdc_arena arena;
    sdc_ctx c;
    SDC_TRY(sdc_ctx_open(&c, &arena, d.dev, d.dtype, arena_bytes(o, &d, 0, 0), err));
    const int64_t B = o->batch, C = v->cfg.latent_channels, h = o->size / sc, w = o->size / sc;
    size_t n = (size_t)(B * C * h * w);
    float *z = malloc(n * sizeof *z);
    if (!z) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    sdc_rng r;
    sdc_rng_init(&r, o->seed + 11);
    sdc_rng_fill_normal(&r, z, n);
    sdc_tensor zt = sdc_op_upload(&c, NULL, 4, SDC_SHAPE(B, C, h, w), z);
    size_t mark = sdc_arena_mark(&arena);
    double t0 = 0;
    for (int i = 0; i < o->warmup + o->calls; i++) {
        if (i == o->warmup) {
            device_sync(&c);
            t0 = sdc_monotonic_s();
        }
        sdc_vae_decode(&c, NULL, v, &zt);
        sdc_arena_release(&arena, mark);
    }
    device_sync(&c);
    double per = (sdc_monotonic_s() - t0) / o->calls;
    printf("{\"mode\":\"vae\",\"impl\":\"sdc\",\"preset\":\"%s\",\"size\":%d,\"batch\":%d,\"precision\":\"%s\","
           "\"device\":\"%s\",\"calls\":%d,\"ms\":%.4g,\"peak_gib\":%.4g}\n",
           p->name, o->size, o->batch, prec_name(d.dtype), d.dev.type == SDC_CPU ? "cpu" : "cuda", o->calls, 1e3 * per,
           peak_gib(&d, &arena));
    sdc_ctx_close(&c);
    sdc_vae_free(v);
    free(v);
    free(z);
    return SDC_OK;
}

/* One attention layer's forward and backward through the backend, both
 * backward forms (recomputing the softmax statistics, and taking the
 * forward's): ms per call and TFLOP/s, with FlashAttention's FLOP
 * convention (forward 4·B·H·Tq·Tk·D, backward 2.5× that). */
static sdc_status run_attn(const opts *o, sdc_error *err) {
    dev_state d;
    SDC_TRY(device_open(o, 0, &d, err));
    const int64_t B = o->batch, Tq = o->tokens, Tk = o->keys > 0 ? o->keys : o->tokens, H = o->heads,
                  D = o->head_dim, HD = H * D;
    if (Tq < 1 || H < 1 || D < 1) return sdc_fail(err, SDC_EINVAL, "attn needs --tokens, --heads and --head-dim");
    sdc_arena arena;
    sdc_ctx c;
    const size_t act = (size_t)(4 * B * Tq * HD + 4 * B * Tk * HD) * sdc_dtype_size(d.dtype);
    SDC_TRY(sdc_ctx_open(&c, &arena, d.dev, d.dtype, act + (size_t)(B * H * Tq) * 4 + ((size_t)64 << 20), err));
    const size_t nq = (size_t)(B * Tq * HD), nk = (size_t)(B * Tk * HD);
    float *h = malloc((nq > nk ? nq : nk) * sizeof *h);
    if (!h) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    sdc_rng r;
    sdc_rng_init(&r, o->seed + 5);
    sdc_tensor t[4];
    const int64_t sq[3] = {B, Tq, HD}, sk[3] = {B, Tk, HD};
    for (int i = 0; i < 4; i++) { /* q, k, v, dout */
        const int isq = i == 0 || i == 3;
        sdc_rng_fill_normal(&r, h, isq ? nq : nk);
        t[i] = sdc_op_upload(&c, NULL, 3, isq ? sq : sk, h);
    }
    free(h);
    sdc_tensor out = sdc_ctx_alloc(&c, 3, sq), dq = sdc_ctx_alloc(&c, 3, sq), dk = sdc_ctx_alloc(&c, 3, sk),
               dv = sdc_ctx_alloc(&c, 3, sk);
    float *lse = sdc_arena_alloc(&arena, (size_t)(B * H * Tq) * sizeof(float));
    const float scale = 1.0f / sqrtf((float)D);
    const sdc_backend *be = d.be;
    double ms[4] = {0};
    for (int form = 0; form < 4; form++) { /* forward, forward + lse, backward, backward given lse */
        if ((form == 1 || form == 3) && !(be->attention_lse && be->attention_backward_saved)) continue;
        double t0 = 0;
        for (int i = 0; i < o->warmup + o->calls; i++) {
            if (i == o->warmup) {
                device_sync(&c);
                t0 = sdc_monotonic_s();
            }
            if (form == 0) be->attention(&out, &t[0], &t[1], &t[2], B, Tq, Tk, (int)H, D, scale, 0);
            else if (form == 1) be->attention_lse(&out, lse, &t[0], &t[1], &t[2], B, Tq, Tk, (int)H, D, scale, 0);
            else if (form == 2)
                be->attention_backward(&dq, &dk, &dv, &t[3], &t[0], &t[1], &t[2], B, Tq, Tk, (int)H, D, scale, 0);
            else
                be->attention_backward_saved(&dq, &dk, &dv, &t[3], &t[0], &t[1], &t[2], &out, lse, B, Tq, Tk, (int)H,
                                             D, scale, 0);
        }
        device_sync(&c);
        ms[form] = 1e3 * (sdc_monotonic_s() - t0) / o->calls;
    }
    const double fwd = 4.0 * (double)(B * H * Tq * Tk * D), bwd = 2.5 * fwd;
    printf("{\"mode\":\"attn\",\"impl\":\"sdc\",\"batch\":%lld,\"tokens\":%lld,\"keys\":%lld,\"heads\":%lld,"
           "\"head_dim\":%lld,\"precision\":\"%s\",\"fwd_ms\":%.4g,\"fwd_lse_ms\":%.4g,\"bwd_ms\":%.4g,"
           "\"bwd_saved_ms\":%.4g,\"fwd_tflops\":%.4g,\"bwd_tflops\":%.4g,\"bwd_saved_tflops\":%.4g}\n",
           (long long)B, (long long)Tq, (long long)Tk, (long long)H, (long long)D, prec_name(d.dtype), ms[0], ms[1],
           ms[2], ms[3], fwd / ms[0] / 1e9, bwd / ms[2] / 1e9, ms[3] > 0 ? bwd / ms[3] / 1e9 : 0.0);
    sdc_ctx_close(&c);
    return SDC_OK;
}

/* The preset's folder without weights: every config `sdc init` writes and
 * the tokenizers' vocab.json/merges.txt. */
static sdc_status run_config(const opts *o, const sdc_preset *p, sdc_error *err) {
    if (!o->out) return sdc_fail(err, SDC_EINVAL, "config needs --out DIR");
    sdc_preset_file *files = NULL;
    int n = 0;
    SDC_TRY(sdc_preset_files(p, "float32", &files, &n, err));
    sdc_status s = sdc_mkdirs(o->out, err);
    for (int i = 0; s == SDC_OK && i < n; i++) s = sdc_write_text_at(o->out, files[i].path, files[i].text, err);
    sdc_preset_files_free(files, n);
    static const char *const tok[2] = {"tokenizer", "tokenizer_2"};
    for (int i = 0; s == SDC_OK && i < 2 && preset_model(p, SDC_PRESET_CLIP_TEXT, i); i++) {
        char *dir = sdc_path_join(o->out, tok[i]);
        s = dir ? sdc_mkdirs(dir, err) : sdc_fail(err, SDC_ENOMEM, "out of memory");
        if (s == SDC_OK) s = sdc_clip_vocab_write(dir, err);
        free(dir);
    }
    if (s == SDC_OK) printf("{\"mode\":\"config\",\"preset\":\"%s\",\"out\":\"%s\",\"files\":%d}\n", p->name, o->out, n);
    return s;
}

static sdc_status run_flops(const opts *o, const sdc_preset *p, sdc_error *err) {
    sdc_unet_config cfg;
    SDC_TRY(unet_config(p, &cfg, err));
    double f = unet_flops(&cfg, o->size / 8, o->size / 8, 77);
    printf("{\"mode\":\"flops\",\"preset\":\"%s\",\"size\":%d,\"unet_fwd_gflop\":%.6g}\n", p->name, o->size, f / 1e9);
    return SDC_OK;
}

/* ---- main ---------------------------------------------------------------------------------------------------------- */

static int usage(void) {
    fprintf(stderr,
            "usage: sdc_bench train|unet|txt2img|vae|attn|config|flops [--preset sd15|sd21|sdxl|tiny] [--size PX] [--batch N]\n"
            "         [--lora RANK] [--steps N] [--warmup N] [--calls N] [--repeat N] [--checkpointing] [--cfg]\n"
            "         [--device cpu|cuda|cuda:N] [--precision bf16|fp16|fp32] [--arena-gib N] [--seed N] [--out DIR]\n"
            "         [--zero 0|1]   (train under mpirun: data parallel, one GPU per process, ZeRO-1 with --zero 1)\n"
            "         [--graph]      (unet: the call captured as a CUDA graph and replayed)\n"
            "         [--tokens N --heads N --head-dim N [--keys N]]   (attn: one attention layer)\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    sdc_log_init_from_env(); /* SDC_LOG=debug: the kernels' choices */
    opts o = {.mode = argv[1], .preset = "sd15", .size = 512, .batch = 1, .steps = -1, .warmup = -1, .calls = 20,
              .repeat = 1};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--checkpointing")) o.ckpt = 1;
        else if (!strcmp(a, "--graph")) o.graph = 1;
        else if (!strcmp(a, "--cfg")) o.cfg = 1;
        else if (!v) return usage();
        else if (!strcmp(a, "--preset")) o.preset = v, i++;
        else if (!strcmp(a, "--device")) o.device = v, i++;
        else if (!strcmp(a, "--precision")) o.precision = v, i++;
        else if (!strcmp(a, "--out")) o.out = v, i++;
        else if (!strcmp(a, "--size")) o.size = atoi(v), i++;
        else if (!strcmp(a, "--batch")) o.batch = atoi(v), i++;
        else if (!strcmp(a, "--lora")) o.lora = atoi(v), i++;
        else if (!strcmp(a, "--steps")) o.steps = atoi(v), i++;
        else if (!strcmp(a, "--warmup")) o.warmup = atoi(v), i++;
        else if (!strcmp(a, "--calls")) o.calls = atoi(v), i++;
        else if (!strcmp(a, "--repeat")) o.repeat = atoi(v), i++;
        else if (!strcmp(a, "--arena-gib")) o.arena_gib = atof(v), i++;
        else if (!strcmp(a, "--seed")) o.seed = strtoull(v, NULL, 10), i++;
        else if (!strcmp(a, "--zero")) o.zero = atoi(v), i++;
        else if (!strcmp(a, "--tokens")) o.tokens = atoi(v), i++;
        else if (!strcmp(a, "--keys")) o.keys = atoi(v), i++;
        else if (!strcmp(a, "--heads")) o.heads = atoi(v), i++;
        else if (!strcmp(a, "--head-dim")) o.head_dim = atoi(v), i++;
        else return usage();
    }
    int train = !strcmp(o.mode, "train"), t2i = !strcmp(o.mode, "txt2img");
    if (o.steps < 0) o.steps = train ? 10 : 50;
    if (o.warmup < 0) o.warmup = train ? 3 : 5;
    if (o.size < 8 || o.size % 8 || o.batch < 1 || o.steps < 1 || o.calls < 1 || o.repeat < 1 || o.lora < 0 ||
        o.warmup < 0) {
        fprintf(stderr, "sdc_bench: --size must be a positive multiple of 8; --batch, --steps, --calls, --repeat "
                        "positive; --warmup, --lora not negative\n");
        return 2;
    }
    const sdc_preset *p = sdc_preset_find(o.preset);
    if (!p) {
        fprintf(stderr, "sdc_bench: unknown preset %s (%s)\n", o.preset, sdc_preset_names());
        return 2;
    }
    sdc_error err = {0};
    sdc_status s;
    if (train) s = run_train(&o, p, &err);
    else if (!strcmp(o.mode, "unet")) s = run_unet(&o, p, &err);
    else if (t2i) s = run_txt2img(&o, p, &err);
    else if (!strcmp(o.mode, "vae")) s = run_vae(&o, p, &err);
    else if (!strcmp(o.mode, "config")) s = run_config(&o, p, &err);
    else if (!strcmp(o.mode, "flops")) s = run_flops(&o, p, &err);
    else if (!strcmp(o.mode, "attn")) s = run_attn(&o, &err);
    else return usage();
    if (s != SDC_OK) {
        fprintf(stderr, "sdc_bench: error: %s\n", err.msg);
        return 1;
    }
    return 0;
}
