/* PyTorch checkpoints: the zip reader, the restricted unpickler and the
 * loader. Good files (tests/data/ckpt, from tools/make_ckpt_tests.py) are
 * compared byte for byte with safetensors copies written by PyTorch; bad
 * and malicious ones must fail with the right status and a message naming
 * the file, and must never run anything. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "core/fs.h"
#include "core/rng.h"
#include "io/ckpt.h"
#include "io/pickle.h"
#include "io/safetensors.h"
#include "io/zip.h"
#include "test.h"

/* ---- byte builders -------------------------------------------------------------- */

typedef struct {
    unsigned char *p;
    size_t n, cap;
} bb;

static void bb_put(bb *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n) nc *= 2;
        unsigned char *np = realloc(b->p, nc);
        if (!np) abort(); /* test harness: out of memory is not a case under test */
        b->p = np;
        b->cap = nc;
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void bb_u8(bb *b, unsigned v) {
    unsigned char c = (unsigned char)v;
    bb_put(b, &c, 1);
}
static void bb_le(bb *b, uint64_t v, int n) {
    for (int i = 0; i < n; i++) bb_u8(b, (unsigned)(v >> (8 * i)) & 0xff);
}
static void bb_str(bb *b, const char *s) { bb_put(b, s, strlen(s)); }
/* a literal that may hold NUL bytes */
#define BB_LIT(b, s) bb_put(b, s, sizeof(s) - 1)
static void bb_free(bb *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* pickle pieces */
static void pk_ustr(bb *b, const char *s) { /* BINUNICODE */
    bb_u8(b, 'X');
    bb_le(b, strlen(s), 4);
    bb_str(b, s);
}
static void pk_int(bb *b, int64_t v) {
    if (v >= 0 && v < 256) {
        bb_u8(b, 'K');
        bb_u8(b, (unsigned)v);
    } else {
        bb_u8(b, 'J');
        bb_le(b, (uint64_t)v, 4);
    }
}
static void pk_global(bb *b, const char *mod, const char *name) {
    bb_u8(b, 'c');
    bb_str(b, mod);
    bb_u8(b, '\n');
    bb_str(b, name);
    bb_u8(b, '\n');
}
static void pk_int_tuple(bb *b, int n, const int64_t *v) {
    bb_u8(b, '(');
    for (int i = 0; i < n; i++) pk_int(b, v[i]);
    bb_u8(b, 't');
}
/* _rebuild_tensor_v2(('storage', torch.<cls>, key, 'cpu', numel), offset, size, stride, False, OrderedDict()) */
static void pk_tensor(bb *b, const char *cls, const char *key, int64_t numel, int64_t offset, int nd, const int64_t *size,
                      const int64_t *stride) {
    pk_global(b, "torch._utils", "_rebuild_tensor_v2");
    bb_u8(b, '(');
    bb_u8(b, '(');
    pk_ustr(b, "storage");
    pk_global(b, "torch", cls);
    pk_ustr(b, key);
    pk_ustr(b, "cpu");
    pk_int(b, numel);
    bb_u8(b, 't');
    bb_u8(b, 'Q');
    pk_int(b, offset);
    pk_int_tuple(b, nd, size);
    pk_int_tuple(b, nd, stride);
    bb_u8(b, 0x89);
    pk_global(b, "collections", "OrderedDict");
    bb_u8(b, ')');
    bb_u8(b, 'R');
    bb_u8(b, 't');
    bb_u8(b, 'R');
}
/* {name: tensor} with one FloatStorage "0" */
static void pk_state_dict1(bb *b, const char *name, int64_t numel, int64_t offset, int nd, const int64_t *size,
                           const int64_t *stride) {
    bb_u8(b, 0x80);
    bb_u8(b, 2);
    bb_u8(b, '}');
    bb_u8(b, '(');
    pk_ustr(b, name);
    pk_tensor(b, "FloatStorage", "0", numel, offset, nd, size, stride);
    bb_u8(b, 'u');
    bb_u8(b, '.');
}

/* zip pieces: STORED or raw-DEFLATE entries, optionally all in ZIP64 form */
typedef struct {
    const char *name;
    const void *data;
    size_t len;
    int deflate;
    uint64_t claim; /* if nonzero, the uncompressed size written in the headers */
} zent;

static void build_zip(bb *z, const zent *e, int n, int zip64) {
    uint64_t off[16], csz[16], usz[16];
    uint32_t crc[16];
    bb comp[16];
    memset(comp, 0, sizeof comp);
    for (int i = 0; i < n; i++) {
        crc[i] = (uint32_t)crc32(0, e[i].data, (uInt)e[i].len);
        if (e[i].deflate) {
            z_stream zs;
            memset(&zs, 0, sizeof zs);
            deflateInit2(&zs, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
            size_t cap = deflateBound(&zs, (uLong)e[i].len) + 16;
            comp[i].p = malloc(cap);
            zs.next_in = (Bytef *)(uintptr_t)e[i].data;
            zs.avail_in = (uInt)e[i].len;
            zs.next_out = comp[i].p;
            zs.avail_out = (uInt)cap;
            deflate(&zs, Z_FINISH);
            comp[i].n = cap - zs.avail_out;
            deflateEnd(&zs);
        } else {
            bb_put(&comp[i], e[i].data, e[i].len);
        }
        csz[i] = comp[i].n;
        usz[i] = e[i].claim ? e[i].claim : e[i].len;
    }
    for (int i = 0; i < n; i++) {
        off[i] = z->n;
        size_t nl = strlen(e[i].name);
        bb_le(z, 0x04034b50, 4);
        bb_le(z, zip64 ? 45 : 20, 2);
        bb_le(z, 0, 2);
        bb_le(z, e[i].deflate ? 8 : 0, 2);
        bb_le(z, 0, 4); /* time, date */
        bb_le(z, crc[i], 4);
        bb_le(z, zip64 ? 0xffffffffu : csz[i], 4);
        bb_le(z, zip64 ? 0xffffffffu : usz[i], 4);
        bb_le(z, nl, 2);
        bb_le(z, zip64 ? 20 : 0, 2);
        bb_str(z, e[i].name);
        if (zip64) {
            bb_le(z, 1, 2);
            bb_le(z, 16, 2);
            bb_le(z, usz[i], 8);
            bb_le(z, csz[i], 8);
        }
        bb_put(z, comp[i].p, comp[i].n);
    }
    uint64_t cd = z->n;
    for (int i = 0; i < n; i++) {
        size_t nl = strlen(e[i].name);
        bb_le(z, 0x02014b50, 4);
        bb_le(z, zip64 ? 45 : 20, 2);
        bb_le(z, zip64 ? 45 : 20, 2);
        bb_le(z, 0, 2);
        bb_le(z, e[i].deflate ? 8 : 0, 2);
        bb_le(z, 0, 4);
        bb_le(z, crc[i], 4);
        bb_le(z, zip64 ? 0xffffffffu : csz[i], 4);
        bb_le(z, zip64 ? 0xffffffffu : usz[i], 4);
        bb_le(z, nl, 2);
        bb_le(z, zip64 ? 28 : 0, 2);
        bb_le(z, 0, 2); /* comment */
        bb_le(z, 0, 2); /* disk */
        bb_le(z, 0, 2);
        bb_le(z, 0, 4);
        bb_le(z, zip64 ? 0xffffffffu : off[i], 4);
        bb_str(z, e[i].name);
        if (zip64) {
            bb_le(z, 1, 2);
            bb_le(z, 24, 2);
            bb_le(z, usz[i], 8);
            bb_le(z, csz[i], 8);
            bb_le(z, off[i], 8);
        }
    }
    uint64_t cd_size = z->n - cd;
    if (zip64) {
        uint64_t e64 = z->n;
        bb_le(z, 0x06064b50, 4);
        bb_le(z, 44, 8);
        bb_le(z, 45, 2);
        bb_le(z, 45, 2);
        bb_le(z, 0, 4);
        bb_le(z, 0, 4);
        bb_le(z, (uint64_t)n, 8);
        bb_le(z, (uint64_t)n, 8);
        bb_le(z, cd_size, 8);
        bb_le(z, cd, 8);
        bb_le(z, 0x07064b50, 4);
        bb_le(z, 0, 4);
        bb_le(z, e64, 8);
        bb_le(z, 1, 4);
    }
    bb_le(z, 0x06054b50, 4);
    bb_le(z, 0, 4);
    bb_le(z, zip64 ? 0xffff : (uint64_t)n, 2);
    bb_le(z, zip64 ? 0xffff : (uint64_t)n, 2);
    bb_le(z, zip64 ? 0xffffffffu : cd_size, 4);
    bb_le(z, zip64 ? 0xffffffffu : cd, 4);
    bb_le(z, 0, 2);
    for (int i = 0; i < n; i++) bb_free(&comp[i]);
}

/* Plain stdio: no fsync, the loops below write hundreds of files. */
static int write_plain(const char *path, const void *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = n ? fwrite(d, 1, n, f) : 0;
    return fclose(f) == 0 && w == n ? 0 : -1;
}

/* Writes bytes to <tmpdir>/<name>; returns a malloc'd path. */
static char *write_tmp(const char *name, const void *d, size_t n) {
    char *p = sdc_path_join(test_tmpdir(), name);
    if (p && write_plain(p, d, n) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

/* A checkpoint "<tmp>/<fname>" with archive/data.pkl = pickle and
 * archive/data/0 = storage (len bytes, or none if storage is NULL). */
static char *write_ckpt(const char *fname, const bb *pickle, const void *storage, size_t len, int deflate,
                        uint64_t pkl_claim, int zip64) {
    zent e[3] = {
        {"archive/data.pkl", pickle->p, pickle->n, deflate, pkl_claim},
        {"archive/byteorder", "little", 6, 0, 0},
        {"archive/data/0", storage, len, deflate, 0},
    };
    bb z = {0};
    build_zip(&z, e, storage ? 3 : 2, zip64);
    char *p = write_tmp(fname, z.p, z.n);
    bb_free(&z);
    return p;
}

/* Reads path expecting failure with `code`; the message must name the file
 * and contain `needle` (if given). */
static void expect_fail(const char *path, sdc_status code, const char *needle, int line) {
    sdc_weights w;
    sdc_weights_init(&w);
    sdc_error err;
    sdc_error_clear(&err);
    sdc_status s = sdc_ckpt_read(path, &w, &err);
    if (s != code)
        sdc_test_fail(__FILE__, line, "%s: status %s, expected %s (%s)", path, sdc_status_name(s), sdc_status_name(code),
                      err.msg);
    else if (!strstr(err.msg, path))
        sdc_test_fail(__FILE__, line, "message does not name the file: %s", err.msg);
    else if (needle && !strstr(err.msg, needle))
        sdc_test_fail(__FILE__, line, "message lacks \"%s\": %s", needle, err.msg);
    if (w.count != 0) sdc_test_fail(__FILE__, line, "%zu tensors added despite the failure", w.count);
    sdc_weights_free(&w);
}
#define EXPECT_FAIL(path, code, needle) expect_fail(path, code, needle, __LINE__)

/* ---- good files -------------------------------------------------------------------- */

/* Every tensor of the expected safetensors file must be in the checkpoint with
 * the same dtype, shape and bytes, and nothing else may be. */
static void compare_with_expected(const char *ckpt, const char *expect, sdc_weights *w) {
    sdc_weights e;
    sdc_weights_init(&e);
    sdc_error err;
    if (sdc_ckpt_read(ckpt, w, &err) != SDC_OK) {
        CHECK_MSG(0, "reading %s: %s", ckpt, err.msg);
        return;
    }
    if (sdc_safetensors_read(expect, &e, &err) != SDC_OK) {
        CHECK_MSG(0, "reading %s: %s", expect, err.msg);
        sdc_weights_free(&e);
        return;
    }
    CHECK_EQ_INT(w->count, e.count);
    for (size_t i = 0; i < e.count; i++) {
        const sdc_weight *x = &e.items[i], *t = sdc_weights_find(w, x->name);
        if (!t) {
            CHECK_MSG(0, "%s: tensor \"%s\" missing", ckpt, x->name);
            continue;
        }
        CHECK_STR(t->name, t->src_name);
        CHECK_MSG(t->dtype == x->dtype, "%s: dtype %s, expected %s", x->name, sdc_dtype_name(t->dtype),
                  sdc_dtype_name(x->dtype));
        CHECK_MSG(t->ndim == x->ndim, "%s: ndim %d, expected %d", x->name, t->ndim, x->ndim);
        for (int d = 0; d < x->ndim && d < t->ndim; d++) CHECK_EQ_INT(t->shape[d], x->shape[d]);
        CHECK_MSG(t->nbytes == x->nbytes, "%s: %zu bytes, expected %zu", x->name, t->nbytes, x->nbytes);
        if (t->nbytes == x->nbytes && x->nbytes)
            CHECK_MSG(memcmp(t->data, x->data, x->nbytes) == 0, "%s: data differs", x->name);
        if (sdc_dtype_is_float(x->dtype) && x->nbytes) { /* and the same numbers after conversion */
            int64_t n = sdc_weight_numel(x);
            float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
            REQUIRE(a && b);
            CHECK(sdc_weight_to_f32(w, t, a, &err) == SDC_OK);
            CHECK(sdc_weight_to_f32(&e, x, b, &err) == SDC_OK);
            CHECK_MSG(memcmp(a, b, (size_t)n * sizeof *a) == 0, "%s: converted values differ", x->name);
            free(a);
            free(b);
        }
    }
    sdc_weights_free(&e);
}

/* data lies inside the weights' mapping of file 0 */
static int in_file(const sdc_weights *w, const sdc_weight *t) {
    const unsigned char *d = t->data, *m = w->files[0].map.data;
    return t->file == 0 && d >= m && d + t->nbytes <= m + w->files[0].map.size;
}

TEST(ckpt_dtypes_views_match_safetensors) {
    sdc_weights w;
    sdc_weights_init(&w);
    compare_with_expected(test_data("ckpt/dtypes.pt"), test_data("ckpt/dtypes_expected.safetensors"), &w);
    REQUIRE(w.count > 0);
    CHECK_EQ_INT(w.nfiles, 1);
    CHECK_STR(w.files[0].path, test_data("ckpt/dtypes.pt"));
    const sdc_weight *f32 = sdc_weights_find(&w, "f32"), *va = sdc_weights_find(&w, "view_a"),
                     *vb = sdc_weights_find(&w, "view_b"), *tr = sdc_weights_find(&w, "transposed"),
                     *sc = sdc_weights_find(&w, "scalar"), *em = sdc_weights_find(&w, "empty"),
                     *ex = sdc_weights_find(&w, "expanded"), *i64 = sdc_weights_find(&w, "i64"),
                     *col = sdc_weights_find(&w, "column"), *nest = sdc_weights_find(&w, "nested.inner.w");
    REQUIRE(f32 && va && vb && tr && sc && em && ex && i64 && col && nest);
    /* contiguous tensors are not copied; both views share one storage */
    CHECK(in_file(&w, f32));
    CHECK(in_file(&w, va) && in_file(&w, vb));
    CHECK((const char *)vb->data == (const char *)va->data + 4 * sizeof(float));
    /* strided views are materialised */
    CHECK_EQ_INT(tr->file, -1);
    CHECK_EQ_INT(col->file, -1);
    CHECK_EQ_INT(ex->file, -1);
    CHECK_EQ_INT(sc->ndim, 0);
    CHECK_EQ_INT(sc->nbytes, 4);
    float f;
    memcpy(&f, sc->data, 4);
    CHECK_NEAR(f, 3.5, 0);
    CHECK_EQ_INT(em->ndim, 2);
    CHECK_EQ_INT(em->shape[0], 0);
    CHECK_EQ_INT(em->shape[1], 5);
    CHECK_EQ_INT(em->nbytes, 0);
    for (int i = 0; i < 6; i++) {
        memcpy(&f, (const char *)ex->data + 4 * i, 4);
        CHECK_NEAR(f, 2.0, 0);
    }
    int64_t big;
    memcpy(&big, (const char *)i64->data + 16, 8);
    CHECK_EQ_INT(big, 3000000000000ll);
    /* transposed[i][j] == view_a/view_b row j, column i */
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++) {
            float a, b;
            memcpy(&a, (const char *)tr->data + 4 * (i * 3 + j), 4);
            memcpy(&b, (const char *)va->data + 4 * (j * 4 + i), 4); /* rows 0..2 of base, contiguous */
            CHECK_NEAR(a, b, 0);
        }
    sdc_weights_free(&w);
}

TEST(ckpt_deflate_entries_are_inflated) {
    sdc_weights w;
    sdc_weights_init(&w);
    compare_with_expected(test_data("ckpt/deflate.pt"), test_data("ckpt/dtypes_expected.safetensors"), &w);
    const sdc_weight *f32 = sdc_weights_find(&w, "f32");
    if (f32) CHECK_EQ_INT(f32->file, -1); /* lives in an inflated buffer */
    sdc_weights_free(&w);
}

TEST(ckpt_compvis_state_dict_wrapper) {
    sdc_weights w;
    sdc_weights_init(&w);
    compare_with_expected(test_data("ckpt/compvis.ckpt"), test_data("ckpt/compvis_expected.safetensors"), &w);
    CHECK_EQ_INT(w.count, 3);
    CHECK(sdc_weights_find(&w, "model.diffusion_model.input_blocks.0.0.weight") != NULL);
    CHECK(sdc_weights_find(&w, "global_step") == NULL);
    sdc_weights_free(&w);
}

TEST(ckpt_parameters_and_buffers) {
    sdc_weights w;
    sdc_weights_init(&w);
    compare_with_expected(test_data("ckpt/params.pt"), test_data("ckpt/params_expected.safetensors"), &w);
    const sdc_weight *nbt = sdc_weights_find(&w, "1.num_batches_tracked");
    REQUIRE(nbt);
    CHECK_EQ_INT(nbt->dtype, SDC_I64);
    CHECK_EQ_INT(nbt->ndim, 0);
    sdc_weights_free(&w);
}

/* A Lightning checkpoint (protocol 2): callback states keyed by the
 * ModelCheckpoint class, a numpy float64 scalar, bytes via _codecs.encode.
 * Only the state dict's tensors come out. */
TEST(ckpt_lightning_checkpoint) {
    sdc_weights w;
    sdc_weights_init(&w);
    compare_with_expected(test_data("ckpt/lightning.ckpt"), test_data("ckpt/lightning_expected.safetensors"), &w);
    CHECK_EQ_INT(w.count, 2);
    const sdc_weight *wt = sdc_weights_find(&w, "model.diffusion_model.out.2.weight"),
                     *b = sdc_weights_find(&w, "model.diffusion_model.out.2.bias");
    CHECK(wt && wt->dtype == SDC_F32 && wt->ndim == 2 && wt->shape[0] == 2 && wt->shape[1] == 3 && in_file(&w, wt));
    CHECK(b && b->dtype == SDC_F16 && b->ndim == 1 && b->shape[0] == 2);
    sdc_weights_free(&w);
}

/* The same file's pickle, looked into: what each Lightning piece became. */
TEST(pickle_lightning_values) {
    sdc_weights w;
    sdc_weights_init(&w);
    sdc_error err;
    const char *src = test_data("ckpt/lightning.ckpt");
    REQUIRE_OK(sdc_weights_map_file(&w, src, &(int){0}, &err), &err);
    sdc_zip z;
    REQUIRE_OK(sdc_zip_open(&z, src, w.files[0].map.data, w.files[0].map.size, &err), &err);
    const sdc_zip_entry *e = sdc_zip_find(&z, "lightning/data.pkl");
    REQUIRE(e && e->method == 0);
    sdc_pickle pk;
    REQUIRE_OK(sdc_pickle_load(&pk, w.files[0].map.data + e->data_offset, (size_t)e->size, "p", &err), &err);
    const sdc_pk_value *r = pk.root, *v, *cb, *st;
    REQUIRE(r->kind == SDC_PK_DICT);
    CHECK((v = sdc_pk_dict_get(r, "blob")) && v->kind == SDC_PK_BYTES && v->u.s.len == 4 &&
          memcmp(v->u.s.p, "\x00\xff" "ab", 4) == 0);
    CHECK((v = sdc_pk_dict_get(r, "global_step")) && v->kind == SDC_PK_INT && v->u.i == 5);
    REQUIRE((cb = sdc_pk_dict_get(r, "callbacks")) && cb->kind == SDC_PK_DICT && sdc_pk_dict_len(cb) == 1);
    const sdc_pk_value *k = sdc_pk_dict_key(cb, 0);
    CHECK(k->kind == SDC_PK_GLOBAL && k->u.g.which == SDC_PKG_LIGHTNING_CLASS && sdc_pk_is_inert(k));
    CHECK_STR(k->u.g.name, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint");
    REQUIRE((st = sdc_pk_dict_val(cb, 0))->kind == SDC_PK_DICT);
    CHECK((v = sdc_pk_dict_get(st, "best_model_score")) && v->kind == SDC_PK_OPAQUE &&
          v->u.g.which == SDC_PKG_NUMPY_SCALAR && sdc_pk_is_inert(v));
    CHECK((v = sdc_pk_dict_get(st, "dirpath")) && sdc_pk_is_str(v, "x"));
    sdc_pickle_free(&pk);
    /* byte flips through the new paths (UTF-8 for _codecs.encode, argument
     * shapes): any outcome but a crash */
    size_t n = (size_t)e->size;
    const unsigned char *orig = w.files[0].map.data + e->data_offset;
    unsigned char *buf = malloc(n);
    REQUIRE(buf);
    sdc_rng rng;
    sdc_rng_init(&rng, 99);
    for (int it = 0; it < 5000; it++) {
        memcpy(buf, orig, n);
        int flips = 1 + (int)sdc_rng_below(&rng, 3);
        for (int f = 0; f < flips; f++) {
            /* mostly in the callbacks / blob part of the pickle (after the tensors) */
            size_t at = n > 340 && sdc_rng_below(&rng, 4) ? 340 + sdc_rng_below(&rng, (uint32_t)(n - 340))
                                                           : sdc_rng_below(&rng, (uint32_t)n);
            buf[at] = (unsigned char)sdc_rng_u32(&rng);
        }
        if (sdc_pickle_load(&pk, buf, n, "p", &err) == SDC_OK) sdc_pickle_free(&pk);
        else CHECK(strncmp(err.msg, "p: ", 3) == 0);
    }
    free(buf);
    sdc_zip_close(&z);
    sdc_weights_free(&w);
}

TEST(ckpt_zip64_archive) {
    const float v[4] = {1, 2, 3, 4};
    const int64_t size[2] = {2, 2}, stride[2] = {2, 1};
    bb pk = {0};
    pk_state_dict1(&pk, "w", 4, 0, 2, size, stride);
    char *p = write_ckpt("zip64.pt", &pk, v, sizeof v, 0, 0, 1);
    REQUIRE(p);
    sdc_weights w;
    sdc_weights_init(&w);
    sdc_error err;
    CHECK(sdc_ckpt_read(p, &w, &err) == SDC_OK);
    const sdc_weight *t = sdc_weights_find(&w, "w");
    if (t) {
        CHECK(t->nbytes == sizeof v && memcmp(t->data, v, sizeof v) == 0);
        CHECK(in_file(&w, t));
    } else {
        CHECK_MSG(0, "%s", err.msg);
    }
    sdc_weights_free(&w);
    bb_free(&pk);
    free(p);
}

/* ---- refusals ------------------------------------------------------------------------ */

TEST(ckpt_legacy_format_refused) {
    EXPECT_FAIL(test_data("ckpt/legacy.pt"), SDC_EUNSUPPORTED,
                "legacy (pre-1.6) PyTorch format; re-save with torch.save or convert to safetensors");
}

TEST(ckpt_torchscript_refused) {
    EXPECT_FAIL(test_data("ckpt/torchscript.pt"), SDC_EUNSUPPORTED, "TorchScript");
}

TEST(ckpt_malicious_pickles_refused) {
    static const struct {
        const char *file, *global, *marker;
    } cases[] = {
        {"ckpt/evil_os_system.pt", "os.system", "/tmp/sdc_pwned_os_system"},
        {"ckpt/evil_posix_system.pt", "posix.system", "/tmp/sdc_pwned_posix_system"},
        {"ckpt/evil_eval.pt", "builtins.eval", "/tmp/sdc_pwned_eval"},
        {"ckpt/evil_popen.pt", "subprocess.Popen", "/tmp/sdc_pwned_popen"},
        {"ckpt/evil_nested.pt", "posix.system", "/tmp/sdc_pwned_nested"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unlink(cases[i].marker); /* so its absence afterwards proves something */
        const char *path = test_data(cases[i].file);
        REQUIRE(sdc_path_exists(path));
        EXPECT_FAIL(path, SDC_EUNSAFE, cases[i].global);
        CHECK_MSG(!sdc_path_exists(cases[i].marker), "%s: side effect happened (%s exists)", path, cases[i].marker);
    }
}

TEST(ckpt_disallowed_globals_in_tmp) {
    /* a harmless-looking but unlisted global, INST and EXT opcodes */
    bb a = {0}, b = {0}, c = {0};
    bb_str(&a, "\x80\x02");
    pk_global(&a, "torch", "load");
    bb_str(&a, ")R.");
    BB_LIT(&b, "(ios\nsystem\n.");
    bb_str(&c, "\x80\x02\x82\x01)R.");
    char *pa = write_ckpt("g1.pt", &a, NULL, 0, 0, 0, 0), *pb = write_ckpt("g2.pt", &b, NULL, 0, 0, 0, 0),
         *pc = write_ckpt("g3.pt", &c, NULL, 0, 0, 0, 0);
    REQUIRE(pa && pb && pc);
    EXPECT_FAIL(pa, SDC_EUNSAFE, "torch.load");
    EXPECT_FAIL(pb, SDC_EUNSAFE, "os.system");
    EXPECT_FAIL(pc, SDC_EUNSAFE, "EXT1");
    /* a real torch type sdc has no dtype for: unsupported, not "unsafe" */
    bb d = {0};
    const int64_t one = 1;
    bb_str(&d, "\x80\x02}(");
    pk_ustr(&d, "z");
    pk_tensor(&d, "ComplexFloatStorage", "0", 1, 0, 1, &one, &one);
    bb_str(&d, "u.");
    char *pd = write_ckpt("g4.pt", &d, "01234567", 8, 0, 0, 0);
    REQUIRE(pd);
    EXPECT_FAIL(pd, SDC_EUNSUPPORTED, "torch.ComplexFloatStorage");
    bb_free(&a);
    bb_free(&b);
    bb_free(&c);
    bb_free(&d);
    free(pa);
    free(pb);
    free(pc);
    free(pd);
}

TEST(ckpt_bad_files) {
    /* empty, garbage, a zip signature with nothing behind it, missing file */
    char *empty = write_tmp("empty.pt", "", 0);
    char *garbage = write_tmp("garbage.pt", "this is not a checkpoint at all\n", 32);
    char *pkonly = write_tmp("pk.pt", "PK\x03\x04garbage garbage garbage", 27);
    REQUIRE(empty && garbage && pkonly);
    EXPECT_FAIL(empty, SDC_EFORMAT, "empty");
    EXPECT_FAIL(garbage, SDC_EFORMAT, "not a zip");
    EXPECT_FAIL(pkonly, SDC_EFORMAT, "end-of-central-directory");
    char *missing = sdc_path_join(test_tmpdir(), "missing.pt");
    EXPECT_FAIL(missing, SDC_ENOTFOUND, NULL);
    /* a zip without data.pkl */
    zent e = {"archive/other.txt", "x", 1, 0, 0};
    bb z = {0};
    build_zip(&z, &e, 1, 0);
    char *nopkl = write_tmp("nopkl.pt", z.p, z.n);
    REQUIRE(nopkl);
    EXPECT_FAIL(nopkl, SDC_EFORMAT, "data.pkl");
    bb_free(&z);
    free(empty);
    free(garbage);
    free(pkonly);
    free(missing);
    free(nopkl);
}

TEST(ckpt_truncated_zip_every_length) {
    char *buf;
    size_t n;
    sdc_error err;
    REQUIRE_OK(sdc_read_file(test_data("ckpt/compvis.ckpt"), &buf, &n, &err), &err);
    const char *dir = test_tmpdir();
    char *p = sdc_path_join(dir, "cut.pt");
    int checked = 0;
    for (size_t len = 1; len < n; len += 13) {
        REQUIRE(write_plain(p, buf, len) == 0);
        sdc_weights w;
        sdc_weights_init(&w);
        sdc_status s = sdc_ckpt_read(p, &w, &err);
        if (s != SDC_EFORMAT || !strstr(err.msg, p)) {
            CHECK_MSG(0, "cut at %zu: %s (%s)", len, sdc_status_name(s), s ? err.msg : "");
            sdc_weights_free(&w);
            break;
        }
        sdc_weights_free(&w);
        checked++;
    }
    CHECK(checked > 100);
    free(p);
    free(buf);
}

TEST(ckpt_truncated_and_bad_pickles) {
    const float v[4] = {1, 2, 3, 4};
    const int64_t size[1] = {4}, stride[1] = {1};
    bb good = {0};
    pk_state_dict1(&good, "w", 4, 0, 1, size, stride);
    /* cut the pickle short (the zip itself is intact) */
    bb cut = {0};
    bb_put(&cut, good.p, good.n / 2);
    char *p1 = write_ckpt("cutpkl.pt", &cut, v, sizeof v, 0, 0, 0);
    /* unknown opcode and a valid-but-unsupported one */
    bb unk = {0}, txt = {0};
    bb_str(&unk, "\x80\x02}\xff.");
    bb_str(&txt, "\x80\x02S'x'\n.");
    char *p2 = write_ckpt("unk.pt", &unk, NULL, 0, 0, 0, 0), *p3 = write_ckpt("int.pt", &txt, NULL, 0, 0, 0, 0);
    /* not a dict at the top */
    bb lst = {0};
    bb_str(&lst, "\x80\x02]K\x01\x61.");
    char *p4 = write_ckpt("list.pt", &lst, NULL, 0, 0, 0, 0);
    REQUIRE(p1 && p2 && p3 && p4);
    EXPECT_FAIL(p1, SDC_EFORMAT, "truncated");
    EXPECT_FAIL(p2, SDC_EFORMAT, "opcode 0xff");
    EXPECT_FAIL(p2, SDC_EFORMAT, "offset 3");
    EXPECT_FAIL(p3, SDC_EUNSUPPORTED, "STRING");
    EXPECT_FAIL(p4, SDC_EFORMAT, "top level is a list");
    bb_free(&good);
    bb_free(&cut);
    bb_free(&unk);
    bb_free(&txt);
    bb_free(&lst);
    free(p1);
    free(p2);
    free(p3);
    free(p4);
}

TEST(ckpt_storage_and_view_checks) {
    const float v[4] = {1, 2, 3, 4};
    sdc_weights w;
    sdc_error err;
    /* the pickle says 4 floats, the entry holds 2 */
    const int64_t s4[1] = {4}, st1[1] = {1};
    bb a = {0};
    pk_state_dict1(&a, "w", 4, 0, 1, s4, st1);
    char *pa = write_ckpt("short.pt", &a, v, 8, 0, 0, 0);
    /* a shape bigger than the storage */
    const int64_t s8[1] = {8};
    bb b = {0};
    pk_state_dict1(&b, "w", 4, 0, 1, s8, st1);
    char *pb = write_ckpt("big.pt", &b, v, sizeof v, 0, 0, 0);
    /* a stride that reaches past the storage: (2,2) with stride (3,1) ends at 4 */
    const int64_t s22[2] = {2, 2}, st31[2] = {3, 1};
    bb c = {0};
    pk_state_dict1(&c, "w", 4, 0, 2, s22, st31);
    char *pc = write_ckpt("stride.pt", &c, v, sizeof v, 0, 0, 0);
    /* an offset that pushes a valid shape out */
    bb d = {0};
    pk_state_dict1(&d, "w", 4, 1, 1, s4, st1);
    char *pd = write_ckpt("offset.pt", &d, v, sizeof v, 0, 0, 0);
    /* the storage entry is missing */
    char *pe = write_ckpt("nostorage.pt", &a, NULL, 0, 0, 0, 0);
    /* nine dimensions */
    const int64_t s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 4}, st9[9] = {4, 4, 4, 4, 4, 4, 4, 4, 1};
    bb f = {0};
    pk_state_dict1(&f, "w", 4, 0, 9, s9, st9);
    char *pf = write_ckpt("ndim9.pt", &f, v, sizeof v, 0, 0, 0);
    /* a transposed 2x2 view of the good storage works and is materialised */
    const int64_t st12[2] = {1, 2};
    bb g = {0};
    pk_state_dict1(&g, "w", 4, 0, 2, s22, st12);
    char *pg = write_ckpt("t.pt", &g, v, sizeof v, 0, 0, 0);
    REQUIRE(pa && pb && pc && pd && pe && pf && pg);
    EXPECT_FAIL(pa, SDC_EFORMAT, "holds 8 bytes");
    EXPECT_FAIL(pb, SDC_EFORMAT, "past its storage");
    EXPECT_FAIL(pc, SDC_EFORMAT, "past its storage");
    EXPECT_FAIL(pd, SDC_EFORMAT, "past its storage");
    EXPECT_FAIL(pe, SDC_EFORMAT, "not in the archive");
    EXPECT_FAIL(pf, SDC_ELIMIT, "dimensions");
    sdc_weights_init(&w);
    CHECK(sdc_ckpt_read(pg, &w, &err) == SDC_OK);
    const sdc_weight *t = sdc_weights_find(&w, "w");
    const float want[4] = {1, 3, 2, 4};
    CHECK(t && t->nbytes == 16 && memcmp(t->data, want, 16) == 0 && t->file == -1);
    sdc_weights_free(&w);
    bb *all[] = {&a, &b, &c, &d, &f, &g};
    for (size_t i = 0; i < 6; i++) bb_free(all[i]);
    char *paths[] = {pa, pb, pc, pd, pe, pf, pg};
    for (size_t i = 0; i < 7; i++) free(paths[i]);
}

TEST(ckpt_huge_claims_refused_before_allocating) {
    const float v[4] = {1, 2, 3, 4};
    const int64_t s4[1] = {4}, st1[1] = {1};
    bb pk = {0};
    pk_state_dict1(&pk, "w", 4, 0, 1, s4, st1);
    /* a deflated data.pkl claiming ~4 GiB, and one claiming 2^60 through ZIP64 */
    char *p1 = write_ckpt("huge.pt", &pk, v, sizeof v, 1, 0xfffffff0u, 0);
    char *p2 = write_ckpt("huge64.pt", &pk, v, sizeof v, 1, 1ull << 60, 1);
    /* a deflated storage claiming 1 GiB from a few bytes, its pickle agreeing */
    const int64_t sbig[1] = {1 << 28};
    bb pb = {0};
    pk_state_dict1(&pb, "w", 1 << 28, 0, 1, sbig, st1);
    zent e[3] = {
        {"archive/data.pkl", pb.p, pb.n, 0, 0},
        {"archive/byteorder", "little", 6, 0, 0},
        {"archive/data/0", v, sizeof v, 1, 1ull << 30},
    };
    bb z = {0};
    build_zip(&z, e, 3, 0);
    char *p3 = write_tmp("bomb.pt", z.p, z.n);
    /* a stride-0 view of one float claiming 2^40 elements */
    const int64_t sexp[2] = {1 << 20, 1 << 20}, st0[2] = {0, 0};
    bb pc = {0};
    pk_state_dict1(&pc, "w", 1, 0, 2, sexp, st0);
    char *p4 = write_ckpt("expand.pt", &pc, v, 4, 0, 0, 0);
    REQUIRE(p1 && p2 && p3 && p4);
    EXPECT_FAIL(p1, SDC_ELIMIT, "claims");
    EXPECT_FAIL(p2, SDC_ELIMIT, "claims");
    EXPECT_FAIL(p3, SDC_EFORMAT, "more than deflate can produce");
    EXPECT_FAIL(p4, SDC_ELIMIT, "strided view");
    bb_free(&pk);
    bb_free(&pb);
    bb_free(&pc);
    bb_free(&z);
    free(p1);
    free(p2);
    free(p3);
    free(p4);
}

TEST(ckpt_big_endian_refused) {
    bb pk = {0};
    bb_str(&pk, "\x80\x02}.");
    zent e[2] = {{"archive/data.pkl", pk.p, pk.n, 0, 0}, {"archive/byteorder", "big", 3, 0, 0}};
    bb z = {0};
    build_zip(&z, e, 2, 0);
    char *p = write_tmp("be.pt", z.p, z.n);
    REQUIRE(p);
    EXPECT_FAIL(p, SDC_EUNSUPPORTED, "big-endian");
    bb_free(&pk);
    bb_free(&z);
    free(p);
}

/* Lightning-like pieces outside "state_dict": a tensor under a key that is a
 * callback class is skipped (it has no name), the rest of the file loads. */
TEST(ckpt_inert_keys_skipped) {
    const float v[4] = {1, 2, 3, 4};
    const int64_t s2[1] = {2}, st1[1] = {1};
    bb p = {0};
    bb_str(&p, "\x80\x02}(");
    pk_ustr(&p, "w");
    pk_tensor(&p, "FloatStorage", "0", 4, 0, 1, s2, st1);
    pk_ustr(&p, "callbacks");
    bb_str(&p, "}(");
    pk_global(&p, "lightning.pytorch.callbacks.model_checkpoint", "ModelCheckpoint");
    bb_str(&p, "}(");
    pk_ustr(&p, "hidden");
    pk_tensor(&p, "FloatStorage", "0", 4, 2, 1, s2, st1);
    bb_str(&p, "u");
    pk_global(&p, "numpy", "dtype"); /* another inert key, straight onto a tensor */
    pk_tensor(&p, "FloatStorage", "0", 4, 0, 1, s2, st1);
    bb_str(&p, "uu.");
    char *path = write_ckpt("inert_keys.pt", &p, v, sizeof v, 0, 0, 0);
    REQUIRE(path);
    sdc_weights w;
    sdc_weights_init(&w);
    sdc_error err;
    CHECK_MSG(sdc_ckpt_read(path, &w, &err) == SDC_OK, "%s", err.msg);
    CHECK_EQ_INT(w.count, 1);
    const sdc_weight *t = sdc_weights_find(&w, "w");
    CHECK(t && t->nbytes == 8 && memcmp(t->data, v, 8) == 0);
    sdc_weights_free(&w);
    bb_free(&p);
    free(path);
}

/* ---- the unpickler on its own ------------------------------------------------------ */

static sdc_status load(const char *bytes, size_t n, sdc_pickle *pk, sdc_error *err) {
    return sdc_pickle_load(pk, (const unsigned char *)bytes, n, "t.pkl", err);
}

TEST(pickle_values) {
    /* protocol 4: FRAME, MEMOIZE, SHORT_BINUNICODE, LONG1, BINFLOAT, sets, DICT/LIST, POP, DUP, NEWOBJ */
    static const char p[] =
        "\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00" /* PROTO 4, FRAME 0 (a hint) */
        "(\x8c\x01" "a\x94\x8a\x02\x00\x80"             /* MARK 'a' MEMOIZE LONG1 -32768 */
        "\x8c\x01" "b" "G\x3f\xe0\x00\x00\x00\x00\x00\x00" /* 'b' 0.5 */
        "\x8c\x01" "c" "(K\x01K\x02l"                   /* 'c' [1, 2] */
        "\x8c\x01" "d" "\x8f(K\x03\x90"                  /* 'd' {3} */
        "\x8c\x01" "e" "C\x02xy"                         /* 'e' b'xy' */
        "\x8c\x01" "f" "J\xff\xff\xff\xff"               /* 'f' -1 */
        "\x8c\x01" "g" "\x8c\x0b" "collections\x8c\x0bOrderedDict\x93)\x81" /* 'g' OrderedDict() via NEWOBJ */
        "\x8c\x01" "h" "h\x00"                           /* 'h' memo[0] == 'a' */
        "\x8c\x01" "i" "N2" "0"                          /* 'i' None (DUP then POP) */
        "\x8c\x01" "j" "I01\n"                           /* 'j' True, protocol 1 style */
        "\x8c\x01" "k" "L-12345678901L\n"                /* 'k' LONG */
        "d.";
    sdc_pickle pk;
    sdc_error err;
    REQUIRE_OK(load(p, sizeof p - 1, &pk, &err), &err);
    const sdc_pk_value *r = pk.root;
    REQUIRE(r->kind == SDC_PK_DICT);
    CHECK_EQ_INT(sdc_pk_dict_len(r), 11);
    const sdc_pk_value *v;
    CHECK((v = sdc_pk_dict_get(r, "a")) && v->kind == SDC_PK_INT && v->u.i == -32768);
    CHECK((v = sdc_pk_dict_get(r, "b")) && v->kind == SDC_PK_FLOAT && v->u.f == 0.5);
    CHECK((v = sdc_pk_dict_get(r, "c")) && v->kind == SDC_PK_LIST && v->u.seq.n == 2 && v->u.seq.items[1]->u.i == 2);
    CHECK((v = sdc_pk_dict_get(r, "d")) && v->kind == SDC_PK_LIST && v->u.seq.n == 1);
    CHECK((v = sdc_pk_dict_get(r, "e")) && v->kind == SDC_PK_BYTES && v->u.s.len == 2 && memcmp(v->u.s.p, "xy", 2) == 0);
    CHECK((v = sdc_pk_dict_get(r, "f")) && v->kind == SDC_PK_INT && v->u.i == -1);
    CHECK((v = sdc_pk_dict_get(r, "g")) && v->kind == SDC_PK_DICT && sdc_pk_dict_len(v) == 0);
    CHECK((v = sdc_pk_dict_get(r, "h")) && sdc_pk_is_str(v, "a"));
    CHECK((v = sdc_pk_dict_get(r, "i")) && v->kind == SDC_PK_NONE);
    CHECK((v = sdc_pk_dict_get(r, "j")) && v->kind == SDC_PK_BOOL && v->u.i == 1);
    CHECK((v = sdc_pk_dict_get(r, "k")) && v->kind == SDC_PK_INT && v->u.i == -12345678901ll);
    sdc_pickle_free(&pk);
}

/* The inert globals by every spelling and route: old and new numpy module
 * names, both Lightning packages, REDUCE / NEWOBJ / BUILD on the callback
 * class, STACK_GLOBAL, _codecs.encode to "latin-1" with ASCII text (kept in
 * place) and with U+0080..U+00FF (decoded). */
TEST(pickle_inert_globals) {
    bb p = {0};
    bb_str(&p, "\x80\x02}(");
    pk_ustr(&p, "old_numpy");
    pk_global(&p, "numpy.core.multiarray", "scalar");
    pk_global(&p, "numpy", "dtype");
    pk_ustr(&p, "f4");
    BB_LIT(&p, "\x89\x88\x87Rq\x00"); /* dtype('f4', False, True), memo 0 */
    BB_LIT(&p, "(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb");
    BB_LIT(&p, "C\x04\x00\x00\x00?\x86R"); /* scalar(dtype, b'\0\0\0?') */
    pk_ustr(&p, "new_numpy");
    pk_global(&p, "numpy._core.multiarray", "scalar");
    BB_LIT(&p, "h\x00" "C\x04\x00\x00\x00?\x86R"); /* the memoised dtype again */
    pk_ustr(&p, "called");
    pk_global(&p, "pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint");
    pk_ustr(&p, "dirpath");
    BB_LIT(&p, "\x85R}b"); /* ModelCheckpoint('dirpath'), then BUILD with {} */
    pk_ustr(&p, "newobj");
    pk_ustr(&p, "lightning.pytorch.callbacks.model_checkpoint");
    pk_ustr(&p, "ModelCheckpoint");
    BB_LIT(&p, "\x93q\x01)\x81N\x62"); /* STACK_GLOBAL, NEWOBJ, BUILD with None */
    pk_ustr(&p, "class");
    BB_LIT(&p, "h\x01}b"); /* the class itself, BUILD ignored */
    pk_ustr(&p, "ascii");
    pk_global(&p, "_codecs", "encode");
    pk_ustr(&p, "abc");
    pk_ustr(&p, "latin-1");
    BB_LIT(&p, "\x86R");
    pk_ustr(&p, "latin");
    pk_global(&p, "_codecs", "encode");
    pk_ustr(&p, "\x7f\xc2\x80\xc3\xbf\xc3\xa9z"); /* U+007F U+0080 U+00FF U+00E9 z */
    pk_ustr(&p, "latin1");
    BB_LIT(&p, "\x86R");
    pk_ustr(&p, "empty");
    pk_global(&p, "_codecs", "encode");
    pk_ustr(&p, "");
    pk_ustr(&p, "latin1");
    BB_LIT(&p, "\x86Ru.");
    sdc_pickle pk;
    sdc_error err;
    REQUIRE_OK(sdc_pickle_load(&pk, p.p, p.n, "t.pkl", &err), &err);
    const sdc_pk_value *r = pk.root, *v;
    REQUIRE(r->kind == SDC_PK_DICT);
    CHECK_EQ_INT(sdc_pk_dict_len(r), 8);
    CHECK((v = sdc_pk_dict_get(r, "old_numpy")) && v->kind == SDC_PK_OPAQUE && v->u.g.which == SDC_PKG_NUMPY_SCALAR);
    CHECK((v = sdc_pk_dict_get(r, "new_numpy")) && v->kind == SDC_PK_OPAQUE && v->u.g.which == SDC_PKG_NUMPY_SCALAR);
    CHECK((v = sdc_pk_dict_get(r, "called")) && v->kind == SDC_PK_OPAQUE && v->u.g.which == SDC_PKG_LIGHTNING_CLASS);
    CHECK((v = sdc_pk_dict_get(r, "newobj")) && v->kind == SDC_PK_OPAQUE && v->u.g.which == SDC_PKG_LIGHTNING_CLASS);
    if (v) CHECK_STR(v->u.g.name, "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint");
    CHECK((v = sdc_pk_dict_get(r, "class")) && v->kind == SDC_PK_GLOBAL && v->u.g.which == SDC_PKG_LIGHTNING_CLASS);
    CHECK((v = sdc_pk_dict_get(r, "ascii")) && v->kind == SDC_PK_BYTES && v->u.s.len == 3 && memcmp(v->u.s.p, "abc", 3) == 0);
    CHECK((v = sdc_pk_dict_get(r, "latin")) && v->kind == SDC_PK_BYTES && v->u.s.len == 5 &&
          memcmp(v->u.s.p, "\x7f\x80\xff\xe9z", 5) == 0);
    CHECK((v = sdc_pk_dict_get(r, "empty")) && v->kind == SDC_PK_BYTES && v->u.s.len == 0);
    CHECK(!sdc_pk_is_inert(sdc_pk_dict_get(r, "ascii")));
    sdc_pickle_free(&pk);
    bb_free(&p);
}

/* Next to the allowed names, everything else stays refused; and the allowed
 * ones refuse what they cannot mean. */
TEST(pickle_inert_globals_refusals) {
#define CALL(lit) lit, sizeof(lit) - 1 /* pickle bytes after the GLOBAL; they may hold NULs */
    static const struct {
        const char *mod, *name, *call;
        size_t call_n;
        sdc_status code;
        const char *needle;
    } cases[] = {
        {"numpy.core.multiarray", "_reconstruct", CALL(")R."), SDC_EUNSAFE, "numpy.core.multiarray._reconstruct"},
        {"numpy._core.multiarray", "_reconstruct", CALL(")R."), SDC_EUNSAFE, "numpy._core.multiarray._reconstruct"},
        {"pytorch_lightning", "something_else", CALL(")R."), SDC_EUNSAFE, "pytorch_lightning.something_else"},
        {"pytorch_lightning.callbacks.model_checkpoint", "EarlyStopping", CALL("."), SDC_EUNSAFE,
         "pytorch_lightning.callbacks.model_checkpoint.EarlyStopping"},
        {"lightning.pytorch.callbacks", "ModelCheckpoint", CALL("."), SDC_EUNSAFE, "lightning.pytorch.callbacks.ModelCheckpoint"},
        {"_codecs", "decode", CALL("X\x01\x00\x00\x00" "aX\x06\x00\x00\x00latin1\x86R."), SDC_EUNSAFE, "_codecs.decode"},
        {"numpy", "ndarray", CALL(")R."), SDC_EUNSAFE, "numpy.ndarray"},
        {"_codecs", "encode", CALL("X\x01\x00\x00\x00" "aX\x05\x00\x00\x00utf-8\x86R."), SDC_EFORMAT, "only latin1"},
        {"_codecs", "encode", CALL("X\x02\x00\x00\x00\xc4\x80X\x06\x00\x00\x00latin1\x86R."), SDC_EFORMAT, "not a latin-1"},
        {"_codecs", "encode", CALL("X\x01\x00\x00\x00\xc3X\x06\x00\x00\x00latin1\x86R."), SDC_EFORMAT, "not a latin-1"},
        {"_codecs", "encode", CALL("X\x02\x00\x00\x00\xc0\x80X\x06\x00\x00\x00latin1\x86R."), SDC_EFORMAT, "not a latin-1"},
        {"_codecs", "encode", CALL("X\x01\x00\x00\x00" "a\x85R."), SDC_EFORMAT, "takes a str"},
        {"_codecs", "encode", CALL("C\x01\x00X\x06\x00\x00\x00latin1\x86R."), SDC_EFORMAT, "takes a str"},
        {"numpy.core.multiarray", "scalar", CALL("K\x01" "C\x01\x00\x86R."), SDC_EFORMAT, "numpy.dtype and its data"},
        {"numpy", "dtype", CALL("K\x01\x85R."), SDC_EFORMAT, "type string"},
        {"numpy", "dtype", CALL(")\x81."), SDC_EUNSUPPORTED, "NEWOBJ of a numpy.dtype"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bb p = {0};
        bb_str(&p, "\x80\x02");
        pk_global(&p, cases[i].mod, cases[i].name);
        bb_put(&p, cases[i].call, cases[i].call_n);
        sdc_pickle pk;
        sdc_error err;
        sdc_error_clear(&err);
        sdc_status s = sdc_pickle_load(&pk, p.p, p.n, "t.pkl", &err);
        CHECK_MSG(s == cases[i].code && strstr(err.msg, "t.pkl") && strstr(err.msg, cases[i].needle),
                  "case %zu (%s.%s): %s: %s (expected %s, \"%s\")", i, cases[i].mod, cases[i].name, sdc_status_name(s),
                  err.msg, sdc_status_name(cases[i].code), cases[i].needle);
        if (s == SDC_OK) sdc_pickle_free(&pk);
        bb_free(&p);
    }
#undef CALL
    /* and in a checkpoint, beside an otherwise good Lightning layout */
    bb p = {0};
    bb_str(&p, "\x80\x02}(");
    pk_ustr(&p, "callbacks");
    bb_str(&p, "}(");
    pk_global(&p, "pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint");
    pk_global(&p, "numpy.core.multiarray", "_reconstruct");
    bb_str(&p, ")Ruu.");
    char *path = write_ckpt("np_reconstruct.pt", &p, NULL, 0, 0, 0, 0);
    REQUIRE(path);
    EXPECT_FAIL(path, SDC_EUNSAFE, "numpy.core.multiarray._reconstruct");
    bb_free(&p);
    free(path);
}

TEST(pickle_limits_and_malformed) {
    static const struct {
        const char *bytes;
        size_t n;
        sdc_status code;
        const char *needle;
    } cases[] = {
        {"\x80\x02", 2, SDC_EFORMAT, "without STOP"},
        {".", 1, SDC_EFORMAT, "underflow"},
        {"(.", 2, SDC_EFORMAT, "underflow"},            /* STOP cannot pop past a MARK */
        {"}h\x05.", 4, SDC_EFORMAT, "never set"},
        {"}r\x00\x00\x10\x00.", 7, SDC_EFORMAT, "out of sequence"}, /* memo index 2^20 first */
        {"}r\x00\x00\x00\x7f.", 7, SDC_ELIMIT, "memo index"},
        {"X\xff\xff\xff\x7f", 5, SDC_ELIMIT, "bytes"},  /* a 2 GiB string */
        {"X\x10\x00\x00\x00" "abc", 8, SDC_EFORMAT, "truncated"},
        {"\x8a\x09" "123456789.", 12, SDC_EUNSUPPORTED, "64 bits"},
        {"I99999999999999999999\n.", 23, SDC_EUNSUPPORTED, "64 bits"},
        {"I12x\n.", 6, SDC_EFORMAT, "malformed INT"},
        {"\x80\x06.", 3, SDC_EUNSUPPORTED, "protocol"},
        {"}K\x01s.", 5, SDC_EFORMAT, "underflow"},
        {"K\x00K\x01K\x02s.", 8, SDC_EFORMAT, "SETITEM on a int"},
        {"cos\nsys", 7, SDC_EFORMAT, "truncated"},
        {"(K\x01K\x02\x8cxb.", 9, SDC_EFORMAT, "truncated"},
        {"\x8c\x02osX\x06\x00\x00\x00system\x93.", 17, SDC_EUNSAFE, "os.system"},
        {"K\x01K\x01R.", 6, SDC_EFORMAT, "REDUCE calls a int"},
        {"\x80\x02]K\x01\x62.", 6, SDC_EUNSUPPORTED, "BUILD on a list"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sdc_pickle pk;
        sdc_error err;
        sdc_error_clear(&err);
        sdc_status s = load(cases[i].bytes, cases[i].n, &pk, &err);
        CHECK_MSG(s == cases[i].code && strstr(err.msg, "t.pkl") && strstr(err.msg, cases[i].needle),
                  "case %zu: %s: %s (expected %s, \"%s\")", i, sdc_status_name(s), err.msg, sdc_status_name(cases[i].code),
                  cases[i].needle);
        if (s == SDC_OK) sdc_pickle_free(&pk);
    }
    /* 5000 nested MARKs */
    char *marks = malloc(5001);
    REQUIRE(marks);
    memset(marks, '(', 5000);
    marks[5000] = '.';
    sdc_pickle pk;
    sdc_error err;
    CHECK(load(marks, 5001, &pk, &err) == SDC_ELIMIT && strstr(err.msg, "MARK"));
    free(marks);
    /* a stack of more than a million Nones */
    size_t n = (1u << 20) + 10;
    char *nones = malloc(n + 1);
    REQUIRE(nones);
    memset(nones, 'N', n);
    nones[n] = '.';
    CHECK(load(nones, n + 1, &pk, &err) == SDC_ELIMIT && strstr(err.msg, "stack"));
    free(nones);
    /* more objects than the limit, the stack staying shallow: [] then None APPEND ... */
    n = 1 + 2 * (size_t)(SDC_PICKLE_MAX_OBJECTS + 1) + 1;
    char *objs = malloc(n);
    REQUIRE(objs);
    objs[0] = ']';
    for (size_t i = 1; i + 1 < n; i += 2) {
        objs[i] = 'N';
        objs[i + 1] = 'a';
    }
    objs[n - 1] = '.';
    CHECK(load(objs, n, &pk, &err) == SDC_ELIMIT && strstr(err.msg, "objects"));
    free(objs);
}

TEST(ckpt_nesting_and_cycles) {
    /* a dict that contains itself: d = {}; d['a'] = d */
    bb cyc = {0};
    BB_LIT(&cyc, "\x80\x02}q\x00");
    pk_ustr(&cyc, "a");
    BB_LIT(&cyc, "h\x00s.");
    /* 100 nested dicts */
    bb deep = {0};
    bb_str(&deep, "\x80\x02");
    for (int i = 0; i < 100; i++) {
        bb_u8(&deep, '}');
        pk_ustr(&deep, "k");
    }
    bb_u8(&deep, '}');
    for (int i = 0; i < 100; i++) bb_u8(&deep, 's');
    bb_u8(&deep, '.');
    /* a shared dict doubling 40 levels deep: 2^40 paths unless bounded */
    bb dag = {0};
    bb_str(&dag, "\x80\x02}");
    for (int i = 0; i < 40; i++) {
        BB_LIT(&dag, "q\x00}(");
        pk_ustr(&dag, "a");
        BB_LIT(&dag, "h\x00");
        pk_ustr(&dag, "b");
        BB_LIT(&dag, "h\x00u");
    }
    bb_u8(&dag, '.');
    char *p1 = write_ckpt("cycle.pt", &cyc, NULL, 0, 0, 0, 0), *p2 = write_ckpt("deep.pt", &deep, NULL, 0, 0, 0, 0),
         *p3 = write_ckpt("dag.pt", &dag, NULL, 0, 0, 0, 0);
    REQUIRE(p1 && p2 && p3);
    EXPECT_FAIL(p1, SDC_ELIMIT, "nested deeper");
    EXPECT_FAIL(p2, SDC_ELIMIT, "nested deeper");
    /* the dag walk ends by depth or visits, quickly, either way ELIMIT */
    EXPECT_FAIL(p3, SDC_ELIMIT, NULL);
    bb_free(&cyc);
    bb_free(&deep);
    bb_free(&dag);
    free(p1);
    free(p2);
    free(p3);
}

/* Random byte flips in a good pickle and a good archive: any outcome but a
 * crash (run under ASan/valgrind to see the difference). */
TEST(ckpt_fuzz_no_crash) {
    sdc_weights w;
    sdc_weights_init(&w);
    sdc_error err;
    const char *src = test_data("ckpt/dtypes.pt");
    REQUIRE_OK(sdc_weights_map_file(&w, src, &(int){0}, &err), &err);
    sdc_zip z;
    REQUIRE_OK(sdc_zip_open(&z, src, w.files[0].map.data, w.files[0].map.size, &err), &err);
    const sdc_zip_entry *e = sdc_zip_find(&z, "dtypes/data.pkl");
    REQUIRE(e && e->method == 0);
    size_t n = (size_t)e->size;
    const unsigned char *orig = w.files[0].map.data + e->data_offset;
    unsigned char *buf = malloc(n);
    REQUIRE(buf);
    sdc_rng rng;
    sdc_rng_init(&rng, 1234);
    int ok = 0;
    /* every prefix fails cleanly */
    for (size_t len = 0; len < n; len++) {
        sdc_pickle pk;
        if (sdc_pickle_load(&pk, orig, len, "p", &err) == SDC_OK) {
            CHECK_MSG(0, "prefix of %zu bytes accepted", len);
            sdc_pickle_free(&pk);
        }
    }
    for (int it = 0; it < 20000; it++) {
        memcpy(buf, orig, n);
        int flips = 1 + (int)sdc_rng_below(&rng, 4);
        for (int f = 0; f < flips; f++) buf[sdc_rng_below(&rng, (uint32_t)n)] = (unsigned char)sdc_rng_u32(&rng);
        sdc_pickle pk;
        if (sdc_pickle_load(&pk, buf, n, "p", &err) == SDC_OK) {
            ok++;
            sdc_pickle_free(&pk);
        } else {
            CHECK(strncmp(err.msg, "p: ", 3) == 0);
        }
    }
    CHECK(ok > 0); /* flips in string payloads keep it valid */
    free(buf);
    /* whole archives */
    const unsigned char *file = w.files[0].map.data;
    size_t fn = w.files[0].map.size;
    unsigned char *fb = malloc(fn);
    REQUIRE(fb);
    char *p = sdc_path_join(test_tmpdir(), "fuzz.pt");
    for (int it = 0; it < 300; it++) {
        memcpy(fb, file, fn);
        int flips = 1 + (int)sdc_rng_below(&rng, 3);
        for (int f = 0; f < flips; f++) {
            /* half the flips land in the zip structures at the end */
            size_t at = sdc_rng_below(&rng, 2) ? sdc_rng_below(&rng, (uint32_t)fn)
                                                : fn - 1 - sdc_rng_below(&rng, (uint32_t)(fn < 900 ? fn : 900));
            fb[at] = (unsigned char)sdc_rng_u32(&rng);
        }
        REQUIRE(write_plain(p, fb, fn) == 0);
        sdc_weights w2;
        sdc_weights_init(&w2);
        sdc_status s = sdc_ckpt_read(p, &w2, &err);
        if (s != SDC_OK) CHECK_MSG(strstr(err.msg, p) != NULL, "message does not name the file: %s", err.msg);
        sdc_weights_free(&w2);
    }
    free(p);
    free(fb);
    sdc_zip_close(&z);
    sdc_weights_free(&w);
}
