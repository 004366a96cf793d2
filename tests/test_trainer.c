/* Training steps against PyTorch (tools/make_train_goldens.py: diffusers'
 * UNet in float64, torch.optim.AdamW, clip_grad_norm_, get_scheduler,
 * EMAModel, PEFT LoRA), fed the same latents, noise, timesteps and text
 * states: per-micro-batch losses, gradient norms, learning rates, and the
 * parameters (every parameter's norm and distance moved, full values for
 * ~35) after the steps. Cases: full fine-tune ε with warm-up and EMA;
 * v-prediction with min-SNR γ=5, 2-step accumulation and clipping; LoRA
 * rank 4 on to_q/k/v/out.0. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/ops.h"
#include "core/fs.h"
#include "io/model.h"
#include "nn/lora_attach.h"
#include "pipeline/golden.h"
#include "pipeline/train_checkpoint.h"
#include "pipeline/trainer.h"
#include "test.h"

typedef struct fixture {
    const char *zero_key; /* metadata list of the parameters whose gradient is zero in exact arithmetic */
    sdc_model m;
    sdc_golden g;
    sdc_unet *u;
    sdc_sched_config sched;
    sdc_arena arena;
} fixture;

static int setup_pack(fixture *f, const char *pack) {
    sdc_error err = {0};
    memset(f, 0, sizeof *f);
    f->zero_key = strcmp(pack, "tiny-sd") ? "sdxl/zero_grad_params" : "zero_grad_params";
    if (sdc_model_open(test_data(pack), NULL, &f->m, &err) != SDC_OK ||
        sdc_golden_open(test_data("train/goldens.safetensors"), &f->g, &err) != SDC_OK) {
        sdc_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return 0;
    }
    sdc_unet_config cfg;
    f->u = calloc(1, sizeof *f->u);
    if (sdc_unet_config_parse(sdc_model_component(&f->m, "unet")->config, "unet", &cfg, &err) != SDC_OK ||
        sdc_unet_build(f->u, &cfg, "unet", &err) != SDC_OK ||
        sdc_params_load(&f->u->params, &f->m.weights, NULL, NULL, &err) != SDC_OK ||
        sdc_sched_config_parse(sdc_model_component(&f->m, "scheduler")->config, "scheduler", &f->sched, &err) != SDC_OK ||
        sdc_arena_init(&f->arena, 512u << 20, &err) != SDC_OK) {
        sdc_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return 0;
    }
    return 1;
}

static int setup(fixture *f) { return setup_pack(f, "tiny-sd"); }

static void teardown(fixture *f) {
    sdc_arena_free(&f->arena);
    if (f->u) sdc_unet_free(f->u);
    free(f->u);
    sdc_golden_close(&f->g);
    sdc_model_close(&f->m);
}

static double *get64(fixture *f, const char *key, int64_t *shape) {
    sdc_error err = {0};
    double *d = NULL;
    int nd;
    if (sdc_golden_f64(&f->g, key, &d, shape, &nd, &err) != SDC_OK) sdc_test_fail(__FILE__, __LINE__, "%s", err.msg);
    return d;
}

/* A case's inputs (tools/make_train_goldens.py: <case>/in/...), handed out
 * one micro-batch at a time. Conditioning is either given (encoder hidden
 * states, SDXL text_embeds and time_ids) or token ids for text encoders
 * run inside the step. */
typedef struct inputs {
    double *x0, *noise, *t, *ctx, *te, *tids, *ids;
    int micro, B;
    int64_t h, w, per, ctxn, P, T;
    float *x0f, *noisef, *ctxf, *tef;
    double tidf[64 * 6];
    int64_t ts[64];
    int32_t *idsf;
} inputs;

static double *opt64(fixture *f, const char *name, const char *what, int64_t *shape) {
    char key[256];
    snprintf(key, sizeof key, "%s/in/%s", name, what);
    return sdc_golden_has(&f->g, key) ? get64(f, key, shape) : NULL;
}

static int inputs_load(fixture *f, const char *name, inputs *in) {
    memset(in, 0, sizeof *in);
    int64_t s[8], sc[8] = {0}, st[8] = {0}, si[8] = {0};
    in->x0 = opt64(f, name, "x0", s);
    in->noise = opt64(f, name, "noise", s);
    in->t = opt64(f, name, "timesteps", st);
    in->ctx = opt64(f, name, "encoder_hidden_states", sc);
    in->te = opt64(f, name, "text_embeds", st);
    in->tids = opt64(f, name, "time_ids", si);
    in->ids = opt64(f, name, "input_ids", si);
    if (!in->x0 || !in->noise || !in->t) return 0;
    in->micro = (int)s[0], in->B = (int)s[1], in->h = s[3], in->w = s[4];
    in->per = s[2] * s[3] * s[4];
    in->ctxn = in->ctx ? sc[2] * sc[3] : 0;
    in->P = in->te ? st[2] : 0;
    in->T = in->ids ? si[2] : 77;
    in->x0f = malloc((size_t)(in->B * in->per) * sizeof(float));
    in->noisef = malloc((size_t)(in->B * in->per) * sizeof(float));
    in->ctxf = malloc((size_t)(in->B * in->ctxn + 1) * sizeof(float));
    in->tef = malloc((size_t)(in->B * in->P + 1) * sizeof(float));
    in->idsf = malloc((size_t)(in->B * in->T) * sizeof(int32_t));
    return in->B <= 64 && in->x0f && in->noisef && in->ctxf && in->tef && in->idsf;
}

static sdc_train_batch inputs_batch(inputs *in, int k) {
    const int B = in->B;
    for (int64_t i = 0; i < B * in->per; i++)
        in->x0f[i] = (float)in->x0[k * B * in->per + i], in->noisef[i] = (float)in->noise[k * B * in->per + i];
    for (int64_t i = 0; i < B * in->ctxn; i++) in->ctxf[i] = (float)in->ctx[k * B * in->ctxn + i];
    for (int64_t i = 0; i < B * in->P; i++) in->tef[i] = (float)in->te[k * B * in->P + i];
    for (int64_t i = 0; in->tids && i < B * 6; i++) in->tidf[i] = in->tids[k * B * 6 + i];
    for (int64_t i = 0; in->ids && i < B * in->T; i++) in->idsf[i] = (int32_t)in->ids[k * B * in->T + i];
    for (int b = 0; b < B; b++) in->ts[b] = (int64_t)in->t[k * B + b];
    sdc_train_batch b = {.B = B, .x0 = in->x0f, .noise = in->noisef, .t = in->ts, .context = in->ctxf,
                         .h = in->h, .w = in->w, .S = 77, .text_embeds = in->tef, .time_ids = in->tidf, .T = in->T};
    if (in->ids) b.input_ids[0] = b.input_ids[1] = in->idsf;
    return b;
}

