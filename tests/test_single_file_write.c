/* Writing single-file checkpoints (io/single_file_write.c) for SD 1.x, SD 2.x
 * and SDXL. Two references: the tiny single files that diffusers' own
 * convert_diffusers_to_original_* scripts made from the same folders
 * (tools/make_single_files.py; materialized from their recipes), which the
 * writer must reproduce name for name and byte for byte; and sdc's reader,
 * which must give back every tensor of the folder bit for bit. */
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "io/model.h"
#include "io/safetensors.h"
#include "io/single_file_write.h"
#include "pipeline/sd_model.h"
#include "pipeline/train_run.h"
#include "single_recipe.h"
#include "test.h"

/* Writes the folder tests/data/<folder> as a single file of its own family
 * into the test's temporary folder; the path (malloc'd), or NULL. */
static char *write_folder(const char *folder, sdc_dtype dtype, sdc_family *family) {
    sdc_sd sd;
    sdc_error err;
    char name[128];
    snprintf(name, sizeof name, "%s-written.safetensors", folder);
    char *out = sdc_path_join(test_tmpdir(), name);
    if (sdc_sd_load(test_data(folder), NULL, &sd, &err) != SDC_OK) {
        CHECK_MSG(0, "%s", err.msg);
        free(out);
        return NULL;
    }
    *family = sd.family;
    sdc_status s = sdc_single_file_write(out, sd.family, &sd.unet->params, &sd.vae->params, sd.vae->cfg.levels,
                                         &sd.te[0]->params, sd.nte == 2 ? &sd.te[1]->params : NULL, dtype, &err);
    sdc_sd_free(&sd);
    if (s != SDC_OK) {
        CHECK_MSG(0, "%s", err.msg);
        free(out);
        return NULL;
    }
    return out;
}

/* Keys of the converted files that are no model parameter and that the
 * writer does not make: schedule buffers, EMA copies and a junk key
 * (added to tiny-sd by make_single_files.py), CLIP's position_ids buffer,
 * OpenCLIP's logit_scale, and SD 2's text_projection (OpenCLIP's, unused by
 * SD 2 and absent from diffusers' CLIPTextModel). */
static int extra_key(const char *k) {
    static const char *const exact[] = {"betas", "alphas_cumprod", "junk.tensor",
                                        "cond_stage_model.model.text_projection"};
    for (size_t i = 0; i < sizeof exact / sizeof *exact; i++)
        if (!strcmp(k, exact[i])) return 1;
    return !strncmp(k, "model_ema.", 10) || sdc_str_ends_with(k, ".position_ids") ||
           sdc_str_ends_with(k, ".logit_scale");
}

/* The converted files keep the first 1024 rows of each token embedding. */
static int is_token_embedding(const char *k) {
    return sdc_str_ends_with(k, "token_embedding.weight");
}

/* The writer's file equals diffusers' conversion of the same folder: the
 * same names (less extra_key), dtypes, shapes and bytes. fp16 on all three:
 * tiny-sd's folder is fp32, so this also checks that sdc rounds to half as
 * torch's .half() does. */
TEST(single_file_write_matches_diffusers_conversion) {
    static const char *const names[] = {"tiny-sd", "tiny-sd2", "tiny-sdxl"};
    static const sdc_family families[] = {SDC_FAMILY_SD1, SDC_FAMILY_SD2, SDC_FAMILY_SDXL};
    for (int f = 0; f < 3; f++) {
        sdc_family fam = SDC_FAMILY_UNKNOWN;
        char *path = write_folder(names[f], SDC_F16, &fam);
        if (!path) continue;
        CHECK_EQ_INT(fam, families[f]);
        sdc_weights a, b; /* a: written, b: diffusers' */
        sdc_weights_init(&a);
        sdc_weights_init(&b);
        sdc_error err;
        if (sdc_safetensors_read(path, &a, &err) != SDC_OK ||
            sdc_safetensors_read(test_single_file(names[f]), &b, &err) != SDC_OK) {
            CHECK_MSG(0, "%s", err.msg);
        } else {
            size_t model_keys = 0, bad = 0;
            for (size_t i = 0; i < b.count; i++) {
                const char *k = b.items[i].name;
                if (extra_key(k)) continue;
                model_keys++;
                if (!sdc_weights_find(&a, k)) CHECK_MSG(bad++ > 5, "%s: the writer lacks %s", names[f], k);
            }
            CHECK_MSG(a.count == model_keys, "%s: %zu tensors written, diffusers' file has %zu (+ %zu extra)", names[f],
                      a.count, model_keys, b.count - model_keys);
            for (size_t i = 0; i < a.count; i++) {
                const sdc_weight *x = &a.items[i], *y = sdc_weights_find(&b, x->name);
                if (!y) {
                    CHECK_MSG(bad++ > 5, "%s: the writer made %s, not in diffusers' file", names[f], x->name);
                    continue;
                }
                int rows = is_token_embedding(x->name) ? 1024 : (int)x->shape[0];
                int same = x->dtype == y->dtype && x->ndim == y->ndim && y->shape[0] == rows;
                for (int d = 1; same && d < x->ndim; d++) same = x->shape[d] == y->shape[d];
                same = same && y->nbytes <= x->nbytes && memcmp(x->data, y->data, y->nbytes) == 0;
                CHECK_MSG(same || bad++ > 5, "%s: %s differs from diffusers' conversion", names[f], x->name);
            }
            CHECK_EQ_INT(bad, 0);
        }
        sdc_weights_free(&a);
        sdc_weights_free(&b);
        free(path);
    }
}

