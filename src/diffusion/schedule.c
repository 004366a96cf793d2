#include "diffusion/schedule.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/json.h"

static const char *const key_names[SDC_SK_COUNT] = {
    [SDC_SK_NUM_TRAIN_TIMESTEPS] = "num_train_timesteps",
    [SDC_SK_BETA_START] = "beta_start",
    [SDC_SK_BETA_END] = "beta_end",
    [SDC_SK_BETA_SCHEDULE] = "beta_schedule",
    [SDC_SK_PREDICTION_TYPE] = "prediction_type",
    [SDC_SK_TIMESTEP_SPACING] = "timestep_spacing",
    [SDC_SK_STEPS_OFFSET] = "steps_offset",
    [SDC_SK_SET_ALPHA_TO_ONE] = "set_alpha_to_one",
    [SDC_SK_SKIP_PRK_STEPS] = "skip_prk_steps",
    [SDC_SK_CLIP_SAMPLE] = "clip_sample",
    [SDC_SK_CLIP_SAMPLE_RANGE] = "clip_sample_range",
    [SDC_SK_THRESHOLDING] = "thresholding",
    [SDC_SK_RESCALE_BETAS_ZERO_SNR] = "rescale_betas_zero_snr",
    [SDC_SK_USE_KARRAS_SIGMAS] = "use_karras_sigmas",
    [SDC_SK_USE_EXPONENTIAL_SIGMAS] = "use_exponential_sigmas",
    [SDC_SK_USE_BETA_SIGMAS] = "use_beta_sigmas",
    [SDC_SK_USE_LU_LAMBDAS] = "use_lu_lambdas",
    [SDC_SK_USE_FLOW_SIGMAS] = "use_flow_sigmas",
    [SDC_SK_SIGMA_MIN] = "sigma_min",
    [SDC_SK_SIGMA_MAX] = "sigma_max",
    [SDC_SK_INTERPOLATION_TYPE] = "interpolation_type",
    [SDC_SK_TIMESTEP_TYPE] = "timestep_type",
    [SDC_SK_FINAL_SIGMAS_TYPE] = "final_sigmas_type",
    [SDC_SK_SOLVER_ORDER] = "solver_order",
    [SDC_SK_ALGORITHM_TYPE] = "algorithm_type",
    [SDC_SK_SOLVER_TYPE] = "solver_type",
    [SDC_SK_LOWER_ORDER_FINAL] = "lower_order_final",
    [SDC_SK_EULER_AT_FINAL] = "euler_at_final",
    [SDC_SK_LAMBDA_MIN_CLIPPED] = "lambda_min_clipped",
};

const char *sdc_sched_key_name(sdc_sched_key k) { return (unsigned)k < SDC_SK_COUNT ? key_names[k] : "?"; }

/* Values for keys the file does not give; the sampler replaces them with its
 * class's defaults (sdc_sampler_resolve_config), so these only matter to a
 * caller that reads the struct directly. They are DDIMScheduler's. */
void sdc_sched_config_generic(sdc_sched_config *c) {
    memset(c, 0, sizeof *c);
    c->num_train_timesteps = 1000;
    c->beta_start = 0.0001;
    c->beta_end = 0.02;
    c->beta_schedule = SDC_BETA_LINEAR;
    c->prediction_type = SDC_PRED_EPSILON;
    c->timestep_spacing = SDC_SPACING_LEADING;
    c->steps_offset = 0;
    c->set_alpha_to_one = 1;
    c->skip_prk_steps = 0;
    c->clip_sample = 1;
    c->clip_sample_range = 1.0;
    c->sigma_min = NAN;
    c->sigma_max = NAN;
    c->interpolation_type = SDC_INTERP_LINEAR;
    c->timestep_type = SDC_TIMESTEP_DISCRETE;
    c->final_sigmas_type = SDC_FINAL_SIGMA_ZERO;
    c->solver_order = 2;
    c->algorithm_type = SDC_DPM_SOLVER_PP;
    c->solver_type = SDC_SOLVER_MIDPOINT;
    c->lower_order_final = 1;
    c->euler_at_final = 0;
    c->lambda_min_clipped = -INFINITY;
}

