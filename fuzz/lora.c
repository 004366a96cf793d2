/* LoRA files (sdc_lora_open: safetensors or zip checkpoints; key parsing for
 * the diffusers, PEFT and kohya formats; alpha from keys or the PEFT config),
 * then the kohya name resolution and the merge against a small fixed model
 * (a UNet with the block structure lora_kohya.c reads, and a CLIP text
 * encoder). Shape mismatches must come back as errors. The input is the
 * LoRA file, optionally followed by "\n@@\n" and an adapter_config.json
 * (then the file is named adapter_model.safetensors, as PEFT saves it). */
#include "fuzz_util.h"
#include "io/lora.h"
#include "nn/params.h"

#define NP 12

static sdc_params g_unet, g_te;
static sdc_tensor g_slots[2][NP];

static void declare(sdc_params *p, sdc_tensor *slot, const char *name, int nd, int64_t a, int64_t b, int64_t k) {
    int64_t shape[4] = {a, b, k, k};
    sdc_params_declare(p, slot, SDC_INIT_ZEROS, nd, shape, "%s", name);
}

static void build_model(void) {
    sdc_error err;
    if (sdc_params_init(&g_unet, "unet", &err) != SDC_OK || sdc_params_init(&g_te, "text_encoder", &err) != SDC_OK)
        abort();
    sdc_tensor *u = g_slots[0], *t = g_slots[1];
    int i = 0;
    declare(&g_unet, &u[i++], "conv_in.weight", 4, 4, 4, 3);
    declare(&g_unet, &u[i++], "down_blocks.0.resnets.0.conv1.weight", 4, 4, 4, 3);
    declare(&g_unet, &u[i++], "down_blocks.0.attentions.0.proj_in.weight", 2, 4, 4, 1);
    declare(&g_unet, &u[i++], "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight", 2, 4, 4, 1);
    declare(&g_unet, &u[i++], "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.weight", 2, 4, 4, 1);
    declare(&g_unet, &u[i++], "down_blocks.0.downsamplers.0.conv.weight", 4, 4, 4, 3);
    declare(&g_unet, &u[i++], "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight", 2, 4, 8, 1);
    declare(&g_unet, &u[i++], "mid_block.resnets.0.conv1.weight", 4, 4, 4, 3);
    declare(&g_unet, &u[i++], "up_blocks.0.resnets.0.conv1.weight", 4, 4, 8, 3);
    declare(&g_unet, &u[i++], "up_blocks.0.attentions.0.proj_out.weight", 4, 4, 4, 1);
    declare(&g_unet, &u[i++], "up_blocks.0.upsamplers.0.conv.weight", 4, 4, 4, 3);
    declare(&g_unet, &u[i++], "conv_out.weight", 4, 4, 4, 3);
    declare(&g_te, &t[0], "text_model.encoder.layers.0.self_attn.q_proj.weight", 2, 8, 8, 1);
    declare(&g_te, &t[1], "text_model.encoder.layers.0.self_attn.out_proj.weight", 2, 8, 8, 1);
    declare(&g_te, &t[2], "text_model.encoder.layers.0.mlp.fc1.weight", 2, 16, 8, 1);
    if (sdc_params_alloc(&g_unet, &err) != SDC_OK || sdc_params_alloc(&g_te, &err) != SDC_OK) {
        fprintf(stderr, "fuzz lora model: %s\n", err.msg);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    if (!g_unet.component) {
        build_model();
        mkdir(fuzz_path("peft"), 0755);
    }
    const uint8_t *part[2];
    size_t len[2];
    int k = fuzz_split(data, n, part, len, 2);
    const char *path = k == 2 ? fuzz_path("peft/adapter_model.safetensors") : fuzz_path("lora.safetensors");
    fuzz_write(path, part[0], len[0]);
    if (k == 2) fuzz_write(fuzz_path("peft/adapter_config.json"), part[1], len[1]);
    else unlink(fuzz_path("peft/adapter_config.json"));
    sdc_lora l;
    sdc_error err;
    if (sdc_lora_open(path, &l, &err) != SDC_OK) return 0;
    sdc_params *comps[2] = {&g_unet, &g_te};
    size_t skipped;
    if (sdc_lora_resolve(&l, comps, 2, &err) == SDC_OK) (void)sdc_lora_apply(&l, 0.5f, comps, 2, &skipped, &err);
    sdc_lora_free(&l);
    return 0;
}
