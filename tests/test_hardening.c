/* Untrusted input: every hostile file is made here, written to test_tmpdir(),
 * and must come back as an error naming the file and the reason - before
 * anything large is allocated and without running anything. Also the
 * regressions of the fuzzers in fuzz/ (their crashing inputs, minimised). */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <jpeglib.h> /* after stdio.h: it uses FILE */

#include "core/fs.h"
#include "data/clip_tokenizer.h"
#include "data/dataset.h"
#include "data/image_decode.h"
#include "io/ckpt.h"
#include "io/json.h"
#include "io/lora.h"
#include "io/model.h"
#include "io/pickle.h"
#include "io/safetensors.h"
#include "nn/params.h"
#include "test.h"

/* ---- helpers ------------------------------------------------------------------ */

/* A growable byte buffer. */
typedef struct {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) abort(); /* the harness out of memory is not a case under test */
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
    b->p[b->n] = 0; /* so a text buffer is a C string */
}
static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }
static void putle(buf *b, uint64_t v, int n) {
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)(v >> (8 * i));
        put(b, &c, 1);
    }
}
#define PUT_LIT(b, s) put(b, s, sizeof(s) - 1) /* a literal that may hold NUL bytes */

/* "<dir>/<name>" (malloc'd) with data written to it. */
static char *write_in(const char *dir, const char *name, const void *data, size_t n) {
    char *p = sdc_path_join(dir, name);
    FILE *f = p ? fopen(p, "wb") : NULL;
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

/* A sparse file of `size` bytes (nothing written: the loaders must refuse
 * it by its size alone). */
static char *sparse_in(const char *dir, const char *name, int64_t size) {
    char *p = sdc_path_join(dir, name);
    int fd = p ? open(p, O_CREAT | O_TRUNC | O_WRONLY, 0644) : -1;
    if (fd < 0 || ftruncate(fd, (off_t)size) != 0) {
        if (fd >= 0) close(fd);
        free(p);
        return NULL;
    }
    close(fd);
    return p;
}

/* The status is `code` and the message names `path` and holds `needle`. */
static void expect_err(sdc_status got, const sdc_error *err, sdc_status code, const char *path, const char *needle,
                       int line) {
    if (got != code) {
        sdc_test_fail(__FILE__, line, "status %s, want %s (%s)", sdc_status_name(got), sdc_status_name(code),
                      got == SDC_OK ? "accepted" : err->msg);
        return;
    }
    if (path && !strstr(err->msg, path)) sdc_test_fail(__FILE__, line, "message does not name %s: %s", path, err->msg);
    if (needle && !strstr(err->msg, needle)) sdc_test_fail(__FILE__, line, "message lacks \"%s\": %s", needle, err->msg);
}
#define EXPECT_ERR(got, err, code, path, needle) expect_err(got, err, code, path, needle, __LINE__)

/* ---- pickles and .ckpt files ------------------------------------------------------ */

/* A zip of STORED entries, as torch.save writes them. */
static void zip_stored(buf *z, const char *const *names, const buf *const *data, int n) {
    uint64_t off[8];
    for (int i = 0; i < n; i++) {
        uint32_t crc = (uint32_t)crc32(0, data[i]->p, (uInt)data[i]->n);
        off[i] = z->n;
        putle(z, 0x04034b50, 4);
        putle(z, 20, 2);
        putle(z, 0, 2);
        putle(z, 0, 2); /* STORED */
        putle(z, 0, 4);
        putle(z, crc, 4);
        putle(z, data[i]->n, 4);
        putle(z, data[i]->n, 4);
        putle(z, strlen(names[i]), 2);
        putle(z, 0, 2);
        puts_(z, names[i]);
        put(z, data[i]->p, data[i]->n);
    }
    uint64_t cd = z->n;
    for (int i = 0; i < n; i++) {
        putle(z, 0x02014b50, 4);
        putle(z, 20, 2);
        putle(z, 20, 2);
        putle(z, 0, 2);
        putle(z, 0, 2);
        putle(z, 0, 4);
        putle(z, (uint32_t)crc32(0, data[i]->p, (uInt)data[i]->n), 4);
        putle(z, data[i]->n, 4);
        putle(z, data[i]->n, 4);
        putle(z, strlen(names[i]), 2);
        putle(z, 0, 2);
        putle(z, 0, 2);
        putle(z, 0, 2);
        putle(z, 0, 2);
        putle(z, 0, 4);
        putle(z, off[i], 4);
        puts_(z, names[i]);
    }
    uint64_t cd_size = z->n - cd;
    putle(z, 0x06054b50, 4);
    putle(z, 0, 4);
    putle(z, (uint64_t)n, 2);
    putle(z, (uint64_t)n, 2);
    putle(z, cd_size, 4);
    putle(z, cd, 4);
    putle(z, 0, 2);
}

/* A torch.save-shaped archive around a data.pkl. */
static char *write_ckpt(const char *dir, const char *name, const buf *pkl) {
    buf little = {0}, version = {0}, z = {0};
    puts_(&little, "little");
    puts_(&version, "3\n");
    const char *names[3] = {"archive/data.pkl", "archive/byteorder", "archive/version"};
    const buf *data[3] = {pkl, &little, &version};
    zip_stored(&z, names, data, 3);
    char *p = write_in(dir, name, z.p, z.n);
    free(little.p);
    free(version.p);
    free(z.p);
    return p;
}

static void pk_binunicode(buf *b, const char *s) {
    puts_(b, "X");
    putle(b, strlen(s), 4);
    puts_(b, s);
}
static void pk_short_unicode(buf *b, const char *s) { /* SHORT_BINUNICODE + MEMOIZE, as protocol 4 writes */
    unsigned char op[2] = {0x8c, (unsigned char)strlen(s)};
    put(b, op, 2);
    puts_(b, s);
    PUT_LIT(b, "\x94");
}

/* Protocol 2: os.system("touch <marker>") by GLOBAL + REDUCE at the top level;
 * protocol 4: builtins.eval("__import__('os').system('touch <marker>')") by
 * STACK_GLOBAL + REDUCE inside a state dict, after a key, in a FRAME. Both
 * must be refused naming the global, and nothing may have run. */
TEST(hardening_ckpt_malicious_globals_refused) {
    const char *dir = test_tmpdir();
    char *marker2 = sdc_path_join(dir, "pwned2"), *marker4 = sdc_path_join(dir, "pwned4");
    REQUIRE(marker2 && marker4);
    char cmd[1200];

    buf p2 = {0};
    PUT_LIT(&p2, "\x80\x02" "cos\nsystem\n" "q\x00");
    snprintf(cmd, sizeof cmd, "touch %s", marker2);
    pk_binunicode(&p2, cmd);
    PUT_LIT(&p2, "\x85R.");

    buf body = {0}, p4 = {0};
    PUT_LIT(&body, "}\x94(");
    pk_short_unicode(&body, "model.weight");
    pk_short_unicode(&body, "builtins");
    pk_short_unicode(&body, "eval");
    PUT_LIT(&body, "\x93\x94");
    snprintf(cmd, sizeof cmd, "__import__('os').system('touch %s')", marker4);
    pk_short_unicode(&body, cmd);
    PUT_LIT(&body, "\x85\x94R\x94u.");
    PUT_LIT(&p4, "\x80\x04\x95");
    putle(&p4, body.n, 8);
    put(&p4, body.p, body.n);

    char *f2 = write_ckpt(dir, "evil2.ckpt", &p2), *f4 = write_ckpt(dir, "evil4.ckpt", &p4);
    REQUIRE(f2 && f4);
    const struct {
        const char *file, *global, *marker;
    } cases[2] = {{f2, "os.system", marker2}, {f4, "builtins.eval", marker4}};
    for (int i = 0; i < 2; i++) {
        sdc_error err;
        sdc_weights w;
        sdc_weights_init(&w);
        EXPECT_ERR(sdc_ckpt_read(cases[i].file, &w, &err), &err, SDC_EUNSAFE, cases[i].file, cases[i].global);
        sdc_weights_free(&w);
        sdc_model m;
        EXPECT_ERR(sdc_model_open(cases[i].file, NULL, &m, &err), &err, SDC_EUNSAFE, cases[i].file, cases[i].global);
        CHECK_MSG(!sdc_path_exists(cases[i].marker), "%s ran: %s exists", cases[i].global, cases[i].marker);
    }
    /* the same pickles, on their own */
    sdc_pickle pk;
    sdc_error err;
    EXPECT_ERR(sdc_pickle_load(&pk, p2.p, p2.n, "p2", &err), &err, SDC_EUNSAFE, "p2", "refusing global os.system");
    EXPECT_ERR(sdc_pickle_load(&pk, p4.p, p4.n, "p4", &err), &err, SDC_EUNSAFE, "p4", "refusing global builtins.eval");
    free(p2.p);
    free(body.p);
    free(p4.p);
    free(f2);
    free(f4);
    free(marker2);
    free(marker4);
}

/* fuzz/pickle: MARK then TUPLE/LIST/DICT/FROZENSET before anything was
 * pushed made an empty container from a NULL stack (UBSan: NULL + 0). */
TEST(hardening_pickle_empty_containers_first) {
    static const struct {
        const char *bytes;
        size_t n;
        sdc_pk_kind kind;
    } cases[] = {
        {"(t.", 3, SDC_PK_TUPLE},
        {"(l.", 3, SDC_PK_LIST},
        {"(d.", 3, SDC_PK_DICT},
        {"\x80\x04(\x91.", 5, SDC_PK_LIST},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sdc_pickle pk;
        sdc_error err;
        REQUIRE_OK(sdc_pickle_load(&pk, (const unsigned char *)cases[i].bytes, cases[i].n, "p", &err), &err);
        CHECK(pk.root->kind == cases[i].kind && pk.root->u.seq.n == 0);
        sdc_pickle_free(&pk);
    }
}

/* ---- JSON ---------------------------------------------------------------------------- */

TEST(hardening_json_file_size_limit) {
    const char *dir = test_tmpdir();
    char *p = sparse_in(dir, "config.json", (int64_t)SDC_JSON_MAX_FILE + 1);
    REQUIRE(p);
    cJSON *j = (cJSON *)1;
    sdc_error err;
    EXPECT_ERR(sdc_json_load_object(p, &j, &err), &err, SDC_ELIMIT, p, "MiB");
    CHECK(j == NULL);
    /* a model folder whose model_index.json is that big */
    char *model = sdc_path_join(dir, "model");
    REQUIRE(model && sdc_mkdirs(model, &err) == SDC_OK);
    char *idx = sparse_in(model, "model_index.json", (int64_t)SDC_JSON_MAX_FILE + 1);
    REQUIRE(idx);
    sdc_model m;
    EXPECT_ERR(sdc_model_open(model, NULL, &m, &err), &err, SDC_ELIMIT, idx, NULL);
    free(p);
    free(model);
    free(idx);
}

/* "[0,0,...]" (n zeros) in a malloc'd buffer of *len bytes, after `head`
 * and before `tail`. */
static char *zeros_array(const char *head, size_t n, const char *tail, size_t *len) {
    size_t hl = strlen(head), tl = strlen(tail);
    *len = hl + 2 * n + 1 + tl;
    char *b = malloc(*len + 1);
    if (!b) abort();
    memcpy(b, head, hl);
    char *p = b + hl;
    *p++ = '[';
    for (size_t i = 0; i < n; i++, p += 2) p[0] = '0', p[1] = i + 1 < n ? ',' : ']';
    memcpy(p, tail, tl + 1);
    return b;
}

/* "[0,0,...]": ~2 bytes per value in the text, ~64 in cJSON. */
TEST(hardening_json_value_count_limit) {
    size_t n = (size_t)SDC_JSON_MAX_VALUES + 1, len;
    char *b = zeros_array("", n, "", &len);
    cJSON *j;
    sdc_error err;
    EXPECT_ERR(sdc_json_parse(b, len, "big.json", &j, &err), &err, SDC_ELIMIT, "big.json", "values");
    /* commas inside strings are not values */
    for (size_t i = 0; i < len; i++) b[i] = ',';
    b[0] = '[', b[1] = '"', b[len - 2] = '"', b[len - 1] = ']';
    REQUIRE_OK(sdc_json_parse(b, len, "str.json", &j, &err), &err);
    CHECK(cJSON_IsArray(j) && cJSON_GetArraySize(j) == 1);
    cJSON_Delete(j);
    free(b);
    /* the same as a safetensors header: refused before cJSON builds it */
    b = zeros_array("12345678{\"a\":", n, "}", &len);
    uint64_t hlen = len - 8;
    for (int i = 0; i < 8; i++) b[i] = (char)(hlen >> (8 * i));
    char *p = write_in(test_tmpdir(), "values.safetensors", b, len);
    REQUIRE(p);
    sdc_weights w;
    sdc_weights_init(&w);
    EXPECT_ERR(sdc_safetensors_read(p, &w, &err), &err, SDC_ELIMIT, p, "values");
    sdc_weights_free(&w);
    free(p);
    free(b);
}

/* ---- tokenizer files ------------------------------------------------------------------- */

/* A minimal loadable vocabulary: two symbols, their merge, the specials. */
#define MINI_VOCAB "{\"a\": 0, \"b\": 1, \"ab\": 2, \"<|startoftext|>\": 3, \"<|endoftext|>\": 4"

static char *mini_tokenizer(const char *vocab_extra, const void *merges, size_t merges_len, const char *added) {
    char *dir = sdc_strdup(test_tmpdir());
    buf v = {0};
    puts_(&v, MINI_VOCAB);
    puts_(&v, vocab_extra ? vocab_extra : "");
    puts_(&v, "}");
    char *a = write_in(dir, "vocab.json", v.p, v.n);
    char *b = merges ? write_in(dir, "merges.txt", merges, merges_len) : NULL;
    char *c = added ? write_in(dir, "added_tokens.json", added, strlen(added)) : NULL;
    int ok = a && (merges == NULL || b) && (added == NULL || c);
    free(v.p);
    free(a);
    free(b);
    free(c);
    if (!ok) {
        free(dir);
        return NULL;
    }
    return dir;
}

static sdc_status load_tok(const char *dir, sdc_error *err) {
    sdc_clip_tokenizer *t;
    sdc_status s = sdc_clip_tokenizer_load(dir, &t, err);
    if (s == SDC_OK) sdc_clip_tokenizer_free(t);
    return s;
}

TEST(hardening_tokenizer_limits) {
    sdc_error err;
    /* control: the mini tokenizer loads, so each refusal below is its limit */
    char *ok = mini_tokenizer(NULL, "#version: 0.2\na b\n", 18, "{\"<new>\": 9}");
    REQUIRE(ok);
    REQUIRE_OK(load_tok(ok, &err), &err);

    /* merges.txt larger than the limit (sparse: refused by its size) */
    char *big = mini_tokenizer(NULL, NULL, 0, NULL);
    REQUIRE(big);
    char *bigm = sparse_in(big, "merges.txt", (int64_t)SDC_CLIP_MAX_FILE + 1);
    REQUIRE(bigm);
    EXPECT_ERR(load_tok(big, &err), &err, SDC_ELIMIT, bigm, "MiB");

    /* more lines than merges accepted: refused before the table is sized */
    size_t nl = (size_t)SDC_CLIP_MAX_TOKENS + 3;
    char *lines = malloc(nl);
    REQUIRE(lines);
    memset(lines, '\n', nl);
    char *many = mini_tokenizer(NULL, lines, nl, NULL);
    free(lines);
    REQUIRE(many);
    EXPECT_ERR(load_tok(many, &err), &err, SDC_ELIMIT, "merges.txt", "merges");

    /* a vocabulary token of 1025 bytes */
    char extra[SDC_CLIP_MAX_TOKEN_BYTES + 32];
    snprintf(extra, sizeof extra, ", \"%0*d\": 5", SDC_CLIP_MAX_TOKEN_BYTES + 1, 7);
    char *longtok = mini_tokenizer(extra, "a b\n", 4, NULL);
    REQUIRE(longtok);
    EXPECT_ERR(load_tok(longtok, &err), &err, SDC_ELIMIT, "vocab.json", "bytes");

    /* an added token of 1025 bytes, and more added tokens than accepted */
    char added1[SDC_CLIP_MAX_TOKEN_BYTES + 32];
    snprintf(added1, sizeof added1, "{\"%0*d\": 9}", SDC_CLIP_MAX_TOKEN_BYTES + 1, 7);
    char *longadd = mini_tokenizer(NULL, "a b\n", 4, added1);
    REQUIRE(longadd);
    EXPECT_ERR(load_tok(longadd, &err), &err, SDC_ELIMIT, "added_tokens.json", "longer than");
    buf many_added = {0};
    puts_(&many_added, "{");
    for (int i = 0; i <= SDC_CLIP_MAX_ADDED; i++) {
        char e[48];
        snprintf(e, sizeof e, "%s\"t%d\": %d", i ? ", " : "", i, 5 + i);
        puts_(&many_added, e);
    }
    puts_(&many_added, "}");
    char *manyadd = mini_tokenizer(NULL, "a b\n", 4, (const char *)many_added.p);
    REQUIRE(manyadd);
    EXPECT_ERR(load_tok(manyadd, &err), &err, SDC_ELIMIT, "added_tokens.json", "added tokens");
    free(many_added.p);
    char *dirs[] = {ok, big, bigm, many, longtok, longadd, manyadd};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) free(dirs[i]);
}

