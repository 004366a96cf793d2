/* Seconds per training step and peak memory on the CPU backend: a randomly
 * initialised UNet of a preset architecture (full fine-tune or LoRA rank 4
 * on to_q/k/v/out.0), random latents/noise/text states, AdamW. Not a test.
 *
 *   make bench && build/bench/train_cpu --preset sd15 --size 256 --batch 1 [--lora] [--checkpointing]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/rng.h"
#include "models/presets.h"
#include "nn/lora_attach.h"
#include "pipeline/trainer.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    const char *preset = "sd15";
    int size = 256, batch = 1, iters = 3, lora = 0, ckpt = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--lora")) lora = 1;
        else if (!strcmp(argv[i], "--checkpointing")) ckpt = 1;
        else if (i + 1 < argc && !strcmp(argv[i], "--preset")) preset = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--size")) size = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--batch")) batch = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--iters")) iters = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: train_cpu [--preset P] [--size PX] [--batch N] [--iters N] [--lora] [--checkpointing]\n");
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
    cJSON *j = cJSON_Parse(cfg_text), *sj = cJSON_Parse(p->scheduler);
    sdc_error err = {0};
    sdc_unet_config cfg;
    sdc_sched_config sched;
    sdc_unet *u = calloc(1, sizeof *u);
    if (!j || !sj || sdc_unet_config_parse(j, preset, &cfg, &err) || sdc_unet_build(u, &cfg, "unet", &err) ||
        sdc_sched_config_parse(sj, preset, &sched, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return 1;
    }
    sdc_params_init_random(&u->params, 0);
    sdc_lora_set ls;
    sdc_params *train = &u->params;
    static const char *const targets[] = {"to_q", "to_k", "to_v", "to_out.0"};
    if (lora) {
        if (sdc_lora_attach(&ls, &u->params, &(sdc_lora_config){.targets = targets, .ntargets = 4, .rank = 4, .alpha = 4.0f, .init = SDC_LORA_INIT_GAUSSIAN}, "unet_lora", &err)) {
            fprintf(stderr, "error: %s\n", err.msg);
            return 1;
        }
        sdc_params_init_random(&ls.params, 1);
        train = &ls.params;
    }
    sdc_arena arena;
    if (sdc_arena_init(&arena, (size_t)48 << 30, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return 1;
    }
    sdc_trainer_opts o = {.prediction = SDC_PRED_EPSILON, .grad_accum = 1, .max_grad_norm = 1.0,
                          .gradient_checkpointing = ckpt};
    sdc_adamw_hparams_default(&o.adam);
    o.adam.lr = 1e-5;
    sdc_lr_schedule_init(&o.lr, SDC_LR_CONSTANT, 1e-5, 0, iters + 1, 1, 1.0, &err);
    sdc_trainer t;
    if (sdc_trainer_init(&t, u, NULL, 0, &train, 1, &sched, &o, &SDC_CTX_CPU(&arena), &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return 1;
    }
    int64_t h = size / 8, w = size / 8, per = 4 * h * w, D = cfg.cross_attention_dim;
    float *x0 = malloc((size_t)(batch * per) * sizeof *x0), *noise = malloc((size_t)(batch * per) * sizeof *noise);
    float *ctx = malloc((size_t)(batch * 77 * D) * sizeof *ctx), *te = calloc((size_t)batch * 1280, sizeof *te);
    double tids[64 * 6];
    int64_t ts[64];
    sdc_rng r;
    sdc_rng_init(&r, 7);
    sdc_rng_fill_normal(&r, x0, (size_t)(batch * per));
    sdc_rng_fill_normal(&r, noise, (size_t)(batch * per));
    sdc_rng_fill_normal(&r, ctx, (size_t)(batch * 77 * D));
    for (int b = 0; b < batch; b++) {
        ts[b] = 100 + 300 * b;
        for (int k = 0; k < 6; k++) tids[b * 6 + k] = k == 2 || k == 3 ? 0 : size;
    }
    sdc_train_batch bt = {.B = batch, .x0 = x0, .noise = noise, .t = ts, .context = ctx, .h = h, .w = w, .S = 77,
                          .text_embeds = te, .time_ids = tids};
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    double loss, gn, lr, t0 = 0;
    int skipped;
    for (int i = 0; i <= iters; i++) {
        if (i == 1) t0 = now(); /* step 0 is the warm-up (first touch of every buffer) */
        if (sdc_trainer_micro_step(&t, &bt, &loss, &err) || sdc_trainer_optimizer_step(&t, &gn, &lr, &skipped, &err)) {
            fprintf(stderr, "error: %s\n", err.msg);
            return 1;
        }
    }
    double per_step = (now() - t0) / iters;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("| model | method | size | batch | threads | s/step | img/s | activation peak | process peak RSS |\n");
    printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    printf("| %s | %s%s | %dx%d | %d | %d | %.2f | %.3f | %.2f GiB | %.2f GiB |\n", preset, lora ? "LoRA r4" : "full",
           ckpt ? " +ckpt" : "", size, size, batch, threads, per_step, batch / per_step,
           (double)arena.peak / (1 << 30), (double)ru.ru_maxrss / (1 << 20));
    return 0;
}
