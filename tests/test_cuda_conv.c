/* CUDA conv2d and conv2d_backward against the CPU backend (the fp32
 * reference), on the same random inputs rounded to the tested dtype first,
 * so only the GPU's own rounding and summation order differ. Shapes: 3×3
 * stride 1 and 2 (pad 1, and pad 0 as after the VAE's asymmetric pad), 1×1
 * (cuBLASLt when rows are 16-byte aligned, cuDNN otherwise), odd channel
 * counts and sizes, a plane large enough for several bias-grad
 * chunks, and an SD-like block. Parameter gradients start from nonzero
 * buffers, so += is checked; dx starts from garbage, so = is checked.
 *
 * Device copies go through mem_upload/mem_download with the dtype converted
 * on the host: this test needs the conv family and the backend's memory only. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "cuda_test_util.h"

typedef struct conv_case {
    int B, Ci, H, W, Co, k, stride, pad;
} conv_case;

static const conv_case k_cases[] = {
    {2, 3, 7, 9, 5, 3, 1, 1},     /* k3 s1 p1, odd everything */
    {2, 4, 9, 7, 6, 3, 2, 1},     /* k3 s2 p1 (UNet downsampler) */
    {1, 5, 9, 11, 3, 3, 2, 0},    /* k3 s2 p0 (VAE downsampler after its (0,1,0,1) pad) */
    {2, 7, 7, 9, 5, 1, 1, 0},     /* k1, rows not 16-byte aligned: cuDNN */
    {2, 40, 8, 8, 72, 1, 1, 0},   /* k1, 16-byte aligned rows: the cuBLASLt path */
    {1, 8, 12, 12, 4, 1, 1, 0},   /* k1 on the cuBLASLt path, B = 1 (no batching), few outputs */
    {3, 64, 16, 16, 48, 1, 1, 0}, /* k1 on the cuBLASLt path, SD-like (proj_in / shortcut) */
    {1, 4, 96, 80, 3, 3, 1, 1},   /* large plane, few channels: bias grad in several chunks */
    {2, 64, 16, 16, 64, 3, 1, 1}, /* SD-like ResNet conv */
};
#define N_CASES ((int)(sizeof k_cases / sizeof k_cases[0]))

static int64_t out_dim(int n, int k, int s, int p) { return (n + 2 * p - k) / s + 1; }

/* Rounds a host array to dtype's precision (what the GPU will see). */
static void round_to(float *a, int64_t n, sdc_dtype dt) {
    if (dt == SDC_F32) return;
    uint16_t *tmp = malloc((size_t)n * sizeof *tmp);
    sdc_convert_from_f32(tmp, dt, a, (size_t)n);
    sdc_convert_to_f32(a, tmp, dt, (size_t)n);
    free(tmp);
}

/* A device tensor in dtype holding the host fp32 tensor's values. */
static sdc_tensor dev_from_host(const sdc_backend *be, const sdc_tensor *h, sdc_dtype dt) {
    sdc_tensor t = *h;
    t.dtype = dt;
    t.device = (sdc_device){SDC_CUDA, 0};
    size_t nb = sdc_tensor_nbytes(&t), n = (size_t)sdc_tensor_numel(&t);
    void *buf = malloc(nb ? nb : 1);
    sdc_convert_from_f32(buf, dt, h->data, n);
    t.data = be->mem_alloc(nb ? nb : 1);
    be->mem_upload(t.data, buf, nb);
    free(buf);
    return t;
}

/* The device tensor's values as a malloc'd fp32 array. */
static float *host_from_dev(const sdc_backend *be, const sdc_tensor *t) {
    size_t nb = sdc_tensor_nbytes(t), n = (size_t)sdc_tensor_numel(t);
    void *buf = malloc(nb ? nb : 1);
    float *out = malloc((n ? n : 1) * sizeof *out);
    be->mem_download(buf, t->data, nb);
    sdc_convert_to_f32(out, buf, t->dtype, n);
    free(buf);
    return out;
}

/* The raw bytes of a device tensor (for bit-exact comparisons). */
static void *bytes_from_dev(const sdc_backend *be, const sdc_tensor *t) {
    size_t nb = sdc_tensor_nbytes(t);
    void *buf = malloc(nb ? nb : 1);
    be->mem_download(buf, t->data, nb);
    return buf;
}

