// linear and its backward over cuBLASLt, with fp32 accumulation.
//
// Every product here is one row-major GEMM
//     C[R,Cn] = A(R×P)·B(P×Cn) (+ bias[Cn]) (+ β·C),
// where A and B are stored row-major either as written (A[i,p] at a[i·lda+p])
// or transposed (A[i,p] at a[p·lda+i]). The three uses:
//     forward  out[M,N] = x[M,K]·w[N,K]ᵀ + b   R=M, Cn=N, P=K, A = x, B = wᵀ (w transposed)
//     dx       dx[M,K]  = dy[M,N]·w[N,K]        R=M, Cn=K, P=N, A = dy, B = w
//     dw       dw[N,K] += dy[M,N]ᵀ·x[M,K]       R=N, Cn=K, P=M, A = dyᵀ (dy transposed), B = x, β = 1
// cuBLASLt is column-major; a row-major matrix is the column-major view of
// its transpose, so it computes Cᵀ (Cn×R, ld ldc) = Bᵀ·Aᵀ: its "A" is our B
// and its "B" is our A (see lt_gemm for the layouts). The bias then runs
// along the rows of the column-major D, which is what CUBLASLT_EPILOGUE_BIAS
// broadcasts (bias in D's dtype, the cuBLASLt default).
//
// Descriptors, layouts and the heuristic's algorithm are cached per shape,
// dtypes, transposes, epilogue, β and pointer alignment, so the steady state
// makes no heuristic query. When cuBLASLt has no algorithm (an alignment it
// rejects, say) or the reduction is empty, a simple tiled kernel computes the
// same product: slow, but every shape works.
//
// db[N] += Σ_rows dy is a deterministic two-pass column sum (no atomics).
#include <string.h>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_ops.h"

// Test hook: nonzero routes every product to the fallback kernel, so tests
// can check it on shapes where cuBLASLt would succeed.
extern "C" {
int sdc_cuda_gemm_fallback = 0;
}

#define GEMM_WS_BYTES ((size_t)32 << 20) // cuBLASLt workspace (slot 0)

// ---- one row-major product ---------------------------------------------------

typedef struct mm_args {
    int64_t R, Cn, P;
    const void *a;
    int ta; // A[i,p] at a[p·lda+i] instead of a[i·lda+p]
    int64_t lda;
    const void *b;
    int tb; // B[p,j] at b[j·ldb+p] instead of b[p·ldb+j]
    int64_t ldb;
    void *c;
    int64_t ldc;
    sdc_dtype ab, cd;  // dtype of A and B; of C (and of the bias)
    const void *bias;  // [Cn] in dtype cd, or NULL
    float beta;        // 0 (assign) or 1 (accumulate)
} mm_args;

// ---- fallback: 16×16 output tile per block, one output per thread ------------

#define FB_T 16

// C[i,j] = Σ_p A(i,p)·B(p,j) + bias[j] + β·C[i,j], fp32 accumulation, with
// A(i,p) = a[i·a_si + p·a_sp] and B(p,j) = b[p·b_sp + j·b_sj]. Block (16,16):
// threadIdx.x picks j, threadIdx.y picks i; blockIdx.x the row tile (rows can
// be many), blockIdx.y the column tile.
template <typename TA, typename TC>
__global__ void gemm_fallback_kernel(TC *c, const TA *a, const TA *b, const TC *bias, int64_t R, int64_t Cn,
                                     int64_t P, int64_t a_si, int64_t a_sp, int64_t b_sp, int64_t b_sj, int64_t ldc,
                                     float beta) {
    __shared__ float As[FB_T][FB_T + 1]; // As[i][p]
    __shared__ float Bs[FB_T][FB_T + 1]; // Bs[p][j]
    int tx = threadIdx.x, ty = threadIdx.y;
    int64_t i0 = (int64_t)blockIdx.x * FB_T, j0 = (int64_t)blockIdx.y * FB_T;
    int64_t i = i0 + ty, j = j0 + tx;
    float acc = 0.0f;
    for (int64_t p0 = 0; p0 < P; p0 += FB_T) {
        // thread (tx,ty) loads A(i0+ty, p0+tx) and B(p0+ty, j0+tx)
        int64_t pa = p0 + tx, pb = p0 + ty;
        As[ty][tx] = (i < R && pa < P) ? sdc_ld(a, (size_t)(i * a_si + pa * a_sp)) : 0.0f;
        Bs[ty][tx] = (pb < P && j < Cn) ? sdc_ld(b, (size_t)(pb * b_sp + j * b_sj)) : 0.0f;
        __syncthreads();
#pragma unroll
        for (int q = 0; q < FB_T; q++) acc += As[ty][q] * Bs[q][tx];
        __syncthreads();
    }
    if (i < R && j < Cn) {
        size_t o = (size_t)(i * ldc + j);
        float v = acc;
        if (bias) v += sdc_ld(bias, (size_t)j);
        if (beta != 0.0f) v += beta * sdc_ld((const TC *)c, o);
        sdc_st(c, o, v);
    }
}

