#include "pipeline/check.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "backend/tape.h"
#include "diffusion/sampler.h"
#include "pipeline/golden.h"
#include "pipeline/sd_model.h"
#include "pipeline/txt2img.h"

typedef struct run {
    sdc_ctx *c;
    const sdc_check_opts *o;
    sdc_check_summary *sum;
    sdc_golden g;
    sdc_error *err;
} run;

static int wanted(const run *r, const char *key) { return !r->o->only || strncmp(key, r->o->only, strlen(r->o->only)) == 0; }

/* Compares n floats with golden key; a shape mismatch in numel is an error. */
static sdc_status compare(run *r, const char *key, const float *out, size_t n) {
    float *ref;
    int64_t shape[8];
    int nd;
    SDC_TRY(sdc_golden_f32(&r->g, key, &ref, shape, &nd, r->err));
    size_t m = 1;
    for (int i = 0; i < nd; i++) m *= (size_t)shape[i];
    if (m != n) {
        free(ref);
        return sdc_fail(r->err, SDC_EFORMAT, "%s: \"%s\" has %zu values, sdc produced %zu", r->g.path, key, m, n);
    }
    double e = sdc_rel_err(out, ref, n);
    free(ref);
    int ok = e <= r->o->tolerance && !isnan(e);
    r->sum->checked++;
    if (!ok) r->sum->failed++;
    if (!(e <= r->sum->worst)) {
        r->sum->worst = e;
        snprintf(r->sum->worst_key, sizeof r->sum->worst_key, "%s", key);
    }
    if (r->o->report) r->o->report(r->o->report_ctx, key, e, ok);
    return SDC_OK;
}

static sdc_status compare_tensor(run *r, const char *key, const sdc_tensor *t) {
    if (!sdc_golden_has(&r->g, key)) return SDC_OK;
    size_t n = (size_t)sdc_tensor_numel(t);
    float *h = malloc(n * sizeof *h);
    if (!h) return sdc_fail(r->err, SDC_ENOMEM, "out of memory");
    sdc_op_download(r->c, h, t);
    sdc_status st = compare(r, key, h, n);
    free(h);
    return st;
}

static sdc_status upload_key(run *r, const char *key, sdc_tensor *t) {
    float *d;
    int64_t shape[8];
    int nd;
    SDC_TRY(sdc_golden_f32(&r->g, key, &d, shape, &nd, r->err));
    *t = sdc_op_upload(r->c, NULL, nd, shape, d);
    free(d);
    return SDC_OK;
}

static sdc_status check_text(run *r, sdc_sd *sd) {
    static const char *const names[2] = {"text_encoder", "text_encoder_2"};
    char key[160];
    for (int i = 0; i < sd->nte; i++) {
        snprintf(key, sizeof key, "%s/input_ids", names[i]);
        if (!sdc_golden_has(&r->g, key) || !wanted(r, names[i])) continue;
        double *ids_d;
        int64_t shape[8];
        int nd;
        SDC_TRY(sdc_golden_f64(&r->g, key, &ids_d, shape, &nd, r->err));
        int64_t B = shape[0], T = shape[1];
        int32_t *ids = malloc((size_t)(B * T) * sizeof *ids);
        if (!ids) {
            free(ids_d);
            return sdc_fail(r->err, SDC_ENOMEM, "out of memory");
        }
        for (int64_t k = 0; k < B * T; k++) ids[k] = (int32_t)ids_d[k];
        free(ids_d);
        sdc_status st = sdc_clip_text_check_ids(sd->te[i], ids, B * T, r->err);
        /* the tokenizer too: the prompts in the metadata must give these ids */
        const char *pj = sdc_golden_meta(&r->g, "prompts");
        cJSON *prompts = pj ? cJSON_Parse(pj) : NULL;
        if (st == SDC_OK && cJSON_IsArray(prompts) && cJSON_GetArraySize(prompts) == B) {
            int32_t got[512];
            int bad = 0;
            for (int64_t b = 0; b < B && st == SDC_OK; b++) {
                const cJSON *p = cJSON_GetArrayItem(prompts, (int)b);
                if (!cJSON_IsString(p) || T > 512) break;
                st = sdc_clip_tokenize(sd->tok[i], p->valuestring, got, NULL, r->err);
                for (int64_t k = 0; st == SDC_OK && k < T; k++) bad += got[k] != ids[b * T + k];
            }
            if (st == SDC_OK) {
                r->sum->checked++;
                if (bad) r->sum->failed++;
                snprintf(key, sizeof key, "%s/input_ids (tokenizer)", names[i]);
                if (r->o->report) r->o->report(r->o->report_ctx, key, bad, bad == 0);
            }
        }
        cJSON_Delete(prompts);
        if (st != SDC_OK) {
            free(ids);
            return st;
        }
        size_t mark = sdc_arena_mark(r->c->arena);
        sdc_clip_text_out out;
        sdc_clip_text_forward(r->c, sd->te[i], ids, B, T, -2, &out);
        free(ids);
        snprintf(key, sizeof key, "%s/last_hidden_state", names[i]);
        st = compare_tensor(r, key, &out.last_hidden);
        snprintf(key, sizeof key, "%s/penultimate_hidden_state", names[i]);
        if (st == SDC_OK) st = compare_tensor(r, key, &out.hidden);
        snprintf(key, sizeof key, "%s/pooler_output", names[i]);
        if (st == SDC_OK) st = compare_tensor(r, key, &out.pooled);
        snprintf(key, sizeof key, "%s/text_embeds", names[i]);
        if (st == SDC_OK && out.text_embeds.data) st = compare_tensor(r, key, &out.text_embeds);
        sdc_arena_release(r->c->arena, mark);
        SDC_TRY(st);
    }
    return SDC_OK;
}

