// Fused scaled dot-product attention on the GPU: the op entry points, the
// choice of kernel, and the backward's scratch (row statistics).
//
// Forward:  O = softmax(scale·Q·Kᵀ [+ causal mask])·V per (batch, head),
// streamed over key tiles with an online softmax (FlashAttention): a
// running row max m and sum l in fp32, the output rescaled by 2^(m_old − m_new)
// whenever the max grows. Scores never reach global memory.
//
// Backward (FlashAttention-2's split, without atomics so it is deterministic):
//   1. stats: the forward kernel again, writing per row lse2 = m + log2 l and
//      δ_i = dO_i·O_i (O from the fp32 accumulator, never stored), since O
//      is not an input of the op;
//   2. dK, dV: one owner per key tile, looping over the query tiles that see it:
//      P = 2^(x − lse2), dV += Pᵀ·dO, dP = dO·Vᵀ, dS = P ∘ (dP − δ), dK += scale·dSᵀ·Q;
//   3. dQ: one owner per query tile, looping over key tiles: dQ += scale·dS·K.
//   (∂L/∂S_ij = P_ij·(dP_ij − Σ_k P_ik·dP_ik) and Σ_k P_ik·dP_ik = dO_i·O_i.)
// δ via O costs one forward (2 products) and is exact in fp32; computing
// Σ_j P_ij·dP_ij instead would need lse first, one more pass over the keys.
//
// Two families of kernels (cuda_attention_fwd.cu, cuda_attention_bwd.cu):
//   generic: CUDA cores, fp32 math, any dtype and any D ≤ 256; the reference.
//   tc:      BF16/F16 on tensor cores (mma.sync m16n8k16, fp32 accumulate),
//            D % 8 == 0, D ≤ 160, padded to a multiple of 16 inside shared memory.
// attn_choose() is the one place that picks between them. Head dimensions
// above 256 (the VAE) go to cuda_attention_wide.cu's matrix-product path.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_attention.cuh"
#include "backend/cuda/cuda_ops.h"

// The largest D each tensor-core kernel is built for (registers: the output
// accumulator is D/8·4 floats a thread; the backward holds two of them).
enum { ATTN_TC_MAX_D = 160, ATTN_MAX_D = 256 };

struct attn_plan {
    bool tc; // tensor-core kernels, else generic
    int dp;  // D rounded up to 16 (tc only)
};

// SDC_CUDA_ATTN=generic forces the generic kernels, =sdc sdc's own kernels
// (not cuDNN's forward), to compare the paths.
static bool attn_force_generic(void) {
    const char *e = getenv("SDC_CUDA_ATTN");
    return e && strcmp(e, "generic") == 0;
}
static bool attn_force_own(void) {
    const char *e = getenv("SDC_CUDA_ATTN");
    return e && (strcmp(e, "sdc") == 0 || strcmp(e, "generic") == 0);
}

// x[i] *= s (cuDNN's natural-log row statistic into sdc's base-2 one)
__global__ void attn_scale_kernel(float *x, size_t n, float s) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) x[i] *= s;
}

static bool attn_aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

// The dispatch decision, for the forward, the statistics pass and the backward.
// Tensor cores: BF16/F16; D % 8 == 0 and 16-byte aligned rows (cp.async
// copies 8 halves at a time); D ≤ 160; scale > 0 (the kernel takes the row
// max of the raw scores). Everything else, and all of F32, runs generic.
static attn_plan attn_choose(sdc_dtype dt, const attn_args &a) {
    attn_plan p = {false, 0};
    if (a.D < 1 || a.D > ATTN_MAX_D) sdc_cuda_fatal("attention", "head_dim must be in 1..256", __FILE__, __LINE__);
    const bool half = dt == SDC_BF16 || dt == SDC_F16;
    const void *ptrs[8] = {a.q, a.k, a.v, a.out, a.dout, a.dq, a.dk, a.dv}; // NULL is aligned
    bool aligned = true;
    for (int i = 0; i < 8; i++) aligned = aligned && attn_aligned16(ptrs[i]);
    if (half && a.D % 8 == 0 && a.D <= ATTN_TC_MAX_D && aligned && a.scale > 0.0f && isfinite(a.scale) &&
        !attn_force_generic()) {
        p.tc = true;
        p.dp = (a.D + 15) / 16 * 16;
    }
    return p;
}

