/* Scaled dot-product attention. On x86-64 with AVX2+FMA the fused kernel of
 * cpu_attention_fused.c runs; this file holds the dispatch and the portable
 * path, per (batch, head) and per band of query rows so the scores never
 * exceed one band × Tk (never Tq×Tk for all heads):
 *   S = scale·Q_band·Kᵀ          (sgemm; a head's rows have stride H·D)
 *   P = exp(S − rowmax), l = Σ P  (OpenMP over rows, fp32)
 *   O_band = P·V / l              (sgemm, then a per-row scale)
 * With causal masking query i sees keys j ≤ i, so a band of rows [i0, i1)
 * only needs keys [0, i1). */
#include <cblas.h>

#include "backend/cpu/cpu_ops.h"

/* The score band holds at most this many floats (4 MiB, about an L2/L3 slice). */
int64_t sdc_cpu_score_max_floats = (int64_t)1 << 20;
int sdc_cpu_attention_portable = 0;

/* p[0..n) = exp(p − max) over the first `lim` entries, 0 after; returns 1/Σ
 * (the normalisation is left to the caller; the backward reuses this) */
SDC_CPU_HOT float cpu_softmax_exp_row(float *p, int64_t lim, int64_t n) {
    float m = p[0];
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < lim; j++) m = p[j] > m ? p[j] : m;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < lim; j++) {
        float e = cpu_expf(p[j] - m);
        p[j] = e;
        s += e;
    }
    for (int64_t j = lim; j < n; j++) p[j] = 0.0f;
    return 1.0f / s;
}

void sdc_cpu_attention(sdc_tensor *out, const sdc_tensor *q, const sdc_tensor *k, const sdc_tensor *v, int64_t B,
                       int64_t Tq, int64_t Tk, int heads, int64_t head_dim, float scale, int causal) {
    float *o = cpu_f32(out);
    const float *qs = cpu_f32(q), *ks = cpu_f32(k), *vs = cpu_f32(v);
    const int64_t D = head_dim, HD = (int64_t)heads * D;
    SDC_ASSERT(Tq > 0 && Tk > 0);
    if (!sdc_cpu_attention_portable && sdc_cpu_attention_fused(o, qs, ks, vs, B, Tq, Tk, heads, D, scale, causal))
        return;
    int64_t band = sdc_cpu_score_max_floats / Tk;
    if (band < 16) band = 16;
    if (band > Tq) band = Tq;
    float *S = sdc_cpu_scratch(1, (size_t)(band * Tk + band));
    float *inv = S + band * Tk; /* 1/Σ per row of the band */
    for (int64_t b = 0; b < B; b++)
        for (int h = 0; h < heads; h++) {
            const float *qh = qs + b * Tq * HD + h * D, *kh = ks + b * Tk * HD + h * D;
            const float *vh = vs + b * Tk * HD + h * D;
            float *oh = o + b * Tq * HD + h * D;
            for (int64_t i0 = 0; i0 < Tq; i0 += band) {
                int64_t nr = Tq - i0 < band ? Tq - i0 : band;
                int64_t nk = causal && i0 + nr < Tk ? i0 + nr : Tk; /* keys this band can see */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)nr, (blasint)nk, (blasint)D, scale,
                            qh + i0 * HD, (blasint)HD, kh, (blasint)HD, 0.0f, S, (blasint)nk);
#pragma omp parallel for schedule(static) if (nr * nk > SDC_CPU_PAR_MIN)
                for (int64_t r = 0; r < nr; r++) {
                    int64_t lim = causal && i0 + r + 1 < nk ? i0 + r + 1 : nk;
                    inv[r] = cpu_softmax_exp_row(S + r * nk, lim, nk);
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)nr, (blasint)D, (blasint)nk, 1.0f, S,
                            (blasint)nk, vh, (blasint)HD, 0.0f, oh + i0 * HD, (blasint)HD);
                for (int64_t r = 0; r < nr; r++)
                    for (int64_t d = 0; d < D; d++) oh[(i0 + r) * HD + d] *= inv[r];
            }
        }
}
