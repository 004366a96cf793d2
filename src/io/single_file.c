/* Reading a single-file checkpoint: the file's tensors are read by their
 * stored keys, the family is told from those keys, and the key maps
 * (keymap_*.c) emit each tensor under its diffusers name into the result.
 * What no map claims is sorted into "ignored" (known non-model keys) and
 * "unknown". */
#include "io/single_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "io/ckpt.h"
#include "io/keymap.h"
#include "io/safetensors.h"

static int any_prefix(const sdc_weights *w, const char *p) {
    size_t n = strlen(p);
    for (size_t i = 0; i < w->count; i++)
        if (strncmp(w->items[i].name, p, n) == 0) return 1;
    return 0;
}

static sdc_family family_from_width(int64_t c) {
    switch (c) {
    case 768: return SDC_FAMILY_SD1;   /* CLIP ViT-L/14 */
    case 1024: return SDC_FAMILY_SD2;  /* OpenCLIP ViT-H/14 */
    case 2048:                         /* CLIP ViT-L + OpenCLIP bigG, concatenated */
    case 1280: return SDC_FAMILY_SDXL; /* the SDXL refiner: bigG alone */
    default: return SDC_FAMILY_UNKNOWN;
    }
}

/* The UNet's context width: the input width of any cross-attention key
 * projection (same key in the original and in diffusers' layout). */
static int64_t context_width(const sdc_weights *w) {
    for (size_t i = 0; i < w->count; i++) {
        const sdc_weight *t = &w->items[i];
        if (sdc_str_ends_with(t->name, ".attn2.to_k.weight") && t->ndim == 2) return t->shape[1];
    }
    return 0;
}

/* Family from the stored keys (see single_file.h). */
static sdc_family family_from_keys(const sdc_weights *w) {
    if (any_prefix(w, "conditioner.") || any_prefix(w, "text_encoder_2.")) return SDC_FAMILY_SDXL;
    if (any_prefix(w, "cond_stage_model.model.")) return SDC_FAMILY_SD2;
    if (any_prefix(w, "cond_stage_model.transformer.")) return SDC_FAMILY_SD1;
    sdc_family f = family_from_width(context_width(w));
    if (f != SDC_FAMILY_UNKNOWN) return f;
    if (any_prefix(w, "model.diffusion_model.label_emb.") || any_prefix(w, "label_emb.") ||
        any_prefix(w, "add_embedding.") || any_prefix(w, "unet.add_embedding."))
        return SDC_FAMILY_SDXL;
    return SDC_FAMILY_UNKNOWN;
}

/* Last resort, on the mapped names: the text encoder's width, then the
 * UNet's projections (SD 2.x made them linear; SD 1.x has 1x1 convs). */
static sdc_family family_from_mapped(const sdc_weights *w) {
    const sdc_weight *t = sdc_weights_find(w, "text_encoder.text_model.embeddings.token_embedding.weight");
    if (t && t->ndim == 2 && (t->shape[1] == 768 || t->shape[1] == 1024)) return family_from_width(t->shape[1]);
    for (size_t i = 0; i < w->count; i++) {
        const sdc_weight *p = &w->items[i];
        if (strncmp(p->name, "unet.", 5) == 0 && sdc_str_ends_with(p->name, ".proj_in.weight"))
            return p->ndim == 2 ? SDC_FAMILY_SD2 : SDC_FAMILY_SD1;
    }
    return SDC_FAMILY_UNKNOWN;
}

/* Keys a checkpoint carries that are not part of the model. */
static int is_ignored(const char *name) {
    /* the diffusion schedule as buffers of ldm's DDPM (recomputed from the
     * scheduler config) */
    static const char *const schedule[] = {
        "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
        "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
        "logvar", "lvlb_weights", NULL};
    if (sdc_km_one_of(name, schedule)) return 1;
    /* EMA copies of the UNet (flattened names, model_ema.decay, .num_updates) */
    if (strncmp(name, "model_ema.", 10) == 0) return 1;
    /* sgm's denoiser: the sigma schedule as buffers */
    if (strncmp(name, "denoiser.", 9) == 0) return 1;
    /* the VAE's training losses (LPIPS, discriminator) */
    if (strncmp(name, "loss.", 5) == 0 || strncmp(name, "first_stage_model.loss.", 23) == 0) return 1;
    /* CLIP's position ids buffer (0..76), in any layout */
    if (sdc_str_ends_with(name, "embeddings.position_ids")) return 1;
    return 0;
}

