/* sdc generate end to end through the binary: golden latents from injected
 * initial noise, PNG parameters, batches and grids, and user errors. */
#include <stdlib.h>
#include <string.h>

#include "data/png.h"
#include "io/safetensors.h"
#include "pipeline/golden.h"
#include "test.h"

/* Writes the golden's pipeline/in/latents as a --latents file. */
static int write_init_latents(const char *path) {
    sdc_error err = {0};
    sdc_golden g;
    if (sdc_golden_open(test_data("tiny-sd/golden.safetensors"), &g, &err) != SDC_OK) return -1;
    float *d;
    int64_t shape[8];
    int nd;
    int rc = -1;
    if (sdc_golden_f32(&g, "pipeline/in/latents", &d, shape, &nd, &err) == SDC_OK) {
        sdc_st_tensor t = {"latents", SDC_F32, nd, shape, d};
        rc = sdc_safetensors_write(path, &t, 1, NULL, 0, &err) == SDC_OK ? 0 : -1;
        free(d);
    }
    sdc_golden_close(&g);
    return rc;
}

TEST(generate_reproduces_golden_latents) {
    char in[512], out[512], png[512], args[4096], log[8192];
    snprintf(in, sizeof in, "%s/in.safetensors", test_tmpdir());
    snprintf(out, sizeof out, "%s/out.safetensors", test_tmpdir());
    snprintf(png, sizeof png, "%s/img.png", test_tmpdir());
    REQUIRE(write_init_latents(in) == 0);
    snprintf(args, sizeof args,
             "generate --model tests/data/tiny-sd --prompt 'a photograph of an astronaut riding a horse' "
             "--negative-prompt '' --steps 4 --guidance-scale 7.5 --sampler ddim --seed 7 --latents %s "
             "--save-latents %s --output %s",
             in, out, png);
    int rc = run_sdc(args, log, sizeof log);
    REQUIRE_MSG(rc == 0, "sdc generate failed: %s", log);

    sdc_error err = {0};
    sdc_golden ref, got;
    REQUIRE_OK(sdc_golden_open(test_data("tiny-sd/golden.safetensors"), &ref, &err), &err);
    REQUIRE_OK(sdc_golden_open(out, &got, &err), &err);
    float *a, *b;
    int64_t sa[8], sb[8];
    int na, nb;
    REQUIRE_OK(sdc_golden_f32(&ref, "pipeline/ddim/latents", &a, sa, &na, &err), &err);
    REQUIRE_OK(sdc_golden_f32(&got, "latents", &b, sb, &nb, &err), &err);
    CHECK_EQ_INT(na, nb);
    size_t n = 1;
    for (int i = 0; i < na; i++) {
        CHECK_EQ_INT(sa[i], sb[i]);
        n *= (size_t)sa[i];
    }
    double e = sdc_rel_err(b, a, n);
    /* fp32 against the fp64 reference, as in test_pipeline.c */
    CHECK_MSG(e <= 1e-4, "latents relative error %.3g", e);
    free(a), free(b);
    sdc_golden_close(&ref), sdc_golden_close(&got);

    /* the picture carries its settings */
    uint8_t *px = NULL;
    int w = 0, h = 0;
    char *params = NULL;
    REQUIRE_OK(sdc_png_read(png, &px, &w, &h, &params, "parameters", &err), &err);
    CHECK_EQ_INT(w, 64);
    CHECK_EQ_INT(h, 64);
    REQUIRE(params != NULL);
    CHECK_MSG(strncmp(params, "a photograph of an astronaut riding a horse\nNegative prompt: \n", 62) == 0, "params: %s",
              params);
    CHECK(strstr(params, "Steps: 4, Sampler: DDIM, CFG scale: 7.5, Seed: 7, Size: 64x64, Model: tiny-sd") != NULL);
    free(px);
    free(params);
}

TEST(generate_batch_writes_images_and_grid) {
    char args[2048], log[8192], path[1024], dir[512];
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    snprintf(args, sizeof args,
             "generate --model tests/data/tiny-sd --prompt 'red cube' --steps 2 --batch 3 --seed 1 --rng torch "
             "--sampler euler_a --output %s/sub/b.png",
             dir);
    int rc = run_sdc(args, log, sizeof log);
    REQUIRE_MSG(rc == 0, "sdc generate failed: %s", log);
    const char *names[] = {"b-0.png", "b-1.png", "b-2.png", "b-grid.png"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/sub/%s", dir, names[i]);
        uint8_t *px = NULL;
        int w = 0, h = 0;
        sdc_error err = {0};
        REQUIRE_OK(sdc_png_read(path, &px, &w, &h, NULL, NULL, &err), &err);
        /* 3 images tile as 2×2 */
        CHECK_EQ_INT(w, i == 3 ? 128 : 64);
        free(px);
    }
}

TEST(generate_user_errors) {
    char log[4096];
    CHECK(run_sdc("generate --model tests/data/tiny-sd --prompt x --height 61", log, sizeof log) == 2);
    CHECK_MSG(strstr(log, "multiples of") != NULL, "%s", log);
    CHECK(run_sdc("generate --model tests/data/tiny-sd --prompt x --stpes 3", log, sizeof log) == 2);
    CHECK_MSG(strstr(log, "did you mean --steps") != NULL, "%s", log);
    CHECK(run_sdc("generate --model tests/data/tiny-sd --prompt x --sampler foo", log, sizeof log) == 2);
    CHECK_MSG(strstr(log, "euler_a") != NULL, "%s", log);
    CHECK(run_sdc("generate --model tests/data/nope --prompt x", log, sizeof log) == 1);
    CHECK_MSG(strstr(log, "tests/data/nope") != NULL, "%s", log);
    CHECK(run_sdc("generate --model tests/data/tiny-sd --prompt x --lora tests/data/tiny-sd/model_index.json", log,
                  sizeof log) == 1);
    CHECK_MSG(strstr(log, "model_index.json") != NULL, "%s", log);
}
