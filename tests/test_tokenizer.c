/* CLIP tokenizer parity: the golden prompts of both reference packs and the
 * hard cases of tools/make_tokenizer_cases.py, each checked id for id on the
 * folder tokenizers and on the embedded default; broken tokenizer files;
 * and `sdc tokenize`. */
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>

#include "core/fs.h"
#include "data/clip_tokenizer.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "single_recipe.h"
#include "test.h"

#define SD_TOK "tiny-sd/tokenizer"
#define SDXL_TOK "tiny-sdxl/tokenizer"
#define SDXL_TOK2 "tiny-sdxl/tokenizer_2"

static cJSON *load_cases(void) {
    cJSON *j = NULL;
    sdc_error err;
    if (sdc_json_load_object(test_data("tokenizer_cases.json"), &j, &err) != SDC_OK) {
        sdc_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return NULL;
    }
    return j;
}

/* The prompt of a case: "prompt", or "prompt_hex" for invalid UTF-8.
 * malloc'd. */
static char *case_prompt(const cJSON *c) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(c, "prompt");
    if (cJSON_IsString(p)) return sdc_strdup(p->valuestring);
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(c, "prompt_hex");
    if (!cJSON_IsString(h)) return NULL;
    size_t n = strlen(h->valuestring) / 2;
    char *s = malloc(n + 1);
    for (size_t i = 0; s && i < n; i++) {
        unsigned v;
        sscanf(h->valuestring + 2 * i, "%2x", &v);
        s[i] = (char)v;
    }
    if (s) s[n] = '\0';
    return s;
}

/* Tokenizes prompt and compares with the JSON list want (and n_real when
 * want_n >= 0). Returns 1 if equal; reports the first difference. */
static int check_ids(const sdc_clip_tokenizer *t, const char *prompt, const cJSON *want, int want_n,
                     const char *label) {
    int max = sdc_clip_tokenizer_max_length(t);
    if (!cJSON_IsArray(want) || cJSON_GetArraySize(want) != max) {
        CHECK_MSG(0, "%s: expected list of %d ids in the cases file", label, max);
        return 0;
    }
    int32_t *ids = malloc((size_t)max * sizeof *ids);
    sdc_error err;
    int n_real = -1;
    if (sdc_clip_tokenize(t, prompt, ids, &n_real, &err) != SDC_OK) {
        CHECK_MSG(0, "%s: %s", label, err.msg);
        free(ids);
        return 0;
    }
    int k = 0, ok = 1;
    for (const cJSON *v = want->child; v; v = v->next, k++)
        if (ids[k] != (int32_t)v->valuedouble) {
            CHECK_MSG(0, "%s: id %d is %d, the reference has %d", label, k, (int)ids[k], (int)v->valuedouble);
            ok = 0;
            break;
        }
    if (want_n >= 0 && n_real != want_n) {
        CHECK_MSG(0, "%s: n_real %d, the reference has %d", label, n_real, want_n);
        ok = 0;
    }
    free(ids);
    return ok;
}

static sdc_clip_tokenizer *load_tok(const char *rel) {
    sdc_clip_tokenizer *t = NULL;
    sdc_error err;
    if (sdc_clip_tokenizer_load(test_data(rel), &t, &err) != SDC_OK) sdc_test_fail(__FILE__, __LINE__, "%s", err.msg);
    return t;
}

static sdc_clip_tokenizer *default_tok(const char *pad) {
    sdc_clip_tokenizer *t = NULL;
    sdc_error err;
    if (sdc_clip_tokenizer_default(pad, &t, &err) != SDC_OK) sdc_test_fail(__FILE__, __LINE__, "%s", err.msg);
    return t;
}

/* Checks every golden prompt of both packs; tok1/tok2 tokenize for the
 * first and second text encoder. */
static int check_goldens(const cJSON *cases, const sdc_clip_tokenizer *tok1, const sdc_clip_tokenizer *tok2,
                         const char *what) {
    const cJSON *gold = cJSON_GetObjectItemCaseSensitive(cases, "golden");
    int checked = 0;
    const cJSON *pack;
    cJSON_ArrayForEach(pack, gold) {
        const cJSON *prompts = cJSON_GetObjectItemCaseSensitive(pack, "prompts");
        for (int w = 0; w < 2; w++) {
            const cJSON *ids = cJSON_GetObjectItemCaseSensitive(pack, w ? "tokenizer_2" : "tokenizer");
            if (!ids) continue;
            for (int i = 0; i < cJSON_GetArraySize(prompts); i++) {
                char label[160];
                snprintf(label, sizeof label, "%s %s %s prompt %d", what, pack->string, w ? "tokenizer_2" : "tokenizer", i);
                checked += check_ids(w ? tok2 : tok1, cJSON_GetArrayItem(prompts, i)->valuestring,
                                     cJSON_GetArrayItem(ids, i), -1, label);
            }
        }
    }
    return checked;
}

