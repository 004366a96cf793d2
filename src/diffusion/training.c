#include "diffusion/training.h"

#include <math.h>

void sdc_train_sample_timesteps(int64_t *t, int B, int num_train_timesteps, sdc_u32_fn next, void *ctx) {
    SDC_ASSERT(num_train_timesteps > 0);
    for (int b = 0; b < B; b++) t[b] = (int64_t)(next(ctx) % (uint32_t)num_train_timesteps);
}

void sdc_train_noise_offset(float *noise, const float *r, int B, int C, int64_t hw, double noise_offset) {
    const float k = (float)noise_offset; /* noise_offset · randn(...): a float32 tensor times a Python scalar */
    for (int64_t bc = 0; bc < (int64_t)B * C; bc++) {
        const float add = k * r[bc];
        float *x = noise + bc * hw;
        for (int64_t i = 0; i < hw; i++) x[i] = x[i] + add;
    }
}

void sdc_train_input_perturbation(float *out, const float *noise, const float *r, size_t n,
                                  double input_perturbation) {
    const float k = (float)input_perturbation;
    for (size_t i = 0; i < n; i++) out[i] = noise[i] + k * r[i];
}

/* √ᾱ_t and √(1−ᾱ_t) as add_noise forms them: alphas_cumprod[t] ** 0.5 on
 * float32 (torch's pow with exponent 0.5 is sqrt), and (1 − ᾱ_t) ** 0.5. */
static void coefs(const float *ac, int n_ac, int64_t t, float *sa, float *so) {
    SDC_ASSERT(t >= 0 && t < n_ac);
    *sa = sqrtf(ac[t]);
    *so = sqrtf(1.0f - ac[t]);
}

void sdc_train_add_noise(float *noisy, const float *x0, const float *noise, const int64_t *t, int B, int64_t per,
                         const float *alphas_cumprod, int n_ac) {
    for (int b = 0; b < B; b++) {
        float sa, so;
        coefs(alphas_cumprod, n_ac, t[b], &sa, &so);
        const int64_t o = (int64_t)b * per;
        for (int64_t i = 0; i < per; i++) {
            float u = sa * x0[o + i], w = so * noise[o + i];
            noisy[o + i] = u + w;
        }
    }
}

void sdc_train_get_velocity(float *v, const float *x0, const float *noise, const int64_t *t, int B, int64_t per,
                            const float *alphas_cumprod, int n_ac) {
    for (int b = 0; b < B; b++) {
        float sa, so;
        coefs(alphas_cumprod, n_ac, t[b], &sa, &so);
        const int64_t o = (int64_t)b * per;
        for (int64_t i = 0; i < per; i++) {
            float u = sa * noise[o + i], w = so * x0[o + i];
            v[o + i] = u - w;
        }
    }
}

sdc_status sdc_train_target(float *target, sdc_prediction pred, const float *x0, const float *noise,
                            const int64_t *t, int B, int64_t per, const float *alphas_cumprod, int n_ac,
                            sdc_error *err) {
    switch (pred) {
    case SDC_PRED_EPSILON:
        for (int64_t i = 0; i < (int64_t)B * per; i++) target[i] = noise[i];
        return SDC_OK;
    case SDC_PRED_V: sdc_train_get_velocity(target, x0, noise, t, B, per, alphas_cumprod, n_ac); return SDC_OK;
    default: return sdc_fail(err, SDC_EUNSUPPORTED, "training: unknown prediction type (epsilon or v_prediction)");
    }
}

void sdc_train_compute_snr(float *snr, const int64_t *t, int B, const float *alphas_cumprod, int n_ac) {
    for (int b = 0; b < B; b++) {
        float sa, so;
        coefs(alphas_cumprod, n_ac, t[b], &sa, &so);
        float r = sa / so;
        snr[b] = r * r; /* torch's pow(x, 2) is x·x */
    }
}

void sdc_train_min_snr_weights(float *w, const float *snr, int B, double snr_gamma, sdc_prediction pred) {
    /* stack([snr, snr_gamma · ones_like(timesteps)]).min(dim=1): γ becomes a float32 value */
    const float g = (float)snr_gamma;
    for (int b = 0; b < B; b++) {
        float m = snr[b] < g ? snr[b] : g;
        if (isnan(snr[b])) m = snr[b]; /* torch's min propagates NaN */
        if (pred == SDC_PRED_EPSILON)
            m = m / snr[b];
        else if (pred == SDC_PRED_V)
            m = m / (snr[b] + 1.0f);
        w[b] = m;
    }
}

double sdc_train_mse_loss(const float *pred, const float *target, int B, int64_t per, const float *weights,
                          float *per_sample) {
    double total = 0.0;
    for (int b = 0; b < B; b++) {
        const float *p = pred + (int64_t)b * per, *q = target + (int64_t)b * per;
        double s = 0.0;
        for (int64_t i = 0; i < per; i++) {
            float d = p[i] - q[i];
            s += (double)(d * d);
        }
        if (per_sample) per_sample[b] = (float)(s / (double)per);
        /* weighted: loss.mean(dim=1..) * weights in float32, as torch has it */
        total += weights ? (double)((float)(s / (double)per) * weights[b]) : s;
    }
    return weights ? total / (double)B : total / ((double)B * (double)per);
}

void sdc_train_mse_loss_backward(float *dpred, const float *pred, const float *target, int B, int64_t per,
                                 const float *weights, double scale) {
    for (int b = 0; b < B; b++) {
        const double w = weights ? (double)weights[b] : 1.0;
        const float c = (float)(2.0 * w * scale / ((double)B * (double)per));
        const int64_t o = (int64_t)b * per;
        for (int64_t i = 0; i < per; i++) dpred[o + i] = c * (pred[o + i] - target[o + i]);
    }
}
