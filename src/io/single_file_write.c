#include "io/single_file_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "io/keymap.h"
#include "io/lora.h"
#include "io/safetensors.h"

/* "prefix.N.rest" → N, *rest after it; -1 if s does not start so */
static int take_index(const char *s, const char *prefix, const char **rest) {
    size_t n = strlen(prefix);
    if (strncmp(s, prefix, n) != 0) return -1;
    char *end;
    long v = strtol(s + n, &end, 10);
    if (end == s + n || *end != '.') return -1;
    *rest = end + 1;
    return (int)v;
}

int sdc_vae_ldm_name(const char *name, int levels, char *out, size_t cap, int *conv1x1) {
    *conv1x1 = 0;
    const char *part = NULL, *r;
    if (!strncmp(name, "encoder.", 8)) part = "encoder";
    else if (!strncmp(name, "decoder.", 8)) part = "decoder";
    if (!part) { /* quant_conv, post_quant_conv */
        snprintf(out, cap, "%s", name);
        return !strncmp(name, "quant_conv.", 11) || !strncmp(name, "post_quant_conv.", 16);
    }
    const char *s = name + 8;
    int i, j;
    char tail[256];
    if ((i = take_index(s, part[0] == 'e' ? "down_blocks." : "up_blocks.", &r)) >= 0) {
        int level = part[0] == 'e' ? i : levels - 1 - i; /* ldm counts decoder levels from the bottom */
        const char *blk = part[0] == 'e' ? "down" : "up";
        if ((j = take_index(r, "resnets.", &r)) >= 0) {
            snprintf(tail, sizeof tail, "%s", r);
            if (!strncmp(tail, "conv_shortcut.", 14)) snprintf(tail, sizeof tail, "nin_shortcut.%s", r + 14);
            snprintf(out, cap, "%s.%s.%d.block.%d.%s", part, blk, level, j, tail);
            return 1;
        }
        if (!strncmp(r, "downsamplers.0.conv.", 20)) {
            snprintf(out, cap, "%s.%s.%d.downsample.conv.%s", part, blk, level, r + 20);
            return 1;
        }
        if (!strncmp(r, "upsamplers.0.conv.", 18)) {
            snprintf(out, cap, "%s.%s.%d.upsample.conv.%s", part, blk, level, r + 18);
            return 1;
        }
        return 0;
    }
    if (!strncmp(s, "mid_block.", 10)) {
        s += 10;
        if ((j = take_index(s, "resnets.", &r)) >= 0) {
            snprintf(tail, sizeof tail, "%s", r);
            if (!strncmp(tail, "conv_shortcut.", 14)) snprintf(tail, sizeof tail, "nin_shortcut.%s", r + 14);
            snprintf(out, cap, "%s.mid.block_%d.%s", part, j + 1, tail);
            return 1;
        }
        if (!strncmp(s, "attentions.0.", 13)) {
            static const char *const map[][2] = {{"group_norm.", "norm."}, {"to_q.", "q."}, {"to_k.", "k."},
                                                 {"to_v.", "v."}, {"to_out.0.", "proj_out."}};
            s += 13;
            for (size_t k = 0; k < sizeof map / sizeof *map; k++)
                if (!strncmp(s, map[k][0], strlen(map[k][0]))) {
                    const char *w = s + strlen(map[k][0]);
                    snprintf(out, cap, "%s.mid.attn_1.%s%s", part, map[k][1], w);
                    *conv1x1 = k > 0 && !strcmp(w, "weight");
                    return 1;
                }
        }
        return 0;
    }
    if (!strncmp(s, "conv_norm_out.", 14)) {
        snprintf(out, cap, "%s.norm_out.%s", part, s + 14);
        return 1;
    }
    snprintf(out, cap, "%s.%s", part, s); /* conv_in, conv_out */
    return !strncmp(s, "conv_in.", 8) || !strncmp(s, "conv_out.", 9);
}

