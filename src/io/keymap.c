/* Helpers shared by the key maps (keymap_unet.c, keymap_vae.c, keymap_clip.c). */
#include "io/keymap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sdc_status add(sdc_keymap *km, size_t i, const char *name, int ndim, const int64_t *shape, const void *data,
                      size_t nbytes, int file, sdc_error *err) {
    const sdc_weight *t = &km->src->items[i];
    SDC_TRY(sdc_weights_add(km->dst, name, t->src_name, t->dtype, ndim, shape, data, nbytes, file, km->path, err));
    if (km->state[i] != SDC_KM_MAPPED) km->nmapped++;
    km->state[i] = SDC_KM_MAPPED;
    return SDC_OK;
}

static int dst_file(const sdc_keymap *km, const sdc_weight *t) { return t->file >= 0 ? km->file_base + t->file : -1; }

sdc_status sdc_km_emit(sdc_keymap *km, size_t i, const char *name, sdc_error *err) {
    const sdc_weight *t = &km->src->items[i];
    return add(km, i, name, t->ndim, t->shape, t->data, t->nbytes, dst_file(km, t), err);
}

sdc_status sdc_km_emit_view(sdc_keymap *km, size_t i, const char *name, int ndim, const int64_t *shape,
                            size_t byte_offset, size_t nbytes, sdc_error *err) {
    const sdc_weight *t = &km->src->items[i];
    SDC_ASSERT(byte_offset + nbytes <= t->nbytes);
    return add(km, i, name, ndim, shape, (const unsigned char *)t->data + byte_offset, nbytes, dst_file(km, t), err);
}

sdc_status sdc_km_emit_owned(sdc_keymap *km, size_t i, const char *name, int ndim, const int64_t *shape, void *buf,
                             size_t nbytes, sdc_error *err) {
    SDC_TRY(sdc_weights_own(km->dst, buf, err)); /* frees buf on failure */
    return add(km, i, name, ndim, shape, buf, nbytes, -1, err);
}

const char *sdc_km_after(const char *s, const char *prefix) {
    size_t n = strlen(prefix);
    return strncmp(s, prefix, n) == 0 ? s + n : NULL;
}

int sdc_km_is_wb(const char *s) { return s && (strcmp(s, "weight") == 0 || strcmp(s, "bias") == 0); }

int sdc_km_map_param(const char *tail, const char *const map[][2], size_t n, char *out, size_t cap) {
    for (size_t k = 0; k < n; k++) {
        const char *r = sdc_km_after(tail, map[k][0]);
        if (sdc_km_is_wb(r)) {
            snprintf(out, cap, "%s%s", map[k][1], r);
            return (int)k;
        }
    }
    return -1;
}

int sdc_km_index(const char **s) {
    const char *p = *s;
    int v = 0, n = 0;
    while (*p >= '0' && *p <= '9') {
        if (n == 4) return -1;
        v = v * 10 + (*p++ - '0');
        n++;
    }
    /* "01" would name the same block as "1": refuse it rather than alias */
    if (n == 0 || (n > 1 && **s == '0')) return -1;
    if (*p == '.') p++;
    else if (*p) return -1;
    *s = p;
    return v;
}

int sdc_km_one_of(const char *s, const char *const *list) {
    for (; *list; list++)
        if (strcmp(s, *list) == 0) return 1;
    return 0;
}

const char *sdc_km_shape(char *buf, size_t cap, const sdc_weight *t) { return sdc_shape_str(buf, cap, t->ndim, t->shape); }
