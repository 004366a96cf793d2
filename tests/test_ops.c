/* The CPU backend through the sdc_op_* wrappers, against naive
 * double-precision loops written here. Sizes are odd on purpose (not
 * multiples of 4/8/16), batches > 1, several heads, Tq ≠ Tk.
 *
 * Tolerance: |got − ref| ≤ 1e-5·(|ref| + mean|ref|). fp32 arithmetic gives
 * ~6e-8 per rounding; sums of up to a few hundred terms and the vectorized
 * exp/erf (~1e-7) stay well inside 1e-5 of the values' scale, while any
 * indexing mistake is off by O(1). The mean|ref| term keeps entries near zero
 * (cancellation in a dot product) from demanding more than fp32 can give. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "backend/cpu/cpu_ops.h"
#include "backend/ops.h"
#include "core/arena.h"
#include "test.h"

#define RTOL 1e-5

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
static void fill_rand(float *x, int64_t n, float lo, float hi, uint32_t seed) {
    uint64_t s = 0x9E3779B97F4A7C15ull ^ seed;
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = lo + (hi - lo) * (float)((s >> 40) * (1.0 / 16777216.0));
    }
}

static float *rnd(int64_t n, float lo, float hi, uint32_t seed) {
    float *x = malloc((size_t)(n ? n : 1) * sizeof(float));
    fill_rand(x, n, lo, hi, seed);
    return x;
}

/* a CPU tensor from host data (through sdc_op_upload) */
static sdc_tensor up(fixture *f, int ndim, const int64_t *shape, const float *src) {
    return sdc_op_upload(&f->c, NULL, ndim, shape, src);
}
#define UP(f, src, ...) up((f), SDC_NDIM(__VA_ARGS__), SDC_SHAPE(__VA_ARGS__), (src))

/* The tolerance rule of the file header; reports the worst element. */
static int close_to(const char *what, const sdc_tensor *t, const double *ref, int64_t n) {
    if (sdc_tensor_numel(t) != n) {
        CHECK_MSG(0, "%s: %lld elements, want %lld", what, (long long)sdc_tensor_numel(t), (long long)n);
        return 0;
    }
    const float *got = t->data;
    double mean = 0;
    for (int64_t i = 0; i < n; i++) mean += fabs(ref[i]);
    mean = n ? mean / (double)n : 0;
    double worst = 0;
    int64_t wi = -1;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]), lim = RTOL * (fabs(ref[i]) + mean);
        if (!(d <= lim) && (wi < 0 || d / lim > worst)) {
            worst = d / lim;
            wi = i;
        }
    }
    if (wi >= 0) {
        CHECK_MSG(0, "%s: element %lld: got %.9g, want %.9g (%.3gx the tolerance)", what, (long long)wi,
                  (double)got[wi], ref[wi], worst);
        return 0;
    }
    return 1;
}

static double *dalloc(int64_t n) { return calloc((size_t)(n ? n : 1), sizeof(double)); }

/* ---- linear --------------------------------------------------------------- */

static void check_linear(fixture *f, int64_t A, int64_t Bt, int64_t K, int64_t N, int with_bias) {
    int64_t M = A * Bt;
    float *x = rnd(M * K, -1, 1, 1), *w = rnd(N * K, -1, 1, 2), *b = rnd(N, -1, 1, 3);
    sdc_tensor tx = UP(f, x, A, Bt, K), tw = UP(f, w, N, K), tb = UP(f, b, N);
    sdc_tensor y = sdc_op_linear(&f->c, NULL, &tx, &tw, with_bias ? &tb : NULL);
    CHECK(y.ndim == 3 && y.shape[0] == A && y.shape[1] == Bt && y.shape[2] == N);
    double *ref = dalloc(M * N);
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = with_bias ? b[n] : 0.0;
            for (int64_t k = 0; k < K; k++) s += (double)x[m * K + k] * w[n * K + k];
            ref[m * N + n] = s;
        }
    char what[64];
    snprintf(what, sizeof what, "linear M=%lld K=%lld N=%lld bias=%d", (long long)M, (long long)K, (long long)N,
             with_bias);
    close_to(what, &y, ref, M * N);
    free(x), free(w), free(b), free(ref);
}

