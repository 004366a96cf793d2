#include "core/arena.h"

#include <stdlib.h>
#include <string.h>

#include "core/vmem.h"

#define ARENA_ALIGN 64

sdc_status sdc_arena_init(sdc_arena *a, size_t cap, sdc_error *err) {
    memset(a, 0, sizeof *a);
    cap = (cap + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (cap == 0) return SDC_OK;
    /* page-aligned (so 64-byte aligned), committed as touched */
    a->base = sdc_vm_reserve(cap);
    if (!a->base) return sdc_fail(err, SDC_ENOMEM, "arena: cannot reserve %zu MiB of address space", cap >> 20);
    a->cap = cap;
    return SDC_OK;
}

void sdc_arena_init_over(sdc_arena *a, void *base, size_t cap) {
    memset(a, 0, sizeof *a);
    a->base = base;
    a->cap = cap & ~(size_t)(ARENA_ALIGN - 1);
    a->external = 1;
}

void sdc_arena_free(sdc_arena *a) {
    if (!a->external) sdc_vm_free(a->base, a->cap);
    memset(a, 0, sizeof *a);
}

void *sdc_arena_alloc(sdc_arena *a, size_t nbytes) {
    size_t start = (a->used + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (start > a->cap || nbytes > a->cap - start) return NULL;
    a->used = start + nbytes;
    if (a->used > a->peak) a->peak = a->used;
    return a->base + start;
}

void *sdc_arena_calloc(sdc_arena *a, size_t nbytes) {
    SDC_ASSERT(!a->external);
    void *p = sdc_arena_alloc(a, nbytes);
    if (p) memset(p, 0, nbytes);
    return p;
}
