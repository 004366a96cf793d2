/* The autoencoder of a CompVis checkpoint ("first_stage_model.*", ldm's
 * AutoencoderKL; also a bare VAE file such as vae-ft-mse-840000) ->
 * diffusers' AutoencoderKL names.
 *
 *   encoder.down.I.block.J.*        encoder.down_blocks.I.resnets.J.*
 *   encoder.down.I.downsample.conv  encoder.down_blocks.I.downsamplers.0.conv
 *   decoder.up.I.block.J.*          decoder.up_blocks.(U-1-I).resnets.J.*   (U up levels: ldm
 *   decoder.up.I.upsample.conv      decoder.up_blocks.(U-1-I).upsamplers.0.conv  counts from the
 *                                                                           lowest resolution)
 *   {en,de}coder.mid.block_1/_2     mid_block.resnets.0/1
 *   {en,de}coder.mid.attn_1.norm    mid_block.attentions.0.group_norm
 *   mid.attn_1.{q,k,v,proj_out}     mid_block.attentions.0.{to_q,to_k,to_v,to_out.0}
 *   {en,de}coder.norm_out           conv_norm_out;  nin_shortcut -> conv_shortcut
 *
 * ldm's mid attention uses 1x1 convolutions, [C, C, 1, 1]; diffusers uses
 * linear layers, [C, C]: the same bytes, so only the shape changes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/keymap.h"

#define MAX_LEVELS 64


/* ResnetBlock tail -> diffusers tail; 0 if none */
static int res_tail(const char *t, char *out, size_t cap) {
    static const char *const same[] = {"norm1.", "conv1.", "norm2.", "conv2.", NULL};
    for (int k = 0; same[k]; k++) {
        const char *r = sdc_km_after(t, same[k]);
        if (sdc_km_is_wb(r)) {
            snprintf(out, cap, "%s%s", same[k], r);
            return 1;
        }
    }
    const char *r = sdc_km_after(t, "nin_shortcut.");
    if (!sdc_km_is_wb(r)) return 0;
    snprintf(out, cap, "conv_shortcut.%s", r);
    return 1;
}

/* mid.attn_1 tail -> diffusers tail; *linear set for the 1x1 conv weights */
static int attn_tail(const char *t, char *out, size_t cap, int *linear) {
    static const char *const map[][2] = {
        {"norm.", "group_norm."}, {"q.", "to_q."}, {"k.", "to_k."}, {"v.", "to_v."}, {"proj_out.", "to_out.0."}};
    int k = sdc_km_map_param(t, map, sizeof map / sizeof map[0], out, cap);
    *linear = k > 0 && sdc_str_ends_with(out, ".weight");
    return k >= 0;
}

typedef struct {
    int dec;        /* 0 encoder, 1 decoder, -1 top level (quant convs) */
    int level;      /* down/up level as stored, -1 if none */
    int linear;     /* a 1x1 conv to reshape to [C, C] */
    char name[256]; /* diffusers name after "vae." with "%L" standing for the level */
} vae_key;

/* Parses a key (after the prefix). Returns 0 if it is no ldm VAE key. */
static int classify(const char *r, vae_key *v) {
    memset(v, 0, sizeof *v);
    v->level = -1;
    const char *q;
    static const char *const top[] = {"quant_conv.", "post_quant_conv.", NULL};
    for (int k = 0; top[k]; k++)
        if (sdc_km_is_wb(q = sdc_km_after(r, top[k]))) {
            v->dec = -1;
            snprintf(v->name, sizeof v->name, "%s%s", top[k], q);
            return 1;
        }
    const char *side;
    if ((q = sdc_km_after(r, "encoder."))) side = "encoder", v->dec = 0;
    else if ((q = sdc_km_after(r, "decoder."))) side = "decoder", v->dec = 1;
    else return 0;
    char tail[128];
    const char *t;
    if (sdc_km_is_wb(t = sdc_km_after(q, "conv_in.")) || sdc_km_is_wb(t = sdc_km_after(q, "conv_out."))) {
        snprintf(v->name, sizeof v->name, "%s.%s", side, q);
        return 1;
    }
    if (sdc_km_is_wb(t = sdc_km_after(q, "norm_out."))) {
        snprintf(v->name, sizeof v->name, "%s.conv_norm_out.%s", side, t);
        return 1;
    }
    if ((t = sdc_km_after(q, "mid.block_"))) {
        int b = sdc_km_index(&t);
        if ((b != 1 && b != 2) || !res_tail(t, tail, sizeof tail)) return 0;
        snprintf(v->name, sizeof v->name, "%s.mid_block.resnets.%d.%s", side, b - 1, tail);
        return 1;
    }
    if ((t = sdc_km_after(q, "mid.attn_1."))) {
        if (!attn_tail(t, tail, sizeof tail, &v->linear)) return 0;
        snprintf(v->name, sizeof v->name, "%s.mid_block.attentions.0.%s", side, tail);
        return 1;
    }
    const char *lv = v->dec ? "up." : "down.";
    if (!(t = sdc_km_after(q, lv))) return 0;
    if ((v->level = sdc_km_index(&t)) < 0 || v->level >= MAX_LEVELS) return 0;
    const char *blocks = v->dec ? "up_blocks" : "down_blocks";
    const char *u;
    if ((u = sdc_km_after(t, "block."))) {
        int j = sdc_km_index(&u);
        if (j < 0 || !res_tail(u, tail, sizeof tail)) return 0;
        snprintf(v->name, sizeof v->name, "%s.%s.%%L.resnets.%d.%s", side, blocks, j, tail);
        return 1;
    }
    u = sdc_km_after(t, v->dec ? "upsample.conv." : "downsample.conv.");
    if (!sdc_km_is_wb(u)) return 0;
    snprintf(v->name, sizeof v->name, "%s.%s.%%L.%s.0.conv.%s", side, blocks, v->dec ? "upsamplers" : "downsamplers", u);
    return 1;
}

