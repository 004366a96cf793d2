/* Dataset scanning, seeded orders and sample loading
 * (tools/make_dataset_tests.py -> tests/data/datasets). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "data/dataset.h"
#include "data/image_decode.h"
#include "data/transforms.h"
#include "test.h"

/* The item's path relative to tests/data/datasets/<layout>/. */
static const char *rel(const sdc_dataset *ds, int64_t i, const char *layout) {
    const char *p = ds->items[i].path;
    const char *at = strstr(p, layout);
    return at ? at + strlen(layout) + 1 : p;
}

TEST(dataset_imagefolder_metadata) {
    sdc_dataset ds;
    sdc_error err = {0};
    sdc_dataset_init(&ds);
    REQUIRE_OK(sdc_dataset_scan_imagefolder(&ds, test_data("datasets/imagefolder"), NULL, &err), &err);
    REQUIRE(ds.n == 3); /* unlisted.png is not in metadata.jsonl */
    CHECK_STR(rel(&ds, 0, "imagefolder"), "a.jpg");
    CHECK_STR(rel(&ds, 1, "imagefolder"), "b.png");
    CHECK_STR(rel(&ds, 2, "imagefolder"), "sub/c.png");
    CHECK_STR(ds.items[0].caption, "caf\xc3\xa9 \xe2\x98\x95 \xe7\x8c\xab");
    CHECK_STR(ds.items[1].caption, "a wide gradient");
    CHECK_STR(ds.items[2].caption, "first caption"); /* a list: its first */
    sdc_dataset_free(&ds);
    /* Another caption column. */
    REQUIRE_OK(sdc_dataset_scan_imagefolder(&ds, test_data("datasets/imagefolder"), "alt", &err), &err);
    REQUIRE(ds.n == 3);
    CHECK_STR(ds.items[0].caption, "A");
    CHECK_STR(ds.items[2].caption, "C");
    sdc_dataset_free(&ds);
}

TEST(dataset_imagefolder_plain) {
    sdc_dataset ds;
    sdc_error err = {0};
    sdc_dataset_init(&ds);
    REQUIRE_OK(sdc_dataset_scan_imagefolder(&ds, test_data("datasets/imagefolder_plain"), NULL, &err), &err);
    /* Recursive, byte order ('Y' < 's' < 'z'), notes.txt and .hidden.png skipped. */
    REQUIRE(ds.n == 3);
    CHECK_STR(rel(&ds, 0, "imagefolder_plain"), "Y.JPEG");
    CHECK_STR(rel(&ds, 1, "imagefolder_plain"), "sub/deeper/x.png");
    CHECK_STR(rel(&ds, 2, "imagefolder_plain"), "z.png");
    for (int64_t i = 0; i < ds.n; i++) CHECK_STR(ds.items[i].caption, "");
    sdc_dataset_free(&ds);
}

