#!/usr/bin/env python3
"""AutoAttack's standard version (the `pyautoattack` package: fra31/auto-attack's code) against
`normlab attack --suite standard` on the same checkpoint, the same test images and the same
device (CPU): robust accuracy after each attack, seconds, images/s and their ratio, and how
many images the two call robust alike. `normlab bench attack` runs this script.

The PyTorch side is bench/pytorch_train.py's twin of the model, loaded from normlab's
safetensors with load_state_dict(strict=True), in eval mode, parameters frozen
(requires_grad False: input gradients only, as normlab computes them). normlab runs first
(`--format json`); its drawn test indices are the images AutoAttack gets.

Not a dependency of the build or the tests. Setup (outside the repository):
    python3 -m venv /tmp/venv-aa && /tmp/venv-aa/bin/pip install torch numpy safetensors pyautoattack
Run:
    /tmp/venv-aa/bin/python bench/autoattack_compare.py --model vgg11 --checkpoint OUT/model.safetensors \\
        --data data/cifar10 --eps 8/255 [--norm linf|l2] [--n 64] [--seed 0] [--batch 256] \\
        [--normlab target/release/normlab] [--json]
"""

import argparse
import json
import logging
import re
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

try:
    import numpy as np
    import torch
    from safetensors.torch import load_file
    import pyautoattack
    from pyautoattack import AutoAttack
except ImportError as e:  # a clear message instead of a traceback
    sys.exit(f"autoattack_compare.py needs torch, numpy, safetensors and pyautoattack ({e}); install them with\n"
             "    python3 -m venv /tmp/venv-aa && /tmp/venv-aa/bin/pip install torch numpy safetensors pyautoattack\n"
             "and run this script with /tmp/venv-aa/bin/python (normlab bench attack: --python /tmp/venv-aa/bin/python)")

sys.path.insert(0, str(Path(__file__).parent))
from pytorch_train import MODELS  # noqa: E402

ATTACKS = ["apgd-ce", "apgd-t", "fab-t", "square"]


def radius(text):
    """8/255 or 0.5, as normlab parses it."""
    return float(Fraction(text.strip())) if "/" in text else float(text)


def test_images(data_dir, indices):
    raw = np.fromfile(Path(data_dir) / "test_batch.bin", dtype=np.uint8).reshape(-1, 3073)[indices]
    x = torch.tensor(raw[:, 1:]).reshape(-1, 3, 32, 32).float() / 255
    return x, torch.tensor(raw[:, 0].astype(np.int64))


def run_normlab(args):
    cmd = [args.normlab, "attack", "--model", args.model, "--checkpoint", args.checkpoint, "--data", args.data,
           "--eps", args.eps, "--norm", args.norm, "--suite", "standard", "--n", str(args.n), "--seed", str(args.seed),
           "--batch", str(args.batch), "--format", "json", "--no-spectral"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"normlab attack failed ({' '.join(cmd)}):\n{out.stderr}")
    return json.loads(out.stdout)


class AfterEachAttack(logging.Handler):
    """Collects AutoAttack's 'robust accuracy after X: Y% (total time T s)' lines."""

    PATTERN = re.compile(r"robust accuracy after (\S+): ([\d.]+)% \(total time ([\d.]+) s\)")

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.after = {}

    def emit(self, record):
        m = self.PATTERN.search(record.getMessage())
        if m:
            self.after[m.group(1).lower()] = (float(m.group(2)) / 100, float(m.group(3)))


