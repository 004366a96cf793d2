/* Bump allocator: one big block, aligned carving, reset instead of free.
 * Activations for a step come from an arena that is reset each step
 * (DESIGN.md principle 4); a mark/release pair frees a nested scope. */
#ifndef SDC_CORE_ARENA_H
#define SDC_CORE_ARENA_H

#include <stddef.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sdc_arena {
    unsigned char *base;
    size_t cap;
    size_t used;
    size_t peak; /* high-water mark, for memory reports */
    int external; /* base belongs to someone else (device memory): not freed here */
} sdc_arena;

sdc_status sdc_arena_init(sdc_arena *a, size_t cap, sdc_error *err);
/* An arena over memory the caller owns (and frees after sdc_arena_free),
 * e.g. a GPU buffer: the arena only does the bookkeeping. */
void sdc_arena_init_over(sdc_arena *a, void *base, size_t cap);
void sdc_arena_free(sdc_arena *a);
/* 64-byte aligned; NULL if the arena is full (a planning bug, or a size the
 * caller must report). */
void *sdc_arena_alloc(sdc_arena *a, size_t nbytes);
/* Host arenas only (it writes the zeros itself). */
void *sdc_arena_calloc(sdc_arena *a, size_t nbytes);
static inline size_t sdc_arena_mark(const sdc_arena *a) { return a->used; }
static inline void sdc_arena_release(sdc_arena *a, size_t mark) { a->used = mark; }
static inline void sdc_arena_reset(sdc_arena *a) { a->used = 0; }

#ifdef __cplusplus
}
#endif

#endif
