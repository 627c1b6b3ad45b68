#!/usr/bin/env bash
# A real single-node SLURM on this machine, for tests and for trying the cluster path on a laptop.
#
#   sudo scripts/slurm_local.sh start    # install (Debian/Ubuntu apt) if needed, start, wait for an idle node
#   sudo scripts/slurm_local.sh status   # daemons and node state; exit 0 only when the node takes jobs
#   sudo scripts/slurm_local.sh stop     # stop every daemon this script started (by PID file)
#
# Daemons: munged (auth), mariadbd (its own datadir, 127.0.0.1:$DB_PORT), slurmdbd (accounting —
# without `sacct` submitit never notices a cancelled job and waits forever), slurmctld, slurmd.
# No systemd: the script starts them itself and stops them by the PID files under $STATE.
# Everything it writes lives under $STATE (default /var/lib/spsamp-slurm) plus
# /etc/slurm/{slurm,slurmdbd}.conf, which it only overwrites when it wrote them (marker line).
# Idempotent: `start` on a running cluster returns at once; `stop` on a stopped one does nothing.
set -euo pipefail

STATE=${SPSAMP_SLURM_DIR:-/var/lib/spsamp-slurm}
CLUSTER=${SPSAMP_SLURM_CLUSTER:-spsamp}
DB_PORT=${SPSAMP_SLURM_DB_PORT:-3316}
PARTITION=${SPSAMP_SLURM_PARTITION:-debug}
CONF_DIR=/etc/slurm
MARK="# written by spsamp scripts/slurm_local.sh"
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
RUN="$STATE/run"
LOG="$STATE/log"

say() { echo "slurm_local: $*" >&2; }
die() { say "error: $*"; exit 1; }

pidfile() {  # where each daemon keeps its PID (munged and mariadbd write theirs as their own user)
    case "$1" in
        munged) echo "$STATE/munge/munged.pid" ;;
        mariadbd) echo "$STATE/db/mariadbd.pid" ;;
        *) echo "$RUN/$1.pid" ;;
    esac
}

alive() {  # alive <pidfile>: the process named in the PID file is running
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() {  # wait_for <seconds> <what> <command...>
    local secs=$1 what=$2; shift 2
    for _ in $(seq "$((secs * 4))"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    die "$what not ready after ${secs}s (logs in $LOG)"
}

install_packages() {
    local missing=0
    for bin in munged mariadbd slurmdbd slurmctld slurmd sbatch sacct; do
        command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing=1
    done
    [ "$missing" = 0 ] && return 0
    command -v apt-get >/dev/null || die "SLURM is not installed and apt-get is missing: install ${PACKAGES[*]} by hand"
    say "installing ${PACKAGES[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >"$LOG/apt.log" 2>&1 || die "apt-get update failed (see $LOG/apt.log)"
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$LOG/apt.log" 2>&1 \
        || die "apt-get install failed (see $LOG/apt.log)"
}

write_conf() {  # write_conf <path> <mode>; content on stdin
    local path=$1 mode=$2
    if [ -e "$path" ] && ! grep -qF "$MARK" "$path"; then
        die "$path exists and was not written by this script; move it away to use the local SLURM"
    fi
    install -d "$(dirname "$path")"
    { echo "$MARK"; cat; } >"$path.tmp"
    chmod "$mode" "$path.tmp"
    mv "$path.tmp" "$path"
}

configure() {
    local node mem
    # the node line is what slurmd itself detects (full socket/core topology), bound to loopback
    node=$(/usr/sbin/slurmd -C | head -1)
    [[ "$node" == NodeName=* ]] || die "slurmd -C gave no node line: $node"
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
    # leave 5% headroom: slurmd drains a node that reports less memory than configured
    node=$(sed "s/RealMemory=[0-9]*/RealMemory=$((mem * 95 / 100))/" <<<"$node")
    write_conf "$CONF_DIR/slurm.conf" 644 <<EOF
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
MailProg=/bin/true
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=5
MinJobAge=60
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    write_conf "$CONF_DIR/slurmdbd.conf" 600 <<EOF
DbdHost=localhost
SlurmUser=root
AuthType=auth/munge
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=spsamp
StorageLoc=slurm_acct_db
EOF
}

start_munge() {
    alive "$(pidfile munged)" && return 0
    [ -s /etc/munge/munge.key ] || /usr/sbin/mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 600 /etc/munge/munge.key
    install -d -o munge -g munge -m 755 /run/munge "$STATE/munge"
    runuser -u munge -- /usr/sbin/munged --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" \
        --seed-file="$STATE/munge/munged.seed"
    wait_for 10 munged sh -c "munge -n | unmunge"
}

start_db() {
    alive "$(pidfile mariadbd)" && return 0
    local data="$STATE/mysql" sock="$STATE/db/mysqld.sock"
    if [ ! -d "$data/mysql" ]; then
        install -d -o mysql -g mysql "$data"
        mariadb-install-db --user=mysql --datadir="$data" --auth-root-authentication-method=socket \
            >"$LOG/mariadb-install.log" 2>&1 || die "mariadb-install-db failed (see $LOG/mariadb-install.log)"
    fi
    install -d -o mysql -g mysql "$STATE/db"
    /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$data" --socket="$sock" --pid-file="$(pidfile mariadbd)" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --log-error="$LOG/mariadbd.log" >/dev/null 2>&1 &
    wait_for 60 mariadbd mariadb --no-defaults -S "$sock" -uroot -e "select 1"
    mariadb --no-defaults -S "$sock" -uroot <<'EOF'
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'spsamp';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'spsamp';
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
}

start_slurm() {
    install -d "$STATE/ctld" "$STATE/spool"
    if ! alive "$(pidfile slurmdbd)"; then
        /usr/sbin/slurmdbd
        wait_for 60 slurmdbd sacctmgr -n show cluster
    fi
    # the cluster must exist in the accounting database before slurmctld reports jobs to it
    sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
    alive "$(pidfile slurmctld)" || /usr/sbin/slurmctld
    wait_for 30 slurmctld scontrol ping
    alive "$(pidfile slurmd)" || /usr/sbin/slurmd
    local node
    node=$(sinfo -h -N -o %N | head -1)
    for _ in $(seq 240); do
        case "$(sinfo -h -N -o %t | head -1)" in
            idle*|mix*|alloc*) return 0 ;;
            down*|drain*|drng*) scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.25
    done
    die "node $node not idle after 60s: $(sinfo -h -N -o '%t %E') (logs in $LOG)"
}

