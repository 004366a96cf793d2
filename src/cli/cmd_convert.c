/* sdc convert: a model or a LoRA from one of the formats sdc reads into one
 * it writes, through the existing readers and writers:
 *
 *   model  diffusers folder | single file (.safetensors/.ckpt)
 *            -> single file   (io/single_file_write.h, SD 1.x / 2.x / SDXL)
 *            -> diffusers     (io/lora_write.h: every weight component with
 *                              sdc_params_write_diffusers; the rest copied from
 *                              a folder input, or, from a single file, the
 *                              family preset's model_index / tokenizer files,
 *                              the built-in CLIP vocabulary and the scheduler
 *                              sdc assumes for single files)
 *   LoRA   diffusers | PEFT | kohya (.safetensors, PyTorch zip)
 *            -> kohya or diffusers/PEFT (io/lora_write.h); kohya names are
 *               resolved against --model's parameter names (no weights loaded
 *               into a model: the names and shapes are enough)
 *
 * A single file records no scheduler: the folder made from one gets the
 * schedule sdc_sd_load assumes for it (epsilon prediction; an SD 2.x-v file
 * needs prediction_type "v_prediction" set in scheduler_config.json by hand).
 *
 * Weights pass through fp32, so fp32 -> fp32 is bit-exact. A folder is built
 * in "<output>.sdc-convert-<pid>" and renamed into place; files are written
 * atomically; an existing output is replaced only with --overwrite. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "core/dtype.h"
#include "core/fs.h"
#include "core/log.h"
#include "data/clip_vocab_write.h"
#include "io/ckpt.h"
#include "io/json.h"
#include "io/lora.h"
#include "io/lora_write.h"
#include "io/safetensors.h"
#include "io/single_file_write.h"
#include "models/presets.h"
#include "pipeline/sd_model.h"

typedef enum { TO_AUTO, TO_DIFFUSERS, TO_SINGLE, TO_KOHYA, TO_PEFT } target;
static const char *const k_target_names[] = {"auto", "diffusers", "single", "kohya", "peft"};

typedef struct convert_opts {
    const char *input, *output, *model;
    target to;
    sdc_dtype dtype; /* when dtype_given; else the input's */
    int dtype_given;
    int overwrite;
} convert_opts;

static const struct {
    const char *flag, *torch;
    sdc_dtype dtype;
} k_dtypes[] = {{"fp32", "float32", SDC_F32}, {"fp16", "float16", SDC_F16}, {"bf16", "bfloat16", SDC_BF16}};

static const char *flag_of(sdc_dtype d) {
    for (size_t i = 0; i < sizeof k_dtypes / sizeof *k_dtypes; i++)
        if (k_dtypes[i].dtype == d) return k_dtypes[i].flag;
    return "fp32";
}
static const char *torch_of(sdc_dtype d) {
    for (size_t i = 0; i < sizeof k_dtypes / sizeof *k_dtypes; i++)
        if (k_dtypes[i].dtype == d) return k_dtypes[i].torch;
    return "float32";
}

/* The one storage dtype all of `mask`'s bits name when it is F32, F16 or
 * BF16 alone; F32 otherwise (mixed or other dtypes: no precision lost). */
static sdc_dtype common_dtype(unsigned mask) {
    if (mask == 1u << SDC_F16) return SDC_F16;
    if (mask == 1u << SDC_BF16) return SDC_BF16;
    return SDC_F32;
}

static int ends_with_ci(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

/* ---- the output path -------------------------------------------------------------------------------------- */

static int dir_is_empty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 0;
    int any = 0;
    for (struct dirent *e; !any && (e = readdir(d));)
        any = strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return !any;
}

/* May `out` be written? Missing: yes. Existing: only with --overwrite, and
 * only what a convert writes (a file for a file; for a folder, an empty one
 * or a diffusers model folder), so a mistyped path never takes a folder of
 * other things with it. */
static sdc_status check_output(const char *out, int folder, int overwrite, sdc_error *err) {
    if (!sdc_path_exists(out)) return SDC_OK;
    if (!overwrite) return sdc_fail(err, SDC_EINVAL, "%s: already exists (--overwrite replaces it)", out);
    if (!folder) {
        if (sdc_path_is_dir(out)) return sdc_fail(err, SDC_EINVAL, "%s: is a folder; not replaced by a file", out);
        return SDC_OK;
    }
    if (!sdc_path_is_dir(out)) return sdc_fail(err, SDC_EINVAL, "%s: exists and is not a folder; not replaced", out);
    char *index = sdc_path_join(out, "model_index.json");
    if (!index) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    int model = sdc_path_exists(index);
    free(index);
    if (!model && !dir_is_empty(out))
        return sdc_fail(err, SDC_EINVAL,
                        "%s: exists and is not a diffusers model folder (no model_index.json); not replaced", out);
    return SDC_OK;
}

