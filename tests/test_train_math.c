/* The training math that is not backpropagation (AdamW, gradient clipping,
 * LR schedules, EMA, diffusion targets and losses) against torch/diffusers
 * values made by tools/make_train_math_goldens.py. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/torch_rng.h"
#include "diffusion/schedule.h"
#include "diffusion/training.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "test.h"
#include "train/adamw.h"
#include "train/ema.h"
#include "train/grad_clip.h"
#include "train/lr_schedule.h"

/* ---- golden access ------------------------------------------------------ */

static int open_goldens(sdc_weights *w, sdc_error *err) {
    char path[1024];
    snprintf(path, sizeof path, "%s", test_data("train_math/goldens.safetensors"));
    sdc_weights_init(w);
    return sdc_safetensors_read(path, w, err) == SDC_OK;
}

/* Element k as double, whatever the stored dtype (data may be unaligned). */
static double gat(const sdc_weight *t, int64_t k) {
    switch (t->dtype) {
    case SDC_F32: {
        float f;
        memcpy(&f, (const char *)t->data + 4 * k, 4);
        return f;
    }
    case SDC_F64: {
        double d;
        memcpy(&d, (const char *)t->data + 8 * k, 8);
        return d;
    }
    case SDC_I64: {
        int64_t v;
        memcpy(&v, (const char *)t->data + 8 * k, 8);
        return (double)v;
    }
    default: return NAN;
    }
}

/* A golden tensor as a malloc'ed float array (NULL if missing); *n its size. */
static float *gf32(const sdc_weights *w, const char *name, int64_t *n) {
    const sdc_weight *t = sdc_weights_find(w, name);
    if (!t) return NULL;
    int64_t k = sdc_weight_numel(t);
    float *out = malloc((size_t)(k ? k : 1) * sizeof *out);
    for (int64_t i = 0; i < k; i++) out[i] = (float)gat(t, i);
    if (n) *n = k;
    return out;
}

static cJSON *gmeta(const sdc_weights *w, const char *key) {
    const char *s = sdc_weights_meta(w, key);
    return s ? cJSON_Parse(s) : NULL;
}

/* max over i of |a−b| / max(|b|, floor): relative, with an absolute floor near 0. */
static double max_rel(const float *a, const float *b, int64_t n, double floor_) {
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double m = fabs((double)b[i]) > floor_ ? fabs((double)b[i]) : floor_;
        double r = fabs((double)a[i] - (double)b[i]) / m;
        if (!(r <= worst)) worst = r; /* NaN wins */
    }
    return worst;
}

static int64_t count_diff(const float *a, const float *b, int64_t n) {
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) k += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return k;
}

/* ---- AdamW --------------------------------------------------------------- */

