/* PyTorch's CPU randn/rand, bit-exact (see torch_rng.h for the algorithm).
 *
 * Exactness needs every float operation in torch's order, each with one
 * rounding. torch's AVX2 kernel is built by GCC with -mfma and contraction on,
 * so each vector multiply whose only use is an add became a fused
 * multiply-add; the fmaf calls below are exactly those (checked bit-for-bit
 * against torch 2.15 on x86-64). Everything else must not be fused: the
 * build's -std=c11 (ISO mode) turns GCC's own contraction off. Constants are
 * written as torch writes them (a double literal converted to float), since
 * rounding a decimal straight to float can differ by one ulp. */
#include "core/torch_rng.h"

#include <math.h>
#include <string.h>

/* ---- MT19937 (Matsumoto & Nishimura 1998) -------------------------------- */

enum { MT_M = 397 };
#define MT_MATRIX_A 0x9908b0dfu
#define MT_UPPER 0x80000000u
#define MT_LOWER 0x7fffffffu

void sdc_torch_gen_seed(sdc_torch_gen *g, uint64_t seed) {
    memset(g, 0, sizeof *g);
    g->seed = seed;
    /* Knuth's linear initialiser over the low 32 bits, as torch does. */
    g->mt[0] = (uint32_t)seed;
    for (uint32_t i = 1; i < SDC_MT_N; i++) g->mt[i] = 1812433253u * (g->mt[i - 1] ^ (g->mt[i - 1] >> 30)) + i;
    g->next = SDC_MT_N;
    g->has_cached_normal = 0;
    g->kernel = SDC_TORCH_KERNEL_AVX2;
}

static void mt_twist(uint32_t *mt) {
    for (int i = 0; i < SDC_MT_N; i++) {
        uint32_t y = (mt[i] & MT_UPPER) | (mt[(i + 1) % SDC_MT_N] & MT_LOWER);
        mt[i] = mt[(i + MT_M) % SDC_MT_N] ^ (y >> 1) ^ ((y & 1u) ? MT_MATRIX_A : 0u);
    }
}