/* tmp (complete) becomes out; an existing out is moved aside first and
 * removed only once tmp is in place. */
static sdc_status move_into_place(const char *tmp, const char *out, sdc_error *err) {
    if (!sdc_path_exists(out)) {
        if (rename(tmp, out) != 0)
            return sdc_fail(err, SDC_EIO, "%s: cannot move %s into place: %s", out, tmp, strerror(errno));
        return SDC_OK;
    }
    size_t n = strlen(out) + 40;
    char *old = malloc(n);
    if (!old) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    snprintf(old, n, "%s.sdc-old-%ld", out, (long)getpid());
    sdc_status s = SDC_OK;
    if (rename(out, old) != 0) {
        s = sdc_fail(err, SDC_EIO, "%s: cannot move the old folder aside: %s", out, strerror(errno));
    } else if (rename(tmp, out) != 0) {
        s = sdc_fail(err, SDC_EIO, "%s: cannot move %s into place: %s", out, tmp, strerror(errno));
        rename(old, out); /* put the old one back */
    } else {
        sdc_remove_tree(old);
    }
    free(old);
    return s;
}

/* The folder a file output goes into, created (as the folder writers do). */
static sdc_status make_parent(const char *path, sdc_error *err) {
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path) return SDC_OK;
    char *dir = sdc_strdup(path);
    if (!dir) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    dir[slash - path] = '\0';
    sdc_status s = sdc_mkdirs(dir, err);
    free(dir);
    return s;
}

/* ---- a model to a diffusers folder --------------------------------------------------------------------------- */

/* cfg as config.json text, the text encoders' dtype field naming what is
 * written; malloc'd. */
static char *config_text(const cJSON *cfg, sdc_dtype dtype) {
    cJSON *c = cJSON_Duplicate(cfg, 1);
    if (!c) return NULL;
    static const char *const keys[] = {"dtype", "torch_dtype"}; /* transformers 5, 4 */
    for (int k = 0; k < 2; k++)
        if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(c, keys[k])))
            cJSON_ReplaceItemInObjectCaseSensitive(c, keys[k], cJSON_CreateString(torch_of(dtype)));
    char *text = sdc_json_print_config(c);
    cJSON_Delete(c);
    return text;
}

/* root/<name>/ with the weights of p and the config the model was read
 * with (any earlier content of the folder is removed first). */
static sdc_status write_component(const char *root, const sdc_sd *sd, const char *name, const sdc_params *p,
                                  sdc_dtype dtype, sdc_error *err) {
    const sdc_component *c = sdc_model_component(&sd->files, name);
    if (!c || !c->config) return sdc_fail(err, SDC_ENOTFOUND, "%s: the model has no %s config", sd->files.path, name);
    char *dir = sdc_path_join(root, name), *cfg = config_text(c->config, dtype);
    sdc_status s = dir && cfg ? SDC_OK : sdc_fail(err, SDC_ENOMEM, "out of memory");
    if (s == SDC_OK) {
        sdc_remove_tree(dir);
        int te = strncmp(name, "text_encoder", 12) == 0;
        s = sdc_params_write_diffusers(dir, p, te ? "model.safetensors" : "diffusion_pytorch_model.safetensors", cfg,
                                       dtype, err);
    }
    free(dir);
    free(cfg);
    return s;
}

static const char *beta_name(sdc_beta_schedule b) {
    return b == SDC_BETA_LINEAR ? "linear" : b == SDC_BETA_SCALED_LINEAR ? "scaled_linear" : "squaredcos_cap_v2";
}
static const char *pred_name(sdc_prediction p) {
    return p == SDC_PRED_EPSILON ? "epsilon" : p == SDC_PRED_V ? "v_prediction" : "sample";
}
static const char *spacing_name(sdc_spacing s) {
    return s == SDC_SPACING_LEADING ? "leading" : s == SDC_SPACING_TRAILING ? "trailing" : "linspace";
}

/* A key of c as JSON, for the keys a single file's scheduler can set; NULL
 * for the others. */