/* The UNet's output, and with unet/in/target the gradients of
 * mean((out − target)²) through the tape: sample, encoder_hidden_states and
 * every unet/grad/param/<name> the golden has. */
static sdc_status check_unet(run *r, sdc_sd *sd) {
    if (!sdc_golden_has(&r->g, "unet/in/sample") || !wanted(r, "unet")) return SDC_OK;
    int grads = sdc_golden_has(&r->g, "unet/in/target") && sdc_golden_has(&r->g, "unet/grad/sample");
    sdc_tape tape;
    sdc_params *p = &sd->unet->params;
    if (grads) {
        SDC_TRY(sdc_tape_init_on(&tape, r->c->be, r->c->arena, r->err));
        sdc_status st = sdc_params_alloc_grad(p, r->err);
        if (st != SDC_OK) {
            sdc_tape_free(&tape);
            return st;
        }
        if (p->be) sdc_tape_watch(&tape, p->dev, p->dev_dtype, p->grad, p->total);
        else sdc_tape_watch(&tape, p->data, SDC_F32, p->grad, p->total);
    }
    float *hgrad = NULL; /* the parameter gradients on the host */
    size_t mark = sdc_arena_mark(r->c->arena);
    sdc_tensor x, ctx, te;
    double *ts = NULL, *tids = NULL;
    float *out = NULL, *target = NULL;
    int64_t shape[8];
    int nd;
    sdc_status st = upload_key(r, "unet/in/sample", &x);
    if (st == SDC_OK) st = upload_key(r, "unet/in/encoder_hidden_states", &ctx);
    if (st == SDC_OK) st = sdc_golden_f64(&r->g, "unet/in/timestep", &ts, shape, &nd, r->err);
    sdc_unet_cond cond = {.context = &ctx, .timesteps = ts};
    if (st == SDC_OK && sd->unet->cfg.text_time) {
        st = upload_key(r, "unet/in/text_embeds", &te);
        if (st == SDC_OK) st = sdc_golden_f64(&r->g, "unet/in/time_ids", &tids, shape, &nd, r->err);
        cond.text_embeds = &te;
        cond.time_ids = tids;
        cond.n_time_ids = shape[1];
    }
    if (st == SDC_OK) st = sdc_unet_check_size(&sd->unet->cfg, x.shape[2], x.shape[3], r->err);
    if (st == SDC_OK) {
        if (grads) r->c->tape = &tape;
        sdc_tensor y = sdc_unet_forward(r->c, NULL, sd->unet, &x, &cond);
        r->c->tape = NULL;
        st = compare_tensor(r, "unet/out/sample", &y);
        size_t n = (size_t)sdc_tensor_numel(&y);
        if (st == SDC_OK && grads) {
            out = malloc(n * sizeof *out);
            st = out ? sdc_golden_f32(&r->g, "unet/in/target", &target, shape, &nd, r->err)
                     : sdc_fail(r->err, SDC_ENOMEM, "out of memory");
        }
        if (st == SDC_OK && grads) {
            sdc_op_download(r->c, out, &y);
            for (size_t i = 0; i < n; i++) out[i] = 2.0f * (out[i] - target[i]) / (float)n; /* d mean(d²)/d out */
            sdc_tape_zero_grads(&tape, r->c->arena);
            sdc_tensor gy = sdc_tape_grad(&tape, &y);
            r->c->be->upload(&gy, out);
            st = sdc_tape_backward(r->c, &tape, r->err);
            if (st == SDC_OK) {
                sdc_tensor gx = sdc_tape_grad(&tape, &x), gc = sdc_tape_grad(&tape, &ctx);
                st = compare_tensor(r, "unet/grad/sample", &gx);
                if (st == SDC_OK) st = compare_tensor(r, "unet/grad/encoder_hidden_states", &gc);
            }
            if (st == SDC_OK && p->be) {
                hgrad = malloc(p->total * sizeof *hgrad);
                if (!hgrad) st = sdc_fail(r->err, SDC_ENOMEM, "out of memory");
                else p->be->mem_download(hgrad, p->grad, p->total * sizeof *hgrad);
            }
            const float *pg = p->be ? hgrad : p->grad;
            /* parameters: relative error, except where the reference gradient
             * is zero in exact arithmetic (a bias right before a GroupNorm of
             * one channel per group: ~1e-17 in fp64, rounding noise in fp32) */
            for (size_t i = 0; st == SDC_OK && i < p->count; i++) {
                char key[600];
                snprintf(key, sizeof key, "unet/grad/param/%s", p->items[i].name);
                if (!sdc_golden_has(&r->g, key)) continue;
                float *ref;
                int64_t rs[8];
                int rn;
                st = sdc_golden_f32(&r->g, key, &ref, rs, &rn, r->err);
                if (st != SDC_OK) break;
                double norm = 0;
                for (int64_t j = 0; j < p->items[i].numel; j++) norm += (double)ref[j] * ref[j];
                free(ref);
                if (sqrt(norm) < 1e-12) {
                    r->sum->zero_grads++;
                    continue;
                }
                st = compare(r, key, pg + p->items[i].offset, (size_t)p->items[i].numel);
            }
        }
    }
    free(ts), free(tids), free(out), free(target), free(hgrad);
    sdc_arena_release(r->c->arena, mark);
    if (grads) sdc_tape_free(&tape);
    return st;
}

