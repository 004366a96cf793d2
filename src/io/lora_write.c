/* Writers for trained LoRA sets and full UNets (see lora_write.h). Each file
 * is built as a list of named tensors converted to the storage dtype, sorted
 * by name (as diffusers' and kohya's files are), and handed to the atomic
 * safetensors writer. */
#include "io/lora_write.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fs.h"
#include "io/json.h"
#include "io/safetensors.h"

/* ---- a list of tensors to write -------------------------------------------- */

typedef struct {
    char *name;
    int64_t shape[SDC_MAX_DIMS];
    int ndim;
    sdc_dtype dtype;
    void *data;
} entry;

typedef struct {
    entry *e;
    size_t n, cap;
    const char *path;
} outlist;

static void out_free(outlist *o) {
    for (size_t i = 0; i < o->n; i++) {
        free(o->e[i].name);
        free(o->e[i].data);
    }
    free(o->e);
    memset(o, 0, sizeof *o);
}

/* Adds name = src (numel fp32 values) reshaped to ndim/shape, in dtype. */
static sdc_status out_add(outlist *o, const char *name, int ndim, const int64_t *shape, const float *src,
                          sdc_dtype dtype, sdc_error *err) {
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 64;
        entry *e = realloc(o->e, cap * sizeof *e);
        if (!e) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", o->path);
        o->e = e, o->cap = cap;
    }
    entry *e = &o->e[o->n];
    memset(e, 0, sizeof *e);
    size_t numel = 1;
    for (int d = 0; d < ndim; d++) numel *= (size_t)shape[d], e->shape[d] = shape[d];
    e->ndim = ndim;
    e->dtype = dtype;
    e->name = sdc_strdup(name);
    e->data = malloc(numel * sdc_dtype_size(dtype) + 1);
    if (!e->name || !e->data) {
        free(e->name);
        free(e->data);
        return sdc_fail(err, SDC_ENOMEM, "%s: out of memory for %s", o->path, name);
    }
    if (sdc_convert_from_f32(e->data, dtype, src, numel) != 0) {
        free(e->name);
        free(e->data);
        return sdc_fail(err, SDC_EINVAL, "%s: cannot store tensors as %s", o->path, sdc_dtype_name(dtype));
    }
    o->n++;
    return SDC_OK;
}

static int by_name(const void *a, const void *b) { return strcmp(((const entry *)a)->name, ((const entry *)b)->name); }

static sdc_status out_write(outlist *o, const sdc_kv *meta, size_t nmeta, sdc_error *err) {
    if (o->n > 1) qsort(o->e, o->n, sizeof *o->e, by_name); /* e is NULL when empty */
    sdc_st_tensor *t = calloc(o->n + 1, sizeof *t);
    if (!t) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", o->path);
    for (size_t i = 0; i < o->n; i++)
        t[i] = (sdc_st_tensor){o->e[i].name, o->e[i].dtype, o->e[i].ndim, o->e[i].shape, o->e[i].data};
    sdc_status s = sdc_safetensors_write(o->path, t, o->n, meta, nmeta, err);
    free(t);
    return s;
}

static sdc_status check_dtype(const char *path, sdc_dtype dtype, sdc_error *err) {
    if (dtype != SDC_F32 && dtype != SDC_F16 && dtype != SDC_BF16)
        return sdc_fail(err, SDC_EINVAL, "%s: weights are written as F32, F16 or BF16, not %s", path,
                        sdc_dtype_name(dtype));
    return SDC_OK;
}

/* ---- walking a LoRA set ------------------------------------------------------ */

/* Adapter i's module name ("down_blocks.1....to_q") into buf: its A tensor
 * is declared as "<module>.lora_A.weight" right before B (lora_attach.c). */
