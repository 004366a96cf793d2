/* Fused attention backward for x86-64 with AVX2+FMA: the fast path of
 * sdc_cpu_attention_backward (cpu_backward_attention.c keeps the portable
 * sgemm path and the math).
 *
 * Why not sgemm: the products are thin (D = 40..160 on one side), so a
 * threaded sgemm per (batch, head, band) spends its time packing and scales
 * poorly, and the row work between the products would alternate OpenMP and
 * OpenBLAS threads hundreds of times per call. Here one OpenMP loop runs
 * over tasks (batch, head, split of ≤ SPLIT query rows), each single-threaded
 * with no BLAS call. A task owns dQ of its rows and its own share of the
 * head's dKᵀ, dVᵀ; the shares are then summed over the splits in order. The
 * number of splits depends on Tq alone, so every sum has one fixed order
 * whatever the thread count. A task walks its query rows in bands of RB:
 *   S  = (scale·Q)·Kᵀ              P = softmax(S) (two passes: max, exp/sum)
 *   dVᵀ += dOᵀ·P                   dP = dO·Vᵀ
 *   dS  = P ⊙ (dP − δ), δ = Σ_j P·dP
 *   dKᵀ += (scale·Q)ᵀ·dS           dQ = scale·dS·K
 * all through one register-tile kernel, C[4][8·NV] (+)= A[4][k]·B[k][8·NV],
 * on operands packed so that tiles are full: K and V as 24-key panels
 * [D][24] (shared, packed once), Q and dO bands as rows and as transposes,
 * dKᵀ, dVᵀ as [D↑4][Tk↑24] per task, summed and transposed at the end.
 * Memory: the packed K/V (about 3× the size of k), the tasks' dKᵀ, dVᵀ
 * shares (2 × splits × the size of k: 4 splits at T = 4096), and per
 * thread two score bands RB × Tk. */
#include "backend/cpu/cpu_ops.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include "backend/cpu/cpu_avx2.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define MR 4  /* rows of a tile */
#define NP 24 /* keys per panel: a tile's 3 vectors */
#define RB 32 /* query rows per band (a multiple of MR) */
#define KB 256 /* keys per block of the dQ product (its K rows stay in L1/L2) */
#define SPLIT 1024 /* query rows per task at most (a multiple of RB) */

/* C[r][0..8·NV) = (acc ? C[r] : 0) + Σ_{k<K} A[r·lda + k]·B[k·ldb + 0..8·NV), r < 4 */
#define TILE(NV)                                                                                               \
    AVX2 static void tile_##NV(const float *A, int64_t lda, const float *B, int64_t ldb, int64_t K, float *C,   \
                               int64_t ldc, int acc) {                                                         \
        __m256 c[MR][NV];                                                                                      \
        _Pragma("GCC unroll 4") for (int r = 0; r < MR; r++) _Pragma("GCC unroll 3") for (int v = 0; v < NV; v++) \
            c[r][v] = acc ? _mm256_loadu_ps(C + r * ldc + 8 * v) : _mm256_setzero_ps();                      \
        const float *a0 = A, *a1 = A + lda, *a2 = A + 2 * lda, *a3 = A + 3 * lda;                              \
        for (int64_t k = 0; k < K; k++) {                                                                      \
            __m256 b[NV];                                                                                      \
            _Pragma("GCC unroll 3") for (int v = 0; v < NV; v++) b[v] = _mm256_loadu_ps(B + k * ldb + 8 * v);  \
            __m256 x0 = _mm256_broadcast_ss(a0 + k), x1 = _mm256_broadcast_ss(a1 + k);                         \
            __m256 x2 = _mm256_broadcast_ss(a2 + k), x3 = _mm256_broadcast_ss(a3 + k);                         \
            _Pragma("GCC unroll 3") for (int v = 0; v < NV; v++) {                                             \
                c[0][v] = _mm256_fmadd_ps(x0, b[v], c[0][v]);                                                  \
                c[1][v] = _mm256_fmadd_ps(x1, b[v], c[1][v]);                                                  \
                c[2][v] = _mm256_fmadd_ps(x2, b[v], c[2][v]);                                                  \
                c[3][v] = _mm256_fmadd_ps(x3, b[v], c[3][v]);                                                  \
            }                                                                                                  \
        }                                                                                                      \
        _Pragma("GCC unroll 4") for (int r = 0; r < MR; r++) _Pragma("GCC unroll 3") for (int v = 0; v < NV; v++) \
            _mm256_storeu_ps(C + r * ldc + 8 * v, c[r][v]);                                                    \
    }
TILE(1)
TILE(2)
TILE(3)