TEST(ops_linear) {
    fixture f;
    REQUIRE(fx_init(&f));
    check_linear(&f, 3, 7, 19, 13, 1);
    check_linear(&f, 2, 5, 37, 29, 0);
    check_linear(&f, 1, 1, 3, 1, 1);
    check_linear(&f, 2, 77, 131, 67, 1);
    sdc_arena_free(&f.arena);
}

/* ---- conv2d --------------------------------------------------------------- */

static void check_conv(fixture *f, int64_t B, int64_t Ci, int64_t H, int64_t W, int64_t Co, int k, int stride,
                       int pad, int with_bias) {
    float *x = rnd(B * Ci * H * W, -1, 1, 11), *w = rnd(Co * Ci * k * k, -1, 1, 12), *b = rnd(Co, -1, 1, 13);
    sdc_tensor tx = UP(f, x, B, Ci, H, W), tw = UP(f, w, Co, Ci, k, k), tb = UP(f, b, Co);
    sdc_tensor y = sdc_op_conv2d(&f->c, NULL, &tx, &tw, with_bias ? &tb : NULL, stride, pad);
    int64_t Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
    CHECK(y.shape[0] == B && y.shape[1] == Co && y.shape[2] == Ho && y.shape[3] == Wo);
    double *ref = dalloc(B * Co * Ho * Wo);
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t co = 0; co < Co; co++)
            for (int64_t oy = 0; oy < Ho; oy++)
                for (int64_t ox = 0; ox < Wo; ox++) {
                    double s = with_bias ? b[co] : 0.0;
                    for (int64_t ci = 0; ci < Ci; ci++)
                        for (int i = 0; i < k; i++)
                            for (int j = 0; j < k; j++) {
                                int64_t iy = oy * stride - pad + i, ix = ox * stride - pad + j;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                s += (double)x[((bi * Ci + ci) * H + iy) * W + ix] * w[((co * Ci + ci) * k + i) * k + j];
                            }
                    ref[((bi * Co + co) * Ho + oy) * Wo + ox] = s;
                }
    char what[128];
    snprintf(what, sizeof what, "conv B=%lld Ci=%lld %lldx%lld Co=%lld k=%d s=%d p=%d bias=%d", (long long)B,
             (long long)Ci, (long long)H, (long long)W, (long long)Co, k, stride, pad, with_bias);
    close_to(what, &y, ref, B * Co * Ho * Wo);
    free(x), free(w), free(b), free(ref);
}

TEST(ops_conv2d) {
    fixture f;
    REQUIRE(fx_init(&f));
    check_conv(&f, 2, 5, 9, 7, 6, 3, 1, 1, 1);  /* the UNet's 3×3 */
    check_conv(&f, 2, 5, 9, 7, 6, 3, 2, 1, 1);  /* downsampler */
    check_conv(&f, 2, 3, 10, 11, 7, 3, 2, 0, 1);
    check_conv(&f, 1, 4, 8, 5, 3, 3, 1, 0, 0);
    check_conv(&f, 2, 9, 6, 7, 5, 1, 1, 0, 1);  /* 1×1: the direct GEMM */
    check_conv(&f, 2, 9, 6, 7, 5, 1, 1, 0, 0);
    check_conv(&f, 2, 6, 7, 9, 4, 1, 2, 0, 1);  /* 1×1 strided: through im2col */
    check_conv(&f, 2, 3, 5, 5, 4, 1, 1, 1, 1);  /* 1×1 padded */
    check_conv(&f, 1, 3, 2, 3, 2, 3, 1, 1, 1);  /* image smaller than the kernel reach */
    check_conv(&f, 1, 2, 2, 1, 3, 3, 1, 2, 1);  /* pad 2: kernel columns entirely outside the image */
    check_conv(&f, 2, 2, 5, 4, 3, 3, 2, 2, 1);
    sdc_arena_free(&f.arena);
}