#define BIT(k) ((uint64_t)1 << (k))

void sdc_sched_config_default(sdc_sched_config *out) {
    sdc_sched_config_generic(out);
    snprintf(out->class_name, sizeof out->class_name, "PNDMScheduler");
    snprintf(out->source, sizeof out->source, "(SD 1.x default scheduler)");
    out->beta_start = 0.00085;
    out->beta_end = 0.012;
    out->beta_schedule = SDC_BETA_SCALED_LINEAR;
    out->timestep_spacing = SDC_SPACING_LEADING;
    out->steps_offset = 1;
    out->set_alpha_to_one = 0;
    out->skip_prk_steps = 1;
    out->clip_sample = 0;
    out->present = BIT(SDC_SK_NUM_TRAIN_TIMESTEPS) | BIT(SDC_SK_BETA_START) | BIT(SDC_SK_BETA_END) |
                   BIT(SDC_SK_BETA_SCHEDULE) | BIT(SDC_SK_PREDICTION_TYPE) | BIT(SDC_SK_TIMESTEP_SPACING) |
                   BIT(SDC_SK_STEPS_OFFSET) | BIT(SDC_SK_SET_ALPHA_TO_ONE) | BIT(SDC_SK_SKIP_PRK_STEPS) |
                   BIT(SDC_SK_CLIP_SAMPLE);
}

/* ---- parsing ---------------------------------------------------------- */

typedef struct {
    const char *name;
    int value;
} enum_name;

/* Maps a string key to an enum; a value not in the table is refused with the list of accepted ones. */
static sdc_status get_enum(const cJSON *obj, sdc_sched_key k, const enum_name *names, int *out, int *given,
                           const char *path, sdc_error *err) {
    const char *key = key_names[k], *s = NULL;
    SDC_TRY(sdc_json_get_string(obj, key, &s, path, err));
    if (!s) return SDC_OK;
    char list[256] = "";
    for (const enum_name *e = names; e->name; e++) {
        if (strcmp(e->name, s) == 0) {
            *out = e->value;
            *given = 1;
            return SDC_OK;
        }
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", list[0] ? ", " : "", e->name);
    }
    return sdc_fail(err, SDC_EUNSUPPORTED, "%s: %s \"%s\" is not supported (one of: %s)", path, key, s, list);
}

static int in_string_array(const cJSON *arr, const char *key) {
    const cJSON *e;
    if (!cJSON_IsArray(arr)) return 0;
    cJSON_ArrayForEach(e, arr) {
        if (cJSON_IsString(e) && strcmp(e->valuestring, key) == 0) return 1;
    }
    return 0;
}

