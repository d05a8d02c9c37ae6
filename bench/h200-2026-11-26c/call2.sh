# Call 2 of bench/h200-2026-11-26c, as run on the device machine from the repository root, with
# .gpu-bin/ carried: normlab.xz (d8ae1ad), normlab-old.xz (call 1's bundle), cifar10.tar.gz.
B=.gpu-bin; for v in normlab normlab-old; do xz -dkf $B/$v.xz; chmod +x $B/$v; done
SP=$(python3 -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')
for l in libcublas.so.13 libcudnn.so.9 libcurand.so.10 libcudart.so.13; do export LD_LIBRARY_PATH=$(dirname "$(find $SP/nvidia -name $l|head -1)"):${LD_LIBRARY_PATH:-}; done
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/bench.txt
timeout 80 $B/normlab selftest --device cuda:0 --models vgg11,resnet18 >$OUT/selftest.txt 2>&1; echo "selftest rc $?" | tee -a $OUT/bench.txt
$B/normlab data --source $B/cifar10.tar.gz --out data/cifar10 >/dev/null 2>&1
for v in old new; do b=$B/normlab; [ $v = old ] && b=$B/normlab-old
 for i in 1 2 3 4; do timeout 60 $b train --model vgg11 --reg nd-l1 --beta 1e-3 --epochs 1 --train-subset 20000 --test-subset 500 --data data/cifar10 --device cuda:0 --seed $i --out /tmp/t/$v-$i >/dev/null 2>&1 & done; wait
 for i in 1 2 3 4; do echo "$v-$i $(tail -1 /tmp/t/$v-$i/metrics.csv)"; done >>$OUT/bench.txt; done
for m in vgg11 resnet18; do for v in old new; do b=$B/normlab; [ $v = old ] && b=$B/normlab-old
 echo "== $v $m"; timeout 40 $b bench train --device cuda:0 --steps 30 --model $m 2>&1 | grep -E "^(images/s|step|  regularizer|  backward|  forward)"; done; done >>$OUT/bench.txt 2>&1
head -1 /tmp/t/new-1/metrics.csv >>$OUT/bench.txt; echo done
