#include "io/model.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "io/ckpt.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "io/single_file.h"

static sdc_status oom(sdc_error *err, const char *what) { return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", what); }

static sdc_status add_note(sdc_model *m, const char *text, sdc_error *err) {
    char **n = realloc(m->notes, (m->nnotes + 1) * sizeof *n);
    if (!n) return oom(err, m->path);
    m->notes = n;
    if (!(m->notes[m->nnotes] = sdc_strdup(text))) return oom(err, m->path);
    m->nnotes++;
    return SDC_OK;
}

static const char *str_member(const cJSON *o, const char *key) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

sdc_family sdc_family_from_configs(const char *pipeline_class, const cJSON *unet, const cJSON *te) {
    const char *add = str_member(unet, "addition_embed_type");
    if ((add && strcmp(add, "text_time") == 0) || (pipeline_class && strstr(pipeline_class, "XL")))
        return SDC_FAMILY_SDXL;
    const char *act = str_member(te, "hidden_act");
    if (act) return strcmp(act, "gelu") == 0 ? SDC_FAMILY_SD2 : SDC_FAMILY_SD1;
    const cJSON *lin = unet ? cJSON_GetObjectItemCaseSensitive(unet, "use_linear_projection") : NULL;
    if (unet) return cJSON_IsTrue(lin) ? SDC_FAMILY_SD2 : SDC_FAMILY_SD1;
    return SDC_FAMILY_UNKNOWN;
}

/* Moves every tensor of src into dst as "<prefix>.<name>", together with the
 * mapped files and owned buffers they point into. src is left empty. */
static sdc_status absorb(sdc_weights *dst, sdc_weights *src, const char *prefix, int text_model, sdc_error *err) {
    int base;
    SDC_TRY(sdc_weights_move_storage(dst, src, &base, err));
    for (size_t i = 0; i < src->count; i++) {
        const sdc_weight *t = &src->items[i];
        /* transformers' CLIPTextModel may save its keys without the
         * "text_model." of its module tree; diffusers' names keep it */
        int add_tm = text_model && strncmp(t->name, "text_model.", 11) != 0 && strncmp(t->name, "text_projection", 15) != 0;
        size_t n = strlen(prefix) + strlen(t->name) + 16;
        char *name = malloc(n);
        if (!name) return oom(err, prefix);
        snprintf(name, n, "%s.%s%s", prefix, add_tm ? "text_model." : "", t->name);
        int file = t->file >= 0 ? base + t->file : -1;
        sdc_status s = sdc_weights_add(dst, name, t->src_name, t->dtype, t->ndim, t->shape, t->data, t->nbytes, file,
                                       file >= 0 ? dst->files[file].path : prefix, err);
        free(name);
        if (s != SDC_OK) return s;
    }
    sdc_weights_free(src);
    return SDC_OK;
}

static int file_exists_in(const char *dir, const char *name) {
    char *p = sdc_path_join(dir, name);
    int r = p && sdc_file_size(p) >= 0;
    free(p);
    return r;
}

/* Picks the weight file(s) of a component folder, as diffusers does:
 * <base>[.<variant>].safetensors, or its sharded index. The caller frees *file. */
static sdc_status find_weights(sdc_model *m, const char *dir, const char *variant, char **file, int *sharded,
                               sdc_error *err) {
    static const char *bases[] = {"diffusion_pytorch_model", "model"};
    char name[512];
    *file = NULL;
    *sharded = 0;
    for (int b = 0; b < 2; b++) {
        const char *base = bases[b];
        if (variant) {
            snprintf(name, sizeof name, "%s.%s.safetensors", base, variant);
            if (file_exists_in(dir, name)) goto found;
            snprintf(name, sizeof name, "%s.safetensors.index.%s.json", base, variant);
            if (file_exists_in(dir, name)) goto found_sharded;
        } else {
            snprintf(name, sizeof name, "%s.safetensors", base);
            if (file_exists_in(dir, name)) goto found;
            snprintf(name, sizeof name, "%s.safetensors.index.json", base);
            if (file_exists_in(dir, name)) goto found_sharded;
        }
    }
    /* Older folders hold only PyTorch pickles; read through the restricted
     * unpickler (io/ckpt.h), which never executes anything. */
    for (int b = 0; b < 2 && !variant; b++) {
        snprintf(name, sizeof name, "%s.bin", bases[b]);
        if (file_exists_in(dir, name)) goto found;
    }
    /* Nothing under the asked-for name: list what is there. */
    DIR *d = opendir(dir);
    char seen[1024] = "";
    char only_variant[256] = "";
    int nvariants = 0;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            const char *n = e->d_name;
            if (!sdc_str_ends_with(n, ".safetensors") && !sdc_str_ends_with(n, ".bin") && !sdc_str_ends_with(n, ".json"))
                continue;
            if (strcmp(n, "config.json") == 0) continue;
            size_t l = strlen(seen);
            snprintf(seen + l, sizeof seen - l, "%s%s", l ? ", " : "", n);
            /* "<base>.<variant>.safetensors" with a variant free of dots */
            for (int b = 0; b < 2; b++) {
                size_t bl = strlen(bases[b]), nl = strlen(n), sl = strlen(".safetensors");
                if (strncmp(n, bases[b], bl) != 0 || n[bl] != '.' || !sdc_str_ends_with(n, ".safetensors")) continue;
                if (nl <= bl + 1 + sl) continue; /* the plain file */
                int vl = (int)(nl - bl - 1 - sl);
                if (memchr(n + bl + 1, '.', (size_t)vl)) continue;
                snprintf(only_variant, sizeof only_variant, "%.*s", vl, n + bl + 1);
                nvariants++;
            }
        }
        closedir(d);
    }
    if (!variant && nvariants == 1) {
        /* Only a variant is present (e.g. fp16 only): take it and say so. */
        char note[768];
        snprintf(note, sizeof note, "%s: no plain weights, using the \"%s\" variant", dir, only_variant);
        SDC_TRY(add_note(m, note, err));
        return find_weights(m, dir, only_variant, file, sharded, err);
    }
    if (variant)
        return sdc_fail(err, SDC_ENOTFOUND, "%s: no \"%s\" variant of the weights (found: %s)", dir, variant,
                        seen[0] ? seen : "nothing");
    return sdc_fail(err, SDC_ENOTFOUND, "%s: no weights found (expected diffusion_pytorch_model.safetensors or model.safetensors; found: %s)",
                    dir, seen[0] ? seen : "nothing");
