#!/bin/sh
# sdc against PyTorch + diffusers on one GPU, in one call (bench/README.md):
#   sh bench/gpu_bench.sh            (from the repo root, on the GPU machine)
# Every row runs sdc (bench/sdc_bench.c) and PyTorch (bench/baseline.py,
# eager; compiled where noted) on random-weight models of the same configs,
# each under its own timeout, and the whole under a time budget; the
# Markdown table goes to stdout and $OUT/bench.md, the raw JSON lines to
# $OUT/bench.jsonl, every program's stderr to $OUT/bench-log.txt.
#
# Switches (environment):
#   BENCH_QUICK=1     fewer steps and calls, no torch.compile rows (a smoke run)
#   BENCH_COMPILE=0|1 the torch.compile rows (default: 1, or 0 when quick)
#   BENCH_ROWS=REGEX  only the rows whose id matches (ids: see `row` lines below)
#   BENCH_BUDGET=S    seconds for all rows together (default 540: the tool's
#                     10-minute call less the setup); rows that would start
#                     later are reported as skipped
#   BENCH_SMOKE=1     the script's own check on a machine without a GPU: every
#                     row on the CPU with the tiny preset at 64px, one step
#   SDC_BENCH=PATH    the sdc_bench binary (default: from the dev bundle)
#   PYTHON=python3    the Python that has torch
set -u
T0=$(date +%s)
SMOKE=${BENCH_SMOKE:-0}
QUICK=${BENCH_QUICK:-$SMOKE}
COMPILE=${BENCH_COMPILE:-$([ "$QUICK" = 1 ] && echo 0 || echo 1)}
BUDGET=${BENCH_BUDGET:-540}
ROWS=${BENCH_ROWS:-}
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/sdc-bench-out}
mkdir -p "$OUT"
W=$(mktemp -d /tmp/sdc-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
RES=$W/results.jsonl ROWSF=$W/rows.tsv LOG=$OUT/bench-log.txt
: >"$RES"; : >"$ROWSF"; : >"$LOG"

# ---- the binaries, the environment, diffusers (bench/bench_lib.sh) ----------
. bench/bench_lib.sh
bench_setup

# ---- the models' configs (no weights): what both sides build from ----------
P15=sd15 PXL=sdxl S15=512 SXL=1024 DEV=
if [ "$SMOKE" = 1 ]; then
  P15=tiny PXL=tiny S15=64 SXL=64 DEV="--device cpu"
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" # tiny models on a shared CPU: threads only contend
fi
for p in $P15 $PXL; do
  "$BIN" config --preset "$p" --out "$W/$p" >/dev/null 2>>"$LOG" || echo "gpu_bench: sdc_bench config --preset $p failed" >&2
done

if [ "$SMOKE" = 1 ]; then
  TS=1 TW=1 CALLS=2 UW=1 T2I=3
elif [ "$QUICK" = 1 ]; then
  TS=3 TW=1 CALLS=5 UW=2 T2I=10
else
  TS=10 TW=3 CALLS=20 UW=5 T2I=50
fi

# the inference precision asked for (the smoke run's CPU computes in fp32 only)
prec() { if [ "$SMOKE" = 1 ]; then echo fp32; else echo "$1"; fi; }

# row ID KIND LABEL: a table row (KIND train: img/s; ms or s: time per call/image)
row() { want "$1" && printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$ROWSF"; return 0; }

# train_job ID TAG LIMIT CMD...: a training job, retried with gradient
# checkpointing when it failed (out of memory) rather than timed out
train_job() {
  job "$@"
  [ $? -eq 1 ] || return 0
  id=$1 tag=$2 lim=$3
  shift 3
  job "$id" "$tag" "$lim" "$@" --checkpointing
}

SDC="$BIN" TORCH="$PY bench/baseline.py"
C15="--config $W/$P15 --preset $P15 $DEV" CXL="--config $W/$PXL --preset $PXL $DEV"
X15="--preset $P15 $DEV" XXL="--preset $PXL $DEV"
TR="--steps $TS --warmup $TW"
UN="--calls $CALLS --warmup $UW"

row ft15_b8 train "SD1.5 full fine-tune 512px, batch 8"
row ft15_b32 train "SD1.5 full fine-tune 512px, batch 32"
row lora15_b8 train "SD1.5 LoRA r4 512px, batch 8"
row unet_fp16_b1 ms "SD1.5 UNet fp16 512px, batch 1 (ms/call)"
row unet_fp16_b2 ms "SD1.5 UNet fp16 512px, batch 2 = 1 image with CFG (ms/call)"
row unet_bf16_b1 ms "SD1.5 UNet bf16 512px, batch 1 (ms/call)"
row unet_bf16_b2 ms "SD1.5 UNet bf16 512px, batch 2 (ms/call)"
row vae512 ms "SD1.5 VAE decode 512px fp16 (ms)"
row t2i512 s "SD1.5 txt2img 512px, $T2I steps, end to end (s)"
row ftxl_b4 train "SDXL full fine-tune 1024px, batch 4"
row loraxl_b4 train "SDXL LoRA r4 1024px, batch 4"

echo "gpu_bench: $BIN, budget ${BUDGET}s, quick=$QUICK, compile=$COMPILE" >&2
train_job ft15_b8 sdc 120 $SDC train $X15 --size $S15 --batch 8 $TR
train_job ft15_b8 torch 120 $TORCH train $C15 --size $S15 --batch 8 $TR
train_job ft15_b32 sdc 150 $SDC train $X15 --size $S15 --batch 32 $TR
train_job ft15_b32 torch 150 $TORCH train $C15 --size $S15 --batch 32 $TR
train_job lora15_b8 sdc 120 $SDC train $X15 --size $S15 --batch 8 --lora 4 $TR
train_job lora15_b8 torch 120 $TORCH train $C15 --size $S15 --batch 8 --lora 4 $TR
for pr in fp16 bf16; do
  for b in 1 2; do
    job unet_${pr}_b$b sdc 60 $SDC unet $X15 --size $S15 --batch $b --precision "$(prec $pr)" $UN
    job unet_${pr}_b$b torch 60 $TORCH unet $C15 --size $S15 --batch $b --precision "$(prec $pr)" $UN
  done
done
job vae512 sdc 60 $SDC vae $X15 --size $S15 --precision "$(prec fp16)" $UN
job vae512 torch 60 $TORCH vae $C15 --size $S15 --precision "$(prec fp16)" $UN
job t2i512 sdc 120 $SDC txt2img $X15 --size $S15 --steps $T2I
job t2i512 torch 120 $TORCH txt2img $C15 --size $S15 --steps $T2I
train_job ftxl_b4 sdc 180 $SDC train $XXL --size $SXL --batch 4 $TR
train_job ftxl_b4 torch 180 $TORCH train $CXL --size $SXL --batch 4 $TR
train_job loraxl_b4 sdc 150 $SDC train $XXL --size $SXL --batch 4 --lora 4 $TR
train_job loraxl_b4 torch 150 $TORCH train $CXL --size $SXL --batch 4 --lora 4 $TR
if [ "$COMPILE" = 1 ]; then
  job unet_fp16_b2 torch-compile 180 $TORCH unet $C15 --size $S15 --batch 2 --precision "$(prec fp16)" $UN --compile
  train_job ft15_b32 torch-compile 300 $TORCH train $C15 --size $S15 --batch 32 $TR --compile
fi

# ---- the table ----------------------------------------------------------------
GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
[ "$SMOKE" = 1 ] && GPU="smoke run: tiny preset at 64px on the CPU"
$PY - "$ROWSF" "$RES" "$GPU" "$(($(date +%s) - T0))" "$QUICK" >"$OUT/bench.md" <<'EOF'
import json, sys

rows_f, res_f, gpu, elapsed, quick = sys.argv[1:6]
rows = [l.rstrip("\n").split("\t") for l in open(rows_f) if l.strip()]
res, first_fail = {}, {}
for line in open(res_f):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    key = (r["row"], r["tag"])
    if "failed" in r:
        first_fail.setdefault(key, r["failed"])
        if key in res and "failed" not in res[key]:
            continue  # a success (the retry with checkpointing) beats a failure
    res[key] = r

def value(r, kind):
    if kind == "train":
        return r.get("img_s")
    return r.get("ms") if kind == "ms" else r.get("s")

notes = []
def cell(r, kind):
    if r is None:
        return "–"
    key = (r["row"], r["tag"])
    if "failed" in r:
        notes.append(f"{r['row']} ({r['tag']}): {r['failed']}")
        return f"{'skipped' if r['failed'].startswith('skipped') else 'failed'} [{len(notes)}]"
    v = value(r, kind)
    s = f"{v:.3g}" if kind != "ms" else f"{v:.1f}"
    if key in first_fail:
        notes.append(f"{r['row']} ({r['tag']}): ran with gradient checkpointing after: {first_fail[key]}")
        s += f" [{len(notes)}]"
    return s + (" (ckpt)" if r.get("checkpointing") else "")

def speed(a, b, kind):
    """a's speed over b's: throughput ratio, > 1 when a is faster"""
    if not a or not b or "failed" in a or "failed" in b:
        return "–"
    va, vb = value(a, kind), value(b, kind)
    if not va or not vb:
        return "–"
    return f"{va / vb:.2f}×" if kind == "train" else f"{vb / va:.2f}×"

def num(r, k, fmt):
    return fmt.format(r[k]) if r and k in r and r[k] is not None else "–"

torch_v = next((r.get("torch") for r in res.values() if r.get("torch")), "?")
out = []
out.append(f"# sdc vs PyTorch {torch_v} + diffusers — {gpu or 'GPU ?'}")
out.append("")
out.append(f"Random weights, same configs. Training: bf16 (PyTorch: autocast + fused AdamW), img/s; "
           f"inference: ms or s per call (lower is better). Speed = sdc's throughput ÷ PyTorch's "
           f"(> 1: sdc faster). Run took {elapsed} s{' (BENCH_QUICK)' if quick == '1' else ''}.")
out.append("")
out.append("| benchmark | sdc | PyTorch | PyTorch compiled | speed vs eager | speed vs compiled "
           "| peak GiB sdc / PyTorch | MFU sdc / PyTorch |")
out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for rid, kind, label in rows:
    s, t, c = res.get((rid, "sdc")), res.get((rid, "torch")), res.get((rid, "torch-compile"))
    unit = " (img/s)" if kind == "train" else ""
    peak = f"{num(s, 'peak_gib', '{:.1f}')} / {num(t, 'peak_gib', '{:.1f}')}"
    mfu = (f"{num(s, 'mfu', '{:.1%}')} / {num(t, 'mfu', '{:.1%}')}"
           if kind == "train" or (s and "mfu" in s) else "–")
    out.append(f"| {label}{unit} | {cell(s, kind)} | {cell(t, kind)} | {cell(c, kind)} | "
               f"{speed(s, t, kind)} | {speed(s, c, kind)} | {peak} | {mfu} |")
if notes:
    out.append("")
    out.append("Notes:")
    out.append("")
    for i, n in enumerate(notes, 1):
        out.append(f"{i}. {n.replace('|', '/')}")
print("\n".join(out))
EOF
cp "$RES" "$OUT/bench.jsonl"
cat "$OUT/bench.md"
