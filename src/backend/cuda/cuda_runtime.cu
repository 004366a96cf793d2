// CUDA runtime glue: device discovery, build information, and the dtype
// conversion kernel used when weights are uploaded in their stored dtype.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#ifdef SDC_WITH_CUDNN
#include <cudnn.h>
#endif

#include "backend/cuda/cuda_nccl.h"
#include "backend/cuda/cuda_runtime.h"

extern "C" int sdc_cuda_compiled(void) { return 1; }

extern "C" int sdc_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); // clear the sticky "no driver / no device" error
        return 0;
    }
    return n;
}

extern "C" sdc_status sdc_cuda_select(int index, sdc_error *err) {
    int n = sdc_cuda_device_count();
    if (n == 0) return sdc_fail(err, SDC_EUNSUPPORTED, "cuda:%d: no CUDA device found (driver missing or no GPU)", index);
    if (index < 0 || index >= n)
        return sdc_fail(err, SDC_EINVAL, "cuda:%d: no such device (%d found: cuda:0 to cuda:%d)", index, n, n - 1);
    cudaError_t e = cudaSetDevice(index);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return sdc_fail(err, SDC_EIO, "cuda:%d: cannot use the device: %s", index, cudaGetErrorString(e));
    }
    return SDC_OK;
}

extern "C" int sdc_cuda_mem_info(size_t *free_bytes, size_t *total_bytes) {
    if (cudaMemGetInfo(free_bytes, total_bytes) != cudaSuccess) {
        cudaGetLastError();
        *free_bytes = *total_bytes = 0;
        return -1;
    }
    return 0;
}

extern int sdc_cuda_allow_tf32;
extern "C" void sdc_cuda_set_tf32(int on) { sdc_cuda_allow_tf32 = on; }

extern "C" void sdc_cuda_print_info(FILE *f) {
    int rt = 0;
    cudaRuntimeGetVersion(&rt);
    fprintf(f, "CUDA: built with runtime %d.%d, cuBLASLt %zu", rt / 1000, (rt % 1000) / 10, cublasLtGetVersion());
#ifdef SDC_WITH_CUDNN
    fprintf(f, ", cuDNN %zu", cudnnGetVersion());
#else
    fprintf(f, ", no cuDNN");
#endif
    char from[512];
    int nv = sdc_cuda_nccl_version(from, sizeof from);
    if (nv > 0) fprintf(f, ", NCCL %d.%d.%d (%s)", nv / 10000, nv / 100 % 100, nv % 100, from);
    else fprintf(f, ", NCCL not found at run time (set SDC_NCCL_LIB for multi-GPU runs)");
    fprintf(f, "\n");
    int n = sdc_cuda_device_count();
    if (n == 0) fprintf(f, "CUDA devices: none found\n");
    for (int i = 0; i < n; i++) {
        cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
        fprintf(f, "cuda:%d: %s, sm_%d%d, %.1f GiB, %d SMs\n", i, p.name, p.major, p.minor,
                p.totalGlobalMem / 1073741824.0, p.multiProcessorCount);
    }
}

// One thread per element; grid-stride so any n fits one launch.
template <typename T> __device__ inline float to_f32(T v);
template <> __device__ inline float to_f32<__half>(__half v) { return __half2float(v); }
template <> __device__ inline float to_f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ inline float to_f32<float>(float v) { return v; }

template <typename T> __global__ void convert_to_f32_kernel(float *dst, const T *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = to_f32(src[i]);
}

#define CUDA_TRY(call, what)                                                                             \
    do {                                                                                                 \
        cudaError_t e_ = (call);                                                                         \
        if (e_ != cudaSuccess) {                                                                         \
            s = sdc_fail(err, SDC_EIO, "cuda:%d: %s failed: %s", device, what, cudaGetErrorString(e_)); \
            goto done;                                                                                   \
        }                                                                                                \
    } while (0)

extern "C" sdc_status sdc_cuda_convert_to_f32(int device, float *dst, const void *src, sdc_dtype dtype, size_t n,
                                              sdc_error *err) {
    sdc_status s = SDC_OK;
    void *dsrc = nullptr;
    float *ddst = nullptr;
    size_t esz = sdc_dtype_size(dtype);
    int blocks = (int)((n + 255) / 256 < 4096 ? (n + 255) / 256 : 4096);
    if (dtype != SDC_F16 && dtype != SDC_BF16 && dtype != SDC_F32)
        return sdc_fail(err, SDC_EUNSUPPORTED, "cuda: cannot convert %s to F32", sdc_dtype_name(dtype));
    if (n == 0) return SDC_OK;
    CUDA_TRY(cudaSetDevice(device), "cudaSetDevice");
    CUDA_TRY(cudaMalloc(&dsrc, n * esz), "cudaMalloc");
    CUDA_TRY(cudaMalloc(&ddst, n * sizeof(float)), "cudaMalloc");
    CUDA_TRY(cudaMemcpy(dsrc, src, n * esz, cudaMemcpyHostToDevice), "upload");
    if (dtype == SDC_F16) convert_to_f32_kernel<<<blocks, 256>>>(ddst, (const __half *)dsrc, n);
    else if (dtype == SDC_BF16) convert_to_f32_kernel<<<blocks, 256>>>(ddst, (const __nv_bfloat16 *)dsrc, n);
    else convert_to_f32_kernel<<<blocks, 256>>>(ddst, (const float *)dsrc, n);
    CUDA_TRY(cudaGetLastError(), "convert kernel launch");
    CUDA_TRY(cudaMemcpy(dst, ddst, n * sizeof(float), cudaMemcpyDeviceToHost), "download");
done:
    cudaFree(dsrc);
    cudaFree(ddst);
    return s;
}
