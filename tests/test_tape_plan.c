/* The tape's planned activation gradients (backend/tape_plan.h): gradients
 * through a small graph of every op kind equal a hand-chained backward over
 * the same kernels (zeroed buffers, temporaries added in, as the tape did
 * with one gradient per activation) and finite differences; the tiny UNet
 * gives the same gradients with and without checkpointing and matches the
 * PyTorch goldens, from a pool much smaller than its activations; inputs'
 * gradients outlive backward, two tapes share an arena, a tape is reused
 * over steps of different shapes, and a full arena is an error. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "backend/ops_backward.h"
#include "backend/tape.h"
#include "backend/tape_plan.h"
#include "io/model.h"
#include "models/unet.h"
#include "pipeline/golden.h"
#include "test.h"

/* ---- a small graph over every op kind ---------------------------------------------------------------------------- */

/* Weights: views into one buffer, so one watched store holds them all. */
typedef struct weights {
    float *buf;
    size_t total;
    sdc_tensor w1, b1, g1, be1, w2, b2, g2, be2, wq, wk, wv, wo, bo, wg, bg;
} weights;

static sdc_tensor carve(weights *w, size_t *at, int ndim, const int64_t *shape) {
    sdc_tensor t = sdc_tensor_make(SDC_F32, ndim, shape, w->buf ? w->buf + *at : NULL);
    *at += (size_t)sdc_tensor_numel(&t);
    return t;
}

static void weights_make(weights *w) {
    memset(w, 0, sizeof *w);
    for (int pass = 0; pass < 2; pass++) { /* sizes, then views */
        size_t at = 0;
        w->w1 = carve(w, &at, 4, SDC_SHAPE(8, 4, 3, 3));
        w->b1 = carve(w, &at, 1, SDC_SHAPE(8));
        w->g1 = carve(w, &at, 1, SDC_SHAPE(8));
        w->be1 = carve(w, &at, 1, SDC_SHAPE(8));
        w->w2 = carve(w, &at, 4, SDC_SHAPE(8, 8, 3, 3));
        w->b2 = carve(w, &at, 1, SDC_SHAPE(8));
        w->g2 = carve(w, &at, 1, SDC_SHAPE(8));
        w->be2 = carve(w, &at, 1, SDC_SHAPE(8));
        w->wq = carve(w, &at, 2, SDC_SHAPE(8, 8));
        w->wk = carve(w, &at, 2, SDC_SHAPE(8, 6));
        w->wv = carve(w, &at, 2, SDC_SHAPE(8, 6));
        w->wo = carve(w, &at, 2, SDC_SHAPE(8, 8));
        w->bo = carve(w, &at, 1, SDC_SHAPE(8));
        w->wg = carve(w, &at, 2, SDC_SHAPE(16, 8));
        w->bg = carve(w, &at, 1, SDC_SHAPE(16));
        w->total = at;
        if (!pass) w->buf = malloc(at * sizeof *w->buf);
    }
    for (size_t i = 0; i < w->total; i++) w->buf[i] = 0.4f * sinf(0.7f * (float)i + 0.3f);
    for (int i = 0; i < 8; i++) ((float *)w->g1.data)[i] += 1.0f, ((float *)w->g2.data)[i] += 1.0f; /* γ near 1 */
}

/* The same tensor over another buffer with the same layout (its gradient). */
static sdc_tensor twin(const sdc_tensor *t, const float *base, float *other) {
    sdc_tensor g = *t;
    g.data = other + ((const float *)t->data - base);
    return g;
}

typedef struct net net;

/* The checkpointable module (it must outlive backward, which reruns it). */
typedef struct block {
    const weights *w;
    net *save; /* where the block's intermediates go (the reference run), or NULL */
} block;

/* Every intermediate, for the hand-written backward. */
struct net {
    block blk;
    sdc_tensor x, ctx, temb;                         /* inputs */
    sdc_tensor h1, h2, h3, t, ln, q, k, v, a, o, t2; /* conv, norm, attention block */
    sdc_tensor gl, ge, t3, f, cat, sl, up, xv, y2;   /* feed-forward, layout, outputs up and y2 */
};


/* A pre-norm cross-attention block, t2 = t + out(attn(q(ln(t)), k(ctx), v(ctx))):
 * the module gradient checkpointing recomputes. */
static sdc_tensor block_fn(sdc_ctx *c, const void *module, const sdc_tensor *t, const sdc_tensor *ctx) {
    const block *b = module;
    const weights *w = b->w;
    net n;
    n.ln = sdc_op_layer_norm(c, NULL, t, &w->g2, &w->be2, 1e-5f);
    n.q = sdc_op_linear(c, NULL, &n.ln, &w->wq, NULL);
    n.k = sdc_op_linear(c, NULL, ctx, &w->wk, NULL);
    n.v = sdc_op_linear(c, NULL, ctx, &w->wv, NULL);
    n.a = sdc_op_attention(c, NULL, &n.q, &n.k, &n.v, 2, 0.5f, 0);
    n.o = sdc_op_linear(c, NULL, &n.a, &w->wo, &w->bo);
    n.t2 = sdc_op_add(c, NULL, t, &n.o);
    sdc_op_act(c, NULL, &n.t2, SDC_ACT_SILU); /* dropped: the output has a reader inside its module too */
    if (b->save) {
        net *s = b->save;
        s->ln = n.ln, s->q = n.q, s->k = n.k, s->v = n.v, s->a = n.a, s->o = n.o, s->t2 = n.t2;
    }
    return n.t2;
}

