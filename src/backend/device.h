/* Choosing where a model runs: device names ("cpu", "cuda", "cuda:1"), the
 * backend for a device, and contexts whose activation arena lives there. */
#ifndef SDC_BACKEND_DEVICE_H
#define SDC_BACKEND_DEVICE_H

#include "backend/backend.h"
#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Parses "cpu", "cuda" (= cuda:0) or "cuda:N". */
sdc_status sdc_device_parse(const char *s, sdc_device *d, sdc_error *err);
/* "cpu" / "cuda:N" into buf. */
const char *sdc_device_name(sdc_device d, char *buf, size_t cap);
/* The backend of a device, with the device selected for this process. An
 * error when sdc was built without CUDA or the device does not exist. */
sdc_status sdc_backend_open(sdc_device d, const sdc_backend **be, sdc_error *err);

/* A context on device d computing in `dtype` (F32 everywhere; BF16 or F16
 * on CUDA), with an activation arena of arena_bytes in the device's memory.
 * The arena struct is the caller's (it must outlive the context). */
sdc_status sdc_ctx_open(sdc_ctx *c, sdc_arena *arena, sdc_device d, sdc_dtype dtype, size_t arena_bytes,
                        sdc_error *err);
/* Frees the context's arena memory. */
void sdc_ctx_close(sdc_ctx *c);

/* --allow_tf32: fp32 matrix products may use TF32 (CUDA; no effect on the CPU). */
void sdc_backend_allow_tf32(const sdc_backend *be, int on);

/* --mixed_precision's values ("no", "fp16", "bf16") as the dtype models
 * compute in on that device: always F32 on the CPU. */
sdc_status sdc_precision_dtype(const char *mixed_precision, sdc_device d, sdc_dtype *dtype, sdc_error *err);

#ifdef __cplusplus
}
#endif

#endif