static const char *module_of(const sdc_lora_set *s, size_t i, char *buf, size_t cap) {
    SDC_ASSERT(2 * i + 1 < s->params.count && s->params.items[2 * i].slot == &s->adapters[i].A &&
               s->params.items[2 * i + 1].slot == &s->adapters[i].B);
    const char *n = s->params.items[2 * i].name;
    size_t len = strlen(n), suf = strlen(".lora_A.weight");
    SDC_ASSERT(len > suf && strcmp(n + len - suf, ".lora_A.weight") == 0);
    snprintf(buf, cap, "%.*s", (int)(len - suf), n);
    return buf;
}

static double alpha_of(const sdc_lora_adapter *a) { return (double)a->scale * a->rank; }

/* The rank and alpha most adapters of s have (PEFT's r / lora_alpha; the
 * others go into rank_pattern / alpha_pattern). */
static void common_rank(const sdc_lora_set *s, int *rank, double *alpha) {
    size_t best = 0;
    *rank = s->count ? s->adapters[0].rank : 0;
    *alpha = s->count ? alpha_of(&s->adapters[0]) : 0;
    for (size_t i = 0; i < s->count; i++) {
        size_t n = 0;
        for (size_t j = 0; j < s->count; j++)
            n += s->adapters[j].rank == s->adapters[i].rank && alpha_of(&s->adapters[j]) == alpha_of(&s->adapters[i]);
        if (n > best) best = n, *rank = s->adapters[i].rank, *alpha = alpha_of(&s->adapters[i]);
    }
}

/* ---- diffusers ----------------------------------------------------------------- */

/* PEFT's LoraConfig for one component, keyed "<comp>.<field>" as diffusers'
 * _pack_dict_with_prefix stores it. */
static int peft_config(cJSON *m, const sdc_lora_set *s, const char *comp) {
    int r;
    double alpha;
    common_rank(s, &r, &alpha);
    char key[128], buf[512];
    cJSON *rp = cJSON_CreateObject(), *ap = cJSON_CreateObject(), *tm = cJSON_CreateArray();
    int ok = rp && ap && tm;
    for (size_t i = 0; ok && i < s->count; i++) {
        /* PEFT matches a target or pattern p as a suffix ".p" of the module
         * path; CLIP's modules lost "text_model." in transformers 5, so
         * without it the name fits both versions */
        const char *mod = module_of(s, i, buf, sizeof buf);
        if (strncmp(mod, "text_model.", 11) == 0) mod += 11;
        ok = cJSON_AddItemToArray(tm, cJSON_CreateString(mod));
        if (ok && s->adapters[i].rank != r) ok = cJSON_AddNumberToObject(rp, mod, s->adapters[i].rank) != NULL;
        if (ok && alpha_of(&s->adapters[i]) != alpha) ok = cJSON_AddNumberToObject(ap, mod, alpha_of(&s->adapters[i])) != NULL;
    }
#define FIELD(f, item) (snprintf(key, sizeof key, "%s." f, comp), ok = ok && cJSON_AddItemToObject(m, key, item))
    FIELD("r", cJSON_CreateNumber(r));
    FIELD("lora_alpha", cJSON_CreateNumber(alpha));
    FIELD("rank_pattern", rp);
    FIELD("alpha_pattern", ap);
    FIELD("target_modules", tm);
    FIELD("peft_type", cJSON_CreateString("LORA"));
    FIELD("bias", cJSON_CreateString("none"));
    FIELD("lora_dropout", cJSON_CreateNumber(0));
    FIELD("fan_in_fan_out", cJSON_CreateFalse());
    FIELD("init_lora_weights", cJSON_CreateTrue());
    FIELD("use_dora", cJSON_CreateFalse());
    FIELD("use_rslora", cJSON_CreateFalse());
#undef FIELD
    return ok;
}

