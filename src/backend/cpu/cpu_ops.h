/* Private to the CPU backend: the op functions behind the table in
 * cpu_backend.c, scratch buffers, and vectorizable scalar math.
 *
 * Threading strategy (one for the whole backend): OpenBLAS (the pthread
 * build) threads each sgemm itself, so sgemm is only ever called from outside
 * any OpenMP parallel region; our own loops (elementwise, norms, im2col,
 * softmax, transposes, the fused attention kernel) are `#pragma omp parallel
 * for` regions that contain no BLAS call. Nesting the two would oversubscribe
 * the cores (OpenMP threads × BLAS threads), and openblas_set_num_threads(1)
 * inside a region is a global switch in the pthread build, not a per-thread
 * one. (Linked against the OpenMP build of OpenBLAS the two share one pool.)
 *
 * Determinism: every reduction is owned by one thread (a row, a group, an
 * attention row block), so results never depend on the schedule. They may
 * differ in the last bits between thread counts where OpenBLAS blocks a
 * product differently. */
#ifndef SDC_BACKEND_CPU_CPU_OPS_H
#define SDC_BACKEND_CPU_CPU_OPS_H

#include <stdint.h>
#include <string.h>

#include "backend/backend.h"
#include "core/error.h"

/* NO_OMP=1 builds: the OpenMP pragmas are then unused hints, not errors. */
#ifndef _OPENMP
#pragma GCC diagnostic ignored "-Wunknown-pragmas"
#endif

/* Hot loops are compiled twice (AVX2 and the baseline) and picked at load
 * time, since the build has no -march. The ISO C mode (-std=c11) keeps
 * -ffp-contract=off, so both clones round identically on elementwise code.
 * no-trapping-math lets `c ? a : b` on floats become a vector blend (with FP
 * exceptions assumed unobserved, GCC will not compute both arms); it changes
 * no value. The OpenMP-outlined body of a parallel loop is not cloned, so hot
 * code lives in SDC_CPU_HOT functions called from the parallel loops. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define SDC_CPU_HOT __attribute__((target_clones("avx2", "default"), optimize("no-trapping-math")))
#elif defined(__GNUC__) && !defined(__clang__)
#define SDC_CPU_HOT __attribute__((optimize("no-trapping-math")))
#else
#define SDC_CPU_HOT
#endif

/* The math helpers below must inline into the vector loops (a call would
 * stop vectorization), whatever the size heuristics think. */
#define SDC_CPU_INLINE static inline __attribute__((always_inline))

/* Below this many elements an OpenMP region costs more than it saves. */
#define SDC_CPU_PAR_MIN 16384

static inline float *cpu_f32(const sdc_tensor *t) {
    SDC_ASSERT(t->dtype == SDC_F32 && t->device.type == SDC_CPU);
    return (float *)t->data;
}

/* A per-calling-thread scratch buffer of at least n floats, kept and grown
 * across calls (slot picks one of a few independent buffers); freed when the
 * thread exits. Not for use inside an OpenMP region. */
float *sdc_cpu_scratch(int slot, size_t n);
#define SDC_CPU_SCRATCH_SLOTS 2

/* Tile budgets in floats: the im2col band of conv2d (default 16 Mi = 64 MiB)
 * and the attention score band (default 1 Mi = 4 MiB). Variables only so
 * that tests can shrink them to exercise the banding on small inputs. */
extern int64_t sdc_cpu_col_max_floats;
extern int64_t sdc_cpu_score_max_floats;
/* Nonzero: attention and its backward take the portable sgemm path even
 * where the fused AVX2 kernels could run (tests cover both). */
extern int sdc_cpu_attention_portable;

/* The fused attention kernel (cpu_attention_fused.c) on raw fp32 arrays;
 * returns 0, having done nothing, where the CPU lacks AVX2+FMA. */
int sdc_cpu_attention_fused(float *out, const float *q, const float *k, const float *v, int64_t B, int64_t Tq,
                            int64_t Tk, int heads, int64_t D, float scale, int causal);

/* The fused attention backward (cpu_backward_attention_fused.c): any of
 * dq, dk, dv may be NULL; returns 0, having done nothing, without AVX2+FMA. */
int sdc_cpu_attention_backward_fused(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                     const float *k, const float *v, int64_t B, int64_t Tq, int64_t Tk, int heads,
                                     int64_t D, float scale, int causal);

