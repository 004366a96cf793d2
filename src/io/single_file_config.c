/* Diffusers config.json objects for the components of a single-file
 * checkpoint, synthesised from the shapes of the mapped (diffusers-named)
 * tensors plus the family's conventions for what no tensor records (the
 * list is in single_file.h). Works on canonical names, so it serves files in
 * the original layout and in diffusers names alike. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "io/single_file.h"

#define MAX_LEVELS 16

static const sdc_weight *findf(const sdc_weights *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const sdc_weight *findf(const sdc_weights *w, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return n > 0 && (size_t)n < sizeof name ? sdc_weights_find(w, name) : NULL;
}

/* A tensor that must be there with ndim dimensions. */
static sdc_status need(const sdc_single_file *sf, const sdc_weight *t, const char *name, int ndim, sdc_error *err) {
    char sb[96];
    if (!t) return sdc_fail(err, SDC_EFORMAT, "%s: no tensor \"%s\" to size the config from", sf->path, name);
    if (t->ndim != ndim)
        return sdc_fail(err, SDC_EFORMAT, "%s: tensor \"%s\" (stored as \"%s\") has shape %s, expected %d dimensions",
                        sf->path, t->name, t->src_name, sdc_shape_str(sb, sizeof sb, t->ndim, t->shape), ndim);
    return SDC_OK;
}

/* cJSON builders; *ok drops to 0 on an allocation failure. */
static void put_num(cJSON *o, const char *k, double v, int *ok) {
    if (!cJSON_AddNumberToObject(o, k, v)) *ok = 0;
}
static void put_str(cJSON *o, const char *k, const char *v, int *ok) {
    if (!cJSON_AddStringToObject(o, k, v)) *ok = 0;
}
static void put_bool(cJSON *o, const char *k, int v, int *ok) {
    if (!cJSON_AddBoolToObject(o, k, v)) *ok = 0;
}
static void put_null(cJSON *o, const char *k, int *ok) {
    if (!cJSON_AddNullToObject(o, k)) *ok = 0;
}
static void put_ints(cJSON *o, const char *k, const int64_t *v, int n, int *ok) {
    cJSON *a = cJSON_AddArrayToObject(o, k);
    if (!a) *ok = 0;
    for (int i = 0; a && i < n; i++)
        if (!cJSON_AddItemToArray(a, cJSON_CreateNumber((double)v[i]))) *ok = 0;
}
/* an int, or a list when the entries differ (diffusers accepts both) */
static void put_int_or_list(cJSON *o, const char *k, const int64_t *v, int n, int *ok) {
    int same = 1;
    for (int i = 1; i < n; i++) same = same && v[i] == v[0];
    if (same) put_num(o, k, (double)v[0], ok);
    else put_ints(o, k, v, n, ok);
}
static void put_strs(cJSON *o, const char *k, const char *const *v, int n, int *ok) {
    cJSON *a = cJSON_AddArrayToObject(o, k);
    if (!a) *ok = 0;
    for (int i = 0; a && i < n; i++)
        if (!cJSON_AddItemToArray(a, cJSON_CreateString(v[i]))) *ok = 0;
}

static sdc_status finish(const sdc_single_file *sf, cJSON *o, int ok, cJSON **out, sdc_error *err) {
    if (!o || !ok) {
        cJSON_Delete(o);
        return sdc_fail(err, SDC_ENOMEM, "%s: out of memory", sf->path);
    }
    *out = o;
    return SDC_OK;
}

static int linear_family(sdc_family f, int linear) {
    return f == SDC_FAMILY_SD2 || f == SDC_FAMILY_SDXL || (f == SDC_FAMILY_UNKNOWN && linear);
}

static int count(const sdc_weights *w, const char *fmt, const char *comp, int i) {
    int n = 0;
    while (n < 1000 && findf(w, fmt, comp, i, n)) n++;
    return n;
}

