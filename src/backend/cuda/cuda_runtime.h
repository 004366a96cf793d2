/* The CUDA backend's entry points that host code may call whether or not
 * CUDA was compiled in. Without CUDA (cuda_none.c) they report "not built
 * with CUDA"; with it (cuda_runtime.cu) they talk to the driver. */
#ifndef SDC_BACKEND_CUDA_RUNTIME_H
#define SDC_BACKEND_CUDA_RUNTIME_H

#include <stddef.h>
#include <stdio.h>

#include "core/dtype.h"
#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 if sdc was built with CUDA. */
int sdc_cuda_compiled(void);
/* Number of usable CUDA devices (0 without CUDA, a driver, or a GPU). */
int sdc_cuda_device_count(void);
/* Makes device `index` this process's current device; an error naming the
 * device when it does not exist or cannot be used. */
sdc_status sdc_cuda_select(int index, sdc_error *err);
/* Free and total memory of the current device, in bytes; 0 on success. */
int sdc_cuda_mem_info(size_t *free_bytes, size_t *total_bytes);
/* Lets fp32 matrix products use TF32 tensor cores (off by default). */
void sdc_cuda_set_tf32(int on);
/* Build features (cuBLASLt, cuDNN, NCCL versions) and the devices found. */
void sdc_cuda_print_info(FILE *f);
/* Converts n elements of src (host memory, F16/BF16/F32) to fp32 on device
 * `device` and copies the result back to dst (host). The upload path the
 * loaders use to keep weights in their native dtype until they reach the GPU. */
sdc_status sdc_cuda_convert_to_f32(int device, float *dst, const void *src, sdc_dtype dtype, size_t n,
                                   sdc_error *err);

/* CUDA graphs of the backend's stream. Between begin and end the ops are
 * recorded, not run; end instantiates them (*exec), or returns −1 when the
 * capture failed (an op synchronised or allocated), leaving no error
 * behind. launch replays the recorded work on the stream. */
int sdc_cuda_graph_begin(void);
int sdc_cuda_graph_end(void **exec);
void sdc_cuda_graph_launch(void *exec);
void sdc_cuda_graph_free(void *exec);

#ifdef __cplusplus
}
#endif

#endif
