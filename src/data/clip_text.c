#include "data/clip_text.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

size_t clip_utf8_decode(const unsigned char *s, size_t n, uint32_t *out) {
    size_t i = 0, k = 0;
    while (i < n) {
        unsigned b = s[i];
        if (b < 0x80) {
            out[k++] = b;
            i++;
            continue;
        }
        /* lead byte: number of continuation bytes and the allowed range of
         * the first one (Table 3-7 of the Unicode standard excludes
         * overlongs, surrogates and values above U+10FFFF this way) */
        int need;
        unsigned lo = 0x80, hi = 0xBF;
        uint32_t c;
        if (b >= 0xC2 && b <= 0xDF) {
            need = 1;
            c = b & 0x1F;
        } else if (b >= 0xE0 && b <= 0xEF) {
            need = 2;
            c = b & 0x0F;
            if (b == 0xE0) lo = 0xA0;
            if (b == 0xED) hi = 0x9F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            need = 3;
            c = b & 0x07;
            if (b == 0xF0) lo = 0x90;
            if (b == 0xF4) hi = 0x8F;
        } else {
            out[k++] = 0xFFFD; /* a stray continuation byte, C0, C1, F5..FF */
            i++;
            continue;
        }
        size_t j = i + 1;
        int ok = 1;
        for (int m = 0; m < need; m++, j++) {
            if (j >= n || s[j] < lo || s[j] > hi) {
                ok = 0;
                break;
            }
            c = (c << 6) | (s[j] & 0x3F);
            lo = 0x80;
            hi = 0xBF;
        }
        /* on failure the bytes consumed so far form one maximal subpart */
        out[k++] = ok ? c : 0xFFFD;
        i = j;
    }
    return k;
}

