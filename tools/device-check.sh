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
.devbin/sdc_tests 2>&1 | tee "$OUT/tests.txt" | tail -25
