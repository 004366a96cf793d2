/* Backward of linear and conv2d over OpenBLAS sgemm (called outside any
 * OpenMP region; see cpu_ops.h).
 *
 * linear, y[M,N] = x[M,K]·w[N,K]ᵀ + b:
 *   dx = dy·w            (sgemm, assigned)
 *   dw += dyᵀ·x          (sgemm with β = 1)
 *   db += Σ_rows dy      (column sums in double)
 * conv2d, per image, with col = im2col(x) [K = Ci·kh·kw, Ho·Wo]:
 *   y = W[Co,K]·col, so  dW += dy[Co,HWo]·colᵀ  and  dcol = Wᵀ·dy,
 *   dx = col2im(dcol)    (the adjoint of im2col: scatter-add back)
 * done in bands of output rows so col and dcol stay within the im2col
 * budget, as in the forward. A 1×1 stride-1 unpadded conv needs no col:
 *   dx[b] = Wᵀ·dy[b],  dW += dy[b]·x[b]ᵀ.
 * Sums into dW run in a fixed order (images, then bands); col2im gives each
 * thread whole input channels, so dx never sees two writers. */
#include <cblas.h>

#include "backend/cpu/cpu_ops.h"

void sdc_cpu_linear_backward(sdc_tensor *dx, sdc_tensor *dw, sdc_tensor *db, const sdc_tensor *dy,
                             const sdc_tensor *x, const sdc_tensor *w, int64_t M, int64_t K, int64_t N) {
    const float *g = cpu_f32(dy);
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)M, (blasint)K, (blasint)N, 1.0f, g,
                    (blasint)N, cpu_f32(w), (blasint)K, 0.0f, cpu_f32(dx), (blasint)K);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)N, (blasint)K, (blasint)M, 1.0f, g,
                    (blasint)N, cpu_f32(x), (blasint)K, 1.0f, cpu_f32(dw), (blasint)K);
    if (db) sdc_cpu_col_sums_acc(cpu_f32(db), g, M, N);
}

typedef struct conv_geom {
    int64_t Ci, H, W, kh, kw, Ho, Wo;
    int stride, pad;
} conv_geom;

/* Output columns ox whose input column ox·s − p + j lies in [0, W): [lo, hi). */
static void col_range(const conv_geom *g, int64_t j, int64_t *lo, int64_t *hi) {
    int64_t off = j - g->pad;
    int64_t l = off >= 0 ? 0 : (-off + g->stride - 1) / g->stride;
    int64_t h = g->W - off <= 0 ? 0 : (g->W - off + g->stride - 1) / g->stride;
    if (h > g->Wo) h = g->Wo;
    if (l > h) l = h;
    *lo = l, *hi = h;
}

/* col[(ci·kh+i)·kw+j][(oy−y0)·Wo+ox] = x[ci][oy·s−p+i][ox·s−p+j] (0 outside),
 * output rows [y0, y1): the forward's im2col (its helper is private there). */
static void im2col(float *col, const float *x, const conv_geom *g, int64_t y0, int64_t y1) {
    int64_t K = g->Ci * g->kh * g->kw, n = (y1 - y0) * g->Wo;
#pragma omp parallel for schedule(static) if (K * n > SDC_CPU_PAR_MIN)
    for (int64_t r = 0; r < K; r++) {
        int64_t ci = r / (g->kh * g->kw), i = r / g->kw % g->kh, j = r % g->kw, lo, hi;
        col_range(g, j, &lo, &hi);
        const float *xc = x + ci * g->H * g->W;
        int64_t off = j - g->pad;
        for (int64_t oy = y0; oy < y1; oy++) {
            float *dst = col + r * n + (oy - y0) * g->Wo;
            int64_t iy = oy * g->stride - g->pad + i;
            if (iy < 0 || iy >= g->H) {
                memset(dst, 0, (size_t)g->Wo * sizeof(float));
                continue;
            }
            const float *xr = xc + iy * g->W;
            for (int64_t ox = 0; ox < lo; ox++) dst[ox] = 0.0f;
            if (g->stride == 1 && hi > lo)
                memcpy(dst + lo, xr + lo + off, (size_t)(hi - lo) * sizeof(float));
            else if (g->stride != 1)
                for (int64_t ox = lo; ox < hi; ox++) dst[ox] = xr[ox * g->stride + off];
            for (int64_t ox = hi; ox < g->Wo; ox++) dst[ox] = 0.0f;
        }
    }
}

SDC_CPU_HOT static void add_row(float *dst, const float *src, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) dst[i] += src[i];
}

/* dx[ci][oy·s−p+i][ox·s−p+j] += dcol[(ci,i,j)][(oy−y0, ox)] for output rows
 * [y0, y1): the adjoint of im2col. One thread per input channel; within it
 * the order (i, j, oy, ox) is fixed. */
