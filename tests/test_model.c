#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "io/model.h"
#include "io/safetensors.h"
#include "single_recipe.h"
#include "test.h"

/* A writable copy of a test model under a fresh temporary directory. */
static const char *copy_model(const char *name) {
    static char dst[1024];
    char cmd[2300];
    snprintf(dst, sizeof dst, "%s/%s", test_tmpdir(), name);
    snprintf(cmd, sizeof cmd, "cp -rL %s %s && chmod -R u+w %s", test_data(name), dst, dst);
    if (system(cmd) != 0) return NULL;
    return dst;
}

static void write_text(const char *dir, const char *rel, const char *text) {
    char *p = sdc_path_join(dir, rel);
    sdc_error err;
    if (sdc_write_file_atomic(p, text, strlen(text), &err) != SDC_OK) sdc_test_fail(__FILE__, __LINE__, "%s", err.msg);
    free(p);
}

/* Opening path must fail with code and a message naming `names` and containing `needle`. */
static void expect_open_error(const char *path, const char *variant, sdc_status code, const char *names, const char *needle) {
    sdc_model m;
    sdc_error err = {0};
    sdc_model_options opt = {.variant = variant};
    sdc_status s = sdc_model_open(path, &opt, &m, &err);
    CHECK_MSG(s == code, "%s: status %d (%s), expected %d", path, s, err.msg, code);
    CHECK_MSG(strstr(err.msg, names) != NULL, "message does not name %s: %s", names, err.msg);
    CHECK_MSG(strstr(err.msg, needle) != NULL, "message lacks \"%s\": %s", needle, err.msg);
    if (s == SDC_OK) sdc_model_close(&m);
}

TEST(model_open_tiny_sd) {
    sdc_model m;
    sdc_error err;
    REQUIRE_OK(sdc_model_open(test_data("tiny-sd"), NULL, &m, &err), &err);
    CHECK(m.family == SDC_FAMILY_SD1);
    CHECK_STR(m.pipeline_class, "StableDiffusionPipeline");
    CHECK_EQ_INT(m.ncomps, 5);
    const sdc_component *u = sdc_model_component(&m, "unet");
    REQUIRE(u && u->config);
    CHECK_STR(u->class_name, "UNet2DConditionModel");
    CHECK_EQ_INT(u->nfiles, 1);
    CHECK(u->dtypes == (1u << SDC_F32));
    /* text encoder keys gain transformers' "text_model." */
    CHECK(sdc_model_weight(&m, "text_encoder", "text_model.embeddings.token_embedding.weight") != NULL);
    CHECK(sdc_model_weight(&m, "unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight") != NULL);
    CHECK(sdc_model_weight(&m, "vae", "decoder.conv_out.weight") != NULL);
    CHECK(sdc_model_component(&m, "tokenizer")->config != NULL);
    int64_t sum = 0;
    for (int i = 0; i < m.ncomps; i++) sum += m.comps[i].params;
    CHECK_EQ_INT(sum, sdc_weights_param_count(&m.weights, ""));
    sdc_model_close(&m);
}

TEST(model_open_tiny_sdxl) {
    sdc_model m;
    sdc_error err;
    REQUIRE_OK(sdc_model_open(test_data("tiny-sdxl"), NULL, &m, &err), &err);
    CHECK(m.family == SDC_FAMILY_SDXL);
    CHECK_EQ_INT(m.ncomps, 7);
    const sdc_weight *p = sdc_model_weight(&m, "text_encoder_2", "text_projection.weight");
    REQUIRE(p);
    CHECK(p->dtype == SDC_F16);
    CHECK(sdc_model_weight(&m, "unet", "add_embedding.linear_1.weight") != NULL);
    sdc_model_close(&m);
    /* configs only: no tensors read */
    sdc_model_options opt = {.configs_only = 1};
    REQUIRE_OK(sdc_model_open(test_data("tiny-sdxl"), &opt, &m, &err), &err);
    CHECK_EQ_INT(m.weights.count, 0);
    CHECK(m.family == SDC_FAMILY_SDXL);
    sdc_model_close(&m);
}