TEST(tokenizer_goldens_both_packs) {
    cJSON *cases = load_cases();
    REQUIRE(cases);
    sdc_clip_tokenizer *sd = load_tok(SD_TOK), *xl1 = load_tok(SDXL_TOK), *xl2 = load_tok(SDXL_TOK2);
    REQUIRE(sd && xl1 && xl2);
    CHECK_EQ_INT(sdc_clip_tokenizer_max_length(sd), 77);
    CHECK_EQ_INT(sdc_clip_tokenizer_pad_id(sd), 49407);
    CHECK_EQ_INT(sdc_clip_tokenizer_pad_id(xl2), 0);
    CHECK_EQ_INT(sdc_clip_tokenizer_bos_id(xl2), 49406);
    CHECK_EQ_INT(sdc_clip_tokenizer_eos_id(xl2), 49407);
    /* tiny-sd's goldens go through its own folder; both packs share the
     * first tokenizer, so the SD folder stands for SDXL's first as well */
    CHECK_EQ_INT(check_goldens(cases, xl1, xl2, "folder"), 12);
    CHECK_EQ_INT(check_goldens(cases, sd, xl2, "folder(sd)"), 12);
    sdc_clip_tokenizer_free(sd);
    sdc_clip_tokenizer_free(xl1);
    sdc_clip_tokenizer_free(xl2);
    cJSON_Delete(cases);
}

/* Runs every hard case through tok (for the expectations of `which`). */
static void check_hard_cases(const cJSON *cases, const sdc_clip_tokenizer *tok, const char *which, const char *what) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(cases, "cases");
    REQUIRE(cJSON_GetArraySize(list) >= 60);
    char nkey[64];
    snprintf(nkey, sizeof nkey, "%s_n_real", which);
    int failed = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, list) {
        char *prompt = case_prompt(c);
        char label[200];
        snprintf(label, sizeof label, "%s %s case \"%s\"", what, which,
                 cJSON_GetObjectItemCaseSensitive(c, "name")->valuestring);
        REQUIRE(prompt);
        failed += !check_ids(tok, prompt, cJSON_GetObjectItemCaseSensitive(c, which),
                             (int)cJSON_GetObjectItemCaseSensitive(c, nkey)->valuedouble, label);
        free(prompt);
    }
    CHECK_EQ_INT(failed, 0);
}

TEST(tokenizer_hard_cases_folders) {
    cJSON *cases = load_cases();
    REQUIRE(cases);
    sdc_clip_tokenizer *t1 = load_tok(SD_TOK), *t2 = load_tok(SDXL_TOK2);
    REQUIRE(t1 && t2);
    check_hard_cases(cases, t1, "tokenizer", "folder");
    check_hard_cases(cases, t2, "tokenizer_2", "folder");
    sdc_clip_tokenizer_free(t1);
    sdc_clip_tokenizer_free(t2);
    cJSON_Delete(cases);
}

TEST(tokenizer_default_equals_folders) {
    cJSON *cases = load_cases();
    REQUIRE(cases);
    sdc_clip_tokenizer *d1 = default_tok(NULL), *d2 = default_tok("!");
    REQUIRE(d1 && d2);
    CHECK_EQ_INT(sdc_clip_tokenizer_pad_id(d1), 49407);
    CHECK_EQ_INT(sdc_clip_tokenizer_pad_id(d2), 0);
    CHECK_EQ_INT(check_goldens(cases, d1, d2, "default"), 12);
    check_hard_cases(cases, d1, "tokenizer", "default");
    check_hard_cases(cases, d2, "tokenizer_2", "default");
    sdc_clip_tokenizer_free(d1);
    sdc_clip_tokenizer_free(d2);
    sdc_clip_tokenizer *bad = NULL;
    sdc_error err;
    CHECK(sdc_clip_tokenizer_default("<not-a-token>", &bad, &err) != SDC_OK && bad == NULL);
    CHECK(strstr(err.msg, "<not-a-token>") != NULL);
    cJSON_Delete(cases);
}

