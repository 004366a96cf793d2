/* sdc convert (cli/cmd_convert.c), called in-process: models between
 * diffusers folders and single files, LoRAs between the diffusers/PEFT and
 * kohya layouts. Weights pass through fp32, so fp32 conversions must be
 * bit-exact; merged LoRAs must give the weights the original file gives. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/commands.h"
#include "core/fs.h"
#include "io/model.h"
#include "io/safetensors.h"
#include "pipeline/sd_model.h"
#include "single_recipe.h"
#include "test.h"

/* Runs `sdc convert` with the NULL-terminated arguments; its exit code. */
static int convert(const char *first, ...) {
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"convert";
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 31; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    return cmd_convert(argc, argv);
}

/* A fresh temporary folder's path + "/" + name, in one of 8 rotating buffers. */
static const char *tmp_path(const char *name) {
    static char buf[8][1024];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", test_tmpdir(), name);
    return p;
}

/* ---- comparing weights ----------------------------------------------------------------------------------------- */

static int model_component(const char *name) {
    return strncmp(name, "unet.", 5) == 0 || strncmp(name, "vae.", 4) == 0 || strncmp(name, "text_encoder", 12) == 0;
}

/* Every UNet, VAE and text-encoder tensor of a is in b with the same shape
 * and the same fp32 values bit for bit, b has no others, and b stores them
 * as want (SDC_F32 ...) when want >= 0. */
static void check_same_weights(const char *pa, const char *pb, int want) {
    sdc_model a, b;
    sdc_error err;
    REQUIRE_OK(sdc_model_open(pa, NULL, &a, &err), &err);
    if (sdc_model_open(pb, NULL, &b, &err) != SDC_OK) {
        sdc_model_close(&a);
        REQUIRE_OK(SDC_EFORMAT, &err);
    }
    size_t na = 0, nb = 0;
    int bad = 0;
    for (size_t i = 0; i < b.weights.count; i++) {
        const sdc_weight *t = &b.weights.items[i];
        if (!model_component(t->name)) continue;
        nb++;
        if (want >= 0 && (int)t->dtype != want && bad++ < 3)
            sdc_test_fail(__FILE__, __LINE__, "%s: %s stored as %s", pb, t->name, sdc_dtype_name(t->dtype));
    }
    for (size_t i = 0; i < a.weights.count && bad < 3; i++) {
        const sdc_weight *x = &a.weights.items[i];
        if (!model_component(x->name)) continue;
        na++;
        const sdc_weight *y = sdc_weights_find(&b.weights, x->name);
        int same = y && y->ndim == x->ndim;
        for (int d = 0; same && d < x->ndim; d++)
            same = x->shape[d] == y->shape[d];
        if (!same) {
            sdc_test_fail(__FILE__, __LINE__, "%s: %s missing or shaped otherwise than in %s", pb, x->name, pa);
            bad++;
            continue;
        }
        size_t n = (size_t)sdc_weight_numel(x);
        float *u = malloc(n * sizeof *u + 4), *v = malloc(n * sizeof *v + 4);
        REQUIRE(u && v);
        if (sdc_weight_to_f32(&a.weights, x, u, &err) != SDC_OK ||
            sdc_weight_to_f32(&b.weights, y, v, &err) != SDC_OK) {
            sdc_test_fail(__FILE__, __LINE__, "%s", err.msg);
            bad++;
        } else if (memcmp(u, v, n * sizeof *u) != 0) {
            sdc_test_fail(__FILE__, __LINE__, "%s: %s differs from %s's", pb, x->name, pa);
            bad++;
        }
        free(u);
        free(v);
    }
    CHECK_MSG(bad || na == nb, "%s has %zu model tensors, %s %zu", pa, na, pb, nb);
    CHECK(na > 100);
    sdc_model_close(&a);
    sdc_model_close(&b);
}

