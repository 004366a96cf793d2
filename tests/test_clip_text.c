/* The CLIP text encoders against transformers' outputs (golden.safetensors,
 * written by PyTorch), on the CPU backend.
 *
 * Tolerance: ‖out − ref‖/‖ref‖ ≤ 1e-5 for every output. The goldens are
 * float64 results stored as float32 (~6e-8 relative from the rounding); our
 * fp32 forward rounds at each op, and through a few layers of layer norms,
 * 32-wide dot products and softmaxes that accumulates to ~1e-6 at most
 * (measured: 2–3e-7). A wrong activation, scale, mask or pooling position is
 * off by far more (dropping the causal mask: 0.5). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "io/model.h"
#include "io/safetensors.h"
#include "models/clip_text.h"
#include "test.h"

#define REL_TOL 1e-5

typedef struct fixture {
    sdc_model model;
    sdc_weights golden;
    sdc_arena arena;
    sdc_ctx c;
    sdc_clip_text te;
    int have_model, have_golden, have_arena, have_te;
} fixture;

static void fx_free(fixture *f) {
    if (f->have_te) sdc_clip_text_free(&f->te);
    if (f->have_arena) sdc_arena_free(&f->arena);
    if (f->have_golden) sdc_weights_free(&f->golden);
    if (f->have_model) sdc_model_close(&f->model);
}

/* Opens a test model (and its golden file, if golden is set). */
static int fx_open(fixture *f, const char *model, int golden) {
    memset(f, 0, sizeof *f);
    sdc_error err;
    char path[512];
    if (sdc_model_open(test_data(model), NULL, &f->model, &err) != SDC_OK) {
        sdc_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return 0;
    }
    f->have_model = 1;
    if (golden) {
        sdc_weights_init(&f->golden);
        f->have_golden = 1;
        snprintf(path, sizeof path, "%s/golden.safetensors", model);
        if (sdc_safetensors_read(test_data(path), &f->golden, &err) != SDC_OK) {
            sdc_test_fail(__FILE__, __LINE__, "%s", err.msg);
            return 0;
        }
    }
    if (sdc_arena_init(&f->arena, (size_t)64 << 20, &err) != SDC_OK) {
        sdc_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return 0;
    }
    f->have_arena = 1;
    f->c = (sdc_ctx){sdc_cpu_backend(), {SDC_CPU, 0}, &f->arena, NULL, SDC_F32};
    return 1;
}

/* Builds and loads the text encoder `component` of the fixture's model
 * (WithProjection decided by the component's class, as a pipeline does). */
static int fx_encoder(fixture *f, const char *component) {
    sdc_error err;
    const sdc_component *comp = sdc_model_component(&f->model, component);
    if (!comp || !comp->config) {
        sdc_test_fail(__FILE__, __LINE__, "no component %s", component);
        return 0;
    }
    int proj = comp->class_name && strcmp(comp->class_name, "CLIPTextModelWithProjection") == 0;
    if (sdc_clip_text_build(&f->te, comp->config, proj, component, component, &err) != SDC_OK ||
        (f->have_te = 1, sdc_clip_text_load(&f->te, &f->model.weights, &err)) != SDC_OK) {
        sdc_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return 0;
    }
    return 1;
}

static const sdc_weight *golden(fixture *f, const char *name) {
    const sdc_weight *t = sdc_weights_find(&f->golden, name);
    if (!t) sdc_test_fail(__FILE__, __LINE__, "golden has no %s", name);
    return t;
}

/* The golden's int64 input ids [B,T] as int32 (malloc'd). */
static int32_t *golden_ids(fixture *f, const char *name, int64_t *B, int64_t *T) {
    const sdc_weight *t = golden(f, name);
    if (!t || t->dtype != SDC_I64 || t->ndim != 2) return NULL;
    *B = t->shape[0];
    *T = t->shape[1];
    int32_t *ids = malloc((size_t)(*B * *T) * sizeof *ids);
    for (int64_t i = 0; ids && i < *B * *T; i++) {
        int64_t v;
        memcpy(&v, (const char *)t->data + i * 8, 8);
        ids[i] = (int32_t)v;
    }
    return ids;
}

