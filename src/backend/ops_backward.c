/* Shape checks and dispatch for the backward ops (ops_backward.h). */
#include "backend/ops_backward.h"
#include "backend/profile.h"

#include "core/error.h"

static int64_t last(const sdc_tensor *t) { return t->shape[t->ndim - 1]; }

/* g is NULL or has t's shape */
static void same_shape_or_null(const sdc_tensor *g, const sdc_tensor *t) {
    if (g) SDC_ASSERT(sdc_tensor_same_shape(g, t));
}

void sdc_op_linear_backward(sdc_ctx *c, sdc_tensor *dx, sdc_tensor *dw, sdc_tensor *db, const sdc_tensor *dy,
                            const sdc_tensor *x, const sdc_tensor *w) {
    SDC_ASSERT(c->be->linear_backward && w->ndim == 2 && last(x) == w->shape[1]);
    int64_t K = w->shape[1], N = w->shape[0], M = sdc_tensor_numel(x) / K;
    SDC_ASSERT(dy->ndim == x->ndim && last(dy) == N);
    for (int i = 0; i < x->ndim - 1; i++) SDC_ASSERT(dy->shape[i] == x->shape[i]);
    same_shape_or_null(dx, x);
    same_shape_or_null(dw, w);
    if (db) SDC_ASSERT(sdc_tensor_numel(db) == N);
    SDC_PROF(c, "linear_backward", c->be->linear_backward(dx, dw, db, dy, x, w, M, K, N));
}

void sdc_op_conv2d_backward(sdc_ctx *c, sdc_tensor *dx, sdc_tensor *dw, sdc_tensor *db, const sdc_tensor *dy,
                            const sdc_tensor *x, const sdc_tensor *w, int stride, int pad) {
    SDC_ASSERT(c->be->conv2d_backward && x->ndim == 4 && w->ndim == 4 && dy->ndim == 4);
    SDC_ASSERT(x->shape[1] == w->shape[1] && stride > 0 && pad >= 0);
    int64_t Ho = (x->shape[2] + 2 * pad - w->shape[2]) / stride + 1;
    int64_t Wo = (x->shape[3] + 2 * pad - w->shape[3]) / stride + 1;
    SDC_ASSERT(dy->shape[0] == x->shape[0] && dy->shape[1] == w->shape[0] && dy->shape[2] == Ho &&
               dy->shape[3] == Wo);
    same_shape_or_null(dx, x);
    same_shape_or_null(dw, w);
    if (db) SDC_ASSERT(sdc_tensor_numel(db) == w->shape[0]);
    SDC_PROF(c, "conv2d_backward", c->be->conv2d_backward(dx, dw, db, dy, x, w, stride, pad));
}

void sdc_op_group_norm_backward(sdc_ctx *c, sdc_tensor *dx, sdc_tensor *dgamma, sdc_tensor *dbeta,
                                const sdc_tensor *dy, const sdc_tensor *x, const sdc_tensor *gamma,
                                const sdc_tensor *beta, int groups, float eps, sdc_act act) {
    SDC_ASSERT(c->be->group_norm_backward && x->ndim >= 2 && groups > 0 && x->shape[1] % groups == 0);
    int64_t B = x->shape[0], C = x->shape[1], S = sdc_tensor_numel(x) / (B * C);
    SDC_ASSERT(sdc_tensor_same_shape(dy, x) && sdc_tensor_numel(gamma) == C);
    SDC_ASSERT(beta ? sdc_tensor_numel(beta) == C : act == SDC_ACT_NONE);
    same_shape_or_null(dx, x);
    if (dgamma) SDC_ASSERT(sdc_tensor_numel(dgamma) == C);
    if (dbeta) SDC_ASSERT(sdc_tensor_numel(dbeta) == C);
    SDC_PROF(c, "group_norm_backward", c->be->group_norm_backward(dx, dgamma, dbeta, dy, x, gamma, beta, B, C, S, groups, eps, act));
}

void sdc_op_layer_norm_backward(sdc_ctx *c, sdc_tensor *dx, sdc_tensor *dgamma, sdc_tensor *dbeta,
                                const sdc_tensor *dy, const sdc_tensor *x, const sdc_tensor *gamma, float eps) {
    SDC_ASSERT(c->be->layer_norm_backward);
    int64_t C = last(x), M = sdc_tensor_numel(x) / C;
    SDC_ASSERT(sdc_tensor_same_shape(dy, x) && sdc_tensor_numel(gamma) == C);
    same_shape_or_null(dx, x);
    if (dgamma) SDC_ASSERT(sdc_tensor_numel(dgamma) == C);
    if (dbeta) SDC_ASSERT(sdc_tensor_numel(dbeta) == C);
    SDC_PROF(c, "layer_norm_backward", c->be->layer_norm_backward(dx, dgamma, dbeta, dy, x, gamma, M, C, eps));
}

