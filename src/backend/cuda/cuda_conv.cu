// 2-D convolution (NCHW, zero padding, no dilation or groups) and its
// backward: 1×1 convs as cuBLASLt matrix products, the others through cuDNN's
// convolution API, and direct kernels as the fallback for builds without
// cuDNN and shapes neither library takes.
//
//   y[b,co,oy,ox] = bias[co] + Σ_{ci,i,j} w[co,ci,i,j]·x[b,ci,oy·s−p+i, ox·s−p+j]
//   dx[b,ci,iy,ix] = Σ_{co,i,j} w[co,ci,i,j]·dy[b,co,oy,ox]  over oy·s−p+i = iy, ox·s−p+j = ix
//   dw[co,ci,i,j] += Σ_{b,oy,ox} dy[b,co,oy,ox]·x[b,ci,oy·s−p+i, ox·s−p+j]
//   db[co]        += Σ_{b,oy,ox} dy[b,co,oy,ox]
//
// cuDNN: one handle bound to sdc_cuda_stream(); per shape (and dtype) a plan
// with the descriptors and, per direction, the algorithm, its math type and
// workspace. Algorithms come from cuDNN's heuristics (Get*_v7), which are a
// pure function of shape and device, so every process picks the same ones
// and a resumed run stays bit-identical. SDC_CUDNN_BENCHMARK=1 picks by
// timing instead (Find*Ex, once per shape: the choice may differ between
// processes). Only algorithms cuDNN reports deterministic are taken, fp32
// never runs on TF32 unless sdc_cuda_allow_tf32, and compute is fp32 for
// every data dtype. SDC_CONV_DIRECT=1 forces the direct kernels (the
// reference path, for debugging).
//
// dw is fp32 and accumulates. For fp32 data cuDNN adds into it (β = 1); for
// bf16/fp16 data cuDNN's filter gradient has the data dtype (cuDNN 9.19
// answers NOT_SUPPORTED for every algorithm given a float dw with bf16/fp16
// x and dy), so it goes to a temporary (workspace slot 2) that a kernel adds
// into dw in fp32. db is reduced in two deterministic passes (no atomics).
// Workspace slots: 1 = cuDNN / cuBLASLt, 2 = the filter temporary, 3 = db's
// partial sums.
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "core/error.h"
#include "core/log.h"

#ifdef SDC_WITH_CUDNN
#include <cudnn.h>
#endif

