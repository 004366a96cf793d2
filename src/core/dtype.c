#include "core/dtype.h"

#include <math.h>
#include <string.h>

static const struct { const char *name; size_t size; } k_dtypes[SDC_DTYPE_COUNT] = {
    [SDC_F32] = {"F32", 4},     [SDC_F16] = {"F16", 2},      [SDC_BF16] = {"BF16", 2},
    [SDC_I64] = {"I64", 8},     [SDC_I32] = {"I32", 4},      [SDC_U8] = {"U8", 1},
    [SDC_F64] = {"F64", 8},     [SDC_I16] = {"I16", 2},      [SDC_I8] = {"I8", 1},
    [SDC_U16] = {"U16", 2},     [SDC_U32] = {"U32", 4},      [SDC_U64] = {"U64", 8},
    [SDC_BOOL] = {"BOOL", 1},   [SDC_F8_E4M3] = {"F8_E4M3", 1}, [SDC_F8_E5M2] = {"F8_E5M2", 1},
};

size_t sdc_dtype_size(sdc_dtype t) { return (unsigned)t < SDC_DTYPE_COUNT ? k_dtypes[t].size : 0; }
const char *sdc_dtype_name(sdc_dtype t) { return (unsigned)t < SDC_DTYPE_COUNT ? k_dtypes[t].name : "?"; }

int sdc_dtype_parse(const char *name, sdc_dtype *out) {
    for (int i = 0; i < SDC_DTYPE_COUNT; i++)
        if (strcmp(name, k_dtypes[i].name) == 0) {
            *out = (sdc_dtype)i;
            return 0;
        }
    return -1;
}

int sdc_dtype_is_float(sdc_dtype t) {
    return t == SDC_F32 || t == SDC_F16 || t == SDC_BF16 || t == SDC_F64 || t == SDC_F8_E4M3 ||
           t == SDC_F8_E5M2;
}

static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

float sdc_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13)); /* inf / nan */
    if (exp == 0) {                                                    /* zero / subnormal */
        float v = ldexpf((float)man, -24);
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t sdc_f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) return sign | 0x7e00;          /* nan */
    if (abs >= 0x477ff000u) return sign | 0x7c00;         /* overflow to inf (>= 65520) */
    if (abs < 0x38800000u) {                              /* result is subnormal or zero */
        /* value = abs_float; subnormal unit is 2^-24: round(value * 2^24) half-even */
        float v = bits_f32(abs) * 16777216.0f;            /* exact: power-of-two scale */
        float r = rintf(v);                               /* default mode: half to even */
        return sign | (uint16_t)r;
    }
    /* normal: drop 13 mantissa bits with round-half-even */
    uint32_t mant_rounded = abs + 0xfff + ((abs >> 13) & 1);
    return sign | (uint16_t)((mant_rounded - 0x38000000u) >> 13);
}

float sdc_bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

uint16_t sdc_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet nan */
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* float8 e4m3fn: bias 7, no infinities, 0x7f/0xff are NaN. */
float sdc_f8e4m3_to_f32(uint8_t v) {
    int sign = v >> 7, exp = (v >> 3) & 0xf, man = v & 7;
    float r;
    if (exp == 0xf && man == 7) return NAN;
    if (exp == 0) r = ldexpf((float)man, -9);
    else r = ldexpf(1.0f + man / 8.0f, exp - 7);
    return sign ? -r : r;
}

/* float8 e5m2: bias 15, IEEE-like. */
float sdc_f8e5m2_to_f32(uint8_t v) { return sdc_f16_to_f32((uint16_t)v << 8); }

static inline uint16_t load_u16(const void *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

int sdc_convert_to_f32(float *dst, const void *src, sdc_dtype t, size_t n) {
    switch (t) {
    case SDC_F32: memmove(dst, src, n * 4); return 0;
    /* Loads go through memcpy: mapped files give no alignment guarantee. */
    case SDC_F16:
        for (size_t i = 0; i < n; i++) dst[i] = sdc_f16_to_f32(load_u16((const char *)src + 2 * i));
        return 0;
    case SDC_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = sdc_bf16_to_f32(load_u16((const char *)src + 2 * i));
        return 0;
    case SDC_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, (const char *)src + 8 * i, 8);
            dst[i] = (float)d;
        }
        return 0;
    case SDC_F8_E4M3: {
        const uint8_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = sdc_f8e4m3_to_f32(s[i]);
        return 0;
    }
    case SDC_F8_E5M2: {
        const uint8_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = sdc_f8e5m2_to_f32(s[i]);
        return 0;
    }
    default: return -1;
    }
}

int sdc_convert_from_f32(void *dst, sdc_dtype t, const float *src, size_t n) {
    switch (t) {
    case SDC_F32: memmove(dst, src, n * 4); return 0;
    case SDC_F16: {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = sdc_f32_to_f16(src[i]);
        return 0;
    }
    case SDC_BF16: {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = sdc_f32_to_bf16(src[i]);
        return 0;
    }
    case SDC_F64: {
        double *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = src[i];
        return 0;
    }
    default: return -1;
    }
}
