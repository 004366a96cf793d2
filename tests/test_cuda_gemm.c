/* The CUDA backend's linear and linear_backward against the CPU backend (the
 * fp32 reference), in F32, BF16 and F16, at shapes with odd sizes, one row,
 * and an SD-like projection. Inputs are rounded to the dtype on the host
 * first, so both backends see the same values and the comparison measures
 * only the GPU's arithmetic (and the rounding of its outputs). Device data
 * moves through mem_upload/mem_download with host-side conversion, so these
 * tests need nothing from the backend but the ops under test and memory.
 * Skipped without a GPU. */
#include "cuda_test_util.h"

/* Test hook in cuda_gemm.cu: nonzero forces the tiled fallback kernel that
 * covers shapes cuBLASLt rejects (weak: absent in a build without CUDA). */
extern int sdc_cuda_gemm_fallback __attribute__((weak));
/* The backend's --allow_tf32 switch (cuda_backend.cu). */
extern int sdc_cuda_allow_tf32 __attribute__((weak));

typedef struct shape {
    int64_t M, K, N;
} shape;

static const shape SHAPES[] = {
    {1, 1280, 320},    /* one row (time embedding) */
    {5, 37, 32},       /* odd K */
    {33, 32, 37},      /* odd N */
    {7, 3, 5},         /* all tiny and odd */
    {3, 17, 1},        /* one output column */
    {77, 768, 320},    /* cross-attention k/v projection */
    {2048, 320, 1280}, /* SD-like: 2 images × 1024 tokens, 320 → 1280 */
};
#define NSHAPES (int)(sizeof SHAPES / sizeof SHAPES[0])
static const sdc_dtype DTYPES[] = {SDC_F32, SDC_BF16, SDC_F16};

/* Parameter gradients are fp32 sums of products of the same rounded inputs
 * on both sides (a product of two bf16/f16 values is exact in fp32), so only
 * the summation order and the tensor cores' fp32 accumulation differ:
 * ~√(reduction)·2⁻²⁴ typically, bounded well under 1e-4 for reductions of a
 * few thousand terms. */
#define TOL_PARAM_GRAD 1e-4
/* TF32 keeps 10 mantissa bits: each input is off by up to 2⁻¹¹ (2⁻¹⁰ if
 * truncated), so a product's relative rms error is ~1e-3 at most. */
#define TOL_TF32 3e-3

/* One comparison's setup: dtype, element offset of every device pointer
 * (see dev_of), and the tolerances of activations and parameter gradients. */
typedef struct cfg {
    sdc_dtype dt;
    int off;
    double tol_act, tol_param;
} cfg;

static cfg plain(sdc_dtype dt) {
    return (cfg){dt, 0, ct_tol(dt), dt == SDC_F32 ? CT_TOL_F32 : TOL_PARAM_GRAD};
}

/* x rounded in place to dtype (so the CPU reference sees what the GPU sees). */
static void round_to(float *x, int64_t n, sdc_dtype dt) {
    if (dt == SDC_F32) return;
    void *tmp = malloc((size_t)n * sdc_dtype_size(dt) + 1);
    sdc_convert_from_f32(tmp, dt, x, (size_t)n);
    sdc_convert_to_f32(x, tmp, dt, (size_t)n);
    free(tmp);
}

/* A device tensor of dtype holding host fp32 values h (converted on the
 * host), placed `off` elements into its allocation: off = 1 gives the
 * 2- or 4-byte aligned pointers of a view into a tensor with odd rows. */
typedef struct dbuf {
    sdc_tensor t;
    void *base;
    size_t bytes;
} dbuf;

static dbuf dev_of(const sdc_backend *be, const sdc_tensor *h, sdc_dtype dt, int off) {
    dbuf b;
    b.t = sdc_tensor_make(dt, h->ndim, h->shape, NULL);
    b.t.device = (sdc_device){SDC_CUDA, 0};
    size_t esz = sdc_dtype_size(dt), nb = sdc_tensor_nbytes(&b.t);
    b.bytes = nb + (size_t)off * esz + 1;
    b.base = be->mem_alloc(b.bytes);
    b.t.data = (char *)b.base + (size_t)off * esz;
    void *tmp = malloc(nb + 1);
    sdc_convert_from_f32(tmp, dt, h->data, (size_t)sdc_tensor_numel(h));
    be->mem_upload(b.t.data, tmp, nb);
    free(tmp);
    return b;
}