TEST(train_adamw_matches_torch) {
    sdc_error err = {0};
    sdc_weights w;
    REQUIRE_OK(open_goldens(&w, &err) ? SDC_OK : SDC_EIO, &err);
    int64_t n = 0, ng = 0;
    float *p0 = gf32(&w, "adamw/p0", &n), *grads = gf32(&w, "adamw/grads", &ng);
    const sdc_weight *lrs = sdc_weights_find(&w, "adamw/lrs");
    cJSON *sets = gmeta(&w, "adamw_sets");
    REQUIRE(p0 && grads && lrs && sets && ng == 5 * n);
    float *p = malloc((size_t)n * sizeof *p);
    int nsets = cJSON_GetArraySize(sets);
    CHECK(nsets >= 4);
    for (int k = 0; k < nsets; k++) {
        const cJSON *s = cJSON_GetArrayItem(sets, k);
        sdc_adamw_hparams h;
        sdc_adamw_hparams_default(&h);
        h.beta1 = cJSON_GetObjectItem(s, "beta1")->valuedouble;
        h.beta2 = cJSON_GetObjectItem(s, "beta2")->valuedouble;
        h.eps = cJSON_GetObjectItem(s, "eps")->valuedouble;
        h.weight_decay = cJSON_GetObjectItem(s, "weight_decay")->valuedouble;
        sdc_adamw o;
        REQUIRE_OK(sdc_adamw_init(&o, (size_t)n, &h, &err), &err);
        memcpy(p, p0, (size_t)n * sizeof *p);
        for (int st = 0; st < 5; st++) sdc_adamw_step(&o, p, grads + st * n, gat(lrs, st));
        CHECK_EQ_INT(o.step, 5);
        char name[64];
        snprintf(name, sizeof name, "adamw/%d/p", k);
        float *gp = gf32(&w, name, NULL);
        snprintf(name, sizeof name, "adamw/%d/m", k);
        float *gm = gf32(&w, name, NULL);
        snprintf(name, sizeof name, "adamw/%d/v", k);
        float *gv = gf32(&w, name, NULL);
        REQUIRE(gp && gm && gv);
        /* m and v: the same float32 operations as torch's CPU kernels (fused
         * multiply-adds included), so they agree bit for bit; the 1e-6 bound
         * is the brief's. p: torch's CPU sqrt (MKL) is off by up to an ulp,
         * which moves p by ≤ 1e-7 of one step; the floor 1e-3 (≈ one lr)
         * keeps the bound relative for values near 0. */
        double em = max_rel(o.m, gm, n, 1e-30), ev = max_rel(o.v, gv, n, 1e-30), ep = max_rel(p, gp, n, 1e-3);
        CHECK_MSG(em <= 1e-6 && ev <= 1e-6 && ep <= 1e-6, "set %d: max rel err m %.3g v %.3g p %.3g", k, em, ev, ep);
        CHECK_MSG(count_diff(o.m, gm, n) == 0 && count_diff(o.v, gv, n) == 0,
                  "set %d: m differs in %lld, v in %lld elements (expected bit-exact)", k,
                  (long long)count_diff(o.m, gm, n), (long long)count_diff(o.v, gv, n));
        /* zero parameters with zero gradients (the layout's padding) stay exactly +0 */
        for (int i = 0; i < 16; i++) CHECK(p[i] == 0 && !signbit(p[i]) && o.m[i] == 0 && o.v[i] == 0);
        free(gp);
        free(gm);
        free(gv);
        sdc_adamw_free(&o);
    }
    free(p);
    free(p0);
    free(grads);
    cJSON_Delete(sets);
    sdc_weights_free(&w);
}

TEST(train_adamw_checks_hparams) {
    sdc_error err = {0};
    sdc_adamw o;
    sdc_adamw_hparams h;
    sdc_adamw_hparams_default(&h);
    h.amsgrad = 1;
    CHECK(sdc_adamw_init(&o, 10, &h, &err) == SDC_EUNSUPPORTED && strstr(err.msg, "amsgrad"));
    sdc_adamw_hparams_default(&h);
    h.beta2 = 1.0;
    CHECK(sdc_adamw_init(&o, 10, &h, &err) == SDC_EINVAL && strstr(err.msg, "beta2"));
    sdc_adamw_hparams_default(&h);
    h.eps = -1;
    CHECK(sdc_adamw_init(&o, 10, &h, &err) == SDC_EINVAL);
    /* splitting the buffer into buckets gives the same result as one step */
    sdc_adamw_hparams_default(&h);
    enum { N = 1000 };
    sdc_adamw a, b;
    REQUIRE_OK(sdc_adamw_init(&a, N, &h, &err), &err);
    REQUIRE_OK(sdc_adamw_init(&b, N, &h, &err), &err);
    float pa[N], pb[N], g[N];
    for (int i = 0; i < N; i++) pa[i] = pb[i] = sinf((float)i), g[i] = cosf(0.37f * (float)i);
    for (int s = 1; s <= 3; s++) {
        sdc_adamw_step(&a, pa, g, 1e-3 * s);
        sdc_adamw_update_range(&b, pb, g, 0, 333, s, 1e-3 * s);
        sdc_adamw_update_range(&b, pb, g, 333, N, s, 1e-3 * s);
    }
    CHECK(memcmp(pa, pb, sizeof pa) == 0 && memcmp(a.m, b.m, N * sizeof(float)) == 0);
    sdc_adamw_free(&a);
    sdc_adamw_free(&b);
}

