#include "train/comm.h"

#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_nccl.h"
#include "core/log.h"

sdc_status sdc_comm_open(sdc_comm *c, const sdc_dist *d, const sdc_backend *be, sdc_error *err) {
    memset(c, 0, sizeof *c);
    c->dist = *d;
    c->rank = d->rank, c->size = d->size;
    c->be = be;
    if (d->size <= 1) return SDC_OK;
    c->kind = SDC_COMM_MPI;
    const char *want = getenv("SDC_COMM");
    if (be == sdc_cpu_backend() || (want && !strcmp(want, "mpi"))) return SDC_OK;
    /* rank 0 makes the id; a failure there (no NCCL) is broadcast as an
     * empty id, so every rank falls back alike */
    unsigned char id[SDC_NCCL_ID_BYTES + 1] = {0};
    sdc_error e0 = {0};
    if (d->rank == 0) id[0] = sdc_cuda_nccl_unique_id(id + 1, &e0) == SDC_OK;
    sdc_dist_bcast(d, id, sizeof id, 0);
    if (!id[0]) {
        if (d->rank == 0)
            SDC_WARN("%s; gradients go through host memory with MPI instead (much slower)", e0.msg);
        return SDC_OK;
    }
    SDC_TRY(sdc_cuda_nccl_open(&c->nccl, id + 1, d->rank, d->size, err));
    c->kind = SDC_COMM_NCCL;
    return SDC_OK;
}

void sdc_comm_close(sdc_comm *c) {
    if (c->nccl) sdc_cuda_nccl_close(c->nccl);
    free(c->stage);
    memset(c, 0, sizeof *c);
}

const char *sdc_comm_name(const sdc_comm *c) {
    return c->kind == SDC_COMM_NCCL ? "NCCL" : c->kind == SDC_COMM_MPI ? "MPI" : "none";
}

/* MPI on device memory: through the host copy */
static void *staged(sdc_comm *c, const void *buf, size_t bytes) {
    if (c->be == sdc_cpu_backend()) return (void *)buf;
    if (bytes > c->stage_cap) {
        free(c->stage);
        c->stage = malloc(bytes);
        SDC_ASSERT(c->stage); /* bucket-sized: at most a few tens of MB */
        c->stage_cap = bytes;
    }
    c->be->mem_download(c->stage, buf, bytes);
    return c->stage;
}

static void unstage(sdc_comm *c, void *buf, const void *host, size_t bytes) {
    if (host != buf) c->be->mem_upload(buf, host, bytes);
}

void sdc_comm_allreduce_mean(sdc_comm *c, float *buf, size_t n) {
    if (c->kind == SDC_COMM_NCCL) {
        sdc_cuda_nccl_allreduce_mean(c->nccl, buf, n, SDC_F32);
    } else if (c->kind == SDC_COMM_MPI) {
        float *h = staged(c, buf, n * sizeof *buf);
        sdc_dist_mean_f32(&c->dist, h, n);
        unstage(c, buf, h, n * sizeof *buf);
    }
}

void sdc_comm_reduce_scatter_mean(sdc_comm *c, float *buf, size_t n) {
    if (c->kind == SDC_COMM_NCCL) {
        sdc_cuda_nccl_reduce_scatter_mean(c->nccl, buf, n, SDC_F32);
    } else if (c->kind == SDC_COMM_MPI) {
        size_t all = n * (size_t)c->size * sizeof *buf;
        float *h = staged(c, buf, all);
        sdc_dist_reduce_scatter_mean_f32(&c->dist, h, n);
        unstage(c, buf, h, all);
    }
}

void sdc_comm_allreduce_mean_bf16(sdc_comm *c, void *buf, size_t n) {
    SDC_ASSERT(c->kind != SDC_COMM_MPI); /* sdc_dp asks for bf16 with NCCL only */
    if (c->kind == SDC_COMM_NCCL) sdc_cuda_nccl_allreduce_mean(c->nccl, buf, n, SDC_BF16);
}

void sdc_comm_reduce_scatter_mean_bf16(sdc_comm *c, void *buf, size_t n) {
    SDC_ASSERT(c->kind != SDC_COMM_MPI);
    if (c->kind == SDC_COMM_NCCL) sdc_cuda_nccl_reduce_scatter_mean(c->nccl, buf, n, SDC_BF16);
}

void sdc_comm_allgather(sdc_comm *c, void *buf, size_t bytes) {
    if (c->kind == SDC_COMM_NCCL) {
        sdc_cuda_nccl_allgather(c->nccl, buf, bytes);
    } else if (c->kind == SDC_COMM_MPI) {
        size_t all = bytes * (size_t)c->size;
        void *h = staged(c, buf, all);
        sdc_dist_allgather(&c->dist, h, bytes);
        unstage(c, buf, h, all);
    }
}

double sdc_comm_sum(sdc_comm *c, double v) { return c->kind == SDC_COMM_LOCAL ? v : sdc_dist_sum_f64(&c->dist, v); }

void sdc_comm_join(sdc_comm *c) {
    if (c->kind == SDC_COMM_NCCL) sdc_cuda_nccl_join(c->nccl);
}

void sdc_comm_sync(sdc_comm *c) {
    if (c->kind == SDC_COMM_NCCL) sdc_cuda_nccl_sync(c->nccl);
}
