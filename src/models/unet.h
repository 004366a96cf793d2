/* diffusers' UNet2DConditionModel over the config space SD 1.x, 2.x and SDXL
 * use: positional time embedding, ResnetBlock2D, Transformer2DModel (conv or
 * linear projections, per-block heads and depths), CrossAttn/plain down and up
 * blocks with skip concatenation, UNetMidBlock2DCrossAttn, and SDXL's
 * "text_time" added conditioning. Parameters carry diffusers' names. */
#ifndef SDC_MODELS_UNET_H
#define SDC_MODELS_UNET_H

#include <cjson/cJSON.h>

#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/norm.h"
#include "nn/params.h"
#include "nn/resnet.h"
#include "nn/transformer.h"

#define SDC_UNET_MAX_LEVELS 8

typedef struct sdc_unet_config {
    int64_t in_channels, out_channels, sample_size;
    int levels;
    int64_t block_out_channels[SDC_UNET_MAX_LEVELS];
    int down_attn[SDC_UNET_MAX_LEVELS]; /* CrossAttnDownBlock2D (1) or DownBlock2D (0) */
    int up_attn[SDC_UNET_MAX_LEVELS];   /* CrossAttnUpBlock2D (1) or UpBlock2D (0), in up order */
    int64_t layers_per_block[SDC_UNET_MAX_LEVELS];
    int64_t heads[SDC_UNET_MAX_LEVELS];             /* per down level */
    int64_t transformer_layers[SDC_UNET_MAX_LEVELS]; /* per down level */
    int64_t reverse_transformer_layers[SDC_UNET_MAX_LEVELS]; /* per up level */
    int only_cross_attention[SDC_UNET_MAX_LEVELS];
    int64_t cross_attention_dim;
    int mid_block; /* UNetMidBlock2DCrossAttn present */
    int norm_num_groups;
    double norm_eps;
    int flip_sin_to_cos;
    double freq_shift;
    int use_linear_projection, upcast_attention;
    int64_t downsample_padding;
    double mid_block_scale_factor;
    int64_t time_embed_dim;
    /* SDXL: addition_embed_type "text_time" */
    int text_time;
    int64_t addition_time_embed_dim, projection_class_embeddings_input_dim;
} sdc_unet_config;

/* Reads a diffusers unet/config.json; anything outside the supported space
 * (class embeddings, other block types, ...) is an error naming the key. */
sdc_status sdc_unet_config_parse(const cJSON *json, const char *what, sdc_unet_config *out, sdc_error *err);

typedef struct sdc_unet_level {
    int attn;
    int nres;
    sdc_resnet *resnets;
    sdc_transformer2d *attns;
    sdc_transformer_block *blocks;
    int has_sampler; /* downsamplers.0 / upsamplers.0 */
    sdc_conv2d sampler;
} sdc_unet_level;

typedef struct sdc_unet {
    sdc_unet_config cfg;
    sdc_params params;
    sdc_linear time_linear_1, time_linear_2;
    sdc_linear add_linear_1, add_linear_2; /* add_embedding (text_time) */
    sdc_conv2d conv_in, conv_out;
    sdc_norm conv_norm_out;
    sdc_unet_level down[SDC_UNET_MAX_LEVELS], up[SDC_UNET_MAX_LEVELS];
    sdc_resnet mid_res[2];
    sdc_transformer2d mid_attn;
    sdc_transformer_block *mid_blocks;
} sdc_unet;

/* Declares every parameter in component `component` ("unet"), allocates. The
 * struct must not move afterwards. */
sdc_status sdc_unet_build(sdc_unet *u, const sdc_unet_config *cfg, const char *component, sdc_error *err);
void sdc_unet_free(sdc_unet *u);

typedef struct sdc_unet_cond {
    const sdc_tensor *context;     /* encoder_hidden_states [B,S,cross_attention_dim] */
    const double *timesteps;       /* [B], host */
    const sdc_tensor *text_embeds; /* SDXL: [B, pooled dim] */
    const double *time_ids;        /* SDXL: [B, n] host (n·addition_time_embed_dim + pooled = projection input) */
    int64_t n_time_ids;
    /* Optional, for replaying a captured call: the sinusoids of timesteps
     * [B, block_out_channels[0]] and of time_ids [B, n·addition_time_embed_dim]
     * already on the device (then timesteps/time_ids are not read), so the
     * forward uploads nothing. */
    const sdc_tensor *t_sinusoid, *time_ids_sinusoid;
} sdc_unet_cond;

/* The spatial size must be divisible by 2^(levels−1); the caller checks user
 * sizes (sdc_unet_check_size). x [B,in,h,w] → [B,out,h,w]. */
sdc_tensor sdc_unet_forward(sdc_ctx *c, sdc_tensor *into, const sdc_unet *u, const sdc_tensor *x,
                            const sdc_unet_cond *cond);
sdc_status sdc_unet_check_size(const sdc_unet_config *cfg, int64_t h, int64_t w, sdc_error *err);

/* Sinusoidal timestep embedding (diffusers get_timestep_embedding, scale 1,
 * max_period 10000): half = dim/2, f_i = exp(−ln(10000)·i/(half − shift)),
 * emb = [sin(t·f), cos(t·f)] (or [cos, sin] with flip), zero-padded if odd. */
void sdc_timestep_embedding(const double *t, int64_t n, int64_t dim, int flip_sin_to_cos, double shift, float *out);

#endif