/* Two parameter stores with the same names and bit-identical values. */
static void check_same_params(const sdc_params *a, const sdc_params *b) {
    CHECK_MSG(a->count == b->count && a->total == b->total, "%s: %zu/%zu parameters vs %zu/%zu", a->component, a->count,
              a->total, b->count, b->total);
    if (a->count != b->count || a->total != b->total) return;
    for (size_t i = 0; i < a->count; i++) {
        const sdc_param *x = &a->items[i], *y = &b->items[i];
        if (strcmp(x->name, y->name) != 0 || x->numel != y->numel ||
            memcmp(a->data + x->offset, b->data + y->offset, (size_t)x->numel * sizeof(float)) != 0) {
            sdc_test_fail(__FILE__, __LINE__, "%s.%s differs (or %s)", a->component, x->name, y->name);
            return;
        }
    }
}

/* ---- models --------------------------------------------------------------------------------------------------------
 */

/* folder -> single file -> folder, all fp32: the same tensors, bit for bit. */
static void round_trip(const char *model, sdc_family family) {
    char single[1024], folder[1024];
    snprintf(single, sizeof single, "%s", tmp_path("model.safetensors"));
    snprintf(folder, sizeof folder, "%s", tmp_path("model"));
    const char *src = test_data(model);
    REQUIRE(convert("--input", src, "--output", single, "--dtype", "fp32", NULL) == 0);
    sdc_model m;
    sdc_error err;
    REQUIRE_OK(sdc_model_open(single, NULL, &m, &err), &err);
    CHECK(m.single_file);
    CHECK_EQ_INT(m.family, family);
    CHECK_EQ_INT(m.nunknown, 0);
    sdc_model_close(&m);
    REQUIRE(convert("--input", single, "--output", folder, "--dtype=fp32", NULL) == 0);
    check_same_weights(src, folder, SDC_F32);
    sdc_sd sd;
    REQUIRE_OK(sdc_sd_load(folder, NULL, &sd, &err), &err);
    CHECK_EQ_INT(sd.family, family);
    sdc_sd_free(&sd);
}

TEST(convert_round_trip_sd) { round_trip("tiny-sd", SDC_FAMILY_SD1); }
TEST(convert_round_trip_sdxl) { round_trip("tiny-sdxl", SDC_FAMILY_SDXL); }

/* A single file (made from its recipe) -> diffusers folder: sdc_sd_load
 * builds the same model from both, with the same weights, scheduler and
 * tokenizers, and the folder keeps the file's dtype by default. */
static void single_to_folder(const char *name) {
    const char *single = test_single_file(name);
    char folder[1024];
    snprintf(folder, sizeof folder, "%s", tmp_path("from_single"));
    REQUIRE(convert("--input", single, "--output", folder, NULL) == 0);
    sdc_sd a, b;
    sdc_error err;
    REQUIRE_OK(sdc_sd_load(single, NULL, &a, &err), &err);
    if (sdc_sd_load(folder, NULL, &b, &err) != SDC_OK) {
        sdc_sd_free(&a);
        REQUIRE_OK(SDC_EFORMAT, &err);
    }
    CHECK(!b.files.single_file);
    CHECK_EQ_INT(b.family, a.family);
    CHECK_EQ_INT(b.nte, a.nte);
    check_same_params(&a.unet->params, &b.unet->params);
    check_same_params(&a.vae->params, &b.vae->params);
    for (int i = 0; i < a.nte && i < b.nte; i++)
        check_same_params(&a.te[i]->params, &b.te[i]->params);
    /* the schedule sdc assumes for the single file */
    CHECK_STR(b.sched.class_name, a.sched.class_name);
    CHECK_EQ_INT(b.sched.prediction_type, a.sched.prediction_type);
    CHECK_EQ_INT(b.sched.beta_schedule, a.sched.beta_schedule);
    CHECK(b.sched.beta_start == a.sched.beta_start && b.sched.beta_end == a.sched.beta_end);
    CHECK_EQ_INT(b.sched.num_train_timesteps, a.sched.num_train_timesteps);
    CHECK_EQ_INT(b.sched.timestep_spacing, a.sched.timestep_spacing);
    CHECK_EQ_INT(b.sched.steps_offset, a.sched.steps_offset);
    CHECK_EQ_INT(b.force_zeros_for_empty_prompt, a.force_zeros_for_empty_prompt);
    /* the tokenizer files give the built-in tokenizers' ids, padding included */
    for (int i = 0; i < a.nte && i < b.nte; i++) {
        int32_t x[77], y[77];
        REQUIRE_OK(sdc_clip_tokenize(a.tok[i], "a photo of an astronaut, riding a horse!", x, NULL, &err), &err);
        REQUIRE_OK(sdc_clip_tokenize(b.tok[i], "a photo of an astronaut, riding a horse!", y, NULL, &err), &err);
        CHECK_MSG(memcmp(x, y, sizeof x) == 0, "%s: tokenizer %d differs", name, i);
        CHECK_EQ_INT(sdc_clip_tokenizer_pad_id(b.tok[i]), sdc_clip_tokenizer_pad_id(a.tok[i]));
    }
    /* stored as the single file stores them */
    const sdc_component *su = sdc_model_component(&a.files, "unet"), *fu = sdc_model_component(&b.files, "unet");
    CHECK(su && fu && su->dtypes == fu->dtypes);
    sdc_sd_free(&a);
    sdc_sd_free(&b);
}

