/* PNG read/write over libpng. libpng reports errors by longjmp, so each
 * libpng call sequence lives in a small function that holds the setjmp and
 * keeps everything it allocates in a struct owned by its caller (locals of
 * the function that called setjmp are indeterminate after the jump). */
#include "data/png.h"

#include "data/image.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/fs.h"
#include "core/log.h"

typedef struct png_io {
    const char *path;
    char msg[256]; /* libpng's error message */
    /* writing: the encoded file grows here, then is written atomically */
    unsigned char *out;
    size_t out_len, out_cap;
    /* reading: the whole file */
    const unsigned char *in;
    size_t in_len, in_pos;
} png_io;

static void on_error(png_structp png, png_const_charp msg) {
    png_io *io = png_get_error_ptr(png);
    snprintf(io->msg, sizeof io->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
    png_io *io = png_get_error_ptr(png);
    SDC_DEBUG("%s: libpng: %s", io->path, msg);
}

/* ---- text encodings ------------------------------------------------------ */

/* UTF-8 -> Latin-1 into out (room for strlen(s)+1). Returns 1 when every
 * character is <= U+00FF, 0 when some is not, -1 on invalid UTF-8. */
static int latin1_from_utf8(const char *s, char *out) {
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    utf8proc_ssize_t left = (utf8proc_ssize_t)strlen(s);
    int all_latin1 = 1;
    while (left > 0) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(p, left, &cp);
        if (k <= 0 || cp < 0) return -1;
        if (cp > 0xff) all_latin1 = 0;
        *out++ = (char)(unsigned char)cp;
        p += k;
        left -= k;
    }
    *out = 0;
    return all_latin1;
}

/* Latin-1 -> malloc'd UTF-8 (each byte >= 0x80 becomes two). */
static char *utf8_from_latin1(const char *s) {
    size_t n = strlen(s);
    char *out = malloc(2 * n + 1), *o = out;
    if (!out) return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x80) {
            *o++ = (char)*p;
        } else {
            *o++ = (char)(0xc0 | (*p >> 6));
            *o++ = (char)(0x80 | (*p & 0x3f));
        }
    }
    *o = 0;
    return out;
}

/* PNG keyword rules (PNG spec 11.3.4.3): 1..79 printable Latin-1 bytes
 * (32..126, 161..255), no leading, trailing or consecutive spaces. */
static const char *keyword_problem(const char *k) {
    size_t n = strlen(k);
    if (n == 0) return "is empty";
    if (n > 79) return "is longer than 79 characters";
    if (k[0] == ' ' || k[n - 1] == ' ') return "starts or ends with a space";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)k[i];
        if (c < 32 || (c > 126 && c < 161)) return "has a non-printable character";
        if (c == ' ' && k[i + 1] == ' ') return "has two spaces in a row";
    }
    return NULL;
}

/* ---- writing ------------------------------------------------------------- */

static void write_cb(png_structp png, png_bytep data, size_t n) {
    png_io *io = png_get_io_ptr(png);
    if (io->out_cap - io->out_len < n) {
        size_t cap = io->out_cap ? io->out_cap : 1 << 16;
        while (cap - io->out_len < n) cap *= 2;
        unsigned char *p = realloc(io->out, cap);
        if (!p) png_error(png, "out of memory");
        io->out = p;
        io->out_cap = cap;
    }
    memcpy(io->out + io->out_len, data, n);
    io->out_len += n;
}

static void flush_cb(png_structp png) { (void)png; }

static int encode(png_structp png, png_infop info, png_io *io, int w, int h, int channels, png_bytepp rows,
                  png_textp texts, int ntext) {
    if (setjmp(png_jmpbuf(png))) return -1;
    png_set_write_fn(png, io, write_cb, flush_cb);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, channels == 4 ? PNG_COLOR_TYPE_RGBA : PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (ntext > 0) png_set_text(png, info, texts, ntext);
    png_write_info(png, info); /* text goes before the image data, as PIL puts it */
    png_write_image(png, rows);
    png_write_end(png, NULL);
    return 0;
}