def run_autoattack(args, indices):
    torch.manual_seed(0)
    model = MODELS[args.model]()
    model.load_state_dict(load_file(args.checkpoint), strict=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = test_images(args.data, indices)
    log = logging.getLogger("auto-attack")
    log.setLevel(logging.DEBUG)
    handler = AfterEachAttack()
    log.addHandler(handler)
    adversary = AutoAttack(model, device="cpu", eps=radius(args.eps), norm={"linf": "Linf", "l2": "L2"}[args.norm],
                           seed=0, version="standard")
    start = time.perf_counter()
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=args.batch)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        clean = torch.cat([model(x[i:i + 250]).argmax(1) for i in range(0, len(y), 250)]) == y
        robust = torch.cat([model(x_adv[i:i + 250]).argmax(1) for i in range(0, len(y), 250)]) == y
        delta = (x_adv - x).reshape(len(y), -1)
        dist = delta.abs().max(1)[0] if args.norm == "linf" else delta.norm(dim=1)
    # Accuracy after an attack that never ran (nobody left) is the last one's.
    after, last = [], clean.float().mean().item()
    for a in ATTACKS:
        last = handler.after.get(a, (last, None))[0]
        after.append(last)
    return {
        "clean_acc": clean.float().mean().item(),
        "robust_acc_after": after,
        "robust": robust.tolist(),
        "seconds": seconds,
        "max_distance": dist.max().item(),
        "versions": f"pyautoattack {pyautoattack.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, choices=sorted(MODELS))
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True, help="CIFAR-10 in the binary layout (normlab data --out)")
    ap.add_argument("--eps", required=True, help="radius: 8/255 or 0.5")
    ap.add_argument("--norm", default="linf", choices=["linf", "l2"])
    ap.add_argument("--n", type=int, default=64, help="test images (normlab's seeded draw)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=256, help="images per batch, both sides")
    ap.add_argument("--normlab", default="target/release/normlab", help="the normlab binary")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args()

    ours = run_normlab(args)
    theirs = run_autoattack(args, ours["indices"])
    n = ours["n"]
    # normlab's per-image verdict: robust where correctly classified and flipped by no attack.
    ours_robust = [c and f is None for c, f in zip(ours["correct"], ours["flipped_by"])]
    agree = sum(a == b for a, b in zip(ours_robust, theirs["robust"]))
    ratio = theirs["seconds"] / ours["seconds"]
    result = {
        "model": args.model, "checkpoint": args.checkpoint, "n": n, "norm": args.norm, "eps": radius(args.eps),
        "normlab": {"clean_acc": ours["clean_acc"], "robust_acc_after": ours["robust_acc_after"], "seconds": ours["seconds"],
                    "images_per_second": n / ours["seconds"]},
        "autoattack": {"clean_acc": theirs["clean_acc"], "robust_acc_after": theirs["robust_acc_after"], "seconds": theirs["seconds"],
                       "images_per_second": n / theirs["seconds"], "max_distance": theirs["max_distance"], "versions": theirs["versions"]},
        "same_robust_verdict": agree, "speed_ratio": ratio,
    }
    if args.json:
        print(json.dumps(result))
        return
    sym = "ℓ∞" if args.norm == "linf" else "ℓ2"
    print(f"{args.model} {args.checkpoint}: {n} test images (seed {args.seed}), {sym} ε = {args.eps}, CPU, batch {args.batch}")
    print(f"AutoAttack: {theirs['versions']}")
    print(f"{'':<18}{'normlab':>10}{'AutoAttack':>12}")
    print(f"{'clean':<18}{100 * ours['clean_acc']:>9.2f}%{100 * theirs['clean_acc']:>11.2f}%")
    for a, o, t in zip(ATTACKS, ours["robust_acc_after"], theirs["robust_acc_after"]):
        print(f"{'after ' + a:<18}{100 * o:>9.2f}%{100 * t:>11.2f}%")
    print(f"{'seconds':<18}{ours['seconds']:>10.1f}{theirs['seconds']:>12.1f}")
    print(f"{'images/s':<18}{n / ours['seconds']:>10.3f}{n / theirs['seconds']:>12.3f}")
    print(f"same robust/non-robust verdict on {agree} of {n} images")
    print(f"speed ratio (normlab images/s over AutoAttack's): {ratio:.2f}x")


if __name__ == "__main__":
    main()
