/* sdc generate: text-to-image. Writes PNGs with the generation parameters
 * in a "parameters" text chunk (the AUTOMATIC1111 layout), so the settings
 * travel with the picture. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/device.h"
#include "backend/ops.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "core/fs.h"
#include "core/progress.h"
#include "data/image.h"
#include "data/png.h"
#include "io/safetensors.h"
#include "pipeline/txt2img.h"

#define MAX_LORAS 16

/* "file.safetensors:0.8" → path and scale (default 1). */
static int parse_lora(const char *arg, char *path, size_t cap, float *scale) {
    const char *colon = strrchr(arg, ':');
    *scale = 1.0f;
    size_t len = strlen(arg);
    if (colon && colon[1]) {
        char *end;
        double s = strtod(colon + 1, &end);
        if (!*end) {
            *scale = (float)s;
            len = (size_t)(colon - arg);
        }
    }
    if (len == 0 || len >= cap) return -1;
    memcpy(path, arg, len);
    path[len] = 0;
    return 0;
}

static const char *a1111_sampler(sdc_sampler_kind k, int karras) {
    switch (k) {
    case SDC_SAMPLER_DDIM: return "DDIM";
    case SDC_SAMPLER_EULER: return karras ? "Euler Karras" : "Euler";
    case SDC_SAMPLER_EULER_A: return karras ? "Euler a Karras" : "Euler a";
    case SDC_SAMPLER_DPMPP_2M: return karras ? "DPM++ 2M Karras" : "DPM++ 2M";
    case SDC_SAMPLER_PNDM: return "PLMS";
    case SDC_SAMPLER_LMS: return karras ? "LMS Karras" : "LMS";
    default: break;
    }
    return "?";
}

static const char *base_name(const char *p) {
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') n--;
    const char *s = p;
    for (size_t i = 0; i + 1 < n; i++)
        if (p[i] == '/') s = p + i + 1;
    return s;
}

/* out.png → out-3.png */
static void indexed_path(char *buf, size_t cap, const char *path, const char *tag) {
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash)) dot = path + strlen(path);
    snprintf(buf, cap, "%.*s-%s%s", (int)(dot - path), path, tag, dot);
}

static sdc_status read_latents(const char *path, float **out, int64_t *shape, sdc_error *err) {
    sdc_weights w;
    sdc_weights_init(&w);
    sdc_status st = sdc_safetensors_read(path, &w, err);
    const sdc_weight *t = st == SDC_OK ? sdc_weights_find(&w, "latents") : NULL;
    if (st == SDC_OK && !t) st = sdc_fail(err, SDC_ENOTFOUND, "%s: no tensor named \"latents\"", path);
    if (st == SDC_OK && t->ndim != 4)
        st = sdc_fail(err, SDC_EFORMAT, "%s: \"latents\" must have 4 dimensions [B, C, H/8, W/8]", path);
    if (st == SDC_OK) {
        for (int i = 0; i < 4; i++) shape[i] = t->shape[i];
        *out = malloc((size_t)sdc_weight_numel(t) * sizeof **out);
        st = *out ? sdc_weight_to_f32(&w, t, *out, err) : sdc_fail(err, SDC_ENOMEM, "out of memory");
    }
    sdc_weights_free(&w);
    return st;
}

/* Creates the folder an output path lives in (the user asked for the file). */
static sdc_status make_parent(const char *path, sdc_error *err) {
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path) return SDC_OK;
    char dir[4096];
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    return sdc_mkdirs(dir, err);
}

static void on_step(void *ctx, int done, int total) {
    sdc_progress *p = ctx;
    if (done == 1 && p->total != total) p->total = total;
    sdc_progress_update(p, done);
}

