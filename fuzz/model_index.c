/* A diffusers folder's configs through sdc_model_open (configs only): the
 * input carries model_index.json, unet/config.json, text_encoder/config.json,
 * vae/config.json and scheduler/scheduler_config.json, separated by "\n@@\n"
 * (fuzz_split); each component config then goes through its reader as the
 * pipeline would. */
#include "fuzz_util.h"
#include "io/model.h"
#include "model_configs.h"

static const char *const k_files[] = {"model_index.json", "unet/config.json", "text_encoder/config.json",
                                      "vae/config.json", "scheduler/scheduler_config.json"};
#define NFILES (int)(sizeof k_files / sizeof k_files[0])

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    static int made;
    if (!made) {
        const char *dirs[] = {"model", "model/unet", "model/text_encoder", "model/vae", "model/scheduler",
                              "model/tokenizer"};
        for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) mkdir(fuzz_path(dirs[i]), 0755);
        made = 1;
    }
    const uint8_t *part[NFILES];
    size_t len[NFILES];
    int k = fuzz_split(data, n, part, len, NFILES);
    for (int i = 0; i < NFILES; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "model/%s", k_files[i]);
        const char *p = fuzz_path(rel);
        if (i < k) fuzz_write(p, part[i], len[i]);
        else unlink(p);
    }
    sdc_model_options opt = {.configs_only = 1};
    sdc_model m;
    sdc_error err;
    if (sdc_model_open(fuzz_path("model"), &opt, &m, &err) != SDC_OK) return 0;
    fuzz_parse_configs(&m);
    sdc_model_close(&m);
    return 0;
}
