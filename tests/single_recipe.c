/* Materializing the single-file recipes (see single_recipe.h and
 * tools/make_single_recipes.py, whose rules this follows). */
#include "single_recipe.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/dtype.h"
#include "core/fs.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "test.h"

#define RECIPE_FORMAT "sdc-single-file-recipe-1"

/* ---- CRC-32 and base64 ------------------------------------------------------ */

/* zlib's CRC-32 (reflected polynomial 0xEDB88320, init and final xor ~0). */
static uint32_t crc32_of(const unsigned char *p, size_t n) {
    static uint32_t table[256];
    static int ready;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static int b64_value(char ch) {
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+') return 62;
    if (ch == '/') return 63;
    return -1;
}

/* Standard base64 with '=' padding into out (cap bytes); the decoded length,
 * or -1 if s is not base64 or does not decode to exactly cap bytes. */
static long b64_decode(const char *s, unsigned char *out, size_t cap) {
    size_t len = strlen(s), n = 0;
    if (len % 4) return -1;
    for (size_t i = 0; i < len; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            v[k] = b64_value(s[i + k]);
            if (s[i + k] == '=' && i + 4 == len && k >= 2) v[k] = 0, pad++;
            else if (v[k] < 0 || pad) return -1; /* '=' only at the end */
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        for (int k = 0; k < 3 - pad; k++) {
            if (n >= cap) return -1;
            out[n++] = (unsigned char)(w >> (16 - 8 * k));
        }
    }
    return n == cap ? (long)n : -1;
}

/* ---- one tensor -------------------------------------------------------------- */

typedef struct recipe {
    const char *path;
    sdc_weights *src; /* one set per source file (names repeat across files) */
    int nsrc;
} recipe;

/* The bytes of entry e into out (nbytes, already allocated). */
static sdc_status build_tensor(const recipe *r, const cJSON *e, const char *name, sdc_dtype dtype, int ndim,
                               const int64_t *shape, unsigned char *out, size_t nbytes, sdc_error *err) {
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(e, "data");
    if (cJSON_IsString(data)) {
        if (b64_decode(data->valuestring, out, nbytes) < 0)
            return sdc_fail(err, SDC_EFORMAT, "%s: %s: inline data is not %zu bytes of base64", r->path, name, nbytes);
        return SDC_OK;
    }
    const cJSON *from = cJSON_GetObjectItemCaseSensitive(e, "from");
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(e, "rows");
    const cJSON *comb = cJSON_GetObjectItemCaseSensitive(e, "combine");
    const char *combine = cJSON_IsString(comb) ? comb->valuestring : "plain";
    int nfrom = cJSON_IsArray(from) ? cJSON_GetArraySize(from) : 0;
    int concat = !strcmp(combine, "concat0"), transpose = !strcmp(combine, "transpose");
    if (nfrom < 1 || (!concat && nfrom != 1) || (!concat && !transpose && strcmp(combine, "plain") != 0))
        return sdc_fail(err, SDC_EFORMAT, "%s: %s: needs \"data\", or \"from\" with combine plain|concat0|transpose",
                        r->path, name);
    if (transpose && ndim != 2) return sdc_fail(err, SDC_EFORMAT, "%s: %s: transpose needs 2-D", r->path, name);
    const size_t es = sdc_dtype_size(dtype);
    size_t at = 0;
    for (int i = 0; i < nfrom; i++) {
        const cJSON *f = cJSON_GetArrayItem(from, i);
        const cJSON *fi = cJSON_GetArrayItem(f, 0), *fk = cJSON_GetArrayItem(f, 1);
        if (!cJSON_IsNumber(fi) || !cJSON_IsString(fk) || fi->valueint < 0 || fi->valueint >= r->nsrc)
            return sdc_fail(err, SDC_EFORMAT, "%s: %s: source %d is not [file index, tensor name]", r->path, name, i);
        const sdc_weights *w = &r->src[fi->valueint];
        const sdc_weight *t = sdc_weights_find(w, fk->valuestring);
        if (!t)
            return sdc_fail(err, SDC_ENOTFOUND, "%s: %s: source tensor \"%s\" not in %s", r->path, name,
                            fk->valuestring, w->nfiles ? w->files[0].path : "?");
        const unsigned char *p = t->data;
        size_t n = (size_t)sdc_weight_numel(t); /* source elements */
        if (rows) { /* rows [a, b) along dim 0 */
            const cJSON *ra = cJSON_GetArrayItem(rows, 0), *rb = cJSON_GetArrayItem(rows, 1);
            int64_t a = cJSON_IsNumber(ra) ? (int64_t)ra->valuedouble : -1;
            int64_t b = cJSON_IsNumber(rb) ? (int64_t)rb->valuedouble : -1;
            if (t->ndim < 1 || a < 0 || b < a || b > t->shape[0])
                return sdc_fail(err, SDC_EFORMAT, "%s: %s: rows out of range of %s", r->path, name, fk->valuestring);
            size_t row = t->shape[0] ? n / (size_t)t->shape[0] : 0;
            p += (size_t)a * row * sdc_dtype_size(t->dtype);
            n = (size_t)(b - a) * row;
        }
        if (at + n * es > nbytes)
            return sdc_fail(err, SDC_EFORMAT, "%s: %s: the sources hold more than %zu bytes", r->path, name, nbytes);
        if (t->dtype == dtype) {
            memcpy(out + at, p, n * es);
        } else if (t->dtype == SDC_F32 && dtype == SDC_F16) { /* torch's .half(): nearest, ties to even */
            for (size_t k = 0; k < n; k++) {
                float x;
                memcpy(&x, p + 4 * k, 4); /* mapped data has no alignment guarantee */
                uint16_t h = sdc_f32_to_f16(x);
                memcpy(out + at + 2 * k, &h, 2);
            }
        } else {
            return sdc_fail(err, SDC_EFORMAT, "%s: %s: cannot make %s from %s", r->path, name, sdc_dtype_name(dtype),
                            sdc_dtype_name(t->dtype));
        }
        at += n * es;
    }
    if (at != nbytes)
        return sdc_fail(err, SDC_EFORMAT, "%s: %s: the sources hold %zu bytes, the tensor %zu", r->path, name, at,
                        nbytes);
    if (transpose) { /* out holds the source as [shape[1], shape[0]]: out[y][x] = src[x][y] */
        unsigned char *src = malloc(nbytes ? nbytes : 1);
        if (!src) return sdc_fail(err, SDC_ENOMEM, "out of memory");
        memcpy(src, out, nbytes);
        for (int64_t y = 0; y < shape[0]; y++)
            for (int64_t x = 0; x < shape[1]; x++)
                memcpy(out + (size_t)(y * shape[1] + x) * es, src + (size_t)(x * shape[0] + y) * es, es);
        free(src);
    }
    return SDC_OK;
}

/* ---- the whole file ---------------------------------------------------------- */

sdc_status test_single_recipe_materialize(const char *recipe_path, const char *out_path, sdc_error *err) {
    char where[1024]; /* recipe_path may be a test_data() buffer, which later calls reuse */
    snprintf(where, sizeof where, "%s", recipe_path);
    recipe_path = where;
    cJSON *root = NULL;
    SDC_TRY(sdc_json_load_object(recipe_path, &root, err));
    recipe r = {recipe_path, NULL, 0};
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *sources = cJSON_GetObjectItemCaseSensitive(root, "sources");
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "tensors");
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "metadata");
    int n = cJSON_IsArray(list) ? cJSON_GetArraySize(list) : 0;
    int nmeta = cJSON_IsObject(meta) ? cJSON_GetArraySize(meta) : 0;
    sdc_st_tensor *ts = calloc((size_t)n + 1, sizeof *ts);
    int64_t(*shapes)[SDC_MAX_DIMS] = calloc((size_t)n + 1, sizeof *shapes);
    unsigned char **bufs = calloc((size_t)n + 1, sizeof *bufs);
    sdc_kv *kv = calloc((size_t)nmeta + 1, sizeof *kv);
    sdc_status s = SDC_OK;
    if (!ts || !shapes || !bufs || !kv) s = sdc_fail(err, SDC_ENOMEM, "out of memory");
    else if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, RECIPE_FORMAT) != 0)
        s = sdc_fail(err, SDC_EFORMAT, "%s: not a %s file", recipe_path, RECIPE_FORMAT);
    else if (!cJSON_IsArray(sources) || !cJSON_IsArray(list))
        s = sdc_fail(err, SDC_EFORMAT, "%s: needs \"sources\" and \"tensors\" arrays", recipe_path);
    if (s == SDC_OK) {
        r.nsrc = cJSON_GetArraySize(sources);
        r.src = calloc((size_t)r.nsrc + 1, sizeof *r.src);
        if (!r.src) s = sdc_fail(err, SDC_ENOMEM, "out of memory");
        for (int i = 0; s == SDC_OK && i < r.nsrc; i++) {
            sdc_weights_init(&r.src[i]);
            const cJSON *p = cJSON_GetArrayItem(sources, i);
            if (!cJSON_IsString(p)) s = sdc_fail(err, SDC_EFORMAT, "%s: source %d is not a path", recipe_path, i);
            else s = sdc_safetensors_read(test_data(p->valuestring), &r.src[i], err);
        }
    }
    for (int i = 0; s == SDC_OK && i < nmeta; i++) {
        const cJSON *m = cJSON_GetArrayItem(meta, i);
        if (!cJSON_IsString(m))
            s = sdc_fail(err, SDC_EFORMAT, "%s: metadata \"%s\" is not a string", recipe_path, m->string);
        else
            kv[i] = (sdc_kv){m->string, m->valuestring};
    }
    for (int i = 0; s == SDC_OK && i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(list, i);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *crc = cJSON_GetObjectItemCaseSensitive(e, "crc32");
        sdc_dtype dtype;
        int ndim = cJSON_IsArray(shape) ? cJSON_GetArraySize(shape) : -1;
        if (!cJSON_IsString(name) || !cJSON_IsString(dt) || sdc_dtype_parse(dt->valuestring, &dtype) != 0 ||
            ndim < 0 || ndim > SDC_MAX_DIMS || !cJSON_IsString(crc)) {
            s = sdc_fail(err, SDC_EFORMAT, "%s: tensor %d needs name, dtype, shape and crc32", recipe_path, i);
            break;
        }
        int64_t numel = 1;
        for (int d = 0; d < ndim; d++) {
            const cJSON *v = cJSON_GetArrayItem(shape, d);
            shapes[i][d] = cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -1;
            if (shapes[i][d] < 0) s = sdc_fail(err, SDC_EFORMAT, "%s: %s: bad shape", recipe_path, name->valuestring);
            numel *= shapes[i][d];
        }
        if (s != SDC_OK) break;
        size_t nbytes = (size_t)numel * sdc_dtype_size(dtype);
        if (!(bufs[i] = malloc(nbytes ? nbytes : 1))) {
            s = sdc_fail(err, SDC_ENOMEM, "out of memory");
            break;
        }
        s = build_tensor(&r, e, name->valuestring, dtype, ndim, shapes[i], bufs[i], nbytes, err);
        uint32_t got = s == SDC_OK ? crc32_of(bufs[i], nbytes) : 0;
        if (s == SDC_OK && got != (uint32_t)strtoul(crc->valuestring, NULL, 16))
            s = sdc_fail(err, SDC_EFORMAT, "%s: %s: CRC-32 %08x, the recipe says %s (a source changed?)", recipe_path,
                         name->valuestring, got, crc->valuestring);
        ts[i] = (sdc_st_tensor){name->valuestring, dtype, ndim, shapes[i], bufs[i]};
    }
    if (s == SDC_OK) s = sdc_safetensors_write(out_path, ts, (size_t)n, kv, (size_t)nmeta, err);
    for (int i = 0; i < n && bufs; i++) free(bufs[i]);
    for (int i = 0; i < r.nsrc && r.src; i++) sdc_weights_free(&r.src[i]);
    free(r.src), free(bufs), free(shapes), free(ts), free(kv);
    cJSON_Delete(root);
    return s;
}

