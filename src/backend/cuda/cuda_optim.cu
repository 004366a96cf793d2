// The optimiser of the CUDA backend over flat fp32 stores: Σg² for gradient
// clipping, scaling, the fused AdamW step and the EMA.
//
// AdamW and the EMA are per element, so they reproduce the CPU's result
// (backend/cpu/cpu_optim.c) bit for bit: every rounding of the CPU code is
// spelled out with an intrinsic (__fmul_rn, __fadd_rn, __fmaf_rn, __fdiv_rn,
// __fsqrt_rn), which nvcc never contracts or approximates, whatever -fmad,
// -prec-div or -prec-sqrt say. The CPU is built without contraction
// (-std=c11) and fuses exactly the two fmaf of the AdamW moments.
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_ops.h"

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ size_t gtid() { return blockIdx.x * (size_t)blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t gstride() { return (size_t)gridDim.x * blockDim.x; }

inline bool aligned(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

// ---- Σ g² -------------------------------------------------------------------------
// A partition fixed by n alone: kSumBlocks (or fewer, for small n) blocks of
// kThreads threads; thread t of the grid sums, in double and in order, the
// quads q = t, t + T, t + 2T, ... (T threads in all; quad q = elements
// 4q..4q+3), whether they are loaded as float4 or one by one. Each block
// reduces its threads in a fixed tree into one partial; one block then sums
// the partials in a fixed tree. The same n gives the same bits.
constexpr int kSumBlocks = 1024;

__device__ __forceinline__ double block_sum(double s, double *sh) {
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int o = kThreads / 2; o > 0; o >>= 1) {
        if ((int)threadIdx.x < o) sh[threadIdx.x] += sh[threadIdx.x + o];
        __syncthreads();
    }
    return sh[0];
}

__global__ void sumsq_partial_kernel(double *part, const float *g, size_t n, int vec) {
    __shared__ double sh[kThreads];
    const size_t nq = (n + 3) / 4;
    double s = 0.0;
    for (size_t q = gtid(); q < nq; q += gstride()) {
        const size_t i = 4 * q;
        if (vec && i + 4 <= n) {
            float4 f = reinterpret_cast<const float4 *>(g)[q];
            s += (double)f.x * (double)f.x;
            s += (double)f.y * (double)f.y;
            s += (double)f.z * (double)f.z;
            s += (double)f.w * (double)f.w;
        } else {
            for (size_t k = i; k < i + 4 && k < n; k++) s += (double)g[k] * (double)g[k];
        }
    }
    s = block_sum(s, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void sumsq_final_kernel(double *out, const double *part, int nparts) {
    __shared__ double sh[kThreads];
    double s = 0.0;
    for (int i = threadIdx.x; i < nparts; i += kThreads) s += part[i];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) *out = s;
}

// kSumBlocks partials and the total, allocated once.
double *sum_buffer() {
    static double *buf;
    if (!buf) CUDA_CHECK(cudaMalloc(&buf, (kSumBlocks + 1) * sizeof(double)));
    return buf;
}

// ---- scale, EMA -------------------------------------------------------------------

__global__ void scale_kernel(float *x, size_t n, float a, int vec) {
    size_t done = 0;
    if (vec) {
        float4 *x4 = reinterpret_cast<float4 *>(x);
        for (size_t q = gtid(); q < n / 4; q += gstride()) {
            float4 f = x4[q];
            f.x = __fmul_rn(f.x, a), f.y = __fmul_rn(f.y, a), f.z = __fmul_rn(f.z, a), f.w = __fmul_rn(f.w, a);
            x4[q] = f;
        }
        done = n / 4 * 4;
    }
    for (size_t i = done + gtid(); i < n; i += gstride()) x[i] = __fmul_rn(x[i], a);
}

// s − omd·(s − p), two roundings then the subtraction (never one FMA)
__device__ __forceinline__ float ema1(float s, float p, float omd) { return __fsub_rn(s, __fmul_rn(omd, __fsub_rn(s, p))); }

__global__ void ema_kernel(float *s, const float *p, size_t n, float omd, int vec) {
    size_t done = 0;
    if (vec) {
        float4 *s4 = reinterpret_cast<float4 *>(s);
        const float4 *p4 = reinterpret_cast<const float4 *>(p);
        for (size_t q = gtid(); q < n / 4; q += gstride()) {
            float4 a = s4[q], b = p4[q];
            a.x = ema1(a.x, b.x, omd), a.y = ema1(a.y, b.y, omd), a.z = ema1(a.z, b.z, omd), a.w = ema1(a.w, b.w, omd);
            s4[q] = a;
        }
        done = n / 4 * 4;
    }
    for (size_t i = done + gtid(); i < n; i += gstride()) s[i] = ema1(s[i], p[i], omd);
}

// ---- AdamW --------------------------------------------------------------------------
// train/adamw.h has the math; this is cpu_optim.c's adamw_block, rounding by
// rounding:
//   p' = p·decay
//   m  = fma(w, g − m, FROM_END ? g : m)          torch's lerp, both forms
//   v  = fma(w2·g, g, v·β2)                       mul_ + addcmul_
//   p  = p' + (neg_step·m) / (√v / √bc2 + eps)    addcdiv_
template <bool FROM_END>
__device__ __forceinline__ void adamw1(float &p, float &m, float &v, float g, const sdc_adamw_args &k) {
    const float pd = __fmul_rn(p, k.decay);
    const float mi = __fmaf_rn(k.lerp_w, __fsub_rn(g, m), FROM_END ? g : m);
    const float vi = __fmaf_rn(__fmul_rn(k.w2, g), g, __fmul_rn(v, k.b2));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), k.bc2_sqrt), k.eps);
    m = mi;
    v = vi;
    p = __fadd_rn(pd, __fdiv_rn(__fmul_rn(k.neg_step, mi), denom));
}

