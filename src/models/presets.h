/* The model presets of `sdc init`: the architecture of each public Stable
 * Diffusion release as the config files its diffusers folder holds, with
 * every key diffusers 0.42 / transformers 5 write (tools/make_presets.py
 * prints them):
 *   sd15  runwayml/stable-diffusion-v1-5: PNDM, CLIP ViT-L/14 text encoder
 *   sd21  stabilityai/stable-diffusion-2-1: DDIM v_prediction, OpenCLIP-H (23
 *         layers), linear projections, heads [5,10,20,20], upcast attention
 *   sdxl  stabilityai/stable-diffusion-xl-base-1.0: Euler, CLIP-L +
 *         OpenCLIP-bigG with projection, VAE scaling 0.13025
 *   tiny  tests/data/tiny-sd's SD1-style model (block_out_channels [32,64],
 *         CLIP hidden 32), for tests */
#ifndef SDC_MODELS_PRESETS_H
#define SDC_MODELS_PRESETS_H

#include <cjson/cJSON.h>

#include "core/error.h"

typedef enum sdc_preset_kind {
    SDC_PRESET_UNET,           /* UNet2DConditionModel */
    SDC_PRESET_VAE,            /* AutoencoderKL */
    SDC_PRESET_CLIP_TEXT,      /* CLIPTextModel */
    SDC_PRESET_CLIP_TEXT_PROJ, /* CLIPTextModelWithProjection */
} sdc_preset_kind;

/* A component with weights. */
typedef struct sdc_preset_model {
    const char *component; /* folder: "unet", "vae", "text_encoder", "text_encoder_2" */
    sdc_preset_kind kind;
    const char *config;    /* its config.json; text encoders' "dtype" reads "@DTYPE@" */
} sdc_preset_model;

#define SDC_PRESET_MAX_MODELS 4

typedef struct sdc_preset {
    const char *name, *description;
    const char *model_index; /* model_index.json */
    const char *scheduler;   /* scheduler/scheduler_config.json */
    int nmodels;
    sdc_preset_model models[SDC_PRESET_MAX_MODELS];
    /* pad token of tokenizer/ and tokenizer_2/ (NULL: none): "!" for OpenCLIP */
    const char *pad[2];
} sdc_preset;

/* NULL when there is no preset of that name. */
const sdc_preset *sdc_preset_find(const char *name);
/* "sd15|sd21|sdxl|tiny|demo" */
const char *sdc_preset_names(void);

/* A JSON file of a preset folder: path relative to the folder, final text. */
typedef struct sdc_preset_file {
    char *path;
    char *text;
} sdc_preset_file;

/* Every config file of the preset (model_index.json, the scheduler's, each
 * model's config.json, each tokenizer's tokenizer_config.json and
 * special_tokens_map.json), with torch_dtype ("float32", "float16",
 * "bfloat16") in the text encoders' "dtype". */
sdc_status sdc_preset_files(const sdc_preset *p, const char *torch_dtype, sdc_preset_file **out, int *n,
                            sdc_error *err);
void sdc_preset_files_free(sdc_preset_file *files, int n);

/* m's config.json, with torch_dtype filled in, parsed. */
sdc_status sdc_preset_model_config(const sdc_preset_model *m, const char *torch_dtype, cJSON **out, sdc_error *err);

#endif
