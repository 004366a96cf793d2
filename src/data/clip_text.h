/* Unicode text handling for the CLIP tokenizer (internal to src/data/clip_*):
 * UTF-8 decoding, the reference normalizer (NFC, \s+ -> " ", lowercase) and
 * the CLIP pre-tokenizer regex, on arrays of code points. Character classes
 * come from utf8proc's Unicode tables, never from ASCII tests. */
#ifndef SDC_DATA_CLIP_TEXT_H
#define SDC_DATA_CLIP_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* Decodes n bytes of UTF-8 into out (room for n code points); returns the
 * count. Each maximal invalid subpart (Unicode 3.9, "U+FFFD substitution of
 * maximal subparts", which is what Python's errors="replace" does) becomes
 * one U+FFFD. */
size_t clip_utf8_decode(const unsigned char *s, size_t n, uint32_t *out);
/* Writes the UTF-8 form of c (a valid scalar value) to out; returns 1..4. */
size_t clip_utf8_encode(uint32_t c, unsigned char *out);

/* White_Space (regex \s in the reference's Oniguruma and Rust regex). */
int clip_is_space(uint32_t c);
/* \p{L} and \p{N}: the general categories L* and N*. */
int clip_is_letter(uint32_t c);
int clip_is_number(uint32_t c);
/* Rust regex's \w (for single_word added tokens): letters, marks, Nd, Nl,
 * Pc and the joiners; an approximation of Alphabetic that differs only on a
 * few symbols with the Other_Alphabetic property. */
int clip_is_word(uint32_t c);

/* The reference normalizer on in[0..n): NFC, each run of whitespace to one
 * space, then per-character full lowercase (no final-sigma context, as
 * Rust's char::to_lowercase). *out is malloc'd (the caller frees). */
sdc_status clip_normalize(const uint32_t *in, size_t n, uint32_t **out, size_t *out_n, sdc_error *err);

/* Finds the next match of the CLIP split regex
 *   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * in s[*pos..n). Returns 0 when there is none; else sets *start and returns
 * the match length, and advances *pos past it. */
size_t clip_pretoken_next(const uint32_t *s, size_t n, size_t *pos, size_t *start);
/* True if s[0..len) is "<|startoftext|>" or "<|endoftext|>": the byte-level
 * pre-tokenizer's GPT-2 regex then splits it into "<|", the word, "|>". */
int clip_is_special_literal(const uint32_t *s, size_t len);

/* GPT-2's bytes_to_unicode: byte b is shown as the code point table[b];
 * order[i] is the byte of the i-th base vocabulary entry. */
void clip_bytes_to_unicode(uint32_t table[256], uint8_t order[256]);

/* The gzip'd standard CLIP merges linked into the binary
 * (clip_merges_embed.c): 48894 lines "a b", no header. */
void clip_embedded_merges_gz(const unsigned char **data, size_t *size);

#endif