int sdc_openclip_name(const char *name, char *out, size_t cap, int *qkv, int *transpose) {
    *qkv = -1;
    *transpose = 0;
    static const char *const top[][2] = {
        {"text_model.embeddings.token_embedding.", "token_embedding."},
        {"text_model.final_layer_norm.", "ln_final."},
    };
    static const char *const layer[][2] = {
        {"layer_norm1.", "ln_1."},     {"layer_norm2.", "ln_2."},
        {"mlp.fc1.", "mlp.c_fc."},     {"mlp.fc2.", "mlp.c_proj."},
        {"self_attn.out_proj.", "attn.out_proj."},
    };
    if (sdc_km_map_param(name, top, sizeof top / sizeof top[0], out, cap) >= 0) return 1;
    int n;
    if (!strcmp(name, "text_model.embeddings.position_embedding.weight"))
        n = snprintf(out, cap, "positional_embedding"); /* a bare parameter in OpenCLIP */
    else if (!strcmp(name, "text_projection.weight"))
        n = snprintf(out, cap, "text_projection"), *transpose = 1;
    else {
        const char *r;
        int l = take_index(name, "text_model.encoder.layers.", &r);
        if (l < 0) return 0;
        char tail[256];
        if (sdc_km_map_param(r, layer, sizeof layer / sizeof layer[0], tail, sizeof tail) >= 0) {
            n = snprintf(out, cap, "transformer.resblocks.%d.%s", l, tail);
        } else {
            static const char *const proj[3] = {"self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj."};
            for (int k = 0; k < 3 && *qkv < 0; k++)
                if (sdc_km_after(r, proj[k]) && sdc_km_is_wb(r + strlen(proj[k]))) *qkv = k;
            if (*qkv < 0) return 0;
            n = snprintf(out, cap, "transformer.resblocks.%d.attn.in_proj_%s", l, r + strlen(proj[0]));
        }
    }
    return n > 0 && (size_t)n < cap;
}

/* ---- the tensors of the file, built one by one ------------------------------- */

typedef struct out_tensor {
    char *name;
    int ndim;
    int64_t shape[SDC_MAX_DIMS];
    void *buf;
} out_tensor;

typedef struct writer {
    out_tensor *t;
    size_t n, cap;
    sdc_dtype dtype;
} writer;

/* Appends a tensor made of nparts fp32 blocks of `part` elements each (one
 * block, or q, k, v fused), converted to the file's dtype. */
static sdc_status put(writer *w, const char *name, int ndim, const int64_t *shape, const float *const *parts,
                      int nparts, size_t part, sdc_error *err) {
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 1024;
        out_tensor *t = realloc(w->t, cap * sizeof *t);
        if (!t) return sdc_fail(err, SDC_ENOMEM, "out of memory");
        w->t = t, w->cap = cap;
    }
    const size_t es = sdc_dtype_size(w->dtype), total = part * (size_t)nparts;
    out_tensor *o = &w->t[w->n];
    memset(o, 0, sizeof *o);
    o->name = sdc_strdup(name);
    o->buf = malloc(total ? total * es : 1);
    o->ndim = ndim;
    for (int d = 0; d < ndim; d++) o->shape[d] = shape[d];
    w->n++; /* freed with the others from here on */
    if (!o->name || !o->buf) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    for (int k = 0; k < nparts; k++)
        if (sdc_convert_from_f32((char *)o->buf + k * part * es, w->dtype, parts[k], part) != 0)
            return sdc_fail(err, SDC_EINVAL, "cannot store %s as %s", name, sdc_dtype_name(w->dtype));
    return SDC_OK;
}

static void writer_free(writer *w) {
    for (size_t i = 0; i < w->n; i++) free(w->t[i].name), free(w->t[i].buf);
    free(w->t);
}

