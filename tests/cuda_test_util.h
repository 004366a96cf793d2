/* For tests that run an op on the CUDA backend and on the CPU backend (the
 * fp32 reference) and compare. Every such test skips on a machine without a
 * GPU or a build without CUDA; on the GPU machine, tools/device-check.sh runs
 * them. */
#ifndef SDC_TESTS_CUDA_TEST_UTIL_H
#define SDC_TESTS_CUDA_TEST_UTIL_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_runtime.h"
#include "core/rng.h"
#include "test.h"

/* The CUDA backend, or skip the test. */
#define CUDA_BACKEND_OR_SKIP(be)                                        \
    const sdc_backend *be = sdc_cuda_backend();                         \
    if (!be || sdc_cuda_device_count() == 0) SKIP("no CUDA device");

/* A host fp32 tensor of that shape, filled with U(−a, a) from seed (malloc'd). */
static inline sdc_tensor ct_host_rand(int ndim, const int64_t *shape, float a, uint64_t seed) {
    sdc_tensor t = sdc_tensor_make(SDC_F32, ndim, shape, NULL);
    int64_t n = sdc_tensor_numel(&t);
    float *d = malloc((size_t)(n ? n : 1) * sizeof *d);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        d[i] = a * (2.0f * (float)((s >> 40) * 0x1p-24) - 1.0f);
    }
    t.data = d;
    return t;
}
static inline sdc_tensor ct_host_zeros(int ndim, const int64_t *shape) {
    sdc_tensor t = sdc_tensor_make(SDC_F32, ndim, shape, NULL);
    t.data = calloc((size_t)(sdc_tensor_numel(&t) ? sdc_tensor_numel(&t) : 1), sizeof(float));
    return t;
}
/* A device copy of a host fp32 tensor, in dtype (F32/BF16/F16). Free with ct_dev_free. */
static inline sdc_tensor ct_to_dev(const sdc_backend *be, const sdc_tensor *h, sdc_dtype dtype) {
    sdc_tensor t = *h;
    t.dtype = dtype;
    t.device = (sdc_device){SDC_CUDA, 0};
    t.data = be->mem_alloc(sdc_tensor_nbytes(&t) ? sdc_tensor_nbytes(&t) : 1);
    be->upload(&t, h->data);
    return t;
}
/* A zeroed device tensor of that shape and dtype. */
static inline sdc_tensor ct_dev_zeros(const sdc_backend *be, int ndim, const int64_t *shape, sdc_dtype dtype) {
    sdc_tensor t = sdc_tensor_make(dtype, ndim, shape, NULL);
    t.device = (sdc_device){SDC_CUDA, 0};
    t.data = be->mem_alloc(sdc_tensor_nbytes(&t) ? sdc_tensor_nbytes(&t) : 1);
    return t;
}
static inline void ct_dev_free(const sdc_backend *be, sdc_tensor *t) {
    be->mem_free(t->data, sdc_tensor_nbytes(t) ? sdc_tensor_nbytes(t) : 1);
    t->data = NULL;
}
/* The device tensor's values as a malloc'd fp32 array. */
static inline float *ct_from_dev(const sdc_backend *be, const sdc_tensor *t) {
    float *h = malloc((size_t)(sdc_tensor_numel(t) ? sdc_tensor_numel(t) : 1) * sizeof *h);
    be->download(h, t);
    return h;
}
/* ‖a − b‖ / max(‖b‖, tiny): the relative error the goldens use. */
static inline double ct_rel_err(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return sqrt(num) / (den > 1e-30 ? sqrt(den) : 1e-15);
}
/* Tolerances for CUDA vs the CPU's fp32: fp32 math differs only in summation
 * order (and TF32 is off in tests); bf16 keeps 8 bits of mantissa, so each
 * rounded input or output contributes up to 2⁻⁹ relative. */
#define CT_TOL_F32 1e-5
#define CT_TOL_BF16 2e-2
#define CT_TOL_F16 3e-3
static inline double ct_tol(sdc_dtype d) { return d == SDC_F32 ? CT_TOL_F32 : d == SDC_BF16 ? CT_TOL_BF16 : CT_TOL_F16; }

#endif
