/* sdc info PATH: what a model folder or checkpoint holds, and what is odd
 * about it (missing or unexpected tensors, shapes that disagree with the
 * config, mixed dtypes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "core/fs.h"
#include "io/json.h"
#include "io/model.h"
#include "models/clip_text_params.h"

typedef struct {
    const sdc_model *m;
    const char *comp;
    int problems;
    int missing_shown;
} check_ctx;

static void problem(check_ctx *c, const char *fmt, const char *a, const char *b) {
    printf("  problem: %s: ", c->comp);
    printf(fmt, a, b);
    printf("\n");
    c->problems++;
}

static void check_param(void *vctx, const char *name, int ndim, const int64_t *shape) {
    check_ctx *c = vctx;
    const sdc_weight *w = sdc_model_weight(c->m, c->comp, name);
    char want[128], got[128];
    if (!w) {
        /* a long list of missing keys helps nobody: show a few and count */
        if (c->missing_shown++ < 5) problem(c, "missing tensor %s%s", name, "");
        else c->problems++;
        return;
    }
    int same = w->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = w->shape[i] == shape[i];
    if (!same) {
        sdc_shape_str(want, sizeof want, ndim, shape);
        sdc_shape_str(got, sizeof got, w->ndim, w->shape);
        printf("  problem: %s: %s has shape %s, the config implies %s\n", c->comp, name, got, want);
        c->problems++;
    }
}

/* Counts tensors of a component the expected list does not name. */
typedef struct {
    const char **names;
    size_t n, cap;
} name_list;
static void collect(void *vctx, const char *name, int ndim, const int64_t *shape) {
    (void)ndim, (void)shape;
    name_list *l = vctx;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        const char **nn = realloc(l->names, nc * sizeof *nn);
        if (!nn) return;
        l->names = nn;
        l->cap = nc;
    }
    char *d = sdc_strdup(name);
    if (d) l->names[l->n++] = d;
}

static int check_text_encoder(const sdc_model *m, const sdc_component *comp) {
    check_ctx c = {m, comp->name, 0, 0};
    sdc_clip_text_config cfg;
    sdc_error err;
    int proj = strcmp(comp->class_name ? comp->class_name : "", "CLIPTextModelWithProjection") == 0;
    if (sdc_clip_text_config_parse(comp->config, proj, &cfg, comp->name, &err) != SDC_OK) {
        printf("  problem: %s\n", err.msg);
        return 1;
    }
    sdc_clip_text_params(&cfg, check_param, &c);
    if (c.missing_shown > 5) printf("  problem: %s: ... and %d more missing tensors\n", comp->name, c.missing_shown - 5);
    /* unexpected: tensors of this component the architecture does not have */
    name_list expected = {0};
    sdc_clip_text_params(&cfg, collect, &expected);
    size_t pl = strlen(comp->name);
    int unexpected = 0, unused_layers = 0;
    for (size_t i = 0; i < m->weights.count; i++) {
        const char *n = m->weights.items[i].name;
        if (strncmp(n, comp->name, pl) != 0 || n[pl] != '.') continue;
        int found = 0;
        for (size_t k = 0; k < expected.n && !found; k++) found = strcmp(expected.names[k], n + pl + 1) == 0;
        /* position_ids is a buffer older exports carry; harmless */
        if (!found && strstr(n, "position_ids")) continue;
        /* SD 2 checkpoints store all 24 OpenCLIP layers; diffusers' text
         * encoder has 23 (SD 2 conditions on the penultimate layer) */
        long long layer = -1;
        if (!found && m->single_file && sscanf(n + pl + 1, "text_model.encoder.layers.%lld.", &layer) == 1 &&
            layer >= cfg.num_hidden_layers) {
            if (!unused_layers++)
                printf("  note: %s: layers from %lld on are stored but unused (the model uses %lld)\n", comp->name,
                       layer, (long long)cfg.num_hidden_layers);
            continue;
        }
        if (!found) {
            if (unexpected++ < 5) printf("  problem: %s: unexpected tensor %s\n", comp->name, n + pl + 1);
        }
    }
    if (unexpected > 5) printf("  problem: %s: ... and %d more unexpected tensors\n", comp->name, unexpected - 5);
    for (size_t k = 0; k < expected.n; k++) free((void *)expected.names[k]);
    free(expected.names);
    return c.problems + unexpected;
}

/* A few anchor tensors whose shapes follow from the config. */
static int check_anchor(const sdc_model *m, const char *comp, const char *name, int ndim, const int64_t *shape) {
    check_ctx c = {m, comp, 0, 0};
    check_param(&c, name, ndim, shape);
    return c.problems;
}