/* conv → group norm+SiLU → conv, + temb per channel and ½·h1 in place →
 * tokens → checkpointable attention block → GEGLU feed-forward →
 * back to NCHW, concatenated with x, sliced, upsampled (output up); x has a
 * third consumer through a reshaped view (output y2). */
static void net_forward(sdc_ctx *c, const weights *w, net *n, const float *xs, const float *cs, const float *ts,
                        int64_t B, int save) {
    sdc_tape *tape = c->tape;
    c->tape = NULL; /* inputs are uploads, as callers make them */
    n->x = sdc_op_upload(c, NULL, 4, SDC_SHAPE(B, 4, 4, 4), xs);
    n->ctx = sdc_op_upload(c, NULL, 3, SDC_SHAPE(B, 5, 6), cs);
    n->temb = sdc_op_upload(c, NULL, 2, SDC_SHAPE(B, 8), ts);
    c->tape = tape;
    n->h1 = sdc_op_conv2d(c, NULL, &n->x, &w->w1, &w->b1, 1, 1);
    n->h2 = sdc_op_group_norm(c, NULL, &n->h1, &w->g1, &w->be1, 2, 1e-5f, SDC_ACT_SILU);
    n->h3 = sdc_op_conv2d(c, NULL, &n->h2, &w->w2, &w->b2, 1, 1);
    sdc_op_add_channel(c, &n->h3, &n->h3, &n->temb);
    sdc_op_axpby(c, &n->h3, 1.0f, &n->h3, 0.5f, &n->h1);
    n->t = sdc_op_to_tokens(c, NULL, &n->h3);
    n->blk = (block){w, save ? n : NULL};
    n->t2 = sdc_checkpoint(c, block_fn, &n->blk, &n->t, &n->ctx);
    n->gl = sdc_op_linear(c, NULL, &n->t2, &w->wg, &w->bg);
    n->ge = sdc_op_geglu(c, NULL, &n->gl);
    n->t3 = sdc_op_add(c, NULL, &n->t2, &n->ge);
    n->f = sdc_op_from_tokens(c, NULL, &n->t3, 4, 4);
    n->cat = sdc_op_concat1(c, NULL, &n->f, &n->x);
    n->sl = sdc_op_slice1(c, NULL, &n->cat, 2, 6);
    n->up = sdc_op_upsample2x(c, NULL, &n->sl);
    n->xv = sdc_reshape(&n->x, B, 4, 16);
    n->y2 = sdc_op_act(c, NULL, &n->xv, SDC_ACT_GELU);
}

typedef struct inputs {
    int64_t B;
    float *x, *ctx, *temb, *s_up, *s_y2; /* and the seeds of the two outputs */
} inputs;

static void inputs_make(inputs *in, int64_t B, float phase) {
    in->B = B;
    size_t nx = (size_t)B * 64, nc = (size_t)B * 30, nt = (size_t)B * 8, nu = (size_t)B * 6 * 64;
    in->x = malloc(nx * sizeof(float)), in->ctx = malloc(nc * sizeof(float)), in->temb = malloc(nt * sizeof(float));
    in->s_up = malloc(nu * sizeof(float)), in->s_y2 = malloc(nx * sizeof(float));
    for (size_t i = 0; i < nx; i++) in->x[i] = sinf(0.37f * (float)i + phase);
    for (size_t i = 0; i < nc; i++) in->ctx[i] = cosf(0.23f * (float)i + phase);
    for (size_t i = 0; i < nt; i++) in->temb[i] = 0.5f * sinf(1.1f * (float)i - phase);
    for (size_t i = 0; i < nu; i++) in->s_up[i] = sinf(0.19f * (float)i) * 0.1f;
    for (size_t i = 0; i < nx; i++) in->s_y2[i] = cosf(0.31f * (float)i) * 0.1f;
}

static void inputs_free(inputs *in) { free(in->x), free(in->ctx), free(in->temb), free(in->s_up), free(in->s_y2); }

/* Gradients of Σ s_up·up + Σ s_y2·y2: inputs (host copies) and weights. */
typedef struct grads {
    float *x, *ctx, *temb, *w;
} grads;

static void grads_alloc(grads *g, const inputs *in, const weights *w) {
    g->x = calloc((size_t)in->B * 64, sizeof(float));
    g->ctx = calloc((size_t)in->B * 30, sizeof(float));
    g->temb = calloc((size_t)in->B * 8, sizeof(float));
    g->w = calloc(w->total, sizeof(float));
}

static void grads_free(grads *g) { free(g->x), free(g->ctx), free(g->temb), free(g->w); }

/* ---- the reference: the chain rule by hand, in the tape's order ------------------------------------------------- */