TEST(convert_single_to_diffusers_sd) { single_to_folder("tiny-sd"); }
TEST(convert_single_to_diffusers_sd2) { single_to_folder("tiny-sd2"); }
TEST(convert_single_to_diffusers_sdxl) { single_to_folder("tiny-sdxl"); }

/* folder -> folder in another dtype: the other files come along, the
 * weights are stored as asked and round to the same values. */
TEST(convert_folder_dtype) {
    char out[1024];
    snprintf(out, sizeof out, "%s", tmp_path("bf16"));
    REQUIRE(convert("--input", test_data("tiny-sd"), "--output", out, "--dtype", "bf16", NULL) == 0);
    sdc_model m;
    sdc_error err;
    REQUIRE_OK(sdc_model_open(out, NULL, &m, &err), &err);
    for (int i = 0; i < m.ncomps; i++) {
        const char *n = m.comps[i].name;
        if (!strcmp(n, "unet") || !strcmp(n, "vae") || !strcmp(n, "text_encoder"))
            CHECK_MSG(m.comps[i].dtypes == 1u << SDC_BF16, "%s: dtypes %#x", n, m.comps[i].dtypes);
    }
    const sdc_component *te = sdc_model_component(&m, "text_encoder");
    const cJSON *dt = te && te->config ? cJSON_GetObjectItemCaseSensitive(te->config, "dtype") : NULL;
    CHECK(cJSON_IsString(dt) && strcmp(dt->valuestring, "bfloat16") == 0);
    sdc_model_close(&m);
    char p[1100];
    snprintf(p, sizeof p, "%s/tokenizer/vocab.json", out);
    CHECK(sdc_path_exists(p));
    snprintf(p, sizeof p, "%s/scheduler/scheduler_config.json", out);
    CHECK(sdc_path_exists(p));
    /* bf16 back to fp32 is exact: a second conversion changes nothing */
    char again[1024];
    snprintf(again, sizeof again, "%s", tmp_path("fp32"));
    REQUIRE(convert("--input", out, "--output", again, "--dtype", "fp32", NULL) == 0);
    check_same_weights(out, again, SDC_F32);
}

/* ---- LoRAs
 * ----------------------------------------------------------------------------------------------------------- */

/* Loads model with one LoRA merged (scale 1). */
static int load_merged(const char *model, const char *lora, sdc_sd *sd) {
    sdc_sd_lora l = {lora, 1.0f};
    sdc_sd_load_opts o = {.loras = &l, .nlora = 1, .skip_vae = 1};
    sdc_error err;
    if (sdc_sd_load(model, &o, sd, &err) != SDC_OK) {
        sdc_test_fail(__FILE__, __LINE__, "%s + %s: %s", model, lora, err.msg);
        return 0;
    }
    return 1;
}

/* Largest |a - b| over two stores of the same layout (-1: layouts differ). */
static double max_diff(const sdc_params *a, const sdc_params *b) {
    if (a->total != b->total) return -1;
    double m = 0;
    for (size_t i = 0; i < a->total; i++) {
        double d = fabs((double)a->data[i] - b->data[i]);
        if (d > m) m = d;
    }
    return m;
}