/* Folder -> single file -> sdc's reader gives every tensor of the folder
 * back, bit for bit (written in the folder's dtype: fp32 for tiny-sd, fp16
 * for the others), with the folder's family. */
TEST(single_file_write_round_trip) {
    static const char *const names[] = {"tiny-sd", "tiny-sd2", "tiny-sdxl"};
    static const sdc_dtype dtypes[] = {SDC_F32, SDC_F16, SDC_F16};
    for (int f = 0; f < 3; f++) {
        sdc_family fam;
        char *path = write_folder(names[f], dtypes[f], &fam);
        if (!path) continue;
        sdc_model m, folder;
        sdc_error err;
        if (sdc_model_open(path, NULL, &m, &err) != SDC_OK) {
            CHECK_MSG(0, "%s", err.msg);
            free(path);
            continue;
        }
        REQUIRE_OK(sdc_model_open(test_data(names[f]), NULL, &folder, &err), &err);
        CHECK(m.single_file && m.family == folder.family && m.family == fam);
        CHECK_MSG(m.nignored == 0 && m.nunknown == 0, "%s: %zu ignored, %zu unknown keys", names[f], m.nignored,
                  m.nunknown);
        size_t n = 0, bad = 0;
        for (size_t i = 0; i < folder.weights.count; i++) {
            const sdc_weight *x = &folder.weights.items[i];
            if (sdc_str_ends_with(x->name, "position_ids")) continue; /* a buffer, not a parameter */
            n++;
            const sdc_weight *y = sdc_weights_find(&m.weights, x->name);
            int same = y && y->dtype == x->dtype && y->ndim == x->ndim && y->nbytes == x->nbytes &&
                       memcmp(y->data, x->data, x->nbytes) == 0;
            for (int d = 0; same && d < x->ndim; d++) same = x->shape[d] == y->shape[d];
            CHECK_MSG(same || bad++ > 5, "%s: %s %s", names[f], x->name, y ? "differs" : "is missing");
        }
        CHECK_EQ_INT(bad, 0);
        CHECK_MSG(m.weights.count == n, "%s: %zu tensors read back, the folder has %zu", names[f], m.weights.count, n);
        sdc_model_close(&folder);
        sdc_model_close(&m);
        free(path);
    }
}

TEST(single_file_write_openclip_names) {
    static const char *const cases[][2] = {
        {"text_model.embeddings.token_embedding.weight", "token_embedding.weight"},
        {"text_model.embeddings.position_embedding.weight", "positional_embedding"},
        {"text_model.final_layer_norm.bias", "ln_final.bias"},
        {"text_model.encoder.layers.11.layer_norm1.weight", "transformer.resblocks.11.ln_1.weight"},
        {"text_model.encoder.layers.0.layer_norm2.bias", "transformer.resblocks.0.ln_2.bias"},
        {"text_model.encoder.layers.3.mlp.fc1.weight", "transformer.resblocks.3.mlp.c_fc.weight"},
        {"text_model.encoder.layers.3.mlp.fc2.bias", "transformer.resblocks.3.mlp.c_proj.bias"},
        {"text_model.encoder.layers.2.self_attn.out_proj.weight", "transformer.resblocks.2.attn.out_proj.weight"},
        {"text_model.encoder.layers.2.self_attn.k_proj.weight", "transformer.resblocks.2.attn.in_proj_weight"},
        {"text_model.encoder.layers.31.self_attn.v_proj.bias", "transformer.resblocks.31.attn.in_proj_bias"},
        {"text_projection.weight", "text_projection"},
    };
    static const int qkv_want[] = {-1, -1, -1, -1, -1, -1, -1, -1, 1, 2, -1};
    char out[256];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int qkv = 9, tr = 9;
        CHECK_MSG(sdc_openclip_name(cases[i][0], out, sizeof out, &qkv, &tr) && !strcmp(out, cases[i][1]),
                  "%s -> %s", cases[i][0], out);
        CHECK_EQ_INT(qkv, qkv_want[i]);
        CHECK_EQ_INT(tr, i + 1 == sizeof cases / sizeof *cases);
    }
    int qkv, tr;
    CHECK(!sdc_openclip_name("text_model.encoder.layers.0.self_attn.q_proj.lora", out, sizeof out, &qkv, &tr));
    CHECK(!sdc_openclip_name("text_model.embeddings.position_ids", out, sizeof out, &qkv, &tr));
    CHECK(!sdc_openclip_name("text_model.encoder.layers.x.mlp.fc1.weight", out, sizeof out, &qkv, &tr));
}

