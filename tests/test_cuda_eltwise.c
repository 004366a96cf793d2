/* The CUDA backend's elementwise and layout ops (cuda_eltwise.cu,
 * cuda_layout.cu) against the CPU backend, for F32, BF16 and F16.
 *
 * Every input is made on the device in the dtype under test and read back,
 * so the CPU (fp32) computes on exactly the values the GPU sees; the only
 * differences left are the GPU's output rounding and its math library:
 * - ops whose CPU result is a fixed sequence of fp32 roundings (axpby,
 *   add_channel, copies, the 2×2 sums, the embedding sums) must equal the
 *   CPU's fp32 result rounded to the dtype, bit for bit;
 * - the activations use CUDA's expf/erff where the CPU has polynomials
 *   (both ~1e-6 relative) and the channel sums add in another order: those
 *   are held to ct_tol (1e-5 relative for F32; for bf16/f16 the output
 *   rounding, 2⁻⁹/2⁻¹², dominates).
 * Sizes are odd, not multiples of the 8-element packs or the 32/64 tiles,
 * and also pack-aligned (the vector paths), with misaligned views (the
 * scalar paths). Skipped without a GPU. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_test_util.h"

static const sdc_dtype k_dtypes[3] = {SDC_F32, SDC_BF16, SDC_F16};

/* A device tensor of n elements at an offset of `off` elements from a fresh
 * allocation (off = 1 misaligns it), and the fp32 values it holds on the host. */
typedef struct buf {
    sdc_tensor d, h;
    void *base;
    size_t bytes;
} buf;

static buf mk(const sdc_backend *be, int64_t n, float a, uint64_t seed, sdc_dtype dt, int off) {
    buf b;
    size_t es = sdc_dtype_size(dt);
    b.bytes = (size_t)(n + off) * es + 16;
    b.base = be->mem_alloc(b.bytes);
    b.h = a > 0 ? ct_host_rand(1, &n, a, seed) : ct_host_zeros(1, &n);
    b.d = sdc_tensor_make(dt, 1, &n, (char *)b.base + (size_t)off * es);
    b.d.device = (sdc_device){SDC_CUDA, 0};
    be->upload(&b.d, b.h.data);
    be->download(b.h.data, &b.d); /* the values as the dtype holds them */
    return b;
}
static void bfree(const sdc_backend *be, buf *b) {
    be->mem_free(b->base, b->bytes);
    free(b->h.data);
}
static sdc_tensor hz(int64_t n) { return ct_host_zeros(1, &n); }

static float round_to(sdc_dtype dt, float x) {
    if (dt == SDC_BF16) return sdc_bf16_to_f32(sdc_f32_to_bf16(x));
    if (dt == SDC_F16) return sdc_f16_to_f32(sdc_f32_to_f16(x));
    return x;
}

/* The device tensor equals the CPU's fp32 result rounded to its dtype, bit for bit. */
static void expect_same(const sdc_backend *be, const sdc_tensor *d, const float *ref, const char *what) {
    int64_t n = sdc_tensor_numel(d), bad = -1;
    float *g = ct_from_dev(be, d);
    for (int64_t i = 0; i < n && bad < 0; i++) {
        float r = round_to(d->dtype, ref[i]);
        if (memcmp(&g[i], &r, sizeof r) != 0) bad = i;
    }
    CHECK_MSG(bad < 0, "%s (%s): element %lld is %.9g, CPU %.9g", what, sdc_dtype_name(d->dtype), (long long)bad,
              bad >= 0 ? g[bad] : 0.0, bad >= 0 ? ref[bad] : 0.0);
    free(g);
}
/* ‖gpu − cpu‖/‖cpu‖ ≤ ct_tol(dtype) */
static void expect_close(const sdc_backend *be, const sdc_tensor *d, const float *ref, const char *what) {
    float *g = ct_from_dev(be, d);
    double e = ct_rel_err(g, ref, sdc_tensor_numel(d)), tol = ct_tol(d->dtype);
    CHECK_MSG(e <= tol, "%s (%s): relative error %.3g > %.3g", what, sdc_dtype_name(d->dtype), e, tol);
    free(g);
}

