/* The CPU backend's backward ops through the sdc_op_*_backward wrappers,
 * checked three ways:
 * (a) on tiny sizes, against central finite differences of a double forward
 *     written here: g_i ≈ (L(x+h·e_i) − L(x−h·e_i))/2h for L = Σ dy·f(x);
 * (b) on odd sizes (not multiples of 4/8/16, batches > 1, several heads,
 *     Tq ≠ Tk), against the analytic gradients in double written here;
 * (c) against torch autograd (tests/data/ops_backward.safetensors, made by
 *     tools/make_ops_backward_goldens.py in float64 from fp32 inputs).
 * Parameter gradients are checked to accumulate (two calls → twice the
 * gradient on top of what was there), activation gradients to be assigned
 * (their buffers start as garbage), and each gradient alone (the others
 * NULL).
 *
 * Tolerance: |got − ref| ≤ 1e-5·(|ref| + mean|ref|), as in test_ops.c. The
 * ops compute in fp32 (~6e-8 per rounding) with sums of at most a few
 * hundred terms per output (statistics and long sums in double) and the
 * vectorized exp/erf (~1e-7 relative), well inside 1e-5 of the values'
 * scale; an indexing or formula mistake is off by O(1). The mean|ref| term
 * keeps entries near zero (where a gradient is a cancelling sum) from
 * demanding more than fp32 gives. The finite differences (h = 1e-4·(1+|x|)
 * in double) are exact to ~1e-9 relative (h²·f'''/6 truncation, 1e-12
 * roundoff), so the same rule applies to them. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend/cpu/cpu_ops.h"
#include "backend/ops.h"
#include "backend/ops_backward.h"
#include "core/arena.h"
#include "io/safetensors.h"
#include "test.h"

#define RTOL 1e-5
static double g_rtol = RTOL; /* raised, with the reason, around single cases */
#define GARBAGE 7.25f /* what an assigned gradient's buffer holds before the op */
#define BASE 0.5f     /* what an accumulated gradient's buffer holds before the op */

typedef struct fixture {
    sdc_arena arena;
    sdc_ctx c;
} fixture;

static int fx_init(fixture *f) {
    sdc_error err;
    if (sdc_arena_init(&f->arena, (size_t)64 << 20, &err) != SDC_OK) return 0;
    f->c = (sdc_ctx){.be = sdc_cpu_backend(), .device = {SDC_CPU, 0}, .arena = &f->arena};
    return 1;
}

/* uniform in [lo, hi), a fixed LCG so every run sees the same data */
static float *rnd(int64_t n, float lo, float hi, uint32_t seed) {
    float *x = malloc((size_t)(n ? n : 1) * sizeof(float));
    uint64_t s = 0x9E3779B97F4A7C15ull ^ (seed * 0x2545F4914F6CDD1Dull);
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = lo + (hi - lo) * (float)((s >> 40) * (1.0 / 16777216.0));
    }
    return x;
}

static double *dalloc(int64_t n) { return calloc((size_t)(n ? n : 1), sizeof(double)); }

