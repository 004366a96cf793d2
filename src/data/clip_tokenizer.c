/* CLIP BPE tokenizer: loading (tokenizer folders and the embedded default)
 * and encoding.
 *
 * What the reference is: the goldens were made with diffusers and
 * transformers 5.x (the packs' configs say transformers 5.17). There,
 * CLIPTokenizer is the `tokenizers`-backed class for every folder layout
 * (vocab.json + merges.txt, or tokenizer.json): the slow Python tokenizer,
 * and with it ftfy, BasicTokenizer's cleanup and its spaces around CJK
 * characters, no longer exist. So this file mirrors the `tokenizers`
 * pipeline that class builds:
 *   1. added tokens marked normalized=false (bos, eos, pad, unk ...) are cut
 *      out of the raw text first, leftmost-longest ("!" when it is the pad
 *      token, so "legs!!" gives "legs" + pad id twice in SDXL's tokenizer_2);
 *   2. each remaining piece: NFC, \s+ -> " ", lowercase; normalized added
 *      tokens are then cut out of it;
 *   3. the CLIP split regex, then the byte-level pre-tokenizer (whose GPT-2
 *      regex only splits "<|startoftext|>"/"<|endoftext|>" typed in another
 *      case further), each pre-token's bytes mapped by bytes_to_unicode;
 *   4. BPE with "</w>" on the last symbol, merging the lowest-ranked pair
 *      first (leftmost on ties) exactly as tokenizers' word.rs does;
 *   5. <bos> ids <eos>, truncated to model_max_length with <eos> kept, then
 *      padded with the pad token.
 * transformers 4.x's slow CLIPTokenizer is not the reference: it cannot even
 * read a tokenizer.json-only folder (the packs' tokenizer_2), and on our
 * hard cases it differs in 20 of 75 without ftfy (spaces around CJK
 * ideographs, control/format/private-use characters and U+FFFD dropped,
 * final sigma, "<|ENDOFTEXT|>" taken as the special token) and in 7 with
 * ftfy (curly quotes straightened, fullwidth forms folded ...);
 * `tools/make_tokenizer_cases.py --compare-v4 PYTHON` lists them.
 * Unicode data comes from utf8proc (2.8: Unicode 15.0); letters assigned by
 * later Unicode versions tokenize as symbols here (see the sweep test). */
#include "data/clip_tokenizer.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/fs.h"
#include "core/strmap.h"
#include "data/clip_text.h"
#include "io/json.h"

#define CLIP_DEFAULT_MAX_LENGTH 77
/* transformers writes 1e30 ("VERY_LARGE_INTEGER") when a folder sets no
 * length; anything this large means "unset", and CLIP's 77 applies. */
#define CLIP_UNSET_MAX_LENGTH 1000000
#define CLIP_MAX_LENGTH_LIMIT 65536
#define CLIP_STD_MERGES 48894 /* 49152 - 256 - 2 */
#define CLIP_STD_VOCAB 49408

typedef struct clip_added {
    char *content;   /* as written in the files */
    uint32_t *match; /* what is searched for: the content, normalized if `normalized` */
    size_t nmatch;
    int32_t id;
    uint8_t special, normalized, lstrip, rstrip, single_word;
} clip_added;

struct sdc_clip_tokenizer {
    char *pool;       /* vocabulary strings, each NUL-terminated */
    sdc_strmap vocab; /* token -> id; keys point into pool */
    int vocab_size;
    /* merges: key (left id << 32 | right id) -> value (rank << 32 | merged
     * id), open addressing; an empty slot has key UINT64_MAX */
    uint64_t *mkey, *mval;
    size_t mcap;
    int32_t byte_id[256], byte_eow_id[256]; /* ids of "x" and "x</w>" per byte; -1 if absent */
    clip_added *added;
    int nadded;
    int has_norm_added; /* any added token with normalized=true */
    int32_t bos_id, eos_id, pad_id, unk_id;
    int max_length;
};

/* ---- vocabulary and merges ------------------------------------------------ */

static sdc_status vocab_init(sdc_clip_tokenizer *t, size_t pool_bytes, size_t count, sdc_error *err) {
    t->pool = malloc(pool_bytes ? pool_bytes : 1);
    if (!t->pool || sdc_strmap_init(&t->vocab, count) != 0)
        return sdc_fail(err, SDC_ENOMEM, "tokenizer: out of memory for the vocabulary");
    return SDC_OK;
}

/* Appends s[0..n) to the pool at *used and maps it to id. */
static sdc_status vocab_put(sdc_clip_tokenizer *t, size_t *used, const char *s, size_t n, int32_t id,
                            sdc_error *err) {
    char *k = t->pool + *used;
    memcpy(k, s, n);
    k[n] = '\0';
    *used += n + 1;
    if (sdc_strmap_putn(&t->vocab, k, n, id, NULL) != 0)
        return sdc_fail(err, SDC_ENOMEM, "tokenizer: out of memory for the vocabulary");
    t->vocab_size = (int)t->vocab.count;
    return SDC_OK;
}

static int32_t vocab_get(const sdc_clip_tokenizer *t, const char *s, size_t n) {
    return (int32_t)sdc_strmap_getn(&t->vocab, s, n);
}

static sdc_status vocab_from_json(sdc_clip_tokenizer *t, const cJSON *obj, const char *what, sdc_error *err) {
    if (!cJSON_IsObject(obj)) return sdc_fail(err, SDC_EFORMAT, "%s: the vocabulary must be a JSON object", what);
    size_t count = 0, bytes = 0;
    for (const cJSON *c = obj->child; c; c = c->next) {
        if (!cJSON_IsNumber(c) || !sdc_json_is_int(c->valuedouble) || c->valuedouble < 0 ||
            c->valuedouble > 2147483647.0)
            return sdc_fail(err, SDC_EFORMAT, "%s: vocabulary entry \"%s\" must map to a non-negative integer id",
                            what, c->string ? c->string : "");
        size_t len = strlen(c->string);
        if (len > SDC_CLIP_MAX_TOKEN_BYTES)
            return sdc_fail(err, SDC_ELIMIT, "%s: vocabulary token \"%.40s...\" is %zu bytes, more than the %d sdc accepts",
                            what, c->string, len, SDC_CLIP_MAX_TOKEN_BYTES);
        if (++count > SDC_CLIP_MAX_TOKENS)
            return sdc_fail(err, SDC_ELIMIT, "%s: more than %u vocabulary entries", what, SDC_CLIP_MAX_TOKENS);
        bytes += len + 1;
    }
    if (count == 0) return sdc_fail(err, SDC_EFORMAT, "%s: the vocabulary is empty", what);
    SDC_TRY(vocab_init(t, bytes, count, err));
    size_t used = 0;
    for (const cJSON *c = obj->child; c; c = c->next)
        SDC_TRY(vocab_put(t, &used, c->string, strlen(c->string), (int32_t)c->valuedouble, err));
    return SDC_OK;
}

