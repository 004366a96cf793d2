#!/bin/sh
# Builds sdc and its test runner for the GPU machine (which lacks OpenBLAS,
# libpng and friends) and packs them into .devbin/sdc-dev.tar.xz (git-ignored):
# OpenBLAS linked statically, the other small libraries copied beside, the
# whole compressed (the device tool carries at most 64 MiB with the tree).
# MPI (libmpi.so.40) and NCCL (loaded at run time) come from the GPU machine.
# On the device: tools/device-check.sh unpacks it.
set -eu
B=build-dev
make -j2 BUILD=$B STATIC_BLAS=1 $B/sdc_tests $B/src/cli/main.o $B/bench/sdc_bench >/dev/null
# ./sdc from the same objects (the Makefile's `sdc` rule writes ./sdc, the host build)
LIBS=$(make -s BUILD=$B STATIC_BLAS=1 print-link 2>/dev/null | tail -1)
rm -rf .devbin/stage && mkdir -p .devbin/stage/lib
cc -o .devbin/stage/sdc $(find $B/src -name '*.o' | sort) $LIBS
cp $B/sdc_tests $B/bench/sdc_bench .devbin/stage/
strip --strip-debug .devbin/stage/sdc .devbin/stage/sdc_tests .devbin/stage/sdc_bench
for lib in libcjson.so.1 libutf8proc.so.2 libpng16.so.16 libjpeg.so.62 libwebp.so.7 libsharpyuv.so.0 libgfortran.so.5 libquadmath.so.0 libgomp.so.1; do
  p=$(ldconfig -p | awk -v l=$lib '$1 == l { print $NF; exit }')
  [ -n "$p" ] && cp -L "$p" .devbin/stage/lib/
done
# -9: a 64 MiB dictionary finds the three binaries' shared code and kernels
XZ_OPT=-9 tar -C .devbin/stage -cJf .devbin/sdc-dev.tar.xz .
rm -rf .devbin/stage
ls -la .devbin/sdc-dev.tar.xz
