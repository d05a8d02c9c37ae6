#!/bin/bash
# Seeds 13-24: normlab plain, then PyTorch's own draw, same protocol.
cd /work/main
for s in $(seq 13 24); do
  /work/target/release/normlab train --model vgg11 --reg plain --epochs 1 --train-subset 10000 --test-subset 1000 --data /work/data/cifar10 --seed $s --out /work/seeds/plain-$s > /work/seeds/plain-$s.log 2>&1
  echo "plain seed $s: $(tail -1 /work/seeds/plain-$s/metrics.csv)" >> /work/seeds/summary.txt
done
/work/.venv-bench/bin/python bench/pytorch_epoch.py --data /work/data/cifar10 --seeds $(seq -s, 13 24) >> /work/seeds/summary.txt 2>&1
