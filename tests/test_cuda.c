/* The CUDA backend, where a GPU is present: conversions on the device must
 * equal the CPU's bit for bit. Skipped on machines without a GPU (CI). */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_runtime.h"
#include "core/rng.h"
#include "test.h"

TEST(cuda_convert_matches_cpu) {
    if (!sdc_cuda_compiled()) SKIP("built without CUDA");
    if (sdc_cuda_device_count() == 0) SKIP("no CUDA device");
    enum { N = 100003 };
    float *src = malloc(N * sizeof *src), *cpu = malloc(N * sizeof *cpu), *gpu = malloc(N * sizeof *gpu);
    uint16_t *h = malloc(N * sizeof *h);
    REQUIRE(src && cpu && gpu && h);
    sdc_rng r;
    sdc_rng_init(&r, 5);
    sdc_rng_fill_normal(&r, src, N);
    sdc_dtype types[2] = {SDC_F16, SDC_BF16};
    sdc_error err;
    for (int k = 0; k < 2; k++) {
        sdc_convert_from_f32(h, types[k], src, N);
        sdc_convert_to_f32(cpu, h, types[k], N);
        REQUIRE_OK(sdc_cuda_convert_to_f32(0, gpu, h, types[k], N, &err), &err);
        CHECK_MSG(memcmp(cpu, gpu, N * sizeof *cpu) == 0, "%s conversion differs", sdc_dtype_name(types[k]));
    }
    REQUIRE_OK(sdc_cuda_convert_to_f32(0, gpu, src, SDC_F32, N, &err), &err);
    CHECK(memcmp(src, gpu, N * sizeof *src) == 0);
    CHECK(sdc_cuda_convert_to_f32(0, gpu, src, SDC_I64, 4, &err) == SDC_EUNSUPPORTED);
    free(src);
    free(cpu);
    free(gpu);
    free(h);
}

TEST(cuda_reports_build) {
    /* Without CUDA the entry points must say so rather than pretend. */
    if (sdc_cuda_compiled()) {
        CHECK(sdc_cuda_device_count() >= 0);
        return;
    }
    sdc_error err;
    float x;
    uint16_t h = 0;
    CHECK_EQ_INT(sdc_cuda_device_count(), 0);
    CHECK(sdc_cuda_convert_to_f32(0, &x, &h, SDC_F16, 1, &err) == SDC_EUNSUPPORTED);
    CHECK(strstr(err.msg, "without CUDA") != NULL);
}
