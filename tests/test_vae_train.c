/* VAE training (pipeline/vae_train): the recordable encoder computes what
 * the inference encoder does, the two-tape gradients (decoder, then the
 * reparameterised sample and KL into the encoder) agree with finite
 * differences, a few steps lower the loss, and `sdc train-vae` writes an
 * AutoencoderKL folder that loads back with its scaling factor. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "backend/ops.h"
#include "backend/tape.h"
#include "cli/commands.h"
#include "core/fs.h"
#include "core/rng.h"
#include "data/synth_shapes.h"
#include "io/json.h"
#include "pipeline/vae_train.h"
#include "test.h"

/* Two levels (factor 2), 8 and 16 channels, groups of 4, mid attention. */
static const char k_tiny_vae[] =
    "{\"_class_name\": \"AutoencoderKL\", \"act_fn\": \"silu\", \"block_out_channels\": [8, 16],"
    " \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\"],"
    " \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\"], \"in_channels\": 3, \"out_channels\": 3,"
    " \"latent_channels\": 4, \"layers_per_block\": 1, \"norm_num_groups\": 4, \"sample_size\": 16,"
    " \"scaling_factor\": 0.18215, \"mid_block_add_attention\": true}";

static int tiny_vae(sdc_vae *v, uint64_t seed, sdc_error *err) {
    cJSON *j = cJSON_Parse(k_tiny_vae);
    sdc_vae_config vc;
    sdc_status st = sdc_vae_config_parse(j, "tiny vae", &vc, err);
    cJSON_Delete(j);
    if (st == SDC_OK) st = sdc_vae_build(v, &vc, "vae", err);
    if (st == SDC_OK) sdc_params_init_random(&v->params, seed);
    return st == SDC_OK;
}

static void fill_normal(float *x, size_t n, uint64_t seed, float scale) {
    sdc_rng r;
    sdc_rng_init(&r, seed);
    sdc_rng_fill_normal(&r, x, n);
    for (size_t i = 0; i < n; i++) x[i] *= scale;
}

/* Training's encoder runs under a tape, where sdc_op_pad2d builds its
 * padding from recorded concatenations: the same values as the inference
 * encoder's pad2d kernel. */
TEST(vae_encode_train_matches_the_inference_encoder) {
    sdc_error err = {0};
    sdc_vae v;
    REQUIRE_MSG(tiny_vae(&v, 1, &err), "%s", err.msg);
    float img[2 * 3 * 16 * 16];
    fill_normal(img, sizeof img / sizeof *img, 2, 0.5f);
    sdc_arena arena;
    REQUIRE_OK(sdc_arena_init(&arena, 64u << 20, &err), &err);
    sdc_ctx c = SDC_CTX_CPU(&arena);
    sdc_tensor x = sdc_op_upload(&c, NULL, 4, SDC_SHAPE(2, 3, 16, 16), img), m1, l1, m2, l2;
    sdc_vae_encode(&c, &v, &x, &m1, &l1);
    sdc_tape tape;
    REQUIRE_OK(sdc_tape_init(&tape, &arena, &err), &err);
    c.tape = &tape;
    sdc_vae_encode_unclamped(&c, &v, &x, &m2, &l2);
    c.tape = NULL;
    CHECK(tape.n > 0); /* it recorded */
    float a[2 * 4 * 8 * 8], b[2 * 4 * 8 * 8], la[2 * 4 * 8 * 8], lb[2 * 4 * 8 * 8];
    sdc_op_download(&c, a, &m1);
    sdc_op_download(&c, b, &m2);
    sdc_op_download(&c, la, &l1);
    sdc_op_download(&c, lb, &l2);
    /* the same ops in the same order: the padding by concatenation adds
     * exact zeros, so the results are bit-identical */
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(la, lb, sizeof la) == 0); /* a fresh init's log-variances are far from the clamp */
    sdc_tape_free(&tape);
    sdc_arena_free(&arena);
    sdc_vae_free(&v);
}

