/* PNG write/read with text chunks, the diffusers pixel conversion, grids. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/fs.h"
#include "data/image.h"
#include "data/png.h"
#include "test.h"

static int contains(const char *hay, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(hay + i, needle, k) == 0) return 1;
    return 0;
}

TEST(png_roundtrip_text) {
    enum { W = 7, H = 5 };
    uint8_t px[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) px[i] = (uint8_t)(i * 37 + 11);
    const char *keys[] = {"parameters", "Comment", "prompt"};
    const char *values[] = {"a cat\nSteps: 20, Sampler: Euler a, Seed: 42",
                            "caf\xc3\xa9",                                  /* "café": Latin-1, so tEXt */
                            "\xe7\x8c\xab \xf0\x9f\x90\xb1 on a mat"}; /* "猫 🐱": needs iTXt */
    char *path = sdc_path_join(test_tmpdir(), "rt.png");
    sdc_error err;
    REQUIRE_OK(sdc_png_write(path, px, W, H, 3, keys, values, 3, &err), &err);

    /* the chunk types chosen, and the Latin-1 byte of "é" in the tEXt */
    char *file;
    size_t len;
    REQUIRE_OK(sdc_read_file(path, &file, &len, &err), &err);
    CHECK(contains(file, len, "tEXtparameters"));
    CHECK(contains(file, len, "tEXtComment\0caf\xe9"));
    CHECK(contains(file, len, "iTXtprompt"));
    free(file);

    for (int k = 0; k < 3; k++) {
        uint8_t *back;
        int w, h;
        char *text;
        REQUIRE_OK(sdc_png_read(path, &back, &w, &h, &text, keys[k], &err), &err);
        CHECK_EQ_INT(w, W);
        CHECK_EQ_INT(h, H);
        CHECK(memcmp(back, px, sizeof px) == 0);
        CHECK_STR(text, values[k]);
        free(back);
        free(text);
    }
    uint8_t *back;
    int w, h;
    char *text = (char *)1;
    REQUIRE_OK(sdc_png_read(path, &back, &w, &h, &text, "absent", &err), &err);
    CHECK(text == NULL);
    free(back);
    REQUIRE_OK(sdc_png_read(path, &back, &w, &h, NULL, NULL, &err), &err);
    free(back);
    free(path);
}

TEST(png_rgba_reads_as_rgb) {
    uint8_t px[2 * 2 * 4] = {1, 2, 3, 255, 4, 5, 6, 0, 7, 8, 9, 128, 10, 11, 12, 1};
    char *path = sdc_path_join(test_tmpdir(), "rgba.png");
    sdc_error err;
    REQUIRE_OK(sdc_png_write(path, px, 2, 2, 4, NULL, NULL, 0, &err), &err);
    uint8_t *back;
    int w, h;
    REQUIRE_OK(sdc_png_read(path, &back, &w, &h, NULL, NULL, &err), &err);
    /* composited on white: round((c·a + 255·(255 − a)) / 255) */
    const uint8_t want[12] = {1, 2, 3, 255, 255, 255, 131, 131, 132, 254, 254, 254};
    CHECK(w == 2 && h == 2 && memcmp(back, want, 12) == 0);
    free(back);
    free(path);
}

