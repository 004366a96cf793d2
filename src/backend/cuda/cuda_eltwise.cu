// Elementwise ops of the CUDA backend: activations and their derivatives,
// GEGLU, α·a+β·b, the per-channel add and its channel sums, fill, dtype
// casts and the host copies.
//
// The big loops are grid-stride loops over packs of 8 elements (16 bytes of
// bf16/f16, two float4 of f32) when every pointer is 16-byte aligned, with a
// scalar tail; otherwise, element by element. Math is fp32; where the CPU's
// result is a plain product or sum (axpby, add_channel) the same roundings
// are spelled out with __fmul_rn/__fadd_rn, so that nvcc cannot contract
// them into FMAs and F32 results equal the CPU's bit for bit.
#include <string.h>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_ops.h"

namespace {

constexpr int kThreads = 256;
constexpr int kPack = 8;

// ---- 8-element packs ---------------------------------------------------------

union Pack16 {
    uint4 u;
    __nv_bfloat162 b[4];
    __half2 h[4];
};

__device__ __forceinline__ void ld8(const float *p, float (&f)[8]) {
    float4 a = reinterpret_cast<const float4 *>(p)[0], b = reinterpret_cast<const float4 *>(p)[1];
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}
__device__ __forceinline__ void ld8(const __nv_bfloat16 *p, float (&f)[8]) {
    Pack16 v;
    v.u = *reinterpret_cast<const uint4 *>(p);
#pragma unroll
    for (int k = 0; k < 4; k++) {
        float2 t = __bfloat1622float2(v.b[k]);
        f[2 * k] = t.x, f[2 * k + 1] = t.y;
    }
}
__device__ __forceinline__ void ld8(const __half *p, float (&f)[8]) {
    Pack16 v;
    v.u = *reinterpret_cast<const uint4 *>(p);
#pragma unroll
    for (int k = 0; k < 4; k++) {
        float2 t = __half22float2(v.h[k]);
        f[2 * k] = t.x, f[2 * k + 1] = t.y;
    }
}
__device__ __forceinline__ void st8(float *p, const float (&f)[8]) {
    reinterpret_cast<float4 *>(p)[0] = make_float4(f[0], f[1], f[2], f[3]);
    reinterpret_cast<float4 *>(p)[1] = make_float4(f[4], f[5], f[6], f[7]);
}
__device__ __forceinline__ void st8(__nv_bfloat16 *p, const float (&f)[8]) {
    Pack16 v;
#pragma unroll
    for (int k = 0; k < 4; k++) v.b[k] = __floats2bfloat162_rn(f[2 * k], f[2 * k + 1]);
    *reinterpret_cast<uint4 *>(p) = v.u;
}
__device__ __forceinline__ void st8(__half *p, const float (&f)[8]) {
    Pack16 v;
#pragma unroll
    for (int k = 0; k < 4; k++) v.h[k] = __floats2half2_rn(f[2 * k], f[2 * k + 1]);
    *reinterpret_cast<uint4 *>(p) = v.u;
}

// Loads and stores in a dtype known only at run time (the mixed-dtype paths:
// an F32 gradient and a bf16 activation in one call). The branch is uniform
// across a warp.
__device__ __forceinline__ float ld_any(const void *p, sdc_dtype t, size_t i) {
    if (t == SDC_BF16) return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
    if (t == SDC_F16) return __half2float(static_cast<const __half *>(p)[i]);
    return static_cast<const float *>(p)[i];
}
__device__ __forceinline__ void st_any(void *p, sdc_dtype t, size_t i, float v) {
    if (t == SDC_BF16) static_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16_rn(v);
    else if (t == SDC_F16) static_cast<__half *>(p)[i] = __float2half_rn(v);
    else static_cast<float *>(p)[i] = v;
}

// a / b, through 32-bit division when both fit (several times cheaper).
__device__ __forceinline__ size_t udiv(size_t a, size_t b) {
    return ((a | b) >> 32) == 0 ? (size_t)((uint32_t)a / (uint32_t)b) : a / b;
}

__device__ __forceinline__ size_t gtid() { return blockIdx.x * (size_t)blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t gstride() { return (size_t)gridDim.x * blockDim.x; }

inline bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

void check_float(sdc_dtype t, const char *op) {
    if (t != SDC_F32 && t != SDC_BF16 && t != SDC_F16) sdc_cuda_fatal(op, "dtype is not F32/BF16/F16", __FILE__, __LINE__);
}
void check_same(const sdc_tensor *a, const sdc_tensor *b, const char *op) {
    check_float(a->dtype, op);
    if (a->dtype != b->dtype) sdc_cuda_fatal(op, "tensors of different dtypes", __FILE__, __LINE__);
}
size_t numel(const sdc_tensor *t) { return (size_t)sdc_tensor_numel(t); }

// ---- activations (backend.h; the CPU's formulas, with CUDA's libm) -----------

// σ(x) without overflow: e = exp(−|x|), σ = 1/(1+e) for x ≥ 0, e/(1+e) below.
__device__ __forceinline__ float sigmoidf_(float x) {
    float e = expf(-fabsf(x));
    float s = 1.0f / (1.0f + e);
    return x >= 0.0f ? s : e * s;
}
// Φ(x) = ½·(1 + erf(x/√2)), as torch's CUDA kernel. erff is about twice as
// cheap as erfcf (GELU in bf16 is bound by it, not by memory); the price is
// an absolute error of ~6e-8 in the far left tail, where Φ itself is tiny.
__device__ __forceinline__ float phif_(float x) { return 0.5f * (1.0f + erff(x * 0.70710678118654752f)); }

template <sdc_act A> __device__ __forceinline__ float act1(float x) {
    if (A == SDC_ACT_SILU) return x * sigmoidf_(x);
    if (A == SDC_ACT_GELU) return x * phif_(x);
    if (A == SDC_ACT_GELU_TANH) {
        // 0.5·(1 + tanh u) = σ(2u)
        float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
        return x * sigmoidf_(2.0f * u);
    }
    if (A == SDC_ACT_QUICK_GELU) return x * sigmoidf_(1.702f * x);
    return x;
}

// act'(x) (cpu_ops.h has the derivations):
//   silu σ(1 + x(1−σ)); gelu Φ + x·φ; gelu_tanh s + 2x·s(1−s)·c(1 + 3·0.044715x²);
//   quick_gelu s + 1.702x·s(1−s)
template <sdc_act A> __device__ __forceinline__ float act_grad1(float x) {
    if (A == SDC_ACT_SILU) {
        float s = sigmoidf_(x);
        return s * (1.0f + x * (1.0f - s));
    }
    if (A == SDC_ACT_GELU) return phif_(x) + x * 0.39894228040143268f * expf(-0.5f * x * x);
    if (A == SDC_ACT_GELU_TANH) {
        float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
        float s = sigmoidf_(2.0f * u);
        return s + 2.0f * x * s * (1.0f - s) * 0.79788456080286536f * (1.0f + 0.134145f * x * x);
    }
    if (A == SDC_ACT_QUICK_GELU) {
        float s = sigmoidf_(1.702f * x);
        return s + 1.702f * x * s * (1.0f - s);
    }
    return 1.0f;
}

template <sdc_act A> struct ActFwd {
    __device__ float operator()(float x, float) const { return act1<A>(x); }
};
template <sdc_act A> struct ActBwd { // (dy, x) → dy·act'(x)
    __device__ float operator()(float dy, float x) const { return dy * act_grad1<A>(x); }
};
struct Axpby2 {
    float alpha, beta;
    __device__ float operator()(float a, float b) const { return __fadd_rn(__fmul_rn(alpha, a), __fmul_rn(beta, b)); }
};
struct Axpby1 {
    float alpha;
    __device__ float operator()(float a, float) const { return __fmul_rn(alpha, a); }
};

// ---- the generic elementwise kernel: out[i] = op(a[i], b[i]) ------------------
// out may alias a or b: each element (each pack) is read and written by one
// thread, reads first.
template <typename T, int NIN, typename Op>
__global__ void map_kernel(T *out, const T *a, const T *b, size_t n, int vec, Op op) {
    size_t done = 0;
    if (vec) {
        const size_t np = n / kPack;
        for (size_t p = gtid(); p < np; p += gstride()) {
            float fa[8], fb[8] = {};
            ld8(a + p * kPack, fa);
            if (NIN == 2) ld8(b + p * kPack, fb);
#pragma unroll
            for (int k = 0; k < 8; k++) fa[k] = op(fa[k], fb[k]);
            st8(out + p * kPack, fa);
        }
        done = np * kPack;
    }
    for (size_t i = done + gtid(); i < n; i += gstride())
        sdc_st(out, i, op(sdc_ld(a, i), NIN == 2 ? sdc_ld(b, i) : 0.0f));
}

template <typename T, int NIN, typename Op> void launch_map(T *out, const T *a, const T *b, size_t n, Op op) {
    if (!n) return;
    const int vec = aligned16(out) && aligned16(a) && (NIN < 2 || aligned16(b));
    const size_t work = vec ? (n + kPack - 1) / kPack : n;
    map_kernel<T, NIN, Op><<<sdc_cuda_blocks(work, kThreads), kThreads, 0, sdc_cuda_stream()>>>(out, a, b, n, vec, op);
    CUDA_LAUNCH_CHECK();
}

// ---- GEGLU ----------------------------------------------------------------------

// x [M, 2F] = [a | g]: out[r, j] = a[r, j]·gelu(g[r, j])
template <typename T> __global__ void geglu_kernel(T *out, const T *x, size_t M, size_t F, int vec) {
    if (vec) { // F % 8 == 0: a pack never crosses a row
        const size_t fp = F / kPack, np = M * fp;
        for (size_t p = gtid(); p < np; p += gstride()) {
            size_t r = udiv(p, fp), j = (p - r * fp) * kPack;
            float a[8], g[8];
            ld8(x + r * 2 * F + j, a);
            ld8(x + r * 2 * F + F + j, g);
#pragma unroll
            for (int k = 0; k < 8; k++) a[k] = a[k] * act1<SDC_ACT_GELU>(g[k]);
            st8(out + r * F + j, a);
        }
        return;
    }
    for (size_t i = gtid(); i < M * F; i += gstride()) {
        size_t r = udiv(i, F), j = i - r * F;
        const T *xr = x + r * 2 * F;
        sdc_st(out, i, sdc_ld(xr, j) * act1<SDC_ACT_GELU>(sdc_ld(xr, F + j)));
    }
}

// da = dy·gelu(g), dg = dy·a·gelu'(g) (as the CPU: (dy·a)·gelu'(g))
template <typename T> __global__ void geglu_bwd_kernel(T *dx, const T *dy, const T *x, size_t M, size_t F, int vec) {
    if (vec) {
        const size_t fp = F / kPack, np = M * fp;
        for (size_t p = gtid(); p < np; p += gstride()) {
            size_t r = udiv(p, fp), j = (p - r * fp) * kPack;
            float a[8], g[8], t[8], da[8], dg[8];
            ld8(x + r * 2 * F + j, a);
            ld8(x + r * 2 * F + F + j, g);
            ld8(dy + r * F + j, t);
#pragma unroll
            for (int k = 0; k < 8; k++) {
                da[k] = t[k] * act1<SDC_ACT_GELU>(g[k]);
                dg[k] = t[k] * a[k] * act_grad1<SDC_ACT_GELU>(g[k]);
            }
            st8(dx + r * 2 * F + j, da);
            st8(dx + r * 2 * F + F + j, dg);
        }
        return;
    }
    for (size_t i = gtid(); i < M * F; i += gstride()) {
        size_t r = udiv(i, F), j = i - r * F;
        const T *xr = x + r * 2 * F;
        float a = sdc_ld(xr, j), g = sdc_ld(xr, F + j), t = sdc_ld(dy, i);
        sdc_st(dx + r * 2 * F, j, t * act1<SDC_ACT_GELU>(g));
        sdc_st(dx + r * 2 * F, F + j, t * a * act_grad1<SDC_ACT_GELU>(g));
    }
}

// ---- axpby with mixed dtypes (e.g. an F32 gradient += a bf16 one) -------------
__global__ void axpby_any_kernel(void *out, sdc_dtype to, float alpha, const void *a, sdc_dtype ta, float beta,
                                 const void *b, sdc_dtype tb, size_t n) {
    for (size_t i = gtid(); i < n; i += gstride()) {
        float y = __fmul_rn(alpha, ld_any(a, ta, i));
        if (b) y = __fadd_rn(y, __fmul_rn(beta, ld_any(b, tb, i)));
        st_any(out, to, i, y);
    }
}

// ---- per-channel add and its adjoint -------------------------------------------

// out[oc, s] = x[oc, s] + v[oc] for x viewed as [O·C, S]; v in its own dtype
template <typename T>
__global__ void add_channel_kernel(T *out, const T *x, const void *v, sdc_dtype tv, size_t OC, size_t S, int vec) {
    if (vec) { // S % 8 == 0: a pack stays in one channel
        const size_t sp = S / kPack, np = OC * sp;
        for (size_t p = gtid(); p < np; p += gstride()) {
            float f[8], c = ld_any(v, tv, udiv(p, sp));
            ld8(x + p * kPack, f);
#pragma unroll
            for (int k = 0; k < 8; k++) f[k] = __fadd_rn(f[k], c);
            st8(out + p * kPack, f);
        }
        return;
    }
    for (size_t i = gtid(); i < OC * S; i += gstride()) sdc_st(out, i, __fadd_rn(sdc_ld(x, i), ld_any(v, tv, udiv(i, S))));
}

// dv[oc] = Σ_s dy[oc, s]: one warp per channel, in double (as the CPU), in a
// fixed order (each lane a fixed strided subset, then a fixed shuffle tree).
template <typename T>
__global__ void channel_sum_kernel(void *dv, sdc_dtype tv, const T *dy, size_t OC, size_t S, int vec) {
    const int lane = threadIdx.x & 31;
    const size_t warps = (size_t)gridDim.x * (blockDim.x / 32);
    for (size_t oc = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32; oc < OC; oc += warps) {
        const T *row = dy + oc * S;
        double s = 0.0;
        if (vec) {
            for (size_t p = lane; p < S / kPack; p += 32) {
                float f[8];
                ld8(row + p * kPack, f);
#pragma unroll
                for (int k = 0; k < 8; k++) s += (double)f[k];
            }
        } else {
            for (size_t i = lane; i < S; i += 32) s += (double)sdc_ld(row, i);
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
        if (lane == 0) st_any(dv, tv, oc, (float)s);
    }
}

// ---- fill and casts -------------------------------------------------------------

template <typename T> __global__ void fill_kernel(T *out, size_t n, float value, int vec) {
    size_t done = 0;
    if (vec) {
        const float f[8] = {value, value, value, value, value, value, value, value};
        for (size_t p = gtid(); p < n / kPack; p += gstride()) st8(out + p * kPack, f);
        done = n / kPack * kPack;
    }
    for (size_t i = done + gtid(); i < n; i += gstride()) sdc_st(out, i, value);
}

// Round to nearest even (the stores' conversions), as sdc_convert_from_f32.
template <typename Td, typename Ts> __global__ void cast_kernel(Td *dst, const Ts *src, size_t n, int vec) {
    size_t done = 0;
    if (vec) {
        for (size_t p = gtid(); p < n / kPack; p += gstride()) {
            float f[8];
            ld8(src + p * kPack, f);
            st8(dst + p * kPack, f);
        }
        done = n / kPack * kPack;
    }
    for (size_t i = done + gtid(); i < n; i += gstride()) sdc_st(dst, i, sdc_ld(src, i));
}

template <typename Td, typename Ts> void launch_cast(void *dst, const void *src, size_t n) {
    const int vec = aligned16(dst) && aligned16(src);
    cast_kernel<Td, Ts><<<sdc_cuda_blocks(vec ? (n + kPack - 1) / kPack : n, kThreads), kThreads, 0,
                          sdc_cuda_stream()>>>(static_cast<Td *>(dst), static_cast<const Ts *>(src), n, vec);
    CUDA_LAUNCH_CHECK();
}

// ---- host copies ----------------------------------------------------------------
// Non-F32 tensors go through a private fp32 staging buffer on the device, in
// chunks of kStage elements (so it stays small whatever the tensor): upload
// copies a chunk in and casts it to the tensor's dtype; download casts a
// chunk out and copies it back. Stream order keeps a chunk's copy behind the
// previous chunk's cast. Both wait for the device before returning.
constexpr size_t kStage = (size_t)4 << 20; // 16 MiB of fp32

float *staging() {
    static float *buf;
    if (!buf) CUDA_CHECK(cudaMalloc(&buf, kStage * sizeof(float)));
    return buf;
}

} // namespace

// ---- the ops ----------------------------------------------------------------------

extern "C" void sdc_cuda_cast(void *dst, sdc_dtype dst_dtype, const void *src, sdc_dtype src_dtype, size_t n) {
    check_float(dst_dtype, "cast");
    check_float(src_dtype, "cast");
    if (!n) return;
    if (dst_dtype == src_dtype) {
        if (dst != src)
            CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sdc_dtype_size(src_dtype), cudaMemcpyDeviceToDevice,
                                       sdc_cuda_stream()));
        return;
    }
    SDC_DISPATCH_FLOAT(dst_dtype, Td, SDC_DISPATCH_FLOAT(src_dtype, Ts, launch_cast<Td, Ts>(dst, src, n)));
}

