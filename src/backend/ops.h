/* The ops models call: shape-checked wrappers over the context's backend.
 *
 * Every op has the form  sdc_tensor sdc_op_x(ctx, into, inputs...):
 * with into == NULL the result is allocated from the context's arena; with a
 * tensor given, the result is written into it (its shape must match) and the
 * same header is returned. Modules use `into` to place their output before a
 * mark/release pair that frees their temporaries:
 *
 *     sdc_tensor out = sdc_ctx_alloc(c, 4, shape);
 *     size_t mark = sdc_arena_mark(c->arena);
 *     ... temporaries ...
 *     sdc_op_add(c, &out, &a, &b);
 *     sdc_arena_release(c->arena, mark);
 *
 * Shape mismatches are programmer errors (asserted); user input is checked
 * where it enters (model configs, prompts, image sizes). */
#ifndef SDC_BACKEND_OPS_H
#define SDC_BACKEND_OPS_H

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SDC_SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define SDC_NDIM(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
/* sdc_ctx_new(c, 2, 4, 64, 64): a fresh activation tensor of that shape. */
#define sdc_ctx_new(c, ...) sdc_ctx_alloc((c), SDC_NDIM(__VA_ARGS__), SDC_SHAPE(__VA_ARGS__))

/* An activation tensor from the arena, in the context's activation dtype
 * (F32 on the CPU). Running out of arena is fatal: arenas are sized from the
 * model and image size before a run, so it is a planning bug. */
sdc_tensor sdc_ctx_alloc(sdc_ctx *c, int ndim, const int64_t *shape);
/* The same tensor data seen with another shape of the same numel. */
sdc_tensor sdc_view(const sdc_tensor *t, int ndim, const int64_t *shape);
#define sdc_reshape(t, ...) sdc_view((t), SDC_NDIM(__VA_ARGS__), SDC_SHAPE(__VA_ARGS__))

/* x [..., K] · w[N,K]ᵀ + b  →  [..., N] */
sdc_tensor sdc_op_linear(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x, const sdc_tensor *w, const sdc_tensor *b);
/* x [B,Ci,H,W], w [Co,Ci,k,k] → [B,Co,Ho,Wo] */
sdc_tensor sdc_op_conv2d(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x, const sdc_tensor *w, const sdc_tensor *b,
                         int stride, int pad);
/* x [B,C,...] */
sdc_tensor sdc_op_group_norm(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x, const sdc_tensor *gamma,
                             const sdc_tensor *beta, int groups, float eps, sdc_act act);
/* x [..., C] */
sdc_tensor sdc_op_layer_norm(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x, const sdc_tensor *gamma,
                             const sdc_tensor *beta, float eps);
/* q [B,Tq,H·D], k/v [B,Tk,H·D] → [B,Tq,H·D] */
sdc_tensor sdc_op_attention(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *q, const sdc_tensor *k,
                            const sdc_tensor *v, int heads, float scale, int causal);
sdc_tensor sdc_op_act(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x, sdc_act act);
/* x [..., 2F] → [..., F] */
sdc_tensor sdc_op_geglu(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x);
/* a + b (same shape) */
sdc_tensor sdc_op_add(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *a, const sdc_tensor *b);
/* α·a + β·b */
sdc_tensor sdc_op_axpby(sdc_ctx *c, sdc_tensor *into, float alpha, const sdc_tensor *a, float beta,
                        const sdc_tensor *b);
/* α·x */
sdc_tensor sdc_op_scale(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x, float alpha);
/* x [B,C,...] + v[B,C] broadcast over the trailing axes */
sdc_tensor sdc_op_add_channel(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x, const sdc_tensor *v);
/* concatenation along axis 1: a [B,Ca,...], b [B,Cb,...] */
sdc_tensor sdc_op_concat1(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *a, const sdc_tensor *b);
/* x[:, c0:c0+n, ...] along axis 1 */
sdc_tensor sdc_op_slice1(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x, int64_t c0, int64_t n);
/* [B,C,H,W] → [B,H·W,C] */
sdc_tensor sdc_op_to_tokens(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x);
/* [B,H·W,C] → [B,C,H,W] */
sdc_tensor sdc_op_from_tokens(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x, int64_t H, int64_t W);
/* zero padding of the last two axes (under a tape: built from concatenations,
 * which record; `into` must then be NULL) */
sdc_tensor sdc_op_pad2d(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x, int top, int bottom, int left, int right);
/* [B,C,H,W] → [B,C,2H,2W] nearest */
sdc_tensor sdc_op_upsample2x(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x);
/* table [V,D], n host ids → [n, D] */
sdc_tensor sdc_op_embedding(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *table, const int32_t *ids, int64_t n);
/* A device tensor of that shape holding host fp32 data. */
sdc_tensor sdc_op_upload(sdc_ctx *c, sdc_tensor *into, int ndim, const int64_t *shape, const float *src);
/* Device tensor → host fp32 (numel floats). */
void sdc_op_download(sdc_ctx *c, float *dst, const sdc_tensor *x);
void sdc_op_fill(sdc_ctx *c, sdc_tensor *x, float value);

#ifdef __cplusplus
}
#endif

#endif
