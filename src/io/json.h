/* JSON files (configs, model_index.json, vocabularies) through cJSON, with
 * errors that name the file, the line and column, and the key. */
#ifndef SDC_IO_JSON_H
#define SDC_IO_JSON_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* Limits checked before cJSON allocates anything. A JSON file sdc reads
 * whole (configs, model_index.json, vocab.json, tokenizer.json, shard
 * indexes: the largest real ones are a few MB) may be at most
 * SDC_JSON_MAX_FILE bytes. Any JSON text may hold at most SDC_JSON_MAX_VALUES
 * values: cJSON spends ~64 bytes per value, so "[0,0,0,...]" would otherwise
 * cost 32x its size (a 100 MB safetensors header, 3 GB). */
#define SDC_JSON_MAX_FILE (64u << 20)
#define SDC_JSON_MAX_VALUES (8u << 20)

/* Parses text (len bytes, need not be NUL-terminated) strictly: no trailing
 * garbage, no embedded NUL, at most SDC_JSON_MAX_VALUES values (SDC_ELIMIT).
 * `what` names the source in messages. */
sdc_status sdc_json_parse(const char *text, size_t len, const char *what, cJSON **out, sdc_error *err);
/* Reads and parses a file of at most SDC_JSON_MAX_FILE bytes (SDC_ELIMIT,
 * checked before reading); the top level must be an object. */
sdc_status sdc_json_load_object(const char *path, cJSON **out, sdc_error *err);

/* Typed getters for an object's member. Missing key: the default is kept
 * and SDC_OK is returned; present with the wrong type: an error naming
 * `what` (the file) and the key. JSON null counts as missing. */
sdc_status sdc_json_get_int(const cJSON *obj, const char *key, int64_t *out, const char *what, sdc_error *err);
sdc_status sdc_json_get_double(const cJSON *obj, const char *key, double *out, const char *what, sdc_error *err);
sdc_status sdc_json_get_bool(const cJSON *obj, const char *key, int *out, const char *what, sdc_error *err);
/* Borrowed pointer into obj (NULL if missing). */
sdc_status sdc_json_get_string(const cJSON *obj, const char *key, const char **out, const char *what, sdc_error *err);
/* An int array, or a single int broadcast to n (attention_head_dim style).
 * *count receives the number of entries read (<= cap). */
sdc_status sdc_json_get_int_list(const cJSON *obj, const char *key, int64_t *out, int cap, int *count,
                                 const char *what, sdc_error *err);

/* A config object as config.json text (indented, ending in a newline;
 * malloc'd, NULL when out of memory). cJSON prints 1.0 as 1, and
 * transformers 5's config classes refuse an int where they declare a float:
 * the float fields of CLIP's configs keep a decimal point. */
char *sdc_json_print_config(const cJSON *cfg);

/* True if d is an integer exactly representable as int64. */
int sdc_json_is_int(double d);

#endif