/* The model with `orig` merged and with `conv` merged: UNet and text
 * encoders within tol (0: bit-identical); the LoRA must change something. */
static void check_same_merge(const char *model, const char *orig, const char *conv, double tol) {
    sdc_sd a, b, base;
    REQUIRE(load_merged(model, orig, &a));
    if (!load_merged(model, conv, &b)) {
        sdc_sd_free(&a);
        return;
    }
    sdc_error err;
    sdc_sd_load_opts plain = {.skip_vae = 1};
    REQUIRE_OK(sdc_sd_load(model, &plain, &base, &err), &err);
    double d = max_diff(&a.unet->params, &b.unet->params);
    CHECK_MSG(d >= 0 && d <= tol, "%s vs %s: UNet differs by %g", orig, conv, d);
    CHECK(max_diff(&a.unet->params, &base.unet->params) > 0);
    for (int i = 0; i < a.nte; i++) {
        d = max_diff(&a.te[i]->params, &b.te[i]->params);
        CHECK_MSG(d >= 0 && d <= tol, "%s vs %s: text encoder %d differs by %g", orig, conv, i, d);
    }
    sdc_sd_free(&a);
    sdc_sd_free(&b);
    sdc_sd_free(&base);
}

/* 1 if a key of the safetensors file contains needle; *dtype (may be NULL)
 * gets that tensor's dtype. */
static int has_key(const char *path, const char *needle, sdc_dtype *dtype) {
    sdc_weights w;
    sdc_weights_init(&w);
    sdc_error err;
    int found = 0;
    if (sdc_safetensors_read(path, &w, &err) == SDC_OK)
        for (size_t i = 0; i < w.count && !found; i++)
            if (strstr(w.items[i].name, needle)) {
                found = 1;
                if (dtype) *dtype = w.items[i].dtype;
            }
    sdc_weights_free(&w);
    return found;
}

/* diffusers -> kohya (the default from a diffusers file) -> diffusers:
 * each merges to exactly the original's weights (alpha = scale · r comes
 * back as the same scale). */
TEST(convert_lora_diffusers_kohya) {
    const char *orig = test_data("tiny-sd-lora/pytorch_lora_weights.safetensors");
    char kohya[1024], back[1024];
    snprintf(kohya, sizeof kohya, "%s", tmp_path("kohya.safetensors"));
    snprintf(back, sizeof back, "%s", tmp_path("back.safetensors"));
    char model[1024];
    snprintf(model, sizeof model, "%s", test_data("tiny-sd"));
    REQUIRE(convert("--input", orig, "--output", kohya, "--model", model, NULL) == 0);
    CHECK(
        has_key(kohya, "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight", NULL));
    check_same_merge(model, orig, kohya, 0);
    REQUIRE(convert("--input", kohya, "--output", back, "--model", model, "--to", "peft", NULL) == 0);
    CHECK(has_key(back, "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight", NULL));
    check_same_merge(model, orig, back, 0);
}

/* kohya with text-encoder, LoCon (3×3) and linear-on-1×1-conv modules ->
 * diffusers; PEFT with an alpha_pattern -> kohya (per-module alpha). */
TEST(convert_lora_te_conv_and_alpha_pattern) {
    char model[1024], out[1024];
    snprintf(model, sizeof model, "%s", test_data("tiny-sd"));
    const char *te_conv = test_data("lora/kohya_te_conv.safetensors");
    snprintf(out, sizeof out, "%s", tmp_path("te_conv.safetensors"));
    REQUIRE(convert("--input", te_conv, "--output", out, "--model", model, NULL) == 0);
    CHECK(
        has_key(out, "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight", NULL));
    check_same_merge(model, te_conv, out, 0);
    /* PEFT's rank_pattern/alpha_pattern become kohya's per-module alpha */
    const char *peft = test_data("lora/peft.safetensors");
    snprintf(out, sizeof out, "%s", tmp_path("peft_kohya.safetensors"));
    REQUIRE(convert("--input", peft, "--output", out, "--model", model, "--to", "kohya", NULL) == 0);
    check_same_merge(model, peft, out, 0);
}