void sdc_op_attention_backward(sdc_ctx *c, sdc_tensor *dq, sdc_tensor *dk, sdc_tensor *dv, const sdc_tensor *dout,
                               const sdc_tensor *q, const sdc_tensor *k, const sdc_tensor *v, int heads, float scale,
                               int causal) {
    sdc_op_attention_backward_saved(c, dq, dk, dv, dout, q, k, v, NULL, NULL, heads, scale, causal);
}

void sdc_op_attention_backward_saved(sdc_ctx *c, sdc_tensor *dq, sdc_tensor *dk, sdc_tensor *dv,
                                     const sdc_tensor *dout, const sdc_tensor *q, const sdc_tensor *k,
                                     const sdc_tensor *v, const sdc_tensor *out, const float *lse, int heads,
                                     float scale, int causal) {
    SDC_ASSERT(c->be->attention_backward && q->ndim == 3 && k->ndim == 3 && v->ndim == 3);
    SDC_ASSERT(sdc_tensor_same_shape(k, v) && q->shape[0] == k->shape[0] && q->shape[2] == k->shape[2]);
    SDC_ASSERT(heads > 0 && q->shape[2] % heads == 0 && sdc_tensor_same_shape(dout, q));
    same_shape_or_null(dq, q);
    same_shape_or_null(dk, k);
    same_shape_or_null(dv, v);
    const int64_t B = q->shape[0], Tq = q->shape[1], Tk = k->shape[1], D = q->shape[2] / heads;
    if (out && lse && c->be->attention_backward_saved) {
        SDC_ASSERT(sdc_tensor_same_shape(out, q));
        SDC_PROF(c, "attention_backward",
                 c->be->attention_backward_saved(dq, dk, dv, dout, q, k, v, out, lse, B, Tq, Tk, heads, D, scale, causal));
    } else {
        SDC_PROF(c, "attention_backward",
                 c->be->attention_backward(dq, dk, dv, dout, q, k, v, B, Tq, Tk, heads, D, scale, causal));
    }
}

void sdc_op_act_backward(sdc_ctx *c, sdc_tensor *dx, const sdc_tensor *dy, const sdc_tensor *x, sdc_act act) {
    SDC_ASSERT(c->be->activation_backward && sdc_tensor_same_shape(dy, x) && sdc_tensor_same_shape(dx, x));
    SDC_PROF(c, "activation_backward", c->be->activation_backward(dx, dy, x, act));
}

void sdc_op_geglu_backward(sdc_ctx *c, sdc_tensor *dx, const sdc_tensor *dy, const sdc_tensor *x) {
    SDC_ASSERT(c->be->geglu_backward && last(x) % 2 == 0 && sdc_tensor_same_shape(dx, x));
    int64_t F = last(x) / 2, M = sdc_tensor_numel(x) / last(x);
    SDC_ASSERT(dy->ndim == x->ndim && last(dy) == F);
    for (int i = 0; i < x->ndim - 1; i++) SDC_ASSERT(dy->shape[i] == x->shape[i]);
    SDC_PROF(c, "geglu_backward", c->be->geglu_backward(dx, dy, x, M, F));
}

void sdc_op_channel_sum(sdc_ctx *c, sdc_tensor *dv, const sdc_tensor *dy) {
    SDC_ASSERT(c->be->channel_sum && dy->ndim >= 2);
    int64_t O = dy->shape[0], C = dy->shape[1], S = sdc_tensor_numel(dy) / (O * C);
    SDC_ASSERT(sdc_tensor_numel(dv) == O * C);
    SDC_PROF(c, "channel_sum", c->be->channel_sum(dv, dy, O, C, S));
}

void sdc_op_upsample2x_backward(sdc_ctx *c, sdc_tensor *dx, const sdc_tensor *dy) {
    SDC_ASSERT(c->be->upsample2x_backward && dx->ndim == 4 && dy->ndim == 4);
    int64_t B = dx->shape[0], C = dx->shape[1], H = dx->shape[2], W = dx->shape[3];
    SDC_ASSERT(dy->shape[0] == B && dy->shape[1] == C && dy->shape[2] == 2 * H && dy->shape[3] == 2 * W);
    SDC_PROF(c, "upsample2x_backward", c->be->upsample2x_backward(dx, dy, B, C, H, W));
}

void sdc_op_embedding_backward(sdc_ctx *c, sdc_tensor *dtable, const sdc_tensor *dy, const int32_t *ids, int64_t n) {
    SDC_ASSERT(c->be->embedding_backward && dtable->ndim == 2 && dy->ndim == 2);
    SDC_ASSERT(dy->shape[0] == n && dy->shape[1] == dtable->shape[1]);
    for (int64_t i = 0; i < n; i++) SDC_ASSERT(ids[i] >= 0 && ids[i] < dtable->shape[0]);
    SDC_PROF(c, "embedding_backward", c->be->embedding_backward(dtable, dy, ids, n, dtable->shape[1]));
}