AVX2 static void tile(int nv, const float *A, int64_t lda, const float *B, int64_t ldb, int64_t K, float *C,
                      int64_t ldc, int acc) {
    switch (nv) {
    case 1: tile_1(A, lda, B, ldb, K, C, ldc, acc); break;
    case 2: tile_2(A, lda, B, ldb, K, C, ldc, acc); break;
    default: tile_3(A, lda, B, ldb, K, C, ldc, acc); break;
    }
}

/* horizontal max / sum of 8 lanes, in a fixed order */
AVX2 static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}


/* p[0..n) (n a multiple of 8) ← softmax of p[0..lim), 0 beyond; lim ≥ 1.
 * The sum is kept in 8 lanes and added in a fixed order. */
AVX2 static void softmax_row(float *p, int64_t lim, int64_t n) {
    int64_t l8 = lim / 8 * 8;
    __m256 vm = _mm256_set1_ps(p[0]);
    for (int64_t j = 0; j < l8; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(p + j));
    float m = hmax8(vm);
    for (int64_t j = l8; j < lim; j++) m = p[j] > m ? p[j] : m;
    __m256 vmx = _mm256_set1_ps(m), vs = _mm256_setzero_ps();
    for (int64_t j = 0; j < l8; j += 8) {
        __m256 e = exp8_nonpos(_mm256_sub_ps(_mm256_loadu_ps(p + j), vmx));
        _mm256_storeu_ps(p + j, e);
        vs = _mm256_add_ps(vs, e);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, vs);
    float s = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    for (int64_t j = l8; j < lim; j++) {
        float e = cpu_expf(p[j] - m);
        p[j] = e;
        s += e;
    }
    __m256 inv = _mm256_set1_ps(1.0f / s);
    for (int64_t j = 0; j < l8; j += 8) _mm256_storeu_ps(p + j, _mm256_mul_ps(_mm256_loadu_ps(p + j), inv));
    for (int64_t j = l8; j < lim; j++) p[j] *= 1.0f / s;
    for (int64_t j = lim; j < n; j++) p[j] = 0.0f;
}

/* p ← p ⊙ (dp − δ), δ = Σ p·dp (in double, 4 lanes added in a fixed order); n a multiple of 8 */
AVX2 static void dsoftmax_row(float *p, const float *dp, int64_t n) {
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    for (int64_t j = 0; j < n; j += 8) {
        __m256 x = _mm256_mul_ps(_mm256_loadu_ps(p + j), _mm256_loadu_ps(dp + j));
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(x)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
    }
    double l[4];
    _mm256_storeu_pd(l, _mm256_add_pd(a0, a1));
    __m256 d = _mm256_set1_ps((float)((l[0] + l[1]) + (l[2] + l[3])));
    for (int64_t j = 0; j < n; j += 8) {
        __m256 x = _mm256_loadu_ps(p + j);
        _mm256_storeu_ps(p + j, _mm256_mul_ps(x, _mm256_sub_ps(_mm256_loadu_ps(dp + j), d)));
    }
}

typedef struct bwd_geom {
    int64_t B, Tq, Tk, H, D, HD;
    int64_t Dp, D4, Tkp; /* D up to 8 and to 4, Tk up to NP */
    float scale;
    int causal;
} bwd_geom;

/* Per (batch, head) bh: KT and VT as panels [Tkp/NP][D][NP], K as rows [Tkp][Dp] (zero-padded). */
static void pack_kv(float *kt, float *vt, float *kr, const float *k, const float *v, const bwd_geom *g) {
    int64_t npan = g->Tkp / NP;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < g->B * g->H * npan; t++) {
        int64_t bh = t / npan, p = t % npan, b = bh / g->H, h = bh % g->H;
        float *ktp = kt + (bh * g->Tkp + p * NP) * g->D, *vtp = vt + (bh * g->Tkp + p * NP) * g->D;
        float *krp = kr + (bh * g->Tkp + p * NP) * g->Dp;
        for (int64_t jj = 0; jj < NP; jj++) {
            int64_t j = p * NP + jj;
            const float *ks = k + (b * g->Tk + j) * g->HD + h * g->D, *vs = v + (b * g->Tk + j) * g->HD + h * g->D;
            for (int64_t d = 0; d < g->D; d++) {
                ktp[d * NP + jj] = j < g->Tk ? ks[d] : 0.0f;
                vtp[d * NP + jj] = j < g->Tk ? vs[d] : 0.0f;
            }
            for (int64_t d = 0; d < g->Dp; d++) krp[jj * g->Dp + d] = j < g->Tk && d < g->D ? ks[d] : 0.0f;
        }
    }
}

/* Per-thread floats: P and dP bands, Q/dO bands as rows [RB][D] and
 * transposed [D4][RB], the dQ band [RB][Dp]. */
