#include "nn/params.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/fs.h"
#include "core/rng.h"

#ifndef _OPENMP /* built with NO_OMP=1: the loop runs serially */
#pragma GCC diagnostic ignored "-Wunknown-pragmas"
#endif

static void release_device(sdc_params *p, int rebind);

sdc_status sdc_params_init(sdc_params *p, const char *component, sdc_error *err) {
    memset(p, 0, sizeof *p);
    p->component = sdc_strdup(component);
    if (!p->component || sdc_strmap_init(&p->index, 1024) != 0) {
        sdc_params_free(p);
        return sdc_fail(err, SDC_ENOMEM, "%s: out of memory for the parameter table", component);
    }
    return SDC_OK;
}

void sdc_params_free(sdc_params *p) {
    for (size_t i = 0; i < p->count; i++) free(p->items[i].name);
    free(p->items);
    sdc_strmap_free(&p->index);
    if (p->be) release_device(p, 0);
    free(p->data);
    free(p->grad);
    free(p->component);
    memset(p, 0, sizeof *p);
}

void sdc_params_declare(sdc_params *p, sdc_tensor *slot, sdc_init init, int ndim, const int64_t *shape,
                        const char *fmt, ...) {
    *slot = sdc_tensor_make(SDC_F32, ndim, shape, NULL);
    if (p->status != SDC_OK) return;
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (p->count == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 256;
        sdc_param *items = realloc(p->items, cap * sizeof *items);
        if (!items) {
            p->status = sdc_fail(&p->err, SDC_ENOMEM, "%s: out of memory declaring %s", p->component, name);
            return;
        }
        p->items = items;
        p->cap = cap;
    }
    sdc_param *it = &p->items[p->count];
    memset(it, 0, sizeof *it);
    it->name = sdc_strdup(name);
    it->slot = slot;
    it->numel = sdc_tensor_numel(slot);
    it->init = init;
    it->offset = p->total;
    if (!it->name) {
        p->status = sdc_fail(&p->err, SDC_ENOMEM, "%s: out of memory declaring %s", p->component, name);
        return;
    }
    int64_t old = -1;
    if (sdc_strmap_put(&p->index, it->name, (int64_t)p->count, &old) != 0 || old >= 0) {
        /* A duplicate is a bug in a model builder, reported as an error so it
         * shows which name. */
        p->status = sdc_fail(&p->err, old >= 0 ? SDC_EINVAL : SDC_ENOMEM, "%s: parameter %s declared twice",
                             p->component, name);
        free(it->name);
        return;
    }
    p->count++;
    /* Keep every parameter 16-element aligned (64 bytes) for vector loads. */
    p->total += ((size_t)it->numel + 15) & ~(size_t)15;
}

sdc_status sdc_params_alloc(sdc_params *p, sdc_error *err) {
    if (p->status != SDC_OK) {
        if (err) *err = p->err;
        return p->status;
    }
    free(p->data);
    p->data = aligned_alloc(64, (p->total ? p->total : 16) * sizeof(float));
    if (!p->data)
        return sdc_fail(err, SDC_ENOMEM, "%s: cannot allocate %.1f MiB of parameters", p->component,
                        (double)p->total * 4.0 / (1 << 20));
    memset(p->data, 0, p->total * sizeof(float));
    for (size_t i = 0; i < p->count; i++) p->items[i].slot->data = p->data + p->items[i].offset;
    return SDC_OK;
}

sdc_status sdc_params_alloc_grad(sdc_params *p, sdc_error *err) {
    const size_t bytes = (p->total ? p->total : 16) * sizeof(float);
    if (p->be) {
        /* on a device: gradients there, and fp32 master weights beside the
         * bf16/fp16 ones the model computes with */
        if (p->grad) p->be->mem_free(p->grad, bytes);
        p->grad = p->be->mem_alloc(bytes);
        if (p->grad && p->dev_dtype != SDC_F32 && !p->master) {
            p->master = p->be->mem_alloc(bytes);
            if (p->master) p->be->mem_upload(p->master, p->data, p->total * sizeof(float));
        }
        if (!p->grad || (p->dev_dtype != SDC_F32 && !p->master))
            return sdc_fail(err, SDC_ENOMEM, "%s: cannot allocate %.1f MiB of gradients and master weights on the GPU",
                            p->component, (double)p->total * 8.0 / (1 << 20));
        return SDC_OK;
    }
    free(p->grad);
    p->grad = aligned_alloc(64, bytes);
    if (!p->grad)
        return sdc_fail(err, SDC_ENOMEM, "%s: cannot allocate %.1f MiB of gradients", p->component,
                        (double)p->total * 4.0 / (1 << 20));
    memset(p->grad, 0, p->total * sizeof(float));
    return SDC_OK;
}

