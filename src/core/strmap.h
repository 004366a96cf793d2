/* String -> index hash map (open addressing, FNV-1a). Keys are borrowed:
 * they must outlive the map. Used for tensor names and vocabularies. */
#ifndef SDC_CORE_STRMAP_H
#define SDC_CORE_STRMAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sdc_strmap {
    const char **keys;
    size_t *key_lens;
    int64_t *vals;
    size_t cap; /* power of two */
    size_t count;
} sdc_strmap;

int sdc_strmap_init(sdc_strmap *m, size_t expected);
void sdc_strmap_free(sdc_strmap *m);
/* Inserts or overwrites; returns 0, or -1 on allocation failure.
 * If old is non-NULL it receives the previous value or -1. */
int sdc_strmap_put(sdc_strmap *m, const char *key, int64_t val, int64_t *old);
int sdc_strmap_putn(sdc_strmap *m, const char *key, size_t len, int64_t val, int64_t *old);
/* Value, or -1 if absent. */
int64_t sdc_strmap_get(const sdc_strmap *m, const char *key);
int64_t sdc_strmap_getn(const sdc_strmap *m, const char *key, size_t len);

#ifdef __cplusplus
}
#endif

#endif
