/* The memory plan for a tape's activation gradients (backend/tape.h).
 *
 * Once the forward is recorded, every arena byte range an op references is
 * known, and backward runs the ops in reverse (n−1 … 0). So:
 * - regions: the referenced extents, overlapping ones merged (a view or a
 *   reshape shares its buffer's data; an in-place op's out is its input);
 * - lifetime, in backward steps: a region's gradient is born at the highest
 *   op reading the region (its last consumer writes the first contribution)
 *   and dies after the lowest (its producer reads the gradient). Regions no
 *   op produced (graph inputs) live to the end of backward: callers read
 *   them afterwards. Outputs (regions no op reads) live from the start:
 *   the caller seeds them;
 * - placement: offline interval allocation, greedy by size (largest first,
 *   each at the lowest offset clear of every placed region whose lifetime
 *   overlaps its own), in 64-byte granules so every gradient keeps its
 *   activation's alignment;
 * - first writes: when the birth op writes the whole region as its input's
 *   gradient (same bytes, an op that assigns its dx), it writes straight
 *   into gradient memory; every other region is cleared at its birth.
 *
 * The arrays are grown once and reused: a training step re-records the same
 * shapes. */
#ifndef SDC_BACKEND_TAPE_PLAN_H
#define SDC_BACKEND_TAPE_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "backend/tape.h"
#include "core/error.h"

typedef struct sdc_tape_region {
    size_t lo, hi;     /* arena offsets of the referenced bytes: [lo, hi) */
    size_t off, bytes; /* the gradient: pool offset of lo rounded down to 64, and its 64-byte granules */
    int born;          /* first backward step holding it (an op index; n: from the start) */
    int dies;          /* last step (−1: to the end of backward and after) */
    int assigned;      /* its birth op writes it whole: never cleared */
} sdc_tape_region;

/* A pool range to clear before op `step`'s backward (step n: at planning). */
typedef struct sdc_tape_zero {
    int step;
    size_t off, bytes;
} sdc_tape_zero;

typedef struct sdc_tape_plan {
    sdc_tape_region *reg; /* sorted by lo */
    size_t nreg;
    uint8_t *assign;      /* per op: bit k set when the op's backward assigns in[k]'s whole gradient */
    sdc_tape_zero *zero;  /* by step, descending */
    size_t nzero;
    size_t pool_bytes;    /* the plan's size */
    size_t live_bytes;    /* the most gradient bytes alive at one step: no placement needs less */
    size_t grad_bytes;    /* Σ region sizes: one gradient per activation, as without a plan */
    /* state of the last plan, for sdc_tape_backward and sdc_tape_grad */
    enum { SDC_PLAN_SEEDING, SDC_PLAN_RUNNING, SDC_PLAN_DONE } phase;
    sdc_status status;
    sdc_error err;
    void *scratch; /* when the plan failed: what outputs' gradients point at (seeding stays safe) */
    size_t scratch_bytes;
    /* work arrays (grown, never shrunk) */
    void *ext;        /* referenced extents, then the placement order */
    int32_t *ref;     /* per op and slot (out, in[0..2]): its region, or −1 */
    int32_t *placed;  /* regions placed so far, by pool offset */
    int64_t *live;    /* bytes born/dying per step */
    size_t reg_cap, assign_cap, zero_cap, ext_cap, ref_cap, placed_cap, live_cap;
} sdc_tape_plan;

/* Plans t's recorded ops into p. seed: an output whose gradient the caller
 * writes whole at once (not cleared), or NULL. Fails only when host memory
 * for the arrays is short. */
sdc_status sdc_tape_plan_build(sdc_tape_plan *p, const sdc_tape *t, const sdc_tensor *seed, sdc_error *err);
/* The region holding arena offset off, or −1. */
long sdc_tape_plan_find(const sdc_tape_plan *p, size_t off);
/* Where a region's byte at arena offset off has its gradient, as a pool offset. */
static inline size_t sdc_tape_plan_at(const sdc_tape_region *r, size_t off) {
    return r->off + (off - (r->lo & ~(size_t)63));
}
void sdc_tape_plan_free(sdc_tape_plan *p);

/* The watched store holding p, or −1 (tape.c). */
int sdc_tape_store_of(const sdc_tape *t, const void *p);

#endif
