/* LoRA and UNet writers (io/lora_write.h): a tiny-sd UNet + text encoder
 * LoRA set with random A and nonzero B is written in each format, read back
 * by sdc's LoRA reader and merged into a fresh copy of the model; the result
 * must equal W + (alpha/r)·B·A computed here directly. tools/check_lora_write.py
 * checks the same files load in diffusers. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/fs.h"
#include "core/rng.h"
#include "io/lora_write.h"
#include "io/model.h"
#include "io/safetensors.h"
#include "models/clip_text.h"
#include "models/unet.h"
#include "nn/lora_attach.h"
#include "test.h"

typedef struct {
    sdc_model m;
    sdc_unet *u;
    sdc_clip_text *te;
} base;

static int open_base(base *b) {
    sdc_error err = {0};
    memset(b, 0, sizeof *b);
    b->u = calloc(1, sizeof *b->u);
    b->te = calloc(1, sizeof *b->te);
    sdc_unet_config cfg;
    if (sdc_model_open(test_data("tiny-sd"), NULL, &b->m, &err) != SDC_OK ||
        sdc_unet_config_parse(sdc_model_component(&b->m, "unet")->config, "unet", &cfg, &err) != SDC_OK ||
        sdc_unet_build(b->u, &cfg, "unet", &err) != SDC_OK ||
        sdc_params_load(&b->u->params, &b->m.weights, NULL, NULL, &err) != SDC_OK ||
        sdc_clip_text_build(b->te, sdc_model_component(&b->m, "text_encoder")->config, 0, "text_encoder",
                            "text_encoder", &err) != SDC_OK ||
        sdc_clip_text_load(b->te, &b->m.weights, &err) != SDC_OK) {
        sdc_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return 0;
    }
    return 1;
}

static void close_base(base *b) {
    sdc_unet_free(b->u);
    sdc_clip_text_free(b->te);
    free(b->u);
    free(b->te);
    sdc_model_close(&b->m);
}

/* value as stored in a file of dtype */
static float stored(float x, sdc_dtype dt) {
    if (dt == SDC_F16) return sdc_f16_to_f32(sdc_f32_to_f16(x));
    if (dt == SDC_BF16) return sdc_bf16_to_f32(sdc_f32_to_bf16(x));
    return x;
}

/* W + scale·B·A for every adapter of s, in double, A and B rounded to dtype. */
static void expected_merge(double *w, const sdc_params *model, const sdc_lora_set *s, sdc_dtype dt) {
    for (size_t i = 0; i < s->count; i++) {
        const sdc_lora_adapter *a = &s->adapters[i];
        const char *an = s->params.items[2 * i].name;
        char mod[600];
        snprintf(mod, sizeof mod, "%.*s.weight", (int)(strlen(an) - strlen(".lora_A.weight")), an);
        const sdc_param *p = sdc_params_find(model, mod);
        SDC_ASSERT(p);
        int64_t out = a->B.shape[0], r = a->rank, in = p->numel / out;
        const float *A = a->A.data, *B = a->B.data;
        for (int64_t o = 0; o < out; o++)
            for (int64_t c = 0; c < in; c++) {
                double d = 0;
                for (int64_t k = 0; k < r; k++) d += (double)stored(B[o * r + k], dt) * stored(A[k * in + c], dt);
                w[p->offset + (size_t)(o * in + c)] += (double)a->scale * d;
            }
    }
}

static void fill(sdc_lora_set *s, uint64_t seed) {
    sdc_rng g;
    sdc_rng_init(&g, seed);
    sdc_rng_fill_normal(&g, s->params.data, s->params.total); /* B too: nonzero */
    for (size_t i = 0; i < s->params.total; i++) s->params.data[i] *= 0.2f;
}

/* Writes with `write`, reads back into a fresh base, compares to the direct merge. */
typedef sdc_status (*writer)(const char *path, const sdc_lora_set *u, const sdc_lora_set *t, sdc_dtype dt,
                             sdc_error *err);

