/* The backend interface: the ops every model is written over (DESIGN.md
 * principle 2). A backend fills one table of function pointers; models never
 * call a backend directly, they call the sdc_op_* wrappers (backend/ops.h),
 * which check shapes and dispatch on the context's backend.
 *
 * Conventions for every op:
 * - tensors are contiguous, row-major, on the backend's device; the CPU
 *   backend takes F32 only, the CUDA backend adds BF16/F16 activations;
 * - `out` is allocated by the caller (usually from the context's arena) and
 *   is fully overwritten; it never aliases an input unless the op says so;
 * - sizes are passed explicitly where the op views a tensor as a matrix. */
#ifndef SDC_BACKEND_BACKEND_H
#define SDC_BACKEND_BACKEND_H

#include <stdint.h>

#include "core/arena.h"
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sdc_act {
    SDC_ACT_NONE = 0,
    SDC_ACT_SILU,       /* x·σ(x) */
    SDC_ACT_GELU,       /* exact: x·Φ(x) = 0.5·x·(1+erf(x/√2)) */
    SDC_ACT_GELU_TANH,  /* 0.5·x·(1+tanh(√(2/π)·(x+0.044715·x³))) */
    SDC_ACT_QUICK_GELU, /* x·σ(1.702·x), CLIP-L */
} sdc_act;

/* One AdamW step's per-element coefficients, rounded to float as torch
 * does (train/adamw.h has the math; sdc_adamw_args_at fills this). */
typedef struct sdc_adamw_args {
    float decay;       /* 1 − lr·wd (1 when wd is 0) */
    float lerp_w;      /* torch's lerp weight: 1−β1, or (1−β1) − 1 when lerp_from_end */
    int lerp_from_end; /* m ← g + lerp_w·(g−m) instead of m + lerp_w·(g−m) (torch for weights ≥ 0.5) */
    float b2, w2;      /* β2 and 1−β2 */
    float neg_step;    /* −lr/(1−β1^t) */
    float bc2_sqrt;    /* √(1−β2^t) */
    float eps;
} sdc_adamw_args;

