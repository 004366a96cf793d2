#include "io/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"

int sdc_json_is_int(double d) { return isfinite(d) && d == floor(d) && fabs(d) <= 9007199254740992.0; }

sdc_status sdc_json_parse(const char *text, size_t len, const char *what, cJSON **out, sdc_error *err) {
    *out = NULL;
    if (memchr(text, '\0', len)) return sdc_fail(err, SDC_EFORMAT, "%s: invalid JSON: contains a NUL byte", what);
    /* Python's json module (and so diffusers' saved configs, e.g.
     * "lambda_min_clipped": -Infinity) writes Infinity, -Infinity and NaN,
     * which are not JSON: outside strings they become ±1e999 (±inf through
     * strtod) and null. */
    /* Values outside strings: at most 1 + one per ',' + one per '[' or '{'
     * (the first member of a container); counted before cJSON allocates. */
    uint64_t values = 1;
    int in_str = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = text[i];
        if (in_str) {
            if (ch == '\\') i++;
            else if (ch == '"') in_str = 0;
        } else if (ch == '"') {
            in_str = 1;
        } else if (ch == ',' || ch == '[' || ch == '{') {
            values++;
        }
    }
    if (values > SDC_JSON_MAX_VALUES)
        return sdc_fail(err, SDC_ELIMIT, "%s: JSON with more than %u values, beyond what sdc parses", what,
                        SDC_JSON_MAX_VALUES);
    char *buf = malloc(2 * len + 1);
    if (!buf) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", what);
    size_t o = 0;
    in_str = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = text[i];
        if (in_str) {
            if (ch == '\\' && i + 1 < len) buf[o++] = text[i++];
            else if (ch == '"') in_str = 0;
        } else if (ch == '"') {
            in_str = 1;
        } else if (ch == 'I' && len - i >= 8 && memcmp(text + i, "Infinity", 8) == 0) {
            memcpy(buf + o, "1e999", 5), o += 5, i += 7;
            continue;
        } else if (ch == 'N' && len - i >= 3 && memcmp(text + i, "NaN", 3) == 0) {
            memcpy(buf + o, "null", 4), o += 4, i += 2;
            continue;
        }
        buf[o++] = text[i];
    }
    buf[o] = '\0';
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(buf, &end, 1);
    if (!j) {
        /* locate the error as line:column for the user */
        size_t off = end && end >= buf && end <= buf + o ? (size_t)(end - buf) : 0;
        int line = 1, col = 1;
        for (size_t i = 0; i < off; i++) {
            if (buf[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        free(buf);
        return sdc_fail(err, SDC_EFORMAT, "%s: invalid JSON near line %d, column %d", what, line, col);
    }
    free(buf);
    *out = j;
    return SDC_OK;
}

sdc_status sdc_json_load_object(const char *path, cJSON **out, sdc_error *err) {
    *out = NULL;
    int64_t size = sdc_file_size(path);
    if (size > (int64_t)SDC_JSON_MAX_FILE)
        return sdc_fail(err, SDC_ELIMIT, "%s: JSON file of %lld bytes, more than the %u MiB sdc reads", path,
                        (long long)size, SDC_JSON_MAX_FILE >> 20);
    char *text;
    size_t len;
    SDC_TRY(sdc_read_file(path, &text, &len, err));
    sdc_status s = sdc_json_parse(text, len, path, out, err);
    free(text);
    if (s != SDC_OK) return s;
    if (!cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return sdc_fail(err, SDC_EFORMAT, "%s: expected a JSON object at the top level", path);
    }
    return SDC_OK;
}

static const cJSON *member(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

sdc_status sdc_json_get_int(const cJSON *obj, const char *key, int64_t *out, const char *what, sdc_error *err) {
    const cJSON *v = member(obj, key);
    if (!v) return SDC_OK;
    if (!cJSON_IsNumber(v) || !sdc_json_is_int(v->valuedouble))
        return sdc_fail(err, SDC_EFORMAT, "%s: \"%s\" must be an integer", what, key);
    *out = (int64_t)v->valuedouble;
    return SDC_OK;
}

sdc_status sdc_json_get_double(const cJSON *obj, const char *key, double *out, const char *what, sdc_error *err) {
    const cJSON *v = member(obj, key);
    if (!v) return SDC_OK;
    if (!cJSON_IsNumber(v)) return sdc_fail(err, SDC_EFORMAT, "%s: \"%s\" must be a number", what, key);
    *out = v->valuedouble;
    return SDC_OK;
}

sdc_status sdc_json_get_bool(const cJSON *obj, const char *key, int *out, const char *what, sdc_error *err) {
    const cJSON *v = member(obj, key);
    if (!v) return SDC_OK;
    if (!cJSON_IsBool(v)) return sdc_fail(err, SDC_EFORMAT, "%s: \"%s\" must be true or false", what, key);
    *out = cJSON_IsTrue(v);
    return SDC_OK;
}

sdc_status sdc_json_get_string(const cJSON *obj, const char *key, const char **out, const char *what,
                               sdc_error *err) {
    const cJSON *v = member(obj, key);
    if (!v) return SDC_OK;
    if (!cJSON_IsString(v)) return sdc_fail(err, SDC_EFORMAT, "%s: \"%s\" must be a string", what, key);
    *out = v->valuestring;
    return SDC_OK;
}

sdc_status sdc_json_get_int_list(const cJSON *obj, const char *key, int64_t *out, int cap, int *count,
                                 const char *what, sdc_error *err) {
    const cJSON *v = member(obj, key);
    if (!v) return SDC_OK;
    if (cJSON_IsNumber(v)) {
        if (!sdc_json_is_int(v->valuedouble))
            return sdc_fail(err, SDC_EFORMAT, "%s: \"%s\" must be an integer or a list of integers", what, key);
        if (cap > 0) out[0] = (int64_t)v->valuedouble;
        *count = 1;
        return SDC_OK;
    }
    if (!cJSON_IsArray(v))
        return sdc_fail(err, SDC_EFORMAT, "%s: \"%s\" must be an integer or a list of integers", what, key);
    int n = cJSON_GetArraySize(v);
    if (n > cap) return sdc_fail(err, SDC_ELIMIT, "%s: \"%s\" has %d entries, at most %d supported", what, key, n, cap);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsNumber(e) || !sdc_json_is_int(e->valuedouble))
            return sdc_fail(err, SDC_EFORMAT, "%s: \"%s\"[%d] must be an integer", what, key, i);
        out[i++] = (int64_t)e->valuedouble;
    }
    *count = n;
    return SDC_OK;
}

char *sdc_json_print_config(const cJSON *cfg) {
    cJSON *c = cJSON_Duplicate(cfg, 1);
    if (!c) return NULL;
    static const char *const floats[] = {"initializer_factor", "initializer_range", "layer_norm_eps",
                                         "attention_dropout", "dropout"};
    for (size_t k = 0; k < sizeof floats / sizeof *floats; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, floats[k]);
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 1e15) continue;
        char raw[32];
        snprintf(raw, sizeof raw, "%.1f", v->valuedouble);
        cJSON_ReplaceItemInObjectCaseSensitive(c, floats[k], cJSON_CreateRaw(raw));
    }
    char *body = cJSON_Print(c);
    cJSON_Delete(c);
    if (!body) return NULL;
    size_t n = strlen(body);
    char *text = realloc(body, n + 2);
    if (!text) {
        free(body);
        return NULL;
    }
    memcpy(text + n, "\n", 2);
    return text;
}
