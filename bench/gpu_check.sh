#!/usr/bin/env bash
# The prepared GPU check: at most 9 minutes on one GPU (the parts' time limits add up to
# 530 s; a part over its limit is stopped with SIGINT and recorded). From the repo root:
#     bash bench/gpu_check.sh [RESULTS_FILE]
# Uses whatever `python` is on PATH with PYTHONPATH=. (no install needed). Each part has its
# own time limit and is skipped, with the reason, when a dependency it needs is missing. All
# figures ("FIGURE name: value" lines) go to RESULTS_FILE (default: gpu_check_results.txt,
# or $OUT/gpu_check_results.txt when $OUT is set); the full log goes beside it (.log).
# Without CUDA every part still runs on the CPU (to check the script), and says so; there
# GPU_CHECK_SCALE=N multiplies every time limit by N (a slow CPU).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python}
RESULTS=${1:-${OUT:+$OUT/}gpu_check_results.txt}
LOG=${RESULTS%.txt}.log
WORK=$(mktemp -d -t gpu-check-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
: >"$RESULTS"
: >"$LOG"

part() {  # part NAME SECONDS COMMAND...: run, log, keep its FIGURE lines and its status
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    echo "== $name" | tee -a "$LOG"
    timeout -s INT "$((limit * ${GPU_CHECK_SCALE:-1}))" "$@" >"$WORK/out" 2>&1
    local rc=$?
    cat "$WORK/out" >>"$LOG"
    grep '^FIGURE ' "$WORK/out" | sed "s/^FIGURE /$name./" >>"$RESULTS"
    echo "$name.exit: $rc" >>"$RESULTS"
    echo "$name.seconds: $((SECONDS - t0))" >>"$RESULTS"
    tail -n 3 "$WORK/out"
    return $rc
}

need() {  # need MODULE...: true when every module imports, else records the skip
    local m
    for m in "$@"; do
        if ! "$PY" -c "import $m" >/dev/null 2>&1; then
            echo "skipped: python module '$m' is missing" | tee -a "$LOG"
            echo "skip.$m: missing" >>"$RESULTS"
            return 1
        fi
    done
}

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader | sed 's/^/nvidia_smi: /' >>"$RESULTS"
need torch || { echo "torch is missing: nothing to check"; exit 1; }
CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))")
[ "$CUDA" = 1 ] || echo "no CUDA: every part runs on the CPU (a check of this script)" | tee -a "$RESULTS"
BENCH_PRESET=paper-resnet50
[ "$CUDA" = 1 ] || BENCH_PRESET=tiny
part versions 30 "$PY" bench/gpu_check.py versions
if need pytest; then
    part gpu_tests 90 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests
fi
if need transformers cv2 pandas && part world 30 "$PY" bench/gpu_check.py world "$WORK/world"; then
    part resume 90 "$PY" bench/gpu_check.py resume "$WORK/run" "$WORK/world"
    part clustering_off 60 "$PY" -m cmcgns_cli pretrain --data "$WORK/world" --out "$WORK/off" \
        --preset tiny --set data.image_size=64 --set data.crop_size=64 --batch-size 16 \
        --set loss.clustering=false --max-steps 3 --stage1-epochs 1 --stage2-epochs 1 --json
fi
part bf16 40 "$PY" bench/gpu_check.py bf16
part syncs 40 "$PY" bench/gpu_check.py syncs "$WORK/world"  # the validation pass too
if need transformers cv2 pandas; then
    part bench 150 "$PY" bench/bench_pretrain_gpu.py --preset "$BENCH_PRESET" \
        --steps 30 --warmup 10 --trainer
    grep -E '^(device|peak GPU|GPU pairs|CPU pairs|trainer pairs|model FLOPs)' "$LOG" \
        | sed 's/^/bench: /' >>"$RESULTS"
fi
echo "figures: $RESULTS (log: $LOG)"
