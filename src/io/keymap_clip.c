/* Text encoders of single-file checkpoints -> transformers' CLIPTextModel
 * names ("<component>.text_model.encoder.layers.0.self_attn.q_proj.weight").
 *
 * CLIP ViT-L (SD 1.x "cond_stage_model.transformer.", SDXL
 * "conditioner.embedders.0.transformer.") is stored as transformers'
 * CLIPTextModel already: only the prefix changes (old SD 1.x files lack the
 * "text_model." level; it is added).
 *
 * OpenCLIP (SD 2.x "cond_stage_model.model.", SDXL
 * "conditioner.embedders.1.model.") has its own names:
 *   token_embedding.weight           text_model.embeddings.token_embedding.weight
 *   positional_embedding             text_model.embeddings.position_embedding.weight
 *   ln_final.*                       text_model.final_layer_norm.*
 *   transformer.resblocks.N.ln_1/2   text_model.encoder.layers.N.layer_norm1/2
 *   ...mlp.c_fc / mlp.c_proj         ...mlp.fc1 / mlp.fc2
 *   ...attn.out_proj                 ...self_attn.out_proj
 *   ...attn.in_proj_weight [3D, D]   ...self_attn.{q,k,v}_proj.weight [D, D]
 *   ...attn.in_proj_bias [3D]        ...self_attn.{q,k,v}_proj.bias [D]
 *   text_projection [D, P]           text_projection.weight [P, D] (SDXL; SD 2 does not use it)
 * torch's MultiheadAttention stacks q, k, v along dim 0 (rows 0..D-1 are q,
 * D..2D-1 k, 2D..3D-1 v), so each part is a contiguous third of the fused
 * tensor: the split is three views into the mapped data, no copy.
 * OpenCLIP applies text_projection as x @ P while a Linear computes x @ W^T,
 * so W = P^T: that one tensor is transposed into a buffer the set owns. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/keymap.h"

#define MAX_LAYERS 256


/* Checks that layers 0..n-1 were all seen. */
static sdc_status check_layers(sdc_keymap *km, const char *prefix, const char *what, const unsigned char *seen, int n,
                               sdc_error *err) {
    for (int l = 0; l < n; l++)
        if (!seen[l])
            return sdc_fail(err, SDC_EFORMAT, "%s: text encoder layer \"%s%s%d\" is missing (layers go up to %d)",
                            km->path, prefix, what, l, n - 1);
    return SDC_OK;
}

sdc_status sdc_km_clip(sdc_keymap *km, const char *prefix, const char *component, int *layers, sdc_error *err) {
    static const char *const fixed[] = {"embeddings.token_embedding.weight", "embeddings.position_embedding.weight",
                                        "final_layer_norm.weight", "final_layer_norm.bias", NULL};
    static const char *const layer_tails[] = {
        "self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight", "self_attn.k_proj.bias",
        "self_attn.v_proj.weight", "self_attn.v_proj.bias", "self_attn.out_proj.weight", "self_attn.out_proj.bias",
        "layer_norm1.weight", "layer_norm1.bias", "layer_norm2.weight", "layer_norm2.bias",
        "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", NULL};
    const sdc_weights *w = km->src;
    unsigned char seen[MAX_LAYERS] = {0};
    int n = 0;
    const char *tm = "text_model.";
    for (size_t i = 0; i < w->count; i++) {
        const char *r = sdc_km_after(w->items[i].name, prefix);
        if (!r || km->state[i] != SDC_KM_FREE) continue;
        const char *inner = sdc_km_after(r, tm) ? r + strlen(tm) : r;
        if (strcmp(inner, "embeddings.position_ids") == 0) { /* a buffer: 0..76 */
            sdc_km_ignore(km, i);
            continue;
        }
        int ok = sdc_km_one_of(inner, fixed);
        const char *t = sdc_km_after(inner, "encoder.layers.");
        if (!ok && t) {
            int l = sdc_km_index(&t);
            if (l >= 0 && l < MAX_LAYERS && sdc_km_one_of(t, layer_tails)) {
                ok = 1;
                seen[l] = 1;
                if (l + 1 > n) n = l + 1;
            }
        }
        if (!ok) continue;
        char name[320];
        snprintf(name, sizeof name, "%s.text_model.%s", component, inner);
        SDC_TRY(sdc_km_emit(km, i, name, err));
    }
    *layers = n;
    return check_layers(km, prefix, "text_model.encoder.layers.", seen, n, err);
}

/* The width D of an OpenCLIP tower, from its embeddings (0 if absent). */
static int64_t openclip_width(const sdc_keymap *km, const char *prefix) {
    char name[256];
    snprintf(name, sizeof name, "%stoken_embedding.weight", prefix);
    const sdc_weight *t = sdc_weights_find(km->src, name);
    if (t && t->ndim == 2) return t->shape[1];
    snprintf(name, sizeof name, "%spositional_embedding", prefix);
    t = sdc_weights_find(km->src, name);
    if (t && t->ndim == 2) return t->shape[1];
    return 0;
}