/* UNet (SGM names) or VAE (ldm names) under prefix. */
static sdc_status put_unet_vae(writer *w, const sdc_params *p, int vae_levels, const char *prefix, sdc_error *err) {
    sdc_unet_layout u;
    int is_unet = vae_levels < 0;
    if (is_unet && !sdc_unet_layout_read(p, &u))
        return sdc_fail(err, SDC_EINVAL, "%s: not a diffusers UNet", p->component);
    for (size_t i = 0; i < p->count; i++) {
        const sdc_param *it = &p->items[i];
        char local[512], full[640];
        int conv1x1 = 0;
        int ok = is_unet ? sdc_unet_sgm_name(&u, it->name, local, sizeof local)
                         : sdc_vae_ldm_name(it->name, vae_levels, local, sizeof local, &conv1x1);
        if (!ok) return sdc_fail(err, SDC_EUNSUPPORTED, "%s: no single-file name for %s", p->component, it->name);
        snprintf(full, sizeof full, "%s%s", prefix, local);
        int64_t shape[SDC_MAX_DIMS];
        int nd = it->slot->ndim;
        for (int d = 0; d < nd; d++) shape[d] = it->slot->shape[d];
        if (conv1x1) shape[2] = shape[3] = 1, nd = 4; /* ldm's mid attention is 1×1 convs */
        const float *data = p->data + it->offset; /* the host copy (the slots may be on a GPU) */
        SDC_TRY(put(w, full, nd, shape, &data, 1, (size_t)it->numel, err));
    }
    return SDC_OK;
}

/* A CLIP text encoder with transformers' names (OpenAI CLIP as stored in
 * the original checkpoints) under prefix. */
static sdc_status put_clip(writer *w, const sdc_params *p, const char *prefix, sdc_error *err) {
    for (size_t i = 0; i < p->count; i++) {
        const sdc_param *it = &p->items[i];
        char full[640];
        snprintf(full, sizeof full, "%s%s", prefix, it->name);
        const float *data = p->data + it->offset; /* the host copy (the slots may be on a GPU) */
        SDC_TRY(put(w, full, it->slot->ndim, it->slot->shape, &data, 1, (size_t)it->numel, err));
    }
    return SDC_OK;
}

/* A CLIP text encoder in OpenCLIP's layout under prefix: q, k, v fused into
 * in_proj (written where q is met), text_projection transposed. */
static sdc_status put_openclip(writer *w, const sdc_params *p, const char *prefix, sdc_error *err) {
    for (size_t i = 0; i < p->count; i++) {
        const sdc_param *it = &p->items[i];
        char local[512], full[640];
        int qkv, transpose;
        if (!sdc_openclip_name(it->name, local, sizeof local, &qkv, &transpose))
            return sdc_fail(err, SDC_EUNSUPPORTED, "%s: no OpenCLIP name for %s", p->component, it->name);
        snprintf(full, sizeof full, "%s%s", prefix, local);
        const int nd = it->slot->ndim;
        const int64_t *shape = it->slot->shape;
        if (qkv > 0) { /* k and v go in with q */
            char q[512];
            snprintf(q, sizeof q, "%s", it->name);
            q[strstr(it->name, qkv == 1 ? "k_proj." : "v_proj.") - it->name] = 'q';
            if (!sdc_params_find(p, q))
                return sdc_fail(err, SDC_EINVAL, "%s: %s has no %s to be fused with into %s", p->component, it->name, q,
                                full);
            continue;
        }
        if (qkv == 0) {
            /* "...self_attn.q_proj.weight" -> its k_proj and v_proj siblings */
            const float *parts[3];
            char sib[512];
            size_t at = strstr(it->name, "q_proj.") - it->name;
            for (int k = 0; k < 3; k++) {
                snprintf(sib, sizeof sib, "%s", it->name);
                sib[at] = "qkv"[k];
                const sdc_param *s = sdc_params_find(p, sib);
                int same = s && s->slot->ndim == nd;
                for (int d = 0; same && d < nd; d++) same = s->slot->shape[d] == shape[d];
                if (!same)
                    return sdc_fail(err, SDC_EINVAL, "%s: %s is missing or not shaped like %s (needed for %s)",
                                    p->component, sib, it->name, full);
                parts[k] = p->data + s->offset;
            }
            int64_t fused[SDC_MAX_DIMS];
            for (int d = 0; d < nd; d++) fused[d] = shape[d];
            fused[0] *= 3; /* rows q, k, v */
            SDC_TRY(put(w, full, nd, fused, parts, 3, (size_t)it->numel, err));
        } else if (transpose) {
            if (nd != 2) return sdc_fail(err, SDC_EINVAL, "%s: %s is not 2-D", p->component, it->name);
            /* text_projection [D, P] = weight [P, D] transposed */
            const int64_t P = shape[0], D = shape[1];
            const float *src = p->data + it->offset;
            float *t = malloc((size_t)(P * D) * sizeof *t);
            if (!t) return sdc_fail(err, SDC_ENOMEM, "out of memory");
            for (int64_t r = 0; r < P; r++)
                for (int64_t c = 0; c < D; c++) t[c * P + r] = src[r * D + c];
            const float *data = t;
            sdc_status s = put(w, full, 2, (int64_t[]){D, P}, &data, 1, (size_t)(P * D), err);
            free(t);
            SDC_TRY(s);
        } else {
            const float *data = p->data + it->offset; /* the host copy (the slots may be on a GPU) */
            SDC_TRY(put(w, full, nd, shape, &data, 1, (size_t)it->numel, err));
        }
    }
    return SDC_OK;
}

