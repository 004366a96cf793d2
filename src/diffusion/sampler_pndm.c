/* PNDM (Liu et al. 2022), as diffusers' PNDMScheduler: pseudo linear
 * multistep (PLMS) steps, warmed up either with three pseudo Runge-Kutta
 * (PRK) steps of 4 evaluations each (skip_prk_steps false, PNDM's default)
 * or, as SD ships it, with one pseudo improved-Euler step (skip_prk_steps).
 *
 * Every step is the same transfer from t to t' with an effective eps e:
 *   x' = sqrt(a'/a) x - (a' - a) e / (a sqrt(1-a') + sqrt(a (1-a) a'))
 * (a = alphas_cumprod[t]); e combines past outputs:
 *   PLMS: e = (55 e0 - 59 e1 + 37 e2 - 9 e3) / 24 (lower orders while the
 *         history is short); PRK: the RK4 weights 1/6, 1/3, 1/3, 1/6. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "diffusion/sampler_internal.h"

sdc_status sdc_pndm_init(sdc_sampler *s, sdc_error *err) {
    const sdc_sched_config *c = &s->cfg;
    int T = s->T, n = s->steps;
    int len = c->timestep_spacing == SDC_SPACING_TRAILING ? sdc_np_arange_len(T, 0, -(double)T / n) : n;
    /* _timesteps, ascending */
    double *tt = malloc((size_t)len * sizeof *tt);
    if (!tt) return sdc_fail(err, SDC_ENOMEM, "sampler: out of memory");
    switch (c->timestep_spacing) {
    case SDC_SPACING_LINSPACE: /* np.linspace(0, T-1, n).round() */
        sdc_np_linspace(0, T - 1, n, tt);
        for (int i = 0; i < n; i++) tt[i] = sdc_np_round(tt[i]);
        break;
    case SDC_SPACING_LEADING: /* arange(n) * (T//n) + steps_offset */
        for (int i = 0; i < n; i++) tt[i] = (double)i * (T / n) + c->steps_offset;
        break;
    case SDC_SPACING_TRAILING: { /* np.round(np.arange(T, 0, -T/n))[::-1] - 1 */
        double *d = malloc((size_t)len * sizeof *d);
        if (!d) {
            free(tt);
            return sdc_fail(err, SDC_ENOMEM, "sampler: out of memory");
        }
        sdc_np_arange(T, -(double)T / n, len, d);
        for (int i = 0; i < len; i++) tt[i] = sdc_np_round(d[len - 1 - i]) - 1;
        free(d);
        break;
    }
    }
    sdc_status st;
    if (c->skip_prk_steps) {
        /* concat(_t[:-1], _t[-2:-1], _t[-1:])[::-1]: the second-to-last repeated */
        int count = len >= 2 ? len + 1 : len;
        if ((st = sdc_sampler_alloc_tables(s, count, 0, err)) != SDC_OK) goto done;
        int k = 0;
        s->timesteps[k++] = tt[len - 1];
        if (len >= 2) s->timesteps[k++] = tt[len - 2];
        for (int j = len - 2; j >= 0; j--) s->timesteps[k++] = tt[j];
    } else {
        if (len < 4) {
            st = sdc_fail(err, SDC_EINVAL,
                          "%s: pndm with PRK warm-up steps (skip_prk_steps false) needs at least 4 steps, got %d",
                          c->source, n);
            goto done;
        }
        /* PRK: the last 4 timesteps a<b<c<d with their midpoints (+h), as
         * d, c+h, c+h, c, c, b+h, b+h, b, b, a+h, a+h, a; then PLMS on _t[:-3] reversed */
        int h = T / n / 2;
        int count = 12 + len - 3;
        if ((st = sdc_sampler_alloc_tables(s, count, 0, err)) != SDC_OK) goto done;
        const double *q = tt + len - 4;
        double prk[12] = {q[3],     q[2] + h, q[2] + h, q[2],     q[2],     q[1] + h,
                          q[1] + h, q[1],     q[1],     q[0] + h, q[0] + h, q[0]};
        memcpy(s->timesteps, prk, sizeof prk);
        for (int j = 0; j < len - 3; j++) s->timesteps[12 + j] = tt[len - 4 - j];
    }
    /* diffusers indexes alphas_cumprod[t] with a torch index: -1 (an extra
     * trailing entry) is the last; beyond T-1 it fails */
    for (int i = 0; i < s->count; i++)
        if (s->timesteps[i] < -T || s->timesteps[i] >= T) {
            st = sdc_fail(err, SDC_EINVAL, "%s: pndm: timestep %.0f of %d steps is outside 0..%d (steps_offset %d)",
                          c->source, s->timesteps[i], n, T - 1, c->steps_offset);
            goto done;
        }
    s->final_ac = c->set_alpha_to_one ? 1.0f : s->ac[0];
    s->init_noise_sigma = 1.0;
    /* ets (4 past outputs); cur_model_output, cur_sample and two scratch buffers */
    if ((st = sdc_sampler_alloc_hist(s, 4, err)) != SDC_OK) goto done;
    if (s->n > 0) {
        s->work = calloc(4 * s->n, sizeof *s->work);
        if (!s->work) st = sdc_fail(err, SDC_ENOMEM, "sampler: out of memory");
    }
