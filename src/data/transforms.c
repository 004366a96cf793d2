/* torchvision Resize/CenterCrop/RandomCrop/RandomHorizontalFlip/ToTensor/
 * Normalize on PIL images, computed as PIL and torch compute them. */
#include "data/transforms.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Python's round(d / 2.0) for an integer d >= 0: half to even. */
static int half_round_even(int d) {
    int k = d / 2;
    if (d % 2 == 0) return k;
    return k % 2 == 0 ? k : k + 1;
}

sdc_status sdc_resize_geometry(int w, int h, int size, int *rw, int *rh, int *center_top, int *center_left,
                               sdc_error *err) {
    if (size < 1 || w < 1 || h < 1)
        return sdc_fail(err, SDC_EINVAL, "resize: bad size %d for a %dx%d image", size, w, h);
    int shrt = w <= h ? w : h, lng = w <= h ? h : w;
    /* int(size * long / short): exact products, one correctly rounded divide */
    double nl = (double)((long long)size * lng) / (double)shrt;
    if (nl > 1e9) return sdc_fail(err, SDC_EINVAL, "resize: %dx%d to short side %d is too long", w, h, size);
    int new_long = (int)nl;
    *rw = w <= h ? size : new_long;
    *rh = w <= h ? new_long : size;
    if (center_top) *center_top = *rh >= size ? half_round_even(*rh - size) : 0;
    if (center_left) *center_left = *rw >= size ? half_round_even(*rw - size) : 0;
    return SDC_OK;
}

/* ---- PIL's ImagingResample, 8 bits per channel ------------------------------
 * For output index i (in_size -> out_size, scale = in/out):
 *   center = (i + 0.5) * scale, fs = max(scale, 1), support = 1 * fs
 *   xmin = max(0, (int)(center - support + 0.5)), xmax = min(in, (int)(center + support + 0.5))
 *   k[x] = tri((x + xmin - center + 0.5) / fs), tri(t) = max(0, 1 - |t|), normalized to sum 1
 *   ik[x] = (int)(k[x] * 2^22 +- 0.5)
 *   out = clip8((2^21 + sum v * ik[x]) >> 22)                                   */

#define PIL_PRECISION_BITS (32 - 8 - 2)

typedef struct coeffs {
    int ksize;
    int *bounds; /* [out][2]: xmin, count */
    int32_t *k;  /* [out][ksize] */
} coeffs;

static void coeffs_free(coeffs *c) {
    free(c->bounds);
    free(c->k);
}

static int precompute(int in_size, int out_size, coeffs *c) {
    double scale = (double)in_size / out_size, fs = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * fs;
    int ksize = (int)ceil(support) * 2 + 1;
    c->ksize = ksize;
    c->bounds = malloc((size_t)out_size * 2 * sizeof *c->bounds);
    c->k = malloc((size_t)out_size * ksize * sizeof *c->k);
    double *kd = malloc((size_t)ksize * sizeof *kd);
    if (!c->bounds || !c->k || !kd) {
        free(kd);
        return -1;
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / fs;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            double t = fabs((x + xmin - center + 0.5) * ss);
            double w = t < 1.0 ? 1.0 - t : 0.0;
            kd[x] = w;
            ww += w;
        }
        int32_t *k = c->k + (size_t)xx * ksize;
        for (int x = 0; x < ksize; x++) {
            double v = x < xmax ? (ww != 0.0 ? kd[x] / ww : kd[x]) : 0.0;
            k[x] = (int32_t)(v < 0 ? -0.5 + v * (1 << PIL_PRECISION_BITS) : 0.5 + v * (1 << PIL_PRECISION_BITS));
        }
        c->bounds[xx * 2] = xmin;
        c->bounds[xx * 2 + 1] = xmax;
    }
    free(kd);
    return 0;
}

