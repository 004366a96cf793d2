/* The CUDA backend's optimiser kernels (cuda_optim.cu) against the CPU:
 * AdamW and the EMA are per element, so their F32 results must equal the
 * CPU's bit for bit (same roundings, same fused multiply-adds); the bf16/f16
 * weight copy must equal the CPU's conversion of the CPU's master weights.
 * Σg² adds in another (fixed) order in double: within 1e-12 relative (each
 * of the ≤ n additions of positive terms rounds by ≤ 2⁻⁵³ relative, and the
 * partial sums are short: ~1e-14 in practice), and identical when repeated.
 * Skipped without a GPU. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_test_util.h"
#include "train/adamw.h"

static float *host_rand(size_t n, float a, uint64_t seed) {
    int64_t nn = (int64_t)n;
    sdc_tensor t = ct_host_rand(1, &nn, a, seed);
    return t.data;
}

static float *dev_copy(const sdc_backend *be, const float *h, size_t n) {
    float *d = be->mem_alloc(n * sizeof *d);
    be->mem_upload(d, h, n * sizeof *d);
    return d;
}

/* Index of the first element whose bits differ, or −1. */
static long long first_diff(const sdc_backend *be, const float *dev, const float *host, size_t n) {
    float *g = malloc(n * sizeof *g);
    be->mem_download(g, dev, n * sizeof *g);
    long long bad = -1;
    for (size_t i = 0; i < n && bad < 0; i++)
        if (memcmp(&g[i], &host[i], sizeof *g) != 0) bad = (long long)i;
    free(g);
    return bad;
}

/* Four steps of AdamW on [begin, n) of the same data on both backends. */
static void adamw_case(const sdc_backend *be, double beta1, sdc_dtype copy_dtype, int with_copy, size_t begin) {
    const size_t n = 100003;
    const double lr = 3e-3;
    sdc_adamw_hparams h;
    sdc_adamw_hparams_default(&h);
    h.beta1 = beta1;
    h.weight_decay = 0.05;
    sdc_adamw o;
    sdc_error err;
    REQUIRE_OK(sdc_adamw_init(&o, n, &h, &err), &err);
    float *p = host_rand(n, 1.0f, 7);
    float *dp = dev_copy(be, p, n), *dm = be->mem_alloc(n * 4), *dv = be->mem_alloc(n * 4), *dg = be->mem_alloc(n * 4);
    const size_t es = sdc_dtype_size(copy_dtype);
    unsigned char *dcopy = with_copy ? be->mem_alloc(n * es) : NULL;
    uint16_t *copy = malloc(n * sizeof *copy);
    for (int64_t step = 1; step <= 4; step++) {
        /* gradients of varied scale, some exactly zero */
        float *g = host_rand(n, step == 2 ? 1e-3f : 1.0f, 100 + (uint64_t)step);
        for (size_t i = 0; i < n; i += 97) g[i] = 0.0f;
        be->mem_upload(dg, g, n * 4);
        sdc_adamw_update_range(&o, p, g, begin, n, step, lr);
        sdc_adamw_args a;
        sdc_adamw_args_at(&o, step, lr, &a);
        be->adamw(dp + begin, dm + begin, dv + begin, dg + begin, n - begin, &a, dcopy ? dcopy + begin * es : NULL,
                  copy_dtype);
        long long bp = first_diff(be, dp, p, n), bm = first_diff(be, dm, o.m, n), bv = first_diff(be, dv, o.v, n);
        CHECK_MSG(bp < 0 && bm < 0 && bv < 0,
                  "adamw beta1 %g begin %zu step %lld: first differing p %lld, m %lld, v %lld", beta1, begin,
                  (long long)step, bp, bm, bv);
        if (dcopy && es == 2) {
            be->mem_download(copy, dcopy, n * es);
            long long bad = -1;
            for (size_t i = begin; i < n && bad < 0; i++) {
                uint16_t want = copy_dtype == SDC_BF16 ? sdc_f32_to_bf16(p[i]) : sdc_f32_to_f16(p[i]);
                if (copy[i] != want) bad = (long long)i;
            }
            CHECK_MSG(bad < 0, "adamw %s copy, step %lld: element %lld differs", sdc_dtype_name(copy_dtype),
                      (long long)step, bad);
        } else if (dcopy) {
            long long bad = first_diff(be, (const float *)(dcopy + begin * es), p + begin, n - begin);
            CHECK_MSG(bad < 0, "adamw F32 copy, step %lld: element %lld differs", (long long)step, bad);
        }
        free(g);
    }
    free(p);
    free(copy);
    be->mem_free(dp, n * 4);
    be->mem_free(dm, n * 4);
    be->mem_free(dv, n * 4);
    be->mem_free(dg, n * 4);
    if (dcopy) be->mem_free(dcopy, n * es);
    sdc_adamw_free(&o);
}

