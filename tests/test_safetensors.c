#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fs.h"
#include "io/safetensors.h"
#include "test.h"

/* Writes an 8-byte length, the header text as given, then data_len bytes. */
static const char *write_raw(const char *name, const char *header, uint64_t claimed_len, size_t data_len) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", test_tmpdir(), name);
    FILE *f = fopen(path, "wb");
    if (!f) return path;
    uint64_t hl = claimed_len ? claimed_len : strlen(header);
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hl >> (8 * i));
    fwrite(b, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    for (size_t i = 0; i < data_len; i++) fputc((int)(i & 0xff), f);
    fclose(f);
    return path;
}

/* Reading path must fail with code, and the message must name the file and contain `needle`. */
static void expect_error(const char *path, sdc_status code, const char *needle) {
    sdc_weights w;
    sdc_weights_init(&w);
    sdc_error err = {0};
    sdc_status s = sdc_safetensors_read(path, &w, &err);
    CHECK_MSG(s == code, "%s: status %d (%s), expected %d", path, s, err.msg, code);
    CHECK_MSG(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
    CHECK_MSG(strstr(err.msg, needle) != NULL, "message lacks \"%s\": %s", needle, err.msg);
    sdc_weights_free(&w);
}

TEST(safetensors_roundtrip_with_metadata) {
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[2] = {0x3c00, 0xc000};
    int64_t ids[3] = {49406, 320, 49407};
    int64_t sa[2] = {2, 3}, sh[1] = {2}, si[1] = {3};
    sdc_st_tensor t[3] = {{"a.weight", SDC_F32, 2, sa, a}, {"half", SDC_F16, 1, sh, h}, {"ids", SDC_I64, 1, si, ids}};
    sdc_kv meta[1] = {{"format", "pt"}};
    char *p = sdc_path_join(test_tmpdir(), "x.safetensors");
    sdc_error err;
    REQUIRE_OK(sdc_safetensors_write(p, t, 3, meta, 1, &err), &err);
    sdc_weights w;
    sdc_weights_init(&w);
    REQUIRE_OK(sdc_safetensors_read(p, &w, &err), &err);
    CHECK_EQ_INT(w.count, 3);
    CHECK_STR(sdc_weights_meta(&w, "format"), "pt");
    const sdc_weight *x = sdc_weights_find(&w, "a.weight");
    REQUIRE(x);
    CHECK(x->dtype == SDC_F32 && x->ndim == 2 && x->shape[0] == 2 && x->shape[1] == 3);
    CHECK(memcmp(x->data, a, sizeof a) == 0);
    CHECK(((uintptr_t)x->data & 7) == 0); /* header padded to 8 bytes */
    const sdc_weight *hw = sdc_weights_find(&w, "half");
    float f[2];
    REQUIRE(hw);
    REQUIRE_OK(sdc_weight_to_f32(&w, hw, f, &err), &err);
    CHECK(f[0] == 1.0f && f[1] == -2.0f);
    const sdc_weight *iw = sdc_weights_find(&w, "ids");
    REQUIRE(iw);
    CHECK(memcmp(iw->data, ids, sizeof ids) == 0);
    CHECK(sdc_weight_to_f32(&w, iw, f, &err) == SDC_EUNSUPPORTED);
    CHECK_EQ_INT(sdc_weights_param_count(&w, ""), 11);
    sdc_weights_free(&w);
    free(p);
}

TEST(safetensors_reads_reference_pack) {
    sdc_weights w;
    sdc_weights_init(&w);
    sdc_error err;
    REQUIRE_OK(sdc_safetensors_read(test_data("tiny-sdxl/unet/diffusion_pytorch_model.safetensors"), &w, &err), &err);
    const sdc_weight *t = sdc_weights_find(&w, "conv_in.weight");
    REQUIRE(t);
    CHECK(t->dtype == SDC_F16 && t->ndim == 4 && t->shape[0] == 32 && t->shape[1] == 4);
    CHECK(w.count > 100);
    sdc_weights_free(&w);
}

TEST(safetensors_rejects_bad_headers) {
    char hdr[512];
    /* too short for a header */
    expect_error(write_raw("short", "", 0, 0), SDC_EFORMAT, "does not fit");
    {
        const char *p4 = write_raw("tiny", "", 0, 0);
        REQUIRE(truncate(p4, 4) == 0);
        expect_error(p4, SDC_EFORMAT, "too short");
    }
    /* header length claiming terabytes: refused before any allocation */
    expect_error(write_raw("huge", "{}", 1ull << 40, 0), SDC_ELIMIT, "limit");
    /* header longer than the file */
    expect_error(write_raw("over", "{}", 4096, 0), SDC_EFORMAT, "does not fit");
    /* not JSON */
    expect_error(write_raw("notjson", "{\"a\": [1, 2", 0, 0), SDC_EFORMAT, "invalid JSON");
    /* trailing garbage after the object */
    expect_error(write_raw("trailing", "{} xx", 0, 0), SDC_EFORMAT, "invalid JSON");
    /* unknown dtype */
    snprintf(hdr, sizeof hdr, "{\"t\": {\"dtype\": \"F17\", \"shape\": [2], \"data_offsets\": [0, 8]}}");
    expect_error(write_raw("dtype", hdr, 0, 8), SDC_EFORMAT, "unknown dtype");
    /* shape x dtype size != byte range */
    snprintf(hdr, sizeof hdr, "{\"t\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}");
    expect_error(write_raw("size", hdr, 0, 8), SDC_EFORMAT, "needs 12 bytes");
    /* range past the end: a truncated file */
    snprintf(hdr, sizeof hdr, "{\"t\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}");
    expect_error(write_raw("trunc", hdr, 0, 10), SDC_EFORMAT, "truncated");
    /* overlapping ranges */
    snprintf(hdr, sizeof hdr,
             "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
             " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}");
    expect_error(write_raw("overlap", hdr, 0, 12), SDC_EFORMAT, "overlap");
    /* end before begin */
    snprintf(hdr, sizeof hdr, "{\"t\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [8, 4]}}");
    expect_error(write_raw("backwards", hdr, 0, 8), SDC_EFORMAT, "end before begin");
    /* a shape whose element count overflows */
    snprintf(hdr, sizeof hdr,
             "{\"t\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296], \"data_offsets\": [0, 8]}}");
    expect_error(write_raw("bigshape", hdr, 0, 8), SDC_ELIMIT, "too large");
    /* negative or fractional dims */
    snprintf(hdr, sizeof hdr, "{\"t\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}");
    expect_error(write_raw("negshape", hdr, 0, 8), SDC_EFORMAT, "non-negative integers");
    snprintf(hdr, sizeof hdr, "{\"t\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 8]}}");
    expect_error(write_raw("fracshape", hdr, 0, 8), SDC_EFORMAT, "non-negative integers");
    /* too many dimensions */
    snprintf(hdr, sizeof hdr, "{\"t\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 1]}}");
    expect_error(write_raw("ndim", hdr, 0, 1), SDC_ELIMIT, "dimensions");
    /* the same tensor twice */
    snprintf(hdr, sizeof hdr,
             "{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]},"
             " \"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [1, 2]}}");
    expect_error(write_raw("dup", hdr, 0, 2), SDC_EFORMAT, "twice");
    /* metadata must map strings to strings */
    snprintf(hdr, sizeof hdr, "{\"__metadata__\": {\"k\": 3}}");
    expect_error(write_raw("meta", hdr, 0, 0), SDC_EFORMAT, "__metadata__");
    /* a header that is a JSON array, or has a NUL inside */
    expect_error(write_raw("array", "[1, 2]", 0, 0), SDC_EFORMAT, "JSON object");
    char nul[8] = {'{', '}', ' ', 0, ' ', ' ', ' ', ' '};
    const char *p = write_raw("nul", "", 8, 0);
    FILE *f = fopen(p, "ab");
    REQUIRE(f);
    fwrite(nul, 1, 8, f);
    fclose(f);
    expect_error(p, SDC_EFORMAT, "NUL");
    /* a directory instead of a file, and a missing file */
    expect_error(test_tmpdir(), SDC_EIO, "not a regular file");
    expect_error("tests/data/does-not-exist.safetensors", SDC_ENOTFOUND, "No such file");
}

TEST(safetensors_truncated_real_file) {
    char *src;
    size_t len;
    sdc_error err;
    REQUIRE_OK(sdc_read_file(test_data("tiny-sd/vae/diffusion_pytorch_model.safetensors"), &src, &len, &err), &err);
    char *p = sdc_path_join(test_tmpdir(), "cut.safetensors");
    /* cut in the data, and cut inside the header */
    REQUIRE_OK(sdc_write_file_atomic(p, src, len - 1000, &err), &err);
    expect_error(p, SDC_EFORMAT, "truncated");
    REQUIRE_OK(sdc_write_file_atomic(p, src, 200, &err), &err);
    expect_error(p, SDC_EFORMAT, "does not fit");
    free(src);
    free(p);
}

/* Splits tiny-sd's UNet into two shards with an index, as diffusers'
 * save_pretrained(max_shard_size=...) does, and reads it back. */
TEST(safetensors_sharded_index) {
    sdc_weights w;
    sdc_weights_init(&w);
    sdc_error err;
    REQUIRE_OK(sdc_safetensors_read(test_data("tiny-sd/unet/diffusion_pytorch_model.safetensors"), &w, &err), &err);
    const char *dir = test_tmpdir();
    sdc_st_tensor *t = calloc(w.count, sizeof *t);
    REQUIRE(t);
    for (size_t i = 0; i < w.count; i++)
        t[i] = (sdc_st_tensor){w.items[i].name, w.items[i].dtype, w.items[i].ndim, w.items[i].shape, w.items[i].data};
    size_t half = w.count / 2;
    char *s1 = sdc_path_join(dir, "diffusion_pytorch_model-00001-of-00002.safetensors");
    char *s2 = sdc_path_join(dir, "diffusion_pytorch_model-00002-of-00002.safetensors");
    REQUIRE_OK(sdc_safetensors_write(s1, t, half, NULL, 0, &err), &err);
    REQUIRE_OK(sdc_safetensors_write(s2, t + half, w.count - half, NULL, 0, &err), &err);
    /* the index */
    size_t cap = 64 + w.count * 200, n = 0;
    char *idx = malloc(cap);
    REQUIRE(idx);
    n += (size_t)snprintf(idx + n, cap - n, "{\"metadata\": {}, \"weight_map\": {");
    for (size_t i = 0; i < w.count; i++)
        n += (size_t)snprintf(idx + n, cap - n, "%s\"%s\": \"diffusion_pytorch_model-0000%d-of-00002.safetensors\"",
                              i ? ", " : "", w.items[i].name, i < half ? 1 : 2);
    n += (size_t)snprintf(idx + n, cap - n, "}}");
    char *ip = sdc_path_join(dir, "diffusion_pytorch_model.safetensors.index.json");
    REQUIRE_OK(sdc_write_file_atomic(ip, idx, n, &err), &err);
    sdc_weights s;
    sdc_weights_init(&s);
    REQUIRE_OK(sdc_safetensors_read_index(ip, &s, &err), &err);
    CHECK_EQ_INT(s.count, w.count);
    CHECK_EQ_INT(s.nfiles, 2);
    for (size_t i = 0; i < w.count; i++) {
        const sdc_weight *x = sdc_weights_find(&s, w.items[i].name);
        CHECK(x && x->nbytes == w.items[i].nbytes && memcmp(x->data, w.items[i].data, x->nbytes) == 0);
    }
    sdc_weights_free(&s);
    /* an index that names a tensor no shard holds */
    char *bad = strstr(idx, "conv_in.weight");
    REQUIRE(bad);
    memcpy(bad, "conv_XX", 7);
    REQUIRE_OK(sdc_write_file_atomic(ip, idx, n, &err), &err);
    sdc_weights_init(&s);
    CHECK(sdc_safetensors_read_index(ip, &s, &err) == SDC_ENOTFOUND);
    CHECK(strstr(err.msg, "conv_XX") != NULL);
    sdc_weights_free(&s);
    /* a missing shard */
    remove(s2);
    sdc_weights_init(&s);
    memcpy(bad, "conv_in", 7);
    REQUIRE_OK(sdc_write_file_atomic(ip, idx, n, &err), &err);
    CHECK(sdc_safetensors_read_index(ip, &s, &err) == SDC_ENOTFOUND);
    CHECK(strstr(err.msg, "00002-of-00002") != NULL);
    sdc_weights_free(&s);
    free(idx);
    free(ip);
    free(s1);
    free(s2);
    free(t);
    sdc_weights_free(&w);
}
