/* Samplers: diffusers' schedulers DDIM, Euler, Euler ancestral, DPM++ 2M,
 * PNDM and LMS, step for step.
 *
 * A sampler is built as diffusers' `Class.from_config(cfg)` followed by
 * `set_timesteps(steps)` would build it, and then driven like diffusers'
 * loop:
 *
 *     x = noise * s.init_noise_sigma
 *     for (i = 0; i < s.count; i++) {
 *         inp = x * sdc_sampler_input_scale(&s, i);      // scale_model_input
 *         out = model(inp, s.timesteps[i]);
 *         sdc_sampler_step(&s, i, out, x, noise_fn, ctx);  // step(out, t, x)
 *     }
 *
 * Scalars (alphas, sigmas, their roots and logs) are computed in float32 as
 * diffusers computes them (its schedule tensors are float32); the update of
 * each element in double from the float latents and model output, stored
 * back as float. Against diffusers run in float64 this agrees to ~1e-6
 * relative (tests/test_samplers.c). */
#ifndef SDC_DIFFUSION_SAMPLER_H
#define SDC_DIFFUSION_SAMPLER_H

#include <stddef.h>

#include "diffusion/schedule.h"

typedef enum {
    SDC_SAMPLER_DDIM,     /* DDIMScheduler */
    SDC_SAMPLER_EULER,    /* EulerDiscreteScheduler */
    SDC_SAMPLER_EULER_A,  /* EulerAncestralDiscreteScheduler */
    SDC_SAMPLER_DPMPP_2M, /* DPMSolverMultistepScheduler (defaults: 2nd order dpmsolver++ midpoint) */
    SDC_SAMPLER_PNDM,     /* PNDMScheduler (PLMS; PRK warm-up unless skip_prk_steps) */
    SDC_SAMPLER_LMS,      /* LMSDiscreteScheduler (order 4) */
} sdc_sampler_kind;
#define SDC_SAMPLER_COUNT 6 /* not an enum value, so switches over the kinds need no default */

/* "ddim", "euler", "euler_a", "dpmpp_2m", "pndm", "lms"; an unknown name is
 * an SDC_EINVAL error listing the valid ones. */
sdc_status sdc_sampler_kind_parse(const char *name, sdc_sampler_kind *out, sdc_error *err);
/* The kind a scheduler class means ("DDIMScheduler" -> ddim, ...); unknown -> SDC_EUNSUPPORTED. */
sdc_status sdc_sampler_kind_from_class(const char *class_name, sdc_sampler_kind *out, sdc_error *err);
const char *sdc_sampler_name(sdc_sampler_kind k);
const char *sdc_sampler_class_name(sdc_sampler_kind k);

/* Karras sigmas: follow the config's use_karras_sigmas, or force on/off. */
enum { SDC_KARRAS_CONFIG = 0, SDC_KARRAS_ON = 1, SDC_KARRAS_OFF = -1 };

typedef struct sdc_sampler_opts {
    double eta; /* DDIM only; 0 = deterministic (default) */
    int karras; /* SDC_KARRAS_*: euler, dpmpp_2m, lms; ON for ddim/pndm is an error. euler_a: diffusers'
                   EulerAncestralDiscreteScheduler has no Karras sigmas (its config's use_karras_sigmas is
                   ignored, as diffusers ignores it); ON gives EulerDiscreteScheduler's Karras sigmas and
                   timesteps for the same schedule, stepped by the ancestral rule ("Euler a Karras") */
} sdc_sampler_opts;

/* Supplies n standard-normal floats: the noise one step adds (DDIM with
 * eta > 0, Euler ancestral: one call of n per step, every step), drawn in
 * the order diffusers draws them (randn_tensor of the latents' shape). */
typedef void (*sdc_noise_fn)(void *ctx, float *out, size_t n);

typedef struct sdc_sampler {
    /* public, read-only */
    sdc_sampler_kind kind;
    int count;               /* model evaluations (PNDM: more than steps) */
    double *timesteps;       /* [count]: the timestep the model gets (Euler/LMS with Karras: fractional) */
    double *sigmas;          /* [count+1] for euler, euler_a, dpmpp_2m, lms; NULL for ddim, pndm */
    double init_noise_sigma; /* the initial noise is multiplied by this */
    int draws_noise;         /* step needs a noise function */
    sdc_sched_config cfg;    /* the config as this kind's class reads it */

    /* private */
    size_t n;
    int steps;          /* num_inference_steps as asked */
    int next;           /* the step expected next */
    double eta;
    int T;              /* num_train_timesteps */
    float *ac;          /* alphas_cumprod [T] (float32 values) */
    float final_ac;     /* DDIM/PNDM: alphas_cumprod before t = 0 */
    float *sig;         /* sigmas as float32 [count+1] */
    float *noise;       /* [n] noise buffer */
    double *hist;       /* nhist_cap history buffers of n doubles */
    int nhist_cap, nhist;
    double *work;       /* PNDM: cur_model_output, cur_sample; [2n] */
    int counter;        /* PNDM step counter */
    int have_cur_sample;
    int lower_order_nums; /* DPM */
} sdc_sampler;

/* The config as diffusers' `Class.from_config` reads it for kind: the keys
 * that class knows take the file's value when present and the class's
 * default otherwise. */
void sdc_sampler_resolve_config(sdc_sampler_kind kind, const sdc_sched_config *in, sdc_sched_config *out);

/* Builds the schedule for `steps` denoising steps with room for latents of
 * n floats. opts may be NULL (eta 0, Karras per config). Errors: steps < 1
 * or more than num_train_timesteps (SDC_EINVAL), a config setting the class
 * reads but sdc does not implement (SDC_EUNSUPPORTED, naming the key), or
 * a combination diffusers refuses (SDC_EINVAL). */
sdc_status sdc_sampler_init(sdc_sampler *s, sdc_sampler_kind kind, const sdc_sched_config *cfg, int steps,
                            const sdc_sampler_opts *opts, size_t n, sdc_error *err);
void sdc_sampler_free(sdc_sampler *s);

/* scale_model_input's factor for evaluation i: 1 for ddim, pndm, dpmpp_2m;
 * 1/sqrt(sigma_i^2 + 1) for euler, euler_a, lms. */
double sdc_sampler_input_scale(const sdc_sampler *s, int i);

/* One step: x (n floats, in/out) from the model output of evaluation i
 * (epsilon, v or sample per cfg.prediction_type). Call for i = 0, 1, ...,
 * count-1 in order. noise may be NULL when !s->draws_noise. */
void sdc_sampler_step(sdc_sampler *s, int i, const float *model_output, float *x, sdc_noise_fn noise,
                      void *noise_ctx);

#endif
