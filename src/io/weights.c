#include "io/weights.h"

#include <stdlib.h>
#include <string.h>

void sdc_weights_init(sdc_weights *w) { memset(w, 0, sizeof *w); }

void sdc_weights_free(sdc_weights *w) {
    for (size_t i = 0; i < w->count; i++) {
        free(w->items[i].name);
        free(w->items[i].src_name);
    }
    free(w->items);
    sdc_strmap_free(&w->index);
    for (size_t i = 0; i < w->nfiles; i++) {
        sdc_unmap_file(&w->files[i].map);
        free(w->files[i].path);
    }
    free(w->files);
    for (size_t i = 0; i < w->nowned; i++) free(w->owned[i]);
    free(w->owned);
    for (size_t i = 0; i < w->nmeta; i++) {
        free(w->metadata[i].key);
        free(w->metadata[i].value);
    }
    free(w->metadata);
    memset(w, 0, sizeof *w);
}

sdc_status sdc_weights_map_file(sdc_weights *w, const char *path, int *file_index, sdc_error *err) {
    sdc_weight_file *f = realloc(w->files, (w->nfiles + 1) * sizeof *f);
    if (!f) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
    w->files = f;
    sdc_weight_file *nf = &w->files[w->nfiles];
    memset(nf, 0, sizeof *nf);
    SDC_TRY(sdc_map_file(path, &nf->map, err));
    nf->path = sdc_strdup(path);
    if (!nf->path) {
        sdc_unmap_file(&nf->map);
        return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
    }
    *file_index = (int)w->nfiles++;
    return SDC_OK;
}

sdc_status sdc_weights_own(sdc_weights *w, void *buf, sdc_error *err) {
    void **o = realloc(w->owned, (w->nowned + 1) * sizeof *o);
    if (!o) {
        free(buf);
        return sdc_fail(err, SDC_ENOMEM, "out of memory");
    }
    w->owned = o;
    w->owned[w->nowned++] = buf;
    return SDC_OK;
}

sdc_status sdc_weights_add(sdc_weights *w, const char *name, const char *src_name, sdc_dtype dtype, int ndim,
                           const int64_t *shape, const void *data, size_t nbytes, int file, const char *what,
                           sdc_error *err) {
    if (ndim < 0 || ndim > SDC_MAX_DIMS)
        return sdc_fail(err, SDC_ELIMIT, "%s: tensor \"%s\" has %d dimensions, at most %d supported", what, src_name,
                        ndim, SDC_MAX_DIMS);
    if (sdc_strmap_get(&w->index, name) >= 0)
        return sdc_fail(err, SDC_EFORMAT, "%s: tensor \"%s\" appears twice", what, name);
    if (w->count == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 256;
        sdc_weight *ni = realloc(w->items, nc * sizeof *ni);
        if (!ni) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", what);
        /* the index borrows item names, which are separate allocations: still valid */
        w->items = ni;
        w->cap = nc;
    }
    sdc_weight *t = &w->items[w->count];
    memset(t, 0, sizeof *t);
    t->name = sdc_strdup(name);
    t->src_name = sdc_strdup(src_name ? src_name : name);
    if (!t->name || !t->src_name) {
        free(t->name);
        free(t->src_name);
        return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", what);
    }
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->data = data;
    t->nbytes = nbytes;
    t->file = file;
    if (sdc_strmap_put(&w->index, t->name, (int64_t)w->count, NULL) != 0) {
        free(t->name);
        free(t->src_name);
        return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", what);
    }
    w->count++;
    return SDC_OK;
}

sdc_status sdc_weights_add_meta(sdc_weights *w, const char *key, const char *value, sdc_error *err) {
    sdc_kv *m = realloc(w->metadata, (w->nmeta + 1) * sizeof *m);
    if (!m) return sdc_fail(err, SDC_ENOMEM, "out of memory");
    w->metadata = m;
    m[w->nmeta].key = sdc_strdup(key);
    m[w->nmeta].value = sdc_strdup(value);
    if (!m[w->nmeta].key || !m[w->nmeta].value) {
        free(m[w->nmeta].key);
        free(m[w->nmeta].value);
        return sdc_fail(err, SDC_ENOMEM, "out of memory");
    }
    w->nmeta++;
    return SDC_OK;
}

const char *sdc_weights_meta(const sdc_weights *w, const char *key) {
    for (size_t i = 0; i < w->nmeta; i++)
        if (strcmp(w->metadata[i].key, key) == 0) return w->metadata[i].value;
    return NULL;
}

const sdc_weight *sdc_weights_find(const sdc_weights *w, const char *name) {
    int64_t i = sdc_strmap_get(&w->index, name);
    return i >= 0 ? &w->items[i] : NULL;
}

int64_t sdc_weight_numel(const sdc_weight *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

const char *sdc_weight_path(const sdc_weights *w, const sdc_weight *t) {
    return t->file >= 0 && (size_t)t->file < w->nfiles ? w->files[t->file].path : "(memory)";
}

sdc_status sdc_weight_to_f32(const sdc_weights *w, const sdc_weight *t, float *out, sdc_error *err) {
    if (sdc_convert_to_f32(out, t->data, t->dtype, (size_t)sdc_weight_numel(t)) != 0)
        return sdc_fail(err, SDC_EUNSUPPORTED, "%s: tensor \"%s\" has dtype %s, expected a floating type",
                        sdc_weight_path(w, t), t->src_name, sdc_dtype_name(t->dtype));
    return SDC_OK;
}

int64_t sdc_weights_param_count(const sdc_weights *w, const char *prefix) {
    size_t lp = strlen(prefix);
    int64_t n = 0;
    for (size_t i = 0; i < w->count; i++)
        if (strncmp(w->items[i].name, prefix, lp) == 0) n += sdc_weight_numel(&w->items[i]);
    return n;
}

sdc_status sdc_weights_move_storage(sdc_weights *dst, sdc_weights *src, int *file_base, sdc_error *err) {
    /* grow all three arrays first, so that a failure leaves both sets intact */
    if (src->nfiles) {
        sdc_weight_file *f = realloc(dst->files, (dst->nfiles + src->nfiles) * sizeof *f);
        if (!f) return sdc_fail(err, SDC_ENOMEM, "out of memory");
        dst->files = f;
    }
    if (src->nowned) {
        void **o = realloc(dst->owned, (dst->nowned + src->nowned) * sizeof *o);
        if (!o) return sdc_fail(err, SDC_ENOMEM, "out of memory");
        dst->owned = o;
    }
    if (src->nmeta) {
        sdc_kv *m = realloc(dst->metadata, (dst->nmeta + src->nmeta) * sizeof *m);
        if (!m) return sdc_fail(err, SDC_ENOMEM, "out of memory");
        dst->metadata = m;
    }
    *file_base = (int)dst->nfiles;
    if (src->nfiles) memcpy(dst->files + dst->nfiles, src->files, src->nfiles * sizeof *src->files);
    if (src->nowned) memcpy(dst->owned + dst->nowned, src->owned, src->nowned * sizeof *src->owned);
    if (src->nmeta) memcpy(dst->metadata + dst->nmeta, src->metadata, src->nmeta * sizeof *src->metadata);
    dst->nfiles += src->nfiles;
    dst->nowned += src->nowned;
    dst->nmeta += src->nmeta;
    free(src->files);
    free(src->owned);
    free(src->metadata);
    src->files = NULL;
    src->owned = NULL;
    src->metadata = NULL;
    src->nfiles = src->nowned = src->nmeta = 0;
    return SDC_OK;
}