/* ---- host copies, casts, fill ----------------------------------------------- */

TEST(cuda_upload_download_round_to_dtype) {
    CUDA_BACKEND_OR_SKIP(be);
    /* more than two 4 Mi-element staging chunks, and a short tensor */
    const int64_t sizes[2] = {((int64_t)8 << 20) + 13, 7};
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < 3; k++) {
            int64_t n = sizes[s];
            sdc_tensor h = ct_host_rand(1, &n, 3.0f, 11 + s);
            sdc_tensor d = ct_to_dev(be, &h, k_dtypes[k]);
            float *back = ct_from_dev(be, &d);
            int64_t bad = -1;
            for (int64_t i = 0; i < n && bad < 0; i++) {
                float r = round_to(k_dtypes[k], ((float *)h.data)[i]);
                if (memcmp(&r, &back[i], sizeof r) != 0) bad = i;
            }
            CHECK_MSG(bad < 0, "%s round trip of %lld: element %lld differs", sdc_dtype_name(k_dtypes[k]),
                      (long long)n, (long long)bad);
            free(back);
            free(h.data);
            ct_dev_free(be, &d);
        }
}

TEST(cuda_cast_matches_cpu_conversions) {
    CUDA_BACKEND_OR_SKIP(be);
    for (int off = 0; off < 2; off++)
        for (int ks = 0; ks < 3; ks++)
            for (int kd = 0; kd < 3; kd++) {
                const int64_t n = 1003;
                sdc_dtype ts = k_dtypes[ks], td = k_dtypes[kd];
                buf src = mk(be, n, 70.0f, 21 + ks, ts, off);
                buf dst = mk(be, n, 0, 0, td, off);
                be->cast(dst.d.data, td, src.d.data, ts, (size_t)n);
                expect_same(be, &dst.d, src.h.data, off ? "cast (misaligned)" : "cast");
                bfree(be, &src);
                bfree(be, &dst);
            }
}

TEST(cuda_fill_sets_every_element) {
    CUDA_BACKEND_OR_SKIP(be);
    const float values[3] = {0.0f, -1.25f, 0.1f};
    for (int k = 0; k < 3; k++)
        for (int v = 0; v < 3; v++)
            for (int off = 0; off < 2; off++) {
                const int64_t n = 1037;
                buf b = mk(be, n, 2.0f, 5, k_dtypes[k], off);
                be->fill(&b.d, values[v]);
                for (int64_t i = 0; i < n; i++) ((float *)b.h.data)[i] = values[v];
                expect_same(be, &b.d, b.h.data, "fill");
                bfree(be, &b);
            }
}

/* ---- activations and GEGLU ------------------------------------------------------ */

