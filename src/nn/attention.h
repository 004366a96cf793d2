/* diffusers' Attention processor (AttnProcessor semantics): multi-head
 * attention with separate q/k/v projections and an output projection,
 * named to_q, to_k, to_v, to_out.0. Self-attention when no context is given,
 * cross-attention otherwise. */
#ifndef SDC_NN_ATTENTION_H
#define SDC_NN_ATTENTION_H

#include "nn/linear.h"

typedef struct sdc_attention {
    sdc_linear to_q, to_k, to_v, to_out;
    int heads;
    int64_t dim_head;
    int upcast; /* upcast_attention: scores in fp32 (always so on the CPU) */
} sdc_attention;

/* query_dim → heads·dim_head; k/v from context_dim (= query_dim for self-attention). */
void sdc_attention_declare(sdc_params *p, sdc_attention *a, int64_t query_dim, int64_t context_dim, int heads,
                           int64_t dim_head, int qkv_bias, const char *name);
/* x [B,T,query_dim], context [B,S,context_dim] or NULL → [B,T,query_dim] */
sdc_tensor sdc_attention_forward(sdc_ctx *c, sdc_tensor *into, const sdc_attention *a, const sdc_tensor *x,
                                 const sdc_tensor *context);

#endif