namespace {

struct conv_geom {
    int64_t B, Ci, H, W, Co, kh, kw, Ho, Wo;
    int stride, pad;
};

// x [B,Ci,H,W], w [Co,Ci,kh,kw], y (or dy) [B,Co,Ho,Wo]; the op wrappers
// checked the shapes, this only catches a caller that skipped them.
conv_geom geom_of(const sdc_tensor *x, const sdc_tensor *w, const sdc_tensor *y, int stride, int pad) {
    SDC_ASSERT(x->ndim == 4 && w->ndim == 4 && y->ndim == 4 && stride >= 1 && pad >= 0);
    conv_geom g = {x->shape[0], x->shape[1], x->shape[2], x->shape[3], w->shape[0], w->shape[2],
                   w->shape[3], y->shape[2], y->shape[3], stride, pad};
    SDC_ASSERT(w->shape[1] == g.Ci && y->shape[0] == g.B && y->shape[1] == g.Co);
    SDC_ASSERT(g.Ho == (g.H + 2 * pad - g.kh) / stride + 1 && g.Wo == (g.W + 2 * pad - g.kw) / stride + 1);
    SDC_ASSERT(x->dtype == w->dtype && x->dtype == y->dtype);
    return g;
}

int force_direct(void) {
    const char *e = getenv("SDC_CONV_DIRECT");
    return e && *e && strcmp(e, "0") != 0;
}

// ---- deterministic reductions -------------------------------------------------

constexpr int kThreads = 256;

// Sum over the block in a fixed order (shuffle tree within warps, then the
// warp sums by the first warp); the total is valid in thread 0. Once per kernel.
__device__ float block_sum(float v) {
    __shared__ float warp_sums[kThreads / 32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    if (lane == 0) warp_sums[wid] = v;
    __syncthreads();
    float t = 0.0f;
    if (wid == 0) {
        t = lane < kThreads / 32 ? warp_sums[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
    }
    return t;
}

// db pass 1: grid (B·Ps, Co). Block (p, co) sums dy[b, co, s0:s1] for
// b = p / Ps and the chunk p % Ps of the plane into part[co·P + p], P = B·Ps.
template <typename T>
__global__ void bias_grad_partial(float *part, const T *dy, int64_t Co, int64_t HW, int Ps, int64_t chunk) {
    int64_t p = blockIdx.x, co = blockIdx.y, P = gridDim.x;
    int64_t b = p / Ps, s0 = (p % Ps) * chunk, s1 = s0 + chunk < HW ? s0 + chunk : HW;
    const T *src = dy + (b * Co + co) * HW;
    float acc = 0.0f;
    for (int64_t s = s0 + threadIdx.x; s < s1; s += kThreads) acc += sdc_ld(src, (size_t)s);
    float t = block_sum(acc);
    if (threadIdx.x == 0) part[co * P + p] = t;
}

// db pass 2: one warp per channel, db[co] += Σ_p part[co·P + p] (lane-strided,
// then a shuffle tree: a fixed order).
__global__ void bias_grad_finish(float *db, const float *part, int64_t Co, int64_t P) {
    int64_t co = (int64_t)blockIdx.x * (kThreads / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (co >= Co) return; // whole warps leave together
    float acc = 0.0f;
    for (int64_t p = lane; p < P; p += 32) acc += part[co * P + p];
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) db[co] += acc;
}

// db[co] += Σ_{b,s} dy[b,co,s]. Each plane is cut into Ps chunks of at least
// 2048 elements so that Co·B·Ps is about 1024 blocks (8 per SM) when the
// planes are large; the cut depends on the shape only, so the sum order does.
void bias_grad(sdc_tensor *db, const sdc_tensor *dy, const conv_geom &g) {
    SDC_ASSERT(db->dtype == SDC_F32 && g.Co <= 65535);
    int64_t HW = g.Ho * g.Wo;
    if (g.Co == 0) return;
    if (g.B == 0 || HW == 0) return; // Σ over nothing adds 0
    int64_t want = (1024 + g.Co * g.B - 1) / (g.Co * g.B), most = (HW + 2047) / 2048;
    int64_t Ps = want < most ? want : most;
    if (Ps < 1) Ps = 1;
    int64_t chunk = (HW + Ps - 1) / Ps;
    Ps = (HW + chunk - 1) / chunk; // no empty chunks
    int64_t P = g.B * Ps;
    SDC_ASSERT(P <= INT32_MAX);
    float *part = (float *)sdc_cuda_workspace(3, (size_t)(g.Co * P) * sizeof(float));
    cudaStream_t st = sdc_cuda_stream();
    SDC_DISPATCH_FLOAT(dy->dtype, T, {
        bias_grad_partial<T><<<dim3((unsigned)P, (unsigned)g.Co), kThreads, 0, st>>>(part, (const T *)dy->data, g.Co,
                                                                                     HW, (int)Ps, chunk);
        CUDA_LAUNCH_CHECK();
    });
    unsigned blocks = (unsigned)((g.Co + kThreads / 32 - 1) / (kThreads / 32));
    bias_grad_finish<<<blocks, kThreads, 0, st>>>((float *)db->data, part, g.Co, P);
    CUDA_LAUNCH_CHECK();
}

// ---- elementwise helpers --------------------------------------------------------

// y[b,c,s] += bias[c]: grid (B·Co planes, chunks of the plane), fp32 add.
template <typename T> __global__ void add_bias_kernel(T *y, const T *bias, int64_t Co, int64_t HW) {
    int64_t plane = blockIdx.x;
    float bv = sdc_ld(bias, (size_t)(plane % Co));
    T *row = y + plane * HW;
    for (int64_t s = (int64_t)blockIdx.y * kThreads + threadIdx.x; s < HW; s += (int64_t)gridDim.y * kThreads)
        sdc_st(row, (size_t)s, sdc_ld(row, (size_t)s) + bv);
}

void add_bias(sdc_tensor *y, const sdc_tensor *bias, const conv_geom &g) {
    int64_t planes = g.B * g.Co, HW = g.Ho * g.Wo;
    if (planes == 0 || HW == 0) return;
    SDC_ASSERT(planes <= INT32_MAX);
    int64_t gy = (HW + 4 * kThreads - 1) / (4 * kThreads); // about 4 elements a thread
    if (gy > 65535) gy = 65535;
    SDC_DISPATCH_FLOAT(y->dtype, T, {
        add_bias_kernel<T><<<dim3((unsigned)planes, (unsigned)gy), kThreads, 0, sdc_cuda_stream()>>>(
            (T *)y->data, (const T *)bias->data, g.Co, HW);
        CUDA_LAUNCH_CHECK();
    });
}

// dw[i] += g[i] (fp32 dw, g in the data dtype)
template <typename T> __global__ void add_into_f32(float *dw, const T *g, size_t n) {
    for (size_t i = blockIdx.x * (size_t)kThreads + threadIdx.x; i < n; i += (size_t)gridDim.x * kThreads)
        dw[i] += sdc_ld(g, i);
}

// ---- direct kernels (fallback and reference) ------------------------------------
// One output per thread, fp32 accumulation in a fixed order: deterministic.

// y[b,co,oy,ox]: grid-stride over B·Co·Ho·Wo.
template <typename T>
__global__ void conv_fwd_direct(T *y, const T *x, const T *w, const T *bias, conv_geom g) {
    int64_t n = g.B * g.Co * g.Ho * g.Wo;
    for (int64_t i = blockIdx.x * (int64_t)kThreads + threadIdx.x; i < n; i += (int64_t)gridDim.x * kThreads) {
        int64_t ox = i % g.Wo, t = i / g.Wo, oy = t % g.Ho;
        t /= g.Ho;
        int64_t co = t % g.Co, b = t / g.Co;
        float acc = bias ? sdc_ld(bias, (size_t)co) : 0.0f;
        for (int64_t ci = 0; ci < g.Ci; ci++) {
            const T *xc = x + (b * g.Ci + ci) * g.H * g.W;
            const T *wc = w + (co * g.Ci + ci) * g.kh * g.kw;
            for (int64_t ki = 0; ki < g.kh; ki++) {
                int64_t iy = oy * g.stride - g.pad + ki;
                if (iy < 0 || iy >= g.H) continue;
                for (int64_t kj = 0; kj < g.kw; kj++) {
                    int64_t ix = ox * g.stride - g.pad + kj;
                    if (ix < 0 || ix >= g.W) continue;
                    acc += sdc_ld(xc, (size_t)(iy * g.W + ix)) * sdc_ld(wc, (size_t)(ki * g.kw + kj));
                }
            }
        }
        sdc_st(y, (size_t)i, acc);
    }
}

// dx[b,ci,iy,ix]: grid-stride over B·Ci·H·W; the taps (i, j) that reach iy
// come from output row oy = (iy + p − i)/s when that divides exactly.
template <typename T> __global__ void conv_bwd_data_direct(T *dx, const T *dy, const T *w, conv_geom g) {
    int64_t n = g.B * g.Ci * g.H * g.W;
    for (int64_t i = blockIdx.x * (int64_t)kThreads + threadIdx.x; i < n; i += (int64_t)gridDim.x * kThreads) {
        int64_t ix = i % g.W, t = i / g.W, iy = t % g.H;
        t /= g.H;
        int64_t ci = t % g.Ci, b = t / g.Ci;
        float acc = 0.0f;
        for (int64_t co = 0; co < g.Co; co++) {
            const T *dyc = dy + (b * g.Co + co) * g.Ho * g.Wo;
            const T *wc = w + (co * g.Ci + ci) * g.kh * g.kw;
            for (int64_t ki = 0; ki < g.kh; ki++) {
                int64_t ny = iy + g.pad - ki;
                if (ny < 0 || ny % g.stride) continue;
                int64_t oy = ny / g.stride;
                if (oy >= g.Ho) continue;
                for (int64_t kj = 0; kj < g.kw; kj++) {
                    int64_t nx = ix + g.pad - kj;
                    if (nx < 0 || nx % g.stride) continue;
                    int64_t ox = nx / g.stride;
                    if (ox >= g.Wo) continue;
                    acc += sdc_ld(wc, (size_t)(ki * g.kw + kj)) * sdc_ld(dyc, (size_t)(oy * g.Wo + ox));
                }
            }
        }
        sdc_st(dx, (size_t)i, acc);
    }
}

// dw[co,ci,i,j] += Σ_{b,oy,ox} dy·x: one block per weight (grid Co·Ci·kh·kw),
// threads stride over (b, oy, ox), then block_sum.
template <typename T> __global__ void conv_bwd_filter_direct(float *dw, const T *dy, const T *x, conv_geom g) {
    int64_t widx = blockIdx.x;
    int64_t kj = widx % g.kw, t = widx / g.kw, ki = t % g.kh;
    t /= g.kh;
    int64_t ci = t % g.Ci, co = t / g.Ci;
    int64_t n = g.B * g.Ho * g.Wo;
    float acc = 0.0f;
    for (int64_t e = threadIdx.x; e < n; e += kThreads) {
        int64_t ox = e % g.Wo, u = e / g.Wo, oy = u % g.Ho, b = u / g.Ho;
        int64_t iy = oy * g.stride - g.pad + ki, ix = ox * g.stride - g.pad + kj;
        if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) continue;
        acc += sdc_ld(dy, (size_t)(((b * g.Co + co) * g.Ho + oy) * g.Wo + ox)) *
               sdc_ld(x, (size_t)(((b * g.Ci + ci) * g.H + iy) * g.W + ix));
    }
    float s = block_sum(acc);
    if (threadIdx.x == 0) dw[widx] += s;
}

void fwd_direct(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *w, const sdc_tensor *bias,
                const conv_geom &g) {
    size_t n = (size_t)(g.B * g.Co * g.Ho * g.Wo);
    if (n == 0) return;
    SDC_DISPATCH_FLOAT(x->dtype, T, {
        conv_fwd_direct<T><<<sdc_cuda_blocks(n, kThreads), kThreads, 0, sdc_cuda_stream()>>>(
            (T *)out->data, (const T *)x->data, (const T *)w->data, bias ? (const T *)bias->data : nullptr, g);
        CUDA_LAUNCH_CHECK();
    });
}

void bwd_data_direct(sdc_tensor *dx, const sdc_tensor *dy, const sdc_tensor *w, const conv_geom &g) {
    size_t n = (size_t)(g.B * g.Ci * g.H * g.W);
    if (n == 0) return;
    SDC_DISPATCH_FLOAT(dy->dtype, T, {
        conv_bwd_data_direct<T><<<sdc_cuda_blocks(n, kThreads), kThreads, 0, sdc_cuda_stream()>>>(
            (T *)dx->data, (const T *)dy->data, (const T *)w->data, g);
        CUDA_LAUNCH_CHECK();
    });
}

void bwd_filter_direct(sdc_tensor *dw, const sdc_tensor *dy, const sdc_tensor *x, const conv_geom &g) {
    int64_t nw = g.Co * g.Ci * g.kh * g.kw;
    if (nw == 0) return;
    SDC_ASSERT(nw <= INT32_MAX);
    SDC_DISPATCH_FLOAT(dy->dtype, T, {
        conv_bwd_filter_direct<T><<<(unsigned)nw, kThreads, 0, sdc_cuda_stream()>>>(
            (float *)dw->data, (const T *)dy->data, (const T *)x->data, g);
        CUDA_LAUNCH_CHECK();
    });
}

// ---- 1×1 convolutions as matrix products (cuBLASLt) ----------------------------
// A 1×1, stride-1, unpadded conv is a product per image; with x[b] viewed as
// [Ci, HW] and y[b] as [Co, HW] (row-major):
//   y[b] = W[Co,Ci]·x[b],   dx[b] = Wᵀ·dy[b],   dW += Σ_b dy[b]·x[b]ᵀ
// cuBLASLt is column-major, where a row-major [R,C] matrix is a [C,R] one
// with ld C, so it computes the transposes:
//   y[b]ᵀ [HW,Co]  = x[b]ᵀ [HW,Ci] · Wᵀ [Ci,Co]     A = x[b], B = W, no transposes
//   dx[b]ᵀ [HW,Ci] = dy[b]ᵀ [HW,Co] · W [Co,Ci]     B = W stored [Ci,Co], transposed
//   dWᵀ [Ci,Co]   += x[b] [Ci,HW] · dy[b]ᵀ [HW,Co]  A = x[b] stored [HW,Ci], transposed
// The first two are one batched call over b (W with batch stride 0); dW
// loops over b with β = 1 (a fixed order) and is written in fp32 directly,
// also for bf16/fp16 data. cuDNN's legacy API ran these 3–4× slower than a
// GEMM. Compute is fp32 (TF32 only for fp32 data with sdc_cuda_allow_tf32).

constexpr size_t kLtWs = (size_t)32 << 20; // cuBLASLt workspace (slot 1)

enum { LT_UNSET = 0, LT_OK, LT_NO };

struct lt_gemm {
    int state;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c; // D has C's layout
    cublasLtMatmulAlgo_t algo;
    size_t ws;
};

struct mm_key {
    int64_t B, Ci, HW, Co;
    int dtype, tf32;
};

struct mm_plan {
    mm_key key;
    lt_gemm fwd, bwd_data, bwd_filter;
};

mm_plan **g_mm;
int g_nmm, g_capmm;

// Whether the GEMM path takes this conv: 1×1, stride 1, no pad, and every
// leading dimension and batch stride a multiple of 16 bytes (the pointers
// are checked per call).
bool gemm_shape(const conv_geom &g, sdc_dtype dt) {
    size_t esz = sdc_dtype_size(dt);
    return g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0 && g.B >= 1 && g.B <= INT32_MAX &&
           (g.H * g.W * esz) % 16 == 0 && (g.Ci * esz) % 16 == 0 && g.Ci > 0 && g.Co > 0 && g.H * g.W > 0;
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

cudaDataType_t lt_type(sdc_dtype d) {
    return d == SDC_F32 ? CUDA_R_32F : d == SDC_BF16 ? CUDA_R_16BF : CUDA_R_16F;
}

cublasLtMatrixLayout_t lt_layout(cudaDataType_t t, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                                 int64_t stride) {
    cublasLtMatrixLayout_t l;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, t, (uint64_t)rows, (uint64_t)cols, ld));
    if (batch > 1) {
        int32_t n = (int32_t)batch;
        CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &n, sizeof n));
        CUBLAS_CHECK(
            cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
    }
    return l;
}