extern "C" void sdc_cuda_upload(sdc_tensor *dst, const float *src) {
    check_float(dst->dtype, "upload");
    const size_t n = numel(dst);
    cudaStream_t st = sdc_cuda_stream();
    if (dst->dtype == SDC_F32) {
        if (n) CUDA_CHECK(cudaMemcpyAsync(dst->data, src, n * sizeof(float), cudaMemcpyHostToDevice, st));
    } else {
        float *buf = staging();
        const size_t es = sdc_dtype_size(dst->dtype);
        for (size_t i = 0; i < n; i += kStage) {
            size_t m = n - i < kStage ? n - i : kStage;
            CUDA_CHECK(cudaMemcpyAsync(buf, src + i, m * sizeof(float), cudaMemcpyHostToDevice, st));
            sdc_cuda_cast((char *)dst->data + i * es, dst->dtype, buf, SDC_F32, m);
        }
    }
    CUDA_CHECK(cudaStreamSynchronize(st)); // the caller may free src now
}

extern "C" void sdc_cuda_download(float *dst, const sdc_tensor *src) {
    check_float(src->dtype, "download");
    const size_t n = numel(src);
    cudaStream_t st = sdc_cuda_stream();
    if (src->dtype == SDC_F32) {
        if (n) CUDA_CHECK(cudaMemcpyAsync(dst, src->data, n * sizeof(float), cudaMemcpyDeviceToHost, st));
    } else {
        float *buf = staging();
        const size_t es = sdc_dtype_size(src->dtype);
        for (size_t i = 0; i < n; i += kStage) {
            size_t m = n - i < kStage ? n - i : kStage;
            sdc_cuda_cast(buf, SDC_F32, (const char *)src->data + i * es, src->dtype, m);
            CUDA_CHECK(cudaMemcpyAsync(dst + i, buf, m * sizeof(float), cudaMemcpyDeviceToHost, st));
        }
    }
    CUDA_CHECK(cudaStreamSynchronize(st));
}