static void col2im(float *dx, const float *dcol, const conv_geom *g, int64_t y0, int64_t y1) {
    int64_t n = (y1 - y0) * g->Wo, kk = g->kh * g->kw;
#pragma omp parallel for schedule(static) if (g->Ci * kk * n > SDC_CPU_PAR_MIN)
    for (int64_t ci = 0; ci < g->Ci; ci++) {
        float *xc = dx + ci * g->H * g->W;
        for (int64_t i = 0; i < g->kh; i++)
            for (int64_t j = 0; j < g->kw; j++) {
                const float *src = dcol + (ci * kk + i * g->kw + j) * n;
                int64_t lo, hi, off = j - g->pad;
                col_range(g, j, &lo, &hi);
                for (int64_t oy = y0; oy < y1; oy++) {
                    int64_t iy = oy * g->stride - g->pad + i;
                    if (iy < 0 || iy >= g->H) continue;
                    float *xr = xc + iy * g->W;
                    const float *sr = src + (oy - y0) * g->Wo;
                    if (g->stride == 1 && hi > lo)
                        add_row(xr + lo + off, sr + lo, hi - lo);
                    else if (g->stride != 1)
                        for (int64_t ox = lo; ox < hi; ox++) xr[ox * g->stride + off] += sr[ox];
                }
            }
    }
}

SDC_CPU_HOT static double sum_kernel(const float *x, int64_t n) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += x[i];
    return s;
}

/* db[co] += Σ_b Σ_s dy[b,co,s] (double, images in order) */
static void conv_bias_grad(float *db, const float *g, int64_t B, int64_t Co, int64_t HWo) {
#pragma omp parallel for schedule(static) if (B * Co * HWo > SDC_CPU_PAR_MIN)
    for (int64_t co = 0; co < Co; co++) {
        double s = 0.0;
        for (int64_t b = 0; b < B; b++) s += sum_kernel(g + (b * Co + co) * HWo, HWo);
        db[co] += (float)s;
    }
}

void sdc_cpu_conv2d_backward(sdc_tensor *dx, sdc_tensor *dw, sdc_tensor *db, const sdc_tensor *dy,
                             const sdc_tensor *x, const sdc_tensor *w, int stride, int pad) {
    const float *g = cpu_f32(dy), *xs = cpu_f32(x), *ws = cpu_f32(w);
    conv_geom cg = {.Ci = x->shape[1], .H = x->shape[2], .W = x->shape[3], .kh = w->shape[2], .kw = w->shape[3],
                    .Ho = dy->shape[2], .Wo = dy->shape[3], .stride = stride, .pad = pad};
    int64_t B = x->shape[0], Co = w->shape[0], HWo = cg.Ho * cg.Wo, HW = cg.H * cg.W, K = cg.Ci * cg.kh * cg.kw;
    SDC_ASSERT(dy->shape[0] == B && dy->shape[1] == Co && w->shape[1] == cg.Ci);
    float *dxs = dx ? cpu_f32(dx) : NULL, *dws = dw ? cpu_f32(dw) : NULL;
    if (db) conv_bias_grad(cpu_f32(db), g, B, Co, HWo);
    if (!dxs && !dws) return;
    int direct = cg.kh == 1 && cg.kw == 1 && stride == 1 && pad == 0;
    if (direct) {
        for (int64_t b = 0; b < B; b++) {
            const float *gb = g + b * Co * HWo, *xb = xs + b * cg.Ci * HW;
            if (dxs) /* dx[b][Ci,HW] = W[Co,Ci]ᵀ·dy[b][Co,HW] */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)cg.Ci, (blasint)HW, (blasint)Co, 1.0f,
                            ws, (blasint)cg.Ci, gb, (blasint)HW, 0.0f, dxs + b * cg.Ci * HW, (blasint)HW);
            if (dws) /* dW[Co,Ci] += dy[b][Co,HW]·x[b][Ci,HW]ᵀ */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)Co, (blasint)cg.Ci, (blasint)HW, 1.0f,
                            gb, (blasint)HW, xb, (blasint)HW, 1.0f, dws, (blasint)cg.Ci);
        }
        return;
    }
    /* output rows per band: col and dcol each within the im2col budget */
    int64_t band = sdc_cpu_col_max_floats / (K * cg.Wo);
    if (band < 1) band = 1;
    if (band > cg.Ho) band = cg.Ho;
    float *col = dws ? sdc_cpu_scratch(0, (size_t)(K * band * cg.Wo)) : NULL;
    float *dcol = dxs ? sdc_cpu_scratch(1, (size_t)(K * band * cg.Wo)) : NULL;
    if (dxs) memset(dxs, 0, (size_t)(B * cg.Ci * HW) * sizeof(float)); /* col2im adds; input rows bands overlap */
    for (int64_t b = 0; b < B; b++) {
        const float *xb = xs + b * cg.Ci * HW, *gb = g + b * Co * HWo;
        for (int64_t y0 = 0; y0 < cg.Ho; y0 += band) {
            int64_t y1 = y0 + band < cg.Ho ? y0 + band : cg.Ho, n = (y1 - y0) * cg.Wo;
            if (dws) {
                im2col(col, xb, &cg, y0, y1);
                /* dW[Co,K] += dy[b][:, band][Co,n]·col[K,n]ᵀ */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)Co, (blasint)K, (blasint)n, 1.0f,
                            gb + y0 * cg.Wo, (blasint)HWo, col, (blasint)n, 1.0f, dws, (blasint)K);
            }
            if (dxs) {
                /* dcol[K,n] = W[Co,K]ᵀ·dy[b][:, band] */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)K, (blasint)n, (blasint)Co, 1.0f, ws,
                            (blasint)K, gb + y0 * cg.Wo, (blasint)HWo, 0.0f, dcol, (blasint)n);
                col2im(dxs + b * cg.Ci * HW, dcol, &cg, y0, y1);
            }
        }
    }
}