/* exp(x) to ~1 ulp in straight-line code that vectorizes: x = n·ln2 + r with
 * |r| ≤ ln2/2, e^r by a degree-7 polynomial (Cephes' minimax coefficients),
 * 2^n put into the exponent bits. Inputs are clamped to [-87.3, 88.3]
 * (results stay normal and finite). */
SDC_CPU_INLINE float cpu_expf(float x) {
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.3f ? 88.3f : x;
    /* round(x·log2 e) by the 1.5·2²³ trick (exact without -ffast-math) */
    float n = x * 1.44269504088896341f + 12582912.0f;
    n -= 12582912.0f;
    float r = x - n * 0.693359375f;    /* ln2 split in two: the high part */
    r = r - n * -2.12194440e-4f;       /* is exact in float */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* σ(x) without overflow: e = exp(−|x|) ≤ 1, σ = 1/(1+e) for x ≥ 0, e/(1+e) below. */
SDC_CPU_INLINE float cpu_sigmoidf(float x) {
    float e = cpu_expf(x < 0 ? x : -x);
    float s = 1.0f / (1.0f + e);
    return x >= 0 ? s : e * s;
}

/* Φ(x) = P(N(0,1) ≤ x) = ½·erfc(−x/√2), to ~1e-6 relative also in the left
 * tail (where ½·(1+erf) would cancel). With z = |x|/√2:
 * - z < 0.5: Φ = ½ + ½·erf(±z), erf z = 2/√π·(z − z³/3 + z⁵/10 − z⁷/42 + z⁹/216 − z¹¹/1320)
 *   (the next term is < 2e-8);
 * - else erfc z = e^{−z²}·t·P(t), t = 1/(1 + z/2): P is a degree-9 fit of
 *   erfcx(z)/t on z ≥ 0.5 (relative error 1.4e-8; float rounding adds ~3e-7);
 *   Φ = ½·erfc z for x < 0 and 1 − ½·erfc z above. */
SDC_CPU_INLINE float cpu_phif_e(float x, float e) { /* e = e^{−x²/2}, shared with GELU's derivative */
    float z2 = x * x * 0.5f, az = (x < 0 ? -x : x) * 0.70710678118654752f, z = x * 0.70710678118654752f;
    float s = -1.0f / 1320.0f;
    s = s * z2 + 1.0f / 216.0f;
    s = s * z2 - 1.0f / 42.0f;
    s = s * z2 + 1.0f / 10.0f;
    s = s * z2 - 1.0f / 3.0f;
    s = s * z2 + 1.0f;
    float small = 0.5f + 0.56418958354775628f * z * s;
    float t = 1.0f / (1.0f + 0.5f * az);
    float p = -6.443116814e-02f;
    p = p * t + 2.088783681e-01f;
    p = p * t - 1.918067485e-01f;
    p = p * t - 1.444521081e-02f;
    p = p * t - 8.763431571e-03f;
    p = p * t + 8.291612566e-02f;
    p = p * t + 1.765807867e-01f;
    p = p * t + 2.468075007e-01f;
    p = p * t + 2.820955813e-01f;
    p = p * t + 2.820947766e-01f;
    float half_erfc = 0.5f * e * t * p;
    float big = x < 0 ? half_erfc : 1.0f - half_erfc;
    return az < 0.5f ? small : big;
}
SDC_CPU_INLINE float cpu_phif(float x) { return cpu_phif_e(x, cpu_expf(-(x * x * 0.5f))); }

/* The activations of backend.h, on one value. */
SDC_CPU_INLINE float cpu_gelu(float x) { return x * cpu_phif(x); }
SDC_CPU_INLINE float cpu_gelu_tanh(float x) {
    /* tanh u = 1 − 2/(e^{2u}+1) = 2σ(2u) − 1, so 0.5(1+tanh u) = σ(2u) */
    float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
    return x * cpu_sigmoidf(2.0f * u);
}
SDC_CPU_INLINE float cpu_act1(float x, sdc_act act) {
    switch (act) {
    case SDC_ACT_SILU: return x * cpu_sigmoidf(x);
    case SDC_ACT_GELU: return cpu_gelu(x);
    case SDC_ACT_GELU_TANH: return cpu_gelu_tanh(x);
    case SDC_ACT_QUICK_GELU: return x * cpu_sigmoidf(1.702f * x);
    case SDC_ACT_NONE: break;
    }
    return x;
}
/* In place over n values, vectorized per activation. */
void sdc_cpu_act_inplace(float *y, int64_t n, sdc_act act);

/* act'(x), the derivatives of cpu_act1 (s = the sigmoid each one uses):
 *   silu:       σ(x)·(1 + x·(1 − σ(x)))
 *   gelu:       Φ(x) + x·φ(x),  φ(x) = e^{−x²/2}/√(2π)
 *   gelu_tanh:  with s = σ(2u), u = c·(x + 0.044715·x³), c = √(2/π):
 *               y = x·s, so y' = s + x·2s(1−s)·u' and u' = c·(1 + 3·0.044715·x²)
 *   quick_gelu: s + 1.702·x·s·(1 − s),  s = σ(1.702·x) */
SDC_CPU_INLINE float cpu_act_grad1(float x, sdc_act act) {
    switch (act) {
    case SDC_ACT_SILU: {
        float s = cpu_sigmoidf(x);
        return s * (1.0f + x * (1.0f - s));
    }
    case SDC_ACT_GELU: {
        float e = cpu_expf(-(x * x * 0.5f));
        return cpu_phif_e(x, e) + x * 0.39894228040143268f * e;
    }
    case SDC_ACT_GELU_TANH: {
        float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
        float s = cpu_sigmoidf(2.0f * u);
        return s + 2.0f * x * s * (1.0f - s) * 0.79788456080286536f * (1.0f + 0.134145f * x * x);
    }
    case SDC_ACT_QUICK_GELU: {
        float s = cpu_sigmoidf(1.702f * x);
        return s + 1.702f * x * s * (1.0f - s);
    }
    case SDC_ACT_NONE: break;
    }
    return 1.0f;
}
/* d[i] = dy[i]·act'(x[i]) over n values (d may alias dy), vectorized per
 * activation (cpu_backward_eltwise.c). */
void sdc_cpu_act_grad(float *d, const float *dy, const float *x, int64_t n, sdc_act act);
/* out[j] += Σ_r y[r·N + j] over rows r in [0, M): column sums summed in
 * double, rows in order; threads own column blocks, so the result does not
 * depend on the thread count (cpu_backward_eltwise.c). */
void sdc_cpu_col_sums_acc(float *out, const float *y, int64_t M, int64_t N);

/* The ops (semantics in backend.h). */
void sdc_cpu_linear(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *w, const sdc_tensor *bias, int64_t M,
                    int64_t K, int64_t N);
void sdc_cpu_conv2d(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *w, const sdc_tensor *bias, int stride,
                    int pad);
void sdc_cpu_group_norm(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *gamma, const sdc_tensor *beta,
                        int64_t B, int64_t C, int64_t S, int groups, float eps, sdc_act act);
void sdc_cpu_layer_norm(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *gamma, const sdc_tensor *beta,
                        int64_t M, int64_t C, float eps);
void sdc_cpu_attention(sdc_tensor *out, const sdc_tensor *q, const sdc_tensor *k, const sdc_tensor *v, int64_t B,
                       int64_t Tq, int64_t Tk, int heads, int64_t head_dim, float scale, int causal);
void sdc_cpu_activation(sdc_tensor *out, const sdc_tensor *x, sdc_act act);
void sdc_cpu_geglu(sdc_tensor *out, const sdc_tensor *x, int64_t M, int64_t F);
void sdc_cpu_axpby(sdc_tensor *out, float alpha, const sdc_tensor *a, float beta, const sdc_tensor *b);
void sdc_cpu_add_channel(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *v, int64_t O, int64_t C, int64_t S);
void sdc_cpu_concat(sdc_tensor *out, const sdc_tensor *a, const sdc_tensor *b, int64_t O, int64_t Ca, int64_t Cb,
                    int64_t S);
void sdc_cpu_slice(sdc_tensor *out, const sdc_tensor *x, int64_t O, int64_t C, int64_t S, int64_t c0, int64_t n);
void sdc_cpu_transpose(sdc_tensor *out, const sdc_tensor *x, int64_t B, int64_t R, int64_t C);
void sdc_cpu_upsample2x(sdc_tensor *out, const sdc_tensor *x, int64_t B, int64_t C, int64_t H, int64_t W);
void sdc_cpu_pad2d(sdc_tensor *out, const sdc_tensor *x, int64_t B, int64_t C, int64_t H, int64_t W, int top,
                   int bottom, int left, int right); /* cpu_pad.c */
void sdc_cpu_embedding(sdc_tensor *out, const sdc_tensor *table, const int32_t *ids, int64_t n, int64_t D);
void sdc_cpu_upload(sdc_tensor *dst, const float *src);
void sdc_cpu_download(float *dst, const sdc_tensor *src);
void sdc_cpu_fill(sdc_tensor *out, float value);

/* Backward ops (semantics in backend.h; files cpu_backward_*.c). */
void sdc_cpu_linear_backward(sdc_tensor *dx, sdc_tensor *dw, sdc_tensor *db, const sdc_tensor *dy,
                             const sdc_tensor *x, const sdc_tensor *w, int64_t M, int64_t K, int64_t N);
void sdc_cpu_conv2d_backward(sdc_tensor *dx, sdc_tensor *dw, sdc_tensor *db, const sdc_tensor *dy,
                             const sdc_tensor *x, const sdc_tensor *w, int stride, int pad);
void sdc_cpu_group_norm_backward(sdc_tensor *dx, sdc_tensor *dgamma, sdc_tensor *dbeta, const sdc_tensor *dy,
                                 const sdc_tensor *x, const sdc_tensor *gamma, const sdc_tensor *beta, int64_t B,
                                 int64_t C, int64_t S, int groups, float eps, sdc_act act);
void sdc_cpu_layer_norm_backward(sdc_tensor *dx, sdc_tensor *dgamma, sdc_tensor *dbeta, const sdc_tensor *dy,
                                 const sdc_tensor *x, const sdc_tensor *gamma, int64_t M, int64_t C, float eps);
void sdc_cpu_attention_backward(sdc_tensor *dq, sdc_tensor *dk, sdc_tensor *dv, const sdc_tensor *dout,
                                const sdc_tensor *q, const sdc_tensor *k, const sdc_tensor *v, int64_t B, int64_t Tq,
                                int64_t Tk, int heads, int64_t head_dim, float scale, int causal);
void sdc_cpu_activation_backward(sdc_tensor *dx, const sdc_tensor *dy, const sdc_tensor *x, sdc_act act);
void sdc_cpu_geglu_backward(sdc_tensor *dx, const sdc_tensor *dy, const sdc_tensor *x, int64_t M, int64_t F);
void sdc_cpu_channel_sum(sdc_tensor *dv, const sdc_tensor *dy, int64_t O, int64_t C, int64_t S);
void sdc_cpu_upsample2x_backward(sdc_tensor *dx, const sdc_tensor *dy, int64_t B, int64_t C, int64_t H, int64_t W);
void sdc_cpu_embedding_backward(sdc_tensor *dtable, const sdc_tensor *dy, const int32_t *ids, int64_t n, int64_t D);

/* Memory and optimiser entries (cpu_optim.c). */
void *sdc_cpu_mem_alloc(size_t nbytes);
void sdc_cpu_mem_free(void *p, size_t nbytes);
void sdc_cpu_mem_zero(void *p, size_t nbytes);
void sdc_cpu_mem_copy(void *dst, const void *src, size_t nbytes);
static inline void sdc_cpu_synchronize(void) {}
void sdc_cpu_cast(void *dst, sdc_dtype dst_dtype, const void *src, sdc_dtype src_dtype, size_t n);
double sdc_cpu_sumsq(const float *g, size_t n);
void sdc_cpu_scale(float *x, size_t n, float a);
void sdc_cpu_adamw(float *p, float *m, float *v, const float *g, size_t n, const sdc_adamw_args *a, void *copy,
                   sdc_dtype copy_dtype);
void sdc_cpu_ema(float *shadow, const float *p, size_t n, float one_minus_decay);

/* Σx and Σ(x − μ)² in double (cpu_norm.c), for the norms and their backward. */
double cpu_sum_f64(const float *x, int64_t n);
double cpu_sqdev_f64(const float *x, int64_t n, double mu);

/* exp(p − max) over a row's first lim scores, 0 after; returns 1/Σ (cpu_attention.c) */
float cpu_softmax_exp_row(float *p, int64_t lim, int64_t n);

#endif
