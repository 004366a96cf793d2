#include "backend/tape.h"

#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "backend/ops_backward.h"
#include "backend/profile.h"

sdc_status sdc_tape_init(sdc_tape *t, const sdc_arena *arena, sdc_error *err) {
    return sdc_tape_init_on(t, sdc_cpu_backend(), arena, err);
}

sdc_status sdc_tape_init_on(sdc_tape *t, const sdc_backend *be, const sdc_arena *arena, sdc_error *err) {
    memset(t, 0, sizeof *t);
    t->be = be;
    t->arena_base = arena->base;
    t->arena_cap = arena->cap;
    /* 64-byte alignment of arena offsets carries over to the shadow (the
     * CPU's is reserved address space, committed as touched) */
    t->shadow = be->mem_alloc(arena->cap);
    if (!t->shadow) return sdc_fail(err, SDC_ENOMEM, "cannot allocate %zu MiB for activation gradients", arena->cap >> 20);
    return SDC_OK;
}

void sdc_tape_free(sdc_tape *t) {
    if (t->sub) {
        free(t->sub->ops);
        free(t->sub->ids);
        free(t->sub);
    }
    free(t->ops);
    free(t->ids);
    if (t->be) t->be->mem_free(t->shadow, t->arena_cap);
    memset(t, 0, sizeof *t);
}

void sdc_tape_watch(sdc_tape *t, const void *data, sdc_dtype dtype, float *grad, size_t n) {
    SDC_ASSERT(t->nstores < SDC_TAPE_MAX_STORES);
    t->stores[t->nstores].data = data;
    t->stores[t->nstores].esize = sdc_dtype_size(dtype);
    t->stores[t->nstores].grad = grad;
    t->stores[t->nstores].n = n;
    t->nstores++;
}

void sdc_tape_reset(sdc_tape *t) {
    t->n = 0;
    t->nids = 0;
    t->failed = 0;
}

void sdc_tape_record(sdc_tape *t, const sdc_tape_op *op) {
    if (t->failed) return;
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 1024;
        sdc_tape_op *ops = realloc(t->ops, cap * sizeof *ops);
        if (!ops) {
            t->failed = 1;
            return;
        }
        t->ops = ops;
        t->cap = cap;
    }
    sdc_tape_op *o = &t->ops[t->n++];
    *o = *op;
    if (op->kind == SDC_TAPE_EMBEDDING) {
        /* the caller's ids may not outlive the forward: keep a copy, as an
         * offset until backward (the buffer may move while growing) */
        if (t->nids + (size_t)op->n > t->ids_cap) {
            size_t cap = 2 * (t->nids + (size_t)op->n);
            int32_t *ids = realloc(t->ids, cap * sizeof *ids);
            if (!ids) {
                t->failed = 1;
                return;
            }
            t->ids = ids;
            t->ids_cap = cap;
        }
        memcpy(t->ids + t->nids, op->ids, (size_t)op->n * sizeof *op->ids);
        o->ids = (const int32_t *)(uintptr_t)t->nids;
        t->nids += (size_t)op->n;
    }
}

/* The watched store holding p, or −1. */
static int store_of(const sdc_tape *t, const void *p) {
    for (int i = 0; i < t->nstores; i++)
        if ((const unsigned char *)p >= t->stores[i].data &&
            (const unsigned char *)p < t->stores[i].data + t->stores[i].n * t->stores[i].esize)
            return i;
    return -1;
}

sdc_tensor sdc_tape_grad(const sdc_tape *t, const sdc_tensor *x) {
    sdc_tensor g = *x;
    g.data = NULL;
    const unsigned char *p = x->data;
    if (!p) return g;
    int s = store_of(t, p);
    if (s >= 0) {
        g.data = t->stores[s].grad + (size_t)(p - t->stores[s].data) / t->stores[s].esize;
        g.dtype = SDC_F32; /* parameter gradients are fp32 whatever the weights' dtype */
        return g;
    }
    if (p >= t->arena_base && p < t->arena_base + t->arena_cap)
        g.data = (unsigned char *)t->shadow + (p - t->arena_base);
    return g;
}

