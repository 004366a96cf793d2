/* The training loop around the trainer: data → latents and text states →
 * steps → logs, checkpoints and outputs. Randomness (sample order, crops,
 * latent sampling, noise, timesteps) comes from Philox streams keyed by
 * (seed, purpose, step), so a resumed run draws exactly what the
 * uninterrupted one would have. */
#include "pipeline/train_run.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/device.h"
#include "backend/ops.h"
#include "backend/cuda/cuda_runtime.h"
#include "core/clock.h"
#include "core/dist.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "io/json.h"
#include "train/dp.h"
#include "io/safetensors.h"
#include "data/image.h"
#include "data/plot.h"
#include "data/png.h"
#include "diffusion/training.h"
#include "io/lora_write.h"
#include "io/single_file_write.h"
#include "nn/lora_attach.h"
#include "pipeline/sd_model.h"
#include "pipeline/train_checkpoint.h"
#include "pipeline/trainer.h"
#include "pipeline/txt2img.h"

void sdc_train_args_default(sdc_train_args *a) {
    memset(a, 0, sizeof *a);
    a->image_column = "image";
    a->caption_column = "text";
    a->resolution = 512;
    a->train_batch_size = 16;
    a->num_train_epochs = 100;
    a->gradient_accumulation_steps = 1;
    a->learning_rate = 1e-4;
    a->lr_scheduler = "constant";
    a->lr_warmup_steps = 500;
    a->lr_num_cycles = 1;
    a->lr_power = 1.0;
    a->adam_beta1 = 0.9;
    a->adam_beta2 = 0.999;
    a->adam_weight_decay = 1e-2;
    a->adam_epsilon = 1e-8;
    a->max_grad_norm = 1.0;
    a->seed = -1;
    a->output_dir = "sd-model-finetuned";
    a->checkpointing_steps = 500;
    a->max_consecutive_nonfinite = 5;
    a->num_validation_images = 4;
    a->logging_dir = "logs";
    a->num_class_images = 100;
    a->prior_loss_weight = 1.0;
    a->sample_batch_size = 4;
}

/* SIGINT/SIGTERM during training: finish the step, save a checkpoint, stop. */
static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { g_stop = sig; }

/* Random streams: one Philox key per (seed, purpose, step). */
enum { RNG_NOISE = 1, RNG_TIMESTEPS, RNG_LATENT, RNG_OFFSET, RNG_PERTURB };
static void stream(sdc_rng *r, uint64_t seed, int purpose, uint64_t step) {
    sdc_rng_init(r, seed * 0x9E3779B97F4A7C15ull ^ ((uint64_t)purpose << 56) ^ (step * 0xD1B54A32D192ED03ull));
}

typedef struct run {
    const sdc_train_args *a;
    sdc_sd sd;
    sdc_dataset ds, cls; /* training images; DreamBooth class images (prior preservation) */
    /* sample orders of the (at most two) epochs in use: the current
     * micro-batch's and the prefetched one's; computed once per epoch */
    struct {
        int64_t epoch;
        int64_t *inst, *cls;
    } orders[2];
    uint8_t *bad[2]; /* images that failed to decode (training set, class set), skipped from then on */
    int64_t nbad;
    double *losses; /* per optimizer step, for logs/loss.png */
    size_t nloss, loss_cap;
    char loss_png[4300];
    int lora, train_te;
    sdc_lora_set unet_lora, te_lora[2];
    sdc_params *stores[4];
    int nstores;
    sdc_trainer t;
    sdc_arena arena;
    sdc_ctx ctx; /* where everything computes: device, activation dtype, the arena */
    int64_t B, C, h, w, T, D, P, res, per;
    sdc_dist dist; /* this process's shard: ranks take consecutive slices of each global batch */
    uint64_t seed;
    FILE *log;
} run;

static sdc_status pick_method(run *r, sdc_error *err) {
    const sdc_train_args *a = r->a;
    const char *m = a->method;
    if (!m) m = a->instance_data_dir ? (a->rank ? "dreambooth_lora" : "dreambooth") : (a->rank ? "lora" : "full");
    if (!strcmp(m, "full") || !strcmp(m, "dreambooth")) r->lora = 0;
    else if (!strcmp(m, "lora") || !strcmp(m, "dreambooth_lora")) r->lora = 1;
    else return sdc_fail(err, SDC_EINVAL, "--method %s: expected full, lora, dreambooth or dreambooth_lora", m);
    r->train_te = a->train_text_encoder;
    return SDC_OK;
}

static sdc_status load_data(run *r, sdc_error *err) {
    const sdc_train_args *a = r->a;
    sdc_dataset_init(&r->ds);
    if (a->instance_data_dir) {
        if (!a->instance_prompt) return sdc_fail(err, SDC_EINVAL, "--instance_data_dir needs --instance_prompt");
        SDC_TRY(sdc_dataset_scan_images(&r->ds, a->instance_data_dir, a->instance_prompt, 0, err));
    } else {
        const char *dir = a->train_data_dir ? a->train_data_dir : a->dataset_name;
        if (!dir) return sdc_fail(err, SDC_EINVAL, "no training data: give --train_data_dir, --dataset_name or --instance_data_dir");
        /* an imagefolder (as datasets loads it) has one image column, "image",
         * filled from metadata.jsonl's file_name: the scripts refuse other names */
        if (a->image_column && strcmp(a->image_column, "image") != 0)
            return sdc_fail(err, SDC_EINVAL,
                            "--image_column %s: %s is an image folder, whose image column is \"image\" (its "
                            "metadata.jsonl names the files in \"file_name\")",
                            a->image_column, dir);
        char meta[4096];
        snprintf(meta, sizeof meta, "%s/metadata.jsonl", dir);
        /* imagefolder with metadata.jsonl; otherwise kohya's caption files
         * (--caption_extension, else .txt then .caption) */
        if (sdc_path_exists(meta)) {
            SDC_TRY(sdc_dataset_scan_imagefolder(&r->ds, dir, a->caption_column, err));
        } else {
            int64_t missing = 0;
            SDC_TRY(sdc_dataset_scan_captioned(&r->ds, dir, a->caption_extension, 1, &missing, err));
            if (missing) SDC_WARN("%s: %lld images have no caption file; their caption is empty", dir, (long long)missing);
        }
    }
    if (a->max_train_samples > 0) sdc_dataset_select(&r->ds, a->max_train_samples, r->seed);
    return SDC_OK;
}

