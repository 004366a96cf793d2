/* Backward of the elementwise and layout ops: activations, GEGLU, the
 * per-channel add (channel sums), nearest 2× upsampling, embedding gather.
 * Sums that reduce many values (channel sums, column sums) run in double in
 * a fixed order, each output owned by one thread. */
#include "backend/cpu/cpu_ops.h"

#define CHUNK 8192 /* elements per OpenMP work item */
#define COLB 64    /* columns per work item of the column sums */

/* d = dy·act'(x); one switch per call, a vector loop per activation */
SDC_CPU_HOT static void act_grad_kernel(float *d, const float *dy, const float *x, int64_t n, sdc_act act) {
    switch (act) {
    case SDC_ACT_SILU:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) d[i] = dy[i] * cpu_act_grad1(x[i], SDC_ACT_SILU);
        break;
    case SDC_ACT_GELU:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) d[i] = dy[i] * cpu_act_grad1(x[i], SDC_ACT_GELU);
        break;
    case SDC_ACT_GELU_TANH:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) d[i] = dy[i] * cpu_act_grad1(x[i], SDC_ACT_GELU_TANH);
        break;
    case SDC_ACT_QUICK_GELU:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) d[i] = dy[i] * cpu_act_grad1(x[i], SDC_ACT_QUICK_GELU);
        break;
    case SDC_ACT_NONE:
        if (d != dy) memcpy(d, dy, (size_t)n * sizeof(float));
        break;
    }
}

void sdc_cpu_act_grad(float *d, const float *dy, const float *x, int64_t n, sdc_act act) {
    act_grad_kernel(d, dy, x, n, act);
}

void sdc_cpu_activation_backward(sdc_tensor *dx, const sdc_tensor *dy, const sdc_tensor *x, sdc_act act) {
    float *d = cpu_f32(dx);
    const float *g = cpu_f32(dy), *xs = cpu_f32(x);
    int64_t n = sdc_tensor_numel(x);
#pragma omp parallel for schedule(static) if (n > SDC_CPU_PAR_MIN)
    for (int64_t c = 0; c < n; c += CHUNK) act_grad_kernel(d + c, g + c, xs + c, n - c < CHUNK ? n - c : CHUNK, act);
}

/* out = a·gelu(g):  da = dy·gelu(g),  dg = dy·a·gelu'(g) */
SDC_CPU_HOT static void geglu_grad_kernel(float *da, float *dg, const float *dy, const float *a, const float *g,
                                          int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i], t = dy[i];
        da[i] = t * cpu_gelu(gi);
        dg[i] = t * a[i] * cpu_act_grad1(gi, SDC_ACT_GELU);
    }
}

void sdc_cpu_geglu_backward(sdc_tensor *dx, const sdc_tensor *dy, const sdc_tensor *x, int64_t M, int64_t F) {
    float *d = cpu_f32(dx);
    const float *g = cpu_f32(dy), *xs = cpu_f32(x);
#pragma omp parallel for schedule(static) if (M * F > SDC_CPU_PAR_MIN)
    for (int64_t r = 0; r < M; r++) {
        const float *xr = xs + r * 2 * F;
        geglu_grad_kernel(d + r * 2 * F, d + r * 2 * F + F, g + r * F, xr, xr + F, F);
    }
}

SDC_CPU_HOT static double sum_kernel(const float *x, int64_t n) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += x[i];
    return s;
}

void sdc_cpu_channel_sum(sdc_tensor *dv, const sdc_tensor *dy, int64_t O, int64_t C, int64_t S) {
    float *v = cpu_f32(dv);
    const float *g = cpu_f32(dy);
#pragma omp parallel for schedule(static) if (O * C * S > SDC_CPU_PAR_MIN)
    for (int64_t oc = 0; oc < O * C; oc++) v[oc] = (float)sum_kernel(g + oc * S, S);
}

/* acc[0..n) += y[0..n) in double */
SDC_CPU_HOT static void acc_row_kernel(double *acc, const float *y, int64_t n) {
#pragma omp simd
    for (int64_t j = 0; j < n; j++) acc[j] += y[j];
}

void sdc_cpu_col_sums_acc(float *out, const float *y, int64_t M, int64_t N) {
    int64_t nb = (N + COLB - 1) / COLB;
#pragma omp parallel for schedule(static) if (M * N > SDC_CPU_PAR_MIN)
    for (int64_t jb = 0; jb < nb; jb++) {
        int64_t j0 = jb * COLB, n = N - j0 < COLB ? N - j0 : COLB;
        double acc[COLB] = {0};
        for (int64_t r = 0; r < M; r++) acc_row_kernel(acc, y + r * N + j0, n);
        for (int64_t j = 0; j < n; j++) out[j0 + j] += (float)acc[j];
    }
}

/* dx[p,i,j] = dy[p,2i,2j] + dy[p,2i,2j+1] + dy[p,2i+1,2j] + dy[p,2i+1,2j+1] */
SDC_CPU_HOT static void up2_grad_row(float *dx, const float *r0, const float *r1, int64_t W) {
    for (int64_t j = 0; j < W; j++) dx[j] = (r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1]);
}

void sdc_cpu_upsample2x_backward(sdc_tensor *dx, const sdc_tensor *dy, int64_t B, int64_t C, int64_t H, int64_t W) {
    float *d = cpu_f32(dx);
    const float *g = cpu_f32(dy);
#pragma omp parallel for schedule(static) if (B * C * H * W > SDC_CPU_PAR_MIN / 4)
    for (int64_t pi = 0; pi < B * C * H; pi++) up2_grad_row(d + pi * W, g + pi * 4 * W, g + pi * 4 * W + 2 * W, W);
}

/* dtable[ids[i]] += dy[i] with i in order: a repeated id sums its rows in
 * the order they appear. Threads own column blocks, never rows, so each
 * element's sum has the same order whatever the thread count. */
void sdc_cpu_embedding_backward(sdc_tensor *dtable, const sdc_tensor *dy, const int32_t *ids, int64_t n, int64_t D) {
    float *t = cpu_f32(dtable);
    const float *g = cpu_f32(dy);
    int64_t nb = (D + 255) / 256;
#pragma omp parallel for schedule(static) if (n * D > SDC_CPU_PAR_MIN)
    for (int64_t jb = 0; jb < nb; jb++) {
        int64_t j0 = jb * 256, m = D - j0 < 256 ? D - j0 : 256;
        for (int64_t i = 0; i < n; i++) {
            float *tr = t + (int64_t)ids[i] * D + j0;
            const float *gr = g + i * D + j0;
            for (int64_t j = 0; j < m; j++) tr[j] += gr[j];
        }
    }
}