TEST(cuda_activation_matches_cpu) {
    CUDA_BACKEND_OR_SKIP(be);
    const sdc_backend *cpu = sdc_cpu_backend();
    const sdc_act acts[5] = {SDC_ACT_SILU, SDC_ACT_GELU, SDC_ACT_GELU_TANH, SDC_ACT_QUICK_GELU, SDC_ACT_NONE};
    const int64_t sizes[2] = {1003, 2 * 320 * 64}; /* odd; pack-aligned */
    char what[96];
    for (int k = 0; k < 3; k++)
        for (int a = 0; a < 5; a++)
            for (int s = 0; s < 2; s++)
                for (int off = 0; off < 2; off++) {
                    const int64_t n = sizes[s];
                    sdc_dtype dt = k_dtypes[k];
                    snprintf(what, sizeof what, "act %d, n %lld, offset %d", (int)acts[a], (long long)n, off);
                    buf x = mk(be, n, 6.0f, 100 + a, dt, off), dy = mk(be, n, 1.0f, 200 + a, dt, off);
                    buf out = mk(be, n, 0, 0, dt, off), dx = mk(be, n, 0, 0, dt, off);
                    sdc_tensor ref = hz(n), dref = hz(n);
                    cpu->activation(&ref, &x.h, acts[a]);
                    cpu->activation_backward(&dref, &dy.h, &x.h, acts[a]);

                    be->activation(&out.d, &x.d, acts[a]);
                    expect_close(be, &out.d, ref.data, what);
                    be->activation_backward(&dx.d, &dy.d, &x.d, acts[a]);
                    expect_close(be, &dx.d, dref.data, what);
                    /* in place: dx = dy (aliased), then out = x (aliased) */
                    be->activation_backward(&dy.d, &dy.d, &x.d, acts[a]);
                    expect_close(be, &dy.d, dref.data, what);
                    be->activation(&x.d, &x.d, acts[a]);
                    expect_close(be, &x.d, ref.data, what);

                    free(ref.data);
                    free(dref.data);
                    bfree(be, &x);
                    bfree(be, &dy);
                    bfree(be, &out);
                    bfree(be, &dx);
                }
}

TEST(cuda_geglu_matches_cpu) {
    CUDA_BACKEND_OR_SKIP(be);
    const sdc_backend *cpu = sdc_cpu_backend();
    const int64_t shapes[3][2] = {{7, 13}, {6, 40}, {3, 1280}}; /* M, F */
    for (int k = 0; k < 3; k++)
        for (int s = 0; s < 3; s++) {
            const int64_t M = shapes[s][0], F = shapes[s][1];
            sdc_dtype dt = k_dtypes[k];
            buf x = mk(be, M * 2 * F, 4.0f, 31 + s, dt, 0), dy = mk(be, M * F, 1.0f, 41 + s, dt, 0);
            buf out = mk(be, M * F, 0, 0, dt, 0), dx = mk(be, M * 2 * F, 0, 0, dt, 0);
            sdc_tensor ref = hz(M * F), dref = hz(M * 2 * F);
            cpu->geglu(&ref, &x.h, M, F);
            cpu->geglu_backward(&dref, &dy.h, &x.h, M, F);
            be->geglu(&out.d, &x.d, M, F);
            expect_close(be, &out.d, ref.data, "geglu");
            be->fill(&dx.d, 7.0f); /* assigned, not accumulated */
            be->geglu_backward(&dx.d, &dy.d, &x.d, M, F);
            expect_close(be, &dx.d, dref.data, "geglu_backward");
            free(ref.data);
            free(dref.data);
            bfree(be, &x);
            bfree(be, &dy);
            bfree(be, &out);
            bfree(be, &dx);
        }
}

/* ---- axpby, add_channel, channel_sum ------------------------------------------------ */

