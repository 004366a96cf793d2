#include "core/dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef SDC_WITH_MPI
#include <mpi.h>

static void finalize(void) {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
}

/* Started by a launcher: OpenMPI's mpirun, or PMI/PMIx (Slurm's srun). */
static int launched(void) {
    const char *v = getenv("OMPI_COMM_WORLD_SIZE");
    if (!v) v = getenv("PMI_SIZE");
    if (!v) v = getenv("PMIX_SIZE");
    if (!v) v = getenv("SLURM_NTASKS");
    return v && atoi(v) > 1;
}
#endif

void sdc_dist_init(sdc_dist *d) {
    d->rank = 0, d->size = 1, d->mpi = 0;
#ifdef SDC_WITH_MPI
    if (!launched()) return;
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        MPI_Init(NULL, NULL);
        atexit(finalize);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    d->mpi = d->size > 1;
#endif
}

void sdc_dist_mean_f32(const sdc_dist *d, float *buf, size_t n) {
#ifdef SDC_WITH_MPI
    if (!d->mpi) return;
    /* counts are int: reduce in pieces */
    for (size_t off = 0; off < n; off += (size_t)1 << 28) {
        size_t k = n - off < ((size_t)1 << 28) ? n - off : (size_t)1 << 28;
        MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
    const float inv = 1.0f / (float)d->size;
    for (size_t i = 0; i < n; i++) buf[i] *= inv;
#else
    (void)d, (void)buf, (void)n;
#endif
}

void sdc_dist_mean_f64(const sdc_dist *d, double *buf, size_t n) {
#ifdef SDC_WITH_MPI
    if (!d->mpi) return;
    MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    for (size_t i = 0; i < n; i++) buf[i] /= d->size;
#else
    (void)d, (void)buf, (void)n;
#endif
}

void sdc_dist_barrier(const sdc_dist *d) {
#ifdef SDC_WITH_MPI
    if (d->mpi) MPI_Barrier(MPI_COMM_WORLD);
#else
    (void)d;
#endif
}

double sdc_dist_sum_f64(const sdc_dist *d, double v) {
#ifdef SDC_WITH_MPI
    if (d->mpi) MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
#else
    (void)d;
#endif
    return v;
}

double sdc_dist_max_f64(const sdc_dist *d, double v) {
#ifdef SDC_WITH_MPI
    if (d->mpi) MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
#else
    (void)d;
#endif
    return v;
}

void sdc_dist_bcast(const sdc_dist *d, void *buf, size_t bytes, int root) {
#ifdef SDC_WITH_MPI
    if (d->mpi) MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, MPI_COMM_WORLD);
#else
    (void)d, (void)buf, (void)bytes, (void)root;
#endif
}

/* MPI counts are int: callers hand buckets far below 2^31 elements */
void sdc_dist_reduce_scatter_mean_f32(const sdc_dist *d, float *buf, size_t n) {
#ifdef SDC_WITH_MPI
    if (!d->mpi || n == 0) return;
    /* in place, MPI leaves this rank's part at the start of the buffer */
    MPI_Reduce_scatter_block(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    float *mine = buf + (size_t)d->rank * n;
    memmove(mine, buf, n * sizeof *buf);
    const float inv = 1.0f / (float)d->size;
    for (size_t i = 0; i < n; i++) mine[i] *= inv;
#else
    (void)d, (void)buf, (void)n;
#endif
}

void sdc_dist_allgather(const sdc_dist *d, void *buf, size_t bytes) {
#ifdef SDC_WITH_MPI
    if (!d->mpi || bytes == 0) return;
    MPI_Allgather(MPI_IN_PLACE, 0, MPI_BYTE, buf, (int)bytes, MPI_BYTE, MPI_COMM_WORLD);
#else
    (void)d, (void)buf, (void)bytes;
#endif
}

void sdc_dist_gather(const sdc_dist *d, const void *send, void *recv, size_t bytes, int root) {
#ifdef SDC_WITH_MPI
    if (d->mpi) {
        if (bytes) MPI_Gather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, root, MPI_COMM_WORLD);
        return;
    }
#endif
    (void)d, (void)root;
    if (bytes) memcpy(recv, send, bytes);
}

sdc_status sdc_dist_agree(const sdc_dist *d, sdc_status st, sdc_error *err, int *who) {
    if (who) *who = st != SDC_OK ? d->rank : -1;
#ifdef SDC_WITH_MPI
    if (!d->mpi) return st;
    /* the lowest failing rank (size: none), then its error to all */
    int first = st != SDC_OK ? d->rank : d->size;
    MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (who) *who = first < d->size ? first : -1;
    if (first == d->size) return SDC_OK;
    sdc_error e = {0};
    if (d->rank == first) {
        if (err) e = *err;
        e.code = st;
        if (!e.msg[0]) snprintf(e.msg, sizeof e.msg, "%s", sdc_status_name(st));
    }
    MPI_Bcast(&e, (int)sizeof e, MPI_BYTE, first, MPI_COMM_WORLD);
    e.msg[sizeof e.msg - 1] = '\0';
    if (err) *err = e;
    return e.code;
#else
    (void)d, (void)err;
    return st;
#endif
}
