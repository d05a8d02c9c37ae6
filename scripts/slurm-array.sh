#!/usr/bin/env bash
# Runs a normlab plan as a Slurm job array: one array task per shard. Submit from the
# repository root (relative paths are relative to it); settings are environment variables,
# which sbatch passes on to the tasks.
#
#   SHARDS=8 sbatch --array=0-7 scripts/slurm-array.sh               # plans/paper.ron, 8 GPU tasks
#   PLAN=plans/short.ron DATA=/scratch/cifar10 SHARDS=4 sbatch --array=0-3 scripts/slurm-array.sh
#   SHARDS=8 sbatch --array=5 scripts/slurm-array.sh                 # resubmit task 5 on its own
#   SHARDS=8 RETRY_FAILED=1 sbatch --array=0-7 scripts/slurm-array.sh   # rerun the failed cells
#
# CPU nodes (no GPU): ask for no GPU and the cores you want on the command line (it overrides
# the #SBATCH lines below), and run on the CPU:
#
#   DEVICES=cpu SHARDS=4 sbatch --array=0-3 --gres=none --cpus-per-task=16 scripts/slurm-array.sh
#
# Task I runs `normlab run PLAN --shard I/SHARDS`: cell k of the plan's grid belongs to shard
# k mod SHARDS. SHARDS is the array's size and must be the same for every submission of a
# plan (a task resubmitted alone cannot infer it). All tasks append to the same
# RESULTS/<plan>.csv; appends are locked (flock on RESULTS/<plan>.csv.lock) and skip cells that
# already have a row, so tasks may run at once, fail, or be resubmitted: resubmitting the
# array (or any task) runs only what is missing, and a cell killed mid-training resumes from
# its last epoch checkpoint in RESULTS/<plan>/cells/<id>/. RESULTS must be on a filesystem
# shared by the nodes that supports flock (NFSv4, or Lustre mounted with -o flock).
#
# A task exits non-zero when one of its cells failed or the machine stopped it (a device the
# binary cannot use, data that differs from its import, a full disk), so Slurm marks it
# FAILED; its log names the cause and the command that reruns the failed cells.
#
# Environment:
#   SHARDS           the array's size N (required; tasks are 0..N-1)
#   PLAN             the plan file (default plans/paper.ron)
#   DATA             the CIFAR-10 folder, passed as --data (default: the plan's data.dir);
#                    import it once beforehand (`normlab data --source ... --out DIR`)
#   RESULTS          the results folder (default results); task logs go to RESULTS/logs/
#   DEVICES          devices of each task, e.g. cuda:0 (default), cuda:0,cuda:1 or cpu
#   JOBS_PER_DEVICE  cells at once per device (default 2 on GPUs, 1 on cpu)
#   RETRY_FAILED     1: remove this shard's failed rows first, so those cells run again
#   NORMLAB          the binary (default target/release/normlab; `make cuda` for GPUs)
# Results and logs are made readable by the group (umask); the CPU threads of a task are its
# --cpus-per-task (RAYON_NUM_THREADS).
#SBATCH --job-name=normlab
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=48:00:00
# The task writes its own log under RESULTS/logs/ (Slurm cannot: it needs the folder to
# exist before the job starts); an --output given to sbatch takes precedence.
#SBATCH --output=/dev/null
set -euo pipefail

RESULTS=${RESULTS:-results}
if [ "$(readlink -f /proc/$$/fd/1 2>/dev/null)" = /dev/null ]; then
    log_dir="$RESULTS/logs"
    mkdir -p "$log_dir" 2>/dev/null || log_dir=${TMPDIR:-/tmp}
    exec >>"$log_dir/normlab-${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-local}}_${SLURM_ARRAY_TASK_ID:-x}.out" 2>&1
fi
# Group members may read the results (keep the site's mask, minus its group-read bits).
umask "$(printf '%04o' $(( 8#$(umask) & 8#0727 )))"

PLAN=${PLAN:-plans/paper.ron}
NORMLAB=${NORMLAB:-target/release/normlab}
DEVICES=${DEVICES:-cuda:0}
if [ "$DEVICES" = cpu ]; then JOBS_PER_DEVICE=${JOBS_PER_DEVICE:-1}; else JOBS_PER_DEVICE=${JOBS_PER_DEVICE:-2}; fi

fail() { echo "slurm-array.sh: error: $*" >&2; exit 2; }
[ -n "${SLURM_ARRAY_TASK_ID:-}" ] || fail "not in a Slurm array task: submit with SHARDS=N sbatch --array=0-(N-1) scripts/slurm-array.sh"
[ -n "${SHARDS:-}" ] || fail "SHARDS is not set: pass the array's size, e.g. SHARDS=8 sbatch --array=0-7 scripts/slurm-array.sh (and the same SHARDS=8 when resubmitting single tasks)"
[[ "$SHARDS" =~ ^[1-9][0-9]*$ ]] || fail "SHARDS=$SHARDS: expected the array's size, a positive number"
[ "$SLURM_ARRAY_TASK_ID" -lt "$SHARDS" ] || fail "task ${SLURM_ARRAY_TASK_ID} is outside the array 0..$((SHARDS - 1)) of SHARDS=$SHARDS"
[ -x "$NORMLAB" ] || fail "NORMLAB=$NORMLAB is not an executable in $(pwd): build it (make build, or make cuda for GPUs) or set NORMLAB"
[ -f "$PLAN" ] || fail "PLAN=$PLAN does not exist in $(pwd)"
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-$(nproc)}}

args=(run "$PLAN" --results "$RESULTS" --devices "$DEVICES" --jobs-per-device "$JOBS_PER_DEVICE" --shard "${SLURM_ARRAY_TASK_ID}/${SHARDS}")
[ -n "${DATA:-}" ] && args+=(--data "$DATA")
[ "${RETRY_FAILED:-0}" = 1 ] && args+=(--retry-failed)

echo "normlab shard ${SLURM_ARRAY_TASK_ID}/${SHARDS} of ${PLAN} on $(hostname), job ${SLURM_ARRAY_JOB_ID:-?}_${SLURM_ARRAY_TASK_ID}, ${RAYON_NUM_THREADS} CPU threads: $NORMLAB ${args[*]}"
status=0
"$NORMLAB" "${args[@]}" || status=$?
chmod -R g+rX "$RESULTS" 2>/dev/null || true
echo "normlab shard ${SLURM_ARRAY_TASK_ID}/${SHARDS} ended with status $status"
exit "$status"
