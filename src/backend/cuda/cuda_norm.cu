// Group norm and layer norm on the GPU, forward and backward (contracts in
// backend/backend.h; the fp32 reference is backend/cpu/cpu_norm.c and
// cpu_backward_norm.c, whose math this follows).
//
// Group norm. x is [B, C, S]; group t = b·G + g is the contiguous run of
// n = (C/G)·S elements of channels g·C/G … (g+1)·C/G − 1. Every kernel works
// on "items": item w = (b·C + c)·nseg + k is segment k (of nseg, each `seg`
// elements, the last one shorter) of channel (b, c), one warp per item, so a
// group of any size (4 elements in the tiny tests, 1 M in a 512 px VAE) is
// split over many warps and the items of group t are the contiguous range
// [t·(C/G)·nseg, (t+1)·(C/G)·nseg). The segmentation depends only on the
// shape, so a run repeats bit for bit:
//   forward:  stats (warp per item: count, mean, M2 by Chan's merge of
//               8-value chunks, then of the lanes in a fixed tree)
//             → final (warp per group: μ = Σ n_i·μ_i / n and
//               M2 = Σ M2_i + n_i·(μ_i − μ)² over its items in double,
//               r = 1/√(σ²+eps))
//             → apply (warp per item: y = act((x−μ)·r·γ + β))
//   backward: stats → final as above
//             → sums (warp per item: Σ dz and Σ dz·x̂, dz = dy·act'(z))
//             → reduce (warp per group: the dx coefficients; warp per
//               channel: dγ += Σ_b,k Σ dz·x̂, dβ += Σ_b,k Σ dz)
//             → dx (warp per item: dx = r·γ·dz − r²·m2·(x−μ) − r·m1)
// with x̂ = (x−μ)·r, z = x̂·γ + β, m1 = mean over the group of dz·γ,
// m2 = mean of dz·γ·x̂ (cpu_backward_norm.c derives it).
//
// Layer norm. x is [M, C], one warp per row, two passes over the row (the
// second also corrects μ by the mean deviation). Backward: rows (μ, r and
// the dx coefficients per row, and dx) → dγ/dβ partial sums per
// (32-column tile, fixed chunk of rows) → a per-column sum of the partials
// in chunk order. When dx aliases dy, dx is written by a second run of the
// row kernel after the partials have read dy.
//
// Every reduction runs over a fixed partition and a fixed tree (fp32, and
// double across a group's items): no floating-point atomics, so results
// repeat bit for bit. Temporaries live in workspace slot 3.
//
// Launch shapes: 256-thread blocks of 8 warps everywhere except the layer
// norm's dγ/dβ partials (32×8 threads per 32-column tile and row chunk) and
// their final sum (a thread per column). The group norm's items number
// about 8192 for big tensors (a warp streams ≥ 256 elements), e.g. 1024
// blocks for a 512 px VAE GroupNorm.
#include <stdint.h>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_ops.h"

#define WARP 32
#define WPB 8                 // warps per block
#define NT (WARP * WPB)       // threads per block
#define FULL 0xffffffffu
#define WS_SLOT 3

// ---- element access: CH consecutive values, one 16-byte load when CH fills it

template <typename T, int CH> __device__ __forceinline__ void ld_chunk(const T *p, float *f) {
    if constexpr (CH * sizeof(T) == 16) {
        uint4 u = *reinterpret_cast<const uint4 *>(p);
        const T *h = reinterpret_cast<const T *>(&u);
#pragma unroll
        for (int i = 0; i < CH; i++) f[i] = sdc_ld(h, i);
    } else {
#pragma unroll
        for (int i = 0; i < CH; i++) f[i] = sdc_ld(p, (size_t)i);
    }
}

template <typename T, int CH> __device__ __forceinline__ void st_chunk(T *p, const float *f) {
    if constexpr (CH * sizeof(T) == 16) {
        alignas(16) T h[CH];
#pragma unroll
        for (int i = 0; i < CH; i++) sdc_st(h, i, f[i]);
        *reinterpret_cast<uint4 *>(p) = *reinterpret_cast<const uint4 *>(h);
    } else {
#pragma unroll
        for (int i = 0; i < CH; i++) sdc_st(p, (size_t)i, f[i]);
    }
}

// CH values as loaded (one 16-byte word, or CH scalars), converted to fp32
// where used: the batched loops below keep several chunks in flight, and
// bf16/f16 held packed take half the registers of their fp32 values.
template <typename T, int CH, bool VEC = (CH * sizeof(T) == 16)> struct Raw;
template <typename T, int CH> struct Raw<T, CH, true> {
    uint4 u;
    __device__ __forceinline__ void load(const T *p) { u = *reinterpret_cast<const uint4 *>(p); }
    __device__ __forceinline__ float operator[](int i) const { return sdc_ld(reinterpret_cast<const T *>(&u), i); }
};
template <typename T, int CH> struct Raw<T, CH, false> {
    T v[CH];
    __device__ __forceinline__ void load(const T *p) {
#pragma unroll
        for (int i = 0; i < CH; i++) v[i] = p[i];
    }
    __device__ __forceinline__ float operator[](int i) const { return sdc_ld(v, i); }
};

// ---- the activations of backend.h and their derivatives (as cpu_ops.h) ----