static sdc_tensor zeros_like(sdc_ctx *c, const sdc_tensor *t) {
    sdc_tensor z = sdc_ctx_alloc(c, t->ndim, t->shape);
    c->be->fill(&z, 0.0f);
    return z;
}

/* dst += s·src, with the kernel the tape accumulated with */
static void acc(sdc_ctx *c, sdc_tensor *dst, float s, const sdc_tensor *src) {
    sdc_tensor v = sdc_view(src, dst->ndim, dst->shape);
    c->be->axpby(dst, 1.0f, dst, s, &v);
}

/* out[b,j,i] = in[b,i,j] for in [B,I,J] (both token layouts' adjoints) */
static sdc_tensor swap(sdc_ctx *c, const sdc_tensor *in, int64_t B, int64_t I, int64_t J, int ndim,
                       const int64_t *shape) {
    sdc_tensor o = sdc_ctx_alloc(c, ndim, shape);
    const float *s = in->data;
    float *d = o.data;
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < I; i++)
            for (int64_t j = 0; j < J; j++) d[(b * J + j) * I + i] = s[(b * I + i) * J + j];
    return o;
}

/* Columns [c0, c0+n) of g [B,C,S] into a [B,n,S] tensor (concat's adjoint),
 * or g [B,n,S] into columns [c0, c0+n) of zeros [B,C,S] (slice's). */
static sdc_tensor columns(sdc_ctx *c, const sdc_tensor *g, int64_t B, int64_t C, int64_t S, int64_t c0, int64_t n,
                          int scatter) {
    sdc_tensor o = sdc_ctx_alloc(c, 3, SDC_SHAPE(B, scatter ? C : n, S));
    c->be->fill(&o, 0.0f);
    const float *s = g->data;
    float *d = o.data;
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < n; j++)
            for (int64_t k = 0; k < S; k++) {
                if (scatter) d[(b * C + c0 + j) * S + k] = s[(b * n + j) * S + k];
                else d[(b * n + j) * S + k] = s[(b * C + c0 + j) * S + k];
            }
    return o;
}