static void bind_slots(sdc_params *p, void *base, sdc_dtype dtype, sdc_device d) {
    const size_t es = sdc_dtype_size(dtype);
    for (size_t i = 0; i < p->count; i++) {
        sdc_tensor *t = p->items[i].slot;
        t->data = (unsigned char *)base + p->items[i].offset * es;
        t->dtype = dtype;
        t->device = d;
    }
}

sdc_status sdc_params_to_device(sdc_params *p, const sdc_backend *be, sdc_device d, sdc_dtype dtype,
                                sdc_error *err) {
    SDC_ASSERT(p->data && !p->be && !p->grad);
    if (d.type == SDC_CPU) {
        SDC_ASSERT(dtype == SDC_F32);
        return SDC_OK;
    }
    const size_t n = p->total ? p->total : 16, es = sdc_dtype_size(dtype);
    void *dev = be->mem_alloc(n * es);
    if (!dev)
        return sdc_fail(err, SDC_ENOMEM, "%s: cannot allocate %.1f MiB of weights on the GPU", p->component,
                        (double)n * (double)es / (1 << 20));
    /* upload as fp32 through the master buffer's place, then cast */
    if (dtype == SDC_F32) {
        be->mem_upload(dev, p->data, p->total * sizeof(float));
    } else {
        float *tmp = be->mem_alloc(n * sizeof(float));
        if (!tmp) {
            be->mem_free(dev, n * es);
            return sdc_fail(err, SDC_ENOMEM, "%s: cannot allocate %.1f MiB on the GPU", p->component,
                            (double)n * 4.0 / (1 << 20));
        }
        be->mem_upload(tmp, p->data, p->total * sizeof(float));
        be->cast(dev, dtype, tmp, SDC_F32, p->total);
        be->mem_free(tmp, n * sizeof(float));
    }
    p->be = be;
    p->dev = dev;
    p->dev_dtype = dtype;
    p->master = dtype == SDC_F32 ? dev : NULL;
    p->device = d;
    bind_slots(p, dev, dtype, d);
    return SDC_OK;
}

void sdc_params_sync_host(sdc_params *p) {
    if (!p->be) return;
    if (p->master) p->be->mem_download(p->data, p->master, p->total * sizeof(float));
    else {
        /* inference-only bf16/fp16 weights: the host copy was never changed */
    }
}

void sdc_params_sync_device(sdc_params *p) {
    if (!p->be) return;
    if (p->master) p->be->mem_upload(p->master, p->data, p->total * sizeof(float));
    if (p->dev != p->master) {
        float *tmp = p->be->mem_alloc((p->total ? p->total : 16) * sizeof(float));
        SDC_ASSERT(tmp); /* a transient buffer the size of the master copy that was just freed or exists */
        p->be->mem_upload(tmp, p->data, p->total * sizeof(float));
        p->be->cast(p->dev, p->dev_dtype, tmp, SDC_F32, p->total);
        p->be->mem_free(tmp, (p->total ? p->total : 16) * sizeof(float));
    }
}

void sdc_params_refresh_compute(sdc_params *p) {
    if (p->be && p->master && p->dev != p->master) p->be->cast(p->dev, p->dev_dtype, p->master, SDC_F32, p->total);
}

/* Frees the device buffers and (rebind) points the slots at the host copy;
 * not while freeing: the modules holding the slots may be gone already. */
static void release_device(sdc_params *p, int rebind) {
    const size_t n = p->total ? p->total : 16;
    if (p->master && p->master != p->dev) p->be->mem_free(p->master, n * sizeof(float));
    p->be->mem_free(p->dev, n * sdc_dtype_size(p->dev_dtype));
    if (p->grad) {
        p->be->mem_free(p->grad, n * sizeof(float));
        p->grad = NULL;
    }
    p->be = NULL;
    p->dev = NULL;
    p->master = NULL;
    p->device = (sdc_device){SDC_CPU, 0};
    if (rebind) bind_slots(p, p->data, SDC_F32, p->device);
}

void sdc_params_to_host(sdc_params *p) {
    if (!p->be) return;
    sdc_params_sync_host(p);
    release_device(p, 1);
}