static sdc_status unet_config(const sdc_single_file *sf, cJSON **out, sdc_error *err) {
    const sdc_weights *w = &sf->weights;
    const sdc_weight *cin = findf(w, "unet.conv_in.weight");
    if (!cin && !(sf->components & SDC_SF_UNET)) return SDC_OK;
    SDC_TRY(need(sf, cin, "unet.conv_in.weight", 4, err));
    /* levels: down_blocks.i, each opening with a resnet of the level's width */
    int64_t boc[MAX_LEVELS];
    int L = 0;
    const sdc_weight *t;
    while (L < MAX_LEVELS && (t = findf(w, "unet.down_blocks.%d.resnets.0.conv1.weight", L))) {
        SDC_TRY(need(sf, t, t->name, 4, err));
        boc[L++] = t->shape[0];
    }
    if (L == 0) SDC_TRY(need(sf, NULL, "unet.down_blocks.0.resnets.0.conv1.weight", 4, err));
    const char *fam_fmt = "unet.%s_blocks.%d.resnets.%d.conv1.weight";
    int R = count(w, fam_fmt, "down", 0);
    int down_attn[MAX_LEVELS], up_attn[MAX_LEVELS];
    int64_t depth[MAX_LEVELS], up_depth[MAX_LEVELS];
    const char *down_types[MAX_LEVELS], *up_types[MAX_LEVELS];
    const char *depth_fmt = "unet.%s_blocks.%d.attentions.0.transformer_blocks.%d.attn1.to_q.weight";
    const sdc_weight *proj_in = NULL, *to_k = NULL;
    for (int i = 0; i < L; i++) {
        const sdc_weight *p = findf(w, "unet.down_blocks.%d.attentions.0.proj_in.weight", i);
        down_attn[i] = p != NULL;
        if (!proj_in) proj_in = p;
        if (!to_k) to_k = findf(w, "unet.down_blocks.%d.attentions.0.transformer_blocks.0.attn2.to_k.weight", i);
        depth[i] = count(w, depth_fmt, "down", i);
        down_types[i] = down_attn[i] ? "CrossAttnDownBlock2D" : "DownBlock2D";
        p = findf(w, "unet.up_blocks.%d.attentions.0.proj_in.weight", i);
        up_attn[i] = p != NULL;
        if (!proj_in) proj_in = p;
        up_depth[i] = count(w, depth_fmt, "up", i);
        up_types[i] = up_attn[i] ? "CrossAttnUpBlock2D" : "UpBlock2D";
    }
    const sdc_weight *mid_attn = findf(w, "unet.mid_block.attentions.0.proj_in.weight");
    const sdc_weight *mid_res = findf(w, "unet.mid_block.resnets.0.conv1.weight");
    int mid_depth = 0;
    while (mid_depth < 1000 && findf(w, "unet.mid_block.attentions.0.transformer_blocks.%d.attn1.to_q.weight", mid_depth))
        mid_depth++;
    if (!proj_in) proj_in = mid_attn;
    if (!to_k) to_k = findf(w, "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight");
    if (!to_k) to_k = findf(w, "unet.up_blocks.%d.attentions.0.transformer_blocks.0.attn2.to_k.weight", L - 1);
    /* transformer depth per level; a level without attention takes 1, except
     * the last one, whose value diffusers gives the mid block */
    for (int i = 0; i < L; i++)
        if (!down_attn[i]) depth[i] = i == L - 1 && mid_depth ? mid_depth : 1;
    /* up blocks use the down depths reversed unless told otherwise */
    int reverse_differs = 0;
    for (int i = 0; i < L; i++) {
        if (!up_attn[i]) up_depth[i] = depth[L - 1 - i];
        reverse_differs |= up_depth[i] != depth[L - 1 - i];
    }
    int linear = proj_in && proj_in->ndim == 2;
    sdc_family fam = sf->family;
    int64_t cross = to_k && to_k->ndim == 2 ? to_k->shape[1]
                    : fam == SDC_FAMILY_SDXL ? 2048 : fam == SDC_FAMILY_SD2 ? 1024 : 768;
    const sdc_weight *cout = findf(w, "unet.conv_out.weight");
    SDC_TRY(need(sf, cout, "unet.conv_out.weight", 4, err));
    const sdc_weight *temb = findf(w, "unet.time_embedding.linear_1.weight");
    const sdc_weight *add = findf(w, "unet.add_embedding.linear_1.weight");
    if (add) SDC_TRY(need(sf, add, add->name, 2, err));

    int ok = 1;
    cJSON *o = cJSON_CreateObject();
    if (!o) return finish(sf, o, 0, out, err);
    put_str(o, "_class_name", "UNet2DConditionModel", &ok);
    put_str(o, "act_fn", "silu", &ok);
    if (add) {
        /* SDXL: linear_1 takes the pooled text embedding (text_encoder_2's
         * projection width P) and 6 time ids embedded with D channels each */
        int64_t in = add->shape[1], D = 256;
        const sdc_weight *proj = findf(w, "text_encoder_2.text_projection.weight");
        if (proj && proj->ndim == 2 && in > proj->shape[0] && (in - proj->shape[0]) % 6 == 0) D = (in - proj->shape[0]) / 6;
        put_str(o, "addition_embed_type", "text_time", &ok);
        put_num(o, "addition_embed_type_num_heads", 64, &ok);
        put_num(o, "addition_time_embed_dim", (double)D, &ok);
    } else {
        put_null(o, "addition_embed_type", &ok);
        put_num(o, "addition_embed_type_num_heads", 64, &ok);
        put_null(o, "addition_time_embed_dim", &ok);
    }
    if (linear_family(fam, linear)) {
        int64_t heads[MAX_LEVELS];
        for (int i = 0; i < L; i++) heads[i] = boc[i] >= 64 ? boc[i] / 64 : 1;
        put_ints(o, "attention_head_dim", heads, L, &ok);
    } else {
        put_num(o, "attention_head_dim", 8, &ok);
    }
    put_str(o, "attention_type", "default", &ok);
    put_ints(o, "block_out_channels", boc, L, &ok);
    put_bool(o, "center_input_sample", 0, &ok);
    put_null(o, "class_embed_type", &ok);
    put_bool(o, "class_embeddings_concat", 0, &ok);
    put_num(o, "conv_in_kernel", (double)cin->shape[2], &ok);
    put_num(o, "conv_out_kernel", (double)cout->shape[2], &ok);
    put_num(o, "cross_attention_dim", (double)cross, &ok);
    put_null(o, "cross_attention_norm", &ok);
    put_strs(o, "down_block_types", down_types, L, &ok);
    put_num(o, "downsample_padding", 1, &ok);
    put_num(o, "dropout", 0.0, &ok);
    put_bool(o, "dual_cross_attention", 0, &ok);
    put_null(o, "encoder_hid_dim", &ok);
    put_null(o, "encoder_hid_dim_type", &ok);
    put_bool(o, "flip_sin_to_cos", 1, &ok);
    put_num(o, "freq_shift", 0, &ok);
    put_num(o, "in_channels", (double)cin->shape[1], &ok);
    put_num(o, "layers_per_block", R, &ok);
    put_null(o, "mid_block_only_cross_attention", &ok);
    put_num(o, "mid_block_scale_factor", 1, &ok);
    if (mid_attn) put_str(o, "mid_block_type", "UNetMidBlock2DCrossAttn", &ok);
    else if (mid_res) put_str(o, "mid_block_type", "UNetMidBlock2D", &ok);
    else put_null(o, "mid_block_type", &ok);
    put_num(o, "norm_eps", 1e-5, &ok);
    put_num(o, "norm_num_groups", 32, &ok);
    put_null(o, "num_attention_heads", &ok);
    put_null(o, "num_class_embeds", &ok);
    put_bool(o, "only_cross_attention", 0, &ok);
    put_num(o, "out_channels", (double)cout->shape[0], &ok);
    if (add) put_num(o, "projection_class_embeddings_input_dim", (double)add->shape[1], &ok);
    else put_null(o, "projection_class_embeddings_input_dim", &ok);
    put_num(o, "resnet_out_scale_factor", 1.0, &ok);
    put_bool(o, "resnet_skip_time_act", 0, &ok);
    put_str(o, "resnet_time_scale_shift", "default", &ok);
    if (reverse_differs) put_ints(o, "reverse_transformer_layers_per_block", up_depth, L, &ok);
    else put_null(o, "reverse_transformer_layers_per_block", &ok);
    put_num(o, "sample_size", fam == SDC_FAMILY_SDXL ? 128 : fam == SDC_FAMILY_SD2 ? 96 : 64, &ok);
    put_null(o, "time_cond_proj_dim", &ok);
    put_null(o, "time_embedding_act_fn", &ok);
    if (temb && temb->ndim == 2 && temb->shape[0] != 4 * boc[0]) put_num(o, "time_embedding_dim", (double)temb->shape[0], &ok);
    else put_null(o, "time_embedding_dim", &ok);
    put_str(o, "time_embedding_type", "positional", &ok);
    put_null(o, "timestep_post_act", &ok);
    put_int_or_list(o, "transformer_layers_per_block", depth, L, &ok);
    put_strs(o, "up_block_types", up_types, L, &ok);
    put_bool(o, "upcast_attention", 0, &ok);
    put_bool(o, "use_linear_projection", linear, &ok);
    return finish(sf, o, ok, out, err);
}