/* The vocabulary derived from the embedded merges equals vocab.json and
 * tokenizer.json's model.vocab entry for entry. */
TEST(tokenizer_default_vocab_equals_files) {
    sdc_clip_tokenizer *d = default_tok(NULL);
    REQUIRE(d);
    CHECK_EQ_INT(sdc_clip_tokenizer_vocab_size(d), 49408);
    const char *files[2] = {SD_TOK "/vocab.json", SDXL_TOK2 "/tokenizer.json"};
    for (int f = 0; f < 2; f++) {
        cJSON *j = NULL;
        sdc_error err;
        REQUIRE_OK(sdc_json_load_object(test_data(files[f]), &j, &err), &err);
        const cJSON *v = f ? cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "model"), "vocab") : j;
        REQUIRE(cJSON_IsObject(v));
        CHECK_EQ_INT(cJSON_GetArraySize(v), 49408);
        int bad = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, v) {
            int32_t id = sdc_clip_tokenizer_token_id(d, e->string);
            if (id != (int32_t)e->valuedouble && bad++ < 3)
                CHECK_MSG(0, "%s: \"%s\" is %d there, %d derived", files[f], e->string, (int)e->valuedouble, (int)id);
        }
        CHECK_EQ_INT(bad, 0);
        cJSON_Delete(j);
    }
    sdc_clip_tokenizer_free(d);
}

/* Folders that differ from tiny-sd/tokenizer only in their config files
 * (added tokens of every flavour, SD 1.x/2.x style configs, legacy
 * added_tokens.json): the files are written beside links to its vocab. */
TEST(tokenizer_config_folders) {
    cJSON *cases = load_cases();
    REQUIRE(cases);
    const cJSON *folders = cJSON_GetObjectItemCaseSensitive(cases, "config_folders");
    REQUIRE(cJSON_GetArraySize(folders) >= 4);
    const cJSON *folder;
    int checked = 0;
    cJSON_ArrayForEach(folder, folders) {
        const char *dir = test_tmpdir();
        char src[PATH_MAX], *dst;
        const char *links[2] = {"vocab.json", "merges.txt"};
        for (int i = 0; i < 2; i++) {
            char rel[64];
            snprintf(rel, sizeof rel, SD_TOK "/%s", links[i]);
            REQUIRE(realpath(test_data(rel), src));
            dst = sdc_path_join(dir, links[i]);
            REQUIRE(symlink(src, dst) == 0);
            free(dst);
        }
        const cJSON *file;
        sdc_error err;
        cJSON_ArrayForEach(file, cJSON_GetObjectItemCaseSensitive(folder, "files")) {
            char *text = cJSON_Print(file);
            dst = sdc_path_join(dir, file->string);
            REQUIRE_OK(sdc_write_file_atomic(dst, text, strlen(text), &err), &err);
            free(text);
            free(dst);
        }
        sdc_clip_tokenizer *t = NULL;
        REQUIRE_OK(sdc_clip_tokenizer_load(dir, &t, &err), &err);
        const cJSON *c;
        int i = 0;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(folder, "cases")) {
            char label[128];
            snprintf(label, sizeof label, "%s case %d", folder->string, i++);
            checked += check_ids(t, cJSON_GetObjectItemCaseSensitive(c, "prompt")->valuestring,
                                 cJSON_GetObjectItemCaseSensitive(c, "ids"),
                                 (int)cJSON_GetObjectItemCaseSensitive(c, "n_real")->valuedouble, label);
        }
        sdc_clip_tokenizer_free(t);
    }
    CHECK_EQ_INT(checked, 24);
    cJSON_Delete(cases);
}