// σ with the fast exponential and division (a few ulp; |x|·2⁻²⁴ relative
// from rounding x·log2 e): the fused SiLU would otherwise cost more than
// the memory traffic. e = inf for v < −88 gives σ = 0, not NaN.
__device__ __forceinline__ float sigm(float v) { return __fdividef(1.0f, 1.0f + __expf(-v)); }

__device__ __forceinline__ float act_fwd(float v, sdc_act act) {
    switch (act) {
    case SDC_ACT_SILU: return v * sigm(v);
    case SDC_ACT_GELU: return v * normcdff(v); // x·Φ(x)
    case SDC_ACT_GELU_TANH: {
        // 0.5·(1 + tanh u) = σ(2u), u = √(2/π)·(x + 0.044715·x³)
        float u = 0.79788456080286536f * (v + 0.044715f * v * v * v);
        return v * sigm(2.0f * u);
    }
    case SDC_ACT_QUICK_GELU: return v * sigm(1.702f * v);
    case SDC_ACT_NONE: break;
    }
    return v;
}

__device__ __forceinline__ float act_grad(float v, sdc_act act) {
    switch (act) {
    case SDC_ACT_SILU: {
        float s = sigm(v);
        return s * (1.0f + v * (1.0f - s));
    }
    case SDC_ACT_GELU: // Φ(x) + x·φ(x)
        return normcdff(v) + v * 0.39894228040143268f * expf(-0.5f * v * v);
    case SDC_ACT_GELU_TANH: {
        float u = 0.79788456080286536f * (v + 0.044715f * v * v * v);
        float s = sigm(2.0f * u);
        return s + 2.0f * v * s * (1.0f - s) * 0.79788456080286536f * (1.0f + 0.134145f * v * v);
    }
    case SDC_ACT_QUICK_GELU: {
        float s = sigm(1.702f * v);
        return s + 1.702f * v * s * (1.0f - s);
    }
    case SDC_ACT_NONE: break;
    }
    return 1.0f;
}

// The hot kernels take the activation as a template argument: NONE and SILU
// (the ResNets' GroupNorm+SiLU) compile to straight-line code; the rest go
// through the switch above. A runtime switch inside the unrolled loops
// doubled the registers and halved the occupancy.
#define ACTK_NONE 0
#define ACTK_SILU 1
#define ACTK_ANY 2

template <int A> __device__ __forceinline__ float act_fwd_k(float v, sdc_act act) {
    if constexpr (A == ACTK_NONE) return v;
    else if constexpr (A == ACTK_SILU) return v * sigm(v);
    else return act_fwd(v, act);
}

template <int A> __device__ __forceinline__ float act_grad_k(float v, sdc_act act) {
    if constexpr (A == ACTK_NONE) return 1.0f;
    else if constexpr (A == ACTK_SILU) {
        float s = sigm(v);
        return s * (1.0f + v * (1.0f - s));
    } else return act_grad(v, act);
}

// ---- reductions --------------------------------------------------------------

// Count, mean and sum of squared deviations of a set of values.
struct Stat {
    float n, mean, m2;
};

// Chan et al.'s merge of two sets: with d = μb − μa,
// μ = μa + d·nb/n, M2 = M2a + M2b + d²·na·nb/n. Not symmetric in rounding,
// so trees below always merge (left, right) in a fixed order.
__device__ __forceinline__ Stat stat_merge(Stat a, Stat b) {
    if (b.n == 0.0f) return a;
    if (a.n == 0.0f) return b;
    float n = a.n + b.n, fb = b.n / n, d = b.mean - a.mean;
    return Stat{n, a.mean + d * fb, a.m2 + b.m2 + d * d * a.n * fb};
}

// Exact-order statistics of CH values held in registers (two passes).
template <int CH> __device__ __forceinline__ Stat stat_of(const float *f) {
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < CH; i++) s += f[i];
    float mean = s * (1.0f / CH), q = 0.0f;
#pragma unroll
    for (int i = 0; i < CH; i++) q += (f[i] - mean) * (f[i] - mean);
    return Stat{(float)CH, mean, q};
}

// Lane 0 gets the merge of all 32 lanes (lane i absorbs lane i+o).
__device__ __forceinline__ Stat warp_stat(Stat s) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        Stat t{__shfl_down_sync(FULL, s.n, o), __shfl_down_sync(FULL, s.mean, o), __shfl_down_sync(FULL, s.m2, o)};
        s = stat_merge(s, t);
    }
    return s;
}