done:
    free(tt);
    return st;
}

static float ac_at(const sdc_sampler *s, int t) { return s->ac[t < 0 ? t + s->T : t]; }

/* _get_prev_sample: x (n doubles) at t to x' at prev with effective output e; writes float out. */
static void prev_sample(const sdc_sampler *s, const double *x, int t, int prev, const double *e, float *out) {
    float a = ac_at(s, t);
    float ap = prev >= 0 ? s->ac[prev] : s->final_ac;
    float b = 1.0f - a, bp = 1.0f - ap;
    float sa = sqrtf(a), sb = sqrtf(b);
    float sample_coeff = sqrtf(ap / a);
    float denom = a * sqrtf(bp) + sqrtf(a * b * ap);
    float diff = ap - a;
    int v = s->cfg.prediction_type == SDC_PRED_V;
    for (size_t k = 0; k < s->n; k++) {
        double m = v ? sa * e[k] + sb * x[k] : e[k];
        out[k] = (float)(sample_coeff * x[k] - diff * m / denom);
    }
}

void sdc_pndm_step(sdc_sampler *s, int i, const float *mo, float *x) {
    size_t n = s->n;
    int T = s->T, steps = s->steps;
    int t = (int)s->timesteps[i];
    double *ets = s->hist; /* ets[j] = hist + j*n, oldest first, s->nhist of them */
    double *cur_mo = s->work, *cur_x = s->work + n;
    double *e = s->work + 2 * n, *xs = s->work + 3 * n; /* effective output; x in double */
    for (size_t k = 0; k < n; k++) xs[k] = x[k];

    if (s->counter < 12 && !s->cfg.skip_prk_steps) {
        /* PRK */
        int c4 = s->counter % 4;
        int prev = t - (s->counter % 2 ? 0 : T / steps / 2);
        int t0 = (int)s->timesteps[s->counter / 4 * 4];
        for (size_t k = 0; k < n; k++) e[k] = mo[k];
        if (c4 == 0) {
            for (size_t k = 0; k < n; k++) cur_mo[k] += 1.0 / 6 * mo[k];
            SDC_ASSERT(s->nhist < 4);
            memcpy(ets + (size_t)s->nhist * n, e, n * sizeof *e);
            s->nhist++;
            memcpy(cur_x, xs, n * sizeof *xs);
            s->have_cur_sample = 1;
        } else if (c4 == 1 || c4 == 2) {
            for (size_t k = 0; k < n; k++) cur_mo[k] += 1.0 / 3 * mo[k];
        } else {
            for (size_t k = 0; k < n; k++) {
                e[k] = cur_mo[k] + 1.0 / 6 * mo[k];
                cur_mo[k] = 0;
            }
        }
        prev_sample(s, s->have_cur_sample ? cur_x : xs, t0, prev, e, x);
    } else {
        /* PLMS */
        int prev = t - T / steps;
        const double *from = xs;
        if (s->counter != 1) {
            /* ets = ets[-3:] + [model_output] */
            if (s->nhist == 4) {
                memmove(ets, ets + n, 3 * n * sizeof *ets);
                s->nhist = 3;
            }
            for (size_t k = 0; k < n; k++) ets[(size_t)s->nhist * n + k] = mo[k];
            s->nhist++;
        } else {
            /* the improved-Euler correction: redo t -> prev from the previous x */
            prev = t;
            t = t + T / steps;
        }
        const double *e0 = ets + (size_t)(s->nhist - 1) * n; /* ets[-1] */
        if (s->nhist == 1 && s->counter == 0) {
            for (size_t k = 0; k < n; k++) e[k] = mo[k];
            memcpy(cur_x, xs, n * sizeof *xs);
            s->have_cur_sample = 1;
        } else if (s->nhist == 1 && s->counter == 1) {
            for (size_t k = 0; k < n; k++) e[k] = (mo[k] + e0[k]) / 2;
            from = cur_x;
            s->have_cur_sample = 0;
        } else if (s->nhist == 2) {
            const double *e1 = e0 - n;
            for (size_t k = 0; k < n; k++) e[k] = (3 * e0[k] - e1[k]) / 2;
        } else if (s->nhist == 3) {
            const double *e1 = e0 - n, *e2 = e0 - 2 * n;
            for (size_t k = 0; k < n; k++) e[k] = (23 * e0[k] - 16 * e1[k] + 5 * e2[k]) / 12;
        } else {
            const double *e1 = e0 - n, *e2 = e0 - 2 * n, *e3 = e0 - 3 * n;
            for (size_t k = 0; k < n; k++)
                e[k] = (1.0 / 24) * (55 * e0[k] - 59 * e1[k] + 37 * e2[k] - 9 * e3[k]);
        }
        prev_sample(s, from, t, prev, e, x);
    }
    s->counter++;
}
