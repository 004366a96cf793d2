/* sdc init: writes a randomly initialised Stable Diffusion model folder in
 * the diffusers layout (configs, weights, tokenizers) from a preset
 * (models/presets.h), for benchmarks and training from scratch.
 *
 * The weights start as a freshly constructed diffusers/transformers model
 * does: each parameter's sdc_init as the model code declares it (PyTorch's
 * U(±1/√fan_in) for convolutions and linears of the UNet and VAE, norms 1/0,
 * transformers' CLIP init for the text encoders).
 *
 * Everything goes into "<DIR>.sdc-init-<pid>" first, renamed to DIR at the
 * end, so no half-written model ever appears under DIR; a failure, SIGINT,
 * SIGTERM or SIGHUP removes what the run wrote (SIGKILL or a crash leaves
 * the temporary folder, never DIR). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "core/dtype.h"
#include "core/fs.h"
#include "data/clip_vocab_write.h"
#include "io/safetensors.h"
#include "models/clip_text.h"
#include "models/presets.h"
#include "models/unet.h"
#include "models/vae.h"

typedef struct init_dtype {
    const char *flag, *torch; /* "fp16", "float16" */
    sdc_dtype dtype;
} init_dtype;

static const init_dtype k_dtypes[] = {
    {"fp32", "float32", SDC_F32},
    {"fp16", "float16", SDC_F16},
    {"bf16", "bfloat16", SDC_BF16},
};

/* Each component draws from its own stream: seed mixed with a hash of its
 * name (FNV-1a, then splitmix64's finaliser), so one component's weights do
 * not depend on which others the preset has. */
static uint64_t component_seed(uint64_t seed, const char *component) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *c = component; *c; c++) h = (h ^ (unsigned char)*c) * 0x100000001b3ull;
    uint64_t z = seed ^ h;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- files and folders ---------------------------------------------------------------------------------------- */

/* 1: exists and holds something; 0: missing or an empty folder; −1: not a folder */
static int dir_state(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    if (!S_ISDIR(st.st_mode)) return -1;
    DIR *d = opendir(path);
    if (!d) return 1;
    int any = 0;
    for (struct dirent *e; !any && (e = readdir(d));) any = strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return any;
}

/* ---- one component ------------------------------------------------------------------------------------------------ */

/* Converts every parameter to dtype in place (16-bit values packed at the
 * start of each fp32 slot: value i moves from byte 4i to byte 2i, after
 * values 0..i−1 were read; byte copies keep that order well defined), so
 * no second copy of a multi-GB model is needed. */
static void to_dtype_in_place(sdc_params *p, sdc_dtype dtype) {
    if (dtype == SDC_F32) return;
    for (size_t k = 0; k < p->count; k++) {
        unsigned char *b = (unsigned char *)p->items[k].slot->data;
        for (int64_t i = 0; i < p->items[k].numel; i++) {
            float v;
            memcpy(&v, b + 4 * i, 4);
            uint16_t h = dtype == SDC_F16 ? sdc_f32_to_f16(v) : sdc_f32_to_bf16(v);
            memcpy(b + 2 * i, &h, 2);
        }
    }
}