TEST(model_family_from_configs) {
    cJSON *unet = cJSON_Parse("{\"addition_embed_type\": \"text_time\"}");
    cJSON *te_gelu = cJSON_Parse("{\"hidden_act\": \"gelu\"}");
    cJSON *te_quick = cJSON_Parse("{\"hidden_act\": \"quick_gelu\"}");
    cJSON *lin = cJSON_Parse("{\"use_linear_projection\": true}");
    CHECK(sdc_family_from_configs(NULL, unet, te_quick) == SDC_FAMILY_SDXL);
    CHECK(sdc_family_from_configs("StableDiffusionXLPipeline", NULL, NULL) == SDC_FAMILY_SDXL);
    CHECK(sdc_family_from_configs("StableDiffusionPipeline", lin, te_gelu) == SDC_FAMILY_SD2);
    CHECK(sdc_family_from_configs("StableDiffusionPipeline", lin, te_quick) == SDC_FAMILY_SD1);
    CHECK(sdc_family_from_configs(NULL, lin, NULL) == SDC_FAMILY_SD2);
    CHECK(sdc_family_from_configs(NULL, NULL, NULL) == SDC_FAMILY_UNKNOWN);
    cJSON_Delete(unet);
    cJSON_Delete(te_gelu);
    cJSON_Delete(te_quick);
    cJSON_Delete(lin);
}

TEST(model_variants) {
    const char *dir = copy_model("tiny-sd");
    REQUIRE(dir);
    char a[1200], b[1200];
    snprintf(a, sizeof a, "%s/unet/diffusion_pytorch_model.safetensors", dir);
    snprintf(b, sizeof b, "%s/unet/diffusion_pytorch_model.fp16.safetensors", dir);
    REQUIRE(rename(a, b) == 0);
    /* only the fp16 variant there: taken, with a note */
    sdc_model m;
    sdc_error err;
    REQUIRE_OK(sdc_model_open(dir, NULL, &m, &err), &err);
    CHECK_EQ_INT(m.nnotes, 1);
    CHECK(m.nnotes && strstr(m.notes[0], "fp16") != NULL);
    CHECK(sdc_model_weight(&m, "unet", "conv_in.weight") != NULL);
    sdc_model_close(&m);
    /* asking for a variant that the other components lack is an error naming the folder */
    expect_open_error(dir, "fp16", SDC_ENOTFOUND, "text_encoder", "no \"fp16\" variant");
    expect_open_error(dir, "bf16", SDC_ENOTFOUND, "/", "variant");
}

TEST(model_bad_folders) {
    const char *dir = copy_model("tiny-sd");
    REQUIRE(dir);
    char cmd[1200];
    /* a component folder listed in model_index.json is missing */
    snprintf(cmd, sizeof cmd, "rm -rf %s/vae", dir);
    REQUIRE(system(cmd) == 0);
    expect_open_error(dir, NULL, SDC_ENOTFOUND, "/vae", "missing component folder");

    dir = copy_model("tiny-sd");
    write_text(dir, "model_index.json", "{\"unet\": [\"diffusers\", \"UNet2DConditionModel\"],, }");
    expect_open_error(dir, NULL, SDC_EFORMAT, "model_index.json", "invalid JSON near line 1");
    write_text(dir, "model_index.json", "{\"unet\": \"UNet2DConditionModel\"}");
    expect_open_error(dir, NULL, SDC_EFORMAT, "model_index.json", "no components");
    write_text(dir, "model_index.json", "{\"unet\": [\"diffusers\"]}");
    expect_open_error(dir, NULL, SDC_EFORMAT, "model_index.json", "[library, class]");
    write_text(dir, "model_index.json", "{\"../etc\": [\"diffusers\", \"UNet2DConditionModel\"]}");
    expect_open_error(dir, NULL, SDC_EFORMAT, "model_index.json", "not a folder name");
    write_text(dir, "model_index.json", "[]");
    expect_open_error(dir, NULL, SDC_EFORMAT, "model_index.json", "JSON object");

    /* a malformed component config, and a missing one */
    dir = copy_model("tiny-sd");
    write_text(dir, "unet/config.json", "{\"in_channels\": 4\n\"out_channels\": 4}");
    expect_open_error(dir, NULL, SDC_EFORMAT, "unet/config.json", "line 2");
    snprintf(cmd, sizeof cmd, "rm %s/unet/config.json", dir);
    REQUIRE(system(cmd) == 0);
    expect_open_error(dir, NULL, SDC_ENOTFOUND, "unet/config.json", "missing");

    /* weights missing; a .bin that is not a PyTorch zip is reported by its path */
    dir = copy_model("tiny-sd");
    snprintf(cmd, sizeof cmd, "mv %s/vae/diffusion_pytorch_model.safetensors %s/vae/diffusion_pytorch_model.bin", dir, dir);
    REQUIRE(system(cmd) == 0);
    expect_open_error(dir, NULL, SDC_EFORMAT, "vae/diffusion_pytorch_model.bin", "");
    snprintf(cmd, sizeof cmd, "rm %s/vae/diffusion_pytorch_model.bin", dir);
    REQUIRE(system(cmd) == 0);
    expect_open_error(dir, NULL, SDC_ENOTFOUND, "/vae", "no weights found");

    /* a corrupt weight file is reported by its path */
    dir = copy_model("tiny-sd");
    write_text(dir, "unet/diffusion_pytorch_model.safetensors", "\x10\0\0\0\0\0\0\0{\"a\": 1}");
    expect_open_error(dir, NULL, SDC_EFORMAT, "unet/diffusion_pytorch_model.safetensors", "");

    /* not a model at all */
    expect_open_error(test_tmpdir(), NULL, SDC_ENOTFOUND, "sdc-tests", "no model_index.json");
    expect_open_error(test_data("tiny-sd/unet"), NULL, SDC_ENOTFOUND, "tiny-sd/unet", "one component's folder");
    expect_open_error("tests/data/nope", NULL, SDC_ENOTFOUND, "tests/data/nope", "no such file");
}

