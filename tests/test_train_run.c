/* A whole training run on the tiny SD model and the test images: LoRA and
 * full fine-tune complete, write what other tools load, log every step,
 * checkpoint, and a resumed run ends exactly where an uninterrupted one does. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/fs.h"
#include "io/lora.h"
#include "io/safetensors.h"
#include "data/dataset.h"
#include "pipeline/golden.h"
#include "pipeline/sd_model.h"
#include "pipeline/train_checkpoint.h"
#include "pipeline/train_run.h"
#include "test.h"

static void small_run(sdc_train_args *a, const char *out) {
    sdc_train_args_default(a);
    a->pretrained_model_name_or_path = "tests/data/tiny-sd";
    a->train_data_dir = "tests/data/datasets/imagefolder";
    a->resolution = 16;
    a->train_batch_size = 2;
    a->max_train_steps = 4;
    a->lr_warmup_steps = 0;
    a->seed = 3;
    a->output_dir = out;
    a->checkpointing_steps = 2;
}

TEST(train_run_lora_writes_a_loadable_lora_and_resumes_exactly) {
    sdc_error err = {0};
    char out1[512], out2[512], path[1024];
    snprintf(out1, sizeof out1, "%s/a", test_tmpdir());
    snprintf(out2, sizeof out2, "%s/b", test_tmpdir());
    sdc_train_args a;
    small_run(&a, out1);
    a.rank = 4;
    a.checkpoints_total_limit = 1;
    REQUIRE_OK(sdc_train_run(&a, &err), &err);
    snprintf(path, sizeof path, "%s/logs/metrics.jsonl", out1);
    CHECK_EQ_INT(test_count_lines(path), 4);
    snprintf(path, sizeof path, "%s/checkpoint-4/state.json", out1);
    CHECK(sdc_path_exists(path));
    snprintf(path, sizeof path, "%s/checkpoint-2", out1);
    CHECK(!sdc_path_exists(path)); /* total limit 1 */
    snprintf(path, sizeof path, "%s/pytorch_lora_weights.safetensors", out1);
    sdc_lora l;
    REQUIRE_OK(sdc_lora_open(path, &l, &err), &err);
    CHECK_EQ_INT(l.count, 48);
    sdc_lora_free(&l);

    /* the same run stopped after step 2 and resumed from its checkpoint */
    small_run(&a, out2);
    a.rank = 4;
    a.max_train_steps = 2;
    REQUIRE_OK(sdc_train_run(&a, &err), &err);
    small_run(&a, out2);
    a.rank = 4;
    a.resume_from_checkpoint = "latest";
    REQUIRE_OK(sdc_train_run(&a, &err), &err);
    char p1[1024], p2[1024];
    snprintf(p1, sizeof p1, "%s/pytorch_lora_weights.safetensors", out1);
    snprintf(p2, sizeof p2, "%s/pytorch_lora_weights.safetensors", out2);
    char *t1, *t2;
    size_t n1, n2;
    REQUIRE_OK(sdc_read_file(p1, &t1, &n1, &err), &err);
    REQUIRE_OK(sdc_read_file(p2, &t2, &n2, &err), &err);
    CHECK(n1 == n2 && memcmp(t1, t2, n1) == 0);
    free(t1), free(t2);
}

TEST(train_run_full_writes_a_pipeline_folder) {
    sdc_error err = {0};
    char out[512], path[1024];
    snprintf(out, sizeof out, "%s/full", test_tmpdir());
    sdc_train_args a;
    small_run(&a, out);
    a.max_train_steps = 2;
    a.use_ema = 1;
    a.train_text_encoder = 1;
    a.checkpointing_steps = 0;
    REQUIRE_OK(sdc_train_run(&a, &err), &err);
    /* the trained text encoder's config keeps 1.0 a float: transformers 5
     * refuses "initializer_factor": 1 (cJSON's way of printing 1.0) */
    char *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/text_encoder/config.json", out);
    REQUIRE_OK(sdc_read_file(path, &text, &len, &err), &err);
    CHECK_MSG(strstr(text, "\"initializer_factor\": 1.0") || strstr(text, "\"initializer_factor\":\t1.0"), "%s", text);
    free(text);
    const char *files[] = {"model_index.json", "unet/diffusion_pytorch_model.safetensors", "unet/config.json",
                           "vae/config.json", "text_encoder/config.json", "tokenizer", "scheduler"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", out, files[i]);
        CHECK_MSG(sdc_path_exists(path), "%s missing", path);
    }
    /* and sdc generates with it */
    char args[2048], log[4096];
    snprintf(args, sizeof args, "generate --model %s --prompt x --steps 2 --output %s/x.png", out, out);
    CHECK_MSG(run_sdc(args, log, sizeof log) == 0, "%s", log);
}

