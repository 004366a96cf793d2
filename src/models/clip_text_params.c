#include "models/clip_text_params.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/json.h"
#include "models/clip_text.h"

sdc_status sdc_clip_text_config_parse(const cJSON *cfg, int with_projection, sdc_clip_text_config *c,
                                      const char *what, sdc_error *err) {
    /* transformers' CLIPTextConfig defaults */
    *c = (sdc_clip_text_config){.vocab_size = 49408, .hidden_size = 512, .intermediate_size = 2048,
                                .num_hidden_layers = 12, .num_attention_heads = 8, .max_position_embeddings = 77,
                                .projection_dim = 512, .with_projection = with_projection, .quick_gelu = 1,
                                .layer_norm_eps = 1e-5, .eos_token_id = 49407, .initializer_factor = 1.0};
    SDC_TRY(sdc_json_get_int(cfg, "vocab_size", &c->vocab_size, what, err));
    SDC_TRY(sdc_json_get_int(cfg, "hidden_size", &c->hidden_size, what, err));
    SDC_TRY(sdc_json_get_int(cfg, "intermediate_size", &c->intermediate_size, what, err));
    SDC_TRY(sdc_json_get_int(cfg, "num_hidden_layers", &c->num_hidden_layers, what, err));
    SDC_TRY(sdc_json_get_int(cfg, "num_attention_heads", &c->num_attention_heads, what, err));
    SDC_TRY(sdc_json_get_int(cfg, "max_position_embeddings", &c->max_position_embeddings, what, err));
    SDC_TRY(sdc_json_get_int(cfg, "projection_dim", &c->projection_dim, what, err));
    SDC_TRY(sdc_json_get_double(cfg, "layer_norm_eps", &c->layer_norm_eps, what, err));
    SDC_TRY(sdc_json_get_int(cfg, "eos_token_id", &c->eos_token_id, what, err));
    SDC_TRY(sdc_json_get_double(cfg, "initializer_factor", &c->initializer_factor, what, err));
    const char *act = NULL;
    SDC_TRY(sdc_json_get_string(cfg, "hidden_act", &act, what, err));
    if (act) {
        if (strcmp(act, "quick_gelu") == 0) c->quick_gelu = 1;
        else if (strcmp(act, "gelu") == 0) c->quick_gelu = 0;
        else return sdc_fail(err, SDC_EUNSUPPORTED, "%s: hidden_act \"%s\" (sdc knows quick_gelu and gelu)", what, act);
    }
    if (c->vocab_size <= 0 || c->hidden_size <= 0 || c->intermediate_size <= 0 || c->num_hidden_layers <= 0 ||
        c->num_attention_heads <= 0 || c->max_position_embeddings <= 0 || c->hidden_size % c->num_attention_heads)
        return sdc_fail(err, SDC_EFORMAT, "%s: inconsistent sizes (hidden_size must be a positive multiple of num_attention_heads)", what);
    if (with_projection && c->projection_dim <= 0)
        return sdc_fail(err, SDC_EFORMAT, "%s: projection_dim must be positive", what);
    if (!(c->layer_norm_eps > 0) || !(c->initializer_factor >= 0))
        return sdc_fail(err, SDC_EFORMAT, "%s: layer_norm_eps must be positive and initializer_factor non-negative", what);
    if (c->num_hidden_layers > 1000 || c->hidden_size > (1 << 16) || c->vocab_size > (1 << 24) ||
        c->intermediate_size > (1 << 20) || c->max_position_embeddings > (1 << 20) || c->projection_dim > (1 << 16) ||
        c->eos_token_id < INT32_MIN || c->eos_token_id > INT32_MAX)
        return sdc_fail(err, SDC_ELIMIT, "%s: sizes out of range", what);
    return SDC_OK;
}

int sdc_clip_text_params(const sdc_clip_text_config *c, sdc_param_fn fn, void *ctx) {
    /* Declare a model (no buffer) and list what it declared: one list of names. */
    sdc_clip_text *m = calloc(1, sizeof *m);
    if (!m) return -1;
    sdc_error err;
    if (sdc_clip_text_declare(m, c, "text_encoder", &err) != SDC_OK) {
        free(m);
        return -1;
    }
    int n = (int)m->params.count;
    for (size_t i = 0; i < m->params.count; i++) {
        const sdc_param *it = &m->params.items[i];
        fn(ctx, it->name, it->slot->ndim, it->slot->shape);
    }
    sdc_clip_text_free(m);
    free(m);
    return n;
}
