#!/usr/bin/env python3
"""PyTorch twin of `normlab bench train`: the same four CIFAR-10 models (kuangliu
pytorch-cifar definitions: VGG11 with BatchNorm, ResNet18, SENet18 with PreActBlock + SE,
RegNetX_200MF) and the same training step (augmented random batch, forward, cross-entropy,
backward, SGD momentum 0.9 lr 0.01). Prints images/s of the steps run as training runs them
(no waits between phases, as `normlab bench train`), then a phase split from separate steps,
and last a `RESULT {json}` line that `normlab bench record` reads.

Not a dependency of the build or the tests. Setup (outside the repository):
    python3 -m venv /work/.venv-bench && /work/.venv-bench/bin/pip install torch
Run:
    /work/.venv-bench/bin/python bench/pytorch_train.py --model vgg11 [--batch 128] [--steps 5]
On a GPU (the device machine's own PyTorch):
    python3 bench/pytorch_train.py --model resnet18 --device cuda --steps 50 [--channels-last] [--tf32 0|1]
(cudnn.benchmark on; --tf32 sets both torch.backends.cudnn.allow_tf32 and
torch.backends.cuda.matmul.allow_tf32, whose PyTorch defaults are 1 and 0.)
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------- models (kuangliu/pytorch-cifar)


class VGG(nn.Module):
    def __init__(self):
        super().__init__()
        cfg = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
        layers, in_c = [], 3
        for x in cfg:
            if x == "M":
                layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                layers += [nn.Conv2d(in_c, x, kernel_size=3, padding=1), nn.BatchNorm2d(x), nn.ReLU(inplace=True)]
                in_c = x
        layers += [nn.AvgPool2d(kernel_size=1, stride=1)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, 10)

    def forward(self, x):
        out = self.features(x)
        return self.classifier(out.view(out.size(0), -1))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """The CIFAR ResNet skeleton with `block`: ResNet18 with BasicBlock, SENet18 with
    PreActBlock (as in pytorch-cifar, and as normlab's ResidualNet)."""

    def __init__(self, block):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, 1)
        self.layer2 = self._make_layer(block, 128, 2)
        self.layer3 = self._make_layer(block, 256, 2)
        self.layer4 = self._make_layer(block, 512, 2)
        self.linear = nn.Linear(512, 10)

    def _make_layer(self, block, planes, stride):
        layers = []
        for s in [stride, 1]:
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


def ResNet18():
    return ResNet(BasicBlock)


class PreActBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False))
        self.fc1 = nn.Conv2d(planes, planes // 16, kernel_size=1)
        self.fc2 = nn.Conv2d(planes // 16, planes, kernel_size=1)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        w = F.avg_pool2d(out, out.size(2))
        w = F.relu(self.fc1(w))
        w = torch.sigmoid(self.fc2(w))
        out = out * w
        return out + shortcut


def SENet18():
    return ResNet(PreActBlock)


class XBlock(nn.Module):
    def __init__(self, w_in, w_out, stride, group_width, bottleneck_ratio):
        super().__init__()
        w_b = int(round(w_out * bottleneck_ratio))
        num_groups = w_b // group_width
        self.conv1 = nn.Conv2d(w_in, w_b, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w_b)
        self.conv2 = nn.Conv2d(w_b, w_b, kernel_size=3, stride=stride, padding=1, groups=num_groups, bias=False)
        self.bn2 = nn.BatchNorm2d(w_b)
        self.conv3 = nn.Conv2d(w_b, w_out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(w_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or w_in != w_out:
            self.shortcut = nn.Sequential(nn.Conv2d(w_in, w_out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(w_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class RegNetX200MF(nn.Module):
    def __init__(self):
        super().__init__()
        depths, widths, strides = [1, 1, 4, 7], [24, 56, 152, 368], [1, 1, 2, 2]
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        for n, (depth, width, stride) in enumerate(zip(depths, widths, strides), start=1):
            blocks = []
            for i in range(depth):
                blocks.append(XBlock(in_planes, width, stride if i == 0 else 1, 8, 1))
                in_planes = width
            setattr(self, f"layer{n}", nn.Sequential(*blocks))
        self.linear = nn.Linear(widths[-1], 10)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, (1, 1))
        return self.linear(out.view(out.size(0), -1))


MODELS = {"vgg11": VGG, "resnet18": ResNet18, "senet18": SENet18, "regnet200mf": RegNetX200MF}

# ---------------------------------------------------------------- the step


def augmented_batch(images, labels, idx, gen):
    """Random 32x32 crop of the 4-pixel zero-padded image and random horizontal flip, from
    uint8 images in memory, to float in [0, 1] (what normlab's Split::augmented_batch does)."""
    x = images[idx].float().div_(255.0)
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=gen)
    dx = torch.randint(0, 9, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(32)[None, :])[:, None, :, None].expand(n, 3, 32, 32)
    cols = (dx[:, None] + torch.arange(32)[None, :])[:, None, None, :].expand(n, 3, 32, 32)
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    return out.contiguous(), labels[idx]


def matmul_gflops(dev):
    n = 8192 if dev.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    a @ b
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, choices=sorted(MODELS))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster convs on tensor cores)")
    ap.add_argument("--tf32", type=int, choices=(0, 1), default=None, help="allow TF32 in convs and matmuls (default: PyTorch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        if args.tf32 is not None:
            torch.backends.cudnn.allow_tf32 = bool(args.tf32)
            torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    torch.manual_seed(1)
    gen = torch.Generator().manual_seed(7)
    n_images = max(args.batch, 256)
    images = torch.randint(0, 256, (n_images, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (n_images,), generator=gen)
    model = MODELS[args.model]().train().to(dev, memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    def step_once(step, wait):
        """One training step on batch `step`; with `wait`, synchronizes after each phase and
        returns the phase times."""
        idx = (torch.arange(args.batch) + step * args.batch) % n_images
        t0 = time.perf_counter()
        x, y = augmented_batch(images, labels, idx, gen)
        x, y = x.to(dev, memory_format=fmt), y.to(dev)
        if wait:
            sync()
        t1 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        if wait:
            sync()
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if wait:
            sync()
        t3 = time.perf_counter()
        opt.step()
        if wait:
            sync()
        t4 = time.perf_counter()
        return loss.detach(), (t1 - t0, t2 - t1, t3 - t2, t4 - t3)

    def check(losses, first):
        values = torch.stack(losses).float().cpu()
        for i, v in enumerate(values.tolist()):
            if not math.isfinite(v):
                raise SystemExit(f"loss is {v} at step {first + i}")

    # Warm-up (cuDNN benchmark's search, allocator), then the steps as training runs them: no
    # waits between phases, the losses read once at the end (as normlab's bench).
    loss, _ = step_once(0, True)
    check([loss], 0)
    cpu_start = time.process_time()
    wall0 = time.perf_counter()
    losses = [step_once(step, False)[0] for step in range(1, args.steps + 1)]
    sync()
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu_start
    check(losses, 1)
    # The phase split: separate steps with a wait after each phase (on the CPU the same as
    # training; on a GPU the waits cost time training does not spend).
    phases = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    for step in range(args.steps + 1, 2 * args.steps + 1):
        loss, times = step_once(step, True)
        check([loss], step)
        for k, d in zip(phases, times):
            phases[k] += d
    total = sum(phases.values())
    where = torch.cuda.get_device_name(dev) if cuda else f"cpu threads {torch.get_num_threads()}"
    prec = f"tf32 conv {torch.backends.cudnn.allow_tf32} matmul {torch.backends.cuda.matmul.allow_tf32}" if cuda else "fp32"
    print(f"pytorch train: model {args.model} torch {torch.__version__} batch {args.batch} steps {args.steps} {where} {prec} channels_last {args.channels_last}")
    images_per_s = args.batch * args.steps / wall
    print(f"images/s            {images_per_s:10.1f}")
    print(f"step                {1e3 * wall / args.steps:10.1f} ms")
    print(f"images/CPU-s        {args.batch * args.steps / cpu:10.1f} (process CPU time, all threads)")
    print(f"phases (separate steps, waiting after each phase; {1e3 * total / args.steps:.1f} ms per step):")
    for k, d in phases.items():
        print(f"  {k:<17} {1e3 * d / args.steps:10.1f} ms {100 * d / total:5.1f}%")
    print(f"matmul GFLOP/s      {matmul_gflops(dev):10.1f} (f32 n×n, n = 8192 on a GPU and 2048 on a CPU, best of 3)")
    # The machine-readable line `normlab bench record` reads (src/bench/record.rs), last.
    result = {
        "tool": "pytorch",
        "model": args.model,
        "device": "cuda" if cuda else "cpu",
        "precision": "tf32" if cuda and torch.backends.cudnn.allow_tf32 else "fp32",
        "batch": args.batch,
        "steps": args.steps,
        "images_per_s": round(images_per_s, 3),
        "step_ms": round(1e3 * wall / args.steps, 4),
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
