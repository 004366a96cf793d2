/* JSON configs: sdc_json_parse (Python's Infinity/NaN rewrite, strictness)
 * and every config reader on the result - UNet, VAE, CLIP text encoder (with
 * and without projection), scheduler - plus the family guess. */
#include "diffusion/schedule.h"
#include "fuzz_util.h"
#include "io/json.h"
#include "io/model.h"
#include "models/clip_text_params.h"
#include "models/unet.h"
#include "models/vae.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    fuzz_dir();
    cJSON *j = NULL;
    sdc_error err;
    if (sdc_json_parse((const char *)data, n, "config.json", &j, &err) != SDC_OK) return 0;
    if (cJSON_IsObject(j)) {
        sdc_unet_config u;
        sdc_vae_config v;
        sdc_clip_text_config c;
        sdc_sched_config s;
        (void)sdc_unet_config_parse(j, "config.json", &u, &err);
        (void)sdc_vae_config_parse(j, "config.json", &v, &err);
        (void)sdc_clip_text_config_parse(j, 0, &c, "config.json", &err);
        (void)sdc_clip_text_config_parse(j, 1, &c, "config.json", &err);
        if (sdc_sched_config_parse(j, "scheduler_config.json", &s, &err) == SDC_OK && s.num_train_timesteps > 0 &&
            s.num_train_timesteps <= 100000) {
            double *a = malloc((size_t)s.num_train_timesteps * sizeof *a);
            if (a) (void)sdc_sched_alphas_cumprod(&s, a, &err);
            free(a);
        }
        (void)sdc_family_from_configs(NULL, j, j);
        int64_t iv;
        int cnt;
        int64_t list[8];
        (void)sdc_json_get_int(j, "sample_size", &iv, "config.json", &err);
        (void)sdc_json_get_int_list(j, "attention_head_dim", list, 8, &cnt, "config.json", &err);
    }
    cJSON_Delete(j);
    return 0;
}
