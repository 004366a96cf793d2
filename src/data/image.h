/* Decoded images to 8-bit pixels, and grids of them. */
#ifndef SDC_DATA_IMAGE_H
#define SDC_DATA_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
/* RGBA (n pixels) to RGB in place, composited on a white background:
 * c' = round((c·a + 255·(255 − a)) / 255), exact integer arithmetic. */
void sdc_rgba_over_white(uint8_t *px, size_t n);

#endif

/* A decoded image [3, h, w] in [-1, 1] to interleaved RGB (h*w*3 bytes),
 * exactly as diffusers' VaeImageProcessor.postprocess + numpy_to_pil:
 * v = clamp(x*0.5 + 0.5, 0, 1) in float32, then round(v*255) (float32
 * product, ties to even as numpy rounds). NaN becomes 0. */
void sdc_image_from_chw(const float *chw, int h, int w, uint8_t *rgb);

/* Tiles n RGB images of w x h, row by row, into a grid of cols columns and
 * sdc_grid_rows(n, cols) rows; out is (rows*h) x (cols*w) x 3 bytes, black
 * where there is no image. */
void sdc_image_grid(const uint8_t *const *imgs, int n, int w, int h, int cols, uint8_t *out);
/* A near-square grid: the smallest cols with cols*cols >= n (1 for n <= 1). */
int sdc_grid_cols(int n);
int sdc_grid_rows(int n, int cols);

#ifdef __cplusplus
}
/* RGBA (n pixels) to RGB in place, composited on a white background:
 * c' = round((c·a + 255·(255 − a)) / 255), exact integer arithmetic. */
void sdc_rgba_over_white(uint8_t *px, size_t n);

#endif

/* RGBA (n pixels) to RGB in place, composited on a white background:
 * c' = round((c·a + 255·(255 − a)) / 255), exact integer arithmetic. */
void sdc_rgba_over_white(uint8_t *px, size_t n);

#endif