static size_t merge_hash(uint64_t k, size_t cap) { return (size_t)((k * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1); }

static sdc_status merges_init(sdc_clip_tokenizer *t, size_t count, sdc_error *err) {
    size_t cap = 1024;
    while (cap < count * 2) cap <<= 1;
    t->mkey = malloc(cap * sizeof *t->mkey);
    t->mval = malloc(cap * sizeof *t->mval);
    if (!t->mkey || !t->mval) return sdc_fail(err, SDC_ENOMEM, "tokenizer: out of memory for the merges");
    memset(t->mkey, 0xff, cap * sizeof *t->mkey);
    t->mcap = cap;
    return SDC_OK;
}

static int merge_get(const sdc_clip_tokenizer *t, int32_t a, int32_t b, uint32_t *rank, int32_t *merged) {
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (size_t i = merge_hash(k, t->mcap);; i = (i + 1) & (t->mcap - 1)) {
        if (t->mkey[i] == UINT64_MAX) return 0;
        if (t->mkey[i] == k) {
            *rank = (uint32_t)(t->mval[i] >> 32);
            *merged = (int32_t)(uint32_t)t->mval[i];
            return 1;
        }
    }
}

/* Adds merge number `rank` (a, b). Like tokenizers, a repeated pair keeps
 * the later rank. Returns 0, or which part is missing from the vocabulary:
 * 1 left, 2 right, 3 the merged token. */
static int merge_add(sdc_clip_tokenizer *t, const char *a, size_t na, const char *b, size_t nb, uint32_t rank,
                     char *scratch) {
    int32_t ia = vocab_get(t, a, na), ib = vocab_get(t, b, nb);
    if (ia < 0) return 1;
    if (ib < 0) return 2;
    memcpy(scratch, a, na);
    memcpy(scratch + na, b, nb);
    int32_t im = vocab_get(t, scratch, na + nb);
    if (im < 0) return 3;
    uint64_t k = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
    size_t i = merge_hash(k, t->mcap);
    while (t->mkey[i] != UINT64_MAX && t->mkey[i] != k) i = (i + 1) & (t->mcap - 1);
    t->mkey[i] = k;
    t->mval[i] = (uint64_t)rank << 32 | (uint32_t)im;
    return 0;
}

static sdc_status merge_error(int code, const char *what, const char *a, size_t na, const char *b, size_t nb,
                              sdc_error *err) {
    if (code == 1) return sdc_fail(err, SDC_EFORMAT, "%s: merge token \"%.*s\" is not in the vocabulary", what, (int)na, a);
    if (code == 2) return sdc_fail(err, SDC_EFORMAT, "%s: merge token \"%.*s\" is not in the vocabulary", what, (int)nb, b);
    return sdc_fail(err, SDC_EFORMAT, "%s: merge result \"%.*s%.*s\" is not in the vocabulary", what, (int)na, a,
                    (int)nb, b);
}

/* Parses merges text: one "a b" per line; lines starting with "#version"
 * are skipped and \r\n endings accepted (as tokenizers' reader does); any
 * other line that is not exactly two space-separated parts is an error. */
static sdc_status merges_from_text(sdc_clip_tokenizer *t, const char *text, size_t len, const char *path,
                                   size_t max_merges, sdc_error *err) {
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
    /* +2: a "#version" line and a final newline */
    if (lines > (size_t)SDC_CLIP_MAX_TOKENS + 2)
        return sdc_fail(err, SDC_ELIMIT, "%s: %zu lines, more than the %u merges sdc accepts", path, lines,
                        SDC_CLIP_MAX_TOKENS);
    SDC_TRY(merges_init(t, lines, err));
    char *scratch = malloc(len + 1);
    if (!scratch) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
    sdc_status s = SDC_OK;
    size_t p = 0, lineno = 0;
    uint32_t rank = 0;
    while (p < len && rank < max_merges) {
        const char *line = text + p;
        const char *nl = memchr(line, '\n', len - p);
        size_t n = nl ? (size_t)(nl - line) : len - p;
        p += n + (nl ? 1 : 0);
        lineno++;
        if (n && line[n - 1] == '\r') n--;
        if (n >= 8 && memcmp(line, "#version", 8) == 0) continue;
        const char *sp = memchr(line, ' ', n);
        if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - line))) {
            s = sdc_fail(err, SDC_EFORMAT, "%s: line %zu: a merge must be two tokens separated by one space, got \"%.*s\"",
                         path, lineno, n > 60 ? 60 : (int)n, line);
            break;
        }
        size_t na = (size_t)(sp - line), nb = n - na - 1;
        int code = merge_add(t, line, na, sp + 1, nb, rank, scratch);
        if (code) {
            char what[1100];
            snprintf(what, sizeof what, "%s: line %zu", path, lineno);
            s = merge_error(code, what, line, na, sp + 1, nb, err);
            break;
        }
        rank++;
    }
    free(scratch);
    if (s == SDC_OK && rank == 0) s = sdc_fail(err, SDC_EFORMAT, "%s: no merges (a vocabulary without merges cannot be used)", path);
    return s;
}

