// Shared by the CUDA backend's .cu files: error checks, the process's
// stream and library handles, a reusable workspace, and dtype helpers.
//
// One process drives one GPU (multi-GPU runs are one process per GPU, over
// MPI + NCCL), so the current device, the stream and the handles are
// process-wide. Every op is enqueued on sdc_cuda_stream(); nothing in an op
// synchronizes except a download to the host.
//
// Errors: a failing CUDA, cuBLAS or cuDNN call inside an op is not a user
// input error (shapes are checked by backend/ops.c and memory is planned),
// so it is fatal: one line naming the call, file and line, then abort.
#ifndef SDC_BACKEND_CUDA_COMMON_CUH
#define SDC_BACKEND_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/backend.h"

#ifdef SDC_WITH_CUDNN
#include <cudnn.h>
#endif

[[noreturn]] void sdc_cuda_fatal(const char *what, const char *msg, const char *file, int line);

#define CUDA_CHECK(call)                                                                   \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess) sdc_cuda_fatal(#call, cudaGetErrorString(e_), __FILE__, __LINE__); \
    } while (0)
// After every kernel launch: launch-configuration errors surface here, and
// with SDC_CUDA_SYNC=1 in the environment every launch is synchronized, so
// an asynchronous fault is reported at the kernel that caused it.
#define CUDA_LAUNCH_CHECK() sdc_cuda_after_launch(__FILE__, __LINE__)
void sdc_cuda_after_launch(const char *file, int line);
#define CUBLAS_CHECK(call)                                                                               \
    do {                                                                                                 \
        cublasStatus_t s_ = (call);                                                                      \
        if (s_ != CUBLAS_STATUS_SUCCESS) sdc_cuda_fatal(#call, cublasLtGetStatusString(s_), __FILE__, __LINE__); \
    } while (0)

// The process's stream (created on first use, non-blocking).
cudaStream_t sdc_cuda_stream(void);
cublasLtHandle_t sdc_cuda_cublaslt(void);
#ifdef SDC_WITH_CUDNN
// The process's cuDNN handle, bound to sdc_cuda_stream() (created on first
// use; convolutions and the attention forward share it).
cudnnHandle_t sdc_cuda_cudnn(void);
#endif
// A device scratch buffer of at least nbytes, kept and grown across calls
// (slot picks one of SDC_CUDA_WS_SLOTS independent buffers). Growing frees
// the old buffer after a stream sync, so it is for library workspaces and
// op temporaries whose use ends within the op (stream order keeps it safe).
// Sizes settle after the first step: no allocation in the steady state.
#define SDC_CUDA_WS_SLOTS 4
void *sdc_cuda_workspace(int slot, size_t nbytes);
// Nonzero when TF32 may be used for fp32 matrix products (--allow_tf32).
extern int sdc_cuda_allow_tf32;

// Element access in any of the activation dtypes, math in fp32.
__device__ __forceinline__ float sdc_ld(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float sdc_ld(const __nv_bfloat16 *p, size_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ float sdc_ld(const __half *p, size_t i) { return __half2float(p[i]); }
__device__ __forceinline__ void sdc_st(float *p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void sdc_st(__nv_bfloat16 *p, size_t i, float v) { p[i] = __float2bfloat16(v); }
__device__ __forceinline__ void sdc_st(__half *p, size_t i, float v) { p[i] = __float2half(v); }

// Calls F.template operator()<T>() with T the C++ type of an F32/BF16/F16
// tensor: one templated kernel per op, instantiated for each dtype.
#define SDC_DISPATCH_FLOAT(dtype, T, ...)                                         \
    do {                                                                          \
        switch (dtype) {                                                          \
        case SDC_F32: { typedef float T; __VA_ARGS__; } break;                    \
        case SDC_BF16: { typedef __nv_bfloat16 T; __VA_ARGS__; } break;           \
        case SDC_F16: { typedef __half T; __VA_ARGS__; } break;                   \
        default: sdc_cuda_fatal("dtype dispatch", "not F32/BF16/F16", __FILE__, __LINE__); \
        }                                                                         \
    } while (0)

// Grid size for a grid-stride loop over n elements with `threads` per block.
static inline unsigned sdc_cuda_blocks(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    return b > 65535u * 8 ? 65535u * 8 : (unsigned)b;
}

#endif