extern "C" void sdc_cuda_fill(sdc_tensor *out, float value) {
    check_float(out->dtype, "fill");
    const size_t n = numel(out);
    if (!n) return;
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    if (bits == 0) { // +0 is all-zero bits in every dtype
        CUDA_CHECK(cudaMemsetAsync(out->data, 0, n * sdc_dtype_size(out->dtype), sdc_cuda_stream()));
        return;
    }
    const int vec = aligned16(out->data);
    SDC_DISPATCH_FLOAT(out->dtype, T, {
        fill_kernel<T><<<sdc_cuda_blocks(vec ? (n + kPack - 1) / kPack : n, kThreads), kThreads, 0,
                         sdc_cuda_stream()>>>(static_cast<T *>(out->data), n, value, vec);
        CUDA_LAUNCH_CHECK();
    });
}

extern "C" void sdc_cuda_activation(sdc_tensor *out, const sdc_tensor *x, sdc_act act) {
    check_same(out, x, "activation");
    const size_t n = numel(x);
    if (act == SDC_ACT_NONE) {
        if (out->data != x->data && n)
            CUDA_CHECK(cudaMemcpyAsync(out->data, x->data, n * sdc_dtype_size(x->dtype), cudaMemcpyDeviceToDevice,
                                       sdc_cuda_stream()));
        return;
    }
    SDC_DISPATCH_FLOAT(x->dtype, T, {
        T *o = static_cast<T *>(out->data);
        const T *xs = static_cast<const T *>(x->data);
        switch (act) {
        case SDC_ACT_SILU: launch_map<T, 1>(o, xs, (const T *)nullptr, n, ActFwd<SDC_ACT_SILU>{}); break;
        case SDC_ACT_GELU: launch_map<T, 1>(o, xs, (const T *)nullptr, n, ActFwd<SDC_ACT_GELU>{}); break;
        case SDC_ACT_GELU_TANH: launch_map<T, 1>(o, xs, (const T *)nullptr, n, ActFwd<SDC_ACT_GELU_TANH>{}); break;
        case SDC_ACT_QUICK_GELU: launch_map<T, 1>(o, xs, (const T *)nullptr, n, ActFwd<SDC_ACT_QUICK_GELU>{}); break;
        case SDC_ACT_NONE: break;
        }
    });
}