sdc_status sdc_sched_config_parse(const cJSON *json, const char *path, sdc_sched_config *out, sdc_error *err) {
    sdc_sched_config c;
    sdc_sched_config_generic(&c);
    snprintf(c.source, sizeof c.source, "%s", path);
    if (!cJSON_IsObject(json)) return sdc_fail(err, SDC_EFORMAT, "%s: a scheduler config must be a JSON object", path);

    /* Keys diffusers filled in with its defaults when it saved an in-memory config: treat as absent. */
    const cJSON *used_defaults = cJSON_GetObjectItemCaseSensitive(json, "_use_default_values");
    cJSON *obj = cJSON_Duplicate(json, 1);
    if (!obj) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
    if (used_defaults) {
        for (int k = 0; k < SDC_SK_COUNT; k++)
            if (in_string_array(used_defaults, key_names[k])) cJSON_DeleteItemFromObjectCaseSensitive(obj, key_names[k]);
    }

    sdc_status s = SDC_OK;
    const char *cls = NULL;
    if ((s = sdc_json_get_string(obj, "_class_name", &cls, path, err)) != SDC_OK) goto done;
    if (cls) snprintf(c.class_name, sizeof c.class_name, "%s", cls);

    const cJSON *tb = cJSON_GetObjectItemCaseSensitive(obj, "trained_betas");
    if (tb && !cJSON_IsNull(tb)) {
        s = sdc_fail(err, SDC_EUNSUPPORTED, "%s: trained_betas is not supported (use beta_schedule)", path);
        goto done;
    }

    int given = 0;
#define GIVEN(k)                               \
    do {                                       \
        if (given) c.present |= BIT(k);        \
        given = 0;                             \
    } while (0)
#define PRESENT(k) (cJSON_GetObjectItemCaseSensitive(obj, key_names[k]) && \
                    !cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(obj, key_names[k])))

    /* integers */
    {
        int64_t v = c.num_train_timesteps;
        if ((s = sdc_json_get_int(obj, key_names[SDC_SK_NUM_TRAIN_TIMESTEPS], &v, path, err)) != SDC_OK) goto done;
        if (PRESENT(SDC_SK_NUM_TRAIN_TIMESTEPS)) {
            if (v < 2 || v > 100000) {
                s = sdc_fail(err, SDC_ELIMIT, "%s: num_train_timesteps %lld is out of range (2..100000)", path,
                             (long long)v);
                goto done;
            }
            c.num_train_timesteps = (int)v;
            c.present |= BIT(SDC_SK_NUM_TRAIN_TIMESTEPS);
        }
        v = 0;
        if ((s = sdc_json_get_int(obj, key_names[SDC_SK_STEPS_OFFSET], &v, path, err)) != SDC_OK) goto done;
        if (PRESENT(SDC_SK_STEPS_OFFSET)) {
            if (v < 0 || v > 100000) {
                s = sdc_fail(err, SDC_EFORMAT, "%s: steps_offset %lld is out of range", path, (long long)v);
                goto done;
            }
            c.steps_offset = (int)v;
            c.present |= BIT(SDC_SK_STEPS_OFFSET);
        }
        v = 2;
        if ((s = sdc_json_get_int(obj, key_names[SDC_SK_SOLVER_ORDER], &v, path, err)) != SDC_OK) goto done;
        if (PRESENT(SDC_SK_SOLVER_ORDER)) {
            if (v < 1 || v > 3) {
                s = sdc_fail(err, SDC_EUNSUPPORTED, "%s: solver_order %lld is not supported (1, 2 or 3)", path,
                             (long long)v);
                goto done;
            }
            c.solver_order = (int)v;
            c.present |= BIT(SDC_SK_SOLVER_ORDER);
        }
    }

    /* numbers */
    {
        static const sdc_sched_key nk[] = {SDC_SK_BETA_START, SDC_SK_BETA_END, SDC_SK_CLIP_SAMPLE_RANGE,
                                           SDC_SK_SIGMA_MIN, SDC_SK_SIGMA_MAX, SDC_SK_LAMBDA_MIN_CLIPPED};
        double *dst[] = {&c.beta_start, &c.beta_end, &c.clip_sample_range, &c.sigma_min, &c.sigma_max,
                         &c.lambda_min_clipped};
        for (size_t i = 0; i < sizeof nk / sizeof nk[0]; i++) {
            double v = *dst[i];
            if ((s = sdc_json_get_double(obj, key_names[nk[i]], &v, path, err)) != SDC_OK) goto done;
            if (!PRESENT(nk[i])) continue;
            /* lambda_min_clipped is -inf by default (diffusers writes -Infinity) */
            int ok = isfinite(v) || (nk[i] == SDC_SK_LAMBDA_MIN_CLIPPED && v < 0);
            if (nk[i] == SDC_SK_BETA_START || nk[i] == SDC_SK_BETA_END) ok = ok && v >= 0 && v < 1;
            if (nk[i] == SDC_SK_CLIP_SAMPLE_RANGE || nk[i] == SDC_SK_SIGMA_MIN || nk[i] == SDC_SK_SIGMA_MAX)
                ok = ok && v > 0;
            if (!ok) {
                s = sdc_fail(err, SDC_EFORMAT, "%s: %s %g is out of range", path, key_names[nk[i]], v);
                goto done;
            }
            *dst[i] = v;
            c.present |= BIT(nk[i]);
        }
    }

    /* booleans */
    {
        static const sdc_sched_key bk[] = {
            SDC_SK_SET_ALPHA_TO_ONE,    SDC_SK_SKIP_PRK_STEPS,         SDC_SK_CLIP_SAMPLE,
            SDC_SK_THRESHOLDING,        SDC_SK_RESCALE_BETAS_ZERO_SNR, SDC_SK_USE_KARRAS_SIGMAS,
            SDC_SK_USE_EXPONENTIAL_SIGMAS, SDC_SK_USE_BETA_SIGMAS,     SDC_SK_USE_LU_LAMBDAS,
            SDC_SK_USE_FLOW_SIGMAS,     SDC_SK_LOWER_ORDER_FINAL,      SDC_SK_EULER_AT_FINAL};
        int *dst[] = {&c.set_alpha_to_one,      &c.skip_prk_steps,   &c.clip_sample,     &c.thresholding,
                      &c.rescale_betas_zero_snr, &c.use_karras_sigmas, &c.use_exponential_sigmas,
                      &c.use_beta_sigmas,       &c.use_lu_lambdas,   &c.use_flow_sigmas, &c.lower_order_final,
                      &c.euler_at_final};
        for (size_t i = 0; i < sizeof bk / sizeof bk[0]; i++) {
            if ((s = sdc_json_get_bool(obj, key_names[bk[i]], dst[i], path, err)) != SDC_OK) goto done;
            if (PRESENT(bk[i])) c.present |= BIT(bk[i]);
        }
    }

    /* strings with a fixed set of values */
    {
        int v;
        static const enum_name beta[] = {{"linear", SDC_BETA_LINEAR},
                                         {"scaled_linear", SDC_BETA_SCALED_LINEAR},
                                         {"squaredcos_cap_v2", SDC_BETA_SQUAREDCOS_CAP_V2},
                                         {NULL, 0}};
        v = (int)c.beta_schedule;
        if ((s = get_enum(obj, SDC_SK_BETA_SCHEDULE, beta, &v, &given, path, err)) != SDC_OK) goto done;
        c.beta_schedule = (sdc_beta_schedule)v;
        GIVEN(SDC_SK_BETA_SCHEDULE);

        /* "original_sample" is Euler's older name for "sample" */
        static const enum_name pred[] = {{"epsilon", SDC_PRED_EPSILON},
                                         {"v_prediction", SDC_PRED_V},
                                         {"sample", SDC_PRED_SAMPLE},
                                         {"original_sample", SDC_PRED_SAMPLE},
                                         {NULL, 0}};
        v = (int)c.prediction_type;
        if ((s = get_enum(obj, SDC_SK_PREDICTION_TYPE, pred, &v, &given, path, err)) != SDC_OK) goto done;
        c.prediction_type = (sdc_prediction)v;
        GIVEN(SDC_SK_PREDICTION_TYPE);

        static const enum_name spacing[] = {{"leading", SDC_SPACING_LEADING},
                                            {"trailing", SDC_SPACING_TRAILING},
                                            {"linspace", SDC_SPACING_LINSPACE},
                                            {NULL, 0}};
        v = (int)c.timestep_spacing;
        if ((s = get_enum(obj, SDC_SK_TIMESTEP_SPACING, spacing, &v, &given, path, err)) != SDC_OK) goto done;
        c.timestep_spacing = (sdc_spacing)v;
        GIVEN(SDC_SK_TIMESTEP_SPACING);

        static const enum_name interp[] = {
            {"linear", SDC_INTERP_LINEAR}, {"log_linear", SDC_INTERP_LOG_LINEAR}, {NULL, 0}};
        v = (int)c.interpolation_type;
        if ((s = get_enum(obj, SDC_SK_INTERPOLATION_TYPE, interp, &v, &given, path, err)) != SDC_OK) goto done;
        c.interpolation_type = (sdc_interpolation)v;
        GIVEN(SDC_SK_INTERPOLATION_TYPE);

        static const enum_name ttype[] = {
            {"discrete", SDC_TIMESTEP_DISCRETE}, {"continuous", SDC_TIMESTEP_CONTINUOUS}, {NULL, 0}};
        v = (int)c.timestep_type;
        if ((s = get_enum(obj, SDC_SK_TIMESTEP_TYPE, ttype, &v, &given, path, err)) != SDC_OK) goto done;
        c.timestep_type = (sdc_timestep_type)v;
        GIVEN(SDC_SK_TIMESTEP_TYPE);

        static const enum_name fin[] = {
            {"zero", SDC_FINAL_SIGMA_ZERO}, {"sigma_min", SDC_FINAL_SIGMA_MIN}, {NULL, 0}};
        v = (int)c.final_sigmas_type;
        if ((s = get_enum(obj, SDC_SK_FINAL_SIGMAS_TYPE, fin, &v, &given, path, err)) != SDC_OK) goto done;
        c.final_sigmas_type = (sdc_final_sigmas)v;
        GIVEN(SDC_SK_FINAL_SIGMAS_TYPE);

        static const enum_name algo[] = {{"dpmsolver++", SDC_DPM_SOLVER_PP},
                                         {"dpmsolver", SDC_DPM_SOLVER},
                                         {"sde-dpmsolver++", SDC_DPM_SDE_SOLVER_PP},
                                         {"sde-dpmsolver", SDC_DPM_SDE_SOLVER},
                                         {"deis", SDC_DPM_SOLVER_PP},
                                         {NULL, 0}};
        v = (int)c.algorithm_type;
        if ((s = get_enum(obj, SDC_SK_ALGORITHM_TYPE, algo, &v, &given, path, err)) != SDC_OK) goto done;
        c.algorithm_type = (sdc_dpm_algorithm)v;
        GIVEN(SDC_SK_ALGORITHM_TYPE);

        static const enum_name solver[] = {{"midpoint", SDC_SOLVER_MIDPOINT}, {"heun", SDC_SOLVER_HEUN},
                                           {"logrho", SDC_SOLVER_MIDPOINT},   {"bh1", SDC_SOLVER_MIDPOINT},
                                           {"bh2", SDC_SOLVER_MIDPOINT},      {NULL, 0}};
        v = (int)c.solver_type;
        if ((s = get_enum(obj, SDC_SK_SOLVER_TYPE, solver, &v, &given, path, err)) != SDC_OK) goto done;
        c.solver_type = (sdc_solver_type)v;
        GIVEN(SDC_SK_SOLVER_TYPE);
    }
