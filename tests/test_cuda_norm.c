/* The CUDA backend's group norm and layer norm, forward and backward,
 * against the CPU backend (the fp32 reference), in F32, BF16 and F16.
 * Group norm shapes: tiny (C = G, S = 4), odd S (scalar loads, several
 * segments per channel), a big group split over many warps and blocks, and
 * SD-like; activations NONE and SILU everywhere, the others on small shapes.
 * Inputs are rounded to the dtype on the host first, so both backends see
 * the same values and the comparison measures only the GPU's arithmetic and
 * the rounding of its outputs. Device data moves through mem_upload /
 * mem_download with host-side conversion, so these tests need nothing from
 * the backend but the ops under test and memory. Every GPU run is done
 * twice and must repeat bit for bit. Skipped without a GPU. */
#include "cuda_test_util.h"

/* Parameter gradients are fp32 on both sides, in every dtype: sums of fp32
 * products of the same rounded inputs, so only the summation order and fp32
 * vs double statistics differ (≤ 3.3e-7 relative measured on an H200 over
 * these shapes, bf16 included); 1e-5 leaves a 30× margin. */
#define TOL_PARAM_GRAD 1e-5

static const sdc_dtype DTYPES[] = {SDC_F32, SDC_BF16, SDC_F16};
#define NDTYPES 3

typedef struct gn_shape {
    int64_t B, C, S;
    int G;
} gn_shape;

static const gn_shape GN_SHAPES[] = {
    {1, 32, 4, 32},       /* tiny test model: one channel per group, 4 pixels */
    {2, 32, 37, 8},       /* odd S: scalar loads */
    {1, 16, 3001, 4},     /* odd S over several segments per channel */
    {1, 64, 128 * 128, 32}, /* a big group (32768 elements) split over many warps */
    {2, 320, 32 * 32, 32},  /* SD-like: the UNet's first level at 256 px */
};
#define NGN (int)(sizeof GN_SHAPES / sizeof GN_SHAPES[0])

/* x rounded in place to dtype (so the CPU reference sees what the GPU sees). */
static void round_to(float *x, int64_t n, sdc_dtype dt) {
    if (dt == SDC_F32) return;
    void *tmp = malloc((size_t)n * sdc_dtype_size(dt) + 1);
    sdc_convert_from_f32(tmp, dt, x, (size_t)n);
    sdc_convert_to_f32(x, tmp, dt, (size_t)n);
    free(tmp);
}

/* A device tensor of dtype holding host fp32 values h (converted on the host). */
static sdc_tensor dev_of(const sdc_backend *be, const sdc_tensor *h, sdc_dtype dt) {
    sdc_tensor t = ct_dev_zeros(be, h->ndim, h->shape, dt);
    void *tmp = malloc(sdc_tensor_nbytes(&t) + 1);
    sdc_convert_from_f32(tmp, dt, h->data, (size_t)sdc_tensor_numel(h));
    be->mem_upload(t.data, tmp, sdc_tensor_nbytes(&t));
    free(tmp);
    return t;
}

/* The device tensor's values as a malloc'd fp32 array (converted on the host). */
static float *host_of(const sdc_backend *be, const sdc_tensor *t) {
    int64_t n = sdc_tensor_numel(t);
    void *tmp = malloc(sdc_tensor_nbytes(t) + 1);
    float *h = malloc((size_t)(n ? n : 1) * sizeof *h);
    be->mem_download(tmp, t->data, sdc_tensor_nbytes(t));
    sdc_convert_to_f32(h, tmp, t->dtype, (size_t)n);
    free(tmp);
    return h;
}

/* A host tensor offset + U(−a, a), rounded to dtype. */
static sdc_tensor rand_in(int ndim, const int64_t *shape, float a, float offset, uint64_t seed, sdc_dtype dt) {
    sdc_tensor t = ct_host_rand(ndim, shape, a, seed);
    float *d = t.data;
    for (int64_t i = 0; i < sdc_tensor_numel(&t); i++) d[i] += offset;
    round_to(t.data, sdc_tensor_numel(&t), dt);
    return t;
}

