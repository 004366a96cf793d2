#include "models/unet.h"

#include "backend/tape.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sdc_timestep_embedding(const double *t, int64_t n, int64_t dim, int flip_sin_to_cos, double shift, float *out) {
    int64_t half = dim / 2;
    for (int64_t b = 0; b < n; b++) {
        float *o = out + b * dim;
        for (int64_t i = 0; i < half; i++) {
            /* diffusers computes the frequencies and the product in fp32; the
             * goldens in fp64. fp64 here matches both to ~1e-7. */
            double f = exp(-log(10000.0) * (double)i / ((double)half - shift));
            double a = t[b] * f;
            float s = (float)sin(a), co = (float)cos(a);
            o[i] = flip_sin_to_cos ? co : s;
            o[half + i] = flip_sin_to_cos ? s : co;
        }
        if (dim % 2) o[dim - 1] = 0.0f;
    }
}

static sdc_status level_alloc(sdc_unet_level *l, int nres, int attn, const int64_t layers, sdc_error *err) {
    l->nres = nres;
    l->attn = attn;
    l->resnets = calloc((size_t)nres, sizeof *l->resnets);
    if (attn) {
        l->attns = calloc((size_t)nres, sizeof *l->attns);
        l->blocks = calloc((size_t)(nres * layers), sizeof *l->blocks);
    }
    if (!l->resnets || (attn && (!l->attns || !l->blocks))) return sdc_fail(err, SDC_ENOMEM, "unet: out of memory");
    return SDC_OK;
}

static sdc_transformer2d_config tcfg(const sdc_unet_config *cfg, int64_t ch, int64_t heads, int64_t layers,
                                     int only_cross) {
    sdc_transformer2d_config t = {
        .in_channels = ch,
        .heads = (int)heads,
        .dim_head = ch / heads,
        .layers = (int)layers,
        .cross_attention_dim = cfg->cross_attention_dim,
        .groups = cfg->norm_num_groups,
        .use_linear_projection = cfg->use_linear_projection,
        .only_cross_attention = only_cross,
        .upcast_attention = cfg->upcast_attention,
    };
    return t;
}

