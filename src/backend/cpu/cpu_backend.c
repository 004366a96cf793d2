/* The CPU backend's op table (fp32, OpenMP + OpenBLAS; see cpu_ops.h). */
#include "backend/cpu/cpu_ops.h"

static const sdc_backend g_cpu = {
    .name = "cpu",
    .linear = sdc_cpu_linear,
    .conv2d = sdc_cpu_conv2d,
    .group_norm = sdc_cpu_group_norm,
    .layer_norm = sdc_cpu_layer_norm,
    .attention = sdc_cpu_attention,
    .activation = sdc_cpu_activation,
    .geglu = sdc_cpu_geglu,
    .axpby = sdc_cpu_axpby,
    .add_channel = sdc_cpu_add_channel,
    .concat = sdc_cpu_concat,
    .slice = sdc_cpu_slice,
    .transpose = sdc_cpu_transpose,
    .upsample2x = sdc_cpu_upsample2x,
    .pad2d = sdc_cpu_pad2d,
    .embedding = sdc_cpu_embedding,
    .upload = sdc_cpu_upload,
    .download = sdc_cpu_download,
    .fill = sdc_cpu_fill,
    .linear_backward = sdc_cpu_linear_backward,
    .conv2d_backward = sdc_cpu_conv2d_backward,
    .group_norm_backward = sdc_cpu_group_norm_backward,
    .layer_norm_backward = sdc_cpu_layer_norm_backward,
    .attention_backward = sdc_cpu_attention_backward,
    .activation_backward = sdc_cpu_activation_backward,
    .geglu_backward = sdc_cpu_geglu_backward,
    .channel_sum = sdc_cpu_channel_sum,
    .upsample2x_backward = sdc_cpu_upsample2x_backward,
    .embedding_backward = sdc_cpu_embedding_backward,
};

const sdc_backend *sdc_cpu_backend(void) { return &g_cpu; }
