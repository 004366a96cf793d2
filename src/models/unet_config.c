/* Reading unet/config.json into sdc_unet_config, with diffusers' defaults
 * and its naming quirk: "attention_head_dim" means the number of heads when
 * "num_attention_heads" is absent (diffusers keeps the old misnomer). */
#include <string.h>

#include "io/json.h"
#include "models/unet.h"

static sdc_status list_or_broadcast(const cJSON *j, const char *key, int64_t *out, int n, int64_t def,
                                    const char *what, sdc_error *err) {
    int64_t buf[SDC_UNET_MAX_LEVELS];
    int count = 0;
    for (int i = 0; i < n; i++) out[i] = def;
    SDC_TRY(sdc_json_get_int_list(j, key, buf, SDC_UNET_MAX_LEVELS, &count, what, err));
    if (count == 0) return SDC_OK;
    if (count == 1 && !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, key))) {
        for (int i = 0; i < n; i++) out[i] = buf[0];
        return SDC_OK;
    }
    if (count != n)
        return sdc_fail(err, SDC_EFORMAT, "%s: \"%s\" has %d entries but the model has %d blocks", what, key, count,
                        n);
    memcpy(out, buf, (size_t)n * sizeof *out);
    return SDC_OK;
}

/* A key that must be absent/null or have the given value for sdc to run the model. */
static sdc_status need_string(const cJSON *j, const char *key, const char *want, const char *what, sdc_error *err) {
    const char *s = NULL;
    SDC_TRY(sdc_json_get_string(j, key, &s, what, err));
    if (s && strcmp(s, want) != 0)
        return sdc_fail(err, SDC_EUNSUPPORTED, "%s: \"%s\": \"%s\" is not supported (only \"%s\")", what, key, s,
                        want);
    return SDC_OK;
}

static sdc_status need_null(const cJSON *j, const char *key, const char *what, sdc_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (v && !cJSON_IsNull(v)) return sdc_fail(err, SDC_EUNSUPPORTED, "%s: \"%s\" is set; sdc does not support it", what, key);
    return SDC_OK;
}

static sdc_status need_false(const cJSON *j, const char *key, const char *what, sdc_error *err) {
    int b = 0;
    SDC_TRY(sdc_json_get_bool(j, key, &b, what, err));
    if (b) return sdc_fail(err, SDC_EUNSUPPORTED, "%s: \"%s\" is true; sdc does not support it", what, key);
    return SDC_OK;
}

static sdc_status block_types(const cJSON *j, const char *key, const char *attn_name, const char *plain_name,
                              int *out, int *n, const char *what, sdc_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!v) {
        /* diffusers' defaults: 3 cross-attention levels and a plain one */
        static const int def[4] = {1, 1, 1, 0};
        int up = strstr(key, "up") != NULL;
        for (int i = 0; i < 4; i++) out[i] = up ? def[3 - i] : def[i];
        *n = 4;
        return SDC_OK;
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) < 1 || cJSON_GetArraySize(v) > SDC_UNET_MAX_LEVELS)
        return sdc_fail(err, SDC_EFORMAT, "%s: \"%s\" must be a list of 1 to %d block names", what, key,
                        SDC_UNET_MAX_LEVELS);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsString(e)) return sdc_fail(err, SDC_EFORMAT, "%s: \"%s\"[%d] must be a string", what, key, i);
        if (strcmp(e->valuestring, attn_name) == 0)
            out[i] = 1;
        else if (strcmp(e->valuestring, plain_name) == 0)
            out[i] = 0;
        else
            return sdc_fail(err, SDC_EUNSUPPORTED, "%s: \"%s\"[%d] = \"%s\" is not supported (only %s and %s)", what,
                            key, i, e->valuestring, attn_name, plain_name);
        i++;
    }
    *n = i;
    return SDC_OK;
}