sdc_status sdc_unet_build(sdc_unet *u, const sdc_unet_config *cfg, const char *component, sdc_error *err) {
    memset(u, 0, sizeof *u);
    u->cfg = *cfg;
    SDC_TRY(sdc_params_init(&u->params, component, err));
    sdc_params *p = &u->params;
    const int L = cfg->levels, G = cfg->norm_num_groups;
    const float eps = (float)cfg->norm_eps;
    const int64_t *boc = cfg->block_out_channels, T = cfg->time_embed_dim;
    char name[256];

    sdc_conv2d_declare(p, &u->conv_in, cfg->in_channels, boc[0], 3, 1, 1, "conv_in");
    sdc_linear_declare(p, &u->time_linear_1, boc[0], T, 1, "time_embedding.linear_1");
    sdc_linear_declare(p, &u->time_linear_2, T, T, 1, "time_embedding.linear_2");
    if (cfg->text_time) {
        sdc_linear_declare(p, &u->add_linear_1, cfg->projection_class_embeddings_input_dim, T, 1,
                           "add_embedding.linear_1");
        sdc_linear_declare(p, &u->add_linear_2, T, T, 1, "add_embedding.linear_2");
    }

    int64_t out_ch = boc[0];
    for (int i = 0; i < L; i++) {
        int64_t in_ch = out_ch;
        out_ch = boc[i];
        sdc_unet_level *l = &u->down[i];
        int nres = (int)cfg->layers_per_block[i];
        SDC_TRY(level_alloc(l, nres, cfg->down_attn[i], cfg->transformer_layers[i], err));
        for (int j = 0; j < nres; j++) {
            sdc_pname(name, sizeof name, "down_blocks.%d.resnets.%d", i, j);
            sdc_resnet_declare(p, &l->resnets[j], j == 0 ? in_ch : out_ch, out_ch, T, G, eps, 1.0f, name);
            if (l->attn) {
                sdc_pname(name, sizeof name, "down_blocks.%d.attentions.%d", i, j);
                sdc_transformer2d_config tc = tcfg(cfg, out_ch, cfg->heads[i], cfg->transformer_layers[i],
                                                   cfg->only_cross_attention[i]);
                sdc_transformer2d_declare(p, &l->attns[j], l->blocks + j * cfg->transformer_layers[i], &tc, name);
            }
        }
        l->has_sampler = i < L - 1;
        if (l->has_sampler) {
            sdc_pname(name, sizeof name, "down_blocks.%d.downsamplers.0.conv", i);
            sdc_conv2d_declare(p, &l->sampler, out_ch, out_ch, 3, 2, (int)cfg->downsample_padding, name);
        }
    }

    if (cfg->mid_block) {
        int64_t ch = boc[L - 1];
        float s = (float)cfg->mid_block_scale_factor;
        sdc_resnet_declare(p, &u->mid_res[0], ch, ch, T, G, eps, s, "mid_block.resnets.0");
        u->mid_blocks = calloc((size_t)cfg->transformer_layers[L - 1], sizeof *u->mid_blocks);
        if (!u->mid_blocks) return sdc_fail(err, SDC_ENOMEM, "unet: out of memory");
        sdc_transformer2d_config tc =
            tcfg(cfg, ch, cfg->heads[L - 1], cfg->transformer_layers[L - 1], 0);
        sdc_transformer2d_declare(p, &u->mid_attn, u->mid_blocks, &tc, "mid_block.attentions.0");
        sdc_resnet_declare(p, &u->mid_res[1], ch, ch, T, G, eps, s, "mid_block.resnets.1");
    }

    /* Up levels run the down levels backwards; each resnet takes the running
     * features concatenated with one skip (the down level's outputs, last first). */
    out_ch = boc[L - 1];
    for (int i = 0; i < L; i++) {
        int64_t prev_out = out_ch;
        int d = L - 1 - i; /* matching down level */
        out_ch = boc[d];
        int64_t in_ch = boc[d > 0 ? d - 1 : 0];
        sdc_unet_level *l = &u->up[i];
        int nres = (int)cfg->layers_per_block[d] + 1;
        int64_t layers = cfg->reverse_transformer_layers[i];
        SDC_TRY(level_alloc(l, nres, cfg->up_attn[i], layers, err));
        for (int j = 0; j < nres; j++) {
            int64_t skip = j == nres - 1 ? in_ch : out_ch;
            int64_t rin = j == 0 ? prev_out : out_ch;
            sdc_pname(name, sizeof name, "up_blocks.%d.resnets.%d", i, j);
            sdc_resnet_declare(p, &l->resnets[j], rin + skip, out_ch, T, G, eps, 1.0f, name);
            if (l->attn) {
                sdc_pname(name, sizeof name, "up_blocks.%d.attentions.%d", i, j);
                sdc_transformer2d_config tc = tcfg(cfg, out_ch, cfg->heads[d], layers, cfg->only_cross_attention[d]);
                sdc_transformer2d_declare(p, &l->attns[j], l->blocks + j * layers, &tc, name);
            }
        }
        l->has_sampler = i < L - 1;
        if (l->has_sampler) {
            sdc_pname(name, sizeof name, "up_blocks.%d.upsamplers.0.conv", i);
            sdc_conv2d_declare(p, &l->sampler, out_ch, out_ch, 3, 1, 1, name);
        }
    }

    sdc_group_norm_declare(p, &u->conv_norm_out, G, boc[0], eps, "conv_norm_out");
    sdc_conv2d_declare(p, &u->conv_out, boc[0], cfg->out_channels, 3, 1, 1, "conv_out");
    return sdc_params_alloc(p, err);
}

static void level_free(sdc_unet_level *l) {
    free(l->resnets);
    free(l->attns);
    free(l->blocks);
}

void sdc_unet_free(sdc_unet *u) {
    for (int i = 0; i < SDC_UNET_MAX_LEVELS; i++) {
        level_free(&u->down[i]);
        level_free(&u->up[i]);
    }
    free(u->mid_blocks);
    sdc_params_free(&u->params);
    memset(u, 0, sizeof *u);
}

/* temb [B,T] = linear_2(silu(linear_1(sinusoid(t)))) (+ the text_time term). */
static sdc_tensor time_embedding(sdc_ctx *c, const sdc_unet *u, const sdc_unet_cond *cond, int64_t B) {
    const sdc_unet_config *cfg = &u->cfg;
    int64_t T = cfg->time_embed_dim, D = cfg->block_out_channels[0];
    sdc_tensor temb = sdc_ctx_new(c, B, T);
    size_t mark = sdc_arena_mark(c->arena);
    sdc_tensor e;
    if (cond->t_sinusoid) {
        e = *cond->t_sinusoid;
    } else {
        float *host = malloc((size_t)(B * D) * sizeof *host);
        SDC_ASSERT(host);
        sdc_timestep_embedding(cond->timesteps, B, D, cfg->flip_sin_to_cos, cfg->freq_shift, host);
        e = sdc_op_upload(c, NULL, 2, SDC_SHAPE(B, D), host);
        free(host);
    }
    sdc_tensor h = sdc_linear_forward(c, NULL, &u->time_linear_1, &e);
    sdc_tensor hs = sdc_op_act(c, NULL, &h, SDC_ACT_SILU);
    sdc_linear_forward(c, &temb, &u->time_linear_2, &hs);
    if (cfg->text_time) {
        /* SDXL: add_embedding(concat(text_embeds, sinusoid(time_ids) flattened)) */
        int64_t A = cfg->addition_time_embed_dim, nt = cond->n_time_ids, P = cond->text_embeds->shape[1];
        SDC_ASSERT(P + nt * A == cfg->projection_class_embeddings_input_dim);
        sdc_tensor tt;
        if (cond->time_ids_sinusoid) {
            tt = *cond->time_ids_sinusoid;
        } else {
            float *te = malloc((size_t)(B * nt * A) * sizeof *te);
            SDC_ASSERT(te);
            sdc_timestep_embedding(cond->time_ids, B * nt, A, cfg->flip_sin_to_cos, cfg->freq_shift, te);
            tt = sdc_op_upload(c, NULL, 2, SDC_SHAPE(B, nt * A), te);
            free(te);
        }
        sdc_tensor cat = sdc_op_concat1(c, NULL, cond->text_embeds, &tt);
        sdc_tensor a = sdc_linear_forward(c, NULL, &u->add_linear_1, &cat);
        sdc_tensor as = sdc_op_act(c, NULL, &a, SDC_ACT_SILU);
        sdc_tensor a2 = sdc_linear_forward(c, NULL, &u->add_linear_2, &as);
        sdc_op_add(c, &temb, &temb, &a2);
    }
    sdc_ctx_release(c, mark);
    return temb;
}