#undef GIVEN
#undef PRESENT

done:
    cJSON_Delete(obj);
    if (s == SDC_OK) *out = c;
    return s;
}

/* ---- betas and alphas_cumprod ------------------------------------------ */

/* torch.linspace(start, end, n, dtype=float32) on the CPU: step computed in
 * float, the first half as start + step*i and the second as
 * end - step*(n-1-i), each a fused multiply-add (what torch's compiled
 * kernel does; it matches torch bit for bit). */
static void torch_linspace_f32(double start_d, double end_d, int n, float *out) {
    float start = (float)start_d, end = (float)end_d;
    if (n == 1) {
        out[0] = start;
        return;
    }
    float step = (end - start) / (float)(n - 1);
    int half = n / 2;
    for (int i = 0; i < n; i++)
        out[i] = i < half ? fmaf(step, (float)i, start) : fmaf(-step, (float)(n - 1 - i), end);
}

/* betas_for_alpha_bar(n, max_beta=0.999, "cosine"), computed in double and stored as float32. */
static void cosine_betas(int n, float *out) {
    for (int i = 0; i < n; i++) {
        double t1 = (double)i / n, t2 = (double)(i + 1) / n;
        double c1 = cos((t1 + 0.008) / 1.008 * M_PI / 2), c2 = cos((t2 + 0.008) / 1.008 * M_PI / 2);
        double b = 1 - (c2 * c2) / (c1 * c1);
        out[i] = (float)(b < 0.999 ? b : 0.999);
    }
}