// Descriptors and the heuristic's first algorithm for D = op(A)·op(B) (+ β·C),
// pointers 16-byte aligned; LT_NO when cuBLASLt offers none.
void lt_init(lt_gemm *g, const mm_key &k, cublasOperation_t ta, cublasOperation_t tb, cublasLtMatrixLayout_t a,
             cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c) {
    cublasComputeType_t ct = k.dtype == SDC_F32 && k.tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&g->op, ct, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    g->a = a, g->b = b, g->c = c;
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = kLtWs;
    uint32_t al = 16;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    const cublasLtMatmulPreferenceAttributes_t aligns[] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (cublasLtMatmulPreferenceAttributes_t at : aligns)
        CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, at, &al, sizeof al));
    cublasLtMatmulHeuristicResult_t res;
    int n = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(sdc_cuda_cublaslt(), g->op, a, b, c, c, pref, 1, &res, &n);
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    if (st != CUBLAS_STATUS_SUCCESS || n < 1 || res.state != CUBLAS_STATUS_SUCCESS) {
        g->state = LT_NO;
        SDC_DEBUG("conv2d 1x1: cuBLASLt has no algorithm (%s), using cuDNN", cublasLtGetStatusString(st));
        return;
    }
    g->algo = res.algo, g->ws = res.workspaceSize, g->state = LT_OK;
}

