/* For the fuzz targets that open a whole model (model_index, single_file):
 * every component config the model holds goes through its reader, as the
 * pipeline would read it. */
#ifndef SDC_FUZZ_MODEL_CONFIGS_H
#define SDC_FUZZ_MODEL_CONFIGS_H

#include <string.h>

#include "diffusion/schedule.h"
#include "io/model.h"
#include "models/clip_text_params.h"
#include "models/unet.h"
#include "models/vae.h"

static inline void fuzz_parse_configs(const sdc_model *m) {
    sdc_error err;
    for (int i = 0; i < m->ncomps; i++) {
        const sdc_component *c = &m->comps[i];
        if (!c->config) continue;
        if (strcmp(c->name, "unet") == 0) {
            sdc_unet_config u;
            (void)sdc_unet_config_parse(c->config, "unet", &u, &err);
        } else if (strcmp(c->name, "vae") == 0) {
            sdc_vae_config v;
            (void)sdc_vae_config_parse(c->config, "vae", &v, &err);
        } else if (strncmp(c->name, "text_encoder", 12) == 0) {
            /* CLIPTextModelWithProjection: by class in a folder, by name in a single file */
            int proj = (c->class_name && strstr(c->class_name, "Projection") != NULL) ||
                       strcmp(c->name, "text_encoder_2") == 0;
            sdc_clip_text_config t;
            (void)sdc_clip_text_config_parse(c->config, proj, &t, c->name, &err);
        } else if (strcmp(c->name, "scheduler") == 0) {
            sdc_sched_config s;
            (void)sdc_sched_config_parse(c->config, "scheduler", &s, &err);
        }
    }
}

#endif