/* LoRA sets or full stores, as the method says. */
static sdc_status set_up_training(run *r, sdc_error *err) {
    const sdc_train_args *a = r->a;
    int rank = a->rank ? a->rank : 4;
    float alpha = a->lora_alpha > 0 ? (float)a->lora_alpha : (float)rank;
    if (r->lora) {
        sdc_lora_config lc = {.targets = sdc_lora_targets_diffusers, .ntargets = 4, .rank = rank, .alpha = alpha,
                              .init = SDC_LORA_INIT_GAUSSIAN};
        SDC_TRY(sdc_lora_attach(&r->unet_lora, &r->sd.unet->params, &lc, "unet_lora", err));
        sdc_params_init_random(&r->unet_lora.params, r->seed);
        r->stores[r->nstores++] = &r->unet_lora.params;
        if (r->train_te) {
            static const char *const te_targets[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
            lc.targets = te_targets;
            for (int i = 0; i < r->sd.nte; i++) {
                SDC_TRY(sdc_lora_attach(&r->te_lora[i], &r->sd.te[i]->params, &lc,
                                        i ? "text_encoder_2_lora" : "text_encoder_lora", err));
                sdc_params_init_random(&r->te_lora[i].params, r->seed + 1 + (uint64_t)i);
                r->stores[r->nstores++] = &r->te_lora[i].params;
            }
        }
    } else {
        r->stores[r->nstores++] = &r->sd.unet->params;
        if (r->train_te)
            for (int i = 0; i < r->sd.nte; i++) r->stores[r->nstores++] = &r->sd.te[i]->params;
    }
    sdc_trainer_opts o = {0};
    const char *pt = a->prediction_type;
    o.prediction = pt ? (!strcmp(pt, "v_prediction") ? SDC_PRED_V : SDC_PRED_EPSILON) : r->sd.sched.prediction_type;
    if (pt && strcmp(pt, "v_prediction") && strcmp(pt, "epsilon"))
        return sdc_fail(err, SDC_EINVAL, "--prediction_type %s: expected epsilon or v_prediction", pt);
    o.snr_gamma = a->snr_gamma;
    o.grad_accum = a->gradient_accumulation_steps;
    /* several processes: gradients averaged over them (NCCL on GPUs, MPI on CPUs) */
    o.dist = &r->dist;
    o.zero_stage = a->zero_stage;
    o.reduce_bf16 = a->reduce_dtype && !strcmp(a->reduce_dtype, "bf16");
    o.loss_scaling = r->ctx.dtype == SDC_F16; /* fp16 gradients underflow without it */
    o.max_grad_norm = a->max_grad_norm;
    o.gradient_checkpointing = a->gradient_checkpointing;
    sdc_adamw_hparams_default(&o.adam);
    o.adam.lr = a->learning_rate;
    /* as the scripts: × batch × accumulation × processes */
    if (a->scale_lr)
        o.adam.lr = sdc_scale_lr(a->learning_rate, a->gradient_accumulation_steps, a->train_batch_size, r->dist.size);
    o.adam.beta1 = a->adam_beta1;
    o.adam.beta2 = a->adam_beta2;
    o.adam.weight_decay = a->adam_weight_decay;
    o.adam.eps = a->adam_epsilon;
    sdc_lr_kind kind;
    SDC_TRY(sdc_lr_kind_parse(a->lr_scheduler, &kind, err));
    /* diffusers' scripts count the schedule in optimizer steps × processes */
    SDC_TRY(sdc_lr_schedule_init(&o.lr, kind, o.adam.lr, a->lr_warmup_steps, a->max_train_steps, a->lr_num_cycles,
                                 a->lr_power, err));
    if (a->save_single_file && r->lora)
        return sdc_fail(err, SDC_EINVAL, "--save_single_file applies to full fine-tuning (LoRA: --lora_format)");
    if (a->use_ema) {
        if (r->lora) return sdc_fail(err, SDC_EINVAL, "--use_ema applies to full fine-tuning, not LoRA");
        o.use_ema = 1;
        sdc_ema_hparams_default(&o.ema);
    }
    /* LoRA sets were made on the host after the model moved: they follow it */
    if (r->lora)
        for (int i = 0; i < r->nstores; i++)
            SDC_TRY(sdc_params_to_device(r->stores[i], r->ctx.be, r->ctx.device, r->ctx.dtype, err));
    sdc_clip_text *te[2] = {r->sd.te[0], r->sd.te[1]};
    return sdc_trainer_init(&r->t, r->sd.unet, te, r->train_te ? r->sd.nte : 0, r->stores, r->nstores, &r->sd.sched,
                            &o, &r->ctx, err);
}

/* The stream key of local sample b of a micro-batch: its index in the
 * global batch (all ranks), so every sample draws the same numbers however
 * the batch is split across processes. */
static uint64_t sample_key(const run *r, uint64_t micro_index, int64_t b) {
    const int64_t G = r->B * r->dist.size, rank_off = (int64_t)r->dist.rank * r->B;
    int64_t g = b < r->B ? rank_off + b : G + rank_off + (b - r->B);
    return micro_index * (uint64_t)(2 * G) + (uint64_t)g;
}

/* The images of one micro-batch, decoded and transformed: loaded in a
 * background thread while the previous micro-batch trains (prefetch), or
 * in place when there is none. One job runs at a time, so the skip list of
 * broken images has a single writer. */
typedef struct load_job {
    run *r;
    int64_t pos, epoch;
    const int64_t *perm, *cls_perm; /* that epoch's orders (run.orders) */
    float *img;               /* [nb, 3, res, res] */
    int64_t item[512];
    sdc_sample_info info[512];
    sdc_status st;
    sdc_error err;
    pthread_t thread;
    int running;
} load_job;

/* The orders of `epoch`, computing them into a slot not holding `keep`
 * (the epoch of the micro-batch in use; −1: none). */
static void epoch_orders(run *r, int64_t epoch, int64_t keep, const int64_t **inst, const int64_t **cls) {
    int s = r->orders[0].epoch == epoch ? 0 : r->orders[1].epoch == epoch ? 1 : -1;
    if (s < 0) {
        s = r->orders[0].epoch == keep ? 1 : 0;
        r->orders[s].epoch = epoch;
        sdc_dataset_epoch_order(&r->ds, r->seed, (uint64_t)epoch, r->orders[s].inst);
        if (r->cls.n) sdc_dataset_epoch_order(&r->cls, ~r->seed, (uint64_t)epoch, r->orders[s].cls);
    }
    *inst = r->orders[s].inst;
    *cls = r->orders[s].cls;
}

static sdc_status job_init(run *r, load_job *j, int64_t pos, int64_t epoch, int64_t keep) {
    const int64_t nb = r->a->with_prior_preservation ? 2 * r->B : r->B;
    memset(j, 0, sizeof *j);
    j->r = r, j->pos = pos, j->epoch = epoch;
    j->img = malloc((size_t)(nb * 3 * r->res * r->res) * sizeof *j->img);
    if (!j->img) return sdc_fail(&j->err, SDC_ENOMEM, "out of memory for a batch");
    epoch_orders(r, epoch, keep, &j->perm, &j->cls_perm);
    return SDC_OK;
}

static void job_free(load_job *j) {
    if (j->running) pthread_join(j->thread, NULL);
    free(j->img);
    memset(j, 0, sizeof *j);
}

/* The position in the epoch's order of local sample b (this rank's slice
 * of the global batch; class images after the training images). */
static int64_t job_at(const load_job *j, int64_t b) {
    const run *r = j->r;
    const int64_t shard = (int64_t)r->dist.rank * r->B;
    return b >= r->B ? (j->pos + shard + b - r->B) % r->cls.n : (j->pos + shard + b) % r->ds.n;
}

static void run_job(load_job *j) {
    run *r = j->r;
    const sdc_train_args *a = r->a;
    const int prior = a->with_prior_preservation;
    const int64_t B = prior ? 2 * r->B : r->B, res = r->res;
    sdc_sample_opts so = {.resolution = (int)res, .center_crop = a->center_crop, .random_flip = a->random_flip,
                          .flip_before_crop = r->sd.nte == 2, .apply_exif = a->instance_data_dir != NULL};
    sdc_status *sts = calloc((size_t)B, sizeof *sts);
    sdc_error *errs = calloc((size_t)B, sizeof *errs);
    if (!sts || !errs) {
        free(sts), free(errs);
        j->st = sdc_fail(&j->err, SDC_ENOMEM, "out of memory");
        return;
    }
    /* 1: each sample's first candidate (reads the skip list only) */
    for (int64_t b = 0; b < B; b++) {
        int is_class = b >= r->B;
        const sdc_dataset *ds = is_class ? &r->cls : &r->ds;
        const int64_t *order = is_class ? j->cls_perm : j->perm;
        j->item[b] = -1;
        for (int64_t t = 0, at = job_at(j, b); t < ds->n; t++)
            if (!r->bad[is_class][order[(at + t) % ds->n]]) {
                j->item[b] = order[(at + t) % ds->n];
                break;
            }
    }
    /* 2: decode them on worker threads (each sample has its own output) */
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t b = 0; b < B; b++) {
        int is_class = b >= r->B;
        if (j->item[b] < 0) {
            sts[b] = SDC_EFORMAT;
            continue;
        }
        sts[b] = sdc_dataset_load_sample(is_class ? &r->cls : &r->ds, j->item[b], &so, is_class ? ~r->seed : r->seed,
                                         (uint64_t)j->epoch, j->img + b * 3 * res * res, &j->info[b], &errs[b]);
    }
    /* 3: failures in sample order, as a serial loader would meet them: mark
     * the image broken (warning once), take the next one in the order */
    sdc_status st = SDC_OK;
    for (int64_t b = 0; st == SDC_OK && b < B; b++) {
        if (sts[b] == SDC_OK) continue;
        if (sts[b] == SDC_ENOMEM) {
            st = sts[b];
            j->err = errs[b];
            break;
        }
        int is_class = b >= r->B;
        const sdc_dataset *ds = is_class ? &r->cls : &r->ds;
        const int64_t *order = is_class ? j->cls_perm : j->perm;
        uint8_t *bad = r->bad[is_class];
        if (j->item[b] >= 0 && !bad[j->item[b]]) {
            SDC_WARN("skipping %s", errs[b].msg);
            bad[j->item[b]] = 1;
            r->nbad++;
        }
        st = SDC_EFORMAT;
        for (int64_t t = 0, at = job_at(j, b); t < ds->n; t++) {
            if (2 * r->nbad > r->ds.n + r->cls.n) break;
            int64_t item = order[(at + t) % ds->n];
            if (bad[item]) continue;
            j->item[b] = item;
            st = sdc_dataset_load_sample(ds, item, &so, is_class ? ~r->seed : r->seed, (uint64_t)j->epoch,
                                         j->img + b * 3 * res * res, &j->info[b], &j->err);
            if (st == SDC_OK || st == SDC_ENOMEM) break;
            SDC_WARN("skipping %s", j->err.msg);
            bad[item] = 1;
            r->nbad++;
            st = SDC_EFORMAT;
        }
        if (st != SDC_OK && st != SDC_ENOMEM)
            st = sdc_fail(&j->err, SDC_EFORMAT, "%lld of %lld images could not be decoded; stopping (see the warnings)",
                          (long long)r->nbad, (long long)(r->ds.n + r->cls.n));
    }
    free(sts), free(errs);
    j->st = st;
}