void sdc_tape_zero_grads(sdc_tape *t, const sdc_arena *arena) {
    SDC_ASSERT(arena->base == t->arena_base);
    double t0 = sdc_prof_on ? sdc_prof_begin(&(sdc_ctx){.be = t->be}) : 0;
    t->be->mem_zero(t->shadow, arena->used);
    if (sdc_prof_on) sdc_prof_end(&(sdc_ctx){.be = t->be}, "zero activation gradients", t0);
}

/* Where an op's input gradient goes: gradient memory to accumulate into, or
 * nothing (a frozen weight, a tensor outside the arena, an absent input). */
static int wants(const sdc_tape *t, const sdc_tensor *x, sdc_tensor *g) {
    if (!x->data) return 0;
    *g = sdc_tape_grad(t, x);
    return g->data != NULL;
}

/* g_x += s·d. Gradients of a watched parameter are fp32 while d has the
 * activations' dtype under mixed precision: d is cast first (into a
 * temporary the caller's arena mark releases). */
static void acc_scaled(sdc_ctx *c, sdc_tensor *gx, float s, const sdc_tensor *d) {
    sdc_tensor v = sdc_view(d, gx->ndim, gx->shape);
    if (v.dtype != gx->dtype) {
        sdc_tensor w = v;
        w.dtype = gx->dtype;
        w.data = sdc_arena_alloc(c->arena, sdc_tensor_nbytes(&w));
        SDC_ASSERT(w.data); /* the arena is planned with room for the backward's temporaries */
        c->be->cast(w.data, w.dtype, v.data, v.dtype, (size_t)sdc_tensor_numel(&v));
        v = w;
    }
    SDC_PROF(c, "accumulate gradient", c->be->axpby(gx, 1.0f, gx, s, &v));
}

/* g_x += d (activation gradients accumulate over the consumers of x). */
static void accumulate(sdc_ctx *c, sdc_tensor *gx, const sdc_tensor *d) { acc_scaled(c, gx, 1.0f, d); }

/* A fresh arena buffer shaped like x, for an op's assigned input gradient. */
static sdc_tensor temp_like(sdc_ctx *c, const sdc_tensor *x) { return sdc_ctx_alloc(c, x->ndim, x->shape); }

static void backward_ops(sdc_ctx *c, sdc_tape *t);

/* Redo a checkpointed module on the sub-tape and differentiate it: the
 * recomputed output's gradient is the recorded output's. */
static void backward_checkpoint(sdc_ctx *c, sdc_tape *t, const sdc_tape_op *op, const sdc_tensor *g) {
    if (!t->sub) {
        t->sub = calloc(1, sizeof *t->sub);
        SDC_ASSERT(t->sub); /* a few bytes; the ops array grows as it records */
    }
    /* the sub-tape records into its own (reused) arrays and shares the
     * parent's gradient memory */
    sdc_tape *sub = t->sub;
    sub->n = sub->nids = 0;
    sub->failed = 0;
    sub->arena_base = t->arena_base;
    sub->arena_cap = t->arena_cap;
    sub->shadow = t->shadow;
    sub->be = t->be;
    memcpy(sub->stores, t->stores, sizeof t->stores);
    sub->nstores = t->nstores;
    sub->grad_hook = t->grad_hook;
    sub->grad_user = t->grad_user;
    size_t mark = sdc_arena_mark(c->arena);
    c->tape = sub;
    sdc_tensor y = op->fn(c, op->module, &op->in[0], op->in[1].data ? &op->in[1] : NULL);
    c->tape = NULL;
    SDC_ASSERT(!sub->failed && sdc_tensor_numel(&y) == sdc_tensor_numel(g));
    /* fresh activations: clear their gradients, then seed the output's */
    t->be->mem_zero((unsigned char *)t->shadow + mark, c->arena->used - mark);
    sdc_tensor gy = sdc_tape_grad(sub, &y);
    t->be->mem_copy(gy.data, g->data, sdc_tensor_nbytes(&y));
    backward_ops(c, sub);
    sdc_arena_release(c->arena, mark);
}