/* tokenizer.json's model.merges: strings "a b" or two-element arrays. */
static sdc_status merges_from_json(sdc_clip_tokenizer *t, const cJSON *arr, const char *path, sdc_error *err) {
    if (!cJSON_IsArray(arr)) return sdc_fail(err, SDC_EFORMAT, "%s: \"model.merges\" must be a list", path);
    int n = cJSON_GetArraySize(arr);
    if (n == 0) return sdc_fail(err, SDC_EFORMAT, "%s: \"model.merges\" is empty (a vocabulary without merges cannot be used)", path);
    if ((unsigned)n > SDC_CLIP_MAX_TOKENS)
        return sdc_fail(err, SDC_ELIMIT, "%s: %d merges, more than the %u sdc accepts", path, n, SDC_CLIP_MAX_TOKENS);
    SDC_TRY(merges_init(t, (size_t)n, err));
    size_t longest = 0;
    for (const cJSON *m = arr->child; m; m = m->next) {
        if (cJSON_IsString(m)) {
            size_t l = strlen(m->valuestring);
            if (l > longest) longest = l;
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            size_t l = strlen(m->child->valuestring) + strlen(m->child->next->valuestring);
            if (l > longest) longest = l;
        }
    }
    char *scratch = malloc(longest + 1);
    if (!scratch) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
    sdc_status s = SDC_OK;
    uint32_t rank = 0;
    for (const cJSON *m = arr->child; m; m = m->next, rank++) {
        const char *a, *b;
        size_t na, nb;
        if (cJSON_IsString(m)) {
            a = m->valuestring;
            const char *sp = strchr(a, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                s = sdc_fail(err, SDC_EFORMAT, "%s: model.merges[%u]: a merge must be two tokens separated by one space, got \"%.60s\"",
                             path, rank, a);
                break;
            }
            na = (size_t)(sp - a);
            b = sp + 1;
            nb = strlen(b);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            a = m->child->valuestring;
            b = m->child->next->valuestring;
            na = strlen(a);
            nb = strlen(b);
        } else {
            s = sdc_fail(err, SDC_EFORMAT, "%s: model.merges[%u] must be a string \"a b\" or a list of two strings",
                         path, rank);
            break;
        }
        int code = merge_add(t, a, na, b, nb, rank, scratch);
        if (code) {
            char what[1100];
            snprintf(what, sizeof what, "%s: model.merges[%u]", path, rank);
            s = merge_error(code, what, a, na, b, nb, err);
            break;
        }
    }
    free(scratch);
    return s;
}

static void byte_tables(sdc_clip_tokenizer *t) {
    uint32_t table[256];
    uint8_t order[256];
    clip_bytes_to_unicode(table, order);
    for (int b = 0; b < 256; b++) {
        unsigned char u[8];
        size_t n = clip_utf8_encode(table[b], u);
        t->byte_id[b] = vocab_get(t, (const char *)u, n);
        memcpy(u + n, "</w>", 4);
        t->byte_eow_id[b] = vocab_get(t, (const char *)u, n + 4);
    }
}

/* ---- added tokens and special tokens --------------------------------------- */

static clip_added *added_find(sdc_clip_tokenizer *t, const char *content) {
    for (int i = 0; i < t->nadded; i++)
        if (strcmp(t->added[i].content, content) == 0) return &t->added[i];
    return NULL;
}

/* A serialized AddedToken: {"content", "special", "normalized", "lstrip",
 * "rstrip", "single_word"}. */
typedef struct clip_token {
    char *content; /* malloc'd */
    uint8_t special, normalized, lstrip, rstrip, single_word;
    const char *file; /* the file that set it (a static name), or NULL */
} clip_token;

/* Registers an added token, as tokenizers' AddedVocabulary::add_tokens
 * does: its id is the one it already has, else the vocabulary's, else the
 * next free one past the vocabulary; a repeated content takes the later
 * flags. */
static sdc_status added_put(sdc_clip_tokenizer *t, const clip_token *tok, const char *what, sdc_error *err) {
    if (!tok->content[0]) return SDC_OK; /* tokenizers ignores empty tokens */
    clip_added *a = added_find(t, tok->content);
    if (!a) {
        int32_t id = vocab_get(t, tok->content, strlen(tok->content));
        if (id < 0) {
            int64_t next = t->vocab_size;
            for (int i = 0; i < t->nadded; i++)
                if (t->added[i].id >= next) next = (int64_t)t->added[i].id + 1;
            if (next > INT32_MAX) return sdc_fail(err, SDC_ELIMIT, "%s: too many added tokens", what);
            id = (int32_t)next;
        }
        clip_added *grown = realloc(t->added, (size_t)(t->nadded + 1) * sizeof *grown);
        if (!grown) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", what);
        t->added = grown;
        a = &t->added[t->nadded];
        memset(a, 0, sizeof *a);
        a->content = sdc_strdup(tok->content);
        if (!a->content) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", what);
        a->id = id;
        t->nadded++;
    }
    a->special = tok->special;
    a->normalized = tok->normalized;
    a->lstrip = tok->lstrip;
    a->rstrip = tok->rstrip;
    a->single_word = tok->single_word;
    return SDC_OK;
}

/* The text each added token is searched for; normalized ones are matched
 * against normalized text, so their content is normalized the same way. */
static sdc_status added_finish(sdc_clip_tokenizer *t, sdc_error *err) {
    for (int i = 0; i < t->nadded; i++) {
        clip_added *a = &t->added[i];
        size_t len = strlen(a->content);
        uint32_t *cps = malloc((len + 1) * sizeof *cps);
        if (!cps) return sdc_fail(err, SDC_ENOMEM, "tokenizer: out of memory");
        size_t n = clip_utf8_decode((const unsigned char *)a->content, len, cps);
        if (a->normalized) {
            uint32_t *norm;
            size_t nn;
            sdc_status s = clip_normalize(cps, n, &norm, &nn, err);
            free(cps);
            SDC_TRY(s);
            cps = norm;
            n = nn;
            t->has_norm_added = 1;
        }
        a->match = cps;
        a->nmatch = n;
    }
    return SDC_OK;
}

static int flag(const cJSON *o, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

/* Parses a token given as a plain string or as an AddedToken object into
 * *tok (replacing it). A plain string, or an object without "normalized",
 * matches the raw text when `special`; otherwise normalized defaults to
 * !special, as tokenizers' AddedToken does. */
static sdc_status token_parse(const cJSON *v, int special, clip_token *tok, const char *what, const char *key,
                              sdc_error *err) {
    const cJSON *content = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "content") : v;
    if (!cJSON_IsString(content))
        return sdc_fail(err, SDC_EFORMAT, "%s: %s must be a string or an object with a \"content\" string", what, key);
    if (strlen(content->valuestring) > SDC_CLIP_MAX_TOKEN_BYTES)
        return sdc_fail(err, SDC_ELIMIT, "%s: %s \"%.40s...\" is longer than the %d bytes sdc accepts", what, key,
                        content->valuestring, SDC_CLIP_MAX_TOKEN_BYTES);
    char *c = sdc_strdup(content->valuestring);
    if (!c) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", what);
    free(tok->content);
    memset(tok, 0, sizeof *tok);
    tok->content = c;
    tok->special = (uint8_t)(special || (cJSON_IsObject(v) && flag(v, "special", 0)));
    tok->normalized = (uint8_t)(cJSON_IsObject(v) ? flag(v, "normalized", !tok->special) : !tok->special);
    tok->lstrip = (uint8_t)(cJSON_IsObject(v) && flag(v, "lstrip", 0));
    tok->rstrip = (uint8_t)(cJSON_IsObject(v) && flag(v, "rstrip", 0));
    tok->single_word = (uint8_t)(cJSON_IsObject(v) && flag(v, "single_word", 0));
    return SDC_OK;
}