/* in_proj_weight [3D, D] / in_proj_bias [3D] -> q, k, v views. */
static sdc_status split_qkv(sdc_keymap *km, size_t i, const char *base, int bias, int64_t D, sdc_error *err) {
    const sdc_weight *t = &km->src->items[i];
    char sb[96];
    int ok = bias ? t->ndim == 1 && t->shape[0] > 0 && t->shape[0] % 3 == 0 && (!D || t->shape[0] == 3 * D)
                  : t->ndim == 2 && t->shape[1] > 0 && t->shape[0] == 3 * t->shape[1] && (!D || t->shape[1] == D);
    if (!ok) {
        char dd[32] = "D";
        if (D) snprintf(dd, sizeof dd, "%lld", (long long)D);
        return sdc_fail(err, SDC_EFORMAT,
                        "%s: tensor \"%s\" has shape %s; a fused q/k/v projection must be %s (D = %s, the text "
                        "encoder's width)",
                        km->path, t->name, sdc_km_shape(sb, sizeof sb, t), bias ? "[3*D]" : "[3*D, D]", dd);
    }
    int64_t shape[2] = {t->shape[0] / 3, bias ? 0 : t->shape[1]};
    size_t part = t->nbytes / 3;
    static const char qkv[3] = {'q', 'k', 'v'};
    for (int p = 0; p < 3; p++) {
        char name[320];
        snprintf(name, sizeof name, "%s.self_attn.%c_proj.%s", base, qkv[p], bias ? "bias" : "weight");
        SDC_TRY(sdc_km_emit_view(km, i, name, bias ? 1 : 2, shape, (size_t)p * part, part, err));
    }
    return SDC_OK;
}

/* text_projection [D, P] -> text_projection.weight [P, D], copied. */
static sdc_status transpose_projection(sdc_keymap *km, size_t i, const char *component, sdc_error *err) {
    const sdc_weight *t = &km->src->items[i];
    char sb[96];
    if (t->ndim != 2)
        return sdc_fail(err, SDC_EFORMAT, "%s: tensor \"%s\" has shape %s, expected a matrix [D, P]", km->path, t->name,
                        sdc_km_shape(sb, sizeof sb, t));
    int64_t rows = t->shape[0], cols = t->shape[1];
    size_t es = sdc_dtype_size(t->dtype);
    void *buf = malloc(t->nbytes ? t->nbytes : 1);
    if (!buf) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", km->path);
    const unsigned char *src = t->data;
    unsigned char *dst = buf;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) memcpy(dst + ((size_t)(c * rows + r)) * es, src + ((size_t)(r * cols + c)) * es, es);
    int64_t shape[2] = {cols, rows};
    char name[256];
    snprintf(name, sizeof name, "%s.text_projection.weight", component);
    return sdc_km_emit_owned(km, i, name, 2, shape, buf, t->nbytes, err);
}

sdc_status sdc_km_openclip(sdc_keymap *km, const char *prefix, const char *component, int with_projection,
                           int *layers, sdc_error *err) {
    static const char *const fixed[][2] = {
        {"token_embedding.weight", "text_model.embeddings.token_embedding.weight"},
        {"positional_embedding", "text_model.embeddings.position_embedding.weight"},
        {"ln_final.weight", "text_model.final_layer_norm.weight"},
        {"ln_final.bias", "text_model.final_layer_norm.bias"},
    };
    static const char *const block[][2] = {
        {"ln_1.", "layer_norm1."}, {"ln_2.", "layer_norm2."}, {"mlp.c_fc.", "mlp.fc1."}, {"mlp.c_proj.", "mlp.fc2."},
        {"attn.out_proj.", "self_attn.out_proj."},
    };
    const sdc_weights *w = km->src;
    int64_t D = openclip_width(km, prefix);
    unsigned char seen[MAX_LAYERS] = {0};
    int n = 0;
    for (size_t i = 0; i < w->count; i++) {
        const char *r = sdc_km_after(w->items[i].name, prefix);
        if (!r || km->state[i] != SDC_KM_FREE) continue;
        char name[320];
        int done = 0;
        for (size_t k = 0; k < sizeof fixed / sizeof fixed[0] && !done; k++)
            if (strcmp(r, fixed[k][0]) == 0) {
                snprintf(name, sizeof name, "%s.%s", component, fixed[k][1]);
                SDC_TRY(sdc_km_emit(km, i, name, err));
                done = 1;
            }
        if (done) continue;
        if (strcmp(r, "text_projection") == 0) {
            /* SD 2 conditions on the token states, never on the projected
             * pooled output: diffusers' SD 2 text encoder has no projection */
            if (with_projection) SDC_TRY(transpose_projection(km, i, component, err));
            else sdc_km_ignore(km, i);
            continue;
        }
        if (strcmp(r, "logit_scale") == 0 || strcmp(r, "attn_mask") == 0) { /* contrastive temperature; causal mask buffer */
            sdc_km_ignore(km, i);
            continue;
        }
        const char *t = sdc_km_after(r, "transformer.resblocks.");
        int l = t ? sdc_km_index(&t) : -1;
        if (l < 0 || l >= MAX_LAYERS) continue;
        char base[256];
        snprintf(base, sizeof base, "%s.text_model.encoder.layers.%d", component, l);
        int in_bias = strcmp(t, "attn.in_proj_bias") == 0;
        if (in_bias || strcmp(t, "attn.in_proj_weight") == 0) {
            SDC_TRY(split_qkv(km, i, base, in_bias, D, err));
        } else {
            char tail[48]; /* the longest is "self_attn.out_proj.weight" */
            if (sdc_km_map_param(t, block, sizeof block / sizeof block[0], tail, sizeof tail) < 0) continue;
            snprintf(name, sizeof name, "%s.%s", base, tail);
            SDC_TRY(sdc_km_emit(km, i, name, err));
        }
        seen[l] = 1;
        if (l + 1 > n) n = l + 1;
    }
    *layers = n;
    return check_layers(km, prefix, "transformer.resblocks.", seen, n, err);
}