static cJSON *sched_value(const sdc_sched_config *c, sdc_sched_key k) {
    switch (k) {
    case SDC_SK_NUM_TRAIN_TIMESTEPS:
        return cJSON_CreateNumber(c->num_train_timesteps);
    case SDC_SK_BETA_START:
        return cJSON_CreateNumber(c->beta_start);
    case SDC_SK_BETA_END:
        return cJSON_CreateNumber(c->beta_end);
    case SDC_SK_BETA_SCHEDULE:
        return cJSON_CreateString(beta_name(c->beta_schedule));
    case SDC_SK_PREDICTION_TYPE:
        return cJSON_CreateString(pred_name(c->prediction_type));
    case SDC_SK_TIMESTEP_SPACING:
        return cJSON_CreateString(spacing_name(c->timestep_spacing));
    case SDC_SK_STEPS_OFFSET:
        return cJSON_CreateNumber(c->steps_offset);
    case SDC_SK_SET_ALPHA_TO_ONE:
        return cJSON_CreateBool(c->set_alpha_to_one);
    case SDC_SK_SKIP_PRK_STEPS:
        return cJSON_CreateBool(c->skip_prk_steps);
    case SDC_SK_CLIP_SAMPLE:
        return cJSON_CreateBool(c->clip_sample);
    default:
        return NULL;
    }
}

/* The family preset's scheduler_config.json with the values sdc uses for
 * the single file (sdc_sd_load's default: the preset's class, epsilon
 * prediction, SD 1.5's betas and spacing) written over the keys that class
 * has, so the folder schedules as the single file did. */
static sdc_status scheduler_text(const char *preset_text, const sdc_sched_config *sc, char **out, sdc_error *err) {
    cJSON *o = NULL;
    SDC_TRY(sdc_json_parse(preset_text, strlen(preset_text), "preset scheduler_config.json", &o, err));
    int ok = 1;
    for (int k = 0; ok && k < SDC_SK_COUNT; k++) {
        const char *name = sdc_sched_key_name((sdc_sched_key)k);
        if (!sdc_sched_has(sc, (sdc_sched_key)k) || !cJSON_HasObjectItem(o, name)) continue;
        cJSON *v = sched_value(sc, (sdc_sched_key)k);
        if (v) ok = cJSON_ReplaceItemInObjectCaseSensitive(o, name, v);
    }
    if (ok && sc->class_name[0])
        ok = cJSON_ReplaceItemInObjectCaseSensitive(o, "_class_name", cJSON_CreateString(sc->class_name));
    char *text = ok ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    if (!text) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    size_t n = strlen(text);
    *out = realloc(text, n + 2);
    if (!*out) {
        free(text);
        return sdc_fail(err, SDC_ENOMEM, "out of memory");
    }
    memcpy(*out + n, "\n", 2);
    return SDC_OK;
}

static const char *preset_of(sdc_family f) {
    return f == SDC_FAMILY_SDXL ? "sdxl" : f == SDC_FAMILY_SD2 ? "sd21" : "sd15";
}

/* What a single file lacks: model_index.json, the scheduler and the
 * tokenizers, from the family's preset (the configs `sdc init` writes for
 * SD 1.5 / 2.1 / XL) and the built-in CLIP vocabulary; the weight
 * components' configs are the ones synthesised from the file. */
static sdc_status write_pipeline_files(const char *root, const sdc_sd *sd, sdc_dtype dtype, sdc_error *err) {
    const sdc_preset *p = sdc_preset_find(preset_of(sd->family));
    SDC_ASSERT(p != NULL);
    sdc_preset_file *files;
    int n;
    SDC_TRY(sdc_preset_files(p, torch_of(dtype), &files, &n, err));
    sdc_status s = SDC_OK;
    for (int i = 0; s == SDC_OK && i < n; i++) {
        const char *rel = files[i].path;
        int model_cfg = 0;
        for (int k = 0; k < p->nmodels; k++) {
            size_t l = strlen(p->models[k].component);
            model_cfg |= strncmp(rel, p->models[k].component, l) == 0 && rel[l] == '/';
        }
        if (model_cfg) continue;
        if (strcmp(rel, "scheduler/scheduler_config.json") == 0) {
            char *text = NULL;
            s = scheduler_text(files[i].text, &sd->sched, &text, err);
            if (s == SDC_OK) s = sdc_write_text_at(root, rel, text, err);
            free(text);
        } else {
            s = sdc_write_text_at(root, rel, files[i].text, err);
        }
    }
    sdc_preset_files_free(files, n);
    static const char *const tok[2] = {"tokenizer", "tokenizer_2"};
    for (int i = 0; s == SDC_OK && i < 2; i++) {
        if (!p->pad[i]) continue;
        char *dir = sdc_path_join(root, tok[i]);
        s = dir ? sdc_mkdirs(dir, err) : sdc_fail(err, SDC_ENOMEM, "out of memory");
        if (s == SDC_OK) s = sdc_clip_vocab_write(dir, err);
        free(dir);
    }
    return s;
}

