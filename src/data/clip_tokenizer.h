/* The CLIP BPE tokenizer, with the exact output of the reference stack
 * (diffusers + transformers 5.x, whose CLIPTokenizer is the `tokenizers`
 * pipeline: added tokens, NFC, \s+ -> " ", lowercase, the CLIP split regex,
 * byte-level mapping, BPE with "</w>", <bos> ids <eos>, truncation keeping
 * <eos>, padding to model_max_length).
 *
 * A tokenizer is read-only after loading: sdc_clip_tokenize may be called
 * from several threads at once on the same tokenizer. */
#ifndef SDC_DATA_CLIP_TOKENIZER_H
#define SDC_DATA_CLIP_TOKENIZER_H

#include <stdint.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sdc_clip_tokenizer sdc_clip_tokenizer;

/* Limits on tokenizer files (SDC_ELIMIT beyond them), checked before the
 * tables are allocated. CLIP has 49408 tokens and 48894 merges, the largest
 * BPE vocabularies a few hundred thousand; tokens are tens of bytes. The
 * JSON files are also bounded by SDC_JSON_MAX_FILE (io/json.h). Added tokens
 * are searched linearly at every prompt position, hence their own cap. */
#define SDC_CLIP_MAX_FILE (64u << 20)  /* merges.txt */
#define SDC_CLIP_MAX_TOKENS (1u << 22) /* vocabulary entries; merges */
#define SDC_CLIP_MAX_TOKEN_BYTES 1024  /* one vocabulary or added token */
#define SDC_CLIP_MAX_ADDED 10000       /* added and special tokens listed */

/* Loads a diffusers `tokenizer` folder: tokenizer.json (model.vocab +
 * model.merges) if present, else vocab.json + merges.txt; then
 * tokenizer_config.json / special_tokens_map.json for bos/eos/pad/unk,
 * added tokens and model_max_length (77 when absent). */
sdc_status sdc_clip_tokenizer_load(const char *dir, sdc_clip_tokenizer **out, sdc_error *err);

/* The standard CLIP vocabulary (49408 tokens) from the merges embedded in
 * the binary, for single-file checkpoints that ship no tokenizer files.
 * pad_token: "<|endoftext|>" (SD 1.x, SDXL's first tokenizer; also NULL)
 * or "!" (SD 2.x, SDXL's tokenizer_2); any other vocabulary token works. */
sdc_status sdc_clip_tokenizer_default(const char *pad_token, sdc_clip_tokenizer **out, sdc_error *err);

/* Tokenizes a NUL-terminated UTF-8 prompt into ids[0..max_length):
 * <bos> tokens <eos> then padding; longer prompts are truncated with <eos>
 * kept last. *n_real (may be NULL) receives the count before padding.
 * Invalid UTF-8 is decoded as U+FFFD per maximal invalid subpart (what
 * Python's bytes.decode("utf-8", "replace") gives), since a prompt that
 * reaches the reference is always a valid str. */
sdc_status sdc_clip_tokenize(const sdc_clip_tokenizer *t, const char *text, int32_t *ids, int *n_real,
                             sdc_error *err);

int sdc_clip_tokenizer_max_length(const sdc_clip_tokenizer *t);
/* Number of entries in the vocabulary (added tokens outside it excluded). */
int sdc_clip_tokenizer_vocab_size(const sdc_clip_tokenizer *t);
/* Id of a token (vocabulary or added token), or -1. */
int32_t sdc_clip_tokenizer_token_id(const sdc_clip_tokenizer *t, const char *token);
int32_t sdc_clip_tokenizer_bos_id(const sdc_clip_tokenizer *t);
int32_t sdc_clip_tokenizer_eos_id(const sdc_clip_tokenizer *t);
int32_t sdc_clip_tokenizer_pad_id(const sdc_clip_tokenizer *t);
void sdc_clip_tokenizer_free(sdc_clip_tokenizer *t);

#ifdef __cplusplus
}
#endif

#endif
