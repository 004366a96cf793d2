/* AdamW over one flat fp32 buffer (DESIGN.md principle 4): the parameters,
 * gradients and both moments of a whole model are each one array of n
 * floats with the same layout, so one step is one fused loop.
 *
 * The math is torch.optim.AdamW's (decoupled weight decay, amsgrad off), per
 * element, at step t (counted from 1) with the step's lr:
 *
 *   p ← p · (1 − lr·wd)
 *   m ← β1·m + (1−β1)·g                      torch: m.lerp_(g, 1−β1)
 *   v ← β2·v + (1−β2)·g²                     torch: v.mul_(β2).addcmul_(g, g, 1−β2)
 *   p ← p − lr/(1−β1^t) · m / (√v / √(1−β2^t) + eps)
 *
 * Bias corrections are computed in double (torch does them in Python
 * floats); every per-element operation is float32 in torch's order, and the
 * two multiply-adds are fused with one rounding (fmaf) as torch's AVX2/AVX-512
 * CPU kernels do (lerp, addcmul), so m and v match torch's CPU result bit for
 * bit. p can differ by an ulp: torch's CPU sqrt goes through MKL's vector
 * sqrt, which is not correctly rounded; ours (sqrtf) is, as CUDA's is. */
#ifndef SDC_TRAIN_ADAMW_H
#define SDC_TRAIN_ADAMW_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sdc_adamw_hparams {
    double lr;           /* the base lr (the schedule scales it; sdc_adamw_step takes the step's lr) */
    double beta1, beta2; /* torch's betas */
    double eps;
    double weight_decay;
    int amsgrad; /* must be 0: not implemented (diffusers' scripts never set it) */
} sdc_adamw_hparams;

/* torch.optim.AdamW's defaults (= diffusers' scripts' flag defaults):
 * lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2. */
void sdc_adamw_hparams_default(sdc_adamw_hparams *h);

typedef struct sdc_adamw {
    sdc_adamw_hparams h;
    const sdc_backend *be; /* where the moments live and the update runs */
    size_t n;
    float *m, *v; /* first and second moments (torch's exp_avg, exp_avg_sq), n floats each, zeroed at init */
    int64_t step; /* steps taken (torch's state["step"]) */
} sdc_adamw;

/* Allocates zeroed moments for n parameters. Bad hyper-parameters (betas
 * outside [0, 1), eps or lr or weight_decay negative or not finite, amsgrad)
 * are SDC_EINVAL with a message naming the value. */
sdc_status sdc_adamw_init(sdc_adamw *o, size_t n, const sdc_adamw_hparams *h, sdc_error *err);
/* The same with the moments on a backend's device (NULL: the CPU); params
 * and grads passed to the steps are then that device's memory too. */
sdc_status sdc_adamw_init_on(sdc_adamw *o, const sdc_backend *be, size_t n, const sdc_adamw_hparams *h,
                             sdc_error *err);
/* One step over params[n] with grads[n] (grads are read only) at learning
 * rate lr; increments o->step first. Deterministic: element-wise, so the
 * result does not depend on the number of threads. */
void sdc_adamw_step(sdc_adamw *o, float *params, const float *grads, double lr);
/* The same, also writing the updated weights into copy in dtype (the
 * bf16/fp16 weights a GPU model computes with; NULL: none). */
void sdc_adamw_step_into(sdc_adamw *o, float *params, const float *grads, double lr, void *copy, sdc_dtype dtype);
/* The same update on a sub-range [begin, end) with an explicit step number
 * (the step counter is not touched): for callers that split the buffer into
 * buckets (one per all-reduce) and update each when its gradients arrive. */
void sdc_adamw_update_range(const sdc_adamw *o, float *params, const float *grads, size_t begin, size_t end,
                            int64_t step, double lr);
/* The per-element coefficients of step `step` at rate lr (for a backend's
 * fused kernel, which then applies exactly adamw_block's math). */
void sdc_adamw_args_at(const sdc_adamw *o, int64_t step, double lr, sdc_adamw_args *a);
void sdc_adamw_free(sdc_adamw *o);

#ifdef __cplusplus
}
#endif

#endif