mm_plan *mm_plan_for(const conv_geom &g, sdc_dtype dt) {
    mm_key k = {g.B, g.Ci, g.H * g.W, g.Co, (int)dt, dt == SDC_F32 && sdc_cuda_allow_tf32 ? 1 : 0};
    for (int i = 0; i < g_nmm; i++) {
        const mm_key &o = g_mm[i]->key;
        if (o.B == k.B && o.Ci == k.Ci && o.HW == k.HW && o.Co == k.Co && o.dtype == k.dtype && o.tf32 == k.tf32)
            return g_mm[i];
    }
    mm_plan *p = (mm_plan *)calloc(1, sizeof *p);
    if (!p) sdc_cuda_fatal("conv2d plan", "out of host memory", __FILE__, __LINE__);
    p->key = k;
    if (g_nmm == g_capmm) {
        int cap = g_capmm ? 2 * g_capmm : 16;
        mm_plan **np = (mm_plan **)realloc(g_mm, (size_t)cap * sizeof *np);
        if (!np) sdc_cuda_fatal("conv2d plan", "out of host memory", __FILE__, __LINE__);
        g_mm = np, g_capmm = cap;
    }
    g_mm[g_nmm++] = p;
    return p;
}

bool fwd_gemm(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *w, const conv_geom &g) {
    if (!gemm_shape(g, x->dtype) || !aligned16(out->data) || !aligned16(x->data) || !aligned16(w->data)) return false;
    mm_plan *p = mm_plan_for(g, x->dtype);
    int64_t HW = g.H * g.W;
    if (p->fwd.state == LT_UNSET) {
        cudaDataType_t t = lt_type(x->dtype);
        lt_init(&p->fwd, p->key, CUBLAS_OP_N, CUBLAS_OP_N, lt_layout(t, HW, g.Ci, HW, g.B, g.Ci * HW),
                lt_layout(t, g.Ci, g.Co, g.Ci, g.B, 0), lt_layout(t, HW, g.Co, HW, g.B, g.Co * HW));
    }
    if (p->fwd.state != LT_OK) return false;
    const float one = 1.0f, zero = 0.0f;
    void *ws = p->fwd.ws ? sdc_cuda_workspace(1, p->fwd.ws) : nullptr;
    CUBLAS_CHECK(cublasLtMatmul(sdc_cuda_cublaslt(), p->fwd.op, &one, x->data, p->fwd.a, w->data, p->fwd.b, &zero,
                                out->data, p->fwd.c, out->data, p->fwd.c, &p->fwd.algo, ws, p->fwd.ws,
                                sdc_cuda_stream()));
    return true;
}

