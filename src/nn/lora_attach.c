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

sdc_status sdc_lora_attach(sdc_lora_set *s, sdc_params *model, const char *const *targets, int ntargets, int rank,
                           float alpha, sdc_lora_init init, const char *component, sdc_error *err) {
    memset(s, 0, sizeof *s);
    if (rank < 1 || rank > 4096) return sdc_fail(err, SDC_EINVAL, "LoRA rank must be in 1..4096 (got %d)", rank);
    s->rank = rank;
    s->alpha = alpha;
    size_t n = 0;
    for (size_t i = 0; i < model->count; i++)
        for (int k = 0; k < ntargets; k++)
            if (model->items[i].slot->ndim == 2 && matches(model->items[i].name, targets[k])) {
                n++;
                break;
            }
    if (n == 0) {
        char list[256] = "";
        for (int k = 0, used = 0; k < ntargets && used < 200; k++)
            used += snprintf(list + used, sizeof list - (size_t)used, "%s%s", k ? ", " : "", targets[k]);
        return sdc_fail(err, SDC_EINVAL, "%s: no linear layer matches the LoRA targets %s", model->component, list);
    }
    SDC_TRY(sdc_params_init(&s->params, component, err));
    s->adapters = calloc(n, sizeof *s->adapters);
    s->layers = calloc(n, sizeof *s->layers);
    if (!s->adapters || !s->layers) {
        sdc_lora_detach(s);
        return sdc_fail(err, SDC_ENOMEM, "out of memory for %zu LoRA adapters", n);
    }
    for (size_t i = 0; i < model->count; i++) {
        sdc_param *it = &model->items[i];
        int hit = 0;
        for (int k = 0; k < ntargets && !hit; k++) hit = it->slot->ndim == 2 && matches(it->name, targets[k]);
        if (!hit) continue;
        /* the weight tensor is the `weight` field of an sdc_linear */
        sdc_linear *l = (sdc_linear *)(void *)((char *)it->slot - offsetof(sdc_linear, weight));
        SDC_ASSERT(l->out == it->slot->shape[0] && l->in == it->slot->shape[1]);
        sdc_lora_adapter *a = &s->adapters[s->count];
        a->rank = rank;
        a->scale = alpha / (float)rank;
        char module[512];
        snprintf(module, sizeof module, "%.*s", (int)(strlen(it->name) - strlen(".weight")), it->name);
        /* B = 0 either way, so training starts at the base model */
        sdc_init ia = init == SDC_LORA_INIT_GAUSSIAN ? sdc_init_normal(1.0f / (float)rank) : sdc_init_fan_in(l->in);
        sdc_params_declare(&s->params, &a->A, ia, 2, SDC_SHAPE(rank, l->in), "%s.lora_A.weight", module);
        sdc_params_declare(&s->params, &a->B, SDC_INIT_ZEROS, 2, SDC_SHAPE(l->out, rank), "%s.lora_B.weight", module);
        s->layers[s->count++] = l;
    }
    sdc_status st = sdc_params_alloc(&s->params, err);
    if (st != SDC_OK) {
        sdc_lora_detach(s);
        return st;
    }
    for (size_t i = 0; i < s->count; i++) s->layers[i]->lora = &s->adapters[i];
    return SDC_OK;
}

void sdc_lora_detach(sdc_lora_set *s) {
    for (size_t i = 0; i < s->count; i++)
        if (s->layers[i]) s->layers[i]->lora = NULL;
    free(s->adapters);
    free(s->layers);
    if (s->params.component) sdc_params_free(&s->params);
    memset(s, 0, sizeof *s);
}
