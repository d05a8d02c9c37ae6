#!/usr/bin/env bash
# Runs a normlab plan as a Slurm job array: one array task per shard, each on one GPU.
#
#   sbatch --array=0-7 scripts/slurm-array.sh                  # plans/paper.ron in 8 shards
#   PLAN=plans/short.ron sbatch --array=0-3 scripts/slurm-array.sh
#
# Task I of an array 0..N-1 runs `normlab run PLAN --shard I/N`: cell k of the plan's grid
# belongs to shard k mod N. All tasks append to the same RESULTS/<plan>.csv; appends are
# locked (flock on RESULTS/<plan>.csv.lock) and skip cells that already have a row, so tasks
# may run at once, fail, or be resubmitted: resubmitting the array (or any task) runs only
# what is missing, and a cell killed mid-training resumes from its last epoch checkpoint in
# RESULTS/<plan>/cells/<id>/. RESULTS must be on a filesystem shared by the nodes that
# supports flock (NFSv4, or Lustre mounted with -o flock).
#
# Environment: PLAN (default plans/paper.ron), RESULTS (default results), NORMLAB (the
# binary, default target/release/normlab built with `make cuda`), JOBS_PER_DEVICE (cells at
# once on the task's GPU, default 2). Data must be imported once beforehand
# (`normlab data --source ... --out data/cifar10`), not by every task.
#SBATCH --job-name=normlab
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=48:00:00
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail

PLAN=${PLAN:-plans/paper.ron}
RESULTS=${RESULTS:-results}
NORMLAB=${NORMLAB:-target/release/normlab}
JOBS_PER_DEVICE=${JOBS_PER_DEVICE:-2}

: "${SLURM_ARRAY_TASK_ID:?not in a Slurm array task: submit with sbatch --array=0-(N-1) $0}"
if [ "${SLURM_ARRAY_TASK_MIN:-0}" != 0 ]; then
    echo "error: the array must start at 0 (sbatch --array=0-(N-1)), got ${SLURM_ARRAY_TASK_MIN}" >&2
    exit 2
fi
N=${SLURM_ARRAY_TASK_COUNT:-$((SLURM_ARRAY_TASK_MAX + 1))}

echo "normlab shard ${SLURM_ARRAY_TASK_ID}/${N} of ${PLAN} on $(hostname)"
exec "$NORMLAB" run "$PLAN" --results "$RESULTS" --devices cuda:0 \
    --jobs-per-device "$JOBS_PER_DEVICE" --shard "${SLURM_ARRAY_TASK_ID}/${N}"
