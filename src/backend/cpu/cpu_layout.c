/* Data movement: concat/slice along the middle axis, batched transpose,
 * nearest 2× upsampling, embedding gather, host copies. */
#include "backend/cpu/cpu_ops.h"

void sdc_cpu_concat(sdc_tensor *out, const sdc_tensor *a, const sdc_tensor *b, int64_t O, int64_t Ca, int64_t Cb,
                    int64_t S) {
    float *y = cpu_f32(out);
    const float *as = cpu_f32(a), *bs = cpu_f32(b);
    int64_t na = Ca * S, nb = Cb * S;
    /* out[o] = a[o] ‖ b[o]; each piece is one contiguous copy */
#pragma omp parallel for schedule(static) if (O * (na + nb) > SDC_CPU_PAR_MIN)
    for (int64_t p = 0; p < 2 * O; p++) {
        int64_t o = p / 2;
        if (p % 2 == 0)
            memcpy(y + o * (na + nb), as + o * na, (size_t)na * sizeof(float));
        else
            memcpy(y + o * (na + nb) + na, bs + o * nb, (size_t)nb * sizeof(float));
    }
}

void sdc_cpu_slice(sdc_tensor *out, const sdc_tensor *x, int64_t O, int64_t C, int64_t S, int64_t c0, int64_t n) {
    float *y = cpu_f32(out);
    const float *xs = cpu_f32(x);
#pragma omp parallel for schedule(static) if (O * n * S > SDC_CPU_PAR_MIN)
    for (int64_t o = 0; o < O; o++) memcpy(y + o * n * S, xs + (o * C + c0) * S, (size_t)(n * S) * sizeof(float));
}

/* x [B,R,C] → out [B,C,R] in 8×8 tiles: small enough that the 8 strided
 * rows (often 2^k floats apart) do not evict each other from L1; measured
 * fastest of 8/16/32/64 */
#define TT 8
void sdc_cpu_transpose(sdc_tensor *out, const sdc_tensor *x, int64_t B, int64_t R, int64_t C) {
    float *y = cpu_f32(out);
    const float *xs = cpu_f32(x);
    int64_t tr = (R + TT - 1) / TT, tc = (C + TT - 1) / TT;
#pragma omp parallel for schedule(static) if (B * R * C > SDC_CPU_PAR_MIN)
    for (int64_t t = 0; t < B * tr * tc; t++) {
        int64_t b = t / (tr * tc), r0 = (t / tc) % tr * TT, c0 = t % tc * TT;
        int64_t r1 = r0 + TT < R ? r0 + TT : R, c1 = c0 + TT < C ? c0 + TT : C;
        const float *xb = xs + b * R * C;
        float *yb = y + b * R * C;
        for (int64_t c = c0; c < c1; c++)
            for (int64_t r = r0; r < r1; r++) yb[c * R + r] = xb[r * C + c];
    }
}

void sdc_cpu_upsample2x(sdc_tensor *out, const sdc_tensor *x, int64_t B, int64_t C, int64_t H, int64_t W) {
    float *y = cpu_f32(out);
    const float *xs = cpu_f32(x);
    /* out[p, 2i+a, 2j+b] = x[p, i, j]: build row 2i, copy it to row 2i+1 */
#pragma omp parallel for schedule(static) if (B * C * H * W > SDC_CPU_PAR_MIN / 4)
    for (int64_t pi = 0; pi < B * C * H; pi++) {
        const float *xr = xs + pi * W;
        float *yr = y + pi * 4 * W;
        for (int64_t j = 0; j < W; j++) yr[2 * j] = yr[2 * j + 1] = xr[j];
        memcpy(yr + 2 * W, yr, (size_t)(2 * W) * sizeof(float));
    }
}

void sdc_cpu_embedding(sdc_tensor *out, const sdc_tensor *table, const int32_t *ids, int64_t n, int64_t D) {
    float *y = cpu_f32(out);
    const float *ts = cpu_f32(table);
    for (int64_t i = 0; i < n; i++) memcpy(y + i * D, ts + (int64_t)ids[i] * D, (size_t)D * sizeof(float));
}

void sdc_cpu_upload(sdc_tensor *dst, const float *src) {
    memcpy(cpu_f32(dst), src, (size_t)sdc_tensor_numel(dst) * sizeof(float));
}

void sdc_cpu_download(float *dst, const sdc_tensor *src) {
    memcpy(dst, cpu_f32(src), (size_t)sdc_tensor_numel(src) * sizeof(float));
}