typedef struct sdc_backend {
    const char *name;
    /* out[M,N] = x[M,K]·w[N,K]ᵀ + bias[N] (bias may be NULL). */
    void (*linear)(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *w, const sdc_tensor *bias, int64_t M,
                   int64_t K, int64_t N);
    /* 2-D convolution, NCHW: out[B,Co,Ho,Wo] = conv(x[B,Ci,H,W], w[Co,Ci,kh,kw]) + bias[Co],
     * Ho = (H + 2·pad − kh)/stride + 1. Zero padding, no dilation, no groups. */
    void (*conv2d)(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *w, const sdc_tensor *bias, int stride,
                   int pad);
    /* Group norm over x viewed as [B, C, S] (S = spatial size), G groups of C/G
     * channels: y = (x−μ)/√(σ²+eps)·γ[c] + β[c] with biased variance; then the
     * activation `act` (SILU fuses the ResNet's norm+SiLU). */
    void (*group_norm)(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *gamma, const sdc_tensor *beta,
                       int64_t B, int64_t C, int64_t S, int groups, float eps, sdc_act act);
    /* Layer norm over the last dimension: x viewed as [M, C]. */
    void (*layer_norm)(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *gamma, const sdc_tensor *beta,
                       int64_t M, int64_t C, float eps);
    /* Multi-head scaled dot-product attention.
     * q [B,Tq,H·D], k and v [B,Tk,H·D], out [B,Tq,H·D] (head h is columns h·D..h·D+D−1):
     * out = softmax(scale·q·kᵀ + mask)·v per batch and head, softmax in fp32;
     * causal masks key j > query i (CLIP). */
    void (*attention)(sdc_tensor *out, const sdc_tensor *q, const sdc_tensor *k, const sdc_tensor *v, int64_t B,
                      int64_t Tq, int64_t Tk, int heads, int64_t head_dim, float scale, int causal);
    /* out = act(x), elementwise (out may alias x). */
    void (*activation)(sdc_tensor *out, const sdc_tensor *x, sdc_act act);
    /* GEGLU: x viewed as [M, 2F]; out[M,F] = x[:, :F] · gelu(x[:, F:]) (exact gelu). */
    void (*geglu)(sdc_tensor *out, const sdc_tensor *x, int64_t M, int64_t F);
    /* out = α·a + β·b, elementwise over numel (b may be NULL: out = α·a; out may alias a or b). */
    void (*axpby)(sdc_tensor *out, float alpha, const sdc_tensor *a, float beta, const sdc_tensor *b);
    /* out[o,c,s] = x[o,c,s] + v[o,c] for x viewed as [O, C, S] (the ResNet's
     * time-embedding add, and per-channel bias). out may alias x. */
    void (*add_channel)(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *v, int64_t O, int64_t C, int64_t S);
    /* Concatenate along the middle axis: a [O,Ca,S] and b [O,Cb,S] into out [O,Ca+Cb,S]. */
    void (*concat)(sdc_tensor *out, const sdc_tensor *a, const sdc_tensor *b, int64_t O, int64_t Ca, int64_t Cb,
                   int64_t S);
    /* Slice along the middle axis: out [O,n,S] = x[:, c0:c0+n, :] of x [O,C,S]. */
    void (*slice)(sdc_tensor *out, const sdc_tensor *x, int64_t O, int64_t C, int64_t S, int64_t c0, int64_t n);
    /* Swap the last two axes: x [B,R,C] into out [B,C,R] (NCHW ↔ token-major). */
    void (*transpose)(sdc_tensor *out, const sdc_tensor *x, int64_t B, int64_t R, int64_t C);
    /* Zero padding: x [B,C,H,W] into out [B,C,H+top+bottom,W+left+right]
     * (the VAE encoder's asymmetric (0,1,0,1) pad before a stride-2 conv). */
    void (*pad2d)(sdc_tensor *out, const sdc_tensor *x, int64_t B, int64_t C, int64_t H, int64_t W, int top,
                  int bottom, int left, int right);
    /* Nearest-neighbour 2× upsampling: x [B,C,H,W] into out [B,C,2H,2W]. */
    void (*upsample2x)(sdc_tensor *out, const sdc_tensor *x, int64_t B, int64_t C, int64_t H, int64_t W);
    /* Row gather: out[i,:] = table[ids[i],:] for table [V,D]; ids on the host
     * (n entries, each checked < V by the caller). */
    void (*embedding)(sdc_tensor *out, const sdc_tensor *table, const int32_t *ids, int64_t n, int64_t D);
    /* Host ↔ device copies of whole tensors (fp32 host data; converted to the
     * tensor's dtype on the way in and to fp32 on the way out). */
    void (*upload)(sdc_tensor *dst, const float *src);
    void (*download)(float *dst, const sdc_tensor *src);
    /* Sets every element to a value. */
    void (*fill)(sdc_tensor *out, float value);

    /* ---- backward (DESIGN.md principle 3): parameter gradients accumulate
     * (+=) into their buffers, activation gradients are assigned (=); any
     * gradient pointer may be NULL when that gradient is not wanted. ---- */
    /* linear: dx[M,K] = dy·w; dw[N,K] += dyᵀ·x; db[N] += Σ_rows dy */
    void (*linear_backward)(sdc_tensor *dx, sdc_tensor *dw, sdc_tensor *db, const sdc_tensor *dy, const sdc_tensor *x,
                            const sdc_tensor *w, int64_t M, int64_t K, int64_t N);
    /* conv2d (as forward): dx = conv_transpose(dy, w); dw += correlation of x and dy; db += Σ dy */
    void (*conv2d_backward)(sdc_tensor *dx, sdc_tensor *dw, sdc_tensor *db, const sdc_tensor *dy, const sdc_tensor *x,
                            const sdc_tensor *w, int stride, int pad);
    /* group norm (+ fused activation, as forward): recomputes the statistics
     * from x; dx assigned, dgamma/dbeta accumulated. */
    void (*group_norm_backward)(sdc_tensor *dx, sdc_tensor *dgamma, sdc_tensor *dbeta, const sdc_tensor *dy,
                                const sdc_tensor *x, const sdc_tensor *gamma, const sdc_tensor *beta, int64_t B,
                                int64_t C, int64_t S, int groups, float eps, sdc_act act);
    void (*layer_norm_backward)(sdc_tensor *dx, sdc_tensor *dgamma, sdc_tensor *dbeta, const sdc_tensor *dy,
                                const sdc_tensor *x, const sdc_tensor *gamma, int64_t M, int64_t C, float eps);
    /* attention (as forward): recomputes the softmax from q and k. */
    void (*attention_backward)(sdc_tensor *dq, sdc_tensor *dk, sdc_tensor *dv, const sdc_tensor *dout,
                               const sdc_tensor *q, const sdc_tensor *k, const sdc_tensor *v, int64_t B, int64_t Tq,
                               int64_t Tk, int heads, int64_t head_dim, float scale, int causal);
    /* Optional (NULL: not offered; the CPU recomputes): attention that also
     * writes each row's softmax statistic lse [B·H·Tq] (log2 of the row's
     * Σ 2^(scale·log2e·q·k), backend-defined), and the backward given the
     * forward's out and lse instead of recomputing them. */
    void (*attention_lse)(sdc_tensor *out, float *lse, const sdc_tensor *q, const sdc_tensor *k, const sdc_tensor *v,
                          int64_t B, int64_t Tq, int64_t Tk, int heads, int64_t head_dim, float scale, int causal);
    void (*attention_backward_saved)(sdc_tensor *dq, sdc_tensor *dk, sdc_tensor *dv, const sdc_tensor *dout,
                                     const sdc_tensor *q, const sdc_tensor *k, const sdc_tensor *v,
                                     const sdc_tensor *out, const float *lse, int64_t B, int64_t Tq, int64_t Tk,
                                     int heads, int64_t head_dim, float scale, int causal);
    /* dx = dy · act'(x) (dx may alias dy) */
    void (*activation_backward)(sdc_tensor *dx, const sdc_tensor *dy, const sdc_tensor *x, sdc_act act);
    /* dx [M,2F] from dy [M,F] and the GEGLU input x [M,2F] */
    void (*geglu_backward)(sdc_tensor *dx, const sdc_tensor *dy, const sdc_tensor *x, int64_t M, int64_t F);
    /* dv[o,c] = Σ_s dy[o,c,s] (assigned): the gradient of add_channel's v */
    void (*channel_sum)(sdc_tensor *dv, const sdc_tensor *dy, int64_t O, int64_t C, int64_t S);
    /* dx [B,C,H,W] = Σ over each 2×2 block of dy [B,C,2H,2W] (nearest upsampling's adjoint) */
    void (*upsample2x_backward)(sdc_tensor *dx, const sdc_tensor *dy, int64_t B, int64_t C, int64_t H, int64_t W);
    /* dtable[ids[i],:] += dy[i,:] (serially in i, deterministic) */
    void (*embedding_backward)(sdc_tensor *dtable, const sdc_tensor *dy, const int32_t *ids, int64_t n, int64_t D);

    /* ---- memory on the backend's device, in bytes: the arenas, parameter
     * stores and optimiser state are each one such buffer (principle 4). ---- */
    void *(*mem_alloc)(size_t nbytes); /* zeroed, 256-byte aligned; NULL when out of memory */
    void (*mem_free)(void *p, size_t nbytes);
    void (*mem_zero)(void *p, size_t nbytes);
    void (*mem_copy)(void *dst, const void *src, size_t nbytes);     /* device → device */
    void (*mem_upload)(void *dst, const void *src, size_t nbytes);   /* host → device */
    void (*mem_download)(void *dst, const void *src, size_t nbytes); /* device → host (waits for the device) */
    /* Waits until the device has finished everything queued (profiling). */
    void (*synchronize)(void);
    /* Converts n elements between dtypes (F32/F16/BF16) on the device. */
    void (*cast)(void *dst, sdc_dtype dst_dtype, const void *src, sdc_dtype src_dtype, size_t n);

    /* ---- optimiser, over flat fp32 stores of n elements (train/) ---- */
    /* Σ g[i]² in double (grad_clip.h); deterministic for a given n. */
    double (*sumsq)(const float *g, size_t n);
    /* x[i] *= a */
    void (*scale)(float *x, size_t n, float a);
    /* One AdamW update of the fp32 master weights p with moments m, v and
     * gradients g, exactly sdc_adamw_update_range's math (adamw.h); when
     * `copy` is not NULL the updated weights are also written there in
     * copy_dtype (the bf16/fp16 weights the model computes with). */
    void (*adamw)(float *p, float *m, float *v, const float *g, size_t n, const sdc_adamw_args *a, void *copy,
                  sdc_dtype copy_dtype);
    /* EMA: shadow[i] −= one_minus_decay · (shadow[i] − p[i]) (ema.h) */
    void (*ema)(float *shadow, const float *p, size_t n, float one_minus_decay);
} sdc_backend;

