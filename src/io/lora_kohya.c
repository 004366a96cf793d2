/* kohya module names -> diffusers parameters.
 *
 * kohya's sd-scripts name a LoRA module by its PyTorch path with every "."
 * replaced by "_" ("down_blocks.0.attentions.0.proj_in" ->
 * "down_blocks_0_attentions_0_proj_in"). Diffusers' own names contain "_",
 * so the dots cannot be put back by rule; instead every parameter of the
 * target model is turned into that form and the file's name looked up.
 *
 * sd-scripts' SDXL code (and LoRAs converted from ComfyUI/A1111) uses the
 * SGM/CompVis module tree instead ("input_blocks_4_1_transformer_blocks_0_attn1_to_q"),
 * so UNet parameters are also entered under their SGM name. That name is made
 * from the diffusers one and the block structure of the model, which is the
 * inverse of io/keymap_unet.c's map (tests/test_lora.c checks the two agree on
 * the SD1, SD2 and SDXL single files):
 *
 *   down_blocks.L.resnets.j / attentions.j   input_blocks.(1 + L(R+1) + j).0 / .1
 *   down_blocks.L.downsamplers.0.conv        input_blocks.(1 + L(R+1) + R).0.op
 *   mid_block resnets / attentions           middle_block.m, in order r0 a0 r1
 *   up_blocks.i.resnets.j / attentions.j     output_blocks.(i(R+1) + j).0 / .1
 *   up_blocks.i.upsamplers.0.conv            output_blocks.(i(R+1) + R).{1, or 2 after an attention}.conv
 *
 * with R resnets per down level; resnet parameters are renamed as ldm's
 * ResBlock has them (conv1 = in_layers.2, ...). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "io/keymap.h"
#include "io/lora.h"

/* "down_blocks.12.resnets.3." -> 12, with *s after the dot; -1 if no index. */
static int index_after(const char **s, const char *prefix) {
    const char *r = sdc_km_after(*s, prefix);
    if (!r) return -1;
    int i = sdc_km_index(&r);
    if (i >= 0) *s = r;
    return i;
}

int sdc_unet_layout_read(const sdc_params *p, sdc_unet_layout *u) {
    memset(u, 0, sizeof *u);
    for (size_t i = 0; i < p->count; i++) {
        const char *s = p->items[i].name;
        int n;
        if ((n = index_after(&s, "down_blocks.")) >= 0) {
            if (n + 1 > u->levels) u->levels = n + 1;
            int j = n == 0 ? index_after(&s, "resnets.") : -1;
            if (j + 1 > u->layers) u->layers = j + 1;
        } else if ((n = index_after(&s, "up_blocks.")) >= 0) {
            if (n < (int)sizeof u->up_attn && sdc_km_after(s, "attentions.")) u->up_attn[n] = 1;
        } else if (sdc_km_after(s, "mid_block.attentions.")) {
            u->mid_attn = 1;
        }
    }
    return u->levels > 0 && u->layers > 0;
}

/* ldm ResBlock names of diffusers' ResnetBlock2D parameters */
static const char *const RES_SGM[][2] = {
    {"norm1.", "in_layers.0."},  {"conv1.", "in_layers.2."},          {"norm2.", "out_layers.0."},
    {"conv2.", "out_layers.3."}, {"time_emb_proj.", "emb_layers.1."}, {"conv_shortcut.", "skip_connection."},
};

/* out = block + (resnet tail renamed, or tail as is); 0 if it does not fit. */
static int put(char *out, size_t cap, const char *block, const char *tail, int resnet) {
    char t[512];
    if (resnet) {
        if (sdc_km_map_param(tail, RES_SGM, sizeof RES_SGM / sizeof RES_SGM[0], t, sizeof t) < 0) return 0;
        tail = t;
    }
    int n = snprintf(out, cap, "%s%s", block, tail);
    return n > 0 && (size_t)n < cap;
}