size_t clip_utf8_encode(uint32_t c, unsigned char *o) {
    if (c < 0x80) {
        o[0] = (unsigned char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (unsigned char)(0xC0 | (c >> 6));
        o[1] = (unsigned char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (c >> 12));
        o[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (c >> 18));
    o[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

int clip_is_space(uint32_t c) {
    /* the White_Space property (PropList.txt); it is not a general category,
     * so it is listed here: U+180E left it in Unicode 6.3, and U+001C..U+001F
     * (which Python's str.isspace accepts) were never in it */
    if (c >= 0x09 && c <= 0x0D) return 1;
    if (c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680) return 1;
    if (c >= 0x2000 && c <= 0x200A) return 1;
    return c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

int clip_is_letter(uint32_t c) {
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}

int clip_is_number(uint32_t c) {
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO;
}

int clip_is_word(uint32_t c) {
    if (c == 0x200C || c == 0x200D) return 1;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_ME) || k == UTF8PROC_CATEGORY_ND ||
           k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_PC;
}

sdc_status clip_normalize(const uint32_t *in, size_t n, uint32_t **out, size_t *out_n, sdc_error *err) {
    *out = NULL;
    *out_n = 0;
    if (n > ((size_t)1 << 28)) return sdc_fail(err, SDC_ELIMIT, "prompt: %zu characters is too long", n);
    unsigned char *u8 = malloc(4 * n + 1);
    if (!u8) return sdc_fail(err, SDC_ENOMEM, "prompt: out of memory");
    size_t len = 0;
    for (size_t i = 0; i < n; i++) len += clip_utf8_encode(in[i], u8 + len);
    u8[len] = 0;
    /* NFC: the flags of utf8proc_NFC, with an explicit length */
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t m = utf8proc_map(u8, (utf8proc_ssize_t)len, &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    free(u8);
    if (m < 0) return sdc_fail(err, SDC_EINVAL, "prompt: Unicode normalization failed: %s", utf8proc_errmsg(m));
    /* lowercase can double the length (U+0130), never more */
    uint32_t *cps = malloc(2 * ((size_t)m + 1) * sizeof *cps);
    uint32_t *dec = malloc(((size_t)m + 1) * sizeof *dec);
    if (!cps || !dec) {
        free(cps);
        free(dec);
        free(nfc);
        return sdc_fail(err, SDC_ENOMEM, "prompt: out of memory");
    }
    size_t nd = clip_utf8_decode(nfc, (size_t)m, dec);
    free(nfc);
    size_t k = 0;
    for (size_t i = 0; i < nd; i++) {
        uint32_t c = dec[i];
        if (clip_is_space(c)) {
            if (i == 0 || !clip_is_space(dec[i - 1])) cps[k++] = ' ';
            continue;
        }
        if (c == 0x130) {
            /* the one unconditional multi-character lowercase mapping
             * (SpecialCasing.txt); utf8proc_tolower gives the simple one */
            cps[k++] = 'i';
            cps[k++] = 0x307;
            continue;
        }
        cps[k++] = (uint32_t)utf8proc_tolower((utf8proc_int32_t)c);
    }
    free(dec);
    *out = cps;
    *out_n = k;
    return SDC_OK;
}

static const uint32_t k_sot[] = {'<', '|', 's', 't', 'a', 'r', 't', 'o', 'f', 't', 'e', 'x', 't', '|', '>'};
static const uint32_t k_eot[] = {'<', '|', 'e', 'n', 'd', 'o', 'f', 't', 'e', 'x', 't', '|', '>'};
#define NSOT (sizeof k_sot / sizeof k_sot[0])
#define NEOT (sizeof k_eot / sizeof k_eot[0])

static int starts_with(const uint32_t *s, size_t n, const uint32_t *p, size_t np) {
    return n >= np && memcmp(s, p, np * sizeof *p) == 0;
}

int clip_is_special_literal(const uint32_t *s, size_t len) {
    return (len == NSOT && starts_with(s, len, k_sot, NSOT)) || (len == NEOT && starts_with(s, len, k_eot, NEOT));
}

size_t clip_pretoken_next(const uint32_t *s, size_t n, size_t *pos, size_t *start) {
    size_t i = *pos;
    /* whitespace is the only thing no alternative matches */
    while (i < n && clip_is_space(s[i])) i++;
    if (i >= n) {
        *pos = n;
        return 0;
    }
    size_t len;
    /* the alternatives in the regex's order: the first that matches here wins */
    if (starts_with(s + i, n - i, k_sot, NSOT)) {
        len = NSOT;
    } else if (starts_with(s + i, n - i, k_eot, NEOT)) {
        len = NEOT;
    } else if (s[i] == '\'' && i + 1 < n && (s[i + 1] == 's' || s[i + 1] == 't' || s[i + 1] == 'm' || s[i + 1] == 'd')) {
        len = 2;
    } else if (s[i] == '\'' && i + 2 < n &&
               ((s[i + 1] == 'r' && s[i + 2] == 'e') || (s[i + 1] == 'v' && s[i + 2] == 'e') ||
                (s[i + 1] == 'l' && s[i + 2] == 'l'))) {
        len = 3;
    } else if (clip_is_letter(s[i])) {
        len = 1;
        while (i + len < n && clip_is_letter(s[i + len])) len++;
    } else if (clip_is_number(s[i])) {
        len = 1;
    } else {
        len = 1;
        while (i + len < n && !clip_is_space(s[i + len]) && !clip_is_letter(s[i + len]) &&
               !clip_is_number(s[i + len]))
            len++;
    }
    *start = i;
    *pos = i + len;
    return len;
}

void clip_bytes_to_unicode(uint32_t table[256], uint8_t order[256]) {
    /* printable bytes map to themselves and come first, in byte order; the
     * rest (controls, space, DEL, NBSP, soft hyphen...) map to U+0100 + k */
    int k = 0, extra = 0;
    for (int b = 0; b < 256; b++)
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) {
            table[b] = (uint32_t)b;
            order[k++] = (uint8_t)b;
        }
    for (int b = 0; b < 256; b++)
        if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))) {
            table[b] = 256u + (uint32_t)extra++;
            order[k++] = (uint8_t)b;
        }
}
