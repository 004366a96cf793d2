/* LoRA files: key parsing and pairing (sdc_lora_open), and the merge
 * W += m·s·up·down (sdc_lora_apply). Formats and the math: io/lora.h. */
#include "io/lora.h"

#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "io/ckpt.h"
#include "io/json.h"
#include "io/safetensors.h"

#define NAME_MAX_LEN 1024

typedef enum { ROLE_NONE = 0, ROLE_UP, ROLE_DOWN, ROLE_MID, ROLE_ALPHA } role;
typedef enum { FMT_DIFFUSERS = 0, FMT_PEFT, FMT_KOHYA, FMT_COUNT } fmt;
static const char *const FMT_NAME[FMT_COUNT] = {"diffusers", "peft", "kohya"};

/* One key, parsed. */
typedef struct {
    fmt f;
    role r;
    const char *unsupported; /* what the key belongs to, if sdc refuses it */
    char comp[32];
    char module[NAME_MAX_LEN]; /* diffusers module path, or the kohya name after "lora_unet_" */
    char key[NAME_MAX_LEN];    /* the module as the file names it */
} parsed;

static int copy(char *dst, const char *src, size_t n) {
    if (n >= NAME_MAX_LEN) return 0;
    memcpy(dst, src, n);
    dst[n] = '\0';
    return 1;
}

/* "lora_unet_<module>.<suffix>" */
static int parse_kohya(const char *name, parsed *k) {
    const char *comp;
    const char *mod = sdc_lora_kohya_split(name, &comp);
    if (!mod) return 0;
    const char *dot = strchr(mod, '.');
    if (!dot || dot == mod) return 0;
    const char *suf = dot + 1;
    static const struct {
        const char *suffix;
        role r;
    } roles[] = {{"lora_down.weight", ROLE_DOWN}, {"lora_up.weight", ROLE_UP}, {"lora_mid.weight", ROLE_MID}, {"alpha", ROLE_ALPHA}};
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (strcmp(suf, roles[i].suffix) == 0) k->r = roles[i].r;
    if (k->r == ROLE_NONE) {
        if (strncmp(suf, "hada_", 5) == 0) k->unsupported = "LoHa (LyCORIS hada_*)";
        else if (strncmp(suf, "lokr_", 5) == 0) k->unsupported = "LoKr (LyCORIS lokr_*)";
        else if (strcmp(suf, "dora_scale") == 0) k->unsupported = "DoRA (dora_scale)";
        else if (strcmp(suf, "diff") == 0 || strcmp(suf, "diff_b") == 0) k->unsupported = "a full weight difference (LyCORIS diff)";
        else if (strcmp(suf, "lora_up.bias") == 0 || strcmp(suf, "lora_down.bias") == 0) k->unsupported = "a LoRA bias";
        else return 0;
    }
    k->f = FMT_KOHYA;
    snprintf(k->comp, sizeof k->comp, "%s", comp);
    return copy(k->module, mod, (size_t)(dot - mod)) && copy(k->key, name, (size_t)(dot - name));
}

/* The attention-processor LoRAs of old diffusers name the projection of the
 * processor ("attn1.processor.to_out_lora"); the UNet's own layer is
 * "attn1.to_out.0", CLIP's is "self_attn.out_proj". Rewrites module in place. */
static int processor_module(char *module, int text) {
    char *last = strrchr(module, '.');
    char *base = last ? last + 1 : module;
    static const char *const proj[][3] = {
        {"to_q", "to_q", "q_proj"}, {"to_k", "to_k", "k_proj"}, {"to_v", "to_v", "v_proj"}, {"to_out", "to_out.0", "out_proj"}};
    int which = -1;
    for (int i = 0; i < 4; i++)
        if (strcmp(base, proj[i][0]) == 0) which = i;
    if (which < 0) return 0;
    /* drop ".processor" before the projection */
    size_t plen = (size_t)(base - module);
    if (plen >= 11 && strncmp(base - 11, ".processor.", 11) == 0) base -= 10;
    size_t keep = (size_t)(base - module);
    char tmp[NAME_MAX_LEN];
    int n = snprintf(tmp, sizeof tmp, "%.*s%s", (int)keep, module, proj[which][text ? 2 : 1]);
    if (n < 0 || n >= NAME_MAX_LEN) return 0;
    memcpy(module, tmp, (size_t)n + 1);
    return 1;
}