static void inputs_free(inputs *in) {
    free(in->x0), free(in->noise), free(in->t), free(in->ctx), free(in->te), free(in->tids), free(in->ids);
    free(in->x0f), free(in->noisef), free(in->ctxf), free(in->tef), free(in->idsf);
}

/* The optimiser settings of a case from its metadata (<case>/meta). */
static int opts_from_meta(fixture *f, const char *name, sdc_trainer_opts *o) {
    char key[128];
    snprintf(key, sizeof key, "%s/meta", name);
    cJSON *m = cJSON_Parse(sdc_golden_meta(&f->g, key));
    if (!m) return 0;
    sdc_error err = {0};
    memset(o, 0, sizeof *o);
    double lr = cJSON_GetObjectItem(m, "lr")->valuedouble;
    const char *pt = cJSON_GetObjectItem(m, "prediction_type")->valuestring;
    o->prediction = !strcmp(pt, "v_prediction") ? SDC_PRED_V : SDC_PRED_EPSILON;
    const cJSON *g = cJSON_GetObjectItem(m, "snr_gamma");
    o->snr_gamma = cJSON_IsNumber(g) ? g->valuedouble : 0;
    o->grad_accum = cJSON_GetObjectItem(m, "accumulation")->valueint;
    o->max_grad_norm = cJSON_GetObjectItem(m, "max_grad_norm")->valuedouble;
    sdc_adamw_hparams_default(&o->adam);
    o->adam.lr = lr;
    o->adam.beta1 = cJSON_GetArrayItem(cJSON_GetObjectItem(m, "betas"), 0)->valuedouble;
    o->adam.beta2 = cJSON_GetArrayItem(cJSON_GetObjectItem(m, "betas"), 1)->valuedouble;
    o->adam.eps = cJSON_GetObjectItem(m, "eps")->valuedouble;
    o->adam.weight_decay = cJSON_GetObjectItem(m, "weight_decay")->valuedouble;
    sdc_lr_kind kind;
    int ok = sdc_lr_kind_parse(cJSON_GetObjectItem(m, "schedule")->valuestring, &kind, &err) == SDC_OK &&
             sdc_lr_schedule_init(&o->lr, kind, lr, cJSON_GetObjectItem(m, "warmup")->valueint,
                                  cJSON_GetObjectItem(m, "steps")->valueint, 1, 1.0, &err) == SDC_OK;
    const cJSON *ema = cJSON_GetObjectItem(m, "ema");
    if (cJSON_IsObject(ema)) {
        o->use_ema = 1;
        sdc_ema_hparams_default(&o->ema);
    }
    cJSON_Delete(m);
    return ok;
}

/* Runs a case: micro-batches from the golden, optimizer steps every `accum`. */
static void run_stores(fixture *f, const char *name, sdc_clip_text *const *te, int nte, sdc_params *const *train,
                       int ntrain, const sdc_trainer_opts *o, int micro, double loss_tol) {
    sdc_error err = {0};
    sdc_trainer t;
    REQUIRE_OK(sdc_trainer_init(&t, f->u, te, nte, train, ntrain, &f->sched, o, &SDC_CTX_CPU(&f->arena), &err), &err);
    char key[256];
    int64_t s3[8];
    inputs in;
    REQUIRE(inputs_load(f, name, &in));
    snprintf(key, sizeof key, "%s/out/loss", name);
    double *loss_ref = get64(f, key, s3);
    snprintf(key, sizeof key, "%s/out/grad_norm", name);
    double *gn_ref = get64(f, key, s3);
    snprintf(key, sizeof key, "%s/out/lr", name);
    double *lr_ref = get64(f, key, s3);
    REQUIRE(loss_ref && gn_ref && lr_ref);
    (void)micro;
    micro = in.micro; /* the golden decides how many steps */
    int step = 0;
    for (int k = 0; k < micro; k++) {
        sdc_train_batch batch = inputs_batch(&in, k);
        double loss;
        REQUIRE_OK(sdc_trainer_micro_step(&t, &batch, &loss, &err), &err);
        CHECK_MSG(fabs(loss - loss_ref[k]) <= loss_tol * loss_ref[k], "%s: loss %d: %.9g vs %.9g", name, k, loss,
                  loss_ref[k]);
        if (t.micro == o->grad_accum) {
            double gn, lr;
            int skipped;
            REQUIRE_OK(sdc_trainer_optimizer_step(&t, &gn, &lr, &skipped, &err), &err);
            CHECK(!skipped);
            /* gradient norms: fp32 backward vs fp64, ~1e-6 measured */
            CHECK_MSG(fabs(gn - gn_ref[step]) <= 1e-4 * gn_ref[step], "%s: grad norm %d: %.9g vs %.9g", name, step,
                      gn, gn_ref[step]);
            CHECK_MSG(fabs(lr - lr_ref[step]) <= 1e-15 + 1e-12 * lr_ref[step], "%s: lr %d: %.17g vs %.17g", name,
                      step, lr, lr_ref[step]);
            step++;
        }
    }
    inputs_free(&in);
    free(loss_ref), free(gn_ref), free(lr_ref);
    if (!strcmp(name, "full_eps")) {
        /* EMA: its distance from the start for every parameter */
        int64_t s[8];
        double *ema_ref = get64(f, "full_eps/out/ema_delta_norms", s);
        cJSON *names = cJSON_Parse(sdc_golden_meta(&f->g, "param_names"));
        cJSON *zero = cJSON_Parse(sdc_golden_meta(&f->g, "zero_grad_params"));
        int bad = 0;
        for (int i = 0; ema_ref && i < cJSON_GetArraySize(names); i++) {
            const char *name = cJSON_GetArrayItem(names, i)->valuestring;
            int skip = 0; /* gradient-free in exact arithmetic: see compare_params */
            for (int z = 0; cJSON_IsArray(zero) && z < cJSON_GetArraySize(zero); z++)
                skip |= !strcmp(cJSON_GetArrayItem(zero, z)->valuestring, name);
            if (skip) continue;
            sdc_param *p = sdc_params_find(&f->u->params, name);
            REQUIRE(p);
            /* initial values are still the file's */
            sdc_tensor w0;
            char k2[600];
            snprintf(k2, sizeof k2, "unet.%s", p->name);
            const sdc_weight *wt = sdc_weights_find(&f->m.weights, k2);
            float *init = malloc((size_t)p->numel * sizeof *init);
            sdc_error e2;
            sdc_weight_to_f32(&f->m.weights, wt, init, &e2);
            double d = 0;
            for (int64_t j = 0; j < p->numel; j++) {
                double v = (double)t.ema.shadow[p->offset + j] - init[j];
                d += v * v;
            }
            free(init);
            (void)w0;
            if (fabs(sqrt(d) - ema_ref[i]) > 1e-3 * ema_ref[i] + 1e-7) bad++;
        }
        CHECK_EQ_INT(bad, 0);
        cJSON_Delete(names);
        cJSON_Delete(zero);
        free(ema_ref);
    }
    sdc_trainer_free(&t);
}

