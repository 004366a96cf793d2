/* The UNet of a CompVis / Stability checkpoint ("model.diffusion_model.*",
 * ldm's openaimodel.UNetModel) -> diffusers' UNet2DConditionModel names.
 *
 * ldm keeps the UNet as three flat lists of blocks; each block is a
 * sequence whose sub-module 0 is a ResBlock (or a Downsample "op"), 1 a
 * SpatialTransformer (if the level has attention), and the last an Upsample:
 *
 *   input_blocks.0.0              conv_in
 *   input_blocks.n.0 / .1         down level L, resnet / attention j      (R per level)
 *   input_blocks.n.0.op           down level L's downsampler              (all but the last level)
 *   middle_block.0 / .1 / .2      mid resnet 0, attention 0, resnet 1
 *   output_blocks.k.0 / .1        up level k/(R+1), resnet / attention k%(R+1)
 *   output_blocks.k.{1|2}.conv    the level's upsampler, after the attention if there is one
 *   time_embed.0/.2, out.0/.2     time_embedding.linear_1/2, conv_norm_out/conv_out
 *   label_emb.0.0/.0.2            add_embedding.linear_1/2 (SDXL)
 *
 * The number of levels, resnets per level (R) and the attention placement
 * are read from the keys present, not assumed: down blocks are walked in
 * order, a downsampler closing each level. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/keymap.h"

#define MAX_BLOCKS 1000

/* ldm ResBlock -> diffusers ResnetBlock2D */
static const char *const RES_MAP[][2] = {
    {"in_layers.0.", "norm1."},  {"in_layers.2.", "conv1."},         {"out_layers.0.", "norm2."},
    {"out_layers.3.", "conv2."}, {"emb_layers.1.", "time_emb_proj."}, {"skip_connection.", "conv_shortcut."},
};

/* "in_layers.0.weight" -> "norm1.weight" into out; 0 if tail is no ResBlock parameter. */
static int res_tail(const char *tail, char *out, size_t cap) {
    return sdc_km_map_param(tail, RES_MAP, sizeof RES_MAP / sizeof RES_MAP[0], out, cap) >= 0;
}

/* ldm's SpatialTransformer already uses diffusers' Transformer2DModel names;
 * only the block prefix changes. The tail is checked against the parameter
 * list so that a foreign key is reported, not renamed into the model. */
