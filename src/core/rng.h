/* Seeded, counter-based random numbers: Philox4x32-10 (Salmon et al., 2011).
 * Counter-based so that the CPU and a GPU kernel produce the same stream for
 * the same (seed, offset), and so that a resumed run can jump to any offset
 * without replaying the past (DESIGN.md principle 6). */
#ifndef SDC_CORE_RNG_H
#define SDC_CORE_RNG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sdc_rng {
    uint64_t seed;
    uint64_t offset; /* number of 4x32-bit blocks consumed */
} sdc_rng;

void sdc_rng_init(sdc_rng *r, uint64_t seed);
/* One Philox block: four 32-bit words for (key, counter). */
void sdc_philox4x32(uint64_t key, uint64_t counter_lo, uint64_t counter_hi, uint32_t out[4]);
uint32_t sdc_rng_u32(sdc_rng *r);
/* Uniform in [0, 1) with 24 bits of randomness. */
float sdc_rng_uniform(sdc_rng *r);
/* Fills n uniform floats / standard normals (Box-Muller on pairs). */
void sdc_rng_fill_uniform(sdc_rng *r, float *out, size_t n);
void sdc_rng_fill_normal(sdc_rng *r, float *out, size_t n);
/* Uniform integer in [0, n), rejection-sampled so it is unbiased. */
uint32_t sdc_rng_below(sdc_rng *r, uint32_t n);

#ifdef __cplusplus
}
#endif

#endif
