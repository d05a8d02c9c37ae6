#!/usr/bin/env python3
"""Loads a normlab checkpoint (model.safetensors) into bench/pytorch_train.py's PyTorch twin
with load_state_dict(strict=True) and prints its test accuracy in eval mode (what `normlab
train` reports), then again after re-estimating BatchNorm's running statistics on training
images (how much of the accuracy the running statistics cost).

Not a dependency of the build or the tests. Needs torch, numpy and safetensors:
    /work/.venv-bench/bin/python bench/pytorch_check.py --model vgg11 \
        --checkpoint OUT/model.safetensors --data data/cifar10 [--test 1000] [--restat 5000]
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from pytorch_train import MODELS  # noqa: E402


def records(path, n):
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 3073)[:n]
    x = torch.tensor(raw[:, 1:]).reshape(-1, 3, 32, 32).float() / 255
    return x, torch.tensor(raw[:, 0].astype(np.int64))


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        hits = sum((model(x[i:i + 250]).argmax(1) == y[i:i + 250]).sum().item() for i in range(0, len(y), 250))
    return 100.0 * hits / len(y)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, choices=sorted(MODELS))
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True, help="CIFAR-10 in the binary layout (normlab data --out)")
    ap.add_argument("--test", type=int, default=1000, help="first N test images")
    ap.add_argument("--restat", type=int, default=5000, help="training images to re-estimate BatchNorm statistics on")
    args = ap.parse_args()
    model = MODELS[args.model]()
    model.load_state_dict(load_file(args.checkpoint), strict=True)
    x, y = records(f"{args.data}/test_batch.bin", args.test)
    print(f"eval-mode test accuracy      {accuracy(model, x, y):6.2f}% on {len(y)} images (strict state_dict load)")
    xt, _ = records(f"{args.data}/data_batch_1.bin", args.restat)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(xt), 125):
            model(xt[i:i + 125])
    print(f"with re-estimated BN stats   {accuracy(model, x, y):6.2f}% ({len(xt)} training images, cumulative average)")


if __name__ == "__main__":
    main()
