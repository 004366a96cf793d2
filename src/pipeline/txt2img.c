#include "pipeline/txt2img.h"

#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_runtime.h"
#include "backend/profile.h"
#include "core/rng.h"
#include "core/torch_rng.h"

sdc_status sdc_txt2img_check(const sdc_sd *sd, const sdc_txt2img_opts *o, sdc_error *err) {
    int s = sd->vae ? sdc_vae_scale(&sd->vae->cfg) : 8;
    int m = s * (1 << (sd->unet->cfg.levels - 1));
    if (o->height <= 0 || o->width <= 0 || o->height % m || o->width % m)
        return sdc_fail(err, SDC_EINVAL, "--height and --width must be positive multiples of %d for this model (got %dx%d)",
                        m, o->width, o->height);
    if ((int64_t)o->height * o->width > 4096LL * 4096)
        return sdc_fail(err, SDC_ELIMIT, "%dx%d is larger than the 4096x4096 sdc accepts", o->width, o->height);
    if (o->steps < 1 || o->steps > 1000) return sdc_fail(err, SDC_EINVAL, "--steps must be in 1..1000 (got %d)", o->steps);
    if (o->batch < 1 || o->batch > 64) return sdc_fail(err, SDC_EINVAL, "--batch must be in 1..64 (got %d)", o->batch);
    if (o->clip_skip < 0 || o->clip_skip >= (int)sd->te[0]->cfg.num_hidden_layers)
        return sdc_fail(err, SDC_EINVAL, "--clip-skip must be in 0..%d for this text encoder",
                        (int)sd->te[0]->cfg.num_hidden_layers - 1);
    if (o->decode && !sd->vae) return sdc_fail(err, SDC_EINVAL, "the model was loaded without its VAE");
    return SDC_OK;
}

sdc_status sdc_encode_prompt(sdc_ctx *c, const sdc_sd *sd, const char *prompt, int clip_skip, sdc_tensor *context,
                             sdc_tensor *pooled, sdc_error *err) {
    *pooled = (sdc_tensor){0};
    int32_t ids[2][512];
    int T = sdc_clip_tokenizer_max_length(sd->tok[0]);
    for (int i = 0; i < sd->nte; i++) {
        if (sdc_clip_tokenizer_max_length(sd->tok[i]) != T || T > 512)
            return sdc_fail(err, SDC_EUNSUPPORTED, "tokenizers with different or very long max lengths");
        SDC_TRY(sdc_clip_tokenize(sd->tok[i], prompt, ids[i], NULL, err));
        SDC_TRY(sdc_clip_text_check_ids(sd->te[i], ids[i], T, err));
    }
    if (sd->nte == 1) {
        /* SD 1.x/2.x: last_hidden_state; with clip skip k, final_layer_norm of
         * hidden_states[−(k+1)] (diffusers' encode_prompt). */
        int64_t D = sd->te[0]->cfg.hidden_size;
        *context = sdc_ctx_new(c, 1, T, D);
        size_t mark = sdc_arena_mark(c->arena);
        sdc_clip_text_out o;
        sdc_clip_text_forward(c, sd->te[0], ids[0], 1, T, clip_skip ? -(clip_skip + 1) : 0, &o);
        if (clip_skip)
            sdc_layer_norm_forward(c, context, &sd->te[0]->final_layer_norm, &o.hidden);
        else
            sdc_op_axpby(c, context, 1.0f, &o.last_hidden, 0.0f, NULL);
        sdc_ctx_release(c, mark);
        return SDC_OK;
    }
    /* SDXL: both encoders' hidden_states[−(k+2)] concatenated on the feature
     * axis; pooled = text_encoder_2's projected EOS embedding. */
    int64_t D0 = sd->te[0]->cfg.hidden_size, D1 = sd->te[1]->cfg.hidden_size;
    int64_t P = sd->te[1]->cfg.projection_dim;
    *context = sdc_ctx_new(c, 1, T, D0 + D1);
    *pooled = sdc_ctx_new(c, 1, P);
    size_t mark = sdc_arena_mark(c->arena);
    sdc_clip_text_out o0, o1;
    sdc_clip_text_forward(c, sd->te[0], ids[0], 1, T, -(clip_skip + 2), &o0);
    sdc_clip_text_forward(c, sd->te[1], ids[1], 1, T, -(clip_skip + 2), &o1);
    sdc_tensor a = sdc_reshape(&o0.hidden, T, D0, 1), b = sdc_reshape(&o1.hidden, T, D1, 1);
    sdc_tensor cat = sdc_reshape(context, T, D0 + D1, 1);
    sdc_op_concat1(c, &cat, &a, &b);
    sdc_tensor te = sdc_reshape(&o1.text_embeds, 1, P);
    sdc_op_axpby(c, pooled, 1.0f, &te, 0.0f, NULL);
    sdc_ctx_release(c, mark);
    return SDC_OK;
}