template <typename TA, typename TC> static void fallback_typed(const mm_args *g) {
    int64_t a_si = g->ta ? 1 : g->lda, a_sp = g->ta ? g->lda : 1;
    int64_t b_sp = g->tb ? 1 : g->ldb, b_sj = g->tb ? g->ldb : 1;
    dim3 block(FB_T, FB_T);
    int64_t gy = (g->Cn + FB_T - 1) / FB_T;
    if (gy > 65535) sdc_cuda_fatal("gemm fallback", "too many output columns", __FILE__, __LINE__);
    dim3 grid((unsigned)((g->R + FB_T - 1) / FB_T), (unsigned)gy);
    gemm_fallback_kernel<TA, TC><<<grid, block, 0, sdc_cuda_stream()>>>(
        (TC *)g->c, (const TA *)g->a, (const TA *)g->b, (const TC *)g->bias, g->R, g->Cn, g->P, a_si, a_sp, b_sp,
        b_sj, g->ldc, g->beta);
    CUDA_LAUNCH_CHECK();
}

static void gemm_fallback(const mm_args *g) {
    if (g->cd == SDC_F32 && g->ab != SDC_F32) { // dw: low-precision inputs, fp32 gradient
        SDC_DISPATCH_FLOAT(g->ab, TA, fallback_typed<TA, float>(g));
    } else if (g->cd == g->ab) {
        SDC_DISPATCH_FLOAT(g->ab, T, fallback_typed<T, T>(g));
    } else {
        sdc_cuda_fatal("gemm fallback", "unsupported dtype pair", __FILE__, __LINE__);
    }
}

// ---- cuBLASLt plans, cached per shape ------------------------------------------

typedef struct plan_key {
    int64_t m, n, k, lda, ldb, ldc;
    int32_t ab, cd, compute, transa, transb, epilogue, beta_one;
    uint32_t align_a, align_b, align_c, align_bias;
} plan_key;

typedef struct plan {
    plan_key key;
    int used;
    int usable; // 0: cuBLASLt found no algorithm, use the fallback
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} plan;

#define PLAN_SLOTS 512 // a UNet has some tens of linear shapes, each in three roles
static plan g_plans[PLAN_SLOTS];

static cudaDataType_t lt_type(sdc_dtype d) {
    switch (d) {
    case SDC_F32: return CUDA_R_32F;
    case SDC_BF16: return CUDA_R_16BF;
    case SDC_F16: return CUDA_R_16F;
    default: sdc_cuda_fatal("cuBLASLt dtype", "not F32/BF16/F16", __FILE__, __LINE__);
    }
}

// Largest power of two dividing the address, capped at 16 bytes (what
// cuBLASLt's vectorized and TMA paths need), so the key stays stable across
// arena offsets.
static uint32_t ptr_align(const void *p) {
    uintptr_t u = (uintptr_t)p;
    uint32_t a = 1;
    while (a < 16 && !(u & a)) a <<= 1;
    return a;
}