static double *to_d(const float *x, int64_t n) {
    double *d = dalloc(n);
    for (int64_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

static sdc_tensor up(fixture *f, int ndim, const int64_t *shape, const float *src) {
    return sdc_op_upload(&f->c, NULL, ndim, shape, src);
}
#define UP(f, src, ...) up((f), SDC_NDIM(__VA_ARGS__), SDC_SHAPE(__VA_ARGS__), (src))

/* a gradient buffer of that shape holding `v` everywhere */
static sdc_tensor filled(fixture *f, float v, int ndim, const int64_t *shape) {
    sdc_tensor t = sdc_ctx_alloc(&f->c, ndim, shape);
    sdc_op_fill(&f->c, &t, v);
    return t;
}
#define FILLED(f, v, ...) filled((f), (v), SDC_NDIM(__VA_ARGS__), SDC_SHAPE(__VA_ARGS__))

/* got ≈ base + mult·ref by the file's rule; reports the worst element */
static int close_to(const char *what, const sdc_tensor *t, const double *ref, int64_t n, double base, double mult) {
    if (!t->data || sdc_tensor_numel(t) != n) {
        CHECK_MSG(0, "%s: %lld elements, want %lld", what, (long long)sdc_tensor_numel(t), (long long)n);
        return 0;
    }
    const float *got = t->data;
    double mean = 0;
    for (int64_t i = 0; i < n; i++) mean += fabs(mult * ref[i]);
    mean = n ? mean / (double)n : 0;
    double worst = 0;
    int64_t wi = -1;
    for (int64_t i = 0; i < n; i++) {
        double want = base + mult * ref[i];
        double d = fabs((double)got[i] - want), lim = g_rtol * (fabs(mult * ref[i]) + mean) + 1e-7 * fabs(base);
        if (!(d <= lim) && (wi < 0 || d / lim > worst)) {
            worst = d / lim;
            wi = i;
        }
    }
    if (wi >= 0) {
        CHECK_MSG(0, "%s: element %lld: got %.9g, want %.9g (%.3gx the tolerance)", what, (long long)wi,
                  (double)got[wi], base + mult * ref[wi], worst);
        return 0;
    }
    return 1;
}
/* an assigned gradient (= ref) and an accumulated one after two calls */
#define ASSIGNED(what, t, ref, n) close_to((what), (t), (ref), (n), 0.0, 1.0)
#define ACCUM2(what, t, ref, n) close_to((what), (t), (ref), (n), BASE, 2.0)

/* ---- finite differences ----------------------------------------------------- */

/* y = f(in) for double inputs in[0..), parameters in p */
typedef void (*fwd_fn)(const void *p, double *const *in, double *y);

/* ∂L/∂in[a] for L = Σ dy·f(in), by central differences (in[a] restored) */
static double *fd_grad(fwd_fn f, const void *p, double **in, int a, int64_t na, const double *dy, int64_t ny) {
    double *g = dalloc(na), *y = dalloc(ny);
    for (int64_t i = 0; i < na; i++) {
        double x0 = in[a][i], h = 1e-4 * (1.0 + fabs(x0)), L[2];
        for (int s = 0; s < 2; s++) {
            in[a][i] = x0 + (s ? -h : h);
            f(p, in, y);
            L[s] = 0;
            for (int64_t j = 0; j < ny; j++) L[s] += dy[j] * y[j];
        }
        in[a][i] = x0;
        g[i] = (L[0] - L[1]) / (2 * h);
    }
    free(y);
    return g;
}

/* ---- activations in double -------------------------------------------------- */

static double act_d(double x, sdc_act act) {
    switch (act) {
    case SDC_ACT_SILU: return x / (1.0 + exp(-x));
    case SDC_ACT_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case SDC_ACT_GELU_TANH: return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case SDC_ACT_QUICK_GELU: return x / (1.0 + exp(-1.702 * x));
    case SDC_ACT_NONE: break;
    }
    return x;
}

static double act_grad_d(double x, sdc_act act) {
    switch (act) {
    case SDC_ACT_SILU: {
        double s = 1.0 / (1.0 + exp(-x));
        return s * (1.0 + x * (1.0 - s));
    }
    case SDC_ACT_GELU: return 0.5 * (1.0 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2.0 * M_PI);
    case SDC_ACT_GELU_TANH: {
        double c = sqrt(2.0 / M_PI), t = tanh(c * (x + 0.044715 * x * x * x));
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x);
    }
    case SDC_ACT_QUICK_GELU: {
        double s = 1.0 / (1.0 + exp(-1.702 * x));
        return s + 1.702 * x * s * (1.0 - s);
    }
    case SDC_ACT_NONE: break;
    }
    return 1.0;
}

static const sdc_act ALL_ACTS[] = {SDC_ACT_NONE, SDC_ACT_SILU, SDC_ACT_GELU, SDC_ACT_GELU_TANH, SDC_ACT_QUICK_GELU};
#define NACTS ((int)(sizeof ALL_ACTS / sizeof ALL_ACTS[0]))

/* ---- linear ------------------------------------------------------------------ */

typedef struct lin_p {
    int64_t M, K, N;
} lin_p;

/* in: x [M,K], w [N,K], b [N] */
static void lin_fwd(const void *pp, double *const *in, double *y) {
    const lin_p *p = pp;
    for (int64_t m = 0; m < p->M; m++)
        for (int64_t n = 0; n < p->N; n++) {
            double s = in[2][n];
            for (int64_t k = 0; k < p->K; k++) s += in[0][m * p->K + k] * in[1][n * p->K + k];
            y[m * p->N + n] = s;
        }
}

/* g[0] = dx, g[1] = dw, g[2] = db */
static void lin_bwd(const lin_p *p, double *const *in, const double *dy, double **g) {
    for (int64_t m = 0; m < p->M; m++)
        for (int64_t n = 0; n < p->N; n++) {
            double d = dy[m * p->N + n];
            for (int64_t k = 0; k < p->K; k++) {
                g[0][m * p->K + k] += d * in[1][n * p->K + k];
                g[1][n * p->K + k] += d * in[0][m * p->K + k];
            }
            g[2][n] += d;
        }
}

static void check_linear(fixture *f, int64_t A, int64_t T, int64_t K, int64_t N, int fd) {
    lin_p p = {A * T, K, N};
    int64_t M = p.M, nin[3] = {M * K, N * K, N};
    float *x = rnd(nin[0], -1, 1, 1), *w = rnd(nin[1], -1, 1, 2), *b = rnd(N, -1, 1, 3), *dy = rnd(M * N, -1, 1, 4);
    double *in[3] = {to_d(x, nin[0]), to_d(w, nin[1]), to_d(b, N)}, *dyd = to_d(dy, M * N);
    double *g[3] = {dalloc(nin[0]), dalloc(nin[1]), dalloc(N)};
    if (fd)
        for (int a = 0; a < 3; a++) free(g[a]), g[a] = fd_grad(lin_fwd, &p, in, a, nin[a], dyd, M * N);
    else
        lin_bwd(&p, in, dyd, g);
    size_t mark = sdc_arena_mark(&f->arena);
    sdc_tensor tx = UP(f, x, A, T, K), tw = UP(f, w, N, K), tdy = UP(f, dy, A, T, N);
    sdc_tensor dx = FILLED(f, GARBAGE, A, T, K), dw = FILLED(f, BASE, N, K), db = FILLED(f, BASE, N);
    for (int rep = 0; rep < 2; rep++) sdc_op_linear_backward(&f->c, &dx, &dw, &db, &tdy, &tx, &tw);
    char what[96];
    snprintf(what, sizeof what, "linear%s M=%lld K=%lld N=%lld", fd ? " (fd)" : "", (long long)M, (long long)K,
             (long long)N);
    ASSIGNED(what, &dx, g[0], nin[0]);
    ACCUM2(what, &dw, g[1], nin[1]);
    ACCUM2(what, &db, g[2], N);
    /* each gradient alone */
    sdc_tensor dx1 = FILLED(f, GARBAGE, A, T, K), dw1 = FILLED(f, BASE, N, K), db1 = FILLED(f, BASE, N);
    sdc_op_linear_backward(&f->c, &dx1, NULL, NULL, &tdy, &tx, &tw);
    sdc_op_linear_backward(&f->c, NULL, &dw1, NULL, &tdy, &tx, &tw);
    sdc_op_linear_backward(&f->c, NULL, NULL, &db1, &tdy, &tx, &tw);
    ASSIGNED(what, &dx1, g[0], nin[0]);
    close_to(what, &dw1, g[1], nin[1], BASE, 1.0);
    close_to(what, &db1, g[2], N, BASE, 1.0);
    sdc_arena_release(&f->arena, mark);
    for (int a = 0; a < 3; a++) free(in[a]), free(g[a]);
    free(x), free(w), free(b), free(dy), free(dyd);
}

TEST(ops_bwd_linear) {
    fixture f;
    REQUIRE(fx_init(&f));
    check_linear(&f, 1, 3, 4, 3, 1);
    check_linear(&f, 2, 2, 5, 3, 1);
    check_linear(&f, 2, 7, 19, 13, 0);
    check_linear(&f, 2, 77, 131, 67, 0);
    check_linear(&f, 1, 1, 3, 1, 0);
    sdc_arena_free(&f.arena);
}

/* ---- conv2d ------------------------------------------------------------------ */

typedef struct conv_p {
    int64_t B, Ci, H, W, Co, k, Ho, Wo;
    int s, pad;
} conv_p;

#define XI(p, b, c, y, x) ((((b) * (p)->Ci + (c)) * (p)->H + (y)) * (p)->W + (x))
#define WI(p, o, c, i, j) ((((o) * (p)->Ci + (c)) * (p)->k + (i)) * (p)->k + (j))
#define YI(p, b, o, y, x) ((((b) * (p)->Co + (o)) * (p)->Ho + (y)) * (p)->Wo + (x))

/* in: x, w, b */
static void conv_fwd(const void *pp, double *const *in, double *y) {
    const conv_p *p = pp;
    for (int64_t b = 0; b < p->B; b++)
        for (int64_t o = 0; o < p->Co; o++)
            for (int64_t oy = 0; oy < p->Ho; oy++)
                for (int64_t ox = 0; ox < p->Wo; ox++) {
                    double s = in[2][o];
                    for (int64_t c = 0; c < p->Ci; c++)
                        for (int64_t i = 0; i < p->k; i++)
                            for (int64_t j = 0; j < p->k; j++) {
                                int64_t iy = oy * p->s - p->pad + i, ix = ox * p->s - p->pad + j;
                                if (iy >= 0 && iy < p->H && ix >= 0 && ix < p->W)
                                    s += in[0][XI(p, b, c, iy, ix)] * in[1][WI(p, o, c, i, j)];
                            }
                    y[YI(p, b, o, oy, ox)] = s;
                }
}

static void conv_bwd(const conv_p *p, double *const *in, const double *dy, double **g) {
    for (int64_t b = 0; b < p->B; b++)
        for (int64_t o = 0; o < p->Co; o++)
            for (int64_t oy = 0; oy < p->Ho; oy++)
                for (int64_t ox = 0; ox < p->Wo; ox++) {
                    double d = dy[YI(p, b, o, oy, ox)];
                    g[2][o] += d;
                    for (int64_t c = 0; c < p->Ci; c++)
                        for (int64_t i = 0; i < p->k; i++)
                            for (int64_t j = 0; j < p->k; j++) {
                                int64_t iy = oy * p->s - p->pad + i, ix = ox * p->s - p->pad + j;
                                if (iy < 0 || iy >= p->H || ix < 0 || ix >= p->W) continue;
                                g[0][XI(p, b, c, iy, ix)] += d * in[1][WI(p, o, c, i, j)];
                                g[1][WI(p, o, c, i, j)] += d * in[0][XI(p, b, c, iy, ix)];
                            }
                }
}

static void check_conv(fixture *f, int64_t B, int64_t Ci, int64_t H, int64_t W, int64_t Co, int k, int s, int pad,
                       int fd) {
    conv_p p = {B, Ci, H, W, Co, k, (H + 2 * pad - k) / s + 1, (W + 2 * pad - k) / s + 1, s, pad};
    int64_t nin[3] = {B * Ci * H * W, Co * Ci * k * k, Co}, ny = B * Co * p.Ho * p.Wo;
    float *x = rnd(nin[0], -1, 1, 11), *w = rnd(nin[1], -1, 1, 12), *b = rnd(Co, -1, 1, 13), *dy = rnd(ny, -1, 1, 14);
    double *in[3] = {to_d(x, nin[0]), to_d(w, nin[1]), to_d(b, Co)}, *dyd = to_d(dy, ny);
    double *g[3] = {dalloc(nin[0]), dalloc(nin[1]), dalloc(Co)};
    if (fd)
        for (int a = 0; a < 3; a++) free(g[a]), g[a] = fd_grad(conv_fwd, &p, in, a, nin[a], dyd, ny);
    else
        conv_bwd(&p, in, dyd, g);
    size_t mark = sdc_arena_mark(&f->arena);
    sdc_tensor tx = UP(f, x, B, Ci, H, W), tw = UP(f, w, Co, Ci, k, k), tdy = UP(f, dy, B, Co, p.Ho, p.Wo);
    sdc_tensor dx = FILLED(f, GARBAGE, B, Ci, H, W), dw = FILLED(f, BASE, Co, Ci, k, k), db = FILLED(f, BASE, Co);
    for (int rep = 0; rep < 2; rep++) sdc_op_conv2d_backward(&f->c, &dx, &dw, &db, &tdy, &tx, &tw, s, pad);
    char what[128];
    snprintf(what, sizeof what, "conv%s B=%lld Ci=%lld %lldx%lld Co=%lld k=%d s=%d p=%d", fd ? " (fd)" : "",
             (long long)B, (long long)Ci, (long long)H, (long long)W, (long long)Co, k, s, pad);
    ASSIGNED(what, &dx, g[0], nin[0]);
    ACCUM2(what, &dw, g[1], nin[1]);
    ACCUM2(what, &db, g[2], Co);
    sdc_tensor dx1 = FILLED(f, GARBAGE, B, Ci, H, W), dw1 = FILLED(f, BASE, Co, Ci, k, k), db1 = FILLED(f, BASE, Co);
    sdc_op_conv2d_backward(&f->c, &dx1, NULL, NULL, &tdy, &tx, &tw, s, pad);
    sdc_op_conv2d_backward(&f->c, NULL, &dw1, NULL, &tdy, &tx, &tw, s, pad);
    sdc_op_conv2d_backward(&f->c, NULL, NULL, &db1, &tdy, &tx, &tw, s, pad);
    ASSIGNED(what, &dx1, g[0], nin[0]);
    close_to(what, &dw1, g[1], nin[1], BASE, 1.0);
    close_to(what, &db1, g[2], Co, BASE, 1.0);
    sdc_arena_release(&f->arena, mark);
    for (int a = 0; a < 3; a++) free(in[a]), free(g[a]);
    free(x), free(w), free(b), free(dy), free(dyd);
}

TEST(ops_bwd_conv2d) {
    fixture f;
    REQUIRE(fx_init(&f));
    /* finite differences: kernels 1 and 3, stride 1 and 2, pad 0 and 1 */
    check_conv(&f, 2, 2, 5, 4, 3, 3, 1, 1, 1);
    check_conv(&f, 2, 2, 5, 4, 3, 3, 2, 1, 1);
    check_conv(&f, 1, 2, 5, 6, 2, 3, 1, 0, 1);
    check_conv(&f, 1, 2, 6, 5, 2, 3, 2, 0, 1);
    check_conv(&f, 2, 3, 3, 4, 2, 1, 1, 0, 1);
    check_conv(&f, 1, 3, 5, 4, 2, 1, 2, 0, 1);
    /* analytic, odd sizes */
    check_conv(&f, 2, 5, 9, 7, 6, 3, 1, 1, 0);  /* the UNet's 3×3 */
    check_conv(&f, 2, 5, 9, 7, 6, 3, 2, 1, 0);  /* downsampler */
    check_conv(&f, 2, 3, 10, 11, 7, 3, 2, 0, 0);
    check_conv(&f, 1, 4, 8, 5, 3, 3, 1, 0, 0);
    check_conv(&f, 2, 9, 6, 7, 5, 1, 1, 0, 0);  /* 1×1: the direct GEMMs */
    check_conv(&f, 2, 6, 7, 9, 4, 1, 2, 0, 0);  /* 1×1 strided: through im2col */
    check_conv(&f, 2, 3, 5, 5, 4, 1, 1, 1, 0);  /* 1×1 padded */
    check_conv(&f, 1, 3, 2, 3, 2, 3, 1, 1, 0);  /* image smaller than the kernel reach */
    check_conv(&f, 1, 2, 2, 1, 3, 3, 1, 2, 0);  /* pad 2: kernel columns entirely outside */
    check_conv(&f, 2, 2, 5, 4, 3, 3, 2, 2, 0);
    check_conv(&f, 2, 37, 11, 13, 19, 3, 1, 1, 0);
    sdc_arena_free(&f.arena);
}

TEST(ops_bwd_conv2d_bands) {
    /* a tiny im2col budget: bands of one to a few output rows whose input
     * rows overlap, the last band short */
    fixture f;
    REQUIRE(fx_init(&f));
    int64_t saved = sdc_cpu_col_max_floats;
    sdc_cpu_col_max_floats = 1;
    check_conv(&f, 2, 5, 9, 7, 6, 3, 1, 1, 0);
    check_conv(&f, 1, 2, 5, 4, 3, 3, 2, 1, 1);
    sdc_cpu_col_max_floats = 5 * 9 * 7 * 3; /* three rows of Wo = 7 per band */
    check_conv(&f, 2, 5, 10, 7, 6, 3, 1, 1, 0);
    check_conv(&f, 2, 5, 11, 13, 6, 3, 2, 1, 0);
    sdc_cpu_col_max_floats = saved;
    sdc_arena_free(&f.arena);
}

/* ---- group norm -------------------------------------------------------------- */

typedef struct gn_p {
    int64_t B, C, S;
    int G;
    double eps;
    sdc_act act;
} gn_p;

/* in: x [B,C,S], gamma, beta */
static void gn_fwd(const void *pp, double *const *in, double *y) {
    const gn_p *p = pp;
    int64_t cpg = p->C / p->G, n = cpg * p->S;
    for (int64_t t = 0; t < p->B * p->G; t++) {
        const double *x = in[0] + t * n;
        double mu = 0, var = 0;
        for (int64_t i = 0; i < n; i++) mu += x[i];
        mu /= (double)n;
        for (int64_t i = 0; i < n; i++) var += (x[i] - mu) * (x[i] - mu);
        double r = 1.0 / sqrt(var / (double)n + p->eps);
        for (int64_t i = 0; i < n; i++) {
            int64_t c = (t % p->G) * cpg + i / p->S;
            y[t * n + i] = act_d((x[i] - mu) * r * in[1][c] + in[2][c], p->act);
        }
    }
}

/* the formula of cpu_backward_norm.c, in double */
static void gn_bwd(const gn_p *p, double *const *in, const double *dy, double **g) {
    int64_t cpg = p->C / p->G, n = cpg * p->S;
    double *dxh = dalloc(n), *xh = dalloc(n);
    for (int64_t t = 0; t < p->B * p->G; t++) {
        const double *x = in[0] + t * n;
        double mu = 0, var = 0, m1 = 0, m2 = 0;
        for (int64_t i = 0; i < n; i++) mu += x[i];
        mu /= (double)n;
        for (int64_t i = 0; i < n; i++) var += (x[i] - mu) * (x[i] - mu);
        double r = 1.0 / sqrt(var / (double)n + p->eps);
        for (int64_t i = 0; i < n; i++) {
            int64_t c = (t % p->G) * cpg + i / p->S;
            xh[i] = (x[i] - mu) * r;
            double dz = dy[t * n + i] * act_grad_d(xh[i] * in[1][c] + in[2][c], p->act);
            g[1][c] += dz * xh[i];
            g[2][c] += dz;
            dxh[i] = dz * in[1][c];
            m1 += dxh[i], m2 += dxh[i] * xh[i];
        }
        m1 /= (double)n, m2 /= (double)n;
        for (int64_t i = 0; i < n; i++) g[0][t * n + i] = r * (dxh[i] - m1 - xh[i] * m2);
    }
    free(dxh), free(xh);
}

static void check_gn(fixture *f, int64_t B, int64_t C, int64_t H, int64_t W, int G, float offset, sdc_act act,
                     int fd) {
    gn_p p = {B, C, H * W, G, 1e-5, act};
    int64_t n = B * C * H * W, nin[3] = {n, C, C};
    float *x = rnd(n, offset - 2, offset + 2, 21), *ga = rnd(C, 0.5f, 1.5f, 22), *be = rnd(C, -1, 1, 23);
    float *dy = rnd(n, -1, 1, 24);
    double *in[3] = {to_d(x, n), to_d(ga, C), to_d(be, C)}, *dyd = to_d(dy, n);
    double *g[3] = {dalloc(n), dalloc(C), dalloc(C)};
    if (fd)
        for (int a = 0; a < 3; a++) free(g[a]), g[a] = fd_grad(gn_fwd, &p, in, a, nin[a], dyd, n);
    else
        gn_bwd(&p, in, dyd, g);
    size_t mark = sdc_arena_mark(&f->arena);
    sdc_tensor tx = UP(f, x, B, C, H, W), tg = UP(f, ga, C), tb = UP(f, be, C), tdy = UP(f, dy, B, C, H, W);
    sdc_tensor dx = FILLED(f, GARBAGE, B, C, H, W), dg = FILLED(f, BASE, C), db = FILLED(f, BASE, C);
    for (int rep = 0; rep < 2; rep++)
        sdc_op_group_norm_backward(&f->c, &dx, &dg, &db, &tdy, &tx, &tg, &tb, G, (float)p.eps, act);
    char what[128];
    snprintf(what, sizeof what, "group_norm%s B=%lld C=%lld S=%lld G=%d offset=%g act=%d", fd ? " (fd)" : "",
             (long long)B, (long long)C, (long long)(H * W), G, offset, (int)act);
    ASSIGNED(what, &dx, g[0], n);
    ACCUM2(what, &dg, g[1], C);
    ACCUM2(what, &db, g[2], C);
    sdc_tensor dx1 = FILLED(f, GARBAGE, B, C, H, W), dg1 = FILLED(f, BASE, C), db1 = FILLED(f, BASE, C);
    sdc_op_group_norm_backward(&f->c, &dx1, NULL, NULL, &tdy, &tx, &tg, &tb, G, (float)p.eps, act);
    sdc_op_group_norm_backward(&f->c, NULL, &dg1, NULL, &tdy, &tx, &tg, &tb, G, (float)p.eps, act);
    sdc_op_group_norm_backward(&f->c, NULL, NULL, &db1, &tdy, &tx, &tg, &tb, G, (float)p.eps, act);
    ASSIGNED(what, &dx1, g[0], n);
    close_to(what, &dg1, g[1], C, BASE, 1.0);
    close_to(what, &db1, g[2], C, BASE, 1.0);
    /* dx in place of dy */
    sdc_tensor dyc = UP(f, dy, B, C, H, W);
    sdc_op_group_norm_backward(&f->c, &dyc, NULL, NULL, &dyc, &tx, &tg, &tb, G, (float)p.eps, act);
    ASSIGNED(what, &dyc, g[0], n);
    sdc_arena_release(&f->arena, mark);
    for (int a = 0; a < 3; a++) free(in[a]), free(g[a]);
    free(x), free(ga), free(be), free(dy), free(dyd);
}

TEST(ops_bwd_group_norm) {
    fixture f;
    REQUIRE(fx_init(&f));
    for (int a = 0; a < 2; a++) {
        sdc_act act = a ? SDC_ACT_SILU : SDC_ACT_NONE;
        check_gn(&f, 2, 4, 2, 3, 2, 0, act, 1);
        check_gn(&f, 2, 3, 1, 5, 1, 0, act, 1);
        check_gn(&f, 1, 32, 1, 3, 32, 0, act, 1);
        check_gn(&f, 2, 64, 5, 7, 32, 0, act, 0);
        check_gn(&f, 3, 6, 3, 5, 1, 0, act, 0);
        check_gn(&f, 1, 96, 1, 1, 32, 0, act, 0); /* 3 values per group */
        check_gn(&f, 2, 32, 47, 45, 1, 0, act, 0); /* channels longer than the 2048-element pieces */
        /* mean 30 ≫ spread: x − μ must not cancel away the signal */
        check_gn(&f, 2, 64, 9, 11, 32, 30, act, 0);
    }
    /* the other activations fused (the backend allows any) */
    for (int a = 2; a < NACTS; a++) check_gn(&f, 2, 6, 2, 3, 3, 0, ALL_ACTS[a], 1);
    sdc_arena_free(&f.arena);
}

/* ---- layer norm -------------------------------------------------------------- */

typedef struct ln_p {
    int64_t M, C;
    double eps;
} ln_p;

static void ln_fwd(const void *pp, double *const *in, double *y) {
    const ln_p *p = pp;
    for (int64_t r = 0; r < p->M; r++) {
        const double *x = in[0] + r * p->C;
        double mu = 0, var = 0;
        for (int64_t c = 0; c < p->C; c++) mu += x[c];
        mu /= (double)p->C;
        for (int64_t c = 0; c < p->C; c++) var += (x[c] - mu) * (x[c] - mu);
        double rs = 1.0 / sqrt(var / (double)p->C + p->eps);
        for (int64_t c = 0; c < p->C; c++) y[r * p->C + c] = (x[c] - mu) * rs * in[1][c] + in[2][c];
    }
}

static void ln_bwd(const ln_p *p, double *const *in, const double *dy, double **g) {
    double *dxh = dalloc(p->C), *xh = dalloc(p->C);
    for (int64_t r = 0; r < p->M; r++) {
        const double *x = in[0] + r * p->C, *d = dy + r * p->C;
        double mu = 0, var = 0, m1 = 0, m2 = 0;
        for (int64_t c = 0; c < p->C; c++) mu += x[c];
        mu /= (double)p->C;
        for (int64_t c = 0; c < p->C; c++) var += (x[c] - mu) * (x[c] - mu);
        double rs = 1.0 / sqrt(var / (double)p->C + p->eps);
        for (int64_t c = 0; c < p->C; c++) {
            xh[c] = (x[c] - mu) * rs;
            dxh[c] = d[c] * in[1][c];
            g[1][c] += d[c] * xh[c];
            g[2][c] += d[c];
            m1 += dxh[c], m2 += dxh[c] * xh[c];
        }
        m1 /= (double)p->C, m2 /= (double)p->C;
        for (int64_t c = 0; c < p->C; c++) g[0][r * p->C + c] = rs * (dxh[c] - m1 - xh[c] * m2);
    }
    free(dxh), free(xh);
}

static void check_ln(fixture *f, int64_t A, int64_t T, int64_t C, float offset, int fd) {
    ln_p p = {A * T, C, 1e-5};
    int64_t n = A * T * C, nin[3] = {n, C, C};
    float *x = rnd(n, offset - 1, offset + 1, 31), *ga = rnd(C, 0.5f, 1.5f, 32), *be = rnd(C, -1, 1, 33);
    float *dy = rnd(n, -1, 1, 34);
    double *in[3] = {to_d(x, n), to_d(ga, C), to_d(be, C)}, *dyd = to_d(dy, n);
    double *g[3] = {dalloc(n), dalloc(C), dalloc(C)};
    if (fd)
        for (int a = 0; a < 3; a++) free(g[a]), g[a] = fd_grad(ln_fwd, &p, in, a, nin[a], dyd, n);
    else
        ln_bwd(&p, in, dyd, g);
    size_t mark = sdc_arena_mark(&f->arena);
    sdc_tensor tx = UP(f, x, A, T, C), tg = UP(f, ga, C), tdy = UP(f, dy, A, T, C);
    sdc_tensor dx = FILLED(f, GARBAGE, A, T, C), dg = FILLED(f, BASE, C), db = FILLED(f, BASE, C);
    for (int rep = 0; rep < 2; rep++) sdc_op_layer_norm_backward(&f->c, &dx, &dg, &db, &tdy, &tx, &tg, (float)p.eps);
    char what[96];
    snprintf(what, sizeof what, "layer_norm%s M=%lld C=%lld offset=%g", fd ? " (fd)" : "", (long long)p.M,
             (long long)C, offset);
    ASSIGNED(what, &dx, g[0], n);
    ACCUM2(what, &dg, g[1], C);
    ACCUM2(what, &db, g[2], C);
    sdc_tensor dx1 = FILLED(f, GARBAGE, A, T, C), dg1 = FILLED(f, BASE, C), db1 = FILLED(f, BASE, C);
    sdc_op_layer_norm_backward(&f->c, &dx1, NULL, NULL, &tdy, &tx, &tg, (float)p.eps);
    sdc_op_layer_norm_backward(&f->c, NULL, &dg1, NULL, &tdy, &tx, &tg, (float)p.eps);
    sdc_op_layer_norm_backward(&f->c, NULL, NULL, &db1, &tdy, &tx, &tg, (float)p.eps);
    ASSIGNED(what, &dx1, g[0], n);
    close_to(what, &dg1, g[1], C, BASE, 1.0);
    close_to(what, &db1, g[2], C, BASE, 1.0);
    /* dx in place of dy, all three at once */
    sdc_tensor dyc = UP(f, dy, A, T, C), dg2 = FILLED(f, BASE, C), db2 = FILLED(f, BASE, C);
    sdc_op_layer_norm_backward(&f->c, &dyc, &dg2, &db2, &dyc, &tx, &tg, (float)p.eps);
    ASSIGNED(what, &dyc, g[0], n);
    close_to(what, &dg2, g[1], C, BASE, 1.0);
    close_to(what, &db2, g[2], C, BASE, 1.0);
    sdc_arena_release(&f->arena, mark);
    for (int a = 0; a < 3; a++) free(in[a]), free(g[a]);
    free(x), free(ga), free(be), free(dy), free(dyd);
}

TEST(ops_bwd_layer_norm) {
    fixture f;
    REQUIRE(fx_init(&f));
    check_ln(&f, 2, 3, 5, 0, 1);
    check_ln(&f, 1, 2, 9, 0, 1);
    check_ln(&f, 2, 7, 45, 0, 0);
    check_ln(&f, 2, 13, 77, 0, 0);
    check_ln(&f, 3, 5, 131, 0, 0); /* more than two column blocks of 64 */
    check_ln(&f, 2, 7, 45, 30, 0); /* mean ≫ spread */
    sdc_arena_free(&f.arena);
}

/* ---- attention --------------------------------------------------------------- */

typedef struct att_p {
    int64_t B, Tq, Tk, D;
    int H, causal;
    double scale;
} att_p;

/* softmax row i of head (b, h) into P[0..Tk) (masked entries 0) */
static void att_probs(const att_p *p, double *const *in, int64_t b, int h, int64_t i, double *P) {
    int64_t HD = p->H * p->D, lim = p->causal && i + 1 < p->Tk ? i + 1 : p->Tk;
    double m = -INFINITY, l = 0;
    for (int64_t j = 0; j < p->Tk; j++) {
        P[j] = 0;
        if (j >= lim) continue;
        double s = 0;
        for (int64_t d = 0; d < p->D; d++)
            s += in[0][(b * p->Tq + i) * HD + h * p->D + d] * in[1][(b * p->Tk + j) * HD + h * p->D + d];
        P[j] = s * p->scale;
        if (P[j] > m) m = P[j];
    }
    for (int64_t j = 0; j < lim; j++) l += (P[j] = exp(P[j] - m));
    for (int64_t j = 0; j < lim; j++) P[j] /= l;
}

/* in: q, k, v */
static void att_fwd(const void *pp, double *const *in, double *y) {
    const att_p *p = pp;
    int64_t HD = p->H * p->D;
    double *P = dalloc(p->Tk);
    for (int64_t b = 0; b < p->B; b++)
        for (int h = 0; h < p->H; h++)
            for (int64_t i = 0; i < p->Tq; i++) {
                att_probs(p, in, b, h, i, P);
                for (int64_t d = 0; d < p->D; d++) {
                    double o = 0;
                    for (int64_t j = 0; j < p->Tk; j++) o += P[j] * in[2][(b * p->Tk + j) * HD + h * p->D + d];
                    y[(b * p->Tq + i) * HD + h * p->D + d] = o;
                }
            }
    free(P);
}

/* dS = P ⊙ (dP − Σ P·dP), dQ = scale·dS·K, dK = scale·dSᵀ·Q, dV = Pᵀ·dO */
static void att_bwd(const att_p *p, double *const *in, const double *dy, double **g) {
    int64_t HD = p->H * p->D;
    double *P = dalloc(p->Tk), *dP = dalloc(p->Tk);
    for (int64_t b = 0; b < p->B; b++)
        for (int h = 0; h < p->H; h++)
            for (int64_t i = 0; i < p->Tq; i++) {
                att_probs(p, in, b, h, i, P);
                const double *dO = dy + (b * p->Tq + i) * HD + h * p->D, *q = in[0] + (b * p->Tq + i) * HD + h * p->D;
                double delta = 0;
                for (int64_t j = 0; j < p->Tk; j++) {
                    const double *v = in[2] + (b * p->Tk + j) * HD + h * p->D;
                    dP[j] = 0;
                    for (int64_t d = 0; d < p->D; d++) dP[j] += dO[d] * v[d];
                    delta += P[j] * dP[j];
                }
                for (int64_t j = 0; j < p->Tk; j++) {
                    int64_t kj = (b * p->Tk + j) * HD + h * p->D;
                    double dS = P[j] * (dP[j] - delta);
                    for (int64_t d = 0; d < p->D; d++) {
                        g[0][(b * p->Tq + i) * HD + h * p->D + d] += p->scale * dS * in[1][kj + d];
                        g[1][kj + d] += p->scale * dS * q[d];
                        g[2][kj + d] += P[j] * dO[d];
                    }
                }
            }
    free(P), free(dP);
}

static void check_att(fixture *f, int64_t B, int64_t Tq, int64_t Tk, int H, int64_t D, float spread, int causal,
                      int fd) {
    att_p p = {B, Tq, Tk, D, H, causal, 1.0 / sqrt((double)D)};
    p.scale = (float)p.scale; /* the op gets it as a float */
    int64_t HD = H * D, nin[3] = {B * Tq * HD, B * Tk * HD, B * Tk * HD};
    float *q = rnd(nin[0], -spread, spread, 41), *k = rnd(nin[1], -spread, spread, 42), *v = rnd(nin[2], -1, 1, 43);
    float *dy = rnd(nin[0], -1, 1, 44);
    double *in[3] = {to_d(q, nin[0]), to_d(k, nin[1]), to_d(v, nin[2])}, *dyd = to_d(dy, nin[0]);
    double *g[3] = {dalloc(nin[0]), dalloc(nin[1]), dalloc(nin[2])};
    if (fd)
        for (int a = 0; a < 3; a++) free(g[a]), g[a] = fd_grad(att_fwd, &p, in, a, nin[a], dyd, nin[0]);
    else
        att_bwd(&p, in, dyd, g);
    size_t mark = sdc_arena_mark(&f->arena);
    sdc_tensor tq = UP(f, q, B, Tq, HD), tk = UP(f, k, B, Tk, HD), tv = UP(f, v, B, Tk, HD), tdy = UP(f, dy, B, Tq, HD);
    sdc_tensor dq = FILLED(f, GARBAGE, B, Tq, HD), dk = FILLED(f, GARBAGE, B, Tk, HD), dv = FILLED(f, GARBAGE, B, Tk, HD);
    float scale = (float)p.scale;
    /* all three are activation gradients: assigned, so a second call changes nothing */
    for (int rep = 0; rep < 2; rep++) sdc_op_attention_backward(&f->c, &dq, &dk, &dv, &tdy, &tq, &tk, &tv, H, scale, causal);
    char what[128];
    snprintf(what, sizeof what, "attention%s%s B=%lld Tq=%lld Tk=%lld H=%d D=%lld spread=%g causal=%d",
             fd ? " (fd)" : "", sdc_cpu_attention_portable ? " (portable)" : "", (long long)B, (long long)Tq, (long long)Tk, H, (long long)D, spread, causal);
    ASSIGNED(what, &dq, g[0], nin[0]);
    ASSIGNED(what, &dk, g[1], nin[1]);
    ASSIGNED(what, &dv, g[2], nin[2]);
    sdc_tensor dq1 = FILLED(f, GARBAGE, B, Tq, HD), dk1 = FILLED(f, GARBAGE, B, Tk, HD);
    sdc_tensor dv1 = FILLED(f, GARBAGE, B, Tk, HD);
    sdc_op_attention_backward(&f->c, &dq1, NULL, NULL, &tdy, &tq, &tk, &tv, H, scale, causal);
    sdc_op_attention_backward(&f->c, NULL, &dk1, NULL, &tdy, &tq, &tk, &tv, H, scale, causal);
    sdc_op_attention_backward(&f->c, NULL, NULL, &dv1, &tdy, &tq, &tk, &tv, H, scale, causal);
    ASSIGNED(what, &dq1, g[0], nin[0]);
    ASSIGNED(what, &dk1, g[1], nin[1]);
    ASSIGNED(what, &dv1, g[2], nin[2]);
    /* the same inputs give bit-identical gradients */
    CHECK_MSG(memcmp(dq.data, dq1.data, (size_t)nin[0] * sizeof(float)) == 0 &&
                  memcmp(dk.data, dk1.data, (size_t)nin[1] * sizeof(float)) == 0 &&
                  memcmp(dv.data, dv1.data, (size_t)nin[2] * sizeof(float)) == 0,
              "%s: not deterministic", what);
    sdc_arena_release(&f->arena, mark);
    for (int a = 0; a < 3; a++) free(in[a]), free(g[a]);
    free(q), free(k), free(v), free(dy), free(dyd);
}

/* every case on both paths: the fused AVX2 kernel (where the CPU has it;
 * otherwise both runs take the portable one) and the sgemm bands */
static void check_att_both(fixture *f, int64_t B, int64_t Tq, int64_t Tk, int H, int64_t D, float spread, int causal,
                           int fd) {
    for (int portable = 0; portable < 2; portable++) {
        sdc_cpu_attention_portable = portable;
        check_att(f, B, Tq, Tk, H, D, spread, causal, fd);
    }
    sdc_cpu_attention_portable = 0;
}
#define check_att check_att_both

TEST(ops_bwd_attention) {
    fixture f;
    REQUIRE(fx_init(&f));
    /* finite differences */
    check_att(&f, 2, 3, 4, 2, 3, 1, 0, 1);
    check_att(&f, 2, 4, 4, 2, 3, 1, 1, 1);
    check_att(&f, 1, 5, 3, 2, 2, 1, 1, 1); /* causal, Tq > Tk */
    /* analytic */
    check_att(&f, 2, 11, 7, 3, 5, 1, 0, 0); /* cross-attention shape: Tq ≠ Tk */
    check_att(&f, 2, 9, 9, 3, 5, 1, 1, 0);  /* CLIP: causal self-attention */
    check_att(&f, 1, 5, 9, 2, 7, 1, 1, 0);  /* causal, Tq < Tk */
    check_att(&f, 1, 9, 5, 2, 7, 1, 1, 0);  /* causal, Tq > Tk: late rows see every key */
    check_att(&f, 2, 37, 29, 3, 7, 1, 0, 0);
    check_att(&f, 2, 77, 77, 2, 40, 1, 1, 0);
    g_rtol = 4 * RTOL; /* peaked scores: see ops_bwd_attention_blocks */
    check_att(&f, 1, 6, 10, 2, 9, 4, 0, 0);
    g_rtol = RTOL;
    sdc_arena_free(&f.arena);
}

TEST(ops_bwd_attention_blocks) {
    /* sizes that cross the fused kernel's blocks: bands of 32 query rows,
     * 24-key panels, 256-key blocks of the dQ product, head dims split into
     * column chunks of ≤ 3 vectors (40 → 3+2, 64 → 3+3+2, 80 → 3+3+3+1,
     * 160), odd tails */
    fixture f;
    REQUIRE(fx_init(&f));
    check_att(&f, 2, 100, 300, 2, 40, 1, 0, 0);
    check_att(&f, 1, 300, 300, 2, 40, 1, 1, 0); /* causal across bands and key blocks */
    check_att(&f, 2, 77, 77, 2, 64, 1, 1, 0);   /* CLIP-L heads */
    check_att(&f, 1, 33, 50, 1, 80, 1, 0, 0);
    check_att(&f, 1, 31, 70, 2, 160, 1, 0, 0);
    /* peaked scores (|s| up to ~45) over many keys: an fp32 score carries an
     * absolute error ~|s|·2⁻²⁴·√D ≈ 1e-5, which moves P, and with it every
     * gradient, by about that much relatively; the summation order (SSE or
     * AVX2 lanes) decides where in that range a result lands */
    g_rtol = 4 * RTOL;
    check_att(&f, 1, 50, 520, 1, 8, 4, 0, 0);
    g_rtol = RTOL;
    /* more than 1024 query rows: split into tasks whose dK, dV shares are summed */
    check_att(&f, 1, 2100, 45, 2, 8, 1, 0, 0);
    check_att(&f, 1, 1100, 1100, 1, 4, 1, 1, 0);
    sdc_arena_free(&f.arena);
}
#undef check_att

TEST(ops_bwd_attention_bands) {
    /* the portable path with a small score budget: bands of 16 query rows
     * accumulating into dK, dV, the last band short; causal bands see a
     * growing key range */
    fixture f;
    REQUIRE(fx_init(&f));
    int64_t saved = sdc_cpu_score_max_floats;
    sdc_cpu_score_max_floats = 16 * 40;
    sdc_cpu_attention_portable = 1;
    check_att(&f, 2, 50, 40, 3, 5, 1, 0, 0);
    check_att(&f, 2, 50, 40, 3, 5, 1, 1, 0);
    check_att(&f, 1, 37, 60, 2, 3, 1, 1, 0);
    check_att(&f, 1, 20, 6, 2, 2, 1, 0, 1);
    sdc_cpu_attention_portable = 0;
    sdc_cpu_score_max_floats = saved;
    sdc_arena_free(&f.arena);
}

/* ---- activations, GEGLU ------------------------------------------------------- */

typedef struct act_p {
    int64_t n;
    sdc_act act;
} act_p;

static void act_fwd(const void *pp, double *const *in, double *y) {
    const act_p *p = pp;
    for (int64_t i = 0; i < p->n; i++) y[i] = act_d(in[0][i], p->act);
}

TEST(ops_bwd_activation) {
    fixture f;
    REQUIRE(fx_init(&f));
    const int64_t n = 7 * 11 * 13;
    float *x = rnd(n, -6, 6, 51), *dy = rnd(n, -1, 1, 52);
    x[0] = 0, x[1] = -30, x[2] = 30, x[3] = 1e-3f, x[4] = -1e-3f, x[5] = -0.49f, x[6] = 0.51f;
    double *xd = to_d(x, n), *dyd = to_d(dy, n), *ref = dalloc(n);
    for (int a = 0; a < NACTS; a++) {
        sdc_act act = ALL_ACTS[a];
        char what[64];
        /* finite differences on the first 64 values */
        act_p p = {64, act};
        double *in[1] = {xd};
        double *fd = fd_grad(act_fwd, &p, in, 0, 64, dyd, 64);
        sdc_tensor tx = UP(&f, x, 64), tdy = UP(&f, dy, 64), dx = FILLED(&f, GARBAGE, 64);
        sdc_op_act_backward(&f.c, &dx, &tdy, &tx, act);
        snprintf(what, sizeof what, "act %d (fd)", (int)act);
        ASSIGNED(what, &dx, fd, 64);
        free(fd);
        /* analytic, all values, out of place and in place */
        for (int64_t i = 0; i < n; i++) ref[i] = dyd[i] * act_grad_d(xd[i], act);
        sdc_tensor tx2 = UP(&f, x, 7, 11, 13), tdy2 = UP(&f, dy, 7, 11, 13), dx2 = FILLED(&f, GARBAGE, 7, 11, 13);
        sdc_op_act_backward(&f.c, &dx2, &tdy2, &tx2, act);
        snprintf(what, sizeof what, "act %d", (int)act);
        ASSIGNED(what, &dx2, ref, n);
        sdc_op_act_backward(&f.c, &tdy2, &tdy2, &tx2, act);
        snprintf(what, sizeof what, "act %d in place", (int)act);
        ASSIGNED(what, &tdy2, ref, n);
    }
    free(x), free(dy), free(xd), free(dyd), free(ref);
    sdc_arena_free(&f.arena);
}

typedef struct geglu_p {
    int64_t M, F;
} geglu_p;

static void geglu_fwd(const void *pp, double *const *in, double *y) {
    const geglu_p *p = pp;
    for (int64_t r = 0; r < p->M; r++)
        for (int64_t i = 0; i < p->F; i++)
            y[r * p->F + i] = in[0][r * 2 * p->F + i] * act_d(in[0][r * 2 * p->F + p->F + i], SDC_ACT_GELU);
}

static void check_geglu(fixture *f, int64_t A, int64_t T, int64_t F, int fd) {
    geglu_p p = {A * T, F};
    int64_t n = p.M * 2 * F, ny = p.M * F;
    float *x = rnd(n, -4, 4, 61), *dy = rnd(ny, -1, 1, 62);
    double *xd = to_d(x, n), *dyd = to_d(dy, ny), *ref;
    if (fd) {
        double *in[1] = {xd};
        ref = fd_grad(geglu_fwd, &p, in, 0, n, dyd, ny);
    } else {
        ref = dalloc(n);
        for (int64_t r = 0; r < p.M; r++)
            for (int64_t i = 0; i < F; i++) {
                double a = xd[r * 2 * F + i], gt = xd[r * 2 * F + F + i], d = dyd[r * F + i];
                ref[r * 2 * F + i] = d * act_d(gt, SDC_ACT_GELU);
                ref[r * 2 * F + F + i] = d * a * act_grad_d(gt, SDC_ACT_GELU);
            }
    }
    size_t mark = sdc_arena_mark(&f->arena);
    sdc_tensor tx = UP(f, x, A, T, 2 * F), tdy = UP(f, dy, A, T, F), dx = FILLED(f, GARBAGE, A, T, 2 * F);
    sdc_op_geglu_backward(&f->c, &dx, &tdy, &tx);
    char what[64];
    snprintf(what, sizeof what, "geglu%s M=%lld F=%lld", fd ? " (fd)" : "", (long long)p.M, (long long)F);
    ASSIGNED(what, &dx, ref, n);
    sdc_arena_release(&f->arena, mark);
    free(x), free(dy), free(xd), free(dyd), free(ref);
}

TEST(ops_bwd_geglu) {
    fixture f;
    REQUIRE(fx_init(&f));
    check_geglu(&f, 1, 3, 5, 1);
    check_geglu(&f, 3, 5, 13, 0);
    check_geglu(&f, 2, 9, 67, 0);
    sdc_arena_free(&f.arena);
}

/* ---- channel sum, upsampling, embedding ---------------------------------------- */

TEST(ops_bwd_channel_sum) {
    /* the gradient of add_channel's v: y = x + v[o,c] ⇒ ∂L/∂v[o,c] = Σ_s dy[o,c,s];
     * checked by finite differences of add_channel in double and analytically */
    fixture f;
    REQUIRE(fx_init(&f));
    const int64_t O = 3, C = 5, H = 7, W = 9, S = H * W;
    float *dy = rnd(O * C * S, -1, 1, 71);
    double *ref = dalloc(O * C), *fd = dalloc(O * C);
    for (int64_t oc = 0; oc < O * C; oc++)
        for (int64_t s = 0; s < S; s++) ref[oc] += dy[oc * S + s];
    /* L(v) = Σ dy·(x + v) is linear in v: a difference quotient is exact up to rounding */
    for (int64_t oc = 0; oc < O * C; oc++) {
        double L[2] = {0, 0};
        for (int sgn = 0; sgn < 2; sgn++)
            for (int64_t s = 0; s < S; s++) L[sgn] += dy[oc * S + s] * (0.3 + (sgn ? -1e-3 : 1e-3));
        fd[oc] = (L[0] - L[1]) / 2e-3;
    }
    sdc_tensor tdy = UP(&f, dy, O, C, H, W), dv = FILLED(&f, GARBAGE, O, C);
    sdc_op_channel_sum(&f.c, &dv, &tdy);
    ASSIGNED("channel_sum", &dv, ref, O * C);
    ASSIGNED("channel_sum (fd)", &dv, fd, O * C);
    free(dy), free(ref), free(fd);
    sdc_arena_free(&f.arena);
}

TEST(ops_bwd_upsample2x) {
    fixture f;
    REQUIRE(fx_init(&f));
    const int64_t B = 2, C = 3, H = 5, W = 7;
    float *dy = rnd(B * C * 4 * H * W, -1, 1, 81);
    double *ref = dalloc(B * C * H * W);
    for (int64_t p = 0; p < B * C; p++)
        for (int64_t y = 0; y < 2 * H; y++)
            for (int64_t x = 0; x < 2 * W; x++) ref[(p * H + y / 2) * W + x / 2] += dy[(p * 2 * H + y) * 2 * W + x];
    sdc_tensor tdy = UP(&f, dy, B, C, 2 * H, 2 * W), dx = FILLED(&f, GARBAGE, B, C, H, W);
    sdc_op_upsample2x_backward(&f.c, &dx, &tdy);
    ASSIGNED("upsample2x", &dx, ref, B * C * H * W);
    /* adjointness: <upsample(x), dy> = <x, upsample_backward(dy)> */
    float *x = rnd(B * C * H * W, -1, 1, 82);
    sdc_tensor tx = UP(&f, x, B, C, H, W);
    sdc_tensor y = sdc_op_upsample2x(&f.c, NULL, &tx);
    double l = 0, r = 0;
    for (int64_t i = 0; i < B * C * 4 * H * W; i++) l += (double)((float *)y.data)[i] * dy[i];
    for (int64_t i = 0; i < B * C * H * W; i++) r += (double)x[i] * ((float *)dx.data)[i];
    CHECK_NEAR(l, r, 1e-5 * (fabs(l) + 1));
    free(dy), free(ref), free(x);
    sdc_arena_free(&f.arena);
}

TEST(ops_bwd_embedding) {
    fixture f;
    REQUIRE(fx_init(&f));
    const int64_t V = 11, D = 300, n = 9;
    const int32_t ids[9] = {3, 0, 3, 10, 7, 3, 0, 5, 10}; /* repeats sum; ids 1, 2, 4, ... get nothing */
    float *dy = rnd(n * D, -1, 1, 91);
    double *ref = dalloc(V * D);
    for (int64_t i = 0; i < n; i++)
        for (int64_t d = 0; d < D; d++) ref[ids[i] * D + d] += dy[i * D + d];
    sdc_tensor tdy = UP(&f, dy, n, D), dt = FILLED(&f, BASE, V, D);
    for (int rep = 0; rep < 2; rep++) sdc_op_embedding_backward(&f.c, &dt, &tdy, ids, n);
    ACCUM2("embedding", &dt, ref, V * D);
    /* finite differences of the gather for one table row (id 3, three uses) */
    double fd[4];
    for (int64_t d = 0; d < 4; d++) {
        double L[2] = {0, 0};
        for (int sgn = 0; sgn < 2; sgn++)
            for (int64_t i = 0; i < n; i++)
                if (ids[i] == 3) L[sgn] += dy[i * D + d] * (sgn ? -1e-3 : 1e-3);
        fd[d] = (L[0] - L[1]) / 2e-3;
        CHECK_NEAR(((float *)dt.data)[3 * D + d], BASE + 2 * fd[d], 1e-5);
    }
    free(dy), free(ref);
    sdc_arena_free(&f.arena);
}

/* ---- determinism over thread counts -------------------------------------------- */

TEST(ops_bwd_thread_invariance) {
    /* reductions owned by one thread or summed in a fixed order: the same
     * bits with one OpenMP thread and with all of them (sizes above the
     * parallel threshold; the sgemm-based gradients depend on OpenBLAS's
     * own threads, not on OpenMP's, and are not covered here) */
#ifndef _OPENMP
    SKIP("built without OpenMP");
#else
    fixture f;
    REQUIRE(fx_init(&f));
    const int64_t B = 2, C = 64, H = 24, W = 23, n = B * C * H * W;
    float *x = rnd(n, -2, 2, 101), *dy = rnd(n, -1, 1, 102), *ga = rnd(C, 0.5f, 1.5f, 103);
    float *be = rnd(C, -1, 1, 104);
    sdc_tensor tx = UP(&f, x, B, C, H, W), tdy = UP(&f, dy, B, C, H, W), tg = UP(&f, ga, C), tb = UP(&f, be, C);
    /* the same data as rows of Q = 192 columns (three column blocks of 64) */
    const int64_t Q = 192, R = n / Q, N = 200;
    float *wv = rnd(N * Q, -1, 1, 105), *dyv = rnd(R * N, -1, 1, 106);
    sdc_tensor tx2 = sdc_reshape(&tx, R, Q), tdy2 = sdc_reshape(&tdy, R, Q), wl = UP(&f, wv, Q);
    sdc_tensor wlin = UP(&f, wv, N, Q), dyl = UP(&f, dyv, R, N);
    int32_t *ids = malloc((size_t)R * sizeof *ids);
    for (int64_t i = 0; i < R; i++) ids[i] = (int32_t)(i * 7 % 13);
    sdc_tensor out[2][11];
    int saved = omp_get_max_threads();
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run ? (saved > 1 ? saved : 2) : 1);
        sdc_tensor *o = out[run];
        o[0] = FILLED(&f, 0, B, C, H, W), o[1] = FILLED(&f, 0, C), o[2] = FILLED(&f, 0, C);
        sdc_op_group_norm_backward(&f.c, &o[0], &o[1], &o[2], &tdy, &tx, &tg, &tb, 32, 1e-5f, SDC_ACT_SILU);
        o[3] = FILLED(&f, 0, Q), o[4] = FILLED(&f, 0, Q);
        sdc_op_layer_norm_backward(&f.c, NULL, &o[3], &o[4], &tdy2, &tx2, &wl, 1e-5f);
        o[5] = FILLED(&f, 0, B, C);
        sdc_op_channel_sum(&f.c, &o[5], &tdy);
        o[6] = FILLED(&f, 0, N);
        sdc_op_linear_backward(&f.c, NULL, NULL, &o[6], &dyl, &tx2, &wlin);
        o[7] = FILLED(&f, 0, 13, Q);
        sdc_op_embedding_backward(&f.c, &o[7], &tdy2, ids, R);
        /* fused attention backward: one task per (batch, head) */
        sdc_tensor aq = sdc_reshape(&tx, 4, R / 4, Q), ak = sdc_reshape(&tdy, 4, R / 4, Q);
        o[8] = FILLED(&f, 0, 4, R / 4, Q), o[9] = FILLED(&f, 0, 4, R / 4, Q), o[10] = FILLED(&f, 0, 4, R / 4, Q);
        sdc_op_attention_backward(&f.c, &o[8], &o[9], &o[10], &ak, &aq, &ak, &aq, 3, 0.125f, 0);
    }
    omp_set_num_threads(saved);
    for (int i = 0; i < 11; i++)
        CHECK_MSG(memcmp(out[0][i].data, out[1][i].data, (size_t)sdc_tensor_numel(&out[0][i]) * sizeof(float)) == 0,
                  "output %d differs between 1 and %d threads", i, saved);
    free(x), free(dy), free(ga), free(be), free(ids), free(wv), free(dyv);
    sdc_arena_free(&f.arena);
