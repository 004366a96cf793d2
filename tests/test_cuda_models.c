/* Whole models on the CUDA backend against the CPU backend (the fp32
 * reference): a UNet's forward and backward (output, input gradients, the
 * parameter gradients' norms), and ten training steps through the trainer
 * (losses, gradient norms, final weights). fp32 on the GPU differs from the
 * CPU only in summation order; bf16 rounds every weight and activation to 8
 * mantissa bits. Skipped without a GPU. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/device.h"
#include "backend/ops.h"
#include "backend/tape.h"
#include "core/rng.h"
#include "cuda_test_util.h"
#include "io/model.h"
#include "models/presets.h"
#include "models/unet.h"
#include "pipeline/trainer.h"

/* Relative bounds for whole models. fp32: the 1e-3 (measured
 * ~1e-6 to 2e-5). bf16: outputs within 2e-2 (measured 1.3e-2); gradients
 * come back through every layer in bf16 (weights, activations and
 * activation gradients all bf16; autocast in PyTorch keeps norms and the
 * residual stream in fp32), measured up to 4.3e-2 for the input gradients
 * and 6.5e-2 for single parameter gradients on the tiny models (32
 * channels: little averaging of rounding), 1.9e-2 / 5.6e-2 on SD 1.5. */
#define MODEL_TOL_F32 1e-3
#define MODEL_TOL_BF16 2e-2
#define GRAD_TOL_BF16 6e-2

typedef struct fb_result {
    float *out, *gx, *gctx, *pgrad; /* host copies */
    int64_t nout, nctx;
} fb_result;

static void fb_free(fb_result *r) { free(r->out), free(r->gx), free(r->gctx), free(r->pgrad); }

/* Forward, then the backward of mean((out − target)²) into the sample,
 * the text states and every parameter, on whatever device c is. */
static void unet_fwd_bwd(sdc_ctx *c, sdc_unet *u, const int64_t *xs, const float *x_h, const int64_t *cs,
                         const float *ctx_h, const double *ts, const float *te_h, const double *tids,
                         const float *target, fb_result *r) {
    sdc_error err = {0};
    sdc_params *p = &u->params;
    REQUIRE_OK(sdc_params_alloc_grad(p, &err), &err);
    sdc_tape tape;
    REQUIRE_OK(sdc_tape_init_on(&tape, c->be, c->arena, &err), &err);
    if (p->be) sdc_tape_watch(&tape, p->dev, p->dev_dtype, p->grad, p->total);
    else sdc_tape_watch(&tape, p->data, SDC_F32, p->grad, p->total);
    size_t mark = sdc_arena_mark(c->arena);
    sdc_tensor x = sdc_op_upload(c, NULL, 4, xs, x_h);
    sdc_tensor ctx = sdc_op_upload(c, NULL, 3, cs, ctx_h);
    sdc_unet_cond cond = {.context = &ctx, .timesteps = ts};
    sdc_tensor tet;
    if (u->cfg.text_time) {
        int64_t P = u->cfg.projection_class_embeddings_input_dim - 6 * u->cfg.addition_time_embed_dim;
        tet = sdc_op_upload(c, NULL, 2, SDC_SHAPE(xs[0], P), te_h);
        cond.text_embeds = &tet;
        cond.time_ids = tids;
        cond.n_time_ids = 6;
    }
    c->tape = &tape;
    sdc_tensor y = sdc_unet_forward(c, NULL, u, &x, &cond);
    c->tape = NULL;
    r->nout = sdc_tensor_numel(&y);
    r->nctx = sdc_tensor_numel(&ctx);
    r->out = malloc((size_t)r->nout * sizeof(float));
    sdc_op_download(c, r->out, &y);
    float *seed = malloc((size_t)r->nout * sizeof(float));
    for (int64_t i = 0; i < r->nout; i++) seed[i] = 2.0f * (r->out[i] - target[i]) / (float)r->nout;
    sdc_tape_zero_grads(&tape, c->arena);
    sdc_tensor gy = sdc_tape_grad(&tape, &y);
    c->be->upload(&gy, seed);
    free(seed);
    REQUIRE_OK(sdc_tape_backward(c, &tape, &err), &err);
    sdc_tensor gx = sdc_tape_grad(&tape, &x), gc = sdc_tape_grad(&tape, &ctx);
    r->gx = malloc((size_t)r->nout * sizeof(float));
    r->gctx = malloc((size_t)r->nctx * sizeof(float));
    sdc_op_download(c, r->gx, &gx);
    sdc_op_download(c, r->gctx, &gc);
    r->pgrad = malloc(p->total * sizeof(float));
    c->be->mem_download(r->pgrad, p->grad, p->total * sizeof(float));
    sdc_arena_release(c->arena, mark);
    sdc_tape_free(&tape);
}