static void run_case(fixture *f, const char *name, sdc_params *train, const sdc_trainer_opts *o, int micro,
                     double loss_tol) {
    run_stores(f, name, NULL, 0, &train, 1, o, micro, loss_tol);
}

/* fp32 forward against fp64: measured ~1e-6 */
#define LOSS_TOL 1e-5

static void run_case_te(fixture *f, const char *name, sdc_clip_text *const *te, int nte, sdc_params *const *train,
                        int ntrain, const sdc_trainer_opts *o) {
    run_stores(f, name, te, nte, train, ntrain, o, 10, LOSS_TOL);
}

/* Distance moved and final values of every parameter of `p` named in the
 * golden (names: metadata list; file keys prefix/<name>). Adam's first steps
 * move each weight by about ±lr whatever the gradient's size, so weights
 * whose fp64 gradient is tiny can move differently in fp32; 17 parameters
 * are mathematically gradient-free (`zero_grad_params`) and skipped. */
static void compare_params(fixture *f, sdc_params *p, const char *names_key, const char *delta_key,
                           const char *values_prefix, const sdc_params *init, double tol) {
    cJSON *names = cJSON_Parse(sdc_golden_meta(&f->g, names_key));
    cJSON *zero = cJSON_Parse(sdc_golden_meta(&f->g, f->zero_key));
    REQUIRE(cJSON_IsArray(names));
    int64_t s[8];
    double *dref = delta_key ? get64(f, delta_key, s) : NULL;
    int bad = 0, full = 0;
    double worst = 0;
    for (int i = 0; i < cJSON_GetArraySize(names); i++) {
        const char *name = cJSON_GetArrayItem(names, i)->valuestring;
        int skip = 0;
        for (int z = 0; cJSON_IsArray(zero) && z < cJSON_GetArraySize(zero); z++)
            skip |= !strcmp(cJSON_GetArrayItem(zero, z)->valuestring, name);
        if (skip) continue;
        sdc_param *q = sdc_params_find(p, name);
        REQUIRE_MSG(q, "no parameter %s", name);
        const float *v = q->slot->data;
        if (dref) {
            const sdc_param *q0 = sdc_params_find(init, name);
            double d = 0;
            for (int64_t j = 0; j < q->numel; j++) {
                double e = (double)v[j] - ((const float *)q0->slot->data)[j];
                d += e * e;
            }
            double rel = fabs(sqrt(d) - dref[i]) / (dref[i] > 0 ? dref[i] : 1);
            if (rel > worst) worst = rel;
            if (rel > tol && bad++ < 5) CHECK_MSG(0, "%s moved %.6g, reference %.6g", name, sqrt(d), dref[i]);
        }
        char key[600];
        snprintf(key, sizeof key, "%s/%s", values_prefix, name);
        if (sdc_golden_has(&f->g, key)) {
            float *ref;
            int nd;
            sdc_error err = {0};
            REQUIRE_OK(sdc_golden_f32(&f->g, key, &ref, s, &nd, &err), &err);
            /* Adam normalises each step to about ±lr, so fp32 gradient noise
             * shows in small tensors (LoRA B ~0.01 after 3 steps of 1e-3):
             * measured ≤ 3e-5 */
            double e = sdc_rel_err(v, ref, (size_t)q->numel);
            CHECK_MSG(e <= 1e-4, "%s: relative error %.3g", key, e);
            free(ref);
            full++;
        }
    }
    if (getenv("SDC_TEST_VERBOSE")) fprintf(stderr, "    %s: worst moved-distance error %.3g, %d full\n", names_key, worst, full);
    CHECK_EQ_INT(bad, 0);
    CHECK(full >= 20);
    cJSON_Delete(names);
    cJSON_Delete(zero);
    free(dref);
}

/* (distance tolerance 2e-3: measured ≤ 3e-4 over every parameter.) */

/* A copy of the initial parameters, to measure how far training moved them. */
static void snapshot(sdc_params *dst, sdc_params *src) {
    sdc_error err = {0};
    sdc_params_init(dst, src->component, &err);
    for (size_t i = 0; i < src->count; i++) {
        sdc_tensor *slot = malloc(sizeof *slot);
        sdc_params_declare(dst, slot, SDC_INIT_ZEROS, src->items[i].slot->ndim, src->items[i].slot->shape, "%s",
                           src->items[i].name);
    }
    sdc_params_alloc(dst, &err);
    memcpy(dst->data, src->data, src->total * sizeof(float));
}

static void snapshot_free(sdc_params *p) {
    for (size_t i = 0; i < p->count; i++) free(p->items[i].slot);
    sdc_params_free(p);
}

static void opts_for(sdc_trainer_opts *o, double lr, double wd, double clip, sdc_lr_kind kind, int warmup, int steps) {
    sdc_error err = {0};
    memset(o, 0, sizeof *o);
    o->prediction = SDC_PRED_EPSILON;
    o->grad_accum = 1;
    o->max_grad_norm = clip;
    sdc_adamw_hparams_default(&o->adam);
    o->adam.lr = lr;
    o->adam.weight_decay = wd;
    o->adam.eps = 1e-8;
    sdc_lr_schedule_init(&o->lr, kind, lr, warmup, steps, 1, 1.0, &err);
}



