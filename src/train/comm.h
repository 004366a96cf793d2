/* The collectives of a data-parallel run, on the memory of the backend that
 * trains: NCCL on GPUs (buffers in device memory, enqueued on a stream of
 * their own so they overlap the backward pass), MPI on the CPU (host memory,
 * blocking). MPI starts the processes and hands NCCL its id either way; a GPU
 * run without NCCL falls back to MPI through host memory (slow; a warning
 * says so). One process: every call is a no-op.
 *
 * All calls are collective: every rank makes the same calls in the same
 * order with the same sizes. */
#ifndef SDC_TRAIN_COMM_H
#define SDC_TRAIN_COMM_H

#include <stddef.h>

#include "backend/backend.h"
#include "core/dist.h"
#include "core/error.h"

typedef enum sdc_comm_kind {
    SDC_COMM_LOCAL, /* one process */
    SDC_COMM_MPI,   /* host memory (device buffers staged through it) */
    SDC_COMM_NCCL,  /* device memory, asynchronous */
} sdc_comm_kind;

typedef struct sdc_comm {
    sdc_comm_kind kind;
    int rank, size;
    sdc_dist dist;
    const sdc_backend *be; /* whose memory the buffers are */
    struct sdc_nccl *nccl;
    unsigned char *stage; /* MPI with device buffers: a host copy */
    size_t stage_cap;
} sdc_comm;

/* NCCL when be is a GPU's (unless SDC_COMM=mpi), else MPI. */
sdc_status sdc_comm_open(sdc_comm *c, const sdc_dist *d, const sdc_backend *be, sdc_error *err);
void sdc_comm_close(sdc_comm *c);
const char *sdc_comm_name(const sdc_comm *c);

/* buf[0..n) = the mean over ranks */
void sdc_comm_allreduce_mean(sdc_comm *c, float *buf, size_t n);
/* buf[0 .. n*size) averaged over ranks; rank r keeps its part, buf + r*n */
void sdc_comm_reduce_scatter_mean(sdc_comm *c, float *buf, size_t n);
/* The same two over bf16 elements (NCCL only) */
void sdc_comm_allreduce_mean_bf16(sdc_comm *c, void *buf, size_t n);
void sdc_comm_reduce_scatter_mean_bf16(sdc_comm *c, void *buf, size_t n);
/* rank r's bytes at buf + r*bytes to every rank */
void sdc_comm_allgather(sdc_comm *c, void *buf, size_t bytes);
/* host scalar: the sum over ranks */
double sdc_comm_sum(sdc_comm *c, double v);
/* Compute work enqueued after this waits for every collective so far. */
void sdc_comm_join(sdc_comm *c);
/* The host waits for every collective so far (to time what is not hidden). */
void sdc_comm_sync(sdc_comm *c);

#endif
