/* Writing a model back in the original single-file layout (what
 * AUTOMATIC1111 and ComfyUI load as a checkpoint): the inverse of the key
 * maps in single_file.c, as diffusers' convert_diffusers_to_original_*
 * scripts write it.
 *
 *   family  UNet                     VAE                  text encoder(s)
 *   SD 1.x  model.diffusion_model.*  first_stage_model.*  cond_stage_model.transformer.<HF CLIP names>
 *   SD 2.x  (same)                   (same)               cond_stage_model.model.<OpenCLIP names>
 *   SDXL    (same, SGM: label_emb)   (same)               conditioner.embedders.0.transformer.<HF CLIP names>
 *                                                         conditioner.embedders.1.model.<OpenCLIP names>
 *
 * OpenCLIP keeps q, k, v as one in_proj [3D, D] (rows q, then k, then v)
 * and text_projection as [D, P], applied as x @ P (a Linear's weight [P, D]
 * transposed). */
#ifndef SDC_IO_SINGLE_FILE_WRITE_H
#define SDC_IO_SINGLE_FILE_WRITE_H

#include "core/dtype.h"
#include "core/error.h"
#include "io/family.h"
#include "nn/params.h"

/* The ldm name of a diffusers AutoencoderKL parameter; *conv1x1 is set for
 * the mid attention's linear weights, stored as [C, C, 1, 1]. 0 if unknown. */
int sdc_vae_ldm_name(const char *name, int levels, char *out, size_t cap, int *conv1x1);

/* The OpenCLIP name of a diffusers CLIPTextModel(WithProjection) parameter
 * ("text_model.encoder.layers.3.mlp.fc1.weight" -> "transformer.resblocks.3.mlp.c_fc.weight").
 * q/k/v projections give the fused name ("...attn.in_proj_weight") with
 * *qkv = 0, 1, 2 (their rows in it), others *qkv = -1; *transpose is set for
 * text_projection. 0 if the name has no OpenCLIP counterpart. */
int sdc_openclip_name(const char *name, char *out, size_t cap, int *qkv, int *transpose);

/* The model's components in a single file of the given family, every tensor
 * stored as dtype (F32, F16 or BF16). text_encoder_2 is SDXL's (NULL for the
 * others); vae_levels is the VAE's number of levels (len(block_out_channels)). */
sdc_status sdc_single_file_write(const char *path, sdc_family family, const sdc_params *unet, const sdc_params *vae,
                                 int vae_levels, const sdc_params *text_encoder, const sdc_params *text_encoder_2,
                                 sdc_dtype dtype, sdc_error *err);
/* sdc_single_file_write for SD 1.x. */
sdc_status sdc_single_file_write_sd1(const char *path, const sdc_params *unet, const sdc_params *vae, int vae_levels,
                                     const sdc_params *text_encoder, sdc_dtype dtype, sdc_error *err);

#endif