static void *job_thread(void *arg) {
    run_job(arg);
    return NULL;
}

/* One micro-batch: images → latents (a sample of the VAE posterior ×
 * scaling factor), captions → text states (or token ids when the text
 * encoders train), noise and timesteps. */
static sdc_status micro_batch(run *r, load_job *job, uint64_t micro_index, double *loss, sdc_error *err) {
    const sdc_train_args *a = r->a;
    const int prior = a->with_prior_preservation;
    /* the UNet batch: B training images, then (prior preservation) B class
     * images, as train_dreambooth.py concatenates them */
    const int64_t B = prior ? 2 * r->B : r->B, res = r->res, per = r->per;
    sdc_ctx c = r->ctx;
    if (job->st != SDC_OK) {
        *err = job->err;
        return job->st;
    }
    float *img = job->img, *x0 = malloc((size_t)(B * per) * sizeof *x0);
    float *noise = malloc((size_t)(B * per) * sizeof *noise), *in_noise = malloc((size_t)(B * per) * sizeof *in_noise);
    float *ctx = calloc((size_t)(B * r->T * r->D), sizeof *ctx), *pooled = calloc((size_t)(B * (r->P ? r->P : 1)), sizeof *pooled);
    int32_t *ids[2] = {malloc((size_t)(B * r->T) * sizeof(int32_t)), malloc((size_t)(B * r->T) * sizeof(int32_t))};
    double *tids = malloc((size_t)B * 6 * sizeof *tids);
    int64_t *ts = malloc((size_t)B * sizeof *ts);
    float sw[512];
    sdc_status st = x0 && noise && in_noise && ctx && pooled && ids[0] && ids[1] && tids && ts
                        ? SDC_OK
                        : sdc_fail(err, SDC_ENOMEM, "out of memory for a batch of %lld", (long long)B);
    for (int64_t b = 0; st == SDC_OK && b < B; b++) {
        int is_class = b >= r->B;
        const sdc_dataset *ds = is_class ? &r->cls : &r->ds;
        int64_t item = job->item[b];
        const sdc_sample_info info = job->info[b];
        /* DreamBooth's loss: instance MSE + prior_loss_weight · class MSE
         * (weights 2 and 2λ over the doubled batch's mean) */
        sw[b] = prior ? (float)(is_class ? 2.0 * a->prior_loss_weight : 2.0) : 1.0f;
        double id6[6] = {info.orig_h, info.orig_w, info.crop_top, info.crop_left, (double)res, (double)res};
        memcpy(tids + 6 * b, id6, sizeof id6);
        const char *cap = ds->items[item].caption;
        /* token ids for text encoders that train in the step, else the
         * frozen encoders' states (sdc_encode_prompt tokenizes itself) */
        for (int e = 0; st == SDC_OK && r->train_te && e < r->sd.nte; e++)
            st = sdc_clip_tokenize(r->sd.tok[e], cap, ids[e] + b * r->T, NULL, err);
        if (st == SDC_OK && !r->train_te) {
            size_t mark = sdc_arena_mark(&r->arena);
            sdc_tensor cc, pp;
            st = sdc_encode_prompt(&c, &r->sd, cap, 0, &cc, &pp, err);
            if (st == SDC_OK) {
                sdc_op_download(&c, ctx + b * r->T * r->D, &cc);
                if (r->P) sdc_op_download(&c, pooled + b * r->P, &pp);
            }
            sdc_arena_release(&r->arena, mark);
        }
    }
    if (st == SDC_OK) {
        /* latents = (mean + σ·ξ) × scaling_factor, per image */
        const sdc_vae_config *vc = &r->sd.vae->cfg;
        size_t mark = sdc_arena_mark(&r->arena);
        sdc_ctx venc = sdc_sd_vae_ctx(&r->sd, &c); /* fp32 for an fp16-unsafe VAE */
        sdc_tensor im = sdc_op_upload(&venc, NULL, 4, SDC_SHAPE(B, 3, res, res), img);
        sdc_tensor mean, logvar;
        sdc_vae_encode(&venc, r->sd.vae, &im, &mean, &logvar);
        float *lv = malloc((size_t)(B * per) * sizeof *lv);
        if (!lv) st = sdc_fail(err, SDC_ENOMEM, "out of memory");
        if (st == SDC_OK) {
            sdc_op_download(&venc, x0, &mean);
            sdc_op_download(&venc, lv, &logvar);
            for (int64_t b = 0; b < B; b++) {
                sdc_rng rl;
                stream(&rl, r->seed, RNG_LATENT, sample_key(r, micro_index, b));
                sdc_rng_fill_normal(&rl, noise + b * per, (size_t)per);
            }
            for (int64_t i = 0; i < B * per; i++)
                x0[i] = (float)(((double)x0[i] + exp(0.5 * lv[i]) * noise[i] - vc->shift_factor) * vc->scaling_factor);
        }
        free(lv);
        sdc_arena_release(&r->arena, mark);
    }
    if (st == SDC_OK) {
        /* per-sample streams (see sample_key): noise, offset, perturbation, timestep */
        float off[256];
        for (int64_t b = 0; b < B; b++) {
            const uint64_t key = sample_key(r, micro_index, b);
            sdc_rng rn, rt, ro, rp;
            stream(&rn, r->seed, RNG_NOISE, key);
            sdc_rng_fill_normal(&rn, noise + b * per, (size_t)per);
            stream(&ro, r->seed, RNG_OFFSET, key);
            sdc_rng_fill_normal(&ro, off + b * r->C, (size_t)r->C);
            stream(&rp, r->seed, RNG_PERTURB, key);
            sdc_rng_fill_normal(&rp, img + b * per, (size_t)per);
            stream(&rt, r->seed, RNG_TIMESTEPS, key);
            ts[b] = sdc_rng_below(&rt, (uint32_t)r->sd.sched.num_train_timesteps);
        }
        /* noise += offset · ξ[b, c] broadcast over the pixels */
        if (a->noise_offset > 0) sdc_train_noise_offset(noise, off, (int)B, (int)r->C, r->h * r->w, a->noise_offset);
        memcpy(in_noise, noise, (size_t)(B * per) * sizeof *noise);
        if (a->input_perturbation > 0)
            sdc_train_input_perturbation(in_noise, noise, img, (size_t)(B * per), a->input_perturbation);
        sdc_train_batch batch = {.B = (int)B, .x0 = x0, .noise = noise, .input_noise = in_noise, .t = ts,
                                 .context = ctx, .h = r->h, .w = r->w, .S = r->T, .text_embeds = pooled,
                                 .time_ids = tids, .T = r->T, .sample_weights = prior ? sw : NULL};
        batch.input_ids[0] = ids[0];
        batch.input_ids[1] = ids[1];
        st = sdc_trainer_micro_step(&r->t, &batch, loss, err);
    }
    free(x0), free(noise), free(in_noise), free(ctx), free(pooled), free(ids[0]), free(ids[1]);
    free(tids), free(ts);
    return st;
}