/* ---- gradient clipping --------------------------------------------------- */

TEST(train_clip_grad_norm_matches_torch) {
    sdc_error err = {0};
    sdc_weights w;
    REQUIRE_OK(open_goldens(&w, &err) ? SDC_OK : SDC_EIO, &err);
    int64_t n = 0;
    float *g0 = gf32(&w, "clip/g", &n);
    cJSON *mx = gmeta(&w, "clip_max_norms");
    REQUIRE(g0 && mx && cJSON_GetArraySize(mx) == 2);
    float *g = malloc((size_t)n * sizeof *g);
    for (int k = 0; k < 2; k++) {
        memcpy(g, g0, (size_t)n * sizeof *g);
        double max_norm = cJSON_GetArrayItem(mx, k)->valuedouble;
        double norm = sdc_clip_grad_norm(g, (size_t)n, max_norm);
        char name[64];
        snprintf(name, sizeof name, "clip/%d/norm", k);
        const sdc_weight *tn = sdc_weights_find(&w, name);
        snprintf(name, sizeof name, "clip/%d/g", k);
        float *gg = gf32(&w, name, NULL);
        REQUIRE(tn && gg);
        /* torch sums in float32, we in double: 1e-6 relative covers its rounding */
        CHECK_MSG(fabs(norm - gat(tn, 0)) <= 1e-6 * gat(tn, 0), "case %d: norm %.9g vs torch %.9g", k, norm,
                  gat(tn, 0));
        double e = max_rel(g, gg, n, 1e-6);
        CHECK_MSG(e <= 1e-6, "case %d: clipped grads max rel err %.3g", k, e);
        if (k == 1) CHECK(memcmp(g, g0, (size_t)n * sizeof *g) == 0); /* max_norm above the norm: untouched */
        free(gg);
    }
    /* a NaN or an Inf shows in the norm; the gradients are left as they were */
    float *bad = gf32(&w, "clip/nan_g", NULL);
    REQUIRE(bad);
    memcpy(g, bad, (size_t)n * sizeof *g);
    double norm = sdc_clip_grad_norm(g, (size_t)n, 1e-3);
    CHECK(!sdc_grad_finite(norm) && isnan(norm));
    CHECK(memcmp(g, bad, (size_t)n * sizeof *g) == 0);
    memcpy(g, g0, (size_t)n * sizeof *g);
    g[3] = -INFINITY;
    CHECK(!sdc_grad_finite(sdc_grad_norm(g, (size_t)n)));
    g[3] = 3.0e38f; /* huge but finite: its square does not overflow in double */
    CHECK(sdc_grad_finite(sdc_grad_norm(g, (size_t)n)));
    CHECK(sdc_grad_finite(sdc_grad_norm(g, 0)) && sdc_grad_norm(g, 0) == 0);
    free(bad);
    free(g);
    free(g0);
    cJSON_Delete(mx);
    sdc_weights_free(&w);
}

TEST(train_grad_norm_thread_independent) {
#ifndef _OPENMP
    SKIP("built without OpenMP");
#else
    /* long enough for many chunks; the sum must not depend on the thread count */
    const size_t n = 3000017;
    float *g = malloc(n * sizeof *g);
    REQUIRE(g);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        g[i] = ((float)(x >> 8) / 16777216.0f - 0.5f) * (float)(1 + i % 7);
    }
    int saved = omp_get_max_threads();
    double s[3];
    int threads[3] = {1, 3, 8};
    for (int k = 0; k < 3; k++) {
        omp_set_num_threads(threads[k]);
        s[k] = sdc_grad_sumsq(g, n);
    }
    omp_set_num_threads(saved);
    CHECK(memcmp(&s[0], &s[1], sizeof s[0]) == 0 && memcmp(&s[0], &s[2], sizeof s[0]) == 0);
    /* and it is the sum of squares: against a long-double sum, to double rounding */
    long double ref = 0;
    for (size_t i = 0; i < n; i++) ref += (long double)g[i] * g[i];
    CHECK_NEAR(s[0], (double)ref, 1e-12 * (double)ref);
    free(g);
