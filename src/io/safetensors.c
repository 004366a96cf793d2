#include "io/safetensors.h"

#include <stdlib.h>
#include <string.h>

#include "io/json.h"

typedef struct {
    const cJSON *item;
    uint64_t begin, end;
} st_range;

static int cmp_range(const void *a, const void *b) {
    const st_range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static sdc_status read_offset(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v) || !sdc_json_is_int(v->valuedouble) || v->valuedouble < 0) return SDC_EFORMAT;
    *out = (uint64_t)v->valuedouble;
    return SDC_OK;
}

/* Checks one tensor entry; fills dtype, shape and the byte range. */
static sdc_status parse_entry(const char *path, const cJSON *e, sdc_dtype *dtype, int *ndim, int64_t *shape,
                              st_range *r, uint64_t data_len, sdc_error *err) {
    const char *name = e->string;
    if (!cJSON_IsObject(e)) return sdc_fail(err, SDC_EFORMAT, "%s: tensor \"%s\": entry is not an object", path, name);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(jd)) return sdc_fail(err, SDC_EFORMAT, "%s: tensor \"%s\": missing dtype", path, name);
    if (sdc_dtype_parse(jd->valuestring, dtype) != 0)
        return sdc_fail(err, SDC_EFORMAT, "%s: tensor \"%s\": unknown dtype \"%.32s\"", path, name, jd->valuestring);
    if (!cJSON_IsArray(js)) return sdc_fail(err, SDC_EFORMAT, "%s: tensor \"%s\": missing shape", path, name);
    int nd = cJSON_GetArraySize(js);
    if (nd > SDC_MAX_DIMS)
        return sdc_fail(err, SDC_ELIMIT, "%s: tensor \"%s\": %d dimensions, at most %d supported", path, name, nd,
                        SDC_MAX_DIMS);
    int i = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, js) {
        uint64_t v;
        if (read_offset(d, &v) != SDC_OK)
            return sdc_fail(err, SDC_EFORMAT, "%s: tensor \"%s\": shape must hold non-negative integers", path, name);
        shape[i++] = (int64_t)v;
    }
    *ndim = nd;
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 || read_offset(jo->child, &r->begin) != SDC_OK ||
        read_offset(jo->child->next, &r->end) != SDC_OK)
        return sdc_fail(err, SDC_EFORMAT, "%s: tensor \"%s\": data_offsets must be [begin, end]", path, name);
    if (r->end < r->begin) return sdc_fail(err, SDC_EFORMAT, "%s: tensor \"%s\": data_offsets end before begin", path, name);
    int64_t numel;
    if (sdc_shape_numel(nd, shape, &numel) != 0 || (uint64_t)numel > UINT64_MAX / 8)
        return sdc_fail(err, SDC_ELIMIT, "%s: tensor \"%s\": shape is too large", path, name);
    uint64_t want = (uint64_t)numel * sdc_dtype_size(*dtype);
    if (want != r->end - r->begin) {
        char sb[128];
        return sdc_fail(err, SDC_EFORMAT, "%s: tensor \"%s\": shape %s of %s needs %llu bytes but data_offsets span %llu",
                        path, name, sdc_shape_str(sb, sizeof sb, nd, shape), sdc_dtype_name(*dtype),
                        (unsigned long long)want, (unsigned long long)(r->end - r->begin));
    }
    if (r->end > data_len)
        return sdc_fail(err, SDC_EFORMAT, "%s: tensor \"%s\": data_offsets end at %llu, past the end of the data (%llu bytes; truncated file?)",
                        path, name, (unsigned long long)r->end, (unsigned long long)data_len);
    return SDC_OK;
}

static sdc_status parse_metadata(const char *path, const cJSON *m, sdc_weights *w, sdc_error *err) {
    if (!cJSON_IsObject(m)) return sdc_fail(err, SDC_EFORMAT, "%s: __metadata__ must be an object of strings", path);
    const cJSON *e;
    cJSON_ArrayForEach(e, m) {
        if (!cJSON_IsString(e))
            return sdc_fail(err, SDC_EFORMAT, "%s: __metadata__ \"%s\" must be a string", path, e->string);
        SDC_TRY(sdc_weights_add_meta(w, e->string, e->valuestring, err));
    }
    return SDC_OK;
}