static sdc_status save_outputs(run *r, sdc_error *err) {
    const sdc_train_args *a = r->a;
    char path[4096];
    for (int i = 0; i < r->nstores; i++) sdc_params_sync_host(r->stores[i]);
    if (r->lora) {
        const char *fmt = a->lora_format ? a->lora_format : "diffusers";
        const sdc_lora_set *te = r->train_te ? &r->te_lora[0] : NULL;
        const sdc_lora_set *te2 = r->train_te && r->sd.nte == 2 ? &r->te_lora[1] : NULL;
        if (strcmp(fmt, "kohya") != 0) {
            snprintf(path, sizeof path, "%s/pytorch_lora_weights.safetensors", a->output_dir);
            SDC_TRY(sdc_lora_write_diffusers(path, &r->unet_lora, te, te2, SDC_F32, err));
            SDC_INFO("wrote %s", path);
        }
        if (strcmp(fmt, "diffusers") != 0) {
            /* sd-scripts' names: SGM module paths for SDXL, diffusers' for SD 1.x/2.x */
            sdc_unet_layout layout;
            int sgm = sdc_lora_kohya_wants_sgm(r->sd.family) && sdc_unet_layout_read(&r->sd.unet->params, &layout) != 0;
            snprintf(path, sizeof path, "%s/lora_kohya.safetensors", a->output_dir);
            SDC_TRY(sdc_lora_write_kohya(path, &r->unet_lora, te, te2, r->sd.family, sgm ? &layout : NULL, SDC_F16, err));
            SDC_INFO("wrote %s", path);
        }
        return SDC_OK;
    }
    if (r->sd.files.single_file)
        return sdc_fail(err, SDC_EUNSUPPORTED, "%s: saving a full fine-tune needs a diffusers folder as the base model",
                        a->pretrained_model_name_or_path);
    const sdc_component *uc = sdc_model_component(&r->sd.files, "unet");
    char *cfg = sdc_json_print_config(uc->config);
    if (!cfg) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    /* the folder is built aside, then its entries move into output_dir
     * (which already holds the checkpoints and logs) */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s/.sdc-model-%d", a->output_dir, (int)getpid());
    sdc_status st = sdc_pipeline_write_diffusers(tmp, a->pretrained_model_name_or_path, &r->sd.unet->params, cfg,
                                                 SDC_F32, err);
    free(cfg);
    if (st == SDC_OK && a->pretrained_vae_model_name_or_path) {
        /* the VAE trained with goes into the folder, as the SDXL script saves it */
        char vdir[4300], cfgp[4200], *vcfg = NULL;
        size_t len = 0;
        snprintf(vdir, sizeof vdir, "%s/vae", tmp);
        snprintf(cfgp, sizeof cfgp, "%s/config.json", a->pretrained_vae_model_name_or_path);
        sdc_remove_tree(vdir);
        st = sdc_read_file(cfgp, &vcfg, &len, err);
        if (st == SDC_OK)
            st = sdc_params_write_diffusers(vdir, &r->sd.vae->params, "diffusion_pytorch_model.safetensors", vcfg,
                                            SDC_F32, err);
        free(vcfg);
    }
    /* trained text encoders replace the base model's, as the scripts save them */
    for (int i = 0; st == SDC_OK && r->train_te && i < r->sd.nte; i++) {
        const char *name = i ? "text_encoder_2" : "text_encoder";
        const sdc_component *tc = sdc_model_component(&r->sd.files, name);
        char tdir[4300], *tcfg = tc ? sdc_json_print_config(tc->config) : NULL;
        snprintf(tdir, sizeof tdir, "%s/%s", tmp, name);
        if (!tcfg) {
            st = sdc_fail(err, SDC_ENOMEM, "out of memory");
            break;
        }
        sdc_remove_tree(tdir);
        st = sdc_params_write_diffusers(tdir, &r->sd.te[i]->params, "model.safetensors", tcfg, SDC_F32, err);
        free(tcfg);
    }
    /* every component the folder holds (including ones sdc does not use) */
    DIR *d = st == SDC_OK ? opendir(tmp) : NULL;
    if (st == SDC_OK && !d) st = sdc_fail(err, SDC_EIO, "%s: cannot read: %s", tmp, strerror(errno));
    for (struct dirent *e; st == SDC_OK && (e = readdir(d)) != NULL;) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char from[4600], to[4400], old[4500];
        snprintf(from, sizeof from, "%s/%s", tmp, e->d_name);
        snprintf(to, sizeof to, "%s/%s", a->output_dir, e->d_name);
        snprintf(old, sizeof old, "%s.old-%d", to, (int)getpid());
        int had = sdc_path_exists(to) && rename(to, old) == 0;
        if (rename(from, to) != 0) {
            st = sdc_fail(err, SDC_EIO, "%s: cannot move into place: %s", to, strerror(errno));
            if (had) rename(old, to); /* the previous copy stays */
        } else if (had && sdc_remove_tree(old) != 0) {
            SDC_WARN("%s: could not remove the previous copy", old);
        }
    }
    if (d) closedir(d);
    sdc_remove_tree(tmp); /* empty after the moves; everything on failure */
    if (st == SDC_OK) SDC_INFO("wrote the fine-tuned model to %s", a->output_dir);
    if (st == SDC_OK && a->save_single_file) {
        char sf[4300];
        snprintf(sf, sizeof sf, "%s/model.safetensors", a->output_dir);
        st = sdc_single_file_write(sf, r->sd.family, &r->sd.unet->params, &r->sd.vae->params, r->sd.vae->cfg.levels,
                                   &r->sd.te[0]->params, r->sd.nte == 2 ? &r->sd.te[1]->params : NULL, SDC_F16, err);
        if (st == SDC_OK) SDC_INFO("wrote %s", sf);
    }
    return st;
}