bool bwd_data_gemm(sdc_tensor *dx, const sdc_tensor *dy, const sdc_tensor *w, const conv_geom &g) {
    if (!gemm_shape(g, dy->dtype) || !aligned16(dx->data) || !aligned16(dy->data) || !aligned16(w->data))
        return false;
    mm_plan *p = mm_plan_for(g, dy->dtype);
    int64_t HW = g.H * g.W;
    if (p->bwd_data.state == LT_UNSET) {
        cudaDataType_t t = lt_type(dy->dtype);
        lt_init(&p->bwd_data, p->key, CUBLAS_OP_N, CUBLAS_OP_T, lt_layout(t, HW, g.Co, HW, g.B, g.Co * HW),
                lt_layout(t, g.Ci, g.Co, g.Ci, g.B, 0), lt_layout(t, HW, g.Ci, HW, g.B, g.Ci * HW));
    }
    if (p->bwd_data.state != LT_OK) return false;
    const float one = 1.0f, zero = 0.0f;
    void *ws = p->bwd_data.ws ? sdc_cuda_workspace(1, p->bwd_data.ws) : nullptr;
    CUBLAS_CHECK(cublasLtMatmul(sdc_cuda_cublaslt(), p->bwd_data.op, &one, dy->data, p->bwd_data.a, w->data,
                                p->bwd_data.b, &zero, dx->data, p->bwd_data.c, dx->data, p->bwd_data.c,
                                &p->bwd_data.algo, ws, p->bwd_data.ws, sdc_cuda_stream()));
    return true;
}

bool bwd_filter_gemm(sdc_tensor *dw, const sdc_tensor *dy, const sdc_tensor *x, const conv_geom &g) {
    if (!gemm_shape(g, dy->dtype) || !aligned16(dw->data) || !aligned16(dy->data) || !aligned16(x->data))
        return false;
    mm_plan *p = mm_plan_for(g, dy->dtype);
    int64_t HW = g.H * g.W;
    if (p->bwd_filter.state == LT_UNSET) {
        cudaDataType_t t = lt_type(dy->dtype);
        lt_init(&p->bwd_filter, p->key, CUBLAS_OP_T, CUBLAS_OP_N, lt_layout(t, HW, g.Ci, HW, 1, 0),
                lt_layout(t, HW, g.Co, HW, 1, 0), lt_layout(CUDA_R_32F, g.Ci, g.Co, g.Ci, 1, 0));
    }
    if (p->bwd_filter.state != LT_OK) return false;
    const float one = 1.0f;
    void *ws = p->bwd_filter.ws ? sdc_cuda_workspace(1, p->bwd_filter.ws) : nullptr;
    size_t esz = sdc_dtype_size(dy->dtype);
    for (int64_t b = 0; b < g.B; b++) {
        const char *xb = (const char *)x->data + (size_t)(b * g.Ci * HW) * esz;
        const char *dyb = (const char *)dy->data + (size_t)(b * g.Co * HW) * esz;
        CUBLAS_CHECK(cublasLtMatmul(sdc_cuda_cublaslt(), p->bwd_filter.op, &one, xb, p->bwd_filter.a, dyb,
                                    p->bwd_filter.b, &one, dw->data, p->bwd_filter.c, dw->data, p->bwd_filter.c,
                                    &p->bwd_filter.algo, ws, p->bwd_filter.ws, sdc_cuda_stream()));
    }
    return true;
}

#ifdef SDC_WITH_CUDNN
// ---- cuDNN ------------------------------------------------------------------------

#define CUDNN_CHECK(call)                                                                          \
    do {                                                                                           \
        cudnnStatus_t s_ = (call);                                                                 \
        if (s_ != CUDNN_STATUS_SUCCESS) sdc_cuda_fatal(#call, cudnnGetErrorString(s_), __FILE__, __LINE__); \
    } while (0)

// The workspace an algorithm may ask for (and what a timed search gets):
// 256 MiB, or 4× the bytes of x and y when that is more. cuDNN's fast
// tensor-core kernels for NCHW transpose x and y into workspace (about
// x + y bytes: 270 MB for the VAE decoder's 256-channel 512×512 conv), and a
// fixed cap sent those large shapes to kernels 15–200× slower. The limit
// depends on the shape only, so the choice does too.
constexpr size_t kWsMin = (size_t)256 << 20;

int benchmark_mode(void) {
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("SDC_CUDNN_BENCHMARK");
        v = e && *e && strcmp(e, "0") != 0;
    }
    return v;
}

cudnnDataType_t cudnn_dtype(sdc_dtype d) {
    switch (d) {
    case SDC_F32: return CUDNN_DATA_FLOAT;
    case SDC_BF16: return CUDNN_DATA_BFLOAT16;
    case SDC_F16: return CUDNN_DATA_HALF;
    default: sdc_cuda_fatal("conv2d", "dtype is not F32/BF16/F16", __FILE__, __LINE__);
    }
}

struct conv_key {
    int64_t B, Ci, H, W, Co, kh, kw;
    int stride, pad, dtype, tf32;
};