sdc_status sdc_single_file_write(const char *path, sdc_family family, const sdc_params *unet, const sdc_params *vae,
                                 int vae_levels, const sdc_params *text_encoder, const sdc_params *text_encoder_2,
                                 sdc_dtype dtype, sdc_error *err) {
    if (family != SDC_FAMILY_SD1 && family != SDC_FAMILY_SD2 && family != SDC_FAMILY_SDXL)
        return sdc_fail(err, SDC_EUNSUPPORTED, "%s: no single-file layout for a model of family %s", path,
                        sdc_family_name(family));
    if (!unet || !vae || !text_encoder || (family == SDC_FAMILY_SDXL) != (text_encoder_2 != NULL))
        return sdc_fail(err, SDC_EINVAL, "%s: a %s single file needs the UNet, the VAE and %s", path,
                        sdc_family_name(family), family == SDC_FAMILY_SDXL ? "both text encoders" : "one text encoder");
    writer w = {NULL, 0, 0, dtype};
    sdc_status s = put_unet_vae(&w, unet, -1, "model.diffusion_model.", err);
    if (s == SDC_OK) s = put_unet_vae(&w, vae, vae_levels, "first_stage_model.", err);
    if (s == SDC_OK && family == SDC_FAMILY_SD1) s = put_clip(&w, text_encoder, "cond_stage_model.transformer.", err);
    if (s == SDC_OK && family == SDC_FAMILY_SD2) s = put_openclip(&w, text_encoder, "cond_stage_model.model.", err);
    if (s == SDC_OK && family == SDC_FAMILY_SDXL) {
        s = put_clip(&w, text_encoder, "conditioner.embedders.0.transformer.", err);
        if (s == SDC_OK) s = put_openclip(&w, text_encoder_2, "conditioner.embedders.1.model.", err);
    }
    sdc_st_tensor *ts = s == SDC_OK ? calloc(w.n + 1, sizeof *ts) : NULL;
    if (s == SDC_OK && !ts) s = sdc_fail(err, SDC_ENOMEM, "out of memory");
    for (size_t i = 0; s == SDC_OK && i < w.n; i++)
        ts[i] = (sdc_st_tensor){w.t[i].name, dtype, w.t[i].ndim, w.t[i].shape, w.t[i].buf};
    if (s == SDC_OK) s = sdc_safetensors_write(path, ts, w.n, NULL, 0, err);
    free(ts);
    writer_free(&w);
    return s;
}

sdc_status sdc_single_file_write_sd1(const char *path, const sdc_params *unet, const sdc_params *vae, int vae_levels,
                                     const sdc_params *text_encoder, sdc_dtype dtype, sdc_error *err) {
    return sdc_single_file_write(path, SDC_FAMILY_SD1, unet, vae, vae_levels, text_encoder, NULL, dtype, err);
}
