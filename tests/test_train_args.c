/* `sdc train` argument parsing: defaults from diffusers' scripts, both
 * spellings, --config with the command line winning, suggestions, notes and
 * the refusals, in-process (the test binary links the commands' objects;
 * cli_last_error keeps each message for the checks). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/train_args.h"
#include "test.h"

#define g_msg (cli_last_error())

/* argv for train_parse_args: "train" then the given strings */
#define ARGS(...) ((char *[]){"train", __VA_ARGS__, NULL})
#define NARGS(...) ((int)(sizeof((char *[]){"train", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(a, note, ...) (cli_quiet = 1, train_parse_args(NARGS(__VA_ARGS__), ARGS(__VA_ARGS__), a, note, sizeof note))

TEST(train_args_defaults_text_to_image) {
    sdc_train_args a;
    char note[512];
    REQUIRE(PARSE(&a, note, "--pretrained_model_name_or_path", "m", "--train_data_dir", "d") == 0);
    CHECK_STR(a.method, "full");
    CHECK_EQ_INT(a.resolution, 512);
    CHECK_EQ_INT(a.train_batch_size, 16);
    CHECK_EQ_INT(a.num_train_epochs, 100);
    CHECK_EQ_INT(a.max_train_steps, 0);
    CHECK_EQ_INT(a.gradient_accumulation_steps, 1);
    CHECK(a.learning_rate == 1e-4);
    CHECK_STR(a.lr_scheduler, "constant");
    CHECK_EQ_INT(a.lr_warmup_steps, 500);
    CHECK(a.adam_beta1 == 0.9 && a.adam_beta2 == 0.999 && a.adam_weight_decay == 1e-2 && a.adam_epsilon == 1e-8);
    CHECK(a.max_grad_norm == 1.0);
    CHECK_EQ_INT(a.checkpointing_steps, 500);
    CHECK_STR(a.image_column, "image");
    CHECK_STR(a.caption_column, "text");
    CHECK_EQ_INT(a.rank, 4);
    CHECK_EQ_INT(a.num_validation_images, 4);
    CHECK_STR(a.output_dir, "sd-model-finetuned");
    CHECK_STR(a.logging_dir, "logs");
    CHECK_EQ_INT(a.seed, -1);
    CHECK_STR(note, "");
}

TEST(train_args_defaults_dreambooth) {
    sdc_train_args a;
    char note[512];
    REQUIRE(PARSE(&a, note, "--pretrained_model_name_or_path", "m", "--instance_data_dir", "d", "--instance_prompt",
                  "a photo of sks dog") == 0);
    CHECK_STR(a.method, "dreambooth");
    CHECK_EQ_INT(a.train_batch_size, 4);
    CHECK_EQ_INT(a.num_train_epochs, 1);
    CHECK(a.learning_rate == 5e-6);
    CHECK_STR(a.output_dir, "dreambooth-model");
    /* --rank picks the LoRA variant and its defaults; a given value still wins */
    REQUIRE(PARSE(&a, note, "--pretrained_model_name_or_path", "m", "--instance_data_dir", "d", "--instance_prompt", "p",
                  "--rank", "8", "--learning_rate", "1e-3") == 0);
    CHECK_STR(a.method, "dreambooth_lora");
    CHECK_EQ_INT(a.rank, 8);
    CHECK(a.learning_rate == 1e-3);
    CHECK_STR(a.output_dir, "lora-dreambooth-model");
    REQUIRE(PARSE(&a, note, "--pretrained_model_name_or_path", "m", "--train_data_dir", "d", "--method", "lora") == 0);
    CHECK_STR(a.output_dir, "sd-model-finetuned-lora");
    CHECK_EQ_INT(a.train_batch_size, 16);
}

TEST(train_args_kebab_and_snake) {
    sdc_train_args a;
    char note[512];
    REQUIRE(PARSE(&a, note, "--pretrained-model-name-or-path", "m", "--train_data_dir=d", "--learning-rate", "2e-5",
                  "--train_batch_size=3", "--gradient-checkpointing", "--random_flip", "--no-random-flip",
                  "--max-train-steps", "1000", "--lr_scheduler", "cosine", "--seed", "42") == 0);
    CHECK_STR(a.pretrained_model_name_or_path, "m");
    CHECK_STR(a.train_data_dir, "d");
    CHECK(a.learning_rate == 2e-5);
    CHECK_EQ_INT(a.train_batch_size, 3);
    CHECK_EQ_INT(a.gradient_checkpointing, 1);
    CHECK_EQ_INT(a.random_flip, 0);
    CHECK_EQ_INT(a.max_train_steps, 1000);
    CHECK_STR(a.lr_scheduler, "cosine");
    CHECK_EQ_INT(a.seed, 42);
}

static const char *write_config(const char *text) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/train.json", test_tmpdir());
    FILE *f = fopen(path, "w");
    if (!f) return NULL;
    fputs(text, f);
    fclose(f);
    return path;
}