stop_all() {  # SIGTERM to every daemon at once (each takes ~2 s to exit), then wait; SIGKILL after 20 s
    local name pidfile pid pids=()
    for name in slurmd slurmctld slurmdbd mariadbd munged; do
        pidfile=$(pidfile "$name")
        if alive "$pidfile"; then
            pid=$(cat "$pidfile"); kill "$pid" 2>/dev/null || true; pids+=("$name:$pid")
        fi
        rm -f "$pidfile"
    done
    for entry in "${pids[@]}"; do
        name=${entry%%:*}; pid=${entry#*:}
        for _ in $(seq 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        if kill -0 "$pid" 2>/dev/null; then
            say "$name ($pid) ignored SIGTERM for 20s; killing it"
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
}

status() {
    local rc=0 name
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        if alive "$(pidfile $name)"; then echo "$name: running (pid $(cat "$(pidfile $name)"))"; else echo "$name: stopped"; rc=1; fi
    done
    if [ "$rc" = 0 ]; then
        sinfo -N -o "%N %P %t %c %m" || rc=1
        case "$(sinfo -h -N -o %t 2>/dev/null | head -1)" in idle*|mix*|alloc*) ;; *) rc=1 ;; esac
    fi
    return "$rc"
}

main() {
    local cmd=${1:-}
    case "$cmd" in
        start|stop|status) ;;
        *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
    esac
    if [ "$cmd" = status ]; then status; exit; fi
    [ "$(id -u)" = 0 ] || die "$cmd needs root (it installs packages and runs the daemons): sudo $0 $cmd"
    install -d "$STATE" "$RUN" "$LOG"
    if [ "$cmd" = stop ]; then
        stop_all
        say "stopped"
        exit 0
    fi
    if status >/dev/null 2>&1; then say "already running"; exit 0; fi
    local t0=$SECONDS
    install_packages
    configure
    start_munge
    start_db
    start_slurm
    say "ready in $((SECONDS - t0))s: $(sinfo -h -N -o '%N %P %t cpus=%c mem=%mMB')"
}

main "$@"
