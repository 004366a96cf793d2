/* LoRA loading and merging (io/lora.h) on the tiny models. The files in
 * tests/data/lora are made by tools/make_lora_tests.py from the diffusers
 * LoRA in tests/data/tiny-sd-lora; each is checked against W + k·up·down
 * computed here in double, or against the reference merged the same way. */
#include <stdlib.h>
#include <string.h>

#include "io/lora.h"
#include "io/model.h"
#include "io/safetensors.h"
#include "nn/params.h"
#include "single_recipe.h"
#include "test.h"

/* Merged weights are W + k·up·down with |W|, |k·up·down| < 2 and rank ≤ 4:
 * float rounding of the sum and of the r-term product stays below 1e-6. */
#define TOL 1e-6

/* A parameter store holding every tensor of one component of a model,
 * loaded, with a copy of the weights before any merge. */
typedef struct {
    sdc_params p;
    sdc_tensor *slots;
    float *w0;
} store;

static void store_free(store *s) {
    sdc_params_free(&s->p);
    free(s->slots);
    free(s->w0);
    memset(s, 0, sizeof *s);
}

static int store_load(store *s, const sdc_model *m, const char *comp) {
    memset(s, 0, sizeof *s);
    sdc_error err;
    char pre[64];
    snprintf(pre, sizeof pre, "%s.", comp);
    size_t plen = strlen(pre), n = 0;
    for (size_t i = 0; i < m->weights.count; i++) n += strncmp(m->weights.items[i].name, pre, plen) == 0;
    if (n == 0 || sdc_params_init(&s->p, comp, &err) != SDC_OK) return 0;
    s->slots = calloc(n, sizeof *s->slots);
    size_t j = 0;
    for (size_t i = 0; i < m->weights.count; i++) {
        const sdc_weight *t = &m->weights.items[i];
        if (strncmp(t->name, pre, plen) == 0)
            sdc_params_declare(&s->p, &s->slots[j++], SDC_INIT_ZEROS, t->ndim, t->shape, "%s", t->name + plen);
    }
    if (sdc_params_alloc(&s->p, &err) != SDC_OK || sdc_params_load(&s->p, &m->weights, NULL, NULL, &err) != SDC_OK) {
        sdc_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return 0;
    }
    s->w0 = malloc(s->p.total * sizeof *s->w0);
    memcpy(s->w0, s->p.data, s->p.total * sizeof *s->w0);
    return 1;
}

/* Parameters whose values changed since loading. */
static int changed(const store *s) {
    int n = 0;
    for (size_t i = 0; i < s->p.count; i++) {
        const sdc_param *it = &s->p.items[i];
        n += memcmp(s->w0 + it->offset, s->p.data + it->offset, (size_t)it->numel * sizeof(float)) != 0;
    }
    return n;
}

static float *f32(const sdc_weights *w, const char *key) {
    const sdc_weight *t = sdc_weights_find(w, key);
    if (!t) return NULL;
    float *out = malloc((size_t)sdc_weight_numel(t) * sizeof *out);
    sdc_error err;
    if (sdc_weight_to_f32(w, t, out, &err) != SDC_OK) {
        free(out);
        return NULL;
    }
    return out;
}

/* s's parameter `param` must be W0 + k·up·down, with up and down read from
 * the LoRA file's tensors by key. */
static void check_delta(const store *s, const sdc_weights *lw, const char *up_key, const char *down_key, const char *param,
                        double k) {
    const sdc_param *it = sdc_params_find(&s->p, param);
    const sdc_weight *ut = sdc_weights_find(lw, up_key);
    CHECK_MSG(it && ut, "%s: %s or %s missing", s->p.component, param, up_key);
    float *up = f32(lw, up_key), *dn = f32(lw, down_key);
    CHECK_MSG(up && dn, "cannot read %s / %s", up_key, down_key);
    if (!it || !ut || !up || !dn) goto done;
    int64_t out = ut->shape[0], r = ut->shape[1], K = it->numel / out;
    int bad = 0;
    for (int64_t o = 0; o < out && bad < 3; o++)
        for (int64_t c = 0; c < K && bad < 3; c++) {
            double acc = 0;
            for (int64_t j = 0; j < r; j++) acc += (double)up[o * r + j] * dn[j * K + c];
            double want = s->w0[it->offset + o * K + c] + k * acc, got = s->p.data[it->offset + o * K + c];
            if (fabs(want - got) > TOL) {
                sdc_test_fail(__FILE__, __LINE__, "%s.%s[%ld, %ld]: %.9g, expected %.9g", s->p.component, param, (long)o,
                              (long)c, got, want);
                bad++;
            }
        }
done:
    free(up);
    free(dn);
}