static uint64_t key_hash(const plan_key *k) {
    const unsigned char *p = (const unsigned char *)k;
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (size_t i = 0; i < sizeof *k; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void plan_destroy(plan *p) {
    if (!p->used) return;
    cublasLtMatrixLayoutDestroy(p->la);
    cublasLtMatrixLayoutDestroy(p->lb);
    cublasLtMatrixLayoutDestroy(p->lc);
    cublasLtMatmulDescDestroy(p->op);
    memset(p, 0, sizeof *p);
}

static void plan_build(plan *p, const plan_key *k, const void *bias) {
    memset(p, 0, sizeof *p);
    p->key = *k;
    p->used = 1;
    cublasOperation_t ta = (cublasOperation_t)k->transa, tb = (cublasOperation_t)k->transb;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, (cublasComputeType_t)k->compute, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    cublasLtEpilogue_t epi = (cublasLtEpilogue_t)k->epilogue;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    if (bias) // the heuristic reads the pointer's alignment
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    // stored shapes: op(A) is m×k, op(B) is k×n, C and D are m×n
    uint64_t ar = ta == CUBLAS_OP_N ? k->m : k->k, ac = ta == CUBLAS_OP_N ? k->k : k->m;
    uint64_t br = tb == CUBLAS_OP_N ? k->k : k->n, bc = tb == CUBLAS_OP_N ? k->n : k->k;
    cudaDataType_t tab = (cudaDataType_t)k->ab, tcd = (cudaDataType_t)k->cd;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->la, tab, ar, ac, k->lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lb, tab, br, bc, k->ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lc, tcd, (uint64_t)k->m, (uint64_t)k->n, k->ldc));

    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = GEMM_WS_BYTES;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &k->align_a,
                                                      sizeof k->align_a));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &k->align_b,
                                                      sizeof k->align_b));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &k->align_c,
                                                      sizeof k->align_c));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &k->align_c,
                                                      sizeof k->align_c));
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    // NOT_SUPPORTED (or no result) is not an error: the fallback takes it
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(sdc_cuda_cublaslt(), p->op, p->la, p->lb, p->lc, p->lc, pref,
                                                      1, &res, &found);
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    if (s == CUBLAS_STATUS_SUCCESS && found > 0 && res.state == CUBLAS_STATUS_SUCCESS &&
        res.workspaceSize <= GEMM_WS_BYTES) {
        p->algo = res.algo;
        p->usable = 1;
    }
}

// The cached plan for key k, built (one heuristic query) on first use.
static plan *plan_get(const plan_key *k, const void *bias) {
    size_t h = (size_t)(key_hash(k) % PLAN_SLOTS);
    for (size_t probe = 0; probe < PLAN_SLOTS; probe++) {
        plan *p = &g_plans[(h + probe) % PLAN_SLOTS];
        if (!p->used) {
            plan_build(p, k, bias);
            return p;
        }
        if (memcmp(&p->key, k, sizeof *k) == 0) return p;
    }
    // table full (many more shapes than a model has): replace the home slot
    plan_destroy(&g_plans[h]);
    plan_build(&g_plans[h], k, bias);
    return &g_plans[h];
}

// Runs the product through cuBLASLt; returns 0 when it has no algorithm.
static int lt_gemm(const mm_args *g) {
    plan_key k;
    memset(&k, 0, sizeof k); // the key is hashed and compared as bytes
    // column-major D = Cᵀ (Cn×R) = opA(Bᵀ) · opB(Aᵀ), see the top of the file:
    //   B stored P×Cn row-major is the col-major Cn×P Bᵀ: transa N, ld ldb;
    //   B stored transposed (Cn×P row-major) is col-major P×Cn: transa T.
    //   A stored R×P row-major is the col-major P×R Aᵀ: transb N, ld lda;
    //   A stored transposed (P×R row-major) is col-major R×P: transb T.
    k.m = g->Cn, k.n = g->R, k.k = g->P;
    k.lda = g->ldb, k.ldb = g->lda, k.ldc = g->ldc;
    k.transa = g->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    k.transb = g->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    k.ab = lt_type(g->ab), k.cd = lt_type(g->cd);
    k.compute = (g->ab == SDC_F32 && sdc_cuda_allow_tf32) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    k.epilogue = g->bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    k.beta_one = g->beta != 0.0f;
    k.align_a = ptr_align(g->b), k.align_b = ptr_align(g->a), k.align_c = ptr_align(g->c);
    k.align_bias = g->bias ? ptr_align(g->bias) : 0;
    plan *p = plan_get(&k, g->bias);
    if (!p->usable) return 0;
    if (g->bias)
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g->bias,
                                                    sizeof g->bias));
    float alpha = 1.0f, beta = g->beta;
    void *ws = sdc_cuda_workspace(0, GEMM_WS_BYTES);
    CUBLAS_CHECK(cublasLtMatmul(sdc_cuda_cublaslt(), p->op, &alpha, g->b, p->la, g->a, p->lb, &beta, g->c, p->lc,
                                g->c, p->lc, &p->algo, ws, GEMM_WS_BYTES, sdc_cuda_stream()));
    return 1;
}