/* The named special tokens, in the order transformers registers them: when
 * two share a content (eos and pad are both <|endoftext|> in SD 1.x), the
 * later one's flags win. */
enum { TOK_BOS, TOK_EOS, TOK_UNK, TOK_PAD, NTOK };
static const char *k_token_keys[NTOK] = {"bos_token", "eos_token", "unk_token", "pad_token"};

/* An added token read from a file, with the id the file gives it. */
typedef struct clip_pending {
    int64_t id;
    int order; /* position read, so that sorting is stable */
    clip_token tok;
} clip_pending;

typedef struct clip_config {
    clip_token named[NTOK];
    clip_token *extra; /* additional_special_tokens / extra_special_tokens */
    int nextra;
    clip_pending *pending; /* added_tokens_decoder, added_tokens.json, tokenizer.json's added_tokens */
    int npending;
    int64_t max_length;
} clip_config;

static void config_free(clip_config *c) {
    for (int i = 0; i < NTOK; i++) free(c->named[i].content);
    for (int i = 0; i < c->nextra; i++) free(c->extra[i].content);
    for (int i = 0; i < c->npending; i++) free(c->pending[i].tok.content);
    free(c->extra);
    free(c->pending);
}

static int pending_cmp(const void *pa, const void *pb) {
    const clip_pending *a = pa, *b = pb;
    if (a->id != b->id) return a->id < b->id ? -1 : 1;
    return a->order - b->order;
}

/* Reads the named tokens and the extra special tokens a config file sets
 * (a key that is absent or null leaves the current value). file is the
 * config's name, kept for messages. */
static sdc_status config_tokens(const cJSON *obj, clip_config *c, const char *what, const char *file,
                                sdc_error *err) {
    for (int i = 0; i < NTOK; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, k_token_keys[i]);
        if (v && !cJSON_IsNull(v)) {
            SDC_TRY(token_parse(v, 1, &c->named[i], what, k_token_keys[i], err));
            c->named[i].file = file;
        }
    }
    static const char *lists[] = {"additional_special_tokens", "extra_special_tokens"};
    for (int k = 0; k < 2; k++) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(obj, lists[k]);
        if (!cJSON_IsArray(list)) continue;
        for (const cJSON *e = list->child; e; e = e->next) {
            if (c->nextra >= SDC_CLIP_MAX_ADDED)
                return sdc_fail(err, SDC_ELIMIT, "%s: more than %d %s", what, SDC_CLIP_MAX_ADDED, lists[k]);
            clip_token *grown = realloc(c->extra, (size_t)(c->nextra + 1) * sizeof *grown);
            if (!grown) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", what);
            c->extra = grown;
            memset(&c->extra[c->nextra], 0, sizeof *grown);
            c->nextra++;
            SDC_TRY(token_parse(e, 1, &c->extra[c->nextra - 1], what, lists[k], err));
        }
    }
    return SDC_OK;
}

/* Queues an added token of a file; parsed as an AddedToken object when o
 * is an object, else named by `content` (added_tokens.json). */
static sdc_status pending_add(clip_config *c, const cJSON *o, const char *content, int64_t id, const char *what,
                              sdc_error *err) {
    if (c->npending >= SDC_CLIP_MAX_ADDED)
        return sdc_fail(err, SDC_ELIMIT, "%s: more than %d added tokens", what, SDC_CLIP_MAX_ADDED);
    clip_pending *grown = realloc(c->pending, (size_t)(c->npending + 1) * sizeof *grown);
    if (!grown) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", what);
    c->pending = grown;
    clip_pending *p = &c->pending[c->npending];
    memset(p, 0, sizeof *p);
    p->id = id;
    p->order = c->npending++;
    if (o) {
        if (!cJSON_IsObject(o))
            return sdc_fail(err, SDC_EFORMAT, "%s: an added token must be an object with a \"content\" string", what);
        return token_parse(o, 0, &p->tok, what, "an added token", err);
    }
    if (strlen(content) > SDC_CLIP_MAX_TOKEN_BYTES)
        return sdc_fail(err, SDC_ELIMIT, "%s: added token \"%.40s...\" is longer than the %d bytes sdc accepts", what,
                        content, SDC_CLIP_MAX_TOKEN_BYTES);
    p->tok.content = sdc_strdup(content);
    if (!p->tok.content) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", what);
    for (int i = 0; i < NTOK; i++)
        if (c->named[i].content && strcmp(content, c->named[i].content) == 0) p->tok.special = 1;
    p->tok.normalized = !p->tok.special;
    return SDC_OK;
}

/* Reads the special tokens and added tokens the way transformers'
 * from_pretrained does: tokenizer_config.json first; when it has no
 * "added_tokens_decoder" (older folders), special_tokens_map.json overrides
 * its tokens, and added_tokens.json and tokenizer.json's "added_tokens" are
 * the added tokens. tj is tokenizer.json's root or NULL. */
