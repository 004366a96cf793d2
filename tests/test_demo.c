/* sdc demo's pipeline on a shortened run (--quick: 2 prompts, 1 seed, 4
 * subject images, 60 LoRA steps) with the shipped demo model: it completes,
 * writes the grid, the LoRA and the logs, and the LoRA changes what the
 * subject's prompt draws. No timing here (make demo is timed by hand). */
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/demo.h"
#include "core/fs.h"
#include "data/png.h"
#include "test.h"

TEST(demo_quick_run_learns_the_subject) {
    char model[4096];
    if (sdc_demo_find_model(model, sizeof model) != 0) SKIP("data/demo-model is not here");
    sdc_error err = {0};
    sdc_demo_opts o;
    sdc_demo_opts_default(&o);
    char out[512];
    snprintf(out, sizeof out, "%s/demo", test_tmpdir());
    o.output_dir = out;
    o.quick = 1;
    sdc_demo_result r;
    REQUIRE_OK(sdc_demo_run(&o, &r, &err), &err);
    uint8_t *px = NULL;
    int w = 0, h = 0;
    REQUIRE_OK(sdc_png_read(r.grid, &px, &w, &h, NULL, NULL, &err), &err);
    CHECK(w > 2 * 128 && h > 3 * 128); /* two columns, three rows of 128-pixel tiles and captions */
    free(px);
    char path[700];
    snprintf(path, sizeof path, "%s/pytorch_lora_weights.safetensors", out);
    CHECK(sdc_path_exists(path));
    snprintf(path, sizeof path, "%s/logs/metrics.jsonl", out);
    CHECK_EQ_INT(test_count_lines(path), 60);
    snprintf(path, sizeof path, "%s/logs/loss.png", out);
    CHECK(sdc_path_exists(path));
    snprintf(path, sizeof path, "%s/instance_images/00003.png", out);
    CHECK(sdc_path_exists(path));
    REQUIRE(r.nprompts == 2 && r.has_subject[0] && !r.has_subject[1]);
    /* The subject's prompt must change visibly: a mean change of 12 levels
     * (of 255) per channel over the image. A purple cross where the base
     * model drew a pale yellow shape moves a fifth of the pixels by 100 or
     * more (the quick run measures about 35); LoRA noise alone moves them
     * by a few. */
    CHECK_MSG(r.diff[0] > 12.0, "mean |after - before| for \"%s\": %.2f", r.prompts[0], r.diff[0]);
    /* and more than the control prompt, which the LoRA was not trained on */
    CHECK_MSG(r.diff[0] > r.diff[1], "subject %.2f vs control %.2f", r.diff[0], r.diff[1]);
}

TEST(demo_command_refuses_bad_flags_and_a_missing_model) {
    cli_quiet = 1;
    char *bad[] = {"demo", "--steps", "-3"};
    CHECK(cmd_demo(3, bad) != 0);
    char out[512];
    snprintf(out, sizeof out, "%s/x", test_tmpdir());
    char *missing[] = {"demo", "--model", "/nonexistent/sdc-demo-model", "--output_dir", out, "--quick"};
    CHECK(cmd_demo(6, missing) != 0);
    cli_quiet = 0;
}
