// Attention for head dimensions beyond the fused kernels' 256: the VAE's
// single-head mid-block attention (D = 512 channels). Rare and short in
// tokens relative to D, so it is done with matrix products (cuBLASLt through
// sdc_cuda_linear) and a row softmax, one (batch, head) at a time:
//
//   S = Q·Kᵀ;  P = softmax(scale·S [+ causal mask]) row-wise in fp32;  O = P·V
//
// and backward, recomputing P:
//   dV = Pᵀ·dO;  dP = dO·Vᵀ;  dS = scale·P∘(dP − rowsum(dP∘P));
//   dQ = dS·K;   dK = dSᵀ·Q.
// S, P and dS are kept in the activation dtype between the products, as a
// framework's unfused attention does; the softmax and its backward run in fp32.
#include <string.h>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_ops.h"

namespace {

// A private grown buffer (the fused attention's scratch is its own).
void *scratch(size_t nbytes) {
    static void *buf;
    static size_t cap;
    if (nbytes > cap) {
        CUDA_CHECK(cudaStreamSynchronize(sdc_cuda_stream()));
        if (buf) CUDA_CHECK(cudaFree(buf));
        CUDA_CHECK(cudaMalloc(&buf, nbytes));
        cap = nbytes;
    }
    return buf;
}

// Copies head h of x [T, H·D] into y [T, D] (gather) or back (scatter).
template <typename T>
__global__ void head_copy(T *__restrict__ dst, const T *__restrict__ src, int64_t rows, int64_t D, int64_t HD,
                          int64_t col0, int gather) {
    const int64_t n = rows * D;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / D, c = i % D;
        if (gather) dst[i] = src[r * HD + col0 + c];
        else dst[r * HD + col0 + c] = src[i];
    }
}

// One block per row: p = softmax(scale·s) with keys j > i masked when causal.
template <typename T> __global__ void softmax_rows(T *p, const T *s, int64_t cols, float scale, int causal) {
    const int64_t row = blockIdx.x;
    const T *x = s + row * cols;
    T *y = p + row * cols;
    const int64_t lim = causal ? (row + 1 < cols ? row + 1 : cols) : cols;
    __shared__ float red[32];
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < lim; j += blockDim.x) m = fmaxf(m, scale * sdc_ld(x, j));
    for (int o = 16; o; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = m;
    __syncthreads();
    m = red[0];
    for (unsigned w = 1; w < blockDim.x / 32; w++) m = fmaxf(m, red[w]);
    __syncthreads();
    float sum = 0;
    for (int64_t j = threadIdx.x; j < lim; j += blockDim.x) sum += expf(scale * sdc_ld(x, j) - m);
    for (int o = 16; o; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = sum;
    __syncthreads();
    sum = 0;
    for (unsigned w = 0; w < blockDim.x / 32; w++) sum += red[w];
    const float inv = 1.0f / sum;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
        sdc_st(y, j, j < lim ? expf(scale * sdc_ld(x, j) - m) * inv : 0.0f);
}

// One block per row: ds = scale·p∘(dp − Σ_j dp_j·p_j), in place over dp.
template <typename T> __global__ void softmax_backward_rows(T *dp, const T *p, int64_t cols, float scale) {
    const int64_t row = blockIdx.x;
    T *g = dp + row * cols;
    const T *y = p + row * cols;
    __shared__ float red[32];
    float s = 0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += sdc_ld(g, j) * sdc_ld(y, j);
    for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = s;
    __syncthreads();
    s = 0;
    for (unsigned w = 0; w < blockDim.x / 32; w++) s += red[w];
    __syncthreads();
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) sdc_st(g, j, scale * sdc_ld(y, j) * (sdc_ld(g, j) - s));
}

sdc_tensor view2(sdc_dtype dt, void *data, int64_t r, int64_t c) {
    sdc_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dt;
    t.device.type = SDC_CUDA;
    t.ndim = 2;
    t.shape[0] = r, t.shape[1] = c;
    t.data = data;
    return t;
}

