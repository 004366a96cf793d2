#include "data/image.h"

#include <math.h>
#include <string.h>

void sdc_image_from_chw(const float *chw, int h, int w, uint8_t *rgb) {
    size_t plane = (size_t)h * (size_t)w;
    for (int c = 0; c < 3; c++) {
        const float *src = chw + (size_t)c * plane;
        for (size_t i = 0; i < plane; i++) {
            float v = src[i] * 0.5f + 0.5f; /* the product is exact, so one rounding, as torch */
            if (!(v >= 0.0f)) v = 0.0f;     /* also NaN: numpy's uint8 cast of NaN gives 0 on x86 */
            if (v > 1.0f) v = 1.0f;
            /* np.round is round-half-to-even: rintf in the default rounding mode */
            rgb[i * 3 + (size_t)c] = (uint8_t)rintf(v * 255.0f);
        }
    }
}

int sdc_grid_cols(int n) {
    int c = 1;
    while (c * c < n) c++;
    return c;
}

int sdc_grid_rows(int n, int cols) { return cols > 0 && n > 0 ? (n + cols - 1) / cols : 0; }

void sdc_image_grid(const uint8_t *const *imgs, int n, int w, int h, int cols, uint8_t *out) {
    int rows = sdc_grid_rows(n, cols);
    size_t row_bytes = (size_t)w * 3, out_stride = (size_t)cols * row_bytes;
    memset(out, 0, out_stride * (size_t)rows * (size_t)h);
    for (int k = 0; k < n; k++) {
        if (!imgs[k]) continue;
        uint8_t *dst = out + (size_t)(k / cols) * h * out_stride + (size_t)(k % cols) * row_bytes;
        for (int y = 0; y < h; y++) memcpy(dst + (size_t)y * out_stride, imgs[k] + (size_t)y * row_bytes, row_bytes);
    }
}

void sdc_rgba_over_white(uint8_t *px, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const uint8_t *in = px + 4 * i;
        unsigned a = in[3];
        uint8_t rgb[3];
        for (int k = 0; k < 3; k++) rgb[k] = (uint8_t)((in[k] * a + 255u * (255u - a) + 127u) / 255u);
        memcpy(px + 3 * i, rgb, 3); /* writes behind the reads: in place is safe */
    }
}