typedef struct noise_src {
    sdc_rng_kind kind;
    sdc_rng philox;
    sdc_torch_gen *torch;
} noise_src;

static void draw_noise(void *ctx, float *out, size_t n) {
    noise_src *s = ctx;
    if (s->kind == SDC_RNG_TORCH)
        sdc_torch_randn(s->torch, out, n);
    else
        sdc_rng_fill_normal(&s->philox, out, n);
}

/* Host copy of a device tensor. */
static float *to_host(sdc_ctx *c, const sdc_tensor *t) {
    float *h = malloc((size_t)sdc_tensor_numel(t) * sizeof *h);
    if (h) sdc_op_download(c, h, t);
    return h;
}

sdc_status sdc_txt2img(sdc_ctx *c, const sdc_sd *sd, const sdc_txt2img_opts *o, sdc_txt2img_out *out,
                       sdc_error *err) {
    memset(out, 0, sizeof *out);
    SDC_TRY(sdc_txt2img_check(sd, o, err));
    const sdc_unet_config *ucfg = &sd->unet->cfg;
    const int64_t B = o->batch, s = sd->vae ? sdc_vae_scale(&sd->vae->cfg) : 8;
    const int64_t C = ucfg->in_channels, h = o->height / s, w = o->width / s;
    const size_t n = (size_t)(B * C * h * w);
    const int cfg_on = o->guidance > 1.0;
    const int64_t NB = cfg_on ? 2 * B : B; /* UNet batch: [negative × B, positive × B] */
    sdc_status st = SDC_OK;
    size_t mark0 = sdc_arena_mark(c->arena);

    float *ctx_h = NULL, *pool_h = NULL, *x = NULL, *in = NULL, *pred = NULL, *eps = NULL;
    double *tids = NULL, *ts = NULL;
    float *tsin_h = NULL;
    void *graph = NULL; /* the captured UNet call (GPU) */
    sdc_torch_gen *tg = NULL;
    sdc_sampler smp;
    int smp_ok = 0;

    /* conditioning, laid out on the host for the doubled batch */
    sdc_tensor pos, pos_pool, neg, neg_pool;
    st = sdc_encode_prompt(c, sd, o->prompt ? o->prompt : "", o->clip_skip, &pos, &pos_pool, err);
    if (st != SDC_OK) goto done;
    int zero_neg = sd->nte == 2 && !o->negative_prompt && sd->force_zeros_for_empty_prompt;
    if (cfg_on && !zero_neg) {
        st = sdc_encode_prompt(c, sd, o->negative_prompt ? o->negative_prompt : "", o->clip_skip, &neg, &neg_pool,
                               err);
        if (st != SDC_OK) goto done;
    }
    const int64_t T = pos.shape[1], D = pos.shape[2], P = pos_pool.data ? pos_pool.shape[1] : 0;
    ctx_h = calloc((size_t)(NB * T * D), sizeof *ctx_h);
    pool_h = calloc((size_t)(NB * (P ? P : 1)), sizeof *pool_h);
    tids = calloc((size_t)NB * 6, sizeof *tids);
    ts = calloc((size_t)NB, sizeof *ts);
    x = malloc(n * sizeof *x);
    in = malloc((size_t)NB * (n / B) * sizeof *in);
    pred = malloc((size_t)NB * (n / B) * sizeof *pred);
    eps = malloc(n * sizeof *eps);
    if (!ctx_h || !pool_h || !tids || !ts || !x || !in || !pred || !eps) {
        st = sdc_fail(err, SDC_ENOMEM, "out of memory for a batch of %lld", (long long)B);
        goto done;
    }
    {
        float *ph = to_host(c, &pos), *pp = P ? to_host(c, &pos_pool) : NULL;
        float *nh = NULL, *np = NULL;
        if (cfg_on && !zero_neg) {
            nh = to_host(c, &neg);
            np = P ? to_host(c, &neg_pool) : NULL;
        }
        for (int64_t b = 0; b < NB; b++) {
            int is_neg = cfg_on && b < B;
            const float *src = is_neg ? nh : ph, *psrc = is_neg ? np : pp;
            if (src) memcpy(ctx_h + b * T * D, src, (size_t)(T * D) * sizeof *ctx_h);
            if (P && psrc) memcpy(pool_h + b * P, psrc, (size_t)P * sizeof *pool_h);
            /* SDXL micro-conditioning: original size, crop top-left, target size */
            double id6[6] = {o->height, o->width, 0, 0, o->height, o->width};
            memcpy(tids + 6 * b, id6, sizeof id6);
        }
        free(ph), free(pp), free(nh), free(np);
    }
    sdc_arena_release(c->arena, mark0);
    sdc_tensor ctx_t = sdc_op_upload(c, NULL, 3, SDC_SHAPE(NB, T, D), ctx_h);
    sdc_tensor pool_t = {0};
    if (P) pool_t = sdc_op_upload(c, NULL, 2, SDC_SHAPE(NB, P), pool_h);

    /* sampler and initial noise */
    sdc_sampler_kind kind = o->sampler;
    if (o->sampler_from_config) {
        st = sdc_sampler_kind_from_class(sd->sched.class_name, &kind, err);
        if (st != SDC_OK) goto done;
    }
    st = sdc_sampler_init(&smp, kind, &sd->sched, o->steps, &o->sampler_opts, n, err);
    if (st != SDC_OK) goto done;
    smp_ok = 1;
    noise_src ns = {.kind = o->rng};
    if (o->rng == SDC_RNG_TORCH) {
        tg = malloc(sizeof *tg);
        if (!tg) {
            st = sdc_fail(err, SDC_ENOMEM, "out of memory");
            goto done;
        }
        sdc_torch_gen_seed(tg, o->seed);
        ns.torch = tg;
    } else {
        sdc_rng_init(&ns.philox, o->seed);
    }
    if (o->latents)
        memcpy(x, o->latents, n * sizeof *x);
    else
        draw_noise(&ns, x, n);
    for (size_t i = 0; i < n; i++) x[i] = (float)(x[i] * smp.init_noise_sigma);

    sdc_unet_cond cond = {.context = &ctx_t, .timesteps = ts};
    if (ucfg->text_time) {
        if (!P) {
            st = sdc_fail(err, SDC_EUNSUPPORTED, "an SDXL UNet needs pooled text embeddings (text_encoder_2)");
            goto done;
        }
        cond.text_embeds = &pool_t;
        cond.time_ids = tids;
        cond.n_time_ids = 6;
    }
    /* On a GPU one UNet call is captured as a CUDA graph and replayed every
     * step, its inputs uploaded into fixed buffers first: a step is one
     * launch instead of hundreds. Step 0 runs the same call eagerly (it
     * settles the workspaces and the libraries' plans), step 1 captures. */
    const int64_t TD = ucfg->block_out_channels[0];
    const int64_t NTA = ucfg->text_time ? cond.n_time_ids * ucfg->addition_time_embed_dim : 0;
    const char *ge = getenv("SDC_CUDA_GRAPHS");
    const int graphs = c->device.type == SDC_CUDA && !(ge && !strcmp(ge, "0")) && !getenv("SDC_CUDA_SYNC") &&
                       !sdc_prof_on && smp.count > 2;
    sdc_tensor xin_buf = {0}, tsin_buf = {0}, tid_buf = {0}, graph_y = {0};
    if (graphs) {
        tsin_h = malloc((size_t)(NB * (TD > NTA ? TD : NTA)) * sizeof *tsin_h);
        if (!tsin_h) {
            st = sdc_fail(err, SDC_ENOMEM, "out of memory");
            goto done;
        }
        xin_buf = sdc_ctx_alloc(c, 4, SDC_SHAPE(NB, C, h, w));
        tsin_buf = sdc_ctx_alloc(c, 2, SDC_SHAPE(NB, TD));
        cond.t_sinusoid = &tsin_buf;
        if (NTA) { /* SDXL's size conditioning: the same every step */
            sdc_timestep_embedding(tids, NB * cond.n_time_ids, ucfg->addition_time_embed_dim, ucfg->flip_sin_to_cos,
                                   ucfg->freq_shift, tsin_h);
            tid_buf = sdc_op_upload(c, NULL, 2, SDC_SHAPE(NB, NTA), tsin_h);
            cond.time_ids_sinusoid = &tid_buf;
        }
    }
    const size_t per = n / (size_t)B;
    for (int i = 0; i < smp.count; i++) {
        float scale = (float)sdc_sampler_input_scale(&smp, i);
        for (int64_t b = 0; b < NB; b++) {
            const float *src = x + (size_t)(b % B) * per;
            float *dst = in + (size_t)b * per;
            for (size_t k = 0; k < per; k++) dst[k] = src[k] * scale;
            ts[b] = smp.timesteps[i];
        }
        size_t mark = sdc_arena_mark(c->arena);
        sdc_tensor y;
        if (graphs) {
            sdc_timestep_embedding(ts, NB, TD, ucfg->flip_sin_to_cos, ucfg->freq_shift, tsin_h);
            sdc_op_upload(c, &tsin_buf, 2, SDC_SHAPE(NB, TD), tsin_h);
            sdc_op_upload(c, &xin_buf, 4, SDC_SHAPE(NB, C, h, w), in);
            if (!graph && i == 1 && sdc_cuda_graph_begin() == 0) {
                /* recorded, not run; the replays reuse its arena addresses,
                 * which nothing else takes while the loop runs */
                y = sdc_unet_forward(c, NULL, sd->unet, &xin_buf, &cond);
                if (sdc_cuda_graph_end(&graph) == 0) graph_y = y;
                sdc_ctx_release(c, mark);
            }
            if (graph) {
                sdc_cuda_graph_launch(graph);
                y = graph_y;
            } else {
                y = sdc_unet_forward(c, NULL, sd->unet, &xin_buf, &cond);
            }
        } else {
            sdc_tensor xin = sdc_op_upload(c, NULL, 4, SDC_SHAPE(NB, C, h, w), in);
            y = sdc_unet_forward(c, NULL, sd->unet, &xin, &cond);
        }
        sdc_op_download(c, pred, &y);
        sdc_ctx_release(c, mark);
        if (cfg_on) {
            /* ε = ε_uncond + g·(ε_cond − ε_uncond) */
            const float g = (float)o->guidance;
            for (size_t k = 0; k < n; k++) eps[k] = pred[k] + g * (pred[n + k] - pred[k]);
        } else {
            memcpy(eps, pred, n * sizeof *eps);
        }
        sdc_sampler_step(&smp, i, eps, x, o->noise ? o->noise : draw_noise, o->noise ? o->noise_ctx : &ns);
        if (o->on_step) o->on_step(o->step_ctx, i + 1, smp.count);
    }

    out->latents = x;
    x = NULL;
    out->latent_shape[0] = B, out->latent_shape[1] = C, out->latent_shape[2] = h, out->latent_shape[3] = w;
    if (o->decode) {
        const sdc_vae_config *vc = &sd->vae->cfg;
        float *z = malloc(n * sizeof *z);
        if (!z) {
            st = sdc_fail(err, SDC_ENOMEM, "out of memory");
            goto done;
        }
        for (size_t k = 0; k < n; k++) z[k] = (float)(out->latents[k] / vc->scaling_factor + vc->shift_factor);
        size_t mark = sdc_arena_mark(c->arena);
        sdc_ctx vdec = sdc_sd_vae_ctx(sd, c); /* fp32 for an fp16-unsafe VAE */
        sdc_tensor zt = sdc_op_upload(&vdec, NULL, 4, SDC_SHAPE(B, C, h, w), z);
        free(z);
        sdc_tensor img = sdc_vae_decode(&vdec, NULL, sd->vae, &zt);
        out->images = to_host(&vdec, &img);
        for (int k = 0; k < 4; k++) out->image_shape[k] = img.shape[k];
        sdc_ctx_release(c, mark);
        if (!out->images) st = sdc_fail(err, SDC_ENOMEM, "out of memory");
    }

done:
    sdc_cuda_graph_free(graph);
    free(tsin_h);
    if (smp_ok) sdc_sampler_free(&smp);
    free(tg);
    free(ctx_h), free(pool_h), free(tids), free(ts), free(x), free(in), free(pred), free(eps);
    sdc_arena_release(c->arena, mark0);
    if (st != SDC_OK) sdc_txt2img_out_free(out);
    return st;
}

void sdc_txt2img_out_free(sdc_txt2img_out *out) {
    free(out->latents);
    free(out->images);
    memset(out, 0, sizeof *out);
}
