/* PyTorch zip checkpoints end to end (sdc_ckpt_read: zip directory, data.pkl
 * through the restricted unpickler, storages and strided views). Every
 * tensor accepted is read in full so ASan sees any overrun. */
#include "fuzz_util.h"
#include "io/ckpt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    const char *path = fuzz_path("in.ckpt");
    fuzz_write(path, data, n);
    sdc_weights w;
    sdc_weights_init(&w);
    sdc_error err;
    if (sdc_ckpt_read(path, &w, &err) == SDC_OK) {
        for (size_t i = 0; i < w.count; i++) {
            volatile unsigned char sum = 0;
            for (size_t b = 0; b < w.items[i].nbytes; b++) sum ^= ((const unsigned char *)w.items[i].data)[b];
            (void)sum;
        }
    }
    sdc_weights_free(&w);
    return 0;
}