/* diffusers and PEFT keys: "[<component>.]<module>.<suffix>" */
static int parse_diffusers(const char *name, parsed *k) {
    static const struct {
        const char *suffix;
        role r;
        fmt f;
        int processor;
        const char *unsupported;
    } rules[] = {
        {".lora_linear_layer.down.weight", ROLE_DOWN, FMT_DIFFUSERS, 0, NULL},
        {".lora_linear_layer.up.weight", ROLE_UP, FMT_DIFFUSERS, 0, NULL},
        {"_lora.down.weight", ROLE_DOWN, FMT_DIFFUSERS, 1, NULL},
        {"_lora.up.weight", ROLE_UP, FMT_DIFFUSERS, 1, NULL},
        {".lora.down.weight", ROLE_DOWN, FMT_DIFFUSERS, 0, NULL},
        {".lora.up.weight", ROLE_UP, FMT_DIFFUSERS, 0, NULL},
        {".lora_A.weight", ROLE_DOWN, FMT_PEFT, 0, NULL},
        {".lora_B.weight", ROLE_UP, FMT_PEFT, 0, NULL},
        {"_lora.alpha", ROLE_ALPHA, FMT_DIFFUSERS, 1, NULL},
        {".alpha", ROLE_ALPHA, FMT_DIFFUSERS, 0, NULL},
        {".lora_magnitude_vector.weight", ROLE_NONE, FMT_PEFT, 0, "DoRA (lora_magnitude_vector)"},
        {".lora_magnitude_vector", ROLE_NONE, FMT_PEFT, 0, "DoRA (lora_magnitude_vector)"},
        {".dora_scale", ROLE_NONE, FMT_DIFFUSERS, 0, "DoRA (dora_scale)"},
        {".lora_B.bias", ROLE_NONE, FMT_PEFT, 0, "a LoRA bias (lora_B.bias)"},
    };
    size_t len = strlen(name);
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        size_t sl = strlen(rules[i].suffix);
        if (len <= sl || strcmp(name + len - sl, rules[i].suffix) != 0) continue;
        k->r = rules[i].r;
        k->f = rules[i].f;
        k->unsupported = rules[i].unsupported;
        if (!copy(k->key, name, len - sl)) return 0;
        /* component prefix; raw PEFT ("base_model.model.") and bare keys
         * name no component: CLIP's modules start with "text_model." */
        static const char *const comps[] = {"unet.", "text_encoder.", "text_encoder_2.", "transformer.", "base_model.model.", ""};
        const char *mod = k->key;
        for (size_t c = 0; c < sizeof comps / sizeof comps[0]; c++) {
            size_t cl = strlen(comps[c]);
            if (strncmp(k->key, comps[c], cl) != 0) continue;
            mod = k->key + cl;
            if (cl && comps[c][0] != 'b') snprintf(k->comp, sizeof k->comp, "%.*s", (int)cl - 1, comps[c]);
            else snprintf(k->comp, sizeof k->comp, "%s", strncmp(mod, "text_model.", 11) == 0 ? "text_encoder" : "unet");
            break;
        }
        if (!*mod) return 0;
        snprintf(k->module, sizeof k->module, "%s", mod);
        if (rules[i].processor && !processor_module(k->module, strncmp(k->comp, "text_encoder", 12) == 0)) return 0;
        return 1;
    }
    return 0;
}

/* 1 if name is a key of a LoRA format (k filled), 0 if of none. */
static int parse_key(const char *name, parsed *k) {
    memset(k, 0, sizeof *k);
    if (parse_kohya(name, k)) return 1;
    memset(k, 0, sizeof *k);
    return parse_diffusers(name, k);
}

/* A module's keys, gathered. */
typedef struct {
    parsed id;
    const sdc_weight *up, *down, *mid, *alpha;
} group;

typedef struct {
    group *g;
    size_t n, cap;
    sdc_strmap index; /* "<comp>\n<module>" -> group */
    char **names;     /* the index keys */
} groups;