/* ‖got − ref‖/‖ref‖ for a device tensor against a golden tensor of the same shape. */
static double rel_err(fixture *f, const sdc_tensor *got, const char *name) {
    const sdc_weight *ref = golden(f, name);
    if (!ref || !got->data) return INFINITY;
    CHECK_EQ_INT(ref->ndim, got->ndim);
    for (int d = 0; d < ref->ndim && d < got->ndim; d++) CHECK_EQ_INT(ref->shape[d], got->shape[d]);
    int64_t n = sdc_tensor_numel(got);
    if (sdc_weight_numel(ref) != n) return INFINITY;
    float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    sdc_error err;
    double num = 0, den = 0;
    if (a && b && sdc_weight_to_f32(&f->golden, ref, b, &err) == SDC_OK) {
        sdc_op_download(&f->c, a, got);
        for (int64_t i = 0; i < n; i++) {
            num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
            den += (double)b[i] * b[i];
        }
    } else {
        num = INFINITY;
    }
    free(a);
    free(b);
    return den > 0 ? sqrt(num / den) : INFINITY;
}

#define CHECK_REL(got, name)                                                                     \
    do {                                                                                         \
        double e_ = rel_err(&f, (got), (name));                                                  \
        CHECK_MSG(e_ <= REL_TOL, "%s: relative error %.3g > %g", (name), e_, (double)REL_TOL); \
    } while (0)

/* One encoder against its goldens: last_hidden_state, penultimate_hidden_state
 * (hidden_index −2) and pooler_output or text_embeds. */
static void check_encoder(const char *model, const char *component) {
    fixture f;
    char key[128];
    if (!fx_open(&f, model, 1) || !fx_encoder(&f, component)) {
        fx_free(&f);
        return;
    }
    int64_t B = 0, T = 0;
    snprintf(key, sizeof key, "%s/input_ids", component);
    int32_t *ids = golden_ids(&f, key, &B, &T);
    sdc_error err;
    if (ids && sdc_clip_text_check_ids(&f.te, ids, B * T, &err) != SDC_OK) sdc_test_fail(__FILE__, __LINE__, "%s", err.msg);
    if (ids) {
        sdc_clip_text_out out;
        sdc_clip_text_forward(&f.c, &f.te, ids, B, T, -2, &out);
        /* the arena bound callers plan with holds */
        CHECK(f.arena.peak <= sdc_clip_text_arena_bytes(&f.te, B, T));
        snprintf(key, sizeof key, "%s/last_hidden_state", component);
        CHECK_REL(&out.last_hidden, key);
        snprintf(key, sizeof key, "%s/penultimate_hidden_state", component);
        CHECK_REL(&out.hidden, key);
        if (f.te.cfg.with_projection) {
            snprintf(key, sizeof key, "%s/text_embeds", component);
            CHECK_REL(&out.text_embeds, key);
        } else {
            CHECK(out.text_embeds.data == NULL);
            snprintf(key, sizeof key, "%s/pooler_output", component);
            CHECK_REL(&out.pooled, key);
        }
    }
    free(ids);
    fx_free(&f);
}

TEST(clip_text_tiny_sd_golden) { check_encoder("tiny-sd", "text_encoder"); }
TEST(clip_text_tiny_sdxl_golden) { check_encoder("tiny-sdxl", "text_encoder"); }
/* float16 weights, gelu, CLIPTextModelWithProjection */
TEST(clip_text_tiny_sdxl_2_golden) { check_encoder("tiny-sdxl", "text_encoder_2"); }

static int all_finite(sdc_ctx *c, const sdc_tensor *t) {
    int64_t n = sdc_tensor_numel(t);
    float *h = malloc((size_t)n * sizeof *h);
    if (!h) return 0;
    sdc_op_download(c, h, t);
    int ok = 1;
    for (int64_t i = 0; i < n; i++) ok &= isfinite(h[i]) != 0;
    free(h);
    return ok;
}

/* SD 2.x's OpenCLIP encoder (gelu, eos 49407 with pad 0; no golden): runs,
 * gives finite outputs of the right shapes, pools at the first EOS, and
 * hidden_index counts from the end as transformers does. */