found_sharded:
    *sharded = 1;
found:
    *file = sdc_path_join(dir, name);
    return *file ? SDC_OK : oom(err, dir);
}

static sdc_status load_component_weights(sdc_model *m, sdc_component *c, const sdc_model_options *opt, sdc_error *err) {
    char *file;
    int sharded;
    SDC_TRY(find_weights(m, c->dir, opt ? opt->variant : NULL, &file, &sharded, err));
    sdc_weights w;
    sdc_weights_init(&w);
    sdc_status s = sharded                            ? sdc_safetensors_read_index(file, &w, err)
                   : sdc_str_ends_with(file, ".bin") ? sdc_ckpt_read(file, &w, err)
                                                      : sdc_safetensors_read(file, &w, err);
    if (s == SDC_OK) {
        c->files = calloc(w.nfiles, sizeof *c->files);
        if (!c->files) s = oom(err, file);
        for (size_t i = 0; s == SDC_OK && i < w.nfiles; i++) {
            if (!(c->files[i] = sdc_strdup(w.files[i].path))) s = oom(err, file);
            else c->nfiles++;
        }
    }
    int text_model = c->class_name && strncmp(c->class_name, "CLIPText", 8) == 0;
    if (s == SDC_OK) s = absorb(&m->weights, &w, c->name, text_model, err);
    sdc_weights_free(&w);
    free(file);
    return s;
}

/* Which config file a component folder holds, by its role. */
static const char *config_name(const char *comp_name, const char *class_name) {
    if (strstr(comp_name, "scheduler") || (class_name && strstr(class_name, "Scheduler"))) return "scheduler_config.json";
    if (strstr(comp_name, "tokenizer") || (class_name && strstr(class_name, "Tokenizer"))) return "tokenizer_config.json";
    if (strstr(comp_name, "feature_extractor")) return "preprocessor_config.json";
    return "config.json";
}

static int is_model_class(const char *cls) {
    return cls && !strstr(cls, "Tokenizer") && !strstr(cls, "Scheduler") && !strstr(cls, "ImageProcessor") &&
           !strstr(cls, "FeatureExtractor");
}

