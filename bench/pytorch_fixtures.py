#!/usr/bin/env python3
"""Writes PyTorch checkpoints for normlab's checkpoint tests, with PyTorch itself.

    python bench/pytorch_fixtures.py small tests/fixtures/pytorch   # the committed fixtures
    python bench/pytorch_fixtures.py full /tmp/pt-full              # full-size bench check

`small` (a few hundred KB, committed): RobustBench's WideResNet and PreActResNet at narrow
widths (the classes below are RobustBench's, copied from
robustbench/model_zoo/architectures/{wide_resnet,resnet}.py at commit 78fcc9e, with one
change each: a `base` / `widths` argument, default RobustBench's, so a narrow variant can
be built), random weights and random BatchNorm statistics:
  - wrn.pt          torch.save(model.state_dict()) of WRN-16-2 with base 2 (stage widths 4,
                    8, 16), built with sub_block1=True and RobustBench's mu/sigma buffers
                    (CIFAR-10 mean and std), as the zoo's Carmon2019/Chen2020 entries are;
  - wrn.safetensors the same state_dict as safetensors;
  - preact.pth      {"state_dict": DataParallel(model).state_dict(), "epoch": 7, ...} of
                    PreActResNet-18 (PreActBlockV2, bn_before_fc=True) at widths 2, 4, 8, 16;
  - io.pt           {"input": 2 images, "wrn_eval"/"preact_eval": eval-mode logits,
                    "wrn_train"/"preact_train": train-mode logits}.
`full` (not committed): ResNet18 (bench/pytorch_train.py's, normlab's names) as .pt, as a
wrapped .pth with `module.` prefixes and as .safetensors; a truncated .pt; WRN-28-10 and
PreActResNet-18 at full size with an input and their logits (tests/checkpoint_cli.rs reads
them when NORMLAB_PT_FULL names the folder).

Not a dependency of the build or the tests. Needs torch and safetensors (pip install torch
safetensors).
"""

import argparse
import copy
import math
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


# --- RobustBench: robustbench/model_zoo/architectures/wide_resnet.py ------------------------
class BasicBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride, dropRate=0.0):
        super(BasicBlock, self).__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride,
                               padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1,
                               padding=1, bias=False)
        self.droprate = dropRate
        self.equalInOut = (in_planes == out_planes)
        self.convShortcut = (not self.equalInOut) and nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride,
                                                                padding=0, bias=False) or None

    def forward(self, x):
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class NetworkBlock(nn.Module):
    def __init__(self, nb_layers, in_planes, out_planes, block, stride, dropRate=0.0):
        super(NetworkBlock, self).__init__()
        self.layer = self._make_layer(block, in_planes, out_planes, nb_layers, stride, dropRate)

    def _make_layer(self, block, in_planes, out_planes, nb_layers, stride, dropRate):
        layers = []
        for i in range(int(nb_layers)):
            layers.append(block(i == 0 and in_planes or out_planes, out_planes, i == 0 and stride or 1, dropRate))
        return nn.Sequential(*layers)

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    """ Based on code from https://github.com/yaodongyu/TRADES """
    # normlab: `base` added (RobustBench hard-codes 16) so narrow fixtures can be built.
    def __init__(self, depth=28, num_classes=10, widen_factor=10, sub_block1=False, dropRate=0.0, bias_last=True, base=16):
        super(WideResNet, self).__init__()
        nChannels = [base, base * widen_factor, 2 * base * widen_factor, 4 * base * widen_factor]
        assert ((depth - 4) % 6 == 0)
        n = (depth - 4) / 6
        block = BasicBlock
        self.conv1 = nn.Conv2d(3, nChannels[0], kernel_size=3, stride=1,
                               padding=1, bias=False)
        self.block1 = NetworkBlock(n, nChannels[0], nChannels[1], block, 1, dropRate)
        if sub_block1:
            self.sub_block1 = NetworkBlock(n, nChannels[0], nChannels[1], block, 1, dropRate)
        self.block2 = NetworkBlock(n, nChannels[1], nChannels[2], block, 2, dropRate)
        self.block3 = NetworkBlock(n, nChannels[2], nChannels[3], block, 2, dropRate)
        self.bn1 = nn.BatchNorm2d(nChannels[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(nChannels[3], num_classes, bias=bias_last)
        self.nChannels = nChannels[3]

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2. / n))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear) and not m.bias is None:
                m.bias.data.zero_()

    def forward(self, x):
        out = self.conv1(x)
        out = self.block1(out)
        out = self.block2(out)
        out = self.block3(out)
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        out = out.view(-1, self.nChannels)
        return self.fc(out)


# --- RobustBench: robustbench/model_zoo/architectures/resnet.py -----------------------------
class PreActBlockV2(nn.Module):
    '''Pre-activation version of the BasicBlock (slightly different forward pass)'''
    expansion = 1

    def __init__(self, in_planes, planes, stride=1, out_shortcut=False):
        super(PreActBlockV2, self).__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)

        if stride != 1 or in_planes != self.expansion*planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion*planes, kernel_size=1, stride=stride, bias=False)
            )

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, 'shortcut') else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out += shortcut
        return out