static void reference(sdc_ctx *c, const weights *w, const inputs *in, grads *out) {
    const int64_t B = in->B;
    size_t mark = sdc_arena_mark(c->arena);
    net n;
    net_forward(c, w, &n, in->x, in->ctx, in->temb, B, 1);
    const float *P = w->buf;
    float *G = out->w;
    /* gradient accumulators: zero, then every contribution added in the
     * order backward visits the ops (highest first) */
    sdc_tensor gx = zeros_like(c, &n.x), gctx = zeros_like(c, &n.ctx), gtemb = zeros_like(c, &n.temb);
    sdc_tensor gh1 = zeros_like(c, &n.h1), gh2 = zeros_like(c, &n.h2), gh3 = zeros_like(c, &n.h3);
    sdc_tensor gt = zeros_like(c, &n.t), gln = zeros_like(c, &n.ln), gq = zeros_like(c, &n.q);
    sdc_tensor gk = zeros_like(c, &n.k), gv = zeros_like(c, &n.v), ga = zeros_like(c, &n.a), go = zeros_like(c, &n.o);
    sdc_tensor gt2 = zeros_like(c, &n.t2), ggl = zeros_like(c, &n.gl), gge = zeros_like(c, &n.ge);
    sdc_tensor gt3 = zeros_like(c, &n.t3), gf = zeros_like(c, &n.f), gsl = zeros_like(c, &n.sl);
    sdc_tensor gup = sdc_op_upload(c, NULL, 4, n.up.shape, in->s_up);
    sdc_tensor gy2 = sdc_op_upload(c, NULL, 3, n.y2.shape, in->s_y2);
    sdc_tensor d, d2, d3, dw, db;
    /* y2 = gelu(view of x) */
    d = sdc_ctx_alloc(c, 3, n.xv.shape);
    sdc_op_act_backward(c, &d, &gy2, &n.xv, SDC_ACT_GELU);
    acc(c, &gx, 1.0f, &d);
    /* up = upsample(sl); sl = cat[:, 2:8]; cat = f ++ x */
    d = zeros_like(c, &n.sl);
    sdc_op_upsample2x_backward(c, &d, &gup);
    acc(c, &gsl, 1.0f, &d);
    sdc_tensor gcat = columns(c, &gsl, B, 12, 16, 2, 6, 1);
    d = columns(c, &gcat, B, 12, 16, 0, 8, 0);
    acc(c, &gf, 1.0f, &d);
    d = columns(c, &gcat, B, 12, 16, 8, 4, 0);
    acc(c, &gx, 1.0f, &d);
    /* f = NCHW of t3; t3 = t2 + ge; ge = geglu(gl); gl = t2·wgᵀ + bg */
    d = swap(c, &gf, B, 8, 16, 3, n.t3.shape);
    acc(c, &gt3, 1.0f, &d);
    acc(c, &gt2, 1.0f, &gt3);
    acc(c, &gge, 1.0f, &gt3);
    d = sdc_ctx_alloc(c, 3, n.gl.shape);
    sdc_op_geglu_backward(c, &d, &gge, &n.gl);
    acc(c, &ggl, 1.0f, &d);
    d = sdc_ctx_alloc(c, 3, n.t2.shape);
    dw = twin(&w->wg, P, G), db = twin(&w->bg, P, G);
    sdc_op_linear_backward(c, &d, &dw, &db, &ggl, &n.t2, &w->wg);
    acc(c, &gt2, 1.0f, &d);
    /* the block: t2 = t + o; o = a·woᵀ + bo; a = attention(q, k, v) */
    acc(c, &gt, 1.0f, &gt2);
    acc(c, &go, 1.0f, &gt2);
    d = sdc_ctx_alloc(c, 3, n.a.shape);
    dw = twin(&w->wo, P, G), db = twin(&w->bo, P, G);
    sdc_op_linear_backward(c, &d, &dw, &db, &go, &n.a, &w->wo);
    acc(c, &ga, 1.0f, &d);
    d = sdc_ctx_alloc(c, 3, n.q.shape), d2 = sdc_ctx_alloc(c, 3, n.k.shape), d3 = sdc_ctx_alloc(c, 3, n.v.shape);
    sdc_op_attention_backward(c, &d, &d2, &d3, &ga, &n.q, &n.k, &n.v, 2, 0.5f, 0);
    acc(c, &gq, 1.0f, &d);
    acc(c, &gk, 1.0f, &d2);
    acc(c, &gv, 1.0f, &d3);
    /* v, k = ctx·wᵀ (v recorded after k: served first); q = ln·wqᵀ */
    d = sdc_ctx_alloc(c, 3, n.ctx.shape);
    dw = twin(&w->wv, P, G);
    sdc_op_linear_backward(c, &d, &dw, NULL, &gv, &n.ctx, &w->wv);
    acc(c, &gctx, 1.0f, &d);
    dw = twin(&w->wk, P, G);
    sdc_op_linear_backward(c, &d, &dw, NULL, &gk, &n.ctx, &w->wk);
    acc(c, &gctx, 1.0f, &d);
    d = sdc_ctx_alloc(c, 3, n.ln.shape);
    dw = twin(&w->wq, P, G);
    sdc_op_linear_backward(c, &d, &dw, NULL, &gq, &n.ln, &w->wq);
    acc(c, &gln, 1.0f, &d);
    d = sdc_ctx_alloc(c, 3, n.t.shape);
    dw = twin(&w->g2, P, G), db = twin(&w->be2, P, G);
    sdc_op_layer_norm_backward(c, &d, &dw, &db, &gln, &n.t, &w->g2, 1e-5f);
    acc(c, &gt, 1.0f, &d);
    /* t = tokens of h3; h3 += ½·h1 and += temb in place; h3 = conv(h2) */
    d = swap(c, &gt, B, 16, 8, 4, n.h3.shape);
    acc(c, &gh3, 1.0f, &d);
    acc(c, &gh1, 0.5f, &gh3);
    d = sdc_ctx_alloc(c, 2, n.temb.shape);
    sdc_op_channel_sum(c, &d, &gh3);
    acc(c, &gtemb, 1.0f, &d);
    d = sdc_ctx_alloc(c, 4, n.h2.shape);
    dw = twin(&w->w2, P, G), db = twin(&w->b2, P, G);
    sdc_op_conv2d_backward(c, &d, &dw, &db, &gh3, &n.h2, &w->w2, 1, 1);
    acc(c, &gh2, 1.0f, &d);
    /* h2 = silu(groupnorm(h1)); h1 = conv(x) */
    d = sdc_ctx_alloc(c, 4, n.h1.shape);
    dw = twin(&w->g1, P, G), db = twin(&w->be1, P, G);
    sdc_op_group_norm_backward(c, &d, &dw, &db, &gh2, &n.h1, &w->g1, &w->be1, 2, 1e-5f, SDC_ACT_SILU);
    acc(c, &gh1, 1.0f, &d);
    d = sdc_ctx_alloc(c, 4, n.x.shape);
    dw = twin(&w->w1, P, G), db = twin(&w->b1, P, G);
    sdc_op_conv2d_backward(c, &d, &dw, &db, &gh1, &n.x, &w->w1, 1, 1);
    acc(c, &gx, 1.0f, &d);
    c->be->download(out->x, &gx);
    c->be->download(out->ctx, &gctx);
    c->be->download(out->temb, &gtemb);
    sdc_arena_release(c->arena, mark);
}

/* ---- the same through a tape ------------------------------------------------------------------------------------ */

/* Records the forward on `tape` (already reset and watching w). */
static void record(sdc_ctx *c, sdc_tape *tape, const weights *w, const inputs *in, net *n) {
    c->tape = tape;
    net_forward(c, w, n, in->x, in->ctx, in->temb, in->B, 0);
    c->tape = NULL;
}

/* Every region 64-byte aligned inside the pool, and no two regions alive
 * at a common step overlapping in it. */
static int plan_is_sound(const sdc_tape_plan *p) {
    for (size_t i = 0; i < p->nreg; i++) {
        const sdc_tape_region *a = &p->reg[i];
        if (a->off % 64 || a->off + a->bytes > p->pool_bytes || a->bytes < a->hi - a->lo) return 0;
        for (size_t j = i + 1; j < p->nreg; j++) {
            const sdc_tape_region *b = &p->reg[j];
            int together = a->dies <= b->born && b->dies <= a->born;
            int apart = a->off + a->bytes <= b->off || b->off + b->bytes <= a->off;
            if (together && !apart) return 0;
        }
    }
    return 1;
}

