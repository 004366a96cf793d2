#include "nn/attention.h"

#include <math.h>
#include <stdio.h>

void sdc_attention_declare(sdc_params *p, sdc_attention *a, int64_t query_dim, int64_t context_dim, int heads,
                           int64_t dim_head, int qkv_bias, const char *name) {
    char buf[400];
    int64_t inner = heads * dim_head;
    a->heads = heads;
    a->dim_head = dim_head;
    sdc_pname(buf, sizeof buf, "%s.to_q", name);
    sdc_linear_declare(p, &a->to_q, query_dim, inner, qkv_bias, buf);
    sdc_pname(buf, sizeof buf, "%s.to_k", name);
    sdc_linear_declare(p, &a->to_k, context_dim, inner, qkv_bias, buf);
    sdc_pname(buf, sizeof buf, "%s.to_v", name);
    sdc_linear_declare(p, &a->to_v, context_dim, inner, qkv_bias, buf);
    sdc_pname(buf, sizeof buf, "%s.to_out.0", name);
    sdc_linear_declare(p, &a->to_out, inner, query_dim, 1, buf);
}

sdc_tensor sdc_attention_forward(sdc_ctx *c, sdc_tensor *into, const sdc_attention *a, const sdc_tensor *x,
                                 const sdc_tensor *context) {
    const sdc_tensor *kv = context ? context : x;
    sdc_tensor out = into ? *into : sdc_ctx_new(c, x->shape[0], x->shape[1], a->to_out.out);
    size_t mark = sdc_arena_mark(c->arena);
    sdc_tensor q = sdc_linear_forward(c, NULL, &a->to_q, x);
    sdc_tensor k = sdc_linear_forward(c, NULL, &a->to_k, kv);
    sdc_tensor v = sdc_linear_forward(c, NULL, &a->to_v, kv);
    /* softmax(q·kᵀ/√d)·v per head */
    sdc_tensor h = sdc_op_attention(c, NULL, &q, &k, &v, a->heads, 1.0f / sqrtf((float)a->dim_head), 0);
    sdc_linear_forward(c, &out, &a->to_out, &h);
    sdc_ctx_release(c, mark);
    return out;
}
