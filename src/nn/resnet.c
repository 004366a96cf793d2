#include "nn/resnet.h"

#include <stdio.h>

void sdc_resnet_declare(sdc_params *p, sdc_resnet *r, int64_t in, int64_t out, int64_t temb_channels, int groups,
                        float eps, float output_scale_factor, const char *name) {
    char buf[400];
    sdc_pname(buf, sizeof buf, "%s.norm1", name);
    sdc_group_norm_declare(p, &r->norm1, groups, in, eps, buf);
    sdc_pname(buf, sizeof buf, "%s.conv1", name);
    sdc_conv2d_declare(p, &r->conv1, in, out, 3, 1, 1, buf);
    r->has_temb = temb_channels > 0;
    if (r->has_temb) {
        sdc_pname(buf, sizeof buf, "%s.time_emb_proj", name);
        sdc_linear_declare(p, &r->time_emb_proj, temb_channels, out, 1, buf);
    }
    sdc_pname(buf, sizeof buf, "%s.norm2", name);
    sdc_group_norm_declare(p, &r->norm2, groups, out, eps, buf);
    sdc_pname(buf, sizeof buf, "%s.conv2", name);
    sdc_conv2d_declare(p, &r->conv2, out, out, 3, 1, 1, buf);
    r->has_shortcut = in != out;
    if (r->has_shortcut) {
        sdc_pname(buf, sizeof buf, "%s.conv_shortcut", name);
        sdc_conv2d_declare(p, &r->shortcut, in, out, 1, 1, 0, buf);
    }
    r->output_scale = output_scale_factor;
}

sdc_tensor sdc_resnet_forward(sdc_ctx *c, sdc_tensor *into, const sdc_resnet *r, const sdc_tensor *x,
                              const sdc_tensor *temb) {
    int64_t B = x->shape[0], H = x->shape[2], W = x->shape[3], C = r->conv2.out;
    sdc_tensor out = into ? *into : sdc_ctx_new(c, B, C, H, W);
    size_t mark = sdc_arena_mark(c->arena);
    sdc_tensor h = sdc_group_norm_forward(c, NULL, &r->norm1, x, SDC_ACT_SILU);
    sdc_tensor h1 = sdc_conv2d_forward(c, NULL, &r->conv1, &h);
    if (r->has_temb && temb) {
        sdc_tensor t = sdc_op_act(c, NULL, temb, SDC_ACT_SILU);
        t = sdc_linear_forward(c, NULL, &r->time_emb_proj, &t);
        sdc_op_add_channel(c, &h1, &h1, &t);
    }
    sdc_tensor h2 = sdc_group_norm_forward(c, NULL, &r->norm2, &h1, SDC_ACT_SILU);
    sdc_tensor h3 = sdc_conv2d_forward(c, NULL, &r->conv2, &h2);
    if (r->has_shortcut) {
        sdc_tensor s = sdc_conv2d_forward(c, NULL, &r->shortcut, x);
        sdc_op_axpby(c, &out, 1.0f / r->output_scale, &s, 1.0f / r->output_scale, &h3);
    } else {
        sdc_op_axpby(c, &out, 1.0f / r->output_scale, x, 1.0f / r->output_scale, &h3);
    }
    sdc_ctx_release(c, mark);
    return out;
}