static sdc_status load_config(const char *dir, const cJSON *tj, const char *tj_path,
                              clip_config *c, sdc_error *err) {
    char *path = sdc_path_join(dir, "tokenizer_config.json");
    if (!path) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", dir);
    cJSON *cfg = NULL;
    sdc_status s = SDC_OK;
    int has_decoder = 0;
    if (sdc_path_exists(path)) {
        s = sdc_json_load_object(path, &cfg, err);
        if (s == SDC_OK) s = config_tokens(cfg, c, path, "tokenizer_config.json", err);
        const cJSON *ml = cJSON_GetObjectItemCaseSensitive(cfg, "model_max_length");
        if (s == SDC_OK && ml && !cJSON_IsNull(ml)) {
            if (!cJSON_IsNumber(ml) || ml->valuedouble < 2 ||
                (ml->valuedouble < CLIP_UNSET_MAX_LENGTH && !sdc_json_is_int(ml->valuedouble)))
                s = sdc_fail(err, SDC_EFORMAT, "%s: \"model_max_length\" must be an integer >= 2", path);
            else if (ml->valuedouble < CLIP_UNSET_MAX_LENGTH)
                c->max_length = (int64_t)ml->valuedouble;
            if (s == SDC_OK && c->max_length > CLIP_MAX_LENGTH_LIMIT)
                s = sdc_fail(err, SDC_ELIMIT, "%s: \"model_max_length\" %lld is more than the %d sdc accepts", path,
                             (long long)c->max_length, CLIP_MAX_LENGTH_LIMIT);
        }
        const cJSON *dec = cJSON_GetObjectItemCaseSensitive(cfg, "added_tokens_decoder");
        if (s == SDC_OK && dec && !cJSON_IsNull(dec)) {
            has_decoder = 1;
            if (!cJSON_IsObject(dec)) s = sdc_fail(err, SDC_EFORMAT, "%s: \"added_tokens_decoder\" must be an object", path);
            for (const cJSON *e = dec ? dec->child : NULL; s == SDC_OK && e; e = e->next) {
                char *end;
                long long id = strtoll(e->string, &end, 10);
                if (end == e->string || *end || id < 0)
                    s = sdc_fail(err, SDC_EFORMAT, "%s: added_tokens_decoder key \"%.40s\" is not an id", path, e->string);
                else
                    s = pending_add(c, e, NULL, id, path, err);
            }
        }
    }
    free(path);
    cJSON_Delete(cfg);
    if (s != SDC_OK || has_decoder) return s;

    path = sdc_path_join(dir, "special_tokens_map.json");
    if (!path) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", dir);
    if (sdc_path_exists(path)) {
        s = sdc_json_load_object(path, &cfg, err);
        if (s == SDC_OK) s = config_tokens(cfg, c, path, "special_tokens_map.json", err);
        cJSON_Delete(cfg);
        cfg = NULL;
    }
    free(path);
    if (s != SDC_OK) return s;

    path = sdc_path_join(dir, "added_tokens.json");
    if (!path) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", dir);
    if (sdc_path_exists(path)) {
        s = sdc_json_load_object(path, &cfg, err);
        for (const cJSON *e = cfg ? cfg->child : NULL; s == SDC_OK && e; e = e->next) {
            if (!cJSON_IsNumber(e) || !sdc_json_is_int(e->valuedouble) || e->valuedouble < 0) {
                s = sdc_fail(err, SDC_EFORMAT, "%s: \"%.40s\" must map to an id", path, e->string);
                break;
            }
            s = pending_add(c, NULL, e->string, (int64_t)e->valuedouble, path, err);
        }
        cJSON_Delete(cfg);
    }
    free(path);
    if (s != SDC_OK) return s;

    const cJSON *list = tj ? cJSON_GetObjectItemCaseSensitive(tj, "added_tokens") : NULL;
    if (list && !cJSON_IsNull(list)) {
        if (!cJSON_IsArray(list)) return sdc_fail(err, SDC_EFORMAT, "%s: \"added_tokens\" must be a list", tj_path);
        for (const cJSON *e = list->child; e; e = e->next) {
            int64_t id = -1;
            SDC_TRY(sdc_json_get_int(e, "id", &id, tj_path, err));
            SDC_TRY(pending_add(c, e, NULL, id, tj_path, err));
        }
    }
    return SDC_OK;
}

/* Registers the named and extra special tokens as transformers does after
 * loading: a named token whose content is already an added token keeps that
 * token's flags (from_pretrained swaps it for the added one); otherwise its
 * own flags apply, later ones winning; extra special tokens always apply.
 * Then resolves the ids and finishes the added tokens. */
static sdc_status finish(sdc_clip_tokenizer *t, clip_config *c, const char *what, sdc_error *err) {
    /* file added tokens go in ascending id order (one per id, the last read
     * winning); the ids only order them, as in transformers */
    if (c->npending > 1) qsort(c->pending, (size_t)c->npending, sizeof *c->pending, pending_cmp);
    for (int i = 0; i < c->npending; i++)
        if (i + 1 == c->npending || c->pending[i + 1].id != c->pending[i].id)
            SDC_TRY(added_put(t, &c->pending[i].tok, what, err));
    uint8_t known[NTOK];
    for (int i = 0; i < NTOK; i++) known[i] = added_find(t, c->named[i].content) != NULL;
    int32_t *ids[NTOK] = {&t->bos_id, &t->eos_id, &t->unk_id, &t->pad_id};
    for (int i = 0; i < NTOK; i++) {
        if (known[i]) {
            added_find(t, c->named[i].content)->special = 1;
        } else {
            if (vocab_get(t, c->named[i].content, strlen(c->named[i].content)) < 0)
                return sdc_fail(err, SDC_EFORMAT, "%s%s%s: %s \"%.80s\" is not in the vocabulary", what,
                                c->named[i].file ? "/" : "", c->named[i].file ? c->named[i].file : "",
                                k_token_keys[i], c->named[i].content);
            SDC_TRY(added_put(t, &c->named[i], what, err));
        }
    }
    for (int i = 0; i < c->nextra; i++) SDC_TRY(added_put(t, &c->extra[i], what, err));
    for (int i = 0; i < NTOK; i++) {
        /* an empty token is never an added token; the vocabulary has it or not */
        const clip_added *a = added_find(t, c->named[i].content);
        *ids[i] = a ? a->id : vocab_get(t, c->named[i].content, strlen(c->named[i].content));
        if (*ids[i] < 0) return sdc_fail(err, SDC_EFORMAT, "%s: %s is empty", what, k_token_keys[i]);
    }
    t->max_length = (int)c->max_length;
    byte_tables(t);
    return added_finish(t, err);
}

/* CLIPTokenizer's defaults: plain strings, so special and matched raw. */
static sdc_status config_defaults(clip_config *c, const char *pad) {
    const char *v[NTOK] = {"<|startoftext|>", "<|endoftext|>", "<|endoftext|>", pad ? pad : "<|endoftext|>"};
    for (int i = 0; i < NTOK; i++) {
        c->named[i].content = sdc_strdup(v[i]);
        if (!c->named[i].content) return SDC_ENOMEM;
        c->named[i].special = 1;
    }
    c->max_length = CLIP_DEFAULT_MAX_LENGTH;
    return SDC_OK;
}

static sdc_clip_tokenizer *tokenizer_new(void) {
    sdc_clip_tokenizer *t = calloc(1, sizeof *t);
    if (t) t->bos_id = t->eos_id = t->pad_id = t->unk_id = -1;
    return t;
}

void sdc_clip_tokenizer_free(sdc_clip_tokenizer *t) {
    if (!t) return;
    free(t->pool);
    sdc_strmap_free(&t->vocab);
    free(t->mkey);
    free(t->mval);
    for (int i = 0; i < t->nadded; i++) {
        free(t->added[i].content);
        free(t->added[i].match);
    }
    free(t->added);
    free(t);
}

