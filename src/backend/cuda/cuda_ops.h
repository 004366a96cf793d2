/* Private to the CUDA backend: the op functions behind the table in
 * cuda_backend.cu, one family per file. Each has the contract of the
 * matching sdc_backend entry (backend/backend.h): tensors on the current
 * CUDA device, F32, BF16 or F16 (all tensors of one call share the dtype,
 * except parameter gradients, which are always F32, and the fp32 stores of
 * the optimiser), enqueued on sdc_cuda_stream(). */
#ifndef SDC_BACKEND_CUDA_CUDA_OPS_H
#define SDC_BACKEND_CUDA_CUDA_OPS_H

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* cuda_gemm.cu: cuBLASLt */
void sdc_cuda_linear(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *w, const sdc_tensor *bias, int64_t M,
                     int64_t K, int64_t N);
void sdc_cuda_linear_backward(sdc_tensor *dx, sdc_tensor *dw, sdc_tensor *db, const sdc_tensor *dy,
                              const sdc_tensor *x, const sdc_tensor *w, int64_t M, int64_t K, int64_t N);

/* cuda_conv.cu: cuDNN */
void sdc_cuda_conv2d(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *w, const sdc_tensor *bias, int stride,
                     int pad);
void sdc_cuda_conv2d_backward(sdc_tensor *dx, sdc_tensor *dw, sdc_tensor *db, const sdc_tensor *dy,
                              const sdc_tensor *x, const sdc_tensor *w, int stride, int pad);

/* cuda_norm.cu */
void sdc_cuda_group_norm(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *gamma, const sdc_tensor *beta,
                         int64_t B, int64_t C, int64_t S, int groups, float eps, sdc_act act);
void sdc_cuda_layer_norm(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *gamma, const sdc_tensor *beta,
                         int64_t M, int64_t C, float eps);
void sdc_cuda_group_norm_backward(sdc_tensor *dx, sdc_tensor *dgamma, sdc_tensor *dbeta, const sdc_tensor *dy,
                                  const sdc_tensor *x, const sdc_tensor *gamma, const sdc_tensor *beta, int64_t B,
                                  int64_t C, int64_t S, int groups, float eps, sdc_act act);
void sdc_cuda_layer_norm_backward(sdc_tensor *dx, sdc_tensor *dgamma, sdc_tensor *dbeta, const sdc_tensor *dy,
                                  const sdc_tensor *x, const sdc_tensor *gamma, int64_t M, int64_t C, float eps);

/* cuda_attention.cu: fused (flash-style) attention */
void sdc_cuda_attention(sdc_tensor *out, const sdc_tensor *q, const sdc_tensor *k, const sdc_tensor *v, int64_t B,
                        int64_t Tq, int64_t Tk, int heads, int64_t head_dim, float scale, int causal);
void sdc_cuda_attention_backward(sdc_tensor *dq, sdc_tensor *dk, sdc_tensor *dv, const sdc_tensor *dout,
                                 const sdc_tensor *q, const sdc_tensor *k, const sdc_tensor *v, int64_t B, int64_t Tq,
                                 int64_t Tk, int heads, int64_t head_dim, float scale, int causal);
void sdc_cuda_attention_lse(sdc_tensor *out, float *lse, const sdc_tensor *q, const sdc_tensor *k,
                            const sdc_tensor *v, int64_t B, int64_t Tq, int64_t Tk, int heads, int64_t head_dim,
                            float scale, int causal);
void sdc_cuda_attention_backward_saved(sdc_tensor *dq, sdc_tensor *dk, sdc_tensor *dv, const sdc_tensor *dout,
                                       const sdc_tensor *q, const sdc_tensor *k, const sdc_tensor *v,
                                       const sdc_tensor *out, const float *lse, int64_t B, int64_t Tq, int64_t Tk,
                                       int heads, int64_t head_dim, float scale, int causal);

/* cuda_attention_wide.cu: head_dim > 256 (the VAE's 512-channel single
 * head), through matrix products; called by the two above */