static sdc_status write_folder(const sdc_sd *sd, const char *input, const char *out, sdc_dtype dtype, sdc_error *err) {
    size_t n = strlen(out) + 40;
    char *tmp = malloc(n);
    if (!tmp) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    snprintf(tmp, n, "%s.sdc-convert-%ld", out, (long)getpid());
    sdc_remove_tree(tmp); /* a leftover of this pid's earlier failed run */
    sdc_status s = SDC_OK;
    if (sd->files.single_file) {
        s = sdc_mkdirs(tmp, err);
        if (s == SDC_OK) s = write_pipeline_files(tmp, sd, dtype, err);
        if (s == SDC_OK) s = write_component(tmp, sd, "unet", &sd->unet->params, dtype, err);
    } else {
        /* the folder's other files and components (tokenizers, scheduler,
         * model_index.json, a safety checker...) copied, the UNet written */
        const sdc_component *uc = sdc_model_component(&sd->files, "unet");
        char *ucfg = config_text(uc->config, dtype);
        s = ucfg ? sdc_pipeline_write_diffusers(tmp, input, &sd->unet->params, ucfg, dtype, err)
                 : sdc_fail(err, SDC_ENOMEM, "out of memory");
        free(ucfg);
    }
    if (s == SDC_OK) s = write_component(tmp, sd, "vae", &sd->vae->params, dtype, err);
    static const char *const te[2] = {"text_encoder", "text_encoder_2"};
    for (int i = 0; s == SDC_OK && i < sd->nte; i++)
        s = write_component(tmp, sd, te[i], &sd->te[i]->params, dtype, err);
    if (s == SDC_OK) s = move_into_place(tmp, out, err);
    if (s != SDC_OK) sdc_remove_tree(tmp);
    free(tmp);
    return s;
}

/* The storage dtype of the model's weights (unet, vae, text encoders). */
static unsigned model_dtypes(const sdc_model *m) {
    unsigned mask = 0;
    for (int i = 0; i < m->ncomps; i++) {
        const char *n = m->comps[i].name;
        if (!strcmp(n, "unet") || !strcmp(n, "vae") || !strncmp(n, "text_encoder", 12)) mask |= m->comps[i].dtypes;
    }
    return mask;
}

static sdc_status convert_model(const convert_opts *o, target to, sdc_error *err) {
    sdc_sd sd;
    SDC_TRY(sdc_sd_load(o->input, NULL, &sd, err));
    sdc_status s = SDC_OK;
    if (sd.family != SDC_FAMILY_SD1 && sd.family != SDC_FAMILY_SD2 && sd.family != SDC_FAMILY_SDXL)
        s = sdc_fail(err, SDC_EUNSUPPORTED, "%s: a model of family %s cannot be converted", o->input,
                     sdc_family_name(sd.family));
    sdc_dtype dtype = o->dtype_given ? o->dtype : common_dtype(model_dtypes(&sd.files));
    if (s == SDC_OK) {
        printf("sdc convert: %s (%s, %s) -> %s (%s, %s)\n", o->input, sdc_family_name(sd.family),
               sd.files.single_file ? "single file" : "diffusers folder", o->output,
               to == TO_SINGLE ? "single file" : "diffusers folder", flag_of(dtype));
        fflush(stdout);
    }
    if (s == SDC_OK && to == TO_SINGLE)
        s = sdc_single_file_write(o->output, sd.family, &sd.unet->params, &sd.vae->params, sd.vae->cfg.levels,
                                  &sd.te[0]->params, sd.nte == 2 ? &sd.te[1]->params : NULL, dtype, err);
    else if (s == SDC_OK)
        s = write_folder(&sd, o->input, o->output, dtype, err);
    sdc_sd_free(&sd);
    return s;
}

/* ---- a LoRA ------------------------------------------------------------------------------------------------------ */

/* One component of the base model by parameter name and shape only (no
 * buffer): what kohya names are resolved against and deltas checked with. */
typedef struct name_store {
    sdc_params p;
    sdc_tensor *slots;
} name_store;

static sdc_status name_store_make(name_store *s, const sdc_model *m, const char *comp, sdc_error *err) {
    memset(s, 0, sizeof *s);
    char pre[64];
    snprintf(pre, sizeof pre, "%s.", comp);
    size_t plen = strlen(pre), n = 0;
    for (size_t i = 0; i < m->weights.count; i++)
        n += strncmp(m->weights.items[i].name, pre, plen) == 0;
    if (n == 0) return SDC_OK;
    SDC_TRY(sdc_params_init(&s->p, comp, err));
    if (!(s->slots = calloc(n, sizeof *s->slots))) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    size_t j = 0;
    for (size_t i = 0; i < m->weights.count; i++) {
        const sdc_weight *t = &m->weights.items[i];
        if (strncmp(t->name, pre, plen) == 0)
            sdc_params_declare(&s->p, &s->slots[j++], SDC_INIT_ZEROS, t->ndim, t->shape, "%s", t->name + plen);
    }
    if (s->p.status != SDC_OK) {
        if (err) *err = s->p.err;
        return s->p.status;
    }
    return SDC_OK;
}

