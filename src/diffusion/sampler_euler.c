/* Euler (Karras et al. 2022, Algorithm 2 without churn) and Euler ancestral,
 * as diffusers' EulerDiscreteScheduler and EulerAncestralDiscreteScheduler.
 *
 * The latents live in sigma space, x = x0 + sigma eps; the model sees
 * x / sqrt(sigma^2 + 1). One step from sigma to sigma':
 *   x0 = x - sigma eps                 (epsilon; v and sample likewise)
 *   d  = (x - x0) / sigma,  x' = x + d (sigma' - sigma)             Euler
 * Euler ancestral splits sigma' into a deterministic part and fresh noise:
 *   sigma_up   = sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2)
 *   sigma_down = sqrt(sigma'^2 - sigma_up^2)
 *   x' = x + d (sigma_down - sigma) + sigma_up z */
#include <math.h>
#include <stdlib.h>

#include "diffusion/sampler_internal.h"

/* The float32 timestep table Euler, Euler ancestral and LMS build before
 * sigmas (spacing per config). *out is malloc'd, *count entries. */
sdc_status sdc_euler_family_timesteps(const sdc_sampler *s, float **out, int *count, sdc_error *err) {
    const sdc_sched_config *c = &s->cfg;
    int n = s->steps, T = s->T;
    int len = c->timestep_spacing == SDC_SPACING_TRAILING ? sdc_np_arange_len(T, 0, -(double)T / n) : n;
    double *d = malloc((size_t)len * sizeof *d);
    float *f = malloc((size_t)len * sizeof *f);
    if (!d || !f) {
        free(d);
        free(f);
        return sdc_fail(err, SDC_ENOMEM, "sampler: out of memory");
    }
    switch (c->timestep_spacing) {
    case SDC_SPACING_LINSPACE: /* np.linspace(0, T-1, n, dtype=float32)[::-1] */
        sdc_np_linspace(0, T - 1, n, d);
        for (int i = 0; i < n; i++) f[i] = (float)d[n - 1 - i];
        break;
    case SDC_SPACING_LEADING: { /* (arange(n) * (T//n))[::-1] as float32, += steps_offset in float32 */
        int ratio = T / n;
        for (int i = 0; i < n; i++) f[i] = (float)((n - 1 - i) * ratio) + (float)c->steps_offset;
        break;
    }
    case SDC_SPACING_TRAILING: /* np.arange(T, 0, -T/n).round() as float32, -= 1 */
        sdc_np_arange(T, -(double)T / n, len, d);
        for (int i = 0; i < len; i++) f[i] = (float)sdc_np_round(d[i]) - 1.0f;
        break;
    }
    free(d);
    *out = f;
    *count = len;
    return SDC_OK;
}

/* init_noise_sigma: the largest sigma, or sqrt(max^2 + 1) for leading spacing (float32). */
static double init_sigma(const sdc_sampler *s) {
    float mx = s->sig[0];
    for (int i = 1; i <= s->count; i++)
        if (s->sig[i] > mx) mx = s->sig[i];
    if (s->cfg.timestep_spacing == SDC_SPACING_LEADING) mx = sqrtf(mx * mx + 1.0f);
    return mx;
}

