// Attention backward after the statistics pass (lse2 and δ per query row,
// see cuda_attention.cu): dK/dV with one owner per key tile and dQ with one
// owner per query tile, so every output element is summed by one thread in
// a fixed order (deterministic, no atomics). Generic (CUDA cores, any dtype,
// D ≤ 256) and tensor-core (BF16/F16, D % 8 == 0, D ≤ 160) kernels.
// Per (query i, key j), x = scale·log2(e)·q_i·k_j:
//   p = 2^(x − lse2_i),  dp = dO_i·v_j,  ds = p·(dp − δ_i)
//   dV_j += p·dO_i,  dK_j += scale·ds·q_i,  dQ_i += scale·ds·k_j
#include "backend/cuda/cuda_attention.cuh"

namespace {

// ---- generic ------------------------------------------------------------------
//
// Both kernels: 4 warps × 4 owned rows (G_RW) = 16 rows a block; the other
// side streams through shared memory in tiles of 32, lane j taking row j of
// the tile for the dot products and lane d owning columns d + 32·t for the
// accumulation (the tile's per-lane values broadcast by shuffle).
constexpr int G_THREADS = 128, G_RW = 4, G_B16 = 16, G_T = 32;

__host__ __device__ constexpr size_t g_bwd_smem_floats(int D) {
    return 2 * (size_t)G_B16 * D + 2 * (size_t)G_T * (D | 1) + 2 * G_T;
}

// dQ: a block owns 16 query rows; key tiles stream.
template <typename T, int NT>
__global__ void __launch_bounds__(G_THREADS) dq_generic_kernel(attn_args a) {
    extern __shared__ float gsm[];
    const int D = a.D, KS = D | 1;
    float *qs = gsm;             // [16][D] own query rows
    float *gs = qs + G_B16 * D;  // [16][D] their dO
    float *ks = gs + G_B16 * D;  // [32][KS]
    float *vs = ks + G_T * KS;   // [32][KS]
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int i0 = blockIdx.x * G_B16, h = blockIdx.y, b = blockIdx.z;
    const T *q = (const T *)a.q + attn_row(a, b, a.Tq, 0, h);
    const T *go = (const T *)a.dout + attn_row(a, b, a.Tq, 0, h);
    const T *k = (const T *)a.k + attn_row(a, b, a.Tk, 0, h);
    const T *v = (const T *)a.v + attn_row(a, b, a.Tk, 0, h);
    for (int e = tid; e < G_B16 * D; e += G_THREADS) {
        int r = e / D, d = e - r * D;
        bool in = i0 + r < a.Tq;
        size_t o = (size_t)(i0 + r) * a.HD + d;
        qs[e] = in ? sdc_ld(q, o) : 0.0f;
        gs[e] = in ? sdc_ld(go, o) : 0.0f;
    }
    float lse[G_RW], dl[G_RW], acc[G_RW][NT];
#pragma unroll
    for (int r = 0; r < G_RW; r++) {
        const int i = i0 + warp * G_RW + r;
        lse[r] = i < a.Tq ? a.lse[attn_stat(a, b, h, i)] : 0.0f;
        dl[r] = i < a.Tq ? a.delta[attn_stat(a, b, h, i)] : 0.0f;
#pragma unroll
        for (int t = 0; t < NT; t++) acc[r][t] = 0.0f;
    }
    const float *qw = qs + warp * G_RW * D, *gw = gs + warp * G_RW * D;
    const int kend = a.causal ? min(a.Tk, i0 + G_B16) : a.Tk;
    for (int j0 = 0; j0 < kend; j0 += G_T) {
        __syncthreads();
        for (int e = tid; e < G_T * D; e += G_THREADS) {
            int r = e / D, d = e - r * D, j = j0 + r;
            float kv = 0.0f, vv = 0.0f;
            if (j < a.Tk) {
                size_t o = (size_t)j * a.HD + d;
                kv = sdc_ld(k, o), vv = sdc_ld(v, o);
            }
            ks[r * KS + d] = kv, vs[r * KS + d] = vv;
        }
        __syncthreads();
        float s[G_RW], dp[G_RW];
#pragma unroll
        for (int r = 0; r < G_RW; r++) s[r] = dp[r] = 0.0f;
        const float *kr = ks + lane * KS, *vr = vs + lane * KS;
#pragma unroll 4
        for (int d = 0; d < D; d++) {
            const float kd = kr[d], vd = vr[d];
#pragma unroll
            for (int r = 0; r < G_RW; r++) s[r] = fmaf(qw[r * D + d], kd, s[r]), dp[r] = fmaf(gw[r * D + d], vd, dp[r]);
        }
        const int j = j0 + lane;
        float ds[G_RW];
#pragma unroll
        for (int r = 0; r < G_RW; r++) {
            const int i = i0 + warp * G_RW + r;
            const bool ok = i < a.Tq && j < a.Tk && !(a.causal && j > i);
            const float p = ok ? exp2f(s[r] * a.scale_log2 - lse[r]) : 0.0f;
            ds[r] = p * (dp[r] - dl[r]);
        }
        const int jn = min(G_T, kend - j0);
        for (int jj = 0; jj < jn; jj++) {
            float dsj[G_RW];
#pragma unroll
            for (int r = 0; r < G_RW; r++) dsj[r] = __shfl_sync(ATTN_FULL, ds[r], jj);
#pragma unroll
            for (int t = 0; t < NT; t++) {
                const int d = lane + 32 * t;
                if (d < D) {
                    const float kv = ks[jj * KS + d];
#pragma unroll
                    for (int r = 0; r < G_RW; r++) acc[r][t] = fmaf(dsj[r], kv, acc[r][t]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < G_RW; r++) {
        const int i = i0 + warp * G_RW + r;
        if (i >= a.Tq) continue;
        const size_t row = attn_row(a, b, a.Tq, i, h);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const int d = lane + 32 * t;
            if (d < D) sdc_st((T *)a.dq, row + d, acc[r][t] * a.scale);
        }
    }
}

// dK, dV: a block owns 16 key rows; the query tiles that see them stream.
template <typename T, int NT>
__global__ void __launch_bounds__(G_THREADS) dkdv_generic_kernel(attn_args a) {
    extern __shared__ float gsm[];
    const int D = a.D, KS = D | 1;
    float *kb = gsm;                // [16][D] own key rows
    float *vb = kb + G_B16 * D;     // [16][D]
    float *qt = vb + G_B16 * D;     // [32][KS] query tile
    float *gt = qt + G_T * KS;      // [32][KS] its dO
    float *lt = gt + G_T * KS;      // [32] its lse2
    float *dt = lt + G_T;           // [32] its δ
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int jb = blockIdx.x * G_B16, h = blockIdx.y, b = blockIdx.z;
    const T *q = (const T *)a.q + attn_row(a, b, a.Tq, 0, h);
    const T *go = (const T *)a.dout + attn_row(a, b, a.Tq, 0, h);
    const T *k = (const T *)a.k + attn_row(a, b, a.Tk, 0, h);
    const T *v = (const T *)a.v + attn_row(a, b, a.Tk, 0, h);
    for (int e = tid; e < G_B16 * D; e += G_THREADS) {
        int r = e / D, d = e - r * D;
        bool in = jb + r < a.Tk;
        size_t o = (size_t)(jb + r) * a.HD + d;
        kb[e] = in ? sdc_ld(k, o) : 0.0f;
        vb[e] = in ? sdc_ld(v, o) : 0.0f;
    }
    float ak[G_RW][NT], av[G_RW][NT];
#pragma unroll
    for (int r = 0; r < G_RW; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) ak[r][t] = av[r][t] = 0.0f;
    const float *kw = kb + warp * G_RW * D, *vw = vb + warp * G_RW * D;
    // causal: key j is seen by queries i ≥ j only
    const int istart = a.causal ? jb : 0;
    for (int i0 = istart; i0 < a.Tq; i0 += G_T) {
        __syncthreads();
        for (int e = tid; e < G_T * D; e += G_THREADS) {
            int r = e / D, d = e - r * D, i = i0 + r;
            float qv = 0.0f, gv = 0.0f;
            if (i < a.Tq) {
                size_t o = (size_t)i * a.HD + d;
                qv = sdc_ld(q, o), gv = sdc_ld(go, o);
            }
            qt[r * KS + d] = qv, gt[r * KS + d] = gv;
        }
        if (tid < G_T) {
            const int i = i0 + tid;
            lt[tid] = i < a.Tq ? a.lse[attn_stat(a, b, h, i)] : 0.0f;
            dt[tid] = i < a.Tq ? a.delta[attn_stat(a, b, h, i)] : 0.0f;
        }
        __syncthreads();
        float s[G_RW], dp[G_RW];
#pragma unroll
        for (int r = 0; r < G_RW; r++) s[r] = dp[r] = 0.0f;
        const float *qr = qt + lane * KS, *gr = gt + lane * KS;
#pragma unroll 4
        for (int d = 0; d < D; d++) {
            const float qd = qr[d], gd = gr[d];
#pragma unroll
            for (int r = 0; r < G_RW; r++) s[r] = fmaf(kw[r * D + d], qd, s[r]), dp[r] = fmaf(vw[r * D + d], gd, dp[r]);
        }
        const int i = i0 + lane;
        float p[G_RW], ds[G_RW];
#pragma unroll
        for (int r = 0; r < G_RW; r++) {
            const int j = jb + warp * G_RW + r;
            const bool ok = i < a.Tq && j < a.Tk && !(a.causal && j > i);
            p[r] = ok ? exp2f(s[r] * a.scale_log2 - lt[lane]) : 0.0f;
            ds[r] = p[r] * (dp[r] - dt[lane]);
        }
        const int in = min(G_T, a.Tq - i0);
        for (int ii = 0; ii < in; ii++) {
            float pi[G_RW], dsi[G_RW];
#pragma unroll
            for (int r = 0; r < G_RW; r++) pi[r] = __shfl_sync(ATTN_FULL, p[r], ii), dsi[r] = __shfl_sync(ATTN_FULL, ds[r], ii);
#pragma unroll
            for (int t = 0; t < NT; t++) {
                const int d = lane + 32 * t;
                if (d < D) {
                    const float qv = qt[ii * KS + d], gv = gt[ii * KS + d];
#pragma unroll
                    for (int r = 0; r < G_RW; r++) av[r][t] = fmaf(pi[r], gv, av[r][t]), ak[r][t] = fmaf(dsi[r], qv, ak[r][t]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < G_RW; r++) {
        const int j = jb + warp * G_RW + r;
        if (j >= a.Tk) continue;
        const size_t row = attn_row(a, b, a.Tk, j, h);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const int d = lane + 32 * t;
            if (d >= D) continue;
            if (a.dv) sdc_st((T *)a.dv, row + d, av[r][t]);
            if (a.dk) sdc_st((T *)a.dk, row + d, ak[r][t] * a.scale);
        }
    }
}

template <typename K> void g_launch(K kern, size_t smem, size_t *optin, int rows, const attn_args &a) {
    if (smem > *optin) {
        attn_smem_optin(kern, smem);
        *optin = smem;
    }
    dim3 grid((unsigned)((rows + G_B16 - 1) / G_B16), (unsigned)a.H, (unsigned)a.B);
    kern<<<grid, G_THREADS, smem, sdc_cuda_stream()>>>(a);
    CUDA_LAUNCH_CHECK();
}

template <typename T, int NT> void bwd_generic_launch(const attn_args &a) {
    const size_t smem = g_bwd_smem_floats(a.D) * sizeof(float);
    static size_t optin_dq = 48 * 1024, optin_dkdv = 48 * 1024;
    if (a.dk || a.dv) g_launch(dkdv_generic_kernel<T, NT>, smem, &optin_dkdv, a.Tk, a);
    if (a.dq) g_launch(dq_generic_kernel<T, NT>, smem, &optin_dq, a.Tq, a);
}

template <typename T> void bwd_generic_nt(const attn_args &a) {
    switch ((a.D + 31) / 32) {
    case 1: bwd_generic_launch<T, 1>(a); break;
    case 2: bwd_generic_launch<T, 2>(a); break;
    case 3: bwd_generic_launch<T, 3>(a); break;
    case 4: bwd_generic_launch<T, 4>(a); break;
    case 5: bwd_generic_launch<T, 5>(a); break;
    case 6: bwd_generic_launch<T, 6>(a); break;
    case 7: bwd_generic_launch<T, 7>(a); break;
    case 8: bwd_generic_launch<T, 8>(a); break;
    default: sdc_cuda_fatal("attention", "head_dim > 256", __FILE__, __LINE__);
    }
}

// ---- tensor cores -------------------------------------------------------------
//
// Fragment layouts and ldmatrix offsets as in cuda_attention.cuh. A block is
// 4 warps, each owning 16 rows (an m16 tile); the streamed side is
// double-buffered with cp.async. Owned rows' fragments are re-read from
// shared memory by ldmatrix at each k-step rather than held in registers
// (two D-wide accumulators already take D registers a thread in dK/dV).
// When D % 16 == 8 the zero half of the last 16 columns is skipped (an
// m16n8k8 step over d, one n8 tile fewer over d).
constexpr int TC_THREADS = 128, TC_OWN = 64;

// Streamed tile: registers for S and dP (BS/2 floats a thread each) beside
// the two D-wide accumulators. On an H200, D = 80 ran 14% faster with 64
// than with 32; D = 128 with 64 spills.
__host__ __device__ constexpr int tc_bwd_bs(int dp) { return dp <= 80 ? 64 : dp <= 128 ? 32 : 16; }

template <int DP> struct tc_bwd_cfg {
    static constexpr int P = DP + 8;
    static constexpr int BS = tc_bwd_bs(DP);
    static constexpr size_t smem_dq = (size_t)(2 * TC_OWN + 4 * BS) * P * 2;
    static constexpr size_t smem_dkdv = (size_t)(2 * TC_OWN + 4 * BS) * P * 2 + 4 * BS * sizeof(float);
};

// acc (16 own rows × BN streamed rows) += own[16×D] · str[BN×D]ᵀ, over k = d.
// own and str are shared-memory tiles of pitch DP+8.
template <typename T, int DP, int BN>
__device__ __forceinline__ void tc_dot_rows(float (&acc)[BN / 8][4], const T *own, const T *str, int lane, bool odd8) {
    constexpr int P = DP + 8;
    const int a_row = (lane & 7) + ((lane >> 3) & 1) * 8, a_col = ((lane >> 4) & 1) * 8;
    const int b_row = (lane & 7) + ((lane >> 4) & 1) * 8, b_col = ((lane >> 3) & 1) * 8;
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++) {
        uint32_t af[4];
        attn_ldsm_x4(af, own + a_row * P + kk * 16 + a_col);
#pragma unroll
        for (int n2 = 0; n2 < BN / 16; n2++) {
            uint32_t r[4];
            attn_ldsm_x4(r, str + (n2 * 16 + b_row) * P + kk * 16 + b_col);
            if (kk == DP / 16 - 1 && odd8) {
                attn_mma<T>::run_k8(acc[2 * n2], af, r[0]);
                attn_mma<T>::run_k8(acc[2 * n2 + 1], af, r[2]);
            } else {
                attn_mma<T>::run(acc[2 * n2], af, r[0], r[1]);
                attn_mma<T>::run(acc[2 * n2 + 1], af, r[2], r[3]);
            }
        }
    }
}

// acc (16 own rows × D) += X · str, over k = the BN streamed rows: X is a
// 16×BN accumulator tile in registers, re-packed as the A operand (the C
// layout of n8 tiles 2c, 2c+1 is the A layout of k16 step c); str[BN×D]
// is read transposed by ldmatrix.trans.
template <typename T, int DP, int BN>
__device__ __forceinline__ void tc_acc_cols(float (&acc)[DP / 8][4], const float (&x)[BN / 8][4], const T *str,
                                            int lane, bool odd8) {
    constexpr int P = DP + 8;
    using mma = attn_mma<T>;
    const int t_row = (lane & 7) + ((lane >> 3) & 1) * 8, t_col = ((lane >> 4) & 1) * 8;
#pragma unroll
    for (int kc = 0; kc < BN / 16; kc++) {
        const uint32_t xa[4] = {mma::pack(x[2 * kc][0], x[2 * kc][1]), mma::pack(x[2 * kc][2], x[2 * kc][3]),
                                mma::pack(x[2 * kc + 1][0], x[2 * kc + 1][1]),
                                mma::pack(x[2 * kc + 1][2], x[2 * kc + 1][3])};
#pragma unroll
        for (int n2 = 0; n2 < DP / 16; n2++) {
            uint32_t r[4];
            if (n2 == DP / 16 - 1 && odd8) {
                attn_ldsm_x2_t(r, str + (kc * 16 + t_row) * P + n2 * 16 + t_col);
                mma::run(acc[2 * n2], xa, r[0], r[1]);
            } else {
                attn_ldsm_x4_t(r, str + (kc * 16 + t_row) * P + n2 * 16 + t_col);
                mma::run(acc[2 * n2], xa, r[0], r[1]);
                mma::run(acc[2 * n2 + 1], xa, r[2], r[3]);
            }
        }
    }
}

// dQ: the block owns 64 query rows; key tiles stream. Per warp and tile:
//   S = Q·Kᵀ, dP = dO·Vᵀ, P = 2^(c·S − lse2), dS = P ∘ (dP − δ), dQ += dS·K.
template <typename T, int DP>
__global__ void __launch_bounds__(TC_THREADS) dq_tc_kernel(attn_args a) {
    constexpr int P = tc_bwd_cfg<DP>::P, BK = tc_bwd_cfg<DP>::BS;
    using mma = attn_mma<T>;
    extern __shared__ __align__(16) unsigned char tsm[];
    T *qs = (T *)tsm;          // [64][P]
    T *gs = qs + TC_OWN * P;   // [64][P] dO
    T *ks = gs + TC_OWN * P;   // [2][BK][P]
    T *vs = ks + 2 * BK * P;   // [2][BK][P]
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int i0 = blockIdx.x * TC_OWN, h = blockIdx.y, b = blockIdx.z;
    const T *qg = (const T *)a.q + attn_row(a, b, a.Tq, 0, h);
    const T *gg = (const T *)a.dout + attn_row(a, b, a.Tq, 0, h);
    const T *kg = (const T *)a.k + attn_row(a, b, a.Tk, 0, h);
    const T *vg = (const T *)a.v + attn_row(a, b, a.Tk, 0, h);
    const int kend = a.causal ? min(a.Tk, i0 + TC_OWN) : a.Tk;
    const int ntiles = (kend + BK - 1) / BK;
    attn_tile_async<T, TC_OWN, DP, TC_THREADS>(qs, qg, i0, a.Tq, a.HD, a.D, tid);
    attn_tile_async<T, TC_OWN, DP, TC_THREADS>(gs, gg, i0, a.Tq, a.HD, a.D, tid);
    attn_tile_async<T, BK, DP, TC_THREADS>(ks, kg, 0, a.Tk, a.HD, a.D, tid);
    attn_tile_async<T, BK, DP, TC_THREADS>(vs, vg, 0, a.Tk, a.HD, a.D, tid);
    attn_cp_commit();

    const bool odd8 = a.D % 16 == 8;
    const float c = a.scale_log2;
    const int wrow = i0 + warp * 16, row0 = wrow + g, row1 = row0 + 8;
    const float nl0 = row0 < a.Tq ? -a.lse[attn_stat(a, b, h, row0)] : 0.0f;
    const float nl1 = row1 < a.Tq ? -a.lse[attn_stat(a, b, h, row1)] : 0.0f;
    const float dl0 = row0 < a.Tq ? a.delta[attn_stat(a, b, h, row0)] : 0.0f;
    const float dl1 = row1 < a.Tq ? a.delta[attn_stat(a, b, h, row1)] : 0.0f;
    float acc[DP / 8][4];
#pragma unroll
    for (int n = 0; n < DP / 8; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;

    for (int it = 0; it < ntiles; it++) {
        const int j0 = it * BK, buf = it & 1;
        if (it + 1 < ntiles) {
            attn_tile_async<T, BK, DP, TC_THREADS>(ks + (buf ^ 1) * BK * P, kg, j0 + BK, a.Tk, a.HD, a.D, tid);
            attn_tile_async<T, BK, DP, TC_THREADS>(vs + (buf ^ 1) * BK * P, vg, j0 + BK, a.Tk, a.HD, a.D, tid);
            attn_cp_commit();
            attn_cp_wait<1>();
        } else {
            attn_cp_wait<0>();
        }
        __syncthreads();
        const T *kt = ks + buf * BK * P, *vt = vs + buf * BK * P;
        float s[BK / 8][4], dp[BK / 8][4];
#pragma unroll
        for (int n = 0; n < BK / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[n][e] = dp[n][e] = 0.0f;
        tc_dot_rows<T, DP, BK>(s, qs + warp * 16 * P, kt, lane, odd8);
        tc_dot_rows<T, DP, BK>(dp, gs + warp * 16 * P, vt, lane, odd8);
        const bool mask = j0 + BK > a.Tk || wrow + 16 > a.Tq || (a.causal && j0 + BK - 1 > wrow);
#pragma unroll
        for (int n = 0; n < BK / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float p = attn_exp2(fmaf(s[n][e], c, e < 2 ? nl0 : nl1));
                if (mask) {
                    const int key = j0 + n * 8 + 2 * t4 + (e & 1), row = e < 2 ? row0 : row1;
                    if (row >= a.Tq || key >= a.Tk || (a.causal && key > row)) p = 0.0f;
                }
                s[n][e] = p * (dp[n][e] - (e < 2 ? dl0 : dl1)); // dS
            }
        tc_acc_cols<T, DP, BK>(acc, s, kt, lane, odd8);
        __syncthreads();
    }
#pragma unroll
    for (int n = 0; n < DP / 8; n++) {
        if (n * 8 >= a.D) break;
        const int col = n * 8 + 2 * t4;
        if (row0 < a.Tq)
            *(uint32_t *)((T *)a.dq + attn_row(a, b, a.Tq, row0, h) + col) =
                mma::pack(acc[n][0] * a.scale, acc[n][1] * a.scale);
        if (row1 < a.Tq)
            *(uint32_t *)((T *)a.dq + attn_row(a, b, a.Tq, row1, h) + col) =
                mma::pack(acc[n][2] * a.scale, acc[n][3] * a.scale);
    }
}

// dK, dV: the block owns 64 keys; the query tiles that see them stream
// (with a.nsplit > 1, split z % nsplit takes its share of them and writes
// fp32 partial sums to a.part, added up in order by dkdv_reduce_kernel).
// Computed transposed so every product's A operand is in registers or
// shared memory as stored: per warp (16 keys) and query tile,
//   Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ, Pᵀ = 2^(c·Sᵀ − lse2[query]), dSᵀ = Pᵀ ∘ (dPᵀ − δ[query]),
//   dV += Pᵀ·dO, dK += dSᵀ·Q.
template <typename T, int DP>
__global__ void __launch_bounds__(TC_THREADS) dkdv_tc_kernel(attn_args a) {
    constexpr int P = tc_bwd_cfg<DP>::P, BQ = tc_bwd_cfg<DP>::BS;
    using mma = attn_mma<T>;
    extern __shared__ __align__(16) unsigned char tsm[];
    T *ks = (T *)tsm;          // [64][P]
    T *vs = ks + TC_OWN * P;   // [64][P]
    T *qs = vs + TC_OWN * P;   // [2][BQ][P]
    T *gs = qs + 2 * BQ * P;   // [2][BQ][P] dO
    float *ls = (float *)(gs + 2 * BQ * P); // [2][BQ] lse2
    float *dls = ls + 2 * BQ;               // [2][BQ] δ
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int jb = blockIdx.x * TC_OWN, h = blockIdx.y, b = blockIdx.z / a.nsplit, split = blockIdx.z % a.nsplit;
    const T *qg = (const T *)a.q + attn_row(a, b, a.Tq, 0, h);
    const T *gg = (const T *)a.dout + attn_row(a, b, a.Tq, 0, h);
    const T *kg = (const T *)a.k + attn_row(a, b, a.Tk, 0, h);
    const T *vg = (const T *)a.v + attn_row(a, b, a.Tk, 0, h);
    // causal: keys ≥ jb are seen by queries ≥ jb only
    const int istart0 = a.causal ? jb / BQ * BQ : 0;
    const int nt_all = istart0 < a.Tq ? (a.Tq - istart0 + BQ - 1) / BQ : 0;
    const int per = (nt_all + a.nsplit - 1) / a.nsplit;
    const int tb = min(nt_all, split * per), ntiles = min(nt_all, tb + per) - tb;
    const int istart = istart0 + tb * BQ;
    attn_tile_async<T, TC_OWN, DP, TC_THREADS>(ks, kg, jb, a.Tk, a.HD, a.D, tid);
    attn_tile_async<T, TC_OWN, DP, TC_THREADS>(vs, vg, jb, a.Tk, a.HD, a.D, tid);
    if (ntiles > 0) {
        attn_tile_async<T, BQ, DP, TC_THREADS>(qs, qg, istart, a.Tq, a.HD, a.D, tid);
        attn_tile_async<T, BQ, DP, TC_THREADS>(gs, gg, istart, a.Tq, a.HD, a.D, tid);
    }
    attn_cp_commit();
    for (int e = tid; e < BQ; e += TC_THREADS) {
        const int i = istart + e;
        ls[e] = i < a.Tq ? a.lse[attn_stat(a, b, h, i)] : 0.0f;
        dls[e] = i < a.Tq ? a.delta[attn_stat(a, b, h, i)] : 0.0f;
    }

    const bool odd8 = a.D % 16 == 8;
    const float c = a.scale_log2;
    const int wkey = jb + warp * 16, key0 = wkey + g, key1 = key0 + 8;
    float ak[DP / 8][4], av[DP / 8][4];
#pragma unroll
    for (int n = 0; n < DP / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) ak[n][e] = av[n][e] = 0.0f;

    for (int it = 0; it < ntiles; it++) {
        const int i0 = istart + it * BQ, buf = it & 1;
        if (it + 1 < ntiles) {
            const int nb = buf ^ 1, i1 = i0 + BQ;
            attn_tile_async<T, BQ, DP, TC_THREADS>(qs + nb * BQ * P, qg, i1, a.Tq, a.HD, a.D, tid);
            attn_tile_async<T, BQ, DP, TC_THREADS>(gs + nb * BQ * P, gg, i1, a.Tq, a.HD, a.D, tid);
            attn_cp_commit();
            for (int e = tid; e < BQ; e += TC_THREADS) {
                const int i = i1 + e;
                ls[nb * BQ + e] = i < a.Tq ? a.lse[attn_stat(a, b, h, i)] : 0.0f;
                dls[nb * BQ + e] = i < a.Tq ? a.delta[attn_stat(a, b, h, i)] : 0.0f;
            }
            attn_cp_wait<1>();
        } else {
            attn_cp_wait<0>();
        }
        __syncthreads();
        const T *qt = qs + buf * BQ * P, *gt = gs + buf * BQ * P;
        const float *lt = ls + buf * BQ, *dlt = dls + buf * BQ;
        float s[BQ / 8][4], dp[BQ / 8][4];
#pragma unroll
        for (int n = 0; n < BQ / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[n][e] = dp[n][e] = 0.0f;
        tc_dot_rows<T, DP, BQ>(s, ks + warp * 16 * P, qt, lane, odd8);
        tc_dot_rows<T, DP, BQ>(dp, vs + warp * 16 * P, gt, lane, odd8);
        // rows are keys (key0, key1), columns queries
        const bool mask = i0 + BQ > a.Tq || wkey + 16 > a.Tk || (a.causal && wkey + 15 > i0);
#pragma unroll
        for (int n = 0; n < BQ / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int qi = n * 8 + 2 * t4 + (e & 1);
                float p = attn_exp2(fmaf(s[n][e], c, -lt[qi]));
                if (mask) {
                    const int query = i0 + qi, key = e < 2 ? key0 : key1;
                    if (query >= a.Tq || key >= a.Tk || (a.causal && key > query)) p = 0.0f;
                }
                dp[n][e] = p * (dp[n][e] - dlt[qi]); // dSᵀ
                s[n][e] = p;                         // Pᵀ
            }
        tc_acc_cols<T, DP, BQ>(av, s, gt, lane, odd8);
        tc_acc_cols<T, DP, BQ>(ak, dp, qt, lane, odd8);
        __syncthreads();
    }
    attn_cp_wait<0>(); // no tiles (causal, keys past Tq): the K/V copies are still owed
    const size_t nel = (size_t)a.B * a.Tk * a.HD;
#pragma unroll
    for (int n = 0; n < DP / 8; n++) {
        if (n * 8 >= a.D) break;
        const int col = n * 8 + 2 * t4;
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int key = half ? key1 : key0;
            if (key >= a.Tk) continue;
            const size_t o = attn_row(a, b, a.Tk, key, h) + col;
            const float k0 = ak[n][2 * half] * a.scale, k1 = ak[n][2 * half + 1] * a.scale;
            const float v0 = av[n][2 * half], v1 = av[n][2 * half + 1];
            if (a.nsplit > 1) {
                *(float2 *)(a.part + (size_t)split * nel + o) = make_float2(k0, k1);
                *(float2 *)(a.part + (size_t)(a.nsplit + split) * nel + o) = make_float2(v0, v1);
            } else {
                if (a.dk) *(uint32_t *)((T *)a.dk + o) = mma::pack(k0, k1);
                if (a.dv) *(uint32_t *)((T *)a.dv + o) = mma::pack(v0, v1);
            }
        }
    }
}

// dK, dV = the sums of the splits' partials, in split order.
template <typename T> __global__ void dkdv_reduce_kernel(attn_args a) {
    const size_t nel = (size_t)a.B * a.Tk * a.HD;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < nel; i += (size_t)gridDim.x * blockDim.x) {
        float k = 0.0f, v = 0.0f;
        for (int s = 0; s < a.nsplit; s++) k += a.part[(size_t)s * nel + i], v += a.part[(size_t)(a.nsplit + s) * nel + i];
        if (a.dk) sdc_st((T *)a.dk, i, k);
        if (a.dv) sdc_st((T *)a.dv, i, v);
    }
}

template <typename T, int DP> void bwd_tc_launch(const attn_args &a) {
    static bool optin;
    if (!optin) {
        attn_smem_optin(dkdv_tc_kernel<T, DP>, tc_bwd_cfg<DP>::smem_dkdv);
        attn_smem_optin(dq_tc_kernel<T, DP>, tc_bwd_cfg<DP>::smem_dq);
        optin = true;
    }
    if (a.dk || a.dv) {
        dim3 grid((unsigned)((a.Tk + TC_OWN - 1) / TC_OWN), (unsigned)a.H, (unsigned)(a.B * a.nsplit));
        dkdv_tc_kernel<T, DP><<<grid, TC_THREADS, tc_bwd_cfg<DP>::smem_dkdv, sdc_cuda_stream()>>>(a);
        CUDA_LAUNCH_CHECK();
        if (a.nsplit > 1) {
            dkdv_reduce_kernel<T><<<sdc_cuda_blocks((size_t)a.B * a.Tk * a.HD, 256), 256, 0, sdc_cuda_stream()>>>(a);
            CUDA_LAUNCH_CHECK();
        }
    }
    if (a.dq) {
        dim3 grid((unsigned)((a.Tq + TC_OWN - 1) / TC_OWN), (unsigned)a.H, (unsigned)a.B);
        dq_tc_kernel<T, DP><<<grid, TC_THREADS, tc_bwd_cfg<DP>::smem_dq, sdc_cuda_stream()>>>(a);
        CUDA_LAUNCH_CHECK();
    }
}

template <typename T> void bwd_tc_dp(const attn_args &a, int dp) {
    switch (dp) {
    case 16: bwd_tc_launch<T, 16>(a); break;
    case 32: bwd_tc_launch<T, 32>(a); break;
    case 48: bwd_tc_launch<T, 48>(a); break;
    case 64: bwd_tc_launch<T, 64>(a); break;
    case 80: bwd_tc_launch<T, 80>(a); break;
    case 96: bwd_tc_launch<T, 96>(a); break;
    case 112: bwd_tc_launch<T, 112>(a); break;
    case 128: bwd_tc_launch<T, 128>(a); break;
    case 144: bwd_tc_launch<T, 144>(a); break;
    case 160: bwd_tc_launch<T, 160>(a); break;
    default: sdc_cuda_fatal("attention", "no tensor-core backward for this head_dim", __FILE__, __LINE__);
    }
}

} // namespace

void attn_bwd_generic(const attn_args &a, sdc_dtype dt) { SDC_DISPATCH_FLOAT(dt, T, bwd_generic_nt<T>(a)); }

// Splits of the dK/dV query loop: few key tiles (cross-attention's 77
// keys) would leave most SMs idle. The target is a fixed block count, not
// the device's SM count, so the summation order (and every bit of the
// result) is the same on every GPU.
int attn_bwd_tc_nsplit(const attn_args &a, int dp) {
    const long blocks = (long)((a.Tk + TC_OWN - 1) / TC_OWN) * a.H * a.B;
    const int qtiles = (a.Tq + tc_bwd_bs(dp) - 1) / tc_bwd_bs(dp);
    const long target = 264; // two blocks for each of an H100/H200's 132 SMs
    if (blocks >= target) return 1;
    long n = (target + blocks - 1) / blocks;
    if (n > qtiles / 2) n = qtiles / 2; // at least two query tiles a split
    if (n > 32) n = 32;
    return n < 2 ? 1 : (int)n;
}

void attn_bwd_tc(const attn_args &a, sdc_dtype dt, int dp) {
    switch (dt) {
    case SDC_BF16: bwd_tc_dp<__nv_bfloat16>(a, dp); break;
    case SDC_F16: bwd_tc_dp<__half>(a, dp); break;
    default: sdc_cuda_fatal("attention", "tensor-core path needs BF16 or F16", __FILE__, __LINE__);
    }
}
