/* JPEG through sdc_image_load_ex (libjpeg-turbo: baseline, progressive,
 * CMYK/YCCK, EXIF orientation). See image_common.h. */
#include "image_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    static const uint8_t sig[3] = {0xFF, 0xD8, 0xFF};
    return fuzz_image(data, n, "in.jpg", sig, 0, 3, 0);
}
