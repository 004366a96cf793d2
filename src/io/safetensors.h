/* safetensors: 8-byte little-endian header length N, N bytes of JSON
 * {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
 * then the data. Read by mmap after a strict validation of the whole header;
 * written atomically. */
#ifndef SDC_IO_SAFETENSORS_H
#define SDC_IO_SAFETENSORS_H

#include "io/weights.h"

/* Limits checked before anything is allocated from what the header claims. */
#define SDC_ST_MAX_HEADER (100u << 20) /* the reference implementation's limit */
#define SDC_ST_MAX_TENSORS 1000000
#define SDC_ST_MAX_NAME 4096

/* Validates and maps path, adding its tensors (names as stored) and
 * metadata to w. */
sdc_status sdc_safetensors_read(const char *path, sdc_weights *w, sdc_error *err);
/* A "*.safetensors.index.json" (weight_map: name -> shard file): reads every
 * shard and checks each tensor lives in the shard the index says. */
sdc_status sdc_safetensors_read_index(const char *index_path, sdc_weights *w, sdc_error *err);

typedef struct sdc_st_tensor {
    const char *name;
    sdc_dtype dtype;
    int ndim;
    const int64_t *shape;
    const void *data; /* numel * dtype size bytes */
} sdc_st_tensor;

/* Writes tensors (in the given order) and optional string metadata, through
 * a temporary file renamed into place. */
sdc_status sdc_safetensors_write(const char *path, const sdc_st_tensor *tensors, size_t n, const sdc_kv *meta,
                                 size_t nmeta, sdc_error *err);

#endif
