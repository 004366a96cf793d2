# Shared by bench/gpu_bench.sh and bench/gpu_scaling.sh (sourced, not run).
# The caller sets T0 (start, seconds), BUDGET (seconds for all jobs), ROWS
# (a regex of job ids to run; empty: all), PY, OUT, LOG, RES (the JSON lines
# of the results) and W (a scratch folder), then calls bench_setup.

# ---- the binaries and the environment -----------------------------------------
# The bundle tools/pack-devbin.sh packs, unpacked as tools/device-check.sh
# does (unless that already happened); BIN is sdc_bench, D the bundle's
# folder; the libraries' paths, NCCL's and the multicast switches exported;
# diffusers from the carried wheel (.whl/), appended after site-packages.
bench_setup() {
  NV=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
  D=/tmp/sdc-dev
  if [ -z "${SDC_BENCH:-}" ] && [ ! -x $D/sdc_bench ] && [ -f .devbin/sdc-dev.tar.xz ]; then
    rm -rf $D.part && mkdir -p $D.part
    if tar -C $D.part -xJf .devbin/sdc-dev.tar.xz; then rm -rf $D && mv $D.part $D; else
      echo "bench: cannot unpack .devbin/sdc-dev.tar.xz" >&2
      rm -rf $D.part
    fi
  fi
  BIN=${SDC_BENCH:-}
  for b in $D/sdc_bench .devbin/sdc_bench build-dev/bench/sdc_bench build/bench/sdc_bench; do
    [ -z "$BIN" ] && [ -x "$b" ] && BIN=$b
  done
  if [ -z "$BIN" ]; then
    echo "bench: no sdc_bench binary (looked in $D, .devbin, build-dev/bench, build/bench; set SDC_BENCH)" >&2
    exit 1
  fi
  BINDIR=$(dirname "$BIN")
  # NVRTC (cuDNN compiles its attention kernels with it) from the CUDA wheel,
  # alone: the wheel's other libraries would shadow the toolkit's
  mkdir -p /tmp/sdc-nvrtc && ln -sf $NV/cu13/lib/libnvrtc* /tmp/sdc-nvrtc/ 2>/dev/null
  export LD_LIBRARY_PATH="$D/lib:$BINDIR/lib:$NV/cudnn/lib:$NV/nccl/lib:/tmp/sdc-nvrtc:${LD_LIBRARY_PATH:-}"
  export SDC_NCCL_LIB=${SDC_NCCL_LIB:-$NV/nccl/lib/libnccl.so.2}
  # never NVLink multicast on these shared hosts
  export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
  export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
  if ! $PY -c "import diffusers" 2>/dev/null; then
    if ls .whl/diffusers-*.whl >/dev/null 2>&1; then
      $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/diffusers-*.whl \
        >>"$LOG" 2>&1 || echo "bench: installing .whl/diffusers failed (see $LOG)" >&2
      export SDC_BENCH_SITE=/tmp/site
    else
      echo "bench: diffusers is not installed and .whl/ has no wheel: the PyTorch rows will fail" >&2
    fi
  fi
}

want() { [ -z "$ROWS" ] || echo "$1" | grep -Eq "$ROWS"; }

# fail ID TAG MESSAGE: a failure record
fail() {
  $PY -c 'import json,sys; print(json.dumps({"row": sys.argv[1], "tag": sys.argv[2], "failed": sys.argv[3][:300]}))' \
    "$1" "$2" "$3" >>"$RES"
  echo "   $1 $2: failed: $3" >&2
}

# job ID TAG LIMIT CMD...: one measurement under min(LIMIT, budget left)
# seconds. Returns 0 done, 1 failed, 2 timed out or skipped.
job() {
  id=$1 tag=$2 lim=$3
  shift 3
  want "$id" || return 0
  left=$((BUDGET - ($(date +%s) - T0)))
  if [ $left -lt 20 ]; then
    fail "$id" "$tag" "skipped: the ${BUDGET}s budget is spent"
    return 2
  fi
  [ "$lim" -gt $left ] && lim=$left
  echo "== $id $tag (limit ${lim}s): $*" >>"$LOG"
  t1=$(date +%s)
  timeout -k 10 "$lim" "$@" >"$W/out" 2>"$W/err"
  rc=$?
  dt=$(($(date +%s) - t1))
  cat "$W/err" "$W/out" >>"$LOG"
  line=$(grep '^{' "$W/out" | tail -1)
  if [ $rc -eq 0 ] && [ -n "$line" ]; then
    printf '%s\n' "$line" | sed "s/^{/{\"row\":\"$id\",\"tag\":\"$tag\",\"wall_s\":$dt,/" >>"$RES"
    echo "   $id $tag: ok (${dt}s)" >&2
    return 0
  fi
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    fail "$id" "$tag" "timed out after ${lim}s"
    return 2
  fi
  msg=$(grep -v '^[[:space:]]*$' "$W/err" | tail -1)
  fail "$id" "$tag" "exit $rc: ${msg:-no output}"
  return 1
}