static sdc_status open_folder(const char *path, const sdc_model_options *opt, sdc_model *m, sdc_error *err) {
    char *index_path = sdc_path_join(path, "model_index.json");
    if (!index_path) return oom(err, path);
    cJSON *index = NULL;
    sdc_status s;
    if (sdc_file_size(index_path) < 0) {
        char *cfg = sdc_path_join(path, "config.json");
        int single_component = cfg && sdc_file_size(cfg) >= 0;
        free(cfg);
        s = sdc_fail(err, SDC_ENOTFOUND,
                     single_component ? "%s: this is one component's folder; give the model folder that holds model_index.json"
                                      : "%s: not a diffusers model folder (no model_index.json)",
                     path);
        free(index_path);
        return s;
    }
    s = sdc_json_load_object(index_path, &index, err);
    if (s != SDC_OK) {
        free(index_path);
        return s;
    }
    const char *pc = str_member(index, "_class_name");
    if (pc && !(m->pipeline_class = sdc_strdup(pc))) s = oom(err, index_path);
    const cJSON *e;
    cJSON_ArrayForEach(e, index) {
        if (s != SDC_OK) break;
        if (e->string[0] == '_' || !cJSON_IsArray(e)) continue; /* _class_name, flags like force_zeros_for_empty_prompt */
        if (cJSON_GetArraySize(e) != 2) {
            s = sdc_fail(err, SDC_EFORMAT, "%s: \"%s\" must be [library, class]", index_path, e->string);
            break;
        }
        const cJSON *lib = cJSON_GetArrayItem(e, 0), *cls = cJSON_GetArrayItem(e, 1);
        if (cJSON_IsNull(lib) && cJSON_IsNull(cls)) continue; /* an absent optional component */
        if (!cJSON_IsString(lib) || !cJSON_IsString(cls)) {
            s = sdc_fail(err, SDC_EFORMAT, "%s: \"%s\" must be [library, class] strings", index_path, e->string);
            break;
        }
        if (strchr(e->string, '/') || strcmp(e->string, "..") == 0) {
            s = sdc_fail(err, SDC_EFORMAT, "%s: component name \"%s\" is not a folder name", index_path, e->string);
            break;
        }
        if (m->ncomps == SDC_MAX_COMPONENTS) {
            s = sdc_fail(err, SDC_ELIMIT, "%s: more than %d components", index_path, SDC_MAX_COMPONENTS);
            break;
        }
        sdc_component *c = &m->comps[m->ncomps++];
        c->name = sdc_strdup(e->string);
        c->library = sdc_strdup(lib->valuestring);
        c->class_name = sdc_strdup(cls->valuestring);
        c->dir = sdc_path_join(path, e->string);
        if (!c->name || !c->library || !c->class_name || !c->dir) {
            s = oom(err, index_path);
            break;
        }
        if (!sdc_path_is_dir(c->dir)) {
            s = sdc_fail(err, SDC_ENOTFOUND, "%s: missing component folder (model_index.json lists %s %s)", c->dir,
                         c->library, c->class_name);
            break;
        }
        char *cfg = sdc_path_join(c->dir, config_name(c->name, c->class_name));
        if (!cfg) {
            s = oom(err, c->dir);
            break;
        }
        if (sdc_file_size(cfg) >= 0) s = sdc_json_load_object(cfg, &c->config, err);
        else if (is_model_class(c->class_name))
            s = sdc_fail(err, SDC_ENOTFOUND, "%s: missing (every model component needs its config)", cfg);
        free(cfg);
        if (s == SDC_OK && is_model_class(c->class_name) && !(opt && opt->configs_only))
            s = load_component_weights(m, c, opt, err);
    }
    if (s == SDC_OK && m->ncomps == 0) s = sdc_fail(err, SDC_EFORMAT, "%s: lists no components", index_path);
    if (s == SDC_OK) {
        const sdc_component *u = sdc_model_component(m, "unet"), *t = sdc_model_component(m, "text_encoder");
        m->family = sdc_family_from_configs(m->pipeline_class, u ? u->config : NULL, t ? t->config : NULL);
    }
    cJSON_Delete(index);
    free(index_path);
    return s;
}

/* A single-file checkpoint: the key maps give diffusers names, and each
 * component's config is synthesised from its tensors (io/single_file.h). */