static void groups_free(groups *gs) {
    for (size_t i = 0; i < gs->n; i++) free(gs->names[i]);
    free(gs->names);
    free(gs->g);
    if (gs->index.keys) sdc_strmap_free(&gs->index);
}

static group *groups_get(groups *gs, const parsed *k) {
    char id[NAME_MAX_LEN + 40];
    snprintf(id, sizeof id, "%d\n%s\n%s", k->f == FMT_KOHYA, k->comp, k->module);
    int64_t i = sdc_strmap_get(&gs->index, id);
    if (i >= 0) return &gs->g[i];
    if (gs->n == gs->cap) {
        size_t cap = gs->cap ? 2 * gs->cap : 64;
        group *g = realloc(gs->g, cap * sizeof *g);
        if (!g) return NULL;
        gs->g = g;
        char **names = realloc(gs->names, cap * sizeof *names);
        if (!names) return NULL;
        gs->names = names;
        gs->cap = cap;
    }
    char *name = sdc_strdup(id);
    if (!name || sdc_strmap_put(&gs->index, name, (int64_t)gs->n, NULL) != 0) {
        free(name);
        return NULL;
    }
    gs->names[gs->n] = name;
    group *g = &gs->g[gs->n++];
    memset(g, 0, sizeof *g);
    g->id = *k;
    return g;
}

static sdc_status add_unknown(sdc_lora *l, const char *key, sdc_error *err) {
    char **u = realloc(l->unknown, (l->nunknown + 1) * sizeof *u);
    if (!u) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", l->path);
    l->unknown = u;
    if (!(u[l->nunknown] = sdc_strdup(key))) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", l->path);
    l->nunknown++;
    return SDC_OK;
}

/* ---- alpha ---------------------------------------------------------------- */

/* alpha_pattern: PEFT gives a module the alpha of the first key p (in file
 * order) for which the regex "(.*\.)?(p)$" matches the module's name. The
 * keys come from the file, so they are bounded before anything is compiled:
 * at most LORA_MAX_PATTERNS keys of at most LORA_MAX_PATTERN_LEN bytes,
 * without counted repetition "{m,n}" or back-references "\N" (glibc's
 * regcomp spends minutes expanding (((a{1,100}){1,100}){1,100}), and
 * back-references make matching exponential), and keys x modules at most
 * LORA_MAX_PATTERN_CHECKS (a real file: a few thousand of each). Keys of plain ASCII
 * name characters and '.' - module names, nearly always - are matched
 * directly ('.' as any character, as in the regex); the rest are compiled
 * once per file. */
#define LORA_MAX_PATTERNS 4096
#define LORA_MAX_PATTERN_LEN 512
#define LORA_MAX_PATTERN_CHECKS (1u << 24)

typedef struct {
    const char *key; /* borrowed from the config */
    double alpha;
    int kind; /* 0: direct match, 1: compiled rx, 2: did not compile (equality, as before) */
    regex_t rx;
} alpha_pat;

typedef struct {
    const cJSON *src; /* the alpha_pattern object compiled */
    alpha_pat *p;
    size_t n;
} pat_set;

/* PEFT's adapter config: diffusers keeps one per component in the
 * safetensors metadata ("lora_adapter_metadata": {"unet.r": 4,
 * "unet.lora_alpha": 8, "unet.alpha_pattern": {...}, ...}); a model-level
 * save or raw PEFT (adapter_config.json) has the keys unprefixed. */
typedef struct {
    cJSON *meta; /* lora_adapter_metadata, or NULL */
    cJSON *file; /* adapter_config.json, or NULL */
    pat_set sets[8]; /* compiled alpha_patterns (one object per component at most) */
    int nsets;
    size_t nmodules; /* modules whose alpha may come from a pattern */
} peft_cfg;

static void cfg_free(peft_cfg *c) {
    for (int i = 0; i < c->nsets; i++) {
        for (size_t k = 0; k < c->sets[i].n; k++)
            if (c->sets[i].p[k].kind == 1) regfree(&c->sets[i].p[k].rx);
        free(c->sets[i].p);
    }
    cJSON_Delete(c->meta);
    cJSON_Delete(c->file);
    memset(c, 0, sizeof *c);
}