/* The CPU backend (backend/cpu/): fp32, OpenMP threads, OpenBLAS sgemm. */
const sdc_backend *sdc_cpu_backend(void);
/* The CUDA backend (backend/cuda/): fp32, bf16 and fp16 on the current
 * device; NULL in a build without CUDA. */
const sdc_backend *sdc_cuda_backend(void);

/* What a model runs with: a backend, its device, and the arena activations
 * come from. Modules allocate their outputs from `arena` and release their
 * temporaries with a mark/release pair around their body. */
struct sdc_tape;
typedef struct sdc_ctx {
    const sdc_backend *be;
    sdc_device device;
    sdc_arena *arena;
    struct sdc_tape *tape; /* when set, ops record themselves for backward (backend/tape.h) */
    sdc_dtype dtype;       /* activations' dtype: F32 (the zero value), or BF16/F16 on CUDA */
} sdc_ctx;

/* A CPU context over a host arena (an lvalue: &SDC_CTX_CPU(a) works). */
#define SDC_CTX_CPU(arena_ptr) ((sdc_ctx){sdc_cpu_backend(), {SDC_CPU, 0}, (arena_ptr), NULL, SDC_F32})

/* Releases a module's temporaries, unless a tape is recording: backward
 * needs them then. */
static inline void sdc_ctx_release(sdc_ctx *c, size_t mark) {
    if (!c->tape) sdc_arena_release(c->arena, mark);
}

#ifdef __cplusplus
}
#endif

#endif
