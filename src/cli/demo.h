/* sdc demo: sdc's job end to end on a model small enough for any CPU.
 *
 * The demo model (data/demo-model, made by tools/make_demo_model.sh from
 * the synthetic shapes world of data/synth_shapes.h) knows circles,
 * squares, triangles and stars. The demo draws a handful of images of a
 * subject it has never seen (a purple cross, on white), trains a DreamBooth
 * LoRA on them with the instance prompt "a sks shape on a white background"
 * (the same code as `sdc train`), and renders the same prompts with the
 * same seeds before and after: output_dir/before_after.png, with the LoRA,
 * the training images and the logs beside it.
 *
 * `sdc demo shapes` and `sdc demo pack` are the model recipe's steps: the
 * synthetic data set, and the shipped folder (fp16 weights, the trained text
 * encoder taken from the last training checkpoint). */
#ifndef SDC_CLI_DEMO_H
#define SDC_CLI_DEMO_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#define SDC_DEMO_MAX_PROMPTS 4
#define SDC_DEMO_INSTANCE_PROMPT "a sks shape on a white background"

typedef struct sdc_demo_opts {
    const char *model;      /* the demo model folder (NULL: sdc_demo_find_model) */
    const char *output_dir; /* default "demo" */
    int64_t steps;          /* LoRA training steps (0: the default, or the quick one) */
    int quick;              /* a shortened run (the test's): fewer steps, prompts, seeds and images */
    uint64_t seed;
} sdc_demo_opts;

typedef struct sdc_demo_result {
    int nprompts;
    const char *prompts[SDC_DEMO_MAX_PROMPTS];
    int has_subject[SDC_DEMO_MAX_PROMPTS]; /* the prompt names the subject ("sks") */
    /* mean |after − before| over the prompt's images, per 8-bit channel value (0..255) */
    double diff[SDC_DEMO_MAX_PROMPTS];
    char grid[4200]; /* the written before/after image */
} sdc_demo_result;

void sdc_demo_opts_default(sdc_demo_opts *o);
sdc_status sdc_demo_run(const sdc_demo_opts *o, sdc_demo_result *r, sdc_error *err);
/* data/demo-model under the working directory, else beside the executable
 * (a source checkout's ./sdc); 0 and the path in buf, or −1. */
int sdc_demo_find_model(char *buf, size_t cap);

/* `sdc demo shapes` and `sdc demo pack` (demo_model.c); argv[0] is the
 * subcommand's name. */
int demo_cmd_shapes(int argc, char **argv);
int demo_cmd_pack(int argc, char **argv);

#endif
