/* Text-to-image as diffusers' StableDiffusion(XL)Pipeline does it: encode
 * the prompt and the negative prompt, start from noise × init_noise_sigma,
 * run the sampler with classifier-free guidance, decode with the VAE. */
#ifndef SDC_PIPELINE_TXT2IMG_H
#define SDC_PIPELINE_TXT2IMG_H

#include "backend/ops.h"
#include "diffusion/sampler.h"
#include "pipeline/sd_model.h"

typedef enum sdc_rng_kind {
    SDC_RNG_PHILOX, /* sdc's own counter-based generator (default) */
    SDC_RNG_TORCH,  /* torch.randn on a CPU torch.Generator: a diffusers seed gives the same noise */
} sdc_rng_kind;

typedef struct sdc_txt2img_opts {
    const char *prompt;
    const char *negative_prompt; /* NULL: none (SD uses ""; SDXL zeros when force_zeros_for_empty_prompt) */
    int steps;
    double guidance;         /* ≤ 1: no classifier-free guidance */
    sdc_sampler_kind sampler;
    int sampler_from_config; /* use the model's scheduler class instead of `sampler` */
    sdc_sampler_opts sampler_opts;
    uint64_t seed;
    sdc_rng_kind rng;
    int height, width, batch;
    int clip_skip;           /* 0: the model's default layer */
    const float *latents;    /* optional initial noise [batch, C, h, w] (diffusers' latents=) */
    sdc_noise_fn noise;      /* optional source of the samplers' step noise (tests inject it) */
    void *noise_ctx;
    int decode;              /* also run the VAE decoder */
    void (*on_step)(void *ctx, int done, int total);
    void *step_ctx;
} sdc_txt2img_opts;

typedef struct sdc_txt2img_out {
    float *latents; /* [batch, C, h, w], before dividing by the VAE scaling factor */
    int64_t latent_shape[4];
    float *images;  /* [batch, 3, H, W] in [−1, 1] before clamping (decode only) */
    int64_t image_shape[4];
} sdc_txt2img_out;

/* Checks what the user controls (size multiple of the VAE/UNet factors,
 * steps, batch) with one-line errors. */
sdc_status sdc_txt2img_check(const sdc_sd *sd, const sdc_txt2img_opts *o, sdc_error *err);
sdc_status sdc_txt2img(sdc_ctx *c, const sdc_sd *sd, const sdc_txt2img_opts *o, sdc_txt2img_out *out,
                       sdc_error *err);
void sdc_txt2img_out_free(sdc_txt2img_out *out);

/* The UNet conditioning of one prompt: encoder_hidden_states [1, T, D] and,
 * for SDXL, the pooled text embeddings [1, P] (pooled->data NULL otherwise). */
sdc_status sdc_encode_prompt(sdc_ctx *c, const sdc_sd *sd, const char *prompt, int clip_skip, sdc_tensor *context,
                             sdc_tensor *pooled, sdc_error *err);

#endif