bool key_eq(const conv_key &a, const conv_key &b) {
    return a.B == b.B && a.Ci == b.Ci && a.H == b.H && a.W == b.W && a.Co == b.Co && a.kh == b.kh &&
           a.kw == b.kw && a.stride == b.stride && a.pad == b.pad && a.dtype == b.dtype && a.tf32 == b.tf32;
}

enum { CHOICE_UNSET = 0, CHOICE_CUDNN, CHOICE_DIRECT };

// One direction's algorithm: the math type it was found with and its workspace.
struct conv_choice {
    int state;
    int algo;
    cudnnMathType_t math;
    size_t ws;
};

struct conv_plan {
    conv_key key;
    bool usable; // the shape fits cuDNN (int dims, < 2³¹ elements per tensor)
    size_t ws_limit;
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    conv_choice fwd, bwd_data, bwd_filter;
};

// The plans, one per shape seen (a model has a few dozen); linear search.
conv_plan **g_plans;
int g_nplans, g_cap;

bool fits_cudnn(const conv_geom &g) {
    const int64_t lim = INT32_MAX;
    int64_t dims[] = {g.B, g.Ci, g.H, g.W, g.Co, g.kh, g.kw, g.Ho, g.Wo};
    for (int64_t d : dims)
        if (d < 1 || d > lim) return false;
    return g.B * g.Ci * g.H * g.W <= lim && g.B * g.Co * g.Ho * g.Wo <= lim && g.Co * g.Ci * g.kh * g.kw <= lim;
}

conv_plan *plan_for(const conv_geom &g, sdc_dtype dtype) {
    conv_key k = {g.B, g.Ci, g.H, g.W, g.Co, g.kh, g.kw, g.stride, g.pad, (int)dtype,
                  dtype == SDC_F32 && sdc_cuda_allow_tf32 ? 1 : 0};
    for (int i = 0; i < g_nplans; i++)
        if (key_eq(g_plans[i]->key, k)) return g_plans[i];
    conv_plan *p = (conv_plan *)calloc(1, sizeof *p);
    if (!p) sdc_cuda_fatal("conv2d plan", "out of host memory", __FILE__, __LINE__);
    p->key = k;
    p->usable = fits_cudnn(g);
    size_t io = (size_t)(g.B * g.Ci * g.H * g.W + g.B * g.Co * g.Ho * g.Wo) * sdc_dtype_size(dtype);
    p->ws_limit = 4 * io > kWsMin ? 4 * io : kWsMin;
    if (p->usable) {
        cudnnDataType_t dt = cudnn_dtype(dtype);
        CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->xd));
        CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->yd));
        CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->wd));
        CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p->cd));
        CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->xd, CUDNN_TENSOR_NCHW, dt, (int)g.B, (int)g.Ci, (int)g.H, (int)g.W));
        CUDNN_CHECK(
            cudnnSetTensor4dDescriptor(p->yd, CUDNN_TENSOR_NCHW, dt, (int)g.B, (int)g.Co, (int)g.Ho, (int)g.Wo));
        CUDNN_CHECK(
            cudnnSetFilter4dDescriptor(p->wd, dt, CUDNN_TENSOR_NCHW, (int)g.Co, (int)g.Ci, (int)g.kh, (int)g.kw));
        // PyTorch's conv is cross-correlation; accumulate in fp32 for every dtype
        CUDNN_CHECK(cudnnSetConvolution2dDescriptor(p->cd, g.pad, g.pad, g.stride, g.stride, 1, 1,
                                                    CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
        int n, c, h, w;
        CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(p->cd, p->xd, p->wd, &n, &c, &h, &w));
        SDC_ASSERT(n == g.B && c == g.Co && h == g.Ho && w == g.Wo);
    }
    if (g_nplans == g_cap) {
        int cap = g_cap ? 2 * g_cap : 32;
        conv_plan **np = (conv_plan **)realloc(g_plans, (size_t)cap * sizeof *np);
        if (!np) sdc_cuda_fatal("conv2d plan", "out of host memory", __FILE__, __LINE__);
        g_plans = np, g_cap = cap;
    }
    g_plans[g_nplans++] = p;
    return p;
}

// The math type asked for: strict fp32 FMA unless TF32 is allowed (then
// cuDNN's default, which may use TF32 tensor cores); tensor cores for bf16/fp16.
cudnnMathType_t requested_math(const conv_plan *p) {
    if (p->key.dtype != SDC_F32) return CUDNN_TENSOR_OP_MATH;
    return p->key.tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
}

// The first result (they come best first) that ran or is expected to run,
// is deterministic, fits the workspace limit, and keeps strict fp32 strict.
// When none fits the limit, the one of those with the least workspace, if
// the device has twice that free (better than the direct kernel).
template <typename Perf> int pick(const Perf *r, int n, const conv_plan *p) {
    bool strict = p->key.dtype == SDC_F32 && !p->key.tf32;
    int least = -1;
    for (int i = 0; i < n; i++) {
        if (r[i].status != CUDNN_STATUS_SUCCESS || r[i].determinism != CUDNN_DETERMINISTIC) continue;
        if (strict && r[i].mathType != CUDNN_FMA_MATH) continue;
        if (r[i].memory <= p->ws_limit) return i;
        if (least < 0 || r[i].memory < r[least].memory) least = i;
    }
    size_t free_b = 0, total_b = 0;
    if (least >= 0 && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess && r[least].memory <= free_b / 2) return least;
    return -1;
}

const char *dtype_str(int d) { return d == SDC_F32 ? "f32" : d == SDC_BF16 ? "bf16" : "f16"; }