TEST(dataset_metadata_errors) {
    static const struct {
        const char *dir, *want1, *want2;
    } cases[] = {
        {"datasets/bad_json", "metadata.jsonl line 3", "invalid JSON"},
        {"datasets/bad_column", "metadata.jsonl line 2", "\"text\""},
        {"datasets/bad_file", "metadata.jsonl line 2", "missing.png"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sdc_dataset ds;
        sdc_error err = {0};
        sdc_dataset_init(&ds);
        sdc_status s = sdc_dataset_scan_imagefolder(&ds, test_data(cases[i].dir), NULL, &err);
        CHECK_MSG(s != SDC_OK, "%s: accepted", cases[i].dir);
        CHECK_MSG(strstr(err.msg, cases[i].want1) && strstr(err.msg, cases[i].want2), "%s: message \"%s\"",
                  cases[i].dir, err.msg);
        CHECK(strchr(err.msg, '\n') == NULL); /* one line */
        sdc_dataset_free(&ds);
    }
}

TEST(dataset_dir_errors) {
    sdc_dataset ds;
    sdc_error err = {0};
    sdc_dataset_init(&ds);
    const char *nodir = test_data("datasets/does_not_exist");
    CHECK(sdc_dataset_scan_imagefolder(&ds, nodir, NULL, &err) == SDC_ENOTFOUND);
    CHECK(strstr(err.msg, "does_not_exist") && strstr(err.msg, "does not exist"));
    CHECK(sdc_dataset_scan_captioned(&ds, nodir, NULL, 0, NULL, &err) == SDC_ENOTFOUND);
    CHECK(sdc_dataset_scan_images(&ds, nodir, "p", 0, &err) == SDC_ENOTFOUND);
    const char *empty = test_tmpdir();
    CHECK(sdc_dataset_scan_imagefolder(&ds, empty, NULL, &err) == SDC_ENOTFOUND);
    CHECK(strstr(err.msg, "no images") != NULL);
    CHECK(sdc_dataset_scan_captioned(&ds, empty, NULL, 0, NULL, &err) == SDC_ENOTFOUND);
    CHECK(sdc_dataset_scan_images(&ds, empty, "p", 0, &err) == SDC_ENOTFOUND);
    CHECK(sdc_dataset_scan_images(&ds, empty, "p", 1, &err) == SDC_OK); /* class dir before generation */
    CHECK(sdc_dataset_scan_images(&ds, nodir, "p", 1, &err) == SDC_OK);
    CHECK_EQ_INT(ds.n, 0);
    sdc_dataset_free(&ds);
}

TEST(dataset_kohya_captions) {
    sdc_dataset ds;
    sdc_error err = {0};
    sdc_dataset_init(&ds);
    int64_t missing = -1;
    REQUIRE_OK(sdc_dataset_scan_captioned(&ds, test_data("datasets/kohya"), NULL, 0, &missing, &err), &err);
    REQUIRE(ds.n == 3);
    CHECK_EQ_INT(missing, 1);
    CHECK_STR(rel(&ds, 0, "kohya"), "one.png");
    CHECK_STR(rel(&ds, 1, "kohya"), "three.png");
    CHECK_STR(rel(&ds, 2, "kohya"), "two.jpg");
    /* First line, trimmed; UTF-8 kept byte for byte. */
    CHECK_STR(ds.items[0].caption, "a photo of sks dog, \xc3\xa9t\xc3\xa9 \xf0\x9f\x90\xb6");
    CHECK_STR(ds.items[1].caption, "");
    CHECK_STR(ds.items[2].caption, "caption file"); /* BOM and \r\n dropped */
    sdc_dataset_free(&ds);
    /* Only ".caption" asked for: one.txt is not read. */
    REQUIRE_OK(sdc_dataset_scan_captioned(&ds, test_data("datasets/kohya"), ".caption", 0, &missing, &err), &err);
    CHECK_EQ_INT(missing, 2);
    CHECK_STR(ds.items[0].caption, "");
    CHECK_STR(ds.items[2].caption, "caption file");
    sdc_dataset_free(&ds);
}

TEST(dataset_caption_limits) {
    const char *dir = test_tmpdir();
    sdc_error err = {0};
    char *png;
    size_t len;
    REQUIRE_OK(sdc_read_file(test_data("datasets/kohya/three.png"), &png, &len, &err), &err);
    char *ip = sdc_path_join(dir, "big.png"), *cp = sdc_path_join(dir, "big.txt");
    REQUIRE_OK(sdc_write_file_atomic(ip, png, len, &err), &err);
    size_t n = SDC_DATASET_MAX_CAPTION + 1;
    char *cap = malloc(n + 1);
    REQUIRE(cap);
    memset(cap, 'a', n);
    cap[n] = '\0';
    REQUIRE_OK(sdc_write_file_atomic(cp, cap, n, &err), &err);
    sdc_dataset ds;
    sdc_dataset_init(&ds);
    CHECK(sdc_dataset_scan_captioned(&ds, dir, NULL, 0, NULL, &err) == SDC_ELIMIT);
    CHECK(strstr(err.msg, "big.txt") != NULL);
    CHECK(sdc_dataset_push(&ds, "x.png", cap, &err) == SDC_ELIMIT);
    cap[n - 1] = '\0'; /* exactly at the limit: accepted */
    CHECK(sdc_dataset_push(&ds, "x.png", cap, &err) == SDC_OK);
    /* Invalid UTF-8 in a caption file is named. */
    REQUIRE_OK(sdc_write_file_atomic(cp, "bad \xff\xfe caption", 14, &err), &err);
    sdc_dataset_free(&ds);
    CHECK(sdc_dataset_scan_captioned(&ds, dir, NULL, 0, NULL, &err) == SDC_EFORMAT);
    CHECK(strstr(err.msg, "big.txt") && strstr(err.msg, "UTF-8"));
    sdc_dataset_free(&ds);
    free(cap);
    free(ip);
    free(cp);
    free(png);
}

TEST(dataset_dreambooth) {
    sdc_dataset inst, cls;
    sdc_error err = {0};
    sdc_dataset_init(&inst);
    sdc_dataset_init(&cls);
    REQUIRE_OK(sdc_dataset_scan_images(&inst, test_data("datasets/dreambooth/instance"), "a photo of sks dog", 0,
                                       &err),
               &err);
    REQUIRE(inst.n == 2); /* sub/nested.png not read: flat, as Path.iterdir() */
    CHECK_STR(rel(&inst, 0, "instance"), "i0.jpg");
    CHECK_STR(rel(&inst, 1, "instance"), "i1.png");
    CHECK_STR(inst.items[1].caption, "a photo of sks dog");
    REQUIRE_OK(sdc_dataset_scan_images(&cls, test_data("datasets/dreambooth/class"), "a photo of dog", 1, &err),
               &err);
    CHECK_EQ_INT(cls.n, 1);
    CHECK_STR(cls.items[0].caption, "a photo of dog");
    int64_t missing = -1;
    REQUIRE_OK(sdc_dataset_class_images_missing(test_data("datasets/dreambooth/class"), 5, &missing, &err), &err);
    CHECK_EQ_INT(missing, 4);
    REQUIRE_OK(sdc_dataset_class_images_missing(test_data("datasets/dreambooth/class"), 1, &missing, &err), &err);
    CHECK_EQ_INT(missing, 0);
    REQUIRE_OK(sdc_dataset_class_images_missing(test_data("datasets/dreambooth/none"), 3, &missing, &err), &err);
    CHECK_EQ_INT(missing, 3);
    sdc_dataset_free(&inst);
    sdc_dataset_free(&cls);
}

static int fill_synthetic(sdc_dataset *ds, int n) {
    sdc_error err = {0};
    char name[32];
    sdc_dataset_init(ds);
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "img%05d.png", i);
        if (sdc_dataset_push(ds, name, name, &err) != SDC_OK) return 0;
    }
    return 1;
}

