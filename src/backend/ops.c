#include "backend/ops.h"
#include "backend/profile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/tape.h"
#include "core/error.h"

sdc_tensor sdc_ctx_alloc(sdc_ctx *c, int ndim, const int64_t *shape) {
    sdc_tensor t = sdc_tensor_make(c->dtype, ndim, shape, NULL);
    t.device = c->device;
    size_t nbytes = sdc_tensor_nbytes(&t);
    t.data = sdc_arena_alloc(c->arena, nbytes ? nbytes : 1);
    if (!t.data) {
        char buf[96];
        /* the ops cannot fail softly mid-model; the last checkpoint stays */
        fprintf(stderr,
                "sdc: out of memory for activations (%zu of %zu bytes used, %s wanted): lower the batch size or "
                "the resolution, or add --gradient_checkpointing when training\n",
                c->arena->used, c->arena->cap, sdc_shape_str(buf, sizeof buf, ndim, shape));
        exit(EXIT_FAILURE);
    }
    return t;
}

sdc_tensor sdc_view(const sdc_tensor *t, int ndim, const int64_t *shape) {
    sdc_tensor v = *t;
    v.ndim = ndim;
    for (int i = 0; i < ndim; i++) v.shape[i] = shape[i];
    SDC_ASSERT(sdc_tensor_numel(&v) == sdc_tensor_numel(t));
    return v;
}

/* The output: `into` (shape-checked) or a fresh arena tensor. */
static sdc_tensor out_of(sdc_ctx *c, sdc_tensor *into, int ndim, const int64_t *shape) {
    if (!into) return sdc_ctx_alloc(c, ndim, shape);
    SDC_ASSERT(into->ndim == ndim);
    for (int i = 0; i < ndim; i++) SDC_ASSERT(into->shape[i] == shape[i]);
    return *into;
}

static int64_t last(const sdc_tensor *t) { return t->shape[t->ndim - 1]; }

/* Records an op for backward when the context has a tape; `lse`: what an
 * attention forward kept for its backward (tape.h), else NULL. */
static void rec_saved(sdc_ctx *c, sdc_tape_kind kind, const sdc_tensor *out, const sdc_tensor *a, const sdc_tensor *b,
                      const sdc_tensor *d, int i0, int i1, int i2, float f0, float f1, const float *lse) {
    if (!c->tape) return;
    sdc_tape_op op = {.kind = kind, .out = *out, .i0 = i0, .i1 = i1, .i2 = i2, .f0 = f0, .f1 = f1, .lse = lse};
    if (a) op.in[0] = *a;
    if (b) op.in[1] = *b;
    if (d) op.in[2] = *d;
    sdc_tape_record(c->tape, &op);
}

static void rec(sdc_ctx *c, sdc_tape_kind kind, const sdc_tensor *out, const sdc_tensor *a, const sdc_tensor *b,
                const sdc_tensor *d, int i0, int i1, int i2, float f0, float f1) {
    rec_saved(c, kind, out, a, b, d, i0, i1, i2, f0, f1, NULL);
}

/* Under a tape, an op whose backward reads its input must not overwrite it. */
static void no_alias(const sdc_ctx *c, const sdc_tensor *out, const sdc_tensor *x) {
    if (c->tape) SDC_ASSERT(out->data != x->data);
}

