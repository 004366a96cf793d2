#include "train/ema.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"

void sdc_ema_hparams_default(sdc_ema_hparams *h) {
    h->decay = 0.9999;
    h->min_decay = 0.0;
    h->update_after_step = 0;
    h->use_ema_warmup = 0;
    h->inv_gamma = 1.0;
    h->power = 2.0 / 3.0;
}

sdc_status sdc_ema_init(sdc_ema *e, const float *params, size_t n, const sdc_ema_hparams *h, sdc_error *err) {
    return sdc_ema_init_on(e, NULL, params, n, h, err);
}

sdc_status sdc_ema_init_on(sdc_ema *e, const sdc_backend *be, const float *params, size_t n, const sdc_ema_hparams *h,
                           sdc_error *err) {
    memset(e, 0, sizeof *e);
    e->be = be ? be : sdc_cpu_backend();
    if (!(h->decay >= 0 && h->decay <= 1) || !(h->min_decay >= 0 && h->min_decay <= 1))
        return sdc_fail(err, SDC_EINVAL, "EMA: decay %g / min_decay %g must lie in [0, 1]", h->decay, h->min_decay);
    if (h->use_ema_warmup && !(h->inv_gamma > 0 && isfinite(h->inv_gamma) && isfinite(h->power)))
        return sdc_fail(err, SDC_EINVAL, "EMA: inv_gamma %g must be > 0 and power %g finite", h->inv_gamma, h->power);
    e->shadow = e->be->mem_alloc((n ? n : 1) * sizeof(float));
    if (!e->shadow) return sdc_fail(err, SDC_ENOMEM, "EMA: out of memory for %zu parameters", n);
    e->be->mem_copy(e->shadow, params, n * sizeof(float));
    e->h = *h;
    e->n = n;
    e->cur_decay = NAN;
    return SDC_OK;
}

double sdc_ema_get_decay(const sdc_ema_hparams *h, int64_t optimization_step) {
    int64_t step = optimization_step - h->update_after_step - 1;
    if (step < 0) step = 0;
    if (step <= 0) return 0.0;
    double d;
    if (h->use_ema_warmup)
        d = 1.0 - pow(1.0 + (double)step / h->inv_gamma, -h->power);
    else
        d = (double)(1 + step) / (double)(10 + step);
    d = fmin(d, h->decay);
    d = fmax(d, h->min_decay);
    return d;
}

void sdc_ema_step(sdc_ema *e, const float *params) {
    e->optimization_step++;
    double d = sdc_ema_get_decay(&e->h, e->optimization_step);
    e->cur_decay = d;
    /* torch: s.sub_(one_minus_decay * (s − p)): the Python scalar becomes a float32 factor */
    e->be->ema(e->shadow, params, e->n, (float)(1.0 - d));
}

void sdc_ema_copy_to(const sdc_ema *e, float *params) {
    e->be->mem_copy(params, e->shadow, e->n * sizeof(float));
}

void sdc_ema_free(sdc_ema *e) {
    if (e->be) e->be->mem_free(e->shadow, (e->n ? e->n : 1) * sizeof(float));
    e->shadow = NULL;
    e->n = 0;
}