int sdc_unet_sgm_name(const sdc_unet_layout *u, const char *name, char *out, size_t cap) {
    static const char *const top[][2] = {
        {"conv_in.", "input_blocks.0.0."},          {"time_embedding.linear_1.", "time_embed.0."},
        {"time_embedding.linear_2.", "time_embed.2."}, {"add_embedding.linear_1.", "label_emb.0.0."},
        {"add_embedding.linear_2.", "label_emb.0.2."}, {"conv_norm_out.", "out.0."},
        {"conv_out.", "out.2."},
    };
    if (sdc_km_map_param(name, top, sizeof top / sizeof top[0], out, cap) >= 0) return 1;
    const int R = u->layers;
    const char *s = name, *t;
    char blk[64];
    int n, j;
    if ((n = index_after(&s, "down_blocks.")) >= 0) {
        int base = 1 + n * (R + 1);
        if ((j = index_after(&s, "resnets.")) >= 0 && j < R) {
            snprintf(blk, sizeof blk, "input_blocks.%d.0.", base + j);
            return put(out, cap, blk, s, 1);
        }
        if ((j = index_after(&s, "attentions.")) >= 0 && j < R) {
            snprintf(blk, sizeof blk, "input_blocks.%d.1.", base + j);
            return put(out, cap, blk, s, 0);
        }
        if ((t = sdc_km_after(s, "downsamplers.0.conv.")) && sdc_km_is_wb(t)) {
            snprintf(blk, sizeof blk, "input_blocks.%d.0.op.", base + R);
            return put(out, cap, blk, t, 0);
        }
        return 0;
    }
    if ((t = sdc_km_after(s, "mid_block.")) != NULL) {
        s = t;
        if ((j = index_after(&s, "resnets.")) >= 0) {
            snprintf(blk, sizeof blk, "middle_block.%d.", u->mid_attn ? 2 * j : j);
            return put(out, cap, blk, s, 1);
        }
        if ((j = index_after(&s, "attentions.")) >= 0) {
            snprintf(blk, sizeof blk, "middle_block.%d.", 2 * j + 1);
            return put(out, cap, blk, s, 0);
        }
        return 0;
    }
    if ((n = index_after(&s, "up_blocks.")) >= 0 && n < (int)sizeof u->up_attn) {
        int base = n * (R + 1);
        if ((j = index_after(&s, "resnets.")) >= 0 && j <= R) {
            snprintf(blk, sizeof blk, "output_blocks.%d.0.", base + j);
            return put(out, cap, blk, s, 1);
        }
        if ((j = index_after(&s, "attentions.")) >= 0 && j <= R) {
            snprintf(blk, sizeof blk, "output_blocks.%d.1.", base + j);
            return put(out, cap, blk, s, 0);
        }
        if ((t = sdc_km_after(s, "upsamplers.0.conv.")) && sdc_km_is_wb(t)) {
            snprintf(blk, sizeof blk, "output_blocks.%d.%d.conv.", base + R, u->up_attn[n] ? 2 : 1);
            return put(out, cap, blk, t, 0);
        }
    }
    return 0;
}

/* Adds "name without .weight, . -> _" for parameter i. */
static sdc_status add_name(sdc_lora_names *n, const char *name, int64_t i, const char *comp, sdc_error *err) {
    size_t len = strlen(name);
    if (len <= 7 || strcmp(name + len - 7, ".weight") != 0) return SDC_OK; /* LoRA changes weights only */
    char *k = malloc(len - 6);
    if (!k) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory for LoRA names", comp);
    for (size_t c = 0; c < len - 7; c++) k[c] = name[c] == '.' ? '_' : name[c];
    k[len - 7] = '\0';
    n->keys[n->nkeys++] = k;
    int64_t old = -1;
    if (sdc_strmap_put(&n->map, k, i, &old) != 0) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory for LoRA names", comp);
    /* "a_b.c" and "a.b_c" read the same: such a name cannot be used */
    if (old >= 0 && old != i) sdc_strmap_put(&n->map, k, -2, NULL);
    if (old == -2) sdc_strmap_put(&n->map, k, -2, NULL);
    return SDC_OK;
}

sdc_status sdc_lora_names_build(sdc_lora_names *n, const sdc_params *p, sdc_error *err) {
    memset(n, 0, sizeof *n);
    sdc_unet_layout u;
    int sgm = strcmp(p->component, "unet") == 0 && sdc_unet_layout_read(p, &u);
    n->keys = calloc(2 * p->count + 1, sizeof *n->keys);
    if (!n->keys || sdc_strmap_init(&n->map, 4 * p->count + 16) != 0) {
        sdc_lora_names_free(n);
        return sdc_fail(err, SDC_ENOMEM, "%s: out of memory for LoRA names", p->component);
    }
    sdc_status s = SDC_OK;
    for (size_t i = 0; i < p->count && s == SDC_OK; i++) {
        s = add_name(n, p->items[i].name, (int64_t)i, p->component, err);
        char alias[600];
        if (s == SDC_OK && sgm && sdc_unet_sgm_name(&u, p->items[i].name, alias, sizeof alias))
            s = add_name(n, alias, (int64_t)i, p->component, err);
    }
    if (s != SDC_OK) sdc_lora_names_free(n);
    return s;
}