static sdc_status open_single_file(const char *path, sdc_model *m, sdc_error *err) {
    sdc_single_file sf;
    SDC_TRY(sdc_single_file_load(path, &sf, err));
    static const struct {
        unsigned bit;
        const char *name, *cls;
    } k_parts[4] = {
        {SDC_SF_TEXT_ENCODER, "text_encoder", "CLIPTextModel"},
        {SDC_SF_TEXT_ENCODER_2, "text_encoder_2", "CLIPTextModelWithProjection"},
        {SDC_SF_UNET, "unet", "UNet2DConditionModel"},
        {SDC_SF_VAE, "vae", "AutoencoderKL"},
    };
    cJSON *cfg[4] = {0};
    sdc_status s = sdc_single_file_configs(&sf, &cfg[2], &cfg[3], &cfg[0], &cfg[1], err);
    m->single_file = 1;
    m->family = sf.family;
    for (int i = 0; i < 4 && s == SDC_OK; i++) {
        if (!(sf.components & k_parts[i].bit)) continue;
        sdc_component *c = &m->comps[m->ncomps++];
        c->config = cfg[i];
        cfg[i] = NULL;
        c->name = sdc_strdup(k_parts[i].name);
        c->class_name = sdc_strdup(k_parts[i].cls);
        c->files = calloc(1, sizeof *c->files);
        if (c->files && (c->files[0] = sdc_strdup(path))) c->nfiles = 1;
        if (!c->name || !c->class_name || !c->nfiles) s = oom(err, path);
    }
    for (int i = 0; i < 4; i++) cJSON_Delete(cfg[i]);
    if (s == SDC_OK) {
        /* take the weights and the key lists over from sf */
        m->weights = sf.weights;
        sdc_weights_init(&sf.weights);
        m->ignored = sf.ignored, m->nignored = sf.nignored;
        m->unknown = sf.unknown, m->nunknown = sf.nunknown;
        sf.ignored = sf.unknown = NULL;
        sf.nignored = sf.nunknown = 0;
    }
    sdc_single_file_free(&sf);
    return s;
}

/* Per-component statistics for `sdc info` and memory planning. */
static void tally(sdc_model *m) {
    for (size_t i = 0; i < m->weights.count; i++) {
        const sdc_weight *t = &m->weights.items[i];
        for (int c = 0; c < m->ncomps; c++) {
            size_t l = strlen(m->comps[c].name);
            if (strncmp(t->name, m->comps[c].name, l) == 0 && t->name[l] == '.') {
                m->comps[c].params += sdc_weight_numel(t);
                m->comps[c].bytes += (int64_t)t->nbytes;
                m->comps[c].dtypes |= 1u << t->dtype;
                break;
            }
        }
    }
}

sdc_status sdc_model_open(const char *path, const sdc_model_options *opt, sdc_model *m, sdc_error *err) {
    memset(m, 0, sizeof *m);
    sdc_weights_init(&m->weights);
    if (!(m->path = sdc_strdup(path))) return oom(err, path);
    sdc_status s;
    if (sdc_path_is_dir(path)) {
        s = open_folder(path, opt, m, err);
    } else if (!sdc_path_exists(path)) {
        s = sdc_fail(err, SDC_ENOTFOUND, "%s: no such file or folder", path);
    } else {
        s = open_single_file(path, m, err);
    }
    if (s != SDC_OK) {
        sdc_model_close(m);
        return s;
    }
    tally(m);
    return SDC_OK;
}

static void free_list(char **l, size_t n) {
    for (size_t i = 0; i < n; i++) free(l[i]);
    free(l);
}

void sdc_model_close(sdc_model *m) {
    for (int i = 0; i < m->ncomps; i++) {
        sdc_component *c = &m->comps[i];
        free(c->name);
        free(c->library);
        free(c->class_name);
        free(c->dir);
        cJSON_Delete(c->config);
        free_list(c->files, c->nfiles);
    }
    sdc_weights_free(&m->weights);
    free_list(m->ignored, m->nignored);
    free_list(m->unknown, m->nunknown);
    free_list(m->notes, m->nnotes);
    free(m->path);
    free(m->pipeline_class);
    memset(m, 0, sizeof *m);
}

const sdc_component *sdc_model_component(const sdc_model *m, const char *name) {
    for (int i = 0; i < m->ncomps; i++)
        if (strcmp(m->comps[i].name, name) == 0) return &m->comps[i];
    return NULL;
}

const sdc_weight *sdc_model_weight(const sdc_model *m, const char *component, const char *name) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s.%s", component, name);
    return sdc_weights_find(&m->weights, buf);
}
