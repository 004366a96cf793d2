/* Linear multistep (order 4), as diffusers' LMSDiscreteScheduler.
 *
 * In sigma space with derivatives d_j = (x - x0_j) / sigma_j of the last
 * `order` steps (newest first), the step from sigma_i to sigma_{i+1} is
 *   x' = x + sum_j c_j d_j,   c_j = integral over [sigma_i, sigma_{i+1}] of
 *        prod_{k != j} (tau - sigma_{i-k}) / (sigma_{i-j} - sigma_{i-k}) dtau,
 * the Adams-Bashforth weights on the actual sigma grid. diffusers integrates
 * with scipy's quad; the integrand is a polynomial of degree <= 3, so
 * 3-point Gauss-Legendre (exact to degree 5) gives the integral exactly. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "diffusion/sampler_internal.h"

#define LMS_ORDER 4

sdc_status sdc_lms_init(sdc_sampler *s, sdc_error *err) {
    const sdc_sched_config *c = &s->cfg;
    int T = s->T;
    float *ts = NULL;
    int count = 0;
    SDC_TRY(sdc_euler_family_timesteps(s, &ts, &count, err));
    float *train = malloc((size_t)T * sizeof *train), *logs = malloc((size_t)T * sizeof *logs);
    int m = c->use_karras_sigmas ? s->steps : count;
    double *sg = malloc((size_t)(count > m ? count : m) * sizeof *sg);
    sdc_status st = SDC_OK;
    if (!train || !logs || !sg) {
        st = sdc_fail(err, SDC_ENOMEM, "sampler: out of memory");
        goto done;
    }
    sdc_train_sigmas(s->ac, T, train);
    for (int t = 0; t < T; t++) logs[t] = sdc_logf(train[t]);
    for (int i = 0; i < count; i++) sg[i] = sdc_np_interp(ts[i], train, T);
    if (c->use_karras_sigmas) sdc_karras_sigmas(sg[count - 1], sg[0], m, sg); /* LMS ignores sigma_min/max */
    if ((st = sdc_sampler_alloc_tables(s, m, 1, err)) != SDC_OK) goto done;
    for (int i = 0; i < m; i++) {
        s->sig[i] = (float)sg[i];
        s->timesteps[i] = c->use_karras_sigmas ? (float)sdc_sigma_to_t(sg[i], logs, T) : ts[i];
    }
    s->sig[m] = 0.0f;
    sdc_sampler_sync_sigmas(s);
    float mx = s->sig[0];
    for (int i = 1; i <= m; i++)
        if (s->sig[i] > mx) mx = s->sig[i];
    s->init_noise_sigma = c->timestep_spacing == SDC_SPACING_LEADING ? sqrtf(mx * mx + 1.0f) : mx;
    st = sdc_sampler_alloc_hist(s, LMS_ORDER, err);
done:
    free(ts);
    free(train);
    free(logs);
    free(sg);
    return st;
}

/* c_j for step i of the given order (sigmas as float32 values). */
static double lms_coefficient(const float *sig, int order, int i, int j) {
    static const double node[3] = {-0.77459666924148337704, 0.0, 0.77459666924148337704}; /* sqrt(3/5) */
    static const double weight[3] = {5.0 / 9.0, 8.0 / 9.0, 5.0 / 9.0};
    double a = sig[i], b = sig[i + 1], mid = 0.5 * (a + b), half = 0.5 * (b - a), sum = 0;
    for (int q = 0; q < 3; q++) {
        double tau = mid + half * node[q], prod = 1.0;
        for (int k = 0; k < order; k++) {
            if (k == j) continue;
            prod *= (tau - sig[i - k]) / ((double)sig[i - j] - sig[i - k]);
        }
        sum += weight[q] * prod;
    }
    return sum * half;
}

void sdc_lms_step(sdc_sampler *s, int i, const float *mo, float *x) {
    size_t n = s->n;
    float sigma = s->sig[i];
    sdc_prediction p = s->cfg.prediction_type;
    /* derivatives: oldest first, the newest in slot nhist-1 */
    if (s->nhist == LMS_ORDER) {
        memmove(s->hist, s->hist + n, (LMS_ORDER - 1) * n * sizeof *s->hist);
        s->nhist--;
    }
    double *d = s->hist + (size_t)s->nhist * n;
    s->nhist++;
    float c2 = sigma * sigma + 1.0f, c1 = -sigma / sqrtf(c2); /* v: x0 = c1 v + x / c2 */
    for (size_t k = 0; k < n; k++) {
        double xs = x[k], m = mo[k], x0;
        switch (p) {
        case SDC_PRED_EPSILON: x0 = xs - sigma * m; break;
        case SDC_PRED_SAMPLE: x0 = m; break;
        default: x0 = m * c1 + xs / c2; break;
        }
        d[k] = (xs - x0) / sigma;
    }
    int order = i + 1 < LMS_ORDER ? i + 1 : LMS_ORDER;
    double coef[LMS_ORDER];
    for (int j = 0; j < order; j++) coef[j] = lms_coefficient(s->sig, order, i, j);
    for (size_t k = 0; k < n; k++) {
        double acc = 0;
        for (int j = 0; j < order; j++) acc += coef[j] * s->hist[(size_t)(s->nhist - 1 - j) * n + k];
        x[k] = (float)((double)x[k] + acc);
    }
}
