/* Single-file checkpoints -> diffusers names. The files under
 * tests/data/single were made from the tiny diffusers folders by diffusers'
 * own conversion scripts and verified by diffusers' single-file loader
 * (tools/make_single_files.py), so "equals the folder" here means "reads as
 * diffusers reads it". */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/fs.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "io/single_file.h"
#include "single_recipe.h"
#include "test.h"

/* ---- helpers -------------------------------------------------------------- */

static const char *const FOLDER_FILES[][2] = {
    {"unet", "unet/diffusion_pytorch_model.safetensors"},
    {"vae", "vae/diffusion_pytorch_model.safetensors"},
    {"text_encoder", "text_encoder/model.safetensors"},
    {"text_encoder_2", "text_encoder_2/model.safetensors"},
};

/* The single files under tests/data/single keep only the first TRUNC_VOCAB
 * rows of every token embedding (the folders keep all 49408). */
enum { TRUNC_VOCAB = 1024 };

static int is_token_embedding(const char *name) {
    const char *suffix = "embeddings.token_embedding.weight";
    size_t n = strlen(name), m = strlen(suffix);
    return n >= m && strcmp(name + n - m, suffix) == 0;
}

/* Every tensor of the folder's components (mask: bit c of FOLDER_FILES) must
 * be in sf under its canonical name, with the same shape and the same values,
 * the folder's rounded to fp16 when the single file is fp16 (the values are
 * then compared exactly). vocab > 0: the file's token embeddings hold only the
 * folder's first vocab rows (and must be exactly that wide); 0: all of them.
 * Returns the number of tensors compared. */
static size_t expect_folder(const sdc_single_file *sf, const char *folder, unsigned mask, int fp16, int64_t vocab) {
    size_t total = 0;
    for (int c = 0; c < 4; c++) {
        if (!(mask & (1u << c))) continue;
        char rel[256];
        snprintf(rel, sizeof rel, "%s/%s", folder, FOLDER_FILES[c][1]);
        sdc_weights w;
        sdc_weights_init(&w);
        sdc_error err;
        if (sdc_safetensors_read(test_data(rel), &w, &err) != SDC_OK) {
            CHECK_MSG(0, "%s", err.msg);
            continue;
        }
        int text = c >= 2;
        for (size_t i = 0; i < w.count; i++) {
            const sdc_weight *f = &w.items[i];
            char name[512];
            int add_tm = text && strncmp(f->name, "text_model.", 11) != 0 && strncmp(f->name, "text_projection", 15) != 0;
            snprintf(name, sizeof name, "%s.%s%s", FOLDER_FILES[c][0], add_tm ? "text_model." : "", f->name);
            const sdc_weight *t = sdc_weights_find(&sf->weights, name);
            if (!t) {
                CHECK_MSG(0, "%s: %s missing", sf->path, name);
                continue;
            }
            total++;
            /* a truncated embedding: the folder's first `vocab` rows */
            int64_t want_shape[8];
            for (int d = 0; d < f->ndim && d < 8; d++) want_shape[d] = f->shape[d];
            int trunc = vocab > 0 && is_token_embedding(name);
            if (trunc) {
                CHECK_MSG(f->ndim == 2 && f->shape[0] > vocab, "%s: the folder's embedding has no more than %lld rows",
                          name, (long long)vocab);
                want_shape[0] = vocab;
            }
            int same = t->ndim == f->ndim;
            for (int d = 0; same && d < f->ndim; d++) same = t->shape[d] == want_shape[d];
            char a[96], b[96];
            CHECK_MSG(same, "%s: shape %s, expected %s", name, sdc_shape_str(a, sizeof a, t->ndim, t->shape),
                      sdc_shape_str(b, sizeof b, f->ndim, want_shape));
            if (!same) continue;
            if (fp16) CHECK_MSG(t->dtype == SDC_F16, "%s: dtype %s", name, sdc_dtype_name(t->dtype));
            size_t n = (size_t)sdc_weight_numel(t), nf = (size_t)sdc_weight_numel(f);
            float *x = malloc(n * sizeof *x + 1), *y = malloc(nf * sizeof *y + 1);
            if (!x || !y) abort();
            CHECK(sdc_weight_to_f32(&sf->weights, t, x, &err) == SDC_OK);
            CHECK(sdc_weight_to_f32(&w, f, y, &err) == SDC_OK); /* row-major: its first n values are the first rows */
            size_t bad = 0;
            for (size_t k = 0; k < n; k++) {
                float want = fp16 ? sdc_f16_to_f32(sdc_f32_to_f16(y[k])) : y[k];
                bad += x[k] != want;
            }
            CHECK_MSG(bad == 0, "%s: %zu of %zu values differ from the folder", name, bad, n);
            free(x);
            free(y);
        }
        sdc_weights_free(&w);
    }
    return total;
}

static int in_list(char **l, size_t n, const char *s) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(l[i], s) == 0) return 1;
    return 0;
}

/* Exactly these keys (NULL-terminated) in the list. */
static void expect_list(char **l, size_t n, const char *what, ...) {
    va_list ap;
    va_start(ap, what);
    size_t want = 0;
    for (const char *s; (s = va_arg(ap, const char *));) {
        want++;
        CHECK_MSG(in_list(l, n, s), "%s lacks \"%s\"", what, s);
    }
    va_end(ap);
    CHECK_MSG(n == want, "%s has %zu keys, expected %zu (first: %s)", what, n, want, n ? l[0] : "-");
}

static const char *src_of(const sdc_single_file *sf, const char *name) {
    const sdc_weight *t = sdc_weights_find(&sf->weights, name);
    return t ? t->src_name : "(missing)";
}

/* The field `key` of two configs must agree; an int and a list agree when the
 * list repeats the int (diffusers broadcasts it), over n entries. */
static void expect_field(const cJSON *got, const cJSON *want, const char *key, int n, const char *what) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(got, key), *b = cJSON_GetObjectItemCaseSensitive(want, key);
    if (!a || !b) {
        CHECK_MSG(0, "%s: \"%s\" missing (%s)", what, key, a ? "in the folder's config" : "in the synthesised one");
        return;
    }
    if (n > 0 && (cJSON_IsNumber(a) || cJSON_IsNumber(b))) {
        double x[16], y[16];
        const cJSON *s[2] = {a, b};
        double *o[2] = {x, y};
        for (int k = 0; k < 2; k++) {
            if (cJSON_IsNumber(s[k]))
                for (int i = 0; i < n; i++) o[k][i] = s[k]->valuedouble;
            else
                for (int i = 0; i < n && i < 16; i++) {
                    const cJSON *e = cJSON_GetArrayItem(s[k], i);
                    o[k][i] = cJSON_IsNumber(e) ? e->valuedouble : -1;
                }
        }
        for (int i = 0; i < n; i++) CHECK_MSG(x[i] == y[i], "%s: \"%s\"[%d] is %g, the folder says %g", what, key, i, x[i], y[i]);
        return;
    }
    if (!cJSON_Compare(a, b, 1)) {
        char *sa = cJSON_PrintUnformatted(a), *sb = cJSON_PrintUnformatted(b);
        CHECK_MSG(0, "%s: \"%s\" is %s, the folder says %s", what, key, sa, sb);
        free(sa);
        free(sb);
    }
}

