/* Fused attention for x86-64 with AVX2+FMA: the fast path of
 * sdc_cpu_attention (cpu_attention.c keeps the portable sgemm path).
 *
 * Why not sgemm here: with head_dim D = 40..160 the two products are thin
 * (K = D for Q·Kᵀ, N = D for P·V), so OpenBLAS spends its time zeroing and
 * packing the score band, and a threaded sgemm per (batch, head, band)
 * scales poorly past a few cores. Instead one OpenMP loop runs over tasks
 * (batch, head, block of RB query rows), each single-threaded and with no
 * BLAS call inside, in the flash-attention form: for each block of JB keys
 *   S = scale·Q·Kᵀ                          (6×16 register tiles)
 *   m' = max(m, rowmax S), α = e^{m−m'}
 *   P = e^{S−m'}, l = α·l + Σ P, O = α·O    (fp32, numerically stable)
 *   O += P·V                                (4×(8·nv) register tiles)
 * and finally out = O / l. The scores never exceed RB×JB floats per thread.
 * K and V are first repacked per head (K as 16-key panels [D][16], V as rows
 * padded to a multiple of 8) so the inner loops read contiguous memory.
 *
 * Every output row is owned by one task and its sums run in a fixed order,
 * so results do not depend on the thread schedule. */
#include "backend/cpu/cpu_ops.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include "backend/cpu/cpu_avx2.h"
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define MR 6  /* query rows of a Q·Kᵀ tile */
#define NR 16 /* keys of a Q·Kᵀ tile (one packed panel) */
#define RB 48 /* query rows per task: a multiple of 12 (MR and PR below) */

/* S[r][0..16) = scale·Σ_d q[r][d]·kp[d][0..16) for the MR rows q[r] */
AVX2 static void qk_tile(const float *const *q, const float *kp, int64_t D, float scale, float *s, int64_t lds) {
    __m256 c[MR][2];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) c[r][0] = c[r][1] = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; d++) {
        __m256 b0 = _mm256_loadu_ps(kp + d * NR), b1 = _mm256_loadu_ps(kp + d * NR + 8);
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            __m256 a = _mm256_broadcast_ss(q[r] + d);
            c[r][0] = _mm256_fmadd_ps(a, b0, c[r][0]);
            c[r][1] = _mm256_fmadd_ps(a, b1, c[r][1]);
        }
    }
    __m256 sc = _mm256_set1_ps(scale);
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
        _mm256_storeu_ps(s + r * lds, _mm256_mul_ps(c[r][0], sc));
        _mm256_storeu_ps(s + r * lds + 8, _mm256_mul_ps(c[r][1], sc));
    }
}

/* o[r][0..8·NV) += Σ_j p[r][j]·v[j][0..8·NV) for the PR rows p[r], o[r]
 * (rows of v `ldv` apart). One function per NV so the PR·NV ≤ 12
 * accumulators live in registers; each v load feeds PR FMAs. */
#define PR 4
#define PV_TILE(NV)                                                                                             \
    AVX2 static void pv_tile_##NV(const float *const *p, const float *v, int64_t ldv, int64_t nj, float *const *o) { \
        __m256 a[PR][NV];                                                                                       \
        _Pragma("GCC unroll 4") for (int r = 0; r < PR; r++) _Pragma("GCC unroll 4") for (int c = 0; c < NV; c++) \
            a[r][c] = _mm256_loadu_ps(o[r] + 8 * c);                                                            \
        for (int64_t j = 0; j < nj; j++) {                                                                      \
            const float *vr = v + j * ldv;                                                                      \
            __m256 b[NV];                                                                                       \
            _Pragma("GCC unroll 4") for (int c = 0; c < NV; c++) b[c] = _mm256_loadu_ps(vr + 8 * c);            \
            _Pragma("GCC unroll 4") for (int r = 0; r < PR; r++) {                                              \
                __m256 x = _mm256_broadcast_ss(p[r] + j);                                                       \
                _Pragma("GCC unroll 4") for (int c = 0; c < NV; c++) a[r][c] = _mm256_fmadd_ps(x, b[c], a[r][c]); \
            }                                                                                                   \
        }                                                                                                       \
        _Pragma("GCC unroll 4") for (int r = 0; r < PR; r++) _Pragma("GCC unroll 4") for (int c = 0; c < NV; c++) \
            _mm256_storeu_ps(o[r] + 8 * c, a[r][c]);                                                            \
    }
PV_TILE(1)
PV_TILE(2)
PV_TILE(3)

AVX2 static void pv_tile(int nv, const float *const *p, const float *v, int64_t ldv, int64_t nj, float *const *o) {
    switch (nv) {
    case 1: pv_tile_1(p, v, ldv, nj, o); break;
    case 2: pv_tile_2(p, v, ldv, nj, o); break;
    default: pv_tile_3(p, v, ldv, nj, o); break;
    }
}