TEST(ops_conv2d_bands) {
    /* a tiny im2col budget: bands of one to a few output rows, the last one short */
    fixture f;
    REQUIRE(fx_init(&f));
    int64_t saved = sdc_cpu_col_max_floats;
    sdc_cpu_col_max_floats = 1; /* one row per band */
    check_conv(&f, 2, 5, 9, 7, 6, 3, 1, 1, 1);
    sdc_cpu_col_max_floats = 5 * 9 * 7 * 3; /* three rows of Wo=7 per band; Ho=9 is not a multiple... */
    check_conv(&f, 2, 5, 10, 7, 6, 3, 1, 1, 1); /* ...and Ho=10 leaves a band of one */
    check_conv(&f, 2, 5, 11, 13, 6, 3, 2, 1, 0);
    sdc_cpu_col_max_floats = saved;
    sdc_arena_free(&f.arena);
}

/* ---- norms ---------------------------------------------------------------- */

static double act_ref(double x, sdc_act act) {
    switch (act) {
    case SDC_ACT_SILU: return x / (1.0 + exp(-x));
    case SDC_ACT_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case SDC_ACT_GELU_TANH: return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case SDC_ACT_QUICK_GELU: return x / (1.0 + exp(-1.702 * x));
    case SDC_ACT_NONE: break;
    }
    return x;
}

static void check_group_norm(fixture *f, int64_t B, int64_t C, int64_t H, int64_t W, int G, float offset,
                             sdc_act act) {
    int64_t S = H * W, n = B * C * S;
    float *x = rnd(n, offset - 2, offset + 2, 21), *g = rnd(C, 0.5f, 1.5f, 22), *be = rnd(C, -1, 1, 23);
    sdc_tensor tx = UP(f, x, B, C, H, W), tg = UP(f, g, C), tb = UP(f, be, C);
    const float eps = 1e-5f;
    sdc_tensor y = sdc_op_group_norm(&f->c, NULL, &tx, &tg, &tb, G, eps, act);
    double *ref = dalloc(n);
    int64_t cpg = C / G;
    for (int64_t b = 0; b < B; b++)
        for (int gi = 0; gi < G; gi++) {
            const float *xg = x + (b * C + gi * cpg) * S;
            double mu = 0, var = 0;
            for (int64_t i = 0; i < cpg * S; i++) mu += xg[i];
            mu /= (double)(cpg * S);
            for (int64_t i = 0; i < cpg * S; i++) var += (xg[i] - mu) * (xg[i] - mu);
            var /= (double)(cpg * S);
            for (int64_t c = gi * cpg; c < (gi + 1) * cpg; c++)
                for (int64_t s = 0; s < S; s++) {
                    int64_t i = (b * C + c) * S + s;
                    ref[i] = act_ref((x[i] - mu) / sqrt(var + eps) * g[c] + be[c], act);
                }
        }
    char what[96];
    snprintf(what, sizeof what, "group_norm B=%lld C=%lld S=%lld G=%d offset=%g act=%d", (long long)B, (long long)C,
             (long long)S, G, offset, (int)act);
    close_to(what, &y, ref, n);
    free(x), free(g), free(be), free(ref);
}

TEST(ops_group_norm) {
    fixture f;
    REQUIRE(fx_init(&f));
    check_group_norm(&f, 2, 64, 5, 7, 32, 0, SDC_ACT_NONE);
    check_group_norm(&f, 2, 64, 5, 7, 32, 0, SDC_ACT_SILU);
    check_group_norm(&f, 3, 6, 3, 5, 1, 0, SDC_ACT_NONE);
    check_group_norm(&f, 1, 96, 1, 1, 32, 0, SDC_ACT_SILU); /* 3 values per group */
    /* mean 300 ≫ spread: a one-pass E[x²]−E[x]² in fp32 would lose the variance */
    check_group_norm(&f, 2, 64, 9, 11, 32, 300, SDC_ACT_NONE);
    sdc_arena_free(&f.arena);
}