/* Opens, resolves against comps and applies path with multiplier 1. */
static int merge_file(const char *rel, store *const *st, size_t n, sdc_lora *l) {
    sdc_error err;
    sdc_params *comps[4];
    for (size_t i = 0; i < n; i++) comps[i] = &st[i]->p;
    if (sdc_lora_open(test_data(rel), l, &err) != SDC_OK || sdc_lora_resolve(l, comps, n, &err) != SDC_OK ||
        sdc_lora_apply(l, 1.0f, comps, n, NULL, &err) != SDC_OK) {
        sdc_test_fail(__FILE__, __LINE__, "%s: %s", rel, err.msg);
        return 0;
    }
    return 1;
}

static const sdc_lora_delta *delta_for(const sdc_lora *l, const char *param) {
    for (size_t i = 0; i < l->count; i++)
        if (l->deltas[i].param && strcmp(l->deltas[i].param, param) == 0) return &l->deltas[i];
    return NULL;
}

/* The reference: "unet.<m>.lora.up.weight" changes unet <m>.weight. */
static void check_reference(const store *u, const sdc_lora *l, double k) {
    int n = 0;
    for (size_t i = 0; i < l->w.count; i++) {
        const char *up = l->w.items[i].name;
        size_t len = strlen(up);
        if (len < 20 || strcmp(up + len - 15, ".lora.up.weight") != 0) continue;
        char down[512], param[512];
        snprintf(down, sizeof down, "%.*s.lora.down.weight", (int)(len - 15), up);
        snprintf(param, sizeof param, "%.*s.weight", (int)(len - 15 - 5), up + 5);
        check_delta(u, &l->w, up, down, param, k);
        n++;
    }
    CHECK_EQ_INT(n, 48);
}

TEST(lora_diffusers_reference) {
    sdc_model m;
    sdc_error err;
    REQUIRE_OK(sdc_model_open(test_data("tiny-sd"), NULL, &m, &err), &err);
    store u, h;
    REQUIRE(store_load(&u, &m, "unet") && store_load(&h, &m, "unet"));
    sdc_lora l;
    REQUIRE_OK(sdc_lora_open(test_data("tiny-sd-lora/pytorch_lora_weights.safetensors"), &l, &err), &err);
    CHECK_STR(l.format, "diffusers");
    CHECK_EQ_INT(l.count, 48);
    CHECK_EQ_INT(l.nunknown, 0);
    for (size_t i = 0; i < l.count; i++) {
        CHECK_STR(l.deltas[i].component, "unet");
        CHECK(l.deltas[i].param != NULL);
        CHECK(l.deltas[i].scale == 1.0f); /* no alpha in the file */
    }
    sdc_params *comps[] = {&u.p};
    size_t skipped = 99;
    REQUIRE_OK(sdc_lora_apply(&l, 1.0f, comps, 1, &skipped, &err), &err);
    CHECK_EQ_INT(skipped, 0);
    CHECK_EQ_INT(changed(&u), 48);
    check_reference(&u, &l, 1.0);
    /* the multiplier scales the change */
    comps[0] = &h.p;
    REQUIRE_OK(sdc_lora_apply(&l, 0.5f, comps, 1, NULL, &err), &err);
    check_reference(&h, &l, 0.5);
    /* components not asked for are skipped and counted */
    REQUIRE_OK(sdc_lora_apply(&l, 1.0f, comps, 0, &skipped, &err), &err);
    CHECK_EQ_INT(skipped, 48);
    sdc_lora_free(&l);
    store_free(&u);
    store_free(&h);
    sdc_model_close(&m);
}

/* PEFT, kohya (diffusers names) and kohya (SGM names) copies of the
 * reference merge to the same weights. */
