#!/usr/bin/env bash
# gpu-stack.sh - issue 20's one device call: cells per hour of training K cells of the paper's
# row as one stacked model against the same K cells one by one (`normlab bench stack`, K = 1,
# 2, 4, 8, 17) on resnet18 and vgg11, beside PyTorch's single-cell images/s on the same card,
# then the paper grid's GPU-hours at those speeds (`normlab run plans/paper.ron --dry-run
# --speed`). About 5 minutes on an H100.
#
#   bash scripts/gpu-stack.sh OUT
#
# Needs what scripts/gpu-check.sh needs (.gpu-bin/normlab.xz from `make cuda gpu-bundle`) and
# the machine's python3 with PyTorch. Writes OUT/stack.txt (everything printed) and
# OUT/stack-speed.csv (the measured speeds; commit it as bench/stack-speed-<card>.csv).
# Off the CPU the stacked convolutions run grouped (one cuDNN call with K times the groups).
set -uo pipefail
OUT=${1:?usage: gpu-stack.sh OUT}
B=.gpu-bin/normlab
PY=${PYTHON:-python3}

# The binary and the CUDA runtime libraries of the machine's PyTorch (as gpu-check.sh).
[ -x $B ] || { xz -dkf $B.xz && chmod +x $B; } || exit 1
SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for lib in libcublas.so.13 libcudnn.so.9 libcurand.so.10 libcudart.so.13; do
  d=$(dirname "$(find "$SP/nvidia" -name "$lib" | head -1)")
  case ":${LD_LIBRARY_PATH:-}:" in *":$d:"*) ;; *) export LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} ;; esac
done

t0=$(date +%s)
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c 'import torch; print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version())'
  for m in resnet18 vgg11; do
    echo "== normlab bench stack $m"
    timeout 240 $B bench stack plans/paper.ron --model $m --device cuda:0 --ks 1,2,4,8,17 --steps 10 --repeats 1 --conv grouped --out "$OUT/stack-speed.csv"
    echo "rc $? after $(($(date +%s) - t0)) s"
    echo "== pytorch $m (one cell)"
    timeout 90 $PY bench/pytorch_train.py --device cuda --steps 30 --model $m
  done
  echo "== the paper grid at these speeds, stacks of 17"
  $B run plans/paper.ron --dry-run --stack 17 --devices cuda:0 --speed "$OUT/stack-speed.csv" | grep -v '^ *[0-9]* *[0-9a-f]\{12\} '
  echo "total $(($(date +%s) - t0)) s"
} >"$OUT/stack.txt" 2>&1
tail -40 "$OUT/stack.txt"