TEST(train_run_user_errors) {
    sdc_error err = {0};
    sdc_train_args a;
    small_run(&a, test_tmpdir());
    a.train_data_dir = NULL;
    CHECK(sdc_train_run(&a, &err) == SDC_EINVAL);
    CHECK(strstr(err.msg, "--train_data_dir") != NULL);
    small_run(&a, test_tmpdir());
    a.resolution = 18;
    CHECK(sdc_train_run(&a, &err) == SDC_EINVAL);
    CHECK(strstr(err.msg, "--resolution") != NULL);
    small_run(&a, test_tmpdir());
    a.resume_from_checkpoint = "latest";
    CHECK(sdc_train_run(&a, &err) == SDC_ENOTFOUND);
}

/* DreamBooth LoRA with prior preservation: the missing class images are
 * generated with the model into the class folder, then each step trains on
 * instance and class images together. */
TEST(train_run_dreambooth_prior_preservation) {
    sdc_error err = {0};
    char out[512], cls[512], cmd[2048], path[1024];
    snprintf(out, sizeof out, "%s/db", test_tmpdir());
    snprintf(cls, sizeof cls, "%s/class", test_tmpdir());
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp tests/data/datasets/dreambooth/class/c0.png '%s/'", cls, cls);
    REQUIRE(system(cmd) == 0);
    sdc_train_args a;
    small_run(&a, out);
    a.train_data_dir = NULL;
    a.instance_data_dir = "tests/data/datasets/dreambooth/instance";
    a.instance_prompt = "a photo of sks dog";
    a.with_prior_preservation = 1;
    a.class_data_dir = cls;
    a.class_prompt = "a photo of a dog";
    a.num_class_images = 3;
    a.sample_batch_size = 2;
    a.prior_loss_weight = 1.0;
    a.rank = 4;
    a.max_train_steps = 2;
    a.checkpointing_steps = 0;
    REQUIRE_OK(sdc_train_run(&a, &err), &err);
    int64_t missing = -1;
    REQUIRE_OK(sdc_dataset_class_images_missing(cls, 3, &missing, &err), &err);
    CHECK_EQ_INT(missing, 0);
    snprintf(path, sizeof path, "%s/class-000001-sdc.png", cls);
    CHECK(sdc_path_exists(path));
    snprintf(path, sizeof path, "%s/pytorch_lora_weights.safetensors", out);
    CHECK(sdc_path_exists(path));
    snprintf(path, sizeof path, "%s/logs/metrics.jsonl", out);
    CHECK_EQ_INT(test_count_lines(path), 2);
}

/* SDXL: LoRA on the UNet and both text encoders (pooled embeddings and
 * time_ids from the crops), then sdc generate loads the result. */
