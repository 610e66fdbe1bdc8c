#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (Debian, run as root), for `greedymm sweep --launcher slurm` and its
# tests. Idempotent: a cluster that answers with this configuration is left as it is; a half-started one is
# completed; a changed configuration restarts the daemons.
#
#   scripts/slurm-up.sh          (or: make slurm-up)
#
# Settings (environment): SLURM_UP_CPUS (CPUs the node offers, default: the cores here), SLURM_UP_MEM_MB (memory
# the node offers, default 90% of MemTotal). The node may offer more CPUs than it has: jobs then share cores.
# Installs slurm-wlm and munge with apt-get when slurmctld is missing. Starts munged, slurmctld and slurmd as plain
# daemons (no systemd needed); their logs are in /var/log/slurm. Exit 0: `sinfo` shows the node idle or in use.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
LOG_DIR=/var/log/slurm
NODE=$(hostname -s)

say() { echo "slurm-up: $*"; }
die() {
    echo "slurm-up: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || die "needs root (it installs packages and starts daemons); run it as root or with sudo"

node_ready() {
    # idle, mixed or allocated: the controller answers and the node takes jobs
    local state
    state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1) || return 1
    case "$state" in idle* | mix* | alloc* | completing*) return 0 ;; *) return 1 ;; esac
}

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# -- munge: the credentials between the Slurm daemons and clients -------------------------------------------------
mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    runuser -u munge -- munged --force
    for _ in $(seq 20); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.5
    done
    munge -n </dev/null | unmunge >/dev/null || die "munged does not answer; see /var/log/munge/munged.log"
fi

# -- the configuration: one node, one partition, no accounting database ------------------------------------------
CPUS=${SLURM_UP_CPUS:-$(nproc)}
MEM_KB=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
MEM_MB=${SLURM_UP_MEM_MB:-$((MEM_KB / 1024 * 9 / 10))}
GRES_LINE=""
GRES_TYPES=""
if ls /dev/nvidia[0-9]* >/dev/null 2>&1; then
    GPUS=$(ls -d /dev/nvidia[0-9]* | wc -l)
    GRES_TYPES="GresTypes=gpu"
    GRES_LINE="Gres=gpu:$GPUS"
    : >"$CONF_DIR/gres.conf.new"
    for dev in /dev/nvidia[0-9]*; do echo "NodeName=$NODE Name=gpu File=$dev" >>"$CONF_DIR/gres.conf.new"; done
    mv "$CONF_DIR/gres.conf.new" "$CONF_DIR/gres.conf"
fi
mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd /run/slurm
cat >"$CONF.new" <<EOF
# written by greedymm's scripts/slurm-up.sh: a one-node cluster on $NODE
ClusterName=greedymm
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job waits this long (seconds) before it may start again (the default is 120)
AuthInfo=cred_expire=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
# look at the queue every few seconds (the defaults, 60 s and 30 s, leave a requeued job waiting)
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
# the node may declare more CPUs or memory than the machine has (SLURM_UP_CPUS)
SlurmdParameters=config_overrides
$GRES_TYPES
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB $GRES_LINE State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
if ! cmp -s "$CONF.new" "$CONF"; then
    mv "$CONF.new" "$CONF"
    say "wrote $CONF ($CPUS CPUs, $MEM_MB MB${GRES_LINE:+, $GRES_LINE})"
    CHANGED=1
else
    rm -f "$CONF.new"
    CHANGED=0
fi

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if running /run/slurm/slurmctld.pid && [ "$CHANGED" = 1 ]; then
    say "configuration changed: restarting the daemons"
    kill "$(cat /run/slurm/slurmd.pid 2>/dev/null)" 2>/dev/null || true
    kill "$(cat /run/slurm/slurmctld.pid)" 2>/dev/null || true
    sleep 2
fi
if ! running /run/slurm/slurmctld.pid; then
    say "starting slurmctld"
    slurmctld
fi
if ! running /run/slurm/slurmd.pid; then
    say "starting slurmd"
    slurmd
fi

if [ "$CHANGED" = 0 ] && node_ready; then
    say "already up: $(sinfo -h -o '%P %D %T %c CPUs %m MB' | head -1)"
    exit 0
fi
for _ in $(seq 60); do
    node_ready && break
    state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1 || true)
    case "$state" in down* | drain* | fail*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;; esac
    sleep 1
done
node_ready || die "the node is not ready ($(sinfo -h -n "$NODE" -o '%T %E' 2>&1 | head -1)); see $LOG_DIR/*.log"
say "up: $(sinfo -h -o '%P %D %T %c CPUs %m MB' | head -1)"