#endif
}

/* ---- torch autograd goldens ----------------------------------------------------- */

typedef struct goldens {
    sdc_weights w;
    fixture *f;
} goldens;

/* golden `name` as a CPU tensor (NULL data if missing) */
static sdc_tensor gt(goldens *g, const char *name) {
    const sdc_weight *t = sdc_weights_find(&g->w, name);
    sdc_tensor out = {0};
    if (!t || t->dtype != SDC_F32) {
        CHECK_MSG(0, "golden %s missing or not F32", name);
        return out;
    }
    float *tmp = malloc(t->nbytes ? t->nbytes : 1);
    memcpy(tmp, t->data, t->nbytes);
    out = up(g->f, t->ndim, t->shape, tmp);
    free(tmp);
    return out;
}

/* an op gradient against golden `name` (the exact gradient rounded to fp32) */
static void vs_golden(goldens *g, const char *name, const sdc_tensor *got) {
    sdc_tensor ref = gt(g, name);
    if (!ref.data) return;
    int64_t n = sdc_tensor_numel(&ref);
    double *r = dalloc(n);
    for (int64_t i = 0; i < n; i++) r[i] = ((float *)ref.data)[i];
    char what[96];
    snprintf(what, sizeof what, "torch golden %s", name);
    CHECK_MSG(sdc_tensor_same_shape(&ref, got), "%s: shape differs", what);
    ASSIGNED(what, got, r, n);
    free(r);
}