/* ---- once per process ------------------------------------------------------- */

static char g_dir[512];
static pid_t g_owner;

static void remove_dir(void) {
    if (g_dir[0] && getpid() == g_owner) sdc_remove_tree(g_dir); /* not from a forked child */
}

const char *test_single_file(const char *name) {
    static struct {
        char name[64];
        char path[640];
        int state; /* 1 made, -1 failed */
        char why[SDC_ERR_MSG_MAX];
    } made[8];
    int i = 0;
    while (i < 8 && made[i].state && strcmp(made[i].name, name) != 0) i++;
    SDC_ASSERT(i < 8 && strlen(name) < sizeof made[i].name);
    if (!made[i].state) {
        snprintf(made[i].name, sizeof made[i].name, "%s", name);
        sdc_error err = {0};
        if (!g_dir[0]) { /* a folder of our own: test_tmpdir() would move the caller's */
            const char *tmp = getenv("TMPDIR");
            snprintf(g_dir, sizeof g_dir, "%s/sdc-single-XXXXXX", tmp && *tmp ? tmp : "/tmp");
            if (mkdtemp(g_dir)) {
                g_owner = getpid();
                atexit(remove_dir);
            } else {
                snprintf(g_dir, sizeof g_dir, "/nonexistent-sdc-single");
            }
        }
        snprintf(made[i].path, sizeof made[i].path, "%s/%s.safetensors", g_dir, name);
        char rel[128];
        snprintf(rel, sizeof rel, "single/%s.recipe.json", name);
        made[i].state = test_single_recipe_materialize(test_data(rel), made[i].path, &err) == SDC_OK ? 1 : -1;
        snprintf(made[i].why, sizeof made[i].why, "%s", err.msg);
    }
    if (made[i].state < 0) sdc_test_fail(__FILE__, __LINE__, "single file %s: %s", name, made[i].why);
    return made[i].path;
}