static void backward_op(sdc_ctx *c, sdc_tape *t, const sdc_tape_op *op) {
    sdc_tensor g = sdc_tape_grad(t, &op->out);
    if (!g.data) return;
    if (op->kind == SDC_TAPE_CHECKPOINT) {
        backward_checkpoint(c, t, op, &g);
        return;
    }
    const sdc_tensor *x = &op->in[0], *y = &op->in[1], *z = &op->in[2];
    sdc_tensor gx, gy, gz;
    int wx = wants(t, x, &gx), wy = wants(t, y, &gy), wz = wants(t, z, &gz);
    size_t mark = sdc_arena_mark(c->arena);
    switch (op->kind) {
    case SDC_TAPE_LINEAR:
    case SDC_TAPE_CONV2D:
    case SDC_TAPE_GROUP_NORM:
    case SDC_TAPE_LAYER_NORM: {
        /* x is an activation (assigned into a temporary, then accumulated);
         * the weights are parameters (accumulated in place by the op) */
        SDC_ASSERT(!wx || store_of(t, x->data) < 0);
        sdc_tensor dx = wx ? temp_like(c, x) : (sdc_tensor){0};
        sdc_tensor *pdx = wx ? &dx : NULL, *pdy = wy ? &gy : NULL, *pdz = wz ? &gz : NULL;
        if (op->kind == SDC_TAPE_LINEAR)
            sdc_op_linear_backward(c, pdx, pdy, pdz, &g, x, y);
        else if (op->kind == SDC_TAPE_CONV2D)
            sdc_op_conv2d_backward(c, pdx, pdy, pdz, &g, x, y, op->i0, op->i1);
        else if (op->kind == SDC_TAPE_GROUP_NORM)
            sdc_op_group_norm_backward(c, pdx, pdy, pdz, &g, x, y, z, op->i0, op->f0, (sdc_act)op->i1);
        else
            sdc_op_layer_norm_backward(c, pdx, pdy, pdz, &g, x, y, op->f0);
        if (wx) accumulate(c, &gx, &dx);
        break;
    }
    case SDC_TAPE_ATTENTION: {
        sdc_tensor dq = temp_like(c, x), dk = temp_like(c, y), dv = temp_like(c, z);
        sdc_op_attention_backward(c, &dq, &dk, &dv, &g, x, y, z, op->i0, op->f0, op->i1);
        if (wx) accumulate(c, &gx, &dq);
        if (wy) accumulate(c, &gy, &dk);
        if (wz) accumulate(c, &gz, &dv);
        break;
    }
    case SDC_TAPE_ACT:
    case SDC_TAPE_GEGLU:
        if (wx) {
            sdc_tensor dx = temp_like(c, x);
            if (op->kind == SDC_TAPE_ACT) sdc_op_act_backward(c, &dx, &g, x, (sdc_act)op->i0);
            else sdc_op_geglu_backward(c, &dx, &g, x);
            accumulate(c, &gx, &dx);
        }
        break;
    case SDC_TAPE_AXPBY: {
        /* out = α·a + β·b; out may be a or b itself (in-place residual adds):
         * then gradient memory is shared, so the other input is served first
         * and the shared one is scaled in place last. */
        float alpha = op->f0, beta = op->f1;
        int out_is_a = op->out.data == x->data, out_is_b = y->data && op->out.data == y->data;
        if (out_is_a && out_is_b) {
            c->be->axpby(&g, alpha + beta, &g, 0.0f, NULL);
        } else if (out_is_a) {
            if (wy) acc_scaled(c, &gy, beta, &g);
            if (alpha != 1.0f) c->be->axpby(&g, alpha, &g, 0.0f, NULL);
        } else if (out_is_b) {
            if (wx) acc_scaled(c, &gx, alpha, &g);
            if (beta != 1.0f) c->be->axpby(&g, beta, &g, 0.0f, NULL);
        } else {
            if (wx) acc_scaled(c, &gx, alpha, &g);
            if (wy) acc_scaled(c, &gy, beta, &g);
        }
        break;
    }
    case SDC_TAPE_ADD_CHANNEL: {
        if (wy) {
            sdc_tensor dv = temp_like(c, y);
            sdc_op_channel_sum(c, &dv, &g);
            accumulate(c, &gy, &dv);
        }
        if (wx && op->out.data != x->data) accumulate(c, &gx, &g);
        break;
    }
    case SDC_TAPE_CONCAT1: {
        if (wx) {
            sdc_tensor d = sdc_op_slice1(c, NULL, &g, 0, x->shape[1]);
            accumulate(c, &gx, &d);
        }
        if (wy) {
            sdc_tensor d = sdc_op_slice1(c, NULL, &g, x->shape[1], y->shape[1]);
            accumulate(c, &gy, &d);
        }
        break;
    }
    case SDC_TAPE_SLICE1:
        if (wx) {
            /* the slice's adjoint: g placed at columns [c0, c0+n) of zeros
             * shaped like x, built from (at most two) concatenations */
            const int64_t c0 = op->i0, n = op->out.shape[1], C = x->shape[1];
            int64_t rest[SDC_MAX_DIMS];
            memcpy(rest, x->shape, sizeof rest);
            sdc_tensor d = g;
            if (c0 > 0) {
                rest[1] = c0;
                sdc_tensor z = sdc_ctx_alloc(c, x->ndim, rest);
                c->be->fill(&z, 0.0f);
                d = sdc_op_concat1(c, NULL, &z, &d);
            }
            if (c0 + n < C) {
                rest[1] = C - c0 - n;
                sdc_tensor z = sdc_ctx_alloc(c, x->ndim, rest);
                c->be->fill(&z, 0.0f);
                d = sdc_op_concat1(c, NULL, &d, &z);
            }
            accumulate(c, &gx, &d);
        }
        break;
    case SDC_TAPE_TO_TOKENS:
        if (wx) {
            sdc_tensor d = sdc_op_from_tokens(c, NULL, &g, x->shape[2], x->shape[3]);
            accumulate(c, &gx, &d);
        }
        break;
    case SDC_TAPE_FROM_TOKENS:
        if (wx) {
            sdc_tensor d = sdc_op_to_tokens(c, NULL, &g);
            accumulate(c, &gx, &d);
        }
        break;
    case SDC_TAPE_UPSAMPLE2X:
        if (wx) {
            sdc_tensor d = temp_like(c, x);
            sdc_op_upsample2x_backward(c, &d, &g);
            accumulate(c, &gx, &d);
        }
        break;
    case SDC_TAPE_EMBEDDING:
        if (wx) sdc_op_embedding_backward(c, &gx, &g, t->ids + (uintptr_t)op->ids, op->n);
        break;
    case SDC_TAPE_CHECKPOINT: break; /* handled above */
    }
    sdc_arena_release(c->arena, mark);
    /* parameter gradients this op has added to (enqueued, on a device) */
    if (t->grad_hook) {
        const sdc_tensor *in[3] = {x, y, z};
        const sdc_tensor *gs[3] = {&gx, &gy, &gz};
        const int w[3] = {wx, wy, wz};
        for (int i = 0; i < 3; i++)
            if (w[i] && store_of(t, in[i]->data) >= 0) t->grad_hook(t->grad_user, gs[i]->data, sdc_tensor_numel(in[i]));
    }
}

