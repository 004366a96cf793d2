// CUDA graphs of the backend's stream (cuda_runtime.h): the sampling loop
// captures one UNet call and replays it each step, so a step costs one
// launch instead of hundreds.
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_runtime.h"

extern "C" int sdc_cuda_graph_begin(void) {
    // thread-local: this thread's unsafe calls (a sync, an allocation)
    // invalidate the capture instead of running
    return cudaStreamBeginCapture(sdc_cuda_stream(), cudaStreamCaptureModeThreadLocal) == cudaSuccess ? 0 : -1;
}

extern "C" int sdc_cuda_graph_end(void **exec) {
    cudaGraph_t g = nullptr;
    *exec = nullptr;
    cudaError_t e = cudaStreamEndCapture(sdc_cuda_stream(), &g);
    if (e != cudaSuccess || !g) {
        (void)cudaGetLastError(); // a failed capture leaves its error; the caller goes on without a graph
        if (g) cudaGraphDestroy(g);
        return -1;
    }
    cudaGraphExec_t x = nullptr;
    e = cudaGraphInstantiate(&x, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    *exec = x;
    return 0;
}

extern "C" void sdc_cuda_graph_launch(void *exec) {
    CUDA_CHECK(cudaGraphLaunch((cudaGraphExec_t)exec, sdc_cuda_stream()));
}

extern "C" void sdc_cuda_graph_free(void *exec) {
    if (exec) cudaGraphExecDestroy((cudaGraphExec_t)exec);
}