static int64_t thread_floats(const bwd_geom *g) { return 2 * RB * g->Tkp + 2 * RB * g->D + 2 * g->D4 * RB + RB * g->Dp; }

/* Key columns [0, n) of a band product over panels: C[r][j] = Σ_d A[r][d]·panel[d][j] */
AVX2 static void scores(const float *A, int64_t rows, const float *panels, int64_t D, int64_t n, float *C,
                        int64_t ldc) {
    for (int64_t j0 = 0; j0 < n; j0 += NP)
        for (int64_t r = 0; r < rows; r += MR) tile_3(A + r * D, D, panels + j0 * D, NP, D, C + r * ldc + j0, ldc, 0);
}

/* One task: query rows [ia, ib) of head h of batch b; dQ for those rows,
 * and this split's share of dKᵀ, dVᵀ ([D4][Tkp] each) summed in band order. */
AVX2 static void backward_rows(float *dq, float *dKT, float *dVT, const float *dout, const float *q, const float *kt,
                               const float *vt, const float *kr, float *ws, const bwd_geom *g, int64_t b, int64_t h,
                               int64_t ia, int64_t ib) {
    const int64_t D = g->D, D4 = g->D4, Dp = g->Dp, Tkp = g->Tkp, HD = g->HD;
    float *P = ws, *dP = P + RB * Tkp, *Qb = dP + RB * Tkp, *Ob = Qb + RB * D, *QT = Ob + RB * D, *OT = QT + D4 * RB;
    float *dQb = OT + D4 * RB;
    int64_t bh = b * g->H + h;
    const float *kth = kt + bh * Tkp * D, *vth = vt + bh * Tkp * D, *krh = kr + bh * Tkp * Dp;
    if (dKT) memset(dKT, 0, (size_t)(D4 * Tkp) * sizeof(float)); /* NULL when not wanted */
    if (dVT) memset(dVT, 0, (size_t)(D4 * Tkp) * sizeof(float));
    memset(QT, 0, (size_t)(2 * D4 * RB) * sizeof(float));
    for (int64_t i0 = ia; i0 < ib; i0 += RB) {
        int64_t nr = ib - i0 < RB ? ib - i0 : RB, rows = (nr + MR - 1) / MR * MR;
        int64_t nk = g->causal && i0 + nr < g->Tk ? i0 + nr : g->Tk, nkp = (nk + NP - 1) / NP * NP;
        /* pack scale·Q and dO rows (zero rows past nr) and their transposes */
        for (int64_t r = 0; r < RB; r++) {
            int64_t row = (b * g->Tq + i0 + (r < nr ? r : 0)) * HD + h * D;
            for (int64_t d = 0; d < D; d++) {
                float qv = r < nr ? q[row + d] * g->scale : 0.0f, ov = r < nr ? dout[row + d] : 0.0f;
                Qb[r * D + d] = QT[d * RB + r] = qv;
                Ob[r * D + d] = OT[d * RB + r] = ov;
            }
        }
        /* S = (scale·Q)·Kᵀ, then P row by row */
        scores(Qb, rows, kth, D, nkp, P, Tkp);
        for (int64_t r = 0; r < nr; r++) {
            int64_t lim = g->causal && i0 + r + 1 < nk ? i0 + r + 1 : nk;
            softmax_row(P + r * Tkp, lim, nkp);
        }
        for (int64_t r = nr; r < rows; r++) memset(P + r * Tkp, 0, (size_t)nkp * sizeof(float));
        /* dVᵀ[d][j] += Σ_r dO[r][d]·P[r][j] */
        if (dVT)
            for (int64_t j0 = 0; j0 < nkp; j0 += NP)
                for (int64_t d = 0; d < D4; d += MR)
                    tile_3(OT + d * RB, RB, P + j0, Tkp, nr, dVT + d * Tkp + j0, Tkp, 1);
        if (!dq && !dKT) continue;
        /* dP = dO·Vᵀ, dS = P ⊙ (dP − δ) into P */
        scores(Ob, rows, vth, D, nkp, dP, Tkp);
        for (int64_t r = 0; r < rows; r++) dsoftmax_row(P + r * Tkp, dP + r * Tkp, nkp);
        /* dKᵀ[d][j] += Σ_r (scale·Q)[r][d]·dS[r][j] */
        if (dKT)
            for (int64_t j0 = 0; j0 < nkp; j0 += NP)
                for (int64_t d = 0; d < D4; d += MR)
                    tile_3(QT + d * RB, RB, P + j0, Tkp, nr, dKT + d * Tkp + j0, Tkp, 1);
        if (!dq) continue;
        /* dQ = dS·K (·scale on the way out), key blocks of KB, column chunks of ≤ 3 vectors */
        for (int64_t k0 = 0; k0 < nkp; k0 += KB) {
            int64_t kn = nkp - k0 < KB ? nkp - k0 : KB;
            for (int64_t r = 0; r < rows; r += MR)
                for (int64_t c0 = 0; c0 < Dp; c0 += 24) {
                    int nv = Dp - c0 >= 24 ? 3 : (int)((Dp - c0) / 8);
                    tile(nv, P + r * Tkp + k0, Tkp, krh + k0 * Dp + c0, Dp, kn, dQb + r * Dp + c0, Dp, k0 > 0);
                }
        }
        for (int64_t r = 0; r < nr; r++) {
            float *o = dq + (b * g->Tq + i0 + r) * HD + h * D;
            for (int64_t d = 0; d < D; d++) o[d] = dQb[r * Dp + d] * g->scale;
        }
    }
}