extern "C" void sdc_cuda_activation_backward(sdc_tensor *dx, const sdc_tensor *dy, const sdc_tensor *x, sdc_act act) {
    check_same(dx, x, "activation_backward");
    check_same(dy, x, "activation_backward");
    const size_t n = numel(x);
    if (act == SDC_ACT_NONE) {
        if (dx->data != dy->data && n)
            CUDA_CHECK(cudaMemcpyAsync(dx->data, dy->data, n * sdc_dtype_size(x->dtype), cudaMemcpyDeviceToDevice,
                                       sdc_cuda_stream()));
        return;
    }
    SDC_DISPATCH_FLOAT(x->dtype, T, {
        T *d = static_cast<T *>(dx->data);
        const T *g = static_cast<const T *>(dy->data), *xs = static_cast<const T *>(x->data);
        switch (act) {
        case SDC_ACT_SILU: launch_map<T, 2>(d, g, xs, n, ActBwd<SDC_ACT_SILU>{}); break;
        case SDC_ACT_GELU: launch_map<T, 2>(d, g, xs, n, ActBwd<SDC_ACT_GELU>{}); break;
        case SDC_ACT_GELU_TANH: launch_map<T, 2>(d, g, xs, n, ActBwd<SDC_ACT_GELU_TANH>{}); break;
        case SDC_ACT_QUICK_GELU: launch_map<T, 2>(d, g, xs, n, ActBwd<SDC_ACT_QUICK_GELU>{}); break;
        case SDC_ACT_NONE: break;
        }
    });
}

