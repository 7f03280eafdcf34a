#!/usr/bin/env bash
# The GPU check: proves the CUDA path on a lent GPU machine in under 10 minutes (one H200), and prints the figures.
#
#     bash benchmarks/gpu_check.sh RESULTS_DIR             # on a CUDA machine, from anywhere
#     bash benchmarks/gpu_check.sh --dry-run RESULTS_DIR   # on CPU, tiny models and images: every section's code
#                                                          # path in a minute or two (the tests run this)
#
# Sections: (a) tests/train and tests/export on CUDA; (b) loader_efficiency for resnet18 and efficientnet_b0 at
# 224 px with CPU and GPU augmentation; (c) their training images per second (bf16 autocast, channels-last);
# (d) a 6-trial search on demo data with 1, 2 and 4 workers sharing the GPU and with the default (--workers auto),
# trials per minute (a dry run: 2 trials, 1 and 2 workers); (e) an out-of-memory retry forced by a batch that does
# not fit; (f) export-best and predict on the GPU; (g) the headline (benchmarks/headline.py): competition-size demo
# data, the age space for 5 minutes, and the projected wall time of a 100-trial study (a dry run: tiny, 40 s).
# On a 15-minute device lease, the whole check does not fit with (g): run SECTIONS=bdg first, then the rest.
# Everything it prints goes to RESULTS_DIR/gpu_check.log, the key figures to RESULTS_DIR/summary.txt; each section
# has a time limit, a failed section is reported and the others still run; the exit status is 1 if any failed.
#
# Packages: the GPU machines have torch, torchvision, timm, pandas, scikit-learn, typer and rich but no optuna,
# optuna-dashboard, albumentations (...) and no package index. What is missing is installed from
# benchmarks/wheels/ (git-ignored; fill it on a connected machine with `bash benchmarks/gpu_wheels.sh`).
# PYTHON picks the interpreter (default: .venv/bin/python when there is one, else python3).
# SECTIONS picks which of a-f run (default: all); a rerun after a fix can repeat only those that failed, e.g.
# SECTIONS=adf, to fit the machine's time.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
DRY=0
if [ "${1:-}" = "--dry-run" ]; then
  DRY=1
  shift
