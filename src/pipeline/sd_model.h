/* A whole Stable Diffusion model ready to run: tokenizers, text encoders,
 * UNet, VAE and scheduler config, from a diffusers folder or a single file,
 * with LoRAs merged at load. */
#ifndef SDC_PIPELINE_SD_MODEL_H
#define SDC_PIPELINE_SD_MODEL_H

#include "data/clip_tokenizer.h"
#include "diffusion/schedule.h"
#include "io/model.h"
#include "models/clip_text.h"
#include "models/unet.h"
#include "models/vae.h"

typedef struct sdc_sd {
    sdc_model files;
    sdc_family family;
    int nte;                    /* 1 (SD 1.x/2.x) or 2 (SDXL) */
    sdc_clip_tokenizer *tok[2]; /* tokenizer, tokenizer_2 */
    sdc_clip_text *te[2];       /* text_encoder, text_encoder_2 */
    sdc_unet *unet;
    sdc_vae *vae;
    sdc_sched_config sched;
    int force_zeros_for_empty_prompt; /* SDXL: zero negative embeddings without a negative prompt */
    /* the VAE computes in fp32 on a device whose context is fp16, when its
     * config says force_upcast (SDXL's VAE overflows fp16), as diffusers'
     * pipelines and training scripts upcast it */
    int vae_upcast;
} sdc_sd;

typedef struct sdc_sd_lora {
    const char *path;
    float scale;
} sdc_sd_lora;

typedef struct sdc_sd_load_opts {
    const char *variant;
    const sdc_sd_lora *loras;
    int nlora;
    int skip_vae; /* components a command does not need */
    int skip_text;
} sdc_sd_load_opts;

sdc_status sdc_sd_load(const char *path, const sdc_sd_load_opts *opts, sdc_sd *sd, sdc_error *err);
/* The context to run the VAE with: c, or a copy computing in fp32 when the
 * VAE was upcast (sd->vae_upcast). */
sdc_ctx sdc_sd_vae_ctx(const sdc_sd *sd, const sdc_ctx *c);
void sdc_sd_free(sdc_sd *sd);
/* Copies every loaded component's weights to c's device in c's dtype (a
 * no-op on the CPU); the host copies stay for saving. */
sdc_status sdc_sd_to_device(sdc_sd *sd, const sdc_ctx *c, sdc_error *err);

#endif
