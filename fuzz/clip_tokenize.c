/* The CLIP tokenizer on arbitrary bytes (invalid UTF-8 included): the
 * embedded default vocabulary with both pad tokens SD uses ("<|endoftext|>"
 * and "!"), and a truncation length taken from the input so that short and
 * long outputs are both exercised. Every id must be a vocabulary id. */
#include "data/clip_tokenizer.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    static sdc_clip_tokenizer *tok[2];
    sdc_error err;
    if (!tok[0]) {
        fuzz_dir();
        if (sdc_clip_tokenizer_default(NULL, &tok[0], &err) != SDC_OK ||
            sdc_clip_tokenizer_default("!", &tok[1], &err) != SDC_OK) {
            fprintf(stderr, "default tokenizer: %s\n", err.msg);
            abort();
        }
    }
    if (n == 0) return 0;
    const sdc_clip_tokenizer *t = tok[data[0] & 1];
    char *text = fuzz_cstr(data + 1, n - 1);
    int L = sdc_clip_tokenizer_max_length(t);
    int32_t *ids = malloc((size_t)L * sizeof *ids);
    int n_real = 0;
    if (!ids) abort();
    if (sdc_clip_tokenize(t, text, ids, &n_real, &err) == SDC_OK) {
        if (n_real < 2 || n_real > L) abort();
        for (int i = 0; i < L; i++)
            if (ids[i] < 0 || ids[i] >= sdc_clip_tokenizer_vocab_size(t)) abort();
    }
    free(ids);
    free(text);
    return 0;
}