static cJSON *folder_config(const char *folder, const char *comp) {
    char rel[256];
    snprintf(rel, sizeof rel, "%s/%s/config.json", folder, comp);
    cJSON *c = NULL;
    sdc_error err;
    if (sdc_json_load_object(test_data(rel), &c, &err) != SDC_OK) CHECK_MSG(0, "%s", err.msg);
    return c;
}

static int num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valueint : -1;
}

/* The architecture fields of the synthesised configs against the folder's.
 * Fields from the family convention (attention_head_dim, num_attention_heads,
 * scaling_factor, upcast_attention, sample_size) are checked by the callers
 * where the tiny models follow the convention. vocab > 0: the file's token
 * embeddings are truncated to that many rows, and vocab_size must say so. */
static void expect_configs(const sdc_single_file *sf, const char *folder, unsigned mask, int vocab) {
    cJSON *got[4] = {NULL, NULL, NULL, NULL};
    sdc_error err;
    if (sdc_single_file_configs(sf, &got[0], &got[1], &got[2], &got[3], &err) != SDC_OK) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    static const char *const unet_keys[] = {
        "in_channels", "out_channels", "block_out_channels", "layers_per_block", "down_block_types", "up_block_types",
        "mid_block_type", "cross_attention_dim", "use_linear_projection", "addition_embed_type",
        "addition_time_embed_dim", "projection_class_embeddings_input_dim", "conv_in_kernel", "conv_out_kernel",
        "time_embedding_dim", "norm_num_groups", "class_embed_type", "encoder_hid_dim", "num_class_embeds",
        "time_embedding_type", "flip_sin_to_cos", "freq_shift", "act_fn", "only_cross_attention",
        "dual_cross_attention", "resnet_time_scale_shift", "num_attention_heads", NULL};
    static const char *const vae_keys[] = {"in_channels", "out_channels", "block_out_channels", "layers_per_block",
                                           "latent_channels", "down_block_types", "up_block_types", "norm_num_groups",
                                           "use_quant_conv", "use_post_quant_conv", "mid_block_add_attention", "act_fn",
                                           NULL};
    static const char *const text_keys[] = {"hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size",
                                            "max_position_embeddings", "hidden_act", "projection_dim",
                                            "layer_norm_eps", NULL};
    static const char *const comps[4] = {"unet", "vae", "text_encoder", "text_encoder_2"};
    for (int c = 0; c < 4; c++) {
        if (!(mask & (1u << c))) {
            CHECK_MSG(got[c] == NULL, "%s: a %s config for a file without one", sf->path, comps[c]);
            continue;
        }
        REQUIRE(got[c]);
        cJSON *want = folder_config(folder, comps[c]);
        if (!want) continue;
        const char *const *keys = c == 0 ? unet_keys : c == 1 ? vae_keys : text_keys;
        char what[256];
        snprintf(what, sizeof what, "%s %s config", sf->path, comps[c]);
        int levels = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(want, "block_out_channels"));
        for (int k = 0; keys[k]; k++) {
            if (vocab > 0 && strcmp(keys[k], "vocab_size") == 0) {
                CHECK_MSG(num(got[c], "vocab_size") == vocab, "%s: \"vocab_size\" is %d, expected %d (the file's rows)",
                          what, num(got[c], "vocab_size"), vocab);
                CHECK_MSG(num(want, "vocab_size") == 49408, "%s: the folder's vocab_size is %d", what,
                          num(want, "vocab_size"));
                continue;
            }
            expect_field(got[c], want, keys[k], 0, what);
        }
        if (c == 0) expect_field(got[c], want, "transformer_layers_per_block", levels, what);
        cJSON_Delete(want);
    }
    for (int c = 0; c < 4; c++) cJSON_Delete(got[c]);
}

static void expect_error(const char *path, sdc_status code, const char *needle) {
    sdc_single_file sf;
    sdc_error err = {0};
    sdc_status s = sdc_single_file_load(path, &sf, &err);
    CHECK_MSG(s == code, "%s: status %s (%s), expected %s", path, sdc_status_name(s), err.msg, sdc_status_name(code));
    CHECK_MSG(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
    CHECK_MSG(strstr(err.msg, needle) != NULL, "message lacks \"%s\": %s", needle, err.msg);
    if (s == SDC_OK) sdc_single_file_free(&sf);
}

/* Synthetic files: tensors of the given shapes, filled with 0.25. */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[4];
} spec;

static const char *write_specs(const char *file, const spec *s, size_t n) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", test_tmpdir(), file);
    sdc_st_tensor *t = calloc(n ? n : 1, sizeof *t);
    void **bufs = calloc(n ? n : 1, sizeof *bufs);
    sdc_error err;
    for (size_t i = 0; i < n; i++) {
        int64_t numel = 1;
        for (int d = 0; d < s[i].ndim; d++) numel *= s[i].shape[d];
        float *b = malloc((size_t)numel * sizeof *b + 1);
        for (int64_t k = 0; k < numel; k++) b[k] = 0.25f;
        bufs[i] = b;
        t[i] = (sdc_st_tensor){s[i].name, SDC_F32, s[i].ndim, s[i].shape, b};
    }
    if (sdc_safetensors_write(path, t, n, NULL, 0, &err) != SDC_OK) CHECK_MSG(0, "%s", err.msg);
    for (size_t i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(t);
    return path;
}

/* A copy of a test file without the tensors whose names start with `drop`. */
static const char *write_without(const char *src, const char *drop, const char *file) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", test_tmpdir(), file);
    sdc_weights w;
    sdc_weights_init(&w);
    sdc_error err;
    if (sdc_safetensors_read(src, &w, &err) != SDC_OK) {
        CHECK_MSG(0, "%s", err.msg);
        return path;
    }
    sdc_st_tensor *t = calloc(w.count, sizeof *t);
    size_t n = 0;
    for (size_t i = 0; i < w.count; i++) {
        const sdc_weight *x = &w.items[i];
        if (strncmp(x->name, drop, strlen(drop)) == 0) continue;
        t[n++] = (sdc_st_tensor){x->name, x->dtype, x->ndim, x->shape, x->data};
    }
    if (sdc_safetensors_write(path, t, n, NULL, 0, &err) != SDC_OK) CHECK_MSG(0, "%s", err.msg);
    free(t);
    sdc_weights_free(&w);
    return path;
}

/* ---- the tiny single files ------------------------------------------------- */