/* torch.cumprod of float32 on the CPU: the running product is a double,
 * each output rounded to float. */
static void cumprod_f32(const float *a, int n, float *out) {
    double acc = 1.0;
    for (int i = 0; i < n; i++) {
        acc *= a[i];
        out[i] = (float)acc;
    }
}

/* rescale_zero_terminal_snr (Lin et al. 2023, Algorithm 1) in float32 as
 * diffusers runs it: shift sqrt(alphas_cumprod) so the last is 0, scale so
 * the first is unchanged, and recover betas. */
static sdc_status rescale_zero_terminal_snr(float *betas, int n, sdc_error *err) {
    float *ab = malloc((size_t)n * sizeof *ab), *alphas = malloc((size_t)n * sizeof *alphas);
    if (!ab || !alphas) {
        free(ab);
        free(alphas);
        return sdc_fail(err, SDC_ENOMEM, "alphas_cumprod: out of memory");
    }
    for (int i = 0; i < n; i++) alphas[i] = 1.0f - betas[i];
    cumprod_f32(alphas, n, ab);
    for (int i = 0; i < n; i++) ab[i] = sqrtf(ab[i]);
    float a0 = ab[0], aT = ab[n - 1];
    float scale = a0 / (a0 - aT);
    for (int i = 0; i < n; i++) {
        ab[i] -= aT;
        ab[i] *= scale;
        ab[i] = ab[i] * ab[i];
    }
    alphas[0] = ab[0];
    for (int i = 1; i < n; i++) alphas[i] = ab[i] / ab[i - 1];
    for (int i = 0; i < n; i++) betas[i] = 1.0f - alphas[i];
    free(ab);
    free(alphas);
    return SDC_OK;
}

