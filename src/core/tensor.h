/* A tensor: dtype, device, shape and a pointer to contiguous row-major data.
 * Tensors do not own memory: data comes from an arena, a mapped file or a
 * planned buffer (DESIGN.md principle 4). Strides are deliberately absent:
 * every op reads and writes contiguous data, and views are made by offsetting
 * the pointer along the outermost dimension. */
#ifndef SDC_CORE_TENSOR_H
#define SDC_CORE_TENSOR_H

#include <stdint.h>

#include "core/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SDC_MAX_DIMS 8

typedef enum sdc_device_type { SDC_CPU = 0, SDC_CUDA = 1 } sdc_device_type;

typedef struct sdc_device {
    sdc_device_type type;
    int index; /* CUDA ordinal; 0 for the CPU */
} sdc_device;

typedef struct sdc_tensor {
    sdc_dtype dtype;
    sdc_device device;
    int ndim;
    int64_t shape[SDC_MAX_DIMS];
    void *data;
} sdc_tensor;

/* Number of elements (1 for a scalar of ndim 0). */
int64_t sdc_tensor_numel(const sdc_tensor *t);
size_t sdc_tensor_nbytes(const sdc_tensor *t);
/* Builds a CPU tensor header over data. */
sdc_tensor sdc_tensor_make(sdc_dtype dtype, int ndim, const int64_t *shape, void *data);
int sdc_tensor_same_shape(const sdc_tensor *a, const sdc_tensor *b);
/* "[2, 4, 64, 64]" into buf; returns buf. */
char *sdc_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape);
/* Product of shape with overflow check: 0 on success, -1 on overflow. */
int sdc_shape_numel(int ndim, const int64_t *shape, int64_t *out);

#ifdef __cplusplus
}
#endif

#endif
