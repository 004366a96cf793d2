#include "train/dp.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"

/* the weights the optimizer updates (fp32) and the copy the model computes
 * with when that is another buffer (bf16/fp16 on a GPU), else NULL */
static float *master_of(const sdc_params *p) { return sdc_params_master(p); }
static unsigned char *copy_of(const sdc_params *p) {
    return p->be && p->dev != (void *)p->master ? (unsigned char *)p->dev : NULL;
}

/* this rank's elements of bucket b: its part [*o1, +part) and the tail [*o2, +tail) */
static void owned(const sdc_dp *d, const sdc_dp_bucket *b, size_t *o1, size_t *o2, size_t *tail) {
    *o1 = b->off + (size_t)d->comm.rank * b->part;
    *o2 = b->off + b->part * (size_t)d->comm.size;
    *tail = b->off + b->len - *o2;
}

sdc_status sdc_dp_init(sdc_dp *d, const sdc_dist *dist, const sdc_backend *be, sdc_params *const *train, int ntrain,
                       int zero_stage, double bucket_mb, int reduce_bf16, sdc_error *err) {
    memset(d, 0, sizeof *d);
    if (ntrain > SDC_DP_MAX_STORES) return sdc_fail(err, SDC_EINVAL, "data parallel: at most %d trained sets", SDC_DP_MAX_STORES);
    if (zero_stage < 0 || zero_stage > 1)
        return sdc_fail(err, SDC_EINVAL, "--zero_stage %d: sdc has stages 0 (plain data parallel) and 1", zero_stage);
    SDC_TRY(sdc_comm_open(&d->comm, dist, be, err));
    d->zero = zero_stage;
    d->overlap = d->comm.kind == SDC_COMM_NCCL && !getenv("SDC_DP_NO_OVERLAP");
    d->ntrain = ntrain;
    const char *env = getenv("SDC_DP_BUCKET_MB"); /* for measuring; the API's value otherwise */
    if (env && atof(env) > 0) bucket_mb = atof(env);
    size_t cap = (size_t)((bucket_mb > 0 ? bucket_mb : 25.0) * 1048576.0 / sizeof(float));
    if (cap < 1024) cap = 1024;
    int nb = 0;
    for (int i = 0; i < ntrain; i++) {
        d->train[i] = train[i];
        SDC_ASSERT(train[i]->grad);
        nb += (int)((train[i]->total + cap - 1) / cap);
    }
    d->b = calloc(nb ? (size_t)nb : 1, sizeof *d->b);
    if (!d->b) {
        sdc_comm_close(&d->comm);
        return sdc_fail(err, SDC_ENOMEM, "out of memory");
    }
    const size_t size = (size_t)d->comm.size;
    for (int i = 0; i < ntrain; i++) {
        size_t packed = 0;
        for (size_t off = 0; off < train[i]->total; off += cap) {
            sdc_dp_bucket *b = &d->b[d->nb++];
            b->store = i;
            b->off = off;
            b->len = train[i]->total - off < cap ? train[i]->total - off : cap;
            b->part = d->zero ? b->len / size : 0;
            b->packed = packed;
            packed += b->len - b->part * (size - 1); /* part + tail */
            if (b->len > d->tmp_n) d->tmp_n = b->len;
        }
        d->packed_n[i] = d->zero ? packed : train[i]->total;
    }
    if (reduce_bf16 && d->comm.kind != SDC_COMM_NCCL && d->comm.rank == 0)
        SDC_WARN("bf16 gradient reduction needs NCCL: the gradients travel in fp32");
    if (reduce_bf16 && d->comm.kind == SDC_COMM_NCCL) {
        for (int i = 0; i < ntrain; i++) d->coff[i] = d->cbuf_n, d->cbuf_n += train[i]->total;
        d->cbuf = be->mem_alloc(d->cbuf_n * sizeof(uint16_t));
        if (!d->cbuf) {
            sdc_dp_free(d);
            return sdc_fail(err, SDC_ENOMEM, "out of memory for the bf16 copy of the gradients");
        }
        d->bf16 = 1;
    }
    if (d->zero) {
        d->tmp = be->mem_alloc(d->tmp_n * sizeof(float));
        if (!d->tmp) {
            sdc_dp_free(d);
            return sdc_fail(err, SDC_ENOMEM, "out of memory for a %zu-element bucket", d->tmp_n);
        }
    }
    return SDC_OK;
}