static sdc_status check_vae(run *r, const sdc_sd *sd) {
    if (!sd->vae || !sdc_golden_has(&r->g, "vae/in/image") || !wanted(r, "vae")) return SDC_OK;
    size_t mark = sdc_arena_mark(r->c->arena);
    sdc_tensor img, mean, logvar;
    /* the VAE's own precision (fp32 when upcast), as the pipelines run it */
    sdc_ctx vc = sdc_sd_vae_ctx(sd, r->c), *saved = r->c;
    r->c = &vc;
    sdc_status st = upload_key(r, "vae/in/image", &img);
    if (st == SDC_OK) {
        sdc_vae_encode(r->c, sd->vae, &img, &mean, &logvar);
        st = compare_tensor(r, "vae/out/posterior_mean", &mean);
        if (st == SDC_OK) st = compare_tensor(r, "vae/out/posterior_logvar", &logvar);
        if (st == SDC_OK) {
            sdc_tensor d = sdc_vae_decode(r->c, NULL, sd->vae, &mean);
            st = compare_tensor(r, "vae/out/decoded_from_mean", &d);
        }
    }
    r->c = saved;
    sdc_arena_release(r->c->arena, mark);
    return st;
}

/* The golden's sampler variants: key name → sampler kind and options. */
typedef struct variant {
    const char *name;
    sdc_sampler_kind kind;
    double eta;
    int karras;
} variant;
static const variant k_variants[] = {
    {"ddim", SDC_SAMPLER_DDIM, 0, 0},           {"ddim_eta", SDC_SAMPLER_DDIM, 0.5, 0},
    {"euler", SDC_SAMPLER_EULER, 0, 0},         {"euler_karras", SDC_SAMPLER_EULER, 0, 1},
    {"euler_a", SDC_SAMPLER_EULER_A, 0, 0},     {"euler_a_karras", SDC_SAMPLER_EULER_A, 0, 1},
    {"dpmpp_2m", SDC_SAMPLER_DPMPP_2M, 0, 0},   {"dpmpp_2m_karras", SDC_SAMPLER_DPMPP_2M, 0, 1},
    {"pndm", SDC_SAMPLER_PNDM, 0, 0},           {"lms", SDC_SAMPLER_LMS, 0, 0},
};
#define NVARIANTS (sizeof k_variants / sizeof *k_variants)

