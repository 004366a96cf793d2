/* nn.GroupNorm and nn.LayerNorm (affine; weight 1 and bias 0 at init). */
#ifndef SDC_NN_NORM_H
#define SDC_NN_NORM_H

#include "backend/ops.h"
#include "nn/params.h"

typedef struct sdc_norm {
    sdc_tensor weight, bias;
    int64_t channels;
    int groups; /* group norm only */
    float eps;
} sdc_norm;

void sdc_group_norm_declare(sdc_params *p, sdc_norm *n, int groups, int64_t channels, float eps, const char *name);
void sdc_layer_norm_declare(sdc_params *p, sdc_norm *n, int64_t channels, float eps, const char *name);
/* x [B,C,...]; act fuses an activation after the norm (SDC_ACT_SILU in ResNets). */
sdc_tensor sdc_group_norm_forward(sdc_ctx *c, sdc_tensor *into, const sdc_norm *n, const sdc_tensor *x, sdc_act act);
/* x [..., C] */
sdc_tensor sdc_layer_norm_forward(sdc_ctx *c, sdc_tensor *into, const sdc_norm *n, const sdc_tensor *x);

#endif