sdc_status sdc_euler_init(sdc_sampler *s, sdc_error *err) {
    const sdc_sched_config *c = &s->cfg;
    int T = s->T, euler = s->kind == SDC_SAMPLER_EULER;
    if (c->rescale_betas_zero_snr) s->ac[T - 1] = 0x1p-24f; /* keeps the last sigma finite */
    float *ts = NULL;
    int count = 0;
    SDC_TRY(sdc_euler_family_timesteps(s, &ts, &count, err));
    float *train = malloc((size_t)T * sizeof *train), *logs = malloc((size_t)T * sizeof *logs);
    /* euler_a has Karras sigmas only when asked through sdc_sampler_opts (diffusers' class has none):
     * Euler's Karras tables over the same schedule, stepped by the ancestral rule */
    int karras = c->use_karras_sigmas;
    int m = karras ? s->steps : count; /* Karras sigmas: one per asked step */
    double *sg = malloc((size_t)(count > m ? count : m) * sizeof *sg);
    sdc_status st = SDC_OK;
    if (!train || !logs || !sg) {
        st = sdc_fail(err, SDC_ENOMEM, "sampler: out of memory");
        goto done;
    }
    sdc_train_sigmas(s->ac, T, train);
    for (int t = 0; t < T; t++) logs[t] = sdc_logf(train[t]);
    for (int i = 0; i < count; i++) sg[i] = sdc_np_interp(ts[i], train, T);
    if (karras) {
        double smin = isnan(c->sigma_min) ? sg[count - 1] : c->sigma_min;
        double smax = isnan(c->sigma_max) ? sg[0] : c->sigma_max;
        sdc_karras_sigmas(smin, smax, m, sg);
    }
    if ((st = sdc_sampler_alloc_tables(s, m, 1, err)) != SDC_OK) goto done;
    for (int i = 0; i < m; i++) s->sig[i] = (float)sg[i];
    /* final sigma: 0, or the smallest training sigma */
    s->sig[m] = euler && c->final_sigmas_type == SDC_FINAL_SIGMA_MIN ? train[0] : 0.0f;
    sdc_sampler_sync_sigmas(s);
    for (int i = 0; i < m; i++) {
        if (euler && c->timestep_type == SDC_TIMESTEP_CONTINUOUS && c->prediction_type == SDC_PRED_V)
            s->timesteps[i] = 0.25f * sdc_logf(s->sig[i]); /* c_noise of the EDM preconditioning */
        else if (karras)
            s->timesteps[i] = (float)sdc_sigma_to_t(sg[i], logs, T);
        else
            s->timesteps[i] = ts[i];
    }
    s->init_noise_sigma = init_sigma(s);
done:
    free(ts);
    free(train);
    free(logs);
    free(sg);
    return st;
}

/* x0 from the model output (v: x0 = -sigma/sqrt(sigma^2+1) v + x/(sigma^2+1)), float32 coefficients. */
static inline double pred_x0(sdc_prediction p, float sigma, double xs, double m) {
    switch (p) {
    case SDC_PRED_EPSILON: return xs - sigma * m;
    case SDC_PRED_SAMPLE: return m;
    default: {
        float c2 = sigma * sigma + 1.0f;
        float c1 = -sigma / sqrtf(c2);
        return m * c1 + xs / c2;
    }
    }
}

void sdc_euler_step(sdc_sampler *s, int i, const float *mo, float *x) {
    float sigma = s->sig[i]; /* no churn (gamma = 0): sigma_hat = sigma */
    float dt = s->sig[i + 1] - sigma;
    sdc_prediction p = s->cfg.prediction_type;
    for (size_t k = 0; k < s->n; k++) {
        double xs = x[k];
        double x0 = pred_x0(p, sigma, xs, mo[k]);
        double d = (xs - x0) / sigma;
        x[k] = (float)(xs + d * dt);
    }
}

void sdc_euler_a_step(sdc_sampler *s, int i, const float *mo, float *x, sdc_noise_fn noise, void *ctx) {
    float sigma = s->sig[i], st = s->sig[i + 1];
    float su = sqrtf(st * st * (sigma * sigma - st * st) / (sigma * sigma));
    float sd = sqrtf(st * st - su * su);
    float dt = sd - sigma;
    sdc_prediction p = s->cfg.prediction_type;
    noise(ctx, s->noise, s->n);
    for (size_t k = 0; k < s->n; k++) {
        double xs = x[k];
        double x0 = pred_x0(p, sigma, xs, mo[k]);
        double d = (xs - x0) / sigma;
        double out = xs + d * dt;
        x[k] = (float)(out + (double)s->noise[k] * su);
    }
}