static sdc_status load_tokenizer_json(sdc_clip_tokenizer *t, const char *path, cJSON **tj, sdc_error *err) {
    SDC_TRY(sdc_json_load_object(path, tj, err));
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(*tj, "model");
    if (!cJSON_IsObject(model)) return sdc_fail(err, SDC_EFORMAT, "%s: no \"model\" object", path);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (type && !(cJSON_IsString(type) && strcmp(type->valuestring, "BPE") == 0))
        return sdc_fail(err, SDC_EUNSUPPORTED, "%s: model type %s is not BPE", path,
                        cJSON_IsString(type) ? type->valuestring : "(not a string)");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!vocab) return sdc_fail(err, SDC_EFORMAT, "%s: no \"model.vocab\"", path);
    if (!merges || cJSON_IsNull(merges))
        return sdc_fail(err, SDC_EFORMAT, "%s: no \"model.merges\" (a vocabulary without merges cannot be used)", path);
    SDC_TRY(vocab_from_json(t, vocab, path, err));
    return merges_from_json(t, merges, path, err);
}

static sdc_status load_vocab_merges(sdc_clip_tokenizer *t, const char *vpath, const char *mpath, sdc_error *err) {
    if (!sdc_path_exists(mpath))
        return sdc_fail(err, SDC_ENOTFOUND, "%s: missing (vocab.json has no merges beside it)", mpath);
    cJSON *v = NULL;
    SDC_TRY(sdc_json_load_object(vpath, &v, err));
    sdc_status s = vocab_from_json(t, v, vpath, err);
    cJSON_Delete(v);
    SDC_TRY(s);
    int64_t size = sdc_file_size(mpath);
    if (size > (int64_t)SDC_CLIP_MAX_FILE)
        return sdc_fail(err, SDC_ELIMIT, "%s: %lld bytes, more than the %u MiB sdc reads", mpath, (long long)size,
                        SDC_CLIP_MAX_FILE >> 20);
    char *text = NULL;
    size_t len = 0;
    SDC_TRY(sdc_read_file(mpath, &text, &len, err));
    s = merges_from_text(t, text, len, mpath, SIZE_MAX, err);
    free(text);
    return s;
}

/* The vocabulary and merges of a folder; transformers prefers
 * tokenizer.json when both layouts are present. *tj receives tokenizer.json
 * (for its added tokens) and *tj_path its path, or NULL. */
static sdc_status load_files(sdc_clip_tokenizer *t, const char *dir, cJSON **tj, char **tj_path, sdc_error *err) {
    char *tpath = sdc_path_join(dir, "tokenizer.json");
    char *vpath = sdc_path_join(dir, "vocab.json");
    char *mpath = sdc_path_join(dir, "merges.txt");
    sdc_status s;
    if (!tpath || !vpath || !mpath) {
        s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", dir);
    } else if (sdc_path_exists(tpath)) {
        s = load_tokenizer_json(t, tpath, tj, err);
        *tj_path = tpath;
        tpath = NULL;
    } else if (sdc_path_exists(vpath)) {
        s = load_vocab_merges(t, vpath, mpath, err);
    } else {
        s = sdc_fail(err, SDC_ENOTFOUND, "%s: no tokenizer.json or vocab.json in this folder", dir);
    }
    free(tpath);
    free(vpath);
    free(mpath);
    return s;
}

sdc_status sdc_clip_tokenizer_load(const char *dir, sdc_clip_tokenizer **out, sdc_error *err) {
    *out = NULL;
    if (!sdc_path_is_dir(dir))
        return sdc_path_exists(dir) ? sdc_fail(err, SDC_EINVAL, "%s: not a tokenizer folder", dir)
                                    : sdc_fail(err, SDC_ENOTFOUND, "%s: no such tokenizer folder", dir);
    sdc_clip_tokenizer *t = tokenizer_new();
    clip_config c = {0};
    if (!t || config_defaults(&c, NULL) != SDC_OK) {
        sdc_clip_tokenizer_free(t);
        config_free(&c);
        return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", dir);
    }
    cJSON *tj = NULL;
    char *tj_path = NULL;
    sdc_status s = load_files(t, dir, &tj, &tj_path, err);
    if (s == SDC_OK) s = load_config(dir, tj, tj_path, &c, err);
    cJSON_Delete(tj);
    free(tj_path);
    if (s == SDC_OK) s = finish(t, &c, dir, err);
    config_free(&c);
    if (s != SDC_OK) {
        sdc_clip_tokenizer_free(t);
        return s;
    }
    *out = t;
    return SDC_OK;
}

/* ---- the embedded default ------------------------------------------------------ */

static sdc_status gunzip(const unsigned char *gz, size_t n, char **out, size_t *out_len, sdc_error *err) {
    /* the gzip trailer holds the size mod 2^32; a hint, checked below */
    size_t cap = n >= 4 ? (size_t)gz[n - 4] | (size_t)gz[n - 3] << 8 | (size_t)gz[n - 2] << 16 | (size_t)gz[n - 1] << 24 : 0;
    if (cap == 0 || cap > (64u << 20)) cap = 1u << 20;
    char *buf = malloc(cap + 1);
    if (!buf) return sdc_fail(err, SDC_ENOMEM, "embedded CLIP merges: out of memory");
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) {
        free(buf);
        return sdc_fail(err, SDC_ENOMEM, "embedded CLIP merges: zlib init failed");
    }
    z.next_in = (unsigned char *)(uintptr_t)gz;
    z.avail_in = (uInt)n;
    int r;
    do {
        if (z.total_out == cap) {
            char *g = cap < (64u << 20) ? realloc(buf, 2 * cap + 1) : NULL;
            if (!g) {
                inflateEnd(&z);
                free(buf);
                return sdc_fail(err, SDC_ENOMEM, "embedded CLIP merges: out of memory");
            }
            buf = g;
            cap *= 2;
        }
        z.next_out = (unsigned char *)buf + z.total_out;
        z.avail_out = (uInt)(cap - z.total_out);
        r = inflate(&z, Z_NO_FLUSH);
    } while (r == Z_OK);
    size_t len = z.total_out;
    inflateEnd(&z);
    if (r != Z_STREAM_END) {
        free(buf);
        return sdc_fail(err, SDC_EFORMAT, "embedded CLIP merges: corrupt gzip data (%d)", r);
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return SDC_OK;
}

/* CLIP's vocabulary follows from its merges: the 256 byte characters in
 * bytes_to_unicode order, the same with "</w>", each merge's concatenation
 * in merge order, then <|startoftext|> and <|endoftext|>. */
