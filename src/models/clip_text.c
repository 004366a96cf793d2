#include "models/clip_text.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

/* ---- building -------------------------------------------------------------------------------------------- */

/* nn.Linear with transformers' CLIP init: weight ~ N(0, std²), bias 0. */
static void declare_linear(sdc_params *p, sdc_linear *l, int64_t in, int64_t out, int bias, double std,
                           const char *name) {
    l->in = in;
    l->out = out;
    l->has_bias = bias;
    sdc_params_declare(p, &l->weight, sdc_init_normal((float)std), 2, SDC_SHAPE(out, in), "%s.weight", name);
    if (bias)
        sdc_params_declare(p, &l->bias, SDC_INIT_ZEROS, 1, SDC_SHAPE(out), "%s.bias", name);
    else
        l->bias = (sdc_tensor){0};
}

sdc_status sdc_clip_text_declare(sdc_clip_text *m, const sdc_clip_text_config *cfg, const char *component,
                                 sdc_error *err) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->act = cfg->quick_gelu ? SDC_ACT_QUICK_GELU : SDC_ACT_GELU;
    m->eos_token_id = (int)cfg->eos_token_id;
    SDC_TRY(sdc_params_init(&m->params, component, err));
    m->layers = calloc((size_t)cfg->num_hidden_layers, sizeof *m->layers);
    if (!m->layers) {
        sdc_clip_text_free(m);
        return sdc_fail(err, SDC_ENOMEM, "%s: out of memory for %lld layers", component,
                        (long long)cfg->num_hidden_layers);
    }
    sdc_params *p = &m->params;
    const int64_t D = cfg->hidden_size, F = cfg->intermediate_size, L = cfg->num_hidden_layers;
    const float eps = (float)cfg->layer_norm_eps;
    /* CLIPPreTrainedModel._init_weights (transformers 5): every std is scaled
     * by initializer_factor f; linear biases 0, layer norms 1/0.
     *   embeddings                 0.02·f
     *   q/k/v_proj, mlp.fc2        D^−½·(2L)^−½·f
     *   out_proj                   D^−½·f
     *   mlp.fc1                    (2D)^−½·f
     *   text_projection            D^−½·f */
    const double f = cfg->initializer_factor;
    const double in_std = pow((double)D, -0.5) * pow(2.0 * (double)L, -0.5) * f;
    const double out_std = pow((double)D, -0.5) * f, fc1_std = pow(2.0 * (double)D, -0.5) * f;
    char name[256];

    sdc_params_declare(p, &m->token_embedding, sdc_init_normal((float)(0.02 * f)), 2, SDC_SHAPE(cfg->vocab_size, D),
                       "text_model.embeddings.token_embedding.weight");
    sdc_params_declare(p, &m->position_embedding, sdc_init_normal((float)(0.02 * f)), 2,
                       SDC_SHAPE(cfg->max_position_embeddings, D), "text_model.embeddings.position_embedding.weight");
    for (int64_t l = 0; l < L; l++) {
        sdc_clip_layer *ly = &m->layers[l];
        const long long li = (long long)l;
        sdc_pname(name, sizeof name, "text_model.encoder.layers.%lld.self_attn.q_proj", li);
        declare_linear(p, &ly->q_proj, D, D, 1, in_std, name);
        sdc_pname(name, sizeof name, "text_model.encoder.layers.%lld.self_attn.k_proj", li);
        declare_linear(p, &ly->k_proj, D, D, 1, in_std, name);
        sdc_pname(name, sizeof name, "text_model.encoder.layers.%lld.self_attn.v_proj", li);
        declare_linear(p, &ly->v_proj, D, D, 1, in_std, name);
        sdc_pname(name, sizeof name, "text_model.encoder.layers.%lld.self_attn.out_proj", li);
        declare_linear(p, &ly->out_proj, D, D, 1, out_std, name);
        sdc_pname(name, sizeof name, "text_model.encoder.layers.%lld.layer_norm1", li);
        sdc_layer_norm_declare(p, &ly->layer_norm1, D, eps, name);
        sdc_pname(name, sizeof name, "text_model.encoder.layers.%lld.layer_norm2", li);
        sdc_layer_norm_declare(p, &ly->layer_norm2, D, eps, name);
        sdc_pname(name, sizeof name, "text_model.encoder.layers.%lld.mlp.fc1", li);
        declare_linear(p, &ly->fc1, D, F, 1, fc1_std, name);
        sdc_pname(name, sizeof name, "text_model.encoder.layers.%lld.mlp.fc2", li);
        declare_linear(p, &ly->fc2, F, D, 1, in_std, name);
    }
    sdc_layer_norm_declare(p, &m->final_layer_norm, D, eps, "text_model.final_layer_norm");
    if (cfg->with_projection)
        declare_linear(p, &m->text_projection, D, cfg->projection_dim, 0, out_std, "text_projection");
    if (p->status != SDC_OK) {
        sdc_status s = p->status;
        if (err) *err = p->err;
        sdc_clip_text_free(m);
        return s;
    }
    return SDC_OK;
}

