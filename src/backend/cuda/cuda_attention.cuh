// Private to the attention family (cuda_attention*.cu): the arguments every
// attention kernel takes, the launchers each file provides, and the
// tensor-core building blocks (ldmatrix, mma.sync m16n8k16, cp.async).
//
// Layout: q [B,Tq,H·D], k and v [B,Tk,H·D]; head h of token t is the D
// columns h·D … h·D+D−1 of row t (row stride H·D). Row statistics of the
// softmax live in base 2: x = scale·log2(e)·(q·k), p = 2^(x − lse2) with
// lse2 = m + log2(Σ 2^(x − m)), so exp2f is the only transcendental.
#ifndef SDC_BACKEND_CUDA_ATTENTION_CUH
#define SDC_BACKEND_CUDA_ATTENTION_CUH

#include "backend/cuda/cuda_common.cuh"

struct attn_args {
    const void *q, *k, *v;   // inputs
    void *out;               // forward: the output
    const void *dout;        // stats pass and backward: dL/dout
    void *dq, *dk, *dv;      // backward outputs (any may be NULL)
    float *lse, *delta;      // [B·H·Tq]: lse2 per row, δ_i = dO_i·O_i
    float *part;             // tc dK/dV split over queries: [2][nsplit][B,Tk,H·D] fp32
    int nsplit;              // ≥ 1
    int B, Tq, Tk, H, D;
    int64_t HD;              // row stride = H·D
    float scale;             // as given
    float scale_log2;        // scale·log2(e)
    int causal;              // key j > query i masked
};

// Row i of batch b, head h, in a [B,T,H·D] tensor: its first element.
__device__ __forceinline__ size_t attn_row(const attn_args &a, int b, int T, int i, int h) {
    return ((size_t)b * T + i) * (size_t)a.HD + (size_t)h * a.D;
}
// Index of row i's statistics.
__device__ __forceinline__ size_t attn_stat(const attn_args &a, int b, int h, int i) {
    return ((size_t)b * a.H + h) * a.Tq + i;
}

// Launchers (host). The dtype is the tensors'; dp is D rounded up to 16
// for the tensor-core kernels. `stats`: instead of writing out, write
// lse and delta (needs dout), the first pass of the backward.
void attn_fwd_generic(const attn_args &a, sdc_dtype dt, bool stats);
void attn_fwd_tc(const attn_args &a, sdc_dtype dt, int dp, bool stats);
void attn_bwd_generic(const attn_args &a, sdc_dtype dt);
void attn_bwd_tc(const attn_args &a, sdc_dtype dt, int dp);
#ifdef SDC_WITH_CUDNN
// The forward through cuDNN's fused SDPA (cuda_attention_cudnn.cu): out, and
// each row's natural log-sum-exp into stats; false when the shape has no plan.
bool attn_cudnn_fwd(const attn_args &a, sdc_dtype dt, float *stats);
#endif
// How many splits attn_bwd_tc will use for dK/dV (part needs 2·nsplit·B·Tk·H·D floats when > 1).
int attn_bwd_tc_nsplit(const attn_args &a, int dp);

// Opt a kernel into more than 48 KiB of dynamic shared memory (once per kernel).
template <typename K> static inline void attn_smem_optin(K kernel, size_t bytes) {
    if (bytes > 48 * 1024) CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

// ---- warp helpers ---------------------------------------------------------

#define ATTN_FULL 0xffffffffu

__device__ __forceinline__ float attn_warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(ATTN_FULL, x, o));
    return x;
}
__device__ __forceinline__ float attn_warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(ATTN_FULL, x, o);
    return x;
}
// 2^x in one MUFU op (rel. error ~2⁻²²; 2^−inf = 0). exp2f adds range
// fix-ups that the softmax does not need: its arguments are ≤ 0 or masked.
__device__ __forceinline__ float attn_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
// Over the 4 lanes of a quad (the lanes that share a row of an mma tile).
__device__ __forceinline__ float attn_quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(ATTN_FULL, x, 1));
    return fmaxf(x, __shfl_xor_sync(ATTN_FULL, x, 2));
}
__device__ __forceinline__ float attn_quad_sum(float x) {
    x += __shfl_xor_sync(ATTN_FULL, x, 1);
    return x + __shfl_xor_sync(ATTN_FULL, x, 2);
}

