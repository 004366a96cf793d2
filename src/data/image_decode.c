/* PNG (through data/png.h), JPEG (libjpeg-turbo) and WebP (libwebp) to RGB8,
 * matching PIL's Image.open(path).convert("RGB"). See image_decode.h. */
#include "data/image_decode.h"
#include "data/image.h"

#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <webp/decode.h>

#include "core/fs.h"
#include "data/png.h"

void sdc_image_free(sdc_image *im) {
    if (!im) return;
    free(im->rgb);
    im->rgb = NULL;
    im->w = im->h = 0;
}

sdc_image_format sdc_image_sniff(const uint8_t *b, size_t n) {
    if (n >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0) return SDC_IMAGE_PNG;
    if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return SDC_IMAGE_JPEG;
    if (n >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0) return SDC_IMAGE_WEBP;
    return SDC_IMAGE_UNKNOWN;
}

static int too_big(long long w, long long h) {
    return w <= 0 || h <= 0 || w > SDC_IMAGE_MAX_SIDE || h > SDC_IMAGE_MAX_SIDE || w * h > SDC_IMAGE_MAX_PIXELS;
}

static sdc_status limit_error(sdc_error *err, const char *path, const char *fmt, long long w, long long h) {
    return sdc_fail(err, SDC_ELIMIT, "%s: %s image is %lldx%lld, beyond what sdc decodes (sides <= %d, <= %lld Mpixel)",
                    path, fmt, w, h, SDC_IMAGE_MAX_SIDE, SDC_IMAGE_MAX_PIXELS >> 20);
}

/* ---- EXIF orientation ----------------------------------------------------- */

static unsigned rd16(const uint8_t *p, int le) { return le ? p[0] | p[1] << 8 : p[0] << 8 | p[1]; }
static unsigned long rd32(const uint8_t *p, int le) {
    return le ? (unsigned long)p[0] | (unsigned long)p[1] << 8 | (unsigned long)p[2] << 16 | (unsigned long)p[3] << 24
              : (unsigned long)p[0] << 24 | (unsigned long)p[1] << 16 | (unsigned long)p[2] << 8 | p[3];
}

/* The Orientation tag (0x0112) of IFD0 in an APP1 "Exif\0\0" payload; 1 when
 * absent or unreadable (a broken EXIF block is not worth refusing the image). */
static int exif_orientation(const uint8_t *d, size_t n) {
    if (n < 6 + 8 || memcmp(d, "Exif\0\0", 6) != 0) return 1;
    d += 6;
    n -= 6;
    int le;
    if (memcmp(d, "II*\0", 4) == 0) le = 1;
    else if (memcmp(d, "MM\0*", 4) == 0) le = 0;
    else return 1;
    unsigned long ifd = rd32(d + 4, le);
    if (ifd > n - 2) return 1;
    unsigned count = rd16(d + ifd, le);
    for (unsigned i = 0; i < count; i++) {
        size_t e = ifd + 2 + (size_t)i * 12;
        if (e + 12 > n) return 1;
        if (rd16(d + e, le) != 0x0112) continue;
        if (rd16(d + e + 2, le) != 3) return 1; /* must be SHORT */
        unsigned v = rd16(d + e + 8, le);
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

/* PIL's exif_transpose: 2 mirror, 3 rotate 180, 4 flip, 5 transpose,
 * 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise.
 * Output pixel (x, y) reads source pixel (sx, sy) below. */
static sdc_status apply_orientation(sdc_image *im, int o, const char *path, sdc_error *err) {
    if (o <= 1 || o > 8) return SDC_OK;
    int W = im->w, H = im->h, swap = o >= 5;
    int ow = swap ? H : W, oh = swap ? W : H;
    uint8_t *dst = malloc((size_t)W * H * 3);
    if (!dst) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory applying EXIF orientation", path);
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            int sx, sy;
            switch (o) {
            case 2: sx = W - 1 - x, sy = y; break;
            case 3: sx = W - 1 - x, sy = H - 1 - y; break;
            case 4: sx = x, sy = H - 1 - y; break;
            case 5: sx = y, sy = x; break;
            case 6: sx = y, sy = H - 1 - x; break;
            case 7: sx = W - 1 - y, sy = H - 1 - x; break;
            default: sx = W - 1 - y, sy = x; break; /* 8 */
            }
            memcpy(dst + ((size_t)y * ow + x) * 3, im->rgb + ((size_t)sy * W + sx) * 3, 3);
        }
    free(im->rgb);
    im->rgb = dst;
    im->w = ow;
    im->h = oh;
    return SDC_OK;
}

/* ---- JPEG ----------------------------------------------------------------- */

typedef struct jpeg_err {
    struct jpeg_error_mgr mgr;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
    int scans; /* set when the scan limit stopped the decode */
} jpeg_err;

/* libjpeg's default error_exit calls exit(): jump back instead. */
static void jpeg_error_exit(j_common_ptr c) {
    jpeg_err *e = (jpeg_err *)c->err;
    c->err->format_message(c, e->msg);
    longjmp(e->jb, 1);
}

/* libjpeg calls this between steps of its input and output passes; a
 * progressive file past the scan limit is stopped here, as libjpeg-turbo's
 * documentation advises (its djpeg -maxscans). */
static void jpeg_progress(j_common_ptr c) {
    j_decompress_ptr d = (j_decompress_ptr)c;
    if (d->input_scan_number > SDC_IMAGE_MAX_JPEG_SCANS) {
        jpeg_err *e = (jpeg_err *)c->err;
        e->scans = d->input_scan_number;
        longjmp(e->jb, 1);
    }
}

/* Warnings are ignored (PIL ignores them too), except a premature end of
 * data, which libjpeg pads with grey but PIL refuses ("image file is
 * truncated"). */
static void jpeg_emit_message(j_common_ptr c, int level) {
    if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) jpeg_error_exit(c);
}

