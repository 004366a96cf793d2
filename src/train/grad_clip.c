#include "train/grad_clip.h"

#include "backend/backend.h"

#include <math.h>

double sdc_grad_sumsq(const float *g, size_t n) { return sdc_cpu_backend()->sumsq(g, n); }

double sdc_grad_norm(const float *g, size_t n) { return sqrt(sdc_grad_sumsq(g, n)); }

float sdc_grad_clip_coef(double total_norm, double max_norm) {
    /* torch: clip_coef = max_norm / (total_norm + 1e-6) on a float32 tensor,
     * where `scalar / tensor` is reciprocal(tensor) * scalar; then clamp(max=1) */
    float d = (float)total_norm + 1e-6f;
    float c = (1.0f / d) * (float)max_norm;
    return c < 1.0f ? c : 1.0f;
}

void sdc_grad_scale(float *g, size_t n, float c) { sdc_cpu_backend()->scale(g, n, c); }

double sdc_clip_grad_norm(float *g, size_t n, double max_norm) {
    double norm = sdc_grad_norm(g, n);
    if (!sdc_grad_finite(norm)) return norm;
    float c = sdc_grad_clip_coef(norm, max_norm);
    /* torch multiplies by the clamped coefficient even when it is 1 (a no-op) */
    if (c != 1.0f) sdc_grad_scale(g, n, c);
    return norm;
}
