/* Tokenizer folders (sdc_clip_tokenizer_load): the input's first byte picks
 * the layout - even: tokenizer.json, odd: vocab.json + merges.txt - and the
 * rest carries, separated by "\n@@\n", that file (or the two), then
 * tokenizer_config.json, special_tokens_map.json and added_tokens.json
 * (absent when the input has fewer parts). A tokenizer that loads must
 * tokenize a few fixed prompts. */
#include "data/clip_tokenizer.h"
#include "fuzz_util.h"

#define MAXP 5

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    static int made;
    if (!made) {
        mkdir(fuzz_path("tok"), 0755);
        made = 1;
    }
    if (n == 0) return 0;
    int json = !(data[0] & 1);
    const char *names_json[MAXP] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                    "added_tokens.json", NULL};
    const char *names_vm[MAXP] = {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
                                  "added_tokens.json"};
    const char *const *names = json ? names_json : names_vm;
    const int np = json ? 4 : 5;
    const uint8_t *part[MAXP];
    size_t len[MAXP];
    int k = fuzz_split(data + 1, n - 1, part, len, np);
    const char *all[] = {"tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                         "special_tokens_map.json", "added_tokens.json"};
    char rel[64];
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        snprintf(rel, sizeof rel, "tok/%s", all[i]);
        unlink(fuzz_path(rel));
    }
    for (int i = 0; i < k; i++) {
        snprintf(rel, sizeof rel, "tok/%s", names[i]);
        fuzz_write(fuzz_path(rel), part[i], len[i]);
    }
    sdc_clip_tokenizer *t;
    sdc_error err;
    if (sdc_clip_tokenizer_load(fuzz_path("tok"), &t, &err) != SDC_OK) return 0;
    static const char *prompts[] = {"", "a photo of a cat!!", "<|startoftext|>x<|endoftext|> \xff\xfe caf\xc3\xa9",
                                    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa bbbb"};
    int L = sdc_clip_tokenizer_max_length(t);
    int32_t *ids = malloc((size_t)L * sizeof *ids);
    if (!ids) abort();
    for (size_t i = 0; i < sizeof prompts / sizeof prompts[0]; i++) (void)sdc_clip_tokenize(t, prompts[i], ids, NULL, &err);
    (void)sdc_clip_tokenizer_token_id(t, "a");
    free(ids);
    sdc_clip_tokenizer_free(t);
    return 0;
}