TEST(cli_info_reference_packs) {
    static char out[65536];
    CHECK_EQ_INT(run_sdc("info tests/data/tiny-sd", out, sizeof out), 0);
    CHECK(strstr(out, "family:     SD 1.x") != NULL);
    CHECK(strstr(out, "no problems found") != NULL);
    CHECK(strstr(out, "3.70 M parameters") != NULL);
    CHECK_EQ_INT(run_sdc("info tests/data/tiny-sdxl --keys", out, sizeof out), 0);
    CHECK(strstr(out, "family:     SDXL") != NULL);
    CHECK(strstr(out, "text_encoder_2.text_projection.weight") != NULL);
    CHECK(strstr(out, "F16") != NULL);
    CHECK(strstr(out, "no problems found") != NULL);
}

TEST(cli_info_reports_odd_tensors) {
    const char *dir = copy_model("tiny-sd");
    REQUIRE(dir);
    /* rewrite the text encoder without one tensor and with a stray one */
    char *p = sdc_path_join(dir, "text_encoder/model.safetensors");
    sdc_weights w;
    sdc_weights_init(&w);
    sdc_error err;
    REQUIRE_OK(sdc_safetensors_read(p, &w, &err), &err);
    sdc_st_tensor *t = calloc(w.count + 1, sizeof *t);
    REQUIRE(t);
    size_t n = 0;
    for (size_t i = 0; i < w.count; i++) {
        if (strcmp(w.items[i].name, "encoder.layers.0.mlp.fc1.bias") == 0) continue;
        t[n++] = (sdc_st_tensor){w.items[i].name, w.items[i].dtype, w.items[i].ndim, w.items[i].shape, w.items[i].data};
    }
    float stray = 1;
    int64_t one = 1;
    t[n++] = (sdc_st_tensor){"encoder.layers.0.stray", SDC_F32, 1, &one, &stray};
    REQUIRE_OK(sdc_safetensors_write(p, t, n, NULL, 0, &err), &err);
    sdc_weights_free(&w);
    free(t);
    free(p);
    static char out[65536], args[1200];
    snprintf(args, sizeof args, "info %s", dir);
    CHECK_EQ_INT(run_sdc(args, out, sizeof out), 0);
    CHECK(strstr(out, "missing tensor text_model.encoder.layers.0.mlp.fc1.bias") != NULL);
    CHECK(strstr(out, "unexpected tensor text_model.encoder.layers.0.stray") != NULL);
    CHECK(strstr(out, "no problems found") == NULL);
    /* a config that disagrees with the tensors */
    write_text(dir, "unet/config.json", "{\"block_out_channels\": [64, 64], \"in_channels\": 4, \"cross_attention_dim\": 32}");
    CHECK_EQ_INT(run_sdc(args, out, sizeof out), 0);
    CHECK(strstr(out, "conv_in.weight has shape [32, 4, 3, 3], the config implies [64, 4, 3, 3]") != NULL);
}

