/* safetensors header parser (sdc_safetensors_read): any file must give
 * either a validated weight set or an error, and every tensor it accepts
 * must lie inside the file (read here in full, so ASan sees any overrun). */
#include "fuzz_util.h"
#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    const char *path = fuzz_path("in.safetensors");
    fuzz_write(path, data, n);
    sdc_weights w;
    sdc_weights_init(&w);
    sdc_error err;
    if (sdc_safetensors_read(path, &w, &err) == SDC_OK) {
        for (size_t i = 0; i < w.count; i++) {
            const sdc_weight *t = &w.items[i];
            volatile unsigned char sum = 0;
            for (size_t b = 0; b < t->nbytes; b++) sum ^= ((const unsigned char *)t->data)[b];
            (void)sum;
            int64_t numel = sdc_weight_numel(t);
            if (numel > 0 && numel < (1 << 20)) {
                float *f = malloc((size_t)numel * sizeof *f);
                if (f) sdc_weight_to_f32(&w, t, f, &err); /* integer dtypes are refused: fine */
                free(f);
            }
        }
    }
    sdc_weights_free(&w);
    return 0;
}