TEST(lora_formats_equivalent) {
    sdc_model m;
    sdc_error err;
    REQUIRE_OK(sdc_model_open(test_data("tiny-sd"), NULL, &m, &err), &err);
    store ref;
    REQUIRE(store_load(&ref, &m, "unet"));
    sdc_lora l;
    store *sp = &ref;
    REQUIRE(merge_file("tiny-sd-lora/pytorch_lora_weights.safetensors", &sp, 1, &l));
    sdc_lora_free(&l);
    static const char *const files[][2] = {
        {"lora/peft.safetensors", "peft"},
        {"lora/kohya_diffusers.safetensors", "kohya"},
        {"lora/kohya_sgm.safetensors", "kohya"},
    };
    for (size_t f = 0; f < 3; f++) {
        store u;
        REQUIRE(store_load(&u, &m, "unet"));
        sp = &u;
        if (merge_file(files[f][0], &sp, 1, &l)) {
            CHECK_STR(l.format, files[f][1]);
            CHECK_EQ_INT(l.count, 48);
            CHECK_EQ_INT(l.nunknown, 0);
            CHECK_EQ_INT(changed(&u), 48);
            size_t bad = 0;
            for (size_t i = 0; i < u.p.total && bad < 3; i++)
                if (fabs((double)u.p.data[i] - ref.p.data[i]) > TOL) {
                    sdc_test_fail(__FILE__, __LINE__, "%s: element %zu: %.9g vs reference %.9g", files[f][0], i,
                                  u.p.data[i], ref.p.data[i]);
                    bad++;
                }
            if (f == 0) { /* alpha 8 / r 4, one module alpha_pattern 4 */
                const sdc_lora_delta *d = delta_for(&l, "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight");
                const sdc_lora_delta *e = delta_for(&l, "mid_block.attentions.0.transformer_blocks.0.attn1.to_k.weight");
                CHECK(d && d->scale == 1.0f);
                CHECK(e && e->scale == 2.0f);
            }
            if (f == 1) CHECK(l.deltas[0].scale == 0.5f); /* alpha 2 / r 4 */
            sdc_lora_free(&l);
        }
        store_free(&u);
    }
    store_free(&ref);
    sdc_model_close(&m);
}

TEST(lora_kohya_text_encoder_and_conv) {
    sdc_model m;
    sdc_error err;
    REQUIRE_OK(sdc_model_open(test_data("tiny-sd"), NULL, &m, &err), &err);
    store u, t;
    REQUIRE(store_load(&u, &m, "unet") && store_load(&t, &m, "text_encoder"));
    store *st[] = {&u, &t};
    sdc_lora l;
    REQUIRE(merge_file("lora/kohya_te_conv.safetensors", st, 2, &l));
    CHECK_STR(l.format, "kohya");
    CHECK_EQ_INT(l.nunknown, 0);
    CHECK_EQ_INT(changed(&u), 3);
    CHECK_EQ_INT(changed(&t), 1);
#define K(m) "lora_" m ".lora_up.weight", "lora_" m ".lora_down.weight"
    check_delta(&t, &l.w, K("te_text_model_encoder_layers_0_self_attn_q_proj"),
                "text_model.encoder.layers.0.self_attn.q_proj.weight", 8.0 / 4);
    /* LoCon: [32,4,1,1]·[4,32,3,3] -> [32,32,3,3] */
    check_delta(&u, &l.w, K("unet_down_blocks_0_resnets_0_conv1"), "down_blocks.0.resnets.0.conv1.weight", 4.0 / 4);
    /* linear LoRA on SD1's 1×1 conv proj_in */
    check_delta(&u, &l.w, K("unet_down_blocks_1_attentions_0_proj_in"), "down_blocks.1.attentions.0.proj_in.weight", 1.0);
    /* SGM name of the up sampler (after the level's attention: .2) */
    check_delta(&u, &l.w, K("unet_output_blocks_2_2_conv"), "up_blocks.0.upsamplers.0.conv.weight", 1.0 / 2);
    sdc_lora_free(&l);
    /* only the UNet: the text-encoder module is skipped and counted */
    store u2;
    REQUIRE(store_load(&u2, &m, "unet"));
    sdc_params *comps[] = {&u2.p};
    size_t skipped = 0;
    REQUIRE_OK(sdc_lora_open(test_data("lora/kohya_te_conv.safetensors"), &l, &err), &err);
    REQUIRE_OK(sdc_lora_apply(&l, 1.0f, comps, 1, &skipped, &err), &err);
    CHECK_EQ_INT(skipped, 1);
    CHECK_EQ_INT(changed(&u2), 3);
    sdc_lora_free(&l);
    store_free(&u2);
    store_free(&u);
    store_free(&t);
    sdc_model_close(&m);
}

