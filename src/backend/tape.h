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
 * Where gradients live (no lookups, no per-tensor allocation):
 * - a parameter's gradient sits at the same offset in its store's gradient
 *   buffer as the parameter in the parameter buffer (registered stores);
 * - an activation's gradient sits at the same offset in a shadow buffer as
 *   the activation in the arena, so views and reshapes need nothing special.
 * Tensors in neither (frozen weights) get no gradient.
 *
 * Rules for code run under a tape: the arena is not released (modules call
 * sdc_ctx_release, a no-op while recording), a buffer is written by one op
 * only, except the in-place forms of add/axpby/add_channel on a buffer that
 * no recorded op has read yet (their own backward needs no input values;
 * an earlier reader's would). Ops whose backward reads their input refuse
 * to overwrite it (asserted in ops.c). */
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
} sdc_tape_op;

#define SDC_TAPE_MAX_STORES 4

typedef struct sdc_tape {
    sdc_tape_op *ops;
    size_t n, cap;
    int32_t *ids;
    size_t nids, ids_cap;
    int failed; /* out of memory while recording */
    /* activation gradients: a shadow of the arena */
    const unsigned char *arena_base;
    size_t arena_cap;
    void *shadow;
    const sdc_backend *be; /* whose memory the shadow and gradients are */
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
} sdc_tape;

/* A tape over c's arena (the shadow is as large as the arena: pages are
 * touched only as far as the arena is used). */
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
 * t's shape over gradient memory), or data NULL when it has none. */
sdc_tensor sdc_tape_grad(const sdc_tape *t, const sdc_tensor *x);
/* Clears the activation gradients of everything recorded so far. Call once
 * after the forward, before seeding. */
void sdc_tape_zero_grads(sdc_tape *t, const sdc_arena *arena);
/* Runs the recorded ops backwards. The gradient of the outputs must have
 * been written into their sdc_tape_grad buffers (the seed). Temporaries come
 * from c's arena and are released. */
sdc_status sdc_tape_backward(sdc_ctx *c, sdc_tape *t, sdc_error *err);

/* Gradient checkpointing: with a recording tape whose `checkpointing` is
 * set, runs fn without recording (its temporaries are freed at once) and
 * records one op that, in backward, runs fn again on a sub-tape and
 * differentiates it. Otherwise just calls fn. Gradients are the same either
 * way (the recomputation repeats the same deterministic ops); memory holds
 * only module boundaries plus one module's activations at a time. */
sdc_tensor sdc_checkpoint(sdc_ctx *c, sdc_checkpoint_fn fn, const void *module, const sdc_tensor *x,
                          const sdc_tensor *y);

#endif
