/* Processes of a data-parallel run: MPI when sdc was built with it and was
 * started by mpirun/srun (OpenMPI's or PMI's environment says so), else one
 * process. The CPU backend averages gradients with MPI_Allreduce; the CUDA
 * backend will use NCCL for the same calls. */
#ifndef SDC_CORE_DIST_H
#define SDC_CORE_DIST_H

#include <stddef.h>

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

#endif