/* Plans, seeds and runs backward; the inputs' gradients into out. */
static sdc_status differentiate(sdc_ctx *c, sdc_tape *tape, const net *n, const inputs *in, grads *out,
                                sdc_error *err) {
    sdc_tape_zero_grads(tape, c->arena);
    if (tape->plan->status == SDC_OK) CHECK(plan_is_sound(tape->plan));
    sdc_tensor gu = sdc_tape_grad(tape, &n->up), gy = sdc_tape_grad(tape, &n->y2);
    if (!gu.data || !gy.data) return sdc_fail(err, SDC_EINVAL, "an output has no gradient memory");
    c->be->upload(&gu, in->s_up);
    c->be->upload(&gy, in->s_y2);
    sdc_status st = sdc_tape_backward(c, tape, err);
    if (st != SDC_OK) return st;
    sdc_tensor gx = sdc_tape_grad(tape, &n->x), gc = sdc_tape_grad(tape, &n->ctx), gt = sdc_tape_grad(tape, &n->temb);
    if (!gx.data || !gc.data || !gt.data) return sdc_fail(err, SDC_EINVAL, "an input has no gradient memory");
    c->be->download(out->x, &gx);
    c->be->download(out->ctx, &gc);
    c->be->download(out->temb, &gt);
    return SDC_OK;
}

/* Equal element for element: the same bits, but for the sign of a zero
 * (the tape assigns a first contribution d where the reference adds it to
 * zero, and 0 + (−0) is +0). */
static int same(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!(a[i] == b[i])) return 0;
    return 1;
}

static void check_same(const grads *got, const grads *ref, const inputs *in, const weights *w, const char *what) {
    CHECK_MSG(same(got->x, ref->x, (size_t)in->B * 64), "%s: x gradient differs", what);
    CHECK_MSG(same(got->ctx, ref->ctx, (size_t)in->B * 30), "%s: ctx gradient differs", what);
    CHECK_MSG(same(got->temb, ref->temb, (size_t)in->B * 8), "%s: temb gradient differs", what);
    CHECK_MSG(same(got->w, ref->w, w->total), "%s: weight gradients differ", what);
}

/* Σ s·outputs in double, without a tape. */
static double loss_at(sdc_ctx *c, const weights *w, const inputs *in) {
    size_t mark = sdc_arena_mark(c->arena);
    net n;
    net_forward(c, w, &n, in->x, in->ctx, in->temb, in->B, 0);
    size_t nu = (size_t)sdc_tensor_numel(&n.up), ny = (size_t)sdc_tensor_numel(&n.y2);
    double l = 0;
    for (size_t i = 0; i < nu; i++) l += (double)in->s_up[i] * ((const float *)n.up.data)[i];
    for (size_t i = 0; i < ny; i++) l += (double)in->s_y2[i] * ((const float *)n.y2.data)[i];
    sdc_arena_release(c->arena, mark);
    return l;
}

TEST(tape_plan_small_graph_matches_the_chain_rule) {
    sdc_error err = {0};
    weights w;
    weights_make(&w);
    inputs in;
    inputs_make(&in, 2, 0.0f);
    sdc_arena arena;
    REQUIRE_OK(sdc_arena_init(&arena, 16u << 20, &err), &err);
    sdc_ctx c = SDC_CTX_CPU(&arena);
    grads ref;
    grads_alloc(&ref, &in, &w);
    reference(&c, &w, &in, &ref);

    for (int ck = 0; ck < 2; ck++) {
        grads got;
        grads_alloc(&got, &in, &w);
        sdc_tape tape;
        REQUIRE_OK(sdc_tape_init(&tape, &arena, &err), &err);
        sdc_tape_watch(&tape, w.buf, SDC_F32, got.w, w.total);
        tape.checkpointing = ck;
        size_t mark = sdc_arena_mark(&arena);
        net n;
        record(&c, &tape, &w, &in, &n);
        REQUIRE(!tape.failed);
        REQUIRE_OK(differentiate(&c, &tape, &n, &in, &got, &err), &err);
        sdc_arena_release(&arena, mark);
        check_same(&got, &ref, &in, &w, ck ? "checkpointed" : "stored");
        /* the pool holds fewer bytes than one gradient per activation */
        CHECK(tape.pool_bytes > 0 && tape.pool_bytes < tape.plan->grad_bytes);
        sdc_tape_free(&tape);
        grads_free(&got);
    }

    /* and the chain itself is the derivative: central differences of the
     * loss in double over an fp32 forward (h = 1e-2: truncation ~h²·f''' and
     * rounding ~1e-7·|terms|/h; measured 6e-4 against a largest gradient of
     * ~8, so 5e-4 of the largest gradient leaves a margin of ~6) */
    float gmax = 0;
    for (int i = 0; i < in.B * 64; i++) gmax = fmaxf(gmax, fabsf(ref.x[i]));
    struct {
        float *v, *g;
        int n;
    } probe[3] = {{in.x, ref.x, (int)in.B * 64}, {in.ctx, ref.ctx, (int)in.B * 30}, {in.temb, ref.temb, (int)in.B * 8}};
    double worst = 0;
    for (int p = 0; p < 3; p++)
        for (int k = 0; k < 4; k++) {
            int i = (k * 37 + p * 11) % probe[p].n;
            const float h = 1e-2f, v = probe[p].v[i];
            probe[p].v[i] = v + h;
            double lp = loss_at(&c, &w, &in);
            probe[p].v[i] = v - h;
            double lm = loss_at(&c, &w, &in);
            probe[p].v[i] = v;
            double fd = (lp - lm) / (2.0 * h);
            if (fabs(fd - probe[p].g[i]) > worst) worst = fabs(fd - probe[p].g[i]);
            CHECK_MSG(fabs(fd - probe[p].g[i]) <= 5e-4 * gmax + 1e-4,
                      "input %d element %d: %.6g by the chain, %.6g by differences", p, i, probe[p].g[i], fd);
        }
    if (getenv("SDC_TEST_VERBOSE"))
        fprintf(stderr, "    differences vs chain: worst %.3g, largest gradient %.3g\n", worst, gmax);
    grads_free(&ref);
    inputs_free(&in);
    free(w.buf);
    sdc_arena_free(&arena);
}

