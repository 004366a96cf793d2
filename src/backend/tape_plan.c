/* The activation-gradient plan (tape_plan.h has the model). */
#include "backend/tape_plan.h"

#include <stdlib.h>
#include <string.h>

#define GRANULE ((size_t)64) /* the arena's alignment: the GPU kernels' vector loads rely on it */
#define NONE ((size_t)-1)

static size_t down64(size_t x) { return x & ~(GRANULE - 1); }
static size_t up64(size_t x) { return (x + GRANULE - 1) & ~(GRANULE - 1); }

/* One op's reference to arena bytes: slot 0 is its out, 1..3 its in[0..2]. */
typedef struct ext {
    size_t lo, hi;
    uint32_t op, slot;
} ext;

/* A region in placement order (reuses the extents' array). */
typedef struct key {
    size_t bytes, lo;
    int32_t born, idx;
} key;
_Static_assert(sizeof(key) <= sizeof(ext), "the placement order lives in the extents' array");

/* a, grown to hold `want` elements of elem bytes (NULL when out of memory:
 * a stays valid and owned by the caller). */
static void *grow(void *a, size_t *cap, size_t want, size_t elem) {
    if (a && want <= *cap) return a;
    size_t c = *cap > 256 ? *cap : 256;
    while (c < want) c *= 2;
    void *q = realloc(a, c * elem);
    if (q) *cap = c;
    return q;
}

long sdc_tape_plan_find(const sdc_tape_plan *p, size_t off) {
    size_t lo = 0, hi = p->nreg; /* the last region starting at or before off */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->reg[mid].lo <= off) lo = mid + 1;
        else hi = mid;
    }
    return lo > 0 && off < p->reg[lo - 1].hi ? (long)lo - 1 : -1;
}

/* The arena offset of x when its gradient is t's to plan; NONE for no
 * bytes, a watched parameter, a tensor outside the arena, or one whose
 * gradient a parent tape holds (a checkpointed module's x and y). */
static size_t own_off(const sdc_tape *t, const sdc_tensor *x) {
    const unsigned char *p = x->data;
    if (!p || sdc_tensor_nbytes(x) == 0) return NONE;
    if (p < t->arena_base || p >= t->arena_base + t->arena_cap || sdc_tape_store_of(t, p) >= 0) return NONE;
    size_t off = (size_t)(p - t->arena_base);
    for (const sdc_tape *q = t->parent; q; q = q->parent)
        if (q->planned && sdc_tape_plan_find(q->plan, off) >= 0) return NONE;
    return off;
}

/* Whether an op's backward runs at all: its output has a gradient (a
 * watched parameter's, or one in the arena: then it is one of the regions
 * being planned or a parent's). sdc_tape_grad gives the rest none, and
 * backward skips them. */
static int has_grad(const sdc_tape *t, const sdc_tensor *out) {
    const unsigned char *p = out->data;
    if (!p || sdc_tensor_nbytes(out) == 0) return 0;
    return sdc_tape_store_of(t, p) >= 0 || (p >= t->arena_base && p < t->arena_base + t->arena_cap);
}

/* Which inputs an op kind's backward can write as a whole, first
 * contribution (tape.c follows the same table): the ones whose gradient
 * comes out of one kernel or copy of exactly that input's shape. */
static unsigned assignable(sdc_tape_kind kind) {
    switch (kind) {
    case SDC_TAPE_LINEAR:
    case SDC_TAPE_CONV2D:
    case SDC_TAPE_GROUP_NORM:
    case SDC_TAPE_LAYER_NORM:
    case SDC_TAPE_ACT:
    case SDC_TAPE_GEGLU:
    case SDC_TAPE_UPSAMPLE2X:
    case SDC_TAPE_TO_TOKENS:
    case SDC_TAPE_FROM_TOKENS: return 1u;
    case SDC_TAPE_AXPBY:
    case SDC_TAPE_ADD_CHANNEL:
    case SDC_TAPE_CONCAT1: return 3u;
    case SDC_TAPE_ATTENTION: return 7u;
    default: return 0u; /* slice (zeros around g), embedding (a table), checkpoint (a sub-tape) */
    }
}

static int by_lo(const void *a, const void *b) {
    const ext *x = a, *y = b;
    if (x->lo != y->lo) return x->lo < y->lo ? -1 : 1;
    return x->hi > y->hi ? -1 : x->hi < y->hi; /* the wider first */
}