TEST(trainer_full_eps_matches_pytorch) {
    fixture f;
    if (!setup(&f)) return;
    sdc_params init;
    snapshot(&init, &f.u->params);
    sdc_trainer_opts o;
    REQUIRE(opts_from_meta(&f, "full_eps", &o));
    CHECK(o.use_ema && o.lr.kind == SDC_LR_CONSTANT_WITH_WARMUP);
    run_case(&f, "full_eps", &f.u->params, &o, 3, LOSS_TOL);
    compare_params(&f, &f.u->params, "param_names", "full_eps/out/delta_norms", "full_eps/out/param", &init, 2e-3);
    snapshot_free(&init);
    teardown(&f);
}

TEST(trainer_v_snr_accumulation_matches_pytorch) {
    fixture f;
    if (!setup(&f)) return;
    sdc_params init;
    snapshot(&init, &f.u->params);
    sdc_trainer_opts o;
    REQUIRE(opts_from_meta(&f, "full_v_snr_accum", &o));
    CHECK(o.prediction == SDC_PRED_V && o.snr_gamma == 5.0 && o.grad_accum == 2);
    /* min-SNR weights are float32 in diffusers (2.6e-5 off fp64 at t=0) */
    run_case(&f, "full_v_snr_accum", &f.u->params, &o, 4, 1e-4);
    compare_params(&f, &f.u->params, "param_names", "full_v_snr_accum/out/delta_norms", "full_v_snr_accum/out/param",
                   &init, 2e-3);
    snapshot_free(&init);
    teardown(&f);
}

TEST(trainer_lora_matches_peft) {
    fixture f;
    if (!setup(&f)) return;
    sdc_error err = {0};
    static const char *const targets[] = {"to_k", "to_q", "to_v", "to_out.0"};
    sdc_lora_set ls;
    REQUIRE_OK(sdc_lora_attach(&ls, &f.u->params, &(sdc_lora_config){.targets = targets, .ntargets = 4, .rank = 4, .alpha = 4.0f, .init = SDC_LORA_INIT_GAUSSIAN}, "unet_lora", &err), &err);
    CHECK_EQ_INT(ls.count, 48);
    /* the reference's initial adapters */
    for (size_t i = 0; i < ls.params.count; i++) {
        char key[600];
        snprintf(key, sizeof key, "lora/in/lora/%s", ls.params.items[i].name);
        float *d;
        int64_t s[8];
        int nd;
        REQUIRE_OK(sdc_golden_f32(&f.g, key, &d, s, &nd, &err), &err);
        memcpy(ls.params.items[i].slot->data, d, (size_t)ls.params.items[i].numel * sizeof(float));
        free(d);
    }
    sdc_trainer_opts o;
    REQUIRE(opts_from_meta(&f, "lora", &o));
    run_case(&f, "lora", &ls.params, &o, 3, LOSS_TOL);
    compare_params(&f, &ls.params, "lora/param_names", NULL, "lora/out/lora", NULL, 0);
    sdc_lora_detach(&ls);
    teardown(&f);
}

/* Gradient checkpointing recomputes each block in backward: the loss and
 * every gradient are bit-identical to the stored-activation run, and the
 * activation memory is smaller. */
TEST(trainer_gradient_checkpointing_same_gradients) {
    fixture f;
    if (!setup(&f)) return;
    sdc_error err = {0};
    inputs in;
    REQUIRE(inputs_load(&f, "full_eps", &in));
    sdc_train_batch batch = inputs_batch(&in, 0);
    double loss[2];
    size_t peak[2];
    float *grads[2];
    for (int k = 0; k < 2; k++) {
        sdc_trainer_opts o;
        opts_for(&o, 1e-4, 1e-2, 1.0, SDC_LR_CONSTANT, 0, 1);
        o.gradient_checkpointing = k;
        sdc_trainer t;
        sdc_params *st = &f.u->params;
        REQUIRE_OK(sdc_trainer_init(&t, f.u, NULL, 0, &st, 1, &f.sched, &o, &SDC_CTX_CPU(&f.arena), &err), &err);
        f.arena.peak = f.arena.used;
        REQUIRE_OK(sdc_trainer_micro_step(&t, &batch, &loss[k], &err), &err);
        peak[k] = f.arena.peak;
        grads[k] = malloc(f.u->params.total * sizeof(float));
        memcpy(grads[k], f.u->params.grad, f.u->params.total * sizeof(float));
        memset(f.u->params.grad, 0, f.u->params.total * sizeof(float));
        sdc_trainer_free(&t);
    }
    CHECK(loss[0] == loss[1]);
    CHECK(memcmp(grads[0], grads[1], f.u->params.total * sizeof(float)) == 0);
    CHECK_MSG(peak[1] < peak[0], "peak with checkpointing %zu, without %zu", peak[1], peak[0]);
    if (getenv("SDC_TEST_VERBOSE"))
        fprintf(stderr, "    activation peak: %.2f MiB stored, %.2f MiB checkpointed\n", peak[0] / 1048576.0,
                peak[1] / 1048576.0);
    free(grads[0]), free(grads[1]);
    inputs_free(&in);
    teardown(&f);
}

/* Determinism: the same inputs give bit-identical weights, and a LoRA
 * adapter with B = 0 leaves the model's output unchanged. */
