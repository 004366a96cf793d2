/* Image decoding and the training transforms against PIL/torch goldens
 * (tools/make_image_tests.py -> tests/data/images). */
#include <stdlib.h>
#include <string.h>

#include "data/image_decode.h"
#include "data/transforms.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "test.h"

static int load_expected(sdc_weights *w) {
    sdc_error err = {0};
    sdc_weights_init(w);
    if (sdc_safetensors_read(test_data("images/expected.safetensors"), w, &err) != SDC_OK) {
        sdc_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return 0;
    }
    return 1;
}

/* Decodes images/<name> (EXIF applied or not) and compares with the golden
 * key; returns the largest absolute difference, or -1 on a setup failure. */
static int decode_diff(const sdc_weights *w, const char *name, const char *key, int apply_exif) {
    char path[512];
    snprintf(path, sizeof path, "images/%s", name);
    sdc_image im;
    sdc_error err = {0};
    if (sdc_image_load_ex(test_data(path), apply_exif, &im, &err) != SDC_OK) {
        sdc_test_fail(__FILE__, __LINE__, "%s: %s", name, err.msg);
        return -1;
    }
    const sdc_weight *t = sdc_weights_find(w, key);
    int d = -1;
    if (!t || t->dtype != SDC_U8 || t->ndim != 3) {
        sdc_test_fail(__FILE__, __LINE__, "golden %s missing", key);
    } else if (t->shape[0] != im.h || t->shape[1] != im.w) {
        sdc_test_fail(__FILE__, __LINE__, "%s: %dx%d, PIL %lldx%lld", name, im.w, im.h, (long long)t->shape[1],
                      (long long)t->shape[0]);
    } else {
        const uint8_t *g = t->data;
        d = 0;
        for (size_t i = 0; i < (size_t)im.w * im.h * 3; i++) {
            int e = abs((int)im.rgb[i] - (int)g[i]);
            if (e > d) d = e;
        }
    }
    sdc_image_free(&im);
    return d;
}

/* Every PNG/JPEG/WebP variant decodes bit-exactly as PIL's convert("RGB"):
 * the same libjpeg-turbo ISLOW IDCT and fancy upsampling, the same libwebp
 * decoder, alpha dropped. No tolerance. */
TEST(image_decode_matches_pil) {
    sdc_weights w;
    if (!load_expected(&w)) return;
    static const char *files[] = {
        "rgb.png", "rgba.png", "gray.png", "palette.png", "q90_444.jpg", "q75_420.jpg", "q80_422.jpg",
        "progressive.jpg", "gray.jpg", "cmyk.jpg", "jpeg_named.png", "lossy.webp", "lossless.webp",
        "lossy_alpha.webp", "lossless_alpha.webp", "exif6.jpg",
    };
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char key[128];
        snprintf(key, sizeof key, "dec/%s", files[i]);
        int d = decode_diff(&w, files[i], key, 0);
        CHECK_MSG(d == 0, "%s: max |sdc - PIL| = %d", files[i], d);
    }
    sdc_weights_free(&w);
}

/* 16-bit PNGs go through data/png.c, which scales 16 -> 8 bits with
 * rounding (v*255/65535). PIL differs: 16-bit RGB keeps the high byte
 * (v >> 8, so at most 1 below ours), and 16-bit grey ("I;16") is clipped to
 * 255 (so almost every pixel differs). We keep the scaled values; these
 * checks pin the known difference. */
TEST(image_decode_png16_vs_pil) {
    sdc_weights w;
    if (!load_expected(&w)) return;
    int d = decode_diff(&w, "rgb16.png", "dec/rgb16.png", 0);
    CHECK_MSG(d == 1, "rgb16.png: max |sdc - PIL| = %d, expected 1 (rounding vs high byte)", d);
    sdc_image im;
    sdc_error err = {0};
    REQUIRE_OK(sdc_image_load(test_data("images/gray16.png"), &im, &err), &err);
    int grey = 1;
    for (size_t i = 0; i < (size_t)im.w * im.h; i++)
        grey &= im.rgb[i * 3] == im.rgb[i * 3 + 1] && im.rgb[i * 3] == im.rgb[i * 3 + 2];
    CHECK(grey);
    sdc_image_free(&im);
    sdc_weights_free(&w);
}

