/* `sdc train` flags: one table row per diffusers training-script flag, with
 * the scripts' defaults (examples/text_to_image/train_text_to_image.py and
 * _lora.py; examples/dreambooth/train_dreambooth.py and _lora.py). Where
 * the scripts differ, the default follows the method: full and lora take
 * text_to_image's, dreambooth and dreambooth_lora take dreambooth's. */
#include "cli/train_args.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "io/json.h"

#define MAX_FLAGS 96

/* Flags sdc accepts and does not use: their values land here, not in
 * sdc_train_args. */
typedef struct {
    const char *config, *revision, *report_to, *hub_token, *hub_model_id;
    int xformers, use_8bit_adam, push_to_hub, dataloader_num_workers;
} train_extra;

/* The config file's JSON; a's strings point into it. */
static cJSON *g_config;

static void set_defaults(sdc_train_args *a, train_extra *x) {
    sdc_train_args_default(a); /* the scripts' defaults (pipeline/train_run.c) */
    memset(x, 0, sizeof *x);
    a->rank = 4; /* both LoRA scripts; used only when the method is a LoRA one */
}

static int build_table(cli_flag *t, sdc_train_args *a, train_extra *x) {
    const char *M = "model", *D = "data", *ME = "method", *S = "steps", *O = "optimiser", *ST = "the step",
               *OU = "outputs", *N = "notes (accepted for diffusers' scripts; each prints what sdc does instead)";
    cli_flag rows[] = {
        CLI_FLAG("config", CLI_STR, &x->config, "FILE", "JSON object with these flags as keys; the command line wins", NULL, "config"),
        CLI_FLAG("pretrained_model_name_or_path", CLI_STR, &a->pretrained_model_name_or_path, "PATH",
                 "diffusers model folder or single-file checkpoint (required)", NULL, M),
        CLI_FLAG("pretrained_vae_model_name_or_path", CLI_STR, &a->pretrained_vae_model_name_or_path, "PATH",
                 "an AutoencoderKL folder to use instead of the model's VAE (the SDXL script's flag)", "the model's", M),
        CLI_FLAG("variant", CLI_STR, &a->variant, "NAME", "weight variant of a diffusers folder (e.g. fp16)", NULL, M),
        CLI_FLAG("train_data_dir", CLI_STR, &a->train_data_dir, "DIR",
                 "images with captions (metadata.jsonl or caption files)", NULL, D),
        CLI_FLAG("dataset_name", CLI_STR, &a->dataset_name, "DIR", "a datasets-style folder already on disk (no download)", NULL, D),
        CLI_FLAG("image_column", CLI_STR, &a->image_column, "NAME", "the dataset's image column", "image", D),
        CLI_FLAG("caption_column", CLI_STR, &a->caption_column, "NAME", "the dataset's caption column", "text", D),
        CLI_FLAG("caption_extension", CLI_STR, &a->caption_extension, "EXT",
                 "caption files beside the images (kohya style)", ".txt, then .caption", D),
        CLI_FLAG("max_train_samples", CLI_I64, &a->max_train_samples, "N", "use the first N examples", "all", D),
        CLI_FLAG("instance_data_dir", CLI_STR, &a->instance_data_dir, "DIR", "DreamBooth: images of the subject", NULL, D),
        CLI_FLAG("instance_prompt", CLI_STR, &a->instance_prompt, "TEXT",
                 "DreamBooth: the prompt naming the subject (required with --instance_data_dir)", NULL, D),
        CLI_FLAG("resolution", CLI_INT, &a->resolution, "PX", "train at PX x PX (a multiple of 64 for SD 1.x/2.x, 32 for SDXL)", "512", D),
        CLI_FLAG("center_crop", CLI_BOOL, &a->center_crop, NULL, "crop the centre instead of a random crop", "off", D),
        CLI_FLAG("random_flip", CLI_BOOL, &a->random_flip, NULL, "flip images horizontally at random", "off", D),
        CLI_FLAG("method", CLI_STR, &a->method, "NAME", "full, lora, dreambooth or dreambooth_lora (sdc's flag)",
                 "dreambooth with --instance_data_dir, else full; the _lora one with --rank/--lora_alpha", ME),
        CLI_FLAG("rank", CLI_INT, &a->rank, "N", "LoRA rank", "4", ME),
        CLI_FLAG("lora_alpha", CLI_DOUBLE, &a->lora_alpha, "F", "LoRA alpha; the update is scaled by alpha/rank", "= rank", ME),
        CLI_FLAG("train_text_encoder", CLI_BOOL, &a->train_text_encoder, NULL, "train the text encoder too", "off", ME),
        CLI_FLAG("with_prior_preservation", CLI_BOOL, &a->with_prior_preservation, NULL,
                 "DreamBooth prior preservation: also train on class images of the subject's class", "off", ME),
        CLI_FLAG("class_data_dir", CLI_STR, &a->class_data_dir, "DIR",
                 "class images (missing ones are generated there with the model)", NULL, ME),
        CLI_FLAG("class_prompt", CLI_STR, &a->class_prompt, "TEXT", "the prompt of the class images", NULL, ME),
        CLI_FLAG("num_class_images", CLI_I64, &a->num_class_images, "N", "class images to have (generated up to this)",
                 "100", ME),
        CLI_FLAG("prior_loss_weight", CLI_DOUBLE, &a->prior_loss_weight, "F", "weight of the class images' loss", "1.0",
                 ME),
        CLI_FLAG("sample_batch_size", CLI_INT, &a->sample_batch_size, "N", "batch size when generating class images",
                 "4", ME),
        CLI_FLAG("train_batch_size", CLI_INT, &a->train_batch_size, "N", "images per device per micro-step",
                 "16; dreambooth methods 4", S),
        CLI_FLAG("num_train_epochs", CLI_I64, &a->num_train_epochs, "N", "passes over the data (unless --max_train_steps)",
                 "100; dreambooth methods 1", S),
        CLI_FLAG("mixed_precision", CLI_STR, &a->mixed_precision, "no|fp16|bf16",
                 "CUDA: bf16/fp16 weights and activations, fp32 master weights and moments (the CPU is fp32)", "no", S),
        CLI_FLAG("device", CLI_STR, &a->device, "DEV", "cpu, cuda or cuda:N (under mpirun, plain cuda gives each process the GPU of its local rank)", "cpu", S),
        CLI_FLAG("allow_tf32", CLI_BOOL, &a->allow_tf32, NULL, "CUDA, --mixed_precision no: TF32 matrix products", "off", S),
        CLI_FLAG("zero_stage", CLI_INT, &a->zero_stage, "0|1",
                 "several processes: 1 shards the optimizer's moments over them (ZeRO-1; checkpoints stay whole)", "0", S),
        CLI_FLAG("reduce_dtype", CLI_STR, &a->reduce_dtype, "fp32|bf16",
                 "several GPUs: the gradients' dtype in the all-reduce (bf16 halves the traffic, as DDP's bf16_compress_hook)",
                 "fp32", S),
        CLI_FLAG("max_train_steps", CLI_I64, &a->max_train_steps, "N", "optimiser steps in all; overrides the epochs", "from the epochs", S),
        CLI_FLAG("gradient_accumulation_steps", CLI_INT, &a->gradient_accumulation_steps, "N",
                 "micro-steps summed per optimiser step", "1", S),
        CLI_FLAG("gradient_checkpointing", CLI_BOOL, &a->gradient_checkpointing, NULL,
                 "recompute activations in backward to save memory", "off", S),
        CLI_FLAG("learning_rate", CLI_DOUBLE, &a->learning_rate, "F", "peak learning rate (after warmup)",
                 "1e-4; dreambooth 5e-6; dreambooth_lora 5e-4", O),
        CLI_FLAG("scale_lr", CLI_BOOL, &a->scale_lr, NULL, "multiply it by batch x accumulation x processes", "off", O),
        CLI_FLAG("lr_scheduler", CLI_STR, &a->lr_scheduler, "NAME",
                 "linear, cosine, cosine_with_restarts, polynomial, constant, constant_with_warmup", "constant", O),
        CLI_FLAG("lr_warmup_steps", CLI_I64, &a->lr_warmup_steps, "N", "linear warmup steps", "500", O),
        CLI_FLAG("lr_num_cycles", CLI_INT, &a->lr_num_cycles, "N", "restarts of cosine_with_restarts", "1", O),
        CLI_FLAG("lr_power", CLI_DOUBLE, &a->lr_power, "F", "power of the polynomial schedule", "1.0", O),
        CLI_FLAG("adam_beta1", CLI_DOUBLE, &a->adam_beta1, "F", "AdamW first-moment decay", "0.9", O),
        CLI_FLAG("adam_beta2", CLI_DOUBLE, &a->adam_beta2, "F", "AdamW second-moment decay", "0.999", O),
        CLI_FLAG("adam_weight_decay", CLI_DOUBLE, &a->adam_weight_decay, "F", "AdamW decoupled weight decay", "1e-2", O),
        CLI_FLAG("adam_epsilon", CLI_DOUBLE, &a->adam_epsilon, "F", "AdamW epsilon", "1e-08", O),
        CLI_FLAG("max_grad_norm", CLI_DOUBLE, &a->max_grad_norm, "F", "clip the gradients' global L2 norm to F", "1.0", O),
        CLI_FLAG("use_ema", CLI_BOOL, &a->use_ema, NULL, "keep an EMA of the UNet and save it (full fine-tune)", "off", ST),
        CLI_FLAG("snr_gamma", CLI_DOUBLE, &a->snr_gamma, "F", "Min-SNR loss weighting gamma (5.0 is usual)", "off", ST),
        CLI_FLAG("noise_offset", CLI_DOUBLE, &a->noise_offset, "F", "add F x N(0,1) per channel to the noise", "0", ST),
        CLI_FLAG("input_perturbation", CLI_DOUBLE, &a->input_perturbation, "F", "perturb the noised input by F (0.1 is usual)", "0", ST),
        CLI_FLAG("prediction_type", CLI_STR, &a->prediction_type, "NAME", "epsilon or v_prediction", "the scheduler's", ST),
        CLI_FLAG("seed", CLI_I64, &a->seed, "N", "seed for a reproducible run", "none (0 is used)", ST),
        CLI_FLAG("output_dir", CLI_STR, &a->output_dir, "DIR", "where the model, LoRA and checkpoints go",
                 "sd-model-finetuned; lora sd-model-finetuned-lora; dreambooth dreambooth-model; dreambooth_lora "
                 "lora-dreambooth-model", OU),
        CLI_FLAG("checkpointing_steps", CLI_I64, &a->checkpointing_steps, "N", "save a resumable checkpoint every N steps", "500", OU),
        CLI_FLAG("checkpoints_total_limit", CLI_INT, &a->checkpoints_total_limit, "N", "keep only the newest N checkpoints", "all", OU),
        CLI_FLAG("resume_from_checkpoint", CLI_STR, &a->resume_from_checkpoint, "PATH", "a checkpoint folder, or \"latest\"", NULL, OU),
        CLI_FLAG("overwrite", CLI_BOOL, &a->overwrite, NULL,
                 "replace a finished model already in output_dir (else sdc refuses to start)", "off", OU),
        CLI_FLAG("max_consecutive_nonfinite", CLI_INT, &a->max_consecutive_nonfinite, "N",
                 "stop after N steps in a row skipped for a non-finite loss or gradient (0: never)", "5", O),
        CLI_FLAG("validation_prompt", CLI_STR, &a->validation_prompt, "TEXT",
                 "render this prompt into output_dir/samples at the end (and as below)", NULL, OU),
        CLI_FLAG("num_validation_images", CLI_INT, &a->num_validation_images, "N", "images per validation", "4", OU),
        CLI_FLAG("validation_steps", CLI_I64, &a->validation_steps, "N", "also validate every N steps (dreambooth)",
                 "end only", OU),
        CLI_FLAG("validation_epochs", CLI_I64, &a->validation_epochs, "N", "also validate every N epochs (text_to_image)",
                 "end only", OU),
        CLI_FLAG("save_single_file", CLI_BOOL, &a->save_single_file, NULL,
                 "full fine-tune: also output_dir/model.safetensors in the original (A1111/ComfyUI) layout",
                 "off", OU),
        CLI_FLAG("lora_format", CLI_STR, &a->lora_format, "FMT",
                 "LoRA file: diffusers (pytorch_lora_weights.safetensors), kohya (for A1111/ComfyUI/kohya), or both",
                 "diffusers", OU),
        CLI_FLAG("logging_dir", CLI_STR, &a->logging_dir, "DIR", "metrics (JSONL), under output_dir", "logs", OU),
        CLI_FLAG("enable_xformers_memory_efficient_attention", CLI_BOOL, &x->xformers, NULL, "ignored: sdc's attention is always memory-efficient", NULL, N),
        CLI_FLAG("use_8bit_adam", CLI_BOOL, &x->use_8bit_adam, NULL, "ignored: AdamW moments are fp32", NULL, N),
        CLI_FLAG("report_to", CLI_STR, &x->report_to, "NAME", "ignored: metrics go to JSONL in logging_dir", NULL, N),
        CLI_FLAG("dataloader_num_workers", CLI_INT, &x->dataloader_num_workers, "N", "ignored: image decoding is threaded", NULL, N),
        CLI_FLAG("revision", CLI_STR, &x->revision, "REV", "ignored: local folders only", NULL, N),
        CLI_FLAG("push_to_hub", CLI_BOOL, &x->push_to_hub, NULL, "ignored: no network", NULL, N),
        CLI_FLAG("hub_token", CLI_STR, &x->hub_token, "TOKEN", "ignored: no network", NULL, N),
        CLI_FLAG("hub_model_id", CLI_STR, &x->hub_model_id, "NAME", "ignored: no network", NULL, N),
    };
    int n = (int)(sizeof rows / sizeof rows[0]);
    SDC_ASSERT(n <= MAX_FLAGS);
    memcpy(t, rows, sizeof rows);
    return n;
}

