// NCCL collectives for data-parallel training (cuda_nccl.h), with NCCL
// loaded by dlopen. The few declarations below are NCCL 2's stable C ABI
// (nccl.h: ncclUniqueId is 128 bytes, the enums' values are fixed), so no
// NCCL header or library is needed to build.
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_nccl.h"

namespace {

typedef struct {
    char internal[SDC_NCCL_ID_BYTES];
} nccl_id;
typedef struct nccl_comm *nccl_comm_t;
typedef int nccl_result;
enum { NCCL_UINT8 = 1, NCCL_FLOAT32 = 7, NCCL_FLOAT64 = 8, NCCL_BFLOAT16 = 9 };
enum { NCCL_SUM = 0, NCCL_AVG = 4 };

struct nccl_api {
    void *lib;
    nccl_result (*get_unique_id)(nccl_id *);
    nccl_result (*comm_init_rank)(nccl_comm_t *, int, nccl_id, int);
    nccl_result (*comm_destroy)(nccl_comm_t);
    nccl_result (*all_reduce)(const void *, void *, size_t, int, int, nccl_comm_t, cudaStream_t);
    nccl_result (*reduce_scatter)(const void *, void *, size_t, int, int, nccl_comm_t, cudaStream_t);
    nccl_result (*all_gather)(const void *, void *, size_t, int, nccl_comm_t, cudaStream_t);
    const char *(*error_string)(nccl_result);
    nccl_result (*get_version)(int *);
    char loaded_from[512];
} api;

sdc_status load(sdc_error *err) {
    if (api.lib) return SDC_OK;
    const char *env = getenv("SDC_NCCL_LIB");
    const char *names[] = {env, "libnccl.so.2", "libnccl.so"};
    char why[512] = "";
    for (int i = 0; i < 3 && !api.lib; i++) {
        if (!names[i] || !*names[i]) continue;
        api.lib = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
        if (api.lib) snprintf(api.loaded_from, sizeof api.loaded_from, "%s", names[i]);
        else if (!why[0] || i == 0) snprintf(why, sizeof why, "%s", dlerror());
    }
    if (!api.lib)
        return sdc_fail(err, SDC_ENOTFOUND,
                        "NCCL not found (%s): install libnccl2, add its folder to LD_LIBRARY_PATH, or set "
                        "SDC_NCCL_LIB=/path/to/libnccl.so.2",
                        why);
    struct {
        void **slot;
        const char *name;
    } syms[] = {{(void **)&api.get_unique_id, "ncclGetUniqueId"},  {(void **)&api.comm_init_rank, "ncclCommInitRank"},
                {(void **)&api.comm_destroy, "ncclCommDestroy"},   {(void **)&api.all_reduce, "ncclAllReduce"},
                {(void **)&api.reduce_scatter, "ncclReduceScatter"}, {(void **)&api.all_gather, "ncclAllGather"},
                {(void **)&api.error_string, "ncclGetErrorString"}, {(void **)&api.get_version, "ncclGetVersion"}};
    for (auto &s : syms) {
        *s.slot = dlsym(api.lib, s.name);
        if (!*s.slot) {
            dlclose(api.lib);
            api.lib = NULL;
            return sdc_fail(err, SDC_EFORMAT, "%s: no symbol %s (NCCL 2.10 or newer is needed)", api.loaded_from,
                            s.name);
        }
    }
    int v = 0;
    api.get_version(&v);
    if (v < 21000) { /* ncclAvg */
        dlclose(api.lib);
        api.lib = NULL;
        return sdc_fail(err, SDC_EUNSUPPORTED, "%s: NCCL %d is too old (2.10 or newer is needed)", api.loaded_from, v);
    }
    return SDC_OK;
}

void check(nccl_result r, const char *what) {
    if (r != 0) sdc_cuda_fatal(what, api.error_string ? api.error_string(r) : "NCCL error", __FILE__, __LINE__);
}

} // namespace

struct sdc_nccl {
    nccl_comm_t comm;
    int rank, size;
    cudaStream_t stream; // the collectives' own stream
    cudaEvent_t ready;   // compute work enqueued so far (recorded before each collective)
    cudaEvent_t done;    // the collectives enqueued so far
    double *scalar;      // one device double for sdc_cuda_nccl_sum_f64
};

extern "C" int sdc_cuda_nccl_version(char *from, size_t cap) {
    sdc_error err;
    if (load(&err) != SDC_OK) return 0;
    int v = 0;
    api.get_version(&v);
    snprintf(from, cap, "%s", api.loaded_from);
    return v;
}

extern "C" sdc_status sdc_cuda_nccl_unique_id(unsigned char id[SDC_NCCL_ID_BYTES], sdc_error *err) {
    SDC_TRY(load(err));
    nccl_id u;
    nccl_result r = api.get_unique_id(&u);
    if (r != 0) return sdc_fail(err, SDC_EIO, "ncclGetUniqueId: %s", api.error_string(r));
    memcpy(id, u.internal, SDC_NCCL_ID_BYTES);
    return SDC_OK;
}