TEST(cuda_axpby_matches_cpu_bitwise) {
    CUDA_BACKEND_OR_SKIP(be);
    const sdc_backend *cpu = sdc_cpu_backend();
    const int64_t sizes[2] = {1003, 4096};
    const float alpha = 0.7f, beta = -1.3f;
    for (int k = 0; k < 3; k++)
        for (int s = 0; s < 2; s++)
            for (int off = 0; off < 2; off++)
                for (int mode = 0; mode < 4; mode++) { /* fresh out, b NULL, out = a, out = b */
                    const int64_t n = sizes[s];
                    sdc_dtype dt = k_dtypes[k];
                    buf a = mk(be, n, 2.0f, 51, dt, off), b = mk(be, n, 2.0f, 52, dt, off);
                    buf o = mk(be, n, 0, 0, dt, off);
                    sdc_tensor ref = hz(n);
                    const sdc_tensor *bh = mode == 1 ? NULL : &b.h, *bd = mode == 1 ? NULL : &b.d;
                    sdc_tensor *od = mode == 2 ? &a.d : mode == 3 ? &b.d : &o.d;
                    cpu->axpby(&ref, alpha, &a.h, beta, bh);
                    be->axpby(od, alpha, &a.d, beta, bd);
                    char what[64];
                    snprintf(what, sizeof what, "axpby mode %d n %lld offset %d", mode, (long long)n, off);
                    expect_same(be, od, ref.data, what);
                    free(ref.data);
                    bfree(be, &a);
                    bfree(be, &b);
                    bfree(be, &o);
                }
    /* mixed dtypes: an F32 gradient accumulating a bf16/f16 one, in place */
    for (int k = 1; k < 3; k++) {
        const int64_t n = 1001;
        buf g = mk(be, n, 1.0f, 61, SDC_F32, 0), d = mk(be, n, 1.0f, 62, k_dtypes[k], 0);
        sdc_tensor ref = hz(n);
        cpu->axpby(&ref, 1.0f, &g.h, 1.0f, &d.h);
        be->axpby(&g.d, 1.0f, &g.d, 1.0f, &d.d);
        expect_same(be, &g.d, ref.data, "axpby F32 += 16-bit");
        free(ref.data);
        bfree(be, &g);
        bfree(be, &d);
    }
}

TEST(cuda_add_channel_and_channel_sum_match_cpu) {
    CUDA_BACKEND_OR_SKIP(be);
    const sdc_backend *cpu = sdc_cpu_backend();
    const int64_t shapes[3][3] = {{2, 5, 7}, {2, 4, 64}, {3, 320, 37}}; /* O, C, S */
    for (int k = 0; k < 3; k++)
        for (int s = 0; s < 3; s++)
            for (int alias = 0; alias < 2; alias++) {
                const int64_t O = shapes[s][0], C = shapes[s][1], S = shapes[s][2], n = O * C * S;
                sdc_dtype dt = k_dtypes[k];
                buf x = mk(be, n, 2.0f, 71 + s, dt, 0), v = mk(be, O * C, 1.0f, 81 + s, dt, 0);
                buf o = mk(be, n, 0, 0, dt, 0), dv = mk(be, O * C, 0, 0, dt, 0);
                sdc_tensor ref = hz(n), vref = hz(O * C);
                cpu->add_channel(&ref, &x.h, &v.h, O, C, S);
                cpu->channel_sum(&vref, &x.h, O, C, S);
                be->fill(&dv.d, 3.0f); /* assigned */
                be->channel_sum(&dv.d, &x.d, O, C, S);
                expect_close(be, &dv.d, vref.data, "channel_sum");
                sdc_tensor *od = alias ? &x.d : &o.d;
                be->add_channel(od, &x.d, &v.d, O, C, S);
                expect_same(be, od, ref.data, alias ? "add_channel in place" : "add_channel");
                free(ref.data);
                free(vref.data);
                bfree(be, &x);
                bfree(be, &v);
                bfree(be, &o);
                bfree(be, &dv);
            }
    /* channel sums of a real size (a 64×64 feature map) and a misaligned dy */
    for (int k = 0; k < 3; k++) {
        const int64_t O = 2, C = 8, S = 4096;
        buf dy = mk(be, O * C * S, 1.0f, 91, k_dtypes[k], 1), dv = mk(be, O * C, 0, 0, k_dtypes[k], 0);
        sdc_tensor vref = hz(O * C);
        cpu->channel_sum(&vref, &dy.h, O, C, S);
        be->channel_sum(&dv.d, &dy.d, O, C, S);
        expect_close(be, &dv.d, vref.data, "channel_sum 4096");
        free(vref.data);
        bfree(be, &dy);
        bfree(be, &dv);
    }
}

/* ---- layout ------------------------------------------------------------------------ */