/* ---- datasets ---------------------------------------------------------------------------- */

static sdc_status scan_meta(const char *dir, const void *text, size_t n, sdc_error *err) {
    char *p = write_in(dir, "metadata.jsonl", text, n);
    if (!p) return sdc_fail(err, SDC_EIO, "cannot write metadata.jsonl");
    free(p);
    sdc_dataset ds;
    sdc_dataset_init(&ds);
    sdc_status s = sdc_dataset_scan_imagefolder(&ds, dir, NULL, err);
    sdc_dataset_free(&ds);
    return s;
}

/* fuzz/metadata_jsonl: a metadata.jsonl without items (and an image folder
 * without images) sorted a NULL list (UBSan: qsort's nonnull argument). */
TEST(hardening_dataset_without_items) {
    const char *dir = test_tmpdir();
    sdc_error err;
    EXPECT_ERR(scan_meta(dir, "", 0, &err), &err, SDC_ENOTFOUND, "metadata.jsonl", "no items");
    EXPECT_ERR(scan_meta(dir, "\n  \n", 4, &err), &err, SDC_ENOTFOUND, "metadata.jsonl", "no items");
    char *empty = sdc_path_join(dir, "empty");
    REQUIRE(empty && sdc_mkdirs(empty, &err) == SDC_OK);
    sdc_dataset ds;
    sdc_dataset_init(&ds);
    EXPECT_ERR(sdc_dataset_scan_captioned(&ds, empty, NULL, 0, NULL, &err), &err, SDC_ENOTFOUND, empty, "no images");
    sdc_dataset_free(&ds);
    free(empty);
}