sdc_status sdc_unet_config_parse(const cJSON *j, const char *what, sdc_unet_config *o, sdc_error *err) {
    memset(o, 0, sizeof *o);
    SDC_TRY(need_string(j, "_class_name", "UNet2DConditionModel", what, err));
    int nd = 0, nu = 0;
    SDC_TRY(block_types(j, "down_block_types", "CrossAttnDownBlock2D", "DownBlock2D", o->down_attn, &nd, what, err));
    SDC_TRY(block_types(j, "up_block_types", "CrossAttnUpBlock2D", "UpBlock2D", o->up_attn, &nu, what, err));
    if (nd != nu)
        return sdc_fail(err, SDC_EFORMAT, "%s: %d down blocks but %d up blocks", what, nd, nu);
    int L = o->levels = nd;

    int64_t v;
    o->in_channels = 4, o->out_channels = 4, o->sample_size = 64;
    SDC_TRY(sdc_json_get_int(j, "in_channels", &o->in_channels, what, err));
    SDC_TRY(sdc_json_get_int(j, "out_channels", &o->out_channels, what, err));
    SDC_TRY(sdc_json_get_int(j, "sample_size", &o->sample_size, what, err));
    {
        static const int64_t def[4] = {320, 640, 1280, 1280};
        int count = 0;
        for (int i = 0; i < L; i++) o->block_out_channels[i] = i < 4 ? def[i] : 1280;
        SDC_TRY(sdc_json_get_int_list(j, "block_out_channels", o->block_out_channels, SDC_UNET_MAX_LEVELS, &count,
                                      what, err));
        if (count && count != L)
            return sdc_fail(err, SDC_EFORMAT, "%s: \"block_out_channels\" has %d entries but the model has %d blocks",
                            what, count, L);
    }
    SDC_TRY(list_or_broadcast(j, "layers_per_block", o->layers_per_block, L, 2, what, err));

    /* heads: num_attention_heads, else attention_head_dim (diffusers' misnomer), default 8 */
    const cJSON *nah = cJSON_GetObjectItemCaseSensitive(j, "num_attention_heads");
    if (nah && !cJSON_IsNull(nah))
        SDC_TRY(list_or_broadcast(j, "num_attention_heads", o->heads, L, 8, what, err));
    else
        SDC_TRY(list_or_broadcast(j, "attention_head_dim", o->heads, L, 8, what, err));
    SDC_TRY(list_or_broadcast(j, "transformer_layers_per_block", o->transformer_layers, L, 1, what, err));
    const cJSON *rev = cJSON_GetObjectItemCaseSensitive(j, "reverse_transformer_layers_per_block");
    if (rev && !cJSON_IsNull(rev)) {
        SDC_TRY(list_or_broadcast(j, "reverse_transformer_layers_per_block", o->reverse_transformer_layers, L, 1,
                                  what, err));
    } else {
        for (int i = 0; i < L; i++) o->reverse_transformer_layers[i] = o->transformer_layers[L - 1 - i];
    }
    const cJSON *oca = cJSON_GetObjectItemCaseSensitive(j, "only_cross_attention");
    if (cJSON_IsArray(oca)) {
        if (cJSON_GetArraySize(oca) != L)
            return sdc_fail(err, SDC_EFORMAT, "%s: \"only_cross_attention\" needs %d entries", what, L);
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, oca) {
            if (!cJSON_IsBool(e))
                return sdc_fail(err, SDC_EFORMAT, "%s: \"only_cross_attention\"[%d] must be a boolean", what, i);
            o->only_cross_attention[i++] = cJSON_IsTrue(e);
        }
    } else {
        int b = 0;
        SDC_TRY(sdc_json_get_bool(j, "only_cross_attention", &b, what, err));
        for (int i = 0; i < L; i++) o->only_cross_attention[i] = b;
    }
    o->cross_attention_dim = 1280;
    {
        int64_t cad[SDC_UNET_MAX_LEVELS];
        int count = 0;
        SDC_TRY(sdc_json_get_int_list(j, "cross_attention_dim", cad, SDC_UNET_MAX_LEVELS, &count, what, err));
        for (int i = 1; i < count; i++)
            if (cad[i] != cad[0])
                return sdc_fail(err, SDC_EUNSUPPORTED, "%s: per-block \"cross_attention_dim\" values differ", what);
        if (count) o->cross_attention_dim = cad[0];
    }

    const char *mid = "UNetMidBlock2DCrossAttn";
    const cJSON *mbt = cJSON_GetObjectItemCaseSensitive(j, "mid_block_type");
    o->mid_block = 1;
    if (mbt && cJSON_IsNull(mbt)) o->mid_block = 0;
    else SDC_TRY(need_string(j, "mid_block_type", mid, what, err));

    v = 32;
    SDC_TRY(sdc_json_get_int(j, "norm_num_groups", &v, what, err));
    o->norm_num_groups = (int)v;
    o->norm_eps = 1e-5;
    SDC_TRY(sdc_json_get_double(j, "norm_eps", &o->norm_eps, what, err));
    o->flip_sin_to_cos = 1;
    SDC_TRY(sdc_json_get_bool(j, "flip_sin_to_cos", &o->flip_sin_to_cos, what, err));
    SDC_TRY(sdc_json_get_double(j, "freq_shift", &o->freq_shift, what, err));
    SDC_TRY(sdc_json_get_bool(j, "use_linear_projection", &o->use_linear_projection, what, err));
    SDC_TRY(sdc_json_get_bool(j, "upcast_attention", &o->upcast_attention, what, err));
    o->downsample_padding = 1;
    SDC_TRY(sdc_json_get_int(j, "downsample_padding", &o->downsample_padding, what, err));
    o->mid_block_scale_factor = 1.0;
    SDC_TRY(sdc_json_get_double(j, "mid_block_scale_factor", &o->mid_block_scale_factor, what, err));
    o->time_embed_dim = o->block_out_channels[0] * 4;
    SDC_TRY(sdc_json_get_int(j, "time_embedding_dim", &o->time_embed_dim, what, err));

    const char *aet = NULL;
    SDC_TRY(sdc_json_get_string(j, "addition_embed_type", &aet, what, err));
    if (aet) {
        if (strcmp(aet, "text_time") != 0)
            return sdc_fail(err, SDC_EUNSUPPORTED, "%s: \"addition_embed_type\": \"%s\" is not supported (only \"text_time\")",
                            what, aet);
        o->text_time = 1;
        SDC_TRY(sdc_json_get_int(j, "addition_time_embed_dim", &o->addition_time_embed_dim, what, err));
        SDC_TRY(sdc_json_get_int(j, "projection_class_embeddings_input_dim",
                                 &o->projection_class_embeddings_input_dim, what, err));
        if (o->addition_time_embed_dim <= 0 || o->projection_class_embeddings_input_dim <= 0)
            return sdc_fail(err, SDC_EFORMAT,
                            "%s: \"text_time\" needs addition_time_embed_dim and projection_class_embeddings_input_dim",
                            what);
    }

    /* The rest of the config space that SD/SDXL checkpoints never use. */
    SDC_TRY(need_string(j, "act_fn", "silu", what, err));
    SDC_TRY(need_string(j, "resnet_time_scale_shift", "default", what, err));
    SDC_TRY(need_string(j, "time_embedding_type", "positional", what, err));
    SDC_TRY(need_string(j, "attention_type", "default", what, err));
    static const char *const nulls[] = {"class_embed_type", "num_class_embeds", "time_cond_proj_dim", "encoder_hid_dim",
                                        "encoder_hid_dim_type", "timestep_post_act", "time_embedding_act_fn",
                                        "cross_attention_norm", "mid_block_only_cross_attention"};
    for (size_t i = 0; i < sizeof nulls / sizeof *nulls; i++) SDC_TRY(need_null(j, nulls[i], what, err));
    static const char *const falses[] = {"center_input_sample", "dual_cross_attention", "resnet_skip_time_act",
                                         "class_embeddings_concat"};
    for (size_t i = 0; i < sizeof falses / sizeof *falses; i++) SDC_TRY(need_false(j, falses[i], what, err));
    double ros = 1.0;
    SDC_TRY(sdc_json_get_double(j, "resnet_out_scale_factor", &ros, what, err));
    if (ros != 1.0) return sdc_fail(err, SDC_EUNSUPPORTED, "%s: \"resnet_out_scale_factor\" other than 1", what);
    int64_t k = 3;
    SDC_TRY(sdc_json_get_int(j, "conv_in_kernel", &k, what, err));
    if (k != 3) return sdc_fail(err, SDC_EUNSUPPORTED, "%s: \"conv_in_kernel\" other than 3", what);
    k = 3;
    SDC_TRY(sdc_json_get_int(j, "conv_out_kernel", &k, what, err));
    if (k != 3) return sdc_fail(err, SDC_EUNSUPPORTED, "%s: \"conv_out_kernel\" other than 3", what);

    /* Sanity of the numbers (a config from a stranger). */
    if (o->in_channels <= 0 || o->in_channels > 64 || o->out_channels <= 0 || o->out_channels > 64)
        return sdc_fail(err, SDC_EFORMAT, "%s: in_channels/out_channels out of range", what);
    if (o->norm_num_groups <= 0) return sdc_fail(err, SDC_EFORMAT, "%s: norm_num_groups must be positive", what);
    for (int i = 0; i < L; i++) {
        int64_t ch = o->block_out_channels[i];
        if (ch <= 0 || ch > 16384 || ch % o->norm_num_groups != 0)
            return sdc_fail(err, SDC_EFORMAT, "%s: block_out_channels[%d] = %lld must be a positive multiple of norm_num_groups (%d)",
                            what, i, (long long)ch, o->norm_num_groups);
        if (o->layers_per_block[i] < 1 || o->layers_per_block[i] > 16)
            return sdc_fail(err, SDC_EFORMAT, "%s: layers_per_block out of range", what);
        if (o->transformer_layers[i] < 1 || o->transformer_layers[i] > 64 || o->reverse_transformer_layers[i] < 1 ||
            o->reverse_transformer_layers[i] > 64)
            return sdc_fail(err, SDC_EFORMAT, "%s: transformer_layers_per_block out of range", what);
        if (o->heads[i] < 1 || ch % o->heads[i] != 0)
            return sdc_fail(err, SDC_EFORMAT, "%s: %lld channels at level %d do not split into %lld heads", what,
                            (long long)ch, i, (long long)o->heads[i]);
    }
    if (o->cross_attention_dim <= 0 || o->time_embed_dim <= 0)
        return sdc_fail(err, SDC_EFORMAT, "%s: cross_attention_dim/time_embedding_dim must be positive", what);
    return SDC_OK;
}

sdc_status sdc_unet_check_size(const sdc_unet_config *cfg, int64_t h, int64_t w, sdc_error *err) {
    int64_t m = (int64_t)1 << (cfg->levels - 1);
    if (h <= 0 || w <= 0 || h % m != 0 || w % m != 0)
        return sdc_fail(err, SDC_EINVAL, "latent size %lldx%lld must be a positive multiple of %lld for this UNet",
                        (long long)h, (long long)w, (long long)m);
    return SDC_OK;
}