void log_choice(const char *dir, const conv_plan *p, const conv_choice &c) {
    const conv_key &k = p->key;
    if (c.state == CHOICE_CUDNN)
        SDC_DEBUG("conv2d %s [%lld,%lld,%lld,%lld]->%lld k%lldx%lld s%d p%d %s: cuDNN algo %d math %d ws %zu", dir,
                  (long long)k.B, (long long)k.Ci, (long long)k.H, (long long)k.W, (long long)k.Co,
                  (long long)k.kh, (long long)k.kw, k.stride, k.pad, dtype_str(k.dtype), c.algo, (int)c.math, c.ws);
    else
        SDC_WARN("conv2d %s [%lld,%lld,%lld,%lld]->%lld k%lldx%lld s%d p%d %s: no deterministic cuDNN algorithm, "
                 "using the direct kernel (slow)",
                 dir, (long long)k.B, (long long)k.Ci, (long long)k.H, (long long)k.W, (long long)k.Co,
                 (long long)k.kh, (long long)k.kw, k.stride, k.pad, dtype_str(k.dtype));
}

// Finds (or looks up in the heuristics) the forward algorithm. In benchmark
// mode cuDNN runs the candidates on x, w and y (y is overwritten next).
void choose_fwd(conv_plan *p, const void *x, const void *w, void *y) {
    cudnnHandle_t h = sdc_cuda_cudnn();
    cudnnConvolutionFwdAlgoPerf_t r[16];
    int max = 0, n = 0;
    CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &max));
    if (max > 16) max = 16;
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->cd, requested_math(p)));
    if (benchmark_mode())
        CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(h, p->xd, x, p->wd, w, p->cd, p->yd, y, max, &n, r,
                                                           sdc_cuda_workspace(1, p->ws_limit), p->ws_limit));
    else
        CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, p->xd, p->wd, p->cd, p->yd, max, &n, r));
    int i = pick(r, n, p);
    if (i < 0) {
        p->fwd.state = CHOICE_DIRECT;
    } else {
        p->fwd = {CHOICE_CUDNN, (int)r[i].algo, r[i].mathType, 0};
        CUDNN_CHECK(cudnnSetConvolutionMathType(p->cd, r[i].mathType));
        CUDNN_CHECK(
            cudnnGetConvolutionForwardWorkspaceSize(h, p->xd, p->wd, p->cd, p->yd, r[i].algo, &p->fwd.ws));
    }
    log_choice("forward", p, p->fwd);
}

void choose_bwd_data(conv_plan *p, const void *w, const void *dy, void *dx) {
    cudnnHandle_t h = sdc_cuda_cudnn();
    cudnnConvolutionBwdDataAlgoPerf_t r[16];
    int max = 0, n = 0;
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &max));
    if (max > 16) max = 16;
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->cd, requested_math(p)));
    if (benchmark_mode())
        CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(h, p->wd, w, p->yd, dy, p->cd, p->xd, dx, max, &n, r,
                                                                sdc_cuda_workspace(1, p->ws_limit), p->ws_limit));
    else
        CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, p->wd, p->yd, p->cd, p->xd, max, &n, r));
    int i = pick(r, n, p);
    if (i < 0) {
        p->bwd_data.state = CHOICE_DIRECT;
    } else {
        p->bwd_data = {CHOICE_CUDNN, (int)r[i].algo, r[i].mathType, 0};
        CUDNN_CHECK(cudnnSetConvolutionMathType(p->cd, r[i].mathType));
        CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(h, p->wd, p->yd, p->cd, p->xd, r[i].algo,
                                                                 &p->bwd_data.ws));
    }
    log_choice("backward-data", p, p->bwd_data);
}

// In benchmark mode the candidates write a scratch filter (workspace slot 2),
// never the accumulating dw.
void choose_bwd_filter(conv_plan *p, const void *x, const void *dy, size_t filter_bytes) {
    cudnnHandle_t h = sdc_cuda_cudnn();
    cudnnConvolutionBwdFilterAlgoPerf_t r[16];
    int max = 0, n = 0;
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &max));
    if (max > 16) max = 16;
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->cd, requested_math(p)));
    if (benchmark_mode()) {
        void *scratch = sdc_cuda_workspace(2, filter_bytes);
        void *ws = sdc_cuda_workspace(1, p->ws_limit);
        CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(h, p->xd, x, p->yd, dy, p->cd, p->wd, scratch, max,
                                                                  &n, r, ws, p->ws_limit));
    } else {
        CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, p->xd, p->yd, p->cd, p->wd, max, &n, r));
    }
    int i = pick(r, n, p);
    if (i < 0) {
        p->bwd_filter.state = CHOICE_DIRECT;
    } else {
        p->bwd_filter = {CHOICE_CUDNN, (int)r[i].algo, r[i].mathType, 0};
        CUDNN_CHECK(cudnnSetConvolutionMathType(p->cd, r[i].mathType));
        CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, p->xd, p->yd, p->cd, p->wd, r[i].algo,
                                                                   &p->bwd_filter.ws));
    }
    log_choice("backward-filter", p, p->bwd_filter);
}

void *ws_for(const conv_choice &c) { return c.ws ? sdc_cuda_workspace(1, c.ws) : nullptr; }

// cuDNN forward when the shape has an algorithm; false to fall back.
bool fwd_cudnn(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *w, const conv_geom &g) {
    conv_plan *p = plan_for(g, x->dtype);
    if (!p->usable) return false;
    if (p->fwd.state == CHOICE_UNSET) choose_fwd(p, x->data, w->data, out->data);
    if (p->fwd.state != CHOICE_CUDNN) return false;
    const float one = 1.0f, zero = 0.0f; // scaling factors are float for float compute
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->cd, p->fwd.math));
    CUDNN_CHECK(cudnnConvolutionForward(sdc_cuda_cudnn(), &one, p->xd, x->data, p->wd, w->data, p->cd,
                                        (cudnnConvolutionFwdAlgo_t)p->fwd.algo, ws_for(p->fwd), p->fwd.ws, &zero,
                                        p->yd, out->data));
    return true;
}

