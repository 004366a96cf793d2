/* diffusers' ResnetBlock2D (time_embedding_norm "default", no up/down):
 *   h = conv1(silu(norm1(x)));  h += time_emb_proj(silu(temb))[:, :, None, None]
 *   h = conv2(silu(norm2(h)));  out = (shortcut(x) + h) / output_scale_factor
 * shortcut is a 1×1 conv_shortcut when the channel count changes. */
#ifndef SDC_NN_RESNET_H
#define SDC_NN_RESNET_H

#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/norm.h"

typedef struct sdc_resnet {
    sdc_norm norm1, norm2;
    sdc_conv2d conv1, conv2, shortcut;
    sdc_linear time_emb_proj;
    int has_temb, has_shortcut;
    float output_scale;
} sdc_resnet;

/* temb_channels 0: no time embedding (the VAE's resnets). */
void sdc_resnet_declare(sdc_params *p, sdc_resnet *r, int64_t in, int64_t out, int64_t temb_channels, int groups,
                        float eps, float output_scale_factor, const char *name);
/* x [B,in,H,W]; temb [B,temb_channels] (already the block input, silu applied inside) or NULL. */
sdc_tensor sdc_resnet_forward(sdc_ctx *c, sdc_tensor *into, const sdc_resnet *r, const sdc_tensor *x,
                              const sdc_tensor *temb);

#endif