#endif
}

/* ---- LR schedules -------------------------------------------------------- */

TEST(train_lr_schedules_match_diffusers) {
    sdc_error err = {0};
    sdc_weights w;
    REQUIRE_OK(open_goldens(&w, &err) ? SDC_OK : SDC_EIO, &err);
    cJSON *cases = gmeta(&w, "lr_cases");
    REQUIRE(cases);
    int nc = cJSON_GetArraySize(cases);
    CHECK(nc >= 6);
    for (int k = 0; k < nc; k++) {
        const cJSON *c = cJSON_GetArrayItem(cases, k);
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        sdc_lr_kind kind;
        REQUIRE_OK(sdc_lr_kind_parse(name, &kind, &err), &err);
        CHECK_STR(sdc_lr_kind_name(kind), name);
        sdc_lr_schedule s;
        REQUIRE_OK(sdc_lr_schedule_init(&s, kind, cJSON_GetObjectItem(c, "base_lr")->valuedouble,
                                        (int64_t)cJSON_GetObjectItem(c, "warmup")->valuedouble,
                                        (int64_t)cJSON_GetObjectItem(c, "total")->valuedouble,
                                        (int64_t)cJSON_GetObjectItem(c, "num_cycles")->valuedouble,
                                        cJSON_GetObjectItem(c, "power")->valuedouble, &err),
                   &err);
        char tn[32];
        snprintf(tn, sizeof tn, "lr/%d", k);
        const sdc_weight *g = sdc_weights_find(&w, tn);
        REQUIRE(g);
        int bad = 0;
        double worst = 0;
        for (int64_t st = 0; st < sdc_weight_numel(g); st++) {
            double ref = gat(g, st), got = sdc_lr_at(&s, st);
            /* the brief's 1e-7 relative; an absolute floor of 1e-7·base_lr where the lr is 0 */
            double e = fabs(got - ref) / fmax(fabs(ref), s.base_lr);
            if (e > worst) worst = e;
            bad += !(e <= 1e-7);
        }
        CHECK_MSG(bad == 0, "case %d (%s): %d steps differ, max rel err %.3g", k, name, bad, worst);
    }
    cJSON_Delete(cases);
    sdc_weights_free(&w);

    /* errors diffusers raises, and names it does not know */
    sdc_lr_schedule s;
    sdc_lr_kind kind;
    CHECK(sdc_lr_kind_parse("cosine_annealing", &kind, &err) == SDC_EINVAL && strstr(err.msg, "cosine_annealing"));
    CHECK(sdc_lr_kind_parse("piecewise_constant", &kind, &err) == SDC_EUNSUPPORTED);
    CHECK(sdc_lr_schedule_init(&s, SDC_LR_POLYNOMIAL, 1e-8, 0, 10, 1, 1.0, &err) == SDC_EINVAL);
    CHECK(sdc_lr_schedule_init(&s, SDC_LR_LINEAR, 1e-4, -1, 10, 1, 1.0, &err) == SDC_EINVAL);
    /* --scale_lr: 1e-4 · 4 · 2 · 8 */
    CHECK_NEAR(sdc_scale_lr(1e-4, 4, 2, 8), 6.4e-3, 1e-18);
}

/* ---- EMA ----------------------------------------------------------------- */