static int attn_tail(const char *tail) {
    static const char *const top[] = {"norm.weight",    "norm.bias",     "proj_in.weight", "proj_in.bias",
                                      "proj_out.weight", "proj_out.bias", NULL};
    static const char *const blk[] = {
        "attn1.to_q.weight", "attn1.to_k.weight", "attn1.to_v.weight", "attn1.to_out.0.weight", "attn1.to_out.0.bias",
        "attn2.to_q.weight", "attn2.to_k.weight", "attn2.to_v.weight", "attn2.to_out.0.weight", "attn2.to_out.0.bias",
        "ff.net.0.proj.weight", "ff.net.0.proj.bias", "ff.net.2.weight", "ff.net.2.bias",
        "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "norm3.weight", "norm3.bias", NULL};
    if (sdc_km_one_of(tail, top)) return 1;
    const char *r = sdc_km_after(tail, "transformer_blocks.");
    if (!r || sdc_km_index(&r) < 0) return 0;
    return sdc_km_one_of(r, blk);
}

typedef enum {
    K_NONE = 0,
    K_TOP,      /* time_embed, out, label_emb, conv_in: fixed names */
    K_IN_RES,
    K_IN_OP,
    K_IN_ATTN,
    K_MID_RES,
    K_MID_ATTN,
    K_OUT_RES,
    K_OUT_ATTN,
    K_OUT_UP,
} kind;

typedef struct {
    kind k;
    int n, m;         /* block index, sub-module index */
    char tail[256];   /* diffusers tail ("norm1.weight") or, for K_TOP, the full diffusers name */
} key_info;

/* Parses a key (after the prefix) into its block and diffusers tail. */
static void classify(const char *r, int sdxl, key_info *ki) {
    memset(ki, 0, sizeof *ki);
    static const char *const top[][2] = {
        {"time_embed.0.", "time_embedding.linear_1."}, {"time_embed.2.", "time_embedding.linear_2."},
        {"out.0.", "conv_norm_out."},                  {"out.2.", "conv_out."},
        {"input_blocks.0.0.", "conv_in."},
    };
    for (size_t t = 0; t < sizeof top / sizeof top[0]; t++) {
        const char *q = sdc_km_after(r, top[t][0]);
        if (sdc_km_is_wb(q)) {
            ki->k = K_TOP;
            snprintf(ki->tail, sizeof ki->tail, "%s%s", top[t][1], q);
            return;
        }
    }
    /* label_emb: SDXL's added (pooled text + size) conditioning. Other
     * label_emb layouts (class-conditional upscalers, unCLIP) are left
     * unknown: sdc has no model for them. */
    static const char *const lab[][2] = {{"label_emb.0.0.", "add_embedding.linear_1."},
                                         {"label_emb.0.2.", "add_embedding.linear_2."}};
    for (size_t t = 0; sdxl && t < 2; t++) {
        const char *q = sdc_km_after(r, lab[t][0]);
        if (sdc_km_is_wb(q)) {
            ki->k = K_TOP;
            snprintf(ki->tail, sizeof ki->tail, "%s%s", lab[t][1], q);
            return;
        }
    }
    const char *q;
    int which = (q = sdc_km_after(r, "input_blocks.")) ? 0 : (q = sdc_km_after(r, "middle_block.")) ? 1
                                                         : (q = sdc_km_after(r, "output_blocks.")) ? 2 : -1;
    if (which < 0) return;
    int n = 0, m;
    if (which != 1 && ((n = sdc_km_index(&q)) < 0 || n >= MAX_BLOCKS)) return;
    if ((m = sdc_km_index(&q)) < 0 || (which == 1 && m >= MAX_BLOCKS)) return;
    ki->n = which == 1 ? m : n;
    ki->m = m;
    int res = res_tail(q, ki->tail, sizeof ki->tail);
    int attn = !res && attn_tail(q);
    if (attn) snprintf(ki->tail, sizeof ki->tail, "%s", q);
    const char *conv = sdc_km_after(q, "conv.");
    const char *op = sdc_km_after(q, "op.");
    if (which == 0) {
        if (n == 0) return; /* conv_in is K_TOP; anything else there is foreign */
        if (m == 0 && sdc_km_is_wb(op)) {
            ki->k = K_IN_OP;
            snprintf(ki->tail, sizeof ki->tail, "%s", op);
        } else if (m == 0 && res) {
            ki->k = K_IN_RES;
        } else if (m == 1 && attn) {
            ki->k = K_IN_ATTN;
        }
    } else if (which == 1) {
        ki->k = res ? K_MID_RES : attn ? K_MID_ATTN : K_NONE;
    } else {
        if (m == 0 && res) {
            ki->k = K_OUT_RES;
        } else if ((m == 1 || m == 2) && sdc_km_is_wb(conv)) {
            ki->k = K_OUT_UP;
            snprintf(ki->tail, sizeof ki->tail, "%s", conv);
        } else if (m == 1 && attn) {
            ki->k = K_OUT_ATTN;
        }
    }
}

typedef struct {
    unsigned char res, attn, op, up; /* up: sub-module index of the upsampler (1 or 2), 0 if none */
    int level, layer;
} blk;

typedef struct {
    blk in[MAX_BLOCKS], out[MAX_BLOCKS], mid[MAX_BLOCKS];
    int nin, nout, nmid;
    int conv_in;
} unet_layout;

/* Reads the block structure; checks that it is a complete, regular UNet. */
static sdc_status layout(sdc_keymap *km, const char *prefix, unet_layout *u, sdc_error *err) {
    const char *path = km->path;
    if (u->nin == 0 || !u->conv_in)
        return sdc_fail(err, SDC_EFORMAT, "%s: UNet without \"%sinput_blocks.0.0.weight\" (conv_in)", path, prefix);
    /* down: walk the blocks in order; a downsampler closes a level */
    int level = 0, layer = 0, R = -1;
    int attn_layers = 0;
    for (int n = 1; n < u->nin; n++) {
        blk *b = &u->in[n];
        if (!b->res && !b->op)
            return sdc_fail(err, SDC_EFORMAT, "%s: UNet block \"%sinput_blocks.%d\" is missing (the input blocks go up to %d)",
                            path, prefix, n, u->nin - 1);
        if (b->op && (b->res || b->attn))
            return sdc_fail(err, SDC_EFORMAT, "%s: UNet block \"%sinput_blocks.%d\" holds both a downsampler and a resnet",
                            path, prefix, n);
        b->level = level;
        if (b->res) {
            b->layer = layer++;
            attn_layers += b->attn;
        }
        if (b->op || n == u->nin - 1) {
            /* the level is complete: every level has R resnets, with attention in all or none */
            if (layer == 0)
                return sdc_fail(err, SDC_EFORMAT, "%s: UNet level %d has no resnet before \"%sinput_blocks.%d\"", path,
                                level, prefix, n);
            if (R < 0) R = layer;
            if (layer != R)
                return sdc_fail(err, SDC_EFORMAT,
                                "%s: UNet level %d has %d resnet blocks but level 0 has %d (a block is missing before "
                                "\"%sinput_blocks.%d\", or this is not a Stable Diffusion UNet)",
                                path, level, layer, R, prefix, n);
            if (attn_layers != 0 && attn_layers != R)
                return sdc_fail(err, SDC_EFORMAT, "%s: UNet level %d has attention in %d of its %d blocks (up to \"%sinput_blocks.%d\")",
                                path, level, attn_layers, R, prefix, n);
            if (b->op && n == u->nin - 1)
                return sdc_fail(err, SDC_EFORMAT, "%s: UNet ends with a downsampler (\"%sinput_blocks.%d\") and no level after it",
                                path, prefix, n);
            if (b->op) level++;
            layer = 0;
            attn_layers = 0;
        }
    }
    if (R < 0) return sdc_fail(err, SDC_EFORMAT, "%s: UNet has no \"%sinput_blocks.1\"", path, prefix);
    int L = level + 1;
    /* up: L levels of R+1 blocks each */
    if (u->nout != L * (R + 1))
        return sdc_fail(err, SDC_EFORMAT,
                        "%s: UNet has %d output blocks (\"%soutput_blocks.*\"), expected %d for %d levels of %d resnets",
                        path, u->nout, prefix, L * (R + 1), L, R);
    for (int k = 0; k < u->nout; k++) {
        blk *b = &u->out[k];
        int i = k / (R + 1), j = k % (R + 1);
        b->level = i;
        b->layer = j;
        if (!b->res)
            return sdc_fail(err, SDC_EFORMAT, "%s: UNet block \"%soutput_blocks.%d\" is missing its resnet", path, prefix, k);
        int want_up = j == R && i < L - 1;
        if (want_up && !b->up)
            return sdc_fail(err, SDC_EFORMAT, "%s: UNet block \"%soutput_blocks.%d\" lacks the upsampler of up level %d",
                            path, prefix, k, i);
        if (!want_up && b->up)
            return sdc_fail(err, SDC_EFORMAT, "%s: UNet block \"%soutput_blocks.%d\" has an upsampler where none belongs",
                            path, prefix, k);
        if (b->up == 2 && !b->attn)
            return sdc_fail(err, SDC_EFORMAT, "%s: UNet block \"%soutput_blocks.%d\" has its upsampler at .2 but no attention at .1",
                            path, prefix, k);
        if (b->up == 1 && b->attn)
            return sdc_fail(err, SDC_EFORMAT, "%s: UNet block \"%soutput_blocks.%d\" mixes an attention and an upsampler at .1",
                            path, prefix, k);
        if (j == R) {
            int a = 0;
            for (int t = k - R; t <= k; t++) a += u->out[t].attn;
            if (a != 0 && a != R + 1)
                return sdc_fail(err, SDC_EFORMAT, "%s: UNet up level %d has attention in %d of its %d blocks (up to \"%soutput_blocks.%d\")",
                                path, i, a, R + 1, prefix, k);
        }
    }
    for (int m = 0; m < u->nmid; m++)
        if (!u->mid[m].res && !u->mid[m].attn)
            return sdc_fail(err, SDC_EFORMAT, "%s: UNet block \"%smiddle_block.%d\" is missing", path, prefix, m);
    /* mid: resnets and attentions numbered separately, in order */
    int nr = 0, na = 0;
    for (int m = 0; m < u->nmid; m++) u->mid[m].layer = u->mid[m].res ? nr++ : na++;
    return SDC_OK;
}

sdc_status sdc_km_unet(sdc_keymap *km, const char *prefix, sdc_error *err) {
    const sdc_weights *w = km->src;
    int sdxl = km->family == SDC_FAMILY_SDXL;
    unet_layout *u = calloc(1, sizeof *u);
    if (!u) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", km->path);
    key_info ki;
    int any = 0;
    for (size_t i = 0; i < w->count; i++) {
        const char *r = sdc_km_after(w->items[i].name, prefix);
        if (!r || km->state[i] != SDC_KM_FREE) continue;
        classify(r, sdxl, &ki);
        if (ki.k == K_NONE) continue;
        any = 1;
        blk *b = NULL;
        switch (ki.k) {
        case K_TOP:
            if (strncmp(ki.tail, "conv_in.", 8) == 0) {
                u->conv_in = 1;
                if (u->nin == 0) u->nin = 1;
            }
            break;
        case K_IN_RES: case K_IN_OP: case K_IN_ATTN:
            b = &u->in[ki.n];
            if (ki.n + 1 > u->nin) u->nin = ki.n + 1;
            break;
        case K_MID_RES: case K_MID_ATTN:
            b = &u->mid[ki.n];
            if (ki.n + 1 > u->nmid) u->nmid = ki.n + 1;
            break;
        default:
            b = &u->out[ki.n];
            if (ki.n + 1 > u->nout) u->nout = ki.n + 1;
            break;
        }
        if (!b) continue;
        if (ki.k == K_IN_RES || ki.k == K_MID_RES || ki.k == K_OUT_RES) b->res = 1;
        if (ki.k == K_IN_ATTN || ki.k == K_MID_ATTN || ki.k == K_OUT_ATTN) b->attn = 1;
        if (ki.k == K_IN_OP) b->op = 1;
        if (ki.k == K_OUT_UP) b->up = (unsigned char)ki.m;
    }
    sdc_status s = SDC_OK;
    if (!any) goto done; /* no UNet in this file */
    if ((s = layout(km, prefix, u, err)) != SDC_OK) goto done;
    for (size_t i = 0; i < w->count && s == SDC_OK; i++) {
        const char *r = sdc_km_after(w->items[i].name, prefix);
        if (!r || km->state[i] != SDC_KM_FREE) continue;
        classify(r, sdxl, &ki);
        char name[512];
        const blk *b;
        int len = 0;
        switch (ki.k) {
        case K_NONE: continue;
        case K_TOP: len = snprintf(name, sizeof name, "unet.%s", ki.tail); break;
        case K_IN_RES:
            b = &u->in[ki.n];
            len = snprintf(name, sizeof name, "unet.down_blocks.%d.resnets.%d.%s", b->level, b->layer, ki.tail);
            break;
        case K_IN_ATTN:
            b = &u->in[ki.n];
            len = snprintf(name, sizeof name, "unet.down_blocks.%d.attentions.%d.%s", b->level, b->layer, ki.tail);
            break;
        case K_IN_OP:
            len = snprintf(name, sizeof name, "unet.down_blocks.%d.downsamplers.0.conv.%s", u->in[ki.n].level, ki.tail);
            break;
        case K_MID_RES:
            len = snprintf(name, sizeof name, "unet.mid_block.resnets.%d.%s", u->mid[ki.n].layer, ki.tail);
            break;
        case K_MID_ATTN:
            len = snprintf(name, sizeof name, "unet.mid_block.attentions.%d.%s", u->mid[ki.n].layer, ki.tail);
            break;
        case K_OUT_RES:
            b = &u->out[ki.n];
            len = snprintf(name, sizeof name, "unet.up_blocks.%d.resnets.%d.%s", b->level, b->layer, ki.tail);
            break;
        case K_OUT_ATTN:
            b = &u->out[ki.n];
            len = snprintf(name, sizeof name, "unet.up_blocks.%d.attentions.%d.%s", b->level, b->layer, ki.tail);
            break;
        case K_OUT_UP:
            len = snprintf(name, sizeof name, "unet.up_blocks.%d.upsamplers.0.conv.%s", u->out[ki.n].level, ki.tail);
            break;
        }
        SDC_ASSERT(len > 0 && (size_t)len < sizeof name); /* tails are from fixed lists */
        s = sdc_km_emit(km, i, name, err);
    }
done:
    free(u);
    return s;
}
