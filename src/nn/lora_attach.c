#include "nn/lora_attach.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "<...>.to_out.0.weight" matches target "to_out.0": the module name ends
 * with "." + target (or is the target). */
static int matches(const char *param, const char *target) {
    size_t n = strlen(param), w = strlen(".weight"), t = strlen(target);
    if (n <= w || strcmp(param + n - w, ".weight") != 0) return 0;
    size_t m = n - w; /* module name length */
    if (m < t || strncmp(param + m - t, target, t) != 0) return 0;
    return m == t || param[m - t - 1] == '.';
}

const char *const sdc_lora_targets_diffusers[4] = {"to_q", "to_k", "to_v", "to_out.0"};
const char *const sdc_lora_targets_kohya[8] = {"to_q",     "to_k",     "to_v",          "to_out.0",
                                               "proj_in",  "proj_out", "ff.net.0.proj", "ff.net.2"};
const char *const sdc_lora_conv_targets_kohya[3] = {"conv1", "conv2", "conv"};

/* Which adapter a parameter gets: 1 linear-type (linear or 1×1 conv), 2 a
 * k×k conv, 0 none. */
static int kind_of(const sdc_param *it, const sdc_lora_config *cfg) {
    int nd = it->slot->ndim;
    int one = nd == 2 || (nd == 4 && it->slot->shape[2] == 1 && it->slot->shape[3] == 1);
    if (one)
        for (int k = 0; k < cfg->ntargets; k++)
            if (matches(it->name, cfg->targets[k])) return 1;
    if (nd == 4 && !one && cfg->conv_rank > 0)
        for (int k = 0; k < cfg->nconv_targets; k++)
            if (matches(it->name, cfg->conv_targets[k])) return 2;
    return 0;
}

sdc_status sdc_lora_attach(sdc_lora_set *s, sdc_params *model, const sdc_lora_config *cfg, const char *component,
                           sdc_error *err) {
    memset(s, 0, sizeof *s);
    if (cfg->rank < 1 || cfg->rank > 4096 || (cfg->conv_rank && (cfg->conv_rank < 1 || cfg->conv_rank > 4096)))
        return sdc_fail(err, SDC_EINVAL, "LoRA rank must be in 1..4096 (got %d, conv %d)", cfg->rank, cfg->conv_rank);
    size_t n = 0;
    for (size_t i = 0; i < model->count; i++) n += kind_of(&model->items[i], cfg) != 0;
    if (n == 0) {
        char list[256] = "";
        for (int k = 0, used = 0; k < cfg->ntargets && used < 200; k++)
            used += snprintf(list + used, sizeof list - (size_t)used, "%s%s", k ? ", " : "", cfg->targets[k]);
        return sdc_fail(err, SDC_EINVAL, "%s: no layer matches the LoRA targets %s", model->component, list);
    }
    SDC_TRY(sdc_params_init(&s->params, component, err));
    s->adapters = calloc(n, sizeof *s->adapters);
    s->fields = calloc(n, sizeof *s->fields);
    if (!s->adapters || !s->fields) {
        sdc_lora_detach(s);
        return sdc_fail(err, SDC_ENOMEM, "out of memory for %zu LoRA adapters", n);
    }
    for (size_t i = 0; i < model->count; i++) {
        sdc_param *it = &model->items[i];
        int kind = kind_of(it, cfg);
        if (!kind) continue;
        sdc_lora_adapter *a = &s->adapters[s->count];
        int r = kind == 2 ? cfg->conv_rank : cfg->rank;
        float alpha = kind == 2 ? cfg->conv_alpha : cfg->alpha;
        a->rank = r;
        a->scale = alpha / (float)r;
        char module[512];
        snprintf(module, sizeof module, "%.*s", (int)(strlen(it->name) - strlen(".weight")), it->name);
        int64_t in, out;
        if (it->slot->ndim == 2) {
            /* the weight tensor is the `weight` field of an sdc_linear */
            sdc_linear *l = (sdc_linear *)(void *)((char *)it->slot - offsetof(sdc_linear, weight));
            SDC_ASSERT(l->out == it->slot->shape[0] && l->in == it->slot->shape[1]);
            in = l->in, out = l->out;
            s->fields[s->count] = &l->lora;
        } else {
            sdc_conv2d *cv = (sdc_conv2d *)(void *)((char *)it->slot - offsetof(sdc_conv2d, weight));
            SDC_ASSERT(cv->out == it->slot->shape[0] && cv->in == it->slot->shape[1]);
            in = cv->in, out = cv->out;
            s->fields[s->count] = &cv->lora;
        }
        /* B = 0 either way, so training starts at the base model */
        int64_t kk = it->slot->ndim == 4 ? it->slot->shape[2] * it->slot->shape[3] : 1;
        sdc_init ia = cfg->init == SDC_LORA_INIT_GAUSSIAN ? sdc_init_normal(1.0f / (float)r) : sdc_init_fan_in(in * kk);
        if (it->slot->ndim == 2) {
            sdc_params_declare(&s->params, &a->A, ia, 2, SDC_SHAPE(r, in), "%s.lora_A.weight", module);
            sdc_params_declare(&s->params, &a->B, SDC_INIT_ZEROS, 2, SDC_SHAPE(out, r), "%s.lora_B.weight", module);
        } else {
            sdc_params_declare(&s->params, &a->A, ia, 4, SDC_SHAPE(r, in, it->slot->shape[2], it->slot->shape[3]),
                               "%s.lora_A.weight", module);
            sdc_params_declare(&s->params, &a->B, SDC_INIT_ZEROS, 4, SDC_SHAPE(out, r, 1, 1), "%s.lora_B.weight",
                               module);
        }
        s->count++;
    }
    sdc_status st = sdc_params_alloc(&s->params, err);
    if (st != SDC_OK) {
        sdc_lora_detach(s);
        return st;
    }
    for (size_t i = 0; i < s->count; i++) *s->fields[i] = &s->adapters[i];
    return SDC_OK;
}

void sdc_lora_detach(sdc_lora_set *s) {
    for (size_t i = 0; i < s->count; i++)
        if (s->fields && s->fields[i]) *s->fields[i] = NULL;
    free(s->adapters);
    free(s->fields);
    if (s->params.component) sdc_params_free(&s->params);
    memset(s, 0, sizeof *s);
}
