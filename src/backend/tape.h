/* Reverse-mode differentiation over the op layer.
 *
 * Instead of a hand-written x_backward beside every module (DESIGN.md
 * principle 3, llm.c's way), the ops record themselves on a tape while a
 * context has one, and sdc_tape_backward walks the tape in reverse calling
 * each op's backward (backend/ops_backward.h). Every model written over the
 * ops (UNet, CLIP, VAE) is then differentiable with no second copy of its
 * structure to keep in sync — the reason for departing from the guide; the
 * pairing of forward and backward lives at the op level instead.
 *
 * Where gradients live (no per-tensor allocation):
 * - a parameter's gradient sits at the same offset in its store's gradient
 *   buffer as the parameter in the parameter buffer (registered stores);
 * - activation gradients live in one pool carved from the arena once the
 *   forward is recorded (sdc_tape_zero_grads), planned like the arena
 *   itself (backend/tape_plan.h): the bytes the recorded ops reference form
 *   regions (views and in-place ops share one); a region's gradient exists
 *   from its last consumer's backward (which usually assigns it whole, so
 *   nothing is zeroed) to its producer's, and regions whose lifetimes do not
 *   overlap share memory. The pool is about the size of the widest cut of
 *   the graph instead of all its activations.
 * Tensors in neither (frozen weights, tensors outside the arena) get no
 * gradient.
 *
 * Rules for code run under a tape: the arena is not released (modules call
 * sdc_ctx_release, a no-op while recording), a buffer is written by one op
 * only, except the in-place forms of add/axpby/add_channel on a buffer that
 * no recorded op has read yet (their own backward needs no input values;
 * an earlier reader's would). Ops whose backward reads their input refuse
 * to overwrite it (asserted in ops.c). A buffer whose gradient the caller
 * reads after backward (a graph input) is written by no recorded op; the
 * caller seeds only outputs (buffers no recorded op reads). */
#ifndef SDC_BACKEND_TAPE_H
#define SDC_BACKEND_TAPE_H

#include "backend/backend.h"
#include "core/error.h"

typedef enum sdc_tape_kind {
    SDC_TAPE_LINEAR,
    SDC_TAPE_CONV2D,
    SDC_TAPE_GROUP_NORM,
    SDC_TAPE_LAYER_NORM,
    SDC_TAPE_ATTENTION,
    SDC_TAPE_ACT,
    SDC_TAPE_GEGLU,
    SDC_TAPE_AXPBY,
    SDC_TAPE_ADD_CHANNEL,
    SDC_TAPE_CONCAT1,
    SDC_TAPE_SLICE1,
    SDC_TAPE_TO_TOKENS,
    SDC_TAPE_FROM_TOKENS,
    SDC_TAPE_UPSAMPLE2X,
    SDC_TAPE_EMBEDDING,
    SDC_TAPE_CHECKPOINT, /* a module run without recording, recomputed in backward */
} sdc_tape_kind;

/* A checkpointable module call: out = fn(module, x, y) (y may be NULL). */
typedef sdc_tensor (*sdc_checkpoint_fn)(sdc_ctx *c, const void *module, const sdc_tensor *x, const sdc_tensor *y);

typedef struct sdc_tape_op {
    sdc_tape_kind kind;
    sdc_tensor out, in[3]; /* inputs by kind; in[i].data NULL when absent */
    int i0, i1, i2;        /* stride/pad, groups/act, heads/causal, slice start */
    float f0, f1;          /* eps, scale, alpha/beta */
    const int32_t *ids;    /* embedding: a copy owned by the tape */
    int64_t n;
    sdc_checkpoint_fn fn;  /* checkpoint: the module call to redo */
    const void *module;
    const float *lse;      /* attention: the forward's row statistics (arena), or NULL: recomputed */
} sdc_tape_op;

#define SDC_TAPE_MAX_STORES 4