TEST(single_file_sd1) {
    sdc_single_file sf;
    sdc_error err;
    REQUIRE_OK(sdc_single_file_load(test_single_file("tiny-sd"), &sf, &err), &err);
    CHECK(sf.family == SDC_FAMILY_SD1);
    CHECK_EQ_INT(sf.components, SDC_SF_UNET | SDC_SF_VAE | SDC_SF_TEXT_ENCODER);
    CHECK(!sf.diffusers_names);
    CHECK_EQ_INT(sf.text_layers_stored[0], 5);
    CHECK_EQ_INT(sf.text_layers_used[0], 5);
    size_t n = expect_folder(&sf, "tiny-sd", 7, 1, TRUNC_VOCAB);
    CHECK_EQ_INT(n, 304 + 124 + 84);
    CHECK_EQ_INT(sf.weights.count, n); /* nothing mapped beyond the folder's tensors */
    expect_list(sf.ignored, sf.nignored, "ignored", "cond_stage_model.transformer.text_model.embeddings.position_ids",
                "model_ema.decay", "model_ema.num_updates", "model_ema.diffusion_modelout0weight", "betas",
                "alphas_cumprod", NULL);
    expect_list(sf.unknown, sf.nunknown, "unknown", "junk.tensor", NULL);
    /* the layout, spot-checked: 2 resnets per level, so level 1 starts at
     * input block 3*1+1; up level 0 has attention, so its upsampler is .2 */
    CHECK_STR(src_of(&sf, "unet.down_blocks.1.attentions.0.proj_in.weight"),
              "model.diffusion_model.input_blocks.4.1.proj_in.weight");
    CHECK_STR(src_of(&sf, "unet.down_blocks.0.downsamplers.0.conv.weight"), "model.diffusion_model.input_blocks.3.0.op.weight");
    CHECK_STR(src_of(&sf, "unet.up_blocks.0.upsamplers.0.conv.weight"), "model.diffusion_model.output_blocks.2.2.conv.weight");
    CHECK_STR(src_of(&sf, "unet.mid_block.resnets.1.time_emb_proj.bias"),
              "model.diffusion_model.middle_block.2.emb_layers.1.bias");
    CHECK_STR(src_of(&sf, "vae.decoder.up_blocks.0.resnets.2.conv_shortcut.weight"),
              "(missing)"); /* tiny: no channel change in up level 0 */
    CHECK_STR(src_of(&sf, "vae.decoder.up_blocks.1.resnets.0.conv_shortcut.weight"),
              "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight");
    CHECK_STR(src_of(&sf, "vae.encoder.mid_block.attentions.0.to_out.0.weight"),
              "first_stage_model.encoder.mid.attn_1.proj_out.weight");
    CHECK_STR(src_of(&sf, "text_encoder.text_model.final_layer_norm.weight"),
              "cond_stage_model.transformer.text_model.final_layer_norm.weight");
    /* mapped tensors point into the mapped file */
    const sdc_weight *t = sdc_weights_find(&sf.weights, "unet.conv_in.weight");
    REQUIRE(t);
    CHECK_EQ_INT(t->file, 0);
    CHECK(sf.weights.nfiles == 1 && (const unsigned char *)t->data >= sf.weights.files[0].map.data &&
          (const unsigned char *)t->data < sf.weights.files[0].map.data + sf.weights.files[0].map.size);
    expect_configs(&sf, "tiny-sd", 7, TRUNC_VOCAB);
    /* SD 1's convention (8 heads) is what tiny-sd uses; the VAE factor too */
    cJSON *u = NULL, *v = NULL;
    REQUIRE_OK(sdc_single_file_configs(&sf, &u, &v, NULL, NULL, &err), &err);
    CHECK_EQ_INT(num(u, "attention_head_dim"), 8);
    CHECK_NEAR(cJSON_GetObjectItemCaseSensitive(v, "scaling_factor")->valuedouble, 0.18215, 0);
    cJSON_Delete(u);
    cJSON_Delete(v);
    sdc_single_file_free(&sf);
}

static void check_sd2(const char *path) {
    sdc_single_file sf;
    sdc_error err;
    REQUIRE_OK(sdc_single_file_load(path, &sf, &err), &err);
    CHECK(sf.family == SDC_FAMILY_SD2);
    CHECK_EQ_INT(sf.components, SDC_SF_UNET | SDC_SF_VAE | SDC_SF_TEXT_ENCODER);
    CHECK_EQ_INT(sf.text_layers_stored[0], 3);
    CHECK_EQ_INT(sf.text_layers_used[0], 3);
    size_t n = expect_folder(&sf, "tiny-sd2", 7, 1, TRUNC_VOCAB);
    CHECK_EQ_INT(n, 208 + 124 + 52);
    CHECK_EQ_INT(sf.weights.count, n);
    expect_list(sf.ignored, sf.nignored, "ignored", "cond_stage_model.model.text_projection",
                "cond_stage_model.model.logit_scale", NULL);
    expect_list(sf.unknown, sf.nunknown, "unknown", NULL);
    /* SD 2's pattern: attention in level 0, 1 resnet per level: the up level
     * 0 has no attention, so its upsampler is output_blocks.1.1 */
    CHECK_STR(src_of(&sf, "unet.up_blocks.0.upsamplers.0.conv.bias"), "model.diffusion_model.output_blocks.1.1.conv.bias");
    CHECK_STR(src_of(&sf, "unet.up_blocks.1.attentions.1.proj_out.weight"),
              "model.diffusion_model.output_blocks.3.1.proj_out.weight");
    /* q, k, v are the thirds of the fused in_proj, in place */
    const sdc_weight *q = sdc_weights_find(&sf.weights, "text_encoder.text_model.encoder.layers.2.self_attn.q_proj.weight");
    const sdc_weight *k = sdc_weights_find(&sf.weights, "text_encoder.text_model.encoder.layers.2.self_attn.k_proj.weight");
    const sdc_weight *v = sdc_weights_find(&sf.weights, "text_encoder.text_model.encoder.layers.2.self_attn.v_proj.bias");
    REQUIRE(q && k && v);
    CHECK_STR(q->src_name, "cond_stage_model.model.transformer.resblocks.2.attn.in_proj_weight");
    CHECK_STR(v->src_name, "cond_stage_model.model.transformer.resblocks.2.attn.in_proj_bias");
    CHECK((const unsigned char *)k->data == (const unsigned char *)q->data + 32 * 32 * 2);
    CHECK(q->file == 0 && q->nbytes == 32 * 32 * 2);
    expect_configs(&sf, "tiny-sd2", 7, TRUNC_VOCAB);
    sdc_single_file_free(&sf);
}

TEST(single_file_sd2) { check_sd2(test_single_file("tiny-sd2")); }

TEST(single_file_sd2_ckpt) { check_sd2(test_data("single/tiny-sd2.ckpt")); }

/* The UNet-only file is the model.diffusion_model.* subset of the
 * diffusers-verified tiny-sd2.safetensors, cut here (raw keys, no key map
 * involved) rather than shipped as a second copy of the same bytes. */