TEST(hardening_metadata_jsonl_line_limit) {
    const char *dir = test_tmpdir();
    char *img = write_in(dir, "a.png", "x", 1);
    REQUIRE(img);
    /* the caption is short: the line is refused by its length alone */
    buf b = {0};
    puts_(&b, "{\"file_name\": \"a.png\", \"text\": \"short\"}\n{\"file_name\": \"a.png\", \"text\": \"ok\", \"pad\": \"");
    for (int i = 0; i < SDC_DATASET_MAX_LINE; i++) puts_(&b, "x");
    puts_(&b, "\"}\n");
    sdc_error err;
    EXPECT_ERR(scan_meta(dir, b.p, b.n, &err), &err, SDC_ELIMIT, "metadata.jsonl line 2", "in one line");
    free(b.p);
    free(img);
}

TEST(hardening_metadata_jsonl_bad_utf8) {
    const char *dir = test_tmpdir();
    char *img = write_in(dir, "a.png", "x", 1);
    REQUIRE(img);
    /* control: 2-, 3- and 4-byte characters are fine */
    static const char good[] = "{\"file_name\": \"a.png\", \"text\": \"caf\xc3\xa9 \xe2\x98\x95 \xf0\x9f\x90\x88\"}\n";
    sdc_error err;
    REQUIRE_OK(scan_meta(dir, good, sizeof good - 1, &err), &err);
    static const char *const bad[] = {
        "\xc0\xaf",         /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong, 3 bytes */
        "\xed\xa0\x80",     /* a UTF-16 surrogate */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\x80",             /* a lone continuation byte */
        "\xe2\x98",         /* cut short */
        "\xff",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char line[256];
        int n = snprintf(line, sizeof line, "%s{\"file_name\": \"a.png\", \"text\": \"x%sy\"}\n", good, bad[i]);
        EXPECT_ERR(scan_meta(dir, line, (size_t)n, &err), &err, SDC_EFORMAT, "metadata.jsonl line 2", "UTF-8");
    }
    /* kohya caption files: the same strict check */
    char *k = sdc_path_join(dir, "kohya");
    REQUIRE(k && sdc_mkdirs(k, &err) == SDC_OK);
    char *ki = write_in(k, "a.png", "x", 1), *kc = write_in(k, "a.txt", "a \xed\xa0\x80 b", 7);
    REQUIRE(ki && kc);
    sdc_dataset ds;
    sdc_dataset_init(&ds);
    EXPECT_ERR(sdc_dataset_scan_captioned(&ds, k, NULL, 0, NULL, &err), &err, SDC_EFORMAT, kc, "UTF-8");
    sdc_dataset_free(&ds);
    free(k);
    free(ki);
    free(kc);
    free(img);
}

