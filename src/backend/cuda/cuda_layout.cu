// Data movement of the CUDA backend: concat/slice along the middle axis,
// batched transpose (NCHW ↔ token-major), zero padding, nearest 2×
// upsampling and its adjoint, embedding gather and its adjoint.
//
// Pure copies move raw bits, so one kernel serves every dtype of a size;
// row copies (concat, slice, embedding) move the widest unit (16, 8, 4 or 2
// bytes) that divides every row length, offset and pointer.
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_ops.h"

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ size_t udiv(size_t a, size_t b) {
    return ((a | b) >> 32) == 0 ? (size_t)((uint32_t)a / (uint32_t)b) : a / b;
}
__device__ __forceinline__ size_t gtid() { return blockIdx.x * (size_t)blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t gstride() { return (size_t)gridDim.x * blockDim.x; }

size_t esize(const sdc_tensor *t, const char *op) {
    if (t->dtype != SDC_F32 && t->dtype != SDC_BF16 && t->dtype != SDC_F16)
        sdc_cuda_fatal(op, "dtype is not F32/BF16/F16", __FILE__, __LINE__);
    return sdc_dtype_size(t->dtype);
}
size_t same_esize(const sdc_tensor *a, const sdc_tensor *b, const char *op) {
    if (a->dtype != b->dtype) sdc_cuda_fatal(op, "tensors of different dtypes", __FILE__, __LINE__);
    return esize(a, op);
}

// The widest unit dividing every byte quantity or-ed into `bits`.
int unit_of(uintptr_t bits) { return bits % 16 == 0 ? 16 : bits % 8 == 0 ? 8 : bits % 4 == 0 ? 4 : 2; }

// ---- row copies ----------------------------------------------------------------

// dst[r·dstride + j] = src[r·sstride + j] for r < rows, j < len (in units U)
template <typename U>
__global__ void copy_rows_kernel(U *dst, size_t dstride, const U *src, size_t sstride, size_t rows, size_t len) {
    for (size_t i = gtid(); i < rows * len; i += gstride()) {
        size_t r = udiv(i, len), j = i - r * len;
        dst[r * dstride + j] = src[r * sstride + j];
    }
}

// The same in bytes (every quantity a multiple of sizeof(U)).
template <typename U> void launch_copy_rows(void *dst, size_t dstride, const void *src, size_t sstride, size_t rows, size_t len) {
    const size_t u = sizeof(U);
    copy_rows_kernel<U><<<sdc_cuda_blocks(rows * (len / u), kThreads), kThreads, 0, sdc_cuda_stream()>>>(
        static_cast<U *>(dst), dstride / u, static_cast<const U *>(src), sstride / u, rows, len / u);
    CUDA_LAUNCH_CHECK();
}

// A row copy described in bytes, moved in the widest unit that fits.
void copy_rows(void *dst, size_t dstride, const void *src, size_t sstride, size_t rows, size_t len) {
    if (!rows || !len) return;
    switch (unit_of((uintptr_t)dst | (uintptr_t)src | dstride | sstride | len)) {
    case 16: launch_copy_rows<uint4>(dst, dstride, src, sstride, rows, len); break;
    case 8: launch_copy_rows<uint2>(dst, dstride, src, sstride, rows, len); break;
    case 4: launch_copy_rows<uint32_t>(dst, dstride, src, sstride, rows, len); break;
    default: launch_copy_rows<uint16_t>(dst, dstride, src, sstride, rows, len); break;
    }
}

// ---- transpose -------------------------------------------------------------------
// x [B,R,C] → out [B,C,R] through a TILE×TILE shared-memory tile (+1 column of
// padding against bank conflicts), blocks of 32×8 threads. E is the element's
// bits; with V = 2 (16-bit elements, R and C even) each lane moves a pair of
// adjacent elements as one 32-bit word, so a warp reads and writes 128
// contiguous bytes as the 32-bit case does.
template <typename E, int V> __global__ void transpose_kernel(E *out, const E *x, size_t R, size_t C, size_t tr, size_t tc) {
    constexpr int TILE = 32 * V;
    __shared__ E tile[TILE][TILE + 1];
    const size_t t = blockIdx.x, b = t / (tr * tc), rem = t - b * tr * tc, r0 = rem / tc * TILE,
                 c0 = (rem % tc) * TILE;
    const E *xb = x + b * R * C;
    E *ob = out + b * R * C;
    const int tx = threadIdx.x, ty = threadIdx.y;
    // read rows r0.., columns c0 + tx·V + k
    for (int i = ty; i < TILE; i += 8) {
        size_t r = r0 + i, c = c0 + (size_t)tx * V;
        if (r < R && c < C) {
            if (V == 2) {
                uint32_t w = *reinterpret_cast<const uint32_t *>(xb + r * C + c);
                tile[i][tx * V] = (E)(w & 0xffffu);
                tile[i][tx * V + 1] = (E)(w >> 16);
            } else {
                tile[i][tx] = xb[r * C + c];
            }
        }
    }
    __syncthreads();
    // write rows c0.. of out, columns r0 + tx·V + k
    for (int j = ty; j < TILE; j += 8) {
        size_t c = c0 + j, r = r0 + (size_t)tx * V;
        if (c < C && r < R) {
            if (V == 2) {
                uint32_t w = (uint32_t)tile[tx * V][j] | ((uint32_t)tile[tx * V + 1][j] << 16);
                *reinterpret_cast<uint32_t *>(ob + c * R + r) = w;
            } else {
                ob[c * R + r] = tile[tx][j];
            }
        }
    }
}

template <typename E, int V> void launch_transpose(void *out, const void *x, size_t B, size_t R, size_t C) {
    constexpr int TILE = 32 * V;
    const size_t tr = (R + TILE - 1) / TILE, tc = (C + TILE - 1) / TILE;
    transpose_kernel<E, V><<<(unsigned)(B * tr * tc), dim3(32, 8), 0, sdc_cuda_stream()>>>(
        static_cast<E *>(out), static_cast<const E *>(x), R, C, tr, tc);
    CUDA_LAUNCH_CHECK();
}

// ---- padding and upsampling ----------------------------------------------------------

// out[bc, y, x] = x[bc, y − top, x − left] inside, 0 outside
template <typename E>
__global__ void pad2d_kernel(E *out, const E *x, size_t BC, int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t top,
                             int64_t left) {
    for (size_t i = gtid(); i < BC * Ho * Wo; i += gstride()) {
        size_t row = udiv(i, Wo), bc = udiv(row, Ho);
        int64_t xo = (int64_t)(i - row * Wo), yo = (int64_t)(row - bc * Ho);
        int64_t yi = yo - top, xi = xo - left;
        out[i] = (yi >= 0 && yi < H && xi >= 0 && xi < W) ? x[(bc * H + yi) * W + xi] : (E)0;
    }
}

// One thread per input element x[row, j] (row over B·C·H): it fills
// out[2·row, 2j..2j+1] and out[2·row+1, 2j..2j+1], as one pair P each when
// PAIR (out aligned to a pair).
template <typename E, typename P, bool PAIR> __global__ void upsample2x_kernel(E *out, const E *x, size_t rows, size_t W) {
    for (size_t i = gtid(); i < rows * W; i += gstride()) {
        size_t row = udiv(i, W), j = i - row * W;
        E v = x[i];
        E *o0 = out + (2 * row) * (2 * W) + 2 * j, *o1 = o0 + 2 * W;
        if (PAIR) {
            P p;
            E *pe = reinterpret_cast<E *>(&p);
            pe[0] = v, pe[1] = v;
            *reinterpret_cast<P *>(o0) = p;
            *reinterpret_cast<P *>(o1) = p;
        } else {
            o0[0] = v, o0[1] = v, o1[0] = v, o1[1] = v;
        }
    }
}

// dx[row, j] = (dy[2row, 2j] + dy[2row, 2j+1]) + (dy[2row+1, 2j] + dy[2row+1, 2j+1]), the CPU's order
template <typename T> __global__ void upsample2x_bwd_kernel(T *dx, const T *dy, size_t rows, size_t W) {
    for (size_t i = gtid(); i < rows * W; i += gstride()) {
        size_t row = udiv(i, W), j = i - row * W;
        const T *r0 = dy + (2 * row) * (2 * W) + 2 * j, *r1 = r0 + 2 * W;
        float s = __fadd_rn(__fadd_rn(sdc_ld(r0, 0), sdc_ld(r0, 1)), __fadd_rn(sdc_ld(r1, 0), sdc_ld(r1, 1)));
        sdc_st(dx, i, s);
    }
}

// ---- embedding ------------------------------------------------------------------------

// out[i, :] = table[ids[i], :] in units U, len units a row
template <typename U> __global__ void gather_rows_kernel(U *out, const U *table, const int32_t *ids, size_t n, size_t len) {
    for (size_t k = gtid(); k < n * len; k += gstride()) {
        size_t i = udiv(k, len), j = k - i * len;
        out[k] = table[(size_t)ids[i] * len + j];
    }
}

template <typename U> void launch_gather(void *out, const void *table, const int32_t *ids, size_t n, size_t row) {
    const size_t len = row / sizeof(U);
    gather_rows_kernel<U><<<sdc_cuda_blocks(n * len, kThreads), kThreads, 0, sdc_cuda_stream()>>>(
        static_cast<U *>(out), static_cast<const U *>(table), ids, n, len);
    CUDA_LAUNCH_CHECK();
}

// dtable[ids[i], d] += dy[i, d] for i = 0, 1, ... in order: one thread owns a
// column d, so repeated ids add in the CPU's order (deterministic, equal bits).
template <typename T> __global__ void embedding_bwd_kernel(float *dtable, const T *dy, const int32_t *ids, size_t n, size_t D) {
    for (size_t d = gtid(); d < D; d += gstride()) {
        for (size_t i = 0; i < n; i++) {
            float *t = dtable + (size_t)ids[i] * D + d;
            *t = __fadd_rn(*t, sdc_ld(dy, i * D + d));
        }
    }
}

// The ids on the device: a private buffer, grown (after the stream is idle:
// earlier gathers may still read it) and never shrunk; the copy is ordered
// on the stream behind every earlier reader.
const int32_t *device_ids(const int32_t *ids, size_t n) {
    static int32_t *buf;
    static size_t cap;
    if (n > cap) {
        CUDA_CHECK(cudaStreamSynchronize(sdc_cuda_stream()));
        if (buf) CUDA_CHECK(cudaFree(buf));
        size_t c = n < 4096 ? 4096 : 2 * n;
        CUDA_CHECK(cudaMalloc(&buf, c * sizeof *buf));
        cap = c;
    }
    // pageable source: the copy is staged by the driver before this returns
    CUDA_CHECK(cudaMemcpyAsync(buf, ids, n * sizeof *ids, cudaMemcpyHostToDevice, sdc_cuda_stream()));
    return buf;
}

} // namespace