typedef struct sdc_tape {
    sdc_tape_op *ops;
    size_t n, cap;
    int32_t *ids;
    size_t nids, ids_cap;
    int failed; /* out of memory while recording */
    /* activation gradients: a pool in the arena, planned per forward */
    const unsigned char *arena_base;
    size_t arena_cap;
    const sdc_backend *be;      /* whose memory the arena and gradients are */
    struct sdc_tape_plan *plan; /* backend/tape_plan.h (kept across steps) */
    unsigned char *pool;        /* the activation gradients, in the arena */
    size_t pool_bytes;          /* its size at the last plan */
    int planned;                /* sdc_tape_zero_grads ran since the last record */
    /* parameter stores whose gradients are wanted: element i of data (esize
     * bytes each: fp32, or bf16/fp16 weights) ↔ grad[i] (always fp32) */
    struct {
        const unsigned char *data;
        size_t esize;
        float *grad;
        size_t n;
    } stores[SDC_TAPE_MAX_STORES];
    int nstores;
    /* Called in backward after each op that added to a watched parameter
     * gradient (grad: the parameter's gradient, n elements), once that work
     * is enqueued: data parallelism starts a bucket's reduction as soon as
     * its last contribution is in (train/dp.h). NULL: none. */
    void (*grad_hook)(void *user, const float *grad, size_t n);
    void *grad_user;
    int checkpointing;    /* gradient checkpointing: modules run through sdc_checkpoint */
    struct sdc_tape *sub; /* the tape a checkpointed module is recomputed on (reused) */
    const struct sdc_tape *parent; /* a sub-tape's: where its module's x and y have gradients */
} sdc_tape;

/* A tape over an arena (nothing is allocated until the first plan). */
sdc_status sdc_tape_init(sdc_tape *t, const sdc_arena *arena, sdc_error *err);
/* The same for an arena in a backend's device memory. */
sdc_status sdc_tape_init_on(sdc_tape *t, const sdc_backend *be, const sdc_arena *arena, sdc_error *err);
void sdc_tape_free(sdc_tape *t);
/* Parameters data[0..n) of that dtype get gradients accumulated into the
 * fp32 grad[0..n). */
void sdc_tape_watch(sdc_tape *t, const void *data, sdc_dtype dtype, float *grad, size_t n);
/* Forgets the recorded ops (keeps capacity). */
void sdc_tape_reset(sdc_tape *t);
void sdc_tape_record(sdc_tape *t, const sdc_tape_op *op);
/* The gradient buffer of an activation or watched parameter (a tensor with
 * x's shape over gradient memory), or data NULL when it has none (an
 * activation no recorded op references, or before the plan). An
 * activation's gradient memory is valid from sdc_tape_zero_grads to the end
 * of sdc_tape_backward for the outputs (buffers no recorded op reads), and
 * past its end, until the arena is released, for the graph's inputs
 * (buffers no recorded op produced, e.g. uploads); an intermediate's only
 * while backward runs (its memory is reused once its producer is done). */
sdc_tensor sdc_tape_grad(const sdc_tape *t, const sdc_tensor *x);
/* Ends the forward: plans the activation gradients of everything recorded
 * so far, takes their pool from the arena (released with the caller's mark
 * around forward and backward) and clears the outputs' gradients. Call once
 * after the forward, before seeding; seed only outputs. When the arena has
 * no room, sdc_tape_backward reports it (the outputs' gradients are then
 * scratch memory, so seeding is still safe). */
void sdc_tape_zero_grads(sdc_tape *t, sdc_arena *arena);
/* Runs the recorded ops backwards. The gradient of the outputs must have
 * been written into their sdc_tape_grad buffers (the seed). Temporaries come
 * from c's arena (after the pool) and are released. */
sdc_status sdc_tape_backward(sdc_ctx *c, sdc_tape *t, sdc_error *err);

/* Gradient checkpointing: with a recording tape whose `checkpointing` is
 * set, runs fn without recording (its temporaries are freed at once) and
 * records one op that, in backward, runs fn again on a sub-tape and
 * differentiates it. Otherwise just calls fn. Gradients are the same either
 * way (the recomputation repeats the same deterministic ops); memory holds
 * only module boundaries plus one module's activations and gradients at a
 * time. fn may read no arena tensor other than x and y (gradients reach
 * the outer tape through those two). */
sdc_tensor sdc_checkpoint(sdc_ctx *c, sdc_checkpoint_fn fn, const void *module, const sdc_tensor *x,
                          const sdc_tensor *y);

#endif
