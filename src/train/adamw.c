#include "train/adamw.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef _OPENMP /* built with NO_OMP=1: the loops run serially */
#pragma GCC diagnostic ignored "-Wunknown-pragmas"
#endif

void sdc_adamw_hparams_default(sdc_adamw_hparams *h) {
    h->lr = 1e-3;
    h->beta1 = 0.9;
    h->beta2 = 0.999;
    h->eps = 1e-8;
    h->weight_decay = 1e-2;
    h->amsgrad = 0;
}

sdc_status sdc_adamw_init(sdc_adamw *o, size_t n, const sdc_adamw_hparams *h, sdc_error *err) {
    memset(o, 0, sizeof *o);
    if (h->amsgrad) return sdc_fail(err, SDC_EUNSUPPORTED, "AdamW: amsgrad is not supported");
    /* torch's own checks (Adam.__init__), plus finiteness */
    if (!(h->lr >= 0 && isfinite(h->lr))) return sdc_fail(err, SDC_EINVAL, "AdamW: invalid learning rate %g", h->lr);
    if (!(h->beta1 >= 0 && h->beta1 < 1)) return sdc_fail(err, SDC_EINVAL, "AdamW: invalid beta1 %g (need 0 <= beta1 < 1)", h->beta1);
    if (!(h->beta2 >= 0 && h->beta2 < 1)) return sdc_fail(err, SDC_EINVAL, "AdamW: invalid beta2 %g (need 0 <= beta2 < 1)", h->beta2);
    if (!(h->eps >= 0 && isfinite(h->eps))) return sdc_fail(err, SDC_EINVAL, "AdamW: invalid epsilon %g", h->eps);
    if (!(h->weight_decay >= 0 && isfinite(h->weight_decay)))
        return sdc_fail(err, SDC_EINVAL, "AdamW: invalid weight_decay %g", h->weight_decay);
    o->h = *h;
    o->n = n;
    size_t bytes = (n ? n : 1) * sizeof(float);
    o->m = calloc(1, bytes);
    o->v = calloc(1, bytes);
    if (!o->m || !o->v) {
        sdc_adamw_free(o);
        return sdc_fail(err, SDC_ENOMEM, "AdamW: out of memory for the moments of %zu parameters", n);
    }
    return SDC_OK;
}

/* The per-step scalars, as torch forms them: Python floats (double), rounded
 * to float32 where they meet a tensor. */
typedef struct adamw_coefs {
    float decay;       /* 1 − lr·wd (1 when wd is 0: torch skips the multiply, ·1 is exact) */
    float lerp_w;      /* lerp's fused coefficient: 1−β1, or (1−β1) − 1 for weights ≥ 0.5 */
    int lerp_from_end; /* torch's lerp: m + w·(g−m) for |w| < 0.5, else g − (1−w)·(g−m) */
    float b2, w2;      /* β2 and 1−β2 */
    float neg_step;    /* −lr/(1−β1^t) */
    float bc2_sqrt;    /* √(1−β2^t) */
    float eps;
} adamw_coefs;

/* One block of elements. On x86-64 with glibc (ifunc) a second copy is built
 * for CPUs with AVX2+FMA, chosen at load time, where fmaf is one instruction
 * instead of a libm call (twice as fast); the result is the same, since fmaf
 * rounds once either way. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
static void adamw_block(const adamw_coefs *k, float *restrict p, const float *restrict g, float *restrict m,
                        float *restrict v, size_t n) {
    const float decay = k->decay, w = k->lerp_w, b2 = k->b2, w2 = k->w2, ns = k->neg_step, bs = k->bc2_sqrt,
                eps = k->eps;
    /* the loop twice, one per lerp formula, so that neither branches per element */
#define ADAMW_LOOP(BASE)                                                                                  \
    for (size_t i = 0; i < n; i++) {                                                                      \
        float pi = p[i] * decay, gi = g[i];                                                               \
        float mi = fmaf(w, gi - m[i], BASE); /* m.lerp_(g, 1−β1), fused as torch's CPU kernel */           \
        float vi = fmaf(w2 * gi, gi, v[i] * b2); /* v.mul_(β2).addcmul_(g, g, 1−β2), fused likewise */     \
        float denom = sqrtf(vi) / bs + eps;      /* (v.sqrt() / √bc2).add_(eps) */                          \
        m[i] = mi;                                                                                        \
        v[i] = vi;                                                                                        \
        p[i] = pi + ns * mi / denom; /* p.addcdiv_(m, denom, value=−step_size): p + (value·m)/denom */     \
    }
    if (k->lerp_from_end)
        ADAMW_LOOP(gi)
    else
        ADAMW_LOOP(m[i])
#undef ADAMW_LOOP
}

#define SDC_ADAMW_BLOCK 16384

void sdc_adamw_update_range(const sdc_adamw *o, float *params, const float *grads, size_t begin, size_t end,
                            int64_t step, double lr) {
    SDC_ASSERT(step >= 1 && begin <= end && end <= o->n);
    const sdc_adamw_hparams *h = &o->h;
    const double bc1 = 1.0 - pow(h->beta1, (double)step);
    const double bc2 = 1.0 - pow(h->beta2, (double)step);
    adamw_coefs k;
    k.decay = h->weight_decay != 0 ? (float)(1.0 - lr * h->weight_decay) : 1.0f;
    float w1 = (float)(1.0 - h->beta1);
    k.lerp_from_end = !(fabsf(w1) < 0.5f);
    k.lerp_w = k.lerp_from_end ? w1 - 1.0f : w1;
    k.b2 = (float)h->beta2;
    k.w2 = (float)(1.0 - h->beta2);
    k.neg_step = (float)(-(lr / bc1));
    k.bc2_sqrt = (float)sqrt(bc2);
    k.eps = (float)h->eps;
    const size_t n = end - begin;
    const long long nblocks = (long long)((n + SDC_ADAMW_BLOCK - 1) / SDC_ADAMW_BLOCK);
#pragma omp parallel for schedule(static) if (nblocks > 2)
    for (long long bi = 0; bi < nblocks; bi++) {
        size_t s = begin + (size_t)bi * SDC_ADAMW_BLOCK, len = end - s < SDC_ADAMW_BLOCK ? end - s : SDC_ADAMW_BLOCK;
        adamw_block(&k, params + s, grads + s, o->m + s, o->v + s, len);
    }
}

void sdc_adamw_step(sdc_adamw *o, float *params, const float *grads, double lr) {
    o->step++;
    sdc_adamw_update_range(o, params, grads, 0, o->n, o->step, lr);
}

void sdc_adamw_free(sdc_adamw *o) {
    free(o->m);
    free(o->v);
    o->m = o->v = NULL;
    o->n = 0;
}
