#include "nn/norm.h"

static void declare_affine(sdc_params *p, sdc_norm *n, int64_t channels, float eps, const char *name) {
    n->channels = channels;
    n->eps = eps;
    sdc_params_declare(p, &n->weight, SDC_INIT_ONES, 1, SDC_SHAPE(channels), "%s.weight", name);
    sdc_params_declare(p, &n->bias, SDC_INIT_ZEROS, 1, SDC_SHAPE(channels), "%s.bias", name);
}

void sdc_group_norm_declare(sdc_params *p, sdc_norm *n, int groups, int64_t channels, float eps, const char *name) {
    n->groups = groups;
    declare_affine(p, n, channels, eps, name);
}

void sdc_layer_norm_declare(sdc_params *p, sdc_norm *n, int64_t channels, float eps, const char *name) {
    n->groups = 0;
    declare_affine(p, n, channels, eps, name);
}

sdc_tensor sdc_group_norm_forward(sdc_ctx *c, sdc_tensor *into, const sdc_norm *n, const sdc_tensor *x, sdc_act act) {
    return sdc_op_group_norm(c, into, x, &n->weight, &n->bias, n->groups, n->eps, act);
}

sdc_tensor sdc_layer_norm_forward(sdc_ctx *c, sdc_tensor *into, const sdc_norm *n, const sdc_tensor *x) {
    return sdc_op_layer_norm(c, into, x, &n->weight, &n->bias, n->eps);
}
