/* The math of one diffusers training step around the model
 * (train_text_to_image.py and friends), on host float arrays:
 *
 *   noise     = randn_like(latents)                      (the pipeline draws it)
 *   noise    += noise_offset · randn(B, C, 1, 1)         sdc_train_noise_offset
 *   t         = randint(0, num_train_timesteps, (B,))    sdc_train_sample_timesteps
 *   noisy     = add_noise(latents, noise', t)            sdc_train_add_noise, where noise' =
 *               noise + input_perturbation · randn_like(noise) when set (sdc_train_input_perturbation)
 *   target    = noise (epsilon) or get_velocity(latents, noise, t) (v_prediction)
 *   loss      = mse(pred, target)                        sdc_train_mse_loss, optionally weighted
 *               per sample by min-SNR (sdc_train_min_snr_weights over sdc_train_compute_snr)
 *
 * Samples are [B, per] row-major (per = C·H·W). alphas_cumprod is the
 * scheduler's float32 table (sdc_sched_alphas_cumprod_f32) of n_ac entries;
 * every per-element operation is float32 in the order diffusers writes it.
 * A timestep outside [0, n_ac) is a programmer error (asserted). */
#ifndef SDC_DIFFUSION_TRAINING_H
#define SDC_DIFFUSION_TRAINING_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "diffusion/schedule.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A source of 32-bit random words (the pipeline's generator). */
typedef uint32_t (*sdc_u32_fn)(void *ctx);

/* torch.randint(0, n, (B,)): one word per timestep, t = word mod n (what
 * torch's CPU generator does for ranges below 2^32; with a generator that
 * replays torch's, e.g. sdc_torch_u32, the timesteps are torch's). */
void sdc_train_sample_timesteps(int64_t *t, int B, int num_train_timesteps, sdc_u32_fn next, void *ctx);

/* noise[b, c, :] += noise_offset · r[b, c]  (r: randn(B, C, 1, 1), hw = H·W).
 * DreamBooth's --offset_noise is noise_offset 0.1. */
void sdc_train_noise_offset(float *noise, const float *r, int B, int C, int64_t hw, double noise_offset);
/* out = noise + input_perturbation · r  (r: randn_like(noise)); out may be noise. */
void sdc_train_input_perturbation(float *out, const float *noise, const float *r, size_t n,
                                  double input_perturbation);

/* DDPMScheduler.add_noise: noisy = √ᾱ_t·x0 + √(1−ᾱ_t)·noise.  noisy may alias x0 or noise. */
void sdc_train_add_noise(float *noisy, const float *x0, const float *noise, const int64_t *t, int B, int64_t per,
                         const float *alphas_cumprod, int n_ac);
/* DDPMScheduler.get_velocity: v = √ᾱ_t·noise − √(1−ᾱ_t)·x0.  v may alias x0 or noise. */
void sdc_train_get_velocity(float *v, const float *x0, const float *noise, const int64_t *t, int B, int64_t per,
                            const float *alphas_cumprod, int n_ac);
/* The regression target for prediction type `pred`: noise (epsilon) or the
 * velocity (v_prediction); "sample" is refused as the scripts refuse it. */
sdc_status sdc_train_target(float *target, sdc_prediction pred, const float *x0, const float *noise,
                            const int64_t *t, int B, int64_t per, const float *alphas_cumprod, int n_ac,
                            sdc_error *err);

/* diffusers.training_utils.compute_snr: snr[b] = (√ᾱ_t / √(1−ᾱ_t))². */
void sdc_train_compute_snr(float *snr, const int64_t *t, int B, const float *alphas_cumprod, int n_ac);
/* Min-SNR-γ loss weights as train_text_to_image.py computes them:
 * w = min(snr, γ); epsilon: w / snr; v_prediction: w / (snr + 1); sample: w. */
void sdc_train_min_snr_weights(float *w, const float *snr, int B, double snr_gamma, sdc_prediction pred);

/* F.mse_loss(pred, target) over [B, per]: without weights (NULL) the mean
 * over every element; with weights, the per-sample mean times weights[b],
 * then the mean over the batch. Squares are float32 as torch forms them,
 * sums are double (torch's float32 cascade sum agrees to about 1e-7).
 * per_sample (may be NULL) receives each sample's unweighted mean. */
double sdc_train_mse_loss(const float *pred, const float *target, int B, int64_t per, const float *weights,
                          float *per_sample);
/* d(scale · loss)/d(pred) for the loss above: 2·w_b·scale/(B·per)·(pred − target),
 * w_b = 1 without weights. scale is e.g. 1/gradient_accumulation_steps
 * (accelerate divides the loss by it before backward). Assigns dpred. */
void sdc_train_mse_loss_backward(float *dpred, const float *pred, const float *target, int B, int64_t per,
                                 const float *weights, double scale);

#ifdef __cplusplus
}
#endif

#endif
