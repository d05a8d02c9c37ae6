#!/usr/bin/env bash
# gpu-check.sh - what one call on a GPU machine runs (issues 8, 19, 20): the CUDA selftest, then
# `normlab bench train` and bench/pytorch_train.py for the four models on the same card, their
# RESULT lines appended to bench/gpu-speed.csv; `normlab bench stack` (K cells of the paper's
# row as one stacked model against one by one) and the paper grid's device-hours at those
# speeds; and optionally as much of plans/short.ron as time allows.
#
# The one device call (about 8 minutes on an H100/H200; give it timeout_s 590):
#   bash scripts/gpu-check.sh $OUT 0 "selftest bench stack"
#
#   bash scripts/gpu-check.sh OUT [PLAN_SECONDS] [STAGES]
#
# Needs (made on the build machine, carried as .gpu-bin/): normlab.xz from `make cuda
# gpu-bundle` (and cifar10.tar.gz for the plan stage). Uses the machine's own python3
# (PyTorch) and its CUDA libraries. STAGES: any of "selftest bench plan" (default: "selftest
# bench"). Writes, few files because the device tool returns at most eight:
#   OUT/selftest.txt    normlab selftest --device cuda:0
#   OUT/summary.txt     the card, each bench's headline lines and the CSV rows appended
#   OUT/gpu-speed.csv   bench/gpu-speed.csv with this call's rows appended
#   OUT/raw.tgz         bench/<card>-<date>/: every raw output (untar in the repository root)
#   OUT/stack.txt       bench stack for STACK_MODELS (K = STACK_KS), PyTorch's one cell, the grid's estimate
#   OUT/stack-speed.csv the stacked speeds (commit as bench/stack-speed-<card>.csv)
#   OUT/plan.txt, OUT/short.tgz (plan stage)
# After the call: `tar xzf <files_at>/raw.tgz && cp <files_at>/gpu-speed.csv bench/`.
#
# Local dry run of the same glue on a CPU (what tests/gpu_check_script.rs does):
#   DEVICE=cpu STEPS=1 BATCH=4 MODELS=vgg11 PLAIN_MODEL=vgg11 NORMLAB=target/release/normlab \
#     bash scripts/gpu-check.sh /tmp/out 0 bench
# Environment: DEVICE (cuda:0), STEPS (30), BATCH (128), MODELS (the four), PLAIN_MODEL
# (resnet18: also benched without norm decay), NORMLAB (the binary), PYTHON (python3), JOBS and
# SHARDS (plan stage, as before), STACK_MODELS (resnet18 vgg11), STACK_KS (1,2,4,8,17),
# STACK_STEPS (10), STACK_CONV (grouped: one cuDNN call with K times the groups; per-slice). tests/gpu_check_script.rs runs the bench stage this way on the
# CPU with a stand-in for PyTorch.
set -uo pipefail
OUT=${1:?usage: gpu-check.sh OUT [PLAN_SECONDS] [STAGES]}
PLAN_SECONDS=${2:-180}
STAGES=${3:-selftest bench stack}
DEVICE=${DEVICE:-cuda:0}
STEPS=${STEPS:-30}
BATCH=${BATCH:-128}
MODELS=${MODELS:-vgg11 resnet18 senet18 regnet200mf}
PLAIN_MODEL=${PLAIN_MODEL:-resnet18}
B=${NORMLAB:-.gpu-bin/normlab}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"

if [ "$DEVICE" = cpu ]; then
  CARD=cpu
  PTDEV=cpu
else
  # The binary and the CUDA runtime libraries of the machine's PyTorch.
  [ -x "$B" ] || { xz -dkf "$B.xz" && chmod +x "$B"; } || exit 1
  SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  for lib in libcublas.so.13 libcudnn.so.9 libcurand.so.10 libcudart.so.13; do
    d=$(dirname "$(find "$SP/nvidia" -name "$lib" | head -1)")
    case ":${LD_LIBRARY_PATH:-}:" in *":$d:"*) ;; *) export LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} ;; esac
  done
  CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
  PTDEV=cuda