static const cJSON *cfg_get(const peft_cfg *c, const char *comp, const char *field) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", comp, field);
    const cJSON *v = c->meta ? cJSON_GetObjectItemCaseSensitive(c->meta, key) : NULL;
    if (!v && c->meta) v = cJSON_GetObjectItemCaseSensitive(c->meta, field);
    if (!v && c->file) v = cJSON_GetObjectItemCaseSensitive(c->file, field);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* "(.*\.)?(p)$" for a key p of name characters and '.': p matches the
 * whole module, or the part after one of its dots. */
static int direct_match(const char *p, const char *module) {
    size_t pl = strlen(p), ml = strlen(module);
    for (size_t s = 0; s + pl <= ml; s++) {
        if (s > 0 && module[s - 1] != '.') continue;
        if (ml - s != pl) continue;
        size_t i = 0;
        while (i < pl && (p[i] == '.' || p[i] == module[s + i])) i++;
        if (i == pl) return 1;
    }
    return 0;
}

/* Compiles the numeric entries of an alpha_pattern object (once per file). */
static sdc_status pat_compile(const sdc_lora *l, peft_cfg *c, const cJSON *pat, const pat_set **out, sdc_error *err) {
    for (int i = 0; i < c->nsets; i++)
        if (c->sets[i].src == pat) {
            *out = &c->sets[i];
            return SDC_OK;
        }
    if (c->nsets == (int)(sizeof c->sets / sizeof c->sets[0]))
        return sdc_fail(err, SDC_ELIMIT, "%s: too many alpha_pattern objects", l->path);
    int n = cJSON_GetArraySize(pat);
    if (n > LORA_MAX_PATTERNS)
        return sdc_fail(err, SDC_ELIMIT, "%s: alpha_pattern has %d keys, more than the %d sdc accepts", l->path, n,
                        LORA_MAX_PATTERNS);
    if ((uint64_t)n * c->nmodules > LORA_MAX_PATTERN_CHECKS)
        return sdc_fail(err, SDC_ELIMIT, "%s: alpha_pattern has %d keys for %zu modules, more pairs to match than the %u sdc tries",
                        l->path, n, c->nmodules, LORA_MAX_PATTERN_CHECKS);
    pat_set *set = &c->sets[c->nsets];
    set->src = pat;
    set->n = 0;
    set->p = calloc((size_t)n + 1, sizeof *set->p);
    if (!set->p) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", l->path);
    c->nsets++;
    const cJSON *e;
    cJSON_ArrayForEach(e, pat) {
        if (!cJSON_IsNumber(e) || !(e->valuedouble > 0)) continue;
        const char *k = e->string;
        size_t kl = strlen(k);
        if (kl > LORA_MAX_PATTERN_LEN)
            return sdc_fail(err, SDC_ELIMIT, "%s: alpha_pattern key \"%.60s...\" is longer than %d bytes", l->path, k,
                            LORA_MAX_PATTERN_LEN);
        int direct = 1;
        for (size_t i = 0; i < kl; i++) {
            unsigned char ch = (unsigned char)k[i];
            if (ch >= 0x80 || strchr("[]()*+?{}|^$\\", ch)) direct = 0;
            if (ch == '{' || (ch == '\\' && i + 1 < kl && k[i + 1] >= '0' && k[i + 1] <= '9'))
                return sdc_fail(err, SDC_EUNSUPPORTED,
                                "%s: alpha_pattern key \"%.60s\" uses a counted repetition or a back-reference, which sdc does not evaluate",
                                l->path, k);
        }
        alpha_pat *ap = &set->p[set->n++];
        ap->key = k;
        ap->alpha = e->valuedouble;
        if (direct) continue;
        char *re = malloc(kl + 16);
        if (!re) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", l->path);
        snprintf(re, kl + 16, "^(.*\\.)?(%s)$", k);
        ap->kind = regcomp(&ap->rx, re, REG_EXTENDED | REG_NOSUB) == 0 ? 1 : 2;
        free(re);
    }
    *out = set;
    return SDC_OK;
}