TEST(tokenizer_truncation_keeps_eos_and_counts) {
    sdc_clip_tokenizer *t = default_tok(NULL);
    REQUIRE(t);
    int32_t ids[77];
    int n = 0;
    sdc_error err;
    char long_prompt[4000] = "";
    for (int i = 0; i < 300; i++) strcat(long_prompt, "cat ");
    REQUIRE_OK(sdc_clip_tokenize(t, long_prompt, ids, &n, &err), &err);
    CHECK_EQ_INT(n, 77);
    CHECK_EQ_INT(ids[0], 49406);
    CHECK_EQ_INT(ids[76], 49407);
    CHECK_EQ_INT(ids[75], ids[1]);
    REQUIRE_OK(sdc_clip_tokenize(t, "", ids, &n, &err), &err);
    CHECK_EQ_INT(n, 2);
    REQUIRE_OK(sdc_clip_tokenize(t, NULL, ids, &n, &err), &err);
    CHECK_EQ_INT(n, 2);
    /* a megabyte-long single word: BPE is O(n log n), so this is quick */
    size_t big = 1u << 20;
    char *word = malloc(big + 1);
    REQUIRE(word);
    for (size_t i = 0; i < big; i++) word[i] = (char)('a' + (i * 7 + i / 13) % 26);
    word[big] = '\0';
    REQUIRE_OK(sdc_clip_tokenize(t, word, ids, &n, &err), &err);
    CHECK_EQ_INT(n, 77);
    CHECK_EQ_INT(ids[76], 49407);
    /* every byte value, including invalid UTF-8, is tokenized without harm */
    unsigned char all[256];
    for (int i = 0; i < 255; i++) all[i] = (unsigned char)(i + 1);
    all[255] = 0;
    REQUIRE_OK(sdc_clip_tokenize(t, (const char *)all, ids, &n, &err), &err);
    CHECK(n > 2 && n <= 77);
    free(word);
    sdc_clip_tokenizer_free(t);
}

/* ---- broken files ------------------------------------------------------------ */

static void write_text(const char *dir, const char *name, const char *text) {
    char *p = sdc_path_join(dir, name);
    sdc_error err;
    if (sdc_write_file_atomic(p, text, strlen(text), &err) != SDC_OK) sdc_test_fail(__FILE__, __LINE__, "%s", err.msg);
    free(p);
}

/* Loading dir must fail with a message holding the file name and `reason`. */
static void expect_load_error(const char *dir, const char *file, const char *reason) {
    sdc_clip_tokenizer *t = NULL;
    sdc_error err = {0};
    sdc_status s = sdc_clip_tokenizer_load(dir, &t, &err);
    CHECK_MSG(s != SDC_OK && t == NULL, "%s loaded although broken", dir);
    CHECK_MSG(strstr(err.msg, file) != NULL, "error \"%s\" does not name %s", err.msg, file);
    CHECK_MSG(strstr(err.msg, reason) != NULL, "error \"%s\" does not say \"%s\"", err.msg, reason);
    CHECK_MSG(strchr(err.msg, '\n') == NULL, "error \"%s\" is not one line", err.msg);
    sdc_clip_tokenizer_free(t);
}

/* A small consistent vocabulary: a b c ab abc, with "</w>" forms. */
#define MINI_VOCAB "{\"a\":0,\"b\":1,\"c\":2,\"a</w>\":3,\"b</w>\":4,\"c</w>\":5,\"ab\":6,\"abc</w>\":7," \
                   "\"<|startoftext|>\":8,\"<|endoftext|>\":9}"