void copy_head(sdc_dtype dt, void *dst, const void *src, int64_t rows, int64_t D, int64_t HD, int64_t col0,
               int gather) {
    const unsigned blocks = sdc_cuda_blocks((size_t)(rows * D), 256);
    SDC_DISPATCH_FLOAT(dt, T, {
        head_copy<T><<<blocks, 256, 0, sdc_cuda_stream()>>>((T *)dst, (const T *)src, rows, D, HD, col0, gather);
    });
    CUDA_LAUNCH_CHECK();
}

// Carves the scratch into consecutive tensors of the given element counts.
struct carve {
    unsigned char *p;
    size_t es;
    void *take(int64_t n) {
        void *r = p;
        p += ((size_t)n * es + 255) & ~(size_t)255;
        return r;
    }
};

} // namespace

extern "C" void sdc_cuda_attention_wide(sdc_tensor *out, const sdc_tensor *q, const sdc_tensor *k,
                                        const sdc_tensor *v, int64_t B, int64_t Tq, int64_t Tk, int heads, int64_t D,
                                        float scale, int causal) {
    const sdc_dtype dt = q->dtype;
    const size_t es = sdc_dtype_size(dt);
    const int64_t HD = heads * D;
    carve c = {(unsigned char *)scratch(((size_t)(2 * Tq * D + 2 * Tk * D + 2 * Tq * Tk + D * Tk) * es) + 8 * 256),
               es};
    void *qh = c.take(Tq * D), *kh = c.take(Tk * D), *vh = c.take(Tk * D), *vt = c.take(D * Tk);
    void *s = c.take(Tq * Tk), *p = c.take(Tq * Tk), *oh = c.take(Tq * D);
    for (int64_t b = 0; b < B; b++)
        for (int h = 0; h < heads; h++) {
            const int64_t col = (int64_t)h * D;
            copy_head(dt, qh, (const char *)q->data + (size_t)(b * Tq * HD) * es, Tq, D, HD, col, 1);
            copy_head(dt, kh, (const char *)k->data + (size_t)(b * Tk * HD) * es, Tk, D, HD, col, 1);
            copy_head(dt, vh, (const char *)v->data + (size_t)(b * Tk * HD) * es, Tk, D, HD, col, 1);
            sdc_tensor Q = view2(dt, qh, Tq, D), K = view2(dt, kh, Tk, D), V = view2(dt, vh, Tk, D);
            sdc_tensor S = view2(dt, s, Tq, Tk), P = view2(dt, p, Tq, Tk), Vt = view2(dt, vt, D, Tk);
            sdc_tensor O = view2(dt, oh, Tq, D);
            sdc_cuda_linear(&S, &Q, &K, NULL, Tq, D, Tk);
            SDC_DISPATCH_FLOAT(dt, T, {
                softmax_rows<T><<<(unsigned)Tq, 256, 0, sdc_cuda_stream()>>>((T *)p, (const T *)s, Tk, scale,
                                                                             causal);
            });
            CUDA_LAUNCH_CHECK();
            sdc_cuda_transpose(&Vt, &V, 1, Tk, D);
            sdc_cuda_linear(&O, &P, &Vt, NULL, Tq, Tk, D);
            copy_head(dt, (char *)out->data + (size_t)(b * Tq * HD) * es, oh, Tq, D, HD, col, 0);
        }
}

