#include "backend/tape.h"

#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "backend/ops_backward.h"
#include "backend/profile.h"
#include "backend/tape_plan.h"

sdc_status sdc_tape_init(sdc_tape *t, const sdc_arena *arena, sdc_error *err) {
    return sdc_tape_init_on(t, sdc_cpu_backend(), arena, err);
}

sdc_status sdc_tape_init_on(sdc_tape *t, const sdc_backend *be, const sdc_arena *arena, sdc_error *err) {
    (void)err; /* the gradients' pool comes from the arena when planned */
    memset(t, 0, sizeof *t);
    t->be = be;
    t->arena_base = arena->base;
    t->arena_cap = arena->cap;
    return SDC_OK;
}

/* Drops the scratch a failed plan handed out. */
static void drop_scratch(sdc_tape *t) {
    sdc_tape_plan *p = t->plan;
    if (p && p->scratch) t->be->mem_free(p->scratch, p->scratch_bytes);
    if (p) p->scratch = NULL, p->scratch_bytes = 0;
}

void sdc_tape_free(sdc_tape *t) {
    if (t->sub) {
        sdc_tape_free(t->sub);
        free(t->sub);
    }
    free(t->ops);
    free(t->ids);
    if (t->plan) {
        drop_scratch(t);
        sdc_tape_plan_free(t->plan);
        free(t->plan);
    }
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
    t->planned = 0;
}