TEST(tokenizer_bad_files) {
    const char *d;
    char path[600];

    expect_load_error("/nonexistent/tok", "/nonexistent/tok", "no such tokenizer folder");

    d = test_tmpdir();
    expect_load_error(d, d, "no tokenizer.json or vocab.json");

    d = test_tmpdir();
    write_text(d, "vocab.json", MINI_VOCAB);
    expect_load_error(d, "merges.txt", "no merges");

    d = test_tmpdir();
    write_text(d, "vocab.json", "{\"a\": 0, \"b\": ");
    write_text(d, "merges.txt", "#version: 0.2\na b\n");
    expect_load_error(d, "vocab.json", "invalid JSON");

    d = test_tmpdir();
    write_text(d, "vocab.json", "{\"a\": \"zero\"}");
    write_text(d, "merges.txt", "a b\n");
    expect_load_error(d, "vocab.json", "integer id");

    d = test_tmpdir();
    write_text(d, "vocab.json", MINI_VOCAB);
    write_text(d, "merges.txt", "#version: 0.2\na b\nabc\n");
    expect_load_error(d, "merges.txt", "line 3: a merge must be two tokens");

    d = test_tmpdir();
    write_text(d, "vocab.json", MINI_VOCAB);
    write_text(d, "merges.txt", "#version: 0.2\na b\nb c\n");
    expect_load_error(d, "merges.txt", "merge result \"bc\" is not in the vocabulary");

    d = test_tmpdir();
    write_text(d, "vocab.json", MINI_VOCAB);
    write_text(d, "merges.txt", "#version: 0.2\na z\n");
    expect_load_error(d, "merges.txt", "merge token \"z\" is not in the vocabulary");

    d = test_tmpdir();
    write_text(d, "vocab.json", MINI_VOCAB);
    write_text(d, "merges.txt", "#version: 0.2\n");
    expect_load_error(d, "merges.txt", "no merges");

    d = test_tmpdir();
    write_text(d, "tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": " MINI_VOCAB "}}");
    expect_load_error(d, "tokenizer.json", "no \"model.merges\"");

    d = test_tmpdir();
    write_text(d, "tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": " MINI_VOCAB ", \"merges\": [\"a b\", [\"ab\"]]}}");
    expect_load_error(d, "tokenizer.json", "model.merges[1]");

    d = test_tmpdir();
    write_text(d, "tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": " MINI_VOCAB ", \"merges\": [[\"a\", \"b\"], \"b c\"]}}");
    expect_load_error(d, "tokenizer.json", "merge result \"bc\" is not in the vocabulary");

    d = test_tmpdir();
    write_text(d, "tokenizer.json", "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}");
    expect_load_error(d, "tokenizer.json", "not BPE");

    d = test_tmpdir();
    write_text(d, "tokenizer.json", "[1, 2]");
    expect_load_error(d, "tokenizer.json", "JSON object");

    d = test_tmpdir();
    write_text(d, "vocab.json", MINI_VOCAB);
    write_text(d, "merges.txt", "a b\n");
    write_text(d, "tokenizer_config.json", "{\"pad_token\": \"!\"}");
    expect_load_error(d, "tokenizer_config.json", "pad_token \"!\" is not in the vocabulary");

    d = test_tmpdir();
    write_text(d, "tokenizer.json", "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}}");
    expect_load_error(d, d, "bos_token \"<|startoftext|>\" is not in the vocabulary");

    d = test_tmpdir();
    write_text(d, "vocab.json", MINI_VOCAB);
    write_text(d, "merges.txt", "a b\n");
    write_text(d, "tokenizer_config.json", "{\"pad_token\": {\"content\": \"\"}}");
    expect_load_error(d, "tokenizer_config.json", "pad_token \"\" is not in the vocabulary");

    d = test_tmpdir();
    write_text(d, "vocab.json", MINI_VOCAB);
    write_text(d, "merges.txt", "a b\n");
    write_text(d, "tokenizer_config.json", "{\"model_max_length\": 1}");
    expect_load_error(d, "tokenizer_config.json", "model_max_length");

    d = test_tmpdir();
    write_text(d, "vocab.json", MINI_VOCAB);
    write_text(d, "merges.txt", "a b\n");
    write_text(d, "tokenizer_config.json", "{\"bos_token\": 5}");
    expect_load_error(d, "tokenizer_config.json", "bos_token");

    /* the mini vocabulary itself works, with CRLF merges and a header */
    d = test_tmpdir();
    write_text(d, "vocab.json", MINI_VOCAB);
    write_text(d, "merges.txt", "#version: 0.2\r\na b\r\nab c</w>\r\n");
    write_text(d, "tokenizer_config.json", "{\"model_max_length\": 8, \"pad_token\": {\"content\": \"<|endoftext|>\"}}");
    sdc_clip_tokenizer *t = NULL;
    sdc_error err;
    REQUIRE_OK(sdc_clip_tokenizer_load(d, &t, &err), &err);
    int32_t ids[8];
    int n;
    REQUIRE_OK(sdc_clip_tokenize(t, "ABC cab", ids, &n, &err), &err);
    /* "abc" -> abc</w>; "cab" -> c a b</w> ("a b</w>" is no merge) */
    int32_t want[8] = {8, 7, 2, 0, 4, 9, 9, 9};
    for (int i = 0; i < 8; i++) CHECK_EQ_INT(ids[i], want[i]);
    CHECK_EQ_INT(n, 6);
    sdc_clip_tokenizer_free(t);
    snprintf(path, sizeof path, "%s/vocab.json", d);
    t = (sdc_clip_tokenizer *)1;
    CHECK(sdc_clip_tokenizer_load(path, &t, &err) != SDC_OK && t == NULL);
    CHECK(strstr(err.msg, "not a tokenizer folder") != NULL);
}

/* ---- sdc tokenize ------------------------------------------------------------- */

