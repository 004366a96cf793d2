#include "pipeline/trainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "backend/profile.h"
#include "core/log.h"
#include "diffusion/training.h"
#include "train/dp.h"
#include "train/grad_clip.h"

/* Data parallelism (o->dist): the buckets, and the tape's call back into them. */
static sdc_status init_dp(sdc_trainer *t, const sdc_backend *be, sdc_error *err) {
    const sdc_trainer_opts *o = &t->o;
    if (!o->dist || o->dist->size <= 1) {
        if (o->zero_stage) SDC_WARN("--zero_stage %d: one process, nothing to shard", o->zero_stage);
        return SDC_OK;
    }
    sdc_dp *dp = calloc(1, sizeof *dp);
    if (!dp) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    sdc_status st = sdc_dp_init(dp, o->dist, be, t->train, t->ntrain, o->zero_stage, o->bucket_mb, o->reduce_bf16, err);
    if (st != SDC_OK) {
        free(dp);
        return st;
    }
    t->dp = dp;
    t->tape.grad_hook = sdc_dp_on_grad;
    t->tape.grad_user = dp;
    return SDC_OK;
}

sdc_status sdc_trainer_init(sdc_trainer *t, sdc_unet *unet, sdc_clip_text *const *te, int nte,
                            sdc_params *const *train, int ntrain, const sdc_sched_config *sched,
                            const sdc_trainer_opts *o, const sdc_ctx *base, sdc_error *err) {
    memset(t, 0, sizeof *t);
    SDC_ASSERT(ntrain >= 1 && ntrain <= SDC_TRAIN_MAX_STORES && nte >= 0 && nte <= 2);
    t->unet = unet;
    t->nte = nte;
    for (int i = 0; i < nte; i++) t->te[i] = te[i];
    t->ntrain = ntrain;
    for (int i = 0; i < ntrain; i++) t->train[i] = train[i];
    t->o = *o;
    if (t->o.grad_accum < 1) return sdc_fail(err, SDC_EINVAL, "gradient_accumulation_steps must be at least 1");
    t->n_ac = sched->num_train_timesteps;
    t->alphas_cumprod = malloc((size_t)t->n_ac * sizeof *t->alphas_cumprod);
    if (!t->alphas_cumprod) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    SDC_TRY(sdc_sched_alphas_cumprod_f32(sched, t->alphas_cumprod, err));
    const sdc_backend *be = base->be;
    SDC_TRY(sdc_tape_init_on(&t->tape, be, base->arena, err));
    for (int i = 0; i < ntrain; i++) {
        sdc_params *p = train[i];
        /* every store lives where the context computes */
        SDC_ASSERT(p->be ? p->be == be : be == sdc_cpu_backend());
        if (!p->grad) SDC_TRY(sdc_params_alloc_grad(p, err));
    }
    SDC_TRY(init_dp(t, be, err));
    for (int i = 0; i < ntrain; i++) {
        sdc_params *p = train[i];
        /* ZeRO-1: this rank keeps the moments of its parts only */
        SDC_TRY(sdc_adamw_init_on(&t->opt[i], be, t->dp ? t->dp->packed_n[i] : p->total, &o->adam, err));
        if (p->be) sdc_tape_watch(&t->tape, p->dev, p->dev_dtype, p->grad, p->total);
        else sdc_tape_watch(&t->tape, p->data, SDC_F32, p->grad, p->total);
    }
    if (o->use_ema)
        SDC_TRY(sdc_ema_init_on(&t->ema, be, sdc_params_master(train[0]), train[0]->total, &o->ema, err));
    t->loss_scale = o->loss_scaling ? (o->init_loss_scale > 0 ? o->init_loss_scale : 65536.0) : 1.0;
    t->tape.checkpointing = o->gradient_checkpointing;
    t->ctx = *base;
    t->ctx.tape = &t->tape;
    return SDC_OK;
}

sdc_status sdc_trainer_gather_state(sdc_trainer *t, sdc_error *err) {
    if (!t->dp) return SDC_OK;
    return sdc_dp_gather(t->dp, t->opt, t->o.use_ema ? &t->ema : NULL, 1, err);
}

void sdc_trainer_free(sdc_trainer *t) {
    if (t->dp) {
        sdc_dp_free(t->dp);
        free(t->dp);
    }
    free(t->alphas_cumprod);
    free(t->noisy), free(t->target), free(t->pred), free(t->snr), free(t->w), free(t->ts);
    for (int i = 0; i < t->ntrain; i++) sdc_adamw_free(&t->opt[i]);
    if (t->o.use_ema) sdc_ema_free(&t->ema);
    sdc_tape_free(&t->tape);
    memset(t, 0, sizeof *t);
}

/* Text encoders inside the step, as the scripts with --train_text_encoder:
 * SD: last_hidden_state; SDXL: both encoders' penultimate states
 * concatenated, pooled = text_encoder_2's projection. */
