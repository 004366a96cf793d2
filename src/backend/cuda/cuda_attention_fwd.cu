// Attention forward (and the backward's statistics pass, STATS = true):
// the generic kernel (CUDA cores, any dtype, D ≤ 256) and the tensor-core
// kernel (BF16/F16, D % 8 == 0, D ≤ 160). See cuda_attention.cu for the math.
#include "backend/cuda/cuda_attention.cuh"

namespace {

// ---- generic ------------------------------------------------------------------
//
// A block owns 16 query rows of one (batch, head): 4 warps × 4 rows. Key
// tiles of 32 stream through shared memory (fp32). Scores: lane j computes
// the score of key j0+j for each of its warp's rows (the query row is a
// shared-memory broadcast). P·V: lane owns columns d = lane + 32·t
// (t < NT = ⌈D/32⌉) and takes p_j from lane j by shuffle.
constexpr int G_THREADS = 128, G_RW = 4, G_BQ = 16, G_BK = 32;

__host__ __device__ constexpr size_t g_fwd_smem_floats(int D) { return (size_t)G_BQ * D + (size_t)G_BK * (D | 1) + (size_t)G_BK * D; }

template <typename T, int NT, bool STATS>
__global__ void __launch_bounds__(G_THREADS) fwd_generic_kernel(attn_args a) {
    extern __shared__ float gsm[];
    const int D = a.D, KS = D | 1; // odd pitch: lane j reading row j is conflict-free
    float *qs = gsm;               // [G_BQ][D]
    float *ks = qs + G_BQ * D;     // [G_BK][KS]
    float *vs = ks + G_BK * KS;    // [G_BK][D]
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int i0 = blockIdx.x * G_BQ, h = blockIdx.y, b = blockIdx.z;
    const T *q = (const T *)a.q + attn_row(a, b, a.Tq, 0, h);
    const T *k = (const T *)a.k + attn_row(a, b, a.Tk, 0, h);
    const T *v = (const T *)a.v + attn_row(a, b, a.Tk, 0, h);

    for (int e = tid; e < G_BQ * D; e += G_THREADS) {
        int r = e / D, d = e - r * D;
        qs[e] = i0 + r < a.Tq ? sdc_ld(q, (size_t)(i0 + r) * a.HD + d) : 0.0f;
    }
    float acc[G_RW][NT], m[G_RW], lpart[G_RW]; // lpart: this lane's keys' share of l
#pragma unroll
    for (int r = 0; r < G_RW; r++) {
        m[r] = -INFINITY, lpart[r] = 0.0f;
#pragma unroll
        for (int t = 0; t < NT; t++) acc[r][t] = 0.0f;
    }
    const float *qw = qs + warp * G_RW * D;
    // causal: rows < i0+G_BQ see keys < i0+G_BQ only
    const int kend = a.causal ? min(a.Tk, i0 + G_BQ) : a.Tk;
    for (int j0 = 0; j0 < kend; j0 += G_BK) {
        __syncthreads(); // the previous tile is consumed (and qs is written)
        for (int e = tid; e < G_BK * D; e += G_THREADS) {
            int r = e / D, d = e - r * D, j = j0 + r;
            float kv = 0.0f, vv = 0.0f; // zero rows past Tk: p = 0 there, and 0·v must not be NaN
            if (j < a.Tk) {
                size_t o = (size_t)j * a.HD + d;
                kv = sdc_ld(k, o), vv = sdc_ld(v, o);
            }
            ks[r * KS + d] = kv, vs[r * D + d] = vv;
        }
        __syncthreads();
        float s[G_RW];
#pragma unroll
        for (int r = 0; r < G_RW; r++) s[r] = 0.0f;
        const float *kr = ks + lane * KS;
#pragma unroll 4
        for (int d = 0; d < D; d++) {
            float kd = kr[d];
#pragma unroll
            for (int r = 0; r < G_RW; r++) s[r] = fmaf(qw[r * D + d], kd, s[r]);
        }
        const int j = j0 + lane;
        float p[G_RW];
#pragma unroll
        for (int r = 0; r < G_RW; r++) {
            const int i = i0 + warp * G_RW + r;
            const bool ok = j < a.Tk && !(a.causal && j > i);
            const float x = ok ? s[r] * a.scale_log2 : -INFINITY;
            const float mn = fmaxf(m[r], attn_warp_max(x));
            // mn = −inf: nothing seen yet (all masked); keep the state as is
            const float alpha = mn == -INFINITY ? 1.0f : exp2f(m[r] - mn);
            p[r] = ok ? exp2f(x - mn) : 0.0f;
            m[r] = mn;
            lpart[r] = lpart[r] * alpha + p[r];
#pragma unroll
            for (int t = 0; t < NT; t++) acc[r][t] *= alpha;
        }
        const int jn = min(G_BK, kend - j0); // keys of this tile that can be nonzero
        for (int jj = 0; jj < jn; jj++) {
            float pj[G_RW];
#pragma unroll
            for (int r = 0; r < G_RW; r++) pj[r] = __shfl_sync(ATTN_FULL, p[r], jj);
#pragma unroll
            for (int t = 0; t < NT; t++) {
                const int d = lane + 32 * t;
                if (d < D) {
                    const float vv = vs[jj * D + d];
#pragma unroll
                    for (int r = 0; r < G_RW; r++) acc[r][t] = fmaf(pj[r], vv, acc[r][t]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < G_RW; r++) {
        const float l = attn_warp_sum(lpart[r]);
        const int i = i0 + warp * G_RW + r;
        if (i >= a.Tq) continue; // uniform over the warp
        const float inv = 1.0f / l;
        const size_t row = attn_row(a, b, a.Tq, i, h);
        if (!STATS) {
#pragma unroll
            for (int t = 0; t < NT; t++) {
                const int d = lane + 32 * t;
                if (d < D) sdc_st((T *)a.out, row + d, acc[r][t] * inv);
            }
            if (a.lse && lane == 0) a.lse[attn_stat(a, b, h, i)] = m[r] + log2f(l); // for the backward
        } else {
            float dd = 0.0f; // δ_i = dO_i·O_i
#pragma unroll
            for (int t = 0; t < NT; t++) {
                const int d = lane + 32 * t;
                if (d < D) dd = fmaf(sdc_ld((const T *)a.dout, row + d), acc[r][t] * inv, dd);
            }
            dd = attn_warp_sum(dd);
            if (lane == 0) {
                const size_t si = attn_stat(a, b, h, i);
                a.lse[si] = m[r] + log2f(l);
                a.delta[si] = dd;
            }
        }
    }
}

template <typename T, int NT, bool STATS> void launch_fwd_generic(const attn_args &a) {
    const size_t smem = g_fwd_smem_floats(a.D) * sizeof(float);
    auto kern = fwd_generic_kernel<T, NT, STATS>;
    static size_t optin = 48 * 1024;
    if (smem > optin) {
        attn_smem_optin(kern, smem);
        optin = smem;
    }
    dim3 grid((unsigned)((a.Tq + G_BQ - 1) / G_BQ), (unsigned)a.H, (unsigned)a.B);
    kern<<<grid, G_THREADS, smem, sdc_cuda_stream()>>>(a);
    CUDA_LAUNCH_CHECK();
}

template <typename T, bool STATS> void fwd_generic_nt(const attn_args &a) {
    switch ((a.D + 31) / 32) {
    case 1: launch_fwd_generic<T, 1, STATS>(a); break;
    case 2: launch_fwd_generic<T, 2, STATS>(a); break;
    case 3: launch_fwd_generic<T, 3, STATS>(a); break;
    case 4: launch_fwd_generic<T, 4, STATS>(a); break;
    case 5: launch_fwd_generic<T, 5, STATS>(a); break;
    case 6: launch_fwd_generic<T, 6, STATS>(a); break;
    case 7: launch_fwd_generic<T, 7, STATS>(a); break;
    case 8: launch_fwd_generic<T, 8, STATS>(a); break;
    default: sdc_cuda_fatal("attention", "head_dim > 256", __FILE__, __LINE__);
    }
}

// ---- tensor cores -------------------------------------------------------------
//
// A block owns 64 query rows of one (batch, head): 4 warps × 16 rows (one
// m16 tile each). K/V tiles of BK keys are double-buffered with cp.async:
// tile n+1 is in flight while tile n is used. Per warp and tile:
//   S[16×BK] = Q·Kᵀ     (Q fragments held in registers; K by ldmatrix)
//   online softmax on S in registers (a row lives in the 4 lanes of a quad)
//   O[16×DP] += P·V     (P re-packed from S's accumulators as the A operand:
//                        the C layout of two n8 tiles is the A layout of one k16 step;
//                        V by ldmatrix.trans)
constexpr int TC_THREADS = 128, TC_BQ = 64;

template <int DP> struct tc_fwd_cfg {
    static constexpr int BK = DP <= 128 ? 64 : 32; // registers: S is BK/2 floats a thread
    static constexpr int P = DP + 8;               // shared-memory row pitch (elements)
    static constexpr size_t smem = (size_t)(TC_BQ + 4 * BK) * P * 2;
};

template <typename T, int DP, bool STATS>
__global__ void __launch_bounds__(TC_THREADS) fwd_tc_kernel(attn_args a) {
    constexpr int BK = tc_fwd_cfg<DP>::BK, P = tc_fwd_cfg<DP>::P;
    using mma = attn_mma<T>;
    extern __shared__ __align__(16) unsigned char tsm[];
    T *qs = (T *)tsm;           // [TC_BQ][P]
    T *ks = qs + TC_BQ * P;     // [2][BK][P]
    T *vs = ks + 2 * BK * P;    // [2][BK][P]
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int i0 = blockIdx.x * TC_BQ, h = blockIdx.y, b = blockIdx.z;
    const T *qg = (const T *)a.q + attn_row(a, b, a.Tq, 0, h);
    const T *kg = (const T *)a.k + attn_row(a, b, a.Tk, 0, h);
    const T *vg = (const T *)a.v + attn_row(a, b, a.Tk, 0, h);
    const int kend = a.causal ? min(a.Tk, i0 + TC_BQ) : a.Tk;
    const int ntiles = (kend + BK - 1) / BK;

    attn_tile_async<T, TC_BQ, DP, TC_THREADS>(qs, qg, i0, a.Tq, a.HD, a.D, tid);
    attn_tile_async<T, BK, DP, TC_THREADS>(ks, kg, 0, a.Tk, a.HD, a.D, tid);
    attn_tile_async<T, BK, DP, TC_THREADS>(vs, vg, 0, a.Tk, a.HD, a.D, tid);
    attn_cp_commit();

    // ldmatrix lane offsets (see the fragment layouts in cuda_attention.cuh):
    // A (rows × k): matrix m = lane>>3 covers rows +8·(m&1), cols +8·(m>>1)
    const int a_row = (lane & 7) + ((lane >> 3) & 1) * 8, a_col = ((lane >> 4) & 1) * 8;
    // B from [n][k] storage (K for S): rows (n) +8·(m>>1), cols (k) +8·(m&1)
    const int b_row = (lane & 7) + ((lane >> 4) & 1) * 8, b_col = ((lane >> 3) & 1) * 8;
    // B from [k][n] storage, transposed (V for O): rows (k) +8·(m&1), cols (n) +8·(m>>1)
    const int bt_row = a_row, bt_col = a_col;

    uint32_t qa[DP / 16][4];
    float o[DP / 8][4];
#pragma unroll
    for (int n = 0; n < DP / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f; // rows g and g+8 (l: this lane's share)
    const int row0 = i0 + warp * 16 + g, row1 = row0 + 8;
    const bool odd8 = a.D % 16 == 8; // D = DP − 8: skip the zero half of the last 16

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
        if (it == 0) {
#pragma unroll
            for (int kk = 0; kk < DP / 16; kk++) attn_ldsm_x4(qa[kk], qs + (warp * 16 + a_row) * P + kk * 16 + a_col);
        }
        const T *kt = ks + buf * BK * P, *vt = vs + buf * BK * P;

        float s[BK / 8][4];
#pragma unroll
        for (int n = 0; n < BK / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < DP / 16; kk++)
#pragma unroll
            for (int n2 = 0; n2 < BK / 16; n2++) {
                uint32_t r[4];
                attn_ldsm_x4(r, kt + (n2 * 16 + b_row) * P + kk * 16 + b_col);
                if (kk == DP / 16 - 1 && odd8) { // the last 8 columns are padding
                    mma::run_k8(s[2 * n2], qa[kk], r[0]);
                    mma::run_k8(s[2 * n2 + 1], qa[kk], r[2]);
                } else {
                    mma::run(s[2 * n2], qa[kk], r[0], r[1]);
                    mma::run(s[2 * n2 + 1], qa[kk], r[2], r[3]);
                }
            }

        // mask (keys past Tk; causal: key > row), row max of the raw scores
        // (scale > 0, so the max commutes with x = scale·log2(e)·s)
        const bool mask = j0 + BK > a.Tk || (a.causal && j0 + BK - 1 > i0 + warp * 16);
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int n = 0; n < BK / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                if (mask) {
                    const int key = j0 + n * 8 + 2 * t4 + (e & 1), row = e < 2 ? row0 : row1;
                    if (key >= a.Tk || (a.causal && key > row)) s[n][e] = -INFINITY;
                }
                if (e < 2)
                    mx0 = fmaxf(mx0, s[n][e]);
                else
                    mx1 = fmaxf(mx1, s[n][e]);
            }
        const float c = a.scale_log2;
        const float mn0 = fmaxf(m0, attn_quad_max(mx0) * c), mn1 = fmaxf(m1, attn_quad_max(mx1) * c);
        // a row with nothing seen yet (mn = −inf) keeps l = 0, O = 0
        const float al0 = mn0 == -INFINITY ? 1.0f : attn_exp2(m0 - mn0);
        const float al1 = mn1 == -INFINITY ? 1.0f : attn_exp2(m1 - mn1);
        const float nb0 = mn0 == -INFINITY ? 0.0f : -mn0, nb1 = mn1 == -INFINITY ? 0.0f : -mn1;
        m0 = mn0, m1 = mn1;
        float ps0 = 0.0f, ps1 = 0.0f;
#pragma unroll
        for (int n = 0; n < BK / 8; n++) { // p = 2^(c·s − m), masked −inf → 0
            s[n][0] = attn_exp2(fmaf(s[n][0], c, nb0)), s[n][1] = attn_exp2(fmaf(s[n][1], c, nb0));
            s[n][2] = attn_exp2(fmaf(s[n][2], c, nb1)), s[n][3] = attn_exp2(fmaf(s[n][3], c, nb1));
            ps0 += s[n][0] + s[n][1], ps1 += s[n][2] + s[n][3];
        }
        l0 = l0 * al0 + ps0, l1 = l1 * al1 + ps1;
#pragma unroll
        for (int n = 0; n < DP / 8; n++) o[n][0] *= al0, o[n][1] *= al0, o[n][2] *= al1, o[n][3] *= al1;

#pragma unroll
        for (int kc = 0; kc < BK / 16; kc++) {
            uint32_t pa[4] = {mma::pack(s[2 * kc][0], s[2 * kc][1]), mma::pack(s[2 * kc][2], s[2 * kc][3]),
                              mma::pack(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                              mma::pack(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
            for (int n2 = 0; n2 < DP / 16; n2++) {
                uint32_t r[4];
                if (n2 == DP / 16 - 1 && odd8) { // one n8 tile left: columns past D are not computed
                    attn_ldsm_x2_t(r, vt + (kc * 16 + bt_row) * P + n2 * 16 + bt_col);
                    mma::run(o[2 * n2], pa, r[0], r[1]);
                } else {
                    attn_ldsm_x4_t(r, vt + (kc * 16 + bt_row) * P + n2 * 16 + bt_col);
                    mma::run(o[2 * n2], pa, r[0], r[1]);
                    mma::run(o[2 * n2 + 1], pa, r[2], r[3]);
                }
            }
        }
        __syncthreads(); // buffer `buf` is refilled two iterations on
    }

    l0 = attn_quad_sum(l0), l1 = attn_quad_sum(l1);
    const float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
    const size_t r0 = attn_row(a, b, a.Tq, row0 < a.Tq ? row0 : 0, h);
    const size_t r1 = attn_row(a, b, a.Tq, row1 < a.Tq ? row1 : 0, h);
    float d0 = 0.0f, d1 = 0.0f;
#pragma unroll
    for (int n = 0; n < DP / 8; n++) {
        if (n * 8 >= a.D) break; // D % 8 == 0: an n8 tile is all in or all out
        const int col = n * 8 + 2 * t4;
        if (!STATS) {
            if (row0 < a.Tq) *(uint32_t *)((T *)a.out + r0 + col) = mma::pack(o[n][0] * inv0, o[n][1] * inv0);
            if (row1 < a.Tq) *(uint32_t *)((T *)a.out + r1 + col) = mma::pack(o[n][2] * inv1, o[n][3] * inv1);
        } else {
            const T *go = (const T *)a.dout;
            if (row0 < a.Tq) d0 += sdc_ld(go, r0 + col) * o[n][0] * inv0 + sdc_ld(go, r0 + col + 1) * o[n][1] * inv0;
            if (row1 < a.Tq) d1 += sdc_ld(go, r1 + col) * o[n][2] * inv1 + sdc_ld(go, r1 + col + 1) * o[n][3] * inv1;
        }
    }
    if (!STATS && a.lse && t4 == 0) { // the forward's row statistics, for the backward
        if (row0 < a.Tq) a.lse[attn_stat(a, b, h, row0)] = m0 + log2f(l0);
        if (row1 < a.Tq) a.lse[attn_stat(a, b, h, row1)] = m1 + log2f(l1);
    }
    if (STATS) {
        d0 = attn_quad_sum(d0), d1 = attn_quad_sum(d1);
        if (t4 == 0 && row0 < a.Tq) {
            const size_t si = attn_stat(a, b, h, row0);
            a.lse[si] = m0 + log2f(l0), a.delta[si] = d0;
        }
        if (t4 == 0 && row1 < a.Tq) {
            const size_t si = attn_stat(a, b, h, row1);
            a.lse[si] = m1 + log2f(l1), a.delta[si] = d1;
        }
    }
}

template <typename T, int DP, bool STATS> void launch_fwd_tc(const attn_args &a) {
    const size_t smem = tc_fwd_cfg<DP>::smem;
    auto kern = fwd_tc_kernel<T, DP, STATS>;
    static bool optin;
    if (!optin) {
        attn_smem_optin(kern, smem);
        optin = true;
    }
    dim3 grid((unsigned)((a.Tq + TC_BQ - 1) / TC_BQ), (unsigned)a.H, (unsigned)a.B);
    kern<<<grid, TC_THREADS, smem, sdc_cuda_stream()>>>(a);
    CUDA_LAUNCH_CHECK();
}

template <typename T, bool STATS> void fwd_tc_dp(const attn_args &a, int dp) {
    switch (dp) {
    case 16: launch_fwd_tc<T, 16, STATS>(a); break;
    case 32: launch_fwd_tc<T, 32, STATS>(a); break;
    case 48: launch_fwd_tc<T, 48, STATS>(a); break;
    case 64: launch_fwd_tc<T, 64, STATS>(a); break;
    case 80: launch_fwd_tc<T, 80, STATS>(a); break;
    case 96: launch_fwd_tc<T, 96, STATS>(a); break;
    case 112: launch_fwd_tc<T, 112, STATS>(a); break;
    case 128: launch_fwd_tc<T, 128, STATS>(a); break;
    case 144: launch_fwd_tc<T, 144, STATS>(a); break;
    case 160: launch_fwd_tc<T, 160, STATS>(a); break;
    default: sdc_cuda_fatal("attention", "no tensor-core kernel for this head_dim", __FILE__, __LINE__);
    }
}

} // namespace

void attn_fwd_generic(const attn_args &a, sdc_dtype dt, bool stats) {
    if (stats)
        SDC_DISPATCH_FLOAT(dt, T, fwd_generic_nt<T, true>(a));
    else
        SDC_DISPATCH_FLOAT(dt, T, fwd_generic_nt<T, false>(a));
}

void attn_fwd_tc(const attn_args &a, sdc_dtype dt, int dp, bool stats) {
    switch (dt) {
    case SDC_BF16: stats ? fwd_tc_dp<__nv_bfloat16, true>(a, dp) : fwd_tc_dp<__nv_bfloat16, false>(a, dp); break;
    case SDC_F16: stats ? fwd_tc_dp<__half, true>(a, dp) : fwd_tc_dp<__half, false>(a, dp); break;
    default: sdc_cuda_fatal("attention", "tensor-core path needs BF16 or F16", __FILE__, __LINE__);
    }
}