static sdc_status vae_config(const sdc_single_file *sf, cJSON **out, sdc_error *err) {
    const sdc_weights *w = &sf->weights;
    const sdc_weight *enc_in = findf(w, "vae.encoder.conv_in.weight");
    const sdc_weight *dec_in = findf(w, "vae.decoder.conv_in.weight");
    if (!enc_in && !dec_in && !(sf->components & SDC_SF_VAE)) return SDC_OK;
    if (!enc_in && !dec_in) SDC_TRY(need(sf, NULL, "vae.encoder.conv_in.weight", 4, err));
    if (enc_in) SDC_TRY(need(sf, enc_in, enc_in->name, 4, err));
    if (dec_in) SDC_TRY(need(sf, dec_in, dec_in->name, 4, err));
    int64_t boc[MAX_LEVELS];
    int L = 0, R = 0;
    const sdc_weight *t;
    if (enc_in) {
        while (L < MAX_LEVELS && (t = findf(w, "vae.encoder.down_blocks.%d.resnets.0.conv1.weight", L))) {
            SDC_TRY(need(sf, t, t->name, 4, err));
            boc[L++] = t->shape[0];
        }
        while (R < 1000 && findf(w, "vae.encoder.down_blocks.0.resnets.%d.conv1.weight", R)) R++;
    } else {
        /* decoder only: up_blocks.i opens with the width of level L-1-i */
        int64_t rev[MAX_LEVELS];
        while (L < MAX_LEVELS && (t = findf(w, "vae.decoder.up_blocks.%d.resnets.0.conv1.weight", L))) {
            SDC_TRY(need(sf, t, t->name, 4, err));
            rev[L++] = t->shape[0];
        }
        for (int i = 0; i < L; i++) boc[i] = rev[L - 1 - i];
        while (R < 1000 && findf(w, "vae.decoder.up_blocks.0.resnets.%d.conv1.weight", R)) R++;
        R = R > 0 ? R - 1 : 0; /* the decoder has one resnet more per level */
    }
    if (L == 0) SDC_TRY(need(sf, NULL, "vae.encoder.down_blocks.0.resnets.0.conv1.weight", 4, err));
    const sdc_weight *dec_out = findf(w, "vae.decoder.conv_out.weight");
    const sdc_weight *enc_out = findf(w, "vae.encoder.conv_out.weight");
    int64_t latent = dec_in ? dec_in->shape[1] : enc_out && enc_out->ndim == 4 ? enc_out->shape[0] / 2 : 4;
    int mid_attn = findf(w, "vae.encoder.mid_block.attentions.0.to_q.weight") ||
                   findf(w, "vae.decoder.mid_block.attentions.0.to_q.weight");
    const char *down[MAX_LEVELS], *up[MAX_LEVELS];
    for (int i = 0; i < L; i++) down[i] = "DownEncoderBlock2D", up[i] = "UpDecoderBlock2D";
    sdc_family fam = sf->family;
    int ok = 1;
    cJSON *o = cJSON_CreateObject();
    if (!o) return finish(sf, o, 0, out, err);
    put_str(o, "_class_name", "AutoencoderKL", &ok);
    put_str(o, "act_fn", "silu", &ok);
    put_ints(o, "block_out_channels", boc, L, &ok);
    put_strs(o, "down_block_types", down, L, &ok);
    put_bool(o, "force_upcast", 1, &ok);
    put_num(o, "in_channels", enc_in ? (double)enc_in->shape[1] : 3, &ok);
    put_num(o, "latent_channels", (double)latent, &ok);
    put_null(o, "latents_mean", &ok);
    put_null(o, "latents_std", &ok);
    put_num(o, "layers_per_block", R, &ok);
    put_bool(o, "mid_block_add_attention", mid_attn, &ok);
    put_num(o, "norm_num_groups", 32, &ok);
    put_num(o, "out_channels", dec_out && dec_out->ndim == 4 ? (double)dec_out->shape[0] : 3, &ok);
    put_num(o, "sample_size", fam == SDC_FAMILY_SDXL ? 1024 : fam == SDC_FAMILY_SD2 ? 768 : 512, &ok);
    put_num(o, "scaling_factor", fam == SDC_FAMILY_SDXL ? 0.13025 : 0.18215, &ok);
    put_null(o, "shift_factor", &ok);
    put_strs(o, "up_block_types", up, L, &ok);
    put_bool(o, "use_post_quant_conv", findf(w, "vae.post_quant_conv.weight") != NULL, &ok);
    put_bool(o, "use_quant_conv", findf(w, "vae.quant_conv.weight") != NULL, &ok);
    return finish(sf, o, ok, out, err);
}