TEST(cuda_concat_slice_match_cpu) {
    CUDA_BACKEND_OR_SKIP(be);
    const sdc_backend *cpu = sdc_cpu_backend();
    const int64_t cs[3][4] = {{3, 5, 7, 3}, {2, 64, 32, 16}, {2, 3, 1, 1}}; /* O, Ca, Cb, S */
    for (int k = 0; k < 3; k++)
        for (int s = 0; s < 3; s++) {
            const int64_t O = cs[s][0], Ca = cs[s][1], Cb = cs[s][2], S = cs[s][3], C = Ca + Cb;
            sdc_dtype dt = k_dtypes[k];
            buf a = mk(be, O * Ca * S, 1.0f, 101, dt, 0), b = mk(be, O * Cb * S, 1.0f, 102, dt, 0);
            buf o = mk(be, O * C * S, 0, 0, dt, 0);
            sdc_tensor ref = hz(O * C * S);
            cpu->concat(&ref, &a.h, &b.h, O, Ca, Cb, S);
            be->concat(&o.d, &a.d, &b.d, O, Ca, Cb, S);
            expect_same(be, &o.d, ref.data, "concat");
            /* slices of the concatenation: the a part, the b part, a middle band */
            const int64_t c0s[3] = {0, Ca, C / 3}, ns[3] = {Ca, Cb, C - C / 3 - 1 > 0 ? C - C / 3 - 1 : 1};
            for (int q = 0; q < 3; q++) {
                buf sl = mk(be, O * ns[q] * S, 0, 0, dt, 0);
                sdc_tensor sref = hz(O * ns[q] * S), hc = ref;
                cpu->slice(&sref, &hc, O, C, S, c0s[q], ns[q]);
                be->slice(&sl.d, &o.d, O, C, S, c0s[q], ns[q]);
                expect_same(be, &sl.d, sref.data, "slice");
                free(sref.data);
                bfree(be, &sl);
            }
            free(ref.data);
            bfree(be, &a);
            bfree(be, &b);
            bfree(be, &o);
        }
}

TEST(cuda_transpose_matches_cpu) {
    CUDA_BACKEND_OR_SKIP(be);
    const sdc_backend *cpu = sdc_cpu_backend();
    /* odd sizes; even but not multiples of the tiles; odd × even; a real
     * [B, C, H·W] block input and its way back */
    const int64_t shapes[6][3] = {{2, 37, 53}, {2, 100, 70}, {3, 38, 53}, {1, 1, 9}, {2, 320, 1024}, {2, 1024, 320}};
    for (int k = 0; k < 3; k++)
        for (int s = 0; s < 6; s++)
            for (int off = 0; off < 2; off++) {
                const int64_t B = shapes[s][0], R = shapes[s][1], C = shapes[s][2], n = B * R * C;
                sdc_dtype dt = k_dtypes[k];
                buf x = mk(be, n, 1.0f, 111 + s, dt, off), o = mk(be, n, 0, 0, dt, off);
                sdc_tensor ref = hz(n);
                cpu->transpose(&ref, &x.h, B, R, C);
                be->transpose(&o.d, &x.d, B, R, C);
                char what[64];
                snprintf(what, sizeof what, "transpose [%lld,%lld,%lld] offset %d", (long long)B, (long long)R,
                         (long long)C, off);
                expect_same(be, &o.d, ref.data, what);
                free(ref.data);
                bfree(be, &x);
                bfree(be, &o);
            }
}