class PreActResNet(nn.Module):
    # normlab: `widths` added (RobustBench hard-codes 64, 128, 256, 512).
    def __init__(self, block, num_blocks, num_classes=10, bn_before_fc=False, out_shortcut=False, widths=(64, 128, 256, 512)):
        super(PreActResNet, self).__init__()
        self.in_planes = widths[0]
        self.bn_before_fc = bn_before_fc
        self.out_shortcut = out_shortcut

        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(block, widths[0], num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, widths[1], num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], num_blocks[3], stride=2)
        if bn_before_fc:
            self.bn = nn.BatchNorm2d(widths[3] * block.expansion)
        self.linear = nn.Linear(widths[3]*block.expansion, num_classes)

    def _make_layer(self, block, planes, num_blocks, stride):
        strides = [stride] + [1]*(num_blocks-1)
        layers = []
        for stride in strides:
            layers.append(block(self.in_planes, planes, stride, out_shortcut=self.out_shortcut))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.conv1(x)
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.layer4(out)
        if self.bn_before_fc:
            out = F.relu(self.bn(out))
        out = F.avg_pool2d(out, 4)
        out = out.view(out.size(0), -1)
        out = self.linear(out)
        return out
# --- end of RobustBench's code --------------------------------------------------------------


class NormalizedWideResNet(WideResNet):
    """A WideResNet with RobustBench's input normalization buffers, registered as the zoo's
    entries do (e.g. Chen2020EfficientNet: sub_block1=True, CIFAR-10 mean and std)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.register_buffer('mu', torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1))
        self.register_buffer('sigma', torch.tensor(CIFAR10_STD).view(1, 3, 1, 1))

    def forward(self, x):
        x = (x - self.mu) / self.sigma
        return super().forward(x)


def randomize_bn(model, gen):
    """Non-trivial BatchNorm parameters and running statistics, so eval mode is tested."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.2, 0.2, generator=gen)
                m.running_mean.uniform_(-0.3, 0.3, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.num_batches_tracked.fill_(37)


def logits(model, x):
    """Eval-mode and train-mode logits of `model` on `x` (train mode on a copy, since it
    updates the running statistics)."""
    model.eval()
    with torch.no_grad():
        ev = model(x)
    twin = copy.deepcopy(model)
    twin.train()
    with torch.no_grad():
        tr = twin(x)
    return ev, tr


def small(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(2026)
    torch.manual_seed(2026)
    wrn = NormalizedWideResNet(depth=16, widen_factor=2, sub_block1=True, base=2)
    randomize_bn(wrn, gen)
    preact = PreActResNet(PreActBlockV2, [2, 2, 2, 2], bn_before_fc=True, widths=(2, 4, 8, 16))
    randomize_bn(preact, gen)
    x = torch.rand(2, 3, 32, 32, generator=gen)

    sd = wrn.state_dict()
    torch.save(sd, out / 'wrn.pt')
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out / 'wrn.safetensors'))
    wrapped = {'state_dict': nn.DataParallel(preact).state_dict(), 'epoch': 7, 'best_acc': 0.5, 'args': {'lr': 0.1, 'arch': 'PreActResNet18'}}
    torch.save(wrapped, out / 'preact.pth')
    we, wt = logits(wrn, x)
    pe, pt = logits(preact, x)
    torch.save({'input': x, 'wrn_eval': we, 'wrn_train': wt, 'preact_eval': pe, 'preact_train': pt}, out / 'io.pt')
    n = lambda m: sum(p.numel() for p in m.parameters())
    print(f'wrote {out}: WRN-16-2/base 2 ({n(wrn)} parameters, sub_block1 included), PreActResNet-18/widths 2-16 ({n(preact)} parameters)')


def full(out: Path):
    from pytorch_train import MODELS  # noqa: E402  (bench/pytorch_train.py: normlab's names)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    r18 = MODELS['resnet18']()
    randomize_bn(r18, gen)
    sd = r18.state_dict()
    torch.save(sd, out / 'resnet18.pt')
    torch.save({'state_dict': nn.DataParallel(r18).state_dict(), 'epoch': 120, 'optimizer': torch.optim.SGD(r18.parameters(), lr=0.1).state_dict()}, out / 'resnet18.pth')
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out / 'resnet18.safetensors'))
    data = (out / 'resnet18.pt').read_bytes()
    (out / 'resnet18-truncated.pt').write_bytes(data[: len(data) // 2])
    x = torch.rand(2, 3, 32, 32, generator=gen)
    io = {'input': x}
    wrn = WideResNet(depth=28, widen_factor=10)
    randomize_bn(wrn, gen)
    torch.save(wrn.state_dict(), out / 'wrn-28-10.pt')
    io['wrn-28-10'] = logits(wrn, x)[0]
    preact = PreActResNet(PreActBlockV2, [2, 2, 2, 2], bn_before_fc=True)
    randomize_bn(preact, gen)
    torch.save(preact.state_dict(), out / 'preact-resnet18.pt')
    io['preact-resnet18'] = logits(preact, x)[0]
    torch.save(io, out / 'io.pt')
    n = lambda m: sum(p.numel() for p in m.parameters())
    print(f'wrote {out}: resnet18 ({n(r18)}), wrn-28-10 ({n(wrn)}), preact-resnet18 ({n(preact)} parameters)')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('what', choices=['small', 'full'])
    ap.add_argument('out', type=Path)
    args = ap.parse_args()
    torch.set_num_threads(2)
    (small if args.what == 'small' else full)(args.out)


if __name__ == '__main__':
    main()
