/* PNG through sdc_image_load_ex (libpng, all colour types and depths), and
 * the text-chunk reader. See image_common.h. */
#include "image_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    return fuzz_image(data, n, "in.png", sig, 0, 8, 1);
}