extern "C" void sdc_cuda_concat(sdc_tensor *out, const sdc_tensor *a, const sdc_tensor *b, int64_t O, int64_t Ca,
                                int64_t Cb, int64_t S) {
    const size_t es = same_esize(out, a, "concat");
    same_esize(out, b, "concat");
    const size_t na = (size_t)(Ca * S) * es, nb = (size_t)(Cb * S) * es; // bytes per outer index
    copy_rows(out->data, na + nb, a->data, na, (size_t)O, na);
    copy_rows((char *)out->data + na, na + nb, b->data, nb, (size_t)O, nb);
}

extern "C" void sdc_cuda_slice(sdc_tensor *out, const sdc_tensor *x, int64_t O, int64_t C, int64_t S, int64_t c0,
                               int64_t n) {
    const size_t es = same_esize(out, x, "slice");
    copy_rows(out->data, (size_t)(n * S) * es, (const char *)x->data + (size_t)(c0 * S) * es, (size_t)(C * S) * es,
              (size_t)O, (size_t)(n * S) * es);
}

extern "C" void sdc_cuda_transpose(sdc_tensor *out, const sdc_tensor *x, int64_t B, int64_t R, int64_t C) {
    const size_t es = same_esize(out, x, "transpose");
    if (B <= 0 || R <= 0 || C <= 0) return;
    if (es == 4) {
        launch_transpose<uint32_t, 1>(out->data, x->data, B, R, C);
    } else if (R % 2 == 0 && C % 2 == 0 && ((uintptr_t)out->data | (uintptr_t)x->data) % 4 == 0) {
        launch_transpose<uint16_t, 2>(out->data, x->data, B, R, C);
    } else {
        launch_transpose<uint16_t, 1>(out->data, x->data, B, R, C);
    }
}

