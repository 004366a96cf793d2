/* Group norm and layer norm: μ and σ² in double, two passes (mean, then the
 * mean of squared deviations: no cancellation), then y = (x − μ)·a + β with
 * a = γ/√(σ²+eps), and the optional activation fused in. x − μ is formed as
 * (x − μ_hi) − μ_lo with μ split into two floats: when |μ| ≫ σ, folding μ
 * into one float offset (x·a + (β − μ·a)) would cancel away the signal.
 * One thread owns a whole (batch, group) or row, so sums are deterministic. */
#include <math.h>

#include "backend/cpu/cpu_ops.h"

/* The norms' statistics in double, shared with the backward (cpu_ops.h). */
SDC_CPU_HOT double cpu_sum_f64(const float *x, int64_t n) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += x[i];
    return s;
}

SDC_CPU_HOT double cpu_sqdev_f64(const float *x, int64_t n, double mu) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) {
        double d = x[i] - mu;
        s += d * d;
    }
    return s;
}

/* y = ((x − mh) − ml)·a + b */
SDC_CPU_HOT static void affine_kernel(float *y, const float *x, int64_t n, float mh, float ml, float a, float b) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] = ((x[i] - mh) - ml) * a + b;
}

/* y = ((x − mh) − ml)·rstd·γ[i] + β[i] (layer norm: γ, β vary along the row) */
SDC_CPU_HOT static void affine_vec_kernel(float *y, const float *x, int64_t n, float mh, float ml, float rstd,
                                          const float *g, const float *be) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] = ((x[i] - mh) - ml) * rstd * g[i] + be[i];
}

void sdc_cpu_group_norm(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *gamma, const sdc_tensor *beta,
                        int64_t B, int64_t C, int64_t S, int groups, float eps, sdc_act act) {
    float *y = cpu_f32(out);
    const float *xs = cpu_f32(x), *g = cpu_f32(gamma), *be = cpu_f32(beta);
    SDC_ASSERT(groups > 0 && C % groups == 0);
    int64_t cpg = C / groups, n = cpg * S;
#pragma omp parallel for schedule(static) if (B * C * S > SDC_CPU_PAR_MIN)
    for (int64_t t = 0; t < B * groups; t++) {
        const float *xg = xs + t * n;
        float *yg = y + t * n;
        double mu = cpu_sum_f64(xg, n) / (double)n;
        double var = cpu_sqdev_f64(xg, n, mu) / (double)n;
        double rstd = 1.0 / sqrt(var + (double)eps);
        int64_t c0 = (t % groups) * cpg;
        float mh = (float)mu, ml = (float)(mu - mh);
        for (int64_t c = 0; c < cpg; c++) {
            affine_kernel(yg + c * S, xg + c * S, S, mh, ml, (float)(rstd * g[c0 + c]), be[c0 + c]);
            if (act != SDC_ACT_NONE) sdc_cpu_act_inplace(yg + c * S, S, act);
        }
    }
}

void sdc_cpu_layer_norm(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *gamma, const sdc_tensor *beta,
                        int64_t M, int64_t C, float eps) {
    float *y = cpu_f32(out);
    const float *xs = cpu_f32(x), *g = cpu_f32(gamma), *be = cpu_f32(beta);
#pragma omp parallel for schedule(static) if (M * C > SDC_CPU_PAR_MIN)
    for (int64_t r = 0; r < M; r++) {
        const float *xr = xs + r * C;
        double mu = cpu_sum_f64(xr, C) / (double)C;
        double var = cpu_sqdev_f64(xr, C, mu) / (double)C;
        float mh = (float)mu, ml = (float)(mu - mh);
        affine_vec_kernel(y + r * C, xr, C, mh, ml, (float)(1.0 / sqrt(var + (double)eps)), g, be);
    }
}