// Every lane gets the same sum (a butterfly: fp addition commutes, so each
// lane adds the same pairs).
template <typename F> __device__ __forceinline__ F warp_sum(F v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

// ---- group norm kernels ------------------------------------------------------

// The shape of the item decomposition (see the top of the file).
struct GnShape {
    int64_t B, C, S, cpg, BG, nseg, seg, items;
    int G;
};

static GnShape gn_shape(int64_t B, int64_t C, int64_t S, int G) {
    GnShape g;
    g.B = B, g.C = C, g.S = S, g.G = G, g.cpg = C / G, g.BG = B * G;
    // about 8192 warps over the tensor (enough to fill 132 SMs), at least 256
    // elements each; segments balanced and, where S allows, multiples of 8
    // so that 16-byte loads of any dtype stay inside one segment
    int64_t total = B * C * S, seg = (total + 8191) / 8192;
    if (seg < 256) seg = 256;
    if (seg > S) seg = S;
    int64_t nseg = (S + seg - 1) / seg;
    seg = (S + nseg - 1) / nseg;
    if (S % 8 == 0) seg = (seg + 7) / 8 * 8;
    g.seg = seg;
    g.nseg = (S + seg - 1) / seg; // every segment non-empty
    g.items = B * C * g.nseg;
    return g;
}

// Each lane loads GN_U chunks (its next ones, WARP·CH apart) before using
// any, so they are in flight together: a store between two loads would hold
// the second back, since the output may alias an input.
#define GN_U 4
#define GN_STEP (GN_U * WARP * CH)

// The item a warp owns: its channel row bc = b·C + c, first element and length.
struct GnItem {
    int64_t bc, c, t, off, len;
};

__device__ __forceinline__ GnItem gn_item(const GnShape &g, int64_t w) {
    GnItem it;
    it.bc = w / g.nseg;
    int64_t k = w % g.nseg;
    it.c = it.bc % g.C;
    it.t = (it.bc / g.C) * g.G + it.c / g.cpg;
    it.off = it.bc * g.S + k * g.seg;
    it.len = min(g.seg, g.S - k * g.seg);
    return it;
}

// part[w] = (mean, M2) of item w.
template <typename T, int CH> __global__ void gn_stats_kernel(GnShape g, const T *x, float2 *part) {
    int64_t w = (int64_t)blockIdx.x * WPB + threadIdx.x / WARP;
    int lane = threadIdx.x % WARP;
    if (w >= g.items) return; // whole warps leave together
    GnItem it = gn_item(g, w);
    const T *p = x + it.off;
    Stat s{0.0f, 0.0f, 0.0f};
    for (int64_t i0 = (int64_t)lane * CH; i0 < it.len; i0 += GN_STEP) {
        Raw<T, CH> r[GN_U];
#pragma unroll
        for (int u = 0; u < GN_U; u++)
            if (i0 + u * WARP * CH < it.len) r[u].load(p + i0 + u * WARP * CH);
#pragma unroll
        for (int u = 0; u < GN_U; u++) {
            if (i0 + u * WARP * CH >= it.len) break;
            float f[CH];
#pragma unroll
            for (int e = 0; e < CH; e++) f[e] = r[u][e];
            s = stat_merge(s, stat_of<CH>(f));
        }
    }
    s = warp_stat(s);
    if (lane == 0) part[w] = make_float2(s.mean, s.m2);
}

// gst[t] = (μ, r, 0, 0) of group t from its items' (n_i, μ_i, M2_i), in
// double and without a division per item: μ = Σ n_i·μ_i / n, then
// M2 = Σ (M2_i + n_i·(μ_i − μ)²) (exact; the two-pass formula over the
// items). Lane l takes items l, l+32, …; the sums are warp butterflies.
__global__ void gn_final_kernel(GnShape g, const float2 *part, float eps, float4 *gst) {
    int64_t t = (int64_t)blockIdx.x * WPB + threadIdx.x / WARP;
    int lane = threadIdx.x % WARP;
    if (t >= g.BG) return;
    // items per group, segments per channel: far below 2³² (gn_shape)
    uint32_t per = (uint32_t)(g.cpg * g.nseg), nseg = (uint32_t)g.nseg;
    const float2 *pt = part + t * (int64_t)per;
    double last = (double)(g.S - (g.nseg - 1) * g.seg), full = (double)g.seg, n = (double)(g.cpg * g.S);
    double s = 0.0;
    for (uint32_t j = lane; j < per; j += WARP) s += (j % nseg == nseg - 1 ? last : full) * (double)pt[j].x;
    double mu = warp_sum(s) / n, q = 0.0;
    for (uint32_t j = lane; j < per; j += WARP) {
        double d = (double)pt[j].x - mu;
        q += (double)pt[j].y + (j % nseg == nseg - 1 ? last : full) * d * d;
    }
    double var = fmax(warp_sum(q) / n, 0.0); // biased variance
    if (lane == 0) gst[t] = make_float4((float)mu, (float)(1.0 / sqrt(var + (double)eps)), 0.0f, 0.0f);
}

// y = act((x−μ)·a + β[c]), a = r·γ[c]
template <typename T, int CH, int A>
__global__ void gn_apply_kernel(GnShape g, T *y, const T *x, const T *gamma, const T *beta, const float4 *gst,
                                sdc_act act) {
    int64_t w = (int64_t)blockIdx.x * WPB + threadIdx.x / WARP;
    int lane = threadIdx.x % WARP;
    if (w >= g.items) return;
    GnItem it = gn_item(g, w);
    float4 st = gst[it.t];
    float mu = st.x, a = st.y * sdc_ld(gamma, (size_t)it.c), b = beta ? sdc_ld(beta, (size_t)it.c) : 0.0f;
    const T *xp = x + it.off;
    T *yp = y + it.off;
    for (int64_t i0 = (int64_t)lane * CH; i0 < it.len; i0 += GN_STEP) {
        Raw<T, CH> r[GN_U];
#pragma unroll
        for (int u = 0; u < GN_U; u++)
            if (i0 + u * WARP * CH < it.len) r[u].load(xp + i0 + u * WARP * CH);
#pragma unroll
        for (int u = 0; u < GN_U; u++) {
            if (i0 + u * WARP * CH >= it.len) break;
            float o[CH];
#pragma unroll
            for (int e = 0; e < CH; e++) o[e] = act_fwd_k<A>((r[u][e] - mu) * a + b, act);
            st_chunk<T, CH>(yp + i0 + u * WARP * CH, o);
        }
    }
}

// dz = dy·act'(z), z = (x−μ)·a + b (the forward's pre-activation)
template <int A> __device__ __forceinline__ float gn_dz(float dy, float xv, float mu, float a, float b, sdc_act act) {
    if constexpr (A == ACTK_NONE) return dy;
    else return dy * act_grad_k<A>((xv - mu) * a + b, act);
}

// isum[w] = (Σ dz, Σ dz·x̂) over item w.
template <typename T, int CH, int A>
__global__ void gn_bwd_sums_kernel(GnShape g, const T *dy, const T *x, const T *gamma, const T *beta,
                                   const float4 *gst, sdc_act act, float2 *isum) {
    int64_t w = (int64_t)blockIdx.x * WPB + threadIdx.x / WARP;
    int lane = threadIdx.x % WARP;
    if (w >= g.items) return;
    GnItem it = gn_item(g, w);
    float4 st = gst[it.t];
    float mu = st.x, r = st.y, a = r * sdc_ld(gamma, (size_t)it.c), b = beta ? sdc_ld(beta, (size_t)it.c) : 0.0f;
    const T *xp = x + it.off, *gp = dy + it.off;
    float s0 = 0.0f, s1 = 0.0f;
    for (int64_t i0 = (int64_t)lane * CH; i0 < it.len; i0 += GN_STEP) {
        Raw<T, CH> f[GN_U], d[GN_U];
#pragma unroll
        for (int u = 0; u < GN_U; u++)
            if (i0 + u * WARP * CH < it.len) {
                f[u].load(xp + i0 + u * WARP * CH);
                d[u].load(gp + i0 + u * WARP * CH);
            }
#pragma unroll
        for (int u = 0; u < GN_U; u++) {
            if (i0 + u * WARP * CH >= it.len) break;
#pragma unroll
            for (int e = 0; e < CH; e++) {
                float xv = f[u][e], dz = gn_dz<A>(d[u][e], xv, mu, a, b, act);
                s0 += dz;
                s1 += dz * ((xv - mu) * r);
            }
        }
    }
    s0 = warp_sum(s0);
    s1 = warp_sum(s1);
    if (lane == 0) isum[w] = make_float2(s0, s1);
}

// Warps [0, BG): group t's dx coefficients, gst[t].z = −r²·m2, .w = −r·m1 with
// m1 = Σ γ·dz / n, m2 = Σ γ·dz·x̂ / n. Warps [BG, BG + C) when `params`:
// channel c's dγ += Σ dz·x̂, dβ += Σ dz over all images and segments.
template <typename T>
__global__ void gn_bwd_reduce_kernel(GnShape g, const float2 *isum, const T *gamma, float4 *gst, float *dgamma,
                                     float *dbeta) {
    int64_t w = (int64_t)blockIdx.x * WPB + threadIdx.x / WARP;
    int lane = threadIdx.x % WARP;
    if (w < g.BG) {
        int64_t t = w, c0 = (t % g.G) * g.cpg;
        uint32_t per = (uint32_t)(g.cpg * g.nseg), nseg = (uint32_t)g.nseg;
        const float2 *pt = isum + t * (int64_t)per;
        float m1 = 0.0f, m2 = 0.0f;
        for (uint32_t j = lane; j < per; j += WARP) {
            float ga = sdc_ld(gamma, (size_t)(c0 + j / nseg));
            float2 p = pt[j];
            m1 += ga * p.x;
            m2 += ga * p.y;
        }
        m1 = warp_sum(m1);
        m2 = warp_sum(m2);
        if (lane == 0) {
            float inv_n = 1.0f / (float)(g.cpg * g.S), r = gst[t].y;
            gst[t].z = -r * r * (m2 * inv_n);
            gst[t].w = -r * (m1 * inv_n);
        }
        return;
    }
    int64_t c = w - g.BG;
    if (c >= g.C) return;
    float s0 = 0.0f, s1 = 0.0f;
    uint32_t nseg = (uint32_t)g.nseg, nj = (uint32_t)(g.B * g.nseg);
    for (uint32_t j = lane; j < nj; j += WARP) {
        uint32_t b = j / nseg, k = j % nseg;
        float2 p = isum[((int64_t)b * g.C + c) * g.nseg + k];
        s0 += p.x;
        s1 += p.y;
    }
    s0 = warp_sum(s0);
    s1 = warp_sum(s1);
    if (lane == 0) {
        if (dgamma) dgamma[c] += s1;
        if (dbeta) dbeta[c] += s0;
    }
}

// dx = a·dz + Bc·(x−μ) + Cc, a = r·γ[c]. dx may alias dy: each element is
// read and then written by the same thread.
template <typename T, int CH, int A>
__global__ void gn_bwd_dx_kernel(GnShape g, T *dx, const T *dy, const T *x, const T *gamma, const T *beta,
                                 const float4 *gst, sdc_act act) {
    int64_t w = (int64_t)blockIdx.x * WPB + threadIdx.x / WARP;
    int lane = threadIdx.x % WARP;
    if (w >= g.items) return;
    GnItem it = gn_item(g, w);
    float4 st = gst[it.t];
    float mu = st.x, a = st.y * sdc_ld(gamma, (size_t)it.c), b = beta ? sdc_ld(beta, (size_t)it.c) : 0.0f;
    const T *xp = x + it.off, *gp = dy + it.off;
    T *dp = dx + it.off;
    for (int64_t i0 = (int64_t)lane * CH; i0 < it.len; i0 += GN_STEP) {
        Raw<T, CH> f[GN_U], d[GN_U];
#pragma unroll
        for (int u = 0; u < GN_U; u++)
            if (i0 + u * WARP * CH < it.len) {
                f[u].load(xp + i0 + u * WARP * CH);
                d[u].load(gp + i0 + u * WARP * CH);
            }
#pragma unroll
        for (int u = 0; u < GN_U; u++) {
            if (i0 + u * WARP * CH >= it.len) break;
            float o[CH];
#pragma unroll
            for (int e = 0; e < CH; e++) {
                float xv = f[u][e];
                o[e] = a * gn_dz<A>(d[u][e], xv, mu, a, b, act) + st.z * (xv - mu) + st.w;
            }
            st_chunk<T, CH>(dp + i0 + u * WARP * CH, o);
        }
    }
}

// ---- layer norm kernels ------------------------------------------------------

// μ and r = 1/√(σ²+eps) of one row, the same in every lane: μ0 = Σx/C, then
// with d = x − μ0: μ = μ0 + Σd/C and σ² = (Σd² − (Σd)²/C)/C (the corrected
// two-pass formula; no cancellation when |μ| ≫ σ).
template <typename T, int CH>
__device__ __forceinline__ float2 ln_row_stats(const T *xr, int64_t C, float eps, int lane) {
    float s = 0.0f;
    for (int64_t j = (int64_t)lane * CH; j < C; j += WARP * CH) {
        float f[CH];
        ld_chunk<T, CH>(xr + j, f);
#pragma unroll
        for (int e = 0; e < CH; e++) s += f[e];
    }
    float mu0 = warp_sum(s) / (float)C, sd = 0.0f, sq = 0.0f;
    for (int64_t j = (int64_t)lane * CH; j < C; j += WARP * CH) {
        float f[CH];
        ld_chunk<T, CH>(xr + j, f);
#pragma unroll
        for (int e = 0; e < CH; e++) {
            float d = f[e] - mu0;
            sd += d;
            sq += d * d;
        }
    }
    sd = warp_sum(sd);
    sq = warp_sum(sq);
    float var = fmaxf((sq - sd * sd / (float)C) / (float)C, 0.0f);
    return make_float2(mu0 + sd / (float)C, 1.0f / sqrtf(var + eps));
}

// y = (x−μ)·r·γ + β, one warp per row
template <typename T, int CH>
__global__ void ln_fwd_kernel(T *y, const T *x, const T *gamma, const T *beta, int64_t M, int64_t C, float eps) {
    int64_t row = (int64_t)blockIdx.x * WPB + threadIdx.x / WARP;
    int lane = threadIdx.x % WARP;
    if (row >= M) return;
    const T *xr = x + row * C;
    T *yr = y + row * C;
    float2 st = ln_row_stats<T, CH>(xr, C, eps, lane);
    for (int64_t j = (int64_t)lane * CH; j < C; j += WARP * CH) {
        float f[CH], ga[CH], be[CH];
        ld_chunk<T, CH>(xr + j, f);
        ld_chunk<T, CH>(gamma + j, ga);
        ld_chunk<T, CH>(beta + j, be);
#pragma unroll
        for (int e = 0; e < CH; e++) f[e] = (f[e] - st.x) * st.y * ga[e] + be[e];
        st_chunk<T, CH>(yr + j, f);
    }
}

// Per row: rst[row] = (μ, r, Bc, Cc) with m1 = Σ dy·γ / C, m2 = Σ dy·γ·x̂ / C,
// Bc = −r²·m2, Cc = −r·m1; and, when write_dx, dx = r·γ·dy + Bc·(x−μ) + Cc
// (dx may alias dy: same thread reads, then writes).
template <typename T, int CH>
__global__ void ln_bwd_rows_kernel(T *dx, const T *dy, const T *x, const T *gamma, float4 *rst, int64_t M,
                                   int64_t C, float eps, int write_dx) {
    int64_t row = (int64_t)blockIdx.x * WPB + threadIdx.x / WARP;
    int lane = threadIdx.x % WARP;
    if (row >= M) return;
    const T *xr = x + row * C, *gr = dy + row * C;
    float2 st = ln_row_stats<T, CH>(xr, C, eps, lane);
    float mu = st.x, r = st.y, m1 = 0.0f, m2 = 0.0f;
    for (int64_t j = (int64_t)lane * CH; j < C; j += WARP * CH) {
        float f[CH], d[CH], ga[CH];
        ld_chunk<T, CH>(xr + j, f);
        ld_chunk<T, CH>(gr + j, d);
        ld_chunk<T, CH>(gamma + j, ga);
#pragma unroll
        for (int e = 0; e < CH; e++) {
            float dh = d[e] * ga[e];
            m1 += dh;
            m2 += dh * ((f[e] - mu) * r);
        }
    }
    m1 = warp_sum(m1) / (float)C;
    m2 = warp_sum(m2) / (float)C;
    float Bc = -r * r * m2, Cc = -r * m1;
    if (lane == 0) rst[row] = make_float4(mu, r, Bc, Cc);
    if (!write_dx) return;
    T *dr = dx + row * C;
    for (int64_t j = (int64_t)lane * CH; j < C; j += WARP * CH) {
        float f[CH], d[CH], ga[CH];
        ld_chunk<T, CH>(xr + j, f);
        ld_chunk<T, CH>(gr + j, d);
        ld_chunk<T, CH>(gamma + j, ga);
#pragma unroll
        for (int e = 0; e < CH; e++) d[e] = r * ga[e] * d[e] + Bc * (f[e] - mu) + Cc;
        st_chunk<T, CH>(dr + j, d);
    }
}

#define LN_TILE 32 // columns per partial-sum block (one warp wide)
#define LN_ROWT 8  // row phases per block

// part[(chunk·2 + 0)·C + j] = Σ dy·x̂, part[(chunk·2 + 1)·C + j] = Σ dy over the
// rows of one chunk, for the 32 columns of blockIdx.x. Thread (tx, ty) sums
// rows r0+ty, r0+ty+8, …; the 8 phases are then added in order.
template <typename T>
__global__ void ln_bwd_param_kernel(const T *dy, const T *x, const float4 *rst, int64_t M, int64_t C,
                                    int64_t rows_per_chunk, float *part) {
    __shared__ float sg[LN_ROWT][LN_TILE], sb[LN_ROWT][LN_TILE];
    int tx = threadIdx.x, ty = threadIdx.y;
    int64_t j = (int64_t)blockIdx.x * LN_TILE + tx;
    int64_t r0 = (int64_t)blockIdx.y * rows_per_chunk, r1 = min(M, r0 + rows_per_chunk);
    float ag = 0.0f, ab = 0.0f;
    if (j < C) {
        for (int64_t r = r0 + ty; r < r1; r += LN_ROWT) {
            float4 st = rst[r];
            float d = sdc_ld(dy, (size_t)(r * C + j));
            ag += d * ((sdc_ld(x, (size_t)(r * C + j)) - st.x) * st.y);
            ab += d;
        }
    }
    sg[ty][tx] = ag;
    sb[ty][tx] = ab;
    __syncthreads();
    if (ty == 0 && j < C) {
        float g = 0.0f, b = 0.0f;
#pragma unroll
        for (int i = 0; i < LN_ROWT; i++) g += sg[i][tx], b += sb[i][tx];
        part[((int64_t)blockIdx.y * 2) * C + j] = g;
        part[((int64_t)blockIdx.y * 2 + 1) * C + j] = b;
    }
}

// dγ[j] += Σ_chunk part_g, dβ[j] += Σ_chunk part_b, chunks in order.
__global__ void ln_bwd_param_final_kernel(const float *part, int64_t C, int64_t nchunk, float *dgamma,
                                          float *dbeta) {
    int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= C) return;
    float g = 0.0f, b = 0.0f;
    for (int64_t k = 0; k < nchunk; k++) {
        g += part[(k * 2) * C + j];
        b += part[(k * 2 + 1) * C + j];
    }
    if (dgamma) dgamma[j] += g;
    if (dbeta) dbeta[j] += b;
}