/* ---- LoRA ------------------------------------------------------------------------------------ */

/* A PEFT-format LoRA of `nmod` modules "unet.m<i>" (rank 1, linear 4->4)
 * with the given lora_adapter_metadata JSON (NULL: none). */
static char *write_peft(const char *dir, const char *name, int nmod, const char *adapter_meta) {
    static const uint16_t half_ones[4] = {0x3c00, 0x3c00, 0x3c00, 0x3c00};
    static const int64_t down[2] = {1, 4}, up[2] = {4, 1};
    sdc_st_tensor *t = calloc((size_t)(2 * nmod), sizeof *t);
    char **names = calloc((size_t)(2 * nmod), sizeof *names);
    if (!t || !names) abort();
    for (int i = 0; i < 2 * nmod; i++) {
        char n[96];
        snprintf(n, sizeof n, "unet.m%d.%s", i / 2, i % 2 ? "lora_B.weight" : "lora_A.weight");
        names[i] = sdc_strdup(n);
        t[i] = (sdc_st_tensor){names[i], SDC_F16, 2, i % 2 ? up : down, half_ones};
    }
    char *p = sdc_path_join(dir, name);
    sdc_kv kv = {"lora_adapter_metadata", (char *)adapter_meta};
    sdc_error err;
    if (p && sdc_safetensors_write(p, t, (size_t)(2 * nmod), &kv, adapter_meta ? 1 : 0, &err) != SDC_OK) {
        free(p);
        p = NULL;
    }
    for (int i = 0; i < 2 * nmod; i++) free(names[i]);
    free(names);
    free(t);
    return p;
}