static void print_count(char *out, size_t cap, int64_t n) {
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%lld", (long long)n), o = 0;
    for (int i = 0; i < len && (size_t)o + 2 < cap; i++) {
        if (i > 0 && (len - i) % 3 == 0) out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = '\0';
}

/* Initialises p (built, allocated) and writes it to root/component/file. */
static sdc_status write_params(sdc_params *p, uint64_t seed, const init_dtype *dt, const char *root, const char *file,
                               sdc_error *err) {
    sdc_params_init_random(p, component_seed(seed, p->component));
    to_dtype_in_place(p, dt->dtype);
    sdc_st_tensor *t = calloc(p->count ? p->count : 1, sizeof *t);
    char *dir = sdc_path_join(root, p->component), *path = dir ? sdc_path_join(dir, file) : NULL;
    sdc_status s = t && path ? SDC_OK : sdc_fail(err, SDC_ENOMEM, "%s: out of memory", p->component);
    int64_t params = 0;
    for (size_t i = 0; s == SDC_OK && i < p->count; i++) {
        const sdc_param *it = &p->items[i];
        t[i] = (sdc_st_tensor){it->name, dt->dtype, it->slot->ndim, it->slot->shape, it->slot->data};
        params += it->numel;
    }
    static const sdc_kv meta[] = {{(char *)"format", (char *)"pt"}};
    if (s == SDC_OK) s = sdc_mkdirs(dir, err);
    if (s == SDC_OK) s = sdc_safetensors_write(path, t, p->count, meta, 1, err);
    if (s == SDC_OK) {
        char count[40];
        print_count(count, sizeof count, params);
        double mib = (double)sdc_file_size(path) / (1 << 20);
        printf("  %-15s %15s parameters  %8.2f %s  %s/%s\n", p->component, count, mib >= 1024 ? mib / 1024 : mib,
               mib >= 1024 ? "GiB" : "MiB", p->component, file);
        fflush(stdout);
    }
    free(t);
    free(dir);
    free(path);
    return s;
}

static const char *weight_file(const sdc_preset_model *m) {
    return m->kind == SDC_PRESET_UNET || m->kind == SDC_PRESET_VAE ? "diffusion_pytorch_model.safetensors"
                                                                   : "model.safetensors";
}

/* Builds one model component from its preset config, initialises and
 * writes it, and frees it before the next (an SDXL UNet alone is 10 GB). */
static sdc_status init_model(const sdc_preset_model *m, uint64_t seed, const init_dtype *dt, const char *root,
                             sdc_error *err) {
    cJSON *cfg = NULL;
    SDC_TRY(sdc_preset_model_config(m, dt->torch, &cfg, err));
    char what[96];
    snprintf(what, sizeof what, "preset %s/config.json", m->component);
    sdc_status s;
    if (m->kind == SDC_PRESET_UNET) {
        sdc_unet_config uc;
        sdc_unet *u = calloc(1, sizeof *u);
        s = u ? sdc_unet_config_parse(cfg, what, &uc, err) : sdc_fail(err, SDC_ENOMEM, "unet: out of memory");
        if (s == SDC_OK) s = sdc_unet_build(u, &uc, m->component, err);
        if (s == SDC_OK) s = write_params(&u->params, seed, dt, root, weight_file(m), err);
        if (u) sdc_unet_free(u);
        free(u);
    } else if (m->kind == SDC_PRESET_VAE) {
        sdc_vae_config vc;
        sdc_vae *v = calloc(1, sizeof *v);
        s = v ? sdc_vae_config_parse(cfg, what, &vc, err) : sdc_fail(err, SDC_ENOMEM, "vae: out of memory");
        if (s == SDC_OK) s = sdc_vae_build(v, &vc, m->component, err);
        if (s == SDC_OK) s = write_params(&v->params, seed, dt, root, weight_file(m), err);
        if (v) sdc_vae_free(v);
        free(v);
    } else {
        sdc_clip_text *t = calloc(1, sizeof *t);
        s = t ? sdc_clip_text_build(t, cfg, m->kind == SDC_PRESET_CLIP_TEXT_PROJ, m->component, what, err)
              : sdc_fail(err, SDC_ENOMEM, "%s: out of memory", m->component);
        if (s == SDC_OK) {
            s = write_params(&t->params, seed, dt, root, weight_file(m), err);
            sdc_clip_text_free(t);
        }
        free(t);
    }
    cJSON_Delete(cfg);
    return s;
}

/* ---- the folder ------------------------------------------------------------------------------------------------------- */

static const char *const k_tokenizer_dirs[2] = {"tokenizer", "tokenizer_2"};

/* Everything this run may create under the temporary folder, listed before
 * it starts: each file, the atomic writer's "<file>.tmp-<pid>" beside it,
 * the subfolders, the folder itself. Removing exactly these (unlink/rmdir,
 * which are async-signal-safe) undoes a failed or interrupted run without
 * touching anything else. */
typedef struct plan {
    char **paths; /* files first, then folders, deepest first, the root last */
    int n, nfiles;
} plan;

static plan g_plan;
static volatile sig_atomic_t g_armed;

static void plan_free(plan *p) {
    for (int i = 0; i < p->n; i++) free(p->paths[i]);
    free(p->paths);
    memset(p, 0, sizeof *p);
}

static int plan_add(plan *p, const char *root, const char *rel, const char *suffix) {
    size_t n = strlen(root) + (rel ? strlen(rel) + 1 : 0) + strlen(suffix) + 1;
    char *s = malloc(n);
    if (!s) return 0;
    snprintf(s, n, "%s%s%s%s", root, rel ? "/" : "", rel ? rel : "", suffix);
    p->paths[p->n++] = s;
    return 1;
}

static sdc_status plan_make(plan *pl, const sdc_preset *p, const sdc_preset_file *files, int nfiles, const char *root,
                            sdc_error *err) {
    memset(pl, 0, sizeof *pl);
    char rel[256], tmpsuf[32];
    snprintf(tmpsuf, sizeof tmpsuf, ".tmp-%ld", (long)getpid());
    int cap = 2 * (nfiles + 4 + SDC_PRESET_MAX_MODELS) + 4 + SDC_PRESET_MAX_MODELS;
    pl->paths = calloc((size_t)cap, sizeof *pl->paths);
    int ok = pl->paths != NULL;
    for (int k = 0; ok && k < 2; k++) {
        for (int i = 0; ok && i < nfiles; i++) ok = plan_add(pl, root, files[i].path, k ? tmpsuf : "");
        for (int t = 0; ok && t < 2; t++) {
            if (!p->pad[t]) continue;
            snprintf(rel, sizeof rel, "%s/vocab.json", k_tokenizer_dirs[t]);
            ok = plan_add(pl, root, rel, k ? tmpsuf : "");
            snprintf(rel, sizeof rel, "%s/merges.txt", k_tokenizer_dirs[t]);
            ok = ok && plan_add(pl, root, rel, k ? tmpsuf : "");
        }
        for (int i = 0; ok && i < p->nmodels; i++) {
            snprintf(rel, sizeof rel, "%s/%s", p->models[i].component, weight_file(&p->models[i]));
            ok = plan_add(pl, root, rel, k ? tmpsuf : "");
        }
    }
    pl->nfiles = pl->n;
    ok = ok && plan_add(pl, root, "scheduler", "");
    for (int t = 0; ok && t < 2; t++)
        if (p->pad[t]) ok = plan_add(pl, root, k_tokenizer_dirs[t], "");
    for (int i = 0; ok && i < p->nmodels; i++) ok = plan_add(pl, root, p->models[i].component, "");
    ok = ok && plan_add(pl, root, NULL, "");
    SDC_ASSERT(!ok || pl->n <= cap);
    if (!ok) {
        plan_free(pl);
        return sdc_fail(err, SDC_ENOMEM, "out of memory");
    }
    return SDC_OK;
}

static void plan_undo(const plan *p) {
    for (int i = 0; i < p->n; i++) {
        if (i < p->nfiles) unlink(p->paths[i]);
        else rmdir(p->paths[i]);
    }
}

static void on_signal(int sig) {
    if (g_armed) plan_undo(&g_plan);
    signal(sig, SIG_DFL);
    raise(sig);
}

static const int k_signals[] = {SIGINT, SIGTERM, SIGHUP};

static void arm(int on) {
    g_armed = on;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on ? on_signal : SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof k_signals / sizeof *k_signals; i++) sigaction(k_signals[i], &sa, NULL);
}

