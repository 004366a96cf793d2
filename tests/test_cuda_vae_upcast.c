/* fp16 on a GPU with a VAE whose config says force_upcast (SDXL's VAE
 * overflows fp16): the VAE moves to the device in fp32 and decodes in fp32,
 * as diffusers' pipelines upcast it, while the UNet computes in fp16. */
#include <math.h>
#include <stdlib.h>

#include "backend/device.h"
#include "cuda_test_util.h"
#include "pipeline/sd_model.h"
#include "pipeline/txt2img.h"

/* One 2-step text-to-image of tiny-sd (force_upcast true) in dtype; the
 * decoded image into *img (malloc'd). */
static void run(sdc_dtype dtype, int *upcast, sdc_dtype *vae_dtype, float **img, int64_t *n) {
    sdc_error err = {0};
    sdc_sd sd;
    REQUIRE_OK(sdc_sd_load("tests/data/tiny-sd", &(sdc_sd_load_opts){0}, &sd, &err), &err);
    sdc_arena arena;
    sdc_ctx c;
    REQUIRE_OK(sdc_ctx_open(&c, &arena, (sdc_device){SDC_CUDA, 0}, dtype, 256u << 20, &err), &err);
    REQUIRE_OK(sdc_sd_to_device(&sd, &c, &err), &err);
    *upcast = sd.vae_upcast;
    *vae_dtype = sd.vae->params.dev_dtype;
    sdc_txt2img_opts o = {.prompt = "a red cube", .steps = 2, .guidance = 1.0, .sampler = SDC_SAMPLER_DDIM,
                          .seed = 1, .height = 32, .width = 32, .batch = 1, .decode = 1};
    sdc_txt2img_out out = {0};
    REQUIRE_OK(sdc_txt2img(&c, &sd, &o, &out, &err), &err);
    *n = out.image_shape[0] * out.image_shape[1] * out.image_shape[2] * out.image_shape[3];
    *img = out.images;
    out.images = NULL;
    sdc_txt2img_out_free(&out);
    sdc_ctx_close(&c);
    sdc_sd_free(&sd);
}

TEST(cuda_fp16_upcasts_a_force_upcast_vae) {
    CUDA_BACKEND_OR_SKIP(be);
    (void)be;
    int up16 = 0, up32 = 0;
    sdc_dtype d16, d32;
    float *a = NULL, *b = NULL;
    int64_t na = 0, nb = 0;
    run(SDC_F16, &up16, &d16, &a, &na);
    run(SDC_F32, &up32, &d32, &b, &nb);
    CHECK(up16 == 1 && d16 == SDC_F32);
    CHECK(up32 == 0 && d32 == SDC_F32);
    REQUIRE(na == nb && na > 0);
    double num = 0, den = 0;
    int finite = 1;
    for (int64_t i = 0; i < na; i++) {
        finite &= isfinite(a[i]);
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    CHECK(finite);
    /* the fp16 UNet's latents differ from fp32's at fp16 precision; the
     * decoder adds fp32 rounding only */
    CHECK_MSG(sqrt(num / den) < 2e-2, "fp16 vs fp32 image: relative difference %.3g", sqrt(num / den));
    free(a), free(b);
}