fi
DATE=$(date -u +%F)
# bench/<card>-<date>/, e.g. bench/h100-80gb-hbm3-2026-11-27 (letters, digits and '-' only).
SLUG=$(printf '%s' "$CARD" | tr 'A-Z' 'a-z' | sed -e 's/nvidia//' -e 's/[^a-z0-9]\{1,\}/-/g' -e 's/^-//' -e 's/-$//')
RAW="bench/$SLUG-$DATE"
STAGE=$(mktemp -d)
mkdir -p "$STAGE/$RAW"
CSV="$OUT/gpu-speed.csv"
[ -f bench/gpu-speed.csv ] && cp bench/gpu-speed.csv "$CSV"
{
  echo "card: $CARD  date: $DATE  device: $DEVICE  steps: $STEPS  batch: $BATCH"
  [ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c 'import torch; print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version())' 2>&1
  ldd "$B" | grep 'not found'
} >"$SUMMARY" 2>&1

t0=$(date +%s)
if [[ $STAGES == *selftest* ]]; then
  # Exact f32 (no TF32) so CUDA is held to the CPU's numbers; normlab's kernels (cuDNN, the fused
  # ones), then the portable ones.
  { timeout 270 "$B" selftest --device "$DEVICE"; echo "rc $?"; timeout 60 "$B" selftest --device "$DEVICE" --kernels portable --models resnet18; echo "rc $?"; } >"$OUT/selftest.txt" 2>&1
  cp "$OUT/selftest.txt" "$STAGE/$RAW/selftest.txt"
  echo "selftest: $(grep -c '^FAIL' "$OUT/selftest.txt") FAIL lines, $(grep -c '^ok' "$OUT/selftest.txt") ok, $(($(date +%s) - t0)) s; $(grep '^rc' "$OUT/selftest.txt" | tr '\n' ' ')" >>"$SUMMARY"
fi

if [[ $STAGES == *bench* ]]; then
  for m in $MODELS; do
    # normlab: its kernels, TF32 convolutions, norm decay l1 beta=1e-3 in the step. PyTorch: its
    # defaults (cuDNN with TF32 convolutions, cudnn.benchmark, fp32 matmul), NCHW.
    timeout 120 "$B" bench train --device "$DEVICE" --steps "$STEPS" --batch "$BATCH" --model "$m" >"$STAGE/$RAW/normlab-$m.txt" 2>&1
    echo "normlab $m rc $?" >>"$SUMMARY"
    PYTHONUNBUFFERED=1 timeout 120 $PY bench/pytorch_train.py --device "$PTDEV" --steps "$STEPS" --batch "$BATCH" --model "$m" >"$STAGE/$RAW/pytorch-$m.txt" 2>&1
    echo "pytorch $m rc $?" >>"$SUMMARY"
    grep -h -E '^(images/s|step |host / device|  kernel launches|  device allocations|  host<->device|  synchronizations|  cuDNN calls|  regularizer)' "$STAGE/$RAW/normlab-$m.txt" | sed "s/^/  normlab $m: /" >>"$SUMMARY"
    grep -h -E '^images/s' "$STAGE/$RAW/pytorch-$m.txt" | sed "s/^/  pytorch $m: /" >>"$SUMMARY"
    "$B" bench record --normlab "$STAGE/$RAW/normlab-$m.txt" --pytorch "$STAGE/$RAW/pytorch-$m.txt" --card "$CARD" --date "$DATE" --csv "$CSV" >>"$SUMMARY" 2>&1
  done
  # Norm decay's share: the same step without it.
  timeout 120 "$B" bench train --device "$DEVICE" --steps "$STEPS" --batch "$BATCH" --model "$PLAIN_MODEL" --reg plain >"$STAGE/$RAW/normlab-$PLAIN_MODEL-plain.txt" 2>&1
  grep -h -E '^images/s' "$STAGE/$RAW/normlab-$PLAIN_MODEL-plain.txt" | sed "s/^/  normlab $PLAIN_MODEL --reg plain: /" >>"$SUMMARY"
  cp "$SUMMARY" "$STAGE/$RAW/summary.txt"
  [ -f "$CSV" ] && cp "$CSV" "$STAGE/$RAW/gpu-speed.csv"
  tar czf "$OUT/raw.tgz" -C "$STAGE" "$RAW"
  echo "bench: $(($(date +%s) - t0)) s" >>"$SUMMARY"
fi

if [[ $STAGES == *stack* ]]; then
  # Issue 20: cells per hour of K cells of the paper's row trained as one stacked model against
  # the same K one by one, beside PyTorch's one cell on the same card, then the paper grid's
  # device-hours at those speeds.
  {
    for m in ${STACK_MODELS:-resnet18 vgg11}; do
      echo "== normlab bench stack $m"
      timeout 150 "$B" bench stack plans/paper.ron --model "$m" --device "$DEVICE" --ks "${STACK_KS:-1,2,4,8,17}" --steps "${STACK_STEPS:-10}" --repeats 1 --conv "${STACK_CONV:-grouped}" --out "$OUT/stack-speed.csv"
      echo "rc $? after $(($(date +%s) - t0)) s"
      echo "== pytorch $m (one cell)"
      PYTHONUNBUFFERED=1 timeout 90 $PY bench/pytorch_train.py --device "$PTDEV" --steps "$STEPS" --batch "$BATCH" --model "$m" | grep -E '^(images/s|RESULT)'
    done
    echo "== the paper grid at these speeds, stacks of 17"
    "$B" run plans/paper.ron --dry-run --stack 17 --devices "$DEVICE" --speed "$OUT/stack-speed.csv" | grep -v '^ *[0-9]* *[0-9a-f]\{12\} '
    echo "stack: $(($(date +%s) - t0)) s"
  } >"$OUT/stack.txt" 2>&1
  grep -h -E '^(== |rc |stack: |training: |images/s)' "$OUT/stack.txt" >>"$SUMMARY"
fi

if [[ $STAGES == *plan* ]]; then
  if [ ! -f data/cifar10/test_batch.bin ]; then
    "$B" data --source .gpu-bin/cifar10.tar.gz --out data/cifar10 >"$OUT/plan.txt" 2>&1 || exit 1
  fi
  # Earlier calls' finished cells come back in results/ (committed), so the scheduler resumes.
  if [ -n "${SHARDS:-}" ]; then
    # Chosen cells, one process each (e.g. SHARDS="9/68 10/68": cells 9 and 10 of the grid).
    for s in $SHARDS; do
      timeout --signal=INT "$PLAN_SECONDS" "$B" run plans/short.ron --data data/cifar10 --devices "$DEVICE" --shard "$s" >>"$OUT/plan.txt" 2>&1 &
    done
    wait
  else
    timeout --signal=INT "$PLAN_SECONDS" "$B" run plans/short.ron --data data/cifar10 --devices "$DEVICE" --jobs-per-device "${JOBS:-4}" >>"$OUT/plan.txt" 2>&1
  fi
  echo "plan rc $? after $(($(date +%s) - t0)) s" >>"$OUT/plan.txt"
  tar czf "$OUT/short.tgz" --exclude='*.safetensors' --exclude='checkpoint' $(ls -d results/short.csv results/short 2>/dev/null) 2>>"$OUT/plan.txt"
fi
rm -rf "$STAGE"
echo "total $(($(date +%s) - t0)) s" | tee -a "$SUMMARY"