/* PIL's CMYK -> RGB after its "CMYK;I" unpack (Adobe JPEGs store inverted
 * ink): c = 255 - raw_c, k = 255 - raw_k, nk = 255 - k,
 * r = clip(nk - (c*nk)/255) with PIL's rounded divide
 * t = c*nk + 128, (t + (t >> 8)) >> 8. */
static void cmyk_row_to_rgb(const uint8_t *in, uint8_t *out, int w) {
    for (int x = 0; x < w; x++, in += 4, out += 3) {
        int nk = in[3];
        for (int c = 0; c < 3; c++) {
            int t = (255 - in[c]) * nk + 128;
            int v = nk - ((t + (t >> 8)) >> 8);
            out[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}

typedef struct jpeg_state {
    uint8_t *rgb;
    uint8_t *row;
    int orientation;
} jpeg_state;

/* Volatile-free: everything that outlives a longjmp lives in *st. */
static int jpeg_decode(struct jpeg_decompress_struct *ci, jpeg_err *je, struct jpeg_progress_mgr *progress,
                       const uint8_t *data, size_t len, int apply_exif, jpeg_state *st, long long *fw, long long *fh) {
    if (setjmp(je->jb)) return -1;
    jpeg_create_decompress(ci);
    ci->progress = progress;
    jpeg_mem_src(ci, data, (unsigned long)len);
    if (apply_exif) jpeg_save_markers(ci, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(ci, TRUE);
    *fw = ci->image_width;
    *fh = ci->image_height;
    if (too_big(*fw, *fh)) return -2;
    if (apply_exif)
        for (jpeg_saved_marker_ptr m = ci->marker_list; m; m = m->next)
            if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 && memcmp(m->data, "Exif\0\0", 6) == 0) {
                st->orientation = exif_orientation(m->data, m->data_length);
                break;
            }
    /* PIL's settings: ISLOW IDCT, fancy upsampling (libjpeg's defaults). */
    ci->dct_method = JDCT_ISLOW;
    ci->do_fancy_upsampling = TRUE;
    int cmyk = ci->jpeg_color_space == JCS_CMYK || ci->jpeg_color_space == JCS_YCCK;
    /* grey -> RGB in libjpeg replicates, as PIL's L -> RGB does */
    ci->out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(ci);
    int w = (int)ci->output_width, h = (int)ci->output_height;
    st->rgb = malloc((size_t)w * h * 3);
    st->row = malloc((size_t)w * 4);
    if (!st->rgb || !st->row) return -3;
    while (ci->output_scanline < ci->output_height) {
        uint8_t *dst = st->rgb + (size_t)ci->output_scanline * w * 3;
        JSAMPROW r = cmyk ? st->row : dst;
        jpeg_read_scanlines(ci, &r, 1);
        if (cmyk) cmyk_row_to_rgb(st->row, dst, w);
    }
    jpeg_finish_decompress(ci);
    return 0;
}

static sdc_status load_jpeg(const char *path, const uint8_t *data, size_t len, int apply_exif, sdc_image *out,
                            sdc_error *err) {
    struct jpeg_decompress_struct ci;
    jpeg_err je;
    memset(&ci, 0, sizeof ci);
    memset(&je, 0, sizeof je);
    ci.err = jpeg_std_error(&je.mgr);
    je.mgr.error_exit = jpeg_error_exit;
    je.mgr.emit_message = jpeg_emit_message;
    struct jpeg_progress_mgr progress;
    memset(&progress, 0, sizeof progress);
    progress.progress_monitor = jpeg_progress;
    jpeg_state st = {NULL, NULL, 1};
    long long fw = 0, fh = 0;
    int r = jpeg_decode(&ci, &je, &progress, data, len, apply_exif, &st, &fw, &fh);
    jpeg_destroy_decompress(&ci);
    free(st.row);
    if (r != 0) {
        free(st.rgb);
        if (r == -2) return limit_error(err, path, "JPEG", fw, fh);
        if (r == -3) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory for a %lldx%lld JPEG", path, fw, fh);
        if (je.scans)
            return sdc_fail(err, SDC_ELIMIT, "%s: progressive JPEG with more than %d scans, beyond what sdc decodes",
                            path, SDC_IMAGE_MAX_JPEG_SCANS);
        return sdc_fail(err, SDC_EFORMAT, "%s: corrupt or truncated JPEG (%s)", path, je.msg);
    }
    out->w = (int)fw;
    out->h = (int)fh;
    out->rgb = st.rgb;
    return apply_exif ? apply_orientation(out, st.orientation, path, err) : SDC_OK;
}

/* ---- WebP ----------------------------------------------------------------- */

static sdc_status load_webp(const char *path, const uint8_t *data, size_t len, sdc_image *out, sdc_error *err) {
    WebPBitstreamFeatures f;
    VP8StatusCode vs = WebPGetFeatures(data, len, &f);
    if (vs == VP8_STATUS_NOT_ENOUGH_DATA)
        return sdc_fail(err, SDC_EFORMAT, "%s: truncated WebP (header incomplete)", path);
    if (vs != VP8_STATUS_OK) return sdc_fail(err, SDC_EFORMAT, "%s: corrupt WebP header (libwebp status %d)", path, vs);
    if (f.has_animation)
        return sdc_fail(err, SDC_EUNSUPPORTED, "%s: animated WebP is not supported (convert it to a still image)", path);
    if (too_big(f.width, f.height)) return limit_error(err, path, "WebP", f.width, f.height);
    const int ch = f.has_alpha ? 4 : 3;
    size_t stride = (size_t)f.width * (size_t)ch, size = stride * (size_t)f.height;
    uint8_t *rgb = malloc(size);
    if (!rgb) return sdc_fail(err, SDC_ENOMEM, "%s: out of memory for a %dx%d WebP", path, f.width, f.height);
    /* colour is not premultiplied; alpha is composited on white */
    int ok = f.has_alpha ? WebPDecodeRGBAInto(data, len, rgb, size, (int)stride) != NULL
                         : WebPDecodeRGBInto(data, len, rgb, size, (int)stride) != NULL;
    if (!ok) {
        free(rgb);
        return sdc_fail(err, SDC_EFORMAT, "%s: corrupt or truncated WebP", path);
    }
    if (f.has_alpha) sdc_rgba_over_white(rgb, (size_t)f.width * (size_t)f.height);
    out->w = f.width;
    out->h = f.height;
    out->rgb = rgb;
    return SDC_OK;
}

/* ---- entry ---------------------------------------------------------------- */

sdc_status sdc_image_load_ex(const char *path, int apply_exif, sdc_image *out, sdc_error *err) {
    out->w = out->h = 0;
    out->rgb = NULL;
    uint8_t head[12];
    FILE *fp = fopen(path, "rb");
    if (!fp) return sdc_fail(err, errno == ENOENT ? SDC_ENOTFOUND : SDC_EIO, "%s: %s", path, strerror(errno));
    size_t n = fread(head, 1, sizeof head, fp);
    fclose(fp);
    sdc_image_format fmt = sdc_image_sniff(head, n);
    if (fmt == SDC_IMAGE_UNKNOWN)
        return sdc_fail(err, n < sizeof head ? SDC_EFORMAT : SDC_EUNSUPPORTED,
                        "%s: not a PNG, JPEG or WebP image (by its first bytes)", path);
    if (fmt == SDC_IMAGE_PNG) {
        uint8_t *px = NULL;
        int w = 0, h = 0;
        SDC_TRY(sdc_png_read(path, &px, &w, &h, NULL, NULL, err));
        out->w = w;
        out->h = h;
        out->rgb = px;
        return SDC_OK;
    }
    char *buf = NULL;
    size_t len = 0;
    SDC_TRY(sdc_read_file(path, &buf, &len, err));
    sdc_status s = fmt == SDC_IMAGE_JPEG ? load_jpeg(path, (const uint8_t *)buf, len, apply_exif, out, err)
                                         : load_webp(path, (const uint8_t *)buf, len, out, err);
    free(buf);
    if (s != SDC_OK) sdc_image_free(out);
    return s;
}

sdc_status sdc_image_load(const char *path, sdc_image *out, sdc_error *err) {
    return sdc_image_load_ex(path, 0, out, err);
}
