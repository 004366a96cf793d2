#include "models/clip_text_params.h"

#include <stdio.h>
#include <string.h>

#include "io/json.h"

sdc_status sdc_clip_text_config_parse(const cJSON *cfg, int with_projection, sdc_clip_text_config *c,
                                      const char *what, sdc_error *err) {
    /* transformers' CLIPTextConfig defaults */
    *c = (sdc_clip_text_config){.vocab_size = 49408, .hidden_size = 512, .intermediate_size = 2048,
                                .num_hidden_layers = 12, .num_attention_heads = 8, .max_position_embeddings = 77,
                                .projection_dim = 512, .with_projection = with_projection, .quick_gelu = 1,
                                .layer_norm_eps = 1e-5};
    SDC_TRY(sdc_json_get_int(cfg, "vocab_size", &c->vocab_size, what, err));
    SDC_TRY(sdc_json_get_int(cfg, "hidden_size", &c->hidden_size, what, err));
    SDC_TRY(sdc_json_get_int(cfg, "intermediate_size", &c->intermediate_size, what, err));
    SDC_TRY(sdc_json_get_int(cfg, "num_hidden_layers", &c->num_hidden_layers, what, err));
    SDC_TRY(sdc_json_get_int(cfg, "num_attention_heads", &c->num_attention_heads, what, err));
    SDC_TRY(sdc_json_get_int(cfg, "max_position_embeddings", &c->max_position_embeddings, what, err));
    SDC_TRY(sdc_json_get_int(cfg, "projection_dim", &c->projection_dim, what, err));
    SDC_TRY(sdc_json_get_double(cfg, "layer_norm_eps", &c->layer_norm_eps, what, err));
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
    if (c->num_hidden_layers > 1000 || c->hidden_size > (1 << 16) || c->vocab_size > (1 << 24))
        return sdc_fail(err, SDC_ELIMIT, "%s: sizes out of range", what);
    return SDC_OK;
}

int sdc_clip_text_params(const sdc_clip_text_config *c, sdc_param_fn fn, void *ctx) {
    const int64_t D = c->hidden_size, F = c->intermediate_size;
    char name[256];
    int n = 0;
#define P1(nm, a) (fn(ctx, nm, 1, (int64_t[]){a}), n++)
#define P2(nm, a, b) (fn(ctx, nm, 2, (int64_t[]){a, b}), n++)
    P2("text_model.embeddings.token_embedding.weight", c->vocab_size, D);
    P2("text_model.embeddings.position_embedding.weight", c->max_position_embeddings, D);
    static const char *proj[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        for (int p = 0; p < 4; p++) {
            snprintf(name, sizeof name, "text_model.encoder.layers.%lld.self_attn.%s.weight", (long long)l, proj[p]);
            P2(name, D, D);
            snprintf(name, sizeof name, "text_model.encoder.layers.%lld.self_attn.%s.bias", (long long)l, proj[p]);
            P1(name, D);
        }
        for (int k = 1; k <= 2; k++) {
            snprintf(name, sizeof name, "text_model.encoder.layers.%lld.layer_norm%d.weight", (long long)l, k);
            P1(name, D);
            snprintf(name, sizeof name, "text_model.encoder.layers.%lld.layer_norm%d.bias", (long long)l, k);
            P1(name, D);
        }
        snprintf(name, sizeof name, "text_model.encoder.layers.%lld.mlp.fc1.weight", (long long)l);
        P2(name, F, D);
        snprintf(name, sizeof name, "text_model.encoder.layers.%lld.mlp.fc1.bias", (long long)l);
        P1(name, F);
        snprintf(name, sizeof name, "text_model.encoder.layers.%lld.mlp.fc2.weight", (long long)l);
        P2(name, D, F);
        snprintf(name, sizeof name, "text_model.encoder.layers.%lld.mlp.fc2.bias", (long long)l);
        P1(name, D);
    }
    P1("text_model.final_layer_norm.weight", D);
    P1("text_model.final_layer_norm.bias", D);
    if (c->with_projection) P2("text_projection.weight", c->projection_dim, D);
#undef P1
#undef P2
    return n;
}
