/* DPM-Solver++ multistep (Lu et al. 2022), as diffusers'
 * DPMSolverMultistepScheduler: "DPM++ 2M" is its default (solver_order 2,
 * dpmsolver++, midpoint, lower_order_final). Orders 1-3, dpmsolver and
 * dpmsolver++, midpoint and heun are implemented; the SDE variants are not.
 *
 * With alpha = 1/sqrt(sigma^2+1), sigma_t = sigma alpha, lambda = log alpha -
 * log sigma_t and h = lambda' - lambda, the model output is first turned
 * into x0 (dpmsolver++) or eps (dpmsolver), kept for the next steps, and
 *   1st order: x' = (sigma_t'/sigma_t) x - alpha' (e^-h - 1) D0
 *   2nd order: ... - 0.5 alpha' (e^-h - 1) D1,  D1 = (m0 - m1) h / h_prev
 * (dpmsolver++ midpoint; the other forms below). The first step, and the
 * last ones when the schedule ends at sigma 0 or is short, use lower orders. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "diffusion/sampler_internal.h"

sdc_status sdc_dpmpp_init(sdc_sampler *s, sdc_error *err) {
    const sdc_sched_config *c = &s->cfg;
    int T = s->T, n = s->steps;
    if ((c->algorithm_type == SDC_DPM_SOLVER) && c->final_sigmas_type == SDC_FINAL_SIGMA_ZERO)
        return sdc_fail(err, SDC_EINVAL,
                        "%s: final_sigmas_type \"zero\" needs algorithm_type dpmsolver++ (diffusers refuses it with "
                        "dpmsolver; use \"sigma_min\")",
                        c->source);
    if (c->rescale_betas_zero_snr) s->ac[T - 1] = 0x1p-24f;

    float *train = malloc((size_t)T * sizeof *train), *logs = malloc((size_t)T * sizeof *logs);
    double *ts = malloc((size_t)(n + 2) * sizeof *ts), *sg = malloc((size_t)(n + 2) * sizeof *sg);
    sdc_status st = SDC_OK;
    if (!train || !logs || !ts || !sg) {
        st = sdc_fail(err, SDC_ENOMEM, "sampler: out of memory");
        goto done;
    }
    sdc_train_sigmas(s->ac, T, train);
    for (int t = 0; t < T; t++) logs[t] = sdc_logf(train[t]);

    /* lambda_min_clipped: the schedule stops at the first timestep (from the
     * top) whose lambda = log(alpha) - log(sigma) reaches below it */
    int last = T;
    if (isfinite(c->lambda_min_clipped)) {
        int clipped = 0; /* searchsorted(flip(lambda), value): entries below it */
        for (int t = T - 1; t >= 0; t--) {
            float lam = sdc_logf(sqrtf(s->ac[t])) - sdc_logf(sqrtf(1.0f - s->ac[t]));
            if ((double)lam < c->lambda_min_clipped) clipped++;
            else break;
        }
        last = T - clipped;
    }

    int count = n;
    switch (c->timestep_spacing) {
    case SDC_SPACING_LINSPACE: /* np.linspace(0, last-1, n+1).round()[::-1][:-1] */
        sdc_np_linspace(0, last - 1, n + 1, sg);
        for (int i = 0; i < n; i++) ts[i] = sdc_np_round(sg[n - i]);
        break;
    case SDC_SPACING_LEADING: { /* (arange(n+1) * (last // (n+1)))[::-1][:-1] + steps_offset */
        int ratio = last / (n + 1);
        for (int i = 0; i < n; i++) ts[i] = (double)(n - i) * ratio + c->steps_offset;
        break;
    }
    case SDC_SPACING_TRAILING: /* np.arange(last, 0, -T/n).round() - 1 */
        count = sdc_np_arange_len(last, 0, -(double)T / n);
        if (count > n + 2) count = n + 2; /* cannot happen for last <= T; keeps the buffer safe */
        sdc_np_arange(last, -(double)T / n, count, ts);
        for (int i = 0; i < count; i++) ts[i] = sdc_np_round(ts[i]) - 1;
        break;
    }
    if (c->use_karras_sigmas) {
        /* Karras over the whole training range (or sigma_min/sigma_max of the file) */
        double smin = isnan(c->sigma_min) ? train[0] : c->sigma_min;
        double smax = isnan(c->sigma_max) ? train[T - 1] : c->sigma_max;
        count = n;
        sdc_karras_sigmas(smin, smax, n, sg);
        for (int i = 0; i < n; i++) {
            double t = sdc_sigma_to_t(sg[i], logs, T);
            if (c->beta_schedule != SDC_BETA_SQUAREDCOS_CAP_V2) t = sdc_np_round(t);
            ts[i] = (double)(int64_t)t; /* .astype(int64) truncates */
        }
    } else {
        for (int i = 0; i < count; i++) sg[i] = sdc_np_interp(ts[i], train, T);
    }
    if ((st = sdc_sampler_alloc_tables(s, count, 1, err)) != SDC_OK) goto done;
    for (int i = 0; i < count; i++) {
        s->timesteps[i] = ts[i];
        s->sig[i] = (float)sg[i];
    }
    s->sig[count] = c->final_sigmas_type == SDC_FINAL_SIGMA_MIN ? train[0] : 0.0f;
    sdc_sampler_sync_sigmas(s);
    s->init_noise_sigma = 1.0;
    st = sdc_sampler_alloc_hist(s, c->solver_order, err);