static const sdc_lora_delta *find_delta(const sdc_lora *l, const char *key) {
    for (size_t i = 0; i < l->count; i++)
        if (strcmp(l->deltas[i].key, key) == 0) return &l->deltas[i];
    return NULL;
}

TEST(hardening_lora_alpha_pattern_limits) {
    const char *dir = test_tmpdir();
    sdc_error err;
    sdc_lora l;
    /* control: direct keys ("m1": '.' is any character, so "m." matches
     * m0..m9 too but m1 comes first) and a compiled one, first match wins */
    char *good = write_peft(dir, "good.safetensors", 12,
                            "{\"unet.lora_alpha\": 4, \"unet.alpha_pattern\": {\"m1\": 8, \"m(2|3)\": 2, \"m.\": 3}}");
    REQUIRE(good);
    REQUIRE_OK(sdc_lora_open(good, &l, &err), &err);
    const sdc_lora_delta *d0 = find_delta(&l, "unet.m0"), *d1 = find_delta(&l, "unet.m1"),
                         *d3 = find_delta(&l, "unet.m3"), *d10 = find_delta(&l, "unet.m10");
    REQUIRE(d0 && d1 && d3 && d10);
    CHECK(d1->scale == 8.0f);  /* alpha 8 / r 1 */
    CHECK(d3->scale == 2.0f);  /* the regex key */
    CHECK(d0->scale == 3.0f);  /* "m." */
    CHECK(d10->scale == 4.0f); /* no key matches "m10" whole: lora_alpha */
    sdc_lora_free(&l);

    static const struct {
        const char *pattern, *needle;
        sdc_status code;
    } bad[] = {
        {"(((m{1,100}){1,100}){1,100})", "counted repetition", SDC_EUNSUPPORTED},
        {"(m)\\\\1", "back-reference", SDC_EUNSUPPORTED},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char meta[256];
        snprintf(meta, sizeof meta, "{\"unet.lora_alpha\": 4, \"unet.alpha_pattern\": {\"%s\": 2}}", bad[i].pattern);
        char *p = write_peft(dir, "bad.safetensors", 1, meta);
        REQUIRE(p);
        EXPECT_ERR(sdc_lora_open(p, &l, &err), &err, bad[i].code, p, bad[i].needle);
        free(p);
    }
    /* a key of 513 bytes */
    char meta[1024];
    snprintf(meta, sizeof meta, "{\"unet.lora_alpha\": 4, \"unet.alpha_pattern\": {\"%0513d\": 2}}", 1);
    char *p = write_peft(dir, "longkey.safetensors", 1, meta);
    REQUIRE(p);
    EXPECT_ERR(sdc_lora_open(p, &l, &err), &err, SDC_ELIMIT, p, "longer than");
    free(p);
    /* 4097 keys; then 4096 keys x 4097 modules (> 2^24 pairs) */
    for (int k = 0; k < 2; k++) {
        int nkeys = k == 0 ? 4097 : 4096, nmod = k == 0 ? 1 : 4097;
        buf m = {0};
        puts_(&m, "{\"unet.lora_alpha\": 4, \"unet.alpha_pattern\": {");
        for (int i = 0; i < nkeys; i++) {
            char e[40];
            snprintf(e, sizeof e, "%s\"x%d\": 2", i ? ", " : "", i);
            puts_(&m, e);
        }
        puts_(&m, "}}");
        p = write_peft(dir, "many.safetensors", nmod, (const char *)m.p);
        free(m.p);
        REQUIRE(p);
        EXPECT_ERR(sdc_lora_open(p, &l, &err), &err, SDC_ELIMIT, p, k == 0 ? "4097 keys" : "4097 modules");
        free(p);
    }
    free(good);
}

