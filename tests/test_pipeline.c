/* The whole forward half against the reference packs through `sdc check`'s
 * library: text encoders, UNet, VAE, scheduler tables and the 4-step
 * text-to-image pipelines of every sampler in each golden file. */
#include <stdlib.h>

#include "backend/ops.h"
#include "pipeline/check.h"
#include "test.h"

/* Everything is fp32 against fp64 references; the bar is 1e-4.
 * Pipelines chain 4 (PNDM with PRK: 13) UNet calls with guidance 7.5, which
 * amplifies rounding; measured errors stay around 1e-6. */
#define TOL 1e-4

static void report(void *ctx, const char *key, double e, int ok) {
    (void)ctx;
    if (!ok || getenv("SDC_TEST_VERBOSE")) fprintf(stderr, "    %-44s %.3e %s\n", key, e, ok ? "" : "FAIL");
}

static void check_pack(const char *model, const char *golden, const char *lora, const char *only, int min_checked) {
    sdc_error err = {0};
    sdc_arena arena;
    REQUIRE_OK(sdc_arena_init(&arena, 512u << 20, &err), &err);
    sdc_ctx c = {sdc_cpu_backend(), {SDC_CPU, 0}, &arena, NULL, SDC_F32};
    char mpath[512], gpath[512], lpath[512];
    snprintf(mpath, sizeof mpath, "%s", test_data(model));
    snprintf(gpath, sizeof gpath, "%s", test_data(golden));
    if (lora) snprintf(lpath, sizeof lpath, "%s", test_data(lora));
    sdc_check_opts o = {.tolerance = TOL, .lora = lora ? lpath : NULL, .only = only, .report = report};
    sdc_check_summary sum;
    sdc_status st = sdc_check_run(&c, mpath, gpath, &o, &sum, &err);
    sdc_arena_free(&arena);
    REQUIRE_OK(st, &err);
    CHECK_MSG(sum.failed == 0, "%d of %d outputs over %g (worst %.3g at %s)", sum.failed, sum.checked, TOL, sum.worst,
              sum.worst_key);
    CHECK_MSG(sum.checked >= min_checked, "only %d outputs checked", sum.checked);
}

TEST(check_tiny_sd_components) { check_pack("tiny-sd", "tiny-sd/golden.safetensors", NULL, "text_encoder", 4); }
TEST(check_tiny_sd_unet_vae) {
    check_pack("tiny-sd", "tiny-sd/golden.safetensors", NULL, "unet", 1);
    check_pack("tiny-sd", "tiny-sd/golden.safetensors", NULL, "vae", 3);
}
TEST(check_tiny_sd_scheduler) { check_pack("tiny-sd", "tiny-sd/golden.safetensors", NULL, "scheduler", 13); }
TEST(check_tiny_sd_pipelines) {
    check_pack("tiny-sd", "tiny-sd/golden.safetensors", "tiny-sd-lora/pytorch_lora_weights.safetensors", "pipeline", 7);
}
TEST(check_tiny_sdxl_all) { check_pack("tiny-sdxl", "tiny-sdxl/golden.safetensors", NULL, NULL, 29); }

/* The project's own goldens (tools/make_goldens.py): an SD 2.x-style model
 * (v_prediction DDIM, linear projections, per-block heads, upcast
 * attention, 3 levels, 64×96 pixels, fp16 weights) with every sampler,
 * including DDIM eta > 0 and Euler ancestral with injected noise. */
TEST(check_tiny_sd2v_all) { check_pack("tiny-sd2v", "tiny-sd2v/golden.safetensors", NULL, NULL, 40); }
/* Euler ancestral, Karras variants, DDIM eta and LMS on the shared packs' models. */
TEST(check_tiny_sd_more_samplers) {
    check_pack("tiny-sd", "tiny-sd/golden_samplers.safetensors", NULL, NULL, 6);
}
TEST(check_tiny_sdxl_more_samplers) {
    check_pack("tiny-sdxl", "tiny-sdxl/golden_samplers.safetensors", NULL, NULL, 3);
}
