/* diffusers' Transformer2DModel over a feature map, with its
 * BasicTransformerBlocks (norm_type "layer_norm"):
 *
 *   block:  x += attn1(norm1(x) [, context if only_cross_attention])
 *           x += attn2(norm2(x), context)
 *           x += ff(norm3(x)),   ff = net.2(GEGLU(net.0.proj(x)))
 *   model:  h = GroupNorm(32, eps 1e-6)(x); proj_in (1×1 conv before, or
 *           linear after, flattening to tokens [B,HW,C]); blocks; proj_out;
 *           out = h + x. */
#ifndef SDC_NN_TRANSFORMER_H
#define SDC_NN_TRANSFORMER_H

#include "nn/attention.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/norm.h"

typedef struct sdc_transformer_block {
    sdc_norm norm1, norm2, norm3;
    sdc_attention attn1, attn2;
    sdc_linear ff_in, ff_out; /* ff.net.0.proj (dim → 2·inner, GEGLU), ff.net.2 */
    int only_cross;
} sdc_transformer_block;

typedef struct sdc_transformer2d {
    sdc_norm norm;
    int linear_proj;
    sdc_conv2d proj_in_conv, proj_out_conv;
    sdc_linear proj_in, proj_out;
    sdc_transformer_block *blocks;
    int nblocks;
    int64_t channels, inner;
} sdc_transformer2d;

typedef struct sdc_transformer2d_config {
    int64_t in_channels;
    int heads;
    int64_t dim_head;
    int layers;
    int64_t cross_attention_dim;
    int groups;
    int use_linear_projection, only_cross_attention, upcast_attention;
} sdc_transformer2d_config;

/* blocks: room for cfg->layers blocks, owned by the caller (stable address). */
void sdc_transformer2d_declare(sdc_params *p, sdc_transformer2d *t, sdc_transformer_block *blocks,
                               const sdc_transformer2d_config *cfg, const char *name);
/* x [B,C,H,W], context [B,S,cross_dim] → [B,C,H,W] */
sdc_tensor sdc_transformer2d_forward(sdc_ctx *c, sdc_tensor *into, const sdc_transformer2d *t, const sdc_tensor *x,
                                     const sdc_tensor *context);

#endif
