#include "pipeline/sd_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "core/log.h"
#include "io/json.h"
#include "io/lora.h"

static const char *const k_te[2] = {"text_encoder", "text_encoder_2"};
static const char *const k_tok[2] = {"tokenizer", "tokenizer_2"};

static sdc_status load_text(sdc_sd *sd, int i, sdc_error *err) {
    const sdc_component *tc = sdc_model_component(&sd->files, k_te[i]);
    const sdc_component *kc = sdc_model_component(&sd->files, k_tok[i]);
    if (kc && kc->dir) {
        SDC_TRY(sdc_clip_tokenizer_load(kc->dir, &sd->tok[i], err));
    } else {
        /* single files ship no tokenizer: the built-in CLIP vocabulary, padded
         * as each family's tokenizer pads */
        int bang = sd->family == SDC_FAMILY_SD2 || i == 1;
        SDC_TRY(sdc_clip_tokenizer_default(bang ? "!" : "<|endoftext|>", &sd->tok[i], err));
    }
    char what[512];
    snprintf(what, sizeof what, "%s/config.json", tc->dir ? tc->dir : sd->files.path);
    int proj = tc->class_name && strcmp(tc->class_name, "CLIPTextModelWithProjection") == 0;
    if (!tc->class_name && i == 1) proj = 1;
    sd->te[i] = calloc(1, sizeof *sd->te[i]);
    if (!sd->te[i]) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    SDC_TRY(sdc_clip_text_build(sd->te[i], tc->config, proj, k_te[i], what, err));
    return sdc_clip_text_load(sd->te[i], &sd->files.weights, err);
}

static sdc_status apply_loras(sdc_sd *sd, const sdc_sd_load_opts *o, sdc_error *err) {
    sdc_params *comps[4];
    size_t n = 0;
    comps[n++] = &sd->unet->params;
    for (int i = 0; i < sd->nte; i++)
        if (sd->te[i]) comps[n++] = &sd->te[i]->params;
    for (int k = 0; k < o->nlora; k++) {
        sdc_lora l;
        SDC_TRY(sdc_lora_open(o->loras[k].path, &l, err));
        /* kohya names resolve against the model's parameters; leftovers join l.unknown */
        sdc_status rs = sdc_lora_resolve(&l, comps, n, err);
        if (rs != SDC_OK) {
            sdc_lora_free(&l);
            return rs;
        }
        if (l.nunknown) {
            char list[2048] = "";
            size_t used = 0;
            for (size_t i = 0; i < l.nunknown && used < sizeof list - 64; i++)
                used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", l.unknown[i]);
            if (used >= sizeof list - 64) snprintf(list + used, sizeof list - used, ", ...");
            SDC_WARN("%s: %zu keys are not LoRA weights sdc knows; not applied: %s", o->loras[k].path, l.nunknown,
                     list);
        }
        size_t skipped = 0;
        sdc_status st = sdc_lora_apply(&l, o->loras[k].scale, comps, n, &skipped, err);
        if (st == SDC_OK && skipped)
            SDC_WARN("%s: %zu LoRA weights target components that are not loaded", o->loras[k].path, skipped);
        SDC_INFO("LoRA %s (%s, %zu weights) merged at scale %g", o->loras[k].path, l.format, l.count,
                     (double)o->loras[k].scale);
        sdc_lora_free(&l);
        SDC_TRY(st);
    }
    return SDC_OK;
}