static sdc_status check_scheduler(run *r, const sdc_sd *sd) {
    if (!wanted(r, "scheduler")) return SDC_OK;
    char key[160];
    if (sdc_golden_has(&r->g, "scheduler/alphas_cumprod")) {
        int n = sd->sched.num_train_timesteps;
        double *ac = malloc((size_t)n * sizeof *ac);
        float *f = malloc((size_t)n * sizeof *f);
        sdc_status st = ac && f ? sdc_sched_alphas_cumprod(&sd->sched, ac, r->err)
                                : sdc_fail(r->err, SDC_ENOMEM, "out of memory");
        for (int i = 0; st == SDC_OK && i < n; i++) f[i] = (float)ac[i];
        if (st == SDC_OK) st = compare(r, "scheduler/alphas_cumprod", f, (size_t)n);
        free(ac);
        free(f);
        SDC_TRY(st);
    }
    static const int counts[2] = {4, 50};
    for (size_t v = 0; v < NVARIANTS; v++) {
        for (int k = 0; k < 2; k++) {
            char tk[160], sk[160];
            snprintf(tk, sizeof tk, "scheduler/%s/timesteps_%d", k_variants[v].name, counts[k]);
            snprintf(sk, sizeof sk, "scheduler/%s/sigmas_%d", k_variants[v].name, counts[k]);
            if (!sdc_golden_has(&r->g, tk)) continue;
            sdc_sampler s;
            sdc_sampler_opts so = {.eta = k_variants[v].eta, .karras = k_variants[v].karras ? SDC_KARRAS_ON : SDC_KARRAS_CONFIG};
            SDC_TRY(sdc_sampler_init(&s, k_variants[v].kind, &sd->sched, counts[k], &so, 1, r->err));
            float *f = malloc((size_t)(s.count + 1) * sizeof *f);
            sdc_status st = f ? SDC_OK : sdc_fail(r->err, SDC_ENOMEM, "out of memory");
            for (int i = 0; st == SDC_OK && i < s.count; i++) f[i] = (float)s.timesteps[i];
            if (st == SDC_OK) st = compare(r, tk, f, (size_t)s.count);
            if (st == SDC_OK && s.sigmas && sdc_golden_has(&r->g, sk)) {
                for (int i = 0; i <= s.count; i++) f[i] = (float)s.sigmas[i];
                st = compare(r, sk, f, (size_t)s.count + 1);
            }
            free(f);
            sdc_sampler_free(&s);
            snprintf(key, sizeof key, "%s", tk);
            SDC_TRY(st);
        }
    }
    return SDC_OK;
}

typedef struct injected {
    const float *noise;
    size_t n, used, total;
} injected;

static void injected_noise(void *ctx, float *out, size_t n) {
    injected *in = ctx;
    /* A sampler asking for more noise than the golden recorded is a mismatch
     * the comparison will show; give zeros rather than read past the end. */
    for (size_t i = 0; i < n; i++) out[i] = in->used + i < in->total ? in->noise[in->used + i] : 0.0f;
    in->used += n;
}

