#include "pipeline/vae_train.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "core/clock.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "data/plot.h"
#include "io/json.h"
#include "io/lora_write.h"
#include "io/safetensors.h"
#include "train/grad_clip.h"
#include "train/lr_schedule.h"

/* ---- the step --------------------------------------------------------------------------------------------------- */

sdc_status sdc_vae_trainer_init(sdc_vae_trainer *t, sdc_vae *vae, const sdc_adamw_hparams *adam, double kl_weight,
                                int loss_mse, double max_grad_norm, int batch, int res, sdc_error *err) {
    memset(t, 0, sizeof *t);
    t->vae = vae;
    t->kl_weight = kl_weight;
    t->loss_mse = loss_mse;
    t->max_grad_norm = max_grad_norm;
    sdc_params *p = &vae->params;
    if (!p->grad) SDC_TRY(sdc_params_alloc_grad(p, err));
    SDC_TRY(sdc_adamw_init(&t->opt, p->total, adam, err));
    /* Recorded activations of encoder + decoder and the backward's
     * temporaries: about 96 tensors of the widest full-resolution level per
     * image is generous (the arena is reserved address space; pages are
     * touched only as used). */
    int64_t widest = 0;
    for (int i = 0; i < vae->cfg.levels; i++)
        if (vae->cfg.block_out_channels[i] > widest) widest = vae->cfg.block_out_channels[i];
    size_t bytes = ((size_t)256 << 20) + (size_t)batch * (size_t)res * (size_t)res * (size_t)widest * 4 * 96;
    SDC_TRY(sdc_arena_init(&t->arena, bytes, err));
    SDC_TRY(sdc_tape_init(&t->enc, &t->arena, err));
    SDC_TRY(sdc_tape_init(&t->dec, &t->arena, err));
    sdc_tape_watch(&t->enc, p->data, SDC_F32, p->grad, p->total);
    sdc_tape_watch(&t->dec, p->data, SDC_F32, p->grad, p->total);
    t->ctx = SDC_CTX_CPU(&t->arena);
    return SDC_OK;
}

void sdc_vae_trainer_free(sdc_vae_trainer *t) {
    sdc_adamw_free(&t->opt);
    sdc_tape_free(&t->enc);
    sdc_tape_free(&t->dec);
    if (t->arena.base) sdc_arena_free(&t->arena);
    memset(t, 0, sizeof *t);
}