TEST(lora_diffusers_old_formats) {
    sdc_model m;
    sdc_error err;
    REQUIRE_OK(sdc_model_open(test_data("tiny-sd"), NULL, &m, &err), &err);
    store u, t;
    REQUIRE(store_load(&u, &m, "unet") && store_load(&t, &m, "text_encoder"));
    store *st[] = {&u, &t};
    sdc_lora l;
    REQUIRE(merge_file("lora/diffusers_old.safetensors", st, 2, &l));
    CHECK_STR(l.format, "diffusers");
    CHECK_EQ_INT(l.count, 6);
    CHECK_EQ_INT(l.nunknown, 0);
    CHECK_EQ_INT(changed(&u), 3);
    CHECK_EQ_INT(changed(&t), 3);
#define B "down_blocks.1.attentions.0.transformer_blocks.0."
#define P(m) m ".up.weight", m ".down.weight"
    check_delta(&u, &l.w, P("unet." B "attn1.processor.to_q_lora"), B "attn1.to_q.weight", 1.0);
    check_delta(&u, &l.w, P("unet." B "attn2.processor.to_out_lora"), B "attn2.to_out.0.weight", 2.0 / 4);
    check_delta(&u, &l.w, P("up_blocks.0.attentions.1.transformer_blocks.0.attn2.processor.to_k_lora"),
                "up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight", 1.0);
    check_delta(&t, &l.w, P("text_encoder.text_model.encoder.layers.1.self_attn.q_proj.lora_linear_layer"),
                "text_model.encoder.layers.1.self_attn.q_proj.weight", 1.0);
    check_delta(&t, &l.w, P("text_encoder.text_model.encoder.layers.2.self_attn.to_out_lora"),
                "text_model.encoder.layers.2.self_attn.out_proj.weight", 1.0);
    check_delta(&t, &l.w, P("text_encoder.text_model.encoder.layers.2.mlp.fc1.lora_linear_layer"),
                "text_model.encoder.layers.2.mlp.fc1.weight", 1.0);
    sdc_lora_free(&l);
    store_free(&u);
    store_free(&t);
    sdc_model_close(&m);
}

/* raw PEFT: "base_model.model." keys, alpha from adapter_config.json */
TEST(lora_peft_raw_adapter_config) {
    sdc_model m;
    sdc_error err;
    REQUIRE_OK(sdc_model_open(test_data("tiny-sd"), NULL, &m, &err), &err);
    store u;
    REQUIRE(store_load(&u, &m, "unet"));
    store *st[] = {&u};
    sdc_lora l;
    REQUIRE(merge_file("lora/peft_raw/adapter_model.safetensors", st, 1, &l));
    CHECK_STR(l.format, "peft");
    REQUIRE(l.count == 1);
    CHECK(l.deltas[0].scale == 2.0f); /* lora_alpha 4 / r 2 */
    CHECK_EQ_INT(changed(&u), 1);
    check_delta(&u, &l.w, "base_model.model.mid_block.attentions.0.transformer_blocks.0.ff.net.2.lora_B.weight",
                "base_model.model.mid_block.attentions.0.transformer_blocks.0.ff.net.2.lora_A.weight",
                "mid_block.attentions.0.transformer_blocks.0.ff.net.2.weight", 2.0);
    sdc_lora_free(&l);
    store_free(&u);
    sdc_model_close(&m);
}

