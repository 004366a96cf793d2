#include "io/single_file_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

sdc_status sdc_single_file_write_sd1(const char *path, const sdc_params *unet, const sdc_params *vae, int vae_levels,
                                     const sdc_params *text_encoder, sdc_dtype dtype, sdc_error *err) {
    sdc_unet_layout u;
    if (!sdc_unet_layout_read(unet, &u)) return sdc_fail(err, SDC_EINVAL, "%s: not a diffusers UNet", unet->component);
    const sdc_params *sets[3] = {unet, vae, text_encoder};
    size_t n = unet->count + vae->count + text_encoder->count;
    sdc_st_tensor *ts = calloc(n, sizeof *ts);
    char **names = calloc(n, sizeof *names);
    int64_t (*shapes)[SDC_MAX_DIMS] = calloc(n, sizeof *shapes);
    void **bufs = calloc(n, sizeof *bufs);
    sdc_status st = ts && names && shapes && bufs ? SDC_OK : sdc_fail(err, SDC_ENOMEM, "out of memory");
    size_t k = 0;
    for (int set = 0; st == SDC_OK && set < 3; set++) {
        const sdc_params *p = sets[set];
        for (size_t i = 0; st == SDC_OK && i < p->count; i++, k++) {
            const sdc_param *it = &p->items[i];
            char local[512], full[600];
            int conv1x1 = 0, ok;
            if (set == 0) ok = sdc_unet_sgm_name(&u, it->name, local, sizeof local);
            else if (set == 1) ok = sdc_vae_ldm_name(it->name, vae_levels, local, sizeof local, &conv1x1);
            else ok = snprintf(local, sizeof local, "%s", it->name) > 0;
            if (!ok) {
                st = sdc_fail(err, SDC_EUNSUPPORTED, "%s: no single-file name for %s", p->component, it->name);
                break;
            }
            static const char *const prefix[3] = {"model.diffusion_model.", "first_stage_model.",
                                                  "cond_stage_model.transformer."};
            snprintf(full, sizeof full, "%s%s", prefix[set], local);
            names[k] = malloc(strlen(full) + 1);
            size_t bytes = (size_t)it->numel * sdc_dtype_size(dtype);
            bufs[k] = malloc(bytes ? bytes : 1);
            if (!names[k] || !bufs[k]) {
                st = sdc_fail(err, SDC_ENOMEM, "out of memory");
                break;
            }
            strcpy(names[k], full);
            int nd = it->slot->ndim;
            for (int d = 0; d < nd; d++) shapes[k][d] = it->slot->shape[d];
            if (conv1x1) shapes[k][2] = shapes[k][3] = 1, nd = 4; /* ldm's mid attention is 1×1 convs */
            if (sdc_convert_from_f32(bufs[k], dtype, it->slot->data, (size_t)it->numel) != 0) {
                st = sdc_fail(err, SDC_EINVAL, "cannot store %s as %s", full, sdc_dtype_name(dtype));
                break;
            }
            ts[k] = (sdc_st_tensor){names[k], dtype, nd, shapes[k], bufs[k]};
        }
    }
    if (st == SDC_OK) st = sdc_safetensors_write(path, ts, n, NULL, 0, err);
    for (size_t i = 0; i < n && names; i++) free(names[i]);
    for (size_t i = 0; i < n && bufs; i++) free(bufs[i]);
    free(names), free(bufs), free(shapes), free(ts);
    return st;
}