TEST(train_run_sdxl_lora_with_text_encoders) {
    sdc_error err = {0};
    char out[512], path[1024], args[2048], log[4096];
    snprintf(out, sizeof out, "%s/xl", test_tmpdir());
    sdc_train_args a;
    small_run(&a, out);
    a.pretrained_model_name_or_path = "tests/data/tiny-sdxl";
    a.rank = 4;
    a.train_text_encoder = 1;
    a.max_train_steps = 2;
    a.checkpointing_steps = 0;
    REQUIRE_OK(sdc_train_run(&a, &err), &err);
    snprintf(path, sizeof path, "%s/pytorch_lora_weights.safetensors", out);
    sdc_lora l;
    REQUIRE_OK(sdc_lora_open(path, &l, &err), &err);
    int te1 = 0, te2 = 0;
    for (size_t i = 0; i < l.count; i++) {
        te1 += !strcmp(l.deltas[i].component, "text_encoder");
        te2 += !strcmp(l.deltas[i].component, "text_encoder_2");
    }
    CHECK(te1 > 0 && te2 > 0);
    sdc_lora_free(&l);
    snprintf(args, sizeof args, "generate --model tests/data/tiny-sdxl --lora %s --prompt x --steps 2 --output %s/x.png",
             path, out);
    CHECK_MSG(run_sdc(args, log, sizeof log) == 0, "%s", log);
    CHECK_MSG(strstr(log, "warning") == NULL, "%s", log);
}

/* Both LoRA formats, and validation images during the run. */
TEST(train_run_kohya_output_and_validation_steps) {
    sdc_error err = {0};
    char out[512], path[1024];
    snprintf(out, sizeof out, "%s/k", test_tmpdir());
    sdc_train_args a;
    small_run(&a, out);
    a.rank = 4;
    a.max_train_steps = 2;
    a.checkpointing_steps = 0;
    a.lora_format = "both";
    a.validation_prompt = "a red cube";
    a.num_validation_images = 2;
    a.validation_steps = 1;
    REQUIRE_OK(sdc_train_run(&a, &err), &err);
    snprintf(path, sizeof path, "%s/lora_kohya.safetensors", out);
    sdc_lora l;
    REQUIRE_OK(sdc_lora_open(path, &l, &err), &err);
    CHECK_STR(l.format, "kohya");
    sdc_lora_free(&l);
    snprintf(path, sizeof path, "%s/pytorch_lora_weights.safetensors", out);
    CHECK(sdc_path_exists(path));
    snprintf(path, sizeof path, "%s/logs/loss.png", out);
    CHECK(sdc_path_exists(path));
    for (int s = 1; s <= 2; s++) {
        snprintf(path, sizeof path, "%s/samples/step-%d-0.png", out, s);
        CHECK_MSG(sdc_path_exists(path), "%s missing", path);
        snprintf(path, sizeof path, "%s/samples/step-%d-grid.png", out, s);
        CHECK_MSG(sdc_path_exists(path), "%s missing", path);
    }
}

/* SIGINT during a run: the step finishes, a checkpoint is saved, sdc exits
 * non-zero saying how to resume, and resuming continues from it. */
TEST(train_run_interrupt_saves_a_checkpoint) {
    char out[512], cmd[4096], path[1024], log[4096];
    snprintf(out, sizeof out, "%s/int", test_tmpdir());
    snprintf(cmd, sizeof cmd,
             "OMP_WAIT_POLICY=passive ./sdc train --pretrained_model_name_or_path tests/data/tiny-sd "
             "--train_data_dir tests/data/datasets/imagefolder --resolution 16 --train_batch_size 1 --rank 4 "
             "--max_train_steps 1000000 --checkpointing_steps 100000 --output_dir %s > %s.log 2>&1 & pid=$!; "
             "for i in $(seq 600); do [ -s %s/logs/metrics.jsonl ] && break; sleep 0.05; done; "
             "kill -INT $pid; wait $pid; exit $?",
             out, out, out);
    int rc = system(cmd);
    CHECK_MSG(WIFEXITED(rc) && WEXITSTATUS(rc) == 1, "exit status %d", rc);
    snprintf(path, sizeof path, "%s.log", out);
    char *text = NULL;
    size_t n = 0;
    sdc_error err = {0};
    REQUIRE_OK(sdc_read_file(path, &text, &n, &err), &err);
    CHECK_MSG(strstr(text, "interrupted at step") && strstr(text, "--resume_from_checkpoint latest"), "%s", text);
    free(text);
    char latest[1024];
    REQUIRE_OK(sdc_train_checkpoint_latest(out, latest, sizeof latest, &err), &err);
    snprintf(cmd, sizeof cmd,
             "train --pretrained_model_name_or_path tests/data/tiny-sd --train_data_dir tests/data/datasets/imagefolder "
             "--resolution 16 --train_batch_size 1 --rank 4 --max_train_steps 1000000 --checkpointing_steps 100000 "
             "--output_dir %s --resume_from_checkpoint latest --max_train_steps %lld",
             out, atoll(strrchr(latest, '-') + 1) + 1);
    CHECK_MSG(run_sdc(cmd, log, sizeof log) == 0, "%s", log);
    snprintf(path, sizeof path, "%s/pytorch_lora_weights.safetensors", out);
    CHECK(sdc_path_exists(path));
}

