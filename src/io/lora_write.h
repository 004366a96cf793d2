/* Writers for what sdc trains, in the layouts other tools load.
 *
 * LoRA (one adapter per layer: down = A [r, in(,k,k)], up = B [out, r(,1,1)],
 * the update ΔW = (alpha / r) · up · down), from sdc_lora_set stores whose
 * tensors carry PEFT names "<module>.lora_A.weight" / ".lora_B.weight":
 *
 *   diffusers  what StableDiffusion(XL)Pipeline.save_lora_weights writes
 *              (pytorch_lora_weights.safetensors):
 *                "unet.<module>.lora.down.weight" / ".lora.up.weight"
 *                "text_encoder(_2).<module>.lora_linear_layer.down.weight" / ".up.weight"
 *              metadata {"format": "pt", "lora_adapter_metadata": JSON of each
 *              component's PEFT LoraConfig keyed "<component>.<field>"
 *              ("unet.r", "unet.lora_alpha", "unet.rank_pattern",
 *              "unet.alpha_pattern", "unet.target_modules", ...)}.
 *   kohya      sd-scripts' networks.lora: "lora_unet_<module, . -> _>.lora_down.weight"
 *              / ".lora_up.weight" / ".alpha" (0-d F32), text encoders
 *              "lora_te_" (SD1/2) or "lora_te1_" / "lora_te2_" (SDXL), the UNet
 *              module in diffusers' naming or (sgm) the SGM/CompVis one
 *              ("input_blocks_4_1_..."), and ss_* metadata.
 *
 * Full UNet: diffusers' save_pretrained layout, dir/diffusion_pytorch_model.safetensors
 * (metadata {"format": "pt"}) and dir/config.json.
 *
 * Tensors are stored as F32, F16 or BF16 (round to nearest even); every file
 * is written through a temporary file renamed into place. */
#ifndef SDC_IO_LORA_WRITE_H
#define SDC_IO_LORA_WRITE_H

#include "core/dtype.h"
#include "core/error.h"
#include "io/family.h"
#include "io/lora.h"
#include "nn/lora_attach.h"
#include "nn/params.h"

/* Each set may be NULL (not trained); at least one must be given. alpha is
 * each adapter's scale · rank. */
sdc_status sdc_lora_write_diffusers(const char *path, const sdc_lora_set *unet, const sdc_lora_set *te,
                                    const sdc_lora_set *te2, sdc_dtype dtype, sdc_error *err);

/* sgm: the UNet's block layout (sdc_unet_layout_read on the base UNet's
 * parameters) to name UNet modules the SGM way, or NULL for diffusers'
 * names. sd-scripts uses diffusers' names for SD1/2 and SGM names for SDXL
 * (sdc_lora_kohya_wants_sgm). family sets ss_base_model_version and, with te2,
 * the lora_te1_/lora_te2_ prefixes. */
sdc_status sdc_lora_write_kohya(const char *path, const sdc_lora_set *unet, const sdc_lora_set *te,
                                const sdc_lora_set *te2, sdc_family family, const sdc_unet_layout *sgm,
                                sdc_dtype dtype, sdc_error *err);
static inline int sdc_lora_kohya_wants_sgm(sdc_family f) { return f == SDC_FAMILY_SDXL; }

/* dir/<weights_name> with every parameter of p under its own name, and
 * dir/config.json = config_json (may be NULL: not written). dir is created. */
sdc_status sdc_params_write_diffusers(const char *dir, const sdc_params *p, const char *weights_name,
                                      const char *config_json, sdc_dtype dtype, sdc_error *err);
/* The UNet as UNet2DConditionModel.save_pretrained writes it. */
sdc_status sdc_unet_write_diffusers(const char *dir, const sdc_params *unet, const char *config_json,
                                    sdc_dtype dtype, sdc_error *err);

/* A whole diffusers pipeline folder out_dir: src_dir's model_index.json and
 * every other file and component folder (hard-linked, or copied where links
 * fail), with the unet/ folder replaced by these parameters. Built in
 * "<out_dir>.tmp-<pid>" and renamed into place; an existing out_dir is an
 * error (never overwritten). */
sdc_status sdc_pipeline_write_diffusers(const char *out_dir, const char *src_dir, const sdc_params *unet,
                                        const char *unet_config, sdc_dtype dtype, sdc_error *err);

#endif
