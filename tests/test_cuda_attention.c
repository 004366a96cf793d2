/* CUDA attention and attention_backward against the CPU backend (the fp32
 * reference), on the same random inputs rounded to the tested dtype first,
 * so only the GPU's own rounding and summation order differ. Every case
 * runs F32, BF16 and F16; BF16 and F16 run three ways: the default choice
 * (cuDNN's fused forward where it has a plan, else sdc's tensor-core
 * kernels where D allows), sdc's own kernels (SDC_CUDA_ATTN=sdc) and, with
 * SDC_CUDA_ATTN=generic, the CUDA-core kernels. Gradient buffers start
 * from garbage, so assignment (not +=) is checked.
 *
 * Device copies go through mem_upload/mem_download with the dtype converted
 * on the host: this test needs the attention family and the backend's memory only. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "cuda_test_util.h"

typedef struct attn_case {
    int B, Tq, Tk, H, D, causal;
    float amp; /* q, k ~ U(−amp, amp): larger means peakier softmax rows */
} attn_case;

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
    be->mem_download(buf, t->data, nb);
    float *h = malloc((n ? n : 1) * sizeof *h);
    sdc_convert_to_f32(h, buf, t->dtype, n);
    free(buf);
    return h;
}

/* Forward and backward of one case in one dtype, on the kernels the
 * environment selects; CHECKs every output against the CPU. With `repeat`,
 * runs the GPU twice and requires bit-identical results. */