static const char *dt_name(sdc_dtype dt) { return dt == SDC_F32 ? "F32" : dt == SDC_BF16 ? "BF16" : "F16"; }

/* Host inputs of one case: x, w, bias, dy rounded to dt; dw0, db0 fp32. */
typedef struct conv_data {
    int64_t xs[4], ws[4], ys[4], bs[1];
    sdc_tensor x, w, b, dy, dw0, db0;
} conv_data;

static conv_data make_data(conv_case c, sdc_dtype dt, uint64_t seed) {
    conv_data d;
    int64_t Ho = out_dim(c.H, c.k, c.stride, c.pad), Wo = out_dim(c.W, c.k, c.stride, c.pad);
    int64_t xs[4] = {c.B, c.Ci, c.H, c.W}, ws[4] = {c.Co, c.Ci, c.k, c.k}, ys[4] = {c.B, c.Co, Ho, Wo};
    memcpy(d.xs, xs, sizeof xs), memcpy(d.ws, ws, sizeof ws), memcpy(d.ys, ys, sizeof ys);
    d.bs[0] = c.Co;
    d.x = ct_host_rand(4, d.xs, 1.0f, seed);
    d.w = ct_host_rand(4, d.ws, 0.5f, seed + 1);
    d.b = ct_host_rand(1, d.bs, 1.0f, seed + 2);
    d.dy = ct_host_rand(4, d.ys, 1.0f, seed + 3);
    d.dw0 = ct_host_rand(4, d.ws, 1.0f, seed + 4);
    d.db0 = ct_host_rand(1, d.bs, 1.0f, seed + 5);
    round_to(d.x.data, sdc_tensor_numel(&d.x), dt);
    round_to(d.w.data, sdc_tensor_numel(&d.w), dt);
    round_to(d.b.data, sdc_tensor_numel(&d.b), dt);
    round_to(d.dy.data, sdc_tensor_numel(&d.dy), dt);
    return d;
}

static void free_data(conv_data *d) {
    free(d->x.data), free(d->w.data), free(d->b.data), free(d->dy.data), free(d->dw0.data), free(d->db0.data);
}

/* a[i] −= b[i]: the increment a parameter gradient received */
static void sub_from(float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) a[i] -= b[i];
}

/* Relative L2 error of the GPU against the CPU, reported with the case. */
static void check_close(const char *what, const float *gpu, const float *cpu, int64_t n, double tol, conv_case c,
                        sdc_dtype dt) {
    double e = ct_rel_err(gpu, cpu, n);
    CHECK_MSG(e <= tol, "%s %s B%d Ci%d %dx%d Co%d k%d s%d p%d: rel err %.3g > %.3g", what, dt_name(dt), c.B, c.Ci,
              c.H, c.W, c.Co, c.k, c.stride, c.pad, e, tol);
}

/* Forward (with and without bias) and backward of one case vs the CPU.
 * want_dx / want_dw / want_db pick which gradients are asked for (the
 * others are passed as NULL). */