static inline uint8_t clip8(int32_t v) {
    v >>= PIL_PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* rows [row0, row0 + nrows) of src (width w) -> dst (width ow) */
static void pass_horizontal(const uint8_t *src, int w, int row0, int nrows, uint8_t *dst, int ow, const coeffs *c) {
    for (int y = 0; y < nrows; y++) {
        const uint8_t *in = src + (size_t)(row0 + y) * w * 3;
        uint8_t *out = dst + (size_t)y * ow * 3;
        for (int xx = 0; xx < ow; xx++) {
            int xmin = c->bounds[xx * 2], n = c->bounds[xx * 2 + 1];
            const int32_t *k = c->k + (size_t)xx * c->ksize;
            int32_t s0 = 1 << (PIL_PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < n; x++) {
                const uint8_t *p = in + (size_t)(x + xmin) * 3;
                s0 += p[0] * k[x];
                s1 += p[1] * k[x];
                s2 += p[2] * k[x];
            }
            out[xx * 3] = clip8(s0);
            out[xx * 3 + 1] = clip8(s1);
            out[xx * 3 + 2] = clip8(s2);
        }
    }
}

/* src rows are numbered from row0 (src holds rows row0..); dst is oh rows of w */
static void pass_vertical(const uint8_t *src, int w, int row0, uint8_t *dst, int oh, const coeffs *c) {
    size_t stride = (size_t)w * 3;
    for (int yy = 0; yy < oh; yy++) {
        int ymin = c->bounds[yy * 2] - row0, n = c->bounds[yy * 2 + 1];
        const int32_t *k = c->k + (size_t)yy * c->ksize;
        uint8_t *out = dst + (size_t)yy * stride;
        for (size_t i = 0; i < stride; i++) {
            int32_t s = 1 << (PIL_PRECISION_BITS - 1);
            for (int y = 0; y < n; y++) s += src[(size_t)(y + ymin) * stride + i] * k[y];
            out[i] = clip8(s);
        }
    }
}

sdc_status sdc_resize_bilinear_pil(const uint8_t *src, int w, int h, uint8_t *dst, int ow, int oh, sdc_error *err) {
    if (w < 1 || h < 1 || ow < 1 || oh < 1)
        return sdc_fail(err, SDC_EINVAL, "resize: bad sizes %dx%d -> %dx%d", w, h, ow, oh);
    int need_h = ow != w, need_v = oh != h;
    if (!need_h && !need_v) {
        memcpy(dst, src, (size_t)w * h * 3);
        return SDC_OK;
    }
    coeffs ch = {0}, cv = {0};
    uint8_t *tmp = NULL;
    sdc_status s = SDC_OK;
    if (precompute(w, ow, &ch) || precompute(h, oh, &cv)) {
        s = sdc_fail(err, SDC_ENOMEM, "resize: out of memory");
        goto done;
    }
    if (!need_v) {
        pass_horizontal(src, w, 0, h, dst, ow, &ch);
        goto done;
    }
    if (!need_h) {
        pass_vertical(src, w, 0, dst, oh, &cv);
        goto done;
    }
    /* horizontal pass over only the rows the vertical pass reads */
    int first = cv.bounds[0], last = cv.bounds[oh * 2 - 2] + cv.bounds[oh * 2 - 1];
    tmp = malloc((size_t)ow * (last - first) * 3);
    if (!tmp) {
        s = sdc_fail(err, SDC_ENOMEM, "resize: out of memory");
        goto done;
    }
    pass_horizontal(src, w, first, last - first, tmp, ow, &ch);
    pass_vertical(tmp, ow, first, dst, oh, &cv);
done:
    free(tmp);
    coeffs_free(&ch);
    coeffs_free(&cv);
    return s;
}

sdc_status sdc_train_transform(const sdc_image *in, int resolution, int center_crop, int crop_top, int crop_left,
                               int flip, float *out_chw, int *out_crop_top, int *out_crop_left, sdc_error *err) {
    int rw, rh, ct, cl;
    SDC_TRY(sdc_resize_geometry(in->w, in->h, resolution, &rw, &rh, &ct, &cl, err));
    if (rw < resolution || rh < resolution)
        return sdc_fail(err, SDC_EINVAL, "transform: %dx%d resized to %dx%d is smaller than the %d crop", in->w, in->h,
                        rw, rh, resolution);
    int top = center_crop ? ct : crop_top, left = center_crop ? cl : crop_left;
    if (top < 0 || left < 0 || top > rh - resolution || left > rw - resolution)
        return sdc_fail(err, SDC_EINVAL, "transform: crop at (%d, %d) of %d is outside the %dx%d resized image", top,
                        left, resolution, rw, rh);
    uint8_t *rs = malloc((size_t)rw * rh * 3);
    if (!rs) return sdc_fail(err, SDC_ENOMEM, "transform: out of memory");
    sdc_status s = sdc_resize_bilinear_pil(in->rgb, in->w, in->h, rs, rw, rh, err);
    if (s == SDC_OK) {
        /* ToTensor: v / 255 (float32); Normalize: (x - 0.5) / 0.5 */
        size_t plane = (size_t)resolution * resolution;
        for (int y = 0; y < resolution; y++)
            for (int x = 0; x < resolution; x++) {
                int sx = left + (flip ? resolution - 1 - x : x);
                const uint8_t *p = rs + ((size_t)(top + y) * rw + sx) * 3;
                for (int c = 0; c < 3; c++) {
                    float v = (float)p[c] / 255.0f;
                    out_chw[c * plane + (size_t)y * resolution + x] = (v - 0.5f) / 0.5f;
                }
            }
        if (out_crop_top) *out_crop_top = top;
        if (out_crop_left) *out_crop_left = left;
    }
    free(rs);
    return s;
}