static void gemm(const mm_args *g) {
    if (g->R == 0 || g->Cn == 0) return;
    // an empty reduction (P = 0) still writes bias/β·C: the fallback does that
    if (g->P > 0 && !sdc_cuda_gemm_fallback && lt_gemm(g)) return;
    gemm_fallback(g);
}

// ---- db[N] += Σ_m dy[m,N], deterministic ---------------------------------------

#define CS_LANES 32 // threads across columns (one warp: a coalesced row segment)
#define CS_ROWS 8   // row lanes per block

// V consecutive elements of p as floats: one 16-byte load when V > 1 (the
// caller checks the alignment), else one element.
template <typename T, int V> __device__ __forceinline__ void load_vec(float *v, const T *p) {
    if constexpr (V == 1) {
        v[0] = sdc_ld(p, 0);
    } else {
        static_assert(V * sizeof(T) == 16, "one 16-byte load");
        uint4 u = *reinterpret_cast<const uint4 *>(p);
        const T *e = reinterpret_cast<const T *>(&u);
#pragma unroll
        for (int j = 0; j < V; j++) v[j] = sdc_ld(e, j);
    }
}

// Pass 1: block (32, 8) covers 32·V columns of rows [chunk·rows_per, +rows_per);
// thread (x, y) sums columns n0..n0+V−1 (n0 = (block·32 + x)·V) over rows
// r0+y, r0+y+8, ...; then the 8 row lanes are added in order and written to
// partial[chunk·N + n]. Each column's order of additions is the same for
// any V, so the result does not depend on dy's alignment.
template <typename T, int V>
__global__ void col_sum_partial_kernel(float *partial, const T *dy, int64_t M, int64_t N, int64_t rows_per) {
    __shared__ float s[CS_ROWS][CS_LANES * V];
    int tx = threadIdx.x, ty = threadIdx.y;
    int64_t c0 = (int64_t)blockIdx.x * CS_LANES * V, n0 = c0 + (int64_t)tx * V;
    int64_t r0 = (int64_t)blockIdx.y * rows_per, r1 = r0 + rows_per < M ? r0 + rows_per : M;
    float acc[V];
#pragma unroll
    for (int j = 0; j < V; j++) acc[j] = 0.0f;
    if (n0 < N) { // V > 1 only when N % V == 0, so then n0 + V ≤ N
#pragma unroll 4
        for (int64_t m = r0 + ty; m < r1; m += CS_ROWS) {
            float v[V];
            load_vec<T, V>(v, dy + (size_t)(m * N + n0));
#pragma unroll
            for (int j = 0; j < V; j++) acc[j] += v[j];
        }
    }
#pragma unroll
    for (int j = 0; j < V; j++) s[ty][tx * V + j] = acc[j];
    __syncthreads();
    for (int c = ty * CS_LANES + tx; c < CS_LANES * V; c += CS_LANES * CS_ROWS) {
        int64_t n = c0 + c;
        if (n >= N) break;
        float t = 0.0f;
        for (int y = 0; y < CS_ROWS; y++) t += s[y][c];
        partial[(size_t)blockIdx.y * N + n] = t;
    }
}

// Pass 2: block (32, 8) per 32 columns; row lane y adds chunks y, y+8, ...
// in order, then the 8 lanes are added in order: db[n] += that.
__global__ void col_sum_final_kernel(float *db, const float *partial, int64_t chunks, int64_t N) {
    __shared__ float s[CS_ROWS][CS_LANES + 1];
    int tx = threadIdx.x, ty = threadIdx.y;
    int64_t n = (int64_t)blockIdx.x * CS_LANES + tx;
    float acc = 0.0f;
    if (n < N) {
#pragma unroll 4
        for (int64_t c = ty; c < chunks; c += CS_ROWS) acc += partial[(size_t)(c * N + n)];
    }
    s[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && n < N) {
        float t = 0.0f;
        for (int y = 0; y < CS_ROWS; y++) t += s[y][tx];
        db[n] += t;
    }
}

