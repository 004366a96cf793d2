// TEMPORARY while the op families are written in parallel: weak
// definitions so the tree links; each real definition overrides its own.
// Deleted before the CUDA backend is committed.
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_ops.h"
#define PENDING(name) sdc_cuda_fatal(#name, "not written yet", __FILE__, __LINE__)
#define W __attribute__((weak))
extern "C" {
W void sdc_cuda_linear(sdc_tensor *, const sdc_tensor *, const sdc_tensor *, const sdc_tensor *, int64_t, int64_t, int64_t) { PENDING(linear); }
W void sdc_cuda_linear_backward(sdc_tensor *, sdc_tensor *, sdc_tensor *, const sdc_tensor *, const sdc_tensor *, const sdc_tensor *, int64_t, int64_t, int64_t) { PENDING(linear_backward); }
W void sdc_cuda_conv2d(sdc_tensor *, const sdc_tensor *, const sdc_tensor *, const sdc_tensor *, int, int) { PENDING(conv2d); }
W void sdc_cuda_conv2d_backward(sdc_tensor *, sdc_tensor *, sdc_tensor *, const sdc_tensor *, const sdc_tensor *, const sdc_tensor *, int, int) { PENDING(conv2d_backward); }
W void sdc_cuda_group_norm(sdc_tensor *, const sdc_tensor *, const sdc_tensor *, const sdc_tensor *, int64_t, int64_t, int64_t, int, float, sdc_act) { PENDING(group_norm); }
W void sdc_cuda_layer_norm(sdc_tensor *, const sdc_tensor *, const sdc_tensor *, const sdc_tensor *, int64_t, int64_t, float) { PENDING(layer_norm); }
W void sdc_cuda_group_norm_backward(sdc_tensor *, sdc_tensor *, sdc_tensor *, const sdc_tensor *, const sdc_tensor *, const sdc_tensor *, const sdc_tensor *, int64_t, int64_t, int64_t, int, float, sdc_act) { PENDING(group_norm_backward); }
W void sdc_cuda_layer_norm_backward(sdc_tensor *, sdc_tensor *, sdc_tensor *, const sdc_tensor *, const sdc_tensor *, const sdc_tensor *, int64_t, int64_t, float) { PENDING(layer_norm_backward); }
W void sdc_cuda_attention(sdc_tensor *, const sdc_tensor *, const sdc_tensor *, const sdc_tensor *, int64_t, int64_t, int64_t, int, int64_t, float, int) { PENDING(attention); }
W void sdc_cuda_attention_backward(sdc_tensor *, sdc_tensor *, sdc_tensor *, const sdc_tensor *, const sdc_tensor *, const sdc_tensor *, const sdc_tensor *, int64_t, int64_t, int64_t, int, int64_t, float, int) { PENDING(attention_backward); }
W void sdc_cuda_activation(sdc_tensor *, const sdc_tensor *, sdc_act) { PENDING(activation); }
W void sdc_cuda_activation_backward(sdc_tensor *, const sdc_tensor *, const sdc_tensor *, sdc_act) { PENDING(activation_backward); }
W void sdc_cuda_geglu(sdc_tensor *, const sdc_tensor *, int64_t, int64_t) { PENDING(geglu); }
W void sdc_cuda_geglu_backward(sdc_tensor *, const sdc_tensor *, const sdc_tensor *, int64_t, int64_t) { PENDING(geglu_backward); }
W void sdc_cuda_axpby(sdc_tensor *, float, const sdc_tensor *, float, const sdc_tensor *) { PENDING(axpby); }
W void sdc_cuda_add_channel(sdc_tensor *, const sdc_tensor *, const sdc_tensor *, int64_t, int64_t, int64_t) { PENDING(add_channel); }
W void sdc_cuda_channel_sum(sdc_tensor *, const sdc_tensor *, int64_t, int64_t, int64_t) { PENDING(channel_sum); }
W void sdc_cuda_fill(sdc_tensor *, float) { PENDING(fill); }
W void sdc_cuda_upload(sdc_tensor *, const float *) { PENDING(upload); }
W void sdc_cuda_download(float *, const sdc_tensor *) { PENDING(download); }
W void sdc_cuda_cast(void *, sdc_dtype, const void *, sdc_dtype, size_t) { PENDING(cast); }
W void sdc_cuda_concat(sdc_tensor *, const sdc_tensor *, const sdc_tensor *, int64_t, int64_t, int64_t, int64_t) { PENDING(concat); }
W void sdc_cuda_slice(sdc_tensor *, const sdc_tensor *, int64_t, int64_t, int64_t, int64_t, int64_t) { PENDING(slice); }
W void sdc_cuda_transpose(sdc_tensor *, const sdc_tensor *, int64_t, int64_t, int64_t) { PENDING(transpose); }
W void sdc_cuda_pad2d(sdc_tensor *, const sdc_tensor *, int64_t, int64_t, int64_t, int64_t, int, int, int, int) { PENDING(pad2d); }
W void sdc_cuda_upsample2x(sdc_tensor *, const sdc_tensor *, int64_t, int64_t, int64_t, int64_t) { PENDING(upsample2x); }
W void sdc_cuda_upsample2x_backward(sdc_tensor *, const sdc_tensor *, int64_t, int64_t, int64_t, int64_t) { PENDING(upsample2x_backward); }
W void sdc_cuda_embedding(sdc_tensor *, const sdc_tensor *, const int32_t *, int64_t, int64_t) { PENDING(embedding); }
W void sdc_cuda_embedding_backward(sdc_tensor *, const sdc_tensor *, const int32_t *, int64_t, int64_t) { PENDING(embedding_backward); }
W double sdc_cuda_sumsq(const float *, size_t) { PENDING(sumsq); }
W void sdc_cuda_scale(float *, size_t, float) { PENDING(scale); }
W void sdc_cuda_adamw(float *, float *, float *, const float *, size_t, const sdc_adamw_args *, void *, sdc_dtype) { PENDING(adamw); }
W void sdc_cuda_ema(float *, const float *, size_t, float) { PENDING(ema); }
}
