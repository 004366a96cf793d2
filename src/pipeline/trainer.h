/* One training step as diffusers' training scripts take it, on the UNet:
 *   noisy = add_noise(x0, ε, t); target = ε or v; pred = unet(noisy, t, context)
 *   loss = mse(pred, target) (min-SNR weighted with snr_gamma)
 * backward through the tape into the trained store's gradients (the whole
 * UNet, or a LoRA set), accumulated over gradient_accumulation_steps
 * micro-batches (each loss divided by their number, as accelerate does);
 * then per optimizer step: global-norm clipping, AdamW at the schedule's
 * lr, EMA. The data (latents, noise, timesteps, text conditioning) comes
 * in: the caller owns datasets and RNG, so runs are comparable with any
 * other implementation given the same inputs. */
#ifndef SDC_PIPELINE_TRAINER_H
#define SDC_PIPELINE_TRAINER_H

#include "backend/tape.h"
#include "core/dist.h"
#include "diffusion/schedule.h"
#include "models/clip_text.h"
#include "models/unet.h"
#include "train/adamw.h"
#include "train/ema.h"
#include "train/lr_schedule.h"

typedef struct sdc_trainer_opts {
    sdc_prediction prediction; /* the target: ε or v */
    double snr_gamma;          /* ≤ 0: plain MSE */
    int grad_accum;            /* micro-batches per optimizer step, ≥ 1 */
    double max_grad_norm;      /* ≤ 0: no clipping */
    sdc_adamw_hparams adam;
    sdc_lr_schedule lr;
    int use_ema;
    sdc_ema_hparams ema;
    int gradient_checkpointing; /* recompute each ResNet/transformer block in backward */
    /* data parallelism over these processes (NULL or one process: none):
     * gradients averaged in buckets of bucket_mb (≤ 0: 25) overlapped with
     * the backward pass; zero_stage 1 shards the AdamW moments (train/dp.h).
     * sdc_trainer_init is then collective. */
    const sdc_dist *dist;
    int zero_stage;
    double bucket_mb;
    int reduce_bf16; /* gradients averaged in bf16 (NCCL; train/dp.h) */
    /* Dynamic loss scaling, as torch.amp.GradScaler with its defaults (what
     * accelerate uses for fp16): the loss is multiplied by the scale before
     * backward, so small fp16 activation gradients do not flush to zero; the
     * gradients are divided by it before clipping; a step whose gradients
     * overflowed is skipped and halves the scale, and 2000 good steps in a
     * row double it. The scale is a power of two, so on values that do not
     * overflow the result is bit-identical to no scaling. */
    int loss_scaling;
    double init_loss_scale; /* ≤ 0: 65536 */
} sdc_trainer_opts;

typedef struct sdc_train_batch {
    int B;
    /* With text encoders in the step (text-encoder training): token ids
     * [B, T] per encoder; context/text_embeds are then computed, not given. */
    const int32_t *input_ids[2];
    int64_t T;
    const float *x0;       /* [B, C, h, w] latents × VAE scaling factor */
    const float *noise;    /* [B, C, h, w]: the target's ε (noise offset already applied by the caller) */
    const float *input_noise; /* --input_perturbation: the ε that noises the input (NULL: noise) */
    const float *sample_weights; /* [B] loss weight per sample (prior preservation), NULL: 1 */
    const int64_t *t;      /* [B] */
    const float *context;  /* [B, S, D] encoder_hidden_states */
    int64_t h, w, S;
    const float *text_embeds; /* SDXL: [B, P] */
    const double *time_ids;   /* SDXL: [B, 6] */
} sdc_train_batch;

#define SDC_TRAIN_MAX_STORES 4

typedef struct sdc_trainer {
    sdc_unet *unet;
    sdc_clip_text *te[2]; /* run inside the step when set */
    int nte;
    sdc_params *train[SDC_TRAIN_MAX_STORES]; /* the trained parameters and their gradients */
    int ntrain;
    sdc_trainer_opts o;
    float *alphas_cumprod;
    int n_ac;
    sdc_adamw opt[SDC_TRAIN_MAX_STORES]; /* one AdamW state per store; one global clip */
    sdc_ema ema; /* of train[0] */
    sdc_tape tape;
    sdc_ctx ctx;
    /* per-batch host buffers, grown to the largest batch seen (no
     * allocation in the step loop once the first batch has run) */
    float *noisy, *target, *pred, *snr, *w;
    double *ts;
    size_t scratch_n, scratch_b;
    struct sdc_dp *dp; /* data parallelism (sdc_trainer_enable_dp), NULL in one process */
    double loss_scale;       /* 1 without loss scaling */
    int64_t scale_good;      /* good steps since the scale last changed (GradScaler's growth tracker) */
    int micro;    /* micro-batches accumulated since the last optimizer step */
    int64_t step; /* optimizer steps taken */
} sdc_trainer;

/* base: where to compute (backend, device, activation dtype, arena); the
 * model's and trained stores' parameters must already be there
 * (sdc_params_to_device). train: the stores to optimise (the UNet's parameters, LoRA sets, text
 * encoders'), as one optimizer over all of them. te: text encoders to run
 * inside the step (nte 0: the batch gives the context). */
sdc_status sdc_trainer_init(sdc_trainer *t, sdc_unet *unet, sdc_clip_text *const *te, int nte,
                            sdc_params *const *train, int ntrain, const sdc_sched_config *sched,
                            const sdc_trainer_opts *o, const sdc_ctx *base, sdc_error *err);
void sdc_trainer_free(sdc_trainer *t);
/* Collective with data parallelism and ZeRO-1: every rank's parts of the
 * master weights, EMA and moments brought together, before a checkpoint or
 * the final save (a no-op otherwise). sdc_train_checkpoint_save then uses them. */
sdc_status sdc_trainer_gather_state(sdc_trainer *t, sdc_error *err);
/* Forward and backward of one micro-batch; *loss is its (unscaled) loss. */
sdc_status sdc_trainer_micro_step(sdc_trainer *t, const sdc_train_batch *b, double *loss, sdc_error *err);
/* After grad_accum micro-steps: clip, update, EMA, clear the gradients.
 * A non-finite gradient norm skips the update (*skipped = 1; gradients
 * cleared, the step not counted; with loss scaling the scale halves). */
sdc_status sdc_trainer_optimizer_step(sdc_trainer *t, double *grad_norm, double *lr, int *skipped, sdc_error *err);

#endif
