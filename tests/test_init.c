/* sdc init: the tiny preset written by ./sdc, opened again, and its
 * weights' statistics against the initialisation diffusers / transformers
 * give a freshly constructed model (tools/check_init.py checks the large
 * presets against PyTorch itself). */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/dtype.h"
#include "core/fs.h"
#include "data/clip_tokenizer.h"
#include "data/clip_vocab_write.h"
#include "io/model.h"
#include "models/presets.h"
#include "test.h"

static char g_out[16384];

/* Runs `sdc init` with extra args into dir; returns the exit code. */
static int init(const char *dir, const char *extra) {
    char args[2048];
    snprintf(args, sizeof args, "init --preset tiny --output %s %s", dir, extra ? extra : "");
    return run_sdc(args, g_out, sizeof g_out);
}

/* "a/b" in one of 4 rotating buffers (a and b must not come from join). */
static char *join(const char *a, const char *b) {
    static char buf[4][1024];
    static int k;
    char *p = buf[k++ % 4];
    if (snprintf(p, sizeof buf[0], "%s/%s", a, b) >= (int)sizeof buf[0]) p[0] = '\0';
    return p;
}

static void new_dir(char *out, size_t cap) { snprintf(out, cap, "%s/model", test_tmpdir()); }

/* 1 if the two files have the same bytes. */
static int same_file(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    sdc_error err;
    int same = sdc_read_file(a, &x, &nx, &err) == SDC_OK && sdc_read_file(b, &y, &ny, &err) == SDC_OK && nx == ny &&
               memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return same;
}

/* Mean and variance of a weight read as fp32; min/max too. */
typedef struct wstats {
    int64_t n;
    double mean, var, mn, mx;
} wstats;

static int weight_stats(const sdc_model *m, const char *comp, const char *name, wstats *s) {
    const sdc_weight *t = sdc_model_weight(m, comp, name);
    if (!t) {
        sdc_test_fail(__FILE__, __LINE__, "%s.%s missing", comp, name);
        return 0;
    }
    int64_t n = sdc_weight_numel(t);
    float *v = malloc((size_t)n * sizeof *v);
    sdc_error err;
    if (!v || sdc_weight_to_f32(&m->weights, t, v, &err) != SDC_OK) {
        free(v);
        return 0;
    }
    double sum = 0, sq = 0;
    s->n = n;
    s->mn = s->mx = v[0];
    for (int64_t i = 0; i < n; i++) {
        sum += v[i];
        if (v[i] < s->mn) s->mn = v[i];
        if (v[i] > s->mx) s->mx = v[i];
    }
    s->mean = sum / (double)n;
    for (int64_t i = 0; i < n; i++) sq += (v[i] - s->mean) * (v[i] - s->mean);
    s->var = sq / (double)(n - 1);
    free(v);
    return 1;
}

/* PyTorch's default U(±b), b = 1/√fan_in: every value inside, variance b²/3.
 * Tolerance 10%: the sample variance of n uniform values has a relative
 * standard deviation √(0.8/n), under 1% for the n ≥ 4096 used here. */
static void check_uniform(const sdc_model *m, const char *comp, const char *name, int64_t fan_in) {
    wstats s;
    if (!weight_stats(m, comp, name, &s)) return;
    double b = 1.0 / sqrt((double)fan_in);
    CHECK_MSG(s.mn >= -b && s.mx <= b, "%s.%s: values [%g, %g] outside ±%g", comp, name, s.mn, s.mx, b);
    CHECK_MSG(fabs(s.var / (b * b / 3) - 1) < 0.10, "%s.%s: variance %g, expected %g", comp, name, s.var, b * b / 3);
    /* and they do fill the range (not, say, U(±b/2)): the extremes of
     * thousands of draws lie within 2% of the bound */
    CHECK_MSG(s.mx > 0.98 * b && s.mn < -0.98 * b, "%s.%s: [%g, %g] does not reach ±%g", comp, name, s.mn, s.mx, b);
}