static int check_unet_vae(const sdc_model *m, const sdc_component *comp) {
    const cJSON *cfg = comp->config;
    int64_t boc[8] = {0}, in_ch = 4, out_ch = 4, latent = 4;
    int nb = 0;
    sdc_error err;
    if (sdc_json_get_int_list(cfg, "block_out_channels", boc, 8, &nb, comp->name, &err) != SDC_OK || nb == 0) {
        printf("  problem: %s: config has no usable block_out_channels\n", comp->name);
        return 1;
    }
    int p = 0;
    int is_vae = comp->class_name && strstr(comp->class_name, "Autoencoder");
    if (is_vae) {
        in_ch = out_ch = 3;
        sdc_json_get_int(cfg, "in_channels", &in_ch, comp->name, &err);
        sdc_json_get_int(cfg, "out_channels", &out_ch, comp->name, &err);
        sdc_json_get_int(cfg, "latent_channels", &latent, comp->name, &err);
        p += check_anchor(m, comp->name, "encoder.conv_in.weight", 4, (int64_t[]){boc[0], in_ch, 3, 3});
        p += check_anchor(m, comp->name, "decoder.conv_out.weight", 4, (int64_t[]){out_ch, boc[0], 3, 3});
        p += check_anchor(m, comp->name, "encoder.conv_out.weight", 4, (int64_t[]){2 * latent, boc[nb - 1], 3, 3});
    } else {
        int64_t k_in = 3, k_out = 3, cross = 1280;
        sdc_json_get_int(cfg, "in_channels", &in_ch, comp->name, &err);
        sdc_json_get_int(cfg, "out_channels", &out_ch, comp->name, &err);
        sdc_json_get_int(cfg, "conv_in_kernel", &k_in, comp->name, &err);
        sdc_json_get_int(cfg, "conv_out_kernel", &k_out, comp->name, &err);
        sdc_json_get_int(cfg, "cross_attention_dim", &cross, comp->name, &err);
        p += check_anchor(m, comp->name, "conv_in.weight", 4, (int64_t[]){boc[0], in_ch, k_in, k_in});
        p += check_anchor(m, comp->name, "conv_out.weight", 4, (int64_t[]){out_ch, boc[0], k_out, k_out});
        p += check_anchor(m, comp->name, "time_embedding.linear_1.weight", 2, (int64_t[]){4 * boc[0], boc[0]});
        /* every cross-attention key projection reads cross_attention_dim features */
        size_t pl = strlen(comp->name);
        for (size_t i = 0; i < m->weights.count; i++) {
            const sdc_weight *w = &m->weights.items[i];
            if (strncmp(w->name, comp->name, pl) || !sdc_str_ends_with(w->name, "attn2.to_k.weight")) continue;
            if (w->ndim != 2 || w->shape[1] != cross) {
                printf("  problem: %s: %s reads %lld features, cross_attention_dim is %lld\n", comp->name,
                       w->name + pl + 1, (long long)(w->ndim == 2 ? w->shape[1] : -1), (long long)cross);
                p++;
                break;
            }
        }
    }
    return p;
}

static void print_dtypes(unsigned set) {
    int first = 1;
    for (int t = 0; t < SDC_DTYPE_COUNT; t++)
        if (set & (1u << t)) {
            printf("%s%s", first ? "" : "+", sdc_dtype_name((sdc_dtype)t));
            first = 0;
        }
    if (first) printf("-");
}

static void print_size(int64_t bytes) {
    if (bytes >= (1ll << 30)) printf("%.2f GiB", bytes / 1073741824.0);
    else if (bytes >= (1ll << 20)) printf("%.1f MiB", bytes / 1048576.0);
    else printf("%.1f KiB", bytes / 1024.0);
}

static void print_params(int64_t n) {
    if (n >= 1000000000) printf("%.2f B", n / 1e9);
    else if (n >= 1000000) printf("%.2f M", n / 1e6);
    else printf("%.1f K", n / 1e3);
}

static const char *token_str(const cJSON *cfg, const char *key) {
    const cJSON *v = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, key) : NULL;
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) { /* {"content": "..."} as newer tokenizers write */
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c)) return c->valuestring;
    }
    return NULL;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: sdc info PATH [--variant NAME] [--keys]\n\n"
            "Describes a diffusers model folder or a single-file checkpoint: family, components,\n"
            "parameter counts, dtypes, file sizes, and anything odd (missing or unexpected tensors,\n"
            "shapes that disagree with the config).\n\n"
            "  PATH            a diffusers folder (with model_index.json) or a .safetensors/.ckpt file\n"
            "  --variant NAME  read the NAME variant of the weights, e.g. fp16 (default: the plain files)\n"
            "  --keys          also list every tensor: name, dtype, shape\n");
}