/* SDXL: kohya with SGM UNet names and two text encoders -> diffusers ->
 * kohya (SGM names again). */
TEST(convert_lora_sdxl) {
    char model[1024], d[1024], k[1024];
    snprintf(model, sizeof model, "%s", test_data("tiny-sdxl"));
    const char *orig = test_data("lora/sdxl.safetensors");
    snprintf(d, sizeof d, "%s", tmp_path("sdxl_diffusers.safetensors"));
    snprintf(k, sizeof k, "%s", tmp_path("sdxl_kohya.safetensors"));
    REQUIRE(convert("--input", orig, "--output", d, "--model", model, NULL) == 0);
    CHECK(has_key(d, "text_encoder_2.text_model.encoder.layers.1.self_attn.v_proj.lora_linear_layer.up.weight", NULL));
    check_same_merge(model, orig, d, 0);
    REQUIRE(convert("--input", d, "--output", k, "--model", model, "--dtype", "bf16", NULL) == 0);
    sdc_dtype dt = SDC_F32;
    CHECK(has_key(k, "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q.lora_up.weight", &dt));
    CHECK_EQ_INT(dt, SDC_BF16);
    CHECK(has_key(k, "lora_te2_text_model_encoder_layers_1_self_attn_v_proj.alpha", NULL));
    /* bf16 keeps 8 significant bits: each factor moves by ≤ 2^-9 relative,
     * a product u·d by ≤ 2^-8 |u·d|; this file has |up|, |down| < 0.36, rank
     * 2, scale ≤ 1: |ΔW error| ≤ 2 · 0.36² · 2^-8 ≈ 1.0e-3 (seen: 2.8e-4) */
    check_same_merge(model, orig, k, 1.0e-3);
}

/* LyCORIS Tucker -> kohya as the plain conv LoRA down' = mid∘down: the
 * product is summed in another order than the merge's, so allow float
 * rounding (|W|, |ΔW| < 2: 1e-6, as test_lora.c). */
TEST(convert_lora_tucker) {
    char model[1024], out[1024];
    snprintf(model, sizeof model, "%s", test_data("tiny-sd"));
    const char *orig = test_data("lora/tucker.safetensors");
    snprintf(out, sizeof out, "%s", tmp_path("tucker_kohya.safetensors"));
    REQUIRE(convert("--input", orig, "--output", out, "--model", model, "--to", "kohya", NULL) == 0);
    CHECK(!has_key(out, "lora_mid", NULL));
    check_same_merge(model, orig, out, 1e-6);
}

/* ---- refusals
 * ----------------------------------------------------------------------------------------------------------- */

/* The command fails with rc and its one-line message contains needle. */
#define EXPECT_FAIL(rc_want, needle, ...)                                                                              \
    do {                                                                                                               \
        cli_quiet = 1;                                                                                                 \
        int rc_ = convert(__VA_ARGS__, NULL);                                                                          \
        cli_quiet = 0;                                                                                                 \
        CHECK_MSG(rc_ == (rc_want), "exit %d, expected %d (%s)", rc_, rc_want, cli_last_error());                      \
        CHECK_MSG(strstr(cli_last_error(), needle) != NULL, "message lacks \"%s\": %s", needle, cli_last_error());     \
    } while (0)