int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *negative = NULL, *sampler = NULL, *output = "output.png";
    const char *latents_in = NULL, *latents_out = NULL, *device = "cpu", *rng = "philox", *variant = NULL;
    const char *precision = NULL;
    const char *loras[MAX_LORAS];
    int nlora = 0, steps = 30, height = 0, width = 0, batch = 1, clip_skip = 0, karras = 0;
    double guidance = -1, eta = 0;
    int64_t seed = -1, arena_mb = 0;
    cli_flag flags[] = {
        CLI_FLAG("model", CLI_STR, &model, "PATH", "diffusers model folder or single-file checkpoint", NULL, "model"),
        CLI_FLAG("variant", CLI_STR, &variant, "NAME", "weight variant of a diffusers folder (e.g. fp16)", NULL, "model"),
        CLI_LIST_FLAG("lora", loras, "FILE[:SCALE]", "merge a LoRA (diffusers, PEFT or kohya) at SCALE; repeatable", "scale 1",
                      "model", MAX_LORAS, &nlora),
        CLI_FLAG("prompt", CLI_STR, &prompt, "TEXT", "what to draw", NULL, "prompt"),
        CLI_FLAG("negative-prompt", CLI_STR, &negative, "TEXT", "what to steer away from", "none", "prompt"),
        CLI_FLAG("clip-skip", CLI_INT, &clip_skip, "N", "skip the text encoder's last N layers (diffusers clip_skip: 1 = penultimate)", "0", "prompt"),
        CLI_FLAG("steps", CLI_INT, &steps, "N", "sampling steps", "30", "sampling"),
        CLI_FLAG("guidance-scale", CLI_DOUBLE, &guidance, "F", "classifier-free guidance scale", "7.5; SDXL 5.0", "sampling"),
        CLI_FLAG("sampler", CLI_STR, &sampler, "NAME", "ddim, euler, euler_a, dpmpp_2m, pndm, lms", "the model's scheduler", "sampling"),
        CLI_FLAG("karras", CLI_BOOL, &karras, NULL, "Karras sigmas (euler, euler_a, dpmpp_2m, lms)", "off", "sampling"),
        CLI_FLAG("eta", CLI_DOUBLE, &eta, "F", "DDIM eta (0 = deterministic)", "0", "sampling"),
        CLI_FLAG("seed", CLI_I64, &seed, "N", "noise seed", "random, printed", "sampling"),
        CLI_FLAG("rng", CLI_STR, &rng, "KIND", "philox (sdc) or torch (the noise torch.randn gives a diffusers seed on the CPU)", "philox",
         "sampling"),
        CLI_FLAG("latents", CLI_STR, &latents_in, "FILE", "initial noise: safetensors with \"latents\" [B,C,H/8,W/8] (diffusers latents=)", NULL,
         "sampling"),
        CLI_FLAG("height", CLI_INT, &height, "PX", "image height", "the model's sample size", "image"),
        CLI_FLAG("width", CLI_INT, &width, "PX", "image width", "the model's sample size", "image"),
        CLI_FLAG("batch", CLI_INT, &batch, "N", "images per prompt (one noise draw for the batch, as diffusers)", "1", "image"),
        CLI_FLAG("output", CLI_STR, &output, "PATH", "PNG to write (a batch writes PATH-0.png ... and PATH-grid.png)", "output.png",
         "output"),
        CLI_FLAG("save-latents", CLI_STR, &latents_out, "FILE", "write the final latents (before VAE scaling) as \"latents\"", NULL,
         "output"),
        CLI_FLAG("device", CLI_STR, &device, "DEV", "cpu, cuda or cuda:N", "cpu", "system"),
        CLI_FLAG("precision", CLI_STR, &precision, "P", "CUDA: fp32, fp16 or bf16 weights and activations", "fp16 on CUDA", "system"),
        CLI_FLAG("arena-mb", CLI_I64, &arena_mb, "MB", "activation memory to reserve", "by image size", "system"),
    };
    int nf = (int)(sizeof flags / sizeof *flags);
    int rc = cli_parse("generate", "--model PATH --prompt TEXT [options]", flags, nf, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (!model) return cli_usage_error("generate needs --model PATH (sdc generate --help)");
    if (!prompt) return cli_usage_error("generate needs --prompt TEXT (sdc generate --help)");
    sdc_error derr;
    sdc_device dev;
    if (sdc_device_parse(device, &dev, &derr) != SDC_OK) return cli_usage_error("%s", derr.msg);
    sdc_dtype dtype = SDC_F32;
    if (!precision) precision = dev.type == SDC_CPU ? "fp32" : "fp16";
    if (sdc_precision_dtype(strcmp(precision, "fp32") ? precision : "no", dev, &dtype, &derr) != SDC_OK)
        return cli_usage_error("--precision %s: expected fp32, fp16 or bf16", precision);
    if (dev.type == SDC_CPU && strcmp(precision, "fp32") != 0)
        fprintf(stderr, "sdc: note: --precision %s: the CPU computes in fp32\n", precision);
    if (strcmp(rng, "philox") != 0 && strcmp(rng, "torch") != 0)
        return cli_usage_error("--rng must be philox or torch, not \"%s\"", rng);
    if (seed < 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (int64_t)(((uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec) % 4294967296u);
    }

    sdc_error err = {0};
    sdc_txt2img_opts o = {
        .prompt = prompt,
        .negative_prompt = negative,
        .steps = steps,
        .sampler_opts = {.eta = eta, .karras = karras ? SDC_KARRAS_ON : SDC_KARRAS_CONFIG},
        .seed = (uint64_t)seed,
        .rng = strcmp(rng, "torch") == 0 ? SDC_RNG_TORCH : SDC_RNG_PHILOX,
        .batch = batch,
        .clip_skip = clip_skip,
        .decode = 1,
    };
    if (sampler) {
        if (sdc_sampler_kind_parse(sampler, &o.sampler, &err) != SDC_OK) return cli_usage_error("--sampler: %s", err.msg);
    } else {
        o.sampler_from_config = 1;
    }
    sdc_sd_lora lora[MAX_LORAS];
    char lora_path[MAX_LORAS][4096];
    for (int i = 0; i < nlora; i++) {
        if (parse_lora(loras[i], lora_path[i], sizeof lora_path[i], &lora[i].scale) != 0)
            return cli_usage_error("--lora \"%s\": expected FILE or FILE:SCALE", loras[i]);
        lora[i].path = lora_path[i];
    }
    float *init = NULL;
    int64_t ls[4] = {0};
    if (latents_in) {
        if (read_latents(latents_in, &init, ls, &err) != SDC_OK) return cli_error(&err);
        o.latents = init;
    }

    sdc_sd sd;
    sdc_sd_load_opts lo = {.variant = variant, .loras = lora, .nlora = nlora};
    if (sdc_sd_load(model, &lo, &sd, &err) != SDC_OK) {
        free(init);
        return cli_error(&err);
    }
    int s = sdc_vae_scale(&sd.vae->cfg);
    int def = (int)sd.unet->cfg.sample_size * s;
    o.height = height ? height : def;
    o.width = width ? width : def;
    o.guidance = guidance >= 0 ? guidance : sd.nte == 2 ? 5.0 : 7.5;
    if (o.sampler_from_config && sdc_sampler_kind_from_class(sd.sched.class_name, &o.sampler, &err) != SDC_OK) {
        sdc_sd_free(&sd);
        free(init);
        return cli_error(&err);
    }
    o.sampler_from_config = 0;
    rc = 0;
    if (latents_in) {
        if (!height && !width) o.height = (int)ls[2] * s, o.width = (int)ls[3] * s;
        if (!cli_find(flags, nf, "batch")->set) o.batch = (int)ls[0];
        if (ls[0] != o.batch || ls[1] != sd.unet->cfg.in_channels || ls[2] * s != o.height || ls[3] * s != o.width) {
            fprintf(stderr, "sdc: error: %s: latents [%lld, %lld, %lld, %lld] do not fit batch %d, %lld channels, %dx%d\n",
                    latents_in, (long long)ls[0], (long long)ls[1], (long long)ls[2], (long long)ls[3], o.batch,
                    (long long)sd.unet->cfg.in_channels, o.width, o.height);
            rc = 1;
        }
    }
    if (!rc && sdc_txt2img_check(&sd, &o, &err) != SDC_OK) rc = cli_usage_error("%s", err.msg);
    if (rc) {
        sdc_sd_free(&sd);
        free(init);
        return rc;
    }

    /* activations: generous for the UNet at this size; on the CPU pages are
     * touched only as used (the VAE decoder at full size is the peak) */
    size_t px = (size_t)o.height * o.width;
    size_t arena_bytes = arena_mb > 0 ? (size_t)arena_mb << 20 : ((size_t)1 << 30) + px * (size_t)o.batch * 8192;
    sdc_arena arena;
    sdc_ctx c;
    if (sdc_ctx_open(&c, &arena, dev, dtype, arena_bytes, &err) != SDC_OK ||
        sdc_sd_to_device(&sd, &c, &err) != SDC_OK) {
        if (c.arena) sdc_ctx_close(&c);
        sdc_sd_free(&sd);
        free(init);
        return cli_error(&err);
    }
    sdc_progress prog = {0};
    sdc_progress_begin(&prog, "generate", o.steps);
    o.on_step = on_step;
    o.step_ctx = &prog;
    fprintf(stderr, "sdc: %s, %dx%d, %d steps, %s%s, guidance %g, seed %lld (%s)\n", base_name(model), o.width,
            o.height, o.steps, sdc_sampler_name(o.sampler), karras ? " karras" : "", o.guidance, (long long)seed, rng);
    sdc_txt2img_out out;
    sdc_status st = sdc_txt2img(&c, &sd, &o, &out, &err);
    sdc_progress_end(&prog);
    sdc_ctx_close(&c);
    free(init);
    if (st != SDC_OK) {
        sdc_sd_free(&sd);
        return cli_error(&err);
    }

    st = make_parent(output, &err);
    if (st == SDC_OK && latents_out) st = make_parent(latents_out, &err);
    if (st == SDC_OK && latents_out) {
        sdc_st_tensor t = {"latents", SDC_F32, 4, out.latent_shape, out.latents};
        st = sdc_safetensors_write(latents_out, &t, 1, NULL, 0, &err);
    }
    /* PNGs with the A1111-style parameters chunk */
    int H = (int)out.image_shape[2], W = (int)out.image_shape[3], B = (int)out.image_shape[0];
    uint8_t **rgb = calloc((size_t)B, sizeof *rgb);
    char lora_desc[1024] = "";
    size_t used = 0;
    for (int i = 0; i < nlora && used < sizeof lora_desc - 1; i++)
        used += (size_t)snprintf(lora_desc + used, sizeof lora_desc - used, "%s%s:%g", i ? ", " : "",
                                 base_name(lora[i].path), (double)lora[i].scale);
    for (int b = 0; st == SDC_OK && b < B; b++) {
        rgb[b] = malloc((size_t)H * W * 3);
        if (!rgb[b]) {
            st = sdc_fail(&err, SDC_ENOMEM, "out of memory");
            break;
        }
        sdc_image_from_chw(out.images + (size_t)b * 3 * H * W, H, W, rgb[b]);
        char params[8192], tag[16], path[4096];
        int len = snprintf(params, sizeof params, "%s\n", prompt);
        if (negative) len += snprintf(params + len, sizeof params - (size_t)len, "Negative prompt: %s\n", negative);
        len += snprintf(params + len, sizeof params - (size_t)len,
                        "Steps: %d, Sampler: %s, CFG scale: %g, Seed: %lld, Size: %dx%d, Model: %s", o.steps,
                        a1111_sampler(o.sampler, karras), o.guidance, (long long)seed, W, H, base_name(model));
        if (clip_skip) len += snprintf(params + len, sizeof params - (size_t)len, ", Clip skip: %d", clip_skip + 1);
        if (o.sampler == SDC_SAMPLER_DDIM && eta != 0)
            len += snprintf(params + len, sizeof params - (size_t)len, ", Eta: %g", eta);
        if (B > 1) len += snprintf(params + len, sizeof params - (size_t)len, ", Batch size: %d, Batch pos: %d", B, b);
        if (nlora) len += snprintf(params + len, sizeof params - (size_t)len, ", Lora: %s", lora_desc);
        snprintf(params + len, sizeof params - (size_t)len, ", RNG: %s, Version: sdc %s",
                 o.rng == SDC_RNG_TORCH ? "CPU" : "sdc-philox", SDC_VERSION_STRING);
        snprintf(tag, sizeof tag, "%d", b);
        if (B > 1) indexed_path(path, sizeof path, output, tag);
        else snprintf(path, sizeof path, "%s", output);
        const char *key = "parameters", *val = params;
        st = sdc_png_write(path, rgb[b], W, H, 3, &key, &val, 1, &err);
        if (st == SDC_OK) printf("%s\n", path);
    }
    if (st == SDC_OK && B > 1) {
        char path[4096];
        indexed_path(path, sizeof path, output, "grid");
        st = sdc_png_write_grid(path, (const uint8_t *const *)rgb, B, W, H, &err);
        if (st == SDC_OK) printf("%s\n", path);
    }
    for (int b = 0; b < B; b++) free(rgb[b]);
    free(rgb);
    sdc_txt2img_out_free(&out);
    sdc_sd_free(&sd);
    return st == SDC_OK ? 0 : cli_error(&err);
}