sdc_status sdc_lora_write_diffusers(const char *path, const sdc_lora_set *unet, const sdc_lora_set *te,
                                    const sdc_lora_set *te2, sdc_dtype dtype, sdc_error *err) {
    SDC_TRY(check_dtype(path, dtype, err));
    if (!unet && !te && !te2) return sdc_fail(err, SDC_EINVAL, "%s: no LoRA to write", path);
    const sdc_lora_set *sets[3] = {unet, te, te2};
    static const char *const comp[3] = {"unet", "text_encoder", "text_encoder_2"};
    /* convert_state_dict_to_diffusers: lora_A -> lora.down (UNet),
     * lora_linear_layer.down (text encoders, the old LoRACompatible names) */
    static const char *const down[3] = {"lora.down.weight", "lora_linear_layer.down.weight", "lora_linear_layer.down.weight"};
    static const char *const up[3] = {"lora.up.weight", "lora_linear_layer.up.weight", "lora_linear_layer.up.weight"};
    outlist o = {.path = path};
    cJSON *m = cJSON_CreateObject();
    sdc_status s = m ? SDC_OK : sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
    char mod[512], key[700];
    for (int c = 0; c < 3 && s == SDC_OK; c++) {
        if (!sets[c]) continue;
        for (size_t i = 0; i < sets[c]->count && s == SDC_OK; i++) {
            const sdc_lora_adapter *a = &sets[c]->adapters[i];
            module_of(sets[c], i, mod, sizeof mod);
            snprintf(key, sizeof key, "%s.%s.%s", comp[c], mod, down[c]);
            s = out_add(&o, key, a->A.ndim, a->A.shape, sdc_params_host_of(&sets[c]->params, &a->A), dtype, err);
            snprintf(key, sizeof key, "%s.%s.%s", comp[c], mod, up[c]);
            if (s == SDC_OK) s = out_add(&o, key, a->B.ndim, a->B.shape, sdc_params_host_of(&sets[c]->params, &a->B), dtype, err);
        }
        if (s == SDC_OK && !peft_config(m, sets[c], comp[c])) s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
    }
    char *json = s == SDC_OK ? cJSON_PrintUnformatted(m) : NULL;
    if (s == SDC_OK && !json) s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
    if (s == SDC_OK) {
        sdc_kv meta[2] = {{"format", "pt"}, {"lora_adapter_metadata", json}};
        s = out_write(&o, meta, 2, err);
    }
    free(json);
    cJSON_Delete(m);
    out_free(&o);
    return s;
}

/* ---- kohya ------------------------------------------------------------------------ */

/* "lora_unet_" + module with "." -> "_" (the SGM module for sgm UNets). */
static sdc_status kohya_name(const char *path, const char *prefix, const char *module, const sdc_unet_layout *sgm,
                             char *out, size_t cap, sdc_error *err) {
    char full[600], alias[600];
    snprintf(full, sizeof full, "%s.weight", module);
    if (sgm) {
        if (!sdc_unet_sgm_name(sgm, full, alias, sizeof alias))
            return sdc_fail(err, SDC_EUNSUPPORTED, "%s: UNet module %s has no SGM name", path, module);
        module = alias;
        alias[strlen(alias) - strlen(".weight")] = '\0';
    }
    int n = snprintf(out, cap, "%s%s", prefix, module);
    if (n < 0 || (size_t)n >= cap) return sdc_fail(err, SDC_ELIMIT, "%s: module name too long: %s", path, module);
    for (char *p = out; *p; p++)
        if (*p == '.') *p = '_';
    return SDC_OK;
}

static const char *base_version(sdc_family f) {
    switch (f) {
    case SDC_FAMILY_SD2: return "sd_v2";
    case SDC_FAMILY_SDXL: return "sdxl_base_v1-0";
    default: return "sd_v1";
    }
}

