/* Sampler names, per-class config resolution, construction and dispatch,
 * and the numpy arithmetic the families share. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "diffusion/sampler_internal.h"

static const char *const names[SDC_SAMPLER_COUNT] = {"ddim", "euler", "euler_a", "dpmpp_2m", "pndm", "lms"};
static const char *const classes[SDC_SAMPLER_COUNT] = {
    "DDIMScheduler",          "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler", "PNDMScheduler",     "LMSDiscreteScheduler"};

const char *sdc_sampler_name(sdc_sampler_kind k) { return (unsigned)k < SDC_SAMPLER_COUNT ? names[k] : "?"; }
const char *sdc_sampler_class_name(sdc_sampler_kind k) {
    return (unsigned)k < SDC_SAMPLER_COUNT ? classes[k] : "?";
}

sdc_status sdc_sampler_kind_parse(const char *name, sdc_sampler_kind *out, sdc_error *err) {
    for (int k = 0; k < SDC_SAMPLER_COUNT; k++)
        if (name && strcmp(name, names[k]) == 0) {
            *out = (sdc_sampler_kind)k;
            return SDC_OK;
        }
    return sdc_fail(err, SDC_EINVAL, "unknown sampler \"%s\" (one of: ddim, euler, euler_a, dpmpp_2m, pndm, lms)",
                    name ? name : "(null)");
}

sdc_status sdc_sampler_kind_from_class(const char *class_name, sdc_sampler_kind *out, sdc_error *err) {
    for (int k = 0; k < SDC_SAMPLER_COUNT; k++)
        if (class_name && strcmp(class_name, classes[k]) == 0) {
            *out = (sdc_sampler_kind)k;
            return SDC_OK;
        }
    return sdc_fail(err, SDC_EUNSUPPORTED,
                    "scheduler class \"%s\" is not supported (DDIMScheduler, EulerDiscreteScheduler, "
                    "EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler, PNDMScheduler, "
                    "LMSDiscreteScheduler)",
                    class_name ? class_name : "(null)");
}

/* ---- per-class config --------------------------------------------------- */

#define BIT(k) ((uint64_t)1 << (k))
/* Keys of every class's __init__ */
#define COMMON                                                                                     \
    (BIT(SDC_SK_NUM_TRAIN_TIMESTEPS) | BIT(SDC_SK_BETA_START) | BIT(SDC_SK_BETA_END) |            \
     BIT(SDC_SK_BETA_SCHEDULE) | BIT(SDC_SK_PREDICTION_TYPE) | BIT(SDC_SK_TIMESTEP_SPACING) |      \
     BIT(SDC_SK_STEPS_OFFSET))

/* The keys each class's __init__ takes (DPM also reads sigma_min/sigma_max
 * when the file has them: from_config keeps unknown keys in the config). */
static const uint64_t known_keys[SDC_SAMPLER_COUNT] = {
    [SDC_SAMPLER_DDIM] = COMMON | BIT(SDC_SK_CLIP_SAMPLE) | BIT(SDC_SK_SET_ALPHA_TO_ONE) | BIT(SDC_SK_THRESHOLDING) |
                         BIT(SDC_SK_CLIP_SAMPLE_RANGE) | BIT(SDC_SK_RESCALE_BETAS_ZERO_SNR),
    [SDC_SAMPLER_EULER] = COMMON | BIT(SDC_SK_INTERPOLATION_TYPE) | BIT(SDC_SK_USE_KARRAS_SIGMAS) |
                          BIT(SDC_SK_USE_EXPONENTIAL_SIGMAS) | BIT(SDC_SK_USE_BETA_SIGMAS) | BIT(SDC_SK_SIGMA_MIN) |
                          BIT(SDC_SK_SIGMA_MAX) | BIT(SDC_SK_TIMESTEP_TYPE) | BIT(SDC_SK_RESCALE_BETAS_ZERO_SNR) |
                          BIT(SDC_SK_FINAL_SIGMAS_TYPE),
    [SDC_SAMPLER_EULER_A] = COMMON | BIT(SDC_SK_RESCALE_BETAS_ZERO_SNR),
    [SDC_SAMPLER_DPMPP_2M] = COMMON | BIT(SDC_SK_SOLVER_ORDER) | BIT(SDC_SK_THRESHOLDING) |
                             BIT(SDC_SK_ALGORITHM_TYPE) | BIT(SDC_SK_SOLVER_TYPE) | BIT(SDC_SK_LOWER_ORDER_FINAL) |
                             BIT(SDC_SK_EULER_AT_FINAL) | BIT(SDC_SK_USE_KARRAS_SIGMAS) |
                             BIT(SDC_SK_USE_EXPONENTIAL_SIGMAS) | BIT(SDC_SK_USE_BETA_SIGMAS) |
                             BIT(SDC_SK_USE_LU_LAMBDAS) | BIT(SDC_SK_USE_FLOW_SIGMAS) |
                             BIT(SDC_SK_FINAL_SIGMAS_TYPE) | BIT(SDC_SK_LAMBDA_MIN_CLIPPED) |
                             BIT(SDC_SK_RESCALE_BETAS_ZERO_SNR) | BIT(SDC_SK_SIGMA_MIN) | BIT(SDC_SK_SIGMA_MAX),
    [SDC_SAMPLER_PNDM] = COMMON | BIT(SDC_SK_SKIP_PRK_STEPS) | BIT(SDC_SK_SET_ALPHA_TO_ONE),
    [SDC_SAMPLER_LMS] = COMMON | BIT(SDC_SK_USE_KARRAS_SIGMAS) | BIT(SDC_SK_USE_EXPONENTIAL_SIGMAS) |
                        BIT(SDC_SK_USE_BETA_SIGMAS),
};