int64_t sdc_lora_names_find(const sdc_lora_names *n, const char *module) {
    return sdc_strmap_get(&n->map, module);
}

void sdc_lora_names_free(sdc_lora_names *n) {
    for (size_t i = 0; i < n->nkeys; i++) free(n->keys[i]);
    free(n->keys);
    if (n->map.keys) sdc_strmap_free(&n->map);
    memset(n, 0, sizeof *n);
}

const char *sdc_lora_kohya_split(const char *key, const char **component) {
    static const char *const prefix[][2] = {
        {"lora_unet_", "unet"}, {"lora_te1_", "text_encoder"}, {"lora_te2_", "text_encoder_2"}, {"lora_te_", "text_encoder"},
    };
    for (size_t i = 0; i < sizeof prefix / sizeof prefix[0]; i++) {
        size_t n = strlen(prefix[i][0]);
        if (strncmp(key, prefix[i][0], n) != 0) continue;
        if (component) *component = prefix[i][1];
        return key + n;
    }
    return NULL;
}

/* Moves the file keys of delta d to l->unknown (the caller drops d). */
static sdc_status to_unknown(sdc_lora *l, const sdc_lora_delta *d, sdc_error *err) {
    const sdc_weight *ws[3] = {d->down, d->up, d->mid};
    char alpha[1100];
    snprintf(alpha, sizeof alpha, "%s.alpha", d->key);
    const sdc_weight *a = sdc_weights_find(&l->w, alpha);
    size_t n = 3 + (a != NULL);
    char **u = realloc(l->unknown, (l->nunknown + n) * sizeof *u);
    if (!u) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", l->path);
    l->unknown = u;
    for (int k = 0; k < 4; k++) {
        const sdc_weight *t = k < 3 ? ws[k] : a;
        if (!t) continue;
        if (!(u[l->nunknown] = sdc_strdup(t->name))) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", l->path);
        l->nunknown++;
    }
    return SDC_OK;
}

/* One pass per component: the deltas kept slide down over the dropped ones
 * (dropping by memmove one at a time would be quadratic in a file of many
 * unknown modules). After an error the rest are kept as they are. */
sdc_status sdc_lora_resolve(sdc_lora *l, sdc_params *const *comps, size_t ncomps, sdc_error *err) {
    for (size_t c = 0; c < ncomps; c++) {
        const sdc_params *p = comps[c];
        sdc_lora_names names;
        int built = 0;
        sdc_status s = SDC_OK;
        size_t kept = 0;
        for (size_t i = 0; i < l->count; i++) {
            sdc_lora_delta *d = &l->deltas[i];
            int keep = 1;
            if (s == SDC_OK && !d->param && strcmp(d->component, p->component) == 0) {
                if (!built && (s = sdc_lora_names_build(&names, p, err)) == SDC_OK) built = 1;
                int64_t idx = built ? sdc_lora_names_find(&names, sdc_lora_kohya_split(d->key, NULL)) : -1;
                if (s != SDC_OK) {
                    /* names could not be built: reported */
                } else if (idx == -2) {
                    s = sdc_fail(err, SDC_EFORMAT, "%s: LoRA module \"%s\" could name more than one parameter of the %s",
                                 l->path, d->key, p->component);
                } else if (idx < 0) {
                    keep = (s = to_unknown(l, d, err)) != SDC_OK;
                } else if (!(d->param = sdc_strdup(p->items[idx].name))) {
                    s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", l->path);
                }
            }
            if (keep) {
                if (kept != i) l->deltas[kept] = *d;
                kept++;
            } else {
                free(d->component);
                free(d->param);
                free(d->key);
            }
        }
        l->count = kept;
        if (built) sdc_lora_names_free(&names);
        if (s != SDC_OK) return s;
    }
    return SDC_OK;
}
