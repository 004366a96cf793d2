#include <stdint.h>
#include <stdlib.h>

#include "core/arena.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/rng.h"
#include "core/strmap.h"
#include "core/tensor.h"
#include "test.h"

TEST(core_f16_roundtrip) {
    /* every finite half survives f16 -> f32 -> f16 exactly */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaN payloads */
        uint16_t back = sdc_f32_to_f16(sdc_f16_to_f32((uint16_t)h));
        if (back != h) {
            CHECK_MSG(0, "f16 0x%04x -> %g -> 0x%04x", h, sdc_f16_to_f32((uint16_t)h), back);
            return;
        }
    }
    CHECK_EQ_INT(sdc_f32_to_f16(1.0f), 0x3c00);
    CHECK_EQ_INT(sdc_f32_to_f16(65504.0f), 0x7bff);
    CHECK_EQ_INT(sdc_f32_to_f16(65520.0f), 0x7c00);       /* rounds to inf */
    CHECK_EQ_INT(sdc_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00); /* tie -> even */
    CHECK_EQ_INT(sdc_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02); /* tie -> even (up) */
    CHECK_EQ_INT(sdc_f32_to_f16(5.9604645e-08f), 0x0001);   /* smallest subnormal */
    CHECK_EQ_INT(sdc_f32_to_f16(2.9802322e-08f), 0x0000);   /* half of it: tie -> 0 */
    CHECK_EQ_INT(sdc_f32_to_f16(-2.0f), 0xc000);
    CHECK(isnan(sdc_f16_to_f32(sdc_f32_to_f16(NAN))));
}

TEST(core_bf16_rounding) {
    CHECK_EQ_INT(sdc_f32_to_bf16(1.0f), 0x3f80);
    /* 1 + 2^-8 is a tie between 1 and 1+2^-7: goes to even (1.0) */
    CHECK_EQ_INT(sdc_f32_to_bf16(1.00390625f), 0x3f80);
    CHECK_EQ_INT(sdc_f32_to_bf16(1.01171875f), 0x3f82);
    CHECK_NEAR(sdc_bf16_to_f32(0x4049), 3.140625, 0);
    CHECK(isnan(sdc_bf16_to_f32(sdc_f32_to_bf16(NAN))));
}

TEST(core_convert_dtypes) {
    uint16_t h[3] = {0x3c00, 0xc000, 0x3555};
    float f[3];
    REQUIRE(sdc_convert_to_f32(f, h, SDC_F16, 3) == 0);
    CHECK_NEAR(f[0], 1.0, 0);
    CHECK_NEAR(f[1], -2.0, 0);
    CHECK_NEAR(f[2], 0.333251953125, 0);
    double d[2] = {0.5, -1e30};
    REQUIRE(sdc_convert_to_f32(f, d, SDC_F64, 2) == 0);
    CHECK_NEAR(f[0], 0.5, 0);
    CHECK_NEAR(f[1], -1e30, 1e23);
    CHECK(sdc_convert_to_f32(f, d, SDC_I64, 1) != 0);
    uint8_t e4[2] = {0x38, 0x7e}; /* 1.0 and 448 (max of e4m3fn) */
    REQUIRE(sdc_convert_to_f32(f, e4, SDC_F8_E4M3, 2) == 0);
    CHECK_NEAR(f[0], 1.0, 0);
    CHECK_NEAR(f[1], 448.0, 0);
    sdc_dtype t;
    CHECK(sdc_dtype_parse("BF16", &t) == 0 && t == SDC_BF16);
    CHECK(sdc_dtype_parse("F17", &t) != 0);
    CHECK_EQ_INT(sdc_dtype_size(SDC_I64), 8);
}

TEST(core_philox_known_answers) {
    /* Random123's kat_vectors for philox4x32-10 */
    uint32_t o[4];
    sdc_philox4x32(0, 0, 0, o);
    CHECK_EQ_INT(o[0], 0x6627e8d5u);
    CHECK_EQ_INT(o[1], 0xe169c58du);
    CHECK_EQ_INT(o[2], 0xbc57ac4cu);
    CHECK_EQ_INT(o[3], 0x9b00dbd8u);
    sdc_philox4x32(0xffffffffffffffffull, 0xffffffffffffffffull, 0xffffffffffffffffull, o);
    CHECK_EQ_INT(o[0], 0x408f276du);
    CHECK_EQ_INT(o[1], 0x41c83b0eu);
    CHECK_EQ_INT(o[2], 0xa20bc7c6u);
    CHECK_EQ_INT(o[3], 0x6d5451fdu);
    sdc_philox4x32(0x299f31d0a4093822ull, 0x85a308d3243f6a88ull, 0x0370734413198a2eull, o);
    CHECK_EQ_INT(o[0], 0xd16cfe09u);
    CHECK_EQ_INT(o[1], 0x94fdccebu);
    CHECK_EQ_INT(o[2], 0x5001e420u);
    CHECK_EQ_INT(o[3], 0x24126ea1u);
}