/* A broken image is skipped with a warning naming it; a set that is mostly
 * broken stops with a clear error. */
TEST(train_run_skips_broken_images) {
    sdc_error err = {0};
    char dir[512], out[512], cmd[4096];
    snprintf(dir, sizeof dir, "%s/imgs", test_tmpdir());
    snprintf(out, sizeof out, "%s/o", test_tmpdir());
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s' && cp tests/data/datasets/dreambooth/instance/i0.jpg tests/data/datasets/dreambooth/instance/i1.png "
             "tests/data/datasets/dreambooth/class/c0.png '%s/' && cp tests/data/datasets/corrupt/broken.png '%s/b.png'",
             dir, dir, dir);
    REQUIRE(system(cmd) == 0);
    sdc_train_args a;
    small_run(&a, out);
    a.train_data_dir = NULL;
    a.instance_data_dir = dir;
    a.instance_prompt = "sks";
    a.rank = 4;
    a.train_batch_size = 1;
    a.max_train_steps = 4; /* one epoch of 4 items: b.png comes up once */
    a.checkpointing_steps = 0;
    REQUIRE_OK(sdc_train_run(&a, &err), &err);
    /* mostly broken: stop */
    snprintf(cmd, sizeof cmd, "rm '%s'/*.jpg '%s'/i1.png && cp '%s/b.png' '%s/b2.png'", dir, dir, dir, dir);
    REQUIRE(system(cmd) == 0);
    snprintf(out, sizeof out, "%s/o2", test_tmpdir());
    small_run(&a, out);
    a.train_data_dir = NULL;
    a.instance_data_dir = dir;
    a.instance_prompt = "sks";
    a.rank = 4;
    a.train_batch_size = 1;
    a.max_train_steps = 3;
    a.checkpointing_steps = 0;
    CHECK(sdc_train_run(&a, &err) == SDC_EFORMAT);
    CHECK_MSG(strstr(err.msg, "could not be decoded"), "%s", err.msg);
}

/* Relative L2 difference of the same-named fp32 tensors of two
 * safetensors files (every tensor of a must be in b); -1 if unreadable. */
static double file_rel_diff(const char *p1, const char *p2) {
    sdc_error err = {0};
    sdc_weights a, b;
    sdc_weights_init(&a);
    sdc_weights_init(&b);
    double num = 0, den = 0;
    int ok = sdc_safetensors_read(p1, &a, &err) == SDC_OK && sdc_safetensors_read(p2, &b, &err) == SDC_OK && a.count > 0;
    for (size_t i = 0; ok && i < a.count; i++) {
        const sdc_weight *x = &a.items[i], *y = sdc_weights_find(&b, x->name);
        if (!y || y->nbytes != x->nbytes || x->dtype != SDC_F32 || y->dtype != SDC_F32) {
            ok = 0;
            break;
        }
        const float *u = x->data, *v = y->data;
        for (size_t j = 0; j < x->nbytes / 4; j++) {
            num += ((double)u[j] - v[j]) * ((double)u[j] - v[j]);
            den += (double)u[j] * u[j];
        }
    }
    sdc_weights_free(&a);
    sdc_weights_free(&b);
    return ok ? sqrt(num / (den > 0 ? den : 1)) : -1;
}

/* Data parallel over MPI: 2 processes × batch 1 end with the same weights
 * as 1 process × batch 2. Adam's ε is set large here: with the default 1e-8
 * Adam turns rounding-level gradient differences on near-zero gradients
 * into ±lr steps, which hides whether the averaging is right. */
