/* UNet2DConditionModel against the diffusers goldens (float64 reference
 * stored as float32): SD 1.x style (conv projections, 2 levels) and SDXL
 * style (text_time conditioning, linear projections, per-block heads and
 * transformer depth, fp16 weights). */
#include <stdlib.h>

#include "backend/ops.h"
#include "io/model.h"
#include "models/unet.h"
#include "pipeline/golden.h"
#include "test.h"

/* fp32 through ~20 layers of convs/attention against an fp64 reference:
 * measured ~1e-6; 1e-4 is the bar. */
#define UNET_TOL 1e-4

static void unet_golden(const char *model_dir, const char *golden_path, double *rel) {
    sdc_error err = {0};
    sdc_model m;
    *rel = 1e9;
    REQUIRE_OK(sdc_model_open(test_data(model_dir), NULL, &m, &err), &err);
    char gpath[512];
    snprintf(gpath, sizeof gpath, "%s", test_data(golden_path));
    sdc_golden g;
    REQUIRE_OK(sdc_golden_open(gpath, &g, &err), &err);
    const sdc_component *uc = sdc_model_component(&m, "unet");
    REQUIRE(uc && uc->config);
    sdc_unet_config cfg;
    REQUIRE_OK(sdc_unet_config_parse(uc->config, "unet/config.json", &cfg, &err), &err);
    sdc_unet *u = calloc(1, sizeof *u);
    REQUIRE_OK(sdc_unet_build(u, &cfg, "unet", &err), &err);
    size_t unused = 99;
    REQUIRE_OK(sdc_params_load(&u->params, &m.weights, NULL, &unused, &err), &err);
    CHECK_EQ_INT(unused, 0);

    sdc_arena arena;
    REQUIRE_OK(sdc_arena_init(&arena, 256u << 20, &err), &err);
    sdc_ctx c = {sdc_cpu_backend(), {SDC_CPU, 0}, &arena, NULL, SDC_F32};
    int64_t sh[8], sh2[8], sh3[8];
    int nd, nd2, nd3;
    float *sample, *ehs, *ref, *te = NULL;
    double *ts, *tids = NULL;
    REQUIRE_OK(sdc_golden_f32(&g, "unet/in/sample", &sample, sh, &nd, &err), &err);
    REQUIRE_OK(sdc_golden_f32(&g, "unet/in/encoder_hidden_states", &ehs, sh2, &nd2, &err), &err);
    REQUIRE_OK(sdc_golden_f64(&g, "unet/in/timestep", &ts, sh3, &nd3, &err), &err);
    REQUIRE_OK(sdc_golden_f32(&g, "unet/out/sample", &ref, sh3, &nd3, &err), &err);
    sdc_tensor x = sdc_op_upload(&c, NULL, nd, sh, sample);
    sdc_tensor ctx = sdc_op_upload(&c, NULL, nd2, sh2, ehs);
    sdc_unet_cond cond = {.context = &ctx, .timesteps = ts};
    sdc_tensor tet;
    if (cfg.text_time) {
        REQUIRE_OK(sdc_golden_f32(&g, "unet/in/text_embeds", &te, sh2, &nd2, &err), &err);
        tet = sdc_op_upload(&c, NULL, nd2, sh2, te);
        REQUIRE_OK(sdc_golden_f64(&g, "unet/in/time_ids", &tids, sh2, &nd2, &err), &err);
        cond.text_embeds = &tet;
        cond.time_ids = tids;
        cond.n_time_ids = sh2[1];
    }
    sdc_tensor y = sdc_unet_forward(&c, NULL, u, &x, &cond);
    size_t n = (size_t)sdc_tensor_numel(&y);
    float *out = malloc(n * sizeof *out);
    sdc_op_download(&c, out, &y);
    *rel = sdc_rel_err(out, ref, n);
    if (getenv("SDC_TEST_VERBOSE")) fprintf(stderr, "  %s: unet rel err %.3g\n", model_dir, *rel);
    free(out);
    free(sample), free(ehs), free(ref), free(ts), free(te), free(tids);
    sdc_arena_free(&arena);
    sdc_unet_free(u);
    free(u);
    sdc_golden_close(&g);
    sdc_model_close(&m);
}

TEST(unet_sd_matches_diffusers) {
    double rel;
    unet_golden("tiny-sd", "tiny-sd/golden.safetensors", &rel);
    CHECK_MSG(rel <= UNET_TOL, "relative error %.3g > %g", rel, UNET_TOL);
}

TEST(unet_sdxl_matches_diffusers) {
    double rel;
    unet_golden("tiny-sdxl", "tiny-sdxl/golden.safetensors", &rel);
    CHECK_MSG(rel <= UNET_TOL, "relative error %.3g > %g", rel, UNET_TOL);
}

TEST(unet_config_refuses_unsupported) {
    sdc_error err = {0};
    sdc_unet_config cfg;
    cJSON *j = cJSON_Parse("{\"class_embed_type\": \"timestep\"}");
    CHECK(sdc_unet_config_parse(j, "unet/config.json", &cfg, &err) == SDC_EUNSUPPORTED);
    CHECK(strstr(err.msg, "class_embed_type") != NULL);
    cJSON_Delete(j);
    j = cJSON_Parse("{\"down_block_types\": [\"CrossAttnDownBlock2D\", \"DownBlock2D\"], "
                    "\"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\"], \"block_out_channels\": [32, 48], "
                    "\"norm_num_groups\": 32}");
    CHECK(sdc_unet_config_parse(j, "unet/config.json", &cfg, &err) == SDC_EFORMAT);
    CHECK(strstr(err.msg, "block_out_channels[1]") != NULL);
    cJSON_Delete(j);
}