static char *write_unet_subset(const char *src, sdc_error *err) {
    sdc_weights w;
    sdc_weights_init(&w);
    char *out = sdc_path_join(test_tmpdir(), "tiny-sd2-unet.safetensors");
    sdc_st_tensor *t = NULL;
    if (!out || sdc_safetensors_read(src, &w, err) != SDC_OK || !(t = calloc(w.count, sizeof *t))) goto fail;
    size_t n = 0;
    for (size_t i = 0; i < w.count; i++)
        if (strncmp(w.items[i].name, "model.diffusion_model.", 22) == 0)
            t[n++] = (sdc_st_tensor){w.items[i].name, w.items[i].dtype, w.items[i].ndim, w.items[i].shape, w.items[i].data};
    if (n == 0 || sdc_safetensors_write(out, t, n, NULL, 0, err) != SDC_OK) goto fail;
    free(t);
    sdc_weights_free(&w);
    return out;
fail:
    free(t);
    free(out);
    sdc_weights_free(&w);
    return NULL;
}

TEST(single_file_unet_only) {
    sdc_single_file sf;
    sdc_error err = {0};
    char *path = write_unet_subset(test_single_file("tiny-sd2"), &err);
    if (!path) {
        CHECK_MSG(0, "cannot write the UNet subset: %s", err.msg);
        return;
    }
    REQUIRE_OK(sdc_single_file_load(path, &sf, &err), &err);
    free(path);
    /* 32-wide cross-attention names no family: the linear projections say SD 2 */
    CHECK(sf.family == SDC_FAMILY_SD2);
    CHECK_EQ_INT(sf.components, SDC_SF_UNET);
    CHECK_EQ_INT(sf.weights.count, expect_folder(&sf, "tiny-sd2", 1, 1, 0));
    CHECK_EQ_INT(sf.nignored + sf.nunknown, 0);
    expect_configs(&sf, "tiny-sd2", 1, 0);
    sdc_single_file_free(&sf);
}

TEST(single_file_sdxl) {
    sdc_single_file sf;
    sdc_error err;
    REQUIRE_OK(sdc_single_file_load(test_single_file("tiny-sdxl"), &sf, &err), &err);
    CHECK(sf.family == SDC_FAMILY_SDXL);
    CHECK_EQ_INT(sf.components, SDC_SF_UNET | SDC_SF_VAE | SDC_SF_TEXT_ENCODER | SDC_SF_TEXT_ENCODER_2);
    CHECK_EQ_INT(sf.text_layers_stored[0], 5);
    CHECK_EQ_INT(sf.text_layers_stored[1], 5);
    size_t n = expect_folder(&sf, "tiny-sdxl", 15, 1, TRUNC_VOCAB);
    CHECK_EQ_INT(n, 428 + 124 + 84 + 85);
    CHECK_EQ_INT(sf.weights.count, n);
    expect_list(sf.ignored, sf.nignored, "ignored", "conditioner.embedders.0.transformer.text_model.embeddings.position_ids",
                "conditioner.embedders.1.model.logit_scale", NULL);
    expect_list(sf.unknown, sf.nunknown, "unknown", NULL);
    CHECK_STR(src_of(&sf, "unet.add_embedding.linear_2.weight"), "model.diffusion_model.label_emb.0.2.weight");
    CHECK_STR(src_of(&sf, "unet.down_blocks.1.attentions.1.transformer_blocks.1.attn2.to_k.weight"),
              "model.diffusion_model.input_blocks.5.1.transformer_blocks.1.attn2.to_k.weight");
    /* the projection was transposed into a buffer of the set (equal to the
     * folder's text_projection.weight, checked above) */
    const sdc_weight *p = sdc_weights_find(&sf.weights, "text_encoder_2.text_projection.weight");
    REQUIRE(p);
    CHECK_EQ_INT(p->file, -1);
    CHECK_STR(p->src_name, "conditioner.embedders.1.model.text_projection");
    expect_configs(&sf, "tiny-sdxl", 15, TRUNC_VOCAB);
    cJSON *v = NULL;
    REQUIRE_OK(sdc_single_file_configs(&sf, NULL, &v, NULL, NULL, &err), &err);
    /* SDXL's VAE factor by convention (the tiny pack's own VAE config keeps SD's) */
    CHECK_NEAR(cJSON_GetObjectItemCaseSensitive(v, "scaling_factor")->valuedouble, 0.13025, 0);
    cJSON_Delete(v);
    sdc_single_file_free(&sf);
}

/* ---- other layouts ----------------------------------------------------------- */

TEST(single_file_diffusers_names) {
    sdc_single_file sf;
    sdc_error err;
    /* a bare diffusers UNet (a component file is a single file too) */
    REQUIRE_OK(sdc_single_file_load(test_data("tiny-sd/unet/diffusion_pytorch_model.safetensors"), &sf, &err), &err);
    CHECK(sf.diffusers_names);
    CHECK(sf.family == SDC_FAMILY_SD1); /* 1x1 conv projections */
    CHECK_EQ_INT(sf.components, SDC_SF_UNET);
    CHECK_EQ_INT(sf.weights.count, expect_folder(&sf, "tiny-sd", 1, 0, 0));
    expect_configs(&sf, "tiny-sd", 1, 0);
    sdc_single_file_free(&sf);
    /* a bare diffusers VAE */
    REQUIRE_OK(sdc_single_file_load(test_data("tiny-sd2/vae/diffusion_pytorch_model.safetensors"), &sf, &err), &err);
    CHECK(sf.family == SDC_FAMILY_UNKNOWN);
    CHECK_EQ_INT(sf.components, SDC_SF_VAE);
    CHECK_EQ_INT(sf.weights.count, expect_folder(&sf, "tiny-sd2", 2, 0, 0));
    expect_configs(&sf, "tiny-sd2", 2, 0);
    sdc_single_file_free(&sf);
    /* component prefixes; CLIP keys without "text_model." gain it */
    spec s[] = {{"unet.conv_in.weight", 4, {8, 4, 3, 3}},
                {"text_encoder.embeddings.token_embedding.weight", 2, {10, 4}},
                {"text_encoder_2.text_model.final_layer_norm.bias", 1, {4}},
                {"text_encoder_2.text_projection.weight", 2, {4, 4}},
                {"text_encoder.text_model.embeddings.position_ids", 2, {1, 77}}};
    REQUIRE_OK(sdc_single_file_load(write_specs("prefixed.safetensors", s, 5), &sf, &err), &err);
    CHECK(sf.diffusers_names);
    CHECK(sf.family == SDC_FAMILY_SDXL);
    CHECK(sdc_weights_find(&sf.weights, "unet.conv_in.weight") != NULL);
    CHECK(sdc_weights_find(&sf.weights, "text_encoder.text_model.embeddings.token_embedding.weight") != NULL);
    CHECK(sdc_weights_find(&sf.weights, "text_encoder_2.text_model.final_layer_norm.bias") != NULL);
    CHECK(sdc_weights_find(&sf.weights, "text_encoder_2.text_projection.weight") != NULL);
    expect_list(sf.ignored, sf.nignored, "ignored", "text_encoder.text_model.embeddings.position_ids", NULL);
    sdc_single_file_free(&sf);
}