/* kohya modules that name no parameter move to l->unknown; the others keep
 * their order (one compaction pass, not a memmove per dropped module). */
TEST(hardening_lora_kohya_unknown_modules_dropped) {
    static const uint16_t h[16] = {0};
    static const int64_t down[2] = {1, 4}, up[2] = {4, 1};
    const char *mods[5] = {"lora_unet_nope_a", "lora_unet_x_to_q", "lora_unet_nope_b", "lora_unet_nope_c",
                           "lora_unet_y_proj"};
    sdc_st_tensor t[10];
    char names[10][64];
    for (int i = 0; i < 10; i++) {
        snprintf(names[i], sizeof names[i], "%s.%s", mods[i / 2], i % 2 ? "lora_up.weight" : "lora_down.weight");
        t[i] = (sdc_st_tensor){names[i], SDC_F16, 2, i % 2 ? up : down, h};
    }
    char *p = sdc_path_join(test_tmpdir(), "kohya.safetensors");
    sdc_error err;
    REQUIRE(p);
    REQUIRE_OK(sdc_safetensors_write(p, t, 10, NULL, 0, &err), &err);
    sdc_params ps;
    sdc_tensor slots[2];
    REQUIRE_OK(sdc_params_init(&ps, "unet", &err), &err);
    const int64_t shape[2] = {4, 4};
    sdc_params_declare(&ps, &slots[0], SDC_INIT_ZEROS, 2, shape, "x.to_q.weight");
    sdc_params_declare(&ps, &slots[1], SDC_INIT_ZEROS, 2, shape, "y.proj.weight");
    REQUIRE_OK(sdc_params_alloc(&ps, &err), &err);
    sdc_lora l;
    REQUIRE_OK(sdc_lora_open(p, &l, &err), &err);
    CHECK(l.count == 5);
    sdc_params *comps[1] = {&ps};
    REQUIRE_OK(sdc_lora_resolve(&l, comps, 1, &err), &err);
    REQUIRE(l.count == 2);
    CHECK_STR(l.deltas[0].key, "lora_unet_x_to_q");
    CHECK_STR(l.deltas[0].param, "x.to_q.weight");
    CHECK_STR(l.deltas[1].key, "lora_unet_y_proj");
    CHECK_STR(l.deltas[1].param, "y.proj.weight");
    CHECK(l.nunknown == 6);
    int seen = 0;
    for (size_t i = 0; i < l.nunknown; i++) seen += strncmp(l.unknown[i], "lora_unet_nope_", 15) == 0;
    CHECK(seen == 6);
    REQUIRE_OK(sdc_lora_apply(&l, 1.0f, comps, 1, NULL, &err), &err);
    sdc_lora_free(&l);
    sdc_params_free(&ps);
    free(p);
}

