/* A whole training run, as diffusers' training scripts do it: model, data,
 * method (full fine-tune, LoRA, DreamBooth, text encoder), the loop with
 * accumulation, checkpoints and resume, logs, and the outputs other tools
 * load. The fields are the scripts' flags with their names and defaults
 * (sdc_train_args_default); `sdc train` fills them from the command line. */
#ifndef SDC_PIPELINE_TRAIN_RUN_H
#define SDC_PIPELINE_TRAIN_RUN_H

#include <stdint.h>

#include "core/error.h"

typedef struct sdc_train_args {
    /* where: "cpu", "cuda", "cuda:N"; precision "no" | "fp16" | "bf16" (GPU only) */
    const char *device, *mixed_precision;
    int allow_tf32;
    int zero_stage; /* several processes: 1 shards the AdamW moments over them (ZeRO-1) */
    const char *reduce_dtype; /* several GPUs: "fp32" or "bf16" gradients in the all-reduce */
    /* model */
    const char *pretrained_model_name_or_path, *pretrained_vae_model_name_or_path, *variant;
    /* data */
    const char *train_data_dir, *dataset_name, *image_column, *caption_column, *caption_extension;
    int64_t max_train_samples; /* 0: all */
    const char *instance_data_dir, *instance_prompt;
    /* DreamBooth prior preservation: class images (generated with the model
     * up to num_class_images when fewer exist), loss = instance MSE +
     * prior_loss_weight · class MSE */
    int with_prior_preservation;
    const char *class_data_dir, *class_prompt;
    int64_t num_class_images;
    double prior_loss_weight;
    int sample_batch_size;
    int resolution, center_crop, random_flip;
    /* method: "full", "lora", "dreambooth", "dreambooth_lora"; NULL: from the flags */
    const char *method;
    int rank;          /* LoRA rank (0: the method's default, 4) */
    double lora_alpha; /* 0: = rank, as diffusers */
    int train_text_encoder;
    /* steps */
    int train_batch_size;
    int64_t max_train_steps; /* 0: from num_train_epochs */
    int64_t num_train_epochs;
    int gradient_accumulation_steps, gradient_checkpointing;
    /* optimiser and schedule */
    double learning_rate;
    int scale_lr;
    const char *lr_scheduler;
    int64_t lr_warmup_steps;
    int lr_num_cycles;
    double lr_power, adam_beta1, adam_beta2, adam_weight_decay, adam_epsilon, max_grad_norm;
    /* the step */
    int use_ema;
    double snr_gamma, noise_offset, input_perturbation;
    const char *prediction_type; /* NULL: the scheduler's */
    int64_t seed;                /* < 0: none given (0 is used, and said) */
    /* outputs */
    const char *output_dir;
    int64_t checkpointing_steps;
    int checkpoints_total_limit;
    const char *resume_from_checkpoint; /* a path or "latest" */
    int overwrite;                 /* replace a finished model already in output_dir */
    int max_consecutive_nonfinite; /* stop after N skipped (non-finite) steps in a row; 0: never */
    const char *validation_prompt;
    int num_validation_images;
    int64_t validation_steps;  /* also every N optimizer steps (0: at the end only) */
    int64_t validation_epochs; /* also after every N epochs (0: at the end only) */
    const char *lora_format;   /* LoRA outputs: "diffusers" (default), "kohya" or "both" */
    int save_single_file;      /* full fine-tune: also <output_dir>/model.safetensors in the original layout */
    const char *logging_dir;
} sdc_train_args;

void sdc_train_args_default(sdc_train_args *a);
sdc_status sdc_train_run(const sdc_train_args *a, sdc_error *err);

#endif