/* Fills t[i] from key/value (UTF-8); the Latin-1 copies go into bufs. */
static sdc_status make_text(const char *path, const char *key, const char *value, png_text *t, char **bufs,
                            sdc_error *err) {
    bufs[0] = malloc(strlen(key) + 1);
    bufs[1] = malloc(strlen(value) + 1);
    if (!bufs[0] || !bufs[1]) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
    int k = latin1_from_utf8(key, bufs[0]);
    const char *why = k < 0 ? "is not valid UTF-8" : k == 0 ? "has characters outside Latin-1" : keyword_problem(bufs[0]);
    if (why) return sdc_fail(err, SDC_EINVAL, "%s: PNG text key \"%s\" %s", path, key, why);
    int v = latin1_from_utf8(value, bufs[1]);
    if (v < 0) return sdc_fail(err, SDC_EINVAL, "%s: PNG text \"%s\": value is not valid UTF-8", path, key);
    memset(t, 0, sizeof *t);
    t->key = bufs[0];
    if (v == 1) {
        t->compression = PNG_TEXT_COMPRESSION_NONE; /* tEXt, Latin-1 */
        t->text = bufs[1];
        t->text_length = strlen(bufs[1]);
    } else {
        t->compression = PNG_ITXT_COMPRESSION_NONE; /* iTXt, UTF-8 */
        t->text = (char *)value;
        t->itxt_length = strlen(value);
    }
    return SDC_OK;
}

sdc_status sdc_png_write(const char *path, const uint8_t *pixels, int w, int h, int channels,
                         const char *const *keys, const char *const *values, size_t ntext, sdc_error *err) {
    if (w <= 0 || h <= 0 || w > SDC_PNG_MAX_SIDE || h > SDC_PNG_MAX_SIDE)
        return sdc_fail(err, SDC_EINVAL, "%s: cannot write a %dx%d PNG (sides 1..%d)", path, w, h, SDC_PNG_MAX_SIDE);
    if (channels != 3 && channels != 4)
        return sdc_fail(err, SDC_EINVAL, "%s: PNG pixels need 3 or 4 channels, not %d", path, channels);
    if (ntext > 1000) return sdc_fail(err, SDC_EINVAL, "%s: %zu PNG text chunks is too many", path, ntext);

    sdc_status s = SDC_OK;
    png_io io = {.path = path};
    png_text *texts = calloc(ntext ? ntext : 1, sizeof *texts);
    char **bufs = calloc(2 * ntext + 1, sizeof *bufs);
    png_bytep *rows = malloc((size_t)h * sizeof *rows);
    if (!texts || !bufs || !rows) s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; s == SDC_OK && i < ntext; i++) s = make_text(path, keys[i], values[i], &texts[i], bufs + 2 * i, err);
    if (s == SDC_OK) {
        for (int y = 0; y < h; y++) rows[y] = (png_bytep)(pixels + (size_t)y * (size_t)w * (size_t)channels);
        png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &io, on_error, on_warning);
        png_infop info = png ? png_create_info_struct(png) : NULL;
        if (!png || !info) {
            s = sdc_fail(err, SDC_ENOMEM, "%s: cannot create a PNG writer", path);
        } else if (encode(png, info, &io, w, h, channels, rows, texts, (int)ntext) != 0) {
            s = sdc_fail(err, SDC_EFORMAT, "%s: cannot encode PNG: %s", path, io.msg);
        }
        png_destroy_write_struct(&png, &info);
    }
    if (s == SDC_OK) s = sdc_write_file_atomic(path, io.out, io.out_len, err);
    for (size_t i = 0; bufs && i < 2 * ntext; i++) free(bufs[i]);
    free(bufs);
    free(texts);
    free(rows);
    free(io.out);
    return s;
}

/* ---- reading ------------------------------------------------------------- */

typedef struct png_read_state {
    uint8_t *pixels;
    png_bytep *rows;
    char *text;
    int w, h;
    unsigned long file_w, file_h; /* as the header says, for the size error */
    int too_big, no_memory;
} png_read_state;

static void read_cb(png_structp png, png_bytep data, size_t n) {
    png_io *io = png_get_io_ptr(png);
    if (io->in_len - io->in_pos < n) png_error(png, "file ends early (truncated)");
    memcpy(data, io->in + io->in_pos, n);
    io->in_pos += n;
}

