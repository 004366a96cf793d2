#include "nn/conv2d.h"

void sdc_conv2d_declare(sdc_params *p, sdc_conv2d *l, int64_t in, int64_t out, int kernel, int stride, int pad,
                        const char *name) {
    l->in = in;
    l->out = out;
    l->kernel = kernel;
    l->stride = stride;
    l->pad = pad;
    l->lora = NULL;
    sdc_init init = sdc_init_fan_in(in * kernel * kernel);
    sdc_params_declare(p, &l->weight, init, 4, SDC_SHAPE(out, in, kernel, kernel), "%s.weight", name);
    sdc_params_declare(p, &l->bias, init, 1, SDC_SHAPE(out), "%s.bias", name);
}

sdc_tensor sdc_conv2d_forward(sdc_ctx *c, sdc_tensor *into, const sdc_conv2d *l, const sdc_tensor *x) {
    if (!l->lora) return sdc_op_conv2d(c, into, x, &l->weight, &l->bias, l->stride, l->pad);
    const sdc_lora_adapter *a = l->lora;
    sdc_tensor y = sdc_op_conv2d(c, NULL, x, &l->weight, &l->bias, l->stride, l->pad);
    sdc_tensor out = into ? *into : sdc_ctx_alloc(c, 4, y.shape);
    size_t mark = sdc_arena_mark(c->arena);
    sdc_tensor h = sdc_op_conv2d(c, NULL, x, &a->A, NULL, l->stride, l->pad);
    sdc_tensor d = sdc_op_conv2d(c, NULL, &h, &a->B, NULL, 1, 0);
    sdc_op_axpby(c, &out, 1.0f, &y, a->scale, &d);
    sdc_ctx_release(c, mark);
    return out;
}
