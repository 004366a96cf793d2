/* PyTorch's CPU generator, reproduced bit-for-bit: the noise of
 * `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))`
 * (and torch.rand), so that a seed given to sdc gives the same image as the
 * same seed given to diffusers on the CPU.
 *
 * What torch does (ATen CPUGeneratorImpl + native/cpu/DistributionTemplates.h):
 *   - the engine is MT19937 seeded with the low 32 bits of the seed
 *     (so seeds 7 and 2^40+7 give the same stream);
 *   - a float uniform is (u32 & 0xffffff) * 2^-24, one word per value;
 *   - randn of n < 16 values draws one double normal per value: a Box-Muller
 *     pair from two 53-bit uniforms (two words each), returning r*cos and
 *     caching r*sin in the generator for the next draw (the cache outlives
 *     the call and is cleared by seeding);
 *   - randn of n >= 16 values fills all n with float uniforms, runs
 *     Box-Muller on each whole block of 16 (u1 = 1 - d[j], u2 = d[j+8],
 *     d[j] = r*cos, d[j+8] = r*sin), then, when 16 does not divide n, draws
 *     16 fresh uniforms over the last 16 slots and transforms them again.
 *     The float transform depends on the CPU kernel torch picked: with AVX2
 *     (most x86-64 machines) it is the Cephes-style log/sincos of
 *     avx_mathfun.h; the generic kernel (no AVX2, or an AVX-512 build) uses
 *     libm's logf/cosf/sinf. */
#ifndef SDC_CORE_TORCH_RNG_H
#define SDC_CORE_TORCH_RNG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SDC_MT_N 624

/* Which of torch's float normal kernels to reproduce for n >= 16. */
typedef enum sdc_torch_kernel {
    SDC_TORCH_KERNEL_AVX2 = 0,   /* torch's AVX2 build (the default here) */
    SDC_TORCH_KERNEL_SCALAR = 1, /* torch's generic build (libm float functions) */
} sdc_torch_kernel;

typedef struct sdc_torch_gen {
    uint32_t mt[SDC_MT_N]; /* MT19937 state */
    int next;              /* index of the next word; SDC_MT_N means "twist first" */
    uint64_t seed;         /* as given (torch's initial_seed()) */
    int has_cached_normal; /* torch's next_double_normal_sample_ */
    double cached_normal;
    sdc_torch_kernel kernel; /* set to AVX2 by seeding; change after seeding to pick the other */
} sdc_torch_gen;

/* torch.Generator("cpu").manual_seed(seed) */
void sdc_torch_gen_seed(sdc_torch_gen *g, uint64_t seed);
/* One MT19937 word (torch's random()), and two as hi:lo (random64()). */
uint32_t sdc_torch_u32(sdc_torch_gen *g);
uint64_t sdc_torch_u64(sdc_torch_gen *g);
/* One torch.randn(n) call (float32, contiguous); the stream continues. */
void sdc_torch_randn(sdc_torch_gen *g, float *out, size_t n);
/* One torch.rand(n) call (float32): uniforms in [0, 1). */
void sdc_torch_rand(sdc_torch_gen *g, float *out, size_t n);

#ifdef __cplusplus
}
#endif

#endif