static void check_const(const sdc_model *m, const char *comp, const char *name, double value) {
    wstats s;
    if (!weight_stats(m, comp, name, &s)) return;
    CHECK_MSG(s.mn == value && s.mx == value, "%s.%s: [%g, %g], expected all %g", comp, name, s.mn, s.mx, value);
}

/* N(0, std²): sample std within tol (relative). */
static void check_normal(const sdc_model *m, const char *comp, const char *name, double std, double tol) {
    wstats s;
    if (!weight_stats(m, comp, name, &s)) return;
    CHECK_MSG(fabs(sqrt(s.var) / std - 1) < tol, "%s.%s: std %g, expected %g", comp, name, sqrt(s.var), std);
    CHECK_MSG(fabs(s.mean) < 4 * std / sqrt((double)s.n), "%s.%s: mean %g", comp, name, s.mean);
    /* a normal sample of ≥ 1000 values reaches past 2.5 std (the chance it
     * does not is 0.994^1000 ≈ 0.2%); a uniform one of that std stops at √3 */
    CHECK_MSG(s.mx > 2.5 * std, "%s.%s: max %g, not normal-looking", comp, name, s.mx);
}

TEST(init_tiny_loads_like_tiny_sd) {
    char dir[1024];
    new_dir(dir, sizeof dir);
    REQUIRE(init(dir, NULL) == 0);
    CHECK(strstr(g_out, "unet") && strstr(g_out, "1,427,012 parameters"));
    sdc_model m, ref;
    sdc_error err;
    REQUIRE_OK(sdc_model_open(dir, NULL, &m, &err), &err);
    if (sdc_model_open(test_data("tiny-sd"), NULL, &ref, &err) != SDC_OK) {
        sdc_model_close(&m);
        REQUIRE_OK(SDC_EIO, &err);
    }
    CHECK(m.family == SDC_FAMILY_SD1);
    static const char *const comps[] = {"text_encoder", "unet", "vae"};
    for (int i = 0; i < 3; i++) {
        const sdc_component *a = sdc_model_component(&m, comps[i]), *b = sdc_model_component(&ref, comps[i]);
        CHECK_MSG(a && b, "%s missing", comps[i]);
        if (!a || !b) continue;
        CHECK_EQ_INT(a->params, b->params);
        CHECK(a->dtypes == 1u << SDC_F32);
    }
    /* every tensor of the reference model, with the same shape */
    int missing = 0;
    for (size_t i = 0; i < ref.weights.count; i++) {
        const sdc_weight *r = &ref.weights.items[i];
        const sdc_weight *t = sdc_weights_find(&m.weights, r->name);
        if (!t || t->ndim != r->ndim || memcmp(t->shape, r->shape, sizeof(int64_t) * (size_t)r->ndim) != 0) missing++;
    }
    CHECK_EQ_INT(missing, 0);
    CHECK_EQ_INT(m.weights.count, ref.weights.count);
    sdc_model_close(&ref);
    sdc_model_close(&m);
    /* the tokenizer folder loads and is the standard CLIP one */
    sdc_clip_tokenizer *t;
    REQUIRE_OK(sdc_clip_tokenizer_load(join(dir, "tokenizer"), &t, &err), &err);
    CHECK_EQ_INT(sdc_clip_tokenizer_vocab_size(t), 49408);
    CHECK_EQ_INT(sdc_clip_tokenizer_pad_id(t), 49407);
    sdc_clip_tokenizer_free(t);
    CHECK(same_file(join(dir, "tokenizer/vocab.json"), test_data("tiny-sd/tokenizer/vocab.json")));
    CHECK(same_file(join(dir, "tokenizer/merges.txt"), test_data("tiny-sd/tokenizer/merges.txt")));
    /* sdc info finds nothing wrong with it either */
    static char args[1200];
    snprintf(args, sizeof args, "info %s", dir);
    CHECK_EQ_INT(run_sdc(args, g_out, sizeof g_out), 0);
    CHECK_MSG(strstr(g_out, "no problems found") != NULL, "%s", g_out);
}

