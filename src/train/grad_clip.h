/* Gradient norm and clipping over one flat fp32 gradient buffer, with
 * torch.nn.utils.clip_grad_norm_'s semantics (norm_type 2):
 *
 *   total_norm = ‖g‖₂ over every gradient
 *   clip_coef  = max_norm / (total_norm + 1e-6),  g ← g · min(clip_coef, 1)
 *
 * The sum of squares is taken in double over fixed chunks whose size depends
 * only on n, each summed in order, and the chunk sums are added in order: the
 * result is the same for any number of threads. In double a finite float's
 * square cannot overflow, so the norm is finite exactly when every gradient
 * is: the NaN/Inf check comes with the norm (sdc_grad_finite). */
#ifndef SDC_TRAIN_GRAD_CLIP_H
#define SDC_TRAIN_GRAD_CLIP_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Σ g[i]² in double, deterministic (see above). Partial sums of several
 * buffers or ranks add up to the global one before the square root. */
double sdc_grad_sumsq(const float *g, size_t n);
/* √(sdc_grad_sumsq) */
double sdc_grad_norm(const float *g, size_t n);
static inline int sdc_grad_finite(double norm) { return norm - norm == 0; /* false for NaN and ±Inf */ }

/* min(max_norm / (total_norm + 1e-6), 1) in float32, computed as torch does
 * (total_norm rounded to float32, then reciprocal times max_norm). */
float sdc_grad_clip_coef(double total_norm, double max_norm);
/* g ← g · c (element-wise, float32). */
void sdc_grad_scale(float *g, size_t n, float c);

/* clip_grad_norm_(g, max_norm): returns the total norm before clipping.
 * When the norm is not finite the gradients are left as they are (torch
 * would multiply them all by NaN); the caller checks sdc_grad_finite() and
 * skips the step. */
double sdc_clip_grad_norm(float *g, size_t n, double max_norm);

#ifdef __cplusplus
}
#endif

#endif