static void name_store_free(name_store *s) {
    if (s->p.component) sdc_params_free(&s->p);
    free(s->slots);
    memset(s, 0, sizeof *s);
}

/* The change's kernel (kh, kw): the Tucker core's, else a conv down's. */
static void kernel_of(const sdc_lora_delta *d, int64_t *kh, int64_t *kw) {
    *kh = *kw = 1;
    if (d->mid)
        *kh = d->mid->shape[2], *kw = d->mid->shape[3];
    else if (d->down->ndim == 4)
        *kh = d->down->shape[2], *kw = d->down->shape[3];
}

/* The delta names an existing parameter of a component the model has, with
 * the shape up·down makes (a linear change may target a 1×1 conv), and no
 * other delta took that parameter (`loaded` marks the taken ones here). */
static sdc_status check_delta(const sdc_lora *l, const sdc_lora_delta *d, name_store *st, int nst, const char *model,
                              sdc_error *err) {
    name_store *s = NULL;
    for (int i = 0; i < nst; i++)
        if (st[i].p.component && strcmp(st[i].p.component, d->component) == 0) s = &st[i];
    if (!s)
        return sdc_fail(err, SDC_ENOTFOUND, "%s: LoRA module \"%s\" changes the %s, which %s does not have", l->path,
                        d->key, d->component, model);
    size_t len = strlen(d->param);
    sdc_param *it = sdc_params_find(&s->p, d->param);
    if (!it || len < 7 || strcmp(d->param + len - 7, ".weight") != 0)
        return sdc_fail(err, SDC_ENOTFOUND, "%s: LoRA module \"%s\": %s has no parameter %s.%s", l->path, d->key, model,
                        d->component, d->param);
    int64_t kh, kw;
    kernel_of(d, &kh, &kw);
    const sdc_tensor *W = it->slot;
    int ok = W->ndim >= 2 && W->shape[0] == d->up->shape[0] && W->shape[1] == d->down->shape[1] &&
             ((W->ndim == 2 && kh == 1 && kw == 1) || (W->ndim == 4 && W->shape[2] == kh && W->shape[3] == kw));
    if (!ok) {
        char got[96], want[96];
        const int64_t shape[4] = {d->up->shape[0], d->down->shape[1], kh, kw};
        return sdc_fail(err, SDC_EFORMAT,
                        "%s: LoRA module \"%s\" makes a change of shape %s, but %s's %s.%s has shape %s", l->path,
                        d->key, sdc_shape_str(got, sizeof got, kh == 1 && kw == 1 ? 2 : 4, shape), model, d->component,
                        d->param, sdc_shape_str(want, sizeof want, W->ndim, W->shape));
    }
    if (it->loaded)
        return sdc_fail(err, SDC_EFORMAT, "%s: two LoRA modules change %s.%s (one is \"%s\")", l->path, d->component,
                        d->param, d->key);
    it->loaded = 1;
    return SDC_OK;
}

/* down' = mid∘down for a LyCORIS Tucker delta, the plain conv LoRA down
 * [r, in, k, k] that gives the same change:
 *     down'[a, c, y, x] = Σ_b mid[a, b, y, x] · down[b, c]
 * (down is [rb, in(,1,1)], mid [r, rb, k, k]); summed in double. */
static sdc_status tucker_down(const sdc_lora *l, const sdc_lora_delta *d, float *out, sdc_error *err) {
    const int64_t r = d->mid->shape[0], rb = d->mid->shape[1], in = d->down->shape[1];
    const int64_t kk = d->mid->shape[2] * d->mid->shape[3];
    float *dn = malloc((size_t)(rb * in) * sizeof *dn), *mid = malloc((size_t)(r * rb * kk) * sizeof *mid);
    sdc_status s = dn && mid ? SDC_OK : sdc_fail(err, SDC_ENOMEM, "out of memory");
    if (s == SDC_OK) s = sdc_weight_to_f32(&l->w, d->down, dn, err);
    if (s == SDC_OK) s = sdc_weight_to_f32(&l->w, d->mid, mid, err);
    for (int64_t a = 0; s == SDC_OK && a < r; a++)
        for (int64_t c = 0; c < in; c++)
            for (int64_t q = 0; q < kk; q++) {
                double acc = 0;
                for (int64_t b = 0; b < rb; b++)
                    acc += (double)mid[(a * rb + b) * kk + q] * dn[b * in + c];
                out[(a * in + c) * kk + q] = (float)acc;
            }
    free(dn);
    free(mid);
    return s;
}