static void run_case(const sdc_backend *be, conv_case c, sdc_dtype dt, uint64_t seed, int want_dx, int want_dw,
                     int want_db) {
    const sdc_backend *cpu = sdc_cpu_backend();
    /* fp32: cuDNN or the direct kernels vs OpenBLAS differ only in summation
     * order (FMA math, no TF32), so ct_tol's 1e-5 holds; bf16/fp16: the
     * output (and the bf16/fp16 filter gradient before it is added in fp32)
     * is rounded once, 2⁻⁹ / 2⁻¹¹ relative, inside ct_tol. */
    double tol = ct_tol(dt);
    conv_data d = make_data(c, dt, seed);
    int64_t ny = d.ys[0] * d.ys[1] * d.ys[2] * d.ys[3];
    int64_t nx = sdc_tensor_numel(&d.x), nw = sdc_tensor_numel(&d.w), nb = c.Co;

    sdc_tensor xd = dev_from_host(be, &d.x, dt), wd = dev_from_host(be, &d.w, dt), bd = dev_from_host(be, &d.b, dt);
    sdc_tensor dyd = dev_from_host(be, &d.dy, dt);

    /* forward, with and without bias */
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        sdc_tensor yc = ct_host_zeros(4, d.ys);
        cpu->conv2d(&yc, &d.x, &d.w, with_bias ? &d.b : NULL, c.stride, c.pad);
        sdc_tensor garbage = ct_host_rand(4, d.ys, 7.0f, seed + 9); /* out must be fully overwritten */
        sdc_tensor yd = dev_from_host(be, &garbage, dt);
        be->conv2d(&yd, &xd, &wd, with_bias ? &bd : NULL, c.stride, c.pad);
        float *yg = host_from_dev(be, &yd);
        check_close(with_bias ? "forward+bias" : "forward", yg, yc.data, ny, tol, c, dt);
        free(yg), free(yc.data), free(garbage.data);
        ct_dev_free(be, &yd);
    }

    /* backward: CPU from dw0/db0, GPU from the same */
    sdc_tensor dxc = ct_host_zeros(4, d.xs), dwc = ct_host_zeros(4, d.ws), dbc = ct_host_zeros(1, d.bs);
    memcpy(dwc.data, d.dw0.data, (size_t)nw * sizeof(float));
    memcpy(dbc.data, d.db0.data, (size_t)nb * sizeof(float));
    cpu->conv2d_backward(&dxc, &dwc, &dbc, &d.dy, &d.x, &d.w, c.stride, c.pad);

    sdc_tensor garbage = ct_host_rand(4, d.xs, 7.0f, seed + 10); /* dx is assigned, not accumulated */
    round_to(garbage.data, nx, dt);
    sdc_tensor dxd = dev_from_host(be, &garbage, dt);
    sdc_tensor dwd = dev_from_host(be, &d.dw0, SDC_F32), dbd = dev_from_host(be, &d.db0, SDC_F32);
    be->conv2d_backward(want_dx ? &dxd : NULL, want_dw ? &dwd : NULL, want_db ? &dbd : NULL, &dyd, &xd, &wd,
                        c.stride, c.pad);
    float *dxg = host_from_dev(be, &dxd), *dwg = host_from_dev(be, &dwd), *dbg = host_from_dev(be, &dbd);
    if (want_dx) check_close("dx", dxg, dxc.data, nx, tol, c, dt);
    else
        CHECK_MSG(memcmp(dxg, garbage.data, (size_t)nx * sizeof(float)) == 0, "dx not asked for but written");
    /* compare what was added: dw − dw0 on both sides */
    sub_from(dwg, d.dw0.data, nw), sub_from(dwc.data, d.dw0.data, nw);
    sub_from(dbg, d.db0.data, nb), sub_from(dbc.data, d.db0.data, nb);
    if (want_dw) check_close("dw", dwg, dwc.data, nw, tol, c, dt);
    else
        for (int64_t i = 0; i < nw; i++) CHECK_MSG(dwg[i] == 0.0f, "dw not asked for, changed at %lld", (long long)i);
    /* db sums fp32 dy values exactly representable in every dtype: only the
     * summation order differs */
    if (want_db) check_close("db", dbg, dbc.data, nb, CT_TOL_F32, c, dt);
    else
        for (int64_t i = 0; i < nb; i++) CHECK_MSG(dbg[i] == 0.0f, "db not asked for, changed at %lld", (long long)i);

    free(dxg), free(dwg), free(dbg), free(garbage.data);
    free(dxc.data), free(dwc.data), free(dbc.data);
    ct_dev_free(be, &xd), ct_dev_free(be, &wd), ct_dev_free(be, &bd), ct_dev_free(be, &dyd);
    ct_dev_free(be, &dxd), ct_dev_free(be, &dwd), ct_dev_free(be, &dbd);
    free_data(&d);
}

static void run_all(const sdc_backend *be, sdc_dtype dt) {
    for (int i = 0; i < N_CASES; i++) run_case(be, k_cases[i], dt, 100 + 17 * (uint64_t)i, 1, 1, 1);
}

TEST(cuda_conv_f32) {
    CUDA_BACKEND_OR_SKIP(be);
    run_all(be, SDC_F32);
}