static void run_case(const sdc_backend *be, const attn_case *c, sdc_dtype dt, const char *path, int repeat) {
    const sdc_backend *cpu = sdc_cpu_backend();
    const int64_t HD = (int64_t)c->H * c->D;
    const int64_t sq[3] = {c->B, c->Tq, HD}, sk[3] = {c->B, c->Tk, HD};
    const float scale = 1.0f / sqrtf((float)c->D);
    const uint64_t seed = (uint64_t)(c->Tq * 131 + c->Tk * 7 + c->D);
    sdc_tensor hq = ct_host_rand(3, sq, c->amp, seed + 1), hk = ct_host_rand(3, sk, c->amp, seed + 2);
    sdc_tensor hv = ct_host_rand(3, sk, 1.0f, seed + 3), hg = ct_host_rand(3, sq, 1.0f, seed + 4);
    const int64_t nq = sdc_tensor_numel(&hq), nk = sdc_tensor_numel(&hk);
    round_to(hq.data, nq, dt), round_to(hk.data, nk, dt), round_to(hv.data, nk, dt), round_to(hg.data, nq, dt);

    /* the reference */
    sdc_tensor ro = ct_host_zeros(3, sq), rdq = ct_host_zeros(3, sq), rdk = ct_host_zeros(3, sk),
               rdv = ct_host_zeros(3, sk);
    cpu->attention(&ro, &hq, &hk, &hv, c->B, c->Tq, c->Tk, c->H, c->D, scale, c->causal);
    cpu->attention_backward(&rdq, &rdk, &rdv, &hg, &hq, &hk, &hv, c->B, c->Tq, c->Tk, c->H, c->D, scale, c->causal);

    sdc_tensor q = dev_from_host(be, &hq, dt), k = dev_from_host(be, &hk, dt), v = dev_from_host(be, &hv, dt);
    sdc_tensor g = dev_from_host(be, &hg, dt);
    /* outputs start as garbage: the op must assign every element */
    sdc_tensor junk_q = ct_host_rand(3, sq, 7.0f, seed + 5), junk_k = ct_host_rand(3, sk, 7.0f, seed + 6);
    sdc_tensor o = dev_from_host(be, &junk_q, dt), dq = dev_from_host(be, &junk_q, dt);
    sdc_tensor dk = dev_from_host(be, &junk_k, dt), dv = dev_from_host(be, &junk_k, dt);
    be->attention(&o, &q, &k, &v, c->B, c->Tq, c->Tk, c->H, c->D, scale, c->causal);
    be->attention_backward(&dq, &dk, &dv, &g, &q, &k, &v, c->B, c->Tq, c->Tk, c->H, c->D, scale, c->causal);
    float *go = host_from_dev(be, &o), *gdq = host_from_dev(be, &dq), *gdk = host_from_dev(be, &dk),
          *gdv = host_from_dev(be, &dv);

    /* Tolerances (relative L2 error): ct_tol per dtype. F32 differs only in
     * summation order and exp2 vs exp. BF16/F16 round the outputs (2⁻⁹ /
     * 2⁻¹¹ relative) and, on tensor cores, P and dS before their products,
     * as FlashAttention does; measured errors on an H200 are well inside. */
    const double tol = ct_tol(dt);
    const char *names[4] = {"out", "dq", "dk", "dv"};
    const float *got[4] = {go, gdq, gdk, gdv};
    const float *want[4] = {ro.data, rdq.data, rdk.data, rdv.data};
    const int64_t n[4] = {nq, nq, nk, nk};
    for (int i = 0; i < 4; i++) {
        double e = ct_rel_err(got[i], want[i], n[i]);
        CHECK_MSG(e <= tol, "%s %s (%s) B=%d Tq=%d Tk=%d H=%d D=%d causal=%d: rel err %.3g > %.3g", names[i],
                  sdc_dtype_name(dt), path, c->B, c->Tq, c->Tk, c->H, c->D, c->causal, e, tol);
    }
    /* the training path: the forward keeps each row's statistic, the
     * backward takes it and the stored output instead of recomputing them;
     * the same output bit for bit, gradients within the same tolerance */
    if (be->attention_lse && be->attention_backward_saved) {
        sdc_tensor o2 = dev_from_host(be, &junk_q, dt), dq2 = dev_from_host(be, &junk_q, dt);
        sdc_tensor dk2 = dev_from_host(be, &junk_k, dt), dv2 = dev_from_host(be, &junk_k, dt);
        const size_t nlse = (size_t)c->B * c->H * c->Tq;
        float *lse = be->mem_alloc(nlse * sizeof(float));
        be->attention_lse(&o2, lse, &q, &k, &v, c->B, c->Tq, c->Tk, c->H, c->D, scale, c->causal);
        be->attention_backward_saved(&dq2, &dk2, &dv2, &g, &q, &k, &v, &o2, lse, c->B, c->Tq, c->Tk, c->H, c->D,
                                     scale, c->causal);
        float *s2[4] = {host_from_dev(be, &o2), host_from_dev(be, &dq2), host_from_dev(be, &dk2),
                        host_from_dev(be, &dv2)};
        CHECK_MSG(memcmp(s2[0], go, (size_t)nq * sizeof(float)) == 0, "out %s (%s): writing lse changed it",
                  sdc_dtype_name(dt), path);
        for (int i = 1; i < 4; i++) {
            double e = ct_rel_err(s2[i], want[i], n[i]);
            CHECK_MSG(e <= tol, "%s %s (%s, saved lse) B=%d Tq=%d Tk=%d H=%d D=%d causal=%d: rel err %.3g > %.3g",
                      names[i], sdc_dtype_name(dt), path, c->B, c->Tq, c->Tk, c->H, c->D, c->causal, e, tol);
        }
        for (int i = 0; i < 4; i++) free(s2[i]);
        sdc_tensor *d2[4] = {&o2, &dq2, &dk2, &dv2};
        for (int i = 0; i < 4; i++) be->mem_free(d2[i]->data, sdc_tensor_nbytes(d2[i]));
        be->mem_free(lse, nlse * sizeof(float));
    }
    if (repeat) { /* determinism: no atomics, fixed summation order */
        be->attention(&o, &q, &k, &v, c->B, c->Tq, c->Tk, c->H, c->D, scale, c->causal);
        be->attention_backward(&dq, &dk, &dv, &g, &q, &k, &v, c->B, c->Tq, c->Tk, c->H, c->D, scale, c->causal);
        float *again[4] = {host_from_dev(be, &o), host_from_dev(be, &dq), host_from_dev(be, &dk),
                           host_from_dev(be, &dv)};
        for (int i = 0; i < 4; i++) {
            CHECK_MSG(memcmp(again[i], got[i], (size_t)n[i] * sizeof(float)) == 0, "%s %s (%s) not repeatable",
                      names[i], sdc_dtype_name(dt), path);
            free(again[i]);
        }
    }
    free(go), free(gdq), free(gdk), free(gdv);
    sdc_tensor *devs[8] = {&q, &k, &v, &g, &o, &dq, &dk, &dv};
    for (int i = 0; i < 8; i++) be->mem_free(devs[i]->data, sdc_tensor_nbytes(devs[i]));
    sdc_tensor *hosts[10] = {&hq, &hk, &hv, &hg, &ro, &rdq, &rdk, &rdv, &junk_q, &junk_k};
    for (int i = 0; i < 10; i++) free(hosts[i]->data);
}