static int set_(const cli_flag *t, int n, const char *name) {
    const cli_flag *f = cli_find(t, n, name);
    SDC_ASSERT(f);
    return f->set;
}

/* Each key of the config object into its row, typed as the flag is. */
static int apply_config(const char *path, cli_flag *t, int n) {
    sdc_error err = {0};
    cJSON_Delete(g_config);
    g_config = NULL;
    if (sdc_json_load_object(path, &g_config, &err) != SDC_OK) {
        cli_error(&err);
        return 2;
    }
    for (const cJSON *v = g_config->child; v; v = v->next) {
        const char *k = v->string;
        cli_flag *f = (cli_flag *)cli_find(t, n, k);
        if (!f || !strcmp(f->name, "config")) {
            const cli_flag *near = cli_closest(t, n, k, "config");
            if (near) return cli_usage_error("%s: unknown key \"%s\"; did you mean \"%s\"?", path, k, near->name);
            return cli_usage_error("%s: unknown key \"%s\" (sdc train --help lists the flags)", path, k);
        }
        if (cJSON_IsNull(v)) continue;
        switch (f->kind) {
        case CLI_STR:
            if (!cJSON_IsString(v)) return cli_usage_error("%s: \"%s\" must be a string", path, k);
            *(const char **)f->dst = v->valuestring;
            break;
        case CLI_INT:
            if (!cJSON_IsNumber(v) || !sdc_json_is_int(v->valuedouble) || v->valuedouble > 2147483647.0 ||
                v->valuedouble < -2147483647.0)
                return cli_usage_error("%s: \"%s\" must be an integer", path, k);
            *(int *)f->dst = (int)v->valuedouble;
            break;
        case CLI_I64:
            if (!cJSON_IsNumber(v) || !sdc_json_is_int(v->valuedouble))
                return cli_usage_error("%s: \"%s\" must be an integer", path, k);
            *(int64_t *)f->dst = (int64_t)v->valuedouble;
            break;
        case CLI_DOUBLE:
            if (!cJSON_IsNumber(v)) return cli_usage_error("%s: \"%s\" must be a number", path, k);
            *(double *)f->dst = v->valuedouble;
            break;
        case CLI_BOOL:
            if (!cJSON_IsBool(v)) return cli_usage_error("%s: \"%s\" must be true or false", path, k);
            *(int *)f->dst = cJSON_IsTrue(v);
            break;
        case CLI_LIST: SDC_ASSERT(0 && "no list flags in sdc train"); break;
        }
        f->set = 1;
    }
    return 0;
}