static int decode(png_structp png, png_infop info, png_io *io, png_read_state *st, const char *key) {
    if (setjmp(png_jmpbuf(png))) return -1;
    png_set_read_fn(png, io, read_cb);
    png_set_sig_bytes(png, 8);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    st->file_w = w;
    st->file_h = h;
    if (w > SDC_PNG_MAX_SIDE || h > SDC_PNG_MAX_SIDE || (long long)w * h > SDC_PNG_MAX_PIXELS) {
        st->too_big = 1;
        return -1;
    }
    st->w = (int)w;
    st->h = (int)h;
    /* to 8-bit RGB: palette -> RGB, grey < 8 bits -> 8, 16 -> 8 (rounded),
     * grey -> RGB; alpha (and tRNS transparency) read as a 4th channel and
     * composited on white below */
    int color = png_get_color_type(png, info);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && png_get_bit_depth(png, info) < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_bit_depth(png, info) == 16) png_set_scale_16(png);
    if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    int alpha = (color & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS);
    if (alpha) png_set_tRNS_to_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    const int ch = alpha ? 4 : 3;
    if ((int)png_get_channels(png, info) != ch || png_get_bit_depth(png, info) != 8 ||
        png_get_rowbytes(png, info) != (size_t)w * ch)
        png_error(png, "unexpected pixel layout after conversion to RGB");
    st->pixels = malloc((size_t)w * h * (size_t)ch);
    st->rows = malloc((size_t)h * sizeof *st->rows);
    if (!st->pixels || !st->rows) {
        st->no_memory = 1;
        return -1;
    }
    for (png_uint_32 y = 0; y < h; y++) st->rows[y] = st->pixels + (size_t)y * w * (size_t)ch;
    png_read_image(png, st->rows);
    if (alpha) sdc_rgba_over_white(st->pixels, (size_t)w * h);
    png_read_end(png, info); /* text after the image data lands in info too */
    if (key) {
        png_textp t;
        int n = 0;
        png_get_text(png, info, &t, &n);
        for (int i = 0; i < n && !st->text; i++) {
            char *k = utf8_from_latin1(t[i].key);
            int match = k && strcmp(k, key) == 0;
            free(k);
            if (!match) continue;
            /* iTXt is UTF-8 already; tEXt and zTXt are Latin-1 */
            int utf8 = t[i].compression == PNG_ITXT_COMPRESSION_NONE || t[i].compression == PNG_ITXT_COMPRESSION_zTXt;
            st->text = utf8 ? sdc_strdup(t[i].text ? t[i].text : "") : utf8_from_latin1(t[i].text ? t[i].text : "");
            if (!st->text) {
                st->no_memory = 1;
                return -1;
            }
        }
    }
    return 0;
}

sdc_status sdc_png_read(const char *path, uint8_t **pixels, int *w, int *h, char **text_value, const char *key,
                        sdc_error *err) {
    *pixels = NULL;
    *w = *h = 0;
    if (text_value) *text_value = NULL;
    char *buf;
    size_t len;
    SDC_TRY(sdc_read_file(path, &buf, &len, err));
    if (len < 8 || png_sig_cmp((png_const_bytep)buf, 0, 8) != 0) {
        free(buf);
        return sdc_fail(err, SDC_EFORMAT, "%s: not a PNG file (no PNG signature)", path);
    }
    png_io io = {.path = path, .in = (const unsigned char *)buf, .in_len = len, .in_pos = 8};
    png_read_state st = {0};
    sdc_status s = SDC_OK;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &io, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        s = sdc_fail(err, SDC_ENOMEM, "%s: cannot create a PNG reader", path);
    } else if (decode(png, info, &io, &st, text_value ? key : NULL) != 0) {
        if (st.too_big)
            s = sdc_fail(err, SDC_ELIMIT, "%s: PNG is %lux%lu, more than sdc reads (sides <= %d, <= %lld Mpixel)", path,
                         st.file_w, st.file_h, SDC_PNG_MAX_SIDE, SDC_PNG_MAX_PIXELS >> 20);
        else if (st.no_memory)
            s = sdc_fail(err, SDC_ENOMEM, "%s: out of memory decoding PNG", path);
        else
            s = sdc_fail(err, SDC_EFORMAT, "%s: corrupt or truncated PNG: %s", path, io.msg);
    }
    png_destroy_read_struct(&png, &info, NULL);
    free(buf);
    free(st.rows);
    if (s != SDC_OK) {
        free(st.pixels);
        free(st.text);
        return s;
    }
    *pixels = st.pixels;
    *w = st.w;
    *h = st.h;
    if (text_value) *text_value = st.text;
    return SDC_OK;
}

sdc_status sdc_png_write_grid(const char *path, const uint8_t *const *imgs, int n, int w, int h, sdc_error *err) {
    int cols = sdc_grid_cols(n), rows = sdc_grid_rows(n, cols);
    uint8_t *grid = malloc((size_t)rows * h * cols * w * 3);
    if (!grid) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory for a %dx%d grid", path, cols * w, rows * h);
    sdc_image_grid(imgs, n, w, h, cols, grid);
    sdc_status st = sdc_png_write(path, grid, cols * w, rows * h, 3, NULL, NULL, 0, err);
    free(grid);
    return st;
}
