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
    return sdc_adamw_init_on(o, NULL, n, h, err);
}

sdc_status sdc_adamw_init_on(sdc_adamw *o, const sdc_backend *be, size_t n, const sdc_adamw_hparams *h,
                            sdc_error *err) {
    memset(o, 0, sizeof *o);
    o->be = be ? be : sdc_cpu_backend();
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
    o->m = o->be->mem_alloc(bytes);
    o->v = o->be->mem_alloc(bytes);
    if (!o->m || !o->v) {
        sdc_adamw_free(o);
        return sdc_fail(err, SDC_ENOMEM, "AdamW: out of memory for the moments of %zu parameters", n);
    }
    return SDC_OK;
}

/* The per-step scalars, as torch forms them: Python floats (double), rounded
 * to float32 where they meet a tensor. The per-element math is the backend's
 * (backend/cpu/cpu_optim.c, backend/cuda/cuda_optim.cu). */
void sdc_adamw_args_at(const sdc_adamw *o, int64_t step, double lr, sdc_adamw_args *k) {
    const sdc_adamw_hparams *h = &o->h;
    const double bc1 = 1.0 - pow(h->beta1, (double)step);
    const double bc2 = 1.0 - pow(h->beta2, (double)step);
    k->decay = h->weight_decay != 0 ? (float)(1.0 - lr * h->weight_decay) : 1.0f;
    float w1 = (float)(1.0 - h->beta1);
    k->lerp_from_end = !(fabsf(w1) < 0.5f);
    k->lerp_w = k->lerp_from_end ? w1 - 1.0f : w1;
    k->b2 = (float)h->beta2;
    k->w2 = (float)(1.0 - h->beta2);
    k->neg_step = (float)(-(lr / bc1));
    k->bc2_sqrt = (float)sqrt(bc2);
    k->eps = (float)h->eps;
}

void sdc_adamw_update_range(const sdc_adamw *o, float *params, const float *grads, size_t begin, size_t end,
                            int64_t step, double lr) {
    SDC_ASSERT(step >= 1 && begin <= end && end <= o->n);
    sdc_adamw_args k;
    sdc_adamw_args_at(o, step, lr, &k);
    o->be->adamw(params + begin, o->m + begin, o->v + begin, grads + begin, end - begin, &k, NULL, SDC_F32);
}

void sdc_adamw_step(sdc_adamw *o, float *params, const float *grads, double lr) {
    sdc_adamw_step_into(o, params, grads, lr, NULL, SDC_F32);
}

void sdc_adamw_step_into(sdc_adamw *o, float *params, const float *grads, double lr, void *copy, sdc_dtype dtype) {
    o->step++;
    sdc_adamw_args k;
    sdc_adamw_args_at(o, o->step, lr, &k);
    o->be->adamw(params, o->m, o->v, grads, o->n, &k, copy, dtype);
}

void sdc_adamw_free(sdc_adamw *o) {
    size_t bytes = (o->n ? o->n : 1) * sizeof(float);
    if (o->be) {
        o->be->mem_free(o->m, bytes);
        o->be->mem_free(o->v, bytes);
    }
    o->m = o->v = NULL;
    o->n = 0;
}
