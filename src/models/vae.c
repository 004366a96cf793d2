#include "models/vae.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/json.h"

sdc_status sdc_vae_config_parse(const cJSON *j, const char *what, sdc_vae_config *o, sdc_error *err) {
    memset(o, 0, sizeof *o);
    const char *cls = NULL;
    SDC_TRY(sdc_json_get_string(j, "_class_name", &cls, what, err));
    if (cls && strcmp(cls, "AutoencoderKL") != 0)
        return sdc_fail(err, SDC_EUNSUPPORTED, "%s: VAE class \"%s\" is not supported (only AutoencoderKL)", what, cls);
    o->in_channels = 3, o->out_channels = 3, o->latent_channels = 4, o->sample_size = 512;
    SDC_TRY(sdc_json_get_int(j, "in_channels", &o->in_channels, what, err));
    SDC_TRY(sdc_json_get_int(j, "out_channels", &o->out_channels, what, err));
    SDC_TRY(sdc_json_get_int(j, "latent_channels", &o->latent_channels, what, err));
    SDC_TRY(sdc_json_get_int(j, "sample_size", &o->sample_size, what, err));
    int count = 0;
    o->block_out_channels[0] = 64;
    SDC_TRY(sdc_json_get_int_list(j, "block_out_channels", o->block_out_channels, SDC_VAE_MAX_LEVELS, &count, what,
                                  err));
    o->levels = count ? count : 1;
    /* block types must all be the plain encoder/decoder blocks */
    const char *keys[2] = {"down_block_types", "up_block_types"};
    const char *want[2] = {"DownEncoderBlock2D", "UpDecoderBlock2D"};
    for (int k = 0; k < 2; k++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, keys[k]);
        if (!a) continue;
        if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != o->levels)
            return sdc_fail(err, SDC_EFORMAT, "%s: \"%s\" must list %d blocks", what, keys[k], o->levels);
        const cJSON *e;
        cJSON_ArrayForEach(e, a) {
            if (!cJSON_IsString(e) || strcmp(e->valuestring, want[k]) != 0)
                return sdc_fail(err, SDC_EUNSUPPORTED, "%s: \"%s\" may only hold %s", what, keys[k], want[k]);
        }
    }
    o->layers_per_block = 1;
    SDC_TRY(sdc_json_get_int(j, "layers_per_block", &o->layers_per_block, what, err));
    int64_t g = 32;
    SDC_TRY(sdc_json_get_int(j, "norm_num_groups", &g, what, err));
    o->norm_num_groups = (int)g;
    o->scaling_factor = 0.18215;
    SDC_TRY(sdc_json_get_double(j, "scaling_factor", &o->scaling_factor, what, err));
    SDC_TRY(sdc_json_get_double(j, "shift_factor", &o->shift_factor, what, err));
    o->use_quant_conv = o->use_post_quant_conv = o->mid_attention = 1;
    SDC_TRY(sdc_json_get_bool(j, "use_quant_conv", &o->use_quant_conv, what, err));
    SDC_TRY(sdc_json_get_bool(j, "use_post_quant_conv", &o->use_post_quant_conv, what, err));
    SDC_TRY(sdc_json_get_bool(j, "mid_block_add_attention", &o->mid_attention, what, err));
    SDC_TRY(sdc_json_get_bool(j, "force_upcast", &o->force_upcast, what, err));
    const char *act = NULL;
    SDC_TRY(sdc_json_get_string(j, "act_fn", &act, what, err));
    if (act && strcmp(act, "silu") != 0)
        return sdc_fail(err, SDC_EUNSUPPORTED, "%s: \"act_fn\": \"%s\" is not supported (only silu)", what, act);
    if (o->in_channels <= 0 || o->in_channels > 16 || o->out_channels <= 0 || o->out_channels > 16 ||
        o->latent_channels <= 0 || o->latent_channels > 64 || o->layers_per_block < 1 || o->layers_per_block > 16 ||
        o->norm_num_groups <= 0)
        return sdc_fail(err, SDC_EFORMAT, "%s: channel counts or layers_per_block out of range", what);
    for (int i = 0; i < o->levels; i++)
        if (o->block_out_channels[i] <= 0 || o->block_out_channels[i] % o->norm_num_groups != 0)
            return sdc_fail(err, SDC_EFORMAT, "%s: block_out_channels[%d] must be a positive multiple of %d", what, i,
                            o->norm_num_groups);
    if (!(o->scaling_factor > 0)) return sdc_fail(err, SDC_EFORMAT, "%s: scaling_factor must be positive", what);
    return SDC_OK;
}

