#include "nn/linear.h"

void sdc_linear_declare(sdc_params *p, sdc_linear *l, int64_t in, int64_t out, int bias, const char *name) {
    l->in = in;
    l->out = out;
    l->has_bias = bias;
    l->lora = NULL;
    sdc_params_declare(p, &l->weight, sdc_init_fan_in(in), 2, SDC_SHAPE(out, in), "%s.weight", name);
    if (bias)
        sdc_params_declare(p, &l->bias, sdc_init_fan_in(in), 1, SDC_SHAPE(out), "%s.bias", name);
    else
        l->bias = (sdc_tensor){0};
}

sdc_tensor sdc_linear_forward(sdc_ctx *c, sdc_tensor *into, const sdc_linear *l, const sdc_tensor *x) {
    if (!l->lora) return sdc_op_linear(c, into, x, &l->weight, l->has_bias ? &l->bias : NULL);
    const sdc_lora_adapter *a = l->lora;
    int64_t shape[SDC_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[x->ndim - 1] = l->out;
    sdc_tensor out = into ? *into : sdc_ctx_alloc(c, x->ndim, shape);
    size_t mark = sdc_arena_mark(c->arena);
    sdc_tensor y = sdc_op_linear(c, NULL, x, &l->weight, l->has_bias ? &l->bias : NULL);
    sdc_tensor h = sdc_op_linear(c, NULL, x, &a->A, NULL);
    sdc_tensor d = sdc_op_linear(c, NULL, &h, &a->B, NULL);
    sdc_op_axpby(c, &out, 1.0f, &y, a->scale, &d);
    sdc_ctx_release(c, mark);
    return out;
}
