/* The sampling loop on a GPU replays one captured UNet call per step (CUDA
 * graphs): the same kernels on the same buffers, so the latents are bit for
 * bit those of the eager loop (SDC_CUDA_GRAPHS=0), for SD and SDXL (whose
 * size conditioning goes in as a fixed buffer), with and without CFG. */
#include <stdlib.h>
#include <string.h>

#include "backend/device.h"
#include "cuda_test_util.h"
#include "pipeline/sd_model.h"
#include "pipeline/txt2img.h"

static float *latents(const char *model, double guidance, int graphs, size_t *n) {
    sdc_error err = {0};
    setenv("SDC_CUDA_GRAPHS", graphs ? "1" : "0", 1);
    sdc_sd sd;
    sdc_arena arena;
    sdc_ctx c;
    float *x = NULL;
    *n = 0;
    if (sdc_sd_load(model, &(sdc_sd_load_opts){.skip_vae = 1}, &sd, &err) != SDC_OK) return NULL;
    if (sdc_ctx_open(&c, &arena, (sdc_device){SDC_CUDA, 0}, SDC_F16, 256u << 20, &err) == SDC_OK) {
        sdc_txt2img_opts o = {.prompt = "a red cube", .steps = 6, .guidance = guidance, .sampler = SDC_SAMPLER_EULER,
                              .seed = 2, .height = 32, .width = 32, .batch = 2};
        sdc_txt2img_out out = {0};
        if (sdc_sd_to_device(&sd, &c, &err) == SDC_OK && sdc_txt2img(&c, &sd, &o, &out, &err) == SDC_OK) {
            *n = (size_t)(out.latent_shape[0] * out.latent_shape[1] * out.latent_shape[2] * out.latent_shape[3]);
            x = out.latents;
            out.latents = NULL;
        }
        sdc_txt2img_out_free(&out);
        sdc_ctx_close(&c);
    }
    sdc_sd_free(&sd);
    unsetenv("SDC_CUDA_GRAPHS");
    return x;
}

TEST(cuda_graph_sampling_equals_eager) {
    CUDA_BACKEND_OR_SKIP(be);
    (void)be;
    const char *models[] = {"tests/data/tiny-sd", "tests/data/tiny-sdxl"};
    for (int m = 0; m < 2; m++)
        for (int g = 0; g < 2; g++) {
            double guidance = g ? 5.0 : 1.0;
            size_t na, nb;
            float *a = latents(models[m], guidance, 1, &na), *b = latents(models[m], guidance, 0, &nb);
            REQUIRE_MSG(a && b && na == nb && na > 0, "%s: a run failed", models[m]);
            CHECK_MSG(memcmp(a, b, na * sizeof *a) == 0, "%s guidance %g: graph and eager latents differ", models[m],
                      guidance);
            free(a), free(b);
        }
}