TEST(lora_sdxl_two_text_encoders) {
    sdc_model m;
    sdc_error err;
    REQUIRE_OK(sdc_model_open(test_data("tiny-sdxl"), NULL, &m, &err), &err);
    store u, t1, t2;
    REQUIRE(store_load(&u, &m, "unet") && store_load(&t1, &m, "text_encoder") && store_load(&t2, &m, "text_encoder_2"));
    store *st[] = {&u, &t1, &t2};
    sdc_lora l;
    REQUIRE(merge_file("lora/sdxl.safetensors", st, 3, &l));
    CHECK_EQ_INT(changed(&u), 1);
    CHECK_EQ_INT(changed(&t1), 1);
    CHECK_EQ_INT(changed(&t2), 1);
    check_delta(&t1, &l.w, K("te1_text_model_encoder_layers_0_self_attn_k_proj"),
                "text_model.encoder.layers.0.self_attn.k_proj.weight", 1.0);
    check_delta(&t2, &l.w, K("te2_text_model_encoder_layers_1_self_attn_v_proj"),
                "text_model.encoder.layers.1.self_attn.v_proj.weight", 1.0 / 2);
    /* SDXL: 2 resnets per level, so down level 1 starts at input block 4 */
    check_delta(&u, &l.w, K("unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q"),
                "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q.weight", 1.0);
    sdc_lora_free(&l);
    store_free(&u);
    store_free(&t1);
    store_free(&t2);
    sdc_model_close(&m);
}

/* LyCORIS Tucker (lora_mid) merges as the plain conv LoRA with down' = mid∘down. */
TEST(lora_tucker_conv) {
    sdc_model m;
    sdc_error err;
    REQUIRE_OK(sdc_model_open(test_data("tiny-sd"), NULL, &m, &err), &err);
    store a, b;
    REQUIRE(store_load(&a, &m, "unet") && store_load(&b, &m, "unet"));
    store *sa = &a, *sb = &b;
    sdc_lora la, lb;
    REQUIRE(merge_file("lora/tucker.safetensors", &sa, 1, &la));
    REQUIRE(merge_file("lora/tucker_ref.safetensors", &sb, 1, &lb));
    REQUIRE(la.count == 1);
    CHECK(la.deltas[0].mid != NULL);
    CHECK(la.deltas[0].scale == 0.5f);
    CHECK_EQ_INT(changed(&a), 1);
    check_delta(&b, &lb.w, K("unet_down_blocks_0_resnets_1_conv2"), "down_blocks.0.resnets.1.conv2.weight", 0.5);
    int bad = 0;
    for (size_t i = 0; i < a.p.total && bad < 3; i++)
        if (fabs((double)a.p.data[i] - b.p.data[i]) > TOL) {
            sdc_test_fail(__FILE__, __LINE__, "element %zu: Tucker %.9g vs plain %.9g", i, a.p.data[i], b.p.data[i]);
            bad++;
        }
    sdc_lora_free(&la);
    sdc_lora_free(&lb);
    /* the same LoRA as a torch.save zip checkpoint */
    memcpy(b.p.data, b.w0, b.p.total * sizeof(float));
    REQUIRE(merge_file("lora/tucker_ref.pt", &sb, 1, &lb));
    check_delta(&b, &lb.w, K("unet_down_blocks_0_resnets_1_conv2"), "down_blocks.0.resnets.1.conv2.weight", 0.5);
    CHECK_EQ_INT(changed(&b), 1);
    sdc_lora_free(&lb);
    store_free(&a);
    store_free(&b);
    sdc_model_close(&m);
}

static int has_unknown(const sdc_lora *l, const char *key) {
    for (size_t i = 0; i < l->nunknown; i++)
        if (strcmp(l->unknown[i], key) == 0) return 1;
    return 0;
}

