/* Device names, precisions and contexts (backend/device.h). */
#include <string.h>

#include "backend/cuda/cuda_runtime.h"
#include "backend/device.h"
#include "backend/ops.h"
#include "test.h"

TEST(device_names_parse) {
    sdc_error err = {0};
    sdc_device d;
    REQUIRE_OK(sdc_device_parse("cpu", &d, &err), &err);
    CHECK(d.type == SDC_CPU);
    REQUIRE_OK(sdc_device_parse("cuda", &d, &err), &err);
    CHECK(d.type == SDC_CUDA && d.index == 0);
    REQUIRE_OK(sdc_device_parse("cuda:3", &d, &err), &err);
    CHECK(d.type == SDC_CUDA && d.index == 3);
    static const char *const bad[] = {"gpu", "cuda:", "cuda:-1", "cuda:x", "cuda:1x", "cuda1", "CPU"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_MSG(sdc_device_parse(bad[i], &d, &err) == SDC_EINVAL && strstr(err.msg, bad[i]), "%s accepted", bad[i]);
    }
    char buf[16];
    CHECK_STR(sdc_device_name((sdc_device){SDC_CUDA, 2}, buf, sizeof buf), "cuda:2");
}

TEST(device_precision_is_fp32_on_the_cpu) {
    sdc_error err = {0};
    sdc_dtype t;
    sdc_device cpu = {SDC_CPU, 0}, gpu = {SDC_CUDA, 0};
    REQUIRE_OK(sdc_precision_dtype("bf16", cpu, &t, &err), &err);
    CHECK(t == SDC_F32);
    REQUIRE_OK(sdc_precision_dtype("bf16", gpu, &t, &err), &err);
    CHECK(t == SDC_BF16);
    REQUIRE_OK(sdc_precision_dtype("fp16", gpu, &t, &err), &err);
    CHECK(t == SDC_F16);
    REQUIRE_OK(sdc_precision_dtype("no", gpu, &t, &err), &err);
    CHECK(t == SDC_F32);
    CHECK(sdc_precision_dtype("fp8", gpu, &t, &err) == SDC_EINVAL && strstr(err.msg, "fp8"));
}

TEST(device_cpu_context_and_errors) {
    sdc_error err = {0};
    sdc_arena a;
    sdc_ctx c;
    REQUIRE_OK(sdc_ctx_open(&c, &a, (sdc_device){SDC_CPU, 0}, SDC_F32, 1 << 20, &err), &err);
    sdc_tensor t = sdc_ctx_new(&c, 2, 3);
    CHECK(t.dtype == SDC_F32 && t.device.type == SDC_CPU && t.data);
    sdc_ctx_close(&c);
    CHECK(c.arena == NULL);
    /* the CPU computes in fp32 only */
    CHECK(sdc_ctx_open(&c, &a, (sdc_device){SDC_CPU, 0}, SDC_BF16, 1 << 20, &err) == SDC_EUNSUPPORTED);
    /* a GPU that is not there: a clear error, whatever the build */
    if (sdc_cuda_device_count() == 0) {
        CHECK(sdc_ctx_open(&c, &a, (sdc_device){SDC_CUDA, 0}, SDC_F32, 1 << 20, &err) != SDC_OK);
        CHECK_MSG(strstr(err.msg, "cuda") != NULL, "%s", err.msg);
    } else {
        int n = sdc_cuda_device_count();
        CHECK(sdc_ctx_open(&c, &a, (sdc_device){SDC_CUDA, n}, SDC_F32, 1 << 20, &err) == SDC_EINVAL);
    }
}