/* horizontal max / sum of 8 lanes, in a fixed order */
AVX2 static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}
AVX2 static inline float hsum8(__m256 v) {
    __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    m = _mm_add_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

/* One row of the online softmax over a key block: s[0..lim) → e^{s−m'},
 * s[lim..jn) → 0; updates m and l and returns α = e^{m−m'} (the factor the
 * row's accumulated output must be scaled by). lim ≥ 1. */
AVX2 static float online_softmax_row(float *s, int64_t lim, int64_t jn, float *m, float *l) {
    int64_t l8 = lim / 8 * 8;
    __m256 vm = _mm256_set1_ps(s[0]);
    for (int64_t j = 0; j < l8; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(s + j));
    float mb = hmax8(vm);
    for (int64_t j = l8; j < lim; j++) mb = s[j] > mb ? s[j] : mb;
    float mn = mb > *m ? mb : *m;
    __m256 vmn = _mm256_set1_ps(mn), vs = _mm256_setzero_ps();
    for (int64_t j = 0; j < l8; j += 8) {
        __m256 e = exp8_nonpos(_mm256_sub_ps(_mm256_loadu_ps(s + j), vmn));
        _mm256_storeu_ps(s + j, e);
        vs = _mm256_add_ps(vs, e);
    }
    float sum = hsum8(vs);
    for (int64_t j = l8; j < lim; j++) {
        float e = cpu_expf(s[j] - mn);
        s[j] = e;
        sum += e;
    }
    for (int64_t j = lim; j < jn; j++) s[j] = 0.0f;
    float alpha = *m == -INFINITY ? 0.0f : cpu_expf(*m - mn);
    *m = mn;
    *l = *l * alpha + sum;
    return alpha;
}

AVX2 static void scale_row(float *o, int64_t n, float a) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) o[i] *= a;
}

typedef struct att_geom {
    int64_t B, Tq, Tk, H, D, HD;
    int64_t Dp, Tkp, JB, nblk; /* D and Tk padded to 8 and 16; keys per block; row blocks per head */
    int64_t nvec, nchunk;      /* D in 8-float vectors; column chunks of ≤ 3 vectors */
    float scale;
    int causal;
} att_geom;

/* Kp[bh][panel][d][16] and Vp[bh][j][Dp], zero-padded, for all (batch, head) */
static void pack_kv(float *kp, float *vp, const float *k, const float *v, const att_geom *g) {
    int64_t npanel = g->Tkp / NR;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < g->B * g->H * npanel; t++) {
        int64_t bh = t / npanel, p = t % npanel, b = bh / g->H, h = bh % g->H;
        float *kd = kp + (bh * g->Tkp + p * NR) * g->D;
        float *vd = vp + (bh * g->Tkp + p * NR) * g->Dp;
        for (int64_t jj = 0; jj < NR; jj++) {
            int64_t j = p * NR + jj;
            const float *kr = k + (b * g->Tk + j) * g->HD + h * g->D;
            const float *vr = v + (b * g->Tk + j) * g->HD + h * g->D;
            for (int64_t d = 0; d < g->D; d++) kd[d * NR + jj] = j < g->Tk ? kr[d] : 0.0f;
            for (int64_t d = 0; d < g->Dp; d++) vd[jj * g->Dp + d] = j < g->Tk && d < g->D ? vr[d] : 0.0f;
        }
    }
}

/* Per-thread scratch: scores RB×JB, output accumulators RB×Dp, m and l. */
static int64_t thread_floats(const att_geom *g) { return RB * g->JB + RB * g->Dp + 2 * RB; }