static sdc_status write_folder(const sdc_preset *p, const sdc_preset_file *files, int nfiles, uint64_t seed,
                               const init_dtype *dt, const char *root, sdc_error *err) {
    sdc_status s = SDC_OK;
    for (int i = 0; s == SDC_OK && i < nfiles; i++) s = sdc_write_text_at(root, files[i].path, files[i].text, err);
    for (int i = 0; s == SDC_OK && i < 2; i++) {
        if (!p->pad[i]) continue;
        char *dir = sdc_path_join(root, k_tokenizer_dirs[i]);
        s = dir ? sdc_clip_vocab_write(dir, err) : sdc_fail(err, SDC_ENOMEM, "out of memory");
        free(dir);
    }
    for (int i = 0; s == SDC_OK && i < p->nmodels; i++) s = init_model(&p->models[i], seed, dt, root, err);
    return s;
}

/* fsync a folder so a rename inside it survives a crash. */
static void sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* The folder DIR's parent ("." for a bare name); malloc'd. */
static char *parent_of(const char *dir) {
    char *parent = sdc_strdup(dir);
    if (!parent) return NULL;
    char *slash = strrchr(parent, '/');
    if (slash) *(slash == parent ? slash + 1 : slash) = '\0';
    else strcpy(parent, ".");
    return parent;
}