static long file_size_of(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

TEST(convert_refuses_overwrite) {
    char file[1024], folder[1024], other[1024], marker[1100];
    snprintf(file, sizeof file, "%s", tmp_path("exists.safetensors"));
    snprintf(folder, sizeof folder, "%s", tmp_path("exists"));
    snprintf(other, sizeof other, "%s", tmp_path("not_a_model"));
    sdc_error err;
    REQUIRE_OK(sdc_write_file_atomic(file, "keep", 4, &err), &err);
    const char *src = test_data("tiny-sd");
    EXPECT_FAIL(1, file, "--input", src, "--output", file);
    CHECK(strstr(cli_last_error(), "--overwrite") != NULL);
    CHECK_EQ_INT(file_size_of(file), 4); /* untouched */
    REQUIRE(convert("--input", src, "--output", file, "--overwrite", NULL) == 0);
    CHECK(file_size_of(file) > 1000);
    /* a folder: refused, then replaced as a whole with --overwrite */
    REQUIRE(convert("--input", src, "--output", folder, NULL) == 0);
    snprintf(marker, sizeof marker, "%s/stale.txt", folder);
    REQUIRE_OK(sdc_write_file_atomic(marker, "x", 1, &err), &err);
    EXPECT_FAIL(1, folder, "--input", src, "--output", folder);
    CHECK(sdc_path_exists(marker));
    REQUIRE(convert("--input", src, "--output", folder, "--overwrite", NULL) == 0);
    CHECK(!sdc_path_exists(marker));
    check_same_weights(src, folder, SDC_F32); /* fp32 in: fp32 out by default */
    /* a folder that is no model is never replaced */
    snprintf(marker, sizeof marker, "%s/notes.txt", other);
    REQUIRE_OK(sdc_mkdirs(other, &err), &err);
    REQUIRE_OK(sdc_write_file_atomic(marker, "x", 1, &err), &err);
    EXPECT_FAIL(1, "not a diffusers model folder", "--input", src, "--output", other, "--overwrite");
    CHECK(sdc_path_exists(marker));
    /* a LoRA output too */
    EXPECT_FAIL(1, file, "--input", test_data("tiny-sd-lora/pytorch_lora_weights.safetensors"), "--output", file,
                "--model", src);
}

TEST(convert_usage_errors) {
    const char *lora = test_data("tiny-sd-lora/pytorch_lora_weights.safetensors");
    const char *out = tmp_path("out.safetensors");
    char model[1024];
    snprintf(model, sizeof model, "%s", test_data("tiny-sd"));
    EXPECT_FAIL(2, "--model PATH", "--input", lora, "--output", out);
    CHECK(!sdc_path_exists(out));
    EXPECT_FAIL(2, "single is for models", "--input", lora, "--output", out, "--model", model, "--to", "single");
    EXPECT_FAIL(2, "kohya and peft are for LoRAs", "--input", model, "--output", out, "--to", "kohya");
    EXPECT_FAIL(2, "--dtype fp8", "--input", model, "--output", out, "--dtype", "fp8");
    EXPECT_FAIL(2, "--to onnx", "--input", model, "--output", out, "--to", "onnx");
    EXPECT_FAIL(2, "a diffusers model is a folder", "--input", model, "--output", out, "--to", "diffusers");
    EXPECT_FAIL(2, ".safetensors", "--input", model, "--output", tmp_path("model.ckpt"), "--to", "single");
    EXPECT_FAIL(2, "--input PATH", "--output", out);
    EXPECT_FAIL(1, "no such file", "--input", tmp_path("missing"), "--output", out);
    EXPECT_FAIL(2, "unknown option", "--input", model, "--output", out, "--bogus");
    /* a LoRA for another model: its kohya modules place nowhere */
    EXPECT_FAIL(1, "lora_unet_input_blocks_4_1", "--input", test_data("lora/sdxl.safetensors"), "--output", out,
                "--model", model);
    CHECK(!sdc_path_exists(out));
}

/* --help lists every flag with its default. */
TEST(convert_help) {
    static char out[8192];
    CHECK_EQ_INT(run_sdc("convert --help", out, sizeof out), 0);
    static const char *const need[] = {"--input PATH",    "--output PATH",    "--model PATH",
                                       "--overwrite",     "--to FORMAT",      "--dtype T",
                                       "(default: auto)", "(default: input)", "(default: off)"};
    for (size_t i = 0; i < sizeof need / sizeof *need; i++)
        CHECK_MSG(strstr(out, need[i]) != NULL, "no \"%s\" in:\n%s", need[i], out);
    CHECK_EQ_INT(run_sdc("--help", out, sizeof out), 0);
    CHECK(strstr(out, "convert") != NULL);
}
