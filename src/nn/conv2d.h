/* nn.Conv2d (square kernel, zero padding): weight [out, in, k, k]. */
#ifndef SDC_NN_CONV2D_H
#define SDC_NN_CONV2D_H

#include "backend/ops.h"
#include "nn/linear.h"
#include "nn/params.h"

typedef struct sdc_conv2d {
    sdc_tensor weight, bias;
    int64_t in, out;
    int kernel, stride, pad;
    /* LoRA/LoCon: y += scale·conv1×1(conv_k(x, A), B), A [r,in,k,k] with this
     * conv's stride and padding, B [out,r,1,1]; NULL: none */
    const sdc_lora_adapter *lora;
} sdc_conv2d;

/* Declares "<name>.weight" and "<name>.bias" with PyTorch's default init
 * (fan_in = in·k·k). */
void sdc_conv2d_declare(sdc_params *p, sdc_conv2d *l, int64_t in, int64_t out, int kernel, int stride, int pad,
                        const char *name);
sdc_tensor sdc_conv2d_forward(sdc_ctx *c, sdc_tensor *into, const sdc_conv2d *l, const sdc_tensor *x);

#endif