TEST(train_run_mpi_two_ranks_equal_one_rank_double_batch) {
    char log[8192], cmd[4096], out1[512], out2[512];
    const char *why = mpi_unavailable();
    if (why) SKIP(why);
    snprintf(out1, sizeof out1, "%s/one", test_tmpdir());
    snprintf(out2, sizeof out2, "%s/two", test_tmpdir());
    const char *common = "--pretrained_model_name_or_path tests/data/tiny-sd --train_data_dir tests/data/datasets/imagefolder "
                         "--resolution 16 --max_train_steps 3 --rank 4 --learning_rate 1e-2 --checkpointing_steps 100 "
                         "--seed 5 --lr_warmup_steps 0 --adam_epsilon 1e-2";
    snprintf(cmd, sizeof cmd, "train %s --train_batch_size 2 --output_dir %s", common, out1);
    REQUIRE_MSG(run_sdc(cmd, log, sizeof log) == 0, "%s", log);
    snprintf(cmd, sizeof cmd,
             MPIRUN2 "./sdc train %s --train_batch_size 1 "
             "--output_dir %s > %s.log 2>&1",
             common, out2, out2);
    REQUIRE_MSG(system(cmd) == 0, "mpirun failed (see %s.log)", out2);
    char p1[1024], p2[1024];
    snprintf(p1, sizeof p1, "%s/pytorch_lora_weights.safetensors", out1);
    snprintf(p2, sizeof p2, "%s/pytorch_lora_weights.safetensors", out2);
    double rel = file_rel_diff(p1, p2);
    /* measured 1e-8: the same sums in another order */
    CHECK_MSG(rel >= 0 && rel <= 1e-6, "relative difference %.3g", rel);
}

/* An image folder's one image column is "image" (datasets' imagefolder);
 * the scripts refuse any other --image_column, and so does sdc, by name. */
TEST(train_run_rejects_an_image_column_the_folder_lacks) {
    char cmd[2048], log[4096];
    snprintf(cmd, sizeof cmd,
             "train --pretrained_model_name_or_path tests/data/tiny-sd --train_data_dir tests/data/datasets/imagefolder "
             "--image_column img --max_train_steps 1 --output_dir %s/ic",
             test_tmpdir());
    CHECK(run_sdc(cmd, log, sizeof log) != 0);
    CHECK_MSG(strstr(log, "--image_column img") && strstr(log, "\"image\""), "%s", log);
}

/* --scale_lr as the scripts: lr × batch × accumulation × processes; on 2
 * processes with batch 1 and accumulation 2, 1e-4 becomes 4e-4 (the
 * logged lr, constant schedule). A run that left the processes out logs 2e-4. */
TEST(train_run_scale_lr_counts_the_processes) {
    char cmd[4096], out[512], path[1100];
    const char *why = mpi_unavailable();
    if (why) SKIP(why);
    snprintf(out, sizeof out, "%s/scaled", test_tmpdir());
    snprintf(cmd, sizeof cmd,
             MPIRUN2 "./sdc train "
             "--pretrained_model_name_or_path tests/data/tiny-sd --train_data_dir tests/data/datasets/imagefolder "
             "--resolution 16 --max_train_steps 1 --rank 4 --learning_rate 1e-4 --scale_lr --lr_scheduler constant "
             "--lr_warmup_steps 0 --train_batch_size 1 --gradient_accumulation_steps 2 --output_dir %s > %s.log 2>&1",
             out, out);
    REQUIRE_MSG(system(cmd) == 0, "mpirun failed (see %s.log)", out);
    snprintf(path, sizeof path, "%s/logs/metrics.jsonl", out);
    char *text = NULL;
    size_t n = 0;
    sdc_error err = {0};
    REQUIRE_OK(sdc_read_file(path, &text, &n, &err), &err);
    const char *lr = strstr(text, "\"lr\": ");
    CHECK_MSG(lr && fabs(strtod(lr + 6, NULL) - 4e-4) < 1e-12, "%s", text);
    free(text);
}