// ---- host side -----------------------------------------------------------------

static bool aligned16(const void *p) { return p == nullptr || ((uintptr_t)p & 15) == 0; }

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

static unsigned warp_blocks(int64_t warps) { return (unsigned)((warps + WPB - 1) / WPB); }

static const void *data_or_null(const sdc_tensor *t) { return t ? t->data : nullptr; }

// Launches kernel<T, V> when vec, else kernel<T, 1> (scalar loads).
#define LAUNCH_CH(vec, kernel, grid, ...)                                                   \
    do {                                                                                    \
        if (vec) kernel<T, V><<<(grid), NT, 0, sdc_cuda_stream()>>>(__VA_ARGS__);           \
        else kernel<T, 1><<<(grid), NT, 0, sdc_cuda_stream()>>>(__VA_ARGS__);               \
        CUDA_LAUNCH_CHECK();                                                                \
    } while (0)

// The same for the kernels templated on the activation kind too.
#define LAUNCH_CH_A(vec, A, kernel, grid, ...)                                              \
    do {                                                                                    \
        if (vec) kernel<T, V, A><<<(grid), NT, 0, sdc_cuda_stream()>>>(__VA_ARGS__);        \
        else kernel<T, 1, A><<<(grid), NT, 0, sdc_cuda_stream()>>>(__VA_ARGS__);            \
        CUDA_LAUNCH_CHECK();                                                                \
    } while (0)