TEST(png_write_errors) {
    uint8_t px[3] = {0};
    sdc_error err;
    char *dir = sdc_path_join(test_tmpdir(), "no/such/dir");
    char *path = sdc_path_join(dir, "x.png");
    CHECK(sdc_png_write(path, px, 1, 1, 3, NULL, NULL, 0, &err) == SDC_EIO);
    CHECK_MSG(strstr(err.msg, path) != NULL, "message does not name the path: %s", err.msg);
    CHECK(!sdc_path_exists(path));

    char *ok = sdc_path_join(test_tmpdir(), "k.png");
    const char *v[] = {"x"};
    const char *bad_keys[] = {"", " lead", "two  spaces", "\xe7\x8c\xab", "tab\there",
                              "0123456789012345678901234567890123456789012345678901234567890123456789012345678912"};
    for (size_t i = 0; i < sizeof bad_keys / sizeof *bad_keys; i++) {
        CHECK_MSG(sdc_png_write(ok, px, 1, 1, 3, &bad_keys[i], v, 1, &err) == SDC_EINVAL, "key %zu accepted", i);
        CHECK(!sdc_path_exists(ok));
    }
    const char *latin1_key[] = {"K\xc3\xbc"}; /* "Kü" is a valid Latin-1 keyword */
    REQUIRE_OK(sdc_png_write(ok, px, 1, 1, 3, latin1_key, v, 1, &err), &err);
    char *text;
    uint8_t *back;
    int w, h;
    REQUIRE_OK(sdc_png_read(ok, &back, &w, &h, &text, "K\xc3\xbc", &err), &err);
    CHECK_STR(text, "x");
    free(text);
    free(back);
    const char *bad_utf8[] = {"\xff\xfe"};
    const char *k[] = {"k"};
    CHECK(sdc_png_write(ok, px, 1, 1, 3, k, bad_utf8, 1, &err) == SDC_EINVAL);
    CHECK(sdc_png_write(ok, px, 0, 1, 3, NULL, NULL, 0, &err) == SDC_EINVAL);
    CHECK(sdc_png_write(ok, px, 1, 1, 2, NULL, NULL, 0, &err) == SDC_EINVAL);
    free(ok);
    free(path);
    free(dir);
}

TEST(png_read_errors) {
    enum { W = 64, H = 64 };
    static uint8_t px[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) px[i] = (uint8_t)((i * 7919) >> 3); /* poorly compressible */
    char *path = sdc_path_join(test_tmpdir(), "full.png");
    char *cut = sdc_path_join(test_tmpdir(), "cut.png");
    sdc_error err;
    REQUIRE_OK(sdc_png_write(path, px, W, H, 3, NULL, NULL, 0, &err), &err);
    char *file;
    size_t len;
    REQUIRE_OK(sdc_read_file(path, &file, &len, &err), &err);
    uint8_t *back = NULL;
    int w, h;
    /* cut inside the image data, inside the header, and before the IEND */
    size_t cuts[] = {len / 2, 20, len - 6};
    for (int i = 0; i < 3; i++) {
        REQUIRE_OK(sdc_write_file_atomic(cut, file, cuts[i], &err), &err);
        CHECK_MSG(sdc_png_read(cut, &back, &w, &h, NULL, NULL, &err) == SDC_EFORMAT, "cut at %zu read", cuts[i]);
        CHECK(back == NULL);
        CHECK_MSG(strstr(err.msg, cut) != NULL, "message does not name the path: %s", err.msg);
    }
    /* not a PNG at all */
    REQUIRE_OK(sdc_write_file_atomic(cut, "GIF89a....", 10, &err), &err);
    CHECK(sdc_png_read(cut, &back, &w, &h, NULL, NULL, &err) == SDC_EFORMAT);
    CHECK(strstr(err.msg, "not a PNG") != NULL);
    /* missing file */
    CHECK(sdc_png_read("/nonexistent/x.png", &back, &w, &h, NULL, NULL, &err) != SDC_OK);
    free(file);
    free(path);
    free(cut);
}

/* A file claiming 20000 x 8 pixels (header with a valid CRC, then an empty
 * IDAT and IEND) is refused before any pixel memory is allocated. */
static unsigned char *put_chunk(unsigned char *p, const char *type, const unsigned char *data, uint32_t n) {
    unsigned char *start = p;
    *p++ = (unsigned char)(n >> 24), *p++ = (unsigned char)(n >> 16), *p++ = (unsigned char)(n >> 8), *p++ = (unsigned char)n;
    memcpy(p, type, 4);
    p += 4;
    if (n) memcpy(p, data, n);
    p += n;
    uint32_t crc = (uint32_t)crc32(0L, start + 4, 4 + n);
    *p++ = (unsigned char)(crc >> 24), *p++ = (unsigned char)(crc >> 16), *p++ = (unsigned char)(crc >> 8), *p++ = (unsigned char)crc;
    return p;
}

