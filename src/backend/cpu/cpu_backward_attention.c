/* Backward of scaled dot-product attention. On x86-64 with AVX2+FMA the
 * fused kernel of cpu_backward_attention_fused.c runs; this file holds the
 * dispatch and the portable path: per (batch, head) and per band
 * of query rows (the forward's banding: scores never exceed band × Tk). The
 * softmax is recomputed, not stored:
 *   P   = softmax(scale·Q·Kᵀ)                   (row-wise, fp32 with exp)
 *   dV += Pᵀ·dO
 *   dP  = dO·Vᵀ
 *   dS  = P ⊙ (dP − δ),  δ_i = Σ_j P_ij·dP_ij   (= dO_i·O_i, O = P·V)
 *   dQ  = scale·dS·K
 *   dK += scale·dSᵀ·Q
 * (from S = scale·QKᵀ, P = softmax(S): ∂L/∂S_ij = P_ij·(dP_ij − Σ_k P_ik·dP_ik)).
 * dK and dV are assigned by the op: zeroed, then each band adds its share in
 * band order, so the sums have a fixed order. Products are sgemm calls (a
 * head's rows have stride H·D, which sgemm's leading dimension expresses);
 * the row work between them is OpenMP over rows. */
#include <cblas.h>

#include "backend/cpu/cpu_ops.h"

/* p[0..n) = softmax of the first lim scores (the rest 0); normalized */
SDC_CPU_HOT static void softmax_row(float *p, int64_t lim, int64_t n) {
    float inv = cpu_softmax_exp_row(p, lim, n);
#pragma omp simd
    for (int64_t j = 0; j < lim; j++) p[j] *= inv;
}

/* p[j] ← p[j]·(dp[j] − δ), δ = Σ_j p[j]·dp[j] (in double) */
SDC_CPU_HOT static void dsoftmax_row(float *p, const float *dp, int64_t n) {
    double d = 0.0;
#pragma omp simd reduction(+ : d)
    for (int64_t j = 0; j < n; j++) d += (double)p[j] * dp[j];
    float df = (float)d;
#pragma omp simd
    for (int64_t j = 0; j < n; j++) p[j] = p[j] * (dp[j] - df);
}

void sdc_cpu_attention_backward(sdc_tensor *dq, sdc_tensor *dk, sdc_tensor *dv, const sdc_tensor *dout,
                                const sdc_tensor *q, const sdc_tensor *k, const sdc_tensor *v, int64_t B, int64_t Tq,
                                int64_t Tk, int heads, int64_t head_dim, float scale, int causal) {
    const float *qs = cpu_f32(q), *ks = cpu_f32(k), *vs = cpu_f32(v), *gs = cpu_f32(dout);
    float *dqs = dq ? cpu_f32(dq) : NULL, *dks = dk ? cpu_f32(dk) : NULL, *dvs = dv ? cpu_f32(dv) : NULL;
    const int64_t D = head_dim, HD = (int64_t)heads * D;
    SDC_ASSERT(Tq > 0 && Tk > 0);
    if (!dqs && !dks && !dvs) return;
    if (!sdc_cpu_attention_portable &&
        sdc_cpu_attention_backward_fused(dqs, dks, dvs, gs, qs, ks, vs, B, Tq, Tk, heads, D, scale, causal))
        return;
    if (dks) memset(dks, 0, (size_t)(B * Tk * HD) * sizeof(float));
    if (dvs) memset(dvs, 0, (size_t)(B * Tk * HD) * sizeof(float));
    int64_t band = sdc_cpu_score_max_floats / Tk;
    if (band < 16) band = 16;
    if (band > Tq) band = Tq;
    float *P = sdc_cpu_scratch(1, (size_t)(2 * band * Tk));
    float *dP = P + band * Tk;
    for (int64_t b = 0; b < B; b++)
        for (int h = 0; h < heads; h++) {
            int64_t oq = b * Tq * HD + h * D, ok = b * Tk * HD + h * D;
            const float *qh = qs + oq, *kh = ks + ok, *vh = vs + ok, *gh = gs + oq;
            for (int64_t i0 = 0; i0 < Tq; i0 += band) {
                int64_t nr = Tq - i0 < band ? Tq - i0 : band;
                int64_t nk = causal && i0 + nr < Tk ? i0 + nr : Tk; /* keys this band can see */
                const float *qb = qh + i0 * HD, *gb = gh + i0 * HD;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)nr, (blasint)nk, (blasint)D, scale, qb,
                            (blasint)HD, kh, (blasint)HD, 0.0f, P, (blasint)nk);
#pragma omp parallel for schedule(static) if (nr * nk > SDC_CPU_PAR_MIN)
                for (int64_t r = 0; r < nr; r++) {
                    int64_t lim = causal && i0 + r + 1 < nk ? i0 + r + 1 : nk;
                    softmax_row(P + r * nk, lim, nk);
                }
                if (dvs) /* dV[0:nk] += Pᵀ·dO_band */
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)nk, (blasint)D, (blasint)nr, 1.0f, P,
                                (blasint)nk, gb, (blasint)HD, 1.0f, dvs + ok, (blasint)HD);
                if (!dqs && !dks) continue;
                /* dP = dO_band·V[0:nk]ᵀ, then dS into P */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)nr, (blasint)nk, (blasint)D, 1.0f, gb,
                            (blasint)HD, vh, (blasint)HD, 0.0f, dP, (blasint)nk);
#pragma omp parallel for schedule(static) if (nr * nk > SDC_CPU_PAR_MIN)
                for (int64_t r = 0; r < nr; r++) dsoftmax_row(P + r * nk, dP + r * nk, nk);
                if (dqs) /* dQ_band = scale·dS·K[0:nk] */
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)nr, (blasint)D, (blasint)nk, scale,
                                P, (blasint)nk, kh, (blasint)HD, 0.0f, dqs + oq + i0 * HD, (blasint)HD);
                if (dks) /* dK[0:nk] += scale·dSᵀ·Q_band */
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)nk, (blasint)D, (blasint)nr, scale, P,
                                (blasint)nk, qb, (blasint)HD, 1.0f, dks + ok, (blasint)HD);
            }
        }
}