/* ZeRO-1 over MPI on the CPU, full fine-tune with EMA, clipping and two
 * accumulation micro-steps: a run checkpointed by one process at step 2 and
 * resumed by two processes with sharded moments (batch 1 each: the same
 * global batch) ends where one process running straight through does: the
 * final UNet, the EMA, and checkpoint-4's moments (gathered from the shards)
 * all within 1e-6. Large Adam eps as in the test above. */
TEST(train_run_zero1_two_ranks_resume_equals_one_rank) {
    char log[8192], cmd[4096], a[512], b[512], p1[1024], p2[1024];
    const char *why = mpi_unavailable();
    if (why) SKIP(why);
    snprintf(a, sizeof a, "%s/zero-one", test_tmpdir());
    snprintf(b, sizeof b, "%s/zero-two", test_tmpdir());
    const char *common = "--pretrained_model_name_or_path tests/data/tiny-sd --train_data_dir tests/data/datasets/imagefolder "
                         "--method full --use_ema --resolution 16 --gradient_accumulation_steps 2 --max_grad_norm 0.05 "
                         "--learning_rate 1e-3 --lr_scheduler constant --lr_warmup_steps 0 --adam_epsilon 1e-2 --seed 5 "
                         "--checkpointing_steps 2";
    snprintf(cmd, sizeof cmd, "train %s --train_batch_size 2 --max_train_steps 4 --output_dir %s", common, a);
    REQUIRE_MSG(run_sdc(cmd, log, sizeof log) == 0, "%s", log);
    snprintf(cmd, sizeof cmd, "train %s --train_batch_size 2 --max_train_steps 2 --output_dir %s", common, b);
    REQUIRE_MSG(run_sdc(cmd, log, sizeof log) == 0, "%s", log);
    snprintf(cmd, sizeof cmd,
             MPIRUN2 "./sdc train %s --train_batch_size 1 "
             "--max_train_steps 4 --zero_stage 1 --resume_from_checkpoint latest --output_dir %s > %s.log 2>&1",
             common, b, b);
    REQUIRE_MSG(system(cmd) == 0, "mpirun failed (see %s.log)", b);
    const char *files[] = {"unet/diffusion_pytorch_model.safetensors", "checkpoint-4/unet.optimizer.safetensors",
                           "checkpoint-4/ema.safetensors", "checkpoint-4/unet.safetensors"};
    for (int i = 0; i < 4; i++) {
        snprintf(p1, sizeof p1, "%s/%s", a, files[i]);
        snprintf(p2, sizeof p2, "%s/%s", b, files[i]);
        double rel = file_rel_diff(p1, p2);
        /* weights: 1e-9 measured. The moments carry the gradients' own
         * rounding (the batch mean taken as a mean of two ranks' means):
         * 1.3e-6 measured, the same as plain data parallel gives; a part
         * given to the wrong rank would differ by O(1) */
        double tol = strstr(files[i], "optimizer") ? 1e-5 : 1e-6;
        CHECK_MSG(rel >= 0 && rel <= tol, "%s: relative difference %.3g", files[i], rel);
    }
    /* the sharded run said so */
    snprintf(p2, sizeof p2, "%s.log", b);
    char *text = NULL;
    size_t n = 0;
    sdc_error err = {0};
    REQUIRE_OK(sdc_read_file(p2, &text, &n, &err), &err);
    CHECK_MSG(strstr(text, "ZeRO-1"), "%s", text);
    free(text);
}

