/* NCCL collectives on the CUDA backend's device memory, for the data-parallel
 * engine (train/comm.h). NCCL is loaded at run time (dlopen), so an sdc built
 * with CUDA runs on machines without NCCL until a multi-GPU run asks for it;
 * SDC_NCCL_LIB names the library when it is not on the loader's path (e.g.
 * PyTorch's wheel: .../site-packages/nvidia/nccl/lib/libnccl.so.2).
 *
 * Every collective is enqueued on a stream of its own, after an event recorded
 * on the compute stream (sdc_cuda_stream), so it reads what the compute work
 * enqueued so far has written and runs while later compute proceeds;
 * sdc_cuda_nccl_join makes the compute stream wait for all of them. Buffers
 * are in place, as NCCL allows. Without CUDA or NCCL these report why. */
#ifndef SDC_BACKEND_CUDA_NCCL_H
#define SDC_BACKEND_CUDA_NCCL_H

#include <stddef.h>

#include "core/dtype.h"
#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SDC_NCCL_ID_BYTES 128

typedef struct sdc_nccl sdc_nccl;

/* The NCCL version (e.g. 22703), loading it if needed, and the library's
 * name in from; 0 when it cannot be loaded. */
int sdc_cuda_nccl_version(char *from, size_t cap);
/* Loads NCCL (when not yet loaded) and makes the id rank 0 hands to all. */
sdc_status sdc_cuda_nccl_unique_id(unsigned char id[SDC_NCCL_ID_BYTES], sdc_error *err);
/* Joins the communicator of `size` ranks named by id, as `rank`, on the
 * current device. Collective: every rank calls it. */
sdc_status sdc_cuda_nccl_open(sdc_nccl **out, const unsigned char id[SDC_NCCL_ID_BYTES], int rank, int size,
                              sdc_error *err);
void sdc_cuda_nccl_close(sdc_nccl *c);
/* buf[0..n) = mean over ranks (fp32 or bf16 elements) */
void sdc_cuda_nccl_allreduce_mean(sdc_nccl *c, void *buf, size_t n, sdc_dtype dt);
/* buf[0..n*size) summed over ranks / size; rank r's part lands at buf + r*n */
void sdc_cuda_nccl_reduce_scatter_mean(sdc_nccl *c, void *buf, size_t n, sdc_dtype dt);
/* rank r's bytes at buf + r*bytes go to every rank */
void sdc_cuda_nccl_allgather(sdc_nccl *c, void *buf, size_t bytes);
/* scalar sums (host values, e.g. gradient norms): blocking */
double sdc_cuda_nccl_sum_f64(sdc_nccl *c, double v);
/* Later compute-stream work waits for the collectives enqueued so far. */
void sdc_cuda_nccl_join(sdc_nccl *c);
/* Blocks until every collective enqueued so far has finished (for timing
 * how much communication the compute did not hide). */
void sdc_cuda_nccl_sync(sdc_nccl *c);

#ifdef __cplusplus
}
#endif

#endif