static sdc_status check_pipeline(run *r, const char *model_path, const char *prefix, const sdc_sd *sd) {
    char key[200];
    snprintf(key, sizeof key, "%s/in/latents", prefix);
    if (!sdc_golden_has(&r->g, key) || !wanted(r, prefix)) return SDC_OK;
    float *lat;
    int64_t ls[8];
    int nd;
    SDC_TRY(sdc_golden_f32(&r->g, key, &lat, ls, &nd, r->err));
    double *gs = NULL, *steps = NULL;
    int64_t s1[8];
    int n1;
    sdc_status st = SDC_OK;
    snprintf(key, sizeof key, "%s/meta/guidance_scale", prefix);
    if (st == SDC_OK) st = sdc_golden_f64(&r->g, key, &gs, s1, &n1, r->err);
    snprintf(key, sizeof key, "%s/meta/steps", prefix);
    if (st == SDC_OK) st = sdc_golden_f64(&r->g, key, &steps, s1, &n1, r->err);
    const char *pj = sdc_golden_meta(&r->g, "prompts");
    cJSON *prompts = pj ? cJSON_Parse(pj) : NULL;
    if (st == SDC_OK && (!cJSON_IsArray(prompts) || cJSON_GetArraySize(prompts) < 2))
        st = sdc_fail(r->err, SDC_EFORMAT, "%s: metadata \"prompts\" must be a JSON list of prompts", r->g.path);
    (void)model_path;
    for (size_t v = 0; st == SDC_OK && v < NVARIANTS; v++) {
        snprintf(key, sizeof key, "%s/%s/latents", prefix, k_variants[v].name);
        if (!sdc_golden_has(&r->g, key)) continue;
        int s = sd->vae ? sdc_vae_scale(&sd->vae->cfg) : 8;
        sdc_txt2img_opts o = {
            .prompt = cJSON_GetArrayItem(prompts, 0)->valuestring,
            /* the packs' convention: SD uses prompt 1 ("") as the negative
             * prompt, SDXL none (zeros) */
            .negative_prompt = sd->nte == 1 ? cJSON_GetArrayItem(prompts, 1)->valuestring : NULL,
            .steps = (int)steps[0],
            .guidance = gs[0],
            .sampler = k_variants[v].kind,
            .sampler_opts = {.eta = k_variants[v].eta,
                             .karras = k_variants[v].karras ? SDC_KARRAS_ON : SDC_KARRAS_CONFIG},
            .height = (int)(ls[2] * s),
            .width = (int)(ls[3] * s),
            .batch = (int)ls[0],
            .latents = lat,
        };
        const char *np = sdc_golden_meta(&r->g, "negative_prompt");
        cJSON *npj = np ? cJSON_Parse(np) : NULL;
        if (cJSON_IsString(npj)) o.negative_prompt = npj->valuestring;
        if (cJSON_IsNull(npj)) o.negative_prompt = NULL;
        /* injected step noise */
        float *noise = NULL;
        int64_t ns[8];
        int nn = 0;
        injected inj = {0};
        snprintf(key, sizeof key, "%s/%s/noise", prefix, k_variants[v].name);
        if (sdc_golden_has(&r->g, key)) {
            st = sdc_golden_f32(&r->g, key, &noise, ns, &nn, r->err);
            if (st == SDC_OK) {
                inj.noise = noise;
                inj.total = 1;
                for (int i = 0; i < nn; i++) inj.total *= (size_t)ns[i];
                o.noise = injected_noise;
                o.noise_ctx = &inj;
            }
        }
        snprintf(key, sizeof key, "%s/%s/image", prefix, k_variants[v].name);
        o.decode = sdc_golden_has(&r->g, key);
        sdc_txt2img_out out;
        if (st == SDC_OK) st = sdc_txt2img(r->c, sd, &o, &out, r->err);
        if (st == SDC_OK) {
            snprintf(key, sizeof key, "%s/%s/latents", prefix, k_variants[v].name);
            st = compare(r, key, out.latents,
                         (size_t)(out.latent_shape[0] * out.latent_shape[1] * out.latent_shape[2] * out.latent_shape[3]));
            if (st == SDC_OK && o.decode) {
                snprintf(key, sizeof key, "%s/%s/image", prefix, k_variants[v].name);
                st = compare(r, key, out.images,
                             (size_t)(out.image_shape[0] * out.image_shape[1] * out.image_shape[2] * out.image_shape[3]));
            }
            sdc_txt2img_out_free(&out);
        }
        if (st == SDC_OK && o.noise && inj.used != inj.total)
            st = sdc_fail(r->err, SDC_EFORMAT, "%s: %s drew %zu noise values, the golden recorded %zu", r->g.path,
                          k_variants[v].name, inj.used, inj.total);
        cJSON_Delete(npj);
        free(noise);
    }
    cJSON_Delete(prompts);
    free(lat), free(gs), free(steps);
    return st;
}

sdc_status sdc_check_run(sdc_ctx *c, const char *model_path, const char *golden_path, const sdc_check_opts *opts,
                         sdc_check_summary *sum, sdc_error *err) {
    memset(sum, 0, sizeof *sum);
    run r = {.c = c, .o = opts, .sum = sum, .err = err};
    SDC_TRY(sdc_golden_open(golden_path, &r.g, err));
    sdc_sd sd;
    sdc_status st = sdc_sd_load(model_path, NULL, &sd, err);
    if (st == SDC_OK) st = sdc_sd_to_device(&sd, c, err);
    if (st == SDC_OK) {
        st = check_text(&r, &sd);
        if (st == SDC_OK) st = check_unet(&r, &sd);
        if (st == SDC_OK) st = check_vae(&r, &sd);
        if (st == SDC_OK) st = check_scheduler(&r, &sd);
        if (st == SDC_OK) st = check_pipeline(&r, model_path, "pipeline", &sd);
        sdc_sd_free(&sd);
    }
    if (st == SDC_OK) {
        if (opts->lora) {
            sdc_sd_lora l = {opts->lora, 1.0f};
            sdc_sd_load_opts lo = {.loras = &l, .nlora = 1};
            st = sdc_sd_load(model_path, &lo, &sd, err);
            if (st == SDC_OK) {
                st = sdc_sd_to_device(&sd, c, err);
                if (st == SDC_OK) st = check_pipeline(&r, model_path, "pipeline_lora", &sd);
                sdc_sd_free(&sd);
            }
        } else if (sdc_golden_has(&r.g, "pipeline_lora/in/latents")) {
            sum->skipped++;
        }
    }
    sdc_golden_close(&r.g);
    return st;
}