TEST(single_file_full_vocab) {
    /* the single files under tests/data/single hold truncated token
     * embeddings; here a file with the whole 49408-row vocabulary: tiny-sd2's
     * UNet and text encoder under diffusers' single-file prefixes */
    static const char *const comps[2][2] = {{"unet.", "tiny-sd2/unet/diffusion_pytorch_model.safetensors"},
                                            {"text_encoder.", "tiny-sd2/text_encoder/model.safetensors"}};
    sdc_weights w[2];
    sdc_error err;
    size_t total = 0;
    for (int c = 0; c < 2; c++) {
        sdc_weights_init(&w[c]);
        REQUIRE_OK(sdc_safetensors_read(test_data(comps[c][1]), &w[c], &err), &err);
        total += w[c].count;
    }
    sdc_st_tensor *t = calloc(total, sizeof *t);
    char(*names)[256] = calloc(total, sizeof *names);
    REQUIRE(t && names);
    size_t n = 0;
    for (int c = 0; c < 2; c++)
        for (size_t i = 0; i < w[c].count; i++, n++) {
            const sdc_weight *x = &w[c].items[i];
            snprintf(names[n], sizeof names[n], "%s%s", comps[c][0], x->name);
            t[n] = (sdc_st_tensor){names[n], x->dtype, x->ndim, x->shape, x->data};
        }
    char path[1024];
    snprintf(path, sizeof path, "%s/full-vocab.safetensors", test_tmpdir());
    REQUIRE_OK(sdc_safetensors_write(path, t, n, NULL, 0, &err), &err);
    free(t);
    free(names);
    for (int c = 0; c < 2; c++) sdc_weights_free(&w[c]);

    sdc_single_file sf;
    REQUIRE_OK(sdc_single_file_load(path, &sf, &err), &err);
    CHECK(sf.diffusers_names);
    CHECK(sf.family == SDC_FAMILY_SD2);
    CHECK_EQ_INT(sf.components, SDC_SF_UNET | SDC_SF_TEXT_ENCODER);
    const sdc_weight *e = sdc_weights_find(&sf.weights, "text_encoder.text_model.embeddings.token_embedding.weight");
    REQUIRE(e);
    CHECK(e->ndim == 2 && e->shape[0] == 49408 && e->shape[1] == 32);
    CHECK_EQ_INT(sf.weights.count, expect_folder(&sf, "tiny-sd2", 5, 1, 0));
    expect_configs(&sf, "tiny-sd2", 5, 0); /* vocab_size 49408, as the folder says */
    cJSON *te = NULL;
    REQUIRE_OK(sdc_single_file_configs(&sf, NULL, NULL, &te, NULL, &err), &err);
    CHECK_EQ_INT(num(te, "vocab_size"), 49408);
    cJSON_Delete(te);
    sdc_single_file_free(&sf);
}

TEST(single_file_old_clip_layout) {
    /* early SD 1 files keep CLIP without transformers' "text_model." level */
    spec s[] = {{"cond_stage_model.transformer.embeddings.token_embedding.weight", 2, {10, 4}},
                {"cond_stage_model.transformer.embeddings.position_embedding.weight", 2, {77, 4}},
                {"cond_stage_model.transformer.encoder.layers.0.self_attn.q_proj.weight", 2, {4, 4}},
                {"cond_stage_model.transformer.encoder.layers.1.mlp.fc1.weight", 2, {8, 4}},
                {"cond_stage_model.transformer.encoder.layers.0.mlp.fc1.weight", 2, {8, 4}},
                {"cond_stage_model.transformer.final_layer_norm.weight", 1, {4}},
                {"cond_stage_model.transformer.encoder.layers.0.self_attn.rotary.weight", 1, {4}}};
    sdc_single_file sf;
    sdc_error err;
    REQUIRE_OK(sdc_single_file_load(write_specs("old-clip.safetensors", s, 7), &sf, &err), &err);
    CHECK(sf.family == SDC_FAMILY_SD1);
    CHECK_EQ_INT(sf.text_layers_stored[0], 2);
    CHECK_STR(src_of(&sf, "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight"),
              "cond_stage_model.transformer.encoder.layers.0.self_attn.q_proj.weight");
    CHECK_STR(src_of(&sf, "text_encoder.text_model.final_layer_norm.weight"),
              "cond_stage_model.transformer.final_layer_norm.weight");
    expect_list(sf.unknown, sf.nunknown, "unknown", "cond_stage_model.transformer.encoder.layers.0.self_attn.rotary.weight",
                NULL);
    cJSON *te = NULL;
    REQUIRE_OK(sdc_single_file_configs(&sf, NULL, NULL, &te, NULL, &err), &err);
    CHECK_EQ_INT(num(te, "num_hidden_layers"), 2);
    CHECK_EQ_INT(num(te, "intermediate_size"), 8);
    CHECK_STR(cJSON_GetObjectItemCaseSensitive(te, "hidden_act")->valuestring, "quick_gelu");
    cJSON_Delete(te);
    sdc_single_file_free(&sf);
}

/* A minimal UNet-only file: 1 level, 1 resnet, attention whose cross
 * projection reads `width`-wide context; prefix: "model.diffusion_model."
 * or "" (a bare ldm UNet). */
static sdc_family unet_family(int64_t width, int linear, const char *prefix) {
    static const char *const keys[] = {
        "input_blocks.0.0.weight", "input_blocks.1.0.in_layers.2.weight", "input_blocks.1.1.proj_in.weight",
        "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "middle_block.0.in_layers.0.weight",
        "output_blocks.0.0.in_layers.0.weight", "output_blocks.1.0.in_layers.0.weight", "out.2.weight"};
    spec s[] = {{NULL, 4, {8, 4, 3, 3}}, {NULL, 4, {8, 8, 3, 3}}, {NULL, linear ? 2 : 4, {8, 8, 1, 1}},
                {NULL, 2, {8, width}},   {NULL, 1, {8}},          {NULL, 1, {8}},
                {NULL, 1, {8}},          {NULL, 4, {4, 8, 3, 3}}};
    char names[8][128];
    for (int i = 0; i < 8; i++) {
        snprintf(names[i], sizeof names[i], "%s%s", prefix, keys[i]);
        s[i].name = names[i];
    }
    sdc_single_file sf;
    sdc_error err;
    if (sdc_single_file_load(write_specs("unet-only.safetensors", s, 8), &sf, &err) != SDC_OK) {
        CHECK_MSG(0, "%s", err.msg);
        return SDC_FAMILY_UNKNOWN;
    }
    sdc_family f = sf.family;
    CHECK_EQ_INT(sf.nunknown, 0);
    CHECK_EQ_INT(sf.weights.count, 8);
    CHECK_STR(src_of(&sf, "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"), names[3]);
    CHECK_STR(src_of(&sf, "unet.up_blocks.0.resnets.1.norm1.weight"), names[6]);
    sdc_single_file_free(&sf);
    return f;
}

TEST(single_file_family_from_unet) {
    const char *p = "model.diffusion_model.";
    CHECK(unet_family(768, 0, p) == SDC_FAMILY_SD1);
    CHECK(unet_family(1024, 1, p) == SDC_FAMILY_SD2);
    CHECK(unet_family(2048, 1, p) == SDC_FAMILY_SDXL);
    CHECK(unet_family(1280, 1, p) == SDC_FAMILY_SDXL); /* the refiner */
    CHECK(unet_family(32, 0, p) == SDC_FAMILY_SD1);
    CHECK(unet_family(32, 1, p) == SDC_FAMILY_SD2);
    CHECK(unet_family(1024, 1, "") == SDC_FAMILY_SD2);
}