/* 'prompt' for the shell */
static void shell_quote(char *out, size_t cap, const char *s) {
    size_t k = 0;
    out[k++] = '\'';
    for (; *s && k + 5 < cap; s++) {
        if (*s == '\'') {
            memcpy(out + k, "'\\''", 4);
            k += 4;
        } else {
            out[k++] = *s;
        }
    }
    out[k++] = '\'';
    out[k] = '\0';
}

static int list_equals(const cJSON *got, const cJSON *want) {
    if (!cJSON_IsArray(got) || cJSON_GetArraySize(got) != cJSON_GetArraySize(want)) return 0;
    for (const cJSON *a = got->child, *b = want->child; a && b; a = a->next, b = b->next)
        if (a->valuedouble != b->valuedouble) return 0;
    return 1;
}

TEST(tokenizer_cli_json_matches_goldens) {
    cJSON *cases = load_cases();
    REQUIRE(cases);
    const cJSON *xl = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(cases, "golden"), "tiny-sdxl");
    const cJSON *prompts = cJSON_GetObjectItemCaseSensitive(xl, "prompts");
    static char out[65536];
    char args[8192], q[4096];
    for (int i = 0; i < cJSON_GetArraySize(prompts); i++) {
        shell_quote(q, sizeof q, cJSON_GetArrayItem(prompts, i)->valuestring);
        snprintf(args, sizeof args, "tokenize --model %s --prompt %s --json", test_data("tiny-sdxl"), q);
        CHECK_EQ_INT(run_sdc(args, out, sizeof out), 0);
        cJSON *j = cJSON_Parse(out);
        CHECK_MSG(j && cJSON_IsObject(j) && cJSON_GetArraySize(j) == 2, "prompt %d: not one JSON object: %.200s", i, out);
        CHECK_MSG(list_equals(cJSON_GetObjectItemCaseSensitive(j, "tokenizer"),
                              cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(xl, "tokenizer"), i)),
                  "prompt %d: tokenizer differs from the golden", i);
        CHECK_MSG(list_equals(cJSON_GetObjectItemCaseSensitive(j, "tokenizer_2"),
                              cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(xl, "tokenizer_2"), i)),
                  "prompt %d: tokenizer_2 differs from the golden", i);
        cJSON_Delete(j);
    }
    cJSON_Delete(cases);
}

TEST(tokenizer_cli_plain_and_errors) {
    static char out[65536];
    char args[2048];
    snprintf(args, sizeof args, "tokenize --model %s --prompt 'a photograph of an astronaut riding a horse'",
             test_data("tiny-sd"));
    CHECK_EQ_INT(run_sdc(args, out, sizeof out), 0);
    CHECK(strncmp(out, "tokenizer: 49406 320 8853 539 550 18376 6765 320 4558 49407 49407 ", 66) == 0);
    CHECK(strchr(out, '\n') == out + strlen(out) - 1); /* one line: tiny-sd has one tokenizer */

    /* a missing folder: non-zero exit and one line naming it */
    CHECK(run_sdc("tokenize --model /nonexistent/model-dir --prompt cat", out, sizeof out) != 0);
    CHECK(strncmp(out, "sdc: error: ", 12) == 0);
    CHECK(strstr(out, "/nonexistent/model-dir") != NULL);
    CHECK(strchr(out, '\n') == out + strlen(out) - 1);

    /* a folder without tokenizers */
    snprintf(args, sizeof args, "tokenize --model %s --prompt cat", test_data("tiny-sd/unet"));
    CHECK(run_sdc(args, out, sizeof out) == 1);
    CHECK(strncmp(out, "sdc: error: ", 12) == 0 && strstr(out, "tiny-sd/unet") != NULL);

    CHECK_EQ_INT(run_sdc("tokenize --prompt cat", out, sizeof out), 2);
    CHECK(strncmp(out, "sdc: error: ", 12) == 0 && strstr(out, "--model") != NULL);
    CHECK_EQ_INT(run_sdc("tokenize --model x", out, sizeof out), 2);
    CHECK(strstr(out, "--prompt") != NULL);
    CHECK_EQ_INT(run_sdc("tokenize --model x --prompt y --bogus", out, sizeof out), 2);
    CHECK_EQ_INT(run_sdc("tokenize --help", out, sizeof out), 0);
    CHECK(strstr(out, "--model") && strstr(out, "--prompt") && strstr(out, "--json") && strstr(out, "default"));
}

/* Single-file checkpoints: the family found in the file's keys picks the
 * built-in tokenizers (SD 2.x and SDXL's second pad with "!"). */