template <typename T> static void col_sum_partial(float *partial, const T *dy, int64_t M, int64_t N, int64_t rows_per,
                                                  int64_t chunks) {
    constexpr int V = 16 / sizeof(T);
    dim3 block(CS_LANES, CS_ROWS);
    if ((N * (int64_t)sizeof(T)) % 16 == 0 && (uintptr_t)dy % 16 == 0) { // every row starts 16-byte aligned
        dim3 grid((unsigned)((N + CS_LANES * V - 1) / (CS_LANES * V)), (unsigned)chunks);
        col_sum_partial_kernel<T, V><<<grid, block, 0, sdc_cuda_stream()>>>(partial, dy, M, N, rows_per);
    } else {
        dim3 grid((unsigned)((N + CS_LANES - 1) / CS_LANES), (unsigned)chunks);
        col_sum_partial_kernel<T, 1><<<grid, block, 0, sdc_cuda_stream()>>>(partial, dy, M, N, rows_per);
    }
    CUDA_LAUNCH_CHECK();
}

static void bias_grad(float *db, const void *dy, sdc_dtype dt, int64_t M, int64_t N) {
    if (N == 0 || M == 0) return;
    // Row chunks: about 1056 blocks (8 per SM on 132 SMs) counting 256
    // columns a block, at least 32 rows a chunk. From M and N alone (not the
    // vector width), so the summation order is fixed by the shape.
    int64_t colblocks = (N + 255) / 256, chunks = (1056 + colblocks - 1) / colblocks;
    if (chunks > (M + 31) / 32) chunks = (M + 31) / 32;
    if (chunks < 1) chunks = 1;
    int64_t rows_per = (M + chunks - 1) / chunks;
    chunks = (M + rows_per - 1) / rows_per; // no empty chunk
    // partials live after the cuBLASLt workspace in slot 0 (stream order
    // keeps the two uses apart)
    char *ws = (char *)sdc_cuda_workspace(0, GEMM_WS_BYTES + (size_t)(chunks * N) * sizeof(float));
    float *partial = (float *)(ws + GEMM_WS_BYTES);
    SDC_DISPATCH_FLOAT(dt, T, col_sum_partial<T>(partial, (const T *)dy, M, N, rows_per, chunks));
    col_sum_final_kernel<<<(unsigned)((N + CS_LANES - 1) / CS_LANES), dim3(CS_LANES, CS_ROWS), 0, sdc_cuda_stream()>>>(
        db, partial, chunks, N);
    CUDA_LAUNCH_CHECK();
}

// ---- the ops ----------------------------------------------------------------------

extern "C" void sdc_cuda_linear(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *w, const sdc_tensor *bias,
                                int64_t M, int64_t K, int64_t N) {
    // out[M,N] = x[M,K]·w[N,K]ᵀ + bias: A = x (R×P = M×K), B(p,j) = w[j,p] (w transposed)
    mm_args g = {.R = M, .Cn = N, .P = K, .a = x->data, .ta = 0, .lda = K, .b = w->data, .tb = 1, .ldb = K,
                 .c = out->data, .ldc = N, .ab = x->dtype, .cd = out->dtype, .bias = bias ? bias->data : NULL,
                 .beta = 0.0f};
    gemm(&g);
}

extern "C" void sdc_cuda_linear_backward(sdc_tensor *dx, sdc_tensor *dw, sdc_tensor *db, const sdc_tensor *dy,
                                         const sdc_tensor *x, const sdc_tensor *w, int64_t M, int64_t K, int64_t N) {
    if (dx) { // dx[M,K] = dy[M,N]·w[N,K]
        mm_args g = {.R = M, .Cn = K, .P = N, .a = dy->data, .ta = 0, .lda = N, .b = w->data, .tb = 0, .ldb = K,
                     .c = dx->data, .ldc = K, .ab = dy->dtype, .cd = dx->dtype, .bias = NULL, .beta = 0.0f};
        gemm(&g);
    }
    if (dw) { // dw[N,K] += dyᵀ·x: A(i,p) = dy[p,i] (dy transposed, ld N), B = x[M,K]
        mm_args g = {.R = N, .Cn = K, .P = M, .a = dy->data, .ta = 1, .lda = N, .b = x->data, .tb = 0, .ldb = K,
                     .c = dw->data, .ldc = K, .ab = dy->dtype, .cd = SDC_F32, .bias = NULL, .beta = 1.0f};
        gemm(&g);
    }
    if (db) bias_grad((float *)db->data, dy->data, dy->dtype, M, N);
}