static int same_bits(const float *a, const float *b, int64_t n) {
    return memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

static const char *act_name(sdc_act a) {
    static const char *names[] = {"none", "silu", "gelu", "gelu_tanh", "quick_gelu"};
    return names[a];
}

/* ---- group norm ---------------------------------------------------------- */

/* Runs group_norm on both backends; x = offset + U(−1.5, 1.5). Returns 0
 * after a failed check. */
static int gn_check_forward(const sdc_backend *be, sdc_dtype dt, gn_shape s, sdc_act act, float offset,
                            uint64_t seed) {
    const sdc_backend *cpu = sdc_cpu_backend();
    int64_t xs[3] = {s.B, s.C, s.S}, cs[1] = {s.C}, n = s.B * s.C * s.S;
    sdc_tensor x = rand_in(3, xs, 1.5f, offset, seed, dt);
    sdc_tensor ga = rand_in(1, cs, 1.0f, 1.0f, seed + 1, dt), bt = rand_in(1, cs, 0.5f, 0.0f, seed + 2, dt);
    sdc_tensor ref = ct_host_zeros(3, xs);
    cpu->group_norm(&ref, &x, &ga, &bt, s.B, s.C, s.S, s.G, 1e-5f, act);

    sdc_tensor gx = dev_of(be, &x, dt), gg = dev_of(be, &ga, dt), gb = dev_of(be, &bt, dt);
    sdc_tensor junk = rand_in(3, xs, 100.0f, 0.0f, seed + 3, dt);
    sdc_tensor out = dev_of(be, &junk, dt); /* garbage first: out must be overwritten */
    be->group_norm(&out, &gx, &gg, &gb, s.B, s.C, s.S, s.G, 1e-5f, act);
    float *got = host_of(be, &out);
    be->group_norm(&out, &gx, &gg, &gb, s.B, s.C, s.S, s.G, 1e-5f, act);
    float *again = host_of(be, &out);
    double e = ct_rel_err(got, ref.data, n);
    int ok = e <= ct_tol(dt), same = same_bits(got, again, n);
    CHECK_MSG(ok && same, "group_norm %s act=%s B=%lld C=%lld S=%lld G=%d offset=%g: rel err %.3g (tol %.3g)%s",
              sdc_dtype_name(dt), act_name(act), (long long)s.B, (long long)s.C, (long long)s.S, s.G, offset, e,
              ct_tol(dt), same ? "" : ", repeat differs");
    free(got), free(again);
    ct_dev_free(be, &gx), ct_dev_free(be, &gg), ct_dev_free(be, &gb), ct_dev_free(be, &out);
    free(x.data), free(ga.data), free(bt.data), free(ref.data), free(junk.data);
    return ok && same;
}

/* Runs group_norm_backward on both backends with the gradients selected by
 * want (bit 0 dx, bit 1 dγ, bit 2 dβ); dγ, dβ start nonzero (about one
 * update's size) so the += is checked, and a gradient not asked for must be
 * left as it was. with_beta 0 passes β = NULL (act NONE only); alias makes dx
 * the dy buffer. The GPU runs twice from the same start and must repeat. */
static int gn_check_backward(const sdc_backend *be, sdc_dtype dt, gn_shape s, sdc_act act, int want, int with_beta,
                             int alias, uint64_t seed) {
    const sdc_backend *cpu = sdc_cpu_backend();
    int64_t xs[3] = {s.B, s.C, s.S}, cs[1] = {s.C}, n = s.B * s.C * s.S;
    sdc_tensor x = rand_in(3, xs, 1.5f, 0.25f, seed, dt), dy = rand_in(3, xs, 1.0f, 0.0f, seed + 1, dt);
    sdc_tensor ga = rand_in(1, cs, 1.0f, 1.0f, seed + 2, dt), bt = rand_in(1, cs, 0.5f, 0.0f, seed + 3, dt);
    float scale = sqrtf((float)(s.B * s.S));
    sdc_tensor dg0 = ct_host_rand(1, cs, 0.5f * scale, seed + 4), db0 = ct_host_rand(1, cs, scale, seed + 5);
    int wdx = want & 1, wdg = want & 2, wdb = want & 4;
    const sdc_tensor *pbt = with_beta ? &bt : NULL;

    sdc_tensor rdx = ct_host_zeros(3, xs), rdg = ct_host_zeros(1, cs), rdb = ct_host_zeros(1, cs);
    memcpy(rdg.data, dg0.data, (size_t)s.C * sizeof(float));
    memcpy(rdb.data, db0.data, (size_t)s.C * sizeof(float));
    cpu->group_norm_backward(wdx ? &rdx : NULL, wdg ? &rdg : NULL, wdb ? &rdb : NULL, &dy, &x, &ga, pbt, s.B, s.C,
                             s.S, s.G, 1e-5f, act);

    sdc_tensor gx = dev_of(be, &x, dt), gg = dev_of(be, &ga, dt), gb = dev_of(be, &bt, dt);
    sdc_tensor junk = rand_in(3, xs, 100.0f, 0.0f, seed + 6, dt); /* exact in dt: survives the round trip */
    int ok = 1;
    float *first[3] = {NULL, NULL, NULL};
    for (int rep = 0; rep < 2; rep++) {
        sdc_tensor gy = dev_of(be, &dy, dt);
        sdc_tensor gdx = alias ? gy : dev_of(be, &junk, dt); /* dx is assigned: garbage first */
        sdc_tensor gdg = dev_of(be, &dg0, SDC_F32), gdb = dev_of(be, &db0, SDC_F32);
        be->group_norm_backward(wdx ? &gdx : NULL, wdg ? &gdg : NULL, wdb ? &gdb : NULL, &gy, &gx, &gg,
                                with_beta ? &gb : NULL, s.B, s.C, s.S, s.G, 1e-5f, act);
        float *got[3] = {host_of(be, &gdx), host_of(be, &gdg), host_of(be, &gdb)};
        if (rep == 0) {
            double ex = ct_rel_err(got[0], rdx.data, n), eg = ct_rel_err(got[1], rdg.data, s.C);
            double eb = ct_rel_err(got[2], rdb.data, s.C);
            double tp = TOL_PARAM_GRAD;
            const float *untouched = alias ? dy.data : junk.data;
            int okx = wdx ? ex <= ct_tol(dt) : same_bits(got[0], untouched, n);
            int okg = wdg ? eg <= tp : same_bits(got[1], dg0.data, s.C);
            int okb = wdb ? eb <= tp : same_bits(got[2], db0.data, s.C);
            CHECK_MSG(okx && okg && okb,
                      "group_norm_backward %s act=%s B=%lld C=%lld S=%lld G=%d want=%d beta=%d alias=%d: rel err "
                      "dx %.3g (tol %.3g), dgamma %.3g, dbeta %.3g (tol %.3g)",
                      sdc_dtype_name(dt), act_name(act), (long long)s.B, (long long)s.C, (long long)s.S, s.G, want,
                      with_beta, alias, ex, ct_tol(dt), eg, eb, tp);
            ok = okx && okg && okb;
            for (int i = 0; i < 3; i++) first[i] = got[i];
        } else {
            int same = same_bits(first[0], got[0], n) && same_bits(first[1], got[1], s.C) &&
                       same_bits(first[2], got[2], s.C);
            CHECK_MSG(same, "group_norm_backward %s act=%s B=%lld C=%lld S=%lld G=%d: repeat differs",
                      sdc_dtype_name(dt), act_name(act), (long long)s.B, (long long)s.C, (long long)s.S, s.G);
            ok = ok && same;
            for (int i = 0; i < 3; i++) free(got[i]);
        }
        if (!alias) ct_dev_free(be, &gdx);
        ct_dev_free(be, &gy), ct_dev_free(be, &gdg), ct_dev_free(be, &gdb);
    }
    for (int i = 0; i < 3; i++) free(first[i]);
    ct_dev_free(be, &gx), ct_dev_free(be, &gg), ct_dev_free(be, &gb);
    free(x.data), free(dy.data), free(ga.data), free(bt.data), free(dg0.data), free(db0.data), free(junk.data);
    free(rdx.data), free(rdg.data), free(rdb.data);
    return ok;
}

TEST(cuda_norm_group_norm_forward) {
    CUDA_BACKEND_OR_SKIP(be);
    for (int d = 0; d < NDTYPES; d++)
        for (int i = 0; i < NGN; i++) {
            gn_check_forward(be, DTYPES[d], GN_SHAPES[i], SDC_ACT_NONE, 0.25f, 100 + 10 * i);
            gn_check_forward(be, DTYPES[d], GN_SHAPES[i], SDC_ACT_SILU, 0.25f, 150 + 10 * i);
        }
}

TEST(cuda_norm_group_norm_backward) {
    CUDA_BACKEND_OR_SKIP(be);
    for (int d = 0; d < NDTYPES; d++)
        for (int i = 0; i < NGN; i++) {
            gn_check_backward(be, DTYPES[d], GN_SHAPES[i], SDC_ACT_NONE, 7, 1, 0, 200 + 10 * i);
            gn_check_backward(be, DTYPES[d], GN_SHAPES[i], SDC_ACT_SILU, 7, 1, 0, 250 + 10 * i);
        }
}

TEST(cuda_norm_group_norm_other_activations) {
    /* every sdc_act fused, forward and backward, on the small shapes */
    CUDA_BACKEND_OR_SKIP(be);
    sdc_act acts[3] = {SDC_ACT_GELU, SDC_ACT_GELU_TANH, SDC_ACT_QUICK_GELU};
    for (int a = 0; a < 3; a++)
        for (int i = 0; i < 3; i++) {
            gn_check_forward(be, SDC_F32, GN_SHAPES[i], acts[a], 0.25f, 300 + 10 * i + a);
            gn_check_backward(be, SDC_F32, GN_SHAPES[i], acts[a], 7, 1, 0, 350 + 10 * i + a);
            gn_check_backward(be, SDC_BF16, GN_SHAPES[i], acts[a], 7, 1, 0, 380 + 10 * i + a);
        }
}

TEST(cuda_norm_group_norm_backward_some_grads) {
    /* each gradient alone and in pairs; β = NULL without activation; dx in
     * place of dy */
    CUDA_BACKEND_OR_SKIP(be);
    gn_shape s = {2, 32, 37, 8}, big = {1, 64, 128 * 128, 32};
    for (int want = 1; want < 7; want++) {
        gn_check_backward(be, SDC_F32, s, SDC_ACT_SILU, want, 1, 0, 400 + want);
        gn_check_backward(be, SDC_BF16, s, SDC_ACT_NONE, want, 0, 0, 410 + want);
    }
    gn_check_backward(be, SDC_F32, s, SDC_ACT_SILU, 7, 1, 1, 420);
    gn_check_backward(be, SDC_BF16, big, SDC_ACT_SILU, 7, 1, 1, 421);
    gn_check_backward(be, SDC_F32, big, SDC_ACT_NONE, 1, 0, 1, 422);
}

TEST(cuda_norm_group_norm_large_mean) {
    /* |μ| ≫ σ: x = 8 + U(−1.5, 1.5) over big groups. E[x²] − E[x]² in fp32
     * would lose most of σ²'s digits; Welford/Chan keeps the F32 bound. */
    CUDA_BACKEND_OR_SKIP(be);
    gn_check_forward(be, SDC_F32, GN_SHAPES[3], SDC_ACT_NONE, 8.0f, 500);
    gn_check_forward(be, SDC_F32, GN_SHAPES[4], SDC_ACT_SILU, 8.0f, 501);
}

/* ---- layer norm ---------------------------------------------------------- */

typedef struct ln_shape {
    int64_t M, C;
} ln_shape;

static const ln_shape LN_SHAPES[] = {
    {7, 32},          /* tiny test model */
    {5, 64},          /* tiny test model, wider */
    {9, 33},          /* odd C: scalar loads */
    {154, 768},       /* CLIP-L: 2 prompts × 77 tokens */
    {2048, 320},      /* SD-like: 2 images × 1024 tokens */
    {64, 2048},       /* the widest (SDXL's text encoder 2 is 1280; MLPs larger) */
    {3000, 40},       /* many rows: the dγ/dβ row chunks */
};
#define NLN (int)(sizeof LN_SHAPES / sizeof LN_SHAPES[0])

static int ln_check_forward(const sdc_backend *be, sdc_dtype dt, ln_shape s, float offset, uint64_t seed) {
    const sdc_backend *cpu = sdc_cpu_backend();
    int64_t xs[2] = {s.M, s.C}, cs[1] = {s.C}, n = s.M * s.C;
    sdc_tensor x = rand_in(2, xs, 1.5f, offset, seed, dt);
    sdc_tensor ga = rand_in(1, cs, 1.0f, 1.0f, seed + 1, dt), bt = rand_in(1, cs, 0.5f, 0.0f, seed + 2, dt);
    sdc_tensor ref = ct_host_zeros(2, xs);
    cpu->layer_norm(&ref, &x, &ga, &bt, s.M, s.C, 1e-5f);

    sdc_tensor gx = dev_of(be, &x, dt), gg = dev_of(be, &ga, dt), gb = dev_of(be, &bt, dt);
    sdc_tensor junk = rand_in(2, xs, 100.0f, 0.0f, seed + 3, dt);
    sdc_tensor out = dev_of(be, &junk, dt);
    be->layer_norm(&out, &gx, &gg, &gb, s.M, s.C, 1e-5f);
    float *got = host_of(be, &out);
    be->layer_norm(&out, &gx, &gg, &gb, s.M, s.C, 1e-5f);
    float *again = host_of(be, &out);
    double e = ct_rel_err(got, ref.data, n);
    int ok = e <= ct_tol(dt), same = same_bits(got, again, n);
    CHECK_MSG(ok && same, "layer_norm %s M=%lld C=%lld offset=%g: rel err %.3g (tol %.3g)%s", sdc_dtype_name(dt),
              (long long)s.M, (long long)s.C, offset, e, ct_tol(dt), same ? "" : ", repeat differs");
    free(got), free(again);
    ct_dev_free(be, &gx), ct_dev_free(be, &gg), ct_dev_free(be, &gb), ct_dev_free(be, &out);
    free(x.data), free(ga.data), free(bt.data), free(ref.data), free(junk.data);
    return ok && same;
}

/* As gn_check_backward, for layer_norm_backward. */
static int ln_check_backward(const sdc_backend *be, sdc_dtype dt, ln_shape s, int want, int alias, uint64_t seed) {
    const sdc_backend *cpu = sdc_cpu_backend();
    int64_t xs[2] = {s.M, s.C}, cs[1] = {s.C}, n = s.M * s.C;
    sdc_tensor x = rand_in(2, xs, 1.5f, 0.25f, seed, dt), dy = rand_in(2, xs, 1.0f, 0.0f, seed + 1, dt);
    sdc_tensor ga = rand_in(1, cs, 1.0f, 1.0f, seed + 2, dt);
    float scale = sqrtf((float)s.M);
    sdc_tensor dg0 = ct_host_rand(1, cs, 0.5f * scale, seed + 3), db0 = ct_host_rand(1, cs, scale, seed + 4);
    int wdx = want & 1, wdg = want & 2, wdb = want & 4;

    sdc_tensor rdx = ct_host_zeros(2, xs), rdg = ct_host_zeros(1, cs), rdb = ct_host_zeros(1, cs);
    memcpy(rdg.data, dg0.data, (size_t)s.C * sizeof(float));
    memcpy(rdb.data, db0.data, (size_t)s.C * sizeof(float));
    cpu->layer_norm_backward(wdx ? &rdx : NULL, wdg ? &rdg : NULL, wdb ? &rdb : NULL, &dy, &x, &ga, s.M, s.C, 1e-5f);

    sdc_tensor gx = dev_of(be, &x, dt), gg = dev_of(be, &ga, dt);
    sdc_tensor junk = rand_in(2, xs, 100.0f, 0.0f, seed + 5, dt);
    int ok = 1;
    float *first[3] = {NULL, NULL, NULL};
    for (int rep = 0; rep < 2; rep++) {
        sdc_tensor gy = dev_of(be, &dy, dt);
        sdc_tensor gdx = alias ? gy : dev_of(be, &junk, dt);
        sdc_tensor gdg = dev_of(be, &dg0, SDC_F32), gdb = dev_of(be, &db0, SDC_F32);
        be->layer_norm_backward(wdx ? &gdx : NULL, wdg ? &gdg : NULL, wdb ? &gdb : NULL, &gy, &gx, &gg, s.M, s.C,
                                1e-5f);
        float *got[3] = {host_of(be, &gdx), host_of(be, &gdg), host_of(be, &gdb)};
        if (rep == 0) {
            double ex = ct_rel_err(got[0], rdx.data, n), eg = ct_rel_err(got[1], rdg.data, s.C);
            double eb = ct_rel_err(got[2], rdb.data, s.C);
            double tp = TOL_PARAM_GRAD;
            const float *untouched = alias ? dy.data : junk.data;
            int okx = wdx ? ex <= ct_tol(dt) : same_bits(got[0], untouched, n);
            int okg = wdg ? eg <= tp : same_bits(got[1], dg0.data, s.C);
            int okb = wdb ? eb <= tp : same_bits(got[2], db0.data, s.C);
            CHECK_MSG(okx && okg && okb,
                      "layer_norm_backward %s M=%lld C=%lld want=%d alias=%d: rel err dx %.3g (tol %.3g), dgamma "
                      "%.3g, dbeta %.3g (tol %.3g)",
                      sdc_dtype_name(dt), (long long)s.M, (long long)s.C, want, alias, ex, ct_tol(dt), eg, eb, tp);
            ok = okx && okg && okb;
            for (int i = 0; i < 3; i++) first[i] = got[i];
        } else {
            int same = same_bits(first[0], got[0], n) && same_bits(first[1], got[1], s.C) &&
                       same_bits(first[2], got[2], s.C);
            CHECK_MSG(same, "layer_norm_backward %s M=%lld C=%lld: repeat differs", sdc_dtype_name(dt),
                      (long long)s.M, (long long)s.C);
            ok = ok && same;
            for (int i = 0; i < 3; i++) free(got[i]);
        }
        if (!alias) ct_dev_free(be, &gdx);
        ct_dev_free(be, &gy), ct_dev_free(be, &gdg), ct_dev_free(be, &gdb);
    }
    for (int i = 0; i < 3; i++) free(first[i]);
    ct_dev_free(be, &gx), ct_dev_free(be, &gg);
    free(x.data), free(dy.data), free(ga.data), free(dg0.data), free(db0.data), free(junk.data);
    free(rdx.data), free(rdg.data), free(rdb.data);
    return ok;
}

TEST(cuda_norm_layer_norm_forward) {
    CUDA_BACKEND_OR_SKIP(be);
    for (int d = 0; d < NDTYPES; d++)
        for (int i = 0; i < NLN; i++) ln_check_forward(be, DTYPES[d], LN_SHAPES[i], 0.25f, 600 + 10 * i);
    /* |μ| ≫ σ: the second pass's mean correction keeps the F32 bound */
    ln_check_forward(be, SDC_F32, LN_SHAPES[4], 8.0f, 690);
}

TEST(cuda_norm_layer_norm_backward) {
    CUDA_BACKEND_OR_SKIP(be);
    for (int d = 0; d < NDTYPES; d++)
        for (int i = 0; i < NLN; i++) ln_check_backward(be, DTYPES[d], LN_SHAPES[i], 7, 0, 700 + 10 * i);
}

TEST(cuda_norm_layer_norm_backward_some_grads) {
    /* each gradient alone and in pairs; dx in place of dy, with and without
     * the parameter gradients (which must read dy before dx overwrites it) */
    CUDA_BACKEND_OR_SKIP(be);
    ln_shape s = {9, 33}, big = {2048, 320};
    for (int want = 1; want < 7; want++) {
        ln_check_backward(be, SDC_F32, s, want, 0, 800 + want);
        ln_check_backward(be, SDC_BF16, big, want, 0, 810 + want);
    }
    ln_check_backward(be, SDC_F32, s, 7, 1, 820);
    ln_check_backward(be, SDC_BF16, big, 7, 1, 821);
    ln_check_backward(be, SDC_F32, big, 1, 1, 822);
}
