#include "nn/transformer.h"

#include <stdio.h>

static void block_declare(sdc_params *p, sdc_transformer_block *b, int64_t dim, const sdc_transformer2d_config *cfg,
                          const char *name) {
    char buf[400];
    b->only_cross = cfg->only_cross_attention;
    sdc_pname(buf, sizeof buf, "%s.norm1", name);
    sdc_layer_norm_declare(p, &b->norm1, dim, 1e-5f, buf);
    sdc_pname(buf, sizeof buf, "%s.attn1", name);
    sdc_attention_declare(p, &b->attn1, dim, b->only_cross ? cfg->cross_attention_dim : dim, cfg->heads,
                          cfg->dim_head, 0, buf);
    b->attn1.upcast = cfg->upcast_attention;
    sdc_pname(buf, sizeof buf, "%s.norm2", name);
    sdc_layer_norm_declare(p, &b->norm2, dim, 1e-5f, buf);
    sdc_pname(buf, sizeof buf, "%s.attn2", name);
    sdc_attention_declare(p, &b->attn2, dim, cfg->cross_attention_dim, cfg->heads, cfg->dim_head, 0, buf);
    b->attn2.upcast = cfg->upcast_attention;
    sdc_pname(buf, sizeof buf, "%s.norm3", name);
    sdc_layer_norm_declare(p, &b->norm3, dim, 1e-5f, buf);
    sdc_pname(buf, sizeof buf, "%s.ff.net.0.proj", name);
    sdc_linear_declare(p, &b->ff_in, dim, 2 * 4 * dim, 1, buf);
    sdc_pname(buf, sizeof buf, "%s.ff.net.2", name);
    sdc_linear_declare(p, &b->ff_out, 4 * dim, dim, 1, buf);
}

/* x [B,T,dim] → a new tensor. The residual sums get their own buffers too:
 * the norms' backward reads x, so x must not be overwritten while a tape
 * records. */
static sdc_tensor block_forward(sdc_ctx *c, const sdc_transformer_block *b, const sdc_tensor *x,
                                const sdc_tensor *context) {
    sdc_tensor out = sdc_ctx_alloc(c, x->ndim, x->shape);
    size_t mark = sdc_arena_mark(c->arena);
    sdc_tensor n1 = sdc_layer_norm_forward(c, NULL, &b->norm1, x);
    sdc_tensor a1 = sdc_attention_forward(c, NULL, &b->attn1, &n1, b->only_cross ? context : NULL);
    sdc_tensor x1 = sdc_op_add(c, NULL, x, &a1);
    sdc_tensor n2 = sdc_layer_norm_forward(c, NULL, &b->norm2, &x1);
    sdc_tensor a2 = sdc_attention_forward(c, NULL, &b->attn2, &n2, context);
    sdc_tensor x2 = sdc_op_add(c, NULL, &x1, &a2);
    sdc_tensor n3 = sdc_layer_norm_forward(c, NULL, &b->norm3, &x2);
    sdc_tensor f = sdc_linear_forward(c, NULL, &b->ff_in, &n3);
    sdc_tensor g = sdc_op_geglu(c, NULL, &f);
    sdc_tensor o = sdc_linear_forward(c, NULL, &b->ff_out, &g);
    sdc_op_add(c, &out, &x2, &o);
    sdc_ctx_release(c, mark);
    return out;
}

void sdc_transformer2d_declare(sdc_params *p, sdc_transformer2d *t, sdc_transformer_block *blocks,
                               const sdc_transformer2d_config *cfg, const char *name) {
    char buf[400];
    int64_t C = cfg->in_channels, inner = cfg->heads * cfg->dim_head;
    t->channels = C;
    t->inner = inner;
    t->linear_proj = cfg->use_linear_projection;
    t->blocks = blocks;
    t->nblocks = cfg->layers;
    sdc_pname(buf, sizeof buf, "%s.norm", name);
    sdc_group_norm_declare(p, &t->norm, cfg->groups, C, 1e-6f, buf);
    sdc_pname(buf, sizeof buf, "%s.proj_in", name);
    if (t->linear_proj)
        sdc_linear_declare(p, &t->proj_in, C, inner, 1, buf);
    else
        sdc_conv2d_declare(p, &t->proj_in_conv, C, inner, 1, 1, 0, buf);
    for (int i = 0; i < cfg->layers; i++) {
        sdc_pname(buf, sizeof buf, "%s.transformer_blocks.%d", name, i);
        block_declare(p, &blocks[i], inner, cfg, buf);
    }
    sdc_pname(buf, sizeof buf, "%s.proj_out", name);
    if (t->linear_proj)
        sdc_linear_declare(p, &t->proj_out, inner, C, 1, buf);
    else
        sdc_conv2d_declare(p, &t->proj_out_conv, inner, C, 1, 1, 0, buf);
}

sdc_tensor sdc_transformer2d_forward(sdc_ctx *c, sdc_tensor *into, const sdc_transformer2d *t, const sdc_tensor *x,
                                     const sdc_tensor *context) {
    int64_t H = x->shape[2], W = x->shape[3];
    sdc_tensor out = into ? *into : sdc_ctx_alloc(c, 4, x->shape);
    size_t mark = sdc_arena_mark(c->arena);
    sdc_tensor h = sdc_group_norm_forward(c, NULL, &t->norm, x, SDC_ACT_NONE);
    sdc_tensor tok;
    if (t->linear_proj) {
        sdc_tensor s = sdc_op_to_tokens(c, NULL, &h);
        tok = sdc_linear_forward(c, NULL, &t->proj_in, &s);
    } else {
        sdc_tensor s = sdc_conv2d_forward(c, NULL, &t->proj_in_conv, &h);
        tok = sdc_op_to_tokens(c, NULL, &s);
    }
    for (int i = 0; i < t->nblocks; i++) tok = block_forward(c, &t->blocks[i], &tok, context);
    sdc_tensor y;
    if (t->linear_proj) {
        sdc_tensor s = sdc_linear_forward(c, NULL, &t->proj_out, &tok);
        y = sdc_op_from_tokens(c, NULL, &s, H, W);
    } else {
        sdc_tensor s = sdc_op_from_tokens(c, NULL, &tok, H, W);
        y = sdc_conv2d_forward(c, NULL, &t->proj_out_conv, &s);
    }
    sdc_op_add(c, &out, &y, x);
    sdc_ctx_release(c, mark);
    return out;
}