TEST(trainer_deterministic_and_lora_starts_at_base) {
    fixture f;
    if (!setup(&f)) return;
    sdc_error err = {0};
    sdc_params init;
    snapshot(&init, &f.u->params);
    float *w[2];
    for (int k = 0; k < 2; k++) {
        memcpy(f.u->params.data, init.data, init.total * sizeof(float));
        sdc_trainer_opts o;
        opts_for(&o, 1e-4, 1e-2, 1.0, SDC_LR_CONSTANT, 0, 2);
        sdc_trainer t;
        sdc_params *st = &f.u->params;
        REQUIRE_OK(sdc_trainer_init(&t, f.u, NULL, 0, &st, 1, &f.sched, &o, &SDC_CTX_CPU(&f.arena), &err), &err);
        inputs in;
        REQUIRE(inputs_load(&f, "full_eps", &in));
        sdc_train_batch b = inputs_batch(&in, 0);
        for (int step = 0; step < 2; step++) {
            double loss, gn, lr;
            int skipped;
            REQUIRE_OK(sdc_trainer_micro_step(&t, &b, &loss, &err), &err);
            REQUIRE_OK(sdc_trainer_optimizer_step(&t, &gn, &lr, &skipped, &err), &err);
        }
        w[k] = malloc(f.u->params.total * sizeof(float));
        memcpy(w[k], f.u->params.data, f.u->params.total * sizeof(float));
        sdc_trainer_free(&t);
        inputs_free(&in);
    }
    CHECK(memcmp(w[0], w[1], f.u->params.total * sizeof(float)) == 0);
    CHECK(memcmp(w[0], init.data, f.u->params.total * sizeof(float)) != 0);
    free(w[0]), free(w[1]);

    /* fresh PEFT-initialised adapters (B = 0): the UNet computes the same */
    memcpy(f.u->params.data, init.data, init.total * sizeof(float));
    static const char *const targets[] = {"to_q", "to_k", "to_v", "to_out.0"};
    sdc_ctx c = {sdc_cpu_backend(), {SDC_CPU, 0}, &f.arena, NULL, SDC_F32};
    float x[2 * 4 * 16 * 16], ctx[2 * 77 * 32], out[2][2 * 4 * 16 * 16];
    for (size_t i = 0; i < sizeof x / sizeof *x; i++) x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    for (size_t i = 0; i < sizeof ctx / sizeof *ctx; i++) ctx[i] = (float)((i * 53) % 97) / 48.0f - 1.0f;
    double ts[2] = {10, 700};
    for (int k = 0; k < 2; k++) {
        sdc_lora_set ls;
        if (k) {
            REQUIRE_OK(sdc_lora_attach(&ls, &f.u->params, &(sdc_lora_config){.targets = targets, .ntargets = 4, .rank = 8, .alpha = 8.0f, .init = SDC_LORA_INIT_PEFT}, "unet_lora", &err),
                       &err);
            sdc_params_init_random(&ls.params, 3);
        }
        size_t mark = sdc_arena_mark(&f.arena);
        sdc_tensor xt = sdc_op_upload(&c, NULL, 4, SDC_SHAPE(2, 4, 16, 16), x);
        sdc_tensor ct = sdc_op_upload(&c, NULL, 3, SDC_SHAPE(2, 77, 32), ctx);
        sdc_unet_cond cond = {.context = &ct, .timesteps = ts};
        sdc_tensor y = sdc_unet_forward(&c, NULL, f.u, &xt, &cond);
        sdc_op_download(&c, out[k], &y);
        sdc_arena_release(&f.arena, mark);
        if (k) {
            /* A drawn within ±1/√in, B exactly 0 */
            const sdc_param *a = &ls.params.items[0], *bb = &ls.params.items[1];
            float bound = 1.0f / sqrtf((float)a->slot->shape[1]), amax = 0;
            for (int64_t i = 0; i < a->numel; i++) amax = fmaxf(amax, fabsf(((float *)a->slot->data)[i]));
            CHECK(amax > 0.5f * bound && amax <= bound);
            for (int64_t i = 0; i < bb->numel; i++) CHECK(((float *)bb->slot->data)[i] == 0.0f);
            sdc_lora_detach(&ls);
        }
    }
    double e = sdc_rel_err(out[1], out[0], sizeof out[0] / sizeof out[0][0]);
    /* x·Aᵀ·Bᵀ with B = 0 adds exact zeros */
    CHECK_MSG(e == 0.0, "LoRA with B = 0 changed the output by %.3g", e);
    snapshot_free(&init);
    teardown(&f);
}

/* kohya's wider LoRA set (projections, feed-forward, and 3×3 convs with
 * their own rank): the gradient the tape gives the adapters agrees with a
 * central finite difference of the loss along a random direction. */
TEST(trainer_kohya_lora_gradient_matches_finite_difference) {
    fixture f;
    if (!setup(&f)) return;
    sdc_error err = {0};
    sdc_lora_config lc = {.targets = sdc_lora_targets_kohya, .ntargets = 8, .rank = 4, .alpha = 2.0f,
                          .conv_targets = sdc_lora_conv_targets_kohya, .nconv_targets = 3, .conv_rank = 2,
                          .conv_alpha = 1.0f, .init = SDC_LORA_INIT_PEFT};
    sdc_lora_set ls;
    REQUIRE_OK(sdc_lora_attach(&ls, &f.u->params, &lc, "unet_lora", &err), &err);
    int convs = 0;
    for (size_t i = 0; i < ls.params.count; i++) convs += ls.params.items[i].slot->ndim == 4;
    CHECK(convs > 20);
    CHECK(sdc_params_find(&ls.params, "up_blocks.0.attentions.0.proj_in.lora_A.weight") != NULL);
    CHECK(sdc_params_find(&ls.params, "down_blocks.0.resnets.0.conv1.lora_B.weight") != NULL);
    CHECK(sdc_params_find(&ls.params, "up_blocks.0.upsamplers.0.conv.lora_A.weight") != NULL);
    sdc_params_init_random(&ls.params, 5);
    /* B nonzero so every adapter matters */
    for (size_t i = 0; i < ls.params.total; i++) ls.params.data[i] += 0.01f * (float)((int)((i * 7919) % 200) - 100) / 100.0f;

    sdc_trainer_opts o;
    opts_for(&o, 1e-4, 0, 0, SDC_LR_CONSTANT, 0, 1);
    sdc_trainer t;
    sdc_params *st = &ls.params;
    REQUIRE_OK(sdc_trainer_init(&t, f.u, NULL, 0, &st, 1, &f.sched, &o, &SDC_CTX_CPU(&f.arena), &err), &err);
    inputs in;
    REQUIRE(inputs_load(&f, "full_eps", &in));
    sdc_train_batch b = inputs_batch(&in, 0);
    in.ts[1] = 400;
    double loss0;
    REQUIRE_OK(sdc_trainer_micro_step(&t, &b, &loss0, &err), &err);
    REQUIRE_MSG(isfinite(loss0), "loss %g", loss0);
    /* directional derivative along d = sign(grad) (the largest signal for
     * the loss's fp32 rounding noise), by central differences at eps and
     * eps/2 combined (Richardson) to cancel the O(eps²) curvature term */
    size_t n = ls.params.total;
    float *d = malloc(n * sizeof *d), *p0 = malloc(n * sizeof *p0);
    memcpy(p0, ls.params.data, n * sizeof *p0);
    double gd = 0;
    for (size_t i = 0; i < n; i++) {
        d[i] = ls.params.grad[i] > 0 ? 1.0f : ls.params.grad[i] < 0 ? -1.0f : 0.0f;
        gd += (double)ls.params.grad[i] * d[i];
    }
    double fdh[2];
    for (int k = 0; k < 2; k++) {
        const float eps = k ? 5e-4f : 1e-3f;
        double lp, lm;
        for (size_t i = 0; i < n; i++) ls.params.data[i] = p0[i] + eps * d[i];
        REQUIRE_OK(sdc_trainer_micro_step(&t, &b, &lp, &err), &err);
        for (size_t i = 0; i < n; i++) ls.params.data[i] = p0[i] - eps * d[i];
        REQUIRE_OK(sdc_trainer_micro_step(&t, &b, &lm, &err), &err);
        fdh[k] = (lp - lm) / (2.0 * eps);
    }
    double fd = (4.0 * fdh[1] - fdh[0]) / 3.0;
    /* measured agreement 5e-7 */
    CHECK_MSG(fabs(fd - gd) <= 1e-4 * fabs(gd), "finite difference %.6g vs tape %.6g", fd, gd);
    if (getenv("SDC_TEST_VERBOSE")) fprintf(stderr, "    kohya LoRA: fd %.8g tape %.8g\n", fd, gd);
    sdc_trainer_free(&t);
    sdc_lora_detach(&ls);
    free(d), free(p0);
    inputs_free(&in);
    teardown(&f);
}