/* ---- the tiny UNet ---------------------------------------------------------------------------------------------- */

/* One forward and backward of the tiny UNet on the golden inputs. */
typedef struct unet_run {
    float *gx, *gc, *gp; /* gradients: sample, encoder_hidden_states, parameters */
    size_t nx, nc;
    size_t forward_bytes; /* arena bytes the forward took */
    size_t pool_bytes, live_bytes, grad_bytes;
    int plan_ok; /* the placement invariants held */
} unet_run;

static void run_unet(sdc_unet *u, sdc_golden *g, int ck, unet_run *r) {
    sdc_error err = {0};
    memset(r, 0, sizeof *r);
    sdc_arena arena;
    REQUIRE_OK(sdc_arena_init(&arena, 512u << 20, &err), &err);
    sdc_tape tape;
    REQUIRE_OK(sdc_tape_init(&tape, &arena, &err), &err);
    sdc_tape_watch(&tape, u->params.data, SDC_F32, u->params.grad, u->params.total);
    tape.checkpointing = ck;
    sdc_ctx c = {sdc_cpu_backend(), {SDC_CPU, 0}, &arena, NULL, SDC_F32};
    int64_t sh[8], s2[8];
    int nd, n2;
    float *sample, *ehs, *target;
    double *ts;
    REQUIRE_OK(sdc_golden_f32(g, "unet/in/sample", &sample, sh, &nd, &err), &err);
    REQUIRE_OK(sdc_golden_f32(g, "unet/in/encoder_hidden_states", &ehs, s2, &n2, &err), &err);
    sdc_tensor x = sdc_op_upload(&c, NULL, nd, sh, sample);
    sdc_tensor ctx = sdc_op_upload(&c, NULL, n2, s2, ehs);
    REQUIRE_OK(sdc_golden_f32(g, "unet/in/target", &target, s2, &n2, &err), &err);
    REQUIRE_OK(sdc_golden_f64(g, "unet/in/timestep", &ts, s2, &n2, &err), &err);
    sdc_unet_cond cond = {.context = &ctx, .timesteps = ts};
    size_t before = arena.used;
    c.tape = &tape;
    sdc_tensor y = sdc_unet_forward(&c, NULL, u, &x, &cond);
    c.tape = NULL;
    REQUIRE(!tape.failed);
    r->forward_bytes = arena.used - before;
    size_t n = (size_t)sdc_tensor_numel(&y);
    float *dy = malloc(n * sizeof *dy);
    sdc_op_download(&c, dy, &y);
    for (size_t i = 0; i < n; i++) dy[i] = (float)(2.0 * ((double)dy[i] - target[i]) / (double)n); /* d mean(d²) */
    sdc_tape_zero_grads(&tape, &arena);
    r->pool_bytes = tape.pool_bytes;
    r->live_bytes = tape.plan->live_bytes;
    r->grad_bytes = tape.plan->grad_bytes;
    r->plan_ok = plan_is_sound(tape.plan);
    sdc_tensor gy = sdc_tape_grad(&tape, &y);
    REQUIRE(gy.data != NULL);
    c.be->upload(&gy, dy);
    REQUIRE_OK(sdc_tape_backward(&c, &tape, &err), &err);
    sdc_tensor gx = sdc_tape_grad(&tape, &x), gc = sdc_tape_grad(&tape, &ctx);
    r->nx = (size_t)sdc_tensor_numel(&x), r->nc = (size_t)sdc_tensor_numel(&ctx);
    r->gx = malloc(r->nx * sizeof(float)), r->gc = malloc(r->nc * sizeof(float));
    c.be->download(r->gx, &gx);
    c.be->download(r->gc, &gc);
    r->gp = malloc(u->params.total * sizeof(float));
    memcpy(r->gp, u->params.grad, u->params.total * sizeof(float));
    memset(u->params.grad, 0, u->params.total * sizeof(float));
    free(sample), free(ehs), free(target), free(ts), free(dy);
    sdc_tape_free(&tape);
    sdc_arena_free(&arena);
}