/* Largest first; ties: born first in backward, then lower address (deterministic). */
static int by_size(const void *a, const void *b) {
    const key *x = a, *y = b;
    if (x->bytes != y->bytes) return x->bytes > y->bytes ? -1 : 1;
    if (x->born != y->born) return x->born > y->born ? -1 : 1;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* In backward order (higher step first), then by pool offset. */
static int by_step(const void *a, const void *b) {
    const sdc_tape_zero *x = a, *y = b;
    if (x->step != y->step) return x->step > y->step ? -1 : 1;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Regions: the extents ops reference, sorted and merged where they overlap;
 * p->ref[4·op + slot] says which region each reference fell in. */
static size_t build_regions(sdc_tape_plan *p, const sdc_tape *t) {
    ext *e = p->ext;
    size_t ne = 0;
    for (size_t i = 0; i < t->n; i++) {
        const sdc_tape_op *op = &t->ops[i];
        int32_t *ref = p->ref + 4 * i;
        ref[0] = ref[1] = ref[2] = ref[3] = -1;
        p->assign[i] = 0;
        if (!has_grad(t, &op->out)) continue; /* its backward does nothing */
        const sdc_tensor *x[4] = {&op->out, &op->in[0], &op->in[1], &op->in[2]};
        for (uint32_t s = 0; s < 4; s++) {
            size_t off = own_off(t, x[s]);
            if (off != NONE) e[ne++] = (ext){off, off + sdc_tensor_nbytes(x[s]), (uint32_t)i, s};
        }
    }
    qsort(e, ne, sizeof *e, by_lo);
    size_t nreg = 0;
    for (size_t k = 0; k < ne; k++) {
        if (nreg == 0 || e[k].lo >= p->reg[nreg - 1].hi)
            p->reg[nreg++] = (sdc_tape_region){.lo = e[k].lo, .hi = e[k].hi};
        else if (e[k].hi > p->reg[nreg - 1].hi) p->reg[nreg - 1].hi = e[k].hi;
        p->ref[4 * (size_t)e[k].op + e[k].slot] = (int32_t)(nreg - 1);
    }
    return nreg;
}

/* Lifetimes and first writes. A region's highest referencing op either
 * reads its gradient (the region is that op's out: an output, seeded before
 * backward) or writes the first contribution to it (born there); its lowest
 * either produces it (out, and no input in it: dies there) or not (an input
 * of the graph, or updated in place: lives on). The seed's region (`seed`,
 * or −1) is an output whatever reads it. */
static void lifetimes(sdc_tape_plan *p, const sdc_tape *t, long seed) {
    for (size_t r = 0; r < p->nreg; r++) p->reg[r].born = p->reg[r].dies = -1;
    for (size_t i = 0; i < t->n; i++)
        for (int s = 0; s < 4; s++) {
            int32_t r = p->ref[4 * i + s];
            if (r < 0) continue;
            if (p->reg[r].dies < 0) p->reg[r].dies = (int)i; /* the first op: lowest */
            p->reg[r].born = (int)i;                         /* the last so far: highest */
        }
    for (size_t r = 0; r < p->nreg; r++) {
        sdc_tape_region *g = &p->reg[r];
        const int hi = g->born, lo = g->dies;
        const int32_t *rh = p->ref + 4 * (size_t)hi, *rl = p->ref + 4 * (size_t)lo;
        const int32_t ri = (int32_t)r;
        g->bytes = up64(g->hi) - down64(g->lo);
        g->assigned = 0;
        g->dies = rl[0] == ri && rl[1] != ri && rl[2] != ri && rl[3] != ri ? lo : -1;
        if (rh[0] == ri || (long)r == seed) {
            g->born = (int)t->n;
            continue;
        }
        /* the birth op may assign it when exactly one of its inputs lies in
         * the region and covers it byte for byte, and its kind's backward
         * writes that input's gradient whole in one go */
        int k = -1, count = 0;
        for (int s = 1; s < 4; s++)
            if (rh[s] == ri) k = s - 1, count++;
        const sdc_tape_op *op = &t->ops[hi];
        if (count == 1 && (assignable(op->kind) >> k & 1u)) {
            const sdc_tensor *x = &op->in[k];
            size_t off = (size_t)((const unsigned char *)x->data - t->arena_base);
            if (off == g->lo && off + sdc_tensor_nbytes(x) == g->hi) {
                g->assigned = 1;
                p->assign[hi] |= (uint8_t)(1u << k);
            }
        }
    }
}

/* Greedy by size: each region, largest first, at the lowest offset where it
 * overlaps no placed region whose lifetime overlaps its own. The placed
 * regions are kept by offset, so one pass over them finds the first gap:
 * O(R²) compares for R regions (~1.5 ms for SDXL's 1.6k on one core). */
static void place(sdc_tape_plan *p) {
    key *order = p->ext;
    for (size_t r = 0; r < p->nreg; r++)
        order[r] = (key){p->reg[r].bytes, p->reg[r].lo, p->reg[r].born, (int32_t)r};
    qsort(order, p->nreg, sizeof *order, by_size);
    size_t np = 0, pool = 0;
    for (size_t k = 0; k < p->nreg; k++) {
        sdc_tape_region *r = &p->reg[order[k].idx];
        size_t at = 0;
        for (size_t j = 0; j < np; j++) {
            const sdc_tape_region *q = &p->reg[p->placed[j]];
            if (q->dies > r->born || r->dies > q->born) continue; /* lifetimes apart */
            if (q->off >= at + r->bytes) break;                   /* the gap below q fits */
            if (q->off + q->bytes > at) at = q->off + q->bytes;
        }
        r->off = at;
        /* keep placed[] by offset: insert before the first region at or above `at` */
        size_t lo = 0, hi = np;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (p->reg[p->placed[mid]].off < at) lo = mid + 1;
            else hi = mid;
        }
        memmove(p->placed + lo + 1, p->placed + lo, (np - lo) * sizeof *p->placed);
        p->placed[lo] = order[k].idx;
        np++;
        if (at + r->bytes > pool) pool = at + r->bytes;
    }
    p->pool_bytes = pool;
}

/* Σ bytes alive at each step, −1 … n: the bound any placement meets. */
static void live_bound(sdc_tape_plan *p, size_t n) {
    int64_t *d = p->live;
    memset(d, 0, (n + 3) * sizeof *d);
    size_t total = 0;
    for (size_t r = 0; r < p->nreg; r++) {
        const sdc_tape_region *g = &p->reg[r];
        d[g->dies + 1] += (int64_t)g->bytes;
        d[g->born + 2] -= (int64_t)g->bytes;
        total += g->bytes;
    }
    int64_t cur = 0, best = 0;
    for (size_t s = 0; s < n + 2; s++) {
        cur += d[s];
        if (cur > best) best = cur;
    }
    p->live_bytes = (size_t)best;
    p->grad_bytes = total;
}

/* The ranges to clear: every region its birth op does not assign, at its
 * birth (outputs at once, except the seed the caller writes whole), merged
 * where neighbours in the pool start life at the same step. */
static void zeros(sdc_tape_plan *p, const sdc_tape *t, const sdc_tensor *seed, long seed_r) {
    long skip = -1;
    if (seed_r >= 0) {
        size_t off = (size_t)((const unsigned char *)seed->data - t->arena_base);
        if (p->reg[seed_r].lo == off && p->reg[seed_r].hi == off + sdc_tensor_nbytes(seed)) skip = seed_r;
    }
    size_t nz = 0;
    for (size_t r = 0; r < p->nreg; r++)
        if (!p->reg[r].assigned && (long)r != skip)
            p->zero[nz++] = (sdc_tape_zero){p->reg[r].born, p->reg[r].off, p->reg[r].bytes};
    qsort(p->zero, nz, sizeof *p->zero, by_step);
    size_t m = 0;
    for (size_t k = 0; k < nz; k++) {
        sdc_tape_zero *last = m > 0 ? &p->zero[m - 1] : NULL;
        if (last && last->step == p->zero[k].step && last->off + last->bytes == p->zero[k].off)
            last->bytes += p->zero[k].bytes;
        else p->zero[m++] = p->zero[k];
    }
    p->nzero = m;
}

sdc_status sdc_tape_plan_build(sdc_tape_plan *p, const sdc_tape *t, const sdc_tensor *seed, sdc_error *err) {
    const size_t n = t->n, ne = 4 * n;
    p->nreg = p->nzero = p->pool_bytes = p->live_bytes = p->grad_bytes = 0;
    /* the regions and their orders fit in arrays of one per reference */
    void *q;
#define GROW(f, want, esize) ((q = grow(p->f, &p->f##_cap, (want), (esize))) != NULL && (p->f = q, 1))
    if (!GROW(ext, ne, sizeof(ext)) || !GROW(ref, ne, sizeof *p->ref) || !GROW(assign, n, 1) ||
        !GROW(reg, ne, sizeof *p->reg) || !GROW(placed, ne, sizeof *p->placed) || !GROW(zero, ne, sizeof *p->zero) ||
        !GROW(live, n + 3, sizeof *p->live))
        return sdc_fail(err, SDC_ENOMEM, "out of memory planning the activation gradients of %zu ops", n);
#undef GROW
    p->nreg = build_regions(p, t);
    size_t so = seed ? own_off(t, seed) : NONE;
    long sr = so == NONE ? -1 : sdc_tape_plan_find(p, so);
    lifetimes(p, t, sr);
    place(p);
    live_bound(p, n);
    zeros(p, t, seed, sr);
    return SDC_OK;
}

void sdc_tape_plan_free(sdc_tape_plan *p) {
    free(p->reg);
    free(p->assign);
    free(p->zero);
    free(p->ext);
    free(p->ref);
    free(p->placed);
    free(p->live);
    memset(p, 0, sizeof *p);
}