TEST(png_read_size_limit) {
    unsigned char f[128], *p = f;
    memcpy(p, "\x89PNG\r\n\x1a\n", 8);
    p += 8;
    const unsigned char ihdr[13] = {0, 0, 0x4e, 0x20, 0, 0, 0, 8, 8, 2, 0, 0, 0}; /* 20000 x 8, 8-bit RGB */
    p = put_chunk(p, "IHDR", ihdr, 13);
    p = put_chunk(p, "IDAT", NULL, 0);
    p = put_chunk(p, "IEND", NULL, 0);
    char *path = sdc_path_join(test_tmpdir(), "huge.png");
    sdc_error err;
    REQUIRE_OK(sdc_write_file_atomic(path, f, (size_t)(p - f), &err), &err);
    uint8_t *back = NULL;
    int w, h;
    CHECK(sdc_png_read(path, &back, &w, &h, NULL, NULL, &err) == SDC_ELIMIT);
    CHECK_MSG(strstr(err.msg, "20000x8") != NULL, "%s", err.msg);
    CHECK(back == NULL);
    free(path);
}

/* diffusers: (x*0.5+0.5).clamp(0,1), then (v*255).round() with numpy's
 * ties-to-even. The inputs below were checked in float32 with torch+numpy:
 * -0.00784313678741455 (0xbc008080) gives v*255 = 126.5 exactly -> 126 (a
 * naive +0.5 truncation says 127); 0.99607843160629 (0x3f7efeff) gives
 * 254.5 -> 254; 0 gives 127.5 -> 128; 0.5 gives 191.25 -> 191; -0.5 gives
 * 63.75 -> 64; out of range clamps; NaN -> 0. */
TEST(image_from_chw_rounding) {
    uint32_t bits[] = {0xbc008080u, 0x3f7efeffu};
    float a, b;
    memcpy(&a, &bits[0], 4);
    memcpy(&b, &bits[1], 4);
    const float xs[9] = {a, b, 0.0f, 0.5f, -0.5f, -1.0f, 1.0f, 3.0f, NAN};
    const uint8_t want[9] = {126, 254, 128, 191, 64, 0, 255, 255, 0};
    /* one 3x3 image whose three planes are xs, reversed xs, and xs again */
    float chw[27];
    for (int i = 0; i < 9; i++) {
        chw[i] = xs[i];
        chw[9 + i] = xs[8 - i];
        chw[18 + i] = xs[i];
    }
    uint8_t rgb[27];
    sdc_image_from_chw(chw, 3, 3, rgb);
    for (int i = 0; i < 9; i++) {
        CHECK_MSG(rgb[3 * i] == want[i], "x=%.9g -> %d, want %d", xs[i], rgb[3 * i], want[i]);
        CHECK_EQ_INT(rgb[3 * i + 1], want[8 - i]);
        CHECK_EQ_INT(rgb[3 * i + 2], want[i]);
    }
}

TEST(image_grid_layout) {
    CHECK_EQ_INT(sdc_grid_cols(0), 1);
    CHECK_EQ_INT(sdc_grid_cols(1), 1);
    CHECK_EQ_INT(sdc_grid_cols(2), 2);
    CHECK_EQ_INT(sdc_grid_cols(4), 2);
    CHECK_EQ_INT(sdc_grid_cols(5), 3);
    CHECK_EQ_INT(sdc_grid_cols(9), 3);
    CHECK_EQ_INT(sdc_grid_cols(10), 4);
    CHECK_EQ_INT(sdc_grid_rows(3, 2), 2);
    CHECK_EQ_INT(sdc_grid_rows(4, 2), 2);
    CHECK_EQ_INT(sdc_grid_rows(5, 3), 2);

    /* three 2x1 images (w=2, h=1) in 2 columns: row 0 = img0 img1, row 1 = img2 black */
    uint8_t i0[6] = {1, 1, 1, 2, 2, 2}, i1[6] = {3, 3, 3, 4, 4, 4}, i2[6] = {5, 5, 5, 6, 6, 6};
    const uint8_t *imgs[3] = {i0, i1, i2};
    uint8_t out[2 * 1 * 2 * 2 * 3];
    memset(out, 0xee, sizeof out);
    sdc_image_grid(imgs, 3, 2, 1, 2, out);
    const uint8_t want[24] = {1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6, 0, 0, 0, 0, 0, 0};
    CHECK(memcmp(out, want, sizeof want) == 0);
}