#define ZEROS_LIKE(g, t) filled((g)->f, 0, (t).ndim, (t).shape)

TEST(ops_bwd_torch_goldens) {
    fixture f;
    REQUIRE(fx_init(&f));
    goldens g = {.f = &f};
    sdc_error err;
    sdc_weights_init(&g.w);
    REQUIRE_OK(sdc_safetensors_read(test_data("ops_backward.safetensors"), &g.w, &err), &err);
    /* conv2d 3×3 pad 1, strides 1 and 2 */
    const char *convs[2] = {"conv", "conv_s2"};
    for (int s = 0; s < 2; s++) {
        char nm[7][32];
        const char *sfx[7] = {"x", "w", "b", "dy", "dx", "dw", "db"};
        for (int i = 0; i < 7; i++) snprintf(nm[i], sizeof nm[i], "%s/%s", convs[s], sfx[i]);
        sdc_tensor x = gt(&g, nm[0]), w = gt(&g, nm[1]), b = gt(&g, nm[2]), dy = gt(&g, nm[3]);
        REQUIRE(x.data && w.data && b.data && dy.data);
        sdc_tensor dx = ZEROS_LIKE(&g, x), dw = ZEROS_LIKE(&g, w), db = ZEROS_LIKE(&g, b);
        sdc_op_conv2d_backward(&f.c, &dx, &dw, &db, &dy, &x, &w, s + 1, 1);
        vs_golden(&g, nm[4], &dx), vs_golden(&g, nm[5], &dw), vs_golden(&g, nm[6], &db);
    }
    { /* silu(group_norm(x, 32 groups, eps 1e-5)) */
        sdc_tensor x = gt(&g, "gn/x"), ga = gt(&g, "gn/gamma"), be = gt(&g, "gn/beta"), dy = gt(&g, "gn/dy");
        REQUIRE(x.data && ga.data && be.data && dy.data);
        sdc_tensor dx = ZEROS_LIKE(&g, x), dg = ZEROS_LIKE(&g, ga), db = ZEROS_LIKE(&g, be);
        sdc_op_group_norm_backward(&f.c, &dx, &dg, &db, &dy, &x, &ga, &be, 32, 1e-5f, SDC_ACT_SILU);
        vs_golden(&g, "gn/dx", &dx), vs_golden(&g, "gn/dgamma", &dg), vs_golden(&g, "gn/dbeta", &db);
    }
    { /* layer_norm, eps 1e-5 */
        sdc_tensor x = gt(&g, "ln/x"), ga = gt(&g, "ln/gamma"), dy = gt(&g, "ln/dy");
        REQUIRE(x.data && ga.data && dy.data);
        sdc_tensor dx = ZEROS_LIKE(&g, x), dg = ZEROS_LIKE(&g, ga), db = ZEROS_LIKE(&g, ga);
        sdc_op_layer_norm_backward(&f.c, &dx, &dg, &db, &dy, &x, &ga, 1e-5f);
        vs_golden(&g, "ln/dx", &dx), vs_golden(&g, "ln/dgamma", &dg), vs_golden(&g, "ln/dbeta", &db);
    }
    /* attention, 3 heads of 8, scale 8^-½ */
    const char *atts[2] = {"att", "att_causal"};
    for (int c = 0; c < 2; c++) {
        char nm[7][32];
        const char *sfx[7] = {"q", "k", "v", "dy", "dq", "dk", "dv"};
        for (int i = 0; i < 7; i++) snprintf(nm[i], sizeof nm[i], "%s/%s", atts[c], sfx[i]);
        sdc_tensor q = gt(&g, nm[0]), k = gt(&g, nm[1]), v = gt(&g, nm[2]), dy = gt(&g, nm[3]);
        REQUIRE(q.data && k.data && v.data && dy.data);
        sdc_tensor dq = ZEROS_LIKE(&g, q), dk = ZEROS_LIKE(&g, k), dv = ZEROS_LIKE(&g, v);
        sdc_op_attention_backward(&f.c, &dq, &dk, &dv, &dy, &q, &k, &v, 3, 1.0f / sqrtf(8.0f), c);
        vs_golden(&g, nm[4], &dq), vs_golden(&g, nm[5], &dk), vs_golden(&g, nm[6], &dv);
    }
    { /* geglu */
        sdc_tensor x = gt(&g, "geglu/x"), dy = gt(&g, "geglu/dy");
        REQUIRE(x.data && dy.data);
        sdc_tensor dx = ZEROS_LIKE(&g, x);
        sdc_op_geglu_backward(&f.c, &dx, &dy, &x);
        vs_golden(&g, "geglu/dx", &dx);
    }
    sdc_weights_free(&g.w);
    sdc_arena_free(&f.arena);
}
