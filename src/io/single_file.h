/* Single-file checkpoints: one .safetensors / .ckpt holding a whole
 * Stable Diffusion model in the original layout (CompVis latent-diffusion
 * for SD 1.x and 2.x, Stability's sgm for SDXL), read into diffusers names
 * (DESIGN.md principle 1).
 *
 * The result is the same weight set a diffusers folder gives: every tensor
 * named "<component>.<diffusers name>":
 *   unet.<UNet2DConditionModel key>             model.diffusion_model.*
 *   vae.<AutoencoderKL key>                     first_stage_model.*
 *   text_encoder.text_model.<CLIPTextModel key> cond_stage_model.transformer.* (SD 1.x),
 *                                               cond_stage_model.model.* (SD 2.x, OpenCLIP),
 *                                               conditioner.embedders.0.transformer.* (SDXL)
 *   text_encoder_2.text_model.*, text_encoder_2.text_projection.weight
 *                                               conditioner.embedders.1.model.* (SDXL, OpenCLIP)
 * Tensors point into the mapped file; OpenCLIP's fused q/k/v become three
 * views of it. Only SDXL's text_projection is copied (it is stored transposed).
 *
 * Also read: UNet-only and VAE-only files in the original layout (with or
 * without the "model.diffusion_model." / "first_stage_model." prefix), and
 * files already in diffusers names, either with component prefixes
 * ("unet.conv_in.weight") or as one bare component (a UNet with
 * "conv_in.weight", a VAE with "encoder.conv_in.weight", a CLIP text model
 * with "text_model.embeddings.token_embedding.weight"), which pass through.
 * LoRA keys never pass (a LoRA file is not a model).
 *
 * Family, from the keys: SDXL if "conditioner.*" (sgm) is present; SD 2.x
 * if "cond_stage_model.model.*" (OpenCLIP); SD 1.x if
 * "cond_stage_model.transformer.*" (CLIP). Without a text encoder: by the
 * UNet's cross-attention width (attn2.to_k's input: 768 SD 1.x, 1024 SD 2.x,
 * 2048 SDXL), else by SDXL's label_emb / add_embedding, else by the
 * projections (linear: SD 2.x, 1x1 conv: SD 1.x). A VAE alone is UNKNOWN. */
#ifndef SDC_IO_SINGLE_FILE_H
#define SDC_IO_SINGLE_FILE_H

#include <cjson/cJSON.h>

#include "io/family.h"
#include "io/weights.h"

/* Components found (bits of sdc_single_file.components). */
enum {
    SDC_SF_UNET = 1u << 0,
    SDC_SF_VAE = 1u << 1,
    SDC_SF_TEXT_ENCODER = 1u << 2,
    SDC_SF_TEXT_ENCODER_2 = 1u << 3,
};

typedef struct sdc_single_file {
    sdc_family family;
    sdc_weights weights; /* by canonical name ("unet.conv_in.weight") */
    /* Stored keys that are not model weights: EMA copies (model_ema.*),
     * schedule buffers (betas, alphas_cumprod, ...), position_ids,
     * OpenCLIP's logit_scale / attn_mask, SD 2's unused text_projection,
     * VAE training losses (loss.*), sgm's denoiser.* buffers. */
    char **ignored;
    size_t nignored;
    /* Stored keys sdc does not know: neither mapped nor ignored. */
    char **unknown;
    size_t nunknown;
    /* Transformer layers stored per text encoder ([0] text_encoder, [1]
     * text_encoder_2; 0 if absent) and the number the diffusers model has.
     * They differ for SD 2.x: OpenCLIP ViT-H has 24 blocks and SD 2
     * conditions on the output of the 23rd (penultimate), so diffusers'
     * SD 2 text encoder has 23 layers. Every stored layer is mapped
     * (text_encoder.text_model.encoder.layers.23.* is in the set); the
     * synthesised config says how many are used. */
    int text_layers_stored[2];
    int text_layers_used[2];
    unsigned components;  /* SDC_SF_* */
    int diffusers_names;  /* the file already used diffusers names */
    char *path;
} sdc_single_file;

/* Reads path (.safetensors; .ckpt/.pt/.pth/.bin through the PyTorch
 * checkpoint reader) and maps its keys. A file with no recognisable model
 * keys is SDC_EFORMAT "<file>: no Stable Diffusion weights found (keys look
 * like ...)"; an inconsistent structure (a missing block, a fused projection
 * of the wrong shape) is SDC_EFORMAT naming the file and the key. On failure
 * *out holds nothing. */
sdc_status sdc_single_file_load(const char *path, sdc_single_file *out, sdc_error *err);

/* The diffusers config.json of each component, synthesised from the tensor
 * shapes plus the family's conventions, with every field a diffusers
 * config.json has, so a model builds from them as from a folder. Any out
 * pointer may be NULL; a component the file lacks gives NULL. The caller
 * frees with cJSON_Delete.
 *
 * From the shapes: UNet in/out channels, block_out_channels,
 * layers_per_block, down/up/mid block types (attention or not per level),
 * transformer_layers_per_block (and reverse_ for the up blocks when they
 * differ), cross_attention_dim, use_linear_projection, conv kernels,
 * time_embedding_dim, SDXL's text_time conditioning sizes; VAE channels,
 * levels, layers, latent channels, quant convs, mid attention; text encoder
 * width, layers, MLP size, vocabulary, positions, projection.
 *
 * From the family convention (a checkpoint does not record them):
 *   UNet attention_head_dim: SD 1.x 8 (diffusers' name for 8 heads); SD 2.x
 *     and SDXL: block_out_channels[i] / 64 heads (heads of width 64), at
 *     least 1. upcast_attention false (SD 2.1-v ships true; it only changes
 *     fp16 rounding). sample_size 64 / 96 / 128 (512 / 768 / 1024 pixels).
 *     norm_num_groups 32, act silu, and the other diffusers defaults.
 *   SDXL addition_time_embed_dim: (projection input - text_encoder_2's
 *     projection width) / 6 time ids, else 256.
 *   VAE scaling_factor 0.18215 (SD 1.x, 2.x, unknown), 0.13025 (SDXL);
 *     sample_size 512 / 768 / 1024; norm_num_groups 32.
 *   Text: num_attention_heads hidden / 64 (at least 1); hidden_act
 *     quick_gelu for CLIP ViT-L (SD 1.x, SDXL text_encoder), gelu for
 *     OpenCLIP (SD 2.x, SDXL text_encoder_2); projection_dim the
 *     text_projection's width, else hidden_size; layer_norm_eps 1e-5;
 *     token ids 49406 / 49407 (bos / eos and pad). */
sdc_status sdc_single_file_configs(const sdc_single_file *sf, cJSON **unet, cJSON **vae, cJSON **text_encoder,
                                   cJSON **text_encoder_2, sdc_error *err);

void sdc_single_file_free(sdc_single_file *sf);

#endif