sdc_status sdc_vae_trainer_grad(sdc_vae_trainer *t, const float *images, const float *eps, int B, int res,
                                sdc_vae_step_out *out, sdc_error *err) {
    sdc_ctx *c = &t->ctx;
    const sdc_vae *v = t->vae;
    const int64_t s = sdc_vae_scale(&v->cfg), Z = v->cfg.latent_channels, h = res / s;
    if (res % s) return sdc_fail(err, SDC_EINVAL, "resolution %d is not a multiple of the VAE's factor %lld", res, (long long)s);
    const size_t nz = (size_t)(B * Z * h * h), nx = (size_t)B * 3 * (size_t)res * (size_t)res;
    float *mu = malloc(nz * sizeof *mu), *lv = malloc(nz * sizeof *lv), *z = malloc(nz * sizeof *z);
    float *gz = malloc(nz * sizeof *gz), *xr = malloc(nx * sizeof *xr);
    unsigned char *clamped = calloc(nz, 1);
    if (!mu || !lv || !z || !gz || !xr || !clamped) {
        free(mu), free(lv), free(z), free(gz), free(xr), free(clamped);
        return sdc_fail(err, SDC_ENOMEM, "out of memory for a batch of %d", B);
    }
    size_t mark = sdc_arena_mark(&t->arena);
    sdc_tape_reset(&t->enc);
    sdc_tape_reset(&t->dec);

    /* encoder, recorded: x → μ, log σ² */
    c->tape = NULL;
    sdc_tensor x = sdc_op_upload(c, NULL, 4, SDC_SHAPE(B, 3, res, res), images);
    c->tape = &t->enc;
    sdc_tensor mean, logvar;
    sdc_vae_encode_unclamped(c, v, &x, &mean, &logvar);
    c->tape = NULL;
    sdc_op_download(c, mu, &mean);
    sdc_op_download(c, lv, &logvar);

    /* z = μ + σ·ε (a leaf of the decoder's tape); KL in double. log σ² is
     * clamped to [−30, 20] as diffusers' DiagonalGaussianDistribution (no
     * gradient flows through a clamped value) */
    double kl = 0;
    for (size_t i = 0; i < nz; i++) {
        if (lv[i] < -30.0f || lv[i] > 20.0f) {
            lv[i] = lv[i] < -30.0f ? -30.0f : 20.0f;
            clamped[i] = 1;
        }
        double var = exp((double)lv[i]);
        z[i] = (float)((double)mu[i] + sqrt(var) * eps[i]);
        kl += 0.5 * ((double)mu[i] * mu[i] + var - 1.0 - lv[i]);
    }
    kl /= B;
    sdc_tensor zt = sdc_op_upload(c, NULL, 4, SDC_SHAPE(B, Z, h, h), z);

    /* decoder, recorded: z → x̂ */
    c->tape = &t->dec;
    sdc_tensor y = sdc_vae_decode(c, NULL, v, &zt);
    c->tape = NULL;
    sdc_op_download(c, xr, &y);

    /* reconstruction loss and ∂/∂x̂ (into xr) */
    double rec = 0;
    const double inv_b = 1.0 / B;
    for (size_t i = 0; i < nx; i++) {
        double d = (double)xr[i] - images[i];
        if (t->loss_mse) {
            rec += d * d;
            xr[i] = (float)(2.0 * d * inv_b);
        } else {
            rec += fabs(d);
            xr[i] = (float)((d > 0 ? 1.0 : d < 0 ? -1.0 : 0.0) * inv_b);
        }
    }
    rec *= inv_b;
    sdc_tape_zero_grads(&t->dec, &t->arena);
    sdc_tensor gy = sdc_tape_grad(&t->dec, &y);
    c->be->upload(&gy, xr);
    sdc_status st = sdc_tape_backward(c, &t->dec, err);

    /* ∂loss/∂z → the posterior's parameters (see the header), then the encoder */
    if (st == SDC_OK) {
        sdc_tensor gzt = sdc_tape_grad(&t->dec, &zt);
        c->be->download(gz, &gzt);
        const double kw = t->kl_weight * inv_b;
        for (size_t i = 0; i < nz; i++) {
            double sd = exp(0.5 * lv[i]);
            mu[i] = (float)(gz[i] + kw * mu[i]);
            lv[i] = clamped[i] ? 0.0f : (float)(gz[i] * 0.5 * sd * eps[i] + kw * 0.5 * (sd * sd - 1.0));
        }
        sdc_tape_zero_grads(&t->enc, &t->arena);
        sdc_tensor gm = sdc_tape_grad(&t->enc, &mean), gl = sdc_tape_grad(&t->enc, &logvar);
        c->be->upload(&gm, mu);
        c->be->upload(&gl, lv);
        st = sdc_tape_backward(c, &t->enc, err);
    }
    sdc_arena_release(&t->arena, mark);
    free(mu), free(lv), free(z), free(gz), free(xr), free(clamped);
    if (st == SDC_OK && out) {
        out->rec = rec;
        out->kl = kl;
        out->loss = rec + t->kl_weight * kl;
    }
    return st;
}