/* alpha for a PEFT/diffusers module from the config; 0 if none is given. */
static sdc_status cfg_alpha(const sdc_lora *l, peft_cfg *c, const group *g, double *alpha, int *rslora,
                            sdc_error *err) {
    *alpha = 0;
    *rslora = 0;
    const cJSON *a = cfg_get(c, g->id.comp, "lora_alpha");
    if (!a) return SDC_OK;
    if (!cJSON_IsNumber(a) || !(a->valuedouble > 0))
        return sdc_fail(err, SDC_EFORMAT, "%s: LoRA config for %s: lora_alpha is not a positive number", l->path, g->id.comp);
    *alpha = a->valuedouble;
    const cJSON *pat = cfg_get(c, g->id.comp, "alpha_pattern");
    if (pat && cJSON_IsObject(pat)) {
        const pat_set *set = NULL;
        SDC_TRY(pat_compile(l, c, pat, &set, err));
        for (size_t k = 0; k < set->n; k++) {
            const alpha_pat *ap = &set->p[k];
            int m = ap->kind == 0   ? direct_match(ap->key, g->id.module)
                    : ap->kind == 1 ? regexec(&ap->rx, g->id.module, 0, NULL, 0) == 0
                                    : strcmp(ap->key, g->id.module) == 0;
            if (m) {
                *alpha = ap->alpha;
                break;
            }
        }
    }
    const cJSON *rs = cfg_get(c, g->id.comp, "use_rslora");
    *rslora = rs && cJSON_IsTrue(rs);
    return SDC_OK;
}

static sdc_status load_cfg(sdc_lora *l, peft_cfg *c, sdc_error *err) {
    memset(c, 0, sizeof *c);
    const char *m = sdc_weights_meta(&l->w, "lora_adapter_metadata");
    if (m) SDC_TRY(sdc_json_parse(m, strlen(m), l->path, &c->meta, err));
    if (strcmp(sdc_path_basename(l->path), "adapter_model.safetensors") == 0) {
        size_t dl = (size_t)(sdc_path_basename(l->path) - l->path);
        char *cfg = malloc(dl + 32);
        if (!cfg) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", l->path);
        snprintf(cfg, dl + 32, "%.*sadapter_config.json", (int)dl, l->path);
        sdc_status s = sdc_path_exists(cfg) ? sdc_json_load_object(cfg, &c->file, err) : SDC_OK;
        free(cfg);
        if (s != SDC_OK) return s;
    }
    return SDC_OK;
}

/* ---- open ------------------------------------------------------------------ */

static const char *shape_str(char *buf, size_t cap, const sdc_weight *t) { return sdc_shape_str(buf, cap, t->ndim, t->shape); }

/* Checks the shapes of a complete group and fills its delta. */
static sdc_status make_delta(sdc_lora *l, const group *g, peft_cfg *cfg, sdc_lora_delta *d, sdc_error *err) {
    const char *key = g->id.key;
    if (!g->up || !g->down)
        return sdc_fail(err, SDC_EFORMAT, "%s: LoRA module \"%s\" has %s but no %s", l->path, key,
                        g->up ? "an up weight" : g->down ? "a down weight" : "a mid weight",
                        g->up ? "down weight" : "up weight");
    const sdc_weight *up = g->up, *dn = g->down, *mid = g->mid;
    char a[96], b[96], c[96];
    int up_ok = up->ndim == 2 || (up->ndim == 4 && up->shape[2] == 1 && up->shape[3] == 1);
    int dn_ok = dn->ndim == 2 || dn->ndim == 4;
    if (mid) dn_ok = dn_ok && (dn->ndim == 2 || (dn->shape[2] == 1 && dn->shape[3] == 1)) && mid->ndim == 4;
    int64_t r = up_ok ? up->shape[1] : 0;
    int rank_ok = mid ? (mid->shape[0] == r && mid->shape[1] == dn->shape[0]) : dn->shape[0] == r;
    if (!up_ok || !dn_ok || !rank_ok || r <= 0)
        return sdc_fail(err, SDC_EFORMAT, "%s: LoRA module \"%s\": up %s%s%s and down %s do not make a rank-r pair", l->path,
                        key, shape_str(a, sizeof a, up), mid ? ", mid " : "", mid ? shape_str(c, sizeof c, mid) : "",
                        shape_str(b, sizeof b, dn));
    double scale = 1.0;
    if (g->alpha) {
        float al;
        if (sdc_weight_numel(g->alpha) != 1)
            return sdc_fail(err, SDC_EFORMAT, "%s: \"%s\" is not a single number", l->path, g->alpha->src_name);
        SDC_TRY(sdc_weight_to_f32(&l->w, g->alpha, &al, err));
        if (!isfinite(al) || al < 0) return sdc_fail(err, SDC_EFORMAT, "%s: \"%s\" is %g", l->path, g->alpha->src_name, al);
        /* kohya: alpha 0 means "alpha = rank" */
        if (al > 0) scale = al / (double)r;
    } else if (g->id.f != FMT_KOHYA) {
        double al;
        int rs;
        SDC_TRY(cfg_alpha(l, cfg, g, &al, &rs, err));
        if (al > 0) scale = rs ? al / sqrt((double)r) : al / (double)r;
    }
    memset(d, 0, sizeof *d);
    d->component = sdc_strdup(g->id.comp);
    d->key = sdc_strdup(key);
    if (g->id.f != FMT_KOHYA) {
        char p[NAME_MAX_LEN + 8];
        snprintf(p, sizeof p, "%s.weight", g->id.module);
        d->param = sdc_strdup(p);
    }
    if (!d->component || !d->key || (g->id.f != FMT_KOHYA && !d->param))
        return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", l->path);
    d->up = up;
    d->down = dn;
    d->mid = mid;
    d->scale = (float)scale;
    return SDC_OK;
}