/* --config FILE or --config=FILE, either spelling, before the rest. */
static const char *find_config(int argc, char **argv) {
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) return NULL; /* help wins over a bad file */
        if (!strcmp(s, "--config") && i + 1 < argc) path = argv[++i];
        else if (!strncmp(s, "--config=", 9)) path = s + 9;
    }
    return path;
}

static void add_note(char *note, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void add_note(char *note, size_t cap, const char *fmt, ...) {
    size_t len = strlen(note);
    if (len + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(note + len, cap - len, fmt, ap);
    va_end(ap);
}

static int is_one_of(const char *s, const char *const *names) {
    for (; *names; names++)
        if (!strcmp(s, *names)) return 1;
    return 0;
}

/* Method from the flags, then the method's defaults where nothing was given. */
static int resolve_method(sdc_train_args *a, const cli_flag *t, int n) {
    static const char *const methods[] = {"full", "lora", "dreambooth", "dreambooth_lora", NULL};
    int lora_flags = set_(t, n, "rank") || set_(t, n, "lora_alpha");
    if (!a->method) a->method = a->instance_data_dir ? (lora_flags ? "dreambooth_lora" : "dreambooth") : (lora_flags ? "lora" : "full");
    if (!is_one_of(a->method, methods))
        return cli_usage_error("--method must be full, lora, dreambooth or dreambooth_lora, got \"%s\"", a->method);
    int dreambooth = !strncmp(a->method, "dreambooth", 10), lora = strstr(a->method, "lora") != NULL;
    if (!lora && lora_flags) return cli_usage_error("--rank and --lora_alpha apply to LoRA; --method is %s", a->method);
    if (dreambooth) { /* train_dreambooth(_lora).py */
        if (!set_(t, n, "train_batch_size")) a->train_batch_size = 4;
        if (!set_(t, n, "num_train_epochs")) a->num_train_epochs = 1;
        if (!set_(t, n, "learning_rate")) a->learning_rate = lora ? 5e-4 : 5e-6;
        if (!set_(t, n, "output_dir")) a->output_dir = lora ? "lora-dreambooth-model" : "dreambooth-model";
    } else if (lora && !set_(t, n, "output_dir")) { /* train_text_to_image_lora.py */
        a->output_dir = "sd-model-finetuned-lora";
    }
    return 0;
}

static int validate(const sdc_train_args *a, const train_extra *x, const cli_flag *t, int n) {
    static const char *const scheds[] = {"linear", "cosine", "cosine_with_restarts", "polynomial",
                                         "constant", "constant_with_warmup", NULL};
    static const char *const preds[] = {"epsilon", "v_prediction", NULL};
    static const char *const precisions[] = {"no", "fp16", "bf16", NULL};
    /* diffusers only warns about class flags without prior preservation;
     * sdc refuses them, since they would silently do nothing */
    if (!a->with_prior_preservation && (set_(t, n, "class_data_dir") || set_(t, n, "class_prompt")))
        return cli_usage_error("--class_data_dir/--class_prompt do nothing without --with_prior_preservation");
    if (a->with_prior_preservation && (!a->class_data_dir || !a->class_prompt))
        return cli_usage_error("--with_prior_preservation needs --class_data_dir and --class_prompt");
    if (a->with_prior_preservation && !a->instance_data_dir)
        return cli_usage_error("--with_prior_preservation is DreamBooth's: give --instance_data_dir and --instance_prompt");
    if (a->with_prior_preservation && (a->num_class_images < 1 || a->sample_batch_size < 1 || a->prior_loss_weight < 0))
        return cli_usage_error("--num_class_images and --sample_batch_size must be positive, --prior_loss_weight ≥ 0");
    if (!a->pretrained_model_name_or_path)
        return cli_usage_error("--pretrained_model_name_or_path is required (a diffusers folder or a checkpoint file)");
    int sources = !!a->train_data_dir + !!a->dataset_name + !!a->instance_data_dir;
    if (sources == 0) return cli_usage_error("no training data: give --train_data_dir, --dataset_name or --instance_data_dir");
    if (sources > 1)
        return cli_usage_error("give one data source, not %s%s%s", a->train_data_dir ? "--train_data_dir " : "",
                               a->dataset_name ? "--dataset_name " : "", a->instance_data_dir ? "--instance_data_dir" : "");
    int dreambooth = !strncmp(a->method, "dreambooth", 10), lora = strstr(a->method, "lora") != NULL;
    if (dreambooth && !a->instance_data_dir)
        return cli_usage_error("--method %s trains on --instance_data_dir (with --instance_prompt)", a->method);
    if (!dreambooth && a->instance_data_dir)
        return cli_usage_error("--instance_data_dir is DreamBooth data; use --method %s", lora ? "dreambooth_lora" : "dreambooth");
    if (a->instance_data_dir && !a->instance_prompt)
        return cli_usage_error("--instance_data_dir needs --instance_prompt (e.g. \"a photo of sks dog\")");
    if (a->instance_prompt && !a->instance_data_dir) return cli_usage_error("--instance_prompt goes with --instance_data_dir");
    if (lora && a->use_ema) return cli_usage_error("--use_ema applies to full fine-tuning, not %s", a->method);
    /* ranges */
    if (a->resolution <= 0 || a->resolution % 8) return cli_usage_error("--resolution must be a positive multiple of 8, got %d", a->resolution);
    if (a->train_batch_size < 1) return cli_usage_error("--train_batch_size must be at least 1");
    if (a->num_train_epochs < 1) return cli_usage_error("--num_train_epochs must be at least 1");
    if (a->max_train_steps < 0) return cli_usage_error("--max_train_steps must be 0 or more");
    if (a->max_train_samples < 0) return cli_usage_error("--max_train_samples must be 0 or more");
    if (a->gradient_accumulation_steps < 1) return cli_usage_error("--gradient_accumulation_steps must be at least 1");
    if (a->zero_stage < 0 || a->zero_stage > 1) return cli_usage_error("--zero_stage must be 0 or 1");
    if (a->reduce_dtype && strcmp(a->reduce_dtype, "fp32") && strcmp(a->reduce_dtype, "bf16"))
        return cli_usage_error("--reduce_dtype must be fp32 or bf16");
    if (!(a->learning_rate > 0)) return cli_usage_error("--learning_rate must be positive, got %g", a->learning_rate);
    if (!is_one_of(a->lr_scheduler, scheds))
        return cli_usage_error("--lr_scheduler must be linear, cosine, cosine_with_restarts, polynomial, constant or "
                               "constant_with_warmup, got \"%s\"", a->lr_scheduler);
    if (a->lr_warmup_steps < 0) return cli_usage_error("--lr_warmup_steps must be 0 or more");
    if (a->lr_num_cycles < 1) return cli_usage_error("--lr_num_cycles must be at least 1");
    if (!(a->lr_power > 0)) return cli_usage_error("--lr_power must be positive");
    if (!(a->adam_beta1 >= 0 && a->adam_beta1 < 1)) return cli_usage_error("--adam_beta1 must be in [0, 1), got %g", a->adam_beta1);
    if (!(a->adam_beta2 >= 0 && a->adam_beta2 < 1)) return cli_usage_error("--adam_beta2 must be in [0, 1), got %g", a->adam_beta2);
    if (!(a->adam_weight_decay >= 0)) return cli_usage_error("--adam_weight_decay must be 0 or more");
    if (!(a->adam_epsilon > 0)) return cli_usage_error("--adam_epsilon must be positive");
    if (!(a->max_grad_norm > 0)) return cli_usage_error("--max_grad_norm must be positive");
    if (a->rank < 1) return cli_usage_error("--rank must be at least 1, got %d", a->rank);
    if (!(a->lora_alpha >= 0)) return cli_usage_error("--lora_alpha must be 0 (= rank) or positive");
    if (!(a->snr_gamma >= 0)) return cli_usage_error("--snr_gamma must be 0 (off) or positive");
    if (!(a->noise_offset >= 0)) return cli_usage_error("--noise_offset must be 0 or more");
    if (!(a->input_perturbation >= 0)) return cli_usage_error("--input_perturbation must be 0 or more");
    if (a->prediction_type && !is_one_of(a->prediction_type, preds))
        return cli_usage_error("--prediction_type must be epsilon or v_prediction, got \"%s\"", a->prediction_type);
    if (a->checkpointing_steps < 1) return cli_usage_error("--checkpointing_steps must be at least 1");
    if (a->max_consecutive_nonfinite < 0) return cli_usage_error("--max_consecutive_nonfinite must be 0 (never stop) or more");
    if (a->checkpoints_total_limit < 0) return cli_usage_error("--checkpoints_total_limit must be 0 (all) or more");
    if (a->num_validation_images < 0) return cli_usage_error("--num_validation_images must be 0 or more");
    if (a->validation_steps < 0 || a->validation_epochs < 0)
        return cli_usage_error("--validation_steps and --validation_epochs must be 0 or more");
    if (a->lora_format && strcmp(a->lora_format, "diffusers") && strcmp(a->lora_format, "kohya") &&
        strcmp(a->lora_format, "both"))
        return cli_usage_error("--lora_format %s: expected diffusers, kohya or both", a->lora_format);
    if (a->mixed_precision && !is_one_of(a->mixed_precision, precisions))
        return cli_usage_error("--mixed_precision must be no, fp16 or bf16, got \"%s\"", a->mixed_precision);
    if (a->device && strcmp(a->device, "cpu") && strncmp(a->device, "cuda", 4))
        return cli_usage_error("--device must be cpu, cuda or cuda:N, got \"%s\"", a->device);
    if (x->dataloader_num_workers < 0) return cli_usage_error("--dataloader_num_workers must be 0 or more");
    return 0;
}

static void write_notes(const sdc_train_args *a, const train_extra *x, const cli_flag *t, int n, char *note,
                        size_t cap) {
    if (x->xformers)
        add_note(note, cap, "--enable_xformers_memory_efficient_attention: sdc's attention is always memory-efficient\n");
    const int cpu = !a->device || !strcmp(a->device, "cpu");
    if (cpu && a->allow_tf32) add_note(note, cap, "--allow_tf32: the CPU computes in full fp32\n");
    if (x->use_8bit_adam) add_note(note, cap, "--use_8bit_adam: sdc's AdamW keeps its moments in fp32 buffers\n");
    if (cpu && a->mixed_precision && strcmp(a->mixed_precision, "no"))
        add_note(note, cap, "--mixed_precision %s: the CPU backend trains in fp32 (it applies with --device cuda)\n",
                 a->mixed_precision);
    if (x->report_to) add_note(note, cap, "--report_to %s: metrics go to a JSONL file in logging_dir\n", x->report_to);
    if (set_(t, n, "dataloader_num_workers")) add_note(note, cap, "--dataloader_num_workers: sdc's image decoding is threaded\n");
    if (x->revision) add_note(note, cap, "--revision: sdc reads local folders only; the revision is ignored\n");
    if (x->push_to_hub || x->hub_token || x->hub_model_id)
        add_note(note, cap, "--push_to_hub/--hub_token/--hub_model_id: sdc does not use the network; outputs stay in output_dir\n");
}

int train_parse_args(int argc, char **argv, sdc_train_args *a, char *note, size_t cap) {
    static const char synopsis[] =
        "--pretrained_model_name_or_path PATH (--train_data_dir DIR | --dataset_name DIR | --instance_data_dir DIR "
        "--instance_prompt TEXT) [options]";
    train_extra x;
    cli_flag t[MAX_FLAGS];
    if (cap) note[0] = 0;
    set_defaults(a, &x);
    int n = build_table(t, a, &x);
    const char *config = find_config(argc, argv);
    int rc = config ? apply_config(config, t, n) : 0;
    if (!rc) rc = cli_parse("train", synopsis, t, n, argc, argv);
    if (!rc) rc = resolve_method(a, t, n);
    if (!rc) rc = validate(a, &x, t, n);
    if (!rc && cap) write_notes(a, &x, t, n, note, cap);
    return rc;
}
