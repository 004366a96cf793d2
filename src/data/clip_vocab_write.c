#include "data/clip_vocab_write.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/fs.h"
#include "data/clip_text.h"

#define CLIP_MERGES 48894 /* 49408 − 512 byte tokens − 2 specials */

typedef struct buf {
    char *p;
    size_t n, cap;
    int oom;
} buf;

static void put(buf *b, const void *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

/* A JSON string as Python's json.dumps(ensure_ascii=False) writes it: only
 * '"', '\\' and control characters are escaped. */
static void put_json_string(buf *b, const char *s, size_t n) {
    put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        const char *e = NULL;
        switch (c) {
        case '"': e = "\\\""; break;
        case '\\': e = "\\\\"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        case '\t': e = "\\t"; break;
        case '\b': e = "\\b"; break;
        case '\f': e = "\\f"; break;
        default:
            if (c < 0x20) {
                static const char hex[] = "0123456789abcdef";
                esc[0] = '\\', esc[1] = 'u', esc[2] = '0', esc[3] = '0', esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
                esc[6] = '\0';
                e = esc;
            }
        }
        if (e) put(b, e, strlen(e));
        else put(b, &s[i], 1);
    }
    put(b, "\"", 1);
}

static void put_entry(buf *b, const char *tok, size_t n, int id) {
    char num[24];
    if (id > 0) put(b, ", ", 2);
    put_json_string(b, tok, n);
    int k = snprintf(num, sizeof num, ": %d", id);
    put(b, num, (size_t)k);
}

/* The embedded gzip stream, inflated. Its size is known from the gzip
 * trailer (ISIZE, the size mod 2^32: the merges are ~0.5 MB). */
static sdc_status inflate_merges(char **out, size_t *out_len, sdc_error *err) {
    const unsigned char *gz;
    size_t n;
    clip_embedded_merges_gz(&gz, &n);
    if (n < 18) return sdc_fail(err, SDC_EFORMAT, "embedded CLIP merges: too short");
    size_t size = (size_t)gz[n - 4] | (size_t)gz[n - 3] << 8 | (size_t)gz[n - 2] << 16 | (size_t)gz[n - 1] << 24;
    char *p = malloc(size + 1);
    if (!p) return sdc_fail(err, SDC_ENOMEM, "embedded CLIP merges: out of memory");
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) {
        free(p);
        return sdc_fail(err, SDC_ENOMEM, "embedded CLIP merges: zlib init failed");
    }
    z.next_in = (unsigned char *)(uintptr_t)gz;
    z.avail_in = (uInt)n;
    z.next_out = (unsigned char *)p;
    z.avail_out = (uInt)size;
    int r = inflate(&z, Z_FINISH);
    size_t got = z.total_out;
    inflateEnd(&z);
    if (r != Z_STREAM_END || got != size) {
        free(p);
        return sdc_fail(err, SDC_EFORMAT, "embedded CLIP merges: corrupt gzip data (%d)", r);
    }
    p[size] = '\0';
    *out = p;
    *out_len = size;
    return SDC_OK;
}

sdc_status sdc_clip_vocab_texts(char **vocab_json, size_t *vocab_len, char **merges_txt, size_t *merges_len,
                                sdc_error *err) {
    *vocab_json = *merges_txt = NULL;
    char *merges = NULL;
    size_t len = 0;
    SDC_TRY(inflate_merges(&merges, &len, err));

    buf v = {0}, m = {0};
    uint32_t table[256];
    uint8_t order[256];
    clip_bytes_to_unicode(table, order);
    int id = 0;
    put(&v, "{", 1);
    for (int eow = 0; eow < 2; eow++)
        for (int i = 0; i < 256; i++) {
            unsigned char u[8];
            size_t k = clip_utf8_encode(table[order[i]], u);
            if (eow) memcpy(u + k, "</w>", 4), k += 4;
            put_entry(&v, (const char *)u, k, id++);
        }
    put(&m, "#version: 0.2\n", 14);
    /* each merge line "a b": the token is the line without its space */
    size_t p = 0;
    sdc_status s = SDC_OK;
    char tok[256];
    while (p < len && s == SDC_OK) {
        const char *line = merges + p;
        const char *nl = memchr(line, '\n', len - p);
        size_t n = nl ? (size_t)(nl - line) : len - p;
        p += n + 1;
        const char *sp = memchr(line, ' ', n);
        if (!sp || n >= sizeof tok) {
            s = sdc_fail(err, SDC_EFORMAT, "embedded CLIP merges: line %d is not a merge", id - 511);
            break;
        }
        size_t a = (size_t)(sp - line);
        memcpy(tok, line, a);
        memcpy(tok + a, sp + 1, n - a - 1);
        put_entry(&v, tok, n - 1, id++);
        put(&m, line, n);
        put(&m, "\n", 1);
    }
    if (s == SDC_OK && id != 512 + CLIP_MERGES)
        s = sdc_fail(err, SDC_EFORMAT, "embedded CLIP merges: %d merges, expected %d", id - 512, CLIP_MERGES);
    put_entry(&v, "<|startoftext|>", 15, id++);
    put_entry(&v, "<|endoftext|>", 13, id++);
    put(&v, "}", 1);
    free(merges);
    if (s == SDC_OK && (v.oom || m.oom)) s = sdc_fail(err, SDC_ENOMEM, "CLIP vocabulary: out of memory");
    if (s != SDC_OK) {
        free(v.p);
        free(m.p);
        return s;
    }
    *vocab_json = v.p;
    *vocab_len = v.n;
    *merges_txt = m.p;
    *merges_len = m.n;
    return SDC_OK;
}

sdc_status sdc_clip_vocab_write(const char *dir, sdc_error *err) {
    char *vocab, *merges;
    size_t vn, mn;
    SDC_TRY(sdc_clip_vocab_texts(&vocab, &vn, &merges, &mn, err));
    char *vp = sdc_path_join(dir, "vocab.json"), *mp = sdc_path_join(dir, "merges.txt");
    sdc_status s = vp && mp ? SDC_OK : sdc_fail(err, SDC_ENOMEM, "%s: out of memory", dir);
    if (s == SDC_OK) s = sdc_write_file_atomic(vp, vocab, vn, err);
    if (s == SDC_OK) s = sdc_write_file_atomic(mp, merges, mn, err);
    free(vp);
    free(mp);
    free(vocab);
    free(merges);
    return s;
}