/* ---- images -------------------------------------------------------------------------------------- */

/* A 16x16 progressive JPEG from libjpeg (malloc'd, *n bytes). */
static unsigned char *progressive_jpeg(unsigned long *n) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    unsigned char *out = NULL;
    *n = 0;
    jpeg_mem_dest(&c, &out, n);
    c.image_width = 16;
    c.image_height = 16;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    unsigned char row[16 * 3];
    for (int i = 0; i < 16 * 3; i++) row[i] = (unsigned char)(i * 5);
    while (c.next_scanline < 16) {
        JSAMPROW r = row;
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    return out;
}

/* The first scan of a JPEG: [*start, *end) from its SOS marker to the next
 * marker after its entropy-coded data. 0 if not found. */
static int first_scan(const unsigned char *d, size_t n, size_t *start, size_t *end) {
    size_t i = 2;
    while (i + 4 <= n && d[i] == 0xFF) {
        unsigned m = d[i + 1];
        size_t len = (size_t)d[i + 2] << 8 | d[i + 3];
        if (m == 0xDA) {
            *start = i;
            size_t j = i + 2 + len;
            while (j + 1 < n && !(d[j] == 0xFF && d[j + 1] != 0 && !(d[j + 1] >= 0xD0 && d[j + 1] <= 0xD7))) j++;
            *end = j;
            return j + 1 < n;
        }
        i += 2 + len;
    }
    return 0;
}

