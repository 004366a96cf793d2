// The CUDA backend's op table, its device memory, and the process-wide
// state every op shares (stream, cuBLASLt handle, workspaces): see
// cuda_common.cuh for the conventions.
#include <string.h>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_ops.h"

int sdc_cuda_allow_tf32 = 0;

void sdc_cuda_fatal(const char *what, const char *msg, const char *file, int line) {
    fprintf(stderr, "sdc: fatal: CUDA: %s failed: %s (%s:%d)\n", what, msg, file, line);
    fflush(stderr);
    abort();
}

static int sync_launches(void) {
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("SDC_CUDA_SYNC");
        v = e && *e && strcmp(e, "0") != 0;
    }
    return v;
}

void sdc_cuda_after_launch(const char *file, int line) {
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess && sync_launches()) e = cudaStreamSynchronize(sdc_cuda_stream());
    if (e != cudaSuccess) sdc_cuda_fatal("kernel launch", cudaGetErrorString(e), file, line);
}

cudaStream_t sdc_cuda_stream(void) {
    static cudaStream_t s;
    if (!s) {
        // SDC_CUDA_STREAM_PRIORITY=high: the compute stream ahead of other
        // streams (NCCL's) when both have blocks waiting (for measuring)
        int lo = 0, hi = 0;
        CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
        const char *e = getenv("SDC_CUDA_STREAM_PRIORITY");
        CUDA_CHECK(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, e && !strcmp(e, "high") ? hi : lo));
    }
    return s;
}

cublasLtHandle_t sdc_cuda_cublaslt(void) {
    static cublasLtHandle_t h;
    if (!h) CUBLAS_CHECK(cublasLtCreate(&h));
    return h;
}

#ifdef SDC_WITH_CUDNN
cudnnHandle_t sdc_cuda_cudnn(void) {
    static cudnnHandle_t h;
    if (!h) {
        cudnnStatus_t st = cudnnCreate(&h);
        if (st == CUDNN_STATUS_SUCCESS) st = cudnnSetStream(h, sdc_cuda_stream());
        if (st != CUDNN_STATUS_SUCCESS) sdc_cuda_fatal("cudnnCreate", cudnnGetErrorString(st), __FILE__, __LINE__);
    }
    return h;
}
#endif

void *sdc_cuda_workspace(int slot, size_t nbytes) {
    static void *buf[SDC_CUDA_WS_SLOTS];
    static size_t cap[SDC_CUDA_WS_SLOTS];
    if (slot < 0 || slot >= SDC_CUDA_WS_SLOTS) sdc_cuda_fatal("sdc_cuda_workspace", "bad slot", __FILE__, __LINE__);
    if (nbytes > cap[slot]) {
        // earlier work on the stream may still read the old buffer
        CUDA_CHECK(cudaStreamSynchronize(sdc_cuda_stream()));
        if (buf[slot]) CUDA_CHECK(cudaFree(buf[slot]));
        size_t n = nbytes + nbytes / 4 + 256; // some headroom: fewer regrowths
        CUDA_CHECK(cudaMalloc(&buf[slot], n));
        cap[slot] = n;
    }
    return buf[slot];
}

// ---- memory ------------------------------------------------------------------

static void *cuda_mem_alloc(size_t nbytes) {
    void *p = nullptr;
    if (cudaMalloc(&p, nbytes ? nbytes : 1) != cudaSuccess) {
        cudaGetLastError(); // out of memory is reported by the caller, not sticky
        return nullptr;
    }
    CUDA_CHECK(cudaMemsetAsync(p, 0, nbytes, sdc_cuda_stream()));
    return p;
}

static void cuda_mem_free(void *p, size_t nbytes) {
    (void)nbytes;
    if (!p) return;
    CUDA_CHECK(cudaStreamSynchronize(sdc_cuda_stream()));
    CUDA_CHECK(cudaFree(p));
}

static void cuda_mem_zero(void *p, size_t nbytes) {
    if (nbytes) CUDA_CHECK(cudaMemsetAsync(p, 0, nbytes, sdc_cuda_stream()));
}

static void cuda_mem_copy(void *dst, const void *src, size_t nbytes) {
    if (nbytes && dst != src)
        CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, sdc_cuda_stream()));
}

// Host buffers may be reused as soon as these return, so both wait.
static void cuda_mem_upload(void *dst, const void *src, size_t nbytes) {
    if (!nbytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, sdc_cuda_stream()));
    CUDA_CHECK(cudaStreamSynchronize(sdc_cuda_stream()));
}

static void cuda_mem_download(void *dst, const void *src, size_t nbytes) {
    if (!nbytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, sdc_cuda_stream()));
    CUDA_CHECK(cudaStreamSynchronize(sdc_cuda_stream()));
}

static void cuda_synchronize(void) { CUDA_CHECK(cudaStreamSynchronize(sdc_cuda_stream())); }

static const sdc_backend g_cuda = {
    .name = "cuda",
    .linear = sdc_cuda_linear,
    .conv2d = sdc_cuda_conv2d,
    .group_norm = sdc_cuda_group_norm,
    .layer_norm = sdc_cuda_layer_norm,
    .attention = sdc_cuda_attention,
    .activation = sdc_cuda_activation,
    .geglu = sdc_cuda_geglu,
    .axpby = sdc_cuda_axpby,
    .add_channel = sdc_cuda_add_channel,
    .concat = sdc_cuda_concat,
    .slice = sdc_cuda_slice,
    .transpose = sdc_cuda_transpose,
    .pad2d = sdc_cuda_pad2d,
    .upsample2x = sdc_cuda_upsample2x,
    .embedding = sdc_cuda_embedding,
    .upload = sdc_cuda_upload,
    .download = sdc_cuda_download,
    .fill = sdc_cuda_fill,
    .linear_backward = sdc_cuda_linear_backward,
    .conv2d_backward = sdc_cuda_conv2d_backward,
    .group_norm_backward = sdc_cuda_group_norm_backward,
    .layer_norm_backward = sdc_cuda_layer_norm_backward,
    .attention_backward = sdc_cuda_attention_backward,
    .attention_lse = sdc_cuda_attention_lse,
    .attention_backward_saved = sdc_cuda_attention_backward_saved,
    .activation_backward = sdc_cuda_activation_backward,
    .geglu_backward = sdc_cuda_geglu_backward,
    .channel_sum = sdc_cuda_channel_sum,
    .upsample2x_backward = sdc_cuda_upsample2x_backward,
    .embedding_backward = sdc_cuda_embedding_backward,
    .mem_alloc = cuda_mem_alloc,
    .mem_free = cuda_mem_free,
    .mem_zero = cuda_mem_zero,
    .mem_copy = cuda_mem_copy,
    .mem_upload = cuda_mem_upload,
    .mem_download = cuda_mem_download,
    .synchronize = cuda_synchronize,
    .cast = sdc_cuda_cast,
    .sumsq = sdc_cuda_sumsq,
    .scale = sdc_cuda_scale,
    .adamw = sdc_cuda_adamw,
    .ema = sdc_cuda_ema,
};

extern "C" const sdc_backend *sdc_cuda_backend(void) { return &g_cuda; }