extern "C" void sdc_cuda_pad2d(sdc_tensor *out, const sdc_tensor *x, int64_t B, int64_t C, int64_t H, int64_t W,
                               int top, int bottom, int left, int right) {
    const size_t es = same_esize(out, x, "pad2d");
    const int64_t Ho = H + top + bottom, Wo = W + left + right;
    const size_t BC = (size_t)(B * C), n = BC * (size_t)(Ho * Wo);
    if (!n) return;
    const unsigned blocks = sdc_cuda_blocks(n, kThreads);
    if (es == 4)
        pad2d_kernel<uint32_t><<<blocks, kThreads, 0, sdc_cuda_stream()>>>(
            static_cast<uint32_t *>(out->data), static_cast<const uint32_t *>(x->data), BC, H, W, Ho, Wo, top, left);
    else
        pad2d_kernel<uint16_t><<<blocks, kThreads, 0, sdc_cuda_stream()>>>(
            static_cast<uint16_t *>(out->data), static_cast<const uint16_t *>(x->data), BC, H, W, Ho, Wo, top, left);
    CUDA_LAUNCH_CHECK();
}

extern "C" void sdc_cuda_upsample2x(sdc_tensor *out, const sdc_tensor *x, int64_t B, int64_t C, int64_t H,
                                    int64_t W) {
    const size_t es = same_esize(out, x, "upsample2x");
    const size_t rows = (size_t)(B * C * H), n = rows * (size_t)W;
    if (!n) return;
    const unsigned blocks = sdc_cuda_blocks(n, kThreads);
    const bool pair = (uintptr_t)out->data % (2 * es) == 0;
    cudaStream_t st = sdc_cuda_stream();
    if (es == 4) {
        uint32_t *o = static_cast<uint32_t *>(out->data);
        const uint32_t *xs = static_cast<const uint32_t *>(x->data);
        if (pair) upsample2x_kernel<uint32_t, uint2, true><<<blocks, kThreads, 0, st>>>(o, xs, rows, (size_t)W);
        else upsample2x_kernel<uint32_t, uint2, false><<<blocks, kThreads, 0, st>>>(o, xs, rows, (size_t)W);
    } else {
        uint16_t *o = static_cast<uint16_t *>(out->data);
        const uint16_t *xs = static_cast<const uint16_t *>(x->data);
        if (pair) upsample2x_kernel<uint16_t, uint32_t, true><<<blocks, kThreads, 0, st>>>(o, xs, rows, (size_t)W);
        else upsample2x_kernel<uint16_t, uint32_t, false><<<blocks, kThreads, 0, st>>>(o, xs, rows, (size_t)W);
    }
    CUDA_LAUNCH_CHECK();
}