/* The deltas of component comp as a LoRA set the writers take: adapter k
 * is "<module>.lora_A.weight" = down, "<module>.lora_B.weight" = up, with
 * rank r and scale (alpha = scale · r is what gets written). Shapes follow
 * the layer, as PEFT and sd-scripts make them: a conv (1×1 too) gets
 * A [r, in, kh, kw] and B [out, r, 1, 1], a linear layer A [r, in] and
 * B [out, r] (the same values either way). */
static sdc_status build_set(sdc_lora_set *set, const sdc_lora *l, const name_store *st, size_t n, sdc_error *err) {
    const char *comp = st->p.component;
    memset(set, 0, sizeof *set);
    SDC_TRY(sdc_params_init(&set->params, comp, err));
    if (!(set->adapters = calloc(n, sizeof *set->adapters))) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    set->count = n;
    size_t k = 0;
    for (size_t i = 0; i < l->count; i++) {
        const sdc_lora_delta *d = &l->deltas[i];
        if (strcmp(d->component, comp) != 0) continue;
        sdc_lora_adapter *a = &set->adapters[k++];
        int len = (int)strlen(d->param) - 7; /* without ".weight" (checked) */
        const int conv = sdc_params_find(&st->p, d->param)->slot->ndim == 4;
        const int64_t r = d->up->shape[1], out = d->up->shape[0], in = d->down->shape[1];
        int64_t kh, kw;
        kernel_of(d, &kh, &kw);
        const int64_t ashape[4] = {r, in, kh, kw}, bshape[4] = {out, r, 1, 1};
        sdc_params_declare(&set->params, &a->A, SDC_INIT_ZEROS, conv ? 4 : 2, ashape, "%.*s.lora_A.weight", len,
                           d->param);
        sdc_params_declare(&set->params, &a->B, SDC_INIT_ZEROS, conv ? 4 : 2, bshape, "%.*s.lora_B.weight", len,
                           d->param);
        a->rank = (int)r;
        a->scale = d->scale;
    }
    SDC_ASSERT(k == n);
    SDC_TRY(sdc_params_alloc(&set->params, err));
    k = 0;
    for (size_t i = 0; i < l->count; i++) {
        const sdc_lora_delta *d = &l->deltas[i];
        if (strcmp(d->component, comp) != 0) continue;
        sdc_lora_adapter *a = &set->adapters[k++];
        SDC_TRY(d->mid ? tucker_down(l, d, a->A.data, err) : sdc_weight_to_f32(&l->w, d->down, a->A.data, err));
        SDC_TRY(sdc_weight_to_f32(&l->w, d->up, a->B.data, err));
    }
    return SDC_OK;
}

static void free_set(sdc_lora_set *set) {
    if (set->params.component) sdc_params_free(&set->params);
    free(set->adapters);
    memset(set, 0, sizeof *set);
}

/* Keys of the file that are LoRA weights but name nothing in the model are
 * an error (the wrong --model, or a module sdc does not know): a converted
 * file must not quietly lose part of the LoRA. Other keys are reported. */
static sdc_status check_unknown(const sdc_lora *l, const char *model, sdc_error *err) {
    for (size_t i = 0; i < l->nunknown; i++)
        if (strstr(l->unknown[i], "lora"))
            return sdc_fail(err, SDC_ENOTFOUND,
                            "%s: \"%s\" names no parameter of %s (is it the model the LoRA is for?)", l->path,
                            l->unknown[i], model);
    if (l->nunknown) {
        char list[1024] = "";
        size_t used = 0;
        for (size_t i = 0; i < l->nunknown && used < sizeof list - 64; i++)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", l->unknown[i]);
        SDC_WARN("%s: %zu keys are not LoRA weights; not converted: %s", l->path, l->nunknown, list);
    }
    return SDC_OK;
}