TEST(cuda_pad2d_matches_cpu) {
    CUDA_BACKEND_OR_SKIP(be);
    const sdc_backend *cpu = sdc_cpu_backend();
    const int pads[3][4] = {{0, 1, 0, 1}, {2, 1, 3, 0}, {0, 0, 0, 0}};
    for (int k = 0; k < 3; k++)
        for (int p = 0; p < 3; p++) {
            const int64_t B = 2, C = 3, H = 5, W = 7;
            const int t = pads[p][0], bo = pads[p][1], l = pads[p][2], r = pads[p][3];
            const int64_t n = B * C * (H + t + bo) * (W + l + r);
            buf x = mk(be, B * C * H * W, 1.0f, 121, k_dtypes[k], 0), o = mk(be, n, 0, 0, k_dtypes[k], 0);
            be->fill(&o.d, 9.0f); /* the padding must be written, not assumed */
            sdc_tensor ref = hz(n);
            cpu->pad2d(&ref, &x.h, B, C, H, W, t, bo, l, r);
            be->pad2d(&o.d, &x.d, B, C, H, W, t, bo, l, r);
            expect_same(be, &o.d, ref.data, "pad2d");
            free(ref.data);
            bfree(be, &x);
            bfree(be, &o);
        }
}

TEST(cuda_upsample2x_and_backward_match_cpu) {
    CUDA_BACKEND_OR_SKIP(be);
    const sdc_backend *cpu = sdc_cpu_backend();
    const int64_t shapes[2][4] = {{2, 3, 5, 7}, {1, 4, 16, 16}};
    for (int k = 0; k < 3; k++)
        for (int s = 0; s < 2; s++)
            for (int off = 0; off < 2; off++) {
                const int64_t B = shapes[s][0], C = shapes[s][1], H = shapes[s][2], W = shapes[s][3];
                const int64_t n = B * C * H * W;
                sdc_dtype dt = k_dtypes[k];
                buf x = mk(be, n, 1.0f, 131, dt, off), o = mk(be, 4 * n, 0, 0, dt, off);
                buf dy = mk(be, 4 * n, 1.0f, 132, dt, off), dx = mk(be, n, 0, 0, dt, off);
                sdc_tensor ref = hz(4 * n), dref = hz(n);
                cpu->upsample2x(&ref, &x.h, B, C, H, W);
                cpu->upsample2x_backward(&dref, &dy.h, B, C, H, W);
                be->upsample2x(&o.d, &x.d, B, C, H, W);
                expect_same(be, &o.d, ref.data, "upsample2x");
                be->fill(&dx.d, 5.0f); /* assigned */
                be->upsample2x_backward(&dx.d, &dy.d, B, C, H, W);
                expect_same(be, &dx.d, dref.data, "upsample2x_backward");
                free(ref.data);
                free(dref.data);
                bfree(be, &x);
                bfree(be, &o);
                bfree(be, &dy);
                bfree(be, &dx);
            }
}

TEST(cuda_embedding_and_backward_match_cpu) {
    CUDA_BACKEND_OR_SKIP(be);
    const sdc_backend *cpu = sdc_cpu_backend();
    const int32_t ids[12] = {3, 7, 3, 0, 49, 7, 7, 12, 3, 1, 49, 3}; /* repeats add in order */
    const int64_t n = 12, V = 50, Ds[3] = {33, 64, 768};
    for (int k = 0; k < 3; k++)
        for (int s = 0; s < 3; s++) {
            const int64_t D = Ds[s];
            sdc_dtype dt = k_dtypes[k];
            buf table = mk(be, V * D, 1.0f, 141, dt, 0), o = mk(be, n * D, 0, 0, dt, 0);
            buf dy = mk(be, n * D, 1.0f, 142, dt, 0);
            buf dtab = mk(be, V * D, 0.5f, 143, SDC_F32, 0); /* accumulated into: starts non-zero */
            sdc_tensor ref = hz(n * D);
            cpu->embedding(&ref, &table.h, ids, n, D);
            be->embedding(&o.d, &table.d, ids, n, D);
            expect_same(be, &o.d, ref.data, "embedding");
            cpu->embedding_backward(&dtab.h, &dy.h, ids, n, D);
            be->embedding_backward(&dtab.d, &dy.d, ids, n, D);
            expect_same(be, &dtab.d, dtab.h.data, "embedding_backward");
            free(ref.data);
            bfree(be, &table);
            bfree(be, &o);
            bfree(be, &dy);
            bfree(be, &dtab);
        }
}
