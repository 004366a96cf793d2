#include "core/strmap.h"

#include <stdlib.h>
#include <string.h>

static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

int sdc_strmap_init(sdc_strmap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    size_t cap = 16;
    while (cap < expected * 2) cap <<= 1;
    m->keys = calloc(cap, sizeof *m->keys);
    m->key_lens = calloc(cap, sizeof *m->key_lens);
    m->vals = calloc(cap, sizeof *m->vals);
    if (!m->keys || !m->key_lens || !m->vals) {
        sdc_strmap_free(m);
        return -1;
    }
    m->cap = cap;
    return 0;
}

void sdc_strmap_free(sdc_strmap *m) {
    free(m->keys);
    free(m->key_lens);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static size_t find_slot(const sdc_strmap *m, const char *key, size_t len) {
    size_t i = (size_t)fnv1a(key, len) & (m->cap - 1);
    while (m->keys[i] && !(m->key_lens[i] == len && memcmp(m->keys[i], key, len) == 0))
        i = (i + 1) & (m->cap - 1);
    return i;
}

static int grow(sdc_strmap *m) {
    sdc_strmap n;
    if (sdc_strmap_init(&n, m->cap) != 0) return -1; /* doubles: init uses 2x expected */
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i]) {
            size_t j = find_slot(&n, m->keys[i], m->key_lens[i]);
            n.keys[j] = m->keys[i];
            n.key_lens[j] = m->key_lens[i];
            n.vals[j] = m->vals[i];
            n.count++;
        }
    sdc_strmap_free(m);
    *m = n;
    return 0;
}

int sdc_strmap_putn(sdc_strmap *m, const char *key, size_t len, int64_t val, int64_t *old) {
    if (m->cap == 0 && sdc_strmap_init(m, 8) != 0) return -1;
    if ((m->count + 1) * 2 > m->cap && grow(m) != 0) return -1;
    size_t i = find_slot(m, key, len);
    if (old) *old = m->keys[i] ? m->vals[i] : -1;
    if (!m->keys[i]) {
        m->keys[i] = key;
        m->key_lens[i] = len;
        m->count++;
    }
    m->vals[i] = val;
    return 0;
}

int sdc_strmap_put(sdc_strmap *m, const char *key, int64_t val, int64_t *old) {
    return sdc_strmap_putn(m, key, strlen(key), val, old);
}

int64_t sdc_strmap_getn(const sdc_strmap *m, const char *key, size_t len) {
    if (m->cap == 0) return -1;
    size_t i = find_slot(m, key, len);
    return m->keys[i] ? m->vals[i] : -1;
}

int64_t sdc_strmap_get(const sdc_strmap *m, const char *key) { return sdc_strmap_getn(m, key, strlen(key)); }