/* "text_encoder.<X>" in diffusers names: transformers may save CLIPTextModel
 * without its "text_model." level; the canonical names keep it. */
static sdc_status pass_text(sdc_keymap *km, size_t i, const char *component, const char *x, sdc_error *err) {
    int keep = strncmp(x, "text_model.", 11) == 0 || strncmp(x, "text_projection.", 16) == 0;
    size_t n = strlen(component) + strlen(x) + 16;
    char *name = malloc(n);
    if (!name) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", km->path);
    snprintf(name, n, "%s.%s%s", component, keep ? "" : "text_model.", x);
    sdc_status s = sdc_km_emit(km, i, name, err);
    free(name);
    return s;
}

static sdc_status pass_prefixed(sdc_keymap *km, size_t i, const char *component, const char *x, sdc_error *err) {
    size_t n = strlen(component) + strlen(x) + 2;
    char *name = malloc(n);
    if (!name) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", km->path);
    snprintf(name, n, "%s.%s", component, x);
    sdc_status s = sdc_km_emit(km, i, name, err);
    free(name);
    return s;
}

/* Keys already in diffusers names pass through: with a component prefix,
 * or as one bare component. A bare component is recognised by its first
 * layer (conv_in, token_embedding), so that another model's "encoder.*"
 * keys (a T5, say) are not taken for a VAE. ldm_unet / ldm_vae: the
 * original-layout map ran for that component over bare keys, so bare
 * leftovers are not diffusers'. LoRA files are not models: their keys
 * ("unet.*.lora.down.weight", "lora_A") never pass. */
static sdc_status pass_diffusers(sdc_keymap *km, int ldm_unet, int ldm_vae, int vae_alias, int *count, sdc_error *err) {
    static const char *const unet_bare[] = {"conv_in.",       "time_embedding.", "down_blocks.",     "mid_block.",
                                            "up_blocks.",     "conv_norm_out.",  "conv_out.",        "add_embedding.",
                                            "class_embedding.", NULL};
    static const char *const vae_bare[] = {"encoder.", "decoder.", "quant_conv.", "post_quant_conv.", NULL};
    const sdc_weights *w = km->src;
    int bare_unet = !ldm_unet && sdc_weights_find(w, "conv_in.weight");
    int bare_vae = !ldm_vae && (sdc_weights_find(w, "encoder.conv_in.weight") || sdc_weights_find(w, "decoder.conv_in.weight"));
    int bare_text = sdc_weights_find(w, "text_model.embeddings.token_embedding.weight") != NULL;
    for (size_t i = 0; i < w->count; i++) {
        if (km->state[i] != SDC_KM_FREE) continue;
        const char *name = w->items[i].name, *x;
        size_t before = km->nmapped;
        if (is_ignored(name)) {
            sdc_km_ignore(km, i);
            continue;
        }
        if (strstr(name, "lora")) continue;
        if ((x = sdc_km_after(name, "unet."))) {
            SDC_TRY(sdc_km_emit(km, i, name, err));
        } else if ((x = sdc_km_after(name, "vae.")) && !vae_alias) {
            SDC_TRY(sdc_km_emit(km, i, name, err));
        } else if ((x = sdc_km_after(name, "text_encoder_2."))) {
            SDC_TRY(pass_text(km, i, "text_encoder_2", x, err));
        } else if ((x = sdc_km_after(name, "text_encoder."))) {
            SDC_TRY(pass_text(km, i, "text_encoder", x, err));
        } else if (bare_text && strncmp(name, "text_model.", 11) == 0) {
            SDC_TRY(pass_text(km, i, "text_encoder", name, err));
        } else {
            int k;
            for (k = 0; bare_unet && unet_bare[k]; k++)
                if (sdc_km_after(name, unet_bare[k])) break;
            if (bare_unet && unet_bare[k]) {
                SDC_TRY(pass_prefixed(km, i, "unet", name, err));
            } else {
                for (k = 0; bare_vae && vae_bare[k]; k++)
                    if (sdc_km_after(name, vae_bare[k])) break;
                if (bare_vae && vae_bare[k]) SDC_TRY(pass_prefixed(km, i, "vae", name, err));
            }
        }
        *count += km->nmapped > before;
    }
    return SDC_OK;
}