/* Validation image i: the prompt from seed + i, whatever process draws it. */
static sdc_txt2img_opts validation_opts(const run *r, int i) {
    sdc_txt2img_opts o = {.prompt = r->a->validation_prompt, .steps = 30, .guidance = r->sd.nte == 2 ? 5.0 : 7.5,
                          .sampler_from_config = 1, .seed = r->seed + (uint64_t)i, .height = (int)r->res,
                          .width = (int)r->res, .batch = 1, .decode = 1};
    return o;
}

/* Renders validation image i into rgb [res, res, 3]. */
static sdc_status render_validation(run *r, int i, uint8_t *rgb, sdc_error *err) {
    sdc_ctx c = r->ctx;
    sdc_txt2img_opts o = validation_opts(r, i);
    sdc_txt2img_out out;
    SDC_TRY(sdc_txt2img(&c, &r->sd, &o, &out, err));
    const int H = (int)out.image_shape[2], W = (int)out.image_shape[3];
    sdc_status st = SDC_OK;
    if (H != r->res || W != r->res) /* the gather assumes the training size */
        st = sdc_fail(err, SDC_EINVAL, "validation rendered %dx%d, not %lldx%lld", W, H, (long long)r->res,
                      (long long)r->res);
    else
        sdc_image_from_chw(out.images, H, W, rgb);
    sdc_txt2img_out_free(&out);
    return st;
}

/* Collective: call on every rank at the same points. Image i is rendered
 * by rank i mod P (P ranks), in rounds of P images: round j renders images
 * jP .. jP+P−1 at once, then rank 0 gathers them and writes their PNGs
 * (and the grid at the end) while the others start the next round. Seeds
 * and settings depend on i only, so the files are those one process
 * writes. Each round begins by agreeing on every rank's status, so a
 * failure anywhere (a render, rank 0's writes) stops all ranks there with
 * the failing rank's message. */
static sdc_status validate(run *r, sdc_error *err) {
    const sdc_train_args *a = r->a;
    if (!a->validation_prompt || a->num_validation_images <= 0) return SDC_OK;
    const int P = r->dist.size, me = r->dist.rank, root = me == 0, n = a->num_validation_images;
    const int rounds = (n + P - 1) / P;
    const int W = (int)r->res, H = (int)r->res;
    const size_t bytes = (size_t)H * W * 3;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/samples", a->output_dir);
    sdc_status st = root ? sdc_mkdirs(dir, err) : SDC_OK;
    /* rank 0: every image, image i at all + i·bytes (the last round's
     * slots past n are padding); every rank: its image of the round */
    uint8_t *all = root ? malloc((size_t)rounds * P * bytes) : NULL, *mine = calloc(bytes, 1);
    uint8_t **imgs = root ? calloc((size_t)n, sizeof *imgs) : NULL;
    if (st == SDC_OK && (!mine || (root && (!all || !imgs)))) st = sdc_fail(err, SDC_ENOMEM, "out of memory");
    int failed = 0, who = -1;
    for (int j = 0; j < rounds; j++) {
        const int i = j * P + me;
        if (st == SDC_OK && i < n) st = render_validation(r, i, mine, err);
        st = sdc_dist_agree(&r->dist, st, err, &who);
        if (st != SDC_OK) {
            failed = 1;
            break;
        }
        sdc_dist_gather(&r->dist, mine, root ? all + (size_t)j * P * bytes : NULL, bytes, 0); /* recv: root only */
        for (int q = 0; root && st == SDC_OK && q < P && j * P + q < n; q++) {
            const int k = j * P + q;
            const sdc_txt2img_opts o = validation_opts(r, k);
            char path[4400], params[4400];
            imgs[k] = all + (size_t)k * bytes;
            snprintf(path, sizeof path, "%s/step-%lld-%d.png", dir, (long long)r->t.step, k);
            snprintf(params, sizeof params, "%s\nSteps: 30, CFG scale: %g, Seed: %llu, Size: %dx%d, Version: sdc",
                     a->validation_prompt, o.guidance, (unsigned long long)o.seed, W, H);
            const char *key = "parameters", *val = params;
            st = sdc_png_write(path, imgs[k], W, H, 3, &key, &val, 1, err);
        }
    }
    if (!failed) {
        if (root && st == SDC_OK && n > 1) {
            char path[4400];
            snprintf(path, sizeof path, "%s/step-%lld-grid.png", dir, (long long)r->t.step);
            st = sdc_png_write_grid(path, (const uint8_t *const *)imgs, n, W, H, err);
        }
        st = sdc_dist_agree(&r->dist, st, err, &who); /* rank 0's last writes */
    }
    if (st != SDC_OK && P > 1) sdc_error_prefix(err, "validation on rank %d", who);
    free(all), free(mine), free(imgs);
    return st;
}

/* Appends a step's loss and redraws logs/loss.png now and then. */
static void record_loss(run *r, double loss, int force) {
    if (r->nloss == r->loss_cap) {
        size_t cap = r->loss_cap ? 2 * r->loss_cap : 1024;
        double *l = realloc(r->losses, cap * sizeof *l);
        if (!l) return; /* the plot is a convenience; the JSONL log has every value */
        r->losses = l;
        r->loss_cap = cap;
    }
    if (loss == loss) r->losses[r->nloss++] = loss;
    if (force || r->nloss % 20 == 0) {
        sdc_error e;
        if (sdc_plot_curve_png(r->loss_png, r->losses, r->nloss, "loss", &e) != SDC_OK) SDC_WARN("%s", e.msg);
    }
}

/* --pretrained_vae_model_name_or_path: an AutoencoderKL folder (config.json
 * and diffusion_pytorch_model.safetensors, e.g. the SDXL fp16-fix VAE)
 * replaces the model's VAE. */
static sdc_status replace_vae(run *r, const char *dir, sdc_error *err) {
    char cfg_path[4200], w_path[4200];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    snprintf(w_path, sizeof w_path, "%s/diffusion_pytorch_model.safetensors", dir);
    if (!sdc_path_exists(w_path))
        return sdc_fail(err, SDC_ENOTFOUND, "%s: a VAE folder needs diffusion_pytorch_model.safetensors", dir);
    cJSON *j = NULL;
    SDC_TRY(sdc_json_load_object(cfg_path, &j, err));
    sdc_vae_config vc;
    sdc_status st = sdc_vae_config_parse(j, cfg_path, &vc, err);
    cJSON_Delete(j);
    SDC_TRY(st);
    sdc_weights raw, named;
    sdc_weights_init(&raw);
    sdc_weights_init(&named);
    sdc_vae *v = calloc(1, sizeof *v);
    st = v ? sdc_safetensors_read(w_path, &raw, err) : sdc_fail(err, SDC_ENOMEM, "out of memory");
    /* the file's names are the VAE's own; the loader wants "vae.<name>" */
    for (size_t i = 0; st == SDC_OK && i < raw.count; i++) {
        const sdc_weight *t = &raw.items[i];
        char name[600];
        snprintf(name, sizeof name, "vae.%s", t->name);
        st = sdc_weights_add(&named, name, t->src_name, t->dtype, t->ndim, t->shape, t->data, t->nbytes, -1, w_path, err);
    }
    if (st == SDC_OK) st = sdc_vae_build(v, &vc, "vae", err);
    if (st == SDC_OK) st = sdc_vae_load(v, &named, err);
    sdc_weights_free(&named);
    sdc_weights_free(&raw);
    if (st != SDC_OK) {
        if (v) sdc_vae_free(v);
        free(v);
        return st;
    }
    sdc_vae_free(r->sd.vae);
    free(r->sd.vae);
    r->sd.vae = v;
    SDC_INFO("VAE from %s", dir);
    return SDC_OK;
}

