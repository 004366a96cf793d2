#!/bin/sh
# Makes the demo model (data/demo-model) from nothing, with sdc's own tools
# and data sdc generates: no downloaded weights, no Python.
#
#   1. data   `sdc demo shapes`: IMAGES captioned 32x32 images of the
#             synthetic shapes world ("a large red circle on a blue
#             background"; see src/data/synth_shapes.h), and TEXTURES
#             uncaptioned ones of patterned shapes for the VAE only (SD's
#             VAE, too, is trained on far more than the diffusion data);
#             deterministic from the seeds
#   2. init   `sdc init --preset demo`: the architecture, randomly initialised
#             (CLIP text encoder of width 32, 1M-parameter UNet on 4x8x8
#             latents, AutoencoderKL with a factor of 4)
#   3. VAE    `sdc train-vae` on both sets: L1 + 1e-6 KL (latent
#             diffusion's autoencoder without LPIPS and GAN), scaling_factor
#             = 1/std of the latents
#   4. UNet   `sdc train --train_text_encoder`: UNet and text encoder trained
#             together from scratch on the captions (one in ten left empty,
#             for classifier-free guidance), Min-SNR-5 loss weighting, EMA
#             of the UNet
#   5. pack   `sdc demo pack`: configs, tokenizer and fp16 weights into OUT,
#             with the text encoder of the last checkpoint (sdc train's
#             full fine-tune folder keeps the base text encoder)
#
# Usage: sh tools/make_demo_model.sh    (environment: SDC, WORK, OUT, and the
#        step counts below; WORK holds the intermediate folders)
set -eu

SDC=${SDC:-./sdc}
WORK=${WORK:-demo/model-src}
OUT=${OUT:-data/demo-model}
IMAGES=${IMAGES:-8000}
TEXTURES=${TEXTURES:-4000}
VAE_STEPS=${VAE_STEPS:-4000}
UNET_STEPS=${UNET_STEPS:-10000}
RES=32
# checkpoints every CKPT steps; the last one (step UNET_STEPS) gives the text encoder
CKPT=${CKPT:-1000}
[ "$UNET_STEPS" -lt "$CKPT" ] && CKPT=$UNET_STEPS
if [ $((UNET_STEPS % CKPT)) -ne 0 ]; then
    echo "make_demo_model: UNET_STEPS ($UNET_STEPS) must be a multiple of CKPT ($CKPT)" >&2
    exit 1
fi

t0=$(date +%s)
say() { echo "make_demo_model: [$(($(date +%s) - t0)) s] $*"; }

rm -rf "$WORK"
mkdir -p "$WORK"

say "1/5 $IMAGES images of the shapes world, $TEXTURES of the texture world -> $WORK/images"
"$SDC" demo shapes --output_dir "$WORK/images/shapes" --count "$IMAGES" --resolution $RES --seed 1
"$SDC" demo shapes --texture --output_dir "$WORK/images/textures" --count "$TEXTURES" --resolution $RES --seed 2

say "2/5 a random model of the demo architecture -> $WORK/init"
"$SDC" init --preset demo --output "$WORK/init" --seed 0

say "3/5 the VAE, $VAE_STEPS steps -> $WORK/vae"
"$SDC" train-vae --pretrained_model_name_or_path "$WORK/init" --data_dir "$WORK/images" --output_dir "$WORK/vae" \
    --resolution $RES --steps "$VAE_STEPS" --batch 16 --lr 1e-3 --lr_warmup_steps 50 --seed 0
cp "$WORK/vae/config.json" "$WORK/vae/diffusion_pytorch_model.safetensors" "$WORK/init/vae/"

say "4/5 UNet and text encoder, $UNET_STEPS steps -> $WORK/model"
"$SDC" train --pretrained_model_name_or_path "$WORK/init" --train_data_dir "$WORK/images/shapes" --resolution $RES \
    --train_text_encoder --use_ema --random_flip --snr_gamma 5 --train_batch_size 32 --max_train_steps "$UNET_STEPS" \
    --learning_rate 1e-3 --lr_scheduler cosine --lr_warmup_steps 200 --seed 0 \
    --checkpointing_steps "$CKPT" --checkpoints_total_limit 2 --output_dir "$WORK/model" \
    --validation_prompt "a large red circle on a blue background" --num_validation_images 4

say "5/5 fp16 weights and the trained text encoder -> $OUT"
"$SDC" demo pack --model "$WORK/model" --text_encoder "$WORK/model/checkpoint-$UNET_STEPS/text_encoder.safetensors" \
    --output_dir "$OUT" --dtype fp16

say "done: $OUT ($(du -sh "$OUT" | cut -f1))"