// The weight copy: nothing (void), or 4 values in C's dtype at once.
struct NoCopy {};
__device__ __forceinline__ void store4(NoCopy *, size_t, float, float, float, float) {}
__device__ __forceinline__ void store1(NoCopy *, size_t, float) {}
__device__ __forceinline__ void store4(float *c, size_t q, float a, float b, float d, float e) {
    reinterpret_cast<float4 *>(c)[q] = make_float4(a, b, d, e);
}
__device__ __forceinline__ void store1(float *c, size_t i, float v) { c[i] = v; }
union Pack8 {
    uint2 u;
    __nv_bfloat162 b[2];
    __half2 h[2];
};
__device__ __forceinline__ void store4(__nv_bfloat16 *c, size_t q, float a, float b, float d, float e) {
    Pack8 v;
    v.b[0] = __floats2bfloat162_rn(a, b);
    v.b[1] = __floats2bfloat162_rn(d, e);
    reinterpret_cast<uint2 *>(c)[q] = v.u;
}
__device__ __forceinline__ void store1(__nv_bfloat16 *c, size_t i, float v) { c[i] = __float2bfloat16_rn(v); }
__device__ __forceinline__ void store4(__half *c, size_t q, float a, float b, float d, float e) {
    Pack8 v;
    v.h[0] = __floats2half2_rn(a, b);
    v.h[1] = __floats2half2_rn(d, e);
    reinterpret_cast<uint2 *>(c)[q] = v.u;
}
__device__ __forceinline__ void store1(__half *c, size_t i, float v) { c[i] = __float2half_rn(v); }

