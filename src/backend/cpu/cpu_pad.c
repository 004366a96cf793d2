/* Zero padding of the last two axes (the VAE encoder's downsampler). */
#include <string.h>

#include "backend/backend.h"

void sdc_cpu_pad2d(sdc_tensor *out, const sdc_tensor *x, int64_t B, int64_t C, int64_t H, int64_t W, int top,
                   int bottom, int left, int right);

void sdc_cpu_pad2d(sdc_tensor *out, const sdc_tensor *x, int64_t B, int64_t C, int64_t H, int64_t W, int top,
                   int bottom, int left, int right) {
    const int64_t Ho = H + top + bottom, Wo = W + left + right;
    const float *src = x->data;
    float *dst = out->data;
#pragma omp parallel for
    for (int64_t bc = 0; bc < B * C; bc++) {
        float *o = dst + bc * Ho * Wo;
        const float *s = src + bc * H * W;
        memset(o, 0, (size_t)(top * Wo) * sizeof *o);
        for (int64_t y = 0; y < H; y++) {
            float *row = o + (y + top) * Wo;
            memset(row, 0, (size_t)left * sizeof *row);
            memcpy(row + left, s + y * W, (size_t)W * sizeof *row);
            memset(row + left + W, 0, (size_t)right * sizeof *row);
        }
        memset(o + (top + H) * Wo, 0, (size_t)(bottom * Wo) * sizeof *o);
    }
}