/* LoRA on the UNet and on the text encoder (q/k/v/out_proj), the text
 * encoder run inside the step on token ids, one optimizer over both
 * (train_text_to_image_lora.py --train_text_encoder). */
TEST(trainer_lora_text_encoder_matches_peft) {
    fixture f;
    if (!setup(&f)) return;
    sdc_error err = {0};
    sdc_clip_text *te = calloc(1, sizeof *te);
    const sdc_component *tc = sdc_model_component(&f.m, "text_encoder");
    REQUIRE_OK(sdc_clip_text_build(te, tc->config, 0, "text_encoder", "text_encoder", &err), &err);
    REQUIRE_OK(sdc_clip_text_load(te, &f.m.weights, &err), &err);
    static const char *const te_targets[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
    sdc_lora_set ul, tl;
    sdc_lora_config uc = {.targets = sdc_lora_targets_diffusers, .ntargets = 4, .rank = 4, .alpha = 4.0f,
                          .init = SDC_LORA_INIT_GAUSSIAN};
    sdc_lora_config tcfg = uc;
    tcfg.targets = te_targets;
    REQUIRE_OK(sdc_lora_attach(&ul, &f.u->params, &uc, "unet_lora", &err), &err);
    REQUIRE_OK(sdc_lora_attach(&tl, &te->params, &tcfg, "text_encoder_lora", &err), &err);
    CHECK_EQ_INT(tl.count, 20);
    const char *prefix[2] = {"lora_te/in/lora", "lora_te/in/te_lora"};
    sdc_lora_set *sets[2] = {&ul, &tl};
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < sets[k]->params.count; i++) {
            char key[600];
            snprintf(key, sizeof key, "%s/%s", prefix[k], sets[k]->params.items[i].name);
            float *d;
            int64_t sh[8];
            int nd;
            REQUIRE_OK(sdc_golden_f32(&f.g, key, &d, sh, &nd, &err), &err);
            memcpy(sets[k]->params.items[i].slot->data, d, (size_t)sets[k]->params.items[i].numel * sizeof(float));
            free(d);
        }
    sdc_trainer_opts o;
    REQUIRE(opts_from_meta(&f, "lora_te", &o));
    sdc_params *stores[2] = {&ul.params, &tl.params};
    run_case_te(&f, "lora_te", &te, 1, stores, 2, &o);
    compare_params(&f, &ul.params, "lora_te/lora_param_names", NULL, "lora_te/out/lora", NULL, 0);
    compare_params(&f, &tl.params, "lora_te/te_param_names", NULL, "lora_te/out/te_lora", NULL, 0);
    sdc_lora_detach(&ul);
    sdc_lora_detach(&tl);
    sdc_clip_text_free(te);
    free(te);
    teardown(&f);
}

/* SDXL: text_embeds and time_ids conditioning, transformer depth (1, 2). */
TEST(trainer_sdxl_full_matches_pytorch) {
    fixture f;
    if (!setup_pack(&f, "tiny-sdxl")) return;
    sdc_params init;
    snapshot(&init, &f.u->params);
    sdc_trainer_opts o;
    REQUIRE(opts_from_meta(&f, "sdxl_full", &o));
    run_case(&f, "sdxl_full", &f.u->params, &o, 10, LOSS_TOL);
    compare_params(&f, &f.u->params, "sdxl/param_names", "sdxl_full/out/delta_norms", "sdxl_full/out/param", &init,
                   2e-3);
    snapshot_free(&init);
    teardown(&f);
}

TEST(trainer_sdxl_lora_matches_peft) {
    fixture f;
    if (!setup_pack(&f, "tiny-sdxl")) return;
    sdc_error err = {0};
    sdc_lora_set ls;
    sdc_lora_config lc = {.targets = sdc_lora_targets_diffusers, .ntargets = 4, .rank = 4, .alpha = 4.0f,
                          .init = SDC_LORA_INIT_GAUSSIAN};
    REQUIRE_OK(sdc_lora_attach(&ls, &f.u->params, &lc, "unet_lora", &err), &err);
    for (size_t i = 0; i < ls.params.count; i++) {
        char key[600];
        snprintf(key, sizeof key, "sdxl_lora/in/lora/%s", ls.params.items[i].name);
        float *d;
        int64_t sh[8];
        int nd;
        REQUIRE_OK(sdc_golden_f32(&f.g, key, &d, sh, &nd, &err), &err);
        memcpy(ls.params.items[i].slot->data, d, (size_t)ls.params.items[i].numel * sizeof(float));
        free(d);
    }
    sdc_trainer_opts o;
    REQUIRE(opts_from_meta(&f, "sdxl_lora", &o));
    run_case(&f, "sdxl_lora", &ls.params, &o, 10, LOSS_TOL);
    compare_params(&f, &ls.params, "sdxl_lora/lora_param_names", NULL, "sdxl_lora/out/lora", NULL, 0);
    sdc_lora_detach(&ls);
    teardown(&f);
}