template <typename C, bool FROM_END>
__global__ void adamw_kernel(float *p, float *m, float *v, const float *g, size_t n, sdc_adamw_args k, C *copy,
                             int vec) {
    size_t done = 0;
    if (vec) {
        float4 *p4 = reinterpret_cast<float4 *>(p), *m4 = reinterpret_cast<float4 *>(m),
               *v4 = reinterpret_cast<float4 *>(v);
        const float4 *g4 = reinterpret_cast<const float4 *>(g);
        for (size_t q = gtid(); q < n / 4; q += gstride()) {
            float4 a = p4[q], b = m4[q], c = v4[q], d = g4[q];
            adamw1<FROM_END>(a.x, b.x, c.x, d.x, k);
            adamw1<FROM_END>(a.y, b.y, c.y, d.y, k);
            adamw1<FROM_END>(a.z, b.z, c.z, d.z, k);
            adamw1<FROM_END>(a.w, b.w, c.w, d.w, k);
            p4[q] = a, m4[q] = b, v4[q] = c;
            store4(copy, q, a.x, a.y, a.z, a.w);
        }
        done = n / 4 * 4;
    }
    for (size_t i = done + gtid(); i < n; i += gstride()) {
        float a = p[i], b = m[i], c = v[i];
        adamw1<FROM_END>(a, b, c, g[i], k);
        p[i] = a, m[i] = b, v[i] = c;
        store1(copy, i, a);
    }
}

template <typename C>
void launch_adamw(float *p, float *m, float *v, const float *g, size_t n, const sdc_adamw_args *a, C *copy) {
    const int vec = aligned(p, 16) && aligned(m, 16) && aligned(v, 16) && aligned(g, 16) &&
                    (!copy || aligned(copy, 4 * sizeof(C)));
    const unsigned blocks = sdc_cuda_blocks(vec ? (n + 3) / 4 : n, kThreads);
    if (a->lerp_from_end)
        adamw_kernel<C, true><<<blocks, kThreads, 0, sdc_cuda_stream()>>>(p, m, v, g, n, *a, copy, vec);
    else
        adamw_kernel<C, false><<<blocks, kThreads, 0, sdc_cuda_stream()>>>(p, m, v, g, n, *a, copy, vec);
    CUDA_LAUNCH_CHECK();
}

} // namespace

extern "C" double sdc_cuda_sumsq(const float *g, size_t n) {
    if (n == 0) return 0.0;
    const size_t nq = (n + 3) / 4;
    const size_t want = (nq + kThreads * 8 - 1) / (kThreads * 8); // ≥ 8 quads a thread before adding blocks
    const int blocks = want < (size_t)kSumBlocks ? (int)want : kSumBlocks;
    double *buf = sum_buffer();
    cudaStream_t st = sdc_cuda_stream();
    sumsq_partial_kernel<<<blocks, kThreads, 0, st>>>(buf, g, n, aligned(g, 16));
    CUDA_LAUNCH_CHECK();
    sumsq_final_kernel<<<1, kThreads, 0, st>>>(buf + kSumBlocks, buf, blocks);
    CUDA_LAUNCH_CHECK();
    double s = 0.0;
    CUDA_CHECK(cudaMemcpyAsync(&s, buf + kSumBlocks, sizeof s, cudaMemcpyDeviceToHost, st));
    CUDA_CHECK(cudaStreamSynchronize(st));
    return s;
}

extern "C" void sdc_cuda_scale(float *x, size_t n, float a) {
    if (!n) return;
    const int vec = aligned(x, 16);
    scale_kernel<<<sdc_cuda_blocks(vec ? (n + 3) / 4 : n, kThreads), kThreads, 0, sdc_cuda_stream()>>>(x, n, a, vec);
    CUDA_LAUNCH_CHECK();
}

extern "C" void sdc_cuda_adamw(float *p, float *m, float *v, const float *g, size_t n, const sdc_adamw_args *a,
                               void *copy, sdc_dtype copy_dtype) {
    if (!n) return;
    if (!copy) {
        launch_adamw<NoCopy>(p, m, v, g, n, a, nullptr);
        return;
    }
    SDC_DISPATCH_FLOAT(copy_dtype, C, launch_adamw<C>(p, m, v, g, n, a, static_cast<C *>(copy)));
}

extern "C" void sdc_cuda_ema(float *shadow, const float *p, size_t n, float one_minus_decay) {
    if (!n) return;
    const int vec = aligned(shadow, 16) && aligned(p, 16);
    ema_kernel<<<sdc_cuda_blocks(vec ? (n + 3) / 4 : n, kThreads), kThreads, 0, sdc_cuda_stream()>>>(
        shadow, p, n, one_minus_decay, vec);
    CUDA_LAUNCH_CHECK();
}