static int is_permutation(const int64_t *p, int64_t n) {
    char *seen = calloc((size_t)n + 1, 1);
    int ok = seen != NULL;
    for (int64_t i = 0; ok && i < n; i++) {
        if (p[i] < 0 || p[i] >= n || seen[p[i]]) ok = 0;
        else seen[p[i]] = 1;
    }
    free(seen);
    return ok;
}

TEST(dataset_epoch_order) {
    enum { N = 1000 };
    sdc_dataset ds;
    REQUIRE(fill_synthetic(&ds, N));
    static int64_t a[N], b[N], c[N], d[N];
    sdc_dataset_epoch_order(&ds, 42, 3, a);
    sdc_dataset_epoch_order(&ds, 42, 3, b); /* no earlier epochs replayed */
    sdc_dataset_epoch_order(&ds, 42, 4, c);
    sdc_dataset_epoch_order(&ds, 43, 3, d);
    CHECK(is_permutation(a, N));
    CHECK(is_permutation(c, N));
    CHECK(memcmp(a, b, sizeof a) == 0);
    /* Two independent uniform permutations agree everywhere with
     * probability 1/1000!; fixed points alone average 1. */
    int same_c = 0, same_d = 0, fixed = 0;
    for (int i = 0; i < N; i++) {
        same_c += a[i] == c[i];
        same_d += a[i] == d[i];
        fixed += a[i] == i;
    }
    CHECK_MSG(same_c < 20 && same_d < 20 && fixed < 20, "same %d %d fixed %d", same_c, same_d, fixed);
    /* Uniformity, coarsely: where item 0 lands over 2000 epochs, in 4 bins
     * of 250 positions, expects 500 each; a 6-sigma band (sd ~19) keeps
     * this test deterministic-pass for a correct shuffle. */
    int bins[4] = {0};
    for (int e = 0; e < 2000; e++) {
        sdc_dataset_epoch_order(&ds, 7, (uint64_t)e, a);
        for (int i = 0; i < N; i++)
            if (a[i] == 0) bins[i / 250]++;
    }
    for (int k = 0; k < 4; k++) CHECK_MSG(bins[k] > 385 && bins[k] < 615, "bin %d: %d", k, bins[k]);
    /* Tiny sets. */
    sdc_dataset one;
    REQUIRE(fill_synthetic(&one, 1));
    sdc_dataset_epoch_order(&one, 1, 1, a);
    CHECK_EQ_INT(a[0], 0);
    sdc_dataset_free(&one);
    sdc_dataset_free(&ds);
    CHECK_EQ_INT(sdc_dataset_num_batches(10, 4, 0), 3);
    CHECK_EQ_INT(sdc_dataset_num_batches(10, 4, 1), 2);
    CHECK_EQ_INT(sdc_dataset_num_batches(8, 4, 0), 2);
    CHECK_EQ_INT(sdc_dataset_num_batches(3, 4, 1), 0);
}