extern "C" sdc_status sdc_cuda_nccl_open(sdc_nccl **out, const unsigned char id[SDC_NCCL_ID_BYTES], int rank, int size,
                                         sdc_error *err) {
    SDC_TRY(load(err));
    sdc_nccl *c = (sdc_nccl *)calloc(1, sizeof *c);
    if (!c) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    nccl_id u;
    memcpy(u.internal, id, SDC_NCCL_ID_BYTES);
    nccl_result r = api.comm_init_rank(&c->comm, size, u, rank);
    if (r != 0) {
        free(c);
        return sdc_fail(err, SDC_EIO, "ncclCommInitRank (rank %d of %d): %s (NCCL_DEBUG=INFO says more)", rank, size,
                        api.error_string(r));
    }
    c->rank = rank, c->size = size;
    // SDC_NCCL_PRIORITY=high|low: the collectives' stream priority against
    // the compute stream's (default: the same), for measuring the overlap
    int lo = 0, hi = 0, prio = 0;
    CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
    const char *pe = getenv("SDC_NCCL_PRIORITY");
    if (pe && !strcmp(pe, "high")) prio = hi;
    if (pe && !strcmp(pe, "low")) prio = lo;
    CUDA_CHECK(cudaStreamCreateWithPriority(&c->stream, cudaStreamNonBlocking, prio));
    CUDA_CHECK(cudaEventCreateWithFlags(&c->ready, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&c->done, cudaEventDisableTiming));
    CUDA_CHECK(cudaMalloc(&c->scalar, sizeof(double)));
    *out = c;
    return SDC_OK;
}

extern "C" void sdc_cuda_nccl_close(sdc_nccl *c) {
    if (!c) return;
    cudaStreamSynchronize(c->stream);
    api.comm_destroy(c->comm);
    cudaFree(c->scalar);
    cudaEventDestroy(c->ready);
    cudaEventDestroy(c->done);
    cudaStreamDestroy(c->stream);
    free(c);
}

// the collective about to be enqueued sees every compute op enqueued so far
static void after_compute(sdc_nccl *c) {
    CUDA_CHECK(cudaEventRecord(c->ready, sdc_cuda_stream()));
    CUDA_CHECK(cudaStreamWaitEvent(c->stream, c->ready, 0));
}

static int nccl_type(sdc_dtype dt) { return dt == SDC_BF16 ? NCCL_BFLOAT16 : NCCL_FLOAT32; }

extern "C" void sdc_cuda_nccl_allreduce_mean(sdc_nccl *c, void *buf, size_t n, sdc_dtype dt) {
    if (n == 0) return;
    after_compute(c);
    check(api.all_reduce(buf, buf, n, nccl_type(dt), NCCL_AVG, c->comm, c->stream), "ncclAllReduce");
}

extern "C" void sdc_cuda_nccl_reduce_scatter_mean(sdc_nccl *c, void *buf, size_t n, sdc_dtype dt) {
    if (n == 0) return;
    after_compute(c);
    // in place: the receive buffer is this rank's part of the send buffer
    unsigned char *b = (unsigned char *)buf;
    check(api.reduce_scatter(b, b + (size_t)c->rank * n * sdc_dtype_size(dt), n, nccl_type(dt), NCCL_AVG, c->comm,
                             c->stream),
          "ncclReduceScatter");
}

extern "C" void sdc_cuda_nccl_allgather(sdc_nccl *c, void *buf, size_t bytes) {
    if (bytes == 0) return;
    after_compute(c);
    unsigned char *b = (unsigned char *)buf;
    check(api.all_gather(b + (size_t)c->rank * bytes, b, bytes, NCCL_UINT8, c->comm, c->stream), "ncclAllGather");
}

extern "C" double sdc_cuda_nccl_sum_f64(sdc_nccl *c, double v) {
    double r = 0;
    CUDA_CHECK(cudaMemcpyAsync(c->scalar, &v, sizeof v, cudaMemcpyHostToDevice, c->stream));
    check(api.all_reduce(c->scalar, c->scalar, 1, NCCL_FLOAT64, NCCL_SUM, c->comm, c->stream), "ncclAllReduce");
    CUDA_CHECK(cudaMemcpyAsync(&r, c->scalar, sizeof r, cudaMemcpyDeviceToHost, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    return r;
}

extern "C" void sdc_cuda_nccl_join(sdc_nccl *c) {
    CUDA_CHECK(cudaEventRecord(c->done, c->stream));
    CUDA_CHECK(cudaStreamWaitEvent(sdc_cuda_stream(), c->done, 0));
}

extern "C" void sdc_cuda_nccl_sync(sdc_nccl *c) { CUDA_CHECK(cudaStreamSynchronize(c->stream)); }
