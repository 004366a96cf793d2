/* Attention with head_dim > 256 (the VAE's single 512-channel head) on the
 * CUDA backend against the CPU backend: forward and the three gradients.
 * Skipped without a GPU. */
#include "cuda_test_util.h"

static void wide_case(const sdc_backend *be, sdc_dtype dt, int64_t B, int64_t Tq, int64_t Tk, int H, int64_t D,
                      int causal) {
    const sdc_backend *cpu = sdc_cpu_backend();
    const int64_t sq[3] = {B, Tq, H * D}, sk[3] = {B, Tk, H * D};
    const float scale = 1.0f / sqrtf((float)D);
    sdc_tensor q = ct_host_rand(3, sq, 1.0f, 1), k = ct_host_rand(3, sk, 1.0f, 2), v = ct_host_rand(3, sk, 1.0f, 3);
    sdc_tensor dout = ct_host_rand(3, sq, 1.0f, 4);
    sdc_tensor o = ct_host_zeros(3, sq), dq = ct_host_zeros(3, sq), dk = ct_host_zeros(3, sk), dv = ct_host_zeros(3, sk);
    cpu->attention(&o, &q, &k, &v, B, Tq, Tk, H, D, scale, causal);
    cpu->attention_backward(&dq, &dk, &dv, &dout, &q, &k, &v, B, Tq, Tk, H, D, scale, causal);
    sdc_tensor gq = ct_to_dev(be, &q, dt), gk = ct_to_dev(be, &k, dt), gv = ct_to_dev(be, &v, dt);
    sdc_tensor gdo = ct_to_dev(be, &dout, dt);
    sdc_tensor go = ct_dev_zeros(be, 3, sq, dt), gdq = ct_dev_zeros(be, 3, sq, dt), gdk = ct_dev_zeros(be, 3, sk, dt),
               gdv = ct_dev_zeros(be, 3, sk, dt);
    be->attention(&go, &gq, &gk, &gv, B, Tq, Tk, H, D, scale, causal);
    be->attention_backward(&gdq, &gdk, &gdv, &gdo, &gq, &gk, &gv, B, Tq, Tk, H, D, scale, causal);
    const sdc_tensor *ref[4] = {&o, &dq, &dk, &dv}, *got[4] = {&go, &gdq, &gdk, &gdv};
    static const char *const what[4] = {"out", "dq", "dk", "dv"};
    for (int i = 0; i < 4; i++) {
        float *h = ct_from_dev(be, got[i]);
        double e = ct_rel_err(h, ref[i]->data, sdc_tensor_numel(ref[i]));
        /* bf16: the scores and probabilities are rounded between the products */
        double tol = dt == SDC_F32 ? 1e-5 : 3e-2;
        CHECK_MSG(e <= tol, "%s B%lld Tq%lld Tk%lld H%d D%lld causal %d: %s rel err %.3g > %.1g", sdc_dtype_name(dt),
                  (long long)B, (long long)Tq, (long long)Tk, H, (long long)D, causal, what[i], e, tol);
        free(h);
    }
    sdc_tensor *all[8] = {&gq, &gk, &gv, &gdo, &go, &gdq, &gdk, &gdv};
    for (int i = 0; i < 8; i++) ct_dev_free(be, all[i]);
    free(q.data), free(k.data), free(v.data), free(dout.data), free(o.data), free(dq.data), free(dk.data), free(dv.data);
}

TEST(cuda_attention_wide_head_matches_cpu) {
    CUDA_BACKEND_OR_SKIP(be);
    for (int d = 0; d < 2; d++) {
        sdc_dtype dt = d ? SDC_BF16 : SDC_F32;
        wide_case(be, dt, 2, 64, 64, 1, 512, 0); /* the VAE's mid-block attention */
        wide_case(be, dt, 1, 37, 21, 2, 300, 0); /* odd sizes, two heads */
        wide_case(be, dt, 1, 33, 33, 1, 264, 1); /* causal */
    }
}