/* Per-parameter gradient norms: the worst relative difference over the
 * parameters whose gradient is not ~0 (bias-before-GroupNorm cases). */
static double worst_param_grad(const sdc_params *p, const float *a, const float *b, const char **which) {
    double worst = 0, gmax = 0;
    for (size_t i = 0; i < p->count; i++) {
        const sdc_param *it = &p->items[i];
        double n = 0;
        for (int64_t j = 0; j < it->numel; j++) n += (double)b[it->offset + j] * b[it->offset + j];
        if (sqrt(n) > gmax) gmax = sqrt(n);
    }
    for (size_t i = 0; i < p->count; i++) {
        const sdc_param *it = &p->items[i];
        double n = 0;
        for (int64_t j = 0; j < it->numel; j++) n += (double)b[it->offset + j] * b[it->offset + j];
        if (sqrt(n) < 1e-6 * gmax) continue;
        double e = ct_rel_err(a + it->offset, b + it->offset, it->numel);
        if (e > worst) worst = e, *which = it->name;
    }
    return worst;
}

/* A UNet of a preset's or a test model's architecture, on the CPU and on
 * the GPU in `dtype`, same weights, same inputs: compare. */
static void compare_unet(const cJSON *cfg_json, const sdc_weights *w, int64_t B, int64_t hw, sdc_dtype dtype,
                         double tol, size_t arena_mb) {
    const double gtol = dtype == SDC_F32 ? tol : GRAD_TOL_BF16; /* input gradients; parameters 2× */
    CUDA_BACKEND_OR_SKIP(be);
    (void)be;
    sdc_error err = {0};
    sdc_unet_config cfg;
    REQUIRE_OK(sdc_unet_config_parse(cfg_json, "unet", &cfg, &err), &err);
    sdc_unet *uc = calloc(1, sizeof *uc), *ug = calloc(1, sizeof *ug);
    REQUIRE_OK(sdc_unet_build(uc, &cfg, "unet", &err), &err);
    REQUIRE_OK(sdc_unet_build(ug, &cfg, "unet", &err), &err);
    if (w) {
        REQUIRE_OK(sdc_params_load(&uc->params, w, NULL, NULL, &err), &err);
        REQUIRE_OK(sdc_params_load(&ug->params, w, NULL, NULL, &err), &err);
    } else {
        sdc_params_init_random(&uc->params, 11);
        sdc_params_init_random(&ug->params, 11);
    }
    const int64_t C = cfg.in_channels, D = cfg.cross_attention_dim, n = B * C * hw * hw;
    float *x = malloc((size_t)n * sizeof *x), *t = malloc((size_t)n * sizeof *t);
    float *ctx = malloc((size_t)(B * 77 * D) * sizeof *ctx), *te = calloc((size_t)B * 2816, sizeof *te);
    double ts[8], tids[8 * 6];
    sdc_rng r;
    sdc_rng_init(&r, 5);
    sdc_rng_fill_normal(&r, x, (size_t)n);
    sdc_rng_fill_normal(&r, t, (size_t)n);
    sdc_rng_fill_normal(&r, ctx, (size_t)(B * 77 * D));
    sdc_rng_fill_normal(&r, te, (size_t)B * 1280);
    for (int b = 0; b < B; b++) {
        ts[b] = 150 + 400 * b;
        for (int k = 0; k < 6; k++) tids[b * 6 + k] = k == 2 || k == 3 ? 0 : (double)(hw * 8);
    }
    const int64_t xs[4] = {B, C, hw, hw}, cs[3] = {B, 77, D};
    fb_result rc, rg;
    sdc_arena ac, ag;
    sdc_ctx cc, cg;
    REQUIRE_OK(sdc_ctx_open(&cc, &ac, (sdc_device){SDC_CPU, 0}, SDC_F32, arena_mb << 20, &err), &err);
    unet_fwd_bwd(&cc, uc, xs, x, cs, ctx, ts, te, tids, t, &rc);
    sdc_ctx_close(&cc);
    REQUIRE_OK(sdc_ctx_open(&cg, &ag, (sdc_device){SDC_CUDA, 0}, dtype, arena_mb << 20, &err), &err);
    REQUIRE_OK(sdc_params_to_device(&ug->params, cg.be, cg.device, dtype, &err), &err);
    unet_fwd_bwd(&cg, ug, xs, x, cs, ctx, ts, te, tids, t, &rg);
    sdc_ctx_close(&cg);
    double eo = ct_rel_err(rg.out, rc.out, rc.nout), ex = ct_rel_err(rg.gx, rc.gx, rc.nout);
    double ec = ct_rel_err(rg.gctx, rc.gctx, rc.nctx);
    const char *which = "";
    double ep = worst_param_grad(&uc->params, rg.pgrad, rc.pgrad, &which);
    CHECK_MSG(eo <= tol, "%s: output rel err %.3g > %.1g", sdc_dtype_name(dtype), eo, tol);
    CHECK_MSG(ex <= gtol, "%s: sample gradient rel err %.3g > %.1g", sdc_dtype_name(dtype), ex, gtol);
    CHECK_MSG(ec <= gtol, "%s: context gradient rel err %.3g > %.1g", sdc_dtype_name(dtype), ec, gtol);
    /* single parameter gradients are small sums of many products: twice the bound */
    CHECK_MSG(ep <= 2 * gtol, "%s: parameter gradient %s rel err %.3g > %.1g", sdc_dtype_name(dtype), which, ep,
              2 * gtol);
    fprintf(stderr, "  %s: out %.2e, d sample %.2e, d context %.2e, worst parameter gradient %.2e (%s)\n",
            sdc_dtype_name(dtype), eo, ex, ec, ep, which);
    fb_free(&rc), fb_free(&rg);
    free(x), free(t), free(ctx), free(te);
    sdc_unet_free(uc), sdc_unet_free(ug);
    free(uc), free(ug);
}