TEST(ops_layer_norm) {
    fixture f;
    REQUIRE(fx_init(&f));
    const int64_t A = 2, T = 7, C = 45;
    const float eps = 1e-5f;
    for (int pass = 0; pass < 2; pass++) {
        float offset = pass ? 100.0f : 0.0f;
        float *x = rnd(A * T * C, offset - 1, offset + 1, 31), *g = rnd(C, 0.5f, 1.5f, 32), *be = rnd(C, -1, 1, 33);
        sdc_tensor tx = UP(&f, x, A, T, C), tg = UP(&f, g, C), tb = UP(&f, be, C);
        sdc_tensor y = sdc_op_layer_norm(&f.c, NULL, &tx, &tg, &tb, eps);
        double *ref = dalloc(A * T * C);
        for (int64_t r = 0; r < A * T; r++) {
            double mu = 0, var = 0;
            for (int64_t c = 0; c < C; c++) mu += x[r * C + c];
            mu /= C;
            for (int64_t c = 0; c < C; c++) var += (x[r * C + c] - mu) * (x[r * C + c] - mu);
            var /= C;
            for (int64_t c = 0; c < C; c++) ref[r * C + c] = (x[r * C + c] - mu) / sqrt(var + eps) * g[c] + be[c];
        }
        close_to(pass ? "layer_norm offset" : "layer_norm", &y, ref, A * T * C);
        free(x), free(g), free(be), free(ref);
    }
    sdc_arena_free(&f.arena);
}

/* ---- attention ------------------------------------------------------------ */

static void check_attention(fixture *f, int64_t B, int64_t Tq, int64_t Tk, int H, int64_t D, float spread,
                            int causal) {
    int64_t HD = H * D;
    float *q = rnd(B * Tq * HD, -spread, spread, 41), *k = rnd(B * Tk * HD, -spread, spread, 42);
    float *v = rnd(B * Tk * HD, -1, 1, 43);
    sdc_tensor tq = UP(f, q, B, Tq, HD), tk = UP(f, k, B, Tk, HD), tv = UP(f, v, B, Tk, HD);
    float scale = 1.0f / sqrtf((float)D);
    sdc_tensor y = sdc_op_attention(&f->c, NULL, &tq, &tk, &tv, H, scale, causal);
    double *ref = dalloc(B * Tq * HD), *p = dalloc(Tk);
    for (int64_t b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int64_t i = 0; i < Tq; i++) {
                int64_t lim = causal && i + 1 < Tk ? i + 1 : Tk;
                double m = -INFINITY, l = 0;
                for (int64_t j = 0; j < lim; j++) {
                    double s = 0;
                    for (int64_t d = 0; d < D; d++)
                        s += (double)q[(b * Tq + i) * HD + h * D + d] * k[(b * Tk + j) * HD + h * D + d];
                    p[j] = s * scale;
                    if (p[j] > m) m = p[j];
                }
                for (int64_t j = 0; j < lim; j++) l += (p[j] = exp(p[j] - m));
                for (int64_t d = 0; d < D; d++) {
                    double o = 0;
                    for (int64_t j = 0; j < lim; j++) o += p[j] * v[(b * Tk + j) * HD + h * D + d];
                    ref[(b * Tq + i) * HD + h * D + d] = o / l;
                }
            }
    char what[128];
    snprintf(what, sizeof what, "attention%s B=%lld Tq=%lld Tk=%lld H=%d D=%lld spread=%g causal=%d",
             sdc_cpu_attention_portable ? " (portable)" : "", (long long)B, (long long)Tq, (long long)Tk, H,
             (long long)D, spread, causal);
    close_to(what, &y, ref, B * Tq * HD);
    /* the same inputs give bit-identical outputs */
    sdc_tensor y2 = sdc_op_attention(&f->c, NULL, &tq, &tk, &tv, H, scale, causal);
    CHECK_MSG(memcmp(y.data, y2.data, (size_t)(B * Tq * HD) * sizeof(float)) == 0, "%s: not deterministic", what);
    free(q), free(k), free(v), free(ref), free(p);
}

/* Every case runs on both paths: the fused AVX2 kernel (where the CPU has
 * it; otherwise both runs take the portable one) and the sgemm bands. */