static attn_args attn_make_args(const sdc_tensor *q, const sdc_tensor *k, const sdc_tensor *v, int64_t B,
                                int64_t Tq, int64_t Tk, int heads, int64_t D, float scale, int causal) {
    SDC_ASSERT(B > 0 && Tq > 0 && Tk > 0 && heads > 0);
    SDC_ASSERT(Tq <= INT32_MAX && Tk <= INT32_MAX && B <= 65535 && heads <= 65535);
    SDC_ASSERT(q->dtype == k->dtype && q->dtype == v->dtype);
    attn_args a;
    memset(&a, 0, sizeof a);
    a.q = q->data, a.k = k->data, a.v = v->data;
    a.B = (int)B, a.Tq = (int)Tq, a.Tk = (int)Tk, a.H = heads, a.D = (int)D;
    a.HD = (int64_t)heads * D;
    a.scale = scale;
    a.scale_log2 = scale * 1.4426950408889634f;
    a.causal = causal;
    a.nsplit = 1;
    return a;
}

// The backward's row statistics (lse2 and δ, 2·B·H·Tq floats): a buffer of
// this file's own, grown only when a larger size is asked for. Growing waits
// for the stream, as earlier work may still read the old buffer.
static float *attn_scratch(size_t nfloats) {
    static float *buf;
    static size_t cap;
    if (nfloats > cap) {
        CUDA_CHECK(cudaStreamSynchronize(sdc_cuda_stream()));
        if (buf) CUDA_CHECK(cudaFree(buf));
        size_t n = nfloats + nfloats / 4 + 64;
        CUDA_CHECK(cudaMalloc(&buf, n * sizeof(float)));
        cap = n;
    }
    return buf;
}

// out = attention(q, k, v); lse (when not NULL, B·H·Tq floats): each row's
// lse2, which the backward then takes instead of recomputing it.
static void attention_fwd(sdc_tensor *out, float *lse, const sdc_tensor *q, const sdc_tensor *k, const sdc_tensor *v,
                          int64_t B, int64_t Tq, int64_t Tk, int heads, int64_t head_dim, float scale, int causal) {
    if (head_dim > ATTN_MAX_D) { // no row statistics there: its backward recomputes
        sdc_cuda_attention_wide(out, q, k, v, B, Tq, Tk, heads, head_dim, scale, causal);
        return;
    }
    attn_args a = attn_make_args(q, k, v, B, Tq, Tk, heads, head_dim, scale, causal);
    SDC_ASSERT(out->dtype == q->dtype);
    a.out = out->data;
    a.lse = lse;
    attn_plan p = attn_choose(q->dtype, a);
#ifdef SDC_WITH_CUDNN
    // cuDNN's fused forward where it has a plan (tensor-core shapes, no
    // causal mask); it always writes the row statistics, so the output is
    // the same whether the caller keeps them or not
    if (p.tc && !causal && !attn_force_own()) {
        const size_t rows = (size_t)B * heads * Tq;
        float *st = lse ? lse : attn_scratch(rows);
        if (attn_cudnn_fwd(a, q->dtype, st)) {
            if (lse) {
                attn_scale_kernel<<<sdc_cuda_blocks(rows, 256), 256, 0, sdc_cuda_stream()>>>(lse, rows,
                                                                                         1.4426950408889634f);
                CUDA_LAUNCH_CHECK();
            }
            return;
        }
    }
#endif
    if (p.tc)
        attn_fwd_tc(a, q->dtype, p.dp, false);
    else
        attn_fwd_generic(a, q->dtype, false);
}

extern "C" void sdc_cuda_attention(sdc_tensor *out, const sdc_tensor *q, const sdc_tensor *k, const sdc_tensor *v,
                                   int64_t B, int64_t Tq, int64_t Tk, int heads, int64_t head_dim, float scale,
                                   int causal) {
    attention_fwd(out, NULL, q, k, v, B, Tq, Tk, heads, head_dim, scale, causal);
}

extern "C" void sdc_cuda_attention_lse(sdc_tensor *out, float *lse, const sdc_tensor *q, const sdc_tensor *k,
                                       const sdc_tensor *v, int64_t B, int64_t Tq, int64_t Tk, int heads,
                                       int64_t head_dim, float scale, int causal) {
    attention_fwd(out, lse, q, k, v, B, Tq, Tk, heads, head_dim, scale, causal);
}