/* The class's own defaults; settings it does not have are off. */
static void class_defaults(sdc_sampler_kind kind, sdc_sched_config *c) {
    sdc_sched_config_generic(c);
    c->timestep_spacing =
        kind == SDC_SAMPLER_DDIM || kind == SDC_SAMPLER_PNDM ? SDC_SPACING_LEADING : SDC_SPACING_LINSPACE;
    c->set_alpha_to_one = kind == SDC_SAMPLER_DDIM; /* DDIM True, PNDM False */
    c->clip_sample = kind == SDC_SAMPLER_DDIM;
}

static void copy_key(sdc_sched_config *d, const sdc_sched_config *s, sdc_sched_key k) {
    switch (k) {
    case SDC_SK_NUM_TRAIN_TIMESTEPS: d->num_train_timesteps = s->num_train_timesteps; break;
    case SDC_SK_BETA_START: d->beta_start = s->beta_start; break;
    case SDC_SK_BETA_END: d->beta_end = s->beta_end; break;
    case SDC_SK_BETA_SCHEDULE: d->beta_schedule = s->beta_schedule; break;
    case SDC_SK_PREDICTION_TYPE: d->prediction_type = s->prediction_type; break;
    case SDC_SK_TIMESTEP_SPACING: d->timestep_spacing = s->timestep_spacing; break;
    case SDC_SK_STEPS_OFFSET: d->steps_offset = s->steps_offset; break;
    case SDC_SK_SET_ALPHA_TO_ONE: d->set_alpha_to_one = s->set_alpha_to_one; break;
    case SDC_SK_SKIP_PRK_STEPS: d->skip_prk_steps = s->skip_prk_steps; break;
    case SDC_SK_CLIP_SAMPLE: d->clip_sample = s->clip_sample; break;
    case SDC_SK_CLIP_SAMPLE_RANGE: d->clip_sample_range = s->clip_sample_range; break;
    case SDC_SK_THRESHOLDING: d->thresholding = s->thresholding; break;
    case SDC_SK_RESCALE_BETAS_ZERO_SNR: d->rescale_betas_zero_snr = s->rescale_betas_zero_snr; break;
    case SDC_SK_USE_KARRAS_SIGMAS: d->use_karras_sigmas = s->use_karras_sigmas; break;
    case SDC_SK_USE_EXPONENTIAL_SIGMAS: d->use_exponential_sigmas = s->use_exponential_sigmas; break;
    case SDC_SK_USE_BETA_SIGMAS: d->use_beta_sigmas = s->use_beta_sigmas; break;
    case SDC_SK_USE_LU_LAMBDAS: d->use_lu_lambdas = s->use_lu_lambdas; break;
    case SDC_SK_USE_FLOW_SIGMAS: d->use_flow_sigmas = s->use_flow_sigmas; break;
    case SDC_SK_SIGMA_MIN: d->sigma_min = s->sigma_min; break;
    case SDC_SK_SIGMA_MAX: d->sigma_max = s->sigma_max; break;
    case SDC_SK_INTERPOLATION_TYPE: d->interpolation_type = s->interpolation_type; break;
    case SDC_SK_TIMESTEP_TYPE: d->timestep_type = s->timestep_type; break;
    case SDC_SK_FINAL_SIGMAS_TYPE: d->final_sigmas_type = s->final_sigmas_type; break;
    case SDC_SK_SOLVER_ORDER: d->solver_order = s->solver_order; break;
    case SDC_SK_ALGORITHM_TYPE: d->algorithm_type = s->algorithm_type; break;
    case SDC_SK_SOLVER_TYPE: d->solver_type = s->solver_type; break;
    case SDC_SK_LOWER_ORDER_FINAL: d->lower_order_final = s->lower_order_final; break;
    case SDC_SK_EULER_AT_FINAL: d->euler_at_final = s->euler_at_final; break;
    case SDC_SK_LAMBDA_MIN_CLIPPED: d->lambda_min_clipped = s->lambda_min_clipped; break;
    case SDC_SK_COUNT: break;
    }
}