TEST(init_tiny_parameter_statistics) {
    char dir[1024];
    new_dir(dir, sizeof dir);
    REQUIRE(init(dir, "--seed 3") == 0);
    sdc_model m;
    sdc_error err;
    REQUIRE_OK(sdc_model_open(dir, NULL, &m, &err), &err);
    /* UNet: conv fan_in = in·k², linear fan_in = in; biases share the weight's bound */
    check_uniform(&m, "unet", "down_blocks.1.resnets.0.conv2.weight", 64 * 9);
    check_uniform(&m, "unet", "down_blocks.1.resnets.0.conv1.weight", 32 * 9);
    check_uniform(&m, "unet", "time_embedding.linear_1.weight", 32);
    check_uniform(&m, "unet", "time_embedding.linear_2.weight", 128);
    check_uniform(&m, "unet", "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj.weight", 64);
    check_uniform(&m, "unet", "down_blocks.1.attentions.0.proj_in.weight", 64);
    check_uniform(&m, "vae", "decoder.up_blocks.0.resnets.0.conv1.weight", 64 * 9);
    check_uniform(&m, "vae", "encoder.mid_block.attentions.0.to_q.weight", 64);
    wstats s;
    if (weight_stats(&m, "unet", "time_embedding.linear_2.bias", &s))
        CHECK(s.mn >= -1 / sqrt(128.0) && s.mx <= 1 / sqrt(128.0) && s.mx > s.mn);
    if (weight_stats(&m, "unet", "conv_in.bias", &s)) CHECK(s.mn >= -1 / 6.0 && s.mx <= 1 / 6.0 && s.mx > s.mn);
    /* norms 1/0, exactly */
    check_const(&m, "unet", "down_blocks.0.resnets.0.norm1.weight", 1);
    check_const(&m, "unet", "down_blocks.0.resnets.0.norm1.bias", 0);
    check_const(&m, "unet", "down_blocks.1.attentions.0.transformer_blocks.0.norm2.weight", 1);
    check_const(&m, "unet", "conv_norm_out.bias", 0);
    check_const(&m, "vae", "encoder.mid_block.attentions.0.group_norm.weight", 1);
    check_const(&m, "vae", "decoder.conv_norm_out.bias", 0);
    /* CLIP (transformers' _init_weights): embeddings N(0, 0.02²), linear
     * biases 0, q/k/v and fc2 N(0, (D^−½·(2L)^−½)²), out_proj N(0, 1/D),
     * fc1 N(0, 1/(2D)); D = 32, L = 5. Tolerances: 2% for the 1.6M-value
     * embedding, 12% for 1024-value matrices (sample std's relative sd is
     * 1/√(2n) = 2.2%; 12% is over 5 of those). */
    check_normal(&m, "text_encoder", "text_model.embeddings.token_embedding.weight", 0.02, 0.02);
    check_normal(&m, "text_encoder", "text_model.embeddings.position_embedding.weight", 0.02, 0.12);
    check_normal(&m, "text_encoder", "text_model.encoder.layers.0.self_attn.q_proj.weight",
                 1 / sqrt(32.0) / sqrt(10.0), 0.12);
    check_normal(&m, "text_encoder", "text_model.encoder.layers.4.self_attn.out_proj.weight", 1 / sqrt(32.0), 0.12);
    check_normal(&m, "text_encoder", "text_model.encoder.layers.2.mlp.fc1.weight", 1 / sqrt(64.0), 0.12);
    check_normal(&m, "text_encoder", "text_model.encoder.layers.2.mlp.fc2.weight", 1 / sqrt(32.0) / sqrt(10.0),
                 0.12);
    check_const(&m, "text_encoder", "text_model.encoder.layers.0.self_attn.q_proj.bias", 0);
    check_const(&m, "text_encoder", "text_model.encoder.layers.3.mlp.fc1.bias", 0);
    check_const(&m, "text_encoder", "text_model.final_layer_norm.weight", 1);
    check_const(&m, "text_encoder", "text_model.encoder.layers.1.layer_norm2.bias", 0);
    sdc_model_close(&m);
}