sdc_status sdc_lora_write_kohya(const char *path, const sdc_lora_set *unet, const sdc_lora_set *te,
                                const sdc_lora_set *te2, sdc_family family, const sdc_unet_layout *sgm,
                                sdc_dtype dtype, sdc_error *err) {
    SDC_TRY(check_dtype(path, dtype, err));
    if (!unet && !te && !te2) return sdc_fail(err, SDC_EINVAL, "%s: no LoRA to write", path);
    const sdc_lora_set *sets[3] = {unet, te, te2};
    const char *prefix[3] = {"lora_unet_", te2 || family == SDC_FAMILY_SDXL ? "lora_te1_" : "lora_te_", "lora_te2_"};
    outlist o = {.path = path};
    sdc_status s = SDC_OK;
    char mod[512], name[700], key[720];
    /* ss_network_dim/alpha: the linear layers' rank; conv_dim/conv_alpha: the k×k convs' */
    int dim = 0, conv_dim = 0;
    double alpha = 0, conv_alpha = 0;
    for (int c = 0; c < 3 && s == SDC_OK; c++) {
        if (!sets[c]) continue;
        for (size_t i = 0; i < sets[c]->count && s == SDC_OK; i++) {
            const sdc_lora_adapter *a = &sets[c]->adapters[i];
            int kxk = a->A.ndim == 4 && (a->A.shape[2] != 1 || a->A.shape[3] != 1);
            if (kxk && !conv_dim) conv_dim = a->rank, conv_alpha = alpha_of(a);
            if (!kxk && !dim) dim = a->rank, alpha = alpha_of(a);
            module_of(sets[c], i, mod, sizeof mod);
            s = kohya_name(path, prefix[c], mod, c == 0 ? sgm : NULL, name, sizeof name, err);
            if (s != SDC_OK) break;
            snprintf(key, sizeof key, "%s.lora_down.weight", name);
            s = out_add(&o, key, a->A.ndim, a->A.shape, sdc_params_host_of(&sets[c]->params, &a->A), dtype, err);
            snprintf(key, sizeof key, "%s.lora_up.weight", name);
            if (s == SDC_OK) s = out_add(&o, key, a->B.ndim, a->B.shape, sdc_params_host_of(&sets[c]->params, &a->B), dtype, err);
            /* F32 whatever dtype: alpha/r must come back exactly */
            float al = (float)alpha_of(a);
            snprintf(key, sizeof key, "%s.alpha", name);
            if (s == SDC_OK) s = out_add(&o, key, 0, NULL, &al, SDC_F32, err);
        }
    }
    if (s == SDC_OK) {
        if (!dim) dim = conv_dim, alpha = conv_alpha;
        char sdim[32], salpha[64], args[160];
        snprintf(sdim, sizeof sdim, "%d", dim);
        snprintf(salpha, sizeof salpha, "%g", alpha);
        if (conv_dim) snprintf(args, sizeof args, "{\"conv_dim\": \"%d\", \"conv_alpha\": \"%g\"}", conv_dim, conv_alpha);
        sdc_kv meta[] = {
            {"ss_network_module", "networks.lora"},
            {"ss_network_dim", sdim},
            {"ss_network_alpha", salpha},
            {"ss_base_model_version", (char *)base_version(family)},
            {"ss_v2", family == SDC_FAMILY_SD2 ? "True" : "False"},
            {"ss_network_args", args},
        };
        s = out_write(&o, meta, conv_dim ? 6 : 5, err);
    }
    out_free(&o);
    return s;
}

/* ---- full weights ---------------------------------------------------------------------- */

sdc_status sdc_params_write_diffusers(const char *dir, const sdc_params *p, const char *weights_name,
                                      const char *config_json, sdc_dtype dtype, sdc_error *err) {
    SDC_TRY(check_dtype(dir, dtype, err));
    SDC_TRY(sdc_mkdirs(dir, err));
    char *path = sdc_path_join(dir, weights_name);
    if (!path) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", dir);
    outlist o = {.path = path};
    sdc_status s = SDC_OK;
    for (size_t i = 0; i < p->count && s == SDC_OK; i++) {
        const sdc_param *it = &p->items[i];
        s = out_add(&o, it->name, it->slot->ndim, it->slot->shape, p->data + it->offset, dtype, err);
    }
    if (s == SDC_OK) {
        sdc_kv meta[1] = {{"format", "pt"}};
        s = out_write(&o, meta, 1, err);
    }
    out_free(&o);
    free(path);
    if (s == SDC_OK && config_json) {
        char *cfg = sdc_path_join(dir, "config.json");
        if (!cfg) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", dir);
        s = sdc_write_file_atomic(cfg, config_json, strlen(config_json), err);
        free(cfg);
    }
    return s;
}