void sdc_sampler_resolve_config(sdc_sampler_kind kind, const sdc_sched_config *in, sdc_sched_config *out) {
    SDC_ASSERT((unsigned)kind < SDC_SAMPLER_COUNT);
    sdc_sched_config c;
    class_defaults(kind, &c);
    memcpy(c.class_name, in->class_name, sizeof c.class_name);
    memcpy(c.source, in->source, sizeof c.source);
    for (int k = 0; k < SDC_SK_COUNT; k++)
        if ((known_keys[kind] & BIT(k)) && sdc_sched_has(in, (sdc_sched_key)k)) copy_key(&c, in, (sdc_sched_key)k);
    c.present = in->present;
    *out = c;
}

/* ---- construction ------------------------------------------------------- */

/* A setting the class reads but sdc does not implement. */
static sdc_status refuse(const sdc_sampler *s, sdc_sched_key k, sdc_error *err) {
    return sdc_fail(err, SDC_EUNSUPPORTED, "%s: %s as set is not supported by sampler %s (%s)", s->cfg.source,
                    sdc_sched_key_name(k), names[s->kind], classes[s->kind]);
}

static sdc_status check_supported(const sdc_sampler *s, sdc_error *err) {
    const sdc_sched_config *c = &s->cfg;
    if (c->thresholding) return refuse(s, SDC_SK_THRESHOLDING, err);
    if (c->use_exponential_sigmas) return refuse(s, SDC_SK_USE_EXPONENTIAL_SIGMAS, err);
    if (c->use_beta_sigmas) return refuse(s, SDC_SK_USE_BETA_SIGMAS, err);
    if (c->use_lu_lambdas) return refuse(s, SDC_SK_USE_LU_LAMBDAS, err);
    if (c->use_flow_sigmas) return refuse(s, SDC_SK_USE_FLOW_SIGMAS, err);
    if (c->interpolation_type != SDC_INTERP_LINEAR) return refuse(s, SDC_SK_INTERPOLATION_TYPE, err);
    if (c->algorithm_type == SDC_DPM_SDE_SOLVER_PP || c->algorithm_type == SDC_DPM_SDE_SOLVER)
        return refuse(s, SDC_SK_ALGORITHM_TYPE, err);
    if (c->prediction_type == SDC_PRED_SAMPLE && (s->kind == SDC_SAMPLER_EULER_A || s->kind == SDC_SAMPLER_PNDM))
        return refuse(s, SDC_SK_PREDICTION_TYPE, err);
    return SDC_OK;
}

