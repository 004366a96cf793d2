/* Training an AutoencoderKL from images, as the original latent-diffusion
 * autoencoder (CompVis taming/ldm "LPIPSWithDiscriminator") without its
 * LPIPS and GAN terms:
 *
 *   (μ, log σ²) = encode(x)            z = μ + σ·ε, ε ~ N(0, 1)
 *   x̂ = decode(z)
 *   rec = Σ |x̂ − x| / B               (L1 per pixel; MSE with loss_mse)
 *   KL  = Σ ½(μ² + σ² − 1 − log σ²) / B
 *   loss = rec + kl_weight · KL       (sums over elements, mean over the batch;
 *                                      LDM's default kl_weight is 1e-6)
 *
 * Gradients go through sdc's op tape (backend/tape.h) in two parts, because
 * the reparameterised sample needs an element-wise product the tape has no
 * op for: the decoder is recorded on one tape with z as a leaf, run
 * backwards to get ∂loss/∂z, then the encoder's tape is seeded with
 *   ∂loss/∂μ      = ∂loss/∂z + kl_weight · μ / B
 *   ∂loss/∂log σ² = ∂loss/∂z · ½σε + kl_weight · ½(σ² − 1) / B
 * and run backwards. Both tapes accumulate into the VAE's one gradient
 * buffer; AdamW (PyTorch's) with global-norm clipping updates it.
 *
 * At the end the latents' standard deviation over (up to 512) training
 * images gives scaling_factor = 1/std (LDM's scale_by_std), written into the
 * output config.json so that the UNet sees unit-variance latents. */
#ifndef SDC_PIPELINE_VAE_TRAIN_H
#define SDC_PIPELINE_VAE_TRAIN_H

#include <stdint.h>

#include "backend/tape.h"
#include "models/vae.h"
#include "train/adamw.h"

typedef struct sdc_vae_trainer {
    sdc_vae *vae;
    double kl_weight, max_grad_norm;
    int loss_mse;
    sdc_adamw opt;
    sdc_tape enc, dec; /* the encoder's and the decoder's tapes */
    sdc_arena arena;
    sdc_ctx ctx;
    int64_t step;
} sdc_vae_trainer;

typedef struct sdc_vae_step_out {
    double loss, rec, kl; /* rec and kl as in the header: sums over elements / B */
    double grad_norm;     /* before clipping */
} sdc_vae_step_out;

/* batch, res: the largest batch of res × res images the steps will see
 * (sizes the activation arena). */
sdc_status sdc_vae_trainer_init(sdc_vae_trainer *t, sdc_vae *vae, const sdc_adamw_hparams *adam, double kl_weight,
                                int loss_mse, double max_grad_norm, int batch, int res, sdc_error *err);
void sdc_vae_trainer_free(sdc_vae_trainer *t);
/* Loss and gradients of one batch: images [B, 3, res, res] in [−1, 1], eps
 * [B, latent, res/s, res/s] the posterior's noise. Gradients are added to
 * vae->params.grad (allocated by init, zeroed by sdc_vae_trainer_update). */
sdc_status sdc_vae_trainer_grad(sdc_vae_trainer *t, const float *images, const float *eps, int B, int res,
                                sdc_vae_step_out *out, sdc_error *err);
/* Clip to max_grad_norm (≤ 0: no clipping), AdamW at lr, zero the gradients. */
void sdc_vae_trainer_update(sdc_vae_trainer *t, double lr, double *grad_norm);

/* ---- a whole run: `sdc train-vae` -------------------------------------------------------------------------- */

typedef struct sdc_vae_train_args {
    const char *data_dir;   /* images: an imagefolder (metadata.jsonl) or any folder of images */
    const char *pretrained; /* an AutoencoderKL folder (config.json, and weights if any: none = random
                             * init), or a pipeline folder with vae/ */
    const char *output_dir; /* config.json + diffusion_pytorch_model.safetensors + logs/ */
    int resolution, batch;
    int64_t steps, warmup_steps;
    double lr, kl_weight, max_grad_norm;
    int loss_mse;
    int random_flip;
    uint64_t seed;
    sdc_dtype save_dtype; /* SDC_F32 or SDC_F16 */
} sdc_vae_train_args;

void sdc_vae_train_args_default(sdc_vae_train_args *a);
sdc_status sdc_vae_train_run(const sdc_vae_train_args *a, sdc_error *err);

/* Loads the AutoencoderKL of `path` (a VAE folder or a pipeline folder's
 * vae/): *config_text gets its config.json (malloc'd). A folder without
 * weights gives a randomly initialised VAE (PyTorch's default init, seed). */
sdc_status sdc_vae_load_dir(const char *path, uint64_t seed, sdc_vae *v, char **config_text, sdc_error *err);

#endif