int sdc_vae_scale(const sdc_vae_config *cfg) { return 1 << (cfg->levels - 1); }

static void mid_declare(sdc_params *p, sdc_vae_mid *m, int64_t ch, int G, int attn, const char *pfx) {
    char name[256];
    sdc_resnet_declare(p, &m->res[0], ch, ch, 0, G, 1e-6f, 1.0f, sdc_pname(name, sizeof name, "%s.resnets.0", pfx));
    m->has_attn = attn;
    if (attn) {
        sdc_group_norm_declare(p, &m->attn_norm, G, ch, 1e-6f,
                               sdc_pname(name, sizeof name, "%s.attentions.0.group_norm", pfx));
        /* one head as wide as the channels (attention_head_dim = channels) */
        sdc_attention_declare(p, &m->attn, ch, ch, 1, ch, 1, sdc_pname(name, sizeof name, "%s.attentions.0", pfx));
    }
    sdc_resnet_declare(p, &m->res[1], ch, ch, 0, G, 1e-6f, 1.0f, sdc_pname(name, sizeof name, "%s.resnets.1", pfx));
}

static sdc_tensor mid_forward(sdc_ctx *c, const sdc_vae_mid *m, const sdc_tensor *x) {
    sdc_tensor out = sdc_ctx_alloc(c, 4, x->shape);
    size_t mark = sdc_arena_mark(c->arena);
    sdc_tensor h = sdc_resnet_forward(c, NULL, &m->res[0], x, NULL);
    if (m->has_attn) {
        /* residual + to_out(attn(group_norm(h) as tokens)) */
        sdc_tensor n = sdc_group_norm_forward(c, NULL, &m->attn_norm, &h, SDC_ACT_NONE);
        sdc_tensor t = sdc_op_to_tokens(c, NULL, &n);
        sdc_tensor a = sdc_attention_forward(c, NULL, &m->attn, &t, NULL);
        sdc_tensor s = sdc_op_from_tokens(c, NULL, &a, h.shape[2], h.shape[3]);
        h = sdc_op_add(c, NULL, &h, &s);
    }
    sdc_resnet_forward(c, &out, &m->res[1], &h, NULL);
    sdc_ctx_release(c, mark);
    return out;
}

static sdc_status level_alloc(sdc_vae_level *l, int nres, sdc_error *err) {
    l->nres = nres;
    l->resnets = calloc((size_t)nres, sizeof *l->resnets);
    if (!l->resnets) return sdc_fail(err, SDC_ENOMEM, "vae: out of memory");
    return SDC_OK;
}