/* fp32 forward and backward against PyTorch's fp64: ~1e-6 measured; the
 * bar test_unet_grad.c holds the tape to. */
#define GRAD_TOL 1e-4

TEST(tape_plan_unet_same_with_checkpointing_and_matches_goldens) {
    sdc_error err = {0};
    sdc_model m;
    REQUIRE_OK(sdc_model_open(test_data("tiny-sd"), NULL, &m, &err), &err);
    char path[512];
    snprintf(path, sizeof path, "%s/golden.safetensors", test_data("tiny-sd"));
    sdc_golden g, gg;
    REQUIRE_OK(sdc_golden_open(path, &g, &err), &err);
    snprintf(path, sizeof path, "%s/golden_grads.safetensors", test_data("tiny-sd"));
    REQUIRE_OK(sdc_golden_open(path, &gg, &err), &err);
    sdc_unet_config cfg;
    REQUIRE_OK(sdc_unet_config_parse(sdc_model_component(&m, "unet")->config, "tiny-sd", &cfg, &err), &err);
    sdc_unet *u = calloc(1, sizeof *u);
    REQUIRE_OK(sdc_unet_build(u, &cfg, "unet", &err), &err);
    REQUIRE_OK(sdc_params_load(&u->params, &m.weights, NULL, NULL, &err), &err);
    REQUIRE_OK(sdc_params_alloc_grad(&u->params, &err), &err);

    unet_run r[2];
    run_unet(u, &g, 0, &r[0]);
    if (sdc_test_failed()) return;
    run_unet(u, &g, 1, &r[1]);
    if (sdc_test_failed()) return;
    /* checkpointing recomputes the same ops into the same plan: the same bits */
    CHECK(memcmp(r[0].gx, r[1].gx, r[0].nx * sizeof(float)) == 0);
    CHECK(memcmp(r[0].gc, r[1].gc, r[0].nc * sizeof(float)) == 0);
    CHECK(memcmp(r[0].gp, r[1].gp, u->params.total * sizeof(float)) == 0);

    /* against autograd: the inputs' gradients, and every parameter's norm */
    const char *keys[2] = {"unet/grad/sample", "unet/grad/encoder_hidden_states"};
    const float *got[2] = {r[0].gx, r[0].gc};
    const size_t ns[2] = {r[0].nx, r[0].nc};
    int64_t s2[8];
    int n2;
    for (int k = 0; k < 2; k++) {
        float *ref;
        REQUIRE_OK(sdc_golden_f32(&g, keys[k], &ref, s2, &n2, &err), &err);
        double e = sdc_rel_err(got[k], ref, ns[k]);
        CHECK_MSG(e <= GRAD_TOL, "%s: relative error %.3g", keys[k], e);
        free(ref);
    }
    cJSON *names = cJSON_Parse(sdc_golden_meta(&gg, "param_names"));
    REQUIRE(cJSON_IsArray(names));
    double *norms;
    REQUIRE_OK(sdc_golden_f64(&gg, "unet/grad/param_norms", &norms, s2, &n2, &err), &err);
    int bad = 0;
    for (int i = 0; i < cJSON_GetArraySize(names); i++) {
        const sdc_param *p = sdc_params_find(&u->params, cJSON_GetArrayItem(names, i)->valuestring);
        REQUIRE(p != NULL);
        double s = 0;
        for (int64_t j = 0; j < p->numel; j++) s += (double)r[0].gp[p->offset + j] * r[0].gp[p->offset + j];
        /* an absolute floor of 1e-8 for the gradients zero in exact
         * arithmetic (fp32 leaves rounding noise there), as test_unet_grad */
        if (fabs(sqrt(s) - norms[i]) > GRAD_TOL * norms[i] + 1e-8) bad++;
    }
    CHECK_EQ_INT(bad, 0);

    /* memory: the placement is sound, meets the live bound closely, and the
     * pool is well under what the forward's activations take */
    for (int k = 0; k < 2; k++) {
        CHECK(r[k].plan_ok);
        CHECK(r[k].pool_bytes >= r[k].live_bytes);
        if (getenv("SDC_TEST_VERBOSE"))
            fprintf(stderr, "    %s: forward %.2f MiB, pool %.2f MiB, live bound %.2f MiB, per activation %.2f MiB\n",
                    k ? "checkpointed" : "stored", r[k].forward_bytes / 1048576.0, r[k].pool_bytes / 1048576.0,
                    r[k].live_bytes / 1048576.0, r[k].grad_bytes / 1048576.0);
    }
    CHECK_MSG(r[0].pool_bytes < r[0].forward_bytes / 2, "pool %zu bytes for a forward of %zu", r[0].pool_bytes,
              r[0].forward_bytes);
    CHECK_MSG(r[0].pool_bytes <= r[0].live_bytes + r[0].live_bytes / 4, "pool %zu bytes, live bound %zu",
              r[0].pool_bytes, r[0].live_bytes);

    cJSON_Delete(names);
    free(norms);
    for (int k = 0; k < 2; k++) free(r[k].gx), free(r[k].gc), free(r[k].gp);
    sdc_unet_free(u);
    free(u);
    sdc_golden_close(&g);
    sdc_golden_close(&gg);
    sdc_model_close(&m);
}

