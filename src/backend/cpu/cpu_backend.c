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
};

const sdc_backend *sdc_cpu_backend(void) { return &g_cpu; }
