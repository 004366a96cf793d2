/* LoRA adapters for training: attach trainable low-rank updates to the
 * linear layers of a model whose names end in one of the targets, the way
 * PEFT's LoraConfig(target_modules=...) does, with PEFT's names
 * ("<module>.lora_A.weight", "<module>.lora_B.weight") in their own store. */
#ifndef SDC_NN_LORA_ATTACH_H
#define SDC_NN_LORA_ATTACH_H

#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/params.h"

typedef struct sdc_lora_set {
    sdc_params params;         /* component e.g. "unet_lora": lora_A/lora_B tensors */
    sdc_lora_adapter *adapters;
    const sdc_lora_adapter ***fields; /* each adapter's layer `lora` field (reset by detach) */
    size_t count;
} sdc_lora_set;

typedef enum sdc_lora_init {
    SDC_LORA_INIT_PEFT,     /* PEFT's default: A ~ kaiming_uniform(a=√5) = U(±1/√in), B = 0 */
    SDC_LORA_INIT_GAUSSIAN, /* init_lora_weights="gaussian" (diffusers' LoRA scripts): A ~ N(0, (1/r)²), B = 0 */
} sdc_lora_init;

typedef struct sdc_lora_config {
    const char *const *targets; /* module-name suffixes for linear layers and 1×1 convs ("to_q", "proj_in") */
    int ntargets;
    int rank;
    float alpha;                /* scale = alpha / rank */
    const char *const *conv_targets; /* suffixes for k×k convs (kohya's conv_dim: "conv1", "conv2", "conv") */
    int nconv_targets;
    int conv_rank;
    float conv_alpha;
    sdc_lora_init init;
} sdc_lora_config;

/* diffusers' default targets, and kohya's wider set (attention, projections
 * and feed-forward; with conv_rank, the ResNet and resampler 3×3 convs). */
extern const char *const sdc_lora_targets_diffusers[4];
extern const char *const sdc_lora_targets_kohya[8];
extern const char *const sdc_lora_conv_targets_kohya[3];

/* Finds every layer of `model` whose module name (a parameter
 * "<module>.weight" of an sdc_linear or sdc_conv2d) ends with ".<target>"
 * — linear layers and 1×1 convs by `targets` with `rank`, k×k convs by
 * `conv_targets` with `conv_rank` — gives it an adapter whose tensors
 * (PEFT names "<module>.lora_A.weight" / "lora_B.weight") are declared in a
 * new store `component` with the config's init (drawn by
 * sdc_params_init_random on s->params), and allocates the store. Layers
 * are found from the parameter table, so every model built from these
 * modules works. Zero matches is an error naming the targets. */
sdc_status sdc_lora_attach(sdc_lora_set *s, sdc_params *model, const sdc_lora_config *cfg, const char *component,
                           sdc_error *err);
/* Detaches the adapters from their layers and frees the set. */
void sdc_lora_detach(sdc_lora_set *s);

#endif
