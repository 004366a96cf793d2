#include "core/rng.h"

#include <math.h>

void sdc_rng_init(sdc_rng *r, uint64_t seed) {
    r->seed = seed;
    r->offset = 0;
}

/* Philox4x32-10: ten rounds of two 32x32->64 multiplies with key bumps. */
void sdc_philox4x32(uint64_t key, uint64_t clo, uint64_t chi, uint32_t out[4]) {
    const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
    const uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
    uint32_t c0 = (uint32_t)clo, c1 = (uint32_t)(clo >> 32), c2 = (uint32_t)chi, c3 = (uint32_t)(chi >> 32);
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int i = 0; i < 10; i++) {
        uint64_t p0 = (uint64_t)M0 * c0, p1 = (uint64_t)M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += W0;
        k1 += W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* Words are drawn one block at a time; the unused words of a block are
 * discarded so the stream position is always a whole block (simple resume). */
uint32_t sdc_rng_u32(sdc_rng *r) {
    uint32_t b[4];
    sdc_philox4x32(r->seed, r->offset++, 0, b);
    return b[0];
}

float sdc_rng_uniform(sdc_rng *r) { return (float)(sdc_rng_u32(r) >> 8) * (1.0f / 16777216.0f); }

void sdc_rng_fill_uniform(sdc_rng *r, float *out, size_t n) {
    for (size_t i = 0; i < n; i += 4) {
        uint32_t b[4];
        sdc_philox4x32(r->seed, r->offset++, 0, b);
        for (size_t j = 0; j < 4 && i + j < n; j++) out[i + j] = (float)(b[j] >> 8) * (1.0f / 16777216.0f);
    }
}

void sdc_rng_fill_normal(sdc_rng *r, float *out, size_t n) {
    /* Box-Muller: u1 in (0,1] so log is finite; two normals per pair. */
    for (size_t i = 0; i < n; i += 4) {
        uint32_t b[4];
        sdc_philox4x32(r->seed, r->offset++, 0, b);
        for (int p = 0; p < 2; p++) {
            double u1 = ((double)(b[2 * p] >> 8) + 1.0) / 16777216.0;
            double u2 = (double)(b[2 * p + 1] >> 8) / 16777216.0;
            double rad = sqrt(-2.0 * log(u1));
            double z0 = rad * cos(2.0 * M_PI * u2), z1 = rad * sin(2.0 * M_PI * u2);
            if (i + 2 * p < n) out[i + 2 * p] = (float)z0;
            if (i + 2 * p + 1 < n) out[i + 2 * p + 1] = (float)z1;
        }
    }
}

uint32_t sdc_rng_below(sdc_rng *r, uint32_t n) {
    if (n <= 1) return 0;
    uint32_t limit = UINT32_MAX - UINT32_MAX % n;
    for (;;) {
        uint32_t v = sdc_rng_u32(r);
        if (v < limit) return v % n;
    }
}
