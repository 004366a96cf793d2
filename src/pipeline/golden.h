/* Golden files: a safetensors file of named inputs and expected outputs made
 * by the PyTorch reference (layout: tests/data/README or
 * ../shared/reference/README.md). `sdc check` and the tests read them here. */
#ifndef SDC_PIPELINE_GOLDEN_H
#define SDC_PIPELINE_GOLDEN_H

#include <stddef.h>
#include <stdint.h>

#include "io/weights.h"

typedef struct sdc_golden {
    char *path;
    sdc_weights w;
} sdc_golden;

sdc_status sdc_golden_open(const char *path, sdc_golden *g, sdc_error *err);
void sdc_golden_close(sdc_golden *g);
int sdc_golden_has(const sdc_golden *g, const char *key);
/* A tensor converted to fp32 (floats) or kept as exact integers in doubles
 * (int64 timesteps, ids): *data malloc'd, shape into shape[8], rank into *ndim. */
sdc_status sdc_golden_f32(const sdc_golden *g, const char *key, float **data, int64_t *shape, int *ndim,
                          sdc_error *err);
sdc_status sdc_golden_f64(const sdc_golden *g, const char *key, double **data, int64_t *shape, int *ndim,
                          sdc_error *err);
/* Metadata value (a JSON string in the reference packs) or NULL. */
const char *sdc_golden_meta(const sdc_golden *g, const char *key);

/* ‖out − ref‖ / ‖ref‖ in double (‖out‖ when ref is all zero). */
double sdc_rel_err(const float *out, const float *ref, size_t n);

#endif