static void backward_ops(sdc_ctx *c, sdc_tape *t) {
    for (size_t i = t->n; i-- > 0;) backward_op(c, t, &t->ops[i]);
}

sdc_status sdc_tape_backward(sdc_ctx *c, sdc_tape *t, sdc_error *err) {
    if (t->failed) return sdc_fail(err, SDC_ENOMEM, "out of memory recording the forward pass");
    /* the ops used below must not record themselves */
    sdc_tape *saved = c->tape;
    c->tape = NULL;
    backward_ops(c, t);
    c->tape = saved;
    return SDC_OK;
}

sdc_tensor sdc_checkpoint(sdc_ctx *c, sdc_checkpoint_fn fn, const void *module, const sdc_tensor *x,
                          const sdc_tensor *y) {
    sdc_tape *t = c->tape;
    if (!t || !t->checkpointing) return fn(c, module, x, y);
    c->tape = NULL; /* the module frees its temporaries as in inference */
    sdc_tensor out = fn(c, module, x, y);
    c->tape = t;
    sdc_tape_op op = {.kind = SDC_TAPE_CHECKPOINT, .out = out, .fn = fn, .module = module};
    op.in[0] = *x;
    if (y) op.in[1] = *y;
    sdc_tape_record(t, &op);
    return out;
}