static void check_attention_both(fixture *f, int64_t B, int64_t Tq, int64_t Tk, int H, int64_t D, float spread,
                                 int causal) {
    for (int portable = 0; portable < 2; portable++) {
        sdc_cpu_attention_portable = portable;
        check_attention(f, B, Tq, Tk, H, D, spread, causal);
    }
    sdc_cpu_attention_portable = 0;
}

TEST(ops_attention) {
    fixture f;
    REQUIRE(fx_init(&f));
    check_attention_both(&f, 2, 11, 7, 3, 5, 1, 0);  /* cross-attention shape: Tq ≠ Tk */
    check_attention_both(&f, 2, 9, 9, 3, 5, 1, 1);   /* CLIP: causal self-attention */
    check_attention_both(&f, 1, 5, 9, 2, 7, 1, 1);   /* causal, Tq < Tk */
    check_attention_both(&f, 1, 9, 5, 2, 7, 1, 1);   /* causal, Tq > Tk: late rows see every key */
    check_attention_both(&f, 2, 13, 17, 4, 3, 1, 0);
    /* scores up to ~±100: exp overflows without the row-max shift */
    check_attention_both(&f, 1, 6, 10, 2, 9, 6, 0);
    sdc_arena_free(&f.arena);
}

TEST(ops_attention_blocks) {
    /* sizes that cross the fused kernel's blocks: 48 query rows per task,
     * 256 keys per block (D ≤ 64), head dims split into several column
     * chunks (64 → 4+4 vectors, 84 → 3+4+4, 160 → 5+5+5+5), odd tails */
    fixture f;
    REQUIRE(fx_init(&f));
    check_attention_both(&f, 2, 100, 300, 2, 40, 1, 0);
    check_attention_both(&f, 1, 300, 300, 2, 40, 1, 1); /* causal across key blocks */
    check_attention_both(&f, 2, 77, 77, 2, 64, 1, 1);   /* CLIP-L heads */
    check_attention_both(&f, 1, 60, 50, 1, 84, 1, 0);
    check_attention_both(&f, 1, 49, 130, 2, 160, 1, 0);
    check_attention_both(&f, 1, 20, 33, 1, 512, 0.3f, 0); /* the VAE's single head */
    /* peaked scores that move the running max between key blocks */
    check_attention_both(&f, 1, 50, 520, 1, 8, 5, 0);
    sdc_arena_free(&f.arena);
}

TEST(ops_attention_bands) {
    /* the portable path with a small score budget: bands of 16 query rows,
     * the last one short */
    fixture f;
    REQUIRE(fx_init(&f));
    int64_t saved = sdc_cpu_score_max_floats;
    sdc_cpu_score_max_floats = 16 * 40;
    sdc_cpu_attention_portable = 1;
    check_attention(&f, 2, 50, 40, 3, 5, 1, 0);
    check_attention(&f, 2, 50, 40, 3, 5, 1, 1);
    check_attention(&f, 1, 37, 60, 2, 3, 1, 1);
    sdc_cpu_attention_portable = 0;
    sdc_cpu_score_max_floats = saved;
    sdc_arena_free(&f.arena);
}

/* ---- elementwise ---------------------------------------------------------- */

TEST(ops_activation) {
    fixture f;
    REQUIRE(fx_init(&f));
    const int64_t n = 1001;
    float *x = rnd(n, -12, 12, 51);
    /* the extremes: where a naive σ overflows, and exact zero */
    x[0] = 0, x[1] = -100, x[2] = 100, x[3] = -88.5f, x[4] = 89, x[5] = 1e-3f, x[6] = -1e-3f, x[7] = -0.49f;
    const sdc_act acts[] = {SDC_ACT_NONE, SDC_ACT_SILU, SDC_ACT_GELU, SDC_ACT_GELU_TANH, SDC_ACT_QUICK_GELU};
    double *ref = dalloc(n);
    for (size_t a = 0; a < sizeof acts / sizeof acts[0]; a++) {
        for (int64_t i = 0; i < n; i++) ref[i] = act_ref(x[i], acts[a]);
        sdc_tensor tx = UP(&f, x, 7, 11, 13);
        sdc_tensor y = sdc_op_act(&f.c, NULL, &tx, acts[a]);
        char what[48];
        snprintf(what, sizeof what, "act %d", (int)acts[a]);
        close_to(what, &y, ref, n);
        /* in place (the header allows out == x) */
        sdc_op_act(&f.c, &tx, &tx, acts[a]);
        snprintf(what, sizeof what, "act %d in place", (int)acts[a]);
        close_to(what, &tx, ref, n);
    }
    free(x), free(ref);
    sdc_arena_free(&f.arena);
}