TEST(single_file_vae_layouts) {
    /* a VAE file as Stability publishes them (no prefix), and under
     * diffusers' single-file alias "vae." */
    static const char *const keys[] = {"encoder.down.0.block.0.conv1.weight", "encoder.down.1.block.0.nin_shortcut.bias",
                                       "encoder.down.0.downsample.conv.weight", "decoder.up.0.block.1.norm2.weight",
                                       "decoder.up.1.upsample.conv.bias", "encoder.mid.attn_1.q.weight",
                                       "decoder.mid.attn_1.proj_out.weight", "decoder.norm_out.bias",
                                       "post_quant_conv.weight", "decoder.mid.block_2.conv2.bias"};
    static const char *const want[] = {"vae.encoder.down_blocks.0.resnets.0.conv1.weight",
                                       "vae.encoder.down_blocks.1.resnets.0.conv_shortcut.bias",
                                       "vae.encoder.down_blocks.0.downsamplers.0.conv.weight",
                                       "vae.decoder.up_blocks.1.resnets.1.norm2.weight",
                                       "vae.decoder.up_blocks.0.upsamplers.0.conv.bias",
                                       "vae.encoder.mid_block.attentions.0.to_q.weight",
                                       "vae.decoder.mid_block.attentions.0.to_out.0.weight",
                                       "vae.decoder.conv_norm_out.bias",
                                       "vae.post_quant_conv.weight",
                                       "vae.decoder.mid_block.resnets.1.conv2.bias"};
    for (int alias = 0; alias < 2; alias++) {
        spec s[10];
        char names[10][128];
        for (int i = 0; i < 10; i++) {
            snprintf(names[i], sizeof names[i], "%s%s", alias ? "vae." : "", keys[i]);
            int attn = i == 5 || i == 6, conv = i == 0 || i == 2 || i == 8;
            s[i] = (spec){names[i], attn || conv ? 4 : 1, {4, 4, attn ? 1 : 3, attn ? 1 : 3}};
        }
        sdc_single_file sf;
        sdc_error err;
        REQUIRE_OK(sdc_single_file_load(write_specs("vae.safetensors", s, 10), &sf, &err), &err);
        CHECK(sf.family == SDC_FAMILY_UNKNOWN);
        CHECK_EQ_INT(sf.components, SDC_SF_VAE);
        CHECK(!sf.diffusers_names);
        CHECK_EQ_INT(sf.weights.count, 10);
        for (int i = 0; i < 10; i++) CHECK_STR(src_of(&sf, want[i]), names[i]);
        const sdc_weight *q = sdc_weights_find(&sf.weights, want[5]);
        CHECK(q && q->ndim == 2 && q->shape[0] == 4 && q->shape[1] == 4);
        sdc_single_file_free(&sf);
    }
}

TEST(single_file_sdxl_refiner_text) {
    /* the SDXL refiner conditions on OpenCLIP bigG alone, as embedder 0 */
    spec s[] = {{"conditioner.embedders.0.model.token_embedding.weight", 2, {10, 4}},
                {"conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight", 2, {12, 4}},
                {"conditioner.embedders.0.model.text_projection", 2, {4, 6}}};
    sdc_single_file sf;
    sdc_error err;
    REQUIRE_OK(sdc_single_file_load(write_specs("refiner.safetensors", s, 3), &sf, &err), &err);
    CHECK(sf.family == SDC_FAMILY_SDXL);
    CHECK_EQ_INT(sf.components, SDC_SF_TEXT_ENCODER_2);
    CHECK_EQ_INT(sf.text_layers_stored[1], 1);
    const sdc_weight *p = sdc_weights_find(&sf.weights, "text_encoder_2.text_projection.weight");
    REQUIRE(p);
    CHECK(p->ndim == 2 && p->shape[0] == 6 && p->shape[1] == 4);
    CHECK(sdc_weights_find(&sf.weights, "text_encoder_2.text_model.encoder.layers.0.self_attn.v_proj.weight") != NULL);
    sdc_single_file_free(&sf);
}

TEST(single_file_sd2_penultimate_layer) {
    /* OpenCLIP ViT-H as SD 2 stores it: 24 blocks, of which SD 2 uses 23 */
    enum { L = 24, D = 8 };
    spec s[2 + 3 * L];
    static char names[3 * L][96];
    int n = 0;
    s[n++] = (spec){"cond_stage_model.model.token_embedding.weight", 2, {16, D}};
    s[n++] = (spec){"cond_stage_model.model.positional_embedding", 2, {77, D}};
    for (int l = 0; l < L; l++) {
        snprintf(names[3 * l], sizeof names[0], "cond_stage_model.model.transformer.resblocks.%d.attn.in_proj_weight", l);
        snprintf(names[3 * l + 1], sizeof names[0], "cond_stage_model.model.transformer.resblocks.%d.attn.in_proj_bias", l);
        snprintf(names[3 * l + 2], sizeof names[0], "cond_stage_model.model.transformer.resblocks.%d.mlp.c_fc.weight", l);
        s[n++] = (spec){names[3 * l], 2, {3 * D, D}};
        s[n++] = (spec){names[3 * l + 1], 1, {3 * D}};
        s[n++] = (spec){names[3 * l + 2], 2, {4 * D, D}};
    }
    sdc_single_file sf;
    sdc_error err;
    REQUIRE_OK(sdc_single_file_load(write_specs("sd2-text.safetensors", s, (size_t)n), &sf, &err), &err);
    CHECK(sf.family == SDC_FAMILY_SD2);
    CHECK_EQ_INT(sf.text_layers_stored[0], 24);
    CHECK_EQ_INT(sf.text_layers_used[0], 23);
    /* every block is mapped, the 24th included */
    const sdc_weight *v = sdc_weights_find(&sf.weights, "text_encoder.text_model.encoder.layers.23.self_attn.v_proj.bias");
    REQUIRE(v);
    CHECK(v->ndim == 1 && v->shape[0] == D);
    cJSON *te = NULL;
    REQUIRE_OK(sdc_single_file_configs(&sf, NULL, NULL, &te, NULL, &err), &err);
    CHECK_EQ_INT(num(te, "num_hidden_layers"), 23);
    CHECK_STR(cJSON_GetObjectItemCaseSensitive(te, "hidden_act")->valuestring, "gelu");
    cJSON_Delete(te);
    sdc_single_file_free(&sf);
}

/* ---- bad inputs ------------------------------------------------------------------ */