TEST(tokenizer_cli_single_file) {
    static char out[65536];
    char args[2048];
    const char *files[3] = {"tiny-sd", "single/tiny-sd2.ckpt", "tiny-sdxl"}; /* tests/single_recipe.h, tests/data */
    const char *want[3] = {"tokenizer: 49406 2368 49407 49407", "tokenizer: 49406 2368 49407 0 0",
                           "tokenizer: 49406 2368 49407 49407"};
    for (int f = 0; f < 3; f++) {
        const char *path = f == 1 ? test_data(files[f]) : test_single_file(files[f]);
        snprintf(args, sizeof args, "tokenize --model %s --prompt cat", path);
        CHECK_EQ_INT(run_sdc(args, out, sizeof out), 0);
        CHECK_MSG(strncmp(out, want[f], strlen(want[f])) == 0, "%s: %.80s", files[f], out);
        const char *second = strstr(out, "tokenizer_2: ");
        CHECK_MSG(f == 2 ? second && strncmp(second, "tokenizer_2: 49406 2368 49407 0 0", 33) == 0 : !second,
                  "%s: tokenizer_2 line: %.80s", files[f], second ? second : "(none)");
    }
    /* a file that holds no model is one error line naming it */
    snprintf(args, sizeof args, "tokenize --model %s --prompt cat", test_data("tiny-sd-lora/pytorch_lora_weights.safetensors"));
    CHECK_EQ_INT(run_sdc(args, out, sizeof out), 1);
    CHECK(strncmp(out, "sdc: error: ", 12) == 0 && strstr(out, "pytorch_lora_weights.safetensors") != NULL);
}

/* Every Unicode scalar value through the reference, when a sweep file from
 * `tools/make_tokenizer_cases.py --sweep FILE` is named by
 * SDC_TOKENIZER_SWEEP (45 MB, too large for tests/data). With tokenizers
 * 0.23, 1,107,031 of the 1,112,063 match; the other 5032 are letters that
 * Unicode 15.1/16.0 added (CJK Ext. I, Egyptian hieroglyphs, Garay,
 * Todhri, Latin U+A7CB..), which utf8proc 2.8 (Unicode 15.0) does not know:
 * they are counted apart, so only a regression fails this test. */
TEST(tokenizer_unicode_sweep) {
    const char *path = getenv("SDC_TOKENIZER_SWEEP");
    if (!path) SKIP("set SDC_TOKENIZER_SWEEP to a file from tools/make_tokenizer_cases.py --sweep");
    FILE *f = fopen(path, "r");
    REQUIRE(f);
    sdc_clip_tokenizer *t = load_tok(SD_TOK);
    REQUIRE(t);
    static char line[8192];
    int32_t ids[77];
    long checked = 0, bad = 0, newer = 0;
    while (fgets(line, sizeof line, f)) {
        char *p = line;
        unsigned long cp = strtoul(p, &p, 16);
        /* the template of make_sweep: c + " a" + c + "1" + c + c + "." */
        char c[5] = {0}, prompt[32];
        c[utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)c)] = '\0';
        snprintf(prompt, sizeof prompt, "%s a%s1%s%s.", c, c, c, c);
        int n;
        sdc_error err;
        if (sdc_clip_tokenize(t, prompt, ids, &n, &err) != SDC_OK) {
            if (bad++ < 20) CHECK_MSG(0, "U+%04lX: %s", cp, err.msg);
            continue;
        }
        long want[128];
        int nw = 0;
        for (char *e; nw < 128; p = e) {
            want[nw] = strtol(p, &e, 10);
            if (e == p) break;
            nw++;
        }
        int same = nw == n;
        for (int k = 0; same && k < n; k++) same = ids[k] == want[k];
        /* utf8proc 2.8 knows Unicode 15.0; what later versions assigned is
         * unassigned (Cn) to it, so those code points are counted apart */
        if (!same && utf8proc_category((utf8proc_int32_t)cp) == UTF8PROC_CATEGORY_CN) newer++;
        else if (!same && bad++ < 20) CHECK_MSG(0, "U+%04lX differs from the reference: %s", cp, line);
        checked++;
    }
    fclose(f);
    printf("  %ld code points checked: %ld differ, and %ld assigned after Unicode 15.0 differ\n", checked, bad, newer);
    CHECK_EQ_INT(bad, 0);
    sdc_clip_tokenizer_free(t);
}