static sdc_status w_diffusers(const char *path, const sdc_lora_set *u, const sdc_lora_set *t, sdc_dtype dt,
                              sdc_error *err) {
    return sdc_lora_write_diffusers(path, u, t, NULL, dt, err);
}
static const sdc_unet_layout *g_sgm;
static sdc_status w_kohya(const char *path, const sdc_lora_set *u, const sdc_lora_set *t, sdc_dtype dt,
                          sdc_error *err) {
    return sdc_lora_write_kohya(path, u, t, NULL, SDC_FAMILY_SD1, g_sgm, dt, err);
}

static void round_trip(const char *file, writer write, sdc_dtype dt, double tol, const char *format) {
    base b, fresh;
    if (!open_base(&b)) return;
    sdc_error err = {0};
    sdc_lora_config uc = {.targets = sdc_lora_targets_kohya, .ntargets = 8, .rank = 4, .alpha = 2.0f,
                          .conv_targets = sdc_lora_conv_targets_kohya, .nconv_targets = 3, .conv_rank = 2,
                          .conv_alpha = 3.0f};
    static const char *const te_targets[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
    sdc_lora_config tc = {.targets = te_targets, .ntargets = 4, .rank = 3, .alpha = 6.0f};
    sdc_lora_set ul, tl;
    REQUIRE_OK(sdc_lora_attach(&ul, &b.u->params, &uc, "unet_lora", &err), &err);
    REQUIRE_OK(sdc_lora_attach(&tl, &b.te->params, &tc, "text_encoder_lora", &err), &err);
    fill(&ul, 1);
    fill(&tl, 2);

    double *wu = malloc(b.u->params.total * sizeof *wu), *wt = malloc(b.te->params.total * sizeof *wt);
    for (size_t i = 0; i < b.u->params.total; i++) wu[i] = b.u->params.data[i];
    for (size_t i = 0; i < b.te->params.total; i++) wt[i] = b.te->params.data[i];
    expected_merge(wu, &b.u->params, &ul, dt);
    expected_merge(wt, &b.te->params, &tl, dt);

    sdc_unet_layout lay;
    REQUIRE(sdc_unet_layout_read(&b.u->params, &lay));
    g_sgm = strstr(file, "sgm") ? &lay : NULL;
    char *path = sdc_path_join(test_tmpdir(), file);
    REQUIRE_OK(write(path, &ul, &tl, dt, &err), &err);
    /* tools/check_lora_write.py loads these files in diffusers */
    const char *keep = getenv("SDC_LORA_WRITE_KEEP");
    if (keep) {
        char *kp = sdc_path_join(keep, file);
        REQUIRE_OK(write(kp, &ul, &tl, dt, &err), &err);
        free(kp);
    }

    REQUIRE(open_base(&fresh));
    sdc_lora l;
    sdc_params *comps[2] = {&fresh.u->params, &fresh.te->params};
    REQUIRE_OK(sdc_lora_open(path, &l, &err), &err);
    CHECK_MSG(strcmp(l.format, format) == 0, "format %s, want %s", l.format, format);
    CHECK_EQ_INT((long long)l.count, (long long)(ul.count + tl.count));
    REQUIRE_OK(sdc_lora_resolve(&l, comps, 2, &err), &err);
    CHECK_EQ_INT((long long)l.nunknown, 0);
    REQUIRE_OK(sdc_lora_apply(&l, 1.0f, comps, 2, NULL, &err), &err);
    double worst = 0;
    for (size_t i = 0; i < fresh.u->params.total; i++) worst = fmax(worst, fabs(fresh.u->params.data[i] - wu[i]));
    for (size_t i = 0; i < fresh.te->params.total; i++) worst = fmax(worst, fabs(fresh.te->params.data[i] - wt[i]));
    CHECK_MSG(worst <= tol, "%s: max |merged - (W + scale BA)| = %g > %g", file, worst, tol);
    /* the update is not trivially zero */
    double moved = 0;
    for (size_t i = 0; i < fresh.u->params.total; i++) moved = fmax(moved, fabs(wu[i] - b.u->params.data[i]));
    CHECK(moved > 1e-2);

    sdc_lora_free(&l);
    free(path);
    free(wu);
    free(wt);
    sdc_lora_detach(&ul);
    sdc_lora_detach(&tl);
    close_base(&fresh);
    close_base(&b);
}

/* fp32 files: A and B are exact, so only the fp32 merge rounds: |W + ΔW| < 4
 * here, ulp(4)/2 = 2.4e-7, plus the float sum of r products in the reader. */
#define F32_TOL 1e-6
/* fp16 files: A, B rounded here too, so the same fp32 error remains. */
TEST(lora_write_diffusers_round_trip) { round_trip("w_diffusers.safetensors", w_diffusers, SDC_F32, F32_TOL, "diffusers"); }
TEST(lora_write_diffusers_fp16_round_trip) { round_trip("w_diffusers16.safetensors", w_diffusers, SDC_F16, F32_TOL, "diffusers"); }
TEST(lora_write_kohya_round_trip) { round_trip("w_kohya.safetensors", w_kohya, SDC_F32, F32_TOL, "kohya"); }
TEST(lora_write_kohya_sgm_bf16_round_trip) { round_trip("w_kohya_sgm.safetensors", w_kohya, SDC_BF16, F32_TOL, "kohya"); }

/* The key layout: names and metadata the other tools look for. */
TEST(lora_write_layout) {
    base b;
    if (!open_base(&b)) return;
    sdc_error err = {0};
    sdc_lora_config uc = {.targets = sdc_lora_targets_diffusers, .ntargets = 4, .rank = 4, .alpha = 8.0f};
    sdc_lora_set ul;
    REQUIRE_OK(sdc_lora_attach(&ul, &b.u->params, &uc, "unet_lora", &err), &err);
    sdc_unet_layout lay;
    REQUIRE(sdc_unet_layout_read(&b.u->params, &lay));
    char *pd = sdc_path_join(test_tmpdir(), "layout_d.safetensors"), *pk = sdc_path_join(test_tmpdir(), "layout_k.safetensors");
    REQUIRE_OK(sdc_lora_write_diffusers(pd, &ul, NULL, NULL, SDC_F16, &err), &err);
    REQUIRE_OK(sdc_lora_write_kohya(pk, &ul, NULL, NULL, SDC_FAMILY_SDXL, &lay, SDC_F16, &err), &err);
    sdc_weights w = {0};
    REQUIRE_OK(sdc_safetensors_read(pd, &w, &err), &err);
    const sdc_weight *t = sdc_weights_find(&w, "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight");
    REQUIRE(t != NULL);
    CHECK(t->dtype == SDC_F16 && t->ndim == 2 && t->shape[0] == 4);
    CHECK(sdc_weights_find(&w, "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0.lora.up.weight") != NULL);
    CHECK(strcmp(sdc_weights_meta(&w, "format"), "pt") == 0);
    cJSON *m = cJSON_Parse(sdc_weights_meta(&w, "lora_adapter_metadata"));
    REQUIRE(m != NULL);
    CHECK(cJSON_GetObjectItem(m, "unet.r")->valuedouble == 4);
    CHECK(cJSON_GetObjectItem(m, "unet.lora_alpha")->valuedouble == 8);
    cJSON_Delete(m);
    sdc_weights_free(&w);

    sdc_weights k = {0};
    REQUIRE_OK(sdc_safetensors_read(pk, &k, &err), &err);
    /* down_blocks.1.attentions.0 is SGM's input_blocks.4.1 (layers_per_block 2) */
    char want[256];
    snprintf(want, sizeof want, "lora_unet_input_blocks_%d_1_transformer_blocks_0_attn1_to_q", 1 + (lay.layers + 1));
    char key[300];
    snprintf(key, sizeof key, "%s.lora_down.weight", want);
    CHECK_MSG(sdc_weights_find(&k, key) != NULL, "no %s", key);
    snprintf(key, sizeof key, "%s.alpha", want);
    const sdc_weight *al = sdc_weights_find(&k, key);
    REQUIRE(al != NULL);
    CHECK(al->ndim == 0 && al->dtype == SDC_F32 && *(const float *)al->data == 8.0f);
    CHECK(strcmp(sdc_weights_meta(&k, "ss_network_dim"), "4") == 0);
    CHECK(strcmp(sdc_weights_meta(&k, "ss_network_alpha"), "8") == 0);
    CHECK(strcmp(sdc_weights_meta(&k, "ss_network_module"), "networks.lora") == 0);
    CHECK(strcmp(sdc_weights_meta(&k, "ss_base_model_version"), "sdxl_base_v1-0") == 0);
    sdc_weights_free(&k);
    CHECK(sdc_lora_write_kohya(pk, &ul, NULL, NULL, SDC_FAMILY_SD1, NULL, SDC_I32, &err) == SDC_EINVAL);
    free(pd);
    free(pk);
    sdc_lora_detach(&ul);
    close_base(&b);
}

/* A UNet written with save_pretrained's layout, inside a pipeline folder
 * copied from tiny-sd, opens as a model and loads back: exactly in fp32, to
 * bf16 rounding in bf16. */
TEST(unet_write_diffusers_round_trip) {
    base b;
    if (!open_base(&b)) return;
    sdc_error err = {0};
    for (size_t i = 0; i < b.u->params.total; i++) b.u->params.data[i] += 1e-3f * (float)(i % 7);
    char *cfg = cJSON_Print(sdc_model_component(&b.m, "unet")->config);
    sdc_dtype dts[2] = {SDC_F32, SDC_BF16};
    for (int k = 0; k < 2; k++) {
        char *dir = sdc_path_join(test_tmpdir(), k ? "pipe_bf16" : "pipe_f32");
        REQUIRE_OK(sdc_pipeline_write_diffusers(dir, test_data("tiny-sd"), &b.u->params, cfg, dts[k], &err), &err);
        CHECK(sdc_pipeline_write_diffusers(dir, test_data("tiny-sd"), &b.u->params, cfg, dts[k], &err) == SDC_EINVAL);
        sdc_model m;
        REQUIRE_OK(sdc_model_open(dir, NULL, &m, &err), &err);
        sdc_unet_config uc;
        sdc_unet *u = calloc(1, sizeof *u);
        REQUIRE_OK(sdc_unet_config_parse(sdc_model_component(&m, "unet")->config, "unet", &uc, &err), &err);
        REQUIRE_OK(sdc_unet_build(u, &uc, "unet", &err), &err);
        size_t unused = 0;
        REQUIRE_OK(sdc_params_load(&u->params, &m.weights, NULL, &unused, &err), &err);
        CHECK_EQ_INT((long long)unused, 0);
        REQUIRE(u->params.total == b.u->params.total);
        size_t bad = 0, n = 0; /* per parameter: the buffer may pad between them */
        for (size_t j = 0; j < u->params.count; j++) {
            const sdc_param *p = &u->params.items[j], *q = sdc_params_find(&b.u->params, p->name);
            REQUIRE(q != NULL && q->numel == p->numel);
            for (int64_t i = 0; i < p->numel; i++, n++)
                bad += u->params.data[p->offset + (size_t)i] != stored(b.u->params.data[q->offset + (size_t)i], dts[k]);
        }
        CHECK_MSG(bad == 0, "%zu of %zu values differ", bad, n);
        /* the other components came along unchanged */
        CHECK(sdc_model_weight(&m, "text_encoder", "text_model.embeddings.token_embedding.weight") != NULL);
        CHECK(sdc_model_component(&m, "vae") != NULL && sdc_model_component(&m, "tokenizer") != NULL);
        sdc_unet_free(u);
        free(u);
        sdc_model_close(&m);
        free(dir);
    }
    free(cfg);
    close_base(&b);
}