/* ---- lifetimes ------------------------------------------------------------------------------------------------- */

/* As VAE training: two tapes recorded one after the other on one arena; the
 * second differentiated first, then the first, whose pool comes after the
 * second's (still held). The inputs' gradients outlive each backward, and
 * the tapes are reused over steps of different batch sizes (each step
 * plans anew); one step checkpoints the first tape's block. */
TEST(tape_plan_two_tapes_one_arena_steps_of_several_shapes) {
    sdc_error err = {0};
    weights w;
    weights_make(&w);
    sdc_arena arena;
    REQUIRE_OK(sdc_arena_init(&arena, 32u << 20, &err), &err);
    sdc_ctx c = SDC_CTX_CPU(&arena);
    float *wg[2] = {calloc(w.total, sizeof(float)), calloc(w.total, sizeof(float))};
    sdc_tape tape[2];
    for (int k = 0; k < 2; k++) {
        REQUIRE_OK(sdc_tape_init(&tape[k], &arena, &err), &err);
        sdc_tape_watch(&tape[k], w.buf, SDC_F32, wg[k], w.total);
    }
    const int64_t batch[3] = {1, 3, 2};
    size_t pool[3];
    for (int s = 0; s < 3; s++) {
        const int64_t B = batch[s];
        inputs in[2];
        grads ref[2], got[2];
        for (int k = 0; k < 2; k++) {
            inputs_make(&in[k], B, 0.3f * (float)s + (float)k);
            grads_alloc(&ref[k], &in[k], &w);
            grads_alloc(&got[k], &in[k], &w);
            reference(&c, &w, &in[k], &ref[k]);
            memset(wg[k], 0, w.total * sizeof(float));
            sdc_tape_reset(&tape[k]);
        }
        tape[0].checkpointing = s == 1;
        size_t mark = sdc_arena_mark(&arena);
        net n[2];
        record(&c, &tape[0], &w, &in[0], &n[0]);
        record(&c, &tape[1], &w, &in[1], &n[1]);
        REQUIRE_OK(differentiate(&c, &tape[1], &n[1], &in[1], &got[1], &err), &err);
        REQUIRE_OK(differentiate(&c, &tape[0], &n[0], &in[0], &got[0], &err), &err);
        CHECK(tape[0].pool >= tape[1].pool + tape[1].pool_bytes);
        /* the second tape's input gradient, read again after the first's backward */
        sdc_tensor gx1 = sdc_tape_grad(&tape[1], &n[1].x);
        CHECK(same(gx1.data, ref[1].x, (size_t)B * 64));
        pool[s] = tape[1].pool_bytes;
        sdc_arena_release(&arena, mark);
        for (int k = 0; k < 2; k++) {
            memcpy(got[k].w, wg[k], w.total * sizeof(float));
            check_same(&got[k], &ref[k], &in[k], &w, k ? "second tape" : "first tape");
            grads_free(&ref[k]);
            grads_free(&got[k]);
            inputs_free(&in[k]);
        }
    }
    CHECK(pool[0] < pool[2] && pool[2] < pool[1]); /* planned per shape: batch 1 < 2 < 3 */
    for (int k = 0; k < 2; k++) sdc_tape_free(&tape[k]), free(wg[k]);
    free(w.buf);
    sdc_arena_free(&arena);
}

/* An arena with no room left for the pool: seeding still writes somewhere
 * harmless, backward says what is missing, and the tape frees cleanly. */
TEST(tape_plan_full_arena_is_an_error) {
    sdc_error err = {0};
    weights w;
    weights_make(&w);
    inputs in;
    inputs_make(&in, 2, 0.0f);
    float *wg = calloc(w.total, sizeof(float));
    sdc_arena arena;
    REQUIRE_OK(sdc_arena_init(&arena, 4u << 20, &err), &err);
    sdc_ctx c = SDC_CTX_CPU(&arena);
    sdc_tape tape;
    REQUIRE_OK(sdc_tape_init(&tape, &arena, &err), &err);
    sdc_tape_watch(&tape, w.buf, SDC_F32, wg, w.total);
    net n;
    record(&c, &tape, &w, &in, &n);
    REQUIRE(sdc_arena_alloc(&arena, arena.cap - arena.used - 256) != NULL); /* someone else's */
    grads got;
    grads_alloc(&got, &in, &w);
    sdc_status st = differentiate(&c, &tape, &n, &in, &got, &err);
    CHECK_EQ_INT(st, SDC_ENOMEM);
    CHECK_MSG(strstr(err.msg, "activation gradients") != NULL, "%s", err.msg);
    for (size_t i = 0; i < w.total; i++) CHECK(wg[i] == 0.0f); /* nothing ran */
    sdc_tape_free(&tape);
    grads_free(&got);
    inputs_free(&in);
    free(wg);
    free(w.buf);
    sdc_arena_free(&arena);
}