sdc_status sdc_vae_build(sdc_vae *v, const sdc_vae_config *cfg, const char *component, sdc_error *err) {
    memset(v, 0, sizeof *v);
    v->cfg = *cfg;
    SDC_TRY(sdc_params_init(&v->params, component, err));
    sdc_params *p = &v->params;
    const int L = cfg->levels, G = cfg->norm_num_groups;
    const int64_t *boc = cfg->block_out_channels, Z = cfg->latent_channels;
    char name[256];

    /* encoder */
    sdc_conv2d_declare(p, &v->enc_conv_in, cfg->in_channels, boc[0], 3, 1, 1, "encoder.conv_in");
    int64_t out_ch = boc[0];
    for (int i = 0; i < L; i++) {
        int64_t in_ch = out_ch;
        out_ch = boc[i];
        sdc_vae_level *l = &v->enc[i];
        SDC_TRY(level_alloc(l, (int)cfg->layers_per_block, err));
        for (int j = 0; j < l->nres; j++)
            sdc_resnet_declare(p, &l->resnets[j], j == 0 ? in_ch : out_ch, out_ch, 0, G, 1e-6f, 1.0f,
                               sdc_pname(name, sizeof name, "encoder.down_blocks.%d.resnets.%d", i, j));
        l->has_sampler = i < L - 1;
        if (l->has_sampler)
            sdc_conv2d_declare(p, &l->sampler, out_ch, out_ch, 3, 2, 0,
                               sdc_pname(name, sizeof name, "encoder.down_blocks.%d.downsamplers.0.conv", i));
    }
    mid_declare(p, &v->enc_mid, boc[L - 1], G, cfg->mid_attention, "encoder.mid_block");
    sdc_group_norm_declare(p, &v->enc_norm_out, G, boc[L - 1], 1e-6f, "encoder.conv_norm_out");
    sdc_conv2d_declare(p, &v->enc_conv_out, boc[L - 1], 2 * Z, 3, 1, 1, "encoder.conv_out");
    if (cfg->use_quant_conv) sdc_conv2d_declare(p, &v->quant_conv, 2 * Z, 2 * Z, 1, 1, 0, "quant_conv");

    /* decoder */
    if (cfg->use_post_quant_conv) sdc_conv2d_declare(p, &v->post_quant_conv, Z, Z, 1, 1, 0, "post_quant_conv");
    sdc_conv2d_declare(p, &v->dec_conv_in, Z, boc[L - 1], 3, 1, 1, "decoder.conv_in");
    mid_declare(p, &v->dec_mid, boc[L - 1], G, cfg->mid_attention, "decoder.mid_block");
    out_ch = boc[L - 1];
    for (int i = 0; i < L; i++) {
        int64_t prev = out_ch;
        out_ch = boc[L - 1 - i];
        sdc_vae_level *l = &v->dec[i];
        SDC_TRY(level_alloc(l, (int)cfg->layers_per_block + 1, err));
        for (int j = 0; j < l->nres; j++)
            sdc_resnet_declare(p, &l->resnets[j], j == 0 ? prev : out_ch, out_ch, 0, G, 1e-6f, 1.0f,
                               sdc_pname(name, sizeof name, "decoder.up_blocks.%d.resnets.%d", i, j));
        l->has_sampler = i < L - 1;
        if (l->has_sampler)
            sdc_conv2d_declare(p, &l->sampler, out_ch, out_ch, 3, 1, 1,
                               sdc_pname(name, sizeof name, "decoder.up_blocks.%d.upsamplers.0.conv", i));
    }
    sdc_group_norm_declare(p, &v->dec_norm_out, G, boc[0], 1e-6f, "decoder.conv_norm_out");
    sdc_conv2d_declare(p, &v->dec_conv_out, boc[0], cfg->out_channels, 3, 1, 1, "decoder.conv_out");
    return sdc_params_alloc(p, err);
}

void sdc_vae_free(sdc_vae *v) {
    for (int i = 0; i < SDC_VAE_MAX_LEVELS; i++) {
        free(v->enc[i].resnets);
        free(v->dec[i].resnets);
    }
    sdc_params_free(&v->params);
    memset(v, 0, sizeof *v);
}

sdc_status sdc_vae_load(sdc_vae *v, const sdc_weights *w, sdc_error *err) {
    char key[300];
    snprintf(key, sizeof key, "%s.encoder.mid_block.attentions.0.query.weight", v->params.component);
    if (!sdc_weights_find(w, key)) return sdc_params_load(&v->params, w, NULL, NULL, err);
    /* Old attention names: alias them in a copy of the index. */
    sdc_weights alias;
    sdc_weights_init(&alias);
    static const char *const from[] = {"query", "key", "value", "proj_attn"};
    static const char *const to[] = {"to_q", "to_k", "to_v", "to_out.0"};
    sdc_status st = SDC_OK;
    for (size_t i = 0; i < w->count && st == SDC_OK; i++) {
        const sdc_weight *t = &w->items[i];
        char name[600];
        snprintf(name, sizeof name, "%s", t->name);
        for (int k = 0; k < 4; k++) {
            char pat[32];
            snprintf(pat, sizeof pat, ".attentions.0.%s.", from[k]);
            char *at = strstr(name, pat);
            if (at) {
                char tail[600];
                snprintf(tail, sizeof tail, "%s", at + strlen(pat));
                snprintf(at, sizeof name - (size_t)(at - name), ".attentions.0.%s.%s", to[k], tail);
                break;
            }
        }
        st = sdc_weights_add(&alias, name, t->src_name, t->dtype, t->ndim, t->shape, t->data, t->nbytes, -1,
                             "VAE", err);
    }
    if (st == SDC_OK) st = sdc_params_load(&v->params, &alias, NULL, NULL, err);
    sdc_weights_free(&alias);
    return st;
}