/* dk[b, j, h·D + d] = Σ_s part_s[d][j] over the query splits s in order
 * (part = dKᵀ or dVᵀ of (b, h, s), each [D4][Tkp]) */
static void reduce_splits(float *out, const float *part, int64_t split_stride, int64_t qs, const bwd_geom *g) {
    int64_t nj = (g->Tk + 63) / 64;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < g->B * g->H * nj; t++) {
        int64_t bh = t / nj, b = bh / g->H, h = bh % g->H, j0 = t % nj * 64, j1 = j0 + 64 < g->Tk ? j0 + 64 : g->Tk;
        const float *pb = part + bh * qs * split_stride;
        for (int64_t j = j0; j < j1; j++) {
            float *o = out + (b * g->Tk + j) * g->HD + h * g->D;
            for (int64_t d = 0; d < g->D; d++) {
                float s = pb[d * g->Tkp + j];
                for (int64_t sp = 1; sp < qs; sp++) s += pb[sp * split_stride + d * g->Tkp + j];
                o[d] = s;
            }
        }
    }
}

int sdc_cpu_attention_backward_fused(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                     const float *k, const float *v, int64_t B, int64_t Tq, int64_t Tk, int heads,
                                     int64_t D, float scale, int causal) {
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0;
    bwd_geom g = {.B = B, .Tq = Tq, .Tk = Tk, .H = heads, .D = D, .HD = heads * D, .scale = scale, .causal = causal};
    g.Dp = (D + 7) / 8 * 8;
    g.D4 = (D + MR - 1) / MR * MR;
    g.Tkp = (Tk + NP - 1) / NP * NP;
    int nthreads = 1;
#ifdef _OPENMP
    nthreads = omp_get_max_threads();
#endif
    int64_t per_bh = g.Tkp * (2 * D + g.Dp);
    float *kt = sdc_cpu_scratch(0, (size_t)(B * heads * per_bh));
    float *vt = kt + B * heads * g.Tkp * D, *kr = vt + B * heads * g.Tkp * D;
    pack_kv(kt, vt, kr, k, v, &g);
    /* query splits per head: a count fixed by Tq (never by the thread
     * count), so that few heads still make enough tasks */
    int64_t qs = (Tq + SPLIT - 1) / SPLIT, rows_per = (Tq + qs - 1) / qs;
    rows_per = (rows_per + RB - 1) / RB * RB;
    qs = (Tq + rows_per - 1) / rows_per;
    int64_t split_stride = 2 * g.D4 * g.Tkp, ntask = B * heads * qs;
    int64_t per = (thread_floats(&g) + 15) / 16 * 16;
    float *part = sdc_cpu_scratch(1, (size_t)(ntask * split_stride + per * nthreads));
    float *ws = part + ntask * split_stride;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t t = 0; t < ntask; t++) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        int64_t bh = t / qs, ia = t % qs * rows_per, ib = ia + rows_per < Tq ? ia + rows_per : Tq;
        float *pt = part + t * split_stride;
        backward_rows(dq, dk ? pt : NULL, dv ? pt + split_stride / 2 : NULL, dout, q, kt, vt, kr, ws + tid * per,
                      &g, bh / heads, bh % heads, ia, ib);
    }
    if (dk) reduce_splits(dk, part, split_stride, qs, &g);
    if (dv) reduce_splits(dv, part + split_stride / 2, split_stride, qs, &g);
    return 1;
}

#else
int sdc_cpu_attention_backward_fused(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                     const float *k, const float *v, int64_t B, int64_t Tq, int64_t Tk, int heads,
                                     int64_t D, float scale, int causal) {
    (void)dq, (void)dk, (void)dv, (void)dout, (void)q, (void)k, (void)v, (void)B, (void)Tq, (void)Tk;
    (void)heads, (void)D, (void)scale, (void)causal;
    return 0;
}
#endif