static sdc_status load(const char *path, const sdc_sd_load_opts *o, sdc_sd *sd, sdc_error *err) {
    sdc_model_options mo = {.variant = o->variant};
    SDC_TRY(sdc_model_open(path, &mo, &sd->files, err));
    sd->family = sd->files.family;
    sdc_status st = SDC_OK;

    const sdc_component *uc = sdc_model_component(&sd->files, "unet");
    if (!uc || !uc->config) return sdc_fail(err, SDC_ENOTFOUND, "%s: the model has no UNet", path);
    char what[512];
    snprintf(what, sizeof what, "%s/config.json", uc->dir ? uc->dir : path);
    sdc_unet_config ucfg;
    SDC_TRY(sdc_unet_config_parse(uc->config, what, &ucfg, err));
    sd->unet = calloc(1, sizeof *sd->unet);
    if (!sd->unet) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    SDC_TRY(sdc_unet_build(sd->unet, &ucfg, "unet", err));
    SDC_TRY(sdc_params_load(&sd->unet->params, &sd->files.weights, NULL, NULL, err));

    if (!o->skip_vae) {
        const sdc_component *vc = sdc_model_component(&sd->files, "vae");
        if (!vc || !vc->config) return sdc_fail(err, SDC_ENOTFOUND, "%s: the model has no VAE", path);
        snprintf(what, sizeof what, "%s/config.json", vc->dir ? vc->dir : path);
        sdc_vae_config vcfg;
        SDC_TRY(sdc_vae_config_parse(vc->config, what, &vcfg, err));
        sd->vae = calloc(1, sizeof *sd->vae);
        if (!sd->vae) return sdc_fail(err, SDC_ENOMEM, "out of memory");
        SDC_TRY(sdc_vae_build(sd->vae, &vcfg, "vae", err));
        SDC_TRY(sdc_vae_load(sd->vae, &sd->files.weights, err));
    }

    sd->nte = sdc_model_component(&sd->files, "text_encoder_2") ? 2 : 1;
    if (!sdc_model_component(&sd->files, "text_encoder"))
        return sdc_fail(err, SDC_ENOTFOUND, "%s: the model has no text encoder", path);
    if (!o->skip_text)
        for (int i = 0; i < sd->nte; i++) SDC_TRY(load_text(sd, i, err));

    /* scheduler: the model's config, or the family's usual one for single files */
    const sdc_component *sc = sdc_model_component(&sd->files, "scheduler");
    if (sc && sc->config) {
        snprintf(what, sizeof what, "%s/scheduler_config.json", sc->dir ? sc->dir : path);
        SDC_TRY(sdc_sched_config_parse(sc->config, what, &sd->sched, err));
    } else {
        sdc_sched_config_default(&sd->sched);
        snprintf(sd->sched.class_name, sizeof sd->sched.class_name, "%s",
                 sd->family == SDC_FAMILY_SDXL ? "EulerDiscreteScheduler"
                 : sd->family == SDC_FAMILY_SD2 ? "DDIMScheduler"
                                                : "PNDMScheduler");
        if (sd->family != SDC_FAMILY_SDXL) sd->sched.skip_prk_steps = 1;
    }

    if (sd->nte == 1) {
        /* StableDiffusionPipeline.__init__ repairs old scheduler configs:
         * steps_offset 1 and clip_sample off (the SDXL pipeline does not). */
        sd->sched.steps_offset = 1;
        sd->sched.clip_sample = 0;
        sd->sched.present |= (1ull << SDC_SK_STEPS_OFFSET) | (1ull << SDC_SK_CLIP_SAMPLE);
    }

    sd->force_zeros_for_empty_prompt = sd->family == SDC_FAMILY_SDXL;
    if (!sd->files.single_file) {
        char mi[4096];
        snprintf(mi, sizeof mi, "%s/model_index.json", path);
        cJSON *j = NULL;
        if (sdc_json_load_object(mi, &j, NULL) == SDC_OK) {
            int fz = sd->force_zeros_for_empty_prompt;
            st = sdc_json_get_bool(j, "force_zeros_for_empty_prompt", &fz, mi, err);
            sd->force_zeros_for_empty_prompt = fz;
            cJSON_Delete(j);
            SDC_TRY(st);
        }
    }
    return apply_loras(sd, o, err);
}

sdc_status sdc_sd_load(const char *path, const sdc_sd_load_opts *opts, sdc_sd *sd, sdc_error *err) {
    static const sdc_sd_load_opts none = {0};
    memset(sd, 0, sizeof *sd);
    sdc_status st = load(path, opts ? opts : &none, sd, err);
    if (st != SDC_OK) sdc_sd_free(sd);
    return st;
}

void sdc_sd_free(sdc_sd *sd) {
    for (int i = 0; i < 2; i++) {
        if (sd->tok[i]) sdc_clip_tokenizer_free(sd->tok[i]);
        if (sd->te[i]) sdc_clip_text_free(sd->te[i]);
        free(sd->te[i]);
    }
    if (sd->unet) sdc_unet_free(sd->unet);
    free(sd->unet);
    if (sd->vae) sdc_vae_free(sd->vae);
    free(sd->vae);
    sdc_model_close(&sd->files);
    memset(sd, 0, sizeof *sd);
}

sdc_status sdc_sd_to_device(sdc_sd *sd, const sdc_ctx *c, sdc_error *err) {
    if (c->device.type == SDC_CPU) return SDC_OK;
    for (int i = 0; i < 2; i++)
        if (sd->te[i]) SDC_TRY(sdc_params_to_device(&sd->te[i]->params, c->be, c->device, c->dtype, err));
    if (sd->unet) SDC_TRY(sdc_params_to_device(&sd->unet->params, c->be, c->device, c->dtype, err));
    sd->vae_upcast = sd->vae && c->dtype == SDC_F16 && sd->vae->cfg.force_upcast;
    if (sd->vae)
        SDC_TRY(sdc_params_to_device(&sd->vae->params, c->be, c->device, sd->vae_upcast ? SDC_F32 : c->dtype, err));
    return SDC_OK;
}

sdc_ctx sdc_sd_vae_ctx(const sdc_sd *sd, const sdc_ctx *c) {
    sdc_ctx v = *c;
    if (sd->vae_upcast) v.dtype = SDC_F32;
    return v;
}
