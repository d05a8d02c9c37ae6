#!/usr/bin/env bash
# gpu-check.sh - what one call on a GPU machine runs (issue 8): the CUDA selftest, the training
# bench against PyTorch eager on the same card, and as much of plans/short.ron as time allows.
#
#   bash scripts/gpu-check.sh OUT [PLAN_SECONDS] [STAGES]
#
# Needs (made on the build machine, carried as .gpu-bin/): normlab.xz from `make cuda
# gpu-bundle`, and cifar10.tar.gz (any source `normlab data` reads; or data/cifar10 already).
# Uses the machine's own python3 (PyTorch) and its CUDA libraries. STAGES: any of
# "selftest bench plan" (default: all three). Writes OUT/selftest.txt, OUT/bench.txt,
# OUT/plan.txt and OUT/short.tgz (the plan's results without checkpoints), few files because
# the device tool returns at most eight. JOBS: cells at once on the card (default 4).
# SHARDS: run these `--shard I/N` selections instead, one process each, all at once.
set -uo pipefail
OUT=${1:?usage: gpu-check.sh OUT [PLAN_SECONDS] [STAGES]}
PLAN_SECONDS=${2:-180}
STAGES=${3:-selftest bench plan}
B=.gpu-bin/normlab
PY=${PYTHON:-python3}

# The binary and the CUDA runtime libraries of the machine's PyTorch.
[ -x $B ] || { xz -dkf $B.xz && chmod +x $B; } || exit 1
SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for lib in libcublas.so.13 libcudnn.so.9 libcurand.so.10 libcudart.so.13; do
  d=$(dirname "$(find "$SP/nvidia" -name "$lib" | head -1)")
  case ":${LD_LIBRARY_PATH:-}:" in *":$d:"*) ;; *) export LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} ;; esac
done
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; $PY -c 'import torch; print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version())'; ldd $B | grep 'not found'; } 2>&1 | tee "$OUT/bench.txt"

t0=$(date +%s)
if [[ $STAGES == *selftest* ]]; then
  # Exact f32 (no TF32) so CUDA is held to the CPU's numbers; cuDNN kernels, then the portable ones.
  { timeout 240 $B selftest --device cuda:0; echo "rc $?"; timeout 60 $B selftest --device cuda:0 --kernels portable --models resnet18,regnet200mf; echo "rc $?"; } >"$OUT/selftest.txt" 2>&1
  echo "selftest: $(grep -c FAIL "$OUT/selftest.txt") FAIL lines, $(($(date +%s) - t0)) s" | tee -a "$OUT/bench.txt"
fi

if [[ $STAGES == *bench* ]]; then
  nl() { echo "== normlab $*"; timeout 90 $B bench train --device cuda:0 --steps 30 "$@" 2>&1 | grep -v '^ *[0-9]*: \|^ *at '; }
  pt() { echo "== pytorch $*"; timeout 90 $PY bench/pytorch_train.py --device cuda --steps 30 "$@" 2>&1; }
  {
    for m in resnet18 vgg11 senet18 regnet200mf; do
      nl --model $m            # cuDNN kernels, TF32 convs, ND-ℓ1 β=1e-3 in the step
      pt --model $m            # PyTorch defaults: cuDNN TF32 convs, fp32 matmul
    done
    nl --model resnet18 --reg plain
    nl --model resnet18 --kernels portable
    nl --model resnet18 --kernels stock
    nl --model resnet18 --fp32
    pt --model resnet18 --tf32 0
    pt --model resnet18 --channels-last
  } >>"$OUT/bench.txt" 2>&1
  echo "bench: $(($(date +%s) - t0)) s" | tee -a "$OUT/bench.txt"
fi

if [[ $STAGES == *plan* ]]; then
  if [ ! -f data/cifar10/test_batch.bin ]; then
    $B data --source .gpu-bin/cifar10.tar.gz --out data/cifar10 >"$OUT/plan.txt" 2>&1 || exit 1
  fi
  # Earlier calls' finished cells come back in results/ (committed), so the scheduler resumes.
  if [ -n "${SHARDS:-}" ]; then
    # Chosen cells, one process each (e.g. SHARDS="9/68 10/68": cells 9 and 10 of the grid).
    for s in $SHARDS; do
      timeout --signal=INT "$PLAN_SECONDS" $B run plans/short.ron --data data/cifar10 --devices cuda:0 --shard "$s" >>"$OUT/plan.txt" 2>&1 &
    done
    wait
  else
    timeout --signal=INT "$PLAN_SECONDS" $B run plans/short.ron --data data/cifar10 --devices cuda:0 --jobs-per-device "${JOBS:-4}" >>"$OUT/plan.txt" 2>&1
  fi
  echo "plan rc $? after $(($(date +%s) - t0)) s" >>"$OUT/plan.txt"
  tar czf "$OUT/short.tgz" --exclude='*.safetensors' --exclude='checkpoint' $(ls -d results/short.csv results/short 2>/dev/null) 2>>"$OUT/plan.txt"
fi
echo "total $(($(date +%s) - t0)) s" | tee -a "$OUT/bench.txt"