/* Full training of both SDXL text encoders run inside the step (token and
 * position embeddings, every layer, the pooled projection): the tape's
 * directional derivative over all their parameters agrees with central
 * differences (as the kohya test above). */
TEST(trainer_sdxl_text_encoders_gradient_matches_finite_difference) {
    fixture f;
    if (!setup_pack(&f, "tiny-sdxl")) return;
    sdc_error err = {0};
    sdc_clip_text *te[2];
    const char *names[2] = {"text_encoder", "text_encoder_2"};
    for (int k = 0; k < 2; k++) {
        te[k] = calloc(1, sizeof *te[k]);
        const sdc_component *tc = sdc_model_component(&f.m, names[k]);
        REQUIRE_OK(sdc_clip_text_build(te[k], tc->config, k, names[k], names[k], &err), &err);
        REQUIRE_OK(sdc_clip_text_load(te[k], &f.m.weights, &err), &err);
    }
    sdc_trainer_opts o;
    opts_for(&o, 1e-4, 0, 0, SDC_LR_CONSTANT, 0, 1);
    sdc_trainer t;
    sdc_params *stores[2] = {&te[0]->params, &te[1]->params};
    REQUIRE_OK(sdc_trainer_init(&t, f.u, te, 2, stores, 2, &f.sched, &o, &SDC_CTX_CPU(&f.arena), &err), &err);
    inputs in;
    REQUIRE(inputs_load(&f, "sdxl_full", &in));
    sdc_train_batch b = inputs_batch(&in, 0);
    int32_t ids[2 * 77];
    for (int i = 0; i < 2 * 77; i++) ids[i] = i % 77 == 0 ? 49406 : i % 77 < 9 ? 320 + i % 77 * 7 : 49407;
    b.input_ids[0] = b.input_ids[1] = ids;
    b.T = 77;
    double loss0;
    REQUIRE_OK(sdc_trainer_micro_step(&t, &b, &loss0, &err), &err);
    double gd = 0;
    float *p0[2], *d[2];
    for (int k = 0; k < 2; k++) {
        size_t n = stores[k]->total;
        p0[k] = malloc(n * sizeof(float));
        d[k] = malloc(n * sizeof(float));
        memcpy(p0[k], stores[k]->data, n * sizeof(float));
        for (size_t i = 0; i < n; i++) {
            float g = stores[k]->grad[i];
            d[k][i] = g > 0 ? 1.0f : g < 0 ? -1.0f : 0.0f;
            gd += (double)g * d[k][i];
        }
    }
    CHECK(gd > 0);
    double fdh[2];
    for (int h = 0; h < 2; h++) {
        const float e0 = 1e-4f; /* the sign direction moves every weight: keep it short */
        const float eps = h ? e0 / 2 : e0;
        double l[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            for (int k = 0; k < 2; k++)
                for (size_t i = 0; i < stores[k]->total; i++)
                    stores[k]->data[i] = p0[k][i] + (sgn ? -eps : eps) * d[k][i];
            REQUIRE_OK(sdc_trainer_micro_step(&t, &b, &l[sgn], &err), &err);
        }
        fdh[h] = (l[0] - l[1]) / (2.0 * eps);
    }
    double fd = (4.0 * fdh[1] - fdh[0]) / 3.0;
    if (getenv("SDC_TEST_VERBOSE")) fprintf(stderr, "    SDXL text encoders: fd %.8g tape %.8g\n", fd, gd);
    CHECK_MSG(fabs(fd - gd) <= 1e-3 * fabs(gd), "finite difference %.6g vs tape %.6g", fd, gd);
    sdc_trainer_free(&t);
    inputs_free(&in);
    for (int k = 0; k < 2; k++) {
        free(p0[k]), free(d[k]);
        sdc_clip_text_free(te[k]);
        free(te[k]);
    }
    teardown(&f);
}

/* Checkpoints: 4 steps straight equal 2 steps, save, a fresh trainer and
 * model restored from the folder, 2 more steps — bit for bit (weights, EMA).
 * "latest" and the total limit pick and prune complete folders only. */