TEST(single_file_bad_inputs) {
    spec junk[] = {{"foo.bar", 1, {2}}, {"baz", 1, {3}}};
    expect_error(write_specs("junk.safetensors", junk, 2), SDC_EFORMAT, "no Stable Diffusion weights found");
    expect_error(write_specs("junk2.safetensors", junk, 2), SDC_EFORMAT, "\"foo.bar\"");
    expect_error(write_specs("empty.safetensors", junk, 0), SDC_EFORMAT, "holds no tensors");
    spec qkv[] = {{"cond_stage_model.model.token_embedding.weight", 2, {10, 4}},
                  {"cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", 2, {11, 4}}};
    expect_error(write_specs("qkv.safetensors", qkv, 2), SDC_EFORMAT,
                 "\"cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight\" has shape [11, 4]");
    spec qkv_width[] = {{"cond_stage_model.model.token_embedding.weight", 2, {10, 4}},
                        {"cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", 2, {24, 8}}};
    expect_error(write_specs("qkv-width.safetensors", qkv_width, 2), SDC_EFORMAT, "[3*D, D] (D = 4");
    spec qkv_bias[] = {{"conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_bias", 1, {10}}};
    expect_error(write_specs("qkv-bias.safetensors", qkv_bias, 1), SDC_EFORMAT, "must be [3*D]");
    spec vae_attn[] = {{"first_stage_model.encoder.mid.attn_1.q.weight", 4, {4, 4, 3, 3}}};
    expect_error(write_specs("vae-attn.safetensors", vae_attn, 1), SDC_EFORMAT, "1x1 convolution");
    /* blocks missing from a real file */
    const char *sd = test_single_file("tiny-sd");
    expect_error(write_without(sd, "model.diffusion_model.input_blocks.2.", "no-in2.safetensors"), SDC_EFORMAT,
                 "\"model.diffusion_model.input_blocks.2\" is missing");
    expect_error(write_without(sd, "model.diffusion_model.input_blocks.5.", "no-in5.safetensors"), SDC_EFORMAT,
                 "level 1 has 1 resnet blocks but level 0 has 2");
    expect_error(write_without(sd, "model.diffusion_model.output_blocks.5.", "no-out5.safetensors"), SDC_EFORMAT,
                 "5 output blocks");
    expect_error(write_without(sd, "model.diffusion_model.output_blocks.2.2.", "no-up.safetensors"), SDC_EFORMAT,
                 "lacks the upsampler");
    expect_error(write_without(sd, "model.diffusion_model.output_blocks.1.1.", "no-attn.safetensors"), SDC_EFORMAT,
                 "attention in 2 of its 3 blocks");
    expect_error(write_without(sd, "first_stage_model.decoder.up.0.", "no-up0.safetensors"), SDC_EFORMAT,
                 "\"first_stage_model.decoder.up.0\" is missing");
    expect_error(write_without(sd, "cond_stage_model.transformer.text_model.encoder.layers.3.", "no-layer.safetensors"),
                 SDC_EFORMAT, "layers.3\" is missing");
    /* other models' files: a T5 encoder is no VAE, a LoRA no UNet */
    spec t5[] = {{"encoder.block.0.layer.0.SelfAttention.q.weight", 2, {4, 4}}, {"shared.weight", 2, {10, 4}}};
    expect_error(write_specs("t5.safetensors", t5, 2), SDC_EFORMAT, "no Stable Diffusion weights found");
    spec lora[] = {{"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight", 2, {4, 64}},
                   {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora.up.weight", 2, {64, 4}}};
    expect_error(write_specs("lora.safetensors", lora, 2), SDC_EFORMAT, "lora.down.weight");
    char missing[1024];
    snprintf(missing, sizeof missing, "%s/nope.safetensors", test_tmpdir());
    expect_error(missing, SDC_ENOTFOUND, "nope.safetensors");
}

/* ---- config conventions at the real sizes ---------------------------------------------------- */

static void shape_of(sdc_single_file *sf, const char *name, int ndim, int64_t a, int64_t b, int64_t c, int64_t d) {
    int64_t sh[4] = {a, b, c, d};
    sdc_error err;
    if (sdc_weights_add(&sf->weights, name, name, SDC_F16, ndim, sh, NULL, 0, -1, "test", &err) != SDC_OK)
        CHECK_MSG(0, "%s", err.msg);
}

/* The tensors config synthesis reads, at the sizes of SD 1.5 (ctx 768,
 * conv projections), SD 2.1 (ctx 1024, linear) or SDXL base. */
static void real_unet(sdc_single_file *sf, sdc_family fam) {
    int sdxl = fam == SDC_FAMILY_SDXL, linear = fam != SDC_FAMILY_SD1;
    int64_t ctx = sdxl ? 2048 : fam == SDC_FAMILY_SD2 ? 1024 : 768;
    static const int64_t boc[4] = {320, 640, 1280, 1280};
    int L = sdxl ? 3 : 4;
    /* SD: attention in levels 0-2, depth 1; SDXL: in levels 1-2, depths 2 and 10 */
    int64_t depth[4] = {sdxl ? 0 : 1, sdxl ? 2 : 1, sdxl ? 10 : 1, 0};
    char n[256];
    shape_of(sf, "unet.conv_in.weight", 4, 320, 4, 3, 3);
    shape_of(sf, "unet.conv_out.weight", 4, 4, 320, 3, 3);
    shape_of(sf, "unet.time_embedding.linear_1.weight", 2, 1280, 320, 0, 0);
    if (sdxl) shape_of(sf, "unet.add_embedding.linear_1.weight", 2, 1280, 2816, 0, 0);
    for (int i = 0; i < L; i++) {
        for (int j = 0; j < 2; j++) {
            snprintf(n, sizeof n, "unet.down_blocks.%d.resnets.%d.conv1.weight", i, j);
            shape_of(sf, n, 4, boc[i], boc[i], 3, 3);
        }
        for (int up = 0; up < 2; up++) {
            int lvl = up ? L - 1 - i : i; /* up block i mirrors down level L-1-i */
            const char *side = up ? "up" : "down";
            if (!depth[lvl]) continue;
            snprintf(n, sizeof n, "unet.%s_blocks.%d.attentions.0.proj_in.weight", side, i);
            shape_of(sf, n, linear ? 2 : 4, boc[lvl], boc[lvl], 1, 1);
            for (int t = 0; t < depth[lvl]; t++) {
                snprintf(n, sizeof n, "unet.%s_blocks.%d.attentions.0.transformer_blocks.%d.attn1.to_q.weight", side, i, t);
                shape_of(sf, n, 2, boc[lvl], boc[lvl], 0, 0);
                snprintf(n, sizeof n, "unet.%s_blocks.%d.attentions.0.transformer_blocks.%d.attn2.to_k.weight", side, i, t);
                shape_of(sf, n, 2, boc[lvl], ctx, 0, 0);
            }
        }
    }
    shape_of(sf, "unet.mid_block.resnets.0.conv1.weight", 4, 1280, 1280, 3, 3);
    shape_of(sf, "unet.mid_block.attentions.0.proj_in.weight", linear ? 2 : 4, 1280, 1280, 1, 1);
    for (int t = 0; t < (sdxl ? 10 : 1); t++) {
        snprintf(n, sizeof n, "unet.mid_block.attentions.0.transformer_blocks.%d.attn1.to_q.weight", t);
        shape_of(sf, n, 2, 1280, 1280, 0, 0);
    }
    /* the VAE (the same shapes in every family) and the text encoders */
    shape_of(sf, "vae.encoder.conv_in.weight", 4, 128, 3, 3, 3);
    shape_of(sf, "vae.decoder.conv_in.weight", 4, 512, 4, 3, 3);
    shape_of(sf, "vae.decoder.conv_out.weight", 4, 3, 128, 3, 3);
    static const int64_t vboc[4] = {128, 256, 512, 512};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++) {
            snprintf(n, sizeof n, "vae.encoder.down_blocks.%d.resnets.%d.conv1.weight", i, j);
            shape_of(sf, n, 4, vboc[i], vboc[i], 3, 3);
        }
    int64_t h1 = fam == SDC_FAMILY_SD2 ? 1024 : 768;
    shape_of(sf, "text_encoder.text_model.embeddings.token_embedding.weight", 2, 49408, h1, 0, 0);
    shape_of(sf, "text_encoder.text_model.encoder.layers.0.mlp.fc1.weight", 2, 4 * h1, h1, 0, 0);
    sf->text_layers_used[0] = fam == SDC_FAMILY_SD2 ? 23 : 12;
    if (sdxl) {
        shape_of(sf, "text_encoder_2.text_model.embeddings.token_embedding.weight", 2, 49408, 1280, 0, 0);
        shape_of(sf, "text_encoder_2.text_model.encoder.layers.0.mlp.fc1.weight", 2, 5120, 1280, 0, 0);
        shape_of(sf, "text_encoder_2.text_projection.weight", 2, 1280, 1280, 0, 0);
        sf->text_layers_used[1] = 32;
    }
    sf->family = fam;
    sf->components = SDC_SF_UNET | SDC_SF_VAE | SDC_SF_TEXT_ENCODER | (sdxl ? SDC_SF_TEXT_ENCODER_2 : 0);
}

/* config[key] printed compactly equals text. */
static void expect_json(const cJSON *o, const char *key, const char *text, const char *what) {
    char *s = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(o, key));
    CHECK_MSG(s && strcmp(s, text) == 0, "%s: \"%s\" is %s, expected %s", what, key, s ? s : "(missing)", text);
    free(s);
}