TEST(core_rng_normal_moments_and_determinism) {
    enum { N = 200000 };
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    REQUIRE(a && b);
    sdc_rng r1, r2;
    sdc_rng_init(&r1, 42);
    sdc_rng_init(&r2, 42);
    sdc_rng_fill_normal(&r1, a, N);
    sdc_rng_fill_normal(&r2, b, N);
    CHECK(memcmp(a, b, N * sizeof *a) == 0);
    double m = 0, v = 0;
    for (int i = 0; i < N; i++) m += a[i];
    m /= N;
    for (int i = 0; i < N; i++) v += (a[i] - m) * (a[i] - m);
    v /= N;
    /* standard errors: mean 1/sqrt(N) ~ 0.0022, var sqrt(2/N) ~ 0.0032 */
    CHECK_NEAR(m, 0.0, 0.01);
    CHECK_NEAR(v, 1.0, 0.015);
    sdc_rng_init(&r2, 43);
    sdc_rng_fill_normal(&r2, b, 16);
    CHECK(memcmp(a, b, 16 * sizeof *a) != 0);
    /* resuming at a saved offset continues the same stream */
    sdc_rng_init(&r1, 7);
    float x[8], y[8];
    sdc_rng_fill_uniform(&r1, x, 4);
    sdc_rng saved = r1;
    sdc_rng_fill_uniform(&r1, x + 4, 4);
    sdc_rng_fill_uniform(&saved, y, 4);
    CHECK(memcmp(x + 4, y, 4 * sizeof *x) == 0);
    for (int i = 0; i < 8; i++) CHECK(x[i] >= 0.0f && x[i] < 1.0f);
    free(a);
    free(b);
}

TEST(core_arena) {
    sdc_arena a;
    sdc_error err;
    REQUIRE_OK(sdc_arena_init(&a, 1000, &err), &err);
    void *p = sdc_arena_alloc(&a, 10);
    REQUIRE(p);
    CHECK(((uintptr_t)p & 63) == 0);
    size_t mark = sdc_arena_mark(&a);
    void *q = sdc_arena_alloc(&a, 100);
    CHECK(q && ((uintptr_t)q & 63) == 0 && q != p);
    sdc_arena_release(&a, mark);
    CHECK(sdc_arena_alloc(&a, 100) == q);
    CHECK(sdc_arena_alloc(&a, 100000) == NULL);
    CHECK(a.peak >= 164);
    sdc_arena_reset(&a);
    CHECK(sdc_arena_alloc(&a, 10) == p);
    sdc_arena_free(&a);
}

TEST(core_strmap) {
    sdc_strmap m;
    REQUIRE(sdc_strmap_init(&m, 4) == 0);
    char keys[1000][16];
    for (int i = 0; i < 1000; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        REQUIRE(sdc_strmap_put(&m, keys[i], i, NULL) == 0);
    }
    for (int i = 0; i < 1000; i++) CHECK_EQ_INT(sdc_strmap_get(&m, keys[i]), i);
    CHECK_EQ_INT(sdc_strmap_get(&m, "nope"), -1);
    CHECK_EQ_INT(sdc_strmap_getn(&m, "k12x", 3), 12);
    int64_t old;
    sdc_strmap_put(&m, keys[5], 99, &old);
    CHECK_EQ_INT(old, 5);
    CHECK_EQ_INT(sdc_strmap_get(&m, "k5"), 99);
    CHECK_EQ_INT(m.count, 1000);
    sdc_strmap_free(&m);
}

TEST(core_shape_overflow) {
    int64_t n;
    int64_t big[3] = {1ll << 40, 1ll << 40, 4};
    CHECK(sdc_shape_numel(3, big, &n) != 0);
    int64_t ok[3] = {2, 3, 4};
    CHECK(sdc_shape_numel(3, ok, &n) == 0 && n == 24);
    int64_t neg[1] = {-1};
    CHECK(sdc_shape_numel(1, neg, &n) != 0);
    char buf[64];
    CHECK_STR(sdc_shape_str(buf, sizeof buf, 3, ok), "[2, 3, 4]");
}

TEST(core_atomic_write_keeps_old_file_on_abort) {
    const char *dir = test_tmpdir();
    char *p = sdc_path_join(dir, "f.bin");
    sdc_error err;
    REQUIRE_OK(sdc_write_file_atomic(p, "old", 3, &err), &err);
    sdc_atomic_file f;
    REQUIRE_OK(sdc_atomic_open(&f, p, &err), &err);
    sdc_atomic_write(&f, "new-but-abandoned", 17);
    sdc_atomic_abort(&f); /* what a crash mid-write amounts to */
    char *text;
    size_t len;
    REQUIRE_OK(sdc_read_file(p, &text, &len, &err), &err);
    CHECK(len == 3 && memcmp(text, "old", 3) == 0);
    free(text);
    REQUIRE_OK(sdc_write_file_atomic(p, "newer", 5, &err), &err);
    REQUIRE_OK(sdc_read_file(p, &text, &len, &err), &err);
    CHECK(len == 5 && memcmp(text, "newer", 5) == 0);
    free(text);
    /* no temporary left behind */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "test $(ls %s | wc -l) -eq 1", dir);
    CHECK(system(cmd) == 0);
    free(p);
}

TEST(core_read_missing_file_names_it) {
    sdc_error err;
    char *t;
    CHECK(sdc_read_file("/nonexistent/x.json", &t, NULL, &err) == SDC_ENOTFOUND);
    CHECK(strstr(err.msg, "/nonexistent/x.json") != NULL);
}
