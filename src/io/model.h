/* Opening the models people have: a diffusers folder (model_index.json and
 * one folder per component) or a single-file checkpoint. Either way the
 * result is the same: each component's config and one weight set holding
 * every tensor by "<component>.<diffusers name>" (DESIGN.md principle 1). */
#ifndef SDC_IO_MODEL_H
#define SDC_IO_MODEL_H

#include <cjson/cJSON.h>

#include "io/family.h"
#include "io/weights.h"

#define SDC_MAX_COMPONENTS 16

typedef struct sdc_component {
    char *name;       /* "unet", "text_encoder_2", "tokenizer", "scheduler" ... */
    char *library;    /* "diffusers" / "transformers" (NULL for single files) */
    char *class_name; /* "UNet2DConditionModel", "CLIPTokenizer", ... */
    char *dir;        /* the component folder (NULL for single files) */
    cJSON *config;    /* config.json, scheduler_config.json or tokenizer_config.json;
                         synthesised from the tensors for single files; may be NULL */
    char **files;     /* weight files read for this component */
    size_t nfiles;
    int64_t params;   /* number of parameters (elements) */
    int64_t bytes;    /* bytes of those parameters as stored */
    unsigned dtypes;  /* bit set of sdc_dtype seen in its tensors */
} sdc_component;

typedef struct sdc_model {
    char *path;
    int single_file;
    sdc_family family;
    char *pipeline_class; /* model_index.json's _class_name, if any */
    sdc_component comps[SDC_MAX_COMPONENTS];
    int ncomps;
    sdc_weights weights;
    /* single files: keys not part of the model (EMA, schedule buffers) and
     * keys sdc does not know */
    char **ignored, **unknown;
    size_t nignored, nunknown;
    char **notes; /* things worth telling the user (variant picked, ...) */
    size_t nnotes;
} sdc_model;

typedef struct sdc_model_options {
    const char *variant; /* "fp16" picks diffusion_pytorch_model.fp16.safetensors; NULL: the plain files */
    int configs_only;    /* skip the weights */
} sdc_model_options;

sdc_status sdc_model_open(const char *path, const sdc_model_options *opt, sdc_model *m, sdc_error *err);
void sdc_model_close(sdc_model *m);
const sdc_component *sdc_model_component(const sdc_model *m, const char *name);
/* A weight by component and diffusers name ("unet", "conv_in.weight"). */
const sdc_weight *sdc_model_weight(const sdc_model *m, const char *component, const char *name);

/* Family from a folder's configs: SDXL by the UNet's text_time conditioning
 * (or the pipeline class); SD 2.x by an OpenCLIP text encoder (gelu) or the
 * UNet's linear projections; SD 1.x otherwise (quick_gelu CLIP). */
sdc_family sdc_family_from_configs(const char *pipeline_class, const cJSON *unet, const cJSON *text_encoder);

#endif