sdc_status sdc_clip_text_build(sdc_clip_text *m, const cJSON *config, int with_projection, const char *component,
                               const char *what, sdc_error *err) {
    memset(m, 0, sizeof *m);
    sdc_clip_text_config cfg;
    SDC_TRY(sdc_clip_text_config_parse(config, with_projection, &cfg, what, err));
    SDC_TRY(sdc_clip_text_declare(m, &cfg, component, err));
    sdc_status s = sdc_params_alloc(&m->params, err);
    if (s != SDC_OK) sdc_clip_text_free(m);
    return s;
}

void sdc_clip_text_free(sdc_clip_text *m) {
    sdc_params_free(&m->params);
    free(m->layers);
    memset(m, 0, sizeof *m);
}

sdc_status sdc_clip_text_load(sdc_clip_text *m, const sdc_weights *w, sdc_error *err) {
    /* position_ids is a buffer (arange), not a parameter. */
    static const char *const ignore[] = {"position_ids", NULL};
    size_t unused = 0;
    SDC_TRY(sdc_params_load(&m->params, w, ignore, &unused, err));
    if (unused)
        SDC_WARN("%s: %zu tensor%s in the weights not used by the %s", m->params.component, unused,
                 unused == 1 ? "" : "s", m->cfg.with_projection ? "CLIPTextModelWithProjection" : "CLIPTextModel");
    return SDC_OK;
}

sdc_status sdc_clip_text_check_ids(const sdc_clip_text *m, const int32_t *ids, int64_t n, sdc_error *err) {
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
            return sdc_fail(err, SDC_EINVAL, "%s: token id %d (at %lld) is outside the vocabulary of %lld",
                            m->params.component, (int)ids[i], (long long)i, (long long)m->cfg.vocab_size);
    return SDC_OK;
}

size_t sdc_clip_text_arena_bytes(const sdc_clip_text *m, int64_t B, int64_t T) {
    const int64_t D = m->cfg.hidden_size, F = m->cfg.intermediate_size, P = m->cfg.projection_dim;
    /* outputs: last_hidden, hidden, pooled, text_embeds; the residual stream
     * (one new buffer per layer, since a tape must keep every layer's
     * input); a layer's temporaries: ln1, q, k, v, attn, out_proj, x1, ln2,
     * fc2 (D wide) and fc1, act (F wide). */
    const int64_t L = m->cfg.num_hidden_layers;
    int64_t outs = 2 * B * T * D + B * D + B * P;
    int64_t tmp = (L + 2) * B * T * D + 9 * B * T * D + 2 * B * T * F;
    return (size_t)(outs + tmp) * sizeof(float) + (size_t)(16 + 2 * L) * 64; /* + alignment of each allocation */
}

/* ---- forward --------------------------------------------------------------------------------------------- */

/* Rows r0..r0+n−1 of t along its outermost axis (a view, no copy). */
static sdc_tensor rows(const sdc_tensor *t, int64_t r0, int64_t n) {
    SDC_ASSERT(t->ndim >= 1 && r0 >= 0 && r0 + n <= t->shape[0]);
    sdc_tensor v = *t;
    int64_t row = t->shape[0] ? sdc_tensor_numel(t) / t->shape[0] : 0;
    v.shape[0] = n;
    v.data = (char *)t->data + (size_t)(r0 * row) * sdc_dtype_size(t->dtype);
    return v;
}

/* CLIPEncoderLayer on the residual stream x [B,T,D], into a new tensor (x
 * is read by layer_norm1's backward, so it is never overwritten):
 *   x1 = x + out_proj(softmax(q·kᵀ/√d + causal)·v),  q,k,v = *_proj(layer_norm1(x))
 *   out = x1 + fc2(act(fc1(layer_norm2(x1)))) */