TEST(dataset_select) {
    sdc_dataset a, b;
    REQUIRE(fill_synthetic(&a, 100));
    REQUIRE(fill_synthetic(&b, 100));
    sdc_dataset_select(&a, 10, 5);
    sdc_dataset_select(&b, 10, 5);
    REQUIRE(a.n == 10 && b.n == 10);
    int in_order = 1;
    for (int i = 0; i < 10; i++) {
        CHECK_STR(a.items[i].path, b.items[i].path);
        CHECK_STR(a.items[i].path, a.items[i].caption); /* pairs kept together */
        for (int j = 0; j < i; j++) CHECK(strcmp(a.items[i].path, a.items[j].path) != 0);
        char want[32];
        snprintf(want, sizeof want, "img%05d.png", i);
        in_order &= strcmp(a.items[i].path, want) == 0;
    }
    CHECK(!in_order); /* shuffled, not the first 10 */
    sdc_dataset_select(&a, 0, 5); /* no-op */
    sdc_dataset_select(&a, 50, 5);
    CHECK_EQ_INT(a.n, 10);
    sdc_dataset_free(&a);
    sdc_dataset_free(&b);
}

TEST(dataset_load_sample) {
    sdc_dataset ds;
    sdc_error err = {0};
    sdc_dataset_init(&ds);
    REQUIRE_OK(sdc_dataset_scan_imagefolder(&ds, test_data("datasets/imagefolder"), NULL, &err), &err);
    enum { R = 16, NF = 3 * R * R };
    static float x[NF], y[NF];
    sdc_sample_opts o = {.resolution = R, .center_crop = 0, .random_flip = 1};
    sdc_sample_info ia, ib;
    /* b.png is 40x24 -> resized 26x16: left in [0, 10], top 0. */
    REQUIRE_OK(sdc_dataset_load_sample(&ds, 1, &o, 9, 0, x, &ia, &err), &err);
    CHECK_EQ_INT(ia.orig_w, 40);
    CHECK_EQ_INT(ia.orig_h, 24);
    CHECK_EQ_INT(ia.crop_top, 0);
    CHECK(ia.crop_left >= 0 && ia.crop_left <= 10);
    float lo = 2, hi = -2;
    for (int i = 0; i < NF; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    CHECK(lo >= -1.0f && hi <= 1.0f && hi - lo > 0.5f);
    /* Same (seed, epoch, index) -> same pixels, whatever was loaded between. */
    REQUIRE_OK(sdc_dataset_load_sample(&ds, 0, &o, 9, 0, y, &ib, &err), &err);
    REQUIRE_OK(sdc_dataset_load_sample(&ds, 1, &o, 9, 0, y, &ib, &err), &err);
    CHECK(memcmp(x, y, sizeof x) == 0);
    CHECK(ia.crop_left == ib.crop_left && ia.flipped == ib.flipped);
    /* Across epochs the draws change: over 20 epochs both flips and more
     * than one offset appear (a fixed stream would fail with certainty;
     * a correct one with probability < 1e-5). */
    int flips = 0, lefts = 0;
    for (int e = 0; e < 20; e++) {
        REQUIRE_OK(sdc_dataset_load_sample(&ds, 1, &o, 9, (uint64_t)e, y, &ib, &err), &err);
        flips += ib.flipped;
        lefts |= 1 << ib.crop_left;
    }
    CHECK_MSG(flips > 0 && flips < 20, "flips %d/20", flips);
    CHECK(__builtin_popcount(lefts) > 1);
    /* Without --random_flip nothing flips; --center_crop gives the center. */
    sdc_sample_opts oc = {.resolution = R, .center_crop = 1, .random_flip = 0};
    for (int e = 0; e < 8; e++) {
        REQUIRE_OK(sdc_dataset_load_sample(&ds, 1, &oc, 9, (uint64_t)e, y, &ib, &err), &err);
        CHECK(!ib.flipped && ib.crop_left == 5 && ib.crop_top == 0);
    }
    sdc_dataset_free(&ds);
}

/* The SDXL order (flip the resized image, then crop at the recorded left),
 * built independently from the resize and a manual mirror. */
TEST(dataset_sample_sdxl_flip) {
    sdc_dataset ds;
    sdc_error err = {0};
    sdc_dataset_init(&ds);
    REQUIRE_OK(sdc_dataset_scan_imagefolder(&ds, test_data("datasets/imagefolder"), NULL, &err), &err);
    enum { R = 16, RW = 26, RH = 16 };
    static float x[3 * R * R];
    sdc_image im;
    REQUIRE_OK(sdc_image_load(ds.items[1].path, &im, &err), &err);
    static uint8_t rs[RW * RH * 3];
    REQUIRE_OK(sdc_resize_bilinear_pil(im.rgb, im.w, im.h, rs, RW, RH, &err), &err);
    sdc_image_free(&im);
    int tested_flip = 0;
    for (int centre = 0; centre < 2; centre++)
        for (int e = 0; e < 16; e++) {
            sdc_sample_opts o = {.resolution = R, .center_crop = centre, .random_flip = 1, .flip_before_crop = 1};
            sdc_sample_info in;
            REQUIRE_OK(sdc_dataset_load_sample(&ds, 1, &o, 3, (uint64_t)e, x, &in, &err), &err);
            if (centre) CHECK_EQ_INT(in.crop_left, 5); /* round(10 / 2) */
            tested_flip += in.flipped;
            int bad = 0;
            for (int c = 0; c < 3; c++)
                for (int yy = 0; yy < R; yy++)
                    for (int xx = 0; xx < R; xx++) {
                        int sx = in.crop_left + xx; /* in the (maybe flipped) resized image */
                        if (in.flipped) sx = RW - 1 - sx;
                        uint8_t v = rs[((in.crop_top + yy) * RW + sx) * 3 + c];
                        float want = ((float)v / 255.0f - 0.5f) / 0.5f;
                        bad += x[(c * R + yy) * R + xx] != want;
                    }
            CHECK_MSG(bad == 0, "epoch %d centre %d: %d pixels differ", e, centre, bad);
        }
    CHECK(tested_flip > 0);
    sdc_dataset_free(&ds);
}

TEST(dataset_sample_errors) {
    sdc_dataset ds;
    sdc_error err = {0};
    sdc_dataset_init(&ds);
    REQUIRE_OK(sdc_dataset_push(&ds, test_data("datasets/corrupt/broken.png"), "", &err), &err);
    REQUIRE_OK(sdc_dataset_push(&ds, test_data("datasets/gone.png"), "", &err), &err);
    static float x[3 * 8 * 8];
    sdc_sample_opts o = {.resolution = 8};
    CHECK(sdc_dataset_load_sample(&ds, 0, &o, 1, 0, x, NULL, &err) != SDC_OK);
    CHECK(strstr(err.msg, "broken.png") != NULL);
    CHECK(sdc_dataset_load_sample(&ds, 1, &o, 1, 0, x, NULL, &err) == SDC_ENOTFOUND);
    CHECK(strstr(err.msg, "gone.png") != NULL);
    sdc_dataset_free(&ds);
}