sdc_status sdc_safetensors_read(const char *path, sdc_weights *w, sdc_error *err) {
    int fi;
    SDC_TRY(sdc_weights_map_file(w, path, &fi, err));
    const sdc_mapped_file *m = &w->files[fi].map;
    if (m->size < 8)
        return sdc_fail(err, SDC_EFORMAT, "%s: not a safetensors file (%zu bytes, too short for a header)", path, m->size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | m->data[i];
    if (hlen > SDC_ST_MAX_HEADER)
        return sdc_fail(err, SDC_ELIMIT, "%s: header claims %llu bytes, more than the %u MiB limit (corrupt or not safetensors)",
                        path, (unsigned long long)hlen, SDC_ST_MAX_HEADER >> 20);
    if (hlen < 2 || hlen > m->size - 8)
        return sdc_fail(err, SDC_EFORMAT, "%s: header length %llu does not fit in the file (%zu bytes; truncated?)",
                        path, (unsigned long long)hlen, m->size);
    if (m->data[8] != '{') return sdc_fail(err, SDC_EFORMAT, "%s: not a safetensors file (header is not a JSON object)", path);
    cJSON *h;
    SDC_TRY(sdc_json_parse((const char *)m->data + 8, hlen, path, &h, err));
    sdc_status s = SDC_OK;
    const unsigned char *data = m->data + 8 + hlen;
    uint64_t data_len = m->size - 8 - hlen;
    int count = cJSON_GetArraySize(h);
    st_range *ranges = NULL;
    if (!cJSON_IsObject(h)) {
        s = sdc_fail(err, SDC_EFORMAT, "%s: header is not a JSON object", path);
        goto done;
    }
    if (count > SDC_ST_MAX_TENSORS) {
        s = sdc_fail(err, SDC_ELIMIT, "%s: header lists %d tensors, more than the %d sdc accepts", path, count,
                     SDC_ST_MAX_TENSORS);
        goto done;
    }
    ranges = calloc((size_t)count + 1, sizeof *ranges);
    if (!ranges) {
        s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    /* First pass: validate every entry and collect ranges; nothing added yet. */
    int nt = 0, nmeta = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, h) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (nmeta++) {
                s = sdc_fail(err, SDC_EFORMAT, "%s: __metadata__ appears twice", path);
                goto done;
            }
            continue;
        }
        if (strlen(e->string) > SDC_ST_MAX_NAME || e->string[0] == '\0') {
            s = sdc_fail(err, SDC_EFORMAT, "%s: a tensor name is empty or longer than %d bytes", path, SDC_ST_MAX_NAME);
            goto done;
        }
        sdc_dtype dt;
        int nd;
        int64_t shape[SDC_MAX_DIMS];
        if ((s = parse_entry(path, e, &dt, &nd, shape, &ranges[nt], data_len, err)) != SDC_OK) goto done;
        ranges[nt++].item = e;
    }
    /* Byte ranges must not overlap (sorted by begin, each starts at or after
     * the previous end). Zero-length tensors may share an offset. */
    qsort(ranges, (size_t)nt, sizeof *ranges, cmp_range);
    for (int i = 1; i < nt; i++)
        if (ranges[i].begin < ranges[i - 1].end) {
            s = sdc_fail(err, SDC_EFORMAT, "%s: tensors \"%s\" and \"%s\" overlap in the data", path,
                         ranges[i - 1].item->string, ranges[i].item->string);
            goto done;
        }
    /* Second pass: add, in file order. */
    cJSON_ArrayForEach(e, h) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if ((s = parse_metadata(path, e, w, err)) != SDC_OK) goto done;
            continue;
        }
        sdc_dtype dt;
        int nd;
        int64_t shape[SDC_MAX_DIMS];
        st_range r;
        parse_entry(path, e, &dt, &nd, shape, &r, data_len, err);
        if ((s = sdc_weights_add(w, e->string, e->string, dt, nd, shape, data + r.begin, (size_t)(r.end - r.begin), fi,
                                 path, err)) != SDC_OK)
            goto done;
    }
done:
    free(ranges);
    cJSON_Delete(h);
    return s;
}