TEST(ops_gelu_accuracy) {
    /* exact GELU over a fine grid, tighter than the file tolerance where it
     * matters: 2e-6 relative on x ≥ −5 (the range activations live in) */
    fixture f;
    REQUIRE(fx_init(&f));
    const int64_t n = 20001;
    float *x = malloc(n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = -5.0f + 10.0f * (float)i / (float)(n - 1);
    sdc_tensor tx = UP(&f, x, n);
    sdc_tensor y = sdc_op_act(&f.c, NULL, &tx, SDC_ACT_GELU);
    const float *g = y.data;
    double worst = 0;
    int64_t wi = 0;
    for (int64_t i = 0; i < n; i++) {
        double r = act_ref(x[i], SDC_ACT_GELU), e = fabs(g[i] - r) / (fabs(r) + 1e-30);
        if (r != 0 && e > worst) worst = e, wi = i;
    }
    CHECK_MSG(worst < 2e-6, "gelu(%g) = %.9g, want %.9g (rel %.3g)", (double)x[wi], (double)g[wi],
              act_ref(x[wi], SDC_ACT_GELU), worst);
    free(x);
    sdc_arena_free(&f.arena);
}

TEST(ops_geglu) {
    fixture f;
    REQUIRE(fx_init(&f));
    const int64_t A = 3, T = 5, F = 13;
    float *x = rnd(A * T * 2 * F, -4, 4, 61);
    sdc_tensor tx = UP(&f, x, A, T, 2 * F);
    sdc_tensor y = sdc_op_geglu(&f.c, NULL, &tx);
    CHECK(y.ndim == 3 && y.shape[2] == F);
    double *ref = dalloc(A * T * F);
    for (int64_t r = 0; r < A * T; r++)
        for (int64_t i = 0; i < F; i++)
            ref[r * F + i] = x[r * 2 * F + i] * act_ref(x[r * 2 * F + F + i], SDC_ACT_GELU);
    close_to("geglu", &y, ref, A * T * F);
    free(x), free(ref);
    sdc_arena_free(&f.arena);
}

TEST(ops_axpby) {
    fixture f;
    REQUIRE(fx_init(&f));
    const int64_t n = 3 * 37 * 41; /* over the parallel threshold's chunks, not a multiple of 8 */
    float *a = rnd(n, -1, 1, 71), *b = rnd(n, -1, 1, 72);
    double *ref = dalloc(n);
    sdc_tensor ta = UP(&f, a, 3, 37, 41), tb = UP(&f, b, 3, 37, 41);
    for (int64_t i = 0; i < n; i++) ref[i] = 0.5 * a[i] - 2.0 * b[i];
    sdc_tensor y = sdc_op_axpby(&f.c, NULL, 0.5f, &ta, -2.0f, &tb);
    close_to("axpby", &y, ref, n);
    for (int64_t i = 0; i < n; i++) ref[i] = (double)a[i] + b[i];
    y = sdc_op_add(&f.c, NULL, &ta, &tb);
    close_to("add", &y, ref, n);
    for (int64_t i = 0; i < n; i++) ref[i] = 3.0 * a[i];
    y = sdc_op_scale(&f.c, NULL, &ta, 3.0f);
    close_to("scale", &y, ref, n);
    /* out aliases a, then b */
    for (int64_t i = 0; i < n; i++) ref[i] = 0.25 * a[i] + 1.5 * b[i];
    sdc_op_axpby(&f.c, &ta, 0.25f, &ta, 1.5f, &tb);
    close_to("axpby out=a", &ta, ref, n);
    for (int64_t i = 0; i < n; i++) ref[i] = 2.0 * ref[i] - (double)b[i];
    sdc_op_axpby(&f.c, &tb, 2.0f, &ta, -1.0f, &tb);
    close_to("axpby out=b", &tb, ref, n);
    free(a), free(b), free(ref);
    sdc_arena_free(&f.arena);
}

TEST(ops_add_channel) {
    fixture f;
    REQUIRE(fx_init(&f));
    const int64_t O = 2, C = 3, H = 5, W = 7, n = O * C * H * W;
    float *x = rnd(n, -1, 1, 81), *v = rnd(O * C, -1, 1, 82);
    double *ref = dalloc(n);
    for (int64_t i = 0; i < n; i++) ref[i] = (double)x[i] + v[i / (H * W)];
    sdc_tensor tx = UP(&f, x, O, C, H, W), tv = UP(&f, v, O, C);
    sdc_tensor y = sdc_op_add_channel(&f.c, NULL, &tx, &tv);
    close_to("add_channel", &y, ref, n);
    sdc_op_add_channel(&f.c, &tx, &tx, &tv);
    close_to("add_channel in place", &tx, ref, n);
    free(x), free(v), free(ref);
    sdc_arena_free(&f.arena);
}

/* ---- layout --------------------------------------------------------------- */

TEST(ops_concat_slice) {
    fixture f;
    REQUIRE(fx_init(&f));
    const int64_t O = 2, Ca = 3, Cb = 4, H = 5, W = 3, S = H * W;
    float *a = rnd(O * Ca * S, -1, 1, 91), *b = rnd(O * Cb * S, -1, 1, 92);
    sdc_tensor ta = UP(&f, a, O, Ca, H, W), tb = UP(&f, b, O, Cb, H, W);
    sdc_tensor y = sdc_op_concat1(&f.c, NULL, &ta, &tb);
    CHECK(y.shape[1] == Ca + Cb && y.shape[2] == H && y.shape[3] == W);
    double *ref = dalloc(O * (Ca + Cb) * S);
    for (int64_t o = 0; o < O; o++)
        for (int64_t c = 0; c < Ca + Cb; c++)
            for (int64_t s = 0; s < S; s++)
                ref[(o * (Ca + Cb) + c) * S + s] = c < Ca ? a[(o * Ca + c) * S + s] : b[(o * Cb + c - Ca) * S + s];
    close_to("concat1", &y, ref, O * (Ca + Cb) * S);
    /* slicing the concatenation back gives b */
    sdc_tensor back = sdc_op_slice1(&f.c, NULL, &y, Ca, Cb);
    for (int64_t i = 0; i < O * Cb * S; i++) ref[i] = b[i];
    close_to("slice1", &back, ref, O * Cb * S);
    sdc_tensor mid = sdc_op_slice1(&f.c, NULL, &y, 2, 3);
    for (int64_t o = 0; o < O; o++)
        for (int64_t c = 0; c < 3; c++)
            for (int64_t s = 0; s < S; s++) {
                int64_t cc = 2 + c;
                ref[(o * 3 + c) * S + s] = cc < Ca ? a[(o * Ca + cc) * S + s] : b[(o * Cb + cc - Ca) * S + s];
            }
    close_to("slice1 middle", &mid, ref, O * 3 * S);
    free(a), free(b), free(ref);
    sdc_arena_free(&f.arena);
}

TEST(ops_tokens) {
    /* [B,C,H,W] ↔ [B,HW,C] with sizes around the 32×32 transpose tile */
    fixture f;
    REQUIRE(fx_init(&f));
    const int64_t B = 2, C = 37, H = 5, W = 9, S = H * W;
    float *x = rnd(B * C * S, -1, 1, 101);
    sdc_tensor tx = UP(&f, x, B, C, H, W);
    sdc_tensor t = sdc_op_to_tokens(&f.c, NULL, &tx);
    CHECK(t.ndim == 3 && t.shape[1] == S && t.shape[2] == C);
    double *ref = dalloc(B * C * S);
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < S; s++) ref[(b * S + s) * C + c] = x[(b * C + c) * S + s];
    close_to("to_tokens", &t, ref, B * C * S);
    sdc_tensor back = sdc_op_from_tokens(&f.c, NULL, &t, H, W);
    CHECK(back.ndim == 4 && back.shape[1] == C && back.shape[2] == H && back.shape[3] == W);
    CHECK(memcmp(back.data, x, (size_t)(B * C * S) * sizeof(float)) == 0);
    free(x), free(ref);
    sdc_arena_free(&f.arena);
}

