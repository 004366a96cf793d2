/* nn.Linear: y = x·Wᵀ + b, weight [out, in] as PyTorch stores it. */
#ifndef SDC_NN_LINEAR_H
#define SDC_NN_LINEAR_H

#include "backend/ops.h"
#include "nn/params.h"

/* A trainable low-rank update beside a frozen weight (LoRA, as PEFT's
 * lora.Linear): y = x·Wᵀ + b + scale·(x·Aᵀ)·Bᵀ, A [r, in], B [out, r],
 * scale = alpha / r. Its tensors live in a separate parameter store. */
typedef struct sdc_lora_adapter {
    sdc_tensor A, B;
    int rank;
    float scale;
} sdc_lora_adapter;

typedef struct sdc_linear {
    sdc_tensor weight, bias; /* bias.data NULL when the layer has none */
    int64_t in, out;
    int has_bias;
    const sdc_lora_adapter *lora; /* NULL: none */
} sdc_linear;

/* Declares "<name>.weight" (and "<name>.bias") with PyTorch's default init. */
void sdc_linear_declare(sdc_params *p, sdc_linear *l, int64_t in, int64_t out, int bias, const char *name);
sdc_tensor sdc_linear_forward(sdc_ctx *c, sdc_tensor *into, const sdc_linear *l, const sdc_tensor *x);

#endif
