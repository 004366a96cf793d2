/* Processes of a data-parallel run: MPI when sdc was built with it and was
 * started by mpirun/srun (OpenMPI's or PMI's environment says so), else one
 * process. The CPU backend averages gradients with MPI_Allreduce; the CUDA
 * backend will use NCCL for the same calls. */
#ifndef SDC_CORE_DIST_H
#define SDC_CORE_DIST_H

#include <stddef.h>

#include "core/error.h"

typedef struct sdc_dist {
    int rank, size;
    int mpi; /* MPI is in use */
} sdc_dist;

/* Joins the launcher's processes (MPI_Init once per process; finalised at
 * exit), or rank 0 of 1. */
void sdc_dist_init(sdc_dist *d);
/* In place: buf = mean over ranks of buf (a no-op for one process). */
void sdc_dist_mean_f32(const sdc_dist *d, float *buf, size_t n);
void sdc_dist_mean_f64(const sdc_dist *d, double *buf, size_t n);
void sdc_dist_barrier(const sdc_dist *d);
/* The sum over ranks of v (v itself for one process). */
double sdc_dist_sum_f64(const sdc_dist *d, double v);
/* The largest v over ranks. */
double sdc_dist_max_f64(const sdc_dist *d, double v);
/* root's bytes into every rank's buf. */
void sdc_dist_bcast(const sdc_dist *d, void *buf, size_t bytes, int root);
/* In place over buf[0 .. n*size): the mean over ranks of the whole, of which
 * rank r keeps its part at buf + r*n (the rest is left undefined). */
void sdc_dist_reduce_scatter_mean_f32(const sdc_dist *d, float *buf, size_t n);
/* In place: rank r's bytes at buf + r*bytes go to every rank. */
void sdc_dist_allgather(const sdc_dist *d, void *buf, size_t bytes);
/* Every rank's `bytes` bytes at send go to root's recv + rank·bytes (recv
 * is touched on root only and must not overlap send; bytes < 2^31, MPI
 * counts being int). One process: a copy. */
void sdc_dist_gather(const sdc_dist *d, const void *send, void *recv, size_t bytes, int root);
/* Collective over every rank's st: SDC_OK when all are; else, on every
 * rank, the status and message (err) of the lowest failing rank, whose
 * number goes to *who (may be NULL). So no rank goes on to a collective
 * that another left (no deadlock), and all report the same cause. One
 * process: st, err untouched. */
sdc_status sdc_dist_agree(const sdc_dist *d, sdc_status st, sdc_error *err, int *who);

#endif