/* Mistakes stop before training with one line naming the problem. */
TEST(train_run_stops_early_on_bad_setup) {
    sdc_error err = {0};
    sdc_train_args a;
    char dir[512], cmd[2400];
    /* an output folder that cannot be written (a file is in the way) */
    snprintf(dir, sizeof dir, "%s/file", test_tmpdir());
    FILE *f = fopen(dir, "w");
    REQUIRE(f);
    fclose(f);
    char out[600];
    snprintf(out, sizeof out, "%s/sub", dir);
    small_run(&a, out);
    CHECK(sdc_train_run(&a, &err) != SDC_OK);
    CHECK_MSG(strstr(err.msg, out) || strstr(err.msg, dir), "%s", err.msg);
    /* a model folder without its VAE */
    snprintf(dir, sizeof dir, "%s/novae", test_tmpdir());
    snprintf(cmd, sizeof cmd, "cp -r tests/data/tiny-sd '%s' && rm -r '%s/vae'", dir, dir);
    REQUIRE(system(cmd) == 0);
    small_run(&a, test_tmpdir());
    a.pretrained_model_name_or_path = dir;
    CHECK(sdc_train_run(&a, &err) != SDC_OK);
    CHECK_MSG(strstr(err.msg, "vae") || strstr(err.msg, "VAE"), "%s", err.msg);
    /* a missing caption column */
    snprintf(dir, sizeof dir, "%s/cap", test_tmpdir());
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp tests/data/datasets/imagefolder/b.png '%s/' && "
             "echo '{\"file_name\": \"b.png\", \"caption\": \"x\"}' > '%s/metadata.jsonl'", dir, dir, dir);
    REQUIRE(system(cmd) == 0);
    small_run(&a, test_tmpdir());
    a.train_data_dir = dir;
    CHECK(sdc_train_run(&a, &err) != SDC_OK);
    CHECK_MSG(strstr(err.msg, "text"), "%s", err.msg);
}

/* --pretrained_vae_model_name_or_path: a VAE folder replaces the model's,
 * and the saved pipeline carries it. */
TEST(train_run_separate_vae) {
    sdc_error err = {0};
    char vae[512], out[512], cmd[2048], path[1024];
    snprintf(vae, sizeof vae, "%s/myvae", test_tmpdir());
    snprintf(out, sizeof out, "%s/o", test_tmpdir());
    snprintf(cmd, sizeof cmd, "cp -r tests/data/tiny-sd/vae '%s'", vae);
    REQUIRE(system(cmd) == 0);
    sdc_train_args a;
    small_run(&a, out);
    a.pretrained_vae_model_name_or_path = vae;
    a.max_train_steps = 1;
    a.checkpointing_steps = 0;
    REQUIRE_OK(sdc_train_run(&a, &err), &err);
    snprintf(path, sizeof path, "%s/vae/diffusion_pytorch_model.safetensors", out);
    CHECK(sdc_path_exists(path));
    small_run(&a, test_tmpdir());
    a.pretrained_vae_model_name_or_path = "tests/data/tiny-sd/unet";
    CHECK(sdc_train_run(&a, &err) != SDC_OK);
    CHECK_MSG(strstr(err.msg, "tests/data/tiny-sd/unet"), "%s", err.msg);
}

/* --save_single_file: the fine-tuned SD 1.x model also as one original-
 * layout file, which sdc (as AUTOMATIC1111/ComfyUI would) reads back to the
 * same weights as the folder (fp16 rounding). */
TEST(train_run_save_single_file) {
    sdc_error err = {0};
    char out[512], sf[1024];
    snprintf(out, sizeof out, "%s/sf", test_tmpdir());
    sdc_train_args a;
    small_run(&a, out);
    a.max_train_steps = 1;
    a.checkpointing_steps = 0;
    a.save_single_file = 1;
    REQUIRE_OK(sdc_train_run(&a, &err), &err);
    snprintf(sf, sizeof sf, "%s/model.safetensors", out);
    sdc_sd folder, single;
    REQUIRE_OK(sdc_sd_load(out, NULL, &folder, &err), &err);
    REQUIRE_OK(sdc_sd_load(sf, NULL, &single, &err), &err);
    CHECK_EQ_INT(single.family, SDC_FAMILY_SD1);
    const sdc_params *pa[3] = {&folder.unet->params, &folder.vae->params, &folder.te[0]->params};
    const sdc_params *pb[3] = {&single.unet->params, &single.vae->params, &single.te[0]->params};
    for (int k = 0; k < 3; k++) {
        REQUIRE(pa[k]->total == pb[k]->total);
        double e = sdc_rel_err(pb[k]->data, pa[k]->data, pa[k]->total);
        /* fp16 storage: 2^-11 relative per value */
        CHECK_MSG(e < 1e-3, "%s: relative difference %.3g", pa[k]->component, e);
    }
    sdc_sd_free(&folder);
    sdc_sd_free(&single);
}