TEST(clip_text_tiny_sd2_runs) {
    fixture f;
    if (!fx_open(&f, "tiny-sd2", 0) || !fx_encoder(&f, "text_encoder")) {
        fx_free(&f);
        return;
    }
    const int64_t B = 2, T = 77, D = f.te.cfg.hidden_size, L = f.te.cfg.num_hidden_layers;
    CHECK(f.te.act == SDC_ACT_GELU);
    int32_t ids[2 * 77] = {0};
    ids[0] = 49406, ids[1] = 320, ids[2] = 1125, ids[3] = 49407;
    ids[T] = 49406, ids[T + 1] = 49407, ids[T + 2] = 49407;
    sdc_error err;
    REQUIRE_OK(sdc_clip_text_check_ids(&f.te, ids, B * T, &err), &err);
    sdc_clip_text_out out;
    sdc_clip_text_forward(&f.c, &f.te, ids, B, T, -1, &out);
    CHECK_EQ_INT(out.last_hidden.ndim, 3);
    CHECK(out.last_hidden.shape[0] == B && out.last_hidden.shape[1] == T && out.last_hidden.shape[2] == D);
    CHECK(out.hidden.ndim == 3 && out.hidden.shape[0] == B && out.hidden.shape[1] == T && out.hidden.shape[2] == D);
    CHECK(out.pooled.ndim == 2 && out.pooled.shape[0] == B && out.pooled.shape[1] == D);
    CHECK(out.text_embeds.data == NULL);
    CHECK(all_finite(&f.c, &out.last_hidden) && all_finite(&f.c, &out.hidden) && all_finite(&f.c, &out.pooled));

    float *last = malloc((size_t)(B * T * D) * sizeof *last), *pooled = malloc((size_t)(B * D) * sizeof *pooled),
          *h1 = malloc((size_t)(B * T * D) * sizeof *h1), *h2 = malloc((size_t)(B * T * D) * sizeof *h2);
    REQUIRE(last && pooled && h1 && h2);
    sdc_op_download(&f.c, last, &out.last_hidden);
    sdc_op_download(&f.c, pooled, &out.pooled);
    sdc_op_download(&f.c, h1, &out.hidden);
    /* first EOS: position 3 in row 0, 1 in row 1 (not the later repeat) */
    CHECK(memcmp(pooled, last + 3 * D, (size_t)D * sizeof *last) == 0);
    CHECK(memcmp(pooled + D, last + (T + 1) * D, (size_t)D * sizeof *last) == 0);
    /* hidden −1 is before the final layer norm, so it differs from last_hidden */
    CHECK(memcmp(h1, last, (size_t)(B * T * D) * sizeof *last) != 0);

    /* −(L+1) is the embeddings: token + position rows, exactly */
    sdc_arena_reset(&f.arena);
    sdc_clip_text_forward(&f.c, &f.te, ids, B, T, -(int)(L + 1), &out);
    sdc_op_download(&f.c, h2, &out.hidden);
    const float *tok = f.te.token_embedding.data, *pos = f.te.position_embedding.data;
    double maxd = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t d = 0; d < D; d++) {
                double want = (double)(tok[(int64_t)ids[b * T + t] * D + d] + pos[t * D + d]);
                maxd = fmax(maxd, fabs(h2[(b * T + t) * D + d] - want));
            }
    CHECK_MSG(maxd == 0, "embeddings differ by %g", maxd);
    /* and the same ids give the same last_hidden (deterministic) */
    sdc_op_download(&f.c, h1, &out.last_hidden);
    CHECK(memcmp(h1, last, (size_t)(B * T * D) * sizeof *last) == 0);
    free(last);
    free(pooled);
    free(h1);
    free(h2);
    fx_free(&f);
}

/* Ids enter through sdc_clip_text_check_ids: anything outside [0, vocab) is
 * an error naming the component, not an out-of-bounds read. */
TEST(clip_text_refuses_bad_ids) {
    fixture f;
    if (!fx_open(&f, "tiny-sd", 0) || !fx_encoder(&f, "text_encoder")) {
        fx_free(&f);
        return;
    }
    int32_t ids[4] = {49406, 320, 49407, 49407};
    sdc_error err = {0};
    CHECK(sdc_clip_text_check_ids(&f.te, ids, 4, &err) == SDC_OK);
    ids[1] = (int32_t)f.te.cfg.vocab_size - 1;
    CHECK(sdc_clip_text_check_ids(&f.te, ids, 4, &err) == SDC_OK);
    ids[1] = (int32_t)f.te.cfg.vocab_size;
    CHECK(sdc_clip_text_check_ids(&f.te, ids, 4, &err) == SDC_EINVAL);
    CHECK_MSG(strstr(err.msg, "text_encoder") && strstr(err.msg, "49408"), "message: %s", err.msg);
    ids[1] = -1;
    CHECK(sdc_clip_text_check_ids(&f.te, ids, 4, &err) == SDC_EINVAL);
    fx_free(&f);
}