static void dfree(const sdc_backend *be, dbuf *b) {
    be->mem_free(b->base, b->bytes);
    b->base = b->t.data = NULL;
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

/* A host tensor U(−a, a) rounded to dtype. */
static sdc_tensor rand_in(int ndim, const int64_t *shape, float a, uint64_t seed, sdc_dtype dt) {
    sdc_tensor t = ct_host_rand(ndim, shape, a, seed);
    round_to(t.data, sdc_tensor_numel(&t), dt);
    return t;
}

/* Runs linear on both backends; returns 0 after a failed check. */
static int check_forward(const sdc_backend *be, cfg c, shape s, int with_bias, uint64_t seed) {
    const sdc_backend *cpu = sdc_cpu_backend();
    sdc_dtype dt = c.dt;
    int64_t xs[2] = {s.M, s.K}, ws[2] = {s.N, s.K}, bs[1] = {s.N}, os[2] = {s.M, s.N};
    sdc_tensor x = rand_in(2, xs, 1.0f, seed, dt), w = rand_in(2, ws, 0.5f, seed + 1, dt);
    sdc_tensor b = rand_in(1, bs, 1.0f, seed + 2, dt);
    sdc_tensor ref = ct_host_zeros(2, os);
    cpu->linear(&ref, &x, &w, with_bias ? &b : NULL, s.M, s.K, s.N);

    dbuf gx = dev_of(be, &x, dt, c.off), gw = dev_of(be, &w, dt, c.off), gb = dev_of(be, &b, dt, c.off);
    /* garbage in out first: linear must overwrite it, bias or not */
    sdc_tensor junk = ct_host_rand(2, os, 100.0f, seed + 3);
    dbuf out = dev_of(be, &junk, dt, c.off);
    be->linear(&out.t, &gx.t, &gw.t, with_bias ? &gb.t : NULL, s.M, s.K, s.N);
    float *got = host_of(be, &out.t);
    double e = ct_rel_err(got, ref.data, s.M * s.N);
    int ok = e <= c.tol_act;
    CHECK_MSG(ok, "linear %s off=%d M=%lld K=%lld N=%lld bias=%d: rel err %.3g > %.3g", sdc_dtype_name(dt), c.off,
              (long long)s.M, (long long)s.K, (long long)s.N, with_bias, e, c.tol_act);
    /* a repeat gives the same bits (the cached plan is the same algorithm) */
    be->linear(&out.t, &gx.t, &gw.t, with_bias ? &gb.t : NULL, s.M, s.K, s.N);
    float *again = host_of(be, &out.t);
    int same = memcmp(got, again, (size_t)(s.M * s.N) * sizeof(float)) == 0;
    CHECK_MSG(same, "linear %s M=%lld K=%lld N=%lld: repeat differs", sdc_dtype_name(dt), (long long)s.M,
              (long long)s.K, (long long)s.N);
    free(got), free(again);
    dfree(be, &gx), dfree(be, &gw), dfree(be, &gb), dfree(be, &out);
    free(x.data), free(w.data), free(b.data), free(ref.data), free(junk.data);
    return ok && same;
}

/* Runs linear_backward on both backends with the gradients selected by
 * want (bit 0 dx, bit 1 dw, bit 2 db); dw and db start nonzero so the +=
 * is checked, dx starts as garbage so the = is. Returns 0 after a failed
 * check. */
static int check_backward(const sdc_backend *be, cfg c, shape s, int want, uint64_t seed) {
    const sdc_backend *cpu = sdc_cpu_backend();
    sdc_dtype dt = c.dt;
    int64_t xs[2] = {s.M, s.K}, ws[2] = {s.N, s.K}, bs[1] = {s.N}, ys[2] = {s.M, s.N};
    int64_t nx = s.M * s.K, nw = s.N * s.K;
    sdc_tensor x = rand_in(2, xs, 1.0f, seed, dt), w = rand_in(2, ws, 0.5f, seed + 1, dt);
    sdc_tensor dy = rand_in(2, ys, 1.0f, seed + 2, dt);
    /* fp32 parameter gradients, of the size of one update */
    sdc_tensor dw0 = ct_host_rand(2, ws, 0.5f * sqrtf((float)s.M), seed + 3);
    sdc_tensor db0 = ct_host_rand(1, bs, sqrtf((float)s.M), seed + 4);
    sdc_tensor junk = rand_in(2, xs, 100.0f, seed + 5, dt); /* exact in dt: survives the round trip */
    int wdx = want & 1, wdw = want & 2, wdb = want & 4;

    sdc_tensor rdx = ct_host_zeros(2, xs), rdw = ct_host_zeros(2, ws), rdb = ct_host_zeros(1, bs);
    memcpy(rdw.data, dw0.data, (size_t)nw * sizeof(float));
    memcpy(rdb.data, db0.data, (size_t)s.N * sizeof(float));
    cpu->linear_backward(wdx ? &rdx : NULL, wdw ? &rdw : NULL, wdb ? &rdb : NULL, &dy, &x, &w, s.M, s.K, s.N);

    dbuf gx = dev_of(be, &x, dt, c.off), gw = dev_of(be, &w, dt, c.off), gy = dev_of(be, &dy, dt, c.off);
    int ok = 1;
    /* twice from the same start: the second must repeat the first bit for bit */
    float *first[3] = {NULL, NULL, NULL};
    for (int rep = 0; rep < 2; rep++) {
        dbuf gdx = dev_of(be, &junk, dt, c.off);
        dbuf gdw = dev_of(be, &dw0, SDC_F32, c.off), gdb = dev_of(be, &db0, SDC_F32, c.off);
        be->linear_backward(wdx ? &gdx.t : NULL, wdw ? &gdw.t : NULL, wdb ? &gdb.t : NULL, &gy.t, &gx.t, &gw.t, s.M,
                            s.K, s.N);
        float *got[3] = {host_of(be, &gdx.t), host_of(be, &gdw.t), host_of(be, &gdb.t)};
        if (rep == 0) {
            double ex = ct_rel_err(got[0], rdx.data, nx), ew = ct_rel_err(got[1], rdw.data, nw);
            double eb = ct_rel_err(got[2], rdb.data, s.N);
            /* a gradient not asked for is left exactly as it was */
            int okx = wdx ? ex <= c.tol_act : memcmp(got[0], junk.data, (size_t)nx * sizeof(float)) == 0;
            int okw = wdw ? ew <= c.tol_param : memcmp(got[1], dw0.data, (size_t)nw * sizeof(float)) == 0;
            int okb = wdb ? eb <= CT_TOL_F32 : memcmp(got[2], db0.data, (size_t)s.N * sizeof(float)) == 0;
            CHECK_MSG(okx && okw && okb,
                      "linear_backward %s off=%d M=%lld K=%lld N=%lld want=%d: rel err dx %.3g (tol %.3g), dw %.3g "
                      "(tol %.3g), db %.3g (tol %.3g)",
                      sdc_dtype_name(dt), c.off, (long long)s.M, (long long)s.K, (long long)s.N, want, ex, c.tol_act,
                      ew, c.tol_param, eb, CT_TOL_F32);
            ok = okx && okw && okb;
            for (int i = 0; i < 3; i++) first[i] = got[i];
        } else {
            int same = memcmp(first[0], got[0], (size_t)nx * sizeof(float)) == 0 &&
                       memcmp(first[1], got[1], (size_t)nw * sizeof(float)) == 0 &&
                       memcmp(first[2], got[2], (size_t)s.N * sizeof(float)) == 0;
            CHECK_MSG(same, "linear_backward %s M=%lld K=%lld N=%lld: repeat differs", sdc_dtype_name(dt),
                      (long long)s.M, (long long)s.K, (long long)s.N);
            ok = ok && same;
            for (int i = 0; i < 3; i++) free(got[i]);
        }
        dfree(be, &gdx), dfree(be, &gdw), dfree(be, &gdb);
    }
    for (int i = 0; i < 3; i++) free(first[i]);
    dfree(be, &gx), dfree(be, &gw), dfree(be, &gy);
    free(x.data), free(w.data), free(dy.data), free(dw0.data), free(db0.data), free(junk.data);
    free(rdx.data), free(rdw.data), free(rdb.data);
    return ok;
}

TEST(cuda_linear_forward) {
    CUDA_BACKEND_OR_SKIP(be);
    for (int d = 0; d < 3; d++)
        for (int i = 0; i < NSHAPES; i++)
            for (int bias = 0; bias < 2; bias++)
                check_forward(be, plain(DTYPES[d]), SHAPES[i], bias, 100 + 10 * i + bias);
}

TEST(cuda_linear_backward) {
    CUDA_BACKEND_OR_SKIP(be);
    for (int d = 0; d < 3; d++)
        for (int i = 0; i < NSHAPES; i++) check_backward(be, plain(DTYPES[d]), SHAPES[i], 7, 200 + 10 * i);
}

TEST(cuda_linear_backward_some_grads) {
    /* each gradient alone and pairs: NULL ones are skipped, the rest unchanged */
    CUDA_BACKEND_OR_SKIP(be);
    shape s = {33, 32, 37};
    for (int want = 1; want < 7; want++) {
        check_backward(be, plain(SDC_F32), s, want, 300 + want);
        check_backward(be, plain(SDC_BF16), s, want, 310 + want);
    }
}

TEST(cuda_linear_bias_grad_many_rows) {
    /* enough rows to reach the column sum's chunk cap (1056 chunks for
     * N ≤ 256), with a chunk height that does not divide M */
    CUDA_BACKEND_OR_SKIP(be);
    shape s = {40000, 8, 40};
    check_backward(be, plain(SDC_F32), s, 4, 400);
    check_backward(be, plain(SDC_BF16), s, 7, 401);
}

TEST(cuda_linear_misaligned) {
    /* every pointer one element past an aligned address (2 bytes for bf16/f16,
     * 4 for f32 and the fp32 gradients): a view into odd-sized rows */
    CUDA_BACKEND_OR_SKIP(be);
    const shape sh[] = {{5, 37, 32}, {33, 32, 37}, {77, 768, 320}, {2048, 320, 1280}};
    for (int d = 0; d < 3; d++)
        for (int i = 0; i < 4; i++) {
            cfg c = plain(DTYPES[d]);
            c.off = 1;
            check_forward(be, c, sh[i], 1, 700 + 10 * i);
            check_backward(be, c, sh[i], 7, 701 + 10 * i);
        }
}

TEST(cuda_linear_tf32) {
    /* --allow_tf32: F32 products on the tensor cores, within TF32's rounding */
    CUDA_BACKEND_OR_SKIP(be);
    REQUIRE(&sdc_cuda_allow_tf32 != NULL);
    int was = sdc_cuda_allow_tf32;
    sdc_cuda_allow_tf32 = 1;
    cfg c = {SDC_F32, 0, TOL_TF32, TOL_TF32};
    for (int i = 0; i < NSHAPES; i++) {
        check_forward(be, c, SHAPES[i], 1, 800 + 10 * i);
        check_backward(be, c, SHAPES[i], 7, 801 + 10 * i);
    }
    sdc_cuda_allow_tf32 = was;
}

TEST(cuda_linear_fallback_kernel) {
    /* the tiled kernel that takes shapes cuBLASLt rejects, on every shape */
    CUDA_BACKEND_OR_SKIP(be);
    REQUIRE(&sdc_cuda_gemm_fallback != NULL);
    sdc_cuda_gemm_fallback = 1;
    for (int d = 0; d < 3; d++)
        for (int i = 0; i < NSHAPES; i++) {
            cfg c = plain(DTYPES[d]);
            c.off = i & 1; /* misaligned too, on every other shape */
            check_forward(be, c, SHAPES[i], 1, 500 + 10 * i);
            check_forward(be, c, SHAPES[i], 0, 501 + 10 * i);
            check_backward(be, c, SHAPES[i], 7, 600 + 10 * i);
        }
    sdc_cuda_gemm_fallback = 0;
}