#define LAUNCH_ACT(vec, act, kernel, grid, ...)                                                              \
    do {                                                                                                     \
        if ((act) == SDC_ACT_NONE) LAUNCH_CH_A(vec, ACTK_NONE, kernel, grid, __VA_ARGS__);                   \
        else if ((act) == SDC_ACT_SILU) LAUNCH_CH_A(vec, ACTK_SILU, kernel, grid, __VA_ARGS__);              \
        else LAUNCH_CH_A(vec, ACTK_ANY, kernel, grid, __VA_ARGS__);                                          \
    } while (0)

// The group statistics (μ, r) into gst, via per-item partials in part.
template <typename T, int V>
static void gn_statistics(const GnShape &g, const T *x, bool vec, float2 *part, float4 *gst, float eps) {
    LAUNCH_CH(vec, gn_stats_kernel, warp_blocks(g.items), g, x, part);
    gn_final_kernel<<<warp_blocks(g.BG), NT, 0, sdc_cuda_stream()>>>(g, part, eps, gst);
    CUDA_LAUNCH_CHECK();
}

template <typename T>
static void gn_forward(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *gamma, const sdc_tensor *beta,
                       int64_t B, int64_t C, int64_t S, int groups, float eps, sdc_act act) {
    constexpr int V = 16 / sizeof(T);
    GnShape g = gn_shape(B, C, S, groups);
    bool vec = S % V == 0 && g.seg % V == 0 && aligned16(x->data) && aligned16(out->data);
    size_t off_gst = round_up((size_t)g.items * sizeof(float2), 256);
    char *ws = (char *)sdc_cuda_workspace(WS_SLOT, off_gst + (size_t)g.BG * sizeof(float4));
    float2 *part = (float2 *)ws;
    float4 *gst = (float4 *)(ws + off_gst);
    const T *xs = (const T *)x->data;
    gn_statistics<T, V>(g, xs, vec, part, gst, eps);
    LAUNCH_ACT(vec, act, gn_apply_kernel, warp_blocks(g.items), g, (T *)out->data, xs, (const T *)gamma->data,
              (const T *)data_or_null(beta), gst, act);
}