/* One task: query rows [i0, i0+nr) of head h of batch b. */
AVX2 static void attend_block(float *out, const float *q, const float *kp, const float *vp, const float *zero,
                              float *ws, const att_geom *g, int64_t b, int64_t h, int64_t i0) {
    int64_t nr = g->Tq - i0 < RB ? g->Tq - i0 : RB;
    float *S = ws, *O = S + RB * g->JB, *m = O + RB * g->Dp, *l = m + RB;
    const float *qr[RB]; /* padding rows read zeros and are never stored */
    for (int64_t r = 0; r < RB; r++) {
        qr[r] = r < nr ? q + (b * g->Tq + i0 + r) * g->HD + h * g->D : zero;
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    memset(O, 0, (size_t)(RB * g->Dp) * sizeof(float));
    int64_t bh = b * g->H + h;
    const float *kh = kp + bh * g->Tkp * g->D, *vh = vp + bh * g->Tkp * g->Dp;
    /* keys any row of this block can see; causal rows see j ≤ i */
    int64_t nk = g->causal && i0 + nr < g->Tk ? i0 + nr : g->Tk;
    /* rows computed: a multiple of MR and PR (padding rows read the zero
     * query row, so their scores are 0 and they add nothing) */
    int64_t rows = (nr + 11) / 12 * 12;
    for (int64_t kb = 0; kb < nk; kb += g->JB) {
        int64_t jn = nk - kb < g->JB ? (nk - kb + NR - 1) / NR * NR : g->JB;
        for (int64_t p = 0; p < jn / NR; p++)
            for (int64_t r = 0; r < rows; r += MR)
                qk_tile(qr + r, kh + (kb + p * NR) * g->D, g->D, g->scale, S + r * g->JB + p * NR, g->JB);
        for (int64_t r = 0; r < nr; r++) {
            int64_t lim = nk - kb;
            if (g->causal && i0 + r + 1 - kb < lim) lim = i0 + r + 1 - kb;
            if (lim > jn) lim = jn;
            if (lim <= 0) { /* a causal row with no key in this block */
                memset(S + r * g->JB, 0, (size_t)jn * sizeof(float));
                continue;
            }
            float alpha = online_softmax_row(S + r * g->JB, lim, jn, &m[r], &l[r]);
            if (alpha != 1.0f) scale_row(O + r * g->Dp, g->Dp, alpha);
        }
        int64_t c0 = 0;
        for (int64_t ch = 0; ch < g->nchunk; ch++) {
            /* split nvec vectors into nchunk near-equal chunks */
            int nv = (int)((g->nvec * (ch + 1)) / g->nchunk - (g->nvec * ch) / g->nchunk);
            for (int64_t r = 0; r < nr; r += PR) {
                const float *p[PR] = {S + r * g->JB, S + (r + 1) * g->JB, S + (r + 2) * g->JB, S + (r + 3) * g->JB};
                float *o[PR] = {O + r * g->Dp + c0, O + (r + 1) * g->Dp + c0, O + (r + 2) * g->Dp + c0,
                                O + (r + 3) * g->Dp + c0};
                pv_tile(nv, p, vh + kb * g->Dp + c0, g->Dp, jn, o);
            }
            c0 += 8 * nv;
        }
    }
    for (int64_t r = 0; r < nr; r++) {
        float *o = out + (b * g->Tq + i0 + r) * g->HD + h * g->D;
        float inv = 1.0f / l[r];
        for (int64_t d = 0; d < g->D; d++) o[d] = O[r * g->Dp + d] * inv;
    }
}

int sdc_cpu_attention_fused(float *out, const float *q, const float *k, const float *v, int64_t B, int64_t Tq,
                            int64_t Tk, int heads, int64_t D, float scale, int causal) {
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0;
    att_geom g = {.B = B, .Tq = Tq, .Tk = Tk, .H = heads, .D = D, .HD = heads * D, .scale = scale, .causal = causal};
    g.Dp = (D + 7) / 8 * 8;
    g.Tkp = (Tk + NR - 1) / NR * NR;
    g.nvec = g.Dp / 8;
    g.nchunk = (g.nvec + 2) / 3;
    /* keep a key block of K and of V (JB×D floats each) within ~64 KiB */
    g.JB = 16384 / g.Dp / NR * NR;
    if (g.JB < NR) g.JB = NR;
    if (g.JB > 256) g.JB = 256;
    if (g.JB > g.Tkp) g.JB = g.Tkp;
    g.nblk = (Tq + RB - 1) / RB;
    int nthreads = 1;
#ifdef _OPENMP
    nthreads = omp_get_max_threads();
#endif
    int64_t packed = B * heads * g.Tkp * (D + g.Dp);
    float *kp = sdc_cpu_scratch(0, (size_t)(packed + g.Dp));
    float *vp = kp + B * heads * g.Tkp * D, *zero = vp + B * heads * g.Tkp * g.Dp;
    memset(zero, 0, (size_t)g.Dp * sizeof(float));
    pack_kv(kp, vp, k, v, &g);
    int64_t per = (thread_floats(&g) + 15) / 16 * 16;
    float *ws = sdc_cpu_scratch(1, (size_t)(per * nthreads));
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t t = 0; t < B * heads * g.nblk; t++) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        int64_t bh = t / g.nblk;
        attend_block(out, q, kp, vp, zero, ws + tid * per, &g, bh / heads, bh % heads, (t % g.nblk) * RB);
    }
    return 1;
}

#else
int sdc_cpu_attention_fused(float *out, const float *q, const float *k, const float *v, int64_t B, int64_t Tq,
                            int64_t Tk, int heads, int64_t D, float scale, int causal) {
    (void)out, (void)q, (void)k, (void)v, (void)B, (void)Tq, (void)Tk, (void)heads, (void)D, (void)scale;
    (void)causal;
    return 0;
}
#endif