TEST(lora_unknown_keys_reported) {
    sdc_model m;
    sdc_error err;
    REQUIRE_OK(sdc_model_open(test_data("tiny-sd"), NULL, &m, &err), &err);
    store u;
    REQUIRE(store_load(&u, &m, "unet"));
    sdc_params *comps[] = {&u.p};
    sdc_lora l;
    REQUIRE_OK(sdc_lora_open(test_data("lora/unknown.safetensors"), &l, &err), &err);
    CHECK_EQ_INT(l.count, 2);
    CHECK_EQ_INT(l.nunknown, 1);
    CHECK(has_unknown(&l, "model_ema.decay"));
    /* unresolved, a kohya name that matches nothing is an error */
    CHECK(sdc_lora_apply(&l, 1.0f, comps, 1, NULL, &err) == SDC_ENOTFOUND);
    CHECK_MSG(strstr(err.msg, "lora_unet_down_blocks_7_attentions_0_to_q") != NULL, "%s", err.msg);
    memcpy(u.p.data, u.w0, u.p.total * sizeof(float));
    /* resolved, it is listed with its keys and the rest merges */
    REQUIRE_OK(sdc_lora_resolve(&l, comps, 1, &err), &err);
    CHECK_EQ_INT(l.count, 1);
    CHECK_EQ_INT(l.nunknown, 4);
    CHECK(has_unknown(&l, "lora_unet_down_blocks_7_attentions_0_to_q.lora_down.weight"));
    CHECK(has_unknown(&l, "lora_unet_down_blocks_7_attentions_0_to_q.lora_up.weight"));
    CHECK(has_unknown(&l, "lora_unet_down_blocks_7_attentions_0_to_q.alpha"));
    REQUIRE_OK(sdc_lora_resolve(&l, comps, 1, &err), &err); /* idempotent */
    CHECK_EQ_INT(l.nunknown, 4);
    REQUIRE_OK(sdc_lora_apply(&l, 1.0f, comps, 1, NULL, &err), &err);
    CHECK_EQ_INT(changed(&u), 1);
    CHECK_STR(l.deltas[0].param, "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k.weight");
    sdc_lora_free(&l);
    store_free(&u);
    sdc_model_close(&m);
}

/* Opening (open=1) or applying rel must fail with code and a message
 * naming the file and containing each needle. */
static void expect_error(const store *u, const char *rel, int at_open, sdc_status code, const char *n1, const char *n2) {
    sdc_lora l;
    sdc_error err = {0};
    const char *path = test_data(rel);
    char file[1024];
    snprintf(file, sizeof file, "%s", path);
    sdc_status s = sdc_lora_open(file, &l, &err);
    if (!at_open && s == SDC_OK) {
        sdc_params *comps[] = {(sdc_params *)&u->p};
        s = sdc_lora_resolve(&l, comps, 1, &err);
        if (s == SDC_OK) s = sdc_lora_apply(&l, 1.0f, comps, 1, NULL, &err);
        sdc_lora_free(&l);
    } else if (s == SDC_OK) {
        sdc_lora_free(&l);
    }
    CHECK_MSG(s == code, "%s: status %s (%s), expected %s", rel, sdc_status_name(s), err.msg, sdc_status_name(code));
    CHECK_MSG(strstr(err.msg, file) != NULL, "message does not name the file: %s", err.msg);
    CHECK_MSG(strstr(err.msg, n1) != NULL, "message lacks \"%s\": %s", n1, err.msg);
    CHECK_MSG(!n2 || strstr(err.msg, n2) != NULL, "message lacks \"%s\": %s", n2, err.msg);
}

TEST(lora_errors) {
    sdc_model m;
    sdc_error err;
    REQUIRE_OK(sdc_model_open(test_data("tiny-sd"), NULL, &m, &err), &err);
    store u;
    REQUIRE(store_load(&u, &m, "unet"));
    const char *k = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_";
    expect_error(&u, "lora/err_missing_up.safetensors", 1, SDC_EFORMAT, k, "no up weight");
    expect_error(&u, "lora/err_rank.safetensors", 1, SDC_EFORMAT, k, "rank");
    expect_error(&u, "lora/err_dora.safetensors", 1, SDC_EUNSUPPORTED, "dora_scale", "DoRA");
    expect_error(&u, "lora/err_shape.safetensors", 0, SDC_EFORMAT, "attn1_to_q", "[64, 32]");
    expect_error(&u, "lora/err_no_param.safetensors", 0, SDC_ENOTFOUND, "down_blocks.5.attentions.0.proj_in", NULL);
    expect_error(&u, "lora/err_twice.safetensors", 0, SDC_EFORMAT, "both change", "attn1.to_k.weight");
    /* a model file is no LoRA; neither is a JSON file */
    expect_error(&u, "tiny-sd/unet/diffusion_pytorch_model.safetensors", 1, SDC_EFORMAT, "not a LoRA file", NULL);
    sdc_lora l;
    CHECK(sdc_lora_open(test_data("tiny-sd/model_index.json"), &l, &err) != SDC_OK);
    CHECK(sdc_lora_open(test_data("lora/no_such_file.safetensors"), &l, &err) == SDC_EIO);
    store_free(&u);
    sdc_model_close(&m);
}