static void compare_tiny(const char *pack, sdc_dtype dtype, double tol) {
    CUDA_BACKEND_OR_SKIP(be);
    (void)be;
    sdc_error err = {0};
    sdc_model m;
    REQUIRE_OK(sdc_model_open(test_data(pack), NULL, &m, &err), &err);
    compare_unet(sdc_model_component(&m, "unet")->config, &m.weights, 2, 8, dtype, tol, 512);
    sdc_model_close(&m);
}

TEST(cuda_unet_tiny_sd_matches_cpu) {
    compare_tiny("tiny-sd", SDC_F32, MODEL_TOL_F32);
    compare_tiny("tiny-sd", SDC_BF16, MODEL_TOL_BF16);
}

TEST(cuda_unet_tiny_sdxl_matches_cpu) {
    compare_tiny("tiny-sdxl", SDC_F32, MODEL_TOL_F32);
    compare_tiny("tiny-sdxl", SDC_BF16, MODEL_TOL_BF16);
}

/* The check: SD 1.5's architecture (random weights as `sdc init
 * --preset sd15`) at 64×64 latents, forward and backward. */
TEST(cuda_unet_sd15_64_matches_cpu) {
    CUDA_BACKEND_OR_SKIP(be);
    (void)be;
    const sdc_preset *p = sdc_preset_find("sd15");
    REQUIRE(p);
    const char *txt = NULL;
    for (int i = 0; i < p->nmodels; i++)
        if (p->models[i].kind == SDC_PRESET_UNET) txt = p->models[i].config;
    cJSON *j = cJSON_Parse(txt);
    REQUIRE(j);
    compare_unet(j, NULL, 1, 64, SDC_F32, MODEL_TOL_F32, 24576);
    compare_unet(j, NULL, 1, 64, SDC_BF16, MODEL_TOL_BF16, 24576);
    cJSON_Delete(j);
}

/* Ten optimizer steps of a full fine-tune of the tiny SD UNet through the
 * trainer, CPU and GPU from the same weights and batches. */