sdc_status sdc_km_vae(sdc_keymap *km, const char *prefix, sdc_error *err) {
    const sdc_weights *w = km->src;
    unsigned char seen[2][MAX_LEVELS] = {{0}};
    int nlev[2] = {0, 0}, any = 0;
    vae_key v;
    for (size_t i = 0; i < w->count; i++) {
        const char *r = sdc_km_after(w->items[i].name, prefix);
        if (!r || km->state[i] != SDC_KM_FREE || !classify(r, &v)) continue;
        any = 1;
        if (v.level >= 0) {
            seen[v.dec][v.level] = 1;
            if (v.level + 1 > nlev[v.dec]) nlev[v.dec] = v.level + 1;
        }
    }
    if (!any) return SDC_OK;
    static const char *const side[2] = {"encoder.down", "decoder.up"};
    for (int d = 0; d < 2; d++)
        for (int l = 0; l < nlev[d]; l++)
            if (!seen[d][l])
                return sdc_fail(err, SDC_EFORMAT, "%s: VAE block \"%s%s.%d\" is missing (levels go up to %d)", km->path,
                                prefix, side[d], l, nlev[d] - 1);
    if (nlev[0] && nlev[1] && nlev[0] != nlev[1])
        return sdc_fail(err, SDC_EFORMAT, "%s: VAE encoder has %d levels but its decoder has %d", km->path, nlev[0],
                        nlev[1]);
    for (size_t i = 0; i < w->count; i++) {
        const char *r = sdc_km_after(w->items[i].name, prefix);
        if (!r || km->state[i] != SDC_KM_FREE || !classify(r, &v)) continue;
        /* "%L" -> the diffusers level: the same for the encoder, reversed for the decoder */
        char name[320];
        char *at = strstr(v.name, "%L");
        if (at) {
            int lvl = v.dec ? nlev[1] - 1 - v.level : v.level;
            snprintf(name, sizeof name, "vae.%.*s%d%s", (int)(at - v.name), v.name, lvl, at + 2);
        } else {
            snprintf(name, sizeof name, "vae.%s", v.name);
        }
        const sdc_weight *t = &w->items[i];
        if (!v.linear) {
            SDC_TRY(sdc_km_emit(km, i, name, err));
            continue;
        }
        /* [C, C, 1, 1] (or [C, C, 1], or already [C, C]) -> [C, C] */
        int ok = t->ndim >= 2;
        for (int d = 2; d < t->ndim; d++) ok = ok && t->shape[d] == 1;
        if (!ok) {
            char sb[96];
            return sdc_fail(err, SDC_EFORMAT,
                            "%s: tensor \"%s\" has shape %s; the VAE attention's q/k/v/proj_out must be a 1x1 "
                            "convolution [C, C, 1, 1] or a linear [C, C]",
                            km->path, t->name, sdc_km_shape(sb, sizeof sb, t));
        }
        SDC_TRY(sdc_km_emit_view(km, i, name, 2, t->shape, 0, t->nbytes, err));
    }
    return SDC_OK;
}