void sdc_vae_trainer_update(sdc_vae_trainer *t, double lr, double *grad_norm) {
    sdc_params *p = &t->vae->params;
    double norm = sdc_grad_norm(p->grad, p->total);
    if (grad_norm) *grad_norm = norm;
    if (sdc_grad_finite(norm)) {
        if (t->max_grad_norm > 0) {
            float coef = sdc_grad_clip_coef(norm, t->max_grad_norm);
            if (coef != 1.0f) sdc_grad_scale(p->grad, p->total, coef);
        }
        sdc_adamw_step(&t->opt, p->data, p->grad, lr);
        t->step++;
    }
    memset(p->grad, 0, p->total * sizeof *p->grad);
}

/* ---- loading ---------------------------------------------------------------------------------------------------- */

sdc_status sdc_vae_load_dir(const char *path, uint64_t seed, sdc_vae *v, char **config_text, sdc_error *err) {
    *config_text = NULL;
    memset(v, 0, sizeof *v);
    char dir[4096], cfg[4200], wts[4200];
    snprintf(dir, sizeof dir, "%s", path);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    if (!sdc_path_exists(cfg)) { /* a pipeline folder: its vae/ */
        snprintf(dir, sizeof dir, "%s/vae", path);
        snprintf(cfg, sizeof cfg, "%s/config.json", dir);
        if (!sdc_path_exists(cfg))
            return sdc_fail(err, SDC_ENOTFOUND, "%s: neither an AutoencoderKL folder (config.json) nor a model with vae/",
                            path);
    }
    snprintf(wts, sizeof wts, "%s/diffusion_pytorch_model.safetensors", dir);
    size_t len = 0;
    SDC_TRY(sdc_read_file(cfg, config_text, &len, err));
    cJSON *j = NULL;
    sdc_vae_config vc;
    sdc_status st = sdc_json_parse(*config_text, len, cfg, &j, err);
    if (st == SDC_OK) st = sdc_vae_config_parse(j, cfg, &vc, err);
    cJSON_Delete(j);
    if (st == SDC_OK) st = sdc_vae_build(v, &vc, "vae", err);
    if (st == SDC_OK && !sdc_path_exists(wts)) {
        sdc_params_init_random(&v->params, seed);
        SDC_INFO("%s: no weights; the VAE starts from a random initialisation (seed %llu)", dir,
                 (unsigned long long)seed);
    } else if (st == SDC_OK) {
        /* the file's names are the VAE's own; the loader wants "vae.<name>" */
        sdc_weights raw, named;
        sdc_weights_init(&raw);
        sdc_weights_init(&named);
        st = sdc_safetensors_read(wts, &raw, err);
        for (size_t i = 0; st == SDC_OK && i < raw.count; i++) {
            const sdc_weight *w = &raw.items[i];
            char name[600];
            snprintf(name, sizeof name, "vae.%s", w->name);
            st = sdc_weights_add(&named, name, w->src_name, w->dtype, w->ndim, w->shape, w->data, w->nbytes, -1, wts,
                                 err);
        }
        if (st == SDC_OK) st = sdc_vae_load(v, &named, err);
        sdc_weights_free(&named);
        sdc_weights_free(&raw);
    }
    if (st != SDC_OK) {
        sdc_vae_free(v); /* safe on a zeroed or partly built VAE */
        free(*config_text);
        *config_text = NULL;
    }
    return st;
}

/* ---- the run ------------------------------------------------------------------------------------------------------ */

void sdc_vae_train_args_default(sdc_vae_train_args *a) {
    memset(a, 0, sizeof *a);
    a->resolution = 32;
    a->batch = 16;
    a->steps = 1000;
    a->warmup_steps = 50;
    a->lr = 1e-3;
    a->kl_weight = 1e-6;
    a->max_grad_norm = 1.0;
    a->random_flip = 1;
    a->save_dtype = SDC_F32;
}