/* Every dtype; BF16 and F16 on both kernel families. */
static void run_all(const attn_case *cases, int ncases, int repeat) {
    CUDA_BACKEND_OR_SKIP(be);
    const sdc_dtype dts[3] = {SDC_F32, SDC_BF16, SDC_F16};
    const char *saved = getenv("SDC_CUDA_ATTN");
    for (int ci = 0; ci < ncases; ci++)
        for (int d = 0; d < 3; d++) {
            unsetenv("SDC_CUDA_ATTN");
            run_case(be, &cases[ci], dts[d], "default", repeat);
            if (dts[d] == SDC_F32) continue; /* F32 is always generic */
            setenv("SDC_CUDA_ATTN", "sdc", 1); /* sdc's own tensor-core forward, not cuDNN's */
            run_case(be, &cases[ci], dts[d], "sdc", repeat);
            setenv("SDC_CUDA_ATTN", "generic", 1);
            run_case(be, &cases[ci], dts[d], "generic", repeat);
        }
    if (saved)
        setenv("SDC_CUDA_ATTN", saved, 1);
    else
        unsetenv("SDC_CUDA_ATTN");
}

TEST(cuda_attention_small) {
    /* tiny test models: D = 8, tiles only partly filled */
    static const attn_case cases[] = {{2, 64, 64, 2, 8, 0, 1.5f}, {1, 5, 3, 1, 16, 0, 2.0f}};
    run_all(cases, 2, 0);
}

TEST(cuda_attention_causal) {
    /* CLIP's text encoder (T = 77, D = 64), and a causal case with Tq ≠ Tk
     * both ways and peaky rows (the online max moves a lot) */
    static const attn_case cases[] = {{2, 77, 77, 2, 64, 1, 1.5f},
                                      {2, 33, 17, 2, 24, 1, 2.0f},
                                      {1, 17, 33, 2, 24, 1, 2.0f},
                                      {1, 100, 100, 1, 16, 1, 6.0f}};
    run_all(cases, 4, 0);
}

TEST(cuda_attention_cross) {
    /* cross-attention: 77 (and 154) text tokens, padded and masked inside a
     * key tile; few key tiles, so dK/dV is split over the queries and reduced
     * (the last case splits too: 20 keys, 300 queries) */
    static const attn_case cases[] = {
        {1, 256, 77, 8, 40, 0, 1.5f}, {1, 64, 154, 4, 96, 0, 2.0f}, {1, 300, 20, 2, 64, 0, 2.0f}};
    run_all(cases, 3, 0);
}

TEST(cuda_attention_odd) {
    /* D not a multiple of 8 (generic for every dtype), odd sequence lengths,
     * the largest D (256, generic), D = 160 (the largest on tensor cores, with
     * 16-row streamed tiles in the backward), and D = 80 with peaky rows */
    static const attn_case cases[] = {{2, 33, 17, 2, 24, 0, 1.5f}, {1, 70, 90, 3, 33, 1, 2.0f},
                                      {1, 70, 90, 2, 256, 0, 2.0f}, {1, 130, 130, 2, 160, 1, 3.0f},
                                      {1, 200, 150, 2, 80, 0, 3.0f}};
    run_all(cases, 5, 0);
}

TEST(cuda_attention_sd_shapes) {
    /* SD1.5's first transformer block at 32×32 latents, and D = 64 (SD2/SDXL);
     * repeated to check bit-for-bit determinism */
    static const attn_case cases[] = {{1, 1024, 1024, 8, 40, 0, 1.5f}, {1, 1024, 1024, 5, 64, 0, 1.5f}};
    run_all(cases, 2, 1);
}