static sdc_tensor layer_forward(sdc_ctx *c, const sdc_clip_text *m, const sdc_clip_layer *ly, const sdc_tensor *x) {
    const int heads = (int)m->cfg.num_attention_heads;
    const float scale = 1.0f / sqrtf((float)(m->cfg.hidden_size / heads));
    sdc_tensor out = sdc_ctx_alloc(c, x->ndim, x->shape);
    size_t mark = sdc_arena_mark(c->arena);
    sdc_tensor h = sdc_layer_norm_forward(c, NULL, &ly->layer_norm1, x);
    sdc_tensor q = sdc_linear_forward(c, NULL, &ly->q_proj, &h);
    sdc_tensor k = sdc_linear_forward(c, NULL, &ly->k_proj, &h);
    sdc_tensor v = sdc_linear_forward(c, NULL, &ly->v_proj, &h);
    sdc_tensor a = sdc_op_attention(c, NULL, &q, &k, &v, heads, scale, 1);
    sdc_tensor o = sdc_linear_forward(c, NULL, &ly->out_proj, &a);
    sdc_tensor x1 = sdc_op_add(c, NULL, x, &o);
    sdc_tensor h2 = sdc_layer_norm_forward(c, NULL, &ly->layer_norm2, &x1);
    sdc_tensor f = sdc_linear_forward(c, NULL, &ly->fc1, &h2);
    sdc_tensor fa = sdc_op_act(c, NULL, &f, m->act);
    sdc_tensor o2 = sdc_linear_forward(c, NULL, &ly->fc2, &fa);
    sdc_op_add(c, &out, &x1, &o2);
    sdc_ctx_release(c, mark);
    return out;
}

/* Where row `ids` (T tokens) is pooled. Configs from before transformers PR
 * #24773 say eos_token_id 2: there the EOS is taken as the largest id
 * (argmax, first on ties); otherwise it is the first id equal to
 * eos_token_id (the pad token may equal it), or 0 when there is none
 * (argmax of an all-zero mask). */
static int64_t eos_position(const sdc_clip_text *m, const int32_t *ids, int64_t T) {
    int64_t best = 0;
    if (m->eos_token_id == 2) {
        for (int64_t t = 1; t < T; t++)
            if (ids[t] > ids[best]) best = t;
        return best;
    }
    for (int64_t t = 0; t < T; t++)
        if (ids[t] == m->eos_token_id) return t;
    return 0;
}

void sdc_clip_text_forward(sdc_ctx *c, const sdc_clip_text *m, const int32_t *ids, int64_t B, int64_t T,
                           int hidden_index, sdc_clip_text_out *out) {
    const sdc_clip_text_config *cfg = &m->cfg;
    const int64_t D = cfg->hidden_size, L = cfg->num_hidden_layers;
    SDC_ASSERT(B > 0 && T > 0 && T <= cfg->max_position_embeddings && B * T <= INT32_MAX);
    SDC_ASSERT(hidden_index <= 0 && hidden_index >= -(L + 1));
    memset(out, 0, sizeof *out);

    /* Outputs first, so the temporaries after the mark can be released. */
    out->last_hidden = sdc_ctx_new(c, B, T, D);
    if (hidden_index) out->hidden = sdc_ctx_new(c, B, T, D);
    out->pooled = sdc_ctx_new(c, B, D);
    if (cfg->with_projection) out->text_embeds = sdc_ctx_new(c, B, cfg->projection_dim);
    /* index of the wanted state in (embeddings, layer 1, ..., layer L) */
    const int64_t want = hidden_index ? L + 1 + hidden_index : -1;
    size_t mark = sdc_arena_mark(c->arena);

    /* x = token_embedding[ids] + position_embedding[0..T−1], per sequence */
    sdc_tensor x = sdc_op_embedding(c, NULL, &m->token_embedding, ids, B * T);
    x = sdc_reshape(&x, B, T, D);
    sdc_tensor pos = rows(&m->position_embedding, 0, T);
    for (int64_t b = 0; b < B; b++) {
        sdc_tensor xb = rows(&x, b, 1);
        xb = sdc_reshape(&xb, T, D);
        sdc_op_add(c, &xb, &xb, &pos);
    }
    if (want == 0) sdc_op_scale(c, &out->hidden, &x, 1.0f);
    for (int64_t l = 0; l < L; l++) {
        x = layer_forward(c, m, &m->layers[l], &x);
        if (want == l + 1) sdc_op_scale(c, &out->hidden, &x, 1.0f);
    }
    sdc_layer_norm_forward(c, &out->last_hidden, &m->final_layer_norm, &x);

    /* pooled[b] = last_hidden[b, eos_b]: a row gather from last_hidden seen
     * as [B·T, D], in chunks so the row indices live on the stack. */
    sdc_tensor table = sdc_reshape(&out->last_hidden, B * T, D);
    int32_t at[64];
    for (int64_t b0 = 0; b0 < B; b0 += 64) {
        int64_t n = B - b0 < 64 ? B - b0 : 64;
        for (int64_t i = 0; i < n; i++) {
            int64_t b = b0 + i;
            at[i] = (int32_t)(b * T + eos_position(m, ids + b * T, T));
        }
        sdc_tensor dst = rows(&out->pooled, b0, n);
        sdc_op_embedding(c, &dst, &table, at, n);
    }
    if (cfg->with_projection) sdc_linear_forward(c, &out->text_embeds, &m->text_projection, &out->pooled);
    sdc_ctx_release(c, mark);
}