static const char *torch_dtype(sdc_dtype t) {
    switch (t) {
    case SDC_F16: return "float16";
    case SDC_BF16: return "bfloat16";
    case SDC_F64: return "float64";
    default: return "float32";
    }
}

/* e: 0 text_encoder, 1 text_encoder_2 */
static sdc_status text_config(const sdc_single_file *sf, int e, cJSON **out, sdc_error *err) {
    const sdc_weights *w = &sf->weights;
    const char *c = e ? "text_encoder_2" : "text_encoder";
    unsigned bit = e ? SDC_SF_TEXT_ENCODER_2 : SDC_SF_TEXT_ENCODER;
    const sdc_weight *tok = findf(w, "%s.text_model.embeddings.token_embedding.weight", c);
    if (!tok && !(sf->components & bit)) return SDC_OK;
    char name[128];
    snprintf(name, sizeof name, "%s.text_model.embeddings.token_embedding.weight", c);
    SDC_TRY(need(sf, tok, name, 2, err));
    int64_t hidden = tok->shape[1];
    const sdc_weight *pos = findf(w, "%s.text_model.embeddings.position_embedding.weight", c);
    const sdc_weight *fc1 = findf(w, "%s.text_model.encoder.layers.0.mlp.fc1.weight", c);
    const sdc_weight *proj = findf(w, "%s.text_projection.weight", c);
    snprintf(name, sizeof name, "%s.text_model.encoder.layers.0.mlp.fc1.weight", c);
    SDC_TRY(need(sf, fc1, name, 2, err));
    /* OpenCLIP towers (SD 2's, SDXL's second) use exact gelu; OpenAI's CLIP
     * ViT-L its sigmoid approximation */
    int openclip = e == 1 || sf->family == SDC_FAMILY_SD2;
    int ok = 1;
    cJSON *o = cJSON_CreateObject();
    if (!o) return finish(sf, o, 0, out, err);
    const char *arch = proj ? "CLIPTextModelWithProjection" : "CLIPTextModel";
    put_strs(o, "architectures", &arch, 1, &ok);
    put_num(o, "attention_dropout", 0.0, &ok);
    put_num(o, "bos_token_id", 49406, &ok);
    put_str(o, "dtype", torch_dtype(tok->dtype), &ok);
    put_num(o, "eos_token_id", 49407, &ok);
    put_str(o, "hidden_act", openclip ? "gelu" : "quick_gelu", &ok);
    put_num(o, "hidden_size", (double)hidden, &ok);
    put_num(o, "initializer_factor", 1.0, &ok);
    put_num(o, "initializer_range", 0.02, &ok);
    put_num(o, "intermediate_size", (double)fc1->shape[0], &ok);
    put_num(o, "layer_norm_eps", 1e-5, &ok);
    put_num(o, "max_position_embeddings", pos && pos->ndim == 2 ? (double)pos->shape[0] : 77, &ok);
    put_str(o, "model_type", "clip_text_model", &ok);
    put_num(o, "num_attention_heads", hidden >= 64 ? (double)(hidden / 64) : 1, &ok);
    put_num(o, "num_hidden_layers", sf->text_layers_used[e], &ok);
    put_num(o, "pad_token_id", 49407, &ok);
    put_num(o, "projection_dim", proj && proj->ndim == 2 ? (double)proj->shape[0] : (double)hidden, &ok);
    put_num(o, "vocab_size", (double)tok->shape[0], &ok);
    return finish(sf, o, ok, out, err);
}

sdc_status sdc_single_file_configs(const sdc_single_file *sf, cJSON **unet, cJSON **vae, cJSON **text_encoder,
                                   cJSON **text_encoder_2, sdc_error *err) {
    cJSON *got[4] = {NULL, NULL, NULL, NULL};
    cJSON **want[4] = {unet, vae, text_encoder, text_encoder_2};
    sdc_status s = SDC_OK;
    if (unet) s = unet_config(sf, &got[0], err);
    if (s == SDC_OK && vae) s = vae_config(sf, &got[1], err);
    if (s == SDC_OK && text_encoder) s = text_config(sf, 0, &got[2], err);
    if (s == SDC_OK && text_encoder_2) s = text_config(sf, 1, &got[3], err);
    for (int i = 0; i < 4; i++) {
        if (s != SDC_OK) cJSON_Delete(got[i]);
        if (want[i]) *want[i] = s == SDC_OK ? got[i] : NULL;
    }
    return s;
}