TEST(train_args_config_file) {
    sdc_train_args a;
    char note[512];
    const char *path = write_config("{\"pretrained_model_name_or_path\": \"m\", \"train_data_dir\": \"d\","
                                    " \"learning_rate\": 3e-5, \"train_batch_size\": 2, \"center_crop\": true,"
                                    " \"output-dir\": \"from-file\"}");
    REQUIRE(path);
    /* the command line wins over the file */
    REQUIRE_MSG(PARSE(&a, note, "--config", (char *)path, "--learning_rate", "7e-5") == 0, "%s", g_msg);
    CHECK(a.learning_rate == 7e-5);
    CHECK_EQ_INT(a.train_batch_size, 2);
    CHECK_EQ_INT(a.center_crop, 1);
    CHECK_STR(a.output_dir, "from-file");
    CHECK_STR(a.train_data_dir, "d");

    path = write_config("{\"pretrained_model_name_or_path\": \"m\", \"train_data_dir\": \"d\", \"learning_rat\": 1}");
    CHECK_EQ_INT(PARSE(&a, note, "--config", (char *)path), 2);
    CHECK_MSG(strstr(g_msg, "\"learning_rat\"") && strstr(g_msg, "did you mean \"learning_rate\""), "%s", g_msg);

    path = write_config("{\"pretrained_model_name_or_path\": \"m\", \"train_data_dir\": \"d\", \"resolution\": \"512\"}");
    CHECK_EQ_INT(PARSE(&a, note, "--config", (char *)path), 2);
    CHECK_MSG(strstr(g_msg, "\"resolution\" must be an integer"), "%s", g_msg);
}

TEST(train_args_unknown_flag_suggests) {
    sdc_train_args a;
    char note[512];
    CHECK_EQ_INT(PARSE(&a, note, "--pretrained_model_name_or_path", "m", "--train_data_dir", "d", "--learning_rat", "1"), 2);
    CHECK_MSG(strstr(g_msg, "did you mean --learning_rate"), "%s", g_msg);
}

TEST(train_args_notes) {
    sdc_train_args a;
    char note[512];
    REQUIRE(PARSE(&a, note, "--pretrained_model_name_or_path", "m", "--train_data_dir", "d",
                  "--enable_xformers_memory_efficient_attention", "--mixed_precision", "fp16") == 0);
    CHECK_MSG(strstr(note, "--enable_xformers_memory_efficient_attention: sdc's attention is always memory-efficient\n"), "%s",
              note);
    CHECK_MSG(strstr(note, "--mixed_precision fp16: the CPU backend trains in fp32"), "%s", note);
    CHECK_EQ_INT(PARSE(&a, note, "--pretrained_model_name_or_path", "m", "--train_data_dir", "d", "--mixed_precision", "fp8"), 2);
}

TEST(train_args_errors) {
    sdc_train_args a;
    char note[512];
    CHECK_EQ_INT(PARSE(&a, note, "--pretrained_model_name_or_path", "m", "--train_data_dir", "d", "--dataset_name", "x"), 2);
    CHECK_MSG(strstr(g_msg, "one data source"), "%s", g_msg);
    CHECK_EQ_INT(PARSE(&a, note, "--pretrained_model_name_or_path", "m"), 2);
    CHECK_MSG(strstr(g_msg, "no training data"), "%s", g_msg);
    CHECK_EQ_INT(PARSE(&a, note, "--pretrained_model_name_or_path", "m", "--instance_data_dir", "d"), 2);
    CHECK_MSG(strstr(g_msg, "needs --instance_prompt"), "%s", g_msg);
    CHECK_EQ_INT(PARSE(&a, note, "--pretrained_model_name_or_path", "m", "--instance_data_dir", "d", "--instance_prompt", "p",
                       "--with_prior_preservation"), 2);
    CHECK_MSG(strstr(g_msg, "needs --class_data_dir and --class_prompt"), "%s", g_msg);
    CHECK_EQ_INT(PARSE(&a, note, "--pretrained_model_name_or_path", "m", "--instance_data_dir", "d", "--instance_prompt", "p",
                       "--with_prior_preservation", "--class_data_dir", "c", "--class_prompt", "a dog",
                       "--num_class_images", "50", "--prior_loss_weight", "0.5"), 0);
    CHECK(a.with_prior_preservation && a.num_class_images == 50 && a.prior_loss_weight == 0.5);
    CHECK_STR(a.class_prompt, "a dog");
    CHECK_EQ_INT(PARSE(&a, note, "--pretrained_model_name_or_path", "m", "--train_data_dir", "d", "--method", "qlora"), 2);
    CHECK_EQ_INT(PARSE(&a, note, "--pretrained_model_name_or_path", "m", "--train_data_dir", "d", "--resolution", "500"), 2);
    CHECK_EQ_INT(PARSE(&a, note, "--pretrained_model_name_or_path", "m", "--train_data_dir", "d", "--adam_beta2", "1"), 2);
    CHECK_EQ_INT(PARSE(&a, note, "--train_data_dir", "d"), 2);
    CHECK_MSG(strstr(g_msg, "--pretrained_model_name_or_path is required"), "%s", g_msg);
}
