/* Data parallelism for the trainer: one process per GPU (or CPU process),
 * each with its own micro-batches, the gradients averaged over all of them
 * (train/comm.h moves them).
 *
 * Buckets. Each trained store's flat gradient buffer is cut into buckets of
 * about bucket_mb (DDP's bucket_cap_mb, 25 MB). The tape calls back after
 * every op that adds to a parameter gradient (tape.h grad_hook); a bucket
 * whose last contribution is in is reduced at once, on the communication
 * stream, while the backward pass goes on through earlier layers. How many
 * contributions a bucket gets is learned on the first optimizer step (its
 * buckets are reduced after the backward pass), since the graph is the same
 * every step. Only the last micro-step of a gradient accumulation reduces.
 *
 * ZeRO stage 1 (zero_stage 1): a bucket of len elements is split into
 * `size` equal parts (len = part·size + tail, tail < size). Its reduction is
 * a reduce-scatter: rank r receives the mean of part r only, and keeps the
 * AdamW moments of just that part (plus the short tail, which every rank
 * all-reduces and updates alike), so the moments take 1/size of the
 * memory. After the update every rank sends its part of the weights to all
 * (all-gather). The gradient norm is the sum of the ranks' partial sums of
 * squares. The fp32 master weights and the EMA are kept full-size but are
 * current only on each rank's parts; sdc_dp_gather brings them (and the
 * moments, on the host) together for checkpoints and the final save, which
 * are therefore the same files as one process writes, and a run can resume
 * on any number of ranks. */
#ifndef SDC_TRAIN_DP_H
#define SDC_TRAIN_DP_H

#include <stddef.h>
#include <stdint.h>

#include "core/dist.h"
#include "nn/params.h"
#include "train/adamw.h"
#include "train/comm.h"
#include "train/ema.h"

#define SDC_DP_MAX_STORES 4

typedef struct sdc_dp_bucket {
    int store;
    size_t off, len;    /* elements of the store's flat buffers */
    size_t part;        /* ZeRO-1: elements of each rank's part (len = part·size + tail) */
    size_t packed;      /* ZeRO-1: where this rank's part, then the tail, sit in the packed moments */
    int expected;       /* gradient contributions per backward pass (learned) */
    int pending;        /* contributions still to come in this pass */
    int launched;
} sdc_dp_bucket;

typedef struct sdc_dp {
    sdc_comm comm;
    int zero;                /* ZeRO stage: 0 or 1 */
    int bf16;                /* gradients travel as bf16 (NCCL): a copy cast per bucket, cast back after */
    void *cbuf;              /* that bf16 copy of every store's gradients */
    size_t coff[SDC_DP_MAX_STORES], cbuf_n;
    int overlap;             /* reductions start during backward (NCCL) */
    sdc_params *train[SDC_DP_MAX_STORES];
    int ntrain;
    sdc_dp_bucket *b;
    int nb;
    size_t packed_n[SDC_DP_MAX_STORES]; /* ZeRO-1: moment elements on this rank per store */
    int learned;  /* expected counts known */
    int armed;    /* this backward pass reduces */
    int mismatch; /* a contribution came after its bucket's reduction (the graph changed) */
    float *tmp;   /* a bucket-sized buffer on the backend (gathering moments) */
    size_t tmp_n;
    int timing;        /* measure exposed_s (synchronizes every step) */
    double exposed_s;  /* host seconds waiting for reductions after the backward pass ended */
    /* sdc_dp_gather's host copies of the full moments per store (NULL until gathered) */
    float *host_m[SDC_DP_MAX_STORES], *host_v[SDC_DP_MAX_STORES];
} sdc_dp;

/* Buckets over the trained stores' gradients (which must exist, on be).
 * bucket_mb ≤ 0: 25; the environment's SDC_DP_BUCKET_MB overrides it (for
 * measuring). SDC_DP_NO_OVERLAP=1 reduces after the backward pass.
 * reduce_bf16: with NCCL, each bucket is cast to bf16 and averaged in bf16
 * (half the traffic, as DDP's bf16_compress_hook), then cast back to the
 * fp32 gradients; the average is then rounded to bf16. Ignored (a warning)
 * without NCCL. */
sdc_status sdc_dp_init(sdc_dp *d, const sdc_dist *dist, const sdc_backend *be, sdc_params *const *train, int ntrain,
                       int zero_stage, double bucket_mb, int reduce_bf16, sdc_error *err);
void sdc_dp_free(sdc_dp *d);
/* The tape's grad_hook (user: the sdc_dp). */
void sdc_dp_on_grad(void *user, const float *grad, size_t n);
/* Before a backward pass: `last` when it ends a gradient accumulation. */
void sdc_dp_begin_backward(sdc_dp *d, int last);
/* After the last backward pass: the buckets not yet reduced are, and the
 * compute stream waits for all reductions. An error if the graph changed
 * under the overlap (never expected). */
sdc_status sdc_dp_finish(sdc_dp *d, sdc_error *err);

/* ZeRO-aware optimizer pieces (plain data parallelism: the whole buffers) */
double sdc_dp_sumsq(sdc_dp *d);
void sdc_dp_scale(sdc_dp *d, float coef);
/* AdamW at step `step` (counted from 1) on this rank's parts of store i;
 * m and v are packed (ZeRO-1) or full. */
void sdc_dp_adamw(sdc_dp *d, int i, const sdc_adamw *o, int64_t step, double lr);
void sdc_dp_ema(sdc_dp *d, sdc_ema *e);
/* ZeRO-1: every rank's updated parts of the weights to all. */
void sdc_dp_allgather_weights(sdc_dp *d);
/* ZeRO-1, collective: master weights and the EMA shadow made whole on every
 * rank, and the moments of opt[] gathered into host_m/host_v (on rank 0
 * only when lead_only). A no-op without ZeRO. */
sdc_status sdc_dp_gather(sdc_dp *d, const sdc_adamw *opt, sdc_ema *ema, int lead_only, sdc_error *err);
void sdc_dp_drop_gathered(sdc_dp *d);
/* ZeRO-1: store i's full moments (host) into this rank's packed moments. */
void sdc_dp_scatter_moments(sdc_dp *d, int i, const float *host_full, float *packed);

#endif
