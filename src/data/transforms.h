/* The image transforms of diffusers' training scripts (torchvision on PIL
 * images), exact to the bit:
 *
 *   Resize(resolution, BILINEAR)        shorter side -> resolution; PIL's
 *                                       antialiased bilinear resample
 *   CenterCrop(resolution) or RandomCrop(resolution)
 *   RandomHorizontalFlip()              (the caller draws the coin)
 *   ToTensor(), Normalize([0.5], [0.5]) -> float CHW in [-1, 1]
 *
 * Randomness stays with the caller: crop offsets and the flip are arguments.
 *
 * Order: train_text_to_image.py / train_dreambooth*.py crop then flip.
 * train_text_to_image_sdxl.py (and the SDXL LoRA/DreamBooth scripts) flip the
 * resized image, then crop at (top, left) and record that (top, left) in
 * time_ids. Flipping then cropping at left equals cropping at
 * rw - resolution - left then flipping, so pass that left here and keep
 * the script's left for time_ids. */
#ifndef SDC_DATA_TRANSFORMS_H
#define SDC_DATA_TRANSFORMS_H

#include <stdint.h>

#include "core/error.h"
#include "data/image_decode.h"

#ifdef __cplusplus
extern "C" {
#endif

/* torchvision's Resize(size) for an int size: the shorter side becomes size,
 * the longer int(size * long / short) (truncated, in double as Python does);
 * a square stays size x size. Then CenterCrop(size) offsets:
 * top = round((rh - size) / 2), left = round((rw - size) / 2), Python's round
 * (half to even). Returns SDC_EINVAL for size < 1 or empty images. */
sdc_status sdc_resize_geometry(int w, int h, int size, int *rw, int *rh, int *center_top, int *center_left,
                               sdc_error *err);

/* PIL's Image.resize((ow, oh), Image.BILINEAR) on an RGB image: a triangle
 * filter whose support is scaled by the downscale factor (antialiasing),
 * separable, horizontal pass first with 8-bit rounding between passes, and
 * 22-bit fixed-point coefficients (ImagingResample). A pass whose size does
 * not change is skipped, as PIL skips it. dst is ow*oh*3 bytes. */
sdc_status sdc_resize_bilinear_pil(const uint8_t *src, int w, int h, uint8_t *dst, int ow, int oh, sdc_error *err);

/* Resize -> crop -> flip -> ToTensor -> Normalize, into out_chw
 * (3 * resolution * resolution floats, (v/255 - 0.5)/0.5 in float32 as
 * torch computes it). center_crop != 0 uses the center offsets and ignores
 * crop_top/crop_left; otherwise those are RandomCrop's draws and must lie in
 * [0, rh - resolution] x [0, rw - resolution] (SDC_EINVAL otherwise).
 * out_crop_top/left (may be NULL) receive the offsets used. */
sdc_status sdc_train_transform(const sdc_image *in, int resolution, int center_crop, int crop_top, int crop_left,
                               int flip, float *out_chw, int *out_crop_top, int *out_crop_left, sdc_error *err);

#ifdef __cplusplus
}
#endif

#endif