/* The SGM names made from diffusers names (lora_kohya.c) are the inverse of
 * the single-file key map (keymap_unet.c) on SD1, SD2 and SDXL. */
TEST(lora_sgm_names_match_keymap) {
    static const char *const files[] = {"tiny-sd", "tiny-sd2", "tiny-sdxl"}; /* tests/single_recipe.h */
    /* tiny SD2 has one resnet per level and attention on level 0 */
    static const int layers[] = {2, 1, 2};
    static const char *const proj_in[][3] = {
        {"down_blocks.1.attentions.0.proj_in.weight", "down_blocks_1_attentions_0_proj_in", "input_blocks_4_1_proj_in"},
        {"down_blocks.0.attentions.0.proj_in.weight", "down_blocks_0_attentions_0_proj_in", "input_blocks_1_1_proj_in"},
        {"down_blocks.1.attentions.0.proj_in.weight", "down_blocks_1_attentions_0_proj_in", "input_blocks_4_1_proj_in"},
    };
    for (size_t f = 0; f < 3; f++) {
        sdc_model m;
        sdc_error err;
        REQUIRE_OK(sdc_model_open(test_single_file(files[f]), NULL, &m, &err), &err);
        sdc_params p;
        REQUIRE_OK(sdc_params_init(&p, "unet", &err), &err);
        size_t n = 0;
        for (size_t i = 0; i < m.weights.count; i++) n += strncmp(m.weights.items[i].name, "unet.", 5) == 0;
        sdc_tensor *slots = calloc(n, sizeof *slots);
        size_t j = 0;
        for (size_t i = 0; i < m.weights.count; i++) {
            const sdc_weight *t = &m.weights.items[i];
            if (strncmp(t->name, "unet.", 5) == 0)
                sdc_params_declare(&p, &slots[j++], SDC_INIT_ZEROS, t->ndim, t->shape, "%s", t->name + 5);
        }
        sdc_unet_layout lay;
        CHECK(sdc_unet_layout_read(&p, &lay));
        CHECK_EQ_INT(lay.levels, 2);
        CHECK_EQ_INT(lay.layers, layers[f]);
        int good = 0;
        for (size_t i = 0; i < m.weights.count; i++) {
            const sdc_weight *t = &m.weights.items[i];
            if (strncmp(t->name, "unet.", 5) != 0) continue;
            char sgm[600];
            const char *want = strncmp(t->src_name, "model.diffusion_model.", 22) == 0 ? t->src_name + 22 : t->src_name;
            int ok = sdc_unet_sgm_name(&lay, t->name + 5, sgm, sizeof sgm) && strcmp(sgm, want) == 0;
            CHECK_MSG(ok, "%s: %s -> %s, the file has %s", files[f], t->name, ok ? sgm : "(none)", want);
            good += ok;
        }
        CHECK_EQ_INT(good, n);
        CHECK(n > 100);
        /* kohya lookups by both names */
        sdc_lora_names names;
        REQUIRE_OK(sdc_lora_names_build(&names, &p, &err), &err);
        const sdc_param *pi = sdc_params_find(&p, proj_in[f][0]);
        REQUIRE(pi);
        int64_t want = pi - p.items;
        CHECK_EQ_INT(sdc_lora_names_find(&names, proj_in[f][1]), want);
        CHECK_EQ_INT(sdc_lora_names_find(&names, proj_in[f][2]), want);
        CHECK_EQ_INT(sdc_lora_names_find(&names, "down_blocks_1_attentions_0_proj"), -1);
        sdc_lora_names_free(&names);
        free(slots);
        sdc_params_free(&p);
        sdc_model_close(&m);
    }
}