sdc_status sdc_sampler_init(sdc_sampler *s, sdc_sampler_kind kind, const sdc_sched_config *cfg, int steps,
                            const sdc_sampler_opts *opts, size_t n, sdc_error *err) {
    memset(s, 0, sizeof *s);
    if ((unsigned)kind >= SDC_SAMPLER_COUNT) return sdc_fail(err, SDC_EINVAL, "unknown sampler kind %d", (int)kind);
    s->kind = kind;
    sdc_sampler_resolve_config(kind, cfg, &s->cfg);
    s->T = s->cfg.num_train_timesteps;
    s->n = n;
    s->steps = steps;
    s->eta = opts ? opts->eta : 0.0;
    if (steps < 1 || steps > s->T)
        return sdc_fail(err, SDC_EINVAL, "sampler %s: %d steps (must be 1..%d, the training timesteps)", names[kind],
                        steps, s->T);
    if (!(s->eta >= 0 && isfinite(s->eta)))
        return sdc_fail(err, SDC_EINVAL, "sampler %s: eta %g must be >= 0", names[kind], s->eta);
    if (s->eta > 0 && kind != SDC_SAMPLER_DDIM)
        return sdc_fail(err, SDC_EINVAL, "sampler %s: eta is a DDIM setting", names[kind]);
    int karras = opts ? opts->karras : SDC_KARRAS_CONFIG;
    if (karras == SDC_KARRAS_ON) {
        if (kind == SDC_SAMPLER_DDIM || kind == SDC_SAMPLER_PNDM)
            return sdc_fail(err, SDC_EINVAL, "sampler %s has no Karras sigmas (euler, dpmpp_2m and lms have)",
                            names[kind]);
        s->cfg.use_karras_sigmas = 1;
    } else if (karras == SDC_KARRAS_OFF) {
        s->cfg.use_karras_sigmas = 0;
    }
    sdc_status st = check_supported(s, err);
    if (st != SDC_OK) return st;

    s->ac = malloc((size_t)s->T * sizeof *s->ac);
    if (!s->ac) return sdc_fail(err, SDC_ENOMEM, "sampler: out of memory");
    st = sdc_sched_alphas_cumprod_f32(&s->cfg, s->ac, err);
    if (st == SDC_OK && n > 0) {
        s->noise = malloc(n * sizeof *s->noise);
        if (!s->noise) st = sdc_fail(err, SDC_ENOMEM, "sampler: out of memory");
    }
    if (st == SDC_OK) {
        switch (kind) {
        case SDC_SAMPLER_DDIM: st = sdc_ddim_init(s, err); break;
        case SDC_SAMPLER_EULER:
        case SDC_SAMPLER_EULER_A: st = sdc_euler_init(s, err); break;
        case SDC_SAMPLER_DPMPP_2M: st = sdc_dpmpp_init(s, err); break;
        case SDC_SAMPLER_PNDM: st = sdc_pndm_init(s, err); break;
        case SDC_SAMPLER_LMS: st = sdc_lms_init(s, err); break;
        default: st = sdc_fail(err, SDC_EINVAL, "unknown sampler kind"); break;
        }
    }
    if (st != SDC_OK) {
        sdc_sampler_free(s);
        return st;
    }
    s->draws_noise = kind == SDC_SAMPLER_EULER_A || (kind == SDC_SAMPLER_DDIM && s->eta > 0);
    return SDC_OK;
}

void sdc_sampler_free(sdc_sampler *s) {
    free(s->timesteps);
    free(s->sigmas);
    free(s->ac);
    free(s->sig);
    free(s->noise);
    free(s->hist);
    free(s->work);
    sdc_sampler_kind k = s->kind;
    memset(s, 0, sizeof *s);
    s->kind = k;
}

double sdc_sampler_input_scale(const sdc_sampler *s, int i) {
    SDC_ASSERT(i >= 0 && i < s->count);
    switch (s->kind) {
    case SDC_SAMPLER_EULER:
    case SDC_SAMPLER_EULER_A:
    case SDC_SAMPLER_LMS: return 1.0 / (double)sdc_sigma_scale_f(s->sig[i]);
    default: return 1.0;
    }
}

void sdc_sampler_step(sdc_sampler *s, int i, const float *model_output, float *x, sdc_noise_fn noise,
                      void *noise_ctx) {
    SDC_ASSERT(i == s->next && i < s->count);
    SDC_ASSERT(!s->draws_noise || noise);
    switch (s->kind) {
    case SDC_SAMPLER_DDIM: sdc_ddim_step(s, i, model_output, x, noise, noise_ctx); break;
    case SDC_SAMPLER_EULER: sdc_euler_step(s, i, model_output, x); break;
    case SDC_SAMPLER_EULER_A: sdc_euler_a_step(s, i, model_output, x, noise, noise_ctx); break;
    case SDC_SAMPLER_DPMPP_2M: sdc_dpmpp_step(s, i, model_output, x); break;
    case SDC_SAMPLER_PNDM: sdc_pndm_step(s, i, model_output, x); break;
    case SDC_SAMPLER_LMS: sdc_lms_step(s, i, model_output, x); break;
    default: SDC_ASSERT(0);
    }
    s->next++;
}

/* ---- shared tables ------------------------------------------------------ */