/* Activation memory for a batch of n images at the training resolution: on
 * the CPU reserved address space (pages are committed as touched, so a
 * generous bound costs nothing); on a GPU real memory, so what is free,
 * less room for the libraries' workspaces. When training, the activations'
 * gradients come from the same arena (the tape's planned pool). */
static size_t arena_bytes(const run *r, size_t n, int training) {
    size_t px = (size_t)(r->res * r->res);
    size_t want = ((size_t)2 << 30) + px * n * (training ? 200000 : 100000);
    if (r->ctx.device.type == SDC_CPU) return want;
    size_t free_b = 0, total_b = 0;
    if (sdc_cuda_mem_info(&free_b, &total_b) != 0) return (size_t)8 << 30;
    size_t reserve = (size_t)6 << 30, avail = free_b > reserve ? free_b - reserve : free_b / 2;
    return want < avail ? want : avail;
}

/* Prior preservation's class images: generated with the model (its own
 * scheduler, 50 steps, default guidance, as the script's pipeline call)
 * until --num_class_images exist, then scanned. */
static sdc_status class_images(run *r, sdc_error *err) {
    const sdc_train_args *a = r->a;
    SDC_TRY(sdc_mkdirs(a->class_data_dir, err));
    int64_t missing = 0;
    SDC_TRY(sdc_dataset_class_images_missing(a->class_data_dir, a->num_class_images, &missing, err));
    if (missing > 0 && r->dist.rank == 0) { /* rank 0 draws them; the others wait below */
        fprintf(stderr, "sdc: generating %lld class images of \"%s\" in %s\n", (long long)missing, a->class_prompt,
                a->class_data_dir);
        sdc_arena arena;
        sdc_ctx c;
        SDC_TRY(sdc_ctx_open(&c, &arena, r->ctx.device, r->ctx.dtype, arena_bytes(r, (size_t)a->sample_batch_size, 0), err));
        sdc_status st = SDC_OK;
        for (int64_t done = 0; st == SDC_OK && done < missing;) {
            int n = (int)(missing - done < a->sample_batch_size ? missing - done : a->sample_batch_size);
            sdc_txt2img_opts o = {.prompt = a->class_prompt, .steps = 50, .guidance = r->sd.nte == 2 ? 5.0 : 7.5,
                                  .sampler_from_config = 1, .seed = r->seed ^ 0xC1A55ull ^ (uint64_t)done,
                                  .height = (int)r->res, .width = (int)r->res, .batch = n, .decode = 1};
            sdc_txt2img_out out;
            st = sdc_txt2img(&c, &r->sd, &o, &out, err);
            int H = (int)out.image_shape[2], W = (int)out.image_shape[3];
            uint8_t *rgb = st == SDC_OK ? malloc((size_t)H * W * 3) : NULL;
            if (st == SDC_OK && !rgb) st = sdc_fail(err, SDC_ENOMEM, "out of memory");
            for (int i = 0; st == SDC_OK && i < n; i++) {
                sdc_image_from_chw(out.images + (size_t)i * 3 * H * W, H, W, rgb);
                char path[4200];
                snprintf(path, sizeof path, "%s/class-%06lld-sdc.png", a->class_data_dir, (long long)(done + i));
                st = sdc_png_write(path, rgb, W, H, 3, NULL, NULL, 0, err);
            }
            free(rgb);
            if (st == SDC_OK) sdc_txt2img_out_free(&out);
            done += n;
        }
        sdc_ctx_close(&c);
        SDC_TRY(st);
    }
    sdc_dist_barrier(&r->dist);
    sdc_dataset_init(&r->cls);
    SDC_TRY(sdc_dataset_scan_images(&r->cls, a->class_data_dir, a->class_prompt, 0, err));
    return SDC_OK;
}

/* A finished model in output_dir (a full fine-tune's pipeline folder or a
 * LoRA file) is not replaced silently: the user asks with --overwrite, or
 * continues it with --resume_from_checkpoint. */
static sdc_status refuse_finished_model(const char *dir, sdc_error *err) {
    static const char *const files[] = {"model_index.json", "pytorch_lora_weights.safetensors", "lora_kohya.safetensors"};
    char path[4200], unet[4200];
    snprintf(unet, sizeof unet, "%s/unet", dir);
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        if (sdc_path_exists(path) && (i > 0 || sdc_path_is_dir(unet)))
            return sdc_fail(err, SDC_EINVAL,
                            "%s: output_dir already holds a trained model; give --overwrite to replace it, or "
                            "--resume_from_checkpoint to continue it",
                            path);
    }
    return SDC_OK;
}

/* Whether every trained parameter is finite: Σw² over each store in double
 * is finite iff every |w| ≤ FLT_MAX (the largest square, ~1.2e77, and any
 * sum of them fit a double). A step with a finite gradient can still
 * overflow the weights (a huge learning rate); those are never checkpointed. */
static int weights_finite(const run *r) {
    for (int i = 0; i < r->t.ntrain; i++) {
        const sdc_params *p = r->t.train[i];
        if (!isfinite(r->t.ctx.be->sumsq(sdc_params_master(p), p->total))) return 0;
    }
    return 1;
}

/* A JSON number, or null for NaN/±inf (which JSON cannot spell). */
static const char *json_num(char *buf, size_t cap, double v) {
    if (isfinite(v)) snprintf(buf, cap, "%.9g", v);
    else snprintf(buf, cap, "null");
    return buf;
}

