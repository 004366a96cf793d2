#include "backend/profile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"

int sdc_prof_on;

#define PROF_MAX 64

static struct {
    const char *name;
    double s;
    long n;
} g_rows[PROF_MAX];
static int g_nrows;

static int cmp(const void *a, const void *b) {
    double x = ((const double *)a)[0], y = ((const double *)b)[0];
    return x < y ? 1 : x > y ? -1 : 0;
}

static void print_at_exit(void) {
    double total = 0;
    for (int i = 0; i < g_nrows; i++) total += g_rows[i].s;
    if (total <= 0) return;
    /* sort a copy by time: (seconds, index) pairs */
    double order[PROF_MAX][2];
    for (int i = 0; i < g_nrows; i++) order[i][0] = g_rows[i].s, order[i][1] = i;
    qsort(order, (size_t)g_nrows, sizeof order[0], cmp);
    fprintf(stderr, "sdc: profile (SDC_PROFILE=1; each op synchronized)\n| op | calls | ms total | share |\n| --- | ---: | ---: | ---: |\n");
    for (int k = 0; k < g_nrows; k++) {
        int i = (int)order[k][1];
        fprintf(stderr, "| %s | %ld | %.1f | %.1f%% |\n", g_rows[i].name, g_rows[i].n, 1e3 * g_rows[i].s,
                100.0 * g_rows[i].s / total);
    }
    fprintf(stderr, "| total | | %.1f | |\n", 1e3 * total);
}

__attribute__((constructor)) static void prof_init(void) {
    const char *e = getenv("SDC_PROFILE");
    sdc_prof_on = e && *e && strcmp(e, "0") != 0;
    if (sdc_prof_on) atexit(print_at_exit);
}

double sdc_prof_begin(const sdc_ctx *c) {
    c->be->synchronize();
    return sdc_monotonic_s();
}

void sdc_prof_add(const char *name, double seconds) {
    int i = 0;
    while (i < g_nrows && strcmp(g_rows[i].name, name) != 0) i++;
    if (i == g_nrows) {
        if (g_nrows == PROF_MAX) return;
        g_rows[g_nrows++].name = name;
    }
    g_rows[i].s += seconds;
    g_rows[i].n++;
}

void sdc_prof_end(const sdc_ctx *c, const char *name, double t0) {
    c->be->synchronize();
    sdc_prof_add(name, sdc_monotonic_s() - t0);
}
