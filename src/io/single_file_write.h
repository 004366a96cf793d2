/* Writing a model back in the original single-file layout (what
 * AUTOMATIC1111 and ComfyUI load as a checkpoint): the inverse of the key
 * maps in single_file.c, for SD 1.x (CompVis: model.diffusion_model.*,
 * first_stage_model.*, cond_stage_model.transformer.*). */
#ifndef SDC_IO_SINGLE_FILE_WRITE_H
#define SDC_IO_SINGLE_FILE_WRITE_H

#include "core/dtype.h"
#include "core/error.h"
#include "nn/params.h"

/* The ldm name of a diffusers AutoencoderKL parameter; *conv1x1 is set for
 * the mid attention's linear weights, stored as [C, C, 1, 1]. 0 if unknown. */
int sdc_vae_ldm_name(const char *name, int levels, char *out, size_t cap, int *conv1x1);
/* SD 1.x only (SD 2.x's OpenCLIP and SDXL's two encoders need fused
 * attention weights: refused with a message). */
sdc_status sdc_single_file_write_sd1(const char *path, const sdc_params *unet, const sdc_params *vae, int vae_levels,
                                     const sdc_params *text_encoder, sdc_dtype dtype, sdc_error *err);

#endif