template <typename T>
static void gn_backward(sdc_tensor *dx, sdc_tensor *dgamma, sdc_tensor *dbeta, const sdc_tensor *dy,
                        const sdc_tensor *x, const sdc_tensor *gamma, const sdc_tensor *beta, int64_t B, int64_t C,
                        int64_t S, int groups, float eps, sdc_act act) {
    constexpr int V = 16 / sizeof(T);
    bool params = dgamma || dbeta;
    if (!dx && !params) return;
    GnShape g = gn_shape(B, C, S, groups);
    bool vec = S % V == 0 && g.seg % V == 0 && aligned16(x->data) && aligned16(dy->data) &&
               aligned16(data_or_null(dx));
    size_t off_gst = round_up((size_t)g.items * sizeof(float2), 256);
    size_t off_sum = off_gst + round_up((size_t)g.BG * sizeof(float4), 256);
    char *ws = (char *)sdc_cuda_workspace(WS_SLOT, off_sum + (size_t)g.items * sizeof(float2));
    float2 *part = (float2 *)ws, *isum = (float2 *)(ws + off_sum);
    float4 *gst = (float4 *)(ws + off_gst);
    const T *xs = (const T *)x->data, *dys = (const T *)dy->data, *ga = (const T *)gamma->data;
    const T *be = (const T *)data_or_null(beta);
    gn_statistics<T, V>(g, xs, vec, part, gst, eps);
    LAUNCH_ACT(vec, act, gn_bwd_sums_kernel, warp_blocks(g.items), g, dys, xs, ga, be, gst, act, isum);
    int64_t warps = g.BG + (params ? C : 0);
    gn_bwd_reduce_kernel<T><<<warp_blocks(warps), NT, 0, sdc_cuda_stream()>>>(
        g, isum, ga, gst, dgamma ? (float *)dgamma->data : nullptr, dbeta ? (float *)dbeta->data : nullptr);
    CUDA_LAUNCH_CHECK();
    if (dx)
        LAUNCH_ACT(vec, act, gn_bwd_dx_kernel, warp_blocks(g.items), g, (T *)dx->data, dys, xs, ga, be, gst, act);
}

