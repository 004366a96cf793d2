#include "train/grad_clip.h"

#include <math.h>

#ifndef _OPENMP /* built with NO_OMP=1: the loops run serially */
#pragma GCC diagnostic ignored "-Wunknown-pragmas"
#endif

/* At most this many chunks, each at least SDC_GN_MIN_CHUNK long: the chunk
 * size is a function of n alone, and the partials fit on the stack (no
 * allocation in the step loop). */
#define SDC_GN_MAX_CHUNKS 4096
#define SDC_GN_MIN_CHUNK 65536

double sdc_grad_sumsq(const float *g, size_t n) {
    if (n == 0) return 0.0;
    size_t chunk = (n + SDC_GN_MAX_CHUNKS - 1) / SDC_GN_MAX_CHUNKS;
    if (chunk < SDC_GN_MIN_CHUNK) chunk = SDC_GN_MIN_CHUNK;
    const long long nchunks = (long long)((n + chunk - 1) / chunk);
    double part[SDC_GN_MAX_CHUNKS];
#pragma omp parallel for schedule(static) if (nchunks > 1)
    for (long long c = 0; c < nchunks; c++) {
        size_t b = (size_t)c * chunk, e = b + chunk < n ? b + chunk : n;
        double s = 0.0;
        for (size_t i = b; i < e; i++) s += (double)g[i] * (double)g[i];
        part[c] = s;
    }
    double s = 0.0;
    for (long long c = 0; c < nchunks; c++) s += part[c];
    return s;
}

double sdc_grad_norm(const float *g, size_t n) { return sqrt(sdc_grad_sumsq(g, n)); }

float sdc_grad_clip_coef(double total_norm, double max_norm) {
    /* torch: clip_coef = max_norm / (total_norm + 1e-6) on a float32 tensor,
     * where `scalar / tensor` is reciprocal(tensor) * scalar; then clamp(max=1) */
    float d = (float)total_norm + 1e-6f;
    float c = (1.0f / d) * (float)max_norm;
    return c < 1.0f ? c : 1.0f;
}

void sdc_grad_scale(float *g, size_t n, float c) {
    const long long nn = (long long)n;
#pragma omp parallel for schedule(static) if (nn > 32768)
    for (long long i = 0; i < nn; i++) g[i] = g[i] * c;
}

double sdc_clip_grad_norm(float *g, size_t n, double max_norm) {
    double norm = sdc_grad_norm(g, n);
    if (!sdc_grad_finite(norm)) return norm;
    float c = sdc_grad_clip_coef(norm, max_norm);
    /* torch multiplies by the clamped coefficient even when it is 1 (a no-op) */
    if (c != 1.0f) sdc_grad_scale(g, n, c);
    return norm;
}