static sdc_status convert_lora(const convert_opts *o, target to, sdc_error *err) {
    static const char *const comps[3] = {"unet", "text_encoder", "text_encoder_2"};
    sdc_model m;
    SDC_TRY(sdc_model_open(o->model, NULL, &m, err));
    name_store st[3];
    memset(st, 0, sizeof st);
    sdc_lora l;
    memset(&l, 0, sizeof l);
    sdc_lora_set sets[3];
    memset(sets, 0, sizeof sets);
    sdc_status s = SDC_OK;
    for (int c = 0; c < 3 && s == SDC_OK; c++)
        s = name_store_make(&st[c], &m, comps[c], err);
    if (s == SDC_OK && !st[0].p.component) s = sdc_fail(err, SDC_ENOTFOUND, "%s: the model has no UNet", o->model);
    if (s == SDC_OK) s = sdc_lora_open(o->input, &l, err);
    if (s == SDC_OK) {
        sdc_params *ps[3];
        size_t np = 0;
        for (int c = 0; c < 3; c++)
            if (st[c].p.component) ps[np++] = &st[c].p;
        s = sdc_lora_resolve(&l, ps, np, err);
    }
    if (s == SDC_OK) s = check_unknown(&l, o->model, err);
    size_t count[3] = {0};
    for (size_t i = 0; s == SDC_OK && i < l.count; i++) {
        s = check_delta(&l, &l.deltas[i], st, 3, o->model, err);
        for (int c = 0; c < 3; c++)
            count[c] += strcmp(l.deltas[i].component, comps[c]) == 0;
    }
    sdc_dtype dtype = SDC_F32;
    if (s == SDC_OK) {
        unsigned mask = 0;
        for (size_t i = 0; i < l.count; i++)
            mask |= 1u << l.deltas[i].up->dtype | 1u << l.deltas[i].down->dtype;
        dtype = o->dtype_given ? o->dtype : common_dtype(mask);
        if (to == TO_AUTO) to = strcmp(l.format, "kohya") == 0 ? TO_DIFFUSERS : TO_KOHYA;
        printf("sdc convert: %s (%s LoRA, %zu module%s, for %s) -> %s (%s, %s)\n", o->input, l.format, l.count,
               l.count == 1 ? "" : "s", sdc_family_name(m.family), o->output,
               to == TO_KOHYA ? "kohya" : "diffusers/PEFT", flag_of(dtype));
        fflush(stdout);
    }
    for (int c = 0; c < 3 && s == SDC_OK; c++)
        if (count[c]) s = build_set(&sets[c], &l, &st[c], count[c], err);
    const sdc_lora_set *u = count[0] ? &sets[0] : NULL, *t1 = count[1] ? &sets[1] : NULL,
                       *t2 = count[2] ? &sets[2] : NULL;
    if (s == SDC_OK && to == TO_KOHYA) {
        sdc_unet_layout layout;
        int sgm = sdc_lora_kohya_wants_sgm(m.family);
        if (sgm && !sdc_unet_layout_read(&st[0].p, &layout))
            s = sdc_fail(err, SDC_EFORMAT, "%s: the UNet's blocks are not those of a diffusers UNet", o->model);
        if (s == SDC_OK) s = sdc_lora_write_kohya(o->output, u, t1, t2, m.family, sgm ? &layout : NULL, dtype, err);
    } else if (s == SDC_OK) {
        s = sdc_lora_write_diffusers(o->output, u, t1, t2, dtype, err);
    }
    for (int c = 0; c < 3; c++) {
        free_set(&sets[c]);
        name_store_free(&st[c]);
    }
    if (l.path) sdc_lora_free(&l);
    sdc_model_close(&m);
    return s;
}

/* ---- what the input is --------------------------------------------------------------------------------------- */

/* 1 if path is a file whose keys are LoRA weights ("lora" in a key, or a
 * LyCORIS variant's, which the LoRA reader then names). A file that cannot
 * be read as safetensors or a PyTorch zip counts as no LoRA: the model
 * loader reports it. */
static int is_lora_file(const char *path) {
    if (sdc_path_is_dir(path)) return 0;
    unsigned char magic[4] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(magic, 1, sizeof magic, f);
    fclose(f);
    sdc_weights w;
    sdc_weights_init(&w);
    sdc_error err;
    sdc_status s = n == 4 && memcmp(magic, "PK\x03\x04", 4) == 0 ? sdc_ckpt_read(path, &w, &err)
                                                                 : sdc_safetensors_read(path, &w, &err);
    int lora = 0;
    for (size_t i = 0; s == SDC_OK && i < w.count && !lora; i++) {
        const char *k = w.items[i].name;
        lora = strstr(k, "lora") || strstr(k, "hada_") || strstr(k, "lokr_") || strstr(k, "dora_scale");
    }
    sdc_weights_free(&w);
    return lora;
}

/* ---- the command --------------------------------------------------------------------------------------------- */

