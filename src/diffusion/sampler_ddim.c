/* DDIM (Song et al. 2021), as diffusers' DDIMScheduler.
 *
 * From x_t and the model output, with a = alphas_cumprod[t], a' =
 * alphas_cumprod[t - T/steps] (or final_alpha_cumprod below t = 0):
 *   x0  = (x - sqrt(1-a) eps) / sqrt(a)         (epsilon; v and sample likewise)
 *   var = (1-a')/(1-a) * (1 - a/a'),  std = eta sqrt(var)
 *   x'  = sqrt(a') x0 + sqrt(1 - a' - std^2) eps + std z
 * The prediction x0 may be clipped to [-clip_sample_range, clip_sample_range]. */
#include <math.h>

#include "diffusion/sampler_internal.h"

sdc_status sdc_ddim_init(sdc_sampler *s, sdc_error *err) {
    const sdc_sched_config *c = &s->cfg;
    int n = s->steps, T = s->T;
    /* trailing: numpy's arange can give one entry more than asked (its
     * length is a rounded-up float quotient); diffusers then runs that many */
    int count = c->timestep_spacing == SDC_SPACING_TRAILING ? sdc_np_arange_len(T, 0, -(double)T / n) : n;
    SDC_TRY(sdc_sampler_alloc_tables(s, count, 0, err));
    switch (c->timestep_spacing) {
    case SDC_SPACING_LINSPACE: {
        /* np.linspace(0, T-1, n).round()[::-1] */
        double *v = s->timesteps;
        sdc_np_linspace(0, T - 1, n, v);
        for (int i = 0; i < n / 2; i++) {
            double tmp = v[i];
            v[i] = v[n - 1 - i];
            v[n - 1 - i] = tmp;
        }
        for (int i = 0; i < n; i++) v[i] = sdc_np_round(v[i]);
        break;
    }
    case SDC_SPACING_LEADING: {
        int ratio = T / n;
        for (int i = 0; i < n; i++) s->timesteps[i] = (double)(n - 1 - i) * ratio + c->steps_offset;
        break;
    }
    case SDC_SPACING_TRAILING: {
        /* np.round(np.arange(T, 0, -T/n)) - 1 */
        sdc_np_arange(T, -(double)T / n, count, s->timesteps);
        for (int i = 0; i < count; i++) s->timesteps[i] = sdc_np_round(s->timesteps[i]) - 1;
        break;
    }
    }
    /* diffusers indexes alphas_cumprod[t] with a torch index: -1 (that extra
     * trailing entry) is the last; beyond T-1 it fails */
    for (int i = 0; i < count; i++)
        if (s->timesteps[i] < -T || s->timesteps[i] >= T)
            return sdc_fail(err, SDC_EINVAL, "%s: ddim: timestep %.0f of %d steps is outside 0..%d (steps_offset %d)",
                            c->source, s->timesteps[i], n, T - 1, c->steps_offset);
    s->final_ac = c->set_alpha_to_one ? 1.0f : s->ac[0];
    s->init_noise_sigma = 1.0;
    return SDC_OK;
}

void sdc_ddim_step(sdc_sampler *s, int i, const float *mo, float *x, sdc_noise_fn noise, void *ctx) {
    const sdc_sched_config *c = &s->cfg;
    int t = (int)s->timesteps[i];
    int prev = t - s->T / s->steps;
    /* scalars in float32, as diffusers' schedule tensors */
    float a = s->ac[t < 0 ? t + s->T : t];
    float ap = prev >= 0 ? s->ac[prev] : s->final_ac;
    float b = 1.0f - a, bp = 1.0f - ap;
    float sa = sqrtf(a), sb = sqrtf(b);
    float var = (bp / b) * (1.0f - a / ap);
    float std = (float)s->eta * sqrtf(var);
    float dir_coef = sqrtf(1.0f - ap - std * std);
    float sap = sqrtf(ap);
    double range = c->clip_sample_range;
    int draw = s->eta > 0;
    if (draw) noise(ctx, s->noise, s->n);
    for (size_t k = 0; k < s->n; k++) {
        double xs = x[k], m = mo[k], x0, eps;
        switch (c->prediction_type) {
        case SDC_PRED_EPSILON:
            x0 = (xs - sb * m) / sa;
            eps = m;
            break;
        case SDC_PRED_SAMPLE:
            x0 = m;
            eps = (xs - sa * x0) / sb;
            break;
        default: /* v */
            x0 = sa * xs - sb * m;
            eps = sa * m + sb * xs;
            break;
        }
        if (c->clip_sample) x0 = x0 < -range ? -range : x0 > range ? range : x0;
        double out = sap * x0 + dir_coef * eps;
        if (draw) out = out + std * (double)s->noise[k];
        x[k] = (float)out;
    }
}