/* ---- tests of the helper ------------------------------------------------------ */

/* Each materialized file has the recipe's tensors in its order, with the
 * bytes the CRC-32s (taken from the original files) name, and the original
 * file's size: the header differs from the original only in the order of
 * the keys inside each entry (sdc writes shape, data_offsets, dtype). */
TEST(single_recipe_materializes) {
    static const char *const names[] = {"tiny-sd", "tiny-sd2", "tiny-sdxl"};
    for (int f = 0; f < 3; f++) {
        const char *path = test_single_file(names[f]);
        char rel[128];
        snprintf(rel, sizeof rel, "single/%s.recipe.json", names[f]);
        cJSON *root;
        sdc_error err;
        REQUIRE_OK(sdc_json_load_object(test_data(rel), &root, &err), &err);
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "tensors");
        int64_t want_bytes = (int64_t)cJSON_GetObjectItemCaseSensitive(root, "original_bytes")->valuedouble;
        CHECK_MSG(sdc_file_size(path) == want_bytes, "%s: %lld bytes, the original %lld", names[f],
                  (long long)sdc_file_size(path), (long long)want_bytes);
        sdc_weights w;
        sdc_weights_init(&w);
        if (sdc_safetensors_read(path, &w, &err) != SDC_OK) {
            CHECK_MSG(0, "%s", err.msg);
            cJSON_Delete(root);
            continue;
        }
        CHECK_EQ_INT(w.count, cJSON_GetArraySize(list));
        int bad = 0;
        for (size_t i = 0; i < w.count && i < (size_t)cJSON_GetArraySize(list); i++) {
            const cJSON *e = cJSON_GetArrayItem(list, (int)i);
            const sdc_weight *t = &w.items[i];
            uint32_t want = (uint32_t)strtoul(cJSON_GetObjectItemCaseSensitive(e, "crc32")->valuestring, NULL, 16);
            if (strcmp(t->name, cJSON_GetObjectItemCaseSensitive(e, "name")->valuestring) != 0 ||
                crc32_of(t->data, t->nbytes) != want)
                CHECK_MSG(bad++ > 3, "%s: tensor %zu (%s) differs from the recipe", names[f], i, t->name);
        }
        CHECK_EQ_INT(bad, 0);
        sdc_weights_free(&w);
        cJSON_Delete(root);
    }
    /* the second call gives the same file without making it again */
    CHECK(test_single_file("tiny-sd") == test_single_file("tiny-sd"));
}

