/* Scratch buffers for the CPU ops (im2col columns, attention scores): one
 * set per calling thread, grown to the largest request and kept, so a step
 * loop does no malloc after its first step. A pthread key frees a thread's
 * set when it exits; the main thread's set lives until the process ends
 * (still reachable, not a leak). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/cpu/cpu_ops.h"

typedef struct scratch_set {
    float *buf[SDC_CPU_SCRATCH_SLOTS];
    size_t cap[SDC_CPU_SCRATCH_SLOTS];
} scratch_set;

static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p) {
    scratch_set *s = p;
    for (int i = 0; i < SDC_CPU_SCRATCH_SLOTS; i++) free(s->buf[i]);
    free(s);
}

static void scratch_key_init(void) { SDC_ASSERT(pthread_key_create(&g_key, scratch_free) == 0); }

float *sdc_cpu_scratch(int slot, size_t n) {
    SDC_ASSERT(slot >= 0 && slot < SDC_CPU_SCRATCH_SLOTS);
    pthread_once(&g_once, scratch_key_init);
    scratch_set *s = pthread_getspecific(g_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        SDC_ASSERT(s != NULL);
        SDC_ASSERT(pthread_setspecific(g_key, s) == 0);
    }
    if (n > s->cap[slot]) {
        free(s->buf[slot]);
        /* 64-byte aligned for the vector loops; sizes are planned by the
         * callers (bounded tiles), so failing here is fatal like the arena */
        s->buf[slot] = NULL;
        size_t bytes = ((n * sizeof(float)) + 63) & ~(size_t)63;
        if (posix_memalign((void **)&s->buf[slot], 64, bytes) != 0) {
            fprintf(stderr, "sdc: fatal: cpu backend scratch of %zu bytes failed\n", bytes);
            abort();
        }
        s->cap[slot] = n;
    }
    return s->buf[slot];
}
