#include "nn/linear.h"

void sdc_linear_declare(sdc_params *p, sdc_linear *l, int64_t in, int64_t out, int bias, const char *name) {
    l->in = in;
    l->out = out;
    l->has_bias = bias;
    sdc_params_declare(p, &l->weight, sdc_init_fan_in(in), 2, SDC_SHAPE(out, in), "%s.weight", name);
    if (bias)
        sdc_params_declare(p, &l->bias, sdc_init_fan_in(in), 1, SDC_SHAPE(out), "%s.bias", name);
    else
        l->bias = (sdc_tensor){0};
}

sdc_tensor sdc_linear_forward(sdc_ctx *c, sdc_tensor *into, const sdc_linear *l, const sdc_tensor *x) {
    return sdc_op_linear(c, into, x, &l->weight, l->has_bias ? &l->bias : NULL);
}