/* A recipe whose sources no longer give its bytes is an error naming the
 * tensor, never a silently different file. */
TEST(single_recipe_detects_changed_sources) {
    char *text = NULL;
    size_t len;
    sdc_error err;
    REQUIRE_OK(sdc_read_file(test_data("single/tiny-sd2.recipe.json"), &text, &len, &err), &err);
    char *crc = strstr(text, "\"crc32\":\"");
    REQUIRE(crc);
    crc += 9;
    const char digit = crc[0];
    crc[0] = digit == '0' ? '1' : '0'; /* the first tensor's CRC, one digit off */
    const char *dir = test_tmpdir();
    char *bad = sdc_path_join(dir, "bad.recipe.json"), *out = sdc_path_join(dir, "bad.safetensors");
    REQUIRE(bad && out);
    REQUIRE_OK(sdc_write_file_atomic(bad, text, len, &err), &err);
    CHECK(test_single_recipe_materialize(bad, out, &err) == SDC_EFORMAT);
    CHECK_MSG(strstr(err.msg, "cond_stage_model.model.logit_scale") && strstr(err.msg, "CRC-32"), "%s", err.msg);
    CHECK(!sdc_path_exists(out));
    /* a source tensor that is not there */
    crc[0] = digit;
    char *src = strstr(text, "\"final_layer_norm.bias\"");
    REQUIRE(src);
    memcpy(src + 1, "final_layer_norm.bia_", 21);
    REQUIRE_OK(sdc_write_file_atomic(bad, text, len, &err), &err);
    CHECK(test_single_recipe_materialize(bad, out, &err) == SDC_ENOTFOUND);
    CHECK_MSG(strstr(err.msg, "final_layer_norm.bia_"), "%s", err.msg);
    free(bad), free(out), free(text);
}