sdc_status sdc_sampler_alloc_tables(sdc_sampler *s, int count, int with_sigmas, sdc_error *err) {
    s->count = count;
    s->timesteps = calloc((size_t)count, sizeof *s->timesteps);
    if (!s->timesteps) return sdc_fail(err, SDC_ENOMEM, "sampler: out of memory");
    if (with_sigmas) {
        s->sigmas = calloc((size_t)count + 1, sizeof *s->sigmas);
        s->sig = calloc((size_t)count + 1, sizeof *s->sig);
        if (!s->sigmas || !s->sig) return sdc_fail(err, SDC_ENOMEM, "sampler: out of memory");
    }
    return SDC_OK;
}

sdc_status sdc_sampler_alloc_hist(sdc_sampler *s, int nbuf, sdc_error *err) {
    s->nhist_cap = nbuf;
    s->nhist = 0;
    if (nbuf == 0 || s->n == 0) return SDC_OK;
    s->hist = calloc((size_t)nbuf * s->n, sizeof *s->hist);
    if (!s->hist) return sdc_fail(err, SDC_ENOMEM, "sampler: out of memory for %d history buffers", nbuf);
    return SDC_OK;
}

void sdc_sampler_sync_sigmas(sdc_sampler *s) {
    for (int i = 0; i <= s->count; i++) s->sigmas[i] = s->sig[i];
}

/* ---- numpy arithmetic --------------------------------------------------- */

double sdc_np_round(double v) { return nearbyint(v); /* default rounding mode: half to even */ }

void sdc_np_linspace(double start, double stop, int num, double *out) {
    if (num <= 0) return;
    if (num == 1) { /* step undefined: numpy gives [start] */
        out[0] = start;
        return;
    }
    double step = (stop - start) / (num - 1);
    for (int i = 0; i < num; i++) out[i] = (double)i * step + start;
    out[num - 1] = stop;
}

int sdc_np_arange_len(double start, double stop, double step) {
    double len = ceil((stop - start) / step);
    return len > 0 ? (int)len : 0;
}

/* numpy fills an arange from its first two entries: delta = (start + step) - start. */
void sdc_np_arange(double start, double step, int len, double *out) {
    if (len <= 0) return;
    out[0] = start;
    if (len == 1) return;
    double next = start + step;
    out[1] = next;
    double delta = next - start;
    for (int i = 2; i < len; i++) out[i] = start + (double)i * delta;
}

double sdc_np_interp(double x, const float *fp, int n) {
    if (isnan(x)) return x;
    if (x < 0) return fp[0];
    if (x >= (double)(n - 1)) return fp[n - 1];
    int j = (int)floor(x);
    if ((double)j == x) return fp[j];
    double slope = (double)fp[j + 1] - (double)fp[j]; /* xp spacing is 1 */
    return slope * (x - (double)j) + (double)fp[j];
}

void sdc_train_sigmas(const float *ac, int T, float *out) {
    for (int t = 0; t < T; t++) out[t] = sqrtf((1.0f - ac[t]) / ac[t]);
}

float sdc_logf(float x) { return (float)log((double)x); }

double sdc_sigma_to_t(double sigma, const float *log_sigmas, int T) {
    double log_sigma = log(sigma > 1e-10 ? sigma : 1e-10);
    /* low = the last index whose log sigma is <= log_sigma (0 if none), at most T-2 */
    int low = 0;
    for (int j = 0; j < T; j++)
        if (log_sigma - (double)log_sigmas[j] >= 0) low = j;
    if (low > T - 2) low = T - 2;
    int high = low + 1;
    float lo = log_sigmas[low], hi = log_sigmas[high];
    double w = ((double)lo - log_sigma) / (double)(lo - hi); /* lo - hi is a float32 difference in numpy */
    if (w < 0) w = 0;
    if (w > 1) w = 1;
    return (1 - w) * low + w * high;
}

void sdc_karras_sigmas(double sigma_min, double sigma_max, int n, double *out) {
    const double rho = 7.0;
    double *ramp = out; /* reuse out for np.linspace(0, 1, n) */
    sdc_np_linspace(0.0, 1.0, n, ramp);
    double min_inv_rho = pow(sigma_min, 1 / rho), max_inv_rho = pow(sigma_max, 1 / rho);
    for (int i = 0; i < n; i++) out[i] = pow(max_inv_rho + ramp[i] * (min_inv_rho - max_inv_rho), rho);
}