TEST(trainer_checkpoint_resume_is_bit_exact) {
    fixture f;
    if (!setup(&f)) return;
    sdc_error err = {0};
    sdc_params init;
    snapshot(&init, &f.u->params);
    inputs in;
    REQUIRE(inputs_load(&f, "full_eps", &in));
    sdc_trainer_opts o;
    REQUIRE(opts_from_meta(&f, "full_eps", &o));
    const char *dir = test_tmpdir();
    float *w[2], *ema[2];
    for (int run = 0; run < 2; run++) {
        memcpy(f.u->params.data, init.data, init.total * sizeof(float));
        sdc_trainer t;
        sdc_params *st = &f.u->params;
        REQUIRE_OK(sdc_trainer_init(&t, f.u, NULL, 0, &st, 1, &f.sched, &o, &SDC_CTX_CPU(&f.arena), &err), &err);
        for (int k = 0; k < 4; k++) {
            if (run == 1 && k == 2) {
                sdc_train_progress p = {.epoch = 1, .data_pos = 2, .rng_seed = 0xFFFFFFFFFFFFFFF1ull, .rng_offset = 77};
                char path[4096];
                REQUIRE_OK(sdc_train_checkpoint_save(&t, &p, dir, path, sizeof path, &err), &err);
                /* a different starting point, then everything from the checkpoint */
                sdc_trainer_free(&t);
                memcpy(f.u->params.data, init.data, init.total * sizeof(float));
                REQUIRE_OK(sdc_trainer_init(&t, f.u, NULL, 0, &st, 1, &f.sched, &o, &SDC_CTX_CPU(&f.arena), &err), &err);
                char latest[4096];
                REQUIRE_OK(sdc_train_checkpoint_latest(dir, latest, sizeof latest, &err), &err);
                CHECK_STR(latest, path);
                sdc_train_progress q = {0};
                REQUIRE_OK(sdc_train_checkpoint_load(&t, latest, &q, &err), &err);
                CHECK(q.epoch == 1 && q.data_pos == 2 && q.rng_seed == p.rng_seed && q.rng_offset == 77);
                CHECK_EQ_INT(t.step, 2);
            }
            sdc_train_batch b = inputs_batch(&in, k);
            double loss, gn, lr;
            int skipped;
            REQUIRE_OK(sdc_trainer_micro_step(&t, &b, &loss, &err), &err);
            REQUIRE_OK(sdc_trainer_optimizer_step(&t, &gn, &lr, &skipped, &err), &err);
            if (run == 1 && k == 3) {
                /* later checkpoints; the limit keeps the newest two */
                sdc_train_progress p = {0};
                REQUIRE_OK(sdc_train_checkpoint_save(&t, &p, dir, NULL, 0, &err), &err);
            }
        }
        w[run] = malloc(init.total * sizeof(float));
        ema[run] = malloc(init.total * sizeof(float));
        memcpy(w[run], f.u->params.data, init.total * sizeof(float));
        memcpy(ema[run], t.ema.shadow, init.total * sizeof(float));
        sdc_trainer_free(&t);
    }
    CHECK(memcmp(w[0], w[1], init.total * sizeof(float)) == 0);
    CHECK(memcmp(ema[0], ema[1], init.total * sizeof(float)) == 0);
    /* an incomplete folder (no state.json) is never "latest" */
    char junk[4096];
    snprintf(junk, sizeof junk, "%s/checkpoint-99", dir);
    mkdir(junk, 0755);
    char latest[4096];
    REQUIRE_OK(sdc_train_checkpoint_latest(dir, latest, sizeof latest, &err), &err);
    CHECK(strstr(latest, "checkpoint-4") != NULL);
    REQUIRE_OK(sdc_train_checkpoint_prune(dir, 1, &err), &err);
    snprintf(junk, sizeof junk, "%s/checkpoint-2", dir);
    CHECK(!sdc_path_exists(junk));
    snprintf(junk, sizeof junk, "%s/checkpoint-4/state.json", dir);
    CHECK(sdc_path_exists(junk));
    /* a checkpoint of another kind of run is refused with a message */
    sdc_lora_set ls;
    sdc_lora_config lc = {.targets = sdc_lora_targets_diffusers, .ntargets = 4, .rank = 4, .alpha = 4.0f};
    REQUIRE_OK(sdc_lora_attach(&ls, &f.u->params, &lc, "unet_lora", &err), &err);
    sdc_trainer t;
    sdc_params *st = &ls.params;
    REQUIRE_OK(sdc_trainer_init(&t, f.u, NULL, 0, &st, 1, &f.sched, &o, &SDC_CTX_CPU(&f.arena), &err), &err);
    sdc_train_progress q;
    snprintf(junk, sizeof junk, "%s/checkpoint-4", dir);
    CHECK(sdc_train_checkpoint_load(&t, junk, &q, &err) == SDC_EFORMAT);
    CHECK_MSG(strstr(err.msg, "unet_lora") != NULL, "%s", err.msg);
    sdc_trainer_free(&t);
    sdc_lora_detach(&ls);
    for (int r = 0; r < 2; r++) free(w[r]), free(ema[r]);
    inputs_free(&in);
    snapshot_free(&init);
    teardown(&f);
}

/* Dynamic loss scaling (fp16's GradScaler): with a power-of-two scale the
 * weights are bit-identical to no scaling; a scale so large that the
 * gradients overflow skips steps, halving it each time, until they fit, and
 * the first good step then equals an unscaled first step bit for bit. */
TEST(trainer_loss_scaling_is_exact_and_backs_off) {
    fixture f;
    if (!setup(&f)) return;
    sdc_error err = {0};
    sdc_params init;
    snapshot(&init, &f.u->params);
    inputs in;
    REQUIRE(inputs_load(&f, "full_eps", &in));
    sdc_train_batch b = inputs_batch(&in, 0);
    /* 0: no scaling, 2 steps; 1: GradScaler's 2^16, 2 steps; 2: no scaling,
     * 1 step; 3: 2^140 (the fp32 seed is inf) until the first good step */
    float *w[4];
    int skips = 0;
    double scale_after = 0;
    for (int k = 0; k < 4; k++) {
        memcpy(f.u->params.data, init.data, init.total * sizeof(float));
        sdc_trainer_opts o;
        opts_for(&o, 1e-4, 1e-2, 1.0, SDC_LR_CONSTANT, 0, 2);
        o.loss_scaling = k == 1 || k == 3;
        o.init_loss_scale = k == 3 ? 0x1p140 : 0;
        sdc_trainer t;
        sdc_params *st = &f.u->params;
        REQUIRE_OK(sdc_trainer_init(&t, f.u, NULL, 0, &st, 1, &f.sched, &o, &SDC_CTX_CPU(&f.arena), &err), &err);
        CHECK(t.loss_scale == (k == 1 ? 65536.0 : k == 3 ? 0x1p140 : 1.0));
        int steps = k < 2 ? 2 : 1;
        for (int guard = 0; t.step < steps && guard < 40; guard++) {
            double loss, gn, lr;
            int skipped;
            REQUIRE_OK(sdc_trainer_micro_step(&t, &b, &loss, &err), &err);
            REQUIRE_OK(sdc_trainer_optimizer_step(&t, &gn, &lr, &skipped, &err), &err);
            if (k == 3) skips += skipped;
            else CHECK(!skipped);
        }
        if (k == 3) scale_after = t.loss_scale;
        w[k] = malloc(f.u->params.total * sizeof(float));
        memcpy(w[k], f.u->params.data, f.u->params.total * sizeof(float));
        sdc_trainer_free(&t);
    }
    size_t bytes = f.u->params.total * sizeof(float);
    CHECK(memcmp(w[0], w[1], bytes) == 0);
    CHECK(memcmp(w[2], w[3], bytes) == 0);
    CHECK(memcmp(w[2], init.data, bytes) != 0);
    /* the loss gradient times 2^140 overflows fp32 (max ~2^128): some
     * halvings, each skipping its step */
    CHECK_MSG(skips >= 1 && scale_after == ldexp(1.0, 140 - skips), "%d skips, scale %g", skips, scale_after);
    for (int k = 0; k < 4; k++) free(w[k]);
    inputs_free(&in);
    snapshot_free(&init);
    teardown(&f);
}