uint32_t sdc_torch_u32(sdc_torch_gen *g) {
    if (g->next >= SDC_MT_N) {
        mt_twist(g->mt);
        g->next = 0;
    }
    uint32_t y = g->mt[g->next++];
    /* tempering */
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

uint64_t sdc_torch_u64(sdc_torch_gen *g) {
    uint64_t hi = sdc_torch_u32(g);
    uint64_t lo = sdc_torch_u32(g);
    return (hi << 32) | lo;
}

/* torch's uniform_real: the low `digits` bits times 2^-digits, exact. */
static float uniform_f32(sdc_torch_gen *g) { return (float)(sdc_torch_u32(g) & 0xffffffu) * (1.0f / 16777216.0f); }
static double uniform_f64(sdc_torch_gen *g) {
    return (double)(sdc_torch_u64(g) & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

void sdc_torch_rand(sdc_torch_gen *g, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = uniform_f32(g);
}

/* ---- n < 16: one double Box-Muller draw per value, the sine cached -------- */

static double normal_f64(sdc_torch_gen *g) {
    if (g->has_cached_normal) {
        g->has_cached_normal = 0;
        return g->cached_normal;
    }
    double u1 = uniform_f64(g);
    double u2 = uniform_f64(g);
    double r = sqrt(-2.0 * log1p(-u2)); /* log1p(-u2) = log(1 - u2), u2 in [0,1) */
    double theta = 2.0 * M_PI * u1;
    g->cached_normal = r * sin(theta);
    g->has_cached_normal = 1;
    return r * cos(theta);
}

/* ---- n >= 16, AVX2 kernel: Cephes single-precision log and sincos --------- */

static inline uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ln(x) for x > 0 (here x in (0, 1]): x = m * 2^e with m in [0.5, 1); when
 * m < sqrt(1/2) use 2m and e-1 so the argument t = m - 1 is in
 * [-0.29, 0.41]; ln(1+t) = t - t^2/2 + t^3 P(t), and e*ln2 is added in two
 * parts (q2 + q1 = ln 2, q2 exact in few bits) to keep precision. */
static float cephes_logf(float x) {
    const float one = 1.0f;
    int invalid = !(x > 0.0f); /* the vector code ORs in all-ones (a NaN) for x <= 0 */
    if (x < u2f(0x00800000u)) x = u2f(0x00800000u); /* flush denormals to the smallest normal */
    uint32_t bits = f2u(x);
    int32_t expo = (int32_t)(bits >> 23) - 0x7f;
    x = u2f((bits & ~0x7f800000u) | f2u(0.5f));
    float e = (float)expo;
    e = e + one;
    int small = x < (float)0.707106781186547524;
    float tmp = small ? x : 0.0f;
    x = x - one;
    e = e - (small ? one : 0.0f);
    x = x + tmp;
    float z = x * x;
    float y = (float)7.0376836292E-2;
    y = fmaf(y, x, (float)-1.1514610310E-1);
    y = fmaf(y, x, (float)1.1676998740E-1);
    y = fmaf(y, x, (float)-1.2420140846E-1);
    y = fmaf(y, x, (float)1.4249322787E-1);
    y = fmaf(y, x, (float)-1.6668057665E-1);
    y = fmaf(y, x, (float)2.0000714765E-1);
    y = fmaf(y, x, (float)-2.4999993993E-1);
    y = fmaf(y, x, (float)3.3333331174E-1);
    y = y * x;
    y = fmaf(y, z, e * (float)-2.12194440e-4); /* t^3 P(t) + e*q1 */
    y = fmaf(-z, 0.5f, y);                     /* - t^2/2 */
    x = fmaf(e, (float)0.693359375, x + y);    /* t + y + e*q2 */
    return invalid ? u2f(0xffffffffu) : x;
}

/* sin and cos of x (here x in [0, 2pi)): j = the even integer nearest to
 * x*4/pi from above, x' = x - j*pi/4 by a three-part pi/4 (exact products),
 * then the cosine polynomial 1 - z/2 + z^2 C(z) and the sine polynomial
 * x' + x'^3 S(z), z = x'^2, swapped and signed by the octant j. */
static void cephes_sincosf(float x, float *s, float *c) {
    uint32_t sign_sin = f2u(x) & 0x80000000u;
    x = u2f(f2u(x) & 0x7fffffffu);
    float y = x * (float)1.27323954473516;
    int32_t j = (int32_t)y; /* truncation, as cvttps */
    j = (j + 1) & ~1;
    y = (float)j;
    uint32_t swap_sin = ((uint32_t)j & 4u) << 29;
    int poly_is_sin = ((uint32_t)j & 2u) == 0; /* octant pair where sin uses the sine polynomial */
    x = fmaf(y, (float)-0.78515625, x);
    x = fmaf(y, (float)-2.4187564849853515625e-4, x);
    x = fmaf(y, (float)-3.77489497744594108e-8, x);
    uint32_t sign_cos = (~((uint32_t)j - 2u) & 4u) << 29;
    sign_sin ^= swap_sin;

    float z = x * x;
    float yc = (float)2.443315711809948E-005;
    yc = fmaf(yc, z, (float)-1.388731625493765E-003);
    yc = fmaf(yc, z, (float)4.166664568298827E-002);
    yc = yc * z;
    yc = fmaf(yc, z, -(z * 0.5f)); /* z^2 C(z) - z/2 */
    yc = yc + 1.0f;

    float ys = (float)-1.9515295891E-4;
    ys = fmaf(ys, z, (float)8.3321608736E-3);
    ys = fmaf(ys, z, (float)-1.6666654611E-1);
    ys = ys * z;
    ys = fmaf(ys, x, x); /* x + x^3 S(z) */

    /* The vector code selects with masks and then adds and subtracts the
     * selected parts; doing the same keeps the signs of zeros identical. */
    float sin_part = poly_is_sin ? ys : 0.0f;
    float cos_part = poly_is_sin ? 0.0f : yc;
    float ys_rest = ys - sin_part;
    float yc_rest = yc - cos_part;
    *s = u2f(f2u(cos_part + sin_part) ^ sign_sin);
    *c = u2f(f2u(yc_rest + ys_rest) ^ sign_cos);
}

/* Box-Muller on 16 uniforms in place: pairs (d[j], d[j+8]), j < 8. */
static void box_muller16(float *d, sdc_torch_kernel kernel) {
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j]; /* [0,1) -> (0,1] so the log is finite */
        float u2 = d[j + 8];
        float n1, n2;
        if (kernel == SDC_TORCH_KERNEL_AVX2) {
            float radius = sqrtf(-2.0f * cephes_logf(u1));
            float theta = (float)(2.0 * M_PI) * u2;
            float sn, cs;
            cephes_sincosf(theta, &sn, &cs);
            n1 = radius * cs;
            n2 = radius * sn;
        } else {
            float radius = sqrtf(-2.0f * logf(u1));
            float theta = (float)(2.0 * M_PI * (double)u2); /* torch computes the angle in double */
            n1 = radius * cosf(theta);
            n2 = radius * sinf(theta);
        }
        /* torch stores fma(n, std, mean) = n*1 + 0; "+ 0.0f" gives the same
         * bits (including -0 -> +0). */
        d[j] = n1 + 0.0f;
        d[j + 8] = n2 + 0.0f;
    }
}

void sdc_torch_randn(sdc_torch_gen *g, float *out, size_t n) {
    if (n < 16) {
        for (size_t i = 0; i < n; i++) out[i] = (float)normal_f64(g);
        return;
    }
    for (size_t i = 0; i < n; i++) out[i] = uniform_f32(g);
    for (size_t i = 0; i + 16 <= n; i += 16) box_muller16(out + i, g->kernel);
    if (n % 16 != 0) {
        /* The ragged tail: torch redraws the last 16 slots (overwriting
         * finished values too) and transforms them again. */
        float *tail = out + n - 16;
        for (int i = 0; i < 16; i++) tail[i] = uniform_f32(g);
        box_muller16(tail, g->kernel);
    }
}