static sdc_status vocab_from_merges(sdc_clip_tokenizer *t, const char *text, size_t len, sdc_error *err) {
    SDC_TRY(vocab_init(t, len + 256 * 16 + 64, CLIP_STD_VOCAB, err));
    uint32_t table[256];
    uint8_t order[256];
    clip_bytes_to_unicode(table, order);
    size_t used = 0;
    int32_t id = 0;
    for (int eow = 0; eow < 2; eow++)
        for (int i = 0; i < 256; i++) {
            unsigned char u[8];
            size_t n = clip_utf8_encode(table[order[i]], u);
            if (eow) {
                memcpy(u + n, "</w>", 4);
                n += 4;
            }
            SDC_TRY(vocab_put(t, &used, (const char *)u, n, id++, err));
        }
    size_t p = 0;
    while (p < len && id < 512 + CLIP_STD_MERGES) {
        const char *line = text + p;
        const char *nl = memchr(line, '\n', len - p);
        size_t n = nl ? (size_t)(nl - line) : len - p;
        p += n + 1;
        const char *sp = memchr(line, ' ', n);
        if (!sp) return sdc_fail(err, SDC_EFORMAT, "embedded CLIP merges: line %d is not a merge", id - 511);
        /* the line minus its space is the concatenation */
        char *k = t->pool + used;
        memcpy(k, line, (size_t)(sp - line));
        memcpy(k + (sp - line), sp + 1, n - (size_t)(sp - line) - 1);
        size_t kn = n - 1;
        k[kn] = '\0';
        used += kn + 1;
        if (sdc_strmap_putn(&t->vocab, k, kn, id++, NULL) != 0)
            return sdc_fail(err, SDC_ENOMEM, "tokenizer: out of memory for the vocabulary");
    }
    if (id != 512 + CLIP_STD_MERGES)
        return sdc_fail(err, SDC_EFORMAT, "embedded CLIP merges: %d merges, expected %d", id - 512, CLIP_STD_MERGES);
    SDC_TRY(vocab_put(t, &used, "<|startoftext|>", 15, id++, err));
    SDC_TRY(vocab_put(t, &used, "<|endoftext|>", 13, id++, err));
    return SDC_OK;
}

sdc_status sdc_clip_tokenizer_default(const char *pad_token, sdc_clip_tokenizer **out, sdc_error *err) {
    *out = NULL;
    const unsigned char *gz;
    size_t gz_len;
    clip_embedded_merges_gz(&gz, &gz_len);
    char *text = NULL;
    size_t len = 0;
    SDC_TRY(gunzip(gz, gz_len, &text, &len, err));
    sdc_clip_tokenizer *t = tokenizer_new();
    clip_config c = {0};
    sdc_status s = t && config_defaults(&c, pad_token) == SDC_OK
                       ? SDC_OK
                       : sdc_fail(err, SDC_ENOMEM, "default CLIP tokenizer: out of memory");
    if (s == SDC_OK) s = vocab_from_merges(t, text, len, err);
    if (s == SDC_OK) s = merges_from_text(t, text, len, "embedded CLIP merges", CLIP_STD_MERGES, err);
    if (s == SDC_OK) s = finish(t, &c, "default CLIP tokenizer", err);
    free(text);
    config_free(&c);
    if (s != SDC_OK) {
        sdc_clip_tokenizer_free(t);
        return s;
    }
    *out = t;
    return SDC_OK;
}

/* ---- encoding ------------------------------------------------------------------- */

typedef struct bpe_merge {
    uint32_t rank, pos;
    int32_t merged;
} bpe_merge;

typedef struct bpe_sym {
    int32_t id;
    int32_t prev, next; /* -1 at the ends */
    int alive;
} bpe_sym;

typedef struct enc {
    const sdc_clip_tokenizer *t;
    int32_t *ids; /* content ids (without bos/eos) */
    int n, cap;   /* cap = max_length - 2: the rest would be truncated */
    unsigned char *bytes;
    bpe_sym *sym;
    bpe_merge *heap;
    size_t scratch_cap, heap_cap;
    sdc_error *err;
} enc;

static int enc_full(const enc *e) { return e->n >= e->cap; }

static void emit(enc *e, int32_t id) {
    if (e->n < e->cap) e->ids[e->n++] = id;
}

/* min-heap on (rank, position): the lowest rank merges first, the leftmost
 * on ties, as in tokenizers' word.rs */
static int heap_less(const bpe_merge *a, const bpe_merge *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(bpe_merge *h, size_t *n, bpe_merge m) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&m, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = m;
}