static sdc_status map_all(sdc_keymap *km, sdc_single_file *sf, sdc_error *err) {
    const sdc_weights *w = km->src;
    /* the UNet: under its ldm prefix, or a bare ldm UNet file */
    int ldm_unet = 0, ldm_vae = 0;
    if (any_prefix(w, "model.diffusion_model.")) {
        SDC_TRY(sdc_km_unet(km, "model.diffusion_model.", err));
    } else if (sdc_weights_find(w, "input_blocks.0.0.weight")) {
        ldm_unet = 1;
        SDC_TRY(sdc_km_unet(km, "", err));
    }
    /* the VAE: first_stage_model.*, diffusers' single-file alias vae.*, or a
     * bare VAE file; "encoder.down." etc. tell ldm names from diffusers' */
    static const char *const ldm_vae_keys[] = {"encoder.down.", "decoder.up.", "encoder.mid.", "decoder.mid.", NULL};
    int vae_alias = 0, vae_bare = 0;
    for (int k = 0; ldm_vae_keys[k]; k++) {
        char p[64];
        snprintf(p, sizeof p, "vae.%s", ldm_vae_keys[k]);
        vae_alias |= any_prefix(w, p);
        vae_bare |= any_prefix(w, ldm_vae_keys[k]);
    }
    SDC_TRY(sdc_km_vae(km, "first_stage_model.", err));
    if (vae_alias) SDC_TRY(sdc_km_vae(km, "vae.", err));
    if (vae_bare) {
        ldm_vae = 1;
        SDC_TRY(sdc_km_vae(km, "", err));
    }
    /* text encoders */
    int *layers = sf->text_layers_stored;
    SDC_TRY(sdc_km_clip(km, "cond_stage_model.transformer.", "text_encoder", &layers[0], err));
    if (!layers[0]) SDC_TRY(sdc_km_openclip(km, "cond_stage_model.model.", "text_encoder", 0, &layers[0], err));
    if (!layers[0]) SDC_TRY(sdc_km_clip(km, "conditioner.embedders.0.transformer.", "text_encoder", &layers[0], err));
    SDC_TRY(sdc_km_openclip(km, "conditioner.embedders.1.model.", "text_encoder_2", 1, &layers[1], err));
    /* the SDXL refiner conditions on bigG alone, as its embedder 0 */
    if (!layers[1]) SDC_TRY(sdc_km_openclip(km, "conditioner.embedders.0.model.", "text_encoder_2", 1, &layers[1], err));
    /* after the maps: what they left under "vae." (the ldm alias) is not diffusers' */
    int passed = 0;
    SDC_TRY(pass_diffusers(km, ldm_unet, ldm_vae, vae_alias, &passed, err));
    sf->diffusers_names = passed > 0;
    return SDC_OK;
}

static sdc_status push(char ***list, size_t *n, const char *s, sdc_error *err) {
    char **l = realloc(*list, (*n + 1) * sizeof *l);
    if (!l) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    *list = l;
    if (!(l[*n] = sdc_strdup(s))) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    (*n)++;
    return SDC_OK;
}

static sdc_status read_any(const char *path, sdc_weights *w, sdc_error *err) {
    static const char *const torch_ext[] = {".ckpt", ".pt", ".pth", ".bin", NULL};
    for (int k = 0; torch_ext[k]; k++)
        if (sdc_str_ends_with(path, torch_ext[k])) return sdc_ckpt_read(path, w, err);
    /* anything else: a torch zip starts with a local file header "PK\3\4";
     * a safetensors file with its 8-byte header length */
    FILE *f = fopen(path, "rb");
    unsigned char magic[4] = {0};
    if (f) {
        size_t got = fread(magic, 1, 4, f);
        fclose(f);
        if (got == 4 && memcmp(magic, "PK\3\4", 4) == 0) return sdc_ckpt_read(path, w, err);
    }
    return sdc_safetensors_read(path, w, err);
}

