#!/bin/sh
# Data-parallel training on the GPUs of one host, in one call of the device
# tool (from the repo root):   sh bench/gpu_scaling.sh
#
#   check  tiny-sd, 10 bf16 steps on the GPUs: N ranks × batch 2 against
#          1 rank × batch 2N (plain, ZeRO-1, bf16 reduction), and a 1-rank checkpoint
#          resumed on N ranks with ZeRO-1 against a straight run
#   sd15   SD1.5 512px full fine-tune, batch 32 per GPU, on 1, 2, ... GPUs:
#          sdc (plain; ZeRO-1 on all GPUs) and PyTorch DDP (torchrun,
#          diffusers, bf16 autocast, fused AdamW)
#   sdxl   SDXL 1024px full fine-tune, batch 4 per GPU, the same
#   fit    SDXL 1024px on all GPUs at growing batch, plain and ZeRO-1: the
#          largest batch per GPU each fits
#
# Environment: SCALING_PARTS (default "check sd15 sdxl fit"), SCALING_SD15_BATCH
# (per GPU, default 32), SCALING_VARIANTS
# (extra sdc rows on all GPUs, "NAME:VAR=VAL,VAR=VAL ...", e.g.
# "ctas8:NCCL_MAX_CTAS=8 big:SDC_DP_BUCKET_MB=100"), SCALING_ROWS (a regex of
# the row ids to run), SCALING_SKIP (rows left
# out: "sdc zero1 torch"), SCALING_GPUS
# (default 1 2 4 up to the GPUs present), SCALING_FIT (batches, default
# "6 8 10 12"), BUDGET (seconds, default 560). Every program's output goes to
# $OUT/scaling-log.txt, the JSON lines to $OUT/scaling.jsonl, the table to
# stdout and $OUT/scaling.md.
set -u
T0=$(date +%s)
BUDGET=${BUDGET:-560}
PARTS=${SCALING_PARTS:-check sd15 sdxl fit}
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/sdc-scaling-out}
mkdir -p "$OUT"
LOG=$OUT/scaling-log.txt RES=$OUT/scaling.jsonl
: >"$LOG"; : >"$RES"
W=$(mktemp -d /tmp/sdc-scaling.XXXXXX)
ROWS=${SCALING_ROWS:-}
. bench/bench_lib.sh # BIN, D, the environment, diffusers; want, job
bench_setup
NG=$(nvidia-smi -L 2>/dev/null | wc -l)
GPUS=${SCALING_GPUS:-$(for n in 1 2 4 8; do [ $n -le "$NG" ] && echo $n; done)}
MAXG=$(echo $GPUS | tr ' ' '\n' | tail -1)
echo "gpu_scaling: $NG GPUs, runs on: $GPUS" | tee -a "$LOG" >&2
MPI="mpirun --allow-run-as-root --bind-to none --oversubscribe -x LD_LIBRARY_PATH -x SDC_NCCL_LIB -x NCCL_NVLS_ENABLE -x OMP_WAIT_POLICY"
has() { echo " $PARTS " | grep -q " $1 "; }
skip() { echo " ${SCALING_SKIP:-} " | grep -q " $1 "; }

