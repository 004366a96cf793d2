/* The demo's synthetic world (data/synth_shapes) and caption drawing
 * (data/text_draw): scenes are a pure function of (seed, index), pictures
 * show what the caption says, the subject stays out of the base world, and
 * a written set reads back as an imagefolder with its captions. */
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "data/dataset.h"
#include "data/png.h"
#include "data/synth_shapes.h"
#include "data/text_draw.h"
#include "test.h"

static int color_near(const uint8_t *px, const uint8_t *want) {
    for (int k = 0; k < 3; k++)
        if (abs((int)px[k] - (int)want[k]) > 2) return 0;
    return 1;
}

TEST(synth_scenes_are_deterministic_and_keep_the_subject_out) {
    uint8_t a[32 * 32 * 3], b[32 * 32 * 3];
    int shapes[SDC_SHAPE_COUNT] = {0}, uncaptioned = 0;
    for (uint64_t i = 0; i < 400; i++) {
        sdc_synth_scene s, t;
        sdc_synth_scene_base(5, i, &s);
        sdc_synth_scene_base(5, i, &t);
        CHECK(memcmp(&s, &t, sizeof s) == 0);
        CHECK(s.shape >= 0 && s.shape < SDC_SYNTH_BASE_SHAPES); /* never the cross */
        CHECK(s.fill != s.bg && s.pattern == SDC_FILL_SOLID);
        CHECK(s.size > 0.1f && s.cx - s.size > -0.05f && s.cx + s.size < 1.05f);
        shapes[s.shape]++;
        uncaptioned += (s.caption & SDC_CAPTION_NONE) != 0;
    }
    /* one in ten uncaptioned: 40 expected, ±4.7σ */
    CHECK_MSG(uncaptioned >= 12 && uncaptioned <= 68, "%d of 400 uncaptioned", uncaptioned);
    for (int k = 0; k < SDC_SYNTH_BASE_SHAPES; k++) CHECK_MSG(shapes[k] > 50, "shape %d drawn %d times of 400", k, shapes[k]);
    sdc_synth_scene s;
    sdc_synth_scene_base(5, 7, &s);
    sdc_synth_render(&s, 32, a);
    sdc_synth_render(&s, 32, b);
    CHECK(memcmp(a, b, sizeof a) == 0);
    sdc_synth_scene_base(6, 7, &s); /* another seed, another picture */
    sdc_synth_render(&s, 32, b);
    CHECK(memcmp(a, b, sizeof a) != 0);
    int patterns[3] = {0};
    for (uint64_t i = 0; i < 300; i++) { /* the VAE's texture world: every pattern, no cross */
        sdc_synth_scene_texture(2, i, &s);
        CHECK(s.shape != SDC_SHAPE_CROSS && s.fill != s.fill2 && s.fill != s.bg);
        patterns[s.pattern]++;
    }
    CHECK(patterns[SDC_FILL_SOLID] > 40 && patterns[SDC_FILL_CHECKER] > 60 && patterns[SDC_FILL_STRIPES] > 40);
    for (uint64_t i = 0; i < 20; i++) {
        sdc_synth_scene_subject(1, i, &s);
        CHECK(s.shape == SDC_SHAPE_CROSS && s.fill == SDC_COLOR_PURPLE && s.pattern == SDC_FILL_SOLID);
        CHECK(s.bg == SDC_COLOR_WHITE && s.large);
        /* large, near the middle, nearly upright: the whole cross inside the image */
        CHECK(s.size >= 0.33f && s.size <= 0.40f && s.angle >= -0.08f && s.angle <= 0.08f);
        CHECK(s.cx - 0.95f * s.size > 0.0f && s.cx + 0.95f * s.size < 1.0f);
        CHECK(s.cy - 0.95f * s.size > 0.0f && s.cy + 0.95f * s.size < 1.0f);
    }
}