void sdc_dp_drop_gathered(sdc_dp *d) {
    for (int i = 0; i < SDC_DP_MAX_STORES; i++) {
        free(d->host_m[i]), free(d->host_v[i]);
        d->host_m[i] = d->host_v[i] = NULL;
    }
}

void sdc_dp_free(sdc_dp *d) {
    if (d->tmp) d->comm.be->mem_free(d->tmp, d->tmp_n * sizeof(float));
    if (d->cbuf) d->comm.be->mem_free(d->cbuf, d->cbuf_n * sizeof(uint16_t));
    sdc_dp_drop_gathered(d);
    free(d->b);
    sdc_comm_close(&d->comm);
    memset(d, 0, sizeof *d);
}

/* bucket b's slot in the bf16 copy */
static uint16_t *cbuf_of(const sdc_dp *d, const sdc_dp_bucket *b) {
    return (uint16_t *)d->cbuf + d->coff[b->store] + b->off;
}

static void launch(sdc_dp *d, sdc_dp_bucket *b) {
    float *g = d->train[b->store]->grad + b->off;
    if (d->bf16) {
        /* the cast goes on the compute stream, after the gradients it reads */
        uint16_t *c = cbuf_of(d, b);
        size_t whole = b->part * (size_t)d->comm.size;
        d->comm.be->cast(c, SDC_BF16, g, SDC_F32, b->len);
        if (!d->zero) {
            sdc_comm_allreduce_mean_bf16(&d->comm, c, b->len);
        } else {
            if (b->part) sdc_comm_reduce_scatter_mean_bf16(&d->comm, c, b->part);
            if (b->len > whole) sdc_comm_allreduce_mean_bf16(&d->comm, c + whole, b->len - whole);
        }
        b->launched = 1;
        return;
    }
    if (!d->zero) {
        sdc_comm_allreduce_mean(&d->comm, g, b->len);
    } else {
        size_t whole = b->part * (size_t)d->comm.size;
        if (b->part) sdc_comm_reduce_scatter_mean(&d->comm, g, b->part);
        if (b->len > whole) sdc_comm_allreduce_mean(&d->comm, g + whole, b->len - whole);
    }
    b->launched = 1;
}

void sdc_dp_on_grad(void *user, const float *grad, size_t n) {
    sdc_dp *d = user;
    if (!d->armed || n == 0) return;
    int first = 0;
    for (int i = 0; i < d->ntrain; i++) {
        const sdc_params *p = d->train[i];
        if (grad < p->grad || grad >= p->grad + p->total) {
            while (first < d->nb && d->b[first].store == i) first++;
            continue;
        }
        size_t lo = (size_t)(grad - p->grad), hi = lo + n;
        for (int k = first; k < d->nb && d->b[k].store == i && d->b[k].off < hi; k++) {
            sdc_dp_bucket *b = &d->b[k];
            if (b->off + b->len <= lo) continue;
            if (!d->learned) {
                b->expected++;
            } else if (b->launched || b->pending <= 0) {
                d->mismatch = 1;
            } else if (--b->pending == 0 && d->overlap) {
                launch(d, b);
            }
        }
        return;
    }
}

void sdc_dp_begin_backward(sdc_dp *d, int last) {
    d->armed = last && d->comm.size > 1;
    if (!d->armed) return;
    for (int k = 0; k < d->nb; k++) {
        d->b[k].launched = 0;
        d->b[k].pending = d->b[k].expected;
    }
}