if has check; then
  echo "== check" >&2
  C="$W/chk" && mkdir -p "$C"
  $D/sdc demo shapes --output_dir $C/data --count 64 --resolution 32 --seed 1 >>"$LOG" 2>&1
  T="--device cuda --mixed_precision bf16 --pretrained_model_name_or_path tests/data/tiny-sd --train_data_dir $C/data --method full --use_ema --resolution 32 --learning_rate 1e-4 --lr_scheduler constant --lr_warmup_steps 0 --seed 3 --checkpointing_steps 5"
  N=$MAXG
  (
    $D/sdc train $T --train_batch_size $((2 * N)) --max_train_steps 10 --output_dir $C/one >$C/one.log 2>&1 &&
    $MPI -np $N $D/sdc train $T --train_batch_size 2 --max_train_steps 10 --output_dir $C/dp >$C/dp.log 2>&1 &&
    $MPI -np $N $D/sdc train $T --train_batch_size 2 --max_train_steps 10 --zero_stage 1 --output_dir $C/z1 >$C/z1.log 2>&1 &&
    $MPI -np $N $D/sdc train $T --train_batch_size 2 --max_train_steps 10 --reduce_dtype bf16 --output_dir $C/b16 >$C/b16.log 2>&1 &&
    $D/sdc train $T --train_batch_size $((2 * N)) --max_train_steps 5 --output_dir $C/res >$C/res.log 2>&1 &&
    $MPI -np $N $D/sdc train $T --train_batch_size 2 --max_train_steps 10 --zero_stage 1 --resume_from_checkpoint latest --output_dir $C/res >>$C/res.log 2>&1
  ) || echo "   check: a run failed (see the log)" >&2
  cat $C/*.log >>"$LOG"
  for r in dp z1 b16 res; do
    for f in unet/diffusion_pytorch_model.safetensors checkpoint-10/unet.optimizer.safetensors; do
      # bf16 activations: the ranks' sums round differently; 2e-2 as the CPU-vs-GPU bound
      printf '%s %s: ' "$r" "$f"
      $PY tools/st_diff.py $C/one/$f $C/$r/$f --tol 2e-2 || true
    done
  done 2>&1 | tee "$OUT/scaling-check.txt" >&2
  grep -h "data parallel" $C/*.log | head -3 >&2
fi

# train_rows PRESET SIZE BATCH STEPS: sdc and torch on each GPU count
train_rows() {
  p=$1 s=$2 b=$3 st=$4
  $D/sdc_bench config --preset $p --out $W/$p >/dev/null 2>>"$LOG"
  skip sdc || for n in $GPUS; do
    job "$p-sdc-$n" sdc 240 $MPI -np $n $D/sdc_bench train --preset $p --size $s --batch $b --steps $st --warmup 3
  done
  skip zero1 || job "$p-sdc-zero1-$MAXG" sdc 240 $MPI -np $MAXG $D/sdc_bench train --preset $p --size $s --batch $b --steps $st --warmup 3 --zero 1
  for v in ${SCALING_VARIANTS:-}; do
    xs=$(echo "${v#*:}" | tr ',' '\n' | sed 's/^/-x /' | tr '\n' ' ')
    job "$p-sdc-${v%%:*}-$MAXG" sdc 240 $MPI -np $MAXG $xs $D/sdc_bench train --preset $p --size $s --batch $b --steps $st --warmup 3
  done
  skip torch || for n in $GPUS; do
    job "$p-torch-$n" torch 300 $PY -m torch.distributed.run --standalone --nproc_per_node=$n bench/baseline.py train \
      --config $W/$p --preset $p --size $s --batch $b --steps $st --warmup 3
  done
}
has sd15 && { echo "== sd15" >&2; train_rows sd15 512 ${SCALING_SD15_BATCH:-32} 10; }
has sdxl && { echo "== sdxl" >&2; train_rows sdxl 1024 4 6; }
if has fit; then
  echo "== fit" >&2
  $D/sdc_bench config --preset sdxl --out $W/sdxl >/dev/null 2>>"$LOG"
  for z in 0 1; do
    for b in ${SCALING_FIT:-6 8 10 12}; do
      job "fit-zero$z-b$b" sdc 200 $MPI -np $MAXG $D/sdc_bench train --preset sdxl --size 1024 --batch $b --steps 2 --warmup 1 --zero $z || break
    done
  done
fi

$PY - "$RES" <<'PYEOF' | tee "$OUT/scaling.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ok = {r["row"]: r for r in rows if "failed" not in r}
def tput(r):
    return float(r.get("img_s_total") or r["img_s"])
print("| row | GPUs | img/s (all GPUs) | per GPU | scaling | exposed comm ms/step | peak GiB/GPU |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    if "failed" in r:
        print(f"| {r['row']} | | failed: {r['failed']} | | | | |")
        continue
    g = int(r.get("gpus", 1)); t = tput(r)
    base = r["row"].rsplit("-", 1)[0]
    base = base.replace("-zero1", "")
    one = ok.get(base + "-1") or ok.get(r["row"].split("-")[0] + "-" + r["row"].split("-")[1] + "-1")
    eff = f"{100 * t / (g * tput(one)):.1f}%" if one else ""
    print(f"| {r['row']} | {g} | {t:.1f} | {t / g:.1f} | {eff} | {r.get('exposed_comm_ms', '')} | {r.get('peak_gib', '')} |")
for p in ("sd15", "sdxl"):
    for n in (2, 4, 8):
        a, b = ok.get(f"{p}-sdc-{n}"), ok.get(f"{p}-torch-{n}")
        if a and b:
            print(f"\n{p} on {n} GPUs: sdc / PyTorch DDP = {tput(a) / tput(b):.2f}")
PYEOF
rm -rf "$W"
