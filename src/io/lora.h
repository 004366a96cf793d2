/* LoRA files for inference: read any of the common formats, name every
 * low-rank pair by the diffusers parameter it changes, and merge it into a
 * model's fp32 parameters:
 *
 *     W  +=  multiplier · scale · up · down          up [out, r], down [r, in]
 *
 * with scale = alpha / r (kohya, PEFT) when the file gives alpha, else 1.
 * Conv LoRAs (LoCon) have down [r, in, k, k] and up [out, r, 1, 1]; the
 * product is read as [out, in, k, k]. LyCORIS' Tucker form adds a core
 * mid [r, r, k, k] between a 1×1 down and a 1×1 up:
 *     ΔW[o, c, y, x] = Σ_a Σ_b up[o, a] · mid[a, b, y, x] · down[b, c].
 *
 * Formats, told apart by their keys (one file may mix them):
 *   diffusers  "unet.<module>.lora.down.weight" / ".lora.up.weight",
 *              "<...>.processor.to_q_lora.down.weight" (attention processors),
 *              "text_encoder.<...>.q_proj.lora_linear_layer.down.weight",
 *              optional "<module>.alpha"
 *   peft       "<component>.<module>.lora_A.weight" (down) / ".lora_B.weight" (up),
 *              also with "base_model.model." or no prefix; alpha from the
 *              "lora_adapter_metadata" JSON in the safetensors metadata
 *              (diffusers: "unet.lora_alpha", "unet.alpha_pattern", ...), from
 *              adapter_config.json beside an adapter_model.safetensors, or
 *              "<module>.alpha" keys
 *   kohya      "lora_unet_<module with _>.lora_down.weight" / ".lora_up.weight" /
 *              ".alpha"; "lora_te_" (SD1/2), "lora_te1_" / "lora_te2_" (SDXL).
 *              The UNet module is in diffusers' naming or in the SGM/CompVis one
 *              (input_blocks, middle_block, output_blocks). Because "_"
 *              replaced ".", these names are resolved against the model's real
 *              parameter names (sdc_lora_resolve), not guessed.
 *
 * Refused with SDC_EUNSUPPORTED: DoRA (dora_scale, lora_magnitude_vector),
 * LoHa (hada_*), LoKr (lokr_*), full diffs, LoRA biases. .safetensors and
 * PyTorch zip checkpoints (.ckpt/.pt/.bin, through io/ckpt.h) are read. */
#ifndef SDC_IO_LORA_H
#define SDC_IO_LORA_H

#include <stddef.h>

#include "core/error.h"
#include "io/weights.h"
#include "nn/params.h"

typedef struct sdc_lora_delta {
    char *component;             /* "unet", "text_encoder", "text_encoder_2" */
    char *param;                 /* diffusers parameter name within it; NULL for a kohya
                                    name until sdc_lora_resolve */
    char *key;                   /* the module as the file names it ("lora_unet_..._to_q",
                                    "unet.down_blocks....to_q"), for messages */
    const sdc_weight *up, *down; /* up [out, r(,1,1)], down [r, in(,k,k)] */
    const sdc_weight *mid;       /* LyCORIS Tucker core [r, r, k, k], or NULL */
    float scale;                 /* alpha / r when the file gives alpha, else 1 */
} sdc_lora_delta;

typedef struct sdc_lora {
    sdc_weights w; /* the file's tensors by stored key */
    char *path;
    sdc_lora_delta *deltas;
    size_t count;
    char **unknown; /* keys sdc could not place; the caller warns about them */
    size_t nunknown;
    const char *format; /* "diffusers", "peft", "kohya" (that of most modules) */
} sdc_lora;

/* Reads path and pairs its keys. A file with no LoRA key, an up without its
 * down (or the reverse), ranks that do not agree, or an unsupported variant
 * is an error naming the file and the key. */
sdc_status sdc_lora_open(const char *path, sdc_lora *l, sdc_error *err);
void sdc_lora_free(sdc_lora *l);

/* Names the kohya modules of the components in comps (matched by
 * comps[i]->component) by their diffusers parameter: the model's parameter
 * names with "." → "_" (and, for the UNet, their SGM names) are looked up.
 * A kohya module that matches no parameter moves to l->unknown. Idempotent. */
sdc_status sdc_lora_resolve(sdc_lora *l, sdc_params *const *comps, size_t ncomps, sdc_error *err);

/* W += multiplier · scale · up·down for every delta whose component is one
 * of comps. A linear delta may target a 1×1 conv ([out, in, 1, 1]) and a
 * 1×1 conv delta a linear weight. A delta whose parameter does not exist, or
 * whose shape does not match, is an error naming the file and key, as is a
 * kohya module that matches nothing (call sdc_lora_resolve first to have
 * those listed in l->unknown instead), or two modules on one parameter.
 * Deltas of other components are skipped and counted in *skipped (may be
 * NULL). On error the parameters may be partly changed. */
sdc_status sdc_lora_apply(const sdc_lora *l, float multiplier, sdc_params *const *comps, size_t ncomps,
                          size_t *skipped, sdc_error *err);

/* ---- kohya name resolution (lora_kohya.c; public for tests) ----------- */

/* The UNet's block structure, read from its parameter names. */
typedef struct sdc_unet_layout {
    int levels;              /* down_blocks.N */
    int layers;              /* resnets per down level (layers_per_block) */
    unsigned char up_attn[32]; /* up level i has attentions */
    int mid_attn;            /* the mid block has attentions */
} sdc_unet_layout;

/* 0 if p holds no down_blocks.N.resnets.M (not a diffusers UNet). */
int sdc_unet_layout_read(const sdc_params *p, sdc_unet_layout *u);
/* diffusers UNet name -> SGM/CompVis name without "model.diffusion_model."
 * ("down_blocks.1.attentions.0.proj_in.weight" -> "input_blocks.4.1.proj_in.weight").
 * Returns 0 if the name has no SGM counterpart or does not fit in cap. */
int sdc_unet_sgm_name(const sdc_unet_layout *u, const char *name, char *out, size_t cap);

/* Parameter names of one component keyed by kohya module name: the name
 * without ".weight", dots replaced by "_"; UNets also under their SGM name. */
typedef struct sdc_lora_names {
    sdc_strmap map; /* kohya module -> parameter index, or -2 when two parameters give that name */
    char **keys;    /* owned strings the map borrows */
    size_t nkeys;
} sdc_lora_names;
sdc_status sdc_lora_names_build(sdc_lora_names *n, const sdc_params *p, sdc_error *err);
/* The parameter index, -1 if none, -2 if ambiguous. */
int64_t sdc_lora_names_find(const sdc_lora_names *n, const char *module);
void sdc_lora_names_free(sdc_lora_names *n);
/* "lora_unet_<module>..." -> "<module>..." with *component "unet" (lora_te_ and
 * lora_te1_: "text_encoder", lora_te2_: "text_encoder_2"); NULL if key has no
 * kohya prefix. component may be NULL. */
const char *sdc_lora_kohya_split(const char *key, const char **component);

#endif