/* "(keys look like "a", "b", "c")" for the no-weights message. */
static void sample_keys(const sdc_weights *w, char *buf, size_t cap) {
    if (w->count == 0) {
        snprintf(buf, cap, "the file holds no tensors");
        return;
    }
    size_t len = (size_t)snprintf(buf, cap, "keys look like");
    for (size_t i = 0; i < w->count && i < 3 && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s \"%.80s\"", i ? "," : "", w->items[i].name);
    if (w->count > 3 && len < cap) snprintf(buf + len, cap - len, ", ... (%zu keys)", w->count);
}

sdc_status sdc_single_file_load(const char *path, sdc_single_file *out, sdc_error *err) {
    memset(out, 0, sizeof *out);
    sdc_weights_init(&out->weights);
    sdc_weights raw;
    sdc_weights_init(&raw);
    sdc_keymap km;
    memset(&km, 0, sizeof km);
    sdc_status s = read_any(path, &raw, err);
    if (s != SDC_OK) goto fail;
    if (!(out->path = sdc_strdup(path))) {
        s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    /* the canonical set takes over the mapped file; raw keeps only names */
    int base = 0;
    if ((s = sdc_weights_move_storage(&out->weights, &raw, &base, err)) != SDC_OK) goto fail;
    km.path = path;
    km.src = &raw;
    km.dst = &out->weights;
    km.file_base = base;
    km.family = out->family = family_from_keys(&raw);
    if (!(km.state = calloc(raw.count ? raw.count : 1, 1))) {
        s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    if ((s = map_all(&km, out, err)) != SDC_OK) goto fail;
    for (size_t i = 0; i < raw.count; i++) {
        const char *name = raw.items[i].name;
        if (km.state[i] == SDC_KM_FREE && is_ignored(name)) km.state[i] = SDC_KM_IGNORED;
        if (km.state[i] == SDC_KM_IGNORED) s = push(&out->ignored, &out->nignored, name, err);
        else if (km.state[i] == SDC_KM_FREE) s = push(&out->unknown, &out->nunknown, name, err);
        if (s != SDC_OK) goto fail;
    }
    if (km.nmapped == 0) {
        char keys[400];
        sample_keys(&raw, keys, sizeof keys);
        s = sdc_fail(err, SDC_EFORMAT, "%s: no Stable Diffusion weights found (%s)", path, keys);
        goto fail;
    }
    if (out->family == SDC_FAMILY_UNKNOWN) out->family = family_from_mapped(&out->weights);
    static const char *const comp[] = {"unet.", "vae.", "text_encoder.", "text_encoder_2."};
    for (int c = 0; c < 4; c++)
        if (any_prefix(&out->weights, comp[c])) out->components |= 1u << c;
    /* files already in diffusers names: count the layers from the names */
    for (int e = 0; e < 2; e++) {
        if (out->text_layers_stored[e]) continue;
        char name[128];
        int n = 0;
        for (;; n++) {
            snprintf(name, sizeof name, "%s.text_model.encoder.layers.%d.layer_norm1.weight",
                     e ? "text_encoder_2" : "text_encoder", n);
            if (!sdc_weights_find(&out->weights, name)) break;
        }
        out->text_layers_stored[e] = n;
    }
    for (int e = 0; e < 2; e++) out->text_layers_used[e] = out->text_layers_stored[e];
    /* SD 2 checkpoints keep all 24 OpenCLIP blocks; diffusers' model has the 23 SD 2 uses */
    if (out->family == SDC_FAMILY_SD2 && out->text_layers_stored[0] == 24) out->text_layers_used[0] = 23;
    free(km.state);
    sdc_weights_free(&raw);
    return SDC_OK;
fail:
    free(km.state);
    sdc_weights_free(&raw);
    sdc_single_file_free(out);
    return s;
}

void sdc_single_file_free(sdc_single_file *sf) {
    sdc_weights_free(&sf->weights);
    for (size_t i = 0; i < sf->nignored; i++) free(sf->ignored[i]);
    for (size_t i = 0; i < sf->nunknown; i++) free(sf->unknown[i]);
    free(sf->ignored);
    free(sf->unknown);
    free(sf->path);
    memset(sf, 0, sizeof *sf);
}
