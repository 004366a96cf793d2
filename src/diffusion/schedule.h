/* Noise schedules: a diffusers scheduler_config.json, and the training
 * schedule it implies (betas -> alphas_cumprod).
 *
 * diffusers builds every scheduler with `Class.from_config(json)`: the class
 * reads the keys it knows from the file and uses its own defaults for the
 * others, and the defaults differ per class (DDIM's clip_sample is True,
 * Euler's timestep_spacing is "linspace", PNDM's skip_prk_steps is False...).
 * So the parsed config remembers which keys the file gave (`present`), and
 * the sampler resolves the rest per class (sdc_sampler_resolve_config). */
#ifndef SDC_DIFFUSION_SCHEDULE_H
#define SDC_DIFFUSION_SCHEDULE_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "core/error.h"

typedef enum { SDC_PRED_EPSILON, SDC_PRED_V, SDC_PRED_SAMPLE } sdc_prediction;
typedef enum { SDC_SPACING_LEADING, SDC_SPACING_TRAILING, SDC_SPACING_LINSPACE } sdc_spacing;
typedef enum { SDC_BETA_LINEAR, SDC_BETA_SCALED_LINEAR, SDC_BETA_SQUAREDCOS_CAP_V2 } sdc_beta_schedule;
typedef enum { SDC_FINAL_SIGMA_ZERO, SDC_FINAL_SIGMA_MIN } sdc_final_sigmas;
typedef enum { SDC_INTERP_LINEAR, SDC_INTERP_LOG_LINEAR } sdc_interpolation;
typedef enum { SDC_TIMESTEP_DISCRETE, SDC_TIMESTEP_CONTINUOUS } sdc_timestep_type;
/* DPMSolverMultistepScheduler's algorithm_type ("deis" is read as dpmsolver++, as diffusers does). */
typedef enum { SDC_DPM_SOLVER_PP, SDC_DPM_SOLVER, SDC_DPM_SDE_SOLVER_PP, SDC_DPM_SDE_SOLVER } sdc_dpm_algorithm;
/* solver_type ("logrho", "bh1", "bh2" are read as midpoint, as diffusers does). */
typedef enum { SDC_SOLVER_MIDPOINT, SDC_SOLVER_HEUN } sdc_solver_type;

/* One bit per key in sdc_sched_config.present, set when the file gave it. */
typedef enum {
    SDC_SK_NUM_TRAIN_TIMESTEPS,
    SDC_SK_BETA_START,
    SDC_SK_BETA_END,
    SDC_SK_BETA_SCHEDULE,
    SDC_SK_PREDICTION_TYPE,
    SDC_SK_TIMESTEP_SPACING,
    SDC_SK_STEPS_OFFSET,
    SDC_SK_SET_ALPHA_TO_ONE,
    SDC_SK_SKIP_PRK_STEPS,
    SDC_SK_CLIP_SAMPLE,
    SDC_SK_CLIP_SAMPLE_RANGE,
    SDC_SK_THRESHOLDING,
    SDC_SK_RESCALE_BETAS_ZERO_SNR,
    SDC_SK_USE_KARRAS_SIGMAS,
    SDC_SK_USE_EXPONENTIAL_SIGMAS,
    SDC_SK_USE_BETA_SIGMAS,
    SDC_SK_USE_LU_LAMBDAS,
    SDC_SK_USE_FLOW_SIGMAS,
    SDC_SK_SIGMA_MIN,
    SDC_SK_SIGMA_MAX,
    SDC_SK_INTERPOLATION_TYPE,
    SDC_SK_TIMESTEP_TYPE,
    SDC_SK_FINAL_SIGMAS_TYPE,
    SDC_SK_SOLVER_ORDER,
    SDC_SK_ALGORITHM_TYPE,
    SDC_SK_SOLVER_TYPE,
    SDC_SK_LOWER_ORDER_FINAL,
    SDC_SK_EULER_AT_FINAL,
    SDC_SK_LAMBDA_MIN_CLIPPED,
    SDC_SK_COUNT
} sdc_sched_key;

/* diffusers' key name ("num_train_timesteps", ...). */
const char *sdc_sched_key_name(sdc_sched_key k);

typedef struct sdc_sched_config {
    char class_name[64]; /* "_class_name", e.g. "PNDMScheduler" ("" if absent) */
    char source[256];    /* the file, for messages */
    int num_train_timesteps;
    double beta_start, beta_end;
    sdc_beta_schedule beta_schedule;
    sdc_prediction prediction_type;
    sdc_spacing timestep_spacing;
    int steps_offset, set_alpha_to_one, skip_prk_steps, clip_sample;
    double clip_sample_range;
    int thresholding; /* dynamic thresholding: not implemented, refused by the samplers that read it */
    int rescale_betas_zero_snr, use_karras_sigmas;
    int use_exponential_sigmas, use_beta_sigmas, use_lu_lambdas, use_flow_sigmas; /* refused when true */
    double sigma_min, sigma_max; /* NAN when null/absent: the schedule's own ends */
    sdc_interpolation interpolation_type;
    sdc_timestep_type timestep_type;
    sdc_final_sigmas final_sigmas_type;
    int solver_order;
    sdc_dpm_algorithm algorithm_type;
    sdc_solver_type solver_type;
    int lower_order_final, euler_at_final;
    double lambda_min_clipped; /* -INFINITY when absent */
    uint64_t present;          /* bit (1 << sdc_sched_key) per key the file gave */
} sdc_sched_config;

static inline int sdc_sched_has(const sdc_sched_config *c, sdc_sched_key k) { return (int)((c->present >> k) & 1u); }

/* SD 1.x's scheduler (the PNDM config SD 1.4/1.5 ship): scaled_linear
 * 0.00085..0.012, 1000 steps, epsilon, leading, steps_offset 1,
 * set_alpha_to_one false, skip_prk_steps true, clip_sample false; those keys
 * count as given, every other key takes the sampler class's default. */
void sdc_sched_config_default(sdc_sched_config *out);
/* Every key at DDIMScheduler's default (what a class sets before its own). */
void sdc_sched_config_generic(sdc_sched_config *out);

/* Parses a scheduler_config.json object. Unknown keys are ignored, null
 * counts as absent, "_use_default_values" (keys diffusers filled in itself)
 * is honoured. A known key with a bad type or a value diffusers does not
 * accept (beta_schedule "foo"), or trained_betas given, is an error naming
 * `path` and the key. Values diffusers accepts but sdc does not implement
 * (thresholding, use_beta_sigmas, ...) parse, and are refused when a sampler
 * that reads them is built. */
sdc_status sdc_sched_config_parse(const cJSON *json, const char *path, sdc_sched_config *out, sdc_error *err);

/* The training schedule's alphas_cumprod[num_train_timesteps]: the float32
 * values diffusers stores (betas by torch.linspace in float32, cumprod
 * accumulated in double and rounded per element; rescale_betas_zero_snr
 * applied when set), widened to double. */
sdc_status sdc_sched_alphas_cumprod(const sdc_sched_config *cfg, double *out, sdc_error *err);
/* The same as float32, as the samplers use them. */
sdc_status sdc_sched_alphas_cumprod_f32(const sdc_sched_config *cfg, float *out, sdc_error *err);

#endif
