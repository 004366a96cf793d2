/* Backward of group norm (+ fused activation) and layer norm. The forward's
 * statistics are recomputed from x in double (two passes, as in cpu_norm.c).
 * With x̂ = (x − μ)·r, r = 1/√(σ² + eps), z = x̂·γ + β, y = act(z), and n the
 * number of elements normalized together:
 *   dz = dy·act'(z)                 (dz = dy without activation)
 *   dγ += Σ dz·x̂,   dβ += Σ dz      (over everything sharing that γ, β)
 *   dx̂ = dz·γ
 *   dx = r·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂))
 * (differentiate x̂_i = (x_i − μ)·r with ∂μ/∂x_j = 1/n, ∂r/∂x_j = −r³(x_j − μ)/n).
 * Element work is fp32; every sum is double. Each (batch, group) or row is
 * one thread's; dγ, dβ come from per-(batch, channel) partial sums or column
 * blocks reduced in a fixed order, so nothing depends on the thread count. */
#include <math.h>

#include "backend/cpu/cpu_ops.h"

#define PIECE 2048 /* elements of a channel handled per step (a stack buffer's worth) */
#define COLB 64    /* layer norm: columns per work item of the dγ, dβ pass */


/* dz[i] = dy[i]·act'(z_i) with z_i = ((x−mh)−ml)·a + b, the forward's affine */
SDC_CPU_HOT static void dz_kernel(float *dz, const float *dy, const float *x, int64_t n, float mh, float ml, float a,
                                  float b, sdc_act act) {
    switch (act) {
#define DZ_CASE(ACT)                                                                          \
    case ACT:                                                                                 \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) dz[i] =                           \
            dy[i] * cpu_act_grad1(((x[i] - mh) - ml) * a + b, ACT);                           \
        break;
        DZ_CASE(SDC_ACT_SILU)
        DZ_CASE(SDC_ACT_GELU)
        DZ_CASE(SDC_ACT_GELU_TANH)
        DZ_CASE(SDC_ACT_QUICK_GELU)
#undef DZ_CASE
    case SDC_ACT_NONE:
        if (dz != dy) memcpy(dz, dy, (size_t)n * sizeof(float));
        break;
    }
}

/* s[0] += Σ dz, s[1] += Σ dz·x̂ with x̂ = ((x−mh)−ml)·r */
SDC_CPU_HOT static void dz_sums_kernel(double *s, const float *dz, const float *x, int64_t n, float mh, float ml,
                                       float r) {
    double s0 = 0.0, s1 = 0.0;
#pragma omp simd reduction(+ : s0, s1)
    for (int64_t i = 0; i < n; i++) {
        s0 += dz[i];
        s1 += (double)dz[i] * (((x[i] - mh) - ml) * r);
    }
    s[0] += s0, s[1] += s1;
}

/* dx = A·dz + Bc·((x−mh)−ml) + Cc, i.e. r·(γ·dz − m1 − x̂·m2) with
 * A = r·γ, Bc = −r²·m2, Cc = −r·m1 */
SDC_CPU_HOT static void dx_kernel(float *dx, const float *dz, const float *x, int64_t n, float mh, float ml, float A,
                                  float Bc, float Cc) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) dx[i] = A * dz[i] + Bc * ((x[i] - mh) - ml) + Cc;
}

/* The same with γ per element (layer norm): A = r·γ[i] */
SDC_CPU_HOT static void dx_vec_kernel(float *dx, const float *dy, const float *x, const float *g, int64_t n, float mh,
                                      float ml, float r, float Bc, float Cc) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) dx[i] = r * g[i] * dy[i] + Bc * ((x[i] - mh) - ml) + Cc;
}

void sdc_cpu_group_norm_backward(sdc_tensor *dx, sdc_tensor *dgamma, sdc_tensor *dbeta, const sdc_tensor *dy,
                                 const sdc_tensor *x, const sdc_tensor *gamma, const sdc_tensor *beta, int64_t B,
                                 int64_t C, int64_t S, int groups, float eps, sdc_act act) {
    const float *g = cpu_f32(dy), *xs = cpu_f32(x), *ga = cpu_f32(gamma);
    const float *be = beta ? cpu_f32(beta) : NULL;
    float *dxs = dx ? cpu_f32(dx) : NULL;
    SDC_ASSERT(groups > 0 && C % groups == 0 && (be || act == SDC_ACT_NONE));
    int64_t cpg = C / groups, n = cpg * S;
    /* part[(b·C + c)·2 + {0,1}] = Σ_s dz, Σ_s dz·x̂ for one image and channel */
    double *part = (double *)sdc_cpu_scratch(0, (size_t)(4 * B * C));
#pragma omp parallel for schedule(static) if (B * C * S > SDC_CPU_PAR_MIN)
    for (int64_t t = 0; t < B * groups; t++) {
        const float *xg = xs + t * n, *gg = g + t * n;
        double mu = cpu_sum_f64(xg, n) / (double)n;
        double var = cpu_sqdev_f64(xg, n, mu) / (double)n;
        double rstd = 1.0 / sqrt(var + (double)eps);
        float mh = (float)mu, ml = (float)(mu - mh), r = (float)rstd;
        int64_t c0 = (t % groups) * cpg;
        double *pt = part + t * cpg * 2; /* = (b·C + c0)·2 */
        double m1 = 0.0, m2 = 0.0;       /* Σ dx̂ and Σ dx̂·x̂ over the group */
        for (int64_t c = 0; c < cpg; c++) {
            const float *xc = xg + c * S, *gc = gg + c * S;
            float a = (float)(rstd * ga[c0 + c]), b = be ? be[c0 + c] : 0.0f;
            double *s = pt + 2 * c;
            s[0] = s[1] = 0.0;
            float buf[PIECE];
            for (int64_t i0 = 0; i0 < S; i0 += PIECE) {
                int64_t m = S - i0 < PIECE ? S - i0 : PIECE;
                /* dz goes into dx where wanted (rewritten below), else a stack buffer */
                float *dz = dxs ? dxs + t * n + c * S + i0 : buf;
                dz_kernel(dz, gc + i0, xc + i0, m, mh, ml, a, b, act);
                dz_sums_kernel(s, dz, xc + i0, m, mh, ml, r);
            }
            m1 += ga[c0 + c] * s[0];
            m2 += ga[c0 + c] * s[1];
        }
        if (!dxs) continue;
        m1 /= (double)n, m2 /= (double)n;
        float Bc = (float)(-rstd * rstd * m2), Cc = (float)(-rstd * m1);
        for (int64_t c = 0; c < cpg; c++) {
            float *d = dxs + t * n + c * S;
            dx_kernel(d, d, xg + c * S, S, mh, ml, (float)(rstd * ga[c0 + c]), Bc, Cc);
        }
    }
    if (!dgamma && !dbeta) return;
    float *dg = dgamma ? cpu_f32(dgamma) : NULL, *db = dbeta ? cpu_f32(dbeta) : NULL;
    for (int64_t c = 0; c < C; c++) {
        double s0 = 0.0, s1 = 0.0;
        for (int64_t b = 0; b < B; b++) s0 += part[(b * C + c) * 2], s1 += part[(b * C + c) * 2 + 1];
        if (dg) dg[c] += (float)s1;
        if (db) db[c] += (float)s0;
    }
}