static sdc_tensor level_forward(sdc_ctx *c, const sdc_vae_level *l, const sdc_tensor *x, int down) {
    int64_t B = x->shape[0], H = x->shape[2], W = x->shape[3];
    int64_t C = l->resnets[l->nres - 1].conv2.out;
    if (l->has_sampler) {
        H = down ? H / 2 : 2 * H;
        W = down ? W / 2 : 2 * W;
    }
    sdc_tensor out = sdc_ctx_new(c, B, C, H, W);
    size_t mark = sdc_arena_mark(c->arena);
    sdc_tensor h = *x;
    for (int j = 0; j < l->nres; j++) h = sdc_resnet_forward(c, NULL, &l->resnets[j], &h, NULL);
    if (!l->has_sampler) {
        sdc_op_axpby(c, &out, 1.0f, &h, 0.0f, NULL);
    } else if (down) {
        /* Downsample2D(padding=0): pad right and bottom by one, conv stride 2 */
        sdc_tensor pd = sdc_op_pad2d(c, NULL, &h, 0, 1, 0, 1);
        sdc_conv2d_forward(c, &out, &l->sampler, &pd);
    } else {
        sdc_tensor up = sdc_op_upsample2x(c, NULL, &h);
        sdc_conv2d_forward(c, &out, &l->sampler, &up);
    }
    sdc_ctx_release(c, mark);
    return out;
}

void sdc_vae_encode_unclamped(sdc_ctx *c, const sdc_vae *v, const sdc_tensor *image, sdc_tensor *mean,
                              sdc_tensor *logvar) {
    const sdc_vae_config *cfg = &v->cfg;
    int64_t B = image->shape[0], s = sdc_vae_scale(cfg), Z = cfg->latent_channels;
    int64_t h = image->shape[2] / s, w = image->shape[3] / s;
    *mean = sdc_ctx_new(c, B, Z, h, w);
    *logvar = sdc_ctx_new(c, B, Z, h, w);
    size_t mark = sdc_arena_mark(c->arena);
    sdc_tensor x = sdc_conv2d_forward(c, NULL, &v->enc_conv_in, image);
    for (int i = 0; i < cfg->levels; i++) x = level_forward(c, &v->enc[i], &x, 1);
    x = mid_forward(c, &v->enc_mid, &x);
    x = sdc_group_norm_forward(c, NULL, &v->enc_norm_out, &x, SDC_ACT_SILU);
    x = sdc_conv2d_forward(c, NULL, &v->enc_conv_out, &x);
    if (cfg->use_quant_conv) x = sdc_conv2d_forward(c, NULL, &v->quant_conv, &x);
    sdc_op_slice1(c, mean, &x, 0, Z);
    sdc_op_slice1(c, logvar, &x, Z, Z);
    sdc_ctx_release(c, mark);
}

void sdc_vae_encode(sdc_ctx *c, const sdc_vae *v, const sdc_tensor *image, sdc_tensor *mean, sdc_tensor *logvar) {
    sdc_vae_encode_unclamped(c, v, image, mean, logvar);
    /* clamp(logvar, −30, 20), on the host: the tensor is small */
    size_t n = (size_t)sdc_tensor_numel(logvar);
    float *buf = malloc(n * sizeof *buf);
    SDC_ASSERT(buf);
    sdc_op_download(c, buf, logvar);
    for (size_t i = 0; i < n; i++) buf[i] = buf[i] < -30.0f ? -30.0f : buf[i] > 20.0f ? 20.0f : buf[i];
    sdc_op_upload(c, logvar, logvar->ndim, logvar->shape, buf);
    free(buf);
}

sdc_tensor sdc_vae_decode(sdc_ctx *c, sdc_tensor *into, const sdc_vae *v, const sdc_tensor *z) {
    const sdc_vae_config *cfg = &v->cfg;
    int64_t B = z->shape[0], s = sdc_vae_scale(cfg);
    sdc_tensor out = into ? *into : sdc_ctx_new(c, B, cfg->out_channels, z->shape[2] * s, z->shape[3] * s);
    size_t mark = sdc_arena_mark(c->arena);
    sdc_tensor x = *z;
    if (cfg->use_post_quant_conv) x = sdc_conv2d_forward(c, NULL, &v->post_quant_conv, &x);
    x = sdc_conv2d_forward(c, NULL, &v->dec_conv_in, &x);
    x = mid_forward(c, &v->dec_mid, &x);
    for (int i = 0; i < cfg->levels; i++) x = level_forward(c, &v->dec[i], &x, 0);
    x = sdc_group_norm_forward(c, NULL, &v->dec_norm_out, &x, SDC_ACT_SILU);
    sdc_conv2d_forward(c, &out, &v->dec_conv_out, &x);
    sdc_ctx_release(c, mark);
    return out;
}