TEST(ops_upsample2x) {
    fixture f;
    REQUIRE(fx_init(&f));
    const int64_t B = 2, C = 3, H = 5, W = 7;
    float *x = rnd(B * C * H * W, -1, 1, 111);
    sdc_tensor tx = UP(&f, x, B, C, H, W);
    sdc_tensor y = sdc_op_upsample2x(&f.c, NULL, &tx);
    CHECK(y.shape[2] == 2 * H && y.shape[3] == 2 * W);
    double *ref = dalloc(B * C * 4 * H * W);
    for (int64_t p = 0; p < B * C; p++)
        for (int64_t i = 0; i < 2 * H; i++)
            for (int64_t j = 0; j < 2 * W; j++) ref[(p * 2 * H + i) * 2 * W + j] = x[(p * H + i / 2) * W + j / 2];
    close_to("upsample2x", &y, ref, B * C * 4 * H * W);
    free(x), free(ref);
    sdc_arena_free(&f.arena);
}

TEST(ops_pad2d) {
    /* the VAE encoder's (0,1,0,1) and a symmetric pad */
    fixture f;
    REQUIRE(fx_init(&f));
    const int64_t B = 2, C = 3, H = 5, W = 7;
    float *x = rnd(B * C * H * W, -1, 1, 131);
    sdc_tensor tx = UP(&f, x, B, C, H, W);
    const int pads[2][4] = {{0, 1, 0, 1}, {2, 1, 3, 2}};
    for (int k = 0; k < 2; k++) {
        int t = pads[k][0], bo = pads[k][1], l = pads[k][2], r = pads[k][3];
        int64_t Ho = H + t + bo, Wo = W + l + r;
        sdc_tensor y = sdc_op_pad2d(&f.c, NULL, &tx, t, bo, l, r);
        CHECK(y.shape[2] == Ho && y.shape[3] == Wo);
        double *ref = dalloc(B * C * Ho * Wo);
        for (int64_t p = 0; p < B * C; p++)
            for (int64_t i = 0; i < H; i++)
                for (int64_t j = 0; j < W; j++) ref[(p * Ho + i + t) * Wo + j + l] = x[(p * H + i) * W + j];
        close_to(k ? "pad2d (2,1,3,2)" : "pad2d (0,1,0,1)", &y, ref, B * C * Ho * Wo);
        free(ref);
    }
    free(x);
    sdc_arena_free(&f.arena);
}

TEST(ops_embedding_upload_fill) {
    fixture f;
    REQUIRE(fx_init(&f));
    const int64_t V = 11, D = 6;
    float *tab = rnd(V * D, -1, 1, 121);
    sdc_tensor tt = UP(&f, tab, V, D);
    const int32_t ids[] = {3, 0, 10, 3, 7};
    sdc_tensor y = sdc_op_embedding(&f.c, NULL, &tt, ids, 5);
    CHECK(y.shape[0] == 5 && y.shape[1] == D);
    double ref[5 * 6];
    for (int i = 0; i < 5; i++)
        for (int64_t d = 0; d < D; d++) ref[i * D + d] = tab[ids[i] * D + d];
    close_to("embedding", &y, ref, 5 * D);
    /* download returns exactly what upload took */
    float back[11 * 6];
    sdc_op_download(&f.c, back, &tt);
    CHECK(memcmp(back, tab, sizeof back) == 0);
    sdc_op_fill(&f.c, &tt, -2.5f);
    sdc_op_download(&f.c, back, &tt);
    int all = 1;
    for (int64_t i = 0; i < V * D; i++) all &= back[i] == -2.5f;
    CHECK(all);
    free(tab);
    sdc_arena_free(&f.arena);
}