fi
if [ $# -ne 1 ]; then
  echo "usage: bash benchmarks/gpu_check.sh [--dry-run] RESULTS_DIR" >&2
  exit 2
fi
mkdir -p "$1"
RESULTS=$(cd "$1" && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
SITE=${TMPDIR:-/tmp}/automl-gpu-site  # where the missing packages go (see install_missing)
export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
WHEELS="$REPO/benchmarks/wheels"
# The face detector travels with the wheels (gpu_wheels.sh copies it); the machine cannot download it.
if [ -z "${AUTOML_FACE_DETECTOR:-}" ] && [ -f "$WHEELS/face_detection_yunet_2026may.onnx" ]; then
  export AUTOML_FACE_DETECTOR="$WHEELS/face_detection_yunet_2026may.onnx"
fi

if [ $DRY = 1 ]; then
  DEVICE=cpu BACKBONES=test_resnet,test_efficientnet SIZE=32 BATCH=16 STEPS=3 ROUNDS=1 PEOPLE=12 WORKERS=1,2
  TESTS=(tests/train/test_loader.py "tests/export/test_tta.py::test_views_together_equal_views_alone[1]")
  SEARCH=(--trials 2 --people 8 --set folds=2 --set max_epochs=1 --set backbone=test_resnet)
  OOM=(--backbone test_resnet --size 32 --batch-size 8 --people 12)
  TOP_K=1
  HEADLINE=(--dry-run)
  LIMITS=(300 120 120 120 120 120 300)  # packages, (a), (b, c), (d), (e), (f), (g): generous, for a busy CI machine
else
  DEVICE=cuda BACKBONES=resnet18,efficientnet_b0 SIZE=224 BATCH=64 STEPS=30 ROUNDS=3 PEOPLE=200 WORKERS=1,2,4,auto
  TESTS=(tests/train tests/export)
  SEARCH=(--trials 6 --people 30 --set folds=2 --set max_epochs=2 --set backbone=resnet18 --set image_size=64)
  OOM=(--backbone resnet18 --size 224 --batch-size 64 --people 60)
  TOP_K=2
  HEADLINE=(--people 2700 --minutes 5 --workers auto)
  LIMITS=(45 200 120 240 60 60 540)  # caps against a hang; on an H200 (a)-(f) took about 6 minutes in all
fi

SECTIONS=${SECTIONS:-abcdefg}
export PYTHON REPO RESULTS WHEELS SITE DEVICE BACKBONES SIZE BATCH STEPS ROUNDS PEOPLE TOP_K
FAILED=()
section() {  # section KEYS NAME SECONDS COMMAND...: run with a time limit, record a failure, go on
  local keys=$1 name=$2 seconds=$3
  shift 3
  if [ -n "$keys" ] && [[ ! $keys =~ [$SECTIONS] ]]; then
    echo
    echo "== $name: skipped (SECTIONS=$SECTIONS)"
    return 0
  fi
  echo
  echo "== $name  ($(date -u +%H:%M:%S), limit ${seconds}s)"
  local started=$SECONDS
  timeout --signal=INT --kill-after=5 "$seconds" "$@"
  local status=$?
  echo "-- $name: exit $status after $((SECONDS - started))s"
  if [ $status -ne 0 ]; then FAILED+=("$name (exit $status)"); fi
}

install_missing() {
  if "$PYTHON" -c "import optuna, optuna_dashboard, albumentations, yaml, plotly, pytest, pytest_timeout" 2>/dev/null; then
    echo "packages: all present"
    return 0
  fi
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "packages missing and no wheels in $WHEELS: run 'bash benchmarks/gpu_wheels.sh' on a connected machine" >&2
    return 2
  fi
  # Into a folder of our own, without resolving: the machine's torch and numpy stay as they are, and pip never asks
  # an index it cannot reach about a dependency the machine already has.
  "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --target "$SITE" "$WHEELS"/*.whl
}

efficiency() {  # (b) and (c): both backbones, CPU and GPU augmentation, in one process on one data set
  "$PYTHON" "$REPO/benchmarks/loader_efficiency.py" --backbone "$BACKBONES" --augment-device cpu,gpu --size $SIZE \
    --batch-size $BATCH --steps $STEPS --rounds $ROUNDS --people $PEOPLE --device $DEVICE
}

export_and_predict() {  # (f): the best trials of the 1-worker study of (d), exported and used to predict
  local kept="$RESULTS/search" started
  "$PYTHON" -m automl export-best --task mask --study scaling-1 --top-k $TOP_K --data "$kept/demo" \
    --home "$kept/home1" --out "$RESULTS/export" --device $DEVICE || return 1
  started=$EPOCHREALTIME
  "$PYTHON" -m automl predict --export "$RESULTS/export" "$kept/demo/train/images" --out "$RESULTS/predictions.csv" \
    --device $DEVICE >/dev/null || return 1
  local images
  images=$(($(wc -l <"$RESULTS/predictions.csv") - 1))
  echo "predict: $images images in $(awk "BEGIN {printf \"%.1f\", $EPOCHREALTIME - $started}") s (with start-up), device $DEVICE"
}

main() {
  echo "gpu_check $([ $DRY = 1 ] && echo '--dry-run ')on $(uname -n), $(date -u), repository $REPO"
  echo "python: $PYTHON ($("$PYTHON" --version 2>&1))"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  section "" "packages" "${LIMITS[0]}" bash -c install_missing
  "$PYTHON" -c "import torch, optuna, timm; print(f'torch {torch.__version__}, CUDA {torch.cuda.is_available()}, timm {timm.__version__}, optuna {optuna.__version__}, cores {len(__import__(\"os\").sched_getaffinity(0))}')"
  if [ $DRY = 0 ] && ! "$PYTHON" -c "import torch; assert torch.cuda.is_available()"; then
    echo "no CUDA GPU visible to PyTorch: run with --dry-run on a machine without one" >&2
    return 2
  fi
  cd "$REPO" || return 2
  section a "(a) tests/train and tests/export on $DEVICE" "${LIMITS[1]}" \
    "$PYTHON" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
  section bc "(b, c) loader_efficiency and training images per second" "${LIMITS[2]}" bash -c efficiency
  section d "(d) search: trials per minute with $WORKERS workers on one device" "${LIMITS[3]}" \
    "$PYTHON" "$REPO/benchmarks/worker_scaling.py" --workers $WORKERS --keep "$RESULTS/search" "${SEARCH[@]}"
  section e "(e) out-of-memory retry" "${LIMITS[4]}" "$PYTHON" "$REPO/benchmarks/oom_retry.py" --device $DEVICE "${OOM[@]}"
  section f "(f) export-best and predict on $DEVICE" "${LIMITS[5]}" bash -c export_and_predict
  section g "(g) headline: the age space on competition-size demo data" "${LIMITS[6]}" \
    "$PYTHON" "$REPO/benchmarks/headline.py" "${HEADLINE[@]}"

  echo
  echo "== summary"
  grep -E "^(backbone |real loader|in memory|loader_efficiency|workers [0-9a-z]|batch [0-9]|oom_retry|predict:|-- .*augment_device|demo data:|search:|trials:|time shares|GPU utilisation|projection|  [a-z_0-9]+: [0-9]+ images/s)" \
    "$RESULTS/gpu_check.log" | tee "$RESULTS/summary.txt"
  if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${FAILED[@]}" | tee -a "$RESULTS/summary.txt"
    return 1
  fi
  echo "all sections passed in ${SECONDS}s" | tee -a "$RESULTS/summary.txt"
}

export -f install_missing efficiency export_and_predict
: >"$RESULTS/gpu_check.log"
main 2>&1 | tee -a "$RESULTS/gpu_check.log"
exit "${PIPESTATUS[0]}"