static double loss_at(sdc_vae_trainer *t, const float *img, const float *eps) {
    sdc_vae_step_out o;
    sdc_error err;
    if (sdc_vae_trainer_grad(t, img, eps, 2, 16, &o, &err) != SDC_OK) return NAN;
    return o.loss;
}

TEST(vae_train_gradients_match_finite_differences) {
    sdc_error err = {0};
    sdc_vae v;
    REQUIRE_MSG(tiny_vae(&v, 3, &err), "%s", err.msg);
    sdc_adamw_hparams h;
    sdc_adamw_hparams_default(&h);
    sdc_vae_trainer t;
    /* MSE (smooth, unlike L1) and a large KL weight so that both paths into
     * the encoder, through z and through the KL term, carry weight */
    REQUIRE_OK(sdc_vae_trainer_init(&t, &v, &h, 0.5, 1, 0, 2, 16, &err), &err);
    float img[2 * 3 * 16 * 16], eps[2 * 4 * 8 * 8];
    fill_normal(img, sizeof img / sizeof *img, 4, 0.5f);
    fill_normal(eps, sizeof eps / sizeof *eps, 5, 1.0f);
    sdc_vae_step_out o;
    REQUIRE_OK(sdc_vae_trainer_grad(&t, img, eps, 2, 16, &o, &err), &err);
    size_t n = v.params.total;
    float *grad = malloc(n * sizeof *grad);
    REQUIRE(grad);
    memcpy(grad, v.params.grad, n * sizeof *grad);
    static const struct {
        const char *name;
        int64_t at;
    } probes[] = {
        {"encoder.conv_in.weight", 5},
        {"encoder.down_blocks.0.resnets.0.conv1.weight", 17},
        {"encoder.down_blocks.0.downsamplers.0.conv.weight", 40}, /* through the padding */
        {"encoder.mid_block.attentions.0.to_q.weight", 9},
        {"quant_conv.weight", 3},
        {"quant_conv.bias", 6}, /* a log-variance channel: the σ·ε and KL paths */
        {"post_quant_conv.weight", 2},
        {"decoder.mid_block.resnets.1.conv2.weight", 31},
        {"decoder.up_blocks.1.resnets.0.conv1.weight", 11},
        {"decoder.conv_out.bias", 1},
    };
    for (size_t k = 0; k < sizeof probes / sizeof *probes; k++) {
        sdc_param *p = sdc_params_find(&v.params, probes[k].name);
        REQUIRE_MSG(p, "no parameter %s", probes[k].name);
        size_t i = p->offset + (size_t)probes[k].at;
        float w0 = v.params.data[i];
        /* central differences with h = 1e-2: the loss is a sum of ~1500
         * fp32 terms, so smaller steps drown in rounding */
        const float hstep = 1e-2f;
        v.params.data[i] = w0 + hstep;
        double up = loss_at(&t, img, eps);
        v.params.data[i] = w0 - hstep;
        double down = loss_at(&t, img, eps);
        v.params.data[i] = w0;
        double fd = (up - down) / (2.0 * hstep), an = grad[i];
        /* 3% of the larger of the two, or 2e-3 absolute for near-zero
         * gradients: the O(h²) truncation and fp32 rounding of the loss */
        double tol = 0.03 * fmax(fabs(fd), fabs(an)) + 2e-3;
        CHECK_MSG(fabs(fd - an) <= tol, "%s[%lld]: finite difference %.6g, tape %.6g", probes[k].name,
                  (long long)probes[k].at, fd, an);
    }
    free(grad);
    sdc_vae_trainer_free(&t);
    sdc_vae_free(&v);
}