TEST(cuda_conv_bf16) {
    CUDA_BACKEND_OR_SKIP(be);
    run_all(be, SDC_BF16);
}

TEST(cuda_conv_f16) {
    CUDA_BACKEND_OR_SKIP(be);
    run_all(be, SDC_F16);
}

/* The direct kernels (the fallback without cuDNN), forced by SDC_CONV_DIRECT. */
TEST(cuda_conv_direct) {
    CUDA_BACKEND_OR_SKIP(be);
    setenv("SDC_CONV_DIRECT", "1", 1);
    run_all(be, SDC_F32);
    run_all(be, SDC_BF16);
    unsetenv("SDC_CONV_DIRECT");
}

/* Any gradient may be NULL; the others still come out right. */
TEST(cuda_conv_partial_grads) {
    CUDA_BACKEND_OR_SKIP(be);
    conv_case c = {2, 6, 10, 8, 5, 3, 2, 1};
    run_case(be, c, SDC_F32, 7, 1, 0, 0);
    run_case(be, c, SDC_F32, 8, 0, 1, 0);
    run_case(be, c, SDC_BF16, 9, 0, 0, 1);
    run_case(be, c, SDC_BF16, 10, 0, 1, 1);
}

/* Training must be bit-reproducible: the same call twice gives the same bits
 * (3×3 through cuDNN, 1×1 through cuBLASLt). */
TEST(cuda_conv_deterministic) {
    CUDA_BACKEND_OR_SKIP(be);
    const sdc_dtype dts[] = {SDC_F32, SDC_BF16};
    const conv_case cases[] = {{2, 64, 16, 16, 64, 3, 1, 1}, {2, 64, 16, 16, 32, 1, 1, 0}};
    for (int t = 0; t < 4; t++) {
        sdc_dtype dt = dts[t % 2];
        conv_case c = cases[t / 2];
        conv_data d = make_data(c, dt, 77);
        sdc_tensor xd = dev_from_host(be, &d.x, dt), wd = dev_from_host(be, &d.w, dt);
        sdc_tensor bd = dev_from_host(be, &d.b, dt), dyd = dev_from_host(be, &d.dy, dt);
        void *bytes[2][4];
        for (int run = 0; run < 2; run++) {
            sdc_tensor yd = ct_dev_zeros(be, 4, d.ys, dt), dxd = ct_dev_zeros(be, 4, d.xs, dt);
            sdc_tensor dwd = dev_from_host(be, &d.dw0, SDC_F32), dbd = dev_from_host(be, &d.db0, SDC_F32);
            be->conv2d(&yd, &xd, &wd, &bd, c.stride, c.pad);
            be->conv2d_backward(&dxd, &dwd, &dbd, &dyd, &xd, &wd, c.stride, c.pad);
            bytes[run][0] = bytes_from_dev(be, &yd), bytes[run][1] = bytes_from_dev(be, &dxd);
            bytes[run][2] = bytes_from_dev(be, &dwd), bytes[run][3] = bytes_from_dev(be, &dbd);
            ct_dev_free(be, &yd), ct_dev_free(be, &dxd), ct_dev_free(be, &dwd), ct_dev_free(be, &dbd);
        }
        size_t nbytes[4] = {(size_t)(d.ys[0] * d.ys[1] * d.ys[2] * d.ys[3]) * sdc_dtype_size(dt),
                            (size_t)sdc_tensor_numel(&d.x) * sdc_dtype_size(dt),
                            (size_t)sdc_tensor_numel(&d.w) * sizeof(float), (size_t)c.Co * sizeof(float)};
        const char *names[4] = {"y", "dx", "dw", "db"};
        for (int i = 0; i < 4; i++) {
            CHECK_MSG(memcmp(bytes[0][i], bytes[1][i], nbytes[i]) == 0, "%s %s k%d differs between two runs",
                      names[i], dt_name(dt), c.k);
            free(bytes[0][i]), free(bytes[1][i]);
        }
        ct_dev_free(be, &xd), ct_dev_free(be, &wd), ct_dev_free(be, &bd), ct_dev_free(be, &dyd);
        free_data(&d);
    }
}