/* The units diffusers checkpoints under gradient_checkpointing: each ResNet
 * block and each Transformer2DModel. */
static sdc_tensor ck_resnet(sdc_ctx *c, const void *m, const sdc_tensor *x, const sdc_tensor *temb) {
    return sdc_resnet_forward(c, NULL, m, x, temb);
}
static sdc_tensor ck_transformer(sdc_ctx *c, const void *m, const sdc_tensor *x, const sdc_tensor *context) {
    return sdc_transformer2d_forward(c, NULL, m, x, context);
}
#define RESNET(r, x) sdc_checkpoint(c, ck_resnet, (r), (x), &temb)
#define TRANSFORMER(t, x) sdc_checkpoint(c, ck_transformer, (t), (x), ctx)

sdc_tensor sdc_unet_forward(sdc_ctx *c, sdc_tensor *into, const sdc_unet *u, const sdc_tensor *x,
                            const sdc_unet_cond *cond) {
    const sdc_unet_config *cfg = &u->cfg;
    const int L = cfg->levels;
    int64_t B = x->shape[0], H = x->shape[2], W = x->shape[3];
    SDC_ASSERT(H % ((int64_t)1 << (L - 1)) == 0 && W % ((int64_t)1 << (L - 1)) == 0);
    sdc_tensor out = into ? *into : sdc_ctx_new(c, B, cfg->out_channels, H, W);
    size_t mark = sdc_arena_mark(c->arena);
    const sdc_tensor *ctx = cond->context;

    sdc_tensor temb = time_embedding(c, u, cond, B);
    sdc_tensor h = sdc_conv2d_forward(c, NULL, &u->conv_in, x);

    /* Skips in the order the down path produces them. */
    sdc_tensor skips[SDC_UNET_MAX_LEVELS * 18];
    int nskip = 0;
    skips[nskip++] = h;
    for (int i = 0; i < L; i++) {
        const sdc_unet_level *l = &u->down[i];
        for (int j = 0; j < l->nres; j++) {
            h = RESNET(&l->resnets[j], &h);
            if (l->attn) h = TRANSFORMER(&l->attns[j], &h);
            skips[nskip++] = h;
        }
        if (l->has_sampler) {
            h = sdc_conv2d_forward(c, NULL, &l->sampler, &h);
            skips[nskip++] = h;
        }
    }
    if (cfg->mid_block) {
        h = RESNET(&u->mid_res[0], &h);
        h = TRANSFORMER(&u->mid_attn, &h);
        h = RESNET(&u->mid_res[1], &h);
    }
    for (int i = 0; i < L; i++) {
        const sdc_unet_level *l = &u->up[i];
        for (int j = 0; j < l->nres; j++) {
            SDC_ASSERT(nskip > 0);
            sdc_tensor cat = sdc_op_concat1(c, NULL, &h, &skips[--nskip]);
            h = RESNET(&l->resnets[j], &cat);
            if (l->attn) h = TRANSFORMER(&l->attns[j], &h);
        }
        if (l->has_sampler) {
            sdc_tensor up = sdc_op_upsample2x(c, NULL, &h);
            h = sdc_conv2d_forward(c, NULL, &l->sampler, &up);
        }
    }
    sdc_tensor n = sdc_group_norm_forward(c, NULL, &u->conv_norm_out, &h, SDC_ACT_SILU);
    sdc_conv2d_forward(c, &out, &u->conv_out, &n);
    sdc_ctx_release(c, mark);
    return out;
}