static sdc_status read_file(const char *path, sdc_weights *w, sdc_error *err) {
    unsigned char magic[4] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return sdc_fail(err, SDC_EIO, "%s: cannot open the LoRA file", path);
    size_t n = fread(magic, 1, sizeof magic, f);
    fclose(f);
    /* a PyTorch zip checkpoint (torch.save); else safetensors */
    if (n == 4 && memcmp(magic, "PK\x03\x04", 4) == 0) return sdc_ckpt_read(path, w, err);
    return sdc_safetensors_read(path, w, err);
}

static sdc_status open_keys(sdc_lora *l, groups *gs, peft_cfg *cfg, sdc_error *err) {
    SDC_TRY(read_file(l->path, &l->w, err));
    SDC_TRY(load_cfg(l, cfg, err));
    /* at most one delta per tensor */
    if (!(l->deltas = calloc(l->w.count + 1, sizeof *l->deltas))) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", l->path);
    if (sdc_strmap_init(&gs->index, l->w.count + 16) != 0) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", l->path);
    for (size_t i = 0; i < l->w.count; i++) {
        const sdc_weight *t = &l->w.items[i];
        parsed k;
        if (!parse_key(t->name, &k)) {
            SDC_TRY(add_unknown(l, t->name, err));
            continue;
        }
        if (k.unsupported)
            return sdc_fail(err, SDC_EUNSUPPORTED, "%s: \"%s\" belongs to %s, which sdc does not support", l->path, t->name,
                            k.unsupported);
        group *g = groups_get(gs, &k);
        if (!g) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", l->path);
        const sdc_weight **slot = k.r == ROLE_UP ? &g->up : k.r == ROLE_DOWN ? &g->down : k.r == ROLE_MID ? &g->mid : &g->alpha;
        if (*slot)
            return sdc_fail(err, SDC_EFORMAT, "%s: \"%s\" and \"%s\" are the same LoRA weight", l->path, (*slot)->name, t->name);
        *slot = t;
        if (k.r == ROLE_UP || k.r == ROLE_DOWN) g->id.f = k.f; /* an ".alpha" may have opened the group */
    }
    size_t nfmt[FMT_COUNT] = {0};
    cfg->nmodules = gs->n;
    for (size_t i = 0; i < gs->n; i++) {
        group *g = &gs->g[i];
        if (!g->up && !g->down && !g->mid) { /* an alpha alone changes nothing */
            SDC_TRY(add_unknown(l, g->alpha->name, err));
            continue;
        }
        sdc_status s = make_delta(l, g, cfg, &l->deltas[l->count], err);
        l->count++; /* freed with the rest, also when half made */
        if (s != SDC_OK) return s;
        nfmt[g->id.f]++;
    }
    if (l->count == 0)
        return sdc_fail(err, SDC_EFORMAT,
                        "%s: not a LoRA file (no key like \"unet.<module>.lora_A.weight\", \"...lora.down.weight\" or "
                        "\"lora_unet_<module>.lora_down.weight\"; first key: \"%s\")",
                        l->path, l->w.count ? l->w.items[0].name : "(none)");
    int best = 0;
    for (int f = 1; f < FMT_COUNT; f++)
        if (nfmt[f] > nfmt[best]) best = f;
    l->format = FMT_NAME[best];
    return SDC_OK;
}