static void encode(sdc_ctx *c, sdc_trainer *t, const sdc_train_batch *b, sdc_tensor *ctx, sdc_tensor *pooled) {
    const int64_t B = b->B, T = b->T;
    if (t->nte == 1) {
        sdc_clip_text_out o;
        sdc_clip_text_forward(c, t->te[0], b->input_ids[0], B, T, 0, &o);
        *ctx = o.last_hidden;
        return;
    }
    sdc_clip_text_out o0, o1;
    sdc_clip_text_forward(c, t->te[0], b->input_ids[0], B, T, -2, &o0);
    sdc_clip_text_forward(c, t->te[1], b->input_ids[1], B, T, -2, &o1);
    int64_t D0 = o0.hidden.shape[2], D1 = o1.hidden.shape[2];
    sdc_tensor a = sdc_reshape(&o0.hidden, B * T, D0, 1), h = sdc_reshape(&o1.hidden, B * T, D1, 1);
    sdc_tensor cat = sdc_op_concat1(c, NULL, &a, &h);
    *ctx = sdc_reshape(&cat, B, T, D0 + D1);
    *pooled = o1.text_embeds;
}

static sdc_status grow_scratch(sdc_trainer *t, size_t n, size_t B, sdc_error *err) {
    if (n > t->scratch_n) {
        free(t->noisy), free(t->target), free(t->pred);
        t->noisy = malloc(n * sizeof *t->noisy);
        t->target = malloc(n * sizeof *t->target);
        t->pred = malloc(n * sizeof *t->pred);
        t->scratch_n = t->noisy && t->target && t->pred ? n : 0;
        if (!t->scratch_n) return sdc_fail(err, SDC_ENOMEM, "out of memory for a batch");
    }
    if (B > t->scratch_b) {
        free(t->snr), free(t->w), free(t->ts);
        t->snr = malloc(B * sizeof *t->snr);
        t->w = malloc(B * sizeof *t->w);
        t->ts = malloc(B * sizeof *t->ts);
        t->scratch_b = t->snr && t->w && t->ts ? B : 0;
        if (!t->scratch_b) return sdc_fail(err, SDC_ENOMEM, "out of memory for a batch");
    }
    return SDC_OK;
}

sdc_status sdc_trainer_micro_step(sdc_trainer *t, const sdc_train_batch *b, double *loss, sdc_error *err) {
    sdc_ctx *c = &t->ctx;
    const sdc_unet_config *cfg = &t->unet->cfg;
    const int B = b->B;
    const int64_t C = cfg->in_channels, per = C * b->h * b->w, n = B * per;
    if (t->nte) {
        for (int e = 0; e < t->nte; e++) {
            if (!b->input_ids[e]) return sdc_fail(err, SDC_EINVAL, "the batch has no token ids for text encoder %d", e + 1);
            SDC_TRY(sdc_clip_text_check_ids(t->te[e], b->input_ids[e], B * b->T, err));
        }
    }
    for (int i = 0; i < B; i++)
        if (b->t[i] < 0 || b->t[i] >= t->n_ac)
            return sdc_fail(err, SDC_EINVAL, "timestep %lld outside [0, %d)", (long long)b->t[i], t->n_ac);
    SDC_TRY(sdc_unet_check_size(cfg, b->h, b->w, err));
    SDC_TRY(grow_scratch(t, (size_t)n, (size_t)B, err));
    float *noisy = t->noisy, *target = t->target, *pred = t->pred, *snr = t->snr, *w = t->w;
    double *ts = t->ts;
    /* with input perturbation the input is noised with ε' = ε + γ·ξ while
     * the target stays ε (train_text_to_image.py) */
    sdc_train_add_noise(noisy, b->x0, b->input_noise ? b->input_noise : b->noise, b->t, B, per, t->alphas_cumprod,
                        t->n_ac);
    sdc_status st =
        sdc_train_target(target, t->o.prediction, b->x0, b->noise, b->t, B, per, t->alphas_cumprod, t->n_ac, err);
    if (st == SDC_OK) {
        for (int i = 0; i < B; i++) ts[i] = (double)b->t[i];
        const float *weights = NULL;
        if (t->o.snr_gamma > 0) {
            sdc_train_compute_snr(snr, b->t, B, t->alphas_cumprod, t->n_ac);
            sdc_train_min_snr_weights(w, snr, B, t->o.snr_gamma, t->o.prediction);
            weights = w;
        }
        if (b->sample_weights) {
            /* mean over samples of w_b·mse_b: with weights 2 and 2λ on equal
             * halves this is mse(instance) + λ·mse(class), DreamBooth's loss */
            for (int i = 0; i < B; i++) w[i] = (weights ? w[i] : 1.0f) * b->sample_weights[i];
            weights = w;
        }
        size_t mark = sdc_arena_mark(c->arena);
        sdc_tape_reset(&t->tape);
        sdc_tape *tape = c->tape;
        c->tape = NULL; /* inputs are leaves: no need to record their uploads */
        sdc_tensor x = sdc_op_upload(c, NULL, 4, SDC_SHAPE(B, C, b->h, b->w), noisy);
        sdc_tensor ctx = {0}, te = {0};
        int64_t P = cfg->text_time ? cfg->projection_class_embeddings_input_dim - 6 * cfg->addition_time_embed_dim : 0;
        if (!t->nte) {
            ctx = sdc_op_upload(c, NULL, 3, SDC_SHAPE(B, b->S, cfg->cross_attention_dim), b->context);
            if (P) te = sdc_op_upload(c, NULL, 2, SDC_SHAPE(B, P), b->text_embeds);
        }
        c->tape = tape;
        if (t->nte) encode(c, t, b, &ctx, &te);
        sdc_unet_cond cond = {.context = &ctx, .timesteps = ts};
        if (cfg->text_time) {
            cond.text_embeds = &te;
            cond.time_ids = b->time_ids;
            cond.n_time_ids = 6;
        }
        sdc_tensor y = sdc_unet_forward(c, NULL, t->unet, &x, &cond);
        double tl = sdc_prof_on ? sdc_prof_begin(c) : 0;
        sdc_op_download(c, pred, &y);
        *loss = sdc_train_mse_loss(pred, target, B, per, weights, NULL);
        /* d(loss / accumulation)/d pred, seeded into the output's gradient */
        sdc_train_mse_loss_backward(noisy, pred, target, B, per, weights, 1.0 / t->o.grad_accum * t->loss_scale);
        sdc_tape_zero_grads(&t->tape, c->arena);
        sdc_tensor gy = sdc_tape_grad(&t->tape, &y);
        c->be->upload(&gy, noisy);
        if (sdc_prof_on) sdc_prof_end(c, "loss (host)", tl);
        if (t->dp) sdc_dp_begin_backward(t->dp, t->micro == t->o.grad_accum - 1);
        st = sdc_tape_backward(c, &t->tape, err);
        c->tape = NULL;
        sdc_arena_release(c->arena, mark);
        c->tape = tape;
        t->micro++;
    }
    return st;
}