static void count_param(void *ctx, const char *name, int ndim, const int64_t *shape) {
    (void)name, (void)ndim, (void)shape;
    (*(int *)ctx)++;
}

/* Sample standard deviation of a parameter (mean taken as 0: every init is centred). */
static double rms(const sdc_tensor *t) {
    const float *x = t->data;
    int64_t n = sdc_tensor_numel(t);
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s / (double)n);
}

/* `sdc init`: transformers' CLIP initialisation (CLIPPreTrainedModel._init_weights)
 * and the parameter listing `sdc info` uses. */
TEST(clip_text_init_and_listing) {
    cJSON *cfg = cJSON_Parse("{\"hidden_size\": 64, \"intermediate_size\": 96, \"num_hidden_layers\": 3,"
                             "\"num_attention_heads\": 4, \"vocab_size\": 1000, \"projection_dim\": 48,"
                             "\"hidden_act\": \"gelu\", \"initializer_factor\": 1.0}");
    REQUIRE(cfg);
    sdc_clip_text m;
    sdc_error err;
    sdc_status s = sdc_clip_text_build(&m, cfg, 1, "text_encoder_2", "config.json", &err);
    cJSON_Delete(cfg);
    REQUIRE_OK(s, &err);
    const int64_t D = 64, L = 3;
    /* 16 per layer + 2 embeddings + final norm (2) + projection */
    CHECK_EQ_INT(m.params.count, 16 * L + 5);
    int listed = 0;
    CHECK_EQ_INT(sdc_clip_text_params(&m.cfg, count_param, &listed), 16 * L + 5);
    CHECK_EQ_INT(listed, 16 * L + 5);
    CHECK(sdc_params_find(&m.params, "text_model.encoder.layers.2.mlp.fc2.bias") != NULL);
    CHECK(sdc_params_find(&m.params, "text_projection.weight") != NULL);
    CHECK(sdc_params_find(&m.params, "text_projection.bias") == NULL);

    sdc_params_init_random(&m.params, 42);
    /* Sample std within 10% of the target: 64·64 = 4096 samples estimate a
     * std to ±1.1% (1σ), so 10% only fails on a wrong formula. */
    const double f_in = 1.0 / sqrt((double)D) / sqrt(2.0 * L), f_out = 1.0 / sqrt((double)D);
    CHECK_NEAR(rms(&m.token_embedding), 0.02, 0.002);
    CHECK_NEAR(rms(&m.position_embedding), 0.02, 0.002);
    CHECK_NEAR(rms(&m.layers[1].q_proj.weight), f_in, 0.1 * f_in);
    CHECK_NEAR(rms(&m.layers[1].v_proj.weight), f_in, 0.1 * f_in);
    CHECK_NEAR(rms(&m.layers[1].out_proj.weight), f_out, 0.1 * f_out);
    CHECK_NEAR(rms(&m.layers[1].fc1.weight), 1.0 / sqrt(2.0 * D), 0.1 / sqrt(2.0 * D));
    CHECK_NEAR(rms(&m.layers[1].fc2.weight), f_in, 0.1 * f_in);
    CHECK_NEAR(rms(&m.text_projection.weight), f_out, 0.1 * f_out);
    CHECK(rms(&m.layers[0].q_proj.bias) == 0 && rms(&m.layers[2].fc1.bias) == 0);
    CHECK(rms(&m.final_layer_norm.bias) == 0);
    const float *g = m.layers[0].layer_norm1.weight.data;
    int ones = 1;
    for (int64_t i = 0; i < D; i++) ones &= g[i] == 1.0f;
    CHECK(ones);
    sdc_clip_text_free(&m);
}

/* A config sdc cannot run is an error naming the file. */
TEST(clip_text_bad_config) {
    cJSON *cfg = cJSON_Parse("{\"hidden_size\": 30, \"num_attention_heads\": 4}");
    REQUIRE(cfg);
    sdc_clip_text m;
    sdc_error err = {0};
    CHECK(sdc_clip_text_build(&m, cfg, 0, "text_encoder", "te/config.json", &err) == SDC_EFORMAT);
    CHECK_MSG(strstr(err.msg, "te/config.json") != NULL, "message: %s", err.msg);
    cJSON_Delete(cfg);
}