/* What the writer cannot do is an error with a message, not a bad file. */
TEST(single_file_write_errors) {
    sdc_sd sd;
    sdc_error err;
    REQUIRE_OK(sdc_sd_load(test_data("tiny-sd2"), NULL, &sd, &err), &err);
    char *out = sdc_path_join(test_tmpdir(), "x.safetensors");
    REQUIRE(out);
    const sdc_params *u = &sd.unet->params, *v = &sd.vae->params, *t = &sd.te[0]->params;
    int L = sd.vae->cfg.levels;
    CHECK(sdc_single_file_write(out, SDC_FAMILY_UNKNOWN, u, v, L, t, NULL, SDC_F16, &err) == SDC_EUNSUPPORTED);
    CHECK_MSG(strstr(err.msg, "family unknown"), "%s", err.msg);
    CHECK(sdc_single_file_write(out, SDC_FAMILY_SDXL, u, v, L, t, NULL, SDC_F16, &err) == SDC_EINVAL);
    CHECK_MSG(strstr(err.msg, "both text encoders"), "%s", err.msg);
    CHECK(sdc_single_file_write(out, SDC_FAMILY_SD2, u, v, L, t, t, SDC_F16, &err) == SDC_EINVAL);
    CHECK(sdc_single_file_write(out, SDC_FAMILY_SD2, u, v, L, t, NULL, SDC_I64, &err) == SDC_EINVAL);
    CHECK_MSG(strstr(err.msg, "as I64"), "%s", err.msg);
    /* the UNet where the VAE belongs: its names have no ldm counterpart */
    CHECK(sdc_single_file_write(out, SDC_FAMILY_SD2, u, u, L, t, NULL, SDC_F16, &err) == SDC_EUNSUPPORTED);
    CHECK_MSG(strstr(err.msg, "no single-file name for"), "%s", err.msg);
    CHECK(!sdc_path_exists(out));
    free(out);
    sdc_sd_free(&sd);
}

/* sdc train --save_single_file on SD 2.x and SDXL: the single file holds the
 * fine-tuned UNet and the VAE of the folder written beside it and the
 * (frozen) text encoders of the base model, every parameter equal to the
 * fp32 original rounded to fp16 (the file's dtype). The folder is read
 * without its text parts: its tokenizer holds the base model's relative
 * symlinks (tiny-sd2's point into tiny-sd), which do not resolve there. */
TEST(single_file_write_from_train_run) {
    static const char *const models[] = {"tiny-sd2", "tiny-sdxl"};
    static const sdc_family families[] = {SDC_FAMILY_SD2, SDC_FAMILY_SDXL};
    for (int f = 0; f < 2; f++) {
        sdc_error err = {0};
        char out[512], sf[1024], model[256];
        snprintf(out, sizeof out, "%s/%s", test_tmpdir(), models[f]);
        snprintf(model, sizeof model, "%s", test_data(models[f]));
        sdc_train_args a;
        sdc_train_args_default(&a);
        a.pretrained_model_name_or_path = model;
        a.train_data_dir = "tests/data/datasets/imagefolder";
        a.resolution = 16;
        a.train_batch_size = 2;
        a.max_train_steps = 1;
        a.lr_warmup_steps = 0;
        a.seed = 3;
        a.output_dir = out;
        a.checkpointing_steps = 0;
        a.save_single_file = 1;
        REQUIRE_OK(sdc_train_run(&a, &err), &err);
        snprintf(sf, sizeof sf, "%s/model.safetensors", out);
        sdc_sd folder, base, single;
        sdc_sd_load_opts no_text = {.skip_text = 1};
        REQUIRE_OK(sdc_sd_load(out, &no_text, &folder, &err), &err);
        REQUIRE_OK(sdc_sd_load(model, NULL, &base, &err), &err);
        REQUIRE_OK(sdc_sd_load(sf, NULL, &single, &err), &err);
        CHECK_EQ_INT(single.family, families[f]);
        CHECK_EQ_INT(single.nte, base.nte);
        const sdc_params *pa[4] = {&folder.unet->params, &folder.vae->params, &base.te[0]->params,
                                   base.nte == 2 ? &base.te[1]->params : NULL};
        const sdc_params *pb[4] = {&single.unet->params, &single.vae->params, &single.te[0]->params,
                                   single.nte == 2 ? &single.te[1]->params : NULL};
        for (int k = 0; k < 4 && pa[k] && pb[k]; k++) {
            REQUIRE(pa[k]->total == pb[k]->total);
            size_t bad = 0;
            for (size_t i = 0; i < pa[k]->total; i++)
                bad += sdc_f16_to_f32(sdc_f32_to_f16(pa[k]->data[i])) != pb[k]->data[i];
            CHECK_MSG(bad == 0, "%s %s: %zu values differ from the folder's rounded to fp16", models[f],
                      pa[k]->component, bad);
        }
        /* the step changed the UNet: the file holds the trained weights, not the base's */
        size_t moved = 0;
        for (size_t i = 0; i < base.unet->params.total; i++)
            moved += base.unet->params.data[i] != folder.unet->params.data[i];
        CHECK(moved > 0);
        sdc_sd_free(&folder);
        sdc_sd_free(&base);
        sdc_sd_free(&single);
    }
}