sdc_status sdc_dp_finish(sdc_dp *d, sdc_error *err) {
    if (!d->armed) return SDC_OK;
    double t0 = 0;
    if (d->timing) {
        d->comm.be->synchronize(); /* the backward pass is done... */
        t0 = sdc_monotonic_s();
    }
    /* in bucket order on every rank: the collectives must match */
    for (int k = 0; k < d->nb; k++)
        if (!d->b[k].launched) launch(d, &d->b[k]);
    if (d->timing) {
        sdc_comm_sync(&d->comm); /* ...and what the reductions add after it */
        d->exposed_s += sdc_monotonic_s() - t0;
    }
    sdc_comm_join(&d->comm);
    for (int k = 0; d->bf16 && k < d->nb; k++) { /* the averages back into the fp32 gradients */
        const sdc_dp_bucket *b = &d->b[k];
        float *g = d->train[b->store]->grad;
        const uint16_t *c = (const uint16_t *)d->cbuf + d->coff[b->store]; /* the store's copy */
        if (!d->zero) {
            d->comm.be->cast(g + b->off, SDC_F32, c + b->off, SDC_BF16, b->len);
        } else {
            size_t o1, o2, tail;
            owned(d, b, &o1, &o2, &tail);
            if (b->part) d->comm.be->cast(g + o1, SDC_F32, c + o1, SDC_BF16, b->part);
            if (tail) d->comm.be->cast(g + o2, SDC_F32, c + o2, SDC_BF16, tail);
        }
    }
    d->armed = 0;
    if (!d->learned) {
        d->learned = 1;
        int all = 1;
        for (int k = 0; k < d->nb; k++) all &= d->b[k].expected > 0;
        if (!all && d->comm.rank == 0)
            SDC_INFO("data parallel: some trained parameters get no gradient; their buckets are reduced last");
    }
    if (d->mismatch)
        return sdc_fail(err, SDC_EINVAL,
                        "data parallel: a gradient arrived after its bucket was reduced (the model's graph changed "
                        "between steps); rerun with SDC_DP_NO_OVERLAP=1 and report this");
    return SDC_OK;
}

double sdc_dp_sumsq(sdc_dp *d) {
    const sdc_backend *be = d->comm.be;
    double ss = 0;
    if (!d->zero) {
        for (int i = 0; i < d->ntrain; i++) ss += be->sumsq(d->train[i]->grad, d->train[i]->total);
        return ss;
    }
    for (int k = 0; k < d->nb; k++) {
        const sdc_dp_bucket *b = &d->b[k];
        const float *g = d->train[b->store]->grad;
        size_t o1, o2, tail;
        owned(d, b, &o1, &o2, &tail);
        if (b->part) ss += be->sumsq(g + o1, b->part);
        if (tail && d->comm.rank == 0) ss += be->sumsq(g + o2, tail); /* every rank has it: count it once */
    }
    return sdc_comm_sum(&d->comm, ss);
}

void sdc_dp_scale(sdc_dp *d, float coef) {
    const sdc_backend *be = d->comm.be;
    if (!d->zero) {
        for (int i = 0; i < d->ntrain; i++) be->scale(d->train[i]->grad, d->train[i]->total, coef);
        return;
    }
    for (int k = 0; k < d->nb; k++) {
        const sdc_dp_bucket *b = &d->b[k];
        float *g = d->train[b->store]->grad;
        size_t o1, o2, tail;
        owned(d, b, &o1, &o2, &tail);
        if (b->part) be->scale(g + o1, b->part, coef);
        if (tail) be->scale(g + o2, tail, coef);
    }
}

void sdc_dp_adamw(sdc_dp *d, int i, const sdc_adamw *o, int64_t step, double lr) {
    const sdc_backend *be = d->comm.be;
    sdc_params *p = d->train[i];
    float *w = master_of(p);
    unsigned char *copy = copy_of(p);
    const size_t es = sdc_dtype_size(p->dev_dtype);
    sdc_adamw_args a;
    sdc_adamw_args_at(o, step, lr, &a);
    if (!d->zero) {
        be->adamw(w, o->m, o->v, p->grad, p->total, &a, copy, p->dev_dtype);
        return;
    }
    for (int k = 0; k < d->nb; k++) {
        const sdc_dp_bucket *b = &d->b[k];
        if (b->store != i) continue;
        size_t o1, o2, tail;
        owned(d, b, &o1, &o2, &tail);
        if (b->part)
            be->adamw(w + o1, o->m + b->packed, o->v + b->packed, p->grad + o1, b->part, &a, copy ? copy + o1 * es : NULL,
                      p->dev_dtype);
        if (tail)
            be->adamw(w + o2, o->m + b->packed + b->part, o->v + b->packed + b->part, p->grad + o2, tail, &a,
                      copy ? copy + o2 * es : NULL, p->dev_dtype);
    }
}

void sdc_dp_ema(sdc_dp *d, sdc_ema *e) {
    e->optimization_step++;
    double dec = sdc_ema_get_decay(&e->h, e->optimization_step);
    e->cur_decay = dec;
    const float omd = (float)(1.0 - dec); /* as sdc_ema_step */
    const float *w = master_of(d->train[0]);
    if (!d->zero) {
        e->be->ema(e->shadow, w, e->n, omd);
        return;
    }
    for (int k = 0; k < d->nb && d->b[k].store == 0; k++) {
        size_t o1, o2, tail;
        owned(d, &d->b[k], &o1, &o2, &tail);
        if (d->b[k].part) e->be->ema(e->shadow + o1, w + o1, d->b[k].part, omd);
        if (tail) e->be->ema(e->shadow + o2, w + o2, tail, omd);
    }
}

