/* The backward ops models call: shape-checked wrappers over the context's
 * backend (the backward half of backend/ops.h; semantics in backend.h).
 *
 * Every gradient is a caller-allocated tensor: activation gradients (dx, dq,
 * ...) usually from the arena, parameter gradients (dw, db, dgamma, ...)
 * pointing into the gradient buffer. Parameter gradients ACCUMULATE (+=),
 * activation gradients are ASSIGNED (=); any gradient may be NULL when it is
 * not wanted. The inputs are the forward's inputs (the ops recompute what
 * they need, e.g. norm statistics and the attention softmax). Shapes mirror
 * the forward wrappers; mismatches are programmer errors (asserted). */
#ifndef SDC_BACKEND_OPS_BACKWARD_H
#define SDC_BACKEND_OPS_BACKWARD_H

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y = x·wᵀ + b with x [..., K], w [N, K], dy [..., N]:
 * dx [..., K] = dy·w;  dw [N,K] += dyᵀ·x;  db [N] += Σ dy */
void sdc_op_linear_backward(sdc_ctx *c, sdc_tensor *dx, sdc_tensor *dw, sdc_tensor *db, const sdc_tensor *dy,
                            const sdc_tensor *x, const sdc_tensor *w);
/* x [B,Ci,H,W], w [Co,Ci,kh,kw], dy [B,Co,Ho,Wo] as sdc_op_conv2d:
 * dx like x (=), dw like w (+=), db [Co] (+=) */
void sdc_op_conv2d_backward(sdc_ctx *c, sdc_tensor *dx, sdc_tensor *dw, sdc_tensor *db, const sdc_tensor *dy,
                            const sdc_tensor *x, const sdc_tensor *w, int stride, int pad);
/* x, dy, dx [B,C,...]; gamma, beta, dgamma, dbeta [C]. beta is read only for
 * the fused activation (it may be NULL with SDC_ACT_NONE). */
void sdc_op_group_norm_backward(sdc_ctx *c, sdc_tensor *dx, sdc_tensor *dgamma, sdc_tensor *dbeta,
                                const sdc_tensor *dy, const sdc_tensor *x, const sdc_tensor *gamma,
                                const sdc_tensor *beta, int groups, float eps, sdc_act act);
/* x, dy, dx [..., C]; gamma, dgamma, dbeta [C] */
void sdc_op_layer_norm_backward(sdc_ctx *c, sdc_tensor *dx, sdc_tensor *dgamma, sdc_tensor *dbeta,
                                const sdc_tensor *dy, const sdc_tensor *x, const sdc_tensor *gamma, float eps);
/* q, dout, dq [B,Tq,H·D]; k, v, dk, dv [B,Tk,H·D]; all three gradients are
 * activation gradients (assigned). */
void sdc_op_attention_backward(sdc_ctx *c, sdc_tensor *dq, sdc_tensor *dk, sdc_tensor *dv, const sdc_tensor *dout,
                               const sdc_tensor *q, const sdc_tensor *k, const sdc_tensor *v, int heads, float scale,
                               int causal);
/* The same given the forward's out and its row statistics lse (from
 * sdc_op_attention under a tape; NULL: recomputed), on backends that take them. */
void sdc_op_attention_backward_saved(sdc_ctx *c, sdc_tensor *dq, sdc_tensor *dk, sdc_tensor *dv,
                                     const sdc_tensor *dout, const sdc_tensor *q, const sdc_tensor *k,
                                     const sdc_tensor *v, const sdc_tensor *out, const float *lse, int heads,
                                     float scale, int causal);
/* dx = dy·act'(x), all one shape (dx may alias dy) */
void sdc_op_act_backward(sdc_ctx *c, sdc_tensor *dx, const sdc_tensor *dy, const sdc_tensor *x, sdc_act act);
/* x, dx [..., 2F]; dy [..., F] */
void sdc_op_geglu_backward(sdc_ctx *c, sdc_tensor *dx, const sdc_tensor *dy, const sdc_tensor *x);
/* dv [O,C] = Σ over the trailing axes of dy [O,C,...] (assigned): the
 * gradient of sdc_op_add_channel's v */
void sdc_op_channel_sum(sdc_ctx *c, sdc_tensor *dv, const sdc_tensor *dy);
/* dy [B,C,2H,2W] → dx [B,C,H,W] (assigned) */
void sdc_op_upsample2x_backward(sdc_ctx *c, sdc_tensor *dx, const sdc_tensor *dy);
/* dtable [V,D] += scatter of dy [n,D] by the n host ids (each < V) */
void sdc_op_embedding_backward(sdc_ctx *c, sdc_tensor *dtable, const sdc_tensor *dy, const int32_t *ids, int64_t n);

#ifdef __cplusplus
}
#endif

#endif
