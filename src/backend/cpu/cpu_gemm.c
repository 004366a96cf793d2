/* linear and conv2d over OpenBLAS sgemm (called outside any OpenMP region;
 * see cpu_ops.h). A bias is written into the output first and the product
 * accumulated onto it (β = 1), which saves a separate bias pass. */
#include <cblas.h>

#include "backend/cpu/cpu_ops.h"

/* rows [0,M) of y[M,N] (row stride ld) all set to bias[0..N) */
static void fill_rows(float *y, const float *bias, int64_t M, int64_t N, int64_t ld) {
#pragma omp parallel for schedule(static) if (M * N > SDC_CPU_PAR_MIN)
    for (int64_t r = 0; r < M; r++) memcpy(y + r * ld, bias, (size_t)N * sizeof(float));
}

/* rows c of y[C, n] (row stride ld) all set to bias[c] */
static void fill_channels(float *y, const float *bias, int64_t C, int64_t n, int64_t ld) {
#pragma omp parallel for schedule(static) if (C * n > SDC_CPU_PAR_MIN)
    for (int64_t c = 0; c < C; c++)
        for (int64_t i = 0; i < n; i++) y[c * ld + i] = bias[c];
}

/* out[M,N] = x[M,K]·w[N,K]ᵀ + bias */
void sdc_cpu_linear(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *w, const sdc_tensor *bias, int64_t M,
                    int64_t K, int64_t N) {
    float *y = cpu_f32(out);
    const float *xs = cpu_f32(x), *ws = cpu_f32(w);
    if (bias) fill_rows(y, cpu_f32(bias), M, N, N);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)M, (blasint)N, (blasint)K, 1.0f, xs, (blasint)K,
                ws, (blasint)K, bias ? 1.0f : 0.0f, y, (blasint)N);
}

/* The im2col buffer holds at most this many floats (64 MiB); larger images
 * are done in bands of output rows. */
int64_t sdc_cpu_col_max_floats = (int64_t)16 << 20;

typedef struct conv_geom {
    int64_t Ci, H, W, kh, kw, Ho, Wo;
    int stride, pad;
} conv_geom;

/* One row of im2col: col[ox'] = x[ci][oy·s−p+i][ox·s−p+j] for ox over [0,Wo),
 * zero outside the image. */
static void im2col_row(float *dst, const float *xc, const conv_geom *g, int64_t iy, int64_t j) {
    if (iy < 0 || iy >= g->H) {
        memset(dst, 0, (size_t)g->Wo * sizeof(float));
        return;
    }
    const float *xr = xc + iy * g->W;
    /* ix = ox·s − p + j is inside [0, W) for ox in [lo, hi) */
    int64_t off = j - g->pad;
    int64_t lo = off >= 0 ? 0 : (-off + g->stride - 1) / g->stride;
    int64_t hi = g->W - off <= 0 ? 0 : (g->W - off + g->stride - 1) / g->stride;
    if (hi > g->Wo) hi = g->Wo;
    if (lo > hi) lo = hi;
    for (int64_t ox = 0; ox < lo; ox++) dst[ox] = 0.0f;
    if (g->stride == 1)
        memcpy(dst + lo, xr + lo + off, (size_t)(hi - lo) * sizeof(float));
    else
        for (int64_t ox = lo; ox < hi; ox++) dst[ox] = xr[ox * g->stride + off];
    for (int64_t ox = hi; ox < g->Wo; ox++) dst[ox] = 0.0f;
}

/* col[(ci·kh+i)·kw+j][(oy−y0)·Wo+ox] for output rows [y0, y1) of one image */
static void im2col(float *col, const float *x, const conv_geom *g, int64_t y0, int64_t y1) {
    int64_t K = g->Ci * g->kh * g->kw, ny = y1 - y0, n = ny * g->Wo;
#pragma omp parallel for schedule(static) if (K * n > SDC_CPU_PAR_MIN)
    for (int64_t r = 0; r < K; r++) {
        int64_t ci = r / (g->kh * g->kw), i = r / g->kw % g->kh, j = r % g->kw;
        const float *xc = x + ci * g->H * g->W;
        for (int64_t oy = y0; oy < y1; oy++)
            im2col_row(col + r * n + (oy - y0) * g->Wo, xc, g, oy * g->stride - g->pad + i, j);
    }
}

void sdc_cpu_conv2d(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *w, const sdc_tensor *bias, int stride,
                    int pad) {
    float *y = cpu_f32(out);
    const float *xs = cpu_f32(x), *ws = cpu_f32(w);
    const float *bs = bias ? cpu_f32(bias) : NULL;
    conv_geom g = {.Ci = x->shape[1], .H = x->shape[2], .W = x->shape[3], .kh = w->shape[2], .kw = w->shape[3],
                   .Ho = out->shape[2], .Wo = out->shape[3], .stride = stride, .pad = pad};
    int64_t B = x->shape[0], Co = w->shape[0], HWo = g.Ho * g.Wo, K = g.Ci * g.kh * g.kw;
    SDC_ASSERT(out->shape[0] == B && out->shape[1] == Co && w->shape[1] == g.Ci);
    float beta = bs ? 1.0f : 0.0f;
    /* per-image bias rows; with no bias β = 0 and sgemm ignores what is there */
    if (bs)
        for (int64_t b = 0; b < B; b++) fill_channels(y + b * Co * HWo, bs, Co, HWo, HWo);
    int direct = g.kh == 1 && g.kw == 1 && stride == 1 && pad == 0;
    /* output rows per band: as many as fit the im2col budget, at least one */
    int64_t band = direct ? g.Ho : sdc_cpu_col_max_floats / (K * g.Wo);
    if (band < 1) band = 1;
    if (band > g.Ho) band = g.Ho;
    float *col = direct ? NULL : sdc_cpu_scratch(0, (size_t)(K * band * g.Wo));
    for (int64_t b = 0; b < B; b++) {
        const float *xb = xs + b * g.Ci * g.H * g.W;
        float *yb = y + b * Co * HWo;
        if (direct) {
            /* 1×1: out[b][Co,HW] = W[Co,Ci]·x[b][Ci,HW] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)Co, (blasint)HWo, (blasint)g.Ci, 1.0f,
                        ws, (blasint)g.Ci, xb, (blasint)HWo, beta, yb, (blasint)HWo);
            continue;
        }
        for (int64_t y0 = 0; y0 < g.Ho; y0 += band) {
            int64_t y1 = y0 + band < g.Ho ? y0 + band : g.Ho, n = (y1 - y0) * g.Wo;
            im2col(col, xb, &g, y0, y1);
            /* out[b][:, y0·Wo : y1·Wo] = W[Co,K]·col[K,n] (row stride HWo) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)Co, (blasint)n, (blasint)K, 1.0f, ws,
                        (blasint)K, col, (blasint)n, beta, yb + y0 * g.Wo, (blasint)HWo);
        }
    }
}