extern "C" void sdc_cuda_attention_wide_backward(sdc_tensor *dq, sdc_tensor *dk, sdc_tensor *dv,
                                                 const sdc_tensor *dout, const sdc_tensor *q, const sdc_tensor *k,
                                                 const sdc_tensor *v, int64_t B, int64_t Tq, int64_t Tk, int heads,
                                                 int64_t D, float scale, int causal) {
    const sdc_dtype dt = q->dtype;
    const size_t es = sdc_dtype_size(dt);
    const int64_t HD = heads * D;
    carve c = {(unsigned char *)scratch((size_t)(4 * Tq * D + 4 * Tk * D + 4 * Tq * Tk + 2 * D * Tk + 2 * D * Tq) *
                                            es +
                                        20 * 256),
               es};
    void *qh = c.take(Tq * D), *kh = c.take(Tk * D), *vh = c.take(Tk * D), *doh = c.take(Tq * D);
    void *s = c.take(Tq * Tk), *p = c.take(Tq * Tk), *pt = c.take(Tq * Tk), *dp = c.take(Tq * Tk);
    void *dot = c.take(D * Tq), *kt = c.take(D * Tk), *qt = c.take(D * Tq);
    void *dqh = c.take(Tq * D), *dkh = c.take(Tk * D), *dvh = c.take(Tk * D);
    for (int64_t b = 0; b < B; b++)
        for (int h = 0; h < heads; h++) {
            const int64_t col = (int64_t)h * D;
            const size_t oq = (size_t)(b * Tq * HD) * es, ok = (size_t)(b * Tk * HD) * es;
            copy_head(dt, qh, (const char *)q->data + oq, Tq, D, HD, col, 1);
            copy_head(dt, kh, (const char *)k->data + ok, Tk, D, HD, col, 1);
            copy_head(dt, vh, (const char *)v->data + ok, Tk, D, HD, col, 1);
            copy_head(dt, doh, (const char *)dout->data + oq, Tq, D, HD, col, 1);
            sdc_tensor Q = view2(dt, qh, Tq, D), K = view2(dt, kh, Tk, D), V = view2(dt, vh, Tk, D);
            sdc_tensor dO = view2(dt, doh, Tq, D), S = view2(dt, s, Tq, Tk), P = view2(dt, p, Tq, Tk);
            sdc_tensor Pt = view2(dt, pt, Tk, Tq), dP = view2(dt, dp, Tq, Tk), dOt = view2(dt, dot, D, Tq);
            sdc_tensor Kt = view2(dt, kt, D, Tk), Qt = view2(dt, qt, D, Tq);
            sdc_tensor dQ = view2(dt, dqh, Tq, D), dK = view2(dt, dkh, Tk, D), dV = view2(dt, dvh, Tk, D);
            sdc_cuda_linear(&S, &Q, &K, NULL, Tq, D, Tk);
            SDC_DISPATCH_FLOAT(dt, T, {
                softmax_rows<T><<<(unsigned)Tq, 256, 0, sdc_cuda_stream()>>>((T *)p, (const T *)s, Tk, scale,
                                                                             causal);
            });
            CUDA_LAUNCH_CHECK();
            if (dv) { /* dV [Tk,D] = Pᵀ·dO: x = Pᵀ [Tk,Tq], w = dOᵀ [D,Tq] */
                sdc_cuda_transpose(&Pt, &P, 1, Tq, Tk);
                sdc_cuda_transpose(&dOt, &dO, 1, Tq, D);
                sdc_cuda_linear(&dV, &Pt, &dOt, NULL, Tk, Tq, D);
                copy_head(dt, (char *)dv->data + ok, dvh, Tk, D, HD, col, 0);
            }
            if (!dq && !dk) continue;
            sdc_cuda_linear(&dP, &dO, &V, NULL, Tq, D, Tk); /* dP = dO·Vᵀ */
            SDC_DISPATCH_FLOAT(dt, T, {
                softmax_backward_rows<T><<<(unsigned)Tq, 256, 0, sdc_cuda_stream()>>>((T *)dp, (const T *)p, Tk,
                                                                                      scale);
            });
            CUDA_LAUNCH_CHECK();
            if (dq) { /* dQ [Tq,D] = dS·K: w = Kᵀ [D,Tk] */
                sdc_cuda_transpose(&Kt, &K, 1, Tk, D);
                sdc_cuda_linear(&dQ, &dP, &Kt, NULL, Tq, Tk, D);
                copy_head(dt, (char *)dq->data + oq, dqh, Tq, D, HD, col, 0);
            }
            if (dk) { /* dK [Tk,D] = dSᵀ·Q: x = dSᵀ [Tk,Tq], w = Qᵀ [D,Tq] */
                sdc_cuda_transpose(&Pt, &dP, 1, Tq, Tk);
                sdc_cuda_transpose(&Qt, &Q, 1, Tq, D);
                sdc_cuda_linear(&dK, &Pt, &Qt, NULL, Tk, Tq, D);
                copy_head(dt, (char *)dk->data + ok, dkh, Tk, D, HD, col, 0);
            }
        }
}