int cmd_info(int argc, char **argv) {
    const char *path = NULL;
    sdc_model_options opt = {0};
    int keys = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--keys") == 0) {
            keys = 1;
        } else if (strcmp(argv[i], "--variant") == 0) {
            if (++i == argc) return cli_usage_error("--variant needs a value (e.g. fp16)");
            opt.variant = argv[i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage_error("info: unknown option \"%s\" (sdc info --help lists them)", argv[i]);
        } else if (path) {
            return cli_usage_error("info: one PATH at a time (got \"%s\" and \"%s\")", path, argv[i]);
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    sdc_model m;
    sdc_error err;
    if (sdc_model_open(path, &opt, &m, &err) != SDC_OK) return cli_error(&err);

    printf("path:       %s\n", m.path);
    printf("format:     %s\n", m.single_file ? "single-file checkpoint (original layout; configs derived from the tensors)"
                                            : "diffusers folder");
    printf("family:     %s%s%s%s\n", sdc_family_name(m.family), m.pipeline_class ? " (" : "",
           m.pipeline_class ? m.pipeline_class : "", m.pipeline_class ? ")" : "");
    int64_t total = 0, total_bytes = 0;
    printf("components:\n");
    for (int i = 0; i < m.ncomps; i++) {
        const sdc_component *c = &m.comps[i];
        printf("  %-16s %-30s", c->name, c->class_name ? c->class_name : "?");
        if (c->params) {
            print_params(c->params);
            printf(" params, ");
            print_dtypes(c->dtypes);
            printf(", ");
            print_size(c->bytes);
            total += c->params;
            total_bytes += c->bytes;
        } else if (c->class_name && strstr(c->class_name, "Tokenizer")) {
            const char *pad = token_str(c->config, "pad_token");
            int64_t maxlen = 77;
            sdc_json_get_int(c->config, "model_max_length", &maxlen, c->name, &err);
            printf("max length %lld, pad %s", (long long)maxlen, pad ? pad : "?");
        } else if (c->class_name && strstr(c->class_name, "Scheduler")) {
            const char *pt = "epsilon", *bs = "linear";
            int64_t steps = 1000;
            sdc_json_get_string(c->config, "prediction_type", &pt, c->name, &err);
            sdc_json_get_string(c->config, "beta_schedule", &bs, c->name, &err);
            sdc_json_get_int(c->config, "num_train_timesteps", &steps, c->name, &err);
            printf("%s prediction, %s betas, %lld train steps", pt, bs, (long long)steps);
        }
        printf("\n");
        for (size_t f = 0; f < c->nfiles; f++) {
            int64_t sz = sdc_file_size(c->files[f]);
            printf("  %-16s   file %s (", "", c->files[f]);
            print_size(sz);
            printf(")\n");
        }
    }
    printf("total:      ");
    print_params(total);
    printf(" parameters, ");
    print_size(total_bytes);
    printf("\n");
    /* each component file carries its own metadata; show each pair once */
    for (size_t i = 0, shown = 0; i < m.weights.nmeta && shown < 8; i++) {
        const sdc_kv *kv = &m.weights.metadata[i];
        int dup = 0;
        for (size_t k = 0; k < i && !dup; k++)
            dup = !strcmp(m.weights.metadata[k].key, kv->key) && !strcmp(m.weights.metadata[k].value, kv->value);
        if (dup) continue;
        printf("metadata:   %s = %.100s%s\n", kv->key, kv->value, strlen(kv->value) > 100 ? "..." : "");
        shown++;
    }
    for (size_t i = 0; i < m.nnotes; i++) printf("note:       %s\n", m.notes[i]);

    /* What is odd. */
    printf("checks:\n");
    int problems = 0;
    for (int i = 0; i < m.ncomps; i++) {
        const sdc_component *c = &m.comps[i];
        if (!c->params || !c->config || !c->class_name) continue;
        if (strncmp(c->class_name, "CLIPText", 8) == 0) problems += check_text_encoder(&m, c);
        else if (strstr(c->class_name, "UNet") || strstr(c->class_name, "Autoencoder")) problems += check_unet_vae(&m, c);
        unsigned floats = c->dtypes & ((1u << SDC_F32) | (1u << SDC_F16) | (1u << SDC_BF16) | (1u << SDC_F64));
        if (floats & (floats - 1)) {
            printf("  note: %s mixes floating dtypes (", c->name);
            print_dtypes(floats);
            printf("); sdc converts each on load\n");
        }
    }
    if (m.nignored) printf("  note: %zu tensors that are not part of the model (EMA copies, schedule buffers) are ignored\n", m.nignored);
    for (size_t i = 0; i < m.nunknown; i++) {
        if (i < 10) printf("  problem: unknown tensor %s\n", m.unknown[i]);
        problems++;
    }
    if (m.nunknown > 10) printf("  problem: ... and %zu more unknown tensors\n", m.nunknown - 10);
    if (!problems) printf("  no problems found\n");

    if (keys) {
        printf("tensors:\n");
        for (size_t i = 0; i < m.weights.count; i++) {
            const sdc_weight *w = &m.weights.items[i];
            char sb[128];
            printf("  %-80s %-5s %s\n", w->name, sdc_dtype_name(w->dtype), sdc_shape_str(sb, sizeof sb, w->ndim, w->shape));
        }
    }
    sdc_model_close(&m);
    return 0;
}