static void train_ten(sdc_dtype dtype, double tol) {
    CUDA_BACKEND_OR_SKIP(be);
    (void)be;
    sdc_error err = {0};
    sdc_model m;
    REQUIRE_OK(sdc_model_open(test_data("tiny-sd"), NULL, &m, &err), &err);
    sdc_unet_config cfg;
    sdc_sched_config sched;
    REQUIRE_OK(sdc_unet_config_parse(sdc_model_component(&m, "unet")->config, "unet", &cfg, &err), &err);
    REQUIRE_OK(sdc_sched_config_parse(sdc_model_component(&m, "scheduler")->config, "scheduler", &sched, &err), &err);
    sdc_unet *u[2];
    sdc_arena arena[2];
    sdc_ctx c[2];
    sdc_trainer t[2];
    sdc_trainer_opts o = {.prediction = SDC_PRED_EPSILON, .grad_accum = 1, .max_grad_norm = 1.0, .use_ema = 1};
    sdc_adamw_hparams_default(&o.adam);
    o.adam.lr = 1e-4;
    sdc_ema_hparams_default(&o.ema);
    REQUIRE_OK(sdc_lr_schedule_init(&o.lr, SDC_LR_CONSTANT, 1e-4, 0, 10, 1, 1.0, &err), &err);
    for (int k = 0; k < 2; k++) {
        u[k] = calloc(1, sizeof *u[k]);
        REQUIRE_OK(sdc_unet_build(u[k], &cfg, "unet", &err), &err);
        REQUIRE_OK(sdc_params_load(&u[k]->params, &m.weights, NULL, NULL, &err), &err);
        sdc_device d = {k ? SDC_CUDA : SDC_CPU, 0};
        REQUIRE_OK(sdc_ctx_open(&c[k], &arena[k], d, k ? dtype : SDC_F32, 256u << 20, &err), &err);
        if (k) REQUIRE_OK(sdc_params_to_device(&u[k]->params, c[k].be, d, dtype, &err), &err);
        sdc_params *st = &u[k]->params;
        REQUIRE_OK(sdc_trainer_init(&t[k], u[k], NULL, 0, &st, 1, &sched, &o, &c[k], &err), &err);
    }
    const int B = 2;
    const int64_t h = 8, per = cfg.in_channels * h * h, D = cfg.cross_attention_dim;
    float *x0 = malloc((size_t)(B * per) * sizeof *x0), *noise = malloc((size_t)(B * per) * sizeof *noise);
    float *ctx = malloc((size_t)(B * 77 * D) * sizeof *ctx);
    int64_t ts[2];
    double worst_loss = 0, worst_gn = 0;
    for (int step = 0; step < 10; step++) {
        sdc_rng r;
        sdc_rng_init(&r, 100 + (uint64_t)step);
        sdc_rng_fill_normal(&r, x0, (size_t)(B * per));
        sdc_rng_fill_normal(&r, noise, (size_t)(B * per));
        sdc_rng_fill_normal(&r, ctx, (size_t)(B * 77 * D));
        ts[0] = 37 * step + 11, ts[1] = 997 - 53 * step;
        sdc_train_batch b = {.B = B, .x0 = x0, .noise = noise, .t = ts, .context = ctx, .h = h, .w = h, .S = 77};
        double loss[2], gn[2], lr;
        int skipped;
        for (int k = 0; k < 2; k++) {
            REQUIRE_OK(sdc_trainer_micro_step(&t[k], &b, &loss[k], &err), &err);
            REQUIRE_OK(sdc_trainer_optimizer_step(&t[k], &gn[k], &lr, &skipped, &err), &err);
        }
        double el = fabs(loss[1] - loss[0]) / loss[0], eg = fabs(gn[1] - gn[0]) / gn[0];
        if (el > worst_loss) worst_loss = el;
        if (eg > worst_gn) worst_gn = eg;
    }
    CHECK_MSG(worst_loss <= tol, "%s: loss rel err %.3g > %.1g", sdc_dtype_name(dtype), worst_loss, tol);
    CHECK_MSG(worst_gn <= 5 * tol, "%s: grad norm rel err %.3g > %.1g", sdc_dtype_name(dtype), worst_gn, 5 * tol);
    /* the weights the GPU trained, back on the host, against the CPU's:
     * how far each moved must agree (Adam moves every weight by ~lr a step,
     * so compare the distance moved, not the weights' tiny differences) */
    sdc_params_sync_host(&u[1]->params);
    sdc_unet *u0 = calloc(1, sizeof *u0);
    REQUIRE_OK(sdc_unet_build(u0, &cfg, "unet", &err), &err);
    REQUIRE_OK(sdc_params_load(&u0->params, &m.weights, NULL, NULL, &err), &err);
    size_t n = u0->params.total;
    float *dc = malloc(n * sizeof *dc), *dg = malloc(n * sizeof *dg);
    for (size_t i = 0; i < n; i++) {
        dc[i] = u[0]->params.data[i] - u0->params.data[i];
        dg[i] = u[1]->params.data[i] - u0->params.data[i];
    }
    double em = ct_rel_err(dg, dc, (int64_t)n);
    /* sign-like first Adam steps turn rounding-level gradient differences
     * into ±lr for weights whose gradient is ~0: a looser bound */
    CHECK_MSG(em <= (dtype == SDC_F32 ? 0.05 : 0.3), "%s: distance moved rel err %.3g", sdc_dtype_name(dtype), em);
    fprintf(stderr, "  %s: loss %.2e, grad norm %.2e, distance moved %.2e\n", sdc_dtype_name(dtype), worst_loss,
            worst_gn, em);
    free(dc), free(dg), free(x0), free(noise), free(ctx);
    sdc_unet_free(u0);
    free(u0);
    for (int k = 0; k < 2; k++) {
        sdc_trainer_free(&t[k]);
        sdc_unet_free(u[k]);
        free(u[k]);
        sdc_ctx_close(&c[k]);
    }
    sdc_model_close(&m);
}

TEST(cuda_trainer_ten_steps_match_cpu) {
    train_ten(SDC_F32, 1e-4);
    train_ten(SDC_BF16, MODEL_TOL_BF16);
}
