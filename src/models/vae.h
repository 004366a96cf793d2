/* diffusers' AutoencoderKL: Encoder (DownEncoderBlock2D levels, a mid block
 * with one self-attention, conv_out to 2·latent channels) + quant_conv giving
 * the posterior's mean and log-variance; post_quant_conv + Decoder
 * (UpDecoderBlock2D levels) back to pixels. Parameters carry diffusers' names. */
#ifndef SDC_MODELS_VAE_H
#define SDC_MODELS_VAE_H

#include <cjson/cJSON.h>

#include "nn/attention.h"
#include "nn/conv2d.h"
#include "nn/norm.h"
#include "nn/params.h"
#include "nn/resnet.h"

#define SDC_VAE_MAX_LEVELS 8

typedef struct sdc_vae_config {
    int64_t in_channels, out_channels, latent_channels, sample_size;
    int levels;
    int64_t block_out_channels[SDC_VAE_MAX_LEVELS];
    int64_t layers_per_block;
    int norm_num_groups;
    double scaling_factor, shift_factor; /* shift 0 when not set */
    int use_quant_conv, use_post_quant_conv, mid_attention;
    int force_upcast;
} sdc_vae_config;

sdc_status sdc_vae_config_parse(const cJSON *json, const char *what, sdc_vae_config *out, sdc_error *err);
/* Pixels per latent along each axis: 2^(levels−1) (8 for every SD VAE). */
int sdc_vae_scale(const sdc_vae_config *cfg);

typedef struct sdc_vae_mid {
    sdc_resnet res[2];
    sdc_norm attn_norm;
    sdc_attention attn;
    int has_attn;
} sdc_vae_mid;

typedef struct sdc_vae_level {
    int nres;
    sdc_resnet *resnets;
    int has_sampler;
    sdc_conv2d sampler;
} sdc_vae_level;

typedef struct sdc_vae {
    sdc_vae_config cfg;
    sdc_params params;
    /* encoder */
    sdc_conv2d enc_conv_in, enc_conv_out, quant_conv;
    sdc_vae_level enc[SDC_VAE_MAX_LEVELS];
    sdc_vae_mid enc_mid;
    sdc_norm enc_norm_out;
    /* decoder */
    sdc_conv2d post_quant_conv, dec_conv_in, dec_conv_out;
    sdc_vae_level dec[SDC_VAE_MAX_LEVELS];
    sdc_vae_mid dec_mid;
    sdc_norm dec_norm_out;
} sdc_vae;

sdc_status sdc_vae_build(sdc_vae *v, const sdc_vae_config *cfg, const char *component, sdc_error *err);
void sdc_vae_free(sdc_vae *v);
/* Loads the weights of v's component from w; accepts the pre-0.14 attention
 * names (query/key/value/proj_attn) some VAE folders still ship. */
sdc_status sdc_vae_load(sdc_vae *v, const sdc_weights *w, sdc_error *err);

/* image [B,in,H,W] in [−1,1] → posterior mean and logvar [B,latent,H/s,W/s]
 * (logvar clamped to [−30, 20] as diffusers' DiagonalGaussianDistribution). */
void sdc_vae_encode(sdc_ctx *c, const sdc_vae *v, const sdc_tensor *image, sdc_tensor *mean, sdc_tensor *logvar);
/* The same without the clamp; every op records on a tape (VAE training,
 * which clamps on the host where the gradient is taken). */
void sdc_vae_encode_unclamped(sdc_ctx *c, const sdc_vae *v, const sdc_tensor *image, sdc_tensor *mean,
                              sdc_tensor *logvar);
/* z [B,latent,h,w] (already unscaled: latents/scaling_factor + shift) → image [B,out,h·s,w·s] */
sdc_tensor sdc_vae_decode(sdc_ctx *c, sdc_tensor *into, const sdc_vae *v, const sdc_tensor *z);

#endif
