#include "pipeline/golden.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "io/safetensors.h"

sdc_status sdc_golden_open(const char *path, sdc_golden *g, sdc_error *err) {
    memset(g, 0, sizeof *g);
    sdc_weights_init(&g->w);
    g->path = sdc_strdup(path);
    if (!g->path) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
    sdc_status st = sdc_safetensors_read(path, &g->w, err);
    if (st != SDC_OK) sdc_golden_close(g);
    return st;
}

void sdc_golden_close(sdc_golden *g) {
    sdc_weights_free(&g->w);
    free(g->path);
    memset(g, 0, sizeof *g);
}

int sdc_golden_has(const sdc_golden *g, const char *key) { return sdc_weights_find(&g->w, key) != NULL; }

static sdc_status find(const sdc_golden *g, const char *key, const sdc_weight **t, int64_t *shape, int *ndim,
                       sdc_error *err) {
    *t = sdc_weights_find(&g->w, key);
    if (!*t) return sdc_fail(err, SDC_ENOTFOUND, "%s: no tensor \"%s\"", g->path, key);
    *ndim = (*t)->ndim;
    for (int i = 0; i < (*t)->ndim; i++) shape[i] = (*t)->shape[i];
    return SDC_OK;
}

sdc_status sdc_golden_f64(const sdc_golden *g, const char *key, double **data, int64_t *shape, int *ndim,
                          sdc_error *err) {
    const sdc_weight *t;
    SDC_TRY(find(g, key, &t, shape, ndim, err));
    size_t n = (size_t)sdc_weight_numel(t);
    double *d = malloc((n ? n : 1) * sizeof *d);
    if (!d) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", g->path);
    if (t->dtype == SDC_F64) {
        memcpy(d, t->data, n * sizeof *d);
    } else if (t->dtype == SDC_I64 || t->dtype == SDC_I32) {
        for (size_t i = 0; i < n; i++) {
            int64_t v;
            if (t->dtype == SDC_I64) memcpy(&v, (const char *)t->data + 8 * i, 8);
            else {
                int32_t v32;
                memcpy(&v32, (const char *)t->data + 4 * i, 4);
                v = v32;
            }
            d[i] = (double)v;
        }
    } else {
        float *f = malloc((n ? n : 1) * sizeof *f);
        if (!f) {
            free(d);
            return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", g->path);
        }
        sdc_status st = sdc_weight_to_f32(&g->w, t, f, err);
        for (size_t i = 0; st == SDC_OK && i < n; i++) d[i] = f[i];
        free(f);
        if (st != SDC_OK) {
            free(d);
            return st;
        }
    }
    *data = d;
    return SDC_OK;
}

sdc_status sdc_golden_f32(const sdc_golden *g, const char *key, float **data, int64_t *shape, int *ndim,
                          sdc_error *err) {
    double *d;
    SDC_TRY(sdc_golden_f64(g, key, &d, shape, ndim, err));
    size_t n = 1;
    for (int i = 0; i < *ndim; i++) n *= (size_t)shape[i];
    float *f = malloc((n ? n : 1) * sizeof *f);
    if (!f) {
        free(d);
        return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", g->path);
    }
    for (size_t i = 0; i < n; i++) f[i] = (float)d[i];
    free(d);
    *data = f;
    return SDC_OK;
}

const char *sdc_golden_meta(const sdc_golden *g, const char *key) { return sdc_weights_meta(&g->w, key); }

double sdc_rel_err(const float *out, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)out[i] - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * (double)ref[i];
    }
    if (den == 0) return sqrt(num);
    return sqrt(num / den);
}