void sdc_dp_allgather_weights(sdc_dp *d) {
    if (!d->zero) return;
    for (int k = 0; k < d->nb; k++) {
        const sdc_dp_bucket *b = &d->b[k];
        if (!b->part) continue;
        sdc_params *p = d->train[b->store];
        unsigned char *copy = copy_of(p);
        if (copy) {
            const size_t es = sdc_dtype_size(p->dev_dtype);
            sdc_comm_allgather(&d->comm, copy + b->off * es, b->part * es);
        } else {
            sdc_comm_allgather(&d->comm, master_of(p) + b->off, b->part * sizeof(float));
        }
    }
    sdc_comm_join(&d->comm);
}

/* bucket b of a full-layout fp32 buffer made whole from its owners */
static void gather_full(sdc_dp *d, const sdc_dp_bucket *b, float *buf) {
    if (b->part) sdc_comm_allgather(&d->comm, buf + b->off, b->part * sizeof(float));
}

/* bucket b of packed moments into host[b->off ..) */
static void gather_packed(sdc_dp *d, const sdc_dp_bucket *b, const float *packed, float *host) {
    const sdc_backend *be = d->comm.be;
    size_t o1, o2, tail;
    owned(d, b, &o1, &o2, &tail);
    if (b->part) be->mem_copy(d->tmp + (o1 - b->off), packed + b->packed, b->part * sizeof(float));
    if (tail) be->mem_copy(d->tmp + (o2 - b->off), packed + b->packed + b->part, tail * sizeof(float));
    if (b->part) sdc_comm_allgather(&d->comm, d->tmp, b->part * sizeof(float));
    sdc_comm_join(&d->comm);
    if (host) be->mem_download(host + b->off, d->tmp, b->len * sizeof(float));
    else be->synchronize(); /* tmp is reused by the next bucket */
}

sdc_status sdc_dp_gather(sdc_dp *d, const sdc_adamw *opt, sdc_ema *ema, int lead_only, sdc_error *err) {
    if (!d->zero) return SDC_OK;
    sdc_dp_drop_gathered(d);
    const int keep = !lead_only || d->comm.rank == 0;
    for (int i = 0; i < d->ntrain; i++) {
        sdc_params *p = d->train[i];
        if (keep) {
            d->host_m[i] = malloc((p->total ? p->total : 1) * sizeof(float));
            d->host_v[i] = malloc((p->total ? p->total : 1) * sizeof(float));
        }
        int ok = !keep || (d->host_m[i] && d->host_v[i]);
        /* every rank must take part whatever happens here: fail after */
        for (int k = 0; k < d->nb; k++) {
            const sdc_dp_bucket *b = &d->b[k];
            if (b->store != i) continue;
            if (copy_of(p)) gather_full(d, b, master_of(p)); /* else the weights are gathered every step */
            if (ema && i == 0) gather_full(d, b, ema->shadow);
            gather_packed(d, b, opt[i].m, ok && keep ? d->host_m[i] : NULL);
            gather_packed(d, b, opt[i].v, ok && keep ? d->host_v[i] : NULL);
        }
        sdc_comm_join(&d->comm);
        if (!ok) {
            sdc_dp_drop_gathered(d);
            return sdc_fail(err, SDC_ENOMEM, "out of memory gathering the optimizer state of \"%s\"", p->component);
        }
    }
    return SDC_OK;
}

void sdc_dp_scatter_moments(sdc_dp *d, int i, const float *host_full, float *packed) {
    const sdc_backend *be = d->comm.be;
    for (int k = 0; k < d->nb; k++) {
        const sdc_dp_bucket *b = &d->b[k];
        if (b->store != i) continue;
        size_t o1, o2, tail;
        owned(d, b, &o1, &o2, &tail);
        if (b->part) be->mem_upload(packed + b->packed, host_full + o1, b->part * sizeof(float));
        if (tail) be->mem_upload(packed + b->packed + b->part, host_full + o2, tail * sizeof(float));
    }
}
