#!/bin/sh
# Runs sdc's GPU checks on the GPU machine, from the bundle that
# tools/pack-devbin.sh built and packed here (.devbin/sdc-dev.tar.xz, carried
# by the device tool). cuDNN and NCCL come from the PyTorch wheels there.
#   sh tools/device-check.sh [test-filter]       (logs under $OUT)
set -u
NV=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
D=/tmp/sdc-dev
rm -rf $D && mkdir -p $D && tar -C $D -xJf .devbin/sdc-dev.tar.xz || exit 1
export LD_LIBRARY_PATH="$D/lib:$NV/cudnn/lib:$NV/nccl/lib:${LD_LIBRARY_PATH:-}"
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
  for g in tests/data/$m/golden*.safetensors; do
    for p in fp32 bf16; do
      echo "== $m $(basename $g) $p"
      ./sdc check --device cuda --precision $p --model tests/data/$m --golden $g 2>&1 | tail -3
    done
  done
done 2>&1 | tee "$OUT/check.txt"
