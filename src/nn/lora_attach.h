/* LoRA adapters for training: attach trainable low-rank updates to the
 * linear layers of a model whose names end in one of the targets, the way
 * PEFT's LoraConfig(target_modules=...) does, with PEFT's names
 * ("<module>.lora_A.weight", "<module>.lora_B.weight") in their own store. */
#ifndef SDC_NN_LORA_ATTACH_H
#define SDC_NN_LORA_ATTACH_H

#include "nn/linear.h"
#include "nn/params.h"

typedef struct sdc_lora_set {
    sdc_params params;         /* component e.g. "unet_lora": lora_A/lora_B tensors */
    sdc_lora_adapter *adapters;
    sdc_linear **layers;       /* the linear each adapter is attached to */
    size_t count;
    int rank;
    float alpha;
} sdc_lora_set;

typedef enum sdc_lora_init {
    SDC_LORA_INIT_PEFT,     /* PEFT's default: A ~ kaiming_uniform(a=√5) = U(±1/√in), B = 0 */
    SDC_LORA_INIT_GAUSSIAN, /* init_lora_weights="gaussian" (diffusers' LoRA scripts): A ~ N(0, (1/r)²), B = 0 */
} sdc_lora_init;

/* Finds every linear layer of `model` whose module name (a parameter
 * "<module>.weight" of a sdc_linear) ends with ".<target>" for one of the
 * targets (e.g. "to_q", "to_k", "to_v", "to_out.0"), gives it an adapter
 * of the rank with scale alpha/rank and the init (drawn by
 * sdc_params_init_random on s->params), and allocates the store. Layers
 * are found from the parameter table, so every model built from sdc_linear
 * works. Zero matches is an error naming the targets. */
sdc_status sdc_lora_attach(sdc_lora_set *s, sdc_params *model, const char *const *targets, int ntargets, int rank,
                           float alpha, sdc_lora_init init, const char *component, sdc_error *err);
/* Detaches the adapters from their layers and frees the set. */
void sdc_lora_detach(sdc_lora_set *s);

#endif
