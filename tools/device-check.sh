#!/bin/sh
# Runs sdc's checks on a GPU machine from binaries built elsewhere and
# carried in .devbin/ (see tools/pack-devbin.sh). cuDNN and NCCL come from
# the PyTorch wheels there when they are not installed system-wide.
set -u
NV=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH="$PWD/.devbin/lib:$NV/cudnn/lib:$NV/nccl/lib:$NV/cublas/lib:${LD_LIBRARY_PATH:-}"
cp .devbin/sdc ./sdc
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
./sdc version 2>&1 | tee "$OUT/version.txt"
OMP_WAIT_POLICY=passive .devbin/sdc_tests 2>&1 | tee "$OUT/tests.txt" | tail -25
# CPU benchmarks on the machine's cores (sdc's CPU backend; not the GPU)
if [ "${SDC_DEVICE_BENCH:-0}" = 1 ]; then
  nproc | tee "$OUT/bench.txt"
  .devbin/unet_cpu --preset sd15 --size 512 --batch 1 --iters 3 2>&1 | tee -a "$OUT/bench.txt"
  .devbin/train_cpu --preset sd15 --size 256 --batch 1 --iters 2 --lora 2>&1 | tee -a "$OUT/bench.txt"
  .devbin/train_cpu --preset sd15 --size 256 --batch 1 --iters 2 2>&1 | tee -a "$OUT/bench.txt"
fi