/* With apply_exif, each of the 8 orientations matches
 * ImageOps.exif_transpose; without, the stored pixels come back. */
TEST(image_decode_exif_orientation) {
    sdc_weights w;
    if (!load_expected(&w)) return;
    for (int o = 1; o <= 8; o++) {
        char name[32], key[64];
        snprintf(name, sizeof name, "exif%d.jpg", o);
        snprintf(key, sizeof key, "exif/%s", name);
        int d = decode_diff(&w, name, key, 1);
        CHECK_MSG(d == 0, "%s with EXIF applied: max diff %d", name, d);
        snprintf(key, sizeof key, "dec/%s", name);
        d = decode_diff(&w, name, key, 0);
        CHECK_MSG(d == 0, "%s with EXIF ignored: max diff %d", name, d);
    }
    sdc_weights_free(&w);
}

static void expect_fail(const char *name, sdc_status want, const char *needle) {
    char path[256];
    snprintf(path, sizeof path, "images/%s", name);
    sdc_image im = {1, 1, (uint8_t *)&im};
    sdc_error err = {0};
    sdc_status s = sdc_image_load(test_data(path), &im, &err);
    CHECK_MSG(s == want, "%s: got %s (%s), want %s", name, sdc_status_name(s), err.msg, sdc_status_name(want));
    CHECK_MSG(strstr(err.msg, name) != NULL, "%s: message does not name the file: %s", name, err.msg);
    if (needle) CHECK_MSG(strstr(err.msg, needle) != NULL, "%s: message lacks \"%s\": %s", name, needle, err.msg);
    CHECK(im.rgb == NULL && im.w == 0 && im.h == 0);
}

TEST(image_decode_errors) {
    expect_fail("truncated.jpg", SDC_EFORMAT, "JPEG");
    expect_fail("truncated.webp", SDC_EFORMAT, "WebP");
    expect_fail("huge.png", SDC_ELIMIT, "100000x100000");
    expect_fail("huge.jpg", SDC_ELIMIT, "20000x20000");
    expect_fail("not_image.png", SDC_EUNSUPPORTED, "not a PNG, JPEG or WebP");
    expect_fail("does_not_exist.jpg", SDC_ENOTFOUND, NULL);
    /* a file shorter than any magic */
    char path[512];
    snprintf(path, sizeof path, "%s/tiny.jpg", test_tmpdir());
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    fputs("\xff\xd8", f);
    fclose(f);
    sdc_image im;
    sdc_error err = {0};
    CHECK_EQ_INT(sdc_image_load(path, &im, &err), SDC_EFORMAT);
    /* the JPEG magic and nothing after it: libjpeg must not exit() */
    f = fopen(path, "wb");
    REQUIRE(f);
    fputs("\xff\xd8\xff\xe0\x00\x10JFIF", f);
    fclose(f);
    CHECK_EQ_INT(sdc_image_load(path, &im, &err), SDC_EFORMAT);
    CHECK(strstr(err.msg, "tiny.jpg") != NULL);
}

TEST(image_sniff) {
    CHECK_EQ_INT(sdc_image_sniff((const uint8_t *)"\x89PNG\r\n\x1a\n\0\0\0\0", 12), SDC_IMAGE_PNG);
    CHECK_EQ_INT(sdc_image_sniff((const uint8_t *)"\xff\xd8\xff\xdb", 4), SDC_IMAGE_JPEG);
    CHECK_EQ_INT(sdc_image_sniff((const uint8_t *)"RIFF\1\0\0\0WEBP", 12), SDC_IMAGE_WEBP);
    CHECK_EQ_INT(sdc_image_sniff((const uint8_t *)"RIFF\1\0\0\0WAVE", 12), SDC_IMAGE_UNKNOWN);
    CHECK_EQ_INT(sdc_image_sniff((const uint8_t *)"\xff\xd8", 2), SDC_IMAGE_UNKNOWN);
}

