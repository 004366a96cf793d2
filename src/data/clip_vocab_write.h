/* The standard CLIP tokenizer files (vocab.json, merges.txt) rebuilt from the
 * merges embedded in the binary, byte for byte as the public SD repositories
 * ship them, so `sdc init` can write a tokenizer folder without a download. */
#ifndef SDC_DATA_CLIP_VOCAB_WRITE_H
#define SDC_DATA_CLIP_VOCAB_WRITE_H

#include <stddef.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The two texts, malloc'd (the caller frees both):
 *   vocab.json  {"!": 0, "\"": 1, ...}  as Python's json.dumps(ensure_ascii=False)
 *               writes it (no trailing newline): the 256 byte characters in
 *               bytes_to_unicode order (ids 0..255), the same with "</w>"
 *               (256..511), each merge's concatenation in merge order
 *               (512..49405), "<|startoftext|>" 49406, "<|endoftext|>" 49407.
 *   merges.txt  "#version: 0.2\n" then one "a b\n" per merge. */
sdc_status sdc_clip_vocab_texts(char **vocab_json, size_t *vocab_len, char **merges_txt, size_t *merges_len,
                                sdc_error *err);

/* Writes dir/vocab.json and dir/merges.txt (each atomically); dir must exist. */
sdc_status sdc_clip_vocab_write(const char *dir, sdc_error *err);

#ifdef __cplusplus
}
#endif

#endif