int cmd_convert(int argc, char **argv) {
    const char *input = NULL, *output = NULL, *model = NULL, *to_s = "auto", *dtype_s = "input";
    int overwrite = 0;
    cli_flag flags[] = {
        CLI_FLAG("input", CLI_STR, &input, "PATH",
                 "a model (diffusers folder, or single file .safetensors/.ckpt) or a LoRA file (diffusers, PEFT or "
                 "kohya; required)",
                 NULL, "files"),
        CLI_FLAG("output", CLI_STR, &output, "PATH",
                 "a folder (diffusers model) or a .safetensors file (single-file model, LoRA; required)", NULL,
                 "files"),
        CLI_FLAG("model", CLI_STR, &model, "PATH",
                 "LoRAs: the base model the LoRA is for (its parameter names place kohya modules; required)", NULL,
                 "files"),
        CLI_FLAG("overwrite", CLI_BOOL, &overwrite, NULL, "replace an existing output (a file, or a diffusers folder)",
                 "off", "files"),
        CLI_FLAG("to", CLI_STR, &to_s, "FORMAT",
                 "diffusers|single (models), kohya|peft|diffusers (LoRAs; peft = diffusers' "
                 "pytorch_lora_weights layout); auto: models single for a .safetensors output, else diffusers; "
                 "LoRAs kohya, or diffusers from a kohya file",
                 "auto", "format"),
        CLI_FLAG("dtype", CLI_STR, &dtype_s, "T",
                 "fp32|fp16|bf16 of the written weights; input: the input's dtype when all its weights share one, "
                 "else fp32",
                 "input", "format"),
    };
    int nf = (int)(sizeof flags / sizeof *flags);
    static const char synopsis[] =
        "--input PATH --output PATH [--to diffusers|single|kohya|peft] [--dtype fp32|fp16|bf16] [--model PATH] "
        "[--overwrite]";
    int rc = cli_parse("convert", synopsis, flags, nf, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (!input || !output || !*input || !*output)
        return cli_usage_error("convert needs --input PATH and --output PATH (sdc convert --help)");

    convert_opts o = {.input = input, .model = model, .overwrite = overwrite, .to = TO_AUTO};
    int ti = -1;
    for (int i = 0; i < (int)(sizeof k_target_names / sizeof *k_target_names); i++)
        if (strcmp(to_s, k_target_names[i]) == 0) ti = i;
    if (ti < 0) return cli_usage_error("--to %s: choose diffusers, single, kohya or peft", to_s);
    o.to = (target)ti;
    if (strcmp(dtype_s, "input") != 0) {
        for (size_t i = 0; i < sizeof k_dtypes / sizeof *k_dtypes; i++)
            if (strcmp(dtype_s, k_dtypes[i].flag) == 0 || strcmp(dtype_s, k_dtypes[i].torch) == 0)
                o.dtype = k_dtypes[i].dtype, o.dtype_given = 1;
        if (!o.dtype_given) return cli_usage_error("--dtype %s: choose fp32, fp16 or bf16", dtype_s);
    }
    if (!sdc_path_exists(input)) {
        sdc_error err = {0};
        sdc_fail(&err, SDC_ENOTFOUND, "%s: no such file or folder", input);
        return cli_error(&err);
    }
    char *out = sdc_strdup(output);
    if (!out) return cli_usage_error("out of memory");
    for (size_t k = strlen(out); k > 1 && out[k - 1] == '/'; k--)
        out[k - 1] = '\0';
    o.output = out;
    int st_out = ends_with_ci(out, ".safetensors");

    sdc_error err = {0};
    sdc_status s = SDC_OK;
    rc = 0;
    if (is_lora_file(input)) {
        if (o.to == TO_SINGLE)
            rc = cli_usage_error("%s is a LoRA: --to kohya, peft or diffusers (single is for models)", input);
        else if (!model)
            rc = cli_usage_error("%s is a LoRA: converting it needs --model PATH, the base model it is for (its "
                                 "parameter names place kohya modules)",
                                 input);
        else if (!st_out)
            rc = cli_usage_error("--output %s: LoRA files are written as .safetensors", out);
        if (!rc) s = check_output(out, 0, overwrite, &err);
        if (!rc && s == SDC_OK) s = make_parent(out, &err);
        if (!rc && s == SDC_OK) s = convert_lora(&o, o.to == TO_PEFT ? TO_DIFFUSERS : o.to, &err);
    } else {
        target to = o.to == TO_AUTO ? (st_out ? TO_SINGLE : TO_DIFFUSERS) : o.to;
        if (to == TO_KOHYA || to == TO_PEFT)
            rc = cli_usage_error("%s is a model: --to diffusers or single (kohya and peft are for LoRAs)", input);
        else if (to == TO_SINGLE && !st_out)
            rc = cli_usage_error("--output %s: single files are written as .safetensors", out);
        else if (to == TO_DIFFUSERS && (st_out || ends_with_ci(out, ".ckpt")))
            rc = cli_usage_error("--output %s: a diffusers model is a folder (--to single writes one file)", out);
        if (!rc) s = check_output(out, to == TO_DIFFUSERS, overwrite, &err);
        if (!rc && s == SDC_OK && to == TO_SINGLE) s = make_parent(out, &err);
        if (!rc && s == SDC_OK) s = convert_model(&o, to, &err);
    }
    if (!rc && s == SDC_OK) printf("wrote %s\n", out);
    free(out);
    if (rc) return rc;
    return s == SDC_OK ? 0 : cli_error(&err);
}
