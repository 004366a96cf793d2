#!/bin/sh
# Packs the built binaries and the non-CUDA shared libraries they need into
# .devbin/ (git-ignored), to be carried to a GPU machine that lacks them.
set -eu
make -j2 cuda build/sdc_tests bench >/dev/null
rm -rf .devbin && mkdir -p .devbin/lib
cp sdc build/sdc_tests build/bench/unet_cpu build/bench/train_cpu .devbin/
for lib in libcjson.so.1 libutf8proc.so.2 libopenblas.so.0 libpng16.so.16 libgfortran.so.5; do
  cp -L "$(ldconfig -p | awk -v l=$lib '$1 == l { print $NF; exit }')" .devbin/lib/
done
