/* Private to io/: key maps from the original checkpoint layouts (CompVis
 * latent-diffusion, Stability's sgm, OpenCLIP) to diffusers names
 * (DESIGN.md principle 1). single_file.c reads a file into a set keyed by
 * the stored names, then each map claims the keys it knows and emits them,
 * renamed, into the canonical set ("unet.conv_in.weight", ...). Emitted
 * tensors point into the same mapped data (no copy) unless a layout change
 * needs one (OpenCLIP's transposed text_projection). */
#ifndef SDC_IO_KEYMAP_H
#define SDC_IO_KEYMAP_H

#include "io/family.h"
#include "io/weights.h"

/* What became of each stored tensor. */
enum { SDC_KM_FREE = 0, SDC_KM_MAPPED, SDC_KM_IGNORED };

typedef struct sdc_keymap {
    const char *path;       /* the file, for messages */
    const sdc_weights *src; /* tensors by stored key; its storage lives in dst */
    sdc_weights *dst;       /* tensors by canonical name */
    unsigned char *state;   /* per src tensor: SDC_KM_* */
    int file_base;          /* src file f is dst file file_base + f */
    sdc_family family;
    size_t nmapped;
} sdc_keymap;

/* Emits src tensor i as `name`, unchanged. */
sdc_status sdc_km_emit(sdc_keymap *km, size_t i, const char *name, sdc_error *err);
/* Emits a contiguous part of src tensor i (byte_offset, nbytes) as `name`
 * with a new shape; several views may come from one stored tensor. */
sdc_status sdc_km_emit_view(sdc_keymap *km, size_t i, const char *name, int ndim, const int64_t *shape,
                            size_t byte_offset, size_t nbytes, sdc_error *err);
/* Emits a malloc'd buffer (ownership passes to the set, also on failure)
 * made from src tensor i. */
sdc_status sdc_km_emit_owned(sdc_keymap *km, size_t i, const char *name, int ndim, const int64_t *shape,
                             void *buf, size_t nbytes, sdc_error *err);
static inline void sdc_km_ignore(sdc_keymap *km, size_t i) { km->state[i] = SDC_KM_IGNORED; }

/* s after prefix, or NULL if s does not start with it. */
const char *sdc_km_after(const char *s, const char *prefix);
/* 1 if s is "weight" or "bias" (a parameter's last name part). */
int sdc_km_is_wb(const char *s);
/* Renames a parameter by prefix table: the first row of map ({stored prefix,
 * diffusers prefix}, n rows) whose stored prefix starts tail and leaves
 * exactly "weight" or "bias" gives out = diffusers prefix + that rest.
 * Returns the row, or -1 if none matches. */
int sdc_km_map_param(const char *tail, const char *const map[][2], size_t n, char *out, size_t cap);
/* Reads a decimal index (0..9999, no leading zeros) at *s followed by '.' or
 * the end; advances *s past the dot. Returns the index or -1. */
int sdc_km_index(const char **s);
/* 1 if s is one of the NULL-terminated list. */
int sdc_km_one_of(const char *s, const char *const *list);
/* "[320, 768]" */
const char *sdc_km_shape(char *buf, size_t cap, const sdc_weight *t);

/* The maps. Each claims the keys under prefix that it knows; keys it does
 * not know stay free (reported as unknown). A structure it cannot make
 * sense of (a missing block, a fused projection of the wrong shape) is an
 * error naming the file and the key. */

/* UNet: "<prefix>input_blocks.*", middle_block, output_blocks, time_embed,
 * out, label_emb (SDXL's add_embedding) -> "unet.<diffusers name>". */
sdc_status sdc_km_unet(sdc_keymap *km, const char *prefix, sdc_error *err);
/* VAE: "<prefix>encoder.*", decoder, quant_conv, post_quant_conv -> "vae.*". */
sdc_status sdc_km_vae(sdc_keymap *km, const char *prefix, sdc_error *err);
/* transformers' CLIPTextModel under prefix (with or without "text_model.")
 * -> "<component>.text_model.*". *layers receives the layer count. */
sdc_status sdc_km_clip(sdc_keymap *km, const char *prefix, const char *component, int *layers, sdc_error *err);
/* OpenCLIP's text tower under prefix -> "<component>.text_model.*" (fused
 * q/k/v split); with_projection: text_projection becomes
 * "<component>.text_projection.weight" (transposed), else it is ignored. */
sdc_status sdc_km_openclip(sdc_keymap *km, const char *prefix, const char *component, int with_projection,
                           int *layers, sdc_error *err);

#endif
