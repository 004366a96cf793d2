/* AVX2 helpers shared by the fused attention kernels (forward and
 * backward), compiled per function for AVX2+FMA so the build needs no
 * -march; callers check the CPU at run time. x86-64 gcc only. */
#ifndef SDC_BACKEND_CPU_CPU_AVX2_H
#define SDC_BACKEND_CPU_CPU_AVX2_H

#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma"), optimize("no-trapping-math")))

/* e^x for x ≤ 0 on 8 lanes, the same reduction as cpu_expf (n = round(x·log2 e),
 * r = x − n·ln2, Cephes' polynomial, 2^n in the exponent bits) with FMAs. */
AVX2 static inline __m256 exp8_nonpos(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

#endif
