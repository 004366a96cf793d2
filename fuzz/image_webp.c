/* WebP through sdc_image_load_ex (libwebp: lossy, lossless, alpha,
 * animation refused). See image_common.h. */
#include "image_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    static const uint8_t riff[4] = {'R', 'I', 'F', 'F'}, webp[4] = {'W', 'E', 'B', 'P'};
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) abort();
    memcpy(buf, data, n);
    for (size_t i = 0; i < 4 && 8 + i < n; i++) buf[8 + i] = webp[i];
    int r = fuzz_image(buf, n, "in.webp", riff, 0, 4, 0);
    free(buf);
    return r;
}