done:
    free(train);
    free(logs);
    free(ts);
    free(sg);
    return st;
}

/* alpha_t = 1/sqrt(sigma^2+1), sigma_t = sigma alpha_t, lambda = log alpha_t - log sigma_t, in float32. */
typedef struct {
    float alpha, sigma, lambda;
} ast;
static ast at_sigma(float sigma) {
    ast r;
    r.alpha = 1.0f / sqrtf(sigma * sigma + 1.0f);
    r.sigma = sigma * r.alpha;
    r.lambda = logf(r.alpha) - logf(r.sigma); /* +inf at sigma 0 */
    return r;
}

void sdc_dpmpp_step(sdc_sampler *s, int i, const float *mo, float *x) {
    const sdc_sched_config *c = &s->cfg;
    int order = c->solver_order, count = s->count;
    size_t n = s->n;
    int pp = c->algorithm_type == SDC_DPM_SOLVER_PP;
    int lower_final = i == count - 1 && (c->euler_at_final || (c->lower_order_final && count < 15) ||
                                         c->final_sigmas_type == SDC_FINAL_SIGMA_ZERO);
    int lower_second = i == count - 2 && c->lower_order_final && count < 15;

    /* model_outputs: shift the history, convert the new output into the last slot */
    double *h0 = s->hist;
    if (order > 1) memmove(h0, h0 + n, (size_t)(order - 1) * n * sizeof *h0);
    double *m0 = h0 + (size_t)(order - 1) * n;
    ast cur = at_sigma(s->sig[i]);
    for (size_t k = 0; k < n; k++) {
        double xs = x[k], m = mo[k];
        switch (c->prediction_type) {
        case SDC_PRED_EPSILON: m0[k] = pp ? (xs - cur.sigma * m) / cur.alpha : m; break;
        case SDC_PRED_SAMPLE: m0[k] = pp ? m : (xs - cur.alpha * m) / cur.sigma; break;
        default: m0[k] = pp ? cur.alpha * xs - cur.sigma * m : cur.alpha * m + cur.sigma * xs; break;
        }
    }

    ast t = at_sigma(s->sig[i + 1]), s0 = cur;
    float h = t.lambda - s0.lambda;
    float em = expf(-h), ep = expf(h);
    /* the sample term: (sigma_t/sigma_s0) x (pp) or (alpha_t/alpha_s0) x, a float32 product in diffusers */
    float a = pp ? t.sigma / s0.sigma : t.alpha / s0.alpha;
    float b = pp ? t.alpha * (em - 1.0f) : t.sigma * (ep - 1.0f); /* x' = a x - b D0 ... */

    if (order == 1 || s->lower_order_nums < 1 || lower_final) {
        for (size_t k = 0; k < n; k++) x[k] = (float)((double)(a * x[k]) - b * m0[k]);
    } else if (order == 2 || s->lower_order_nums < 2 || lower_second) {
        const double *m1 = m0 - n;
        ast s1 = at_sigma(s->sig[i - 1]);
        float hp = s0.lambda - s1.lambda, r0 = hp / h, inv_r0 = 1.0f / r0;
        float c1; /* coefficient of D1 = (m0 - m1) / r0, added */
        if (c->solver_type == SDC_SOLVER_MIDPOINT) c1 = -(0.5f * b);
        else c1 = pp ? t.alpha * ((em - 1.0f) / h + 1.0f) : -(t.sigma * ((ep - 1.0f) / h - 1.0f));
        for (size_t k = 0; k < n; k++) {
            double d1 = inv_r0 * (m0[k] - m1[k]);
            x[k] = (float)((double)(a * x[k]) - b * m0[k] + c1 * d1);
        }
    } else {
        const double *m1 = m0 - n, *m2 = m0 - 2 * n;
        ast s1 = at_sigma(s->sig[i - 1]), s2 = at_sigma(s->sig[i - 2]);
        float hp0 = s0.lambda - s1.lambda, hp1 = s1.lambda - s2.lambda;
        float r0 = hp0 / h, r1 = hp1 / h;
        float inv_r0 = 1.0f / r0, inv_r1 = 1.0f / r1, w = r0 / (r0 + r1), inv_rs = 1.0f / (r0 + r1);
        float c1, c2; /* x' = a x - b D0 + c1 D1 - c2 D2 */
        if (pp) {
            c1 = t.alpha * ((em - 1.0f) / h + 1.0f);
            c2 = t.alpha * ((em - 1.0f + h) / (h * h) - 0.5f);
        } else {
            c1 = -(t.sigma * ((ep - 1.0f) / h - 1.0f));
            c2 = t.sigma * ((ep - 1.0f - h) / (h * h) - 0.5f);
        }
        for (size_t k = 0; k < n; k++) {
            double d10 = inv_r0 * (m0[k] - m1[k]), d11 = inv_r1 * (m1[k] - m2[k]);
            double d1 = d10 + w * (d10 - d11), d2 = inv_rs * (d10 - d11);
            x[k] = (float)((double)(a * x[k]) - b * m0[k] + c1 * d1 - c2 * d2);
        }
    }
    if (s->lower_order_nums < order) s->lower_order_nums++;
}