/* acc_g[j] += dy[j]·x̂[j], acc_b[j] += dy[j] over one row piece */
SDC_CPU_HOT static void ln_param_kernel(double *acc_g, double *acc_b, const float *dy, const float *x, int64_t n,
                                        float mh, float ml, float r) {
#pragma omp simd
    for (int64_t j = 0; j < n; j++) {
        acc_g[j] += (double)dy[j] * (((x[j] - mh) - ml) * r);
        acc_b[j] += dy[j];
    }
}

/* Σ dx̂ and Σ dx̂·x̂ of one row, dx̂ = dy·γ */
SDC_CPU_HOT static void ln_row_sums(double *s, const float *dy, const float *x, const float *g, int64_t n, float mh,
                                    float ml, float r) {
    double s0 = 0.0, s1 = 0.0;
#pragma omp simd reduction(+ : s0, s1)
    for (int64_t i = 0; i < n; i++) {
        float d = dy[i] * g[i];
        s0 += d;
        s1 += (double)d * (((x[i] - mh) - ml) * r);
    }
    s[0] = s0, s[1] = s1;
}

void sdc_cpu_layer_norm_backward(sdc_tensor *dx, sdc_tensor *dgamma, sdc_tensor *dbeta, const sdc_tensor *dy,
                                 const sdc_tensor *x, const sdc_tensor *gamma, int64_t M, int64_t C, float eps) {
    const float *g = cpu_f32(dy), *xs = cpu_f32(x), *ga = cpu_f32(gamma);
    /* st[3r..3r+3) = μ_hi, μ_lo, r per row (floats, as the element math uses them) */
    float *st = sdc_cpu_scratch(0, (size_t)(3 * M));
#pragma omp parallel for schedule(static) if (M * C > SDC_CPU_PAR_MIN)
    for (int64_t r = 0; r < M; r++) {
        const float *xr = xs + r * C;
        double mu = cpu_sum_f64(xr, C) / (double)C;
        double var = cpu_sqdev_f64(xr, C, mu) / (double)C;
        st[3 * r] = (float)mu;
        st[3 * r + 1] = (float)(mu - (float)mu);
        st[3 * r + 2] = (float)(1.0 / sqrt(var + (double)eps));
    }
    /* dγ, dβ first: dx may overwrite dy (aliasing) below */
    if (dgamma || dbeta) {
        float *dg = dgamma ? cpu_f32(dgamma) : NULL, *db = dbeta ? cpu_f32(dbeta) : NULL;
        int64_t nb = (C + COLB - 1) / COLB;
#pragma omp parallel for schedule(static) if (M * C > SDC_CPU_PAR_MIN)
        for (int64_t jb = 0; jb < nb; jb++) {
            int64_t j0 = jb * COLB, m = C - j0 < COLB ? C - j0 : COLB;
            double acc_g[COLB] = {0}, acc_b[COLB] = {0};
            for (int64_t r = 0; r < M; r++)
                ln_param_kernel(acc_g, acc_b, g + r * C + j0, xs + r * C + j0, m, st[3 * r], st[3 * r + 1],
                                st[3 * r + 2]);
            for (int64_t j = 0; j < m; j++) {
                if (dg) dg[j0 + j] += (float)acc_g[j];
                if (db) db[j0 + j] += (float)acc_b[j];
            }
        }
    }
    if (!dx) return;
    float *dxs = cpu_f32(dx);
#pragma omp parallel for schedule(static) if (M * C > SDC_CPU_PAR_MIN)
    for (int64_t r = 0; r < M; r++) {
        const float *xr = xs + r * C, *gr = g + r * C;
        float mh = st[3 * r], ml = st[3 * r + 1], rs = st[3 * r + 2];
        double s[2];
        ln_row_sums(s, gr, xr, ga, C, mh, ml, rs);
        double m1 = s[0] / (double)C, m2 = s[1] / (double)C;
        dx_vec_kernel(dxs + r * C, gr, xr, ga, C, mh, ml, rs, (float)(-(double)rs * rs * m2), (float)(-rs * m1));
    }
}