TEST(cuda_adamw_matches_cpu_bitwise) {
    CUDA_BACKEND_OR_SKIP(be);
    /* β1 = 0.9: lerp weight 0.1, m + w·(g−m); β1 = 0.3: weight 0.7, g − 0.3·(g−m) */
    const double betas[2] = {0.9, 0.3};
    for (int b = 0; b < 2; b++) {
        adamw_case(be, betas[b], SDC_F32, 0, 0);     /* no copy, vector path */
        adamw_case(be, betas[b], SDC_BF16, 1, 0);    /* bf16 model weights */
        adamw_case(be, betas[b], SDC_F16, 1, 1);     /* misaligned bucket: scalar path */
        adamw_case(be, betas[b], SDC_BF16, 1, 4099); /* a bucket starting mid-buffer */
        adamw_case(be, betas[b], SDC_F32, 1, 0);
    }
}

TEST(cuda_ema_and_scale_match_cpu_bitwise) {
    CUDA_BACKEND_OR_SKIP(be);
    const sdc_backend *cpu = sdc_cpu_backend();
    const size_t n = 100003;
    const float omds[3] = {1.0f, (float)(1.0 - 0.9999), 0.3f}; /* first step (copy), the usual decay, a coarse one */
    for (int off = 0; off < 2; off++) {
        float *s = host_rand(n, 1.0f, 1), *p = host_rand(n, 1.0f, 2);
        float *ds = dev_copy(be, s, n), *dp = dev_copy(be, p, n);
        for (int k = 0; k < 3; k++) {
            cpu->ema(s + off, p + off, n - off, omds[k]);
            be->ema(ds + off, dp + off, n - off, omds[k]);
            long long bad = first_diff(be, ds, s, n);
            CHECK_MSG(bad < 0, "ema omd %g offset %d: element %lld differs", omds[k], off, bad);
        }
        cpu->scale(s + off, n - off, 0.37f);
        be->scale(ds + off, n - off, 0.37f);
        long long bad = first_diff(be, ds, s, n);
        CHECK_MSG(bad < 0, "scale offset %d: element %lld differs", off, bad);
        free(s);
        free(p);
        be->mem_free(ds, n * 4);
        be->mem_free(dp, n * 4);
    }
}

TEST(cuda_sumsq_matches_cpu) {
    CUDA_BACKEND_OR_SKIP(be);
    const sdc_backend *cpu = sdc_cpu_backend();
    /* one element; below one block; many blocks; more than the 1024 partials */
    const size_t sizes[4] = {1, 1003, 5000011, 20000003};
    for (int k = 0; k < 4; k++) {
        const size_t n = sizes[k];
        float *g = host_rand(n, 2.0f, 31 + (uint64_t)k);
        float *dg = dev_copy(be, g, n);
        for (int off = 0; off < 2 && (size_t)off < n; off++) {
            double want = cpu->sumsq(g + off, n - off), got = be->sumsq(dg + off, n - off);
            double again = be->sumsq(dg + off, n - off);
            CHECK_MSG(fabs(got - want) <= 1e-12 * want, "sumsq n %zu offset %d: %.17g vs CPU %.17g", n, off, got,
                      want);
            CHECK_MSG(memcmp(&got, &again, sizeof got) == 0, "sumsq n %zu not repeatable", n);
        }
        CHECK(be->sumsq(dg, 0) == 0.0);
        free(g);
        be->mem_free(dg, n * 4);
    }
}