TEST(init_same_seed_same_files) {
    const char *tmp = test_tmpdir();
    char a[1024], b[1024], c[1024];
    snprintf(a, sizeof a, "%s/a", tmp);
    snprintf(b, sizeof b, "%s/b", tmp);
    snprintf(c, sizeof c, "%s/c", tmp);
    REQUIRE(init(a, "--seed 7") == 0);
    REQUIRE(init(b, "--seed=7") == 0);
    REQUIRE(init(c, "--seed 8") == 0);
    static const char *const files[] = {"unet/diffusion_pytorch_model.safetensors",
                                        "vae/diffusion_pytorch_model.safetensors",
                                        "text_encoder/model.safetensors",
                                        "model_index.json",
                                        "unet/config.json",
                                        "text_encoder/config.json",
                                        "scheduler/scheduler_config.json",
                                        "tokenizer/tokenizer_config.json"};
    for (int i = 0; i < 8; i++) CHECK_MSG(same_file(join(a, files[i]), join(b, files[i])), "%s differs", files[i]);
    for (int i = 0; i < 3; i++)
        CHECK_MSG(!same_file(join(a, files[i]), join(c, files[i])), "%s same for seeds 7 and 8", files[i]);
    for (int i = 3; i < 8; i++) CHECK(same_file(join(a, files[i]), join(c, files[i])));
}

/* Entries of a folder, "." and ".." excluded. */
static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

TEST(init_refuses_nonempty_output) {
    const char *tmp = test_tmpdir();
    char dir[1024], keep[1100];
    snprintf(dir, sizeof dir, "%s/mine", tmp);
    snprintf(keep, sizeof keep, "%s/notes.txt", dir);
    sdc_error err;
    REQUIRE_OK(sdc_mkdirs(dir, &err), &err);
    REQUIRE_OK(sdc_write_file_atomic(keep, "precious", 8, &err), &err);
    CHECK_EQ_INT(init(dir, NULL), 1);
    CHECK_MSG(strstr(g_out, "sdc: error:") && strstr(g_out, "not empty") && strstr(g_out, "mine"), "%s", g_out);
    CHECK_MSG(strchr(g_out, '\n') == g_out + strlen(g_out) - 1, "more than one line: %s", g_out);
    /* nothing lost, nothing added, no temporary left beside it */
    CHECK_EQ_INT(count_entries(dir), 1);
    char *text = NULL;
    size_t n = 0;
    REQUIRE_OK(sdc_read_file(keep, &text, &n, &err), &err);
    CHECK(n == 8 && memcmp(text, "precious", 8) == 0);
    free(text);
    CHECK_EQ_INT(count_entries(tmp), 1);
    /* a file in the way, and flag mistakes */
    CHECK_EQ_INT(init(keep, NULL), 1);
    CHECK(strstr(g_out, "not a folder") != NULL);
    CHECK_EQ_INT(run_sdc("init --preset sd9 --output /tmp/never", g_out, sizeof g_out), 2);
    CHECK(strstr(g_out, "sd15|sd21|sdxl|tiny") != NULL);
    CHECK_EQ_INT(run_sdc("init --preset tiny --output /tmp/never --dtype fp8", g_out, sizeof g_out), 2);
    CHECK_EQ_INT(run_sdc("init --preset tiny", g_out, sizeof g_out), 2);
    CHECK(!sdc_path_exists("/tmp/never"));
    /* an existing empty folder is fine */
    char empty[1024];
    snprintf(empty, sizeof empty, "%s", test_tmpdir());
    CHECK_EQ_INT(init(empty, NULL), 0);
    CHECK(sdc_path_exists(join(empty, "unet/diffusion_pytorch_model.safetensors")));
}