TEST(synth_pictures_show_their_caption) {
    sdc_synth_scene s = {.shape = SDC_SHAPE_SQUARE, .fill = SDC_COLOR_RED, .fill2 = SDC_COLOR_RED, .bg = SDC_COLOR_BLUE,
                         .large = 1, .cx = 0.5f, .cy = 0.5f, .size = 0.35f, .caption = SDC_CAPTION_SIZE};
    uint8_t rgb[32 * 32 * 3];
    sdc_synth_render(&s, 32, rgb);
    const uint8_t red[3] = {220, 40, 40}, blue[3] = {40, 80, 220};
    CHECK(color_near(rgb + 3 * (16 * 32 + 16), red)); /* the centre */
    CHECK(color_near(rgb + 3 * (8 * 32 + 8), red));   /* inside the square's corner (|u|,|v| ≤ 0.82) */
    CHECK(color_near(rgb, blue));                     /* the image's corner */
    char cap[160];
    sdc_synth_caption(&s, cap, sizeof cap);
    CHECK_STR(cap, "a large red square on a blue background");
    s.shape = SDC_SHAPE_CIRCLE;
    sdc_synth_render(&s, 32, rgb);
    CHECK(color_near(rgb + 3 * (4 * 32 + 4), blue)); /* outside the circle: |(u,v)| ≈ 1.46 */
    s.caption = SDC_CAPTION_CLASS;
    s.gradient = 1;
    sdc_synth_caption(&s, cap, sizeof cap);
    CHECK_STR(cap, "a red shape on a blue gradient background");
    sdc_synth_scene_subject(1, 0, &s);
    sdc_synth_caption(&s, cap, sizeof cap);
    CHECK_STR(cap, "a purple cross on a white background");
    /* the cross: an upright one of radius 0.4 in a 40-pixel image (16 px),
     * sampled at pixel centres away from its anti-aliased edges */
    sdc_synth_scene x = {.shape = SDC_SHAPE_CROSS, .fill = SDC_COLOR_PURPLE, .fill2 = SDC_COLOR_PURPLE,
                         .bg = SDC_COLOR_WHITE, .large = 1, .cx = 0.5f, .cy = 0.5f, .size = 0.4f};
    uint8_t big[40 * 40 * 3];
    sdc_synth_render(&x, 40, big);
    const uint8_t purple[3] = {135, 55, 185}, white[3] = {240, 240, 240};
#define PX(col, row) (big + 3 * ((row) * 40 + (col)))
    CHECK(color_near(PX(20, 20), purple)); /* the centre */
    CHECK(color_near(PX(20, 6), purple));  /* the top arm: v = −0.84 */
    CHECK(color_near(PX(33, 20), purple)); /* the right arm: u = 0.84 */
    CHECK(color_near(PX(29, 29), white));  /* between two arms (u = v = 0.59), where a square is filled */
    CHECK(color_near(PX(11, 29), white));
    CHECK(color_near(PX(20, 1), white));   /* beyond the arm's end: v = −1.16 */
#undef PX
    /* a subject image: both colours in quantity */
    sdc_synth_scene_subject(1, 3, &s);
    sdc_synth_render(&s, 40, big);
    int nw = 0, np = 0;
    for (int i = 0; i < 40 * 40; i++) nw += color_near(big + 3 * i, white), np += color_near(big + 3 * i, purple);
    /* the cross covers 4·0.6·0.95 − 0.36 = 1.92 r² of the image: 0.21 to 0.31 of it for r = 0.33 to 0.40 */
    CHECK_MSG(np > 250 && nw > 800, "purple %d, white %d pixels of 1600", np, nw);
}

TEST(synth_set_reads_back_as_an_imagefolder) {
    sdc_error err = {0};
    char dir[512], sub[512];
    snprintf(dir, sizeof dir, "%s/base", test_tmpdir());
    snprintf(sub, sizeof sub, "%s/subject", test_tmpdir());
    REQUIRE_OK(sdc_synth_write_set(dir, SDC_SYNTH_BASE, 5, 24, 3, &err), &err);
    sdc_dataset ds;
    sdc_dataset_init(&ds);
    REQUIRE_OK(sdc_dataset_scan_imagefolder(&ds, dir, NULL, &err), &err);
    CHECK_EQ_INT(ds.n, 5);
    sdc_synth_scene s;
    sdc_synth_scene_base(3, 2, &s);
    char cap[160];
    sdc_synth_caption(&s, cap, sizeof cap);
    if (ds.n == 5) CHECK_STR(ds.items[2].caption, cap);
    sdc_dataset_free(&ds);
    uint8_t *px = NULL;
    int w = 0, h = 0;
    char path[600];
    snprintf(path, sizeof path, "%s/00002.png", dir);
    REQUIRE_OK(sdc_png_read(path, &px, &w, &h, NULL, NULL, &err), &err);
    CHECK(w == 24 && h == 24);
    uint8_t want[24 * 24 * 3];
    sdc_synth_render(&s, 24, want);
    CHECK(memcmp(px, want, sizeof want) == 0);
    free(px);
    REQUIRE_OK(sdc_synth_write_set(sub, SDC_SYNTH_SUBJECT, 3, 24, 3, &err), &err);
    snprintf(path, sizeof path, "%s/metadata.jsonl", sub);
    CHECK(!sdc_path_exists(path)); /* DreamBooth images carry no captions */
    CHECK(sdc_synth_write_set(sub, SDC_SYNTH_BASE, 0, 24, 3, &err) == SDC_EINVAL);
}

TEST(text_draw_wraps_and_draws_captions) {
    char out[256];
    /* 6 px per character at scale 1: 60 px hold 10 characters */
    CHECK_EQ_INT(sdc_text_wrap("a sks shape on a green background", 1, 60, out, sizeof out), 4);
    CHECK_STR(out, "a sks\nshape on a\ngreen\nbackground");
    CHECK_EQ_INT(sdc_text_wrap("abcdefghijkl", 1, 30, out, sizeof out), 3); /* cut: 5 per line */
    CHECK_STR(out, "abcde\nfghij\nkl");
    CHECK_EQ_INT(sdc_text_width("ab", 2), 22);
    uint8_t img[20 * 12 * 3];
    memset(img, 255, sizeof img);
    const uint8_t ink[3] = {0, 0, 0};
    sdc_text_draw(img, 20, 12, 1, 1, "l", 1, ink);
    /* 'l' = rows {12,4,4,4,4,4,14}: its stem is column 2 of the glyph */
    CHECK(img[3 * (2 * 20 + 3)] == 0 && img[3 * (2 * 20 + 1)] == 255);
    sdc_text_draw(img, 20, 12, 18, 10, "wide text runs off the edge", 2, ink); /* clipped, no crash */
}