/* Images [B, 3, res, res] at positions pos.. of epoch's order, decoded in parallel. */
static sdc_status load_batch(const sdc_dataset *ds, const int64_t *order, int64_t pos, int B, uint64_t seed,
                             uint64_t epoch, const sdc_sample_opts *so, float *img, sdc_error *err) {
    const size_t per = (size_t)3 * (size_t)so->resolution * (size_t)so->resolution;
    sdc_status *sts = calloc((size_t)B, sizeof *sts);
    sdc_error *errs = calloc((size_t)B, sizeof *errs);
    if (!sts || !errs) {
        free(sts), free(errs);
        return sdc_fail(err, SDC_ENOMEM, "out of memory");
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        sts[b] = sdc_dataset_load_sample(ds, order[(pos + b) % ds->n], so, seed, epoch, img + (size_t)b * per, NULL,
                                         &errs[b]);
    sdc_status st = SDC_OK;
    for (int b = 0; b < B && st == SDC_OK; b++)
        if (sts[b] != SDC_OK) {
            st = sts[b];
            *err = errs[b];
        }
    free(sts), free(errs);
    return st;
}

/* Latent standard deviation over up to 512 images (z sampled as in
 * training), for scaling_factor = 1/std. */
static sdc_status latent_std(sdc_vae_trainer *t, const sdc_dataset *ds, const int64_t *order, const sdc_vae_train_args *a,
                             const sdc_sample_opts *so, float *img, double *std, sdc_error *err) {
    const sdc_vae *v = t->vae;
    const int64_t Z = v->cfg.latent_channels, h = a->resolution / sdc_vae_scale(&v->cfg);
    const int64_t total = ds->n < 512 ? ds->n : 512;
    double sum = 0, sumsq = 0;
    int64_t count = 0;
    sdc_ctx c = SDC_CTX_CPU(&t->arena);
    for (int64_t pos = 0; pos < total; pos += a->batch) {
        int B = (int)(total - pos < a->batch ? total - pos : a->batch);
        SDC_TRY(load_batch(ds, order, pos, B, a->seed, 0, so, img, err));
        size_t n = (size_t)(B * Z * h * h), mark = sdc_arena_mark(&t->arena);
        float *mu = malloc(n * sizeof *mu), *lv = malloc(n * sizeof *lv), *eps = malloc(n * sizeof *eps);
        if (!mu || !lv || !eps) {
            free(mu), free(lv), free(eps);
            return sdc_fail(err, SDC_ENOMEM, "out of memory");
        }
        sdc_tensor x = sdc_op_upload(&c, NULL, 4, SDC_SHAPE(B, 3, a->resolution, a->resolution), img), mean, logvar;
        sdc_vae_encode(&c, v, &x, &mean, &logvar); /* the inference encoder (clamps log σ²) */
        sdc_op_download(&c, mu, &mean);
        sdc_op_download(&c, lv, &logvar);
        sdc_arena_release(&t->arena, mark);
        sdc_rng r;
        sdc_rng_init(&r, a->seed ^ 0x5CA1Eull ^ (uint64_t)pos);
        sdc_rng_fill_normal(&r, eps, n);
        for (size_t i = 0; i < n; i++) {
            double zi = mu[i] + exp(0.5 * lv[i]) * eps[i];
            sum += zi;
            sumsq += zi * zi;
        }
        count += (int64_t)n;
        free(mu), free(lv), free(eps);
    }
    double mean = sum / (double)count, var = sumsq / (double)count - mean * mean;
    *std = sqrt(var > 0 ? var : 0);
    return SDC_OK;
}

/* The input config with scaling_factor and sample_size of this training. */
static char *output_config(const char *text, double scaling, int res) {
    cJSON *j = cJSON_Parse(text);
    if (!j) return NULL;
    cJSON_DeleteItemFromObjectCaseSensitive(j, "scaling_factor");
    cJSON_DeleteItemFromObjectCaseSensitive(j, "sample_size");
    cJSON_AddNumberToObject(j, "scaling_factor", scaling);
    cJSON_AddNumberToObject(j, "sample_size", res);
    char *out = cJSON_Print(j);
    cJSON_Delete(j);
    return out;
}

typedef struct vae_run {
    sdc_dataset ds;
    sdc_vae vae;
    int have_vae;
    char *config;
    sdc_vae_trainer t;
    int have_trainer;
    float *img, *eps;
    int64_t *order;
    double *losses;
    FILE *log;
} vae_run;

static sdc_status run(vae_run *r, const sdc_vae_train_args *a, sdc_error *err) {
    if (!a->data_dir || !a->pretrained || !a->output_dir)
        return sdc_fail(err, SDC_EINVAL, "train-vae needs a data folder, a VAE to start from and an output folder");
    if (a->batch < 1 || a->steps < 1 || a->resolution < 8 || !(a->lr > 0) || a->kl_weight < 0)
        return sdc_fail(err, SDC_EINVAL, "train-vae: batch, steps, resolution and lr must be positive, kl_weight ≥ 0");
    sdc_dataset_init(&r->ds);
    SDC_TRY(sdc_dataset_scan_imagefolder(&r->ds, a->data_dir, NULL, err));
    SDC_TRY(sdc_vae_load_dir(a->pretrained, a->seed, &r->vae, &r->config, err));
    r->have_vae = 1;
    const int s = sdc_vae_scale(&r->vae.cfg);
    if (a->resolution % s)
        return sdc_fail(err, SDC_EINVAL, "--resolution %d must be a multiple of the VAE's factor %d", a->resolution, s);
    sdc_adamw_hparams h;
    sdc_adamw_hparams_default(&h);
    h.lr = a->lr;
    h.weight_decay = 0; /* LDM's autoencoder uses plain Adam */
    SDC_TRY(sdc_vae_trainer_init(&r->t, &r->vae, &h, a->kl_weight, a->loss_mse, a->max_grad_norm, a->batch,
                                 a->resolution, err));
    r->have_trainer = 1;
    sdc_lr_schedule sched;
    SDC_TRY(sdc_lr_schedule_init(&sched, SDC_LR_COSINE, a->lr, a->warmup_steps, a->steps, 1, 1.0, err));

    const int64_t Z = r->vae.cfg.latent_channels, hl = a->resolution / s;
    const size_t per_img = (size_t)3 * a->resolution * a->resolution, per_z = (size_t)(Z * hl * hl);
    r->img = malloc((size_t)a->batch * per_img * sizeof *r->img);
    r->eps = malloc((size_t)a->batch * per_z * sizeof *r->eps);
    r->order = malloc((size_t)r->ds.n * sizeof *r->order);
    r->losses = malloc((size_t)a->steps * sizeof *r->losses);
    if (!r->img || !r->eps || !r->order || !r->losses) return sdc_fail(err, SDC_ENOMEM, "out of memory");

    char logdir[4200], path[4300], png[4300];
    snprintf(logdir, sizeof logdir, "%s/logs", a->output_dir);
    SDC_TRY(sdc_mkdirs(logdir, err));
    snprintf(path, sizeof path, "%s/metrics.jsonl", logdir);
    snprintf(png, sizeof png, "%s/loss.png", logdir);
    r->log = fopen(path, "w");
    if (!r->log) return sdc_fail(err, SDC_EIO, "%s: cannot open: %s", path, strerror(errno));

    fprintf(stderr, "sdc: training the VAE (%zu parameters; %dx%d images -> %lldx%lldx%lld latents), %lld images, "
                    "batch %d, %lld steps\n",
            r->vae.params.total, a->resolution, a->resolution, (long long)Z, (long long)hl, (long long)hl,
            (long long)r->ds.n, a->batch, (long long)a->steps);
    sdc_sample_opts so = {.resolution = a->resolution, .center_crop = 1, .random_flip = a->random_flip};
    sdc_progress bar = {0};
    sdc_progress_begin(&bar, "train-vae", a->steps);
    int64_t epoch = -1, pos = r->ds.n;
    sdc_status st = SDC_OK;
    for (int64_t step = 0; st == SDC_OK && step < a->steps; step++) {
        double t0 = sdc_monotonic_s();
        if (pos + a->batch > r->ds.n) { /* a new epoch (the tail of the last one is dropped) */
            epoch++;
            pos = 0;
            sdc_dataset_epoch_order(&r->ds, a->seed, (uint64_t)epoch, r->order);
        }
        int B = (int)(r->ds.n < a->batch ? r->ds.n : a->batch);
        st = load_batch(&r->ds, r->order, pos, B, a->seed, (uint64_t)epoch, &so, r->img, err);
        pos += B;
        sdc_rng rn;
        sdc_rng_init(&rn, a->seed * 0x9E3779B97F4A7C15ull ^ (uint64_t)step);
        sdc_rng_fill_normal(&rn, r->eps, (size_t)B * per_z);
        sdc_vae_step_out o = {0};
        if (st == SDC_OK) st = sdc_vae_trainer_grad(&r->t, r->img, r->eps, B, a->resolution, &o, err);
        if (st != SDC_OK) break;
        double lr = sdc_lr_at(&sched, step), gn = 0;
        sdc_vae_trainer_update(&r->t, lr, &gn);
        /* per-pixel error, the readable number: rec / (3·res²) */
        double pix = o.rec / (double)per_img;
        r->losses[step] = pix;
        fprintf(r->log,
                "{\"step\": %lld, \"loss\": %.9g, \"rec\": %.9g, \"kl\": %.9g, \"rec_per_pixel\": %.6g, \"lr\": %.6g, "
                "\"grad_norm\": %.6g, \"images_per_s\": %.4g}\n",
                (long long)(step + 1), o.loss, o.rec, o.kl, pix, lr, gn, B / (sdc_monotonic_s() - t0));
        fflush(r->log);
        sdc_progress_set_postfix(&bar, "%s=%.4f", a->loss_mse ? "mse" : "l1", pix);
        sdc_progress_update(&bar, step + 1);
        if ((step + 1) % 50 == 0 || step + 1 == a->steps) {
            sdc_error pe;
            if (sdc_plot_curve_png(png, r->losses, (size_t)(step + 1), a->loss_mse ? "mse per pixel" : "l1 per pixel",
                                   &pe) != SDC_OK)
                SDC_WARN("%s", pe.msg);
        }
    }
    sdc_progress_end(&bar);
    SDC_TRY(st);

    /* scaling_factor = 1/std of the latents, then the folder's two files */
    double std = 0;
    sdc_dataset_epoch_order(&r->ds, a->seed, 0, r->order);
    SDC_TRY(latent_std(&r->t, &r->ds, r->order, a, &so, r->img, &std, err));
    if (!(std > 0)) return sdc_fail(err, SDC_EINVAL, "the trained VAE's latents are constant (std %g)", std);
    char *cfg = output_config(r->config, 1.0 / std, a->resolution);
    if (!cfg) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    st = sdc_params_write_diffusers(a->output_dir, &r->vae.params, "diffusion_pytorch_model.safetensors", cfg,
                                    a->save_dtype, err);
    free(cfg);
    if (st == SDC_OK)
        fprintf(stderr, "sdc: latent std %.4f -> scaling_factor %.5f; wrote the VAE to %s\n", std, 1.0 / std,
                a->output_dir);
    return st;
}

sdc_status sdc_vae_train_run(const sdc_vae_train_args *a, sdc_error *err) {
    vae_run *r = calloc(1, sizeof *r);
    if (!r) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    sdc_status st = run(r, a, err);
    if (r->log) fclose(r->log);
    if (r->have_trainer) sdc_vae_trainer_free(&r->t);
    if (r->have_vae) sdc_vae_free(&r->vae);
    sdc_dataset_free(&r->ds);
    free(r->config), free(r->img), free(r->eps), free(r->order), free(r->losses);
    free(r);
    return st;
}