static sdc_status train(run *r, sdc_error *err) {
    const sdc_train_args *a = r->a;
    if (a->train_batch_size < 1 || a->gradient_accumulation_steps < 1 || a->resolution < 8)
        return sdc_fail(err, SDC_EINVAL, "--train_batch_size, --gradient_accumulation_steps and --resolution must be positive");
    r->seed = a->seed >= 0 ? (uint64_t)a->seed : 0;
    sdc_dist_init(&r->dist);
    const int lead = r->dist.rank == 0; /* rank 0 writes logs, checkpoints, outputs */
    if (a->with_prior_preservation && a->snr_gamma > 0)
        return sdc_fail(err, SDC_EUNSUPPORTED, "--snr_gamma with --with_prior_preservation is not supported yet");
    if (a->with_prior_preservation && (!a->class_data_dir || !a->class_prompt || !a->instance_data_dir))
        return sdc_fail(err, SDC_EINVAL, "--with_prior_preservation needs --instance_data_dir, --class_data_dir and --class_prompt");
    SDC_TRY(pick_method(r, err));
    SDC_TRY(load_data(r, err));
    /* what the user can get wrong is checked before the (slow) model load */
    SDC_TRY(sdc_mkdirs(a->output_dir, err));
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/.sdc-write-test-%d", a->output_dir, (int)getpid());
    FILE *pf = fopen(probe, "w");
    if (!pf) return sdc_fail(err, SDC_EIO, "%s: cannot write in the output folder: %s", a->output_dir, strerror(errno));
    fclose(pf);
    remove(probe);
    if (!a->overwrite && !a->resume_from_checkpoint) SDC_TRY(refuse_finished_model(a->output_dir, err));
    if (lead) sdc_train_checkpoint_clean(a->output_dir);
    SDC_TRY(sdc_sd_load(a->pretrained_model_name_or_path, &(sdc_sd_load_opts){.variant = a->variant}, &r->sd, err));
    if (a->pretrained_vae_model_name_or_path) SDC_TRY(replace_vae(r, a->pretrained_vae_model_name_or_path, err));
    const sdc_unet_config *uc = &r->sd.unet->cfg;
    /* the device: the models move there once; the context's arena is opened below */
    SDC_TRY(sdc_device_parse(a->device, &r->ctx.device, err));
    /* several processes and plain "cuda": one GPU per process, by local rank */
    if (r->ctx.device.type == SDC_CUDA && r->dist.size > 1 && !strchr(a->device, ':')) {
        const char *lr = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
        if (!lr) lr = getenv("SLURM_LOCALID");
        int n = sdc_cuda_device_count();
        if (lr && n > 0) r->ctx.device.index = atoi(lr) % n;
    }
    SDC_TRY(sdc_precision_dtype(a->mixed_precision, r->ctx.device, &r->ctx.dtype, err));
    SDC_TRY(sdc_backend_open(r->ctx.device, &r->ctx.be, err));
    sdc_backend_allow_tf32(r->ctx.be, a->allow_tf32);
    SDC_TRY(sdc_sd_to_device(&r->sd, &r->ctx, err));
    int s = sdc_vae_scale(&r->sd.vae->cfg);
    r->res = a->resolution;
    if (r->res % (s << (uc->levels - 1)))
        return sdc_fail(err, SDC_EINVAL, "--resolution %d must be a multiple of %d for this model", a->resolution,
                        s << (uc->levels - 1));
    r->B = a->train_batch_size, r->C = uc->in_channels, r->h = r->w = r->res / s, r->per = r->C * r->h * r->w;
    r->T = sdc_clip_tokenizer_max_length(r->sd.tok[0]);
    r->D = uc->cross_attention_dim;
    r->P = uc->text_time ? uc->projection_class_embeddings_input_dim - 6 * uc->addition_time_embed_dim : 0;
    if (2 * r->B * r->C > 256) return sdc_fail(err, SDC_ELIMIT, "--train_batch_size %d is larger than sdc accepts", a->train_batch_size);
    if (a->with_prior_preservation) SDC_TRY(class_images(r, err));
    {
        sdc_ctx c;
        SDC_TRY(sdc_ctx_open(&c, &r->arena, r->ctx.device, r->ctx.dtype,
                             arena_bytes(r, (size_t)(a->with_prior_preservation ? 2 : 1) * (size_t)r->B, 1), err));
        r->ctx = c;
    }

    /* steps: from epochs unless --max_train_steps */
    const int64_t nb = sdc_dataset_num_batches(r->ds.n, r->B * r->dist.size, 0);
    const int64_t per_epoch = (nb + a->gradient_accumulation_steps - 1) / a->gradient_accumulation_steps;
    sdc_train_args eff = *a;
    if (eff.max_train_steps <= 0) eff.max_train_steps = eff.num_train_epochs * per_epoch;
    r->a = &eff;
    SDC_TRY(set_up_training(r, err));
    if (lead && r->t.dp)
        SDC_INFO("data parallel over %d processes through %s%s", r->dist.size, sdc_comm_name(&r->t.dp->comm),
                 a->zero_stage ? ", optimizer state sharded (ZeRO-1)" : "");

    SDC_TRY(sdc_mkdirs(a->output_dir, err));
    sdc_train_progress prog = {.rng_seed = r->seed};
    if (a->resume_from_checkpoint) {
        char path[4096];
        if (!strcmp(a->resume_from_checkpoint, "latest"))
            SDC_TRY(sdc_train_checkpoint_latest(a->output_dir, path, sizeof path, err));
        else
            snprintf(path, sizeof path, "%s", a->resume_from_checkpoint);
        SDC_TRY(sdc_train_checkpoint_load(&r->t, path, &prog, err));
        SDC_INFO("resumed from %s at step %lld", path, (long long)r->t.step);
    }
    /* as the scripts: logging_dir is relative to output_dir */
    char logpath[4200];
    if (!a->logging_dir) snprintf(logpath, sizeof logpath, "%s", a->output_dir);
    else if (a->logging_dir[0] == '/') snprintf(logpath, sizeof logpath, "%s", a->logging_dir);
    else snprintf(logpath, sizeof logpath, "%s/%s", a->output_dir, a->logging_dir);
    SDC_TRY(sdc_mkdirs(logpath, err));
    strncat(logpath, "/metrics.jsonl", sizeof logpath - strlen(logpath) - 1);
    snprintf(r->loss_png, sizeof r->loss_png, "%.*s/loss.png", (int)(strlen(logpath) - strlen("/metrics.jsonl")), logpath);
    r->log = lead ? fopen(logpath, "a") : NULL;
    if (lead && !r->log) return sdc_fail(err, SDC_EIO, "%s: cannot open: %s", logpath, strerror(errno));

    if (lead)
        fprintf(stderr, "sdc: training %s (%s), %lld images, batch %lld × %d processes × %d accumulation, %lld steps\n",
                r->lora ? "LoRA" : "full UNet", r->train_te ? "with text encoder" : "text encoder frozen",
                (long long)r->ds.n, (long long)r->B, r->dist.size, a->gradient_accumulation_steps,
                (long long)eff.max_train_steps);
    r->bad[0] = calloc((size_t)r->ds.n + 1, 1);
    r->bad[1] = calloc((size_t)r->cls.n + 1, 1);
    for (int i = 0; i < 2; i++) {
        r->orders[i].epoch = -1;
        r->orders[i].inst = malloc((size_t)r->ds.n * sizeof(int64_t));
        r->orders[i].cls = malloc((size_t)(r->cls.n + 1) * sizeof(int64_t));
        if (!r->orders[i].inst || !r->orders[i].cls) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    }
    if (!r->bad[0] || !r->bad[1]) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    sdc_progress bar = {0};
    if (lead) {
        sdc_progress_begin(&bar, "train", eff.max_train_steps);
        bar.initial = r->t.step; /* a resumed run's rate counts its own steps */
        sdc_progress_update(&bar, r->t.step);
    }
    sdc_status st = SDC_OK;
    g_stop = 0;
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    double stop = 0;
    int nonfinite = 0; /* optimizer steps skipped in a row */
    load_job cur = {0}, ahead = {0};
    while (st == SDC_OK && r->t.step < eff.max_train_steps && !stop) {
        double loss_sum = 0, t0 = sdc_monotonic_s();
        for (int k = 0; st == SDC_OK && k < a->gradient_accumulation_steps; k++) {
            if (prog.data_pos >= r->ds.n) {
                prog.epoch++;
                prog.data_pos = 0;
            }
            /* this micro-batch's images: the prefetched ones, or loaded now */
            if (ahead.running && ahead.pos == prog.data_pos && ahead.epoch == prog.epoch) {
                pthread_join(ahead.thread, NULL);
                ahead.running = 0;
                job_free(&cur);
                cur = ahead;
                memset(&ahead, 0, sizeof ahead);
            } else {
                job_free(&ahead);
                job_free(&cur);
                st = job_init(r, &cur, prog.data_pos, prog.epoch, -1);
                if (st == SDC_OK) run_job(&cur);
                else *err = cur.err;
            }
            if (st != SDC_OK) break;
            /* start on the next one while this one trains */
            const int64_t G = r->B * r->dist.size;
            int64_t npos = prog.data_pos + G, nep = prog.epoch;
            if (npos >= r->ds.n) npos = 0, nep++;
            if (job_init(r, &ahead, npos, nep, cur.epoch) == SDC_OK && pthread_create(&ahead.thread, NULL, job_thread, &ahead) == 0)
                ahead.running = 1;
            else
                job_free(&ahead);
            double loss;
            uint64_t micro = (uint64_t)(r->t.step * a->gradient_accumulation_steps + k);
            st = micro_batch(r, &cur, micro, &loss, err);
            prog.data_pos += G;
            loss_sum += loss;
        }
        if (st != SDC_OK) break;
        double gn = 0, lr = 0;
        int skipped = 0;
        st = sdc_trainer_optimizer_step(&r->t, &gn, &lr, &skipped, err);
        if (st != SDC_OK) break;
        double sums[2] = {loss_sum / a->gradient_accumulation_steps, g_stop ? 1.0 : 0.0};
        sdc_dist_mean_f64(&r->dist, sums, 2); /* the loss over all ranks; a signal to any stops all */
        double loss = sums[0];
        stop = sums[1];
        /* a skipped step is not counted: it is reported as the step it
         * tried to be (t.step + 1), and retried with the next batch. Every
         * rank skips alike (the gradients were averaged first). */
        /* fp16's loss scaling skips a step whenever its gradients overflow and
         * halves the scale: routine while the scale is above 1, not counted */
        const int backoff = skipped && r->t.o.loss_scaling && r->t.loss_scale >= 1.0;
        nonfinite = !skipped ? 0 : backoff ? nonfinite : nonfinite + 1;
        const long long shown = (long long)r->t.step + (skipped ? 1 : 0);
        if (lead && backoff)
            SDC_INFO("step %lld skipped: the fp16 gradients overflowed; loss scale lowered to %g", shown,
                     r->t.loss_scale);
        else if (lead && skipped)
            SDC_WARN("step %lld skipped: non-finite loss or gradient (loss %g, gradient norm %g), %d in a row", shown, loss,
                     gn, nonfinite);
        if (lead) {
            double ips = (double)(r->B * a->gradient_accumulation_steps) / (sdc_monotonic_s() - t0);
            char b1[40], b2[40], b3[40];
            fprintf(r->log,
                    "{\"step\": %lld, \"epoch\": %lld, \"loss\": %s, \"lr\": %s, \"grad_norm\": %s, "
                    "\"images_per_s\": %.4g%s}\n",
                    shown, (long long)prog.epoch, json_num(b1, sizeof b1, loss), json_num(b2, sizeof b2, skipped ? NAN : lr),
                    json_num(b3, sizeof b3, gn), ips, skipped ? ", \"skipped\": true" : "");
            fflush(r->log);
            if (!skipped) record_loss(r, loss, 0);
            sdc_progress_set_postfix(&bar, "loss=%.4f", loss);
            sdc_progress_update(&bar, r->t.step);
        }
        if (skipped && a->max_consecutive_nonfinite > 0 && nonfinite >= a->max_consecutive_nonfinite) {
            char last[4096];
            sdc_error e2;
            if (sdc_train_checkpoint_latest(a->output_dir, last, sizeof last, &e2) != SDC_OK) snprintf(last, sizeof last, "none");
            st = sdc_fail(err, SDC_ELIMIT,
                          "stopping at step %lld: %d steps in a row had a non-finite loss or gradient (the last good "
                          "checkpoint: %s; try a lower --learning_rate)",
                          shown, nonfinite, last);
            break;
        }
        const int ckpt_due = !skipped && a->checkpointing_steps > 0 && r->t.step % a->checkpointing_steps == 0;
        /* ZeRO-1: every rank hands in its parts of the state first */
        if (ckpt_due) st = sdc_trainer_gather_state(&r->t, err);
        if (st != SDC_OK) break;
        /* validation is collective: every rank decides alike, as it sees the
         * same step, skip flag (from the averaged gradients) and data position */
        if (skipped) continue; /* nothing new to validate or checkpoint */
        if (a->validation_steps > 0 && r->t.step % a->validation_steps == 0 && r->t.step < eff.max_train_steps)
            st = validate(r, err);
        if (st == SDC_OK && a->validation_epochs > 0 && prog.data_pos >= r->ds.n &&
            (prog.epoch + 1) % a->validation_epochs == 0 && r->t.step < eff.max_train_steps)
            st = validate(r, err); /* the epoch just ended */
        if (!lead) continue; /* rank 0 checkpoints */
        if (st == SDC_OK && ckpt_due) {
            if (!weights_finite(r)) {
                SDC_WARN("step %lld: the weights are not finite; checkpoint-%lld not written", (long long)r->t.step,
                         (long long)r->t.step);
                continue;
            }
            if (a->checkpoints_total_limit > 0)
                st = sdc_train_checkpoint_prune(a->output_dir, a->checkpoints_total_limit - 1, err);
            if (st == SDC_OK) st = sdc_train_checkpoint_save(&r->t, &prog, a->output_dir, NULL, 0, err);
            if (r->t.dp) sdc_dp_drop_gathered(r->t.dp); /* ZeRO-1's host copy of the moments */
        }
    }
    job_free(&ahead);
    job_free(&cur);
    if (lead) sdc_progress_end(&bar);
    if (r->nloss) record_loss(r, NAN, 1);
    if (r->nbad) SDC_WARN("%lld images could not be decoded and were skipped", (long long)r->nbad);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (st == SDC_OK && stop) {
        /* interrupted: keep everything so far, resumable */
        char path[4096];
        snprintf(path, sizeof path, "%s/checkpoint-%lld", a->output_dir, (long long)r->t.step);
        st = sdc_trainer_gather_state(&r->t, err);
        if (st != SDC_OK) {
        } else if (lead && !weights_finite(r))
            st = sdc_fail(err, SDC_ELIMIT, "interrupted at step %lld with non-finite weights; no checkpoint written",
                          (long long)r->t.step);
        else if (lead)
            st = sdc_train_checkpoint_save(&r->t, &prog, a->output_dir, path, sizeof path, err);
        if (st == SDC_OK)
            st = sdc_fail(err, SDC_EINVAL, "interrupted at step %lld; saved %s (resume with --resume_from_checkpoint latest)",
                          (long long)r->t.step, path);
        r->a = a;
        return st;
    }
    if (st == SDC_OK) st = sdc_trainer_gather_state(&r->t, err); /* ZeRO-1: the whole weights and EMA */
    /* the scripts save and validate the EMA weights: every rank puts them in
     * place (the master weights and the compute copy the renders use) */
    if (st == SDC_OK && r->t.o.use_ema) {
        sdc_ema_copy_to(&r->t.ema, sdc_params_master(&r->sd.unet->params));
        sdc_params_refresh_compute(&r->sd.unet->params);
    }
    if (st == SDC_OK && lead) st = save_outputs(r, err);
    st = sdc_dist_agree(&r->dist, st, err, NULL); /* rank 0 may have failed to save: none waits in validate */
    if (st == SDC_OK) st = validate(r, err);
    r->a = a;
    return st;
}

sdc_status sdc_train_run(const sdc_train_args *a, sdc_error *err) {
    run *r = calloc(1, sizeof *r);
    if (!r) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    r->a = a;
    sdc_status st = train(r, err);
    if (r->log) fclose(r->log);
    if (r->t.train[0]) sdc_trainer_free(&r->t);
    sdc_lora_detach(&r->unet_lora);
    sdc_lora_detach(&r->te_lora[0]);
    sdc_lora_detach(&r->te_lora[1]);
    if (r->sd.unet) sdc_sd_free(&r->sd);
    sdc_dataset_free(&r->ds);
    sdc_dataset_free(&r->cls);
    for (int i = 0; i < 2; i++) free(r->orders[i].inst), free(r->orders[i].cls);
    free(r->bad[0]);
    free(r->bad[1]);
    free(r->losses);
    sdc_ctx_close(&r->ctx);
    free(r);
    return st;
}
