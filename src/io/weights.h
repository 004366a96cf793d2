/* A set of named tensors read from model files, by diffusers name.
 *
 * Every loader (safetensors, sharded safetensors, single-file checkpoints,
 * .ckpt pickles) fills an sdc_weights; the key maps at the edge rename the
 * file's keys to diffusers' names (DESIGN.md principle 1), so the models
 * above never see a file format. Data stays in the mapped files (no copy)
 * unless a loader had to materialise it (e.g. a strided pickle tensor). */
#ifndef SDC_IO_WEIGHTS_H
#define SDC_IO_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/strmap.h"
#include "core/tensor.h"

typedef struct sdc_weight {
    char *name;     /* diffusers name (after key mapping) */
    char *src_name; /* key as stored in the file */
    sdc_dtype dtype;
    int ndim;
    int64_t shape[SDC_MAX_DIMS];
    const void *data; /* nbytes bytes, no alignment guarantee */
    size_t nbytes;
    int file; /* index into files[] (-1 if materialised) */
} sdc_weight;

typedef struct sdc_weight_file {
    char *path;
    sdc_mapped_file map;
} sdc_weight_file;

typedef struct sdc_kv {
    char *key;
    char *value;
} sdc_kv;

typedef struct sdc_weights {
    sdc_weight *items;
    size_t count, cap;
    sdc_strmap index; /* name -> item */
    sdc_weight_file *files;
    size_t nfiles;
    void **owned; /* buffers owned by the set */
    size_t nowned;
    sdc_kv *metadata; /* safetensors __metadata__ (of every file read) */
    size_t nmeta;
} sdc_weights;

void sdc_weights_init(sdc_weights *w);
void sdc_weights_free(sdc_weights *w);

/* Maps path and records it; *file_index receives its index. */
sdc_status sdc_weights_map_file(sdc_weights *w, const char *path, int *file_index, sdc_error *err);
/* Takes ownership of a malloc'd buffer (freed with the set). */
sdc_status sdc_weights_own(sdc_weights *w, void *buf, sdc_error *err);
/* Adds a tensor; a duplicate name is an error naming `what`. Names are copied. */
sdc_status sdc_weights_add(sdc_weights *w, const char *name, const char *src_name, sdc_dtype dtype, int ndim,
                           const int64_t *shape, const void *data, size_t nbytes, int file, const char *what,
                           sdc_error *err);
sdc_status sdc_weights_add_meta(sdc_weights *w, const char *key, const char *value, sdc_error *err);
const char *sdc_weights_meta(const sdc_weights *w, const char *key);

const sdc_weight *sdc_weights_find(const sdc_weights *w, const char *name);
int64_t sdc_weight_numel(const sdc_weight *t);
/* Path of the file a weight came from (or "(memory)"). */
const char *sdc_weight_path(const sdc_weights *w, const sdc_weight *t);
/* Converts a floating weight to fp32 into out (numel floats). */
sdc_status sdc_weight_to_f32(const sdc_weights *w, const sdc_weight *t, float *out, sdc_error *err);
/* Sum of numel over all weights whose name starts with prefix ("" for all). */
int64_t sdc_weights_param_count(const sdc_weights *w, const char *prefix);

/* Moves src's storage (mapped files, owned buffers, metadata) into dst. src
 * keeps its tensor list, whose data now lives in dst's storage; a tensor of
 * src with file index f is file (*file_base + f) of dst. This lets a key map
 * read a file into one set and emit renamed tensors into another without
 * copying data. On failure nothing is moved. */
sdc_status sdc_weights_move_storage(sdc_weights *dst, sdc_weights *src, int *file_base, sdc_error *err);

#endif
