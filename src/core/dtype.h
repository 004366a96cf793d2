/* Element types. The storage types cover every dtype a safetensors or
 * PyTorch file may hold (so a loader can name and validate them); the
 * compute backends work on F32, F16, BF16, I64, I32 and U8. */
#ifndef SDC_CORE_DTYPE_H
#define SDC_CORE_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sdc_dtype {
    SDC_F32 = 0,
    SDC_F16,
    SDC_BF16,
    SDC_I64,
    SDC_I32,
    SDC_U8,
    /* storage-only: read, validated, converted; never computed on */
    SDC_F64,
    SDC_I16,
    SDC_I8,
    SDC_U16,
    SDC_U32,
    SDC_U64,
    SDC_BOOL,
    SDC_F8_E4M3,
    SDC_F8_E5M2,
    SDC_DTYPE_COUNT
} sdc_dtype;

size_t sdc_dtype_size(sdc_dtype t);
/* safetensors' spelling ("F32", "BF16", ...). */
const char *sdc_dtype_name(sdc_dtype t);
/* Parses safetensors' spelling; returns 0 on success, -1 if unknown. */
int sdc_dtype_parse(const char *name, sdc_dtype *out);
int sdc_dtype_is_float(sdc_dtype t);

/* IEEE half and bfloat16 conversions, round-to-nearest-even, NaN kept NaN. */
float sdc_f16_to_f32(uint16_t h);
uint16_t sdc_f32_to_f16(float f);
float sdc_bf16_to_f32(uint16_t b);
uint16_t sdc_f32_to_bf16(float f);
float sdc_f8e4m3_to_f32(uint8_t v);
float sdc_f8e5m2_to_f32(uint8_t v);

/* Convert n elements of a floating dtype (F32/F16/BF16/F64/F8) to float.
 * Returns 0, or -1 if src_type is not a floating type. */
int sdc_convert_to_f32(float *dst, const void *src, sdc_dtype src_type, size_t n);
/* Convert n floats to F32/F16/BF16/F64. Returns 0, or -1 if unsupported. */
int sdc_convert_from_f32(void *dst, sdc_dtype dst_type, const float *src, size_t n);

#ifdef __cplusplus
}
#endif

#endif