sdc_status sdc_lora_open(const char *path, sdc_lora *l, sdc_error *err) {
    memset(l, 0, sizeof *l);
    sdc_weights_init(&l->w);
    if (!(l->path = sdc_strdup(path))) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
    groups gs;
    memset(&gs, 0, sizeof gs);
    peft_cfg cfg = {0};
    sdc_status s = open_keys(l, &gs, &cfg, err);
    groups_free(&gs);
    cfg_free(&cfg);
    if (s != SDC_OK) sdc_lora_free(l);
    return s;
}

void sdc_lora_free(sdc_lora *l) {
    for (size_t i = 0; i < l->count; i++) {
        free(l->deltas[i].component);
        free(l->deltas[i].param);
        free(l->deltas[i].key);
    }
    free(l->deltas);
    for (size_t i = 0; i < l->nunknown; i++) free(l->unknown[i]);
    free(l->unknown);
    sdc_weights_free(&l->w);
    free(l->path);
    memset(l, 0, sizeof *l);
}

/* ---- merge ----------------------------------------------------------------- */

/* W += k · up · down' for one delta, where down' is down, or for a Tucker
 * delta down'[a, c, y, x] = Σ_b mid[a, b, y, x] · down[b, c]. The product is
 * formed in a buffer, row by row, and added to W once (one rounding of W). */
static sdc_status merge(const sdc_lora *l, const sdc_lora_delta *d, const char *comp, const sdc_param *it, float k,
                        sdc_error *err) {
    const sdc_weight *up = d->up, *dn = d->down, *mid = d->mid;
    const int64_t out = up->shape[0], r = up->shape[1], rin = dn->shape[0], in = dn->shape[1];
    int64_t kh = 1, kw = 1;
    if (mid) kh = mid->shape[2], kw = mid->shape[3];
    else if (dn->ndim == 4) kh = dn->shape[2], kw = dn->shape[3];
    const sdc_tensor *W = it->slot;
    int ok = W->ndim >= 2 && W->shape[0] == out && W->shape[1] == in &&
             ((W->ndim == 2 && kh == 1 && kw == 1) || (W->ndim == 4 && W->shape[2] == kh && W->shape[3] == kw));
    if (!ok) {
        char want[96], got[96];
        const int64_t dshape[4] = {out, in, kh, kw};
        return sdc_fail(err, SDC_EFORMAT, "%s: LoRA module \"%s\" makes a change of shape %s, but %s.%s has shape %s", l->path,
                        d->key, sdc_shape_str(got, sizeof got, (kh == 1 && kw == 1) ? 2 : 4, dshape), comp, it->name,
                        sdc_shape_str(want, sizeof want, W->ndim, W->shape));
    }
    const int64_t K = in * kh * kw;
    float *u = malloc((size_t)(out * r) * sizeof *u), *dd = malloc((size_t)(r * K) * sizeof *dd);
    float *delta = malloc((size_t)(out * K) * sizeof *delta);
    float *d0 = NULL, *m = NULL;
    sdc_status s = SDC_OK;
    if (!u || !dd || !delta) {
        s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory merging \"%s\"", l->path, d->key);
        goto done;
    }
    if ((s = sdc_weight_to_f32(&l->w, up, u, err)) != SDC_OK) goto done;
    if (!mid) {
        if ((s = sdc_weight_to_f32(&l->w, dn, dd, err)) != SDC_OK) goto done;
    } else {
        d0 = malloc((size_t)(rin * in) * sizeof *d0);
        m = malloc((size_t)(r * rin * kh * kw) * sizeof *m);
        if (!d0 || !m) {
            s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory merging \"%s\"", l->path, d->key);
            goto done;
        }
        if ((s = sdc_weight_to_f32(&l->w, dn, d0, err)) != SDC_OK || (s = sdc_weight_to_f32(&l->w, mid, m, err)) != SDC_OK)
            goto done;
        const int64_t S = kh * kw;
        for (int64_t a = 0; a < r; a++)
            for (int64_t c = 0; c < in; c++)
                for (int64_t p = 0; p < S; p++) {
                    float acc = 0;
                    for (int64_t b = 0; b < rin; b++) acc += m[(a * rin + b) * S + p] * d0[b * in + c];
                    dd[a * K + c * S + p] = acc;
                }
    }
    float *w = W->data;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (out * K * r > (1 << 16))