// ---- tensor-core building blocks (sm_80+) -----------------------------------
//
// mma.sync m16n8k16, lane = 4·g + t (g = lane>>2, t = lane&3):
//   A 16×16 (row-major): a[0] = (g, 2t..2t+1), a[1] = (g+8, 2t..), a[2] = (g, 2t+8..), a[3] = (g+8, 2t+8..)
//   B 16×8 (k × n):      b[0] = (k 2t..2t+1, n g), b[1] = (k 2t+8.., n g)
//   C 16×8 fp32:         c[0..1] = (g, 2t..2t+1), c[2..3] = (g+8, 2t..2t+1)
// Two halves packed in a uint32: the lower index in the low 16 bits.

__device__ __forceinline__ uint32_t attn_smem_addr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

// Four 8×8 b16 matrices; lanes 8m..8m+7 give the row addresses of matrix m.
// Without .trans lane l gets (row l>>2, cols 2(l&3), +1) of each matrix;
// with .trans it gets (rows 2(l&3), +1, col l>>2).
__device__ __forceinline__ void attn_ldsm_x4(uint32_t r[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(attn_smem_addr(p)));
}
__device__ __forceinline__ void attn_ldsm_x2_t(uint32_t r[2], const void *p) { // lanes 0..15 give addresses
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(attn_smem_addr(p)));
}
__device__ __forceinline__ void attn_ldsm_x4_t(uint32_t r[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(attn_smem_addr(p)));
}

// m16n8k8 (the k-tail when D % 16 == 8): A = a[0], a[1] of the k16 layout
// (columns 2t..2t+1 of rows g, g+8), B = b[0].
template <typename T> struct attn_mma;
template <> struct attn_mma<__nv_bfloat16> {
    __device__ __forceinline__ static void run(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    __device__ __forceinline__ static void run_k8(float c[4], const uint32_t a[4], uint32_t b0) {
        asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(b0));
    }
    __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    }
};
template <> struct attn_mma<__half> {
    __device__ __forceinline__ static void run(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    __device__ __forceinline__ static void run_k8(float c[4], const uint32_t a[4], uint32_t b0) {
        asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(b0));
    }
    __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
        __half2 v = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    }
};

// 16-byte asynchronous copy global → shared; n_src = 0 writes zeros
// (rows past the sequence, columns past D) without reading src.
__device__ __forceinline__ void attn_cp16(void *dst, const void *src, int n_src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(attn_smem_addr(dst)), "l"(src), "r"(n_src));
}
__device__ __forceinline__ void attn_cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void attn_cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Copies rows [r0, r0+R) of one head of a [B,T,H·D] tensor into shared
// memory tile[R][DP+8] (T elements; DP = D rounded up to 16), zero-filling
// rows ≥ T and columns D … DP−1. D % 8 == 0, so a 16-byte chunk is either
// all inside D or all outside. The +8 pad makes the row pitch an odd
// number of 16-byte units: ldmatrix's 8 rows hit 8 different bank groups.
template <typename T, int R, int DP, int NTHREADS>
__device__ __forceinline__ void attn_tile_async(T *tile, const T *base, int r0, int T_len, int64_t HD, int D,
                                                int tid) {
    constexpr int CH = DP / 8; // 16-byte chunks per row
    for (int c = tid; c < R * CH; c += NTHREADS) {
        int r = c / CH, col = (c % CH) * 8;
        int row = r0 + r;
        bool in = row < T_len && col < D;
        const T *src = in ? base + (size_t)row * HD + col : base;
        attn_cp16(tile + r * (DP + 8) + col, src, in ? 16 : 0);
    }
}

#endif
