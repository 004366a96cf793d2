/* Elementwise ops: activations, GEGLU, α·a+β·b, per-channel add, fill.
 * Each is an OpenMP loop over fixed chunks whose body is a vectorized kernel
 * (SDC_CPU_HOT clones; the OpenMP-outlined body itself is not cloned, so the
 * kernels live in their own functions). */
#include "backend/cpu/cpu_ops.h"

#define CHUNK 8192

/* act over y[0..n), in place; one switch per chunk, not per element */
SDC_CPU_HOT static void act_kernel(float *y, int64_t n, sdc_act act) {
    switch (act) {
    case SDC_ACT_SILU:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = y[i] * cpu_sigmoidf(y[i]);
        break;
    case SDC_ACT_GELU:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = cpu_gelu(y[i]);
        break;
    case SDC_ACT_GELU_TANH:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = cpu_gelu_tanh(y[i]);
        break;
    case SDC_ACT_QUICK_GELU:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = y[i] * cpu_sigmoidf(1.702f * y[i]);
        break;
    case SDC_ACT_NONE: break;
    }
}

void sdc_cpu_act_inplace(float *y, int64_t n, sdc_act act) { act_kernel(y, n, act); }

void sdc_cpu_activation(sdc_tensor *out, const sdc_tensor *x, sdc_act act) {
    float *y = cpu_f32(out);
    const float *xs = cpu_f32(x);
    int64_t n = sdc_tensor_numel(x);
    SDC_ASSERT(sdc_tensor_numel(out) == n);
#pragma omp parallel for schedule(static) if (n > SDC_CPU_PAR_MIN)
    for (int64_t c = 0; c < n; c += CHUNK) {
        int64_t m = n - c < CHUNK ? n - c : CHUNK;
        if (y != xs) memcpy(y + c, xs + c, (size_t)m * sizeof(float));
        act_kernel(y + c, m, act);
    }
}

/* out[i] = a[i]·gelu(g[i]) over one row piece */
SDC_CPU_HOT static void geglu_kernel(float *out, const float *a, const float *g, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) out[i] = a[i] * cpu_gelu(g[i]);
}

void sdc_cpu_geglu(sdc_tensor *out, const sdc_tensor *x, int64_t M, int64_t F) {
    float *y = cpu_f32(out);
    const float *xs = cpu_f32(x);
#pragma omp parallel for schedule(static) if (M * F > SDC_CPU_PAR_MIN)
    for (int64_t r = 0; r < M; r++) geglu_kernel(y + r * F, xs + r * 2 * F, xs + r * 2 * F + F, F);
}

SDC_CPU_HOT static void axpby_kernel(float *out, float alpha, const float *a, float beta, const float *b,
                                     int64_t n) {
    if (b) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) out[i] = alpha * a[i] + beta * b[i];
    } else {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) out[i] = alpha * a[i];
    }
}

void sdc_cpu_axpby(sdc_tensor *out, float alpha, const sdc_tensor *a, float beta, const sdc_tensor *b) {
    float *y = cpu_f32(out);
    const float *as = cpu_f32(a);
    const float *bs = b ? cpu_f32(b) : NULL;
    int64_t n = sdc_tensor_numel(a);
#pragma omp parallel for schedule(static) if (n > SDC_CPU_PAR_MIN)
    for (int64_t c = 0; c < n; c += CHUNK) {
        int64_t m = n - c < CHUNK ? n - c : CHUNK;
        axpby_kernel(y + c, alpha, as + c, beta, bs ? bs + c : NULL, m);
    }
}

SDC_CPU_HOT static void add_scalar_kernel(float *out, const float *x, float v, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) out[i] = x[i] + v;
}

void sdc_cpu_add_channel(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *v, int64_t O, int64_t C, int64_t S) {
    float *y = cpu_f32(out);
    const float *xs = cpu_f32(x), *vs = cpu_f32(v);
#pragma omp parallel for schedule(static) if (O * C * S > SDC_CPU_PAR_MIN)
    for (int64_t oc = 0; oc < O * C; oc++) add_scalar_kernel(y + oc * S, xs + oc * S, vs[oc], S);
}

void sdc_cpu_fill(sdc_tensor *out, float value) {
    float *y = cpu_f32(out);
    int64_t n = sdc_tensor_numel(out);
#pragma omp parallel for schedule(static) if (n > SDC_CPU_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = value;
}