void sdc_tape_record(sdc_tape *t, const sdc_tape_op *op) {
    t->planned = 0; /* a plan covers what was recorded before it */
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

int sdc_tape_store_of(const sdc_tape *t, const void *p) {
    for (int i = 0; i < t->nstores; i++)
        if ((const unsigned char *)p >= t->stores[i].data &&
            (const unsigned char *)p < t->stores[i].data + t->stores[i].n * t->stores[i].esize)
            return i;
    return -1;
}

/* An activation's gradient: in the plan of t or of the tape it is a
 * sub-tape of (a checkpointed module's x and y), or NULL. */
static void *activation_grad(const sdc_tape *t, const unsigned char *p, size_t nbytes) {
    const size_t off = (size_t)(p - t->arena_base);
    for (; t; t = t->parent) {
        if (!t->planned) continue;
        const sdc_tape_plan *pl = t->plan;
        if (pl->status != SDC_OK) /* no pool: outputs may be seeded, nothing runs */
            return nbytes <= pl->scratch_bytes ? pl->scratch : NULL;
        long r = sdc_tape_plan_find(pl, off);
        if (r < 0) continue;
        const sdc_tape_region *g = &pl->reg[r];
        /* a tensor the ops only saw part of would run into other gradients */
        SDC_ASSERT(off + nbytes <= g->hi);
        /* Outside backward only an input's gradient means anything, and an
         * output's before backward (the seed): an intermediate's memory is
         * shared, and its gradient is cleared or assigned when born. */
        if (pl->phase != SDC_PLAN_RUNNING)
            SDC_ASSERT(g->dies < 0 || (pl->phase == SDC_PLAN_SEEDING && g->born == (int)t->n));
        return t->pool + sdc_tape_plan_at(g, off);
    }
    return NULL;
}

sdc_tensor sdc_tape_grad(const sdc_tape *t, const sdc_tensor *x) {
    sdc_tensor g = *x;
    g.data = NULL;
    const unsigned char *p = x->data;
    if (!p) return g;
    int s = sdc_tape_store_of(t, p);
    if (s >= 0) {
        g.data = t->stores[s].grad + (size_t)(p - t->stores[s].data) / t->stores[s].esize;
        g.dtype = SDC_F32; /* parameter gradients are fp32 whatever the weights' dtype */
        return g;
    }
    size_t nbytes = sdc_tensor_nbytes(x);
    if (nbytes && p >= t->arena_base && p < t->arena_base + t->arena_cap) g.data = activation_grad(t, p, nbytes);
    return g;
}

/* Clears the regions born at backward step `step` that their birth op does
 * not assign (z: a cursor into the plan's ranges, which run in backward
 * order). */
static void clear_born(const sdc_ctx *c, const sdc_tape *t, size_t *z, int step) {
    const sdc_tape_plan *p = t->plan;
    for (; *z < p->nzero && p->zero[*z].step == step; ++*z)
        SDC_PROF(c, "zero activation gradients", t->be->mem_zero(t->pool + p->zero[*z].off, p->zero[*z].bytes));
}

/* Plans t's activation gradients and takes their pool from the arena
 * (t->plan exists). On failure the status stays in the plan for backward. */
static sdc_status plan(const sdc_ctx *c, sdc_tape *t, sdc_arena *arena, const sdc_tensor *seed, sdc_error *err) {
    sdc_tape_plan *p = t->plan;
    drop_scratch(t);
    t->pool = NULL;
    t->pool_bytes = 0;
    double t0 = sdc_prof_on ? sdc_prof_begin(c) : 0;
    sdc_status st = t->failed ? sdc_fail(err, SDC_ENOMEM, "out of memory recording the forward pass")
                              : sdc_tape_plan_build(p, t, seed, err);
    if (sdc_prof_on) sdc_prof_end(c, "plan activation gradients", t0);
    if (st == SDC_OK) {
        t->pool_bytes = p->pool_bytes;
        if (p->pool_bytes && !(t->pool = sdc_arena_alloc(arena, p->pool_bytes)))
            st = sdc_fail(err, SDC_ENOMEM,
                          "out of memory for activation gradients: %zu MiB wanted, %zu MiB of the arena free (lower "
                          "the batch size or the resolution, or add --gradient_checkpointing when training)",
                          p->pool_bytes >> 20, (arena->cap - arena->used) >> 20);
    }
    p->status = st;
    p->phase = SDC_PLAN_SEEDING;
    t->planned = 1;
    if (st != SDC_OK) {
        /* the caller seeds the outputs before backward reports this: give
         * them memory nothing else uses, as large as any recorded output */
        size_t most = seed ? sdc_tensor_nbytes(seed) : 0;
        for (size_t i = 0; i < t->n; i++)
            if (sdc_tensor_nbytes(&t->ops[i].out) > most) most = sdc_tensor_nbytes(&t->ops[i].out);
        p->scratch = most ? t->be->mem_alloc(most) : NULL;
        p->scratch_bytes = p->scratch ? most : 0;
    }
    return st;
}

void sdc_tape_zero_grads(sdc_tape *t, sdc_arena *arena) {
    SDC_ASSERT(arena->base == t->arena_base);
    if (!t->plan && !(t->plan = calloc(1, sizeof *t->plan))) {
        t->failed = 1; /* backward reports it */
        return;
    }
    const sdc_ctx c = {.be = t->be};
    sdc_status st = plan(&c, t, arena, NULL, &t->plan->err);
    size_t z = 0;
    if (st == SDC_OK) clear_born(&c, t, &z, (int)t->n); /* the outputs, before the caller seeds them */
}

/* Where an op's input gradient goes: gradient memory to accumulate into, or
 * nothing (a frozen weight, a tensor outside the arena, an absent input). */
static int wants(const sdc_tape *t, const sdc_tensor *x, sdc_tensor *g) {
    if (!x->data) return 0;
    *g = sdc_tape_grad(t, x);
    return g->data != NULL;
}

/* Whether this op writes input k's gradient gx whole, as its first
 * contribution (the plan's `assign` bits), straight into gradient memory.
 * `ok`: the op's result has gx's dtype; when it has not, the region is
 * cleared instead and the contribution accumulated as any other. */
static int assigns(const sdc_ctx *c, unsigned fresh, int k, const sdc_tensor *gx, int ok) {
    if (!(fresh >> k & 1u)) return 0;
    if (ok) return 1;
    SDC_PROF(c, "zero activation gradients", c->be->mem_zero(gx->data, sdc_tensor_nbytes(gx)));
    return 0;
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

/* g_x (+)= s·d for input k: assigned when it is the first contribution
 * (s·d, which is what 0 + s·d rounds to), accumulated otherwise. */
static void add_scaled(sdc_ctx *c, unsigned fresh, int k, sdc_tensor *gx, float s, const sdc_tensor *d) {
    if (!assigns(c, fresh, k, gx, gx->dtype == d->dtype)) {
        acc_scaled(c, gx, s, d);
        return;
    }
    sdc_tensor v = sdc_view(d, gx->ndim, gx->shape);
    if (s == 1.0f) SDC_PROF(c, "copy gradient", c->be->mem_copy(gx->data, v.data, sdc_tensor_nbytes(gx)));
    else SDC_PROF(c, "copy gradient", c->be->axpby(gx, s, &v, 0.0f, NULL));
}

/* A fresh arena buffer shaped like x, for an op's assigned input gradient. */
static sdc_tensor temp_like(sdc_ctx *c, const sdc_tensor *x) { return sdc_ctx_alloc(c, x->ndim, x->shape); }

static sdc_status backward_ops(sdc_ctx *c, sdc_tape *t, sdc_error *err);

/* Redo a checkpointed module on the sub-tape and differentiate it: the
 * recomputed output's gradient is the recorded output's. The sub-tape plans
 * the module's own activations in a pool after them (both released at the
 * end); its x and y resolve to this tape's gradients. */
static sdc_status backward_checkpoint(sdc_ctx *c, sdc_tape *t, const sdc_tape_op *op, const sdc_tensor *g,
                                      sdc_error *err) {
    if (!t->sub && !(t->sub = calloc(1, sizeof *t->sub)))
        return sdc_fail(err, SDC_ENOMEM, "out of memory for gradient checkpointing");
    sdc_tape *sub = t->sub;
    if (!sub->plan && !(sub->plan = calloc(1, sizeof *sub->plan)))
        return sdc_fail(err, SDC_ENOMEM, "out of memory for gradient checkpointing");
    /* the sub-tape records into its own (reused) arrays */
    sub->n = sub->nids = 0;
    sub->failed = 0;
    sub->planned = 0;
    sub->arena_base = t->arena_base;
    sub->arena_cap = t->arena_cap;
    sub->be = t->be;
    sub->parent = t;
    memcpy(sub->stores, t->stores, sizeof t->stores);
    sub->nstores = t->nstores;
    sub->grad_hook = t->grad_hook;
    sub->grad_user = t->grad_user;
    size_t mark = sdc_arena_mark(c->arena);
    c->tape = sub;
    sdc_tensor y = op->fn(c, op->module, &op->in[0], op->in[1].data ? &op->in[1] : NULL);
    c->tape = NULL;
    SDC_ASSERT(sdc_tensor_numel(&y) == sdc_tensor_numel(g));
    sdc_status st = plan(c, sub, c->arena, &y, err);
    if (st == SDC_OK) {
        size_t z = 0;
        clear_born(c, sub, &z, (int)sub->n);
        sdc_tensor gy = sdc_tape_grad(sub, &y);
        SDC_ASSERT(gy.data); /* the module's output is its own: a new buffer */
        c->be->mem_copy(gy.data, g->data, sdc_tensor_nbytes(&y));
        sub->plan->phase = SDC_PLAN_RUNNING;
        st = backward_ops(c, sub, err);
    }
    sub->planned = 0;
    drop_scratch(sub);
    sdc_arena_release(c->arena, mark);
    return st;
}

static sdc_status backward_op(sdc_ctx *c, sdc_tape *t, size_t i, sdc_error *err) {
    const sdc_tape_op *op = &t->ops[i];
    sdc_tensor g = sdc_tape_grad(t, &op->out);
    if (!g.data) return SDC_OK;
    if (op->kind == SDC_TAPE_CHECKPOINT) return backward_checkpoint(c, t, op, &g, err);
    const unsigned fresh = t->plan->assign[i];
    const sdc_tensor *x = &op->in[0], *y = &op->in[1], *z = &op->in[2];
    sdc_tensor gx, gy, gz;
    int wx = wants(t, x, &gx), wy = wants(t, y, &gy), wz = wants(t, z, &gz);
    size_t mark = sdc_arena_mark(c->arena);
    switch (op->kind) {
    case SDC_TAPE_LINEAR:
    case SDC_TAPE_CONV2D:
    case SDC_TAPE_GROUP_NORM:
    case SDC_TAPE_LAYER_NORM: {
        /* x is an activation (assigned: straight into its gradient when
         * first, else into a temporary then accumulated); the weights are
         * parameters (accumulated in place by the op) */
        SDC_ASSERT(!wx || sdc_tape_store_of(t, x->data) < 0);
        int ax = wx && assigns(c, fresh, 0, &gx, gx.dtype == c->dtype);
        sdc_tensor dx = ax ? gx : wx ? temp_like(c, x) : (sdc_tensor){0};
        sdc_tensor *pdx = wx ? &dx : NULL, *pdy = wy ? &gy : NULL, *pdz = wz ? &gz : NULL;
        if (op->kind == SDC_TAPE_LINEAR)
            sdc_op_linear_backward(c, pdx, pdy, pdz, &g, x, y);
        else if (op->kind == SDC_TAPE_CONV2D)
            sdc_op_conv2d_backward(c, pdx, pdy, pdz, &g, x, y, op->i0, op->i1);
        else if (op->kind == SDC_TAPE_GROUP_NORM)
            sdc_op_group_norm_backward(c, pdx, pdy, pdz, &g, x, y, z, op->i0, op->f0, (sdc_act)op->i1);
        else
            sdc_op_layer_norm_backward(c, pdx, pdy, pdz, &g, x, y, op->f0);
        if (wx && !ax) accumulate(c, &gx, &dx);
        break;
    }
    case SDC_TAPE_ATTENTION: {
        int aq = wx && assigns(c, fresh, 0, &gx, gx.dtype == c->dtype);
        int ak = wy && assigns(c, fresh, 1, &gy, gy.dtype == c->dtype);
        int av = wz && assigns(c, fresh, 2, &gz, gz.dtype == c->dtype);
        sdc_tensor dq = aq ? gx : temp_like(c, x), dk = ak ? gy : temp_like(c, y), dv = av ? gz : temp_like(c, z);
        sdc_op_attention_backward_saved(c, &dq, &dk, &dv, &g, x, y, z, &op->out, op->lse, op->i0, op->f0, op->i1);
        if (wx && !aq) accumulate(c, &gx, &dq);
        if (wy && !ak) accumulate(c, &gy, &dk);
        if (wz && !av) accumulate(c, &gz, &dv);
        break;
    }
    case SDC_TAPE_ACT:
    case SDC_TAPE_GEGLU:
        if (wx) {
            int ax = assigns(c, fresh, 0, &gx, gx.dtype == c->dtype);
            sdc_tensor dx = ax ? gx : temp_like(c, x);
            if (op->kind == SDC_TAPE_ACT) sdc_op_act_backward(c, &dx, &g, x, (sdc_act)op->i0);
            else sdc_op_geglu_backward(c, &dx, &g, x);
            if (!ax) accumulate(c, &gx, &dx);
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
            if (wy) add_scaled(c, fresh, 1, &gy, beta, &g);
            if (alpha != 1.0f) c->be->axpby(&g, alpha, &g, 0.0f, NULL);
        } else if (out_is_b) {
            if (wx) add_scaled(c, fresh, 0, &gx, alpha, &g);
            if (beta != 1.0f) c->be->axpby(&g, beta, &g, 0.0f, NULL);
        } else {
            if (wx) add_scaled(c, fresh, 0, &gx, alpha, &g);
            if (wy) add_scaled(c, fresh, 1, &gy, beta, &g);
        }
        break;
    }
    case SDC_TAPE_ADD_CHANNEL: {
        if (wy) {
            int ay = assigns(c, fresh, 1, &gy, gy.dtype == c->dtype);
            sdc_tensor dv = ay ? gy : temp_like(c, y);
            sdc_op_channel_sum(c, &dv, &g);
            if (!ay) accumulate(c, &gy, &dv);
        }
        if (wx && op->out.data != x->data) add_scaled(c, fresh, 0, &gx, 1.0f, &g);
        break;
    }
    case SDC_TAPE_CONCAT1: {
        /* each input's gradient is its columns of g: sliced straight into
         * the gradient when first */
        const sdc_tensor *in[2] = {x, y};
        sdc_tensor *gin[2] = {&gx, &gy};
        const int w[2] = {wx, wy};
        int64_t c0 = 0;
        for (int k = 0; k < 2; c0 += in[k]->shape[1], k++) {
            if (!w[k]) continue;
            if (assigns(c, fresh, k, gin[k], gin[k]->dtype == c->dtype)) {
                sdc_op_slice1(c, gin[k], &g, c0, in[k]->shape[1]);
            } else {
                sdc_tensor d = sdc_op_slice1(c, NULL, &g, c0, in[k]->shape[1]);
                accumulate(c, gin[k], &d);
            }
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
            if (assigns(c, fresh, 0, &gx, gx.dtype == c->dtype)) {
                sdc_op_from_tokens(c, &gx, &g, x->shape[2], x->shape[3]);
            } else {
                sdc_tensor d = sdc_op_from_tokens(c, NULL, &g, x->shape[2], x->shape[3]);
                accumulate(c, &gx, &d);
            }
        }
        break;
    case SDC_TAPE_FROM_TOKENS:
        if (wx) {
            if (assigns(c, fresh, 0, &gx, gx.dtype == c->dtype)) {
                sdc_op_to_tokens(c, &gx, &g);
            } else {
                sdc_tensor d = sdc_op_to_tokens(c, NULL, &g);
                accumulate(c, &gx, &d);
            }
        }
        break;
    case SDC_TAPE_UPSAMPLE2X:
        if (wx) {
            int ax = assigns(c, fresh, 0, &gx, gx.dtype == c->dtype);
            sdc_tensor d = ax ? gx : temp_like(c, x);
            sdc_op_upsample2x_backward(c, &d, &g);
            if (!ax) accumulate(c, &gx, &d);
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
        for (int k = 0; k < 3; k++)
            if (w[k] && sdc_tape_store_of(t, in[k]->data) >= 0)
                t->grad_hook(t->grad_user, gs[k]->data, sdc_tensor_numel(in[k]));
    }
    return SDC_OK;
}

/* Backward over t's ops, n−1 … 0, clearing each step's newborn regions
 * first (the outputs' were cleared at planning). */
static sdc_status backward_ops(sdc_ctx *c, sdc_tape *t, sdc_error *err) {
    size_t z = 0;
    while (z < t->plan->nzero && t->plan->zero[z].step == (int)t->n) z++;
    for (size_t i = t->n; i-- > 0;) {
        clear_born(c, t, &z, (int)i);
        SDC_TRY(backward_op(c, t, i, err));
    }
    return SDC_OK;
}

sdc_status sdc_tape_backward(sdc_ctx *c, sdc_tape *t, sdc_error *err) {
    if (t->failed) return sdc_fail(err, SDC_ENOMEM, "out of memory recording the forward pass");
    SDC_ASSERT(t->planned); /* sdc_tape_zero_grads after the forward, before seeding */
    if (t->plan->status != SDC_OK) {
        if (err) *err = t->plan->err;
        return t->plan->status;
    }
    SDC_ASSERT(c->arena->base == t->arena_base);
    /* the ops used below must not record themselves */
    sdc_tape *saved = c->tape;
    c->tape = NULL;
    t->plan->phase = SDC_PLAN_RUNNING;
    sdc_status st = backward_ops(c, t, err);
    t->plan->phase = SDC_PLAN_DONE;
    c->tape = saved;
    return st;
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