TEST(single_file_config_conventions) {
    /* the values of the published configs: runwayml/stable-diffusion-v1-5,
     * stabilityai/stable-diffusion-2-1, stabilityai/stable-diffusion-xl-base-1.0 */
    static const struct {
        sdc_family fam;
        const char *heads, *down, *up, *depth, *cross, *linear, *scaling, *te_heads, *te_act, *te_layers;
    } cases[] = {
        {SDC_FAMILY_SD1, "8", "[\"CrossAttnDownBlock2D\",\"CrossAttnDownBlock2D\",\"CrossAttnDownBlock2D\",\"DownBlock2D\"]",
         "[\"UpBlock2D\",\"CrossAttnUpBlock2D\",\"CrossAttnUpBlock2D\",\"CrossAttnUpBlock2D\"]", "1", "768", "false",
         "0.18215", "12", "\"quick_gelu\"", "12"},
        {SDC_FAMILY_SD2, "[5,10,20,20]",
         "[\"CrossAttnDownBlock2D\",\"CrossAttnDownBlock2D\",\"CrossAttnDownBlock2D\",\"DownBlock2D\"]",
         "[\"UpBlock2D\",\"CrossAttnUpBlock2D\",\"CrossAttnUpBlock2D\",\"CrossAttnUpBlock2D\"]", "1", "1024", "true",
         "0.18215", "16", "\"gelu\"", "23"},
        {SDC_FAMILY_SDXL, "[5,10,20]", "[\"DownBlock2D\",\"CrossAttnDownBlock2D\",\"CrossAttnDownBlock2D\"]",
         "[\"CrossAttnUpBlock2D\",\"CrossAttnUpBlock2D\",\"UpBlock2D\"]", "[1,2,10]", "2048", "true", "0.13025", "12",
         "\"quick_gelu\"", "12"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        sdc_single_file sf;
        memset(&sf, 0, sizeof sf);
        sdc_weights_init(&sf.weights);
        sf.path = sdc_strdup("real-size");
        real_unet(&sf, cases[c].fam);
        cJSON *u = NULL, *v = NULL, *t = NULL, *t2 = NULL;
        sdc_error err;
        sdc_status s = sdc_single_file_configs(&sf, &u, &v, &t, &t2, &err);
        CHECK_MSG(s == SDC_OK, "%s", err.msg);
        if (s == SDC_OK) {
            const char *what = sdc_family_name(cases[c].fam);
            expect_json(u, "attention_head_dim", cases[c].heads, what);
            expect_json(u, "down_block_types", cases[c].down, what);
            expect_json(u, "up_block_types", cases[c].up, what);
            expect_json(u, "transformer_layers_per_block", cases[c].depth, what);
            expect_json(u, "reverse_transformer_layers_per_block", "null", what);
            expect_json(u, "cross_attention_dim", cases[c].cross, what);
            expect_json(u, "use_linear_projection", cases[c].linear, what);
            expect_json(u, "block_out_channels", cases[c].fam == SDC_FAMILY_SDXL ? "[320,640,1280]" : "[320,640,1280,1280]",
                        what);
            expect_json(u, "layers_per_block", "2", what);
            expect_json(u, "time_embedding_dim", "null", what);
            expect_json(u, "mid_block_type", "\"UNetMidBlock2DCrossAttn\"", what);
            expect_json(v, "scaling_factor", cases[c].scaling, what);
            expect_json(v, "block_out_channels", "[128,256,512,512]", what);
            expect_json(v, "latent_channels", "4", what);
            expect_json(t, "num_attention_heads", cases[c].te_heads, what);
            expect_json(t, "hidden_act", cases[c].te_act, what);
            expect_json(t, "num_hidden_layers", cases[c].te_layers, what);
            expect_json(t, "vocab_size", "49408", what);
            if (cases[c].fam == SDC_FAMILY_SDXL) {
                expect_json(u, "addition_embed_type", "\"text_time\"", what);
                expect_json(u, "addition_time_embed_dim", "256", what);
                expect_json(u, "projection_class_embeddings_input_dim", "2816", what);
                expect_json(t2, "num_attention_heads", "20", what);
                expect_json(t2, "hidden_act", "\"gelu\"", what);
                expect_json(t2, "num_hidden_layers", "32", what);
                expect_json(t2, "intermediate_size", "5120", what);
                expect_json(t2, "projection_dim", "1280", what);
                expect_json(t2, "vocab_size", "49408", what);
                expect_json(t2, "architectures", "[\"CLIPTextModelWithProjection\"]", what);
            } else {
                CHECK(t2 == NULL);
                expect_json(u, "addition_embed_type", "null", what);
            }
        }
        cJSON_Delete(u);
        cJSON_Delete(v);
        cJSON_Delete(t);
        cJSON_Delete(t2);
        sdc_single_file_free(&sf);
    }
}