extern "C" void sdc_cuda_upsample2x_backward(sdc_tensor *dx, const sdc_tensor *dy, int64_t B, int64_t C, int64_t H,
                                             int64_t W) {
    same_esize(dx, dy, "upsample2x_backward");
    const size_t rows = (size_t)(B * C * H), n = rows * (size_t)W;
    if (!n) return;
    SDC_DISPATCH_FLOAT(dx->dtype, T, {
        upsample2x_bwd_kernel<T><<<sdc_cuda_blocks(n, kThreads), kThreads, 0, sdc_cuda_stream()>>>(
            static_cast<T *>(dx->data), static_cast<const T *>(dy->data), rows, (size_t)W);
        CUDA_LAUNCH_CHECK();
    });
}

extern "C" void sdc_cuda_embedding(sdc_tensor *out, const sdc_tensor *table, const int32_t *ids, int64_t n,
                                   int64_t D) {
    const size_t es = same_esize(out, table, "embedding");
    if (n <= 0 || D <= 0) return;
    const int32_t *dids = device_ids(ids, (size_t)n);
    const size_t row = (size_t)D * es; // bytes
    switch (unit_of((uintptr_t)out->data | (uintptr_t)table->data | row)) {
    case 16: launch_gather<uint4>(out->data, table->data, dids, (size_t)n, row); break;
    case 8: launch_gather<uint2>(out->data, table->data, dids, (size_t)n, row); break;
    case 4: launch_gather<uint32_t>(out->data, table->data, dids, (size_t)n, row); break;
    default: launch_gather<uint16_t>(out->data, table->data, dids, (size_t)n, row); break;
    }
}

extern "C" void sdc_cuda_embedding_backward(sdc_tensor *dtable, const sdc_tensor *dy, const int32_t *ids, int64_t n,
                                            int64_t D) {
    if (dtable->dtype != SDC_F32) sdc_cuda_fatal("embedding_backward", "dtable is not F32", __FILE__, __LINE__);
    esize(dy, "embedding_backward");
    if (n <= 0 || D <= 0) return;
    const int32_t *dids = device_ids(ids, (size_t)n);
    SDC_DISPATCH_FLOAT(dy->dtype, T, {
        embedding_bwd_kernel<T><<<sdc_cuda_blocks((size_t)D, 128), 128, 0, sdc_cuda_stream()>>>(
            static_cast<float *>(dtable->data), static_cast<const T *>(dy->data), dids, (size_t)n, (size_t)D);
        CUDA_LAUNCH_CHECK();
    });
}