TEST(train_ema_matches_diffusers) {
    sdc_error err = {0};
    sdc_weights w;
    REQUIRE_OK(open_goldens(&w, &err) ? SDC_OK : SDC_EIO, &err);
    int64_t n = 0, np = 0;
    float *init = gf32(&w, "ema/init", &n), *params = gf32(&w, "ema/params", &np);
    cJSON *cases = gmeta(&w, "ema_cases");
    REQUIRE(init && params && cases && np == 30 * n);
    int nc = cJSON_GetArraySize(cases);
    CHECK(nc >= 2);
    for (int k = 0; k < nc; k++) {
        const cJSON *c = cJSON_GetArrayItem(cases, k), *it;
        sdc_ema_hparams h;
        sdc_ema_hparams_default(&h);
        if ((it = cJSON_GetObjectItem(c, "decay"))) h.decay = it->valuedouble;
        if ((it = cJSON_GetObjectItem(c, "min_decay"))) h.min_decay = it->valuedouble;
        if ((it = cJSON_GetObjectItem(c, "update_after_step"))) h.update_after_step = (int64_t)it->valuedouble;
        if ((it = cJSON_GetObjectItem(c, "use_ema_warmup"))) h.use_ema_warmup = cJSON_IsTrue(it);
        if ((it = cJSON_GetObjectItem(c, "inv_gamma"))) h.inv_gamma = it->valuedouble;
        if ((it = cJSON_GetObjectItem(c, "power"))) h.power = it->valuedouble;
        sdc_ema e;
        REQUIRE_OK(sdc_ema_init(&e, init, (size_t)n, &h, &err), &err);
        char name[64];
        snprintf(name, sizeof name, "ema/%d/decay", k);
        const sdc_weight *gd = sdc_weights_find(&w, name);
        snprintf(name, sizeof name, "ema/%d/shadow5", k);
        float *s5 = gf32(&w, name, NULL);
        snprintf(name, sizeof name, "ema/%d/shadow30", k);
        float *s30 = gf32(&w, name, NULL);
        REQUIRE(gd && s5 && s30);
        int bad_decay = 0;
        for (int st = 0; st < 30; st++) {
            sdc_ema_step(&e, params + st * n);
            /* the decay is the same double computation (Python floats, libm pow) */
            bad_decay += !(fabs(e.cur_decay - gat(gd, st)) <= 1e-15);
            if (st == 4) {
                double e5 = max_rel(e.shadow, s5, n, 1e-6);
                CHECK_MSG(e5 <= 1e-6, "case %d: shadow after 5 steps, max rel err %.3g", k, e5);
            }
        }
        CHECK_MSG(bad_decay == 0, "case %d: %d decays differ", k, bad_decay);
        CHECK_EQ_INT(e.optimization_step, 30);
        /* float32 in torch's order: ≤ 1e-6 is the brief's bound (the floor 1e-6 guards values near 0) */
        double e30 = max_rel(e.shadow, s30, n, 1e-6);
        CHECK_MSG(e30 <= 1e-6, "case %d: shadow after 30 steps, max rel err %.3g", k, e30);
        float *out = malloc((size_t)n * sizeof *out);
        sdc_ema_copy_to(&e, out);
        CHECK(memcmp(out, e.shadow, (size_t)n * sizeof *out) == 0);
        free(out);
        free(s5);
        free(s30);
        sdc_ema_free(&e);
    }
    /* the schedule by hand: step 1 copies; default warmup (1+s)/(10+s) */
    sdc_ema_hparams h;
    sdc_ema_hparams_default(&h);
    CHECK(sdc_ema_get_decay(&h, 1) == 0.0);
    CHECK_NEAR(sdc_ema_get_decay(&h, 2), 2.0 / 11.0, 1e-17);
    CHECK_NEAR(sdc_ema_get_decay(&h, 1000000), 0.9999, 1e-17);
    free(init);
    free(params);
    cJSON_Delete(cases);
    sdc_weights_free(&w);
}

/* ---- diffusion training targets ------------------------------------------- */

static uint32_t torch_word(void *ctx) { return sdc_torch_u32((sdc_torch_gen *)ctx); }

