#!/bin/sh
# Runs each libFuzzer target named on the command line for $FUZZ_SECONDS from
# its seed corpus, and prints one line per target: seconds, executions and
# the coverage of libFuzzer's final stats line (cov = edges, ft = features).
# Exits non-zero if any target found a crash, leak, timeout or OOM (the
# reproducer is in $FUZZ_BUILD/artifacts/). Called by `make fuzz`.
set -u
B=${FUZZ_BUILD:-build-fuzz}
S=${FUZZ_SECONDS:-30}
mkdir -p "$B/artifacts" "$B/logs"

# -max_len per target: a little above the largest useful input of its kind
maxlen() {
    case $1 in
    clip_tokenize) echo 4096 ;;
    json_config | metadata_jsonl) echo 16384 ;;
    model_index | image_png | image_jpeg | image_webp) echo 32768 ;;
    *) echo 65536 ;;
    esac
}

failed=""
printf '%-16s %6s %12s %8s %8s  %s\n' target seconds executions cov ft result
for t in "$@"; do
    bin="$B/fuzz_$t"
    corpus="$B/corpus/$t"
    mkdir -p "$corpus"
    log="$B/logs/$t.log"
    start=$(date +%s)
    "$bin" -max_total_time="$S" -max_len="$(maxlen "$t")" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$B/artifacts/$t-" "$corpus" "fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    secs=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    cov=$(printf '%s\n' "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    ft=$(printf '%s\n' "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
    if [ $rc -eq 0 ]; then
        res=ok
    else
        res="FAILED (rc $rc, see $log)"
        failed="$failed $t"
    fi
    printf '%-16s %6s %12s %8s %8s  %s\n' "$t" "$secs" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$res"
    if [ $rc -ne 0 ]; then grep -E 'ERROR|SUMMARY|Test unit written|==[0-9]+==' "$log" | head -n 8 | sed 's/^/    /'; fi
done
if [ -n "$failed" ]; then
    echo "fuzz: failures in:$failed"
    exit 1
fi