void sdc_cuda_attention_wide(sdc_tensor *out, const sdc_tensor *q, const sdc_tensor *k, const sdc_tensor *v,
                             int64_t B, int64_t Tq, int64_t Tk, int heads, int64_t head_dim, float scale, int causal);
void sdc_cuda_attention_wide_backward(sdc_tensor *dq, sdc_tensor *dk, sdc_tensor *dv, const sdc_tensor *dout,
                                      const sdc_tensor *q, const sdc_tensor *k, const sdc_tensor *v, int64_t B,
                                      int64_t Tq, int64_t Tk, int heads, int64_t head_dim, float scale, int causal);

/* cuda_eltwise.cu: elementwise ops and their backward */
void sdc_cuda_activation(sdc_tensor *out, const sdc_tensor *x, sdc_act act);
void sdc_cuda_activation_backward(sdc_tensor *dx, const sdc_tensor *dy, const sdc_tensor *x, sdc_act act);
void sdc_cuda_geglu(sdc_tensor *out, const sdc_tensor *x, int64_t M, int64_t F);
void sdc_cuda_geglu_backward(sdc_tensor *dx, const sdc_tensor *dy, const sdc_tensor *x, int64_t M, int64_t F);
void sdc_cuda_axpby(sdc_tensor *out, float alpha, const sdc_tensor *a, float beta, const sdc_tensor *b);
void sdc_cuda_add_channel(sdc_tensor *out, const sdc_tensor *x, const sdc_tensor *v, int64_t O, int64_t C, int64_t S);
void sdc_cuda_channel_sum(sdc_tensor *dv, const sdc_tensor *dy, int64_t O, int64_t C, int64_t S);
void sdc_cuda_fill(sdc_tensor *out, float value);
void sdc_cuda_upload(sdc_tensor *dst, const float *src);
void sdc_cuda_download(float *dst, const sdc_tensor *src);
void sdc_cuda_cast(void *dst, sdc_dtype dst_dtype, const void *src, sdc_dtype src_dtype, size_t n);

/* cuda_layout.cu: data movement */
void sdc_cuda_concat(sdc_tensor *out, const sdc_tensor *a, const sdc_tensor *b, int64_t O, int64_t Ca, int64_t Cb,
                     int64_t S);
void sdc_cuda_slice(sdc_tensor *out, const sdc_tensor *x, int64_t O, int64_t C, int64_t S, int64_t c0, int64_t n);
void sdc_cuda_transpose(sdc_tensor *out, const sdc_tensor *x, int64_t B, int64_t R, int64_t C);
void sdc_cuda_pad2d(sdc_tensor *out, const sdc_tensor *x, int64_t B, int64_t C, int64_t H, int64_t W, int top,
                    int bottom, int left, int right);
void sdc_cuda_upsample2x(sdc_tensor *out, const sdc_tensor *x, int64_t B, int64_t C, int64_t H, int64_t W);
void sdc_cuda_upsample2x_backward(sdc_tensor *dx, const sdc_tensor *dy, int64_t B, int64_t C, int64_t H, int64_t W);
void sdc_cuda_embedding(sdc_tensor *out, const sdc_tensor *table, const int32_t *ids, int64_t n, int64_t D);
void sdc_cuda_embedding_backward(sdc_tensor *dtable, const sdc_tensor *dy, const int32_t *ids, int64_t n, int64_t D);

/* cuda_optim.cu: the optimiser over flat fp32 stores */
double sdc_cuda_sumsq(const float *g, size_t n);
void sdc_cuda_scale(float *x, size_t n, float a);
void sdc_cuda_adamw(float *p, float *m, float *v, const float *g, size_t n, const sdc_adamw_args *a, void *copy,
                    sdc_dtype copy_dtype);
void sdc_cuda_ema(float *shadow, const float *p, size_t n, float one_minus_decay);

#ifdef __cplusplus
}
#endif

#endif