extern "C" void sdc_cuda_geglu(sdc_tensor *out, const sdc_tensor *x, int64_t M, int64_t F) {
    check_same(out, x, "geglu");
    if (M <= 0 || F <= 0) return;
    const int vec = F % kPack == 0 && aligned16(out->data) && aligned16(x->data);
    const size_t work = vec ? (size_t)(M * F / kPack) : (size_t)(M * F);
    SDC_DISPATCH_FLOAT(x->dtype, T, {
        geglu_kernel<T><<<sdc_cuda_blocks(work, kThreads), kThreads, 0, sdc_cuda_stream()>>>(
            static_cast<T *>(out->data), static_cast<const T *>(x->data), (size_t)M, (size_t)F, vec);
        CUDA_LAUNCH_CHECK();
    });
}

extern "C" void sdc_cuda_geglu_backward(sdc_tensor *dx, const sdc_tensor *dy, const sdc_tensor *x, int64_t M,
                                        int64_t F) {
    check_same(dx, x, "geglu_backward");
    check_same(dy, x, "geglu_backward");
    if (M <= 0 || F <= 0) return;
    const int vec = F % kPack == 0 && aligned16(dx->data) && aligned16(dy->data) && aligned16(x->data);
    const size_t work = vec ? (size_t)(M * F / kPack) : (size_t)(M * F);
    SDC_DISPATCH_FLOAT(x->dtype, T, {
        geglu_bwd_kernel<T><<<sdc_cuda_blocks(work, kThreads), kThreads, 0, sdc_cuda_stream()>>>(
            static_cast<T *>(dx->data), static_cast<const T *>(dy->data), static_cast<const T *>(x->data), (size_t)M,
            (size_t)F, vec);
        CUDA_LAUNCH_CHECK();
    });
}