sdc_status sdc_sched_alphas_cumprod_f32(const sdc_sched_config *cfg, float *out, sdc_error *err) {
    int n = cfg->num_train_timesteps;
    if (n < 2) return sdc_fail(err, SDC_EINVAL, "%s: num_train_timesteps must be at least 2", cfg->source);
    float *betas = malloc((size_t)n * sizeof *betas);
    if (!betas) return sdc_fail(err, SDC_ENOMEM, "alphas_cumprod: out of memory");
    switch (cfg->beta_schedule) {
    case SDC_BETA_LINEAR: torch_linspace_f32(cfg->beta_start, cfg->beta_end, n, betas); break;
    case SDC_BETA_SCALED_LINEAR:
        /* linspace over sqrt(beta), then squared in float */
        torch_linspace_f32(sqrt(cfg->beta_start), sqrt(cfg->beta_end), n, betas);
        for (int i = 0; i < n; i++) betas[i] = betas[i] * betas[i];
        break;
    case SDC_BETA_SQUAREDCOS_CAP_V2: cosine_betas(n, betas); break;
    default: free(betas); return sdc_fail(err, SDC_EINVAL, "%s: unknown beta_schedule", cfg->source);
    }
    if (cfg->rescale_betas_zero_snr) {
        sdc_status s = rescale_zero_terminal_snr(betas, n, err);
        if (s != SDC_OK) {
            free(betas);
            return s;
        }
    }
    for (int i = 0; i < n; i++) betas[i] = 1.0f - betas[i]; /* alphas */
    cumprod_f32(betas, n, out);
    free(betas);
    return SDC_OK;
}

sdc_status sdc_sched_alphas_cumprod(const sdc_sched_config *cfg, double *out, sdc_error *err) {
    int n = cfg->num_train_timesteps;
    float *f = malloc((size_t)(n > 0 ? n : 1) * sizeof *f);
    if (!f) return sdc_fail(err, SDC_ENOMEM, "alphas_cumprod: out of memory");
    sdc_status s = sdc_sched_alphas_cumprod_f32(cfg, f, err);
    if (s == SDC_OK)
        for (int i = 0; i < n; i++) out[i] = f[i];
    free(f);
    return s;
}