static bpe_merge heap_pop(bpe_merge *h, size_t *n) {
    bpe_merge top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

static sdc_status enc_reserve(enc *e, size_t nbytes) {
    if (nbytes <= e->scratch_cap) return SDC_OK;
    size_t cap = nbytes < 64 ? 64 : nbytes;
    unsigned char *b = realloc(e->bytes, cap);
    if (b) e->bytes = b;
    bpe_sym *s = b ? realloc(e->sym, cap * sizeof *s) : NULL;
    if (s) e->sym = s;
    /* each merge pushes at most two pairs: n - 1 + 2 (n - 1) in all */
    bpe_merge *h = s ? realloc(e->heap, 3 * cap * sizeof *h) : NULL;
    if (h) e->heap = h;
    if (!h) return sdc_fail(e->err, SDC_ENOMEM, "prompt: out of memory");
    e->scratch_cap = cap;
    e->heap_cap = 3 * cap;
    return SDC_OK;
}

static void push_pair(enc *e, size_t *nh, int32_t pos) {
    const bpe_sym *s = e->sym;
    int32_t nx = s[pos].next;
    uint32_t rank;
    int32_t merged;
    if (nx >= 0 && merge_get(e->t, s[pos].id, s[nx].id, &rank, &merged))
        heap_push(e->heap, nh, (bpe_merge){rank, (uint32_t)pos, merged});
}

/* BPE on one pre-token (its code points), appending the ids. */
static sdc_status encode_word(enc *e, const uint32_t *cps, size_t n) {
    const sdc_clip_tokenizer *t = e->t;
    SDC_TRY(enc_reserve(e, 4 * n));
    size_t nb = 0;
    for (size_t i = 0; i < n; i++) nb += clip_utf8_encode(cps[i], e->bytes + nb);
    /* one symbol per byte (a byte-level character); the last one carries
     * "</w>"; a character missing from the vocabulary becomes <unk> */
    bpe_sym *s = e->sym;
    int32_t ns = 0;
    for (size_t i = 0; i < nb; i++) {
        int32_t id = i + 1 == nb ? t->byte_eow_id[e->bytes[i]] : t->byte_id[e->bytes[i]];
        if (id < 0) id = t->unk_id;
        if (id < 0) continue;
        s[ns] = (bpe_sym){id, ns - 1, ns + 1, 1};
        ns++;
    }
    if (ns == 0) return SDC_OK;
    s[ns - 1].next = -1;
    size_t nh = 0;
    for (int32_t i = 0; i + 1 < ns; i++) push_pair(e, &nh, i);
    while (nh) {
        bpe_merge m = heap_pop(e->heap, &nh);
        bpe_sym *l = &s[m.pos];
        if (!l->alive || l->next < 0) continue;
        /* a stale entry: the pair at this position has changed since */
        uint32_t rank;
        int32_t merged;
        int32_t r = l->next;
        if (!merge_get(t, l->id, s[r].id, &rank, &merged) || merged != m.merged) continue;
        l->id = m.merged;
        l->next = s[r].next;
        s[r].alive = 0;
        if (l->next >= 0) s[l->next].prev = (int32_t)m.pos;
        if (l->prev >= 0) push_pair(e, &nh, l->prev);
        push_pair(e, &nh, (int32_t)m.pos);
    }
    for (int32_t i = 0; i >= 0 && !enc_full(e); i = s[i].next) emit(e, s[i].id);
    return SDC_OK;
}

/* Pre-tokenizes a normalized piece and encodes each pre-token. */
static sdc_status encode_pretokens(enc *e, const uint32_t *s, size_t n) {
    size_t pos = 0, start, len;
    while (!enc_full(e) && (len = clip_pretoken_next(s, n, &pos, &start)) > 0) {
        if (clip_is_special_literal(s + start, len)) {
            SDC_TRY(encode_word(e, s + start, 2));
            SDC_TRY(encode_word(e, s + start + 2, len - 4));
            SDC_TRY(encode_word(e, s + start + len - 2, 2));
        } else {
            SDC_TRY(encode_word(e, s + start, len));
        }
    }
    return SDC_OK;
}

/* The next added-token match in s[*scan..n) among tokens whose normalized
 * flag is `norm`, as tokenizers' find_matches: leftmost-longest and
 * non-overlapping (a single_word match that is discarded still consumes
 * its span); lstrip/rstrip widen the match over whitespace, but never back
 * before `floor` (the end of the previous match). */
static int next_added(const sdc_clip_tokenizer *t, int norm, const uint32_t *s, size_t n, size_t *scan,
                      size_t floor, size_t *mstart, size_t *mend, int32_t *id) {
    for (size_t p = *scan; p < n; p++) {
        const clip_added *best = NULL;
        for (int k = 0; k < t->nadded; k++) {
            const clip_added *a = &t->added[k];
            if (a->normalized != norm || a->nmatch == 0 || a->nmatch > n - p) continue;
            if (best && a->nmatch <= best->nmatch) continue;
            if (memcmp(s + p, a->match, a->nmatch * sizeof *s) == 0) best = a;
        }
        if (!best) continue;
        size_t start = p, stop = p + best->nmatch;
        *scan = stop;
        if (best->single_word &&
            ((start > 0 && clip_is_word(s[start - 1])) || (stop < n && clip_is_word(s[stop])))) {
            p = stop - 1; /* the loop's p++ resumes the search after the discarded match */
            continue;
        }
        if (best->lstrip)
            while (start > floor && clip_is_space(s[start - 1])) start--;
        if (best->rstrip)
            while (stop < n && clip_is_space(s[stop])) stop++;
        *mstart = start;
        *mend = stop;
        *id = best->id;
        return 1;
    }
    *scan = n;
    return 0;
}

/* A piece of raw text between raw added tokens: normalize, cut out the
 * normalized added tokens, pre-tokenize and encode the rest. */
static sdc_status encode_piece(enc *e, const uint32_t *raw, size_t nraw) {
    uint32_t *s;
    size_t n;
    SDC_TRY(clip_normalize(raw, nraw, &s, &n, e->err));
    sdc_status st = SDC_OK;
    size_t done = 0, scan = 0, ms, me;
    int32_t id;
    while (st == SDC_OK && !enc_full(e) && e->t->has_norm_added && next_added(e->t, 1, s, n, &scan, done, &ms, &me, &id)) {
        if (ms > done) st = encode_pretokens(e, s + done, ms - done);
        emit(e, id);
        done = me > done ? me : done;
    }
    if (st == SDC_OK && done < n) st = encode_pretokens(e, s + done, n - done);
    free(s);
    return st;
}

sdc_status sdc_clip_tokenize(const sdc_clip_tokenizer *t, const char *text, int32_t *ids, int *n_real,
                             sdc_error *err) {
    if (n_real) *n_real = 0;
    if (!text) text = "";
    size_t len = strlen(text);
    uint32_t *cps = malloc((len + 1) * sizeof *cps);
    if (!cps) return sdc_fail(err, SDC_ENOMEM, "prompt: out of memory (%zu bytes)", len);
    size_t n = clip_utf8_decode((const unsigned char *)text, len, cps);
    enc e = {.t = t, .ids = ids + 1, .cap = t->max_length - 2, .err = err};
    sdc_status s = SDC_OK;
    size_t done = 0, scan = 0, ms, me;
    int32_t id;
    while (s == SDC_OK && !enc_full(&e) && next_added(t, 0, cps, n, &scan, done, &ms, &me, &id)) {
        if (ms > done) s = encode_piece(&e, cps + done, ms - done);
        emit(&e, id);
        done = me > done ? me : done;
    }
    if (s == SDC_OK && done < n && !enc_full(&e)) s = encode_piece(&e, cps + done, n - done);
    free(cps);
    free(e.bytes);
    free(e.sym);
    free(e.heap);
    if (s != SDC_OK) return s;
    ids[0] = t->bos_id;
    ids[e.n + 1] = t->eos_id;
    for (int i = e.n + 2; i < t->max_length; i++) ids[i] = t->pad_id;
    if (n_real) *n_real = e.n + 2;
    return SDC_OK;
}

/* ---- accessors ------------------------------------------------------------------- */

int sdc_clip_tokenizer_max_length(const sdc_clip_tokenizer *t) { return t->max_length; }
int sdc_clip_tokenizer_vocab_size(const sdc_clip_tokenizer *t) { return t->vocab_size; }
int32_t sdc_clip_tokenizer_bos_id(const sdc_clip_tokenizer *t) { return t->bos_id; }
int32_t sdc_clip_tokenizer_eos_id(const sdc_clip_tokenizer *t) { return t->eos_id; }
int32_t sdc_clip_tokenizer_pad_id(const sdc_clip_tokenizer *t) { return t->pad_id; }

int32_t sdc_clip_tokenizer_token_id(const sdc_clip_tokenizer *t, const char *token) {
    for (int i = 0; i < t->nadded; i++)
        if (strcmp(t->added[i].content, token) == 0) return t->added[i].id;
    return vocab_get(t, token, strlen(token));
}