sdc_status sdc_unet_write_diffusers(const char *dir, const sdc_params *unet, const char *config_json,
                                    sdc_dtype dtype, sdc_error *err) {
    return sdc_params_write_diffusers(dir, unet, "diffusion_pytorch_model.safetensors", config_json, dtype, err);
}

/* ---- a pipeline folder ------------------------------------------------------------------- */

/* Hard link src at dst, or copy it (other file system, no permission). A
 * symbolic link is followed: the base model's relative links would not
 * resolve from the new folder. */
static sdc_status link_or_copy(const char *src, const char *dst, sdc_error *err) {
    if (linkat(AT_FDCWD, src, AT_FDCWD, dst, AT_SYMLINK_FOLLOW) == 0) return SDC_OK;
    char *buf = NULL;
    size_t n = 0;
    SDC_TRY(sdc_read_file(src, &buf, &n, err));
    sdc_status s = sdc_write_file_atomic(dst, buf, n, err);
    free(buf);
    return s;
}

/* Copies the tree src into dst (created), leaving out the entry named skip. */
static sdc_status copy_tree(const char *src, const char *dst, const char *skip, int depth, sdc_error *err) {
    if (depth > 8) return sdc_fail(err, SDC_ELIMIT, "%s: folders nested too deep", src);
    SDC_TRY(sdc_mkdirs(dst, err));
    DIR *d = opendir(src);
    if (!d) return sdc_fail(err, SDC_EIO, "%s: cannot read folder: %s", src, strerror(errno));
    sdc_status s = SDC_OK;
    struct dirent *e;
    while (s == SDC_OK && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (skip && strcmp(e->d_name, skip) == 0) continue;
        char *a = sdc_path_join(src, e->d_name), *b = sdc_path_join(dst, e->d_name);
        if (!a || !b) s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", src);
        else if (sdc_path_is_dir(a)) s = copy_tree(a, b, NULL, depth + 1, err);
        else s = link_or_copy(a, b, err);
        free(a);
        free(b);
    }
    closedir(d);
    return s;
}

sdc_status sdc_pipeline_write_diffusers(const char *out_dir, const char *src_dir, const sdc_params *unet,
                                        const char *unet_config, sdc_dtype dtype, sdc_error *err) {
    SDC_TRY(check_dtype(out_dir, dtype, err));
    char *index = sdc_path_join(src_dir, "model_index.json");
    int has_index = index && sdc_path_exists(index);
    free(index);
    if (!has_index) return sdc_fail(err, SDC_ENOTFOUND, "%s: not a diffusers model folder (no model_index.json)", src_dir);
    if (sdc_path_exists(out_dir)) return sdc_fail(err, SDC_EINVAL, "%s: already exists; not overwritten", out_dir);
    size_t n = strlen(out_dir) + 32;
    char *tmp = malloc(n);
    if (!tmp) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", out_dir);
    snprintf(tmp, n, "%s.tmp-%ld", out_dir, (long)getpid());
    sdc_remove_tree(tmp); /* a leftover of this pid's earlier failed write */
    sdc_status s = copy_tree(src_dir, tmp, "unet", 0, err);
    char *udir = s == SDC_OK ? sdc_path_join(tmp, "unet") : NULL;
    if (s == SDC_OK && !udir) s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", out_dir);
    if (s == SDC_OK) s = sdc_unet_write_diffusers(udir, unet, unet_config, dtype, err);
    if (s == SDC_OK && rename(tmp, out_dir) != 0)
        s = sdc_fail(err, SDC_EIO, "%s: cannot rename %s into place: %s", out_dir, tmp, strerror(errno));
    if (s != SDC_OK) sdc_remove_tree(tmp);
    free(udir);
    free(tmp);
    return s;
}