TEST(init_fp16_writes_f16) {
    const char *tmp = test_tmpdir();
    char a[1024], h[1024], bf[1024];
    snprintf(a, sizeof a, "%s/fp32", tmp);
    snprintf(h, sizeof h, "%s/fp16", tmp);
    snprintf(bf, sizeof bf, "%s/bf16", tmp);
    REQUIRE(init(a, NULL) == 0);
    REQUIRE(init(h, "--dtype fp16") == 0);
    REQUIRE(init(bf, "--dtype bf16") == 0);
    sdc_model m32, m16, mbf;
    sdc_error err;
    REQUIRE_OK(sdc_model_open(a, NULL, &m32, &err), &err);
    REQUIRE_OK(sdc_model_open(h, NULL, &m16, &err), &err);
    REQUIRE_OK(sdc_model_open(bf, NULL, &mbf, &err), &err);
    CHECK_EQ_INT(m16.weights.count, m32.weights.count);
    int wrong = 0;
    for (size_t i = 0; i < m16.weights.count; i++) {
        const sdc_weight *t = &m16.weights.items[i], *u = sdc_weights_find(&m32.weights, t->name),
                         *v = sdc_weights_find(&mbf.weights, t->name);
        if (t->dtype != SDC_F16 || !v || v->dtype != SDC_BF16 || !u) {
            wrong++;
            continue;
        }
        /* the same draws, rounded to nearest even */
        const float *x = u->data;
        const uint16_t *y = t->data, *z = v->data;
        for (int64_t j = 0; j < sdc_weight_numel(t); j++)
            if (y[j] != sdc_f32_to_f16(x[j]) || z[j] != sdc_f32_to_bf16(x[j])) {
                wrong++;
                break;
            }
    }
    CHECK_EQ_INT(wrong, 0);
    const sdc_component *te = sdc_model_component(&m16, "text_encoder");
    REQUIRE(te && te->config);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(te->config, "dtype");
    CHECK(cJSON_IsString(dt) && strcmp(dt->valuestring, "float16") == 0);
    sdc_model_close(&m32);
    sdc_model_close(&m16);
    sdc_model_close(&mbf);
}

/* The embedded merges rebuild the public CLIP files byte for byte. */
TEST(init_clip_vocab_files) {
    char *vocab, *merges, *want = NULL;
    size_t vn, mn, wn = 0;
    sdc_error err;
    REQUIRE_OK(sdc_clip_vocab_texts(&vocab, &vn, &merges, &mn, &err), &err);
    if (sdc_read_file(test_data("tiny-sd/tokenizer/vocab.json"), &want, &wn, &err) == SDC_OK)
        CHECK(vn == wn && memcmp(vocab, want, wn) == 0);
    else
        CHECK_MSG(0, "%s", err.msg);
    free(want);
    want = NULL;
    if (sdc_read_file(test_data("tiny-sd/tokenizer/merges.txt"), &want, &wn, &err) == SDC_OK)
        CHECK(mn == wn && memcmp(merges, want, wn) == 0);
    else
        CHECK_MSG(0, "%s", err.msg);
    free(want);
    free(vocab);
    free(merges);
}

/* Every preset's configs parse, name the right classes and agree with the
 * model builders (without building the large ones). */
TEST(init_presets_configs) {
    static const char *const names[] = {"sd15", "sd21", "sdxl", "tiny"};
    for (int i = 0; i < 4; i++) {
        const sdc_preset *p = sdc_preset_find(names[i]);
        REQUIRE(p);
        sdc_preset_file *f;
        int n;
        sdc_error err;
        REQUIRE_OK(sdc_preset_files(p, "bfloat16", &f, &n, &err), &err);
        for (int k = 0; k < n; k++) {
            cJSON *j = cJSON_Parse(f[k].text);
            CHECK_MSG(j != NULL, "%s: %s does not parse", names[i], f[k].path);
            CHECK_MSG(strstr(f[k].text, "@DTYPE@") == NULL, "%s: %s", names[i], f[k].path);
            cJSON_Delete(j);
        }
        sdc_preset_files_free(f, n);
        for (int k = 0; k < p->nmodels; k++) {
            cJSON *j;
            REQUIRE_OK(sdc_preset_model_config(&p->models[k], "float32", &j, &err), &err);
            cJSON_Delete(j);
        }
    }
    CHECK(sdc_preset_find("sd14") == NULL);
    CHECK(sdc_preset_find("sdxl")->pad[1] && strcmp(sdc_preset_find("sdxl")->pad[1], "!") == 0);
    CHECK(strcmp(sdc_preset_find("sd21")->pad[0], "!") == 0);
}