TEST(train_diffusion_targets_match_diffusers) {
    sdc_error err = {0};
    sdc_weights w;
    REQUIRE_OK(open_goldens(&w, &err) ? SDC_OK : SDC_EIO, &err);
    enum { B = 3, C = 4, HW = 64, PER = C * HW, N = B * PER };
    int64_t k = 0;
    float *x0 = gf32(&w, "diff/x0", &k), *noise = gf32(&w, "diff/noise", NULL);
    float *r_off = gf32(&w, "diff/r_offset", NULL), *r_pert = gf32(&w, "diff/r_perturb", NULL);
    float *pred = gf32(&w, "diff/pred", NULL), *g_ac = gf32(&w, "diff/alphas_cumprod", NULL);
    const sdc_weight *gt = sdc_weights_find(&w, "diff/t");
    cJSON *meta = gmeta(&w, "diff");
    REQUIRE(x0 && k == N && noise && r_off && r_pert && pred && g_ac && gt && meta);
    const double noise_offset = cJSON_GetObjectItem(meta, "noise_offset")->valuedouble;
    const double input_perturbation = cJSON_GetObjectItem(meta, "input_perturbation")->valuedouble;
    const double snr_gamma = cJSON_GetObjectItem(meta, "snr_gamma")->valuedouble;

    /* the SD schedule (scaled_linear 0.00085..0.012) as DDPMScheduler holds it */
    sdc_sched_config cfg;
    sdc_sched_config_default(&cfg);
    float ac[1000];
    REQUIRE(cfg.num_train_timesteps == 1000);
    REQUIRE_OK(sdc_sched_alphas_cumprod_f32(&cfg, ac, &err), &err);
    CHECK(count_diff(ac, g_ac, 1000) == 0);
    int64_t t[B];
    for (int b = 0; b < B; b++) t[b] = (int64_t)gat(gt, b);

    /* every output below is the same float32 operations in the same order as
     * diffusers, with one exception: torch's CPU sqrt (MKL's vector sqrt) is
     * not correctly rounded, and gives √ᾱ_500 one ulp above sqrtf's (CUDA's
     * sqrt agrees with ours). That ulp (6e-8 relative) reaches noisy, velocity
     * and the v gradients, where it is large relative to values near 0 that
     * come from cancellation. So: 1e-6 relative, with a floor at the scale of
     * the terms (1 for unit-variance latents and noise, 1e-3 for gradients of
     * size 2/(B·per) ≈ 2.6e-3). */
#define CHECK_ARR(got, name, cnt, floor_)                                                          \
    do {                                                                                           \
        float *ref_ = gf32(&w, name, NULL);                                                        \
        REQUIRE_MSG(ref_, "missing %s", name);                                                     \
        double e_ = max_rel(got, ref_, cnt, floor_);                                                \
        CHECK_MSG(e_ <= 1e-6, "%s: max rel err %.3g (%lld differ)", name, e_,                       \
                  (long long)count_diff(got, ref_, cnt));                                          \
        free(ref_);                                                                                \
    } while (0)

    float n_off[N], new_noise[N], noisy[N], vel[N], snr[B], wts[B], target[N], grad[N];
    memcpy(n_off, noise, sizeof n_off);
    sdc_train_noise_offset(n_off, r_off, B, C, HW, noise_offset);
    CHECK_ARR(n_off, "diff/noise_off", N, 1e-6);
    sdc_train_input_perturbation(new_noise, n_off, r_pert, N, input_perturbation);
    CHECK_ARR(new_noise, "diff/new_noise", N, 1e-6);
    sdc_train_add_noise(noisy, x0, new_noise, t, B, PER, ac, 1000);
    CHECK_ARR(noisy, "diff/noisy", N, 1.0);
    sdc_train_get_velocity(vel, x0, n_off, t, B, PER, ac, 1000);
    CHECK_ARR(vel, "diff/velocity", N, 1.0);
    sdc_train_compute_snr(snr, t, B, ac, 1000);
    CHECK_ARR(snr, "diff/snr", B, 1e-6);
    /* in place works too */
    memcpy(target, x0, sizeof target);
    sdc_train_add_noise(target, target, new_noise, t, B, PER, ac, 1000);
    CHECK(memcmp(target, noisy, sizeof target) == 0);

    static const struct {
        sdc_prediction pred;
        const char *wname, *loss, *loss_snr, *grad, *grad_snr;
    } preds[] = {
        {SDC_PRED_EPSILON, "diff/w_eps", "diff/loss_eps", "diff/loss_eps_snr", "diff/grad_eps", "diff/grad_eps_snr"},
        {SDC_PRED_V, "diff/w_v", "diff/loss_v", "diff/loss_v_snr", "diff/grad_v", "diff/grad_v_snr"},
    };
    for (int p = 0; p < 2; p++) {
        REQUIRE_OK(sdc_train_target(target, preds[p].pred, x0, n_off, t, B, PER, ac, 1000, &err), &err);
        CHECK(memcmp(target, p == 0 ? n_off : vel, sizeof target) == 0);
        sdc_train_min_snr_weights(wts, snr, B, snr_gamma, preds[p].pred);
        CHECK_ARR(wts, preds[p].wname, B, 1e-6);
        /* losses: torch sums in float32 (cascade), we in double: 1e-6 relative */
        float per_sample[B];
        double loss = sdc_train_mse_loss(pred, target, B, PER, NULL, per_sample);
        const sdc_weight *gl = sdc_weights_find(&w, preds[p].loss);
        REQUIRE(gl);
        CHECK_MSG(fabs(loss - gat(gl, 0)) <= 1e-6 * fabs(gat(gl, 0)), "%s: %.9g vs %.9g", preds[p].loss, loss,
                  gat(gl, 0));
        CHECK_NEAR((per_sample[0] + per_sample[1] + per_sample[2]) / 3.0, loss, 1e-6 * loss);
        loss = sdc_train_mse_loss(pred, target, B, PER, wts, NULL);
        gl = sdc_weights_find(&w, preds[p].loss_snr);
        REQUIRE(gl);
        CHECK_MSG(fabs(loss - gat(gl, 0)) <= 1e-6 * fabs(gat(gl, 0)), "%s: %.9g vs %.9g", preds[p].loss_snr, loss,
                  gat(gl, 0));
        /* dloss/dpred against autograd: the coefficient 2w/(B·per) is formed in
         * double here, in float32 steps there: 1e-6 relative */
        sdc_train_mse_loss_backward(grad, pred, target, B, PER, NULL, 1.0);
        CHECK_ARR(grad, preds[p].grad, N, 1e-3);
        sdc_train_mse_loss_backward(grad, pred, target, B, PER, wts, 1.0);
        CHECK_ARR(grad, preds[p].grad_snr, N, 1e-3);
    }
    CHECK(sdc_train_target(target, SDC_PRED_SAMPLE, x0, n_off, t, B, PER, ac, 1000, &err) == SDC_EUNSUPPORTED);

    /* timesteps from torch's generator: torch.randint(0, 1000, (8,), generator=manual_seed(1234)) */
    const sdc_weight *gr = sdc_weights_find(&w, "diff/randint");
    REQUIRE(gr && sdc_weight_numel(gr) == 8);
    sdc_torch_gen gen;
    sdc_torch_gen_seed(&gen, (uint64_t)cJSON_GetObjectItem(meta, "randint_seed")->valuedouble);
    int64_t ts[8];
    sdc_train_sample_timesteps(ts, 8, 1000, torch_word, &gen);
    for (int i = 0; i < 8; i++) CHECK_EQ_INT(ts[i], (int64_t)gat(gr, i));
#undef CHECK_ARR
    free(x0);
    free(noise);
    free(r_off);
    free(r_pert);
    free(pred);
    free(g_ac);
    cJSON_Delete(meta);
    sdc_weights_free(&w);
}
