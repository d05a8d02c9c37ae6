"""One short training run in PyTorch with normlab's protocol, for several seeds: how much does
eval-mode test accuracy after one epoch vary from seed to seed?

The twin of `normlab train --model M --reg plain --epochs E --train-subset N --test-subset T
--seed S` (issue 4's acceptance line uses vgg11, 1 epoch, 10,000 / 1,000 images): inputs in
[0, 1], random crop of the 4-pixel zero-padded image and horizontal flip, SGD lr 0.01 momentum
0.9, batch 128 (the last batch partial), PyTorch's default init and BatchNorm (momentum 0.1).
Seeds drive the init, the shuffle and the augmentation through PyTorch's generators, so a seed
here is not the same draw as normlab's seed of the same number: compare the spread.

    python bench/pytorch_epoch.py --data data/cifar10 [--model vgg11] [--seeds 1,2,3]
        [--epochs 1] [--train-subset 10000] [--test-subset 1000] [--init FILE]

`--init FILE` starts from a safetensors state_dict (e.g. `normlab norms --model vgg11 --seed 1
--save-init FILE`, normlab's seed-1 weights) instead of PyTorch's init. `--replay PREFIX`
trains one epoch on exactly the batches normlab's run saw, in its order (written by
`cargo run --release --example dump_epoch -- DIR SEED N PREFIX`), instead of drawing them.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from pytorch_check import accuracy, records  # noqa: E402
from pytorch_train import MODELS, augmented_batch  # noqa: E402


def train_records(data, n):
    """The first n records of data_batch_1..5, as uint8 images and labels."""
    xs, ys, left = [], [], n
    for b in range(1, 6):
        if left <= 0:
            break
        raw = np.fromfile(f"{data}/data_batch_{b}.bin", dtype=np.uint8).reshape(-1, 3073)[:left]
        xs.append(torch.tensor(raw[:, 1:]).reshape(-1, 3, 32, 32))
        ys.append(torch.tensor(raw[:, 0].astype(np.int64)))
        left -= len(raw)
    return torch.cat(xs), torch.cat(ys)


def drawn(images, labels, batch, gen):
    """One epoch's batches: a fresh permutation, each batch augmented."""
    order = torch.randperm(len(labels), generator=gen)
    for i in range(0, len(order), batch):
        yield augmented_batch(images, labels, order[i:i + batch], gen)


def replayed(prefix, batch):
    """The batches normlab's run saw, as examples/dump_epoch.rs wrote them."""
    x = torch.from_numpy(np.fromfile(f"{prefix}.x", dtype="<f4")).reshape(-1, 3, 32, 32)
    y = torch.from_numpy(np.fromfile(f"{prefix}.y", dtype=np.uint8).astype(np.int64))
    for i in range(0, len(y), batch):
        yield x[i:i + batch], y[i:i + batch]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="CIFAR-10 in the binary layout (normlab data --out)")
    ap.add_argument("--model", default="vgg11", choices=sorted(MODELS))
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train-subset", type=int, default=10000)
    ap.add_argument("--test-subset", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--init", help="safetensors state_dict to start from")
    ap.add_argument("--replay", help="PREFIX of PREFIX.x / PREFIX.y from examples/dump_epoch.rs (one epoch)")
    args = ap.parse_args()
    images, labels = train_records(args.data, args.train_subset)
    xt, yt = records(f"{args.data}/test_batch.bin", args.test_subset)
    print(f"pytorch epoch: model {args.model} torch {torch.__version__} epochs {args.epochs} "
          f"train {len(labels)} test {len(yt)} init {args.init or 'pytorch'}")
    for seed in [int(s) for s in args.seeds.split(",")]:
        torch.manual_seed(seed)
        model = MODELS[args.model]()
        if args.init:
            from safetensors.torch import load_file
            model.load_state_dict(load_file(args.init), strict=True)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        gen = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        for _ in range(args.epochs):
            model.train()
            hits = seen = 0
            for x, y in replayed(args.replay, args.batch) if args.replay else drawn(images, labels, args.batch, gen):
                out = model(x)
                loss = F.cross_entropy(out, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                hits += (out.argmax(1) == y).sum().item()
                seen += len(y)
        secs = time.perf_counter() - t0
        print(f"seed {seed}: train_acc {100 * hits / seen:5.2f}% test_acc {accuracy(model, xt, yt):5.2f}% "
              f"({secs:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