// δ_i = dO_i·O_i for every (b, i, h) row, one warp a row, from the stored
// output: the statistics pass without its two products.
template <typename T> __global__ void attn_delta_kernel(attn_args a, const T *o) {
    const int64_t rows = (int64_t)a.B * a.Tq * a.H;
    const int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x & 31;
    if (w >= rows) return; // whole warps leave together
    const int h = (int)(w % a.H), i = (int)(w / a.H % a.Tq), b = (int)(w / ((int64_t)a.H * a.Tq));
    const size_t row = attn_row(a, b, a.Tq, i, h);
    const T *go = (const T *)a.dout;
    float acc = 0.0f;
    for (int d = lane; d < a.D; d += 32) acc = fmaf(sdc_ld(go, row + d), sdc_ld(o, row + d), acc);
    acc = attn_warp_sum(acc);
    if (lane == 0) a.delta[attn_stat(a, b, h, i)] = acc;
}

// The backward; with out and lse from the forward (attention_lse), δ comes
// from the stored output and the statistics pass is skipped.
static void attention_bwd(sdc_tensor *dq, sdc_tensor *dk, sdc_tensor *dv, const sdc_tensor *dout,
                          const sdc_tensor *q, const sdc_tensor *k, const sdc_tensor *v, const sdc_tensor *out,
                          const float *lse, int64_t B, int64_t Tq, int64_t Tk, int heads, int64_t head_dim,
                          float scale, int causal) {
    if (!dq && !dk && !dv) return;
    if (head_dim > ATTN_MAX_D) {
        sdc_cuda_attention_wide_backward(dq, dk, dv, dout, q, k, v, B, Tq, Tk, heads, head_dim, scale, causal);
        return;
    }
    attn_args a = attn_make_args(q, k, v, B, Tq, Tk, heads, head_dim, scale, causal);
    SDC_ASSERT(dout->dtype == q->dtype && (!out || out->dtype == q->dtype));
    SDC_ASSERT((!dq || dq->dtype == q->dtype) && (!dk || dk->dtype == q->dtype) && (!dv || dv->dtype == q->dtype));
    a.dout = dout->data;
    a.dq = dq ? dq->data : NULL;
    a.dk = dk ? dk->data : NULL;
    a.dv = dv ? dv->data : NULL;
    attn_plan p = attn_choose(q->dtype, a);
    if (p.tc && (dk || dv)) a.nsplit = attn_bwd_tc_nsplit(a, p.dp);
    const size_t rows = (size_t)B * heads * Tq;
    const size_t part = a.nsplit > 1 ? 2 * (size_t)a.nsplit * B * Tk * a.HD : 0;
    const bool saved = out && lse;
    float *scratch = attn_scratch((saved ? 1 : 2) * rows + part);
    a.lse = saved ? (float *)lse : scratch;
    a.delta = saved ? scratch : scratch + rows;
    a.part = part ? a.delta + rows : NULL;
    if (saved) {
        const unsigned threads = 256;
        const size_t blocks = (rows * 32 + threads - 1) / threads;
        SDC_ASSERT(blocks <= 0x7fffffffu);
        SDC_DISPATCH_FLOAT(q->dtype, T, {
            attn_delta_kernel<T><<<(unsigned)blocks, threads, 0, sdc_cuda_stream()>>>(a, (const T *)out->data);
            CUDA_LAUNCH_CHECK();
        });
    } else if (p.tc) {
        attn_fwd_tc(a, q->dtype, p.dp, true);
    } else {
        attn_fwd_generic(a, q->dtype, true);
    }
    if (p.tc)
        attn_bwd_tc(a, q->dtype, p.dp);
    else
        attn_bwd_generic(a, q->dtype);
}

extern "C" void sdc_cuda_attention_backward(sdc_tensor *dq, sdc_tensor *dk, sdc_tensor *dv, const sdc_tensor *dout,
                                            const sdc_tensor *q, const sdc_tensor *k, const sdc_tensor *v, int64_t B,
                                            int64_t Tq, int64_t Tk, int heads, int64_t head_dim, float scale,
                                            int causal) {
    attention_bwd(dq, dk, dv, dout, q, k, v, NULL, NULL, B, Tq, Tk, heads, head_dim, scale, causal);
}

extern "C" void sdc_cuda_attention_backward_saved(sdc_tensor *dq, sdc_tensor *dk, sdc_tensor *dv,
                                                  const sdc_tensor *dout, const sdc_tensor *q, const sdc_tensor *k,
                                                  const sdc_tensor *v, const sdc_tensor *out, const float *lse,
                                                  int64_t B, int64_t Tq, int64_t Tk, int heads, int64_t head_dim,
                                                  float scale, int causal) {
    attention_bwd(dq, dk, dv, dout, q, k, v, out, lse, B, Tq, Tk, heads, head_dim, scale, causal);
}
