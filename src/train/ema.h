/* Exponential moving average of the parameters (one flat fp32 buffer), with
 * diffusers.training_utils.EMAModel's semantics.
 *
 * EMAModel.step() first increments optimization_step, then takes
 *   decay = get_decay(optimization_step):
 *     s = max(0, optimization_step − update_after_step − 1)
 *     s ≤ 0:            0
 *     use_ema_warmup:   1 − (1 + s/inv_gamma)^(−power)
 *     otherwise:        (1 + s)/(10 + s)
 *     clamped to [min_decay, decay]  (min first, then max, as diffusers does)
 * and updates every shadow value: shadow ← shadow − (1 − decay)·(shadow − p),
 * in float32 with (1 − decay) rounded to float32 as torch does for a Python
 * scalar. So the first step (decay 0) copies the parameters. */
#ifndef SDC_TRAIN_EMA_H
#define SDC_TRAIN_EMA_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sdc_ema_hparams {
    double decay;     /* the ceiling (EMAModel's `decay`, 0.9999) */
    double min_decay; /* 0 */
    int64_t update_after_step; /* 0 */
    int use_ema_warmup;        /* 0 */
    double inv_gamma;          /* 1 */
    double power;              /* 2/3 */
} sdc_ema_hparams;

/* EMAModel's defaults (as train_text_to_image.py constructs it). */
void sdc_ema_hparams_default(sdc_ema_hparams *h);

typedef struct sdc_ema {
    sdc_ema_hparams h;
    const sdc_backend *be; /* where the shadow lives */
    size_t n;
    float *shadow;              /* n floats: the averaged parameters */
    int64_t optimization_step;  /* EMAModel.optimization_step */
    double cur_decay;           /* the decay of the last step (EMAModel.cur_decay_value), NAN before the first */
} sdc_ema;

/* Shadow = a copy of params[n] (EMAModel(parameters)). */
sdc_status sdc_ema_init(sdc_ema *e, const float *params, size_t n, const sdc_ema_hparams *h, sdc_error *err);
/* The same with the shadow on a backend's device (NULL: the CPU); params is
 * that device's memory. */
sdc_status sdc_ema_init_on(sdc_ema *e, const sdc_backend *be, const float *params, size_t n, const sdc_ema_hparams *h,
                           sdc_error *err);
/* EMAModel.get_decay(optimization_step) */
double sdc_ema_get_decay(const sdc_ema_hparams *h, int64_t optimization_step);
/* EMAModel.step(parameters): optimization_step += 1, then the update.
 * Element-wise, so deterministic for any thread count. */
void sdc_ema_step(sdc_ema *e, const float *params);
/* EMAModel.copy_to(parameters) */
void sdc_ema_copy_to(const sdc_ema *e, float *params);
void sdc_ema_free(sdc_ema *e);

#ifdef __cplusplus
}
#endif

#endif