template <typename T>
static void ln_forward(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *gamma, const sdc_tensor *beta,
                       int64_t M, int64_t C, float eps) {
    constexpr int V = 16 / sizeof(T);
    bool vec = C % V == 0 && aligned16(x->data) && aligned16(out->data) && aligned16(gamma->data) &&
               aligned16(beta->data);
    LAUNCH_CH(vec, ln_fwd_kernel, warp_blocks(M), (T *)out->data, (const T *)x->data, (const T *)gamma->data,
              (const T *)beta->data, M, C, eps);
}

template <typename T>
static void ln_backward(sdc_tensor *dx, sdc_tensor *dgamma, sdc_tensor *dbeta, const sdc_tensor *dy,
                        const sdc_tensor *x, const sdc_tensor *gamma, int64_t M, int64_t C, float eps) {
    constexpr int V = 16 / sizeof(T);
    bool params = dgamma || dbeta;
    if (!dx && !params) return;
    bool vec = C % V == 0 && aligned16(x->data) && aligned16(dy->data) && aligned16(gamma->data) &&
               aligned16(data_or_null(dx));
    // dγ/dβ partials: 32-column tiles × row chunks, about 512 blocks, at most
    // 256 chunks (the final sum walks them serially), fixed by the shape
    int64_t ntile = (C + LN_TILE - 1) / LN_TILE;
    int64_t nchunk = (512 + ntile - 1) / ntile;
    if (nchunk > 256) nchunk = 256;
    if (nchunk > (M + LN_ROWT - 1) / LN_ROWT) nchunk = (M + LN_ROWT - 1) / LN_ROWT;
    int64_t rows_per_chunk = (M + nchunk - 1) / nchunk;
    nchunk = (M + rows_per_chunk - 1) / rows_per_chunk;
    size_t off_part = round_up((size_t)M * sizeof(float4), 256);
    char *ws = (char *)sdc_cuda_workspace(WS_SLOT, off_part + (params ? (size_t)nchunk * 2 * C * sizeof(float) : 0));
    float4 *rst = (float4 *)ws;
    float *part = (float *)(ws + off_part);
    T *dxs = dx ? (T *)dx->data : nullptr;
    const T *dys = (const T *)dy->data, *xs = (const T *)x->data, *ga = (const T *)gamma->data;
    // dx in the first pass unless it would overwrite dy before the partials read it
    int dx_now = dx && !(params && dx->data == dy->data);
    LAUNCH_CH(vec, ln_bwd_rows_kernel, warp_blocks(M), dxs, dys, xs, ga, rst, M, C, eps, dx_now);
    if (params) {
        dim3 grid((unsigned)ntile, (unsigned)nchunk), block(LN_TILE, LN_ROWT);
        ln_bwd_param_kernel<T><<<grid, block, 0, sdc_cuda_stream()>>>(dys, xs, rst, M, C, rows_per_chunk, part);
        CUDA_LAUNCH_CHECK();
        ln_bwd_param_final_kernel<<<(unsigned)((C + 255) / 256), 256, 0, sdc_cuda_stream()>>>(
            part, C, nchunk, dgamma ? (float *)dgamma->data : nullptr, dbeta ? (float *)dbeta->data : nullptr);
        CUDA_LAUNCH_CHECK();
    }
    if (dx && !dx_now) LAUNCH_CH(vec, ln_bwd_rows_kernel, warp_blocks(M), dxs, dys, xs, ga, rst, M, C, eps, 1);
}

