/* A diffusers folder's configs through sdc_model_open (configs only): the
 * input carries model_index.json, unet/config.json, text_encoder/config.json,
 * vae/config.json and scheduler/scheduler_config.json, separated by "\n@@\n"
 * (fuzz_split); each component config then goes through its reader as the
 * pipeline would. */
#include "diffusion/schedule.h"
#include "fuzz_util.h"
#include "io/model.h"
#include "models/clip_text_params.h"
#include "models/unet.h"
#include "models/vae.h"

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
    for (int i = 0; i < m.ncomps; i++) {
        const sdc_component *c = &m.comps[i];
        if (!c->config) continue;
        if (strcmp(c->name, "unet") == 0) {
            sdc_unet_config u;
            (void)sdc_unet_config_parse(c->config, "unet", &u, &err);
        } else if (strcmp(c->name, "vae") == 0) {
            sdc_vae_config v;
            (void)sdc_vae_config_parse(c->config, "vae", &v, &err);
        } else if (strncmp(c->name, "text_encoder", 12) == 0) {
            sdc_clip_text_config t;
            (void)sdc_clip_text_config_parse(c->config, c->class_name && strstr(c->class_name, "Projection") != NULL,
                                             &t, "text_encoder", &err);
        } else if (strcmp(c->name, "scheduler") == 0) {
            sdc_sched_config s;
            (void)sdc_sched_config_parse(c->config, "scheduler", &s, &err);
        }
    }
    sdc_model_close(&m);
    return 0;
}