sdc_param *sdc_params_find(const sdc_params *p, const char *name) {
    int64_t i = sdc_strmap_get(&p->index, name);
    return i >= 0 ? &p->items[i] : NULL;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

sdc_status sdc_params_load(sdc_params *p, const sdc_weights *w, const char *const *ignore, size_t *unused,
                           sdc_error *err) {
    SDC_ASSERT(p->data);
    char key[600];
    for (size_t i = 0; i < p->count; i++) {
        sdc_param *it = &p->items[i];
        snprintf(key, sizeof key, "%s.%s", p->component, it->name);
        const sdc_weight *t = sdc_weights_find(w, key);
        if (!t) return sdc_fail(err, SDC_ENOTFOUND, "%s: missing tensor %s", p->component, it->name);
        int same = t->ndim == it->slot->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == it->slot->shape[d];
        /* Conv 1×1 stored as a linear weight (or the reverse) is the same data. */
        if (!same && sdc_weight_numel(t) == it->numel) {
            int64_t a = 1, b = 1;
            for (int d = 2; d < t->ndim; d++) a *= t->shape[d];
            for (int d = 2; d < it->slot->ndim; d++) b *= it->slot->shape[d];
            same = a == 1 && b == 1 && t->shape[0] == it->slot->shape[0] &&
                   (t->ndim < 2 || it->slot->ndim < 2 || t->shape[1] == it->slot->shape[1]);
        }
        if (!same) {
            char want[96], got[96];
            sdc_shape_str(want, sizeof want, it->slot->ndim, it->slot->shape);
            sdc_shape_str(got, sizeof got, t->ndim, t->shape);
            return sdc_fail(err, SDC_EFORMAT, "%s: tensor \"%s\" has shape %s, the model's config needs %s",
                            sdc_weight_path(w, t), t->src_name, got, want);
        }
        SDC_TRY(sdc_weight_to_f32(w, t, it->slot->data, err));
        it->loaded = 1;
    }
    if (unused) {
        size_t n = 0, plen = strlen(p->component);
        for (size_t i = 0; i < w->count; i++) {
            const char *name = w->items[i].name;
            if (strncmp(name, p->component, plen) != 0 || name[plen] != '.') continue;
            if (sdc_params_find(p, name + plen + 1)) continue;
            int skip = 0;
            for (const char *const *ig = ignore; ig && *ig && !skip; ig++) skip = ends_with(name, *ig);
            if (!skip) n++;
        }
        *unused = n;
    }
    return SDC_OK;
}

void sdc_params_init_random(sdc_params *p, uint64_t seed) {
    SDC_ASSERT(p->data);
    /* each parameter has its own stream, so they fill in parallel with the
     * same values for any thread count (an SDXL UNet is 2.6 G values) */
    const long n = (long)p->count;
#pragma omp parallel for schedule(dynamic, 1)
    for (long i = 0; i < n; i++) {
        sdc_param *it = &p->items[i];
        float *d = it->slot->data;
        /* One stream per parameter (seed, index), so adding a parameter does
         * not change the others. */
        sdc_rng r;
        sdc_rng_init(&r, seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(i + 1)));
        switch (it->init.kind) {
        case SDC_INIT_ZERO: memset(d, 0, (size_t)it->numel * sizeof(float)); break;
        case SDC_INIT_ONE:
            for (int64_t j = 0; j < it->numel; j++) d[j] = 1.0f;
            break;
        case SDC_INIT_UNIFORM:
            sdc_rng_fill_uniform(&r, d, (size_t)it->numel);
            for (int64_t j = 0; j < it->numel; j++) d[j] = (2.0f * d[j] - 1.0f) * it->init.a;
            break;
        case SDC_INIT_NORMAL:
            sdc_rng_fill_normal(&r, d, (size_t)it->numel);
            for (int64_t j = 0; j < it->numel; j++) d[j] *= it->init.a;
            break;
        }
    }
}

char *sdc_pname(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    SDC_ASSERT(n >= 0 && (size_t)n < cap);
    return buf;
}

const float *sdc_params_host_of(const sdc_params *p, const sdc_tensor *t) {
    if (!p->be) return t->data;
    size_t off = (size_t)((const unsigned char *)t->data - (const unsigned char *)p->dev) / sdc_dtype_size(p->dev_dtype);
    SDC_ASSERT(off < p->total);
    return p->data + off;
}