// ---- the ops -------------------------------------------------------------------

// Parameter gradients are fp32 accumulators whatever the activations' dtype.
static void check_param_grads(const char *op, const sdc_tensor *dgamma, const sdc_tensor *dbeta) {
    if ((dgamma && dgamma->dtype != SDC_F32) || (dbeta && dbeta->dtype != SDC_F32))
        sdc_cuda_fatal(op, "dgamma/dbeta must be F32", __FILE__, __LINE__);
}

extern "C" void sdc_cuda_group_norm(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *gamma,
                                    const sdc_tensor *beta, int64_t B, int64_t C, int64_t S, int groups, float eps,
                                    sdc_act act) {
    if (groups <= 0 || C % groups != 0) sdc_cuda_fatal("group_norm", "C not divisible by groups", __FILE__, __LINE__);
    if (B * C * S == 0) return;
    SDC_DISPATCH_FLOAT(x->dtype, T, gn_forward<T>(out, x, gamma, beta, B, C, S, groups, eps, act));
}

extern "C" void sdc_cuda_group_norm_backward(sdc_tensor *dx, sdc_tensor *dgamma, sdc_tensor *dbeta,
                                             const sdc_tensor *dy, const sdc_tensor *x, const sdc_tensor *gamma,
                                             const sdc_tensor *beta, int64_t B, int64_t C, int64_t S, int groups,
                                             float eps, sdc_act act) {
    if (groups <= 0 || C % groups != 0)
        sdc_cuda_fatal("group_norm_backward", "C not divisible by groups", __FILE__, __LINE__);
    check_param_grads("group_norm_backward", dgamma, dbeta);
    if (B * C * S == 0) return;
    SDC_DISPATCH_FLOAT(x->dtype, T,
                       gn_backward<T>(dx, dgamma, dbeta, dy, x, gamma, beta, B, C, S, groups, eps, act));
}

extern "C" void sdc_cuda_layer_norm(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *gamma,
                                    const sdc_tensor *beta, int64_t M, int64_t C, float eps) {
    if (M * C == 0) return;
    SDC_DISPATCH_FLOAT(x->dtype, T, ln_forward<T>(out, x, gamma, beta, M, C, eps));
}

extern "C" void sdc_cuda_layer_norm_backward(sdc_tensor *dx, sdc_tensor *dgamma, sdc_tensor *dbeta,
                                             const sdc_tensor *dy, const sdc_tensor *x, const sdc_tensor *gamma,
                                             int64_t M, int64_t C, float eps) {
    check_param_grads("layer_norm_backward", dgamma, dbeta);
    if (M * C == 0) return;
    SDC_DISPATCH_FLOAT(x->dtype, T, ln_backward<T>(dx, dgamma, dbeta, dy, x, gamma, M, C, eps));
}