/* torchvision's size rule and Python's half-to-even center offsets. */
TEST(transform_geometry) {
    sdc_error err = {0};
    int rw, rh, ct, cl;
    REQUIRE_OK(sdc_resize_geometry(37, 29, 32, &rw, &rh, &ct, &cl, &err), &err);
    CHECK_EQ_INT(rw, 40); /* int(32 * 37 / 29) = int(40.83) */
    CHECK_EQ_INT(rh, 32);
    CHECK_EQ_INT(cl, 4);
    CHECK_EQ_INT(ct, 0);
    REQUIRE_OK(sdc_resize_geometry(45, 70, 32, &rw, &rh, &ct, &cl, &err), &err);
    CHECK_EQ_INT(rw, 32);
    CHECK_EQ_INT(rh, 49); /* int(49.78) */
    CHECK_EQ_INT(ct, 8);  /* round(8.5) = 8, half to even */
    REQUIRE_OK(sdc_resize_geometry(100, 100, 64, &rw, &rh, &ct, &cl, &err), &err);
    CHECK(rw == 64 && rh == 64 && ct == 0 && cl == 0);
    REQUIRE_OK(sdc_resize_geometry(1000, 512, 512, &rw, &rh, &ct, &cl, &err), &err);
    CHECK(rw == 1000 && rh == 512 && cl == 244 && ct == 0);
    REQUIRE_OK(sdc_resize_geometry(1019, 512, 512, &rw, &rh, &ct, &cl, &err), &err);
    CHECK_EQ_INT(cl, 254); /* round(253.5) = 254, half to even */
    CHECK_EQ_INT(sdc_resize_geometry(10, 10, 0, &rw, &rh, &ct, &cl, &err), SDC_EINVAL);
}

/* PIL's Image.resize(BILINEAR): bit-exact, down by odd factors, up, and
 * along one axis only. */
TEST(transform_resize_matches_pil) {
    sdc_weights w;
    if (!load_expected(&w)) return;
    const sdc_weight *src = sdc_weights_find(&w, "rs/src");
    REQUIRE(src && src->dtype == SDC_U8);
    int sw = (int)src->shape[1], sh = (int)src->shape[0];
    for (int i = 0; i < 5; i++) {
        char key[32];
        snprintf(key, sizeof key, "rs/%d", i);
        const sdc_weight *g = sdc_weights_find(&w, key);
        REQUIRE(g && g->dtype == SDC_U8);
        int ow = (int)g->shape[1], oh = (int)g->shape[0];
        uint8_t *dst = malloc((size_t)ow * oh * 3);
        sdc_error err = {0};
        REQUIRE_OK(sdc_resize_bilinear_pil(src->data, sw, sh, dst, ow, oh, &err), &err);
        int d = 0;
        for (size_t k = 0; k < (size_t)ow * oh * 3; k++) {
            int e = abs((int)dst[k] - (int)((const uint8_t *)g->data)[k]);
            if (e > d) d = e;
        }
        CHECK_MSG(d == 0, "%dx%d -> %dx%d: max |sdc - PIL| = %d", sw, sh, ow, oh, d);
        free(dst);
    }
    sdc_weights_free(&w);
}

/* decode -> Resize(32) -> crop -> flip -> ToTensor -> Normalize against
 * the same chain in PIL + torch. Exact: the 8-bit stages are bit-exact and
 * (v/255 - 0.5)/0.5 is the same float32 ops torch runs. */