#endif
    for (int64_t o = 0; o < out; o++) {
        float *row = delta + o * K;
        memset(row, 0, (size_t)K * sizeof *row);
        for (int64_t j = 0; j < r; j++) {
            const float a = u[o * r + j], *src = dd + j * K;
            for (int64_t c = 0; c < K; c++) row[c] += a * src[c];
        }
        float *wr = w + o * K;
        for (int64_t c = 0; c < K; c++) wr[c] += k * row[c];
    }
done:
    free(u);
    free(dd);
    free(delta);
    free(d0);
    free(m);
    return s;
}

sdc_status sdc_lora_apply(const sdc_lora *l, float multiplier, sdc_params *const *comps, size_t ncomps,
                          size_t *skipped, sdc_error *err) {
    size_t skip = 0;
    sdc_lora_names *names = calloc(ncomps + 1, sizeof *names);
    int64_t **touched = calloc(ncomps + 1, sizeof *touched); /* per parameter: the delta that changed it, or 0 */
    sdc_status s = names && touched ? SDC_OK : sdc_fail(err, SDC_ENOMEM, "%s: out of memory", l->path);
    for (size_t c = 0; c < ncomps && s == SDC_OK; c++)
        if (!(touched[c] = calloc(comps[c]->count + 1, sizeof **touched)))
            s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", l->path);
    for (size_t i = 0; i < l->count && s == SDC_OK; i++) {
        const sdc_lora_delta *d = &l->deltas[i];
        size_t c = 0;
        while (c < ncomps && strcmp(comps[c]->component, d->component) != 0) c++;
        if (c == ncomps) {
            skip++;
            continue;
        }
        const sdc_params *p = comps[c];
        int64_t idx;
        if (d->param) {
            const sdc_param *it = sdc_params_find(p, d->param);
            idx = it ? it - p->items : -1;
            if (idx < 0) {
                s = sdc_fail(err, SDC_ENOTFOUND, "%s: LoRA module \"%s\" changes %s.%s, which the model does not have", l->path,
                             d->key, p->component, d->param);
                break;
            }
        } else {
            if (!names[c].keys && (s = sdc_lora_names_build(&names[c], p, err)) != SDC_OK) break;
            idx = sdc_lora_names_find(&names[c], sdc_lora_kohya_split(d->key, NULL));
            if (idx < 0) {
                s = sdc_fail(err, SDC_ENOTFOUND,
                             idx == -2 ? "%s: LoRA module \"%s\" could name more than one parameter of the %s"
                                       : "%s: LoRA module \"%s\" matches no parameter of the %s (sdc_lora_resolve lists such "
                                         "modules as unknown)",
                             l->path, d->key, p->component);
                break;
            }
        }
        if (touched[c][idx]) {
            s = sdc_fail(err, SDC_EFORMAT, "%s: LoRA modules \"%s\" and \"%s\" both change %s.%s", l->path,
                         l->deltas[touched[c][idx] - 1].key, d->key, p->component, p->items[idx].name);
            break;
        }
        touched[c][idx] = (int64_t)i + 1;
        s = merge(l, d, p->component, &p->items[idx], multiplier * d->scale, err);
    }
    for (size_t c = 0; c < ncomps; c++) {
        if (names && names[c].keys) sdc_lora_names_free(&names[c]);
        if (touched) free(touched[c]);
    }
    free(names);
    free(touched);
    if (s == SDC_OK && skipped) *skipped = skip;
    return s;
}