bool bwd_data_cudnn(sdc_tensor *dx, const sdc_tensor *dy, const sdc_tensor *w, const conv_geom &g) {
    conv_plan *p = plan_for(g, dy->dtype);
    if (!p->usable) return false;
    if (p->bwd_data.state == CHOICE_UNSET) choose_bwd_data(p, w->data, dy->data, dx->data);
    if (p->bwd_data.state != CHOICE_CUDNN) return false;
    const float one = 1.0f, zero = 0.0f;
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->cd, p->bwd_data.math));
    CUDNN_CHECK(cudnnConvolutionBackwardData(sdc_cuda_cudnn(), &one, p->wd, w->data, p->yd, dy->data, p->cd,
                                             (cudnnConvolutionBwdDataAlgo_t)p->bwd_data.algo, ws_for(p->bwd_data),
                                             p->bwd_data.ws, &zero, p->xd, dx->data));
    return true;
}

bool bwd_filter_cudnn(sdc_tensor *dw, const sdc_tensor *dy, const sdc_tensor *x, const conv_geom &g) {
    conv_plan *p = plan_for(g, dy->dtype);
    if (!p->usable) return false;
    size_t nw = (size_t)(g.Co * g.Ci * g.kh * g.kw), esz = sdc_dtype_size(dy->dtype);
    if (p->bwd_filter.state == CHOICE_UNSET) choose_bwd_filter(p, x->data, dy->data, nw * esz);
    if (p->bwd_filter.state != CHOICE_CUDNN) return false;
    const float one = 1.0f, zero = 0.0f;
    bool f32 = dy->dtype == SDC_F32;
    // fp32: cuDNN adds into dw (β = 1); else it writes the scratch filter
    void *dst = f32 ? dw->data : sdc_cuda_workspace(2, nw * esz);
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->cd, p->bwd_filter.math));
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(sdc_cuda_cudnn(), &one, p->xd, x->data, p->yd, dy->data, p->cd,
                                               (cudnnConvolutionBwdFilterAlgo_t)p->bwd_filter.algo,
                                               ws_for(p->bwd_filter), p->bwd_filter.ws, f32 ? &one : &zero, p->wd,
                                               dst));
    if (!f32) {
        SDC_DISPATCH_FLOAT(dy->dtype, T, {
            add_into_f32<T><<<sdc_cuda_blocks(nw, kThreads), kThreads, 0, sdc_cuda_stream()>>>(
                (float *)dw->data, (const T *)dst, nw);
            CUDA_LAUNCH_CHECK();
        });
    }
    return true;
}
#else
bool fwd_cudnn(sdc_tensor *, const sdc_tensor *, const sdc_tensor *, const conv_geom &) { return false; }
bool bwd_data_cudnn(sdc_tensor *, const sdc_tensor *, const sdc_tensor *, const conv_geom &) { return false; }
bool bwd_filter_cudnn(sdc_tensor *, const sdc_tensor *, const sdc_tensor *, const conv_geom &) { return false; }
#endif

} // namespace

extern "C" void sdc_cuda_conv2d(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *w, const sdc_tensor *bias,
                                int stride, int pad) {
    conv_geom g = geom_of(x, w, out, stride, pad);
    SDC_ASSERT(!bias || (bias->dtype == x->dtype && sdc_tensor_numel(bias) == g.Co));
    if (g.B * g.Co * g.Ho * g.Wo == 0) return;
    if (!force_direct() && (fwd_gemm(out, x, w, g) || fwd_cudnn(out, x, w, g))) {
        if (bias) add_bias(out, bias, g);
        return;
    }
    fwd_direct(out, x, w, bias, g);
}

extern "C" void sdc_cuda_conv2d_backward(sdc_tensor *dx, sdc_tensor *dw, sdc_tensor *db, const sdc_tensor *dy,
                                         const sdc_tensor *x, const sdc_tensor *w, int stride, int pad) {
    conv_geom g = geom_of(x, w, dy, stride, pad);
    SDC_ASSERT(!dx || dx->dtype == x->dtype);
    SDC_ASSERT(!dw || (dw->dtype == SDC_F32 && sdc_tensor_numel(dw) == g.Co * g.Ci * g.kh * g.kw));
    SDC_ASSERT(!db || sdc_tensor_numel(db) == g.Co);
    if (db) bias_grad(db, dy, g);
    bool direct = force_direct();
    if (dx && g.B * g.Ci * g.H * g.W > 0) {
        // an empty dy (no output pixels) still has a gradient: zero
        if (g.Ho * g.Wo * g.Co == 0)
            CUDA_CHECK(cudaMemsetAsync(dx->data, 0, (size_t)(g.B * g.Ci * g.H * g.W) * sdc_dtype_size(dx->dtype),
                                       sdc_cuda_stream()));
        else if (direct || !(bwd_data_gemm(dx, dy, w, g) || bwd_data_cudnn(dx, dy, w, g)))
            bwd_data_direct(dx, dy, w, g);
    }
    if (dw && g.B * g.Ho * g.Wo > 0 && g.Co * g.Ci * g.kh * g.kw > 0) {
        if (direct || !(bwd_filter_gemm(dw, dy, x, g) || bwd_filter_cudnn(dw, dy, x, g)))
            bwd_filter_direct(dw, dy, x, g);
    }
}