sdc_status sdc_safetensors_read_index(const char *index_path, sdc_weights *w, sdc_error *err) {
    cJSON *idx;
    SDC_TRY(sdc_json_load_object(index_path, &idx, err));
    sdc_status s = SDC_OK;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
    char *dir = sdc_strdup(index_path);
    char **shards = NULL;
    int nshards = 0;
    if (!dir) {
        s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", index_path);
        goto done;
    }
    char *slash = strrchr(dir, '/');
    if (slash) slash[1] = '\0';
    else dir[0] = '\0';
    if (!cJSON_IsObject(map) || !map->child) {
        s = sdc_fail(err, SDC_EFORMAT, "%s: missing or empty \"weight_map\"", index_path);
        goto done;
    }
    shards = calloc((size_t)cJSON_GetArraySize(map), sizeof *shards);
    if (!shards) {
        s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", index_path);
        goto done;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, map) {
        if (!cJSON_IsString(e)) {
            s = sdc_fail(err, SDC_EFORMAT, "%s: weight_map[\"%s\"] must be a file name", index_path, e->string);
            goto done;
        }
        const char *f = e->valuestring;
        if (strchr(f, '/') || strcmp(f, "..") == 0 || f[0] == '\0') {
            s = sdc_fail(err, SDC_EFORMAT, "%s: shard name \"%s\" must be a plain file name beside the index", index_path, f);
            goto done;
        }
        int seen = 0;
        for (int i = 0; i < nshards; i++) seen |= strcmp(shards[i], f) == 0;
        if (!seen) shards[nshards++] = e->valuestring;
    }
    for (int i = 0; i < nshards; i++) {
        char *p = sdc_path_join(dir[0] ? dir : ".", shards[i]);
        if (!p) {
            s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", index_path);
            goto done;
        }
        s = sdc_safetensors_read(p, w, err);
        free(p);
        if (s != SDC_OK) goto done;
    }
    /* Every indexed tensor must be where the index says. */
    cJSON_ArrayForEach(e, map) {
        const sdc_weight *t = sdc_weights_find(w, e->string);
        if (!t) {
            s = sdc_fail(err, SDC_ENOTFOUND, "%s: tensor \"%s\" is in the index but not in shard %s", index_path,
                         e->string, e->valuestring);
            goto done;
        }
        if (strcmp(sdc_path_basename(sdc_weight_path(w, t)), e->valuestring) != 0) {
            s = sdc_fail(err, SDC_EFORMAT, "%s: tensor \"%s\" is indexed in %s but stored in %s", index_path, e->string,
                         e->valuestring, sdc_path_basename(sdc_weight_path(w, t)));
            goto done;
        }
    }
done:
    free(shards);
    free(dir);
    cJSON_Delete(idx);
    return s;
}

sdc_status sdc_safetensors_write(const char *path, const sdc_st_tensor *tensors, size_t n, const sdc_kv *meta,
                                 size_t nmeta, sdc_error *err) {
    cJSON *h = cJSON_CreateObject();
    if (!h) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
    sdc_status s = SDC_OK;
    if (nmeta) {
        cJSON *m = cJSON_AddObjectToObject(h, "__metadata__");
        for (size_t i = 0; m && i < nmeta; i++)
            if (!cJSON_AddStringToObject(m, meta[i].key, meta[i].value)) m = NULL;
        if (!m) {
            cJSON_Delete(h);
            return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
        }
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const sdc_st_tensor *t = &tensors[i];
        int64_t numel;
        if (t->ndim < 0 || t->ndim > SDC_MAX_DIMS || sdc_shape_numel(t->ndim, t->shape, &numel) != 0) {
            cJSON_Delete(h);
            return sdc_fail(err, SDC_EINVAL, "%s: tensor \"%s\" has an invalid shape", path, t->name);
        }
        if (cJSON_GetObjectItemCaseSensitive(h, t->name)) {
            cJSON_Delete(h);
            return sdc_fail(err, SDC_EINVAL, "%s: tensor \"%s\" given twice", path, t->name);
        }
        uint64_t nb = (uint64_t)numel * sdc_dtype_size(t->dtype);
        cJSON *e = cJSON_AddObjectToObject(h, t->name);
        cJSON *shape = e ? cJSON_AddArrayToObject(e, "shape") : NULL;
        cJSON *offs = e ? cJSON_AddArrayToObject(e, "data_offsets") : NULL;
        int ok = e && shape && offs && cJSON_AddStringToObject(e, "dtype", sdc_dtype_name(t->dtype));
        for (int d = 0; ok && d < t->ndim; d++) ok = cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
        if (ok) ok = cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off)) &&
                     cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + nb)));
        if (!ok) {
            cJSON_Delete(h);
            return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
        }
        off += nb;
    }
    char *json = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    if (!json) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
    /* Pad the header with spaces to a multiple of 8 so the data is aligned. */
    size_t jl = strlen(json), padded = (jl + 7) & ~(size_t)7;
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    sdc_atomic_file f;
    if ((s = sdc_atomic_open(&f, path, err)) != SDC_OK) {
        free(json);
        return s;
    }
    sdc_atomic_write(&f, lenbuf, 8);
    sdc_atomic_write(&f, json, jl);
    sdc_atomic_write(&f, "        ", padded - jl);
    free(json);
    for (size_t i = 0; i < n; i++) {
        int64_t numel;
        sdc_shape_numel(tensors[i].ndim, tensors[i].shape, &numel);
        sdc_atomic_write(&f, tensors[i].data, (size_t)numel * sdc_dtype_size(tensors[i].dtype));
    }
    return sdc_atomic_commit(&f, err);
}
