#!/bin/sh
# Runs sdc's GPU checks on the GPU machine, from the bundle that
# tools/pack-devbin.sh built and packed here (.devbin/sdc-dev.tar.xz, carried
# by the device tool). cuDNN and NCCL come from the PyTorch wheels there.
#   sh tools/device-check.sh [test-filter]       (logs under $OUT)
set -u
NV=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
D=/tmp/sdc-dev
rm -rf $D && mkdir -p $D && tar -C $D -xJf .devbin/sdc-dev.tar.xz || exit 1
# NVRTC (cuDNN compiles its attention kernels with it) from the CUDA wheel,
# alone: the wheel's other libraries would shadow the toolkit's
mkdir -p /tmp/sdc-nvrtc && ln -sf $NV/cu13/lib/libnvrtc* /tmp/sdc-nvrtc/ 2>/dev/null
export LD_LIBRARY_PATH="$D/lib:$NV/cudnn/lib:$NV/nccl/lib:/tmp/sdc-nvrtc:${LD_LIBRARY_PATH:-}"
export NCCL_NVLS_ENABLE=0
cp $D/sdc ./sdc
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
./sdc version 2>&1 | tee "$OUT/version.txt"
# the CUDA op tests (CPU backend vs CUDA backend), each launch checked
SDC_CUDA_SYNC=1 OMP_WAIT_POLICY=passive $D/sdc_tests ${1:-cuda} >"$OUT/cuda-tests.txt" 2>&1
grep -v "^ok" "$OUT/cuda-tests.txt" | tail -40
# every golden of the test models through sdc check on the GPU
for m in tiny-sd tiny-sdxl tiny-sd2v; do
  for g in $(ls tests/data/$m/golden*.safetensors | grep -v golden_grads); do
    for p in fp32 bf16 $( [ $m = tiny-sdxl ] && echo fp16 ); do
      echo "== $m $(basename $g) $p"
      ./sdc check --device cuda --precision $p --model tests/data/$m --golden $g 2>&1 | tail -3
    done
  done
done 2>&1 | tee "$OUT/check.txt"
# end to end on the GPU: a tiny LoRA and a tiny full fine-tune, generate with
# the result, and the same under compute-sanitizer's memcheck
T=/tmp/sdc-e2e && rm -rf $T && mkdir -p $T
for mp in no bf16 fp16; do
  echo "== train full --mixed_precision $mp"
  ./sdc train --device cuda --mixed_precision $mp --pretrained_model_name_or_path tests/data/tiny-sd \
    --train_data_dir tests/data/datasets/imagefolder --resolution 32 --train_batch_size 2 --max_train_steps 6 \
    --checkpointing_steps 3 --use_ema --output_dir $T/full-$mp --seed 1 2>&1 | tail -3
  ./sdc train --device cuda --mixed_precision $mp --pretrained_model_name_or_path tests/data/tiny-sd \
    --train_data_dir tests/data/datasets/imagefolder --resolution 32 --train_batch_size 2 --max_train_steps 6 \
    --checkpointing_steps 3 --use_ema --output_dir $T/full-$mp --seed 1 --resume_from_checkpoint latest 2>&1 | tail -2
  echo "== train lora --mixed_precision $mp"
  ./sdc train --device cuda --mixed_precision $mp --pretrained_model_name_or_path tests/data/tiny-sd --rank 4 \
    --train_data_dir tests/data/datasets/imagefolder --resolution 32 --train_batch_size 2 --max_train_steps 4 \
    --output_dir $T/lora-$mp --seed 1 --validation_prompt "a cat" --num_validation_images 2 2>&1 | tail -3
  ./sdc generate --device cuda --precision $( [ $mp = no ] && echo fp32 || echo $mp ) --model $T/full-$mp \
    --prompt "a red circle" --steps 10 --seed 3 --output $T/gen-$mp.png 2>&1 | tail -2
done 2>&1 | tee "$OUT/e2e.txt"
if [ "${SDC_SANITIZE:-0}" = 1 ] && command -v compute-sanitizer >/dev/null; then
  compute-sanitizer --tool memcheck --leak-check no ./sdc generate --device cuda --model tests/data/tiny-sd \
    --prompt "a red circle" --steps 3 --seed 3 --output $T/san.png 2>&1 | tail -4 | tee "$OUT/sanitizer.txt"
  compute-sanitizer --tool memcheck --leak-check no ./sdc train --device cuda --mixed_precision bf16 \
    --pretrained_model_name_or_path tests/data/tiny-sd --train_data_dir tests/data/datasets/imagefolder \
    --resolution 32 --train_batch_size 2 --max_train_steps 2 --output_dir $T/san-train --seed 1 2>&1 | tail -4 | tee -a "$OUT/sanitizer.txt"
fi
