#!/usr/bin/env bash
# Starts (or stops) a single-node Slurm on this machine, for testing scripts/slurm-array.sh
# against a real scheduler: munged, slurmctld and slurmd, all as root, with their own
# configuration, state and logs under STATE (default /tmp/normlab-slurm). Nothing under
# /etc/slurm is written; clients find the cluster through SLURM_CONF.
#
#   apt-get install slurm-wlm munge            # Debian/Ubuntu: the daemons and clients
#   scripts/slurm-local.sh start               # idempotent: reuses a cluster that answers
#   export SLURM_CONF=/tmp/normlab-slurm/slurm.conf
#   sinfo; sbatch ...; squeue
#   scripts/slurm-local.sh stop
#
# The node is this host (`hostname -s`) with all its CPUs, in one partition `local`; no
# GPUs (submit with --gres=none), no accounting, processes tracked by /proc (no cgroups, so
# it also runs in containers). `start` prints the export line and exits non-zero with the
# daemons' log tails when the cluster does not come up within 30 s.
set -euo pipefail

STATE=${STATE:-/tmp/normlab-slurm}
CONF=$STATE/slurm.conf
export SLURM_CONF=$CONF

die() { echo "slurm-local: $*" >&2; exit 1; }

answers() { scontrol ping 2>/dev/null | grep -q "is UP" && sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed|alloc"; }

stop() {
    for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" "$STATE/munged.pid"; do
        if [ -f "$pidfile" ]; then
            pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            rm -f "$pidfile"
        fi
    done
}

start() {
    for bin in munged slurmctld slurmd sbatch scontrol; do
        command -v "$bin" >/dev/null || die "$bin not found: install Slurm and munge (Debian: apt-get install slurm-wlm munge)"
    done
    [ "$(id -u)" = 0 ] || die "the daemons run as root here: run this as root (or use a real cluster)"
    mkdir -p "$STATE"
    # One start at a time (two test processes may ask at once).
    exec 9>"$STATE/.lock"
    flock -w 120 9 || die "another start has held $STATE/.lock for 2 minutes"
    if answers; then
        echo "slurm-local: a cluster already answers at $CONF"
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    stop
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    mkdir -p "$STATE/ctld" "$STATE/spool" "$STATE/munge"
    cat >"$CONF" <<EOF
# Written by scripts/slurm-local.sh: a one-node test cluster.
ClusterName=normlab-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=600
KillWait=5
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    [ -f /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing (the munge package creates it; or run mungekey)"
    munged --force --socket="$STATE/munge/munge.socket" --pid-file="$STATE/munged.pid" \
        --log-file="$STATE/munged.log" --seed-file="$STATE/munge/seed" 9>&- \
        || die "munged did not start: $(tail -3 "$STATE/munged.log" 2>/dev/null)"
    # The daemons must not inherit the lock's descriptor (9>&-): they would hold the lock for
    # their lifetime and the next start would wait on it forever.
    slurmctld -c -f "$CONF" 9>&- || die "slurmctld did not start: $(tail -5 "$STATE/slurmctld.log" 2>/dev/null)"
    slurmd -c -f "$CONF" 9>&- || die "slurmd did not start: $(tail -5 "$STATE/slurmd.log" 2>/dev/null)"
    for _ in $(seq 60); do
        if answers; then
            echo "slurm-local: cluster up: node $host, $cpus CPUs, partition local; config $CONF"
            echo "export SLURM_CONF=$CONF"
            return 0
        fi
        sleep 0.5
    done
    echo "slurm-local: the cluster did not come up in 30 s; log tails:" >&2
    tail -n 5 "$STATE/slurmctld.log" "$STATE/slurmd.log" >&2 || true
    exit 1
}

case "${1:-}" in
    start) start ;;
    stop) stop; echo "slurm-local: stopped" ;;
    status) if answers; then sinfo; else echo "slurm-local: no cluster answers at $CONF"; exit 1; fi ;;
    *) echo "usage: $0 start|stop|status   (STATE=$STATE)" >&2; exit 2 ;;
esac
