#include "core/tensor.h"

#include <stdio.h>
#include <string.h>

int sdc_shape_numel(int ndim, const int64_t *shape, int64_t *out) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] != 0 && n > INT64_MAX / shape[i]) return -1;
        n *= shape[i];
    }
    *out = n;
    return 0;
}

int64_t sdc_tensor_numel(const sdc_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t sdc_tensor_nbytes(const sdc_tensor *t) {
    return (size_t)sdc_tensor_numel(t) * sdc_dtype_size(t->dtype);
}

sdc_tensor sdc_tensor_make(sdc_dtype dtype, int ndim, const int64_t *shape, void *data) {
    sdc_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dtype;
    t.device.type = SDC_CPU;
    t.ndim = ndim;
    for (int i = 0; i < ndim && i < SDC_MAX_DIMS; i++) t.shape[i] = shape[i];
    t.data = data;
    return t;
}

int sdc_tensor_same_shape(const sdc_tensor *a, const sdc_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

char *sdc_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t len = 0;
    len += (size_t)snprintf(buf + len, cap > len ? cap - len : 0, "[");
    for (int i = 0; i < ndim; i++)
        len += (size_t)snprintf(buf + len, cap > len ? cap - len : 0, "%s%lld", i ? ", " : "",
                                (long long)shape[i]);
    snprintf(buf + len, cap > len ? cap - len : 0, "]");
    return buf;
}