TEST(vae_train_steps_lower_the_reconstruction_loss) {
    sdc_error err = {0};
    sdc_vae v;
    REQUIRE_MSG(tiny_vae(&v, 6, &err), "%s", err.msg);
    sdc_adamw_hparams h;
    sdc_adamw_hparams_default(&h);
    h.weight_decay = 0;
    sdc_vae_trainer t;
    REQUIRE_OK(sdc_vae_trainer_init(&t, &v, &h, 1e-6, 0, 1.0, 4, 16, &err), &err);
    /* four shapes images in [−1, 1] */
    float img[4 * 3 * 16 * 16], eps[4 * 4 * 8 * 8];
    uint8_t rgb[16 * 16 * 3];
    for (int b = 0; b < 4; b++) {
        sdc_synth_scene s;
        sdc_synth_scene_base(9, (uint64_t)b, &s);
        sdc_synth_render(&s, 16, rgb);
        for (int ch = 0; ch < 3; ch++)
            for (int p = 0; p < 256; p++) img[(b * 3 + ch) * 256 + p] = rgb[p * 3 + ch] / 127.5f - 1.0f;
    }
    double first = 0, last = 0;
    for (int step = 0; step < 60; step++) {
        fill_normal(eps, sizeof eps / sizeof *eps, 100 + (uint64_t)step, 1.0f);
        sdc_vae_step_out o;
        REQUIRE_OK(sdc_vae_trainer_grad(&t, img, eps, 4, 16, &o, &err), &err);
        sdc_vae_trainer_update(&t, 3e-3, NULL);
        if (step == 0) first = o.rec;
        last = o.rec;
    }
    /* 60 Adam steps on four fixed images at lr 3e-3 must at least halve the
     * L1 error of a random init (it falls far more) */
    CHECK_MSG(last < 0.5 * first, "rec %.4g -> %.4g", first, last);
    sdc_vae_trainer_free(&t);
    sdc_vae_free(&v);
}

TEST(train_vae_command_writes_a_loadable_autoencoder) {
    sdc_error err = {0};
    char data[512], init[512], out[512], cfg[600];
    snprintf(data, sizeof data, "%s/shapes", test_tmpdir());
    snprintf(init, sizeof init, "%s/init", test_tmpdir());
    snprintf(out, sizeof out, "%s/vae", test_tmpdir());
    REQUIRE_OK(sdc_synth_write_set(data, SDC_SYNTH_BASE, 6, 16, 1, &err), &err);
    REQUIRE_OK(sdc_mkdirs(init, &err), &err);
    snprintf(cfg, sizeof cfg, "%s/config.json", init);
    REQUIRE_OK(sdc_write_file_atomic(cfg, k_tiny_vae, strlen(k_tiny_vae), &err), &err);
    char *argv[] = {"train-vae", "--pretrained_model_name_or_path", init, "--data_dir", data, "--output_dir", out,
                    "--resolution", "16", "--steps", "3", "--batch", "2", "--save_dtype", "fp16"};
    CHECK_EQ_INT(cmd_train_vae((int)(sizeof argv / sizeof *argv), argv), 0);
    sdc_vae v;
    char *text = NULL;
    REQUIRE_OK(sdc_vae_load_dir(out, 0, &v, &text, &err), &err);
    cJSON *j = NULL;
    REQUIRE_OK(sdc_json_parse(text, strlen(text), "config", &j, &err), &err);
    const cJSON *sf = cJSON_GetObjectItemCaseSensitive(j, "scaling_factor");
    /* 1/std of the latents: a number other than the input's 0.18215 */
    CHECK(cJSON_IsNumber(sf) && sf->valuedouble > 0 && fabs(sf->valuedouble - 0.18215) > 1e-6);
    CHECK_EQ_INT(v.cfg.levels, 2);
    char path[700];
    snprintf(path, sizeof path, "%s/logs/metrics.jsonl", out);
    CHECK(sdc_path_exists(path));
    cJSON_Delete(j);
    free(text);
    sdc_vae_free(&v);
    /* a missing data folder is one error, not a crash */
    char *bad[] = {"train-vae", "--pretrained_model_name_or_path", init, "--data_dir", "/nonexistent/sdc", "--output_dir",
                   out};
    cli_quiet = 1;
    CHECK(cmd_train_vae((int)(sizeof bad / sizeof *bad), bad) != 0);
    cli_quiet = 0;
}