extern "C" void sdc_cuda_axpby(sdc_tensor *out, float alpha, const sdc_tensor *a, float beta, const sdc_tensor *b) {
    check_float(out->dtype, "axpby");
    check_float(a->dtype, "axpby");
    if (b) check_float(b->dtype, "axpby");
    const size_t n = numel(a);
    if (!n) return;
    if (out->dtype == a->dtype && (!b || b->dtype == a->dtype)) {
        SDC_DISPATCH_FLOAT(a->dtype, T, {
            T *o = static_cast<T *>(out->data);
            const T *as = static_cast<const T *>(a->data);
            if (b) launch_map<T, 2>(o, as, static_cast<const T *>(b->data), n, Axpby2{alpha, beta});
            else launch_map<T, 1>(o, as, (const T *)nullptr, n, Axpby1{alpha});
        });
        return;
    }
    axpby_any_kernel<<<sdc_cuda_blocks(n, kThreads), kThreads, 0, sdc_cuda_stream()>>>(
        out->data, out->dtype, alpha, a->data, a->dtype, beta, b ? b->data : nullptr, b ? b->dtype : SDC_F32, n);
    CUDA_LAUNCH_CHECK();
}

extern "C" void sdc_cuda_add_channel(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *v, int64_t O, int64_t C,
                                     int64_t S) {
    check_same(out, x, "add_channel");
    check_float(v->dtype, "add_channel");
    const size_t OC = (size_t)(O * C), n = OC * (size_t)S;
    if (!n) return;
    const int vec = S % kPack == 0 && aligned16(out->data) && aligned16(x->data);
    SDC_DISPATCH_FLOAT(x->dtype, T, {
        add_channel_kernel<T><<<sdc_cuda_blocks(vec ? n / kPack : n, kThreads), kThreads, 0, sdc_cuda_stream()>>>(
            static_cast<T *>(out->data), static_cast<const T *>(x->data), v->data, v->dtype, OC, (size_t)S, vec);
        CUDA_LAUNCH_CHECK();
    });
}

extern "C" void sdc_cuda_channel_sum(sdc_tensor *dv, const sdc_tensor *dy, int64_t O, int64_t C, int64_t S) {
    check_float(dv->dtype, "channel_sum");
    check_float(dy->dtype, "channel_sum");
    const size_t OC = (size_t)(O * C);
    if (!OC) return;
    if (S <= 0) { // empty sums
        CUDA_CHECK(cudaMemsetAsync(dv->data, 0, OC * sdc_dtype_size(dv->dtype), sdc_cuda_stream()));
        return;
    }
    const int vec = S % kPack == 0 && aligned16(dy->data);
    const unsigned warps_per_block = kThreads / 32;
    SDC_DISPATCH_FLOAT(dy->dtype, T, {
        channel_sum_kernel<T><<<sdc_cuda_blocks(OC, warps_per_block), kThreads, 0, sdc_cuda_stream()>>>(
            dv->data, dv->dtype, static_cast<const T *>(dy->data), OC, (size_t)S, vec);
        CUDA_LAUNCH_CHECK();
    });
}