TEST(cli_errors_are_one_line) {
    static char out[8192];
    CHECK_EQ_INT(run_sdc("info tests/data/missing-model", out, sizeof out), 1);
    CHECK_STR(out, "sdc: error: tests/data/missing-model: no such file or folder\n");
    CHECK_EQ_INT(run_sdc("info tests/data/tiny-sd --variant", out, sizeof out), 2);
    CHECK(strncmp(out, "sdc: error: --variant needs a value", 35) == 0);
    CHECK_EQ_INT(run_sdc("info --bogus", out, sizeof out), 2);
    CHECK(strstr(out, "unknown option") != NULL);
    CHECK_EQ_INT(run_sdc("frobnicate", out, sizeof out), 2);
    CHECK(strstr(out, "unknown command \"frobnicate\"") != NULL);
    CHECK_EQ_INT(run_sdc("info --help", out, sizeof out), 0);
    CHECK(strstr(out, "--variant NAME") != NULL);
}

TEST(model_open_single_files) {
    sdc_model m, f;
    sdc_error err;
    REQUIRE_OK(sdc_model_open(test_single_file("tiny-sdxl"), NULL, &m, &err), &err);
    CHECK(m.single_file && m.family == SDC_FAMILY_SDXL);
    CHECK_EQ_INT(m.ncomps, 4);
    const sdc_component *u = sdc_model_component(&m, "unet");
    REQUIRE(u && u->config);
    /* the same tensor as in the folder the file was made from */
    REQUIRE_OK(sdc_model_open(test_data("tiny-sdxl"), NULL, &f, &err), &err);
    const sdc_weight *a = sdc_model_weight(&m, "unet", "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight");
    const sdc_weight *b = sdc_model_weight(&f, "unet", "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight");
    REQUIRE(a && b);
    CHECK(a->nbytes == b->nbytes && memcmp(a->data, b->data, a->nbytes) == 0);
    CHECK_EQ_INT(u->params, sdc_model_component(&f, "unet")->params);
    sdc_model_close(&f);
    sdc_model_close(&m);
    /* a CompVis .ckpt pickle goes through the same path */
    REQUIRE_OK(sdc_model_open(test_data("single/tiny-sd2.ckpt"), NULL, &m, &err), &err);
    CHECK(m.single_file && m.family == SDC_FAMILY_SD2);
    CHECK(sdc_model_weight(&m, "text_encoder", "text_model.encoder.layers.0.self_attn.v_proj.weight") != NULL);
    sdc_model_close(&m);
}

TEST(cli_info_single_files) {
    static char out[65536];
    char args[1024];
    snprintf(args, sizeof args, "info '%s'", test_single_file("tiny-sd"));
    CHECK_EQ_INT(run_sdc(args, out, sizeof out), 0);
    CHECK(strstr(out, "family:     SD 1.x") != NULL);
    CHECK(strstr(out, "single-file checkpoint") != NULL);
    CHECK(strstr(out, "problem: unknown tensor junk.tensor") != NULL);
    CHECK(strstr(out, "are ignored") != NULL);
    CHECK_EQ_INT(run_sdc("info tests/data/single/tiny-sd2.ckpt", out, sizeof out), 0);
    CHECK(strstr(out, "family:     SD 2.x") != NULL);
    CHECK(strstr(out, "no problems found") != NULL);
    CHECK_EQ_INT(run_sdc("info tests/data/tiny-sd2", out, sizeof out), 0);
    CHECK(strstr(out, "family:     SD 2.x") != NULL);
    CHECK(strstr(out, "no problems found") != NULL);
    /* a file that is not a model */
    CHECK_EQ_INT(run_sdc("info tests/data/tiny-sd-lora/pytorch_lora_weights.safetensors", out, sizeof out), 1);
    const char *want = "sdc: error: tests/data/tiny-sd-lora/pytorch_lora_weights.safetensors: ";
    CHECK(strncmp(out, want, strlen(want)) == 0);
    CHECK(strchr(out, '\n') == out + strlen(out) - 1);
}