sdc_status sdc_trainer_optimizer_step(sdc_trainer *t, double *grad_norm, double *lr, int *skipped, sdc_error *err) {
    sdc_dp *dp = t->dp;
    const int zero = dp && dp->zero;
    if (dp) SDC_TRY(sdc_dp_finish(dp, err)); /* the gradients, averaged over the ranks */
    /* one global norm over every trained store, as clip_grad_norm_ over the
     * optimizer's parameters */
    const sdc_backend *be = t->ctx.be;
    double t0 = sdc_prof_on ? sdc_prof_begin(&t->ctx) : 0;
    double ss = 0;
    if (zero) ss = sdc_dp_sumsq(dp);
    else
        for (int i = 0; i < t->ntrain; i++) ss += be->sumsq(t->train[i]->grad, t->train[i]->total);
    /* the gradients carry the loss scale (a power of two): their norm is
     * the unscaled one times it, exactly */
    const double inv = 1.0 / t->loss_scale;
    double norm = sqrt(ss) * inv;
    *grad_norm = norm;
    *skipped = 0;
    t->micro = 0;
    if (!sdc_grad_finite(norm)) {
        *skipped = 1;
        for (int i = 0; i < t->ntrain; i++) be->mem_zero(t->train[i]->grad, t->train[i]->total * sizeof(float));
        if (t->o.loss_scaling) t->loss_scale *= 0.5, t->scale_good = 0; /* GradScaler's backoff */
        return SDC_OK;
    }
    if (t->o.loss_scaling && ++t->scale_good >= 2000) t->loss_scale *= 2.0, t->scale_good = 0;
    /* unscaling by 2⁻ᵏ is exact; clipping then rounds as without scaling */
    const float unscale = (float)inv;
    float coef = t->o.max_grad_norm > 0 ? sdc_grad_clip_coef(norm, t->o.max_grad_norm) : 1.0f;
    *lr = sdc_lr_at(&t->o.lr, t->step);
    if (zero) { /* every store's parts on this rank (ZeRO-1) */
        if (unscale != 1.0f) sdc_dp_scale(dp, unscale);
        if (coef != 1.0f) sdc_dp_scale(dp, coef);
    }
    for (int i = 0; i < t->ntrain; i++) {
        sdc_params *p = t->train[i];
        /* on a GPU with bf16/fp16 weights the update also refreshes them */
        int copy = p->be && p->dev != p->master;
        if (zero) {
            sdc_dp_adamw(dp, i, &t->opt[i], ++t->opt[i].step, *lr);
        } else {
            if (unscale != 1.0f) be->scale(p->grad, p->total, unscale);
            if (coef != 1.0f) be->scale(p->grad, p->total, coef);
            sdc_adamw_step_into(&t->opt[i], sdc_params_master(p), p->grad, *lr, copy ? p->dev : NULL, p->dev_dtype);
        }
        be->mem_zero(p->grad, p->total * sizeof *p->grad);
    }
    if (t->o.use_ema) {
        if (zero) sdc_dp_ema(dp, &t->ema);
        else sdc_ema_step(&t->ema, sdc_params_master(t->train[0]));
    }
    if (zero) sdc_dp_allgather_weights(dp); /* every rank's updated parts to all */
    if (sdc_prof_on) sdc_prof_end(&t->ctx, "optimizer (norm, clip, AdamW, EMA)", t0);
    t->step++;
    return SDC_OK;
}
