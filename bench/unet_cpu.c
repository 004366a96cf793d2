/* Seconds per UNet step on the CPU backend: a randomly initialised UNet of a
 * preset's architecture (sdc init's configs; no weights needed), the latent
 * batch of one classifier-free-guidance step (2 × --batch images), timed
 * over --iters forward calls after one warm-up. Not a test: it prints a
 * table, with the PyTorch figure to compare against given on the command
 * line if you have one.
 *
 *   make bench && build/bench/unet_cpu --preset sd15 --size 512 --batch 1
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend/ops.h"
#include "models/presets.h"
#include "models/unet.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    const char *preset = "sd15";
    int size = 512, batch = 1, iters = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--preset")) preset = argv[i + 1];
        else if (!strcmp(argv[i], "--size")) size = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--iters")) iters = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: unet_cpu [--preset sd15|sd21|sdxl|tiny] [--size PX] [--batch N] [--iters N]\n");
            return 2;
        }
    }
    const sdc_preset *p = sdc_preset_find(preset);
    if (!p) {
        fprintf(stderr, "unknown preset %s (%s)\n", preset, sdc_preset_names());
        return 2;
    }
    const char *cfg_text = NULL;
    for (int i = 0; i < p->nmodels; i++)
        if (p->models[i].kind == SDC_PRESET_UNET) cfg_text = p->models[i].config;
    cJSON *j = cJSON_Parse(cfg_text);
    sdc_error err = {0};
    sdc_unet_config cfg;
    sdc_unet *u = calloc(1, sizeof *u);
    if (!j || sdc_unet_config_parse(j, preset, &cfg, &err) || sdc_unet_build(u, &cfg, "unet", &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return 1;
    }
    sdc_params_init_random(&u->params, 0);
    int64_t B = 2 * batch, h = size / 8, w = size / 8, S = 77, D = cfg.cross_attention_dim;
    sdc_arena arena;
    if (sdc_arena_init(&arena, (size_t)16 << 30, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return 1;
    }
    sdc_ctx c = {sdc_cpu_backend(), {SDC_CPU, 0}, &arena, NULL, SDC_F32};
    float *x = calloc((size_t)(B * 4 * h * w), sizeof *x), *ctx = calloc((size_t)(B * S * D), sizeof *ctx);
    float *te = calloc((size_t)(B * 1280), sizeof *te);
    double ts[64], tids[64 * 6];
    for (int64_t b = 0; b < B; b++) {
        ts[b] = 500;
        for (int k = 0; k < 6; k++) tids[b * 6 + k] = k == 2 || k == 3 ? 0 : size;
    }
    for (int64_t i = 0; i < B * 4 * h * w; i++) x[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
    sdc_tensor xt = sdc_op_upload(&c, NULL, 4, SDC_SHAPE(B, 4, h, w), x);
    sdc_tensor ct = sdc_op_upload(&c, NULL, 3, SDC_SHAPE(B, S, D), ctx);
    int64_t P = cfg.text_time ? cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim : 0;
    sdc_tensor tt = {0};
    if (P) tt = sdc_op_upload(&c, NULL, 2, SDC_SHAPE(B, P), te);
    sdc_unet_cond cond = {.context = &ct, .timesteps = ts, .text_embeds = P ? &tt : NULL, .time_ids = tids, .n_time_ids = 6};
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    size_t mark = sdc_arena_mark(&arena);
    double t0 = now();
    sdc_unet_forward(&c, NULL, u, &xt, &cond); /* warm-up */
    double warm = now() - t0;
    sdc_arena_release(&arena, mark);
    t0 = now();
    for (int i = 0; i < iters; i++) {
        sdc_unet_forward(&c, NULL, u, &xt, &cond);
        sdc_arena_release(&arena, mark);
    }
    double per = (now() - t0) / iters;
    printf("| model | size | UNet batch | threads | s/step | warm-up s | peak activations |\n");
    printf("| --- | --- | --- | --- | --- | --- | --- |\n");
    printf("| %s | %dx%d | %lld | %d | %.2f | %.2f | %.2f GiB |\n", preset, size, size, (long long)B, threads, per,
           warm, (double)arena.peak / (1 << 30));
    return 0;
}