sdc_tensor sdc_op_linear(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x, const sdc_tensor *w, const sdc_tensor *b) {
    SDC_ASSERT(w->ndim == 2 && last(x) == w->shape[1]);
    int64_t K = w->shape[1], N = w->shape[0], M = sdc_tensor_numel(x) / K;
    if (b) SDC_ASSERT(sdc_tensor_numel(b) == N);
    int64_t shape[SDC_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = N;
    sdc_tensor out = out_of(c, into, x->ndim, shape);
    SDC_PROF(c, "linear", c->be->linear(&out, x, w, b, M, K, N));
    rec(c, SDC_TAPE_LINEAR, &out, x, w, b, 0, 0, 0, 0, 0);
    return out;
}

sdc_tensor sdc_op_conv2d(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x, const sdc_tensor *w, const sdc_tensor *b,
                         int stride, int pad) {
    SDC_ASSERT(x->ndim == 4 && w->ndim == 4 && x->shape[1] == w->shape[1]);
    int64_t Ho = (x->shape[2] + 2 * pad - w->shape[2]) / stride + 1;
    int64_t Wo = (x->shape[3] + 2 * pad - w->shape[3]) / stride + 1;
    if (b) SDC_ASSERT(sdc_tensor_numel(b) == w->shape[0]);
    sdc_tensor out = out_of(c, into, 4, SDC_SHAPE(x->shape[0], w->shape[0], Ho, Wo));
    SDC_PROF(c, "conv2d", c->be->conv2d(&out, x, w, b, stride, pad));
    rec(c, SDC_TAPE_CONV2D, &out, x, w, b, stride, pad, 0, 0, 0);
    return out;
}

sdc_tensor sdc_op_group_norm(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x, const sdc_tensor *gamma,
                             const sdc_tensor *beta, int groups, float eps, sdc_act act) {
    SDC_ASSERT(x->ndim >= 2 && x->shape[1] % groups == 0);
    int64_t B = x->shape[0], C = x->shape[1], S = sdc_tensor_numel(x) / (B * C);
    SDC_ASSERT(sdc_tensor_numel(gamma) == C && sdc_tensor_numel(beta) == C);
    sdc_tensor out = out_of(c, into, x->ndim, x->shape);
    no_alias(c, &out, x);
    SDC_PROF(c, "group_norm", c->be->group_norm(&out, x, gamma, beta, B, C, S, groups, eps, act));
    rec(c, SDC_TAPE_GROUP_NORM, &out, x, gamma, beta, groups, (int)act, 0, eps, 0);
    return out;
}

sdc_tensor sdc_op_layer_norm(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x, const sdc_tensor *gamma,
                             const sdc_tensor *beta, float eps) {
    int64_t C = last(x), M = sdc_tensor_numel(x) / C;
    SDC_ASSERT(sdc_tensor_numel(gamma) == C && sdc_tensor_numel(beta) == C);
    sdc_tensor out = out_of(c, into, x->ndim, x->shape);
    no_alias(c, &out, x);
    SDC_PROF(c, "layer_norm", c->be->layer_norm(&out, x, gamma, beta, M, C, eps));
    rec(c, SDC_TAPE_LAYER_NORM, &out, x, gamma, beta, 0, 0, 0, eps, 0);
    return out;
}

sdc_tensor sdc_op_attention(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *q, const sdc_tensor *k,
                            const sdc_tensor *v, int heads, float scale, int causal) {
    SDC_ASSERT(q->ndim == 3 && k->ndim == 3 && v->ndim == 3);
    SDC_ASSERT(sdc_tensor_same_shape(k, v) && q->shape[0] == k->shape[0] && q->shape[2] == k->shape[2]);
    SDC_ASSERT(q->shape[2] % heads == 0);
    sdc_tensor out = out_of(c, into, 3, q->shape);
    const int64_t B = q->shape[0], Tq = q->shape[1], Tk = k->shape[1], D = q->shape[2] / heads;
    /* under a tape, keep each row's softmax statistic (B·H·Tq floats) where
     * the backend can: its backward then skips recomputing the forward */
    float *lse = c->tape && c->be->attention_lse ? sdc_arena_alloc(c->arena, (size_t)(B * heads * Tq) * sizeof(float)) : NULL;
    if (lse)
        SDC_PROF(c, "attention", c->be->attention_lse(&out, lse, q, k, v, B, Tq, Tk, heads, D, scale, causal));
    else
        SDC_PROF(c, "attention", c->be->attention(&out, q, k, v, B, Tq, Tk, heads, D, scale, causal));
    rec_saved(c, SDC_TAPE_ATTENTION, &out, q, k, v, heads, causal, 0, scale, 0, lse);
    return out;
}

sdc_tensor sdc_op_act(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x, sdc_act act) {
    sdc_tensor out = out_of(c, into, x->ndim, x->shape);
    no_alias(c, &out, x);
    SDC_PROF(c, "activation", c->be->activation(&out, x, act));
    rec(c, SDC_TAPE_ACT, &out, x, NULL, NULL, (int)act, 0, 0, 0, 0);
    return out;
}

sdc_tensor sdc_op_geglu(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x) {
    SDC_ASSERT(last(x) % 2 == 0);
    int64_t F = last(x) / 2, M = sdc_tensor_numel(x) / last(x);
    int64_t shape[SDC_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = F;
    sdc_tensor out = out_of(c, into, x->ndim, shape);
    no_alias(c, &out, x);
    SDC_PROF(c, "geglu", c->be->geglu(&out, x, M, F));
    rec(c, SDC_TAPE_GEGLU, &out, x, NULL, NULL, 0, 0, 0, 0, 0);
    return out;
}

sdc_tensor sdc_op_axpby(sdc_ctx *c, sdc_tensor *into, float alpha, const sdc_tensor *a, float beta,
                        const sdc_tensor *b) {
    if (b) SDC_ASSERT(sdc_tensor_numel(a) == sdc_tensor_numel(b));
    sdc_tensor out = out_of(c, into, a->ndim, a->shape);
    SDC_PROF(c, "axpby", c->be->axpby(&out, alpha, a, beta, b));
    rec(c, SDC_TAPE_AXPBY, &out, a, b, NULL, 0, 0, 0, alpha, beta);
    return out;
}

sdc_tensor sdc_op_add(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *a, const sdc_tensor *b) {
    SDC_ASSERT(sdc_tensor_same_shape(a, b));
    return sdc_op_axpby(c, into, 1.0f, a, 1.0f, b);
}

sdc_tensor sdc_op_scale(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x, float alpha) {
    return sdc_op_axpby(c, into, alpha, x, 0.0f, NULL);
}

sdc_tensor sdc_op_add_channel(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x, const sdc_tensor *v) {
    int64_t O = x->shape[0], C = x->shape[1], S = sdc_tensor_numel(x) / (O * C);
    SDC_ASSERT(sdc_tensor_numel(v) == O * C);
    sdc_tensor out = out_of(c, into, x->ndim, x->shape);
    SDC_PROF(c, "add_channel", c->be->add_channel(&out, x, v, O, C, S));
    rec(c, SDC_TAPE_ADD_CHANNEL, &out, x, v, NULL, 0, 0, 0, 0, 0);
    return out;
}

sdc_tensor sdc_op_concat1(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *a, const sdc_tensor *b) {
    SDC_ASSERT(a->ndim == b->ndim && a->shape[0] == b->shape[0]);
    for (int i = 2; i < a->ndim; i++) SDC_ASSERT(a->shape[i] == b->shape[i]);
    int64_t O = a->shape[0], Ca = a->shape[1], Cb = b->shape[1], S = sdc_tensor_numel(a) / (O * Ca);
    int64_t shape[SDC_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[1] = Ca + Cb;
    sdc_tensor out = out_of(c, into, a->ndim, shape);
    SDC_PROF(c, "concat", c->be->concat(&out, a, b, O, Ca, Cb, S));
    rec(c, SDC_TAPE_CONCAT1, &out, a, b, NULL, 0, 0, 0, 0, 0);
    return out;
}

sdc_tensor sdc_op_slice1(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x, int64_t c0, int64_t n) {
    SDC_ASSERT(x->ndim >= 2 && c0 >= 0 && n >= 0 && c0 + n <= x->shape[1]);
    int64_t O = x->shape[0], C = x->shape[1], S = sdc_tensor_numel(x) / (O * C);
    int64_t shape[SDC_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[1] = n;
    sdc_tensor out = out_of(c, into, x->ndim, shape);
    SDC_PROF(c, "slice", c->be->slice(&out, x, O, C, S, c0, n));
    rec(c, SDC_TAPE_SLICE1, &out, x, NULL, NULL, (int)c0, 0, 0, 0, 0);
    return out;
}

sdc_tensor sdc_op_to_tokens(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x) {
    SDC_ASSERT(x->ndim == 4);
    int64_t B = x->shape[0], C = x->shape[1], S = x->shape[2] * x->shape[3];
    sdc_tensor out = out_of(c, into, 3, SDC_SHAPE(B, S, C));
    SDC_PROF(c, "transpose", c->be->transpose(&out, x, B, C, S));
    rec(c, SDC_TAPE_TO_TOKENS, &out, x, NULL, NULL, 0, 0, 0, 0, 0);
    return out;
}

sdc_tensor sdc_op_from_tokens(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x, int64_t H, int64_t W) {
    SDC_ASSERT(x->ndim == 3 && x->shape[1] == H * W);
    int64_t B = x->shape[0], C = x->shape[2];
    sdc_tensor out = out_of(c, into, 4, SDC_SHAPE(B, C, H, W));
    SDC_PROF(c, "transpose", c->be->transpose(&out, x, B, H * W, C));
    rec(c, SDC_TAPE_FROM_TOKENS, &out, x, NULL, NULL, 0, 0, 0, 0, 0);
    return out;
}

/* t ++ zeros (or zeros ++ t when first) along dim 1, n zero rows: a
 * concatenation, which records */
static sdc_tensor cat_zeros(sdc_ctx *c, const sdc_tensor *t, int64_t n, int first) {
    sdc_tensor z = sdc_ctx_new(c, t->shape[0], n, t->shape[2]);
    c->be->fill(&z, 0.0f);
    return first ? sdc_op_concat1(c, NULL, &z, t) : sdc_op_concat1(c, NULL, t, &z);
}

/* Under a tape (VAE training) the pad is built from concatenations of views
 * instead, the same bytes: columns along dim 1 of [B·C·H, W, 1], then rows
 * along dim 1 of [B·C, H, W'] (pad2d itself has no backward). */
static sdc_tensor pad2d_recorded(sdc_ctx *c, const sdc_tensor *x, int top, int bottom, int left, int right) {
    const int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], W2 = W + left + right;
    sdc_tensor t = sdc_reshape(x, B * C * H, W, 1);
    if (left) t = cat_zeros(c, &t, left, 1);
    if (right) t = cat_zeros(c, &t, right, 0);
    t = sdc_reshape(&t, B * C, H, W2);
    if (top) t = cat_zeros(c, &t, top, 1);
    if (bottom) t = cat_zeros(c, &t, bottom, 0);
    return sdc_reshape(&t, B, C, H + top + bottom, W2);
}

sdc_tensor sdc_op_pad2d(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x, int top, int bottom, int left, int right) {
    SDC_ASSERT(x->ndim == 4 && top >= 0 && bottom >= 0 && left >= 0 && right >= 0);
    if (c->tape) {
        SDC_ASSERT(!into);
        return pad2d_recorded(c, x, top, bottom, left, right);
    }
    int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    sdc_tensor out = out_of(c, into, 4, SDC_SHAPE(B, C, H + top + bottom, W + left + right));
    SDC_PROF(c, "pad2d", c->be->pad2d(&out, x, B, C, H, W, top, bottom, left, right));
    return out;
}

sdc_tensor sdc_op_upsample2x(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *x) {
    SDC_ASSERT(x->ndim == 4);
    int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    sdc_tensor out = out_of(c, into, 4, SDC_SHAPE(B, C, 2 * H, 2 * W));
    SDC_PROF(c, "upsample2x", c->be->upsample2x(&out, x, B, C, H, W));
    rec(c, SDC_TAPE_UPSAMPLE2X, &out, x, NULL, NULL, 0, 0, 0, 0, 0);
    return out;
}

sdc_tensor sdc_op_embedding(sdc_ctx *c, sdc_tensor *into, const sdc_tensor *table, const int32_t *ids, int64_t n) {
    SDC_ASSERT(table->ndim == 2);
    for (int64_t i = 0; i < n; i++) SDC_ASSERT(ids[i] >= 0 && ids[i] < table->shape[0]);
    sdc_tensor out = out_of(c, into, 2, SDC_SHAPE(n, table->shape[1]));
    SDC_PROF(c, "embedding", c->be->embedding(&out, table, ids, n, table->shape[1]));
    if (c->tape) {
        sdc_tape_op op = {.kind = SDC_TAPE_EMBEDDING, .out = out, .in = {*table}, .ids = ids, .n = n};
        sdc_tape_record(c->tape, &op); /* the tape copies ids */
    }
    return out;
}

sdc_tensor sdc_op_upload(sdc_ctx *c, sdc_tensor *into, int ndim, const int64_t *shape, const float *src) {
    sdc_tensor out = out_of(c, into, ndim, shape);
    SDC_PROF(c, "upload", c->be->upload(&out, src));
    return out;
}

void sdc_op_download(sdc_ctx *c, float *dst, const sdc_tensor *x) { c->be->download(dst, x); }

void sdc_op_fill(sdc_ctx *c, sdc_tensor *x, float value) { c->be->fill(x, value); }