TEST(transform_train_matches_torch) {
    sdc_weights w;
    if (!load_expected(&w)) return;
    static const struct {
        const char *file;
        int center, top, left, flip;
    } cases[] = {
        {"q75_420.jpg", 1, 0, 0, 0}, {"q75_420.jpg", 0, 0, 5, 1}, {"rgb16.png", 0, 0, 3, 0},
        {"portrait.png", 1, 0, 0, 1}, {"portrait.png", 0, 17, 0, 0}, {"small.png", 1, 0, 0, 0},
    };
    const int res = 32;
    float *out = malloc(3 * res * res * sizeof *out);
    for (int i = 0; i < 6; i++) {
        char key[32], path[128];
        snprintf(path, sizeof path, "images/%s", cases[i].file);
        sdc_image im;
        sdc_error err = {0};
        REQUIRE_OK(sdc_image_load(test_data(path), &im, &err), &err);
        /* rgb16.png: swap in PIL's decode (high byte) so the chain compares
         * the transform only, not png.c's 16-bit rounding */
        if (strcmp(cases[i].file, "rgb16.png") == 0) {
            const sdc_weight *d = sdc_weights_find(&w, "dec/rgb16.png");
            REQUIRE(d && d->nbytes == (size_t)im.w * im.h * 3);
            memcpy(im.rgb, d->data, d->nbytes);
        }
        int top = -1, left = -1;
        REQUIRE_OK(sdc_train_transform(&im, res, cases[i].center, cases[i].top, cases[i].left, cases[i].flip, out,
                                       &top, &left, &err),
                   &err);
        snprintf(key, sizeof key, "t%d/geom", i);
        const sdc_weight *geom = sdc_weights_find(&w, key);
        REQUIRE(geom && geom->dtype == SDC_I32);
        int32_t gg[6];
        memcpy(gg, geom->data, sizeof gg);
        int rw, rh, ct, cl;
        REQUIRE_OK(sdc_resize_geometry(im.w, im.h, res, &rw, &rh, &ct, &cl, &err), &err);
        CHECK(rw == gg[0] && rh == gg[1] && top == gg[2] && left == gg[3] && ct == gg[4] && cl == gg[5]);
        snprintf(key, sizeof key, "t%d/out", i);
        const sdc_weight *g = sdc_weights_find(&w, key);
        REQUIRE(g && g->dtype == SDC_F32 && g->nbytes == 3u * res * res * sizeof(float));
        size_t bad = 0;
        double worst = 0;
        for (int k = 0; k < 3 * res * res; k++) {
            float e;
            memcpy(&e, (const char *)g->data + 4 * k, 4);
            if (e != out[k]) bad++;
            if (fabs(e - out[k]) > worst) worst = fabs(e - out[k]);
        }
        CHECK_MSG(bad == 0, "case %d (%s): %zu values differ, max %g", i, cases[i].file, bad, worst);
        sdc_image_free(&im);
    }
    /* a random crop outside the resized image is an argument error */
    sdc_image im;
    sdc_error err = {0};
    REQUIRE_OK(sdc_image_load(test_data("images/portrait.png"), &im, &err), &err);
    CHECK_EQ_INT(sdc_train_transform(&im, res, 0, 18, 0, 0, out, NULL, NULL, &err), SDC_EINVAL);
    CHECK_EQ_INT(sdc_train_transform(&im, res, 0, 0, 1, 0, out, NULL, NULL, &err), SDC_EINVAL);
    sdc_image_free(&im);
    free(out);
    sdc_weights_free(&w);
}

/* A palette PNG with a transparent entry (tRNS): that entry becomes white. */
TEST(image_decode_palette_with_transparency) {
    sdc_error err = {0};
    sdc_image im;
    REQUIRE_OK(sdc_image_load(test_data("images/palette_trns.png"), &im, &err), &err);
    CHECK_EQ_INT(im.w, 5);
    CHECK_EQ_INT(im.h, 3);
    /* first row: palette 0, 1, 2, 0, 1 = red, (transparent green →) white, blue, red, white */
    static const uint8_t want[15] = {255, 0, 0, 255, 255, 255, 0, 0, 255, 255, 0, 0, 255, 255, 255};
    CHECK(memcmp(im.rgb, want, sizeof want) == 0);
    sdc_image_free(&im);
}
