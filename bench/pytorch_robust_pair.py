#!/usr/bin/env python3
"""Trains RobustBench's PreActResNet-18 twice on a CIFAR-10 subset, once normally and once
adversarially, and saves both as PyTorch checkpoints for `normlab norms --compare` (the
README's worked example: do adversarially trained models have smaller layer norms?).

    python bench/pytorch_robust_pair.py --data data/cifar10 --out /tmp/pair \\
        [--train 2000] [--epochs 4] [--pgd-steps 2] [--threads 2]

Writes OUT/standard.pt (torch.save(model.state_dict()), with RobustBench's `mu`/`sigma`
buffers: the model normalizes its input by CIFAR-10's mean and std, as the zoo's entries
do) and OUT/adversarial.pth (the same architecture trained with PGD-AT, ℓ∞ ε = 8/255,
saved wrapped as {"state_dict": DataParallel(model).state_dict(), "epoch": E}), and prints
each model's clean accuracy on the first 1,000 test images.

Architecture: PreActResNet(PreActBlockV2, [2, 2, 2, 2], bn_before_fc=True), RobustBench's
code (bench/pytorch_fixtures.py). Training: SGD momentum 0.9, weight decay 5e-4, batch
128, lr 0.1 for the first half of the epochs then 0.01, random crop (padding 4) and flip;
PGD-AT (Madry et al.) with `--pgd-steps` steps of 2.5·ε/steps from a random start. Both
runs draw the same initial weights and the same batches (seed 0).

Not a dependency of the build or the tests. Needs torch and numpy.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from pytorch_fixtures import CIFAR10_MEAN, CIFAR10_STD, PreActBlockV2, PreActResNet  # noqa: E402


class NormalizedPreActResNet18(PreActResNet):
    """RobustBench's PreActResNet-18 with the BatchNorm before the classifier and its input
    normalization buffers, as the zoo's Rice2020OverfittingNetL2 registers them."""

    def __init__(self):
        super().__init__(PreActBlockV2, [2, 2, 2, 2], bn_before_fc=True)
        self.register_buffer('mu', torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1))
        self.register_buffer('sigma', torch.tensor(CIFAR10_STD).view(1, 3, 1, 1))

    def forward(self, x):
        return super().forward((x - self.mu) / self.sigma)


def records(path, n):
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 3073)[:n]
    x = torch.tensor(raw[:, 1:]).reshape(-1, 3, 32, 32).float() / 255
    return x, torch.tensor(raw[:, 0].astype(np.int64))


def augment(x, gen):
    padded = F.pad(x, (4, 4, 4, 4))
    out = torch.empty_like(x)
    offsets = torch.randint(0, 9, (len(x), 2), generator=gen)
    flips = torch.rand(len(x), generator=gen) < 0.5
    for i in range(len(x)):
        dy, dx = offsets[i].tolist()
        img = padded[i, :, dy:dy + 32, dx:dx + 32]
        out[i] = img.flip(2) if flips[i] else img
    return out


def pgd(model, x, y, eps, steps, gen):
    step = 2.5 * eps / steps
    delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
    for _ in range(steps):
        loss = F.cross_entropy(model(x + delta), y)
        grad, = torch.autograd.grad(loss, delta)
        delta = (delta + step * grad.sign()).clamp(-eps, eps)
        delta = ((x + delta).clamp(0, 1) - x).detach().requires_grad_(True)
    return (x + delta).detach()


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        hits = sum((model(x[i:i + 250]).argmax(1) == y[i:i + 250]).sum().item() for i in range(0, len(y), 250))
    return 100.0 * hits / len(y)


def train(x, y, epochs, adversarial, eps, pgd_steps):
    torch.manual_seed(0)
    model = NormalizedPreActResNet18()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    t0 = time.time()
    for epoch in range(epochs):
        for g in opt.param_groups:
            g['lr'] = 0.1 if epoch < (epochs + 1) // 2 else 0.01
        order = torch.randperm(len(y), generator=gen)
        seen, loss_sum = 0, 0.0
        for i in range(0, len(y), 128):
            idx = order[i:i + 128]
            xb, yb = augment(x[idx], gen), y[idx]
            if adversarial:
                model.eval()
                xb = pgd(model, xb, yb, eps, pgd_steps, gen)
            model.train()
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
        kind = 'PGD-AT' if adversarial else 'standard'
        print(f'{kind} epoch {epoch + 1}/{epochs}: loss {loss_sum / seen:.4f}, {time.time() - t0:.0f} s', flush=True)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', required=True, help='CIFAR-10 in the binary layout (normlab data --out)')
    ap.add_argument('--out', required=True, type=Path)
    ap.add_argument('--train', type=int, default=2000, help='first N training images (of data_batch_1.bin: at most 10,000)')
    ap.add_argument('--epochs', type=int, default=4)
    ap.add_argument('--eps', type=float, default=8 / 255)
    ap.add_argument('--pgd-steps', type=int, default=2)
    ap.add_argument('--threads', type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    x, y = records(f'{args.data}/data_batch_1.bin', args.train)
    xt, yt = records(f'{args.data}/test_batch.bin', 1000)
    standard = train(x, y, args.epochs, False, args.eps, args.pgd_steps)
    torch.save(standard.state_dict(), args.out / 'standard.pt')
    print(f'standard: clean accuracy {accuracy(standard, xt, yt):.1f}% on 1,000 test images -> {args.out / "standard.pt"}')
    robust = train(x, y, args.epochs, True, args.eps, args.pgd_steps)
    torch.save({'state_dict': nn.DataParallel(robust).state_dict(), 'epoch': args.epochs}, args.out / 'adversarial.pth')
    print(f'PGD-AT: clean accuracy {accuracy(robust, xt, yt):.1f}% on 1,000 test images -> {args.out / "adversarial.pth"}')


if __name__ == '__main__':
    main()
