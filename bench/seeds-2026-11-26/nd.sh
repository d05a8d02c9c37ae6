#!/bin/bash
# Issue 4's acceptance command (nd-l1, beta 1e-3) for seeds 13-24.
for s in $(seq 13 24); do
  /work/target/release/normlab train --model vgg11 --reg nd-l1 --beta 1e-3 --epochs 1 --train-subset 10000 --test-subset 1000 --data /work/data/cifar10 --seed $s --out /work/seeds/nd-$s > /work/seeds/nd-$s.log 2>&1
  echo "nd-l1 seed $s: $(tail -1 /work/seeds/nd-$s/metrics.csv)" >> /work/seeds/nd-summary.txt
done