/* The first scan repeated `extra` more times (libjpeg warns of a bogus
 * progression and decodes on, as PIL does). */
static char *jpeg_with_scans(const char *dir, const char *name, int extra) {
    unsigned long n;
    unsigned char *j = progressive_jpeg(&n);
    size_t s, e;
    if (!j || !first_scan(j, n, &s, &e)) {
        free(j);
        return NULL;
    }
    buf b = {0};
    put(&b, j, e);
    for (int i = 0; i < extra; i++) put(&b, j + s, e - s);
    put(&b, j + e, n - e);
    char *p = write_in(dir, name, b.p, b.n);
    free(b.p);
    free(j);
    return p;
}

TEST(hardening_jpeg_scan_limit) {
    const char *dir = test_tmpdir();
    char *ok = jpeg_with_scans(dir, "ok.jpg", 20);
    char *bomb = jpeg_with_scans(dir, "bomb.jpg", SDC_IMAGE_MAX_JPEG_SCANS + 10);
    REQUIRE(ok && bomb);
    sdc_image im;
    sdc_error err;
    REQUIRE_OK(sdc_image_load(ok, &im, &err), &err);
    CHECK(im.w == 16 && im.h == 16);
    sdc_image_free(&im);
    EXPECT_ERR(sdc_image_load(bomb, &im, &err), &err, SDC_ELIMIT, bomb, "scans");
    CHECK(im.rgb == NULL);
    free(ok);
    free(bomb);
}

/* A 28-byte lossless WebP that claims 16384x16384 (268 Mpixel): refused from
 * its header, before any pixel buffer. */
TEST(hardening_webp_bomb_refused) {
    buf b = {0};
    puts_(&b, "RIFF");
    putle(&b, 20, 4);
    puts_(&b, "WEBPVP8L");
    putle(&b, 8, 4);
    putle(&b, 0x2f, 1);                          /* VP8L signature */
    putle(&b, 0x3fffu | 0x3fffu << 14, 4);       /* width-1, height-1 (14 bits each), no alpha, version 0 */
    putle(&b, 0, 3);
    char *p = write_in(test_tmpdir(), "bomb.webp", b.p, b.n);
    REQUIRE(p);
    sdc_image im;
    sdc_error err;
    EXPECT_ERR(sdc_image_load(p, &im, &err), &err, SDC_ELIMIT, p, "16384x16384");
    free(p);
    free(b.p);
}
