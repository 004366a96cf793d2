#include "pipeline/trainer.h"

#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "diffusion/training.h"
#include "train/grad_clip.h"

sdc_status sdc_trainer_init(sdc_trainer *t, sdc_unet *unet, sdc_params *train, const sdc_sched_config *sched,
                            const sdc_trainer_opts *o, sdc_arena *arena, sdc_error *err) {
    memset(t, 0, sizeof *t);
    t->unet = unet;
    t->train = train;
    t->o = *o;
    if (t->o.grad_accum < 1) return sdc_fail(err, SDC_EINVAL, "gradient_accumulation_steps must be at least 1");
    t->n_ac = sched->num_train_timesteps;
    t->alphas_cumprod = malloc((size_t)t->n_ac * sizeof *t->alphas_cumprod);
    if (!t->alphas_cumprod) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    SDC_TRY(sdc_sched_alphas_cumprod_f32(sched, t->alphas_cumprod, err));
    if (!train->grad) SDC_TRY(sdc_params_alloc_grad(train, err));
    SDC_TRY(sdc_adamw_init(&t->opt, train->total, &o->adam, err));
    if (o->use_ema) SDC_TRY(sdc_ema_init(&t->ema, train->data, train->total, &o->ema, err));
    SDC_TRY(sdc_tape_init(&t->tape, arena, err));
    sdc_tape_watch(&t->tape, train->data, train->grad, train->total);
    t->tape.checkpointing = o->gradient_checkpointing;
    t->ctx = (sdc_ctx){sdc_cpu_backend(), {SDC_CPU, 0}, arena, &t->tape};
    return SDC_OK;
}

void sdc_trainer_free(sdc_trainer *t) {
    free(t->alphas_cumprod);
    sdc_adamw_free(&t->opt);
    if (t->o.use_ema) sdc_ema_free(&t->ema);
    sdc_tape_free(&t->tape);
    memset(t, 0, sizeof *t);
}

sdc_status sdc_trainer_micro_step(sdc_trainer *t, const sdc_train_batch *b, double *loss, sdc_error *err) {
    sdc_ctx *c = &t->ctx;
    const sdc_unet_config *cfg = &t->unet->cfg;
    const int B = b->B;
    const int64_t C = cfg->in_channels, per = C * b->h * b->w, n = B * per;
    for (int i = 0; i < B; i++)
        if (b->t[i] < 0 || b->t[i] >= t->n_ac)
            return sdc_fail(err, SDC_EINVAL, "timestep %lld outside [0, %d)", (long long)b->t[i], t->n_ac);
    SDC_TRY(sdc_unet_check_size(cfg, b->h, b->w, err));
    float *noisy = malloc((size_t)n * sizeof *noisy), *target = malloc((size_t)n * sizeof *target);
    float *pred = malloc((size_t)n * sizeof *pred), *snr = malloc((size_t)B * sizeof *snr);
    float *w = malloc((size_t)B * sizeof *w);
    double *ts = malloc((size_t)B * sizeof *ts);
    sdc_status st = noisy && target && pred && snr && w && ts ? SDC_OK : sdc_fail(err, SDC_ENOMEM, "out of memory");
    if (st == SDC_OK) {
        sdc_train_add_noise(noisy, b->x0, b->noise, b->t, B, per, t->alphas_cumprod, t->n_ac);
        st = sdc_train_target(target, t->o.prediction, b->x0, b->noise, b->t, B, per, t->alphas_cumprod, t->n_ac,
                              err);
    }
    if (st == SDC_OK) {
        for (int i = 0; i < B; i++) ts[i] = (double)b->t[i];
        const float *weights = NULL;
        if (t->o.snr_gamma > 0) {
            sdc_train_compute_snr(snr, b->t, B, t->alphas_cumprod, t->n_ac);
            sdc_train_min_snr_weights(w, snr, B, t->o.snr_gamma, t->o.prediction);
            weights = w;
        }
        size_t mark = sdc_arena_mark(c->arena);
        sdc_tape_reset(&t->tape);
        sdc_tape *tape = c->tape;
        c->tape = NULL; /* inputs are leaves: no need to record their uploads */
        sdc_tensor x = sdc_op_upload(c, NULL, 4, SDC_SHAPE(B, C, b->h, b->w), noisy);
        sdc_tensor ctx = sdc_op_upload(c, NULL, 3, SDC_SHAPE(B, b->S, cfg->cross_attention_dim), b->context);
        sdc_tensor te = {0};
        sdc_unet_cond cond = {.context = &ctx, .timesteps = ts};
        if (cfg->text_time) {
            int64_t P = cfg->projection_class_embeddings_input_dim - 6 * cfg->addition_time_embed_dim;
            te = sdc_op_upload(c, NULL, 2, SDC_SHAPE(B, P), b->text_embeds);
            cond.text_embeds = &te;
            cond.time_ids = b->time_ids;
            cond.n_time_ids = 6;
        }
        c->tape = tape;
        sdc_tensor y = sdc_unet_forward(c, NULL, t->unet, &x, &cond);
        sdc_op_download(c, pred, &y);
        *loss = sdc_train_mse_loss(pred, target, B, per, weights, NULL);
        /* d(loss / accumulation)/d pred, seeded into the output's gradient */
        sdc_train_mse_loss_backward(noisy, pred, target, B, per, weights, 1.0 / t->o.grad_accum);
        sdc_tape_zero_grads(&t->tape, c->arena);
        sdc_tensor gy = sdc_tape_grad(&t->tape, &y);
        c->be->upload(&gy, noisy);
        st = sdc_tape_backward(c, &t->tape, err);
        c->tape = NULL;
        sdc_arena_release(c->arena, mark);
        c->tape = tape;
        t->micro++;
    }
    free(noisy), free(target), free(pred), free(snr), free(w), free(ts);
    return st;
}

sdc_status sdc_trainer_optimizer_step(sdc_trainer *t, double *grad_norm, double *lr, int *skipped, sdc_error *err) {
    (void)err;
    sdc_params *p = t->train;
    double norm = sdc_grad_norm(p->grad, p->total);
    *grad_norm = norm;
    *skipped = 0;
    t->micro = 0;
    if (!sdc_grad_finite(norm)) {
        *skipped = 1;
        memset(p->grad, 0, p->total * sizeof *p->grad);
        return SDC_OK;
    }
    if (t->o.max_grad_norm > 0) sdc_grad_scale(p->grad, p->total, sdc_grad_clip_coef(norm, t->o.max_grad_norm));
    *lr = sdc_lr_at(&t->o.lr, t->step);
    sdc_adamw_step(&t->opt, p->data, p->grad, *lr);
    if (t->o.use_ema) sdc_ema_step(&t->ema, p->data);
    memset(p->grad, 0, p->total * sizeof *p->grad);
    t->step++;
    return SDC_OK;
}
