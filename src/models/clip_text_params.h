/* The parameter names a CLIPTextModel / CLIPTextModelWithProjection with a
 * given config has, in transformers' module tree (the names sdc uses). */
#ifndef SDC_MODELS_CLIP_TEXT_PARAMS_H
#define SDC_MODELS_CLIP_TEXT_PARAMS_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "core/error.h"

typedef struct sdc_clip_text_config {
    int64_t vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads;
    int64_t max_position_embeddings, projection_dim;
    int with_projection; /* CLIPTextModelWithProjection */
    int quick_gelu;      /* hidden_act quick_gelu (CLIP) vs gelu (OpenCLIP) */
    double layer_norm_eps;
    int64_t eos_token_id;      /* 2 in legacy configs: pool at the largest id instead */
    double initializer_factor; /* scales every init std (transformers' CLIP init) */
} sdc_clip_text_config;

/* Reads a transformers config.json object; `what` names the file in errors. */
sdc_status sdc_clip_text_config_parse(const cJSON *cfg, int with_projection, sdc_clip_text_config *out,
                                      const char *what, sdc_error *err);

/* Calls fn for every parameter: its name (without component prefix), rank and
 * shape, in the order the model declares them (models/clip_text.c). Returns
 * the number of parameters, or −1 when out of memory. */
typedef void (*sdc_param_fn)(void *ctx, const char *name, int ndim, const int64_t *shape);
int sdc_clip_text_params(const sdc_clip_text_config *c, sdc_param_fn fn, void *ctx);

#endif
