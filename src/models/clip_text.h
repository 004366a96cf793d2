/* The CLIP text encoders of Stable Diffusion: transformers' CLIPTextModel
 * (SD 1.x, SD 2.x, SDXL's first encoder) and CLIPTextModelWithProjection
 * (SDXL's second encoder), with transformers' parameter names.
 *
 *   x = token_embedding[ids] + position_embedding[0..T−1]
 *   for each layer:  x += out_proj(attn_causal(q_proj(ln1(x)), k_proj(..), v_proj(..)))
 *                    x += fc2(act(fc1(ln2(x))))          act: quick_gelu (CLIP) or gelu (OpenCLIP)
 *   last_hidden = final_layer_norm(x)
 *   pooled      = last_hidden[b, eos position of row b]
 *   text_embeds = pooled · text_projectionᵀ              (WithProjection only)
 */
#ifndef SDC_MODELS_CLIP_TEXT_H
#define SDC_MODELS_CLIP_TEXT_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "backend/ops.h"
#include "io/weights.h"
#include "models/clip_text_params.h"
#include "nn/linear.h"
#include "nn/norm.h"
#include "nn/params.h"

typedef struct sdc_clip_text_out {
    sdc_tensor last_hidden; /* [B,T,D] after the final layer norm */
    sdc_tensor hidden;      /* [B,T,D] the requested hidden state (data NULL when not requested) */
    sdc_tensor pooled;      /* [B,D] last_hidden at the EOS position (CLIPTextModel's pooler_output) */
    sdc_tensor text_embeds; /* [B,P] pooled · text_projectionᵀ (WithProjection only; else data NULL) */
} sdc_clip_text_out;

/* CLIPEncoderLayer: pre-LN self-attention and MLP blocks. */
typedef struct sdc_clip_layer {
    sdc_norm layer_norm1, layer_norm2;
    sdc_linear q_proj, k_proj, v_proj, out_proj; /* self_attn.* */
    sdc_linear fc1, fc2;                          /* mlp.* */
} sdc_clip_layer;

typedef struct sdc_clip_text {
    sdc_clip_text_config cfg;
    sdc_params params;
    sdc_tensor token_embedding, position_embedding; /* [V,D], [max_pos,D] */
    sdc_clip_layer *layers;                         /* cfg.num_hidden_layers */
    sdc_norm final_layer_norm;
    sdc_linear text_projection; /* no bias; weight.data NULL without projection */
    sdc_act act;
    int eos_token_id;
} sdc_clip_text;

/* Declares every parameter of a model with config cfg into m->params (a
 * fresh store for `component`), without allocating the buffer: the one list
 * of names both the model and `sdc info` (sdc_clip_text_params) use. On
 * failure m is freed. */
sdc_status sdc_clip_text_declare(sdc_clip_text *m, const sdc_clip_text_config *cfg, const char *component,
                                 sdc_error *err);

/* Builds the model for a transformers config.json object (`what` names it in
 * errors): declares every parameter with transformers' CLIP initialisation,
 * then allocates the (zeroed) parameter buffer. The struct must not move
 * afterwards. On failure m is left freed. */
sdc_status sdc_clip_text_build(sdc_clip_text *m, const cJSON *config, int with_projection, const char *component,
                               const char *what, sdc_error *err);
void sdc_clip_text_free(sdc_clip_text *m);

/* Fills the parameters from "<component>.<name>" tensors of w ("position_ids"
 * buffers ignored; other leftover tensors of the component are reported as a
 * warning). */
sdc_status sdc_clip_text_load(sdc_clip_text *m, const sdc_weights *w, sdc_error *err);

/* The check where token ids enter: every id in [0, vocab_size). */
sdc_status sdc_clip_text_check_ids(const sdc_clip_text *m, const int32_t *ids, int64_t n, sdc_error *err);

/* An upper bound on the arena bytes one forward call takes (outputs and
 * temporaries, fp32), for sizing the arena before a run. */
size_t sdc_clip_text_arena_bytes(const sdc_clip_text *m, int64_t B, int64_t T);

/* ids [B*T] int32 on the host (checked with sdc_clip_text_check_ids by the
 * caller; T <= max_position_embeddings). Outputs are allocated from c->arena.
 *
 * hidden_index selects out->hidden like transformers' output_hidden_states
 * tuple (embeddings, layer 1, ..., layer L) indexed from the end: −1 is the
 * output of the last encoder layer (before the final layer norm), −2 the
 * penultimate (SDXL; SD 1.x "clip skip 2"), ..., −(L+1) the embeddings; 0
 * skips it. Every layer is run, since last_hidden and pooled need them. */
void sdc_clip_text_forward(sdc_ctx *c, const sdc_clip_text *m, const int32_t *ids, int64_t B, int64_t T,
                           int hidden_index, sdc_clip_text_out *out);

#endif
