/* PNG files through libpng: writing generated images (atomically, with the
 * generation parameters as text chunks, as A1111/ComfyUI do) and reading
 * images for tests and datasets. Text given and returned is UTF-8. */
#ifndef SDC_DATA_PNG_H
#define SDC_DATA_PNG_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SDC_PNG_MAX_SIDE 16384
#define SDC_PNG_MAX_PIXELS (64ll << 20)

/* Writes h rows of w pixels x channels (3 = RGB or 4 = RGBA), 8-bit, to
 * path through a temporary file renamed into place. text: ntext key/value
 * pairs (UTF-8). A key must be a PNG keyword: 1..79 Latin-1 characters,
 * printable, no leading, trailing or double spaces. A value whose characters
 * are all Latin-1 is written as tEXt (in Latin-1, what PIL writes and every
 * reader expects); otherwise as an uncompressed iTXt chunk in UTF-8. */
sdc_status sdc_png_write(const char *path, const uint8_t *pixels, int w, int h, int channels,
                         const char *const *keys, const char *const *values, size_t ntext, sdc_error *err);

/* Reads a PNG of any bit depth and colour type as 8-bit RGB (*pixels
 * malloc'd, w*h*3 bytes; palette expanded, grey replicated, 16 bits scaled,
 * alpha dropped as PIL's convert("RGB") does). Sizes are checked before
 * anything is allocated: w, h <= SDC_PNG_MAX_SIDE and w*h <= SDC_PNG_MAX_PIXELS.
 * If text_value is not NULL, *text_value is the first tEXt/zTXt/iTXt value
 * with keyword key, as malloc'd UTF-8, or NULL if there is none. */
sdc_status sdc_png_read(const char *path, uint8_t **pixels, int *w, int *h, char **text_value, const char *key,
                        sdc_error *err);

#ifdef __cplusplus
}
#endif

/* n RGB images of w×h tiled near-square (sdc_grid_cols) into one PNG. */
sdc_status sdc_png_write_grid(const char *path, const uint8_t *const *imgs, int n, int w, int h, sdc_error *err);

#endif
