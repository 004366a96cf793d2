/* CPU backend micro-benchmark: the ops that dominate an SD1.5 UNet step at
 * 64×64 latents, batch 2. Not a test; not built by make. Build and run:
 *
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -fopenmp -Isrc -I/usr/include/x86_64-linux-gnu/openblas-pthread bench/ops_cpu.c src/backend/ops.c src/backend/cpu/[a-z]*.c src/core/[a-z]*.c -o build/bench_ops_cpu -lopenblas -lm && build/bench_ops_cpu
 *
 * Prints the median of a few runs per op (wall time, and CPU time of all
 * threads: on a shared machine only the latter is trustworthy), with GFLOP/s
 * (from wall time) for the GEMM-bound ones. Threads: OMP_NUM_THREADS and
 * OPENBLAS_NUM_THREADS (default: all cores). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "backend/ops.h"
#include "core/arena.h"

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static double now(void) { return clock_s(CLOCK_MONOTONIC); }
/* CPU seconds of all threads: on a shared machine wall time includes waiting
 * for other processes, CPU time does not */
static double cpu_now(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }
static double g_cpu; /* median-run CPU seconds of the last TIME() */

static void randn(sdc_tensor *t, unsigned seed) {
    float *x = t->data;
    uint64_t s = 0x9E3779B97F4A7C15ull ^ seed;
    for (int64_t i = 0; i < sdc_tensor_numel(t); i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(s >> 40) / 16777216.0 * 2.0 - 1.0);
    }
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* median wall seconds of `reps` runs after one warm-up (and g_cpu: the
 * median CPU seconds) */
#define TIME(reps, stmt)                                          \
    ({                                                            \
        double t_[64], c_[64];                                    \
        stmt;                                                     \
        for (int r_ = 0; r_ < (reps); r_++) {                     \
            double t0_ = now(), c0_ = cpu_now();                  \
            stmt;                                                 \
            t_[r_] = now() - t0_;                                 \
            c_[r_] = cpu_now() - c0_;                             \
        }                                                         \
        qsort(t_, (size_t)(reps), sizeof(double), cmp_d);         \
        qsort(c_, (size_t)(reps), sizeof(double), cmp_d);         \
        g_cpu = c_[(reps) / 2];                                   \
        t_[(reps) / 2];                                           \
    })

static void row(const char *name, double sec, double flops) {
    printf("%-44s %9.2f ms %9.2f ms", name, sec * 1e3, g_cpu * 1e3);
    if (flops > 0) printf("  %7.1f GFLOP/s", flops / sec * 1e-9);
    printf("\n");
}

int main(void) {
    sdc_arena arena;
    sdc_error err;
    if (sdc_arena_init(&arena, (size_t)1 << 30, &err) != SDC_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    sdc_ctx c = {.be = sdc_cpu_backend(), .device = {SDC_CPU, 0}, .arena = &arena};
    const int64_t B = 2, C = 320, H = 64, W = 64, S = H * W, heads = 8, D = 40;
    const int reps = 5;
    printf("%-44s %12s %12s\n", "op", "wall", "cpu (all threads)");

    sdc_tensor x = sdc_ctx_new(&c, B, C, H, W), w3 = sdc_ctx_new(&c, C, C, 3, 3), b = sdc_ctx_new(&c, C);
    sdc_tensor w1 = sdc_ctx_new(&c, C, C, 1, 1), y = sdc_ctx_new(&c, B, C, H, W);
    sdc_tensor g = sdc_ctx_new(&c, C), be = sdc_ctx_new(&c, C);
    randn(&x, 1), randn(&w3, 2), randn(&b, 3), randn(&w1, 4), randn(&g, 5), randn(&be, 6);

    double conv_flops = 2.0 * B * C * S * C * 9;
    row("conv2d 3x3 320->320 64x64 B=2", TIME(reps, sdc_op_conv2d(&c, &y, &x, &w3, &b, 1, 1)), conv_flops);
    row("conv2d 1x1 320->320 64x64 B=2", TIME(reps, sdc_op_conv2d(&c, &y, &x, &w1, &b, 1, 0)), conv_flops / 9);
    row("group_norm 32 groups + SiLU [2,320,64,64]",
        TIME(reps, sdc_op_group_norm(&c, &y, &x, &g, &be, 32, 1e-5f, SDC_ACT_SILU)), 0);
    row("group_norm 32 groups [2,320,64,64]",
        TIME(reps, sdc_op_group_norm(&c, &y, &x, &g, &be, 32, 1e-5f, SDC_ACT_NONE)), 0);

    sdc_tensor q = sdc_ctx_new(&c, B, S, heads * D), k = sdc_ctx_new(&c, B, S, heads * D);
    sdc_tensor v = sdc_ctx_new(&c, B, S, heads * D), o = sdc_ctx_new(&c, B, S, heads * D);
    randn(&q, 7), randn(&k, 8), randn(&v, 9);
    double att_flops = 4.0 * B * heads * S * S * D;
    row("attention B=2 T=4096 8 heads x 40",
        TIME(3, sdc_op_attention(&c, &o, &q, &k, &v, (int)heads, 0.158113883f, 0)), att_flops);
    sdc_tensor kc = sdc_ctx_new(&c, B, 77, heads * D), vc = sdc_ctx_new(&c, B, 77, heads * D);
    randn(&kc, 10), randn(&vc, 11);
    row("cross-attention B=2 Tq=4096 Tk=77 8x40",
        TIME(reps, sdc_op_attention(&c, &o, &q, &kc, &vc, (int)heads, 0.158113883f, 0)), 4.0 * B * heads * S * 77 * D);

    sdc_tensor t = sdc_ctx_new(&c, B, S, C), t2 = sdc_ctx_new(&c, B, S, C);
    sdc_tensor wl = sdc_ctx_new(&c, 8 * C, C), bl = sdc_ctx_new(&c, 8 * C), h = sdc_ctx_new(&c, B, S, 8 * C);
    sdc_tensor hg = sdc_ctx_new(&c, B, S, 4 * C);
    randn(&t, 12), randn(&wl, 13), randn(&bl, 14);
    row("linear [8192,320]x[2560,320]^T (GEGLU proj)", TIME(reps, sdc_op_linear(&c, &h, &t, &wl, &bl)),
        2.0 * B * S * C * 8 * C);
    row("geglu [8192,2560] -> [8192,1280]", TIME(reps, sdc_op_geglu(&c, &hg, &h)), 0);
    row("layer_norm [8192,320]", TIME(reps, sdc_op_layer_norm(&c, &t2, &t, &g, &be, 1e-5f)), 0);
    row("to_tokens [2,320,64,64]", TIME(reps, sdc_op_to_tokens(&c, &t, &x)), 0);
    row("from_tokens [2,4096,320]", TIME(reps, sdc_op_from_tokens(&c, &y, &t, H, W)), 0);
    row("silu [2,320,64,64]", TIME(reps, sdc_op_act(&c, &y, &x, SDC_ACT_SILU)), 0);
    row("add [2,320,64,64]", TIME(reps, sdc_op_add(&c, &y, &x, &y)), 0);

    sdc_arena_free(&arena);
    return 0;
}
