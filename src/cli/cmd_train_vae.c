/* sdc train-vae: trains an AutoencoderKL on a folder of images (L1 + small
 * KL, the latent-diffusion autoencoder without LPIPS and GAN; see
 * pipeline/vae_train.h) and writes a diffusers AutoencoderKL folder. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "pipeline/vae_train.h"

int cmd_train_vae(int argc, char **argv) {
    sdc_vae_train_args a;
    sdc_vae_train_args_default(&a);
    const char *loss = "l1", *dtype = "fp32";
    int64_t seed = 0;
    int rflip = a.random_flip;
    cli_flag flags[] = {
        CLI_FLAG("pretrained_model_name_or_path", CLI_STR, &a.pretrained, "PATH",
                 "the VAE to start from: an AutoencoderKL folder (config.json; without weights: random init) or a "
                 "model folder's vae/ (required)", NULL, "model"),
        CLI_FLAG("data_dir", CLI_STR, &a.data_dir, "DIR", "training images (imagefolder or any folder of images; required)",
                 NULL, "data"),
        CLI_FLAG("resolution", CLI_INT, &a.resolution, "PX", "train at PX x PX (a multiple of the VAE's factor)", "32", "data"),
        CLI_FLAG("random_flip", CLI_BOOL, &rflip, NULL, "flip images horizontally at random", "on", "data"),
        CLI_FLAG("steps", CLI_I64, &a.steps, "N", "optimiser steps", "1000", "training"),
        CLI_FLAG("batch", CLI_INT, &a.batch, "N", "images per step", "16", "training"),
        CLI_FLAG("lr", CLI_DOUBLE, &a.lr, "F", "peak learning rate (Adam; linear warmup, then cosine to 0)", "1e-3", "training"),
        CLI_FLAG("lr_warmup_steps", CLI_I64, &a.warmup_steps, "N", "linear warmup steps", "50", "training"),
        CLI_FLAG("kl_weight", CLI_DOUBLE, &a.kl_weight, "F",
                 "weight of the KL term (both terms summed over elements, averaged over the batch, as LDM)", "1e-6",
                 "training"),
        CLI_FLAG("loss", CLI_STR, &loss, "l1|mse", "reconstruction loss", "l1", "training"),
        CLI_FLAG("max_grad_norm", CLI_DOUBLE, &a.max_grad_norm, "F", "clip the gradients' global L2 norm (0: off)", "1.0",
                 "training"),
        CLI_FLAG("seed", CLI_I64, &seed, "N", "seed (data order, flips, posterior noise, a random init)", "0", "training"),
        CLI_FLAG("output_dir", CLI_STR, &a.output_dir, "DIR",
                 "where config.json, diffusion_pytorch_model.safetensors and logs/ go (required)", NULL, "output"),
        CLI_FLAG("save_dtype", CLI_STR, &dtype, "fp32|fp16", "dtype of the saved weights", "fp32", "output"),
    };
    int nf = (int)(sizeof flags / sizeof *flags);
    int rc = cli_parse("train-vae", "--pretrained_model_name_or_path PATH --data_dir DIR --output_dir DIR [options]",
                       flags, nf, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (!a.pretrained || !a.data_dir || !a.output_dir)
        return cli_usage_error("train-vae needs --pretrained_model_name_or_path, --data_dir and --output_dir");
    if (strcmp(loss, "l1") && strcmp(loss, "mse")) return cli_usage_error("--loss must be l1 or mse, not \"%s\"", loss);
    if (strcmp(dtype, "fp32") && strcmp(dtype, "fp16"))
        return cli_usage_error("--save_dtype must be fp32 or fp16, not \"%s\"", dtype);
    if (a.resolution < 8 || a.resolution % 8) return cli_usage_error("--resolution must be a positive multiple of 8");
    if (a.steps < 1 || a.batch < 1 || a.batch > 1024) return cli_usage_error("--steps and --batch (≤ 1024) must be positive");
    if (!(a.lr > 0)) return cli_usage_error("--lr must be positive");
    if (!(a.kl_weight >= 0) || !(a.max_grad_norm >= 0) || a.warmup_steps < 0 || seed < 0)
        return cli_usage_error("--kl_weight, --max_grad_norm, --lr_warmup_steps and --seed must be 0 or more");
    a.loss_mse = !strcmp(loss, "mse");
    a.save_dtype = !strcmp(dtype, "fp16") ? SDC_F16 : SDC_F32;
    a.seed = (uint64_t)seed;
    a.random_flip = rflip;
    sdc_error err = {0};
    if (sdc_vae_train_run(&a, &err) != SDC_OK) return cli_error(&err);
    return 0;
}