static sdc_status run_init(const sdc_preset *p, const char *out, uint64_t seed, const init_dtype *dt,
                           sdc_error *err) {
    int state = dir_state(out);
    if (state != 0)
        return sdc_fail(err, SDC_EINVAL, "%s: %s; sdc init writes only into a new or empty folder", out,
                        state < 0 ? "exists and is not a folder" : "exists and is not empty");
    sdc_preset_file *files;
    int nfiles;
    SDC_TRY(sdc_preset_files(p, dt->torch, &files, &nfiles, err));
    size_t tl = strlen(out) + 48;
    char *tmp = malloc(tl), *parent = parent_of(out);
    sdc_status s = tmp && parent ? SDC_OK : sdc_fail(err, SDC_ENOMEM, "out of memory");
    if (s == SDC_OK) {
        snprintf(tmp, tl, "%s.sdc-init-%ld", out, (long)getpid());
        s = plan_make(&g_plan, p, files, nfiles, tmp, err);
    }
    if (s == SDC_OK) {
        printf("sdc init: %s (seed %llu, %s) -> %s\n", p->description, (unsigned long long)seed, dt->flag, out);
        fflush(stdout);
        s = sdc_mkdirs(parent, err);
        if (s == SDC_OK && mkdir(tmp, 0755) != 0)
            s = sdc_fail(err, SDC_EIO, "%s: cannot create directory: %s", tmp, strerror(errno));
        if (s == SDC_OK) {
            arm(1);
            s = write_folder(p, files, nfiles, seed, dt, tmp, err);
            /* rename(2) replaces DIR only when it is missing or an empty folder */
            if (s == SDC_OK && rename(tmp, out) != 0)
                s = sdc_fail(err, SDC_EIO, "%s: cannot move the new model into place: %s", out, strerror(errno));
            if (s != SDC_OK) plan_undo(&g_plan);
            arm(0);
        }
        plan_free(&g_plan);
    }
    if (s == SDC_OK) {
        sync_dir(parent);
        printf("wrote %s\n", out);
    }
    sdc_preset_files_free(files, nfiles);
    free(tmp);
    free(parent);
    return s;
}

int cmd_init(int argc, char **argv) {
    const char *preset = NULL, *output = NULL, *dtype = "fp32";
    int64_t seed = 0;
    cli_flag flags[] = {
        {.name = "preset", .kind = CLI_STR, .dst = &preset, .meta = "NAME",
         .help = "architecture: sd15, sd21, sdxl, tiny or demo (the embedded demo's small model)", .group = "model"},
        {.name = "output", .kind = CLI_STR, .dst = &output, .meta = "DIR",
         .help = "folder to create (must not exist, or be empty)", .group = "model"},
        {.name = "seed", .kind = CLI_I64, .dst = &seed, .meta = "N",
         .help = "random seed (each component draws its own stream from it)", .def = "0", .group = "model"},
        {.name = "dtype", .kind = CLI_STR, .dst = &dtype, .meta = "T", .help = "weights' dtype: fp32, fp16 or bf16",
         .def = "fp32", .group = "model"},
    };
    int n = (int)(sizeof flags / sizeof *flags);
    int rc = cli_parse("init", "--preset sd15|sd21|sdxl|tiny|demo --output DIR [--seed N] [--dtype fp32|fp16|bf16]", flags,
                       n, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (!preset || !output) return cli_usage_error("init needs --preset NAME and --output DIR (sdc init --help)");
    const sdc_preset *p = sdc_preset_find(preset);
    if (!p) return cli_usage_error("--preset %s: unknown preset (choose %s)", preset, sdc_preset_names());
    const init_dtype *dt = NULL;
    for (size_t i = 0; i < sizeof k_dtypes / sizeof *k_dtypes; i++)
        if (strcmp(dtype, k_dtypes[i].flag) == 0 || strcmp(dtype, k_dtypes[i].torch) == 0) dt = &k_dtypes[i];
    if (!dt) return cli_usage_error("--dtype %s: choose fp32, fp16 or bf16", dtype);
    if (!*output) return cli_usage_error("--output needs a folder name");
    if (seed < 0) return cli_usage_error("--seed %lld: the seed must be 0 or more", (long long)seed);
    char *out = sdc_strdup(output);
    if (!out) return cli_usage_error("out of memory");
    for (size_t k = strlen(out); k > 1 && out[k - 1] == '/'; k--) out[k - 1] = '\0';
    sdc_error err = {0};
    sdc_status s = run_init(p, out, (uint64_t)seed, dt, &err);
    free(out);
    return s == SDC_OK ? 0 : cli_error(&err);
}
