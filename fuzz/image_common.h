/* One image decoder target: the input, with the format's signature forced
 * over its first bytes so the fuzzer stays on one decoder, goes through the
 * project's entry point (sdc_image_load_ex, EXIF orientation applied). A
 * decoded image must have the size limits' dimensions and be fully
 * readable. */
#ifndef SDC_FUZZ_IMAGE_COMMON_H
#define SDC_FUZZ_IMAGE_COMMON_H

#include "data/image_decode.h"
#include "data/png.h"
#include "fuzz_util.h"

static inline int fuzz_image(const uint8_t *data, size_t n, const char *name, const uint8_t *sig, size_t sig_at,
                             size_t sig_len, int png_text) {
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) abort();
    memcpy(buf, data, n);
    for (size_t i = 0; i < sig_len && sig_at + i < n; i++) buf[sig_at + i] = sig[i];
    const char *path = fuzz_path(name);
    fuzz_write(path, buf, n);
    free(buf);
    sdc_image im;
    sdc_error err;
    if (sdc_image_load_ex(path, 1, &im, &err) == SDC_OK) {
        if (im.w <= 0 || im.h <= 0 || im.w > SDC_IMAGE_MAX_SIDE || im.h > SDC_IMAGE_MAX_SIDE) abort();
        volatile uint8_t x = 0;
        for (size_t i = 0; i < (size_t)im.w * (size_t)im.h * 3; i++) x ^= im.rgb[i];
        (void)x;
        sdc_image_free(&im);
        if (png_text) {
            uint8_t *px;
            int w, h;
            char *text = NULL;
            if (sdc_png_read(path, &px, &w, &h, &text, "parameters", &err) == SDC_OK) {
                free(px);
                free(text);
            }
        }
    }
    return 0;
}

#endif
