# shellcheck shell=bash
# Helpers shared by the benchmark sections: logging, timing, statistics, cgroup CPU
# accounting and the results file. Sourced by bench/run.sh.

# Record layout of $RESULTS (tab-separated, one line per workload and server):
#   workload  server  unit  better  value  values  cpu_unit  cpu  cpus  wall  client_cpu  note
# `value` and `cpu` are medians of the comma-separated `values` and `cpus`; `better` is
# "higher" or "lower" and tells how the ratio against the peer is read.

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { log "warning: $*"; }
die() {
    log "error: $*"
    exit 1
}

# require_commands NAME...: fail with the Debian package hint when a command is missing.
require_commands() {
    local name missing=()
    for name in "$@"; do
        command -v "$name" >/dev/null 2>&1 || missing+=("$name")
    done
    [ ${#missing[@]} -eq 0 ] ||
        die "commands not found: ${missing[*]} (see docs/benchmarks.md for the packages)"
}

# Arithmetic on decimal numbers through awk, which bash lacks.
calc() { awk "BEGIN { printf \"%.6g\n\", $1 }"; }
round() { awk -v v="$1" -v d="${2:-1}" 'BEGIN { printf "%.*f\n", d, v }'; }

# median VALUE...: the middle value, or the mean of the two middle values.
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END {
            if (NR == 0) { print "nan"; exit }
            if (NR % 2 == 1) print v[(NR + 1) / 2]
            else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}

# seconds_since START: wall seconds since START, a value of $EPOCHREALTIME.
seconds_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.6f\n", b - a }'; }

# --- cgroups ----------------------------------------------------------------------------
# Every server runs in its own cpuacct cgroup under $CGROUP_ROOT, and the shell that runs
# the clients moves into $CGROUP_ROOT/clients. cpuacct.usage counts user + system time of
# every process and thread in the group, including children that were re-parented away
# (OpenSSH's per-connection processes).

CPUACCT=${CPUACCT:-/sys/fs/cgroup/cpuacct}
CGROUP_ROOT=$CPUACCT/ferry-bench-$$

cgroup_create() {
    mkdir -p "$CGROUP_ROOT/$1" ||
        die "cannot create cgroup $CGROUP_ROOT/$1; run as root with cgroup v1 cpuacct at $CPUACCT"
}

# cgroup_cpu NAME: CPU seconds (user + system) used by the group so far.
cgroup_cpu() {
    awk '{ printf "%.6f\n", $1 / 1e9 }' "$CGROUP_ROOT/$1/cpuacct.usage"
}

# cgroup_pids NAME: the processes in the group, one per line.
cgroup_pids() { cat "$CGROUP_ROOT/$1/cgroup.procs" 2>/dev/null; }

# cgroup_remove NAME: removes the group once it is empty (its processes may take a moment
# to be reaped); bounded to five seconds.
cgroup_remove() {
    local i
    [ -d "$CGROUP_ROOT/$1" ] || return 0
    for ((i = 0; i < 50; i++)); do
        rmdir "$CGROUP_ROOT/$1" 2>/dev/null && return 0
        sleep 0.1
    done
    warn "cgroup $CGROUP_ROOT/$1 is not empty; left in place"
}

enter_client_cgroup() {
    cgroup_create clients
    echo $$ >"$CGROUP_ROOT/clients/cgroup.procs" || die "cannot move the shell into $CGROUP_ROOT/clients"
}

leave_client_cgroup() {
    [ -d "$CGROUP_ROOT/clients" ] || return 0
    echo $$ >"$CPUACCT/cgroup.procs" 2>/dev/null
    cgroup_remove clients
    rmdir "$CGROUP_ROOT" 2>/dev/null || true
}

# --- machine load -----------------------------------------------------------------------

# task_cpu: CPU seconds the whole machine spent in user, nice and system time since boot.
# Interrupt and softirq time are left out because the cgroups do not count them either.
task_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '$1 == "cpu" { printf "%.4f\n", ($2 + $3 + $4) / hz; exit }' /proc/stat
}

# busy_cores SECONDS: cores kept busy by all tasks over the next SECONDS.
busy_cores() {
    local before after
    before=$(task_cpu)
    sleep "$1"
    after=$(task_cpu)
    calc "($after - $before) / $1"
}

# wait_for_quiet: waits until other work uses less than $QUIET_CORES cores (averaged over
# one second), at most $QUIET_TIMEOUT seconds. Sets QUIET_BUSY to the last reading.
wait_for_quiet() {
    local start=$SECONDS announced=0
    while :; do
        QUIET_BUSY=$(busy_cores 1)
        awk -v b="$QUIET_BUSY" -v m="$QUIET_CORES" 'BEGIN { exit !(b < m) }' && return 0
        if ((SECONDS - start >= QUIET_TIMEOUT)); then
            warn "other processes still use $QUIET_BUSY cores after ${QUIET_TIMEOUT}s; measuring anyway"
            RUN_DISTURBED=1
            return 0
        fi
        if [ $announced = 0 ]; then
            log "other processes use $QUIET_BUSY cores; waiting for less than $QUIET_CORES" \
                "(at most ${QUIET_TIMEOUT}s)"
            announced=1
        fi
    done
}

# --- one measured run -------------------------------------------------------------------

# measure_run SERVER CLEANUP COMMAND...: runs COMMAND once as a measured run against the
# server in cgroup SERVER. Sets RUN_WALL (s), RUN_CPU (server s), RUN_CLIENT (client s) and
# RUN_OTHER (CPU s used by every other process meanwhile). When other processes used more
# than $OTHER_LIMIT s plus 5% of the run, CLEANUP runs and the run is repeated, at most
# $RERUNS times; the last run counts and the record is marked as disturbed.
measure_run() {
    local server=$1 cleanup=$2 attempt start task0 srv0 cli0 task1
    shift 2
    RUN_DISTURBED=0
    for ((attempt = 0; attempt <= RERUNS; attempt++)); do
        wait_for_quiet
        srv0=$(cgroup_cpu "$server")
        cli0=$(cgroup_cpu clients)
        task0=$(task_cpu)
        start=$EPOCHREALTIME
        if ! "$@"; then
            warn "command failed: $*"
            return 1
        fi
        RUN_WALL=$(seconds_since "$start")
        # Lets the server finish its side (closing files, reaping session processes).
        sleep "$SETTLE"
        task1=$(task_cpu)
        RUN_CPU=$(calc "$(cgroup_cpu "$server") - $srv0")
        RUN_CLIENT=$(calc "$(cgroup_cpu clients) - $cli0")
        RUN_OTHER=$(calc "$task1 - $task0 - $RUN_CPU - $RUN_CLIENT")
        if awk -v o="$RUN_OTHER" -v l="$OTHER_LIMIT" -v w="$RUN_WALL" \
            'BEGIN { exit !(o <= l + 0.05 * w) }'; then
            return 0
        fi
        if ((attempt == RERUNS)); then
            RUN_DISTURBED=1
            warn "other processes used ${RUN_OTHER}s of CPU during the run;" \
                "no undisturbed run after $RERUNS repeats, keeping this one"
            return 0
        fi
        warn "other processes used ${RUN_OTHER}s of CPU during the run; measuring again"
        "$cleanup"
    done
}

# --- rounds of runs ---------------------------------------------------------------------

# Ports of the running servers by name, set by each section.
declare -A PORT_OF=()

# rounds DESCRIPTION SERVERS FUNCTION [ARGS...]: $RUNS rounds, in each of which
# FUNCTION NAME PORT ARGS... runs once for every server in the space-separated list SERVERS.
# The servers take turns so that a slow drift of the machine affects them alike.
rounds() {
    local description=$1 servers=$2 function=$3 run name
    shift 3
    for ((run = 1; run <= RUNS; run++)); do
        for name in $servers; do
            log "$description, run $run of $RUNS, $name"
            "$function" "$name" "${PORT_OF[$name]}" "$@"
        done
    done
}

# record_each SERVERS WORKLOAD UNIT BETTER CPU_UNIT NOTE: record for every server in SERVERS.
record_each() {
    local servers=$1 name
    shift
    for name in $servers; do record "$1" "$name" "$2" "$3" "$4" "$5"; done
}

# --- results ----------------------------------------------------------------------------

# Runs kept so far, per "workload|server" key, as space-separated lists; filled by add_run
# and written by record.
declare -A R_VALUES=() R_CPUS=() R_WALLS=() R_CLIENTS=() R_OTHER=() R_DISTURBED=()

# add_run WORKLOAD SERVER VALUE CPU: keeps one run's figure and its server CPU (already per
# unit of work), together with the wall time, client CPU and interference of the last
# measure_run.
add_run() {
    local key="$1|$2"
    R_VALUES[$key]+=" $3"
    R_CPUS[$key]+=" $4"
    R_WALLS[$key]+=" ${RUN_WALL:-0}"
    R_CLIENTS[$key]+=" ${RUN_CLIENT:-0}"
    R_OTHER[$key]=$(awk -v a="${R_OTHER[$key]:-0}" -v b="${RUN_OTHER:-0}" 'BEGIN { print (b > a) ? b : a }')
    [ "${RUN_DISTURBED:-0}" = 0 ] || R_DISTURBED[$key]=1
}

# record WORKLOAD SERVER UNIT BETTER CPU_UNIT NOTE: appends the medians of the runs kept
# for WORKLOAD and SERVER to $RESULTS.
record() {
    local workload=$1 server=$2 unit=$3 better=$4 cpu_unit=$5 note=$6 key="$1|$2"
    local -a values cpus walls clients
    read -ra values <<<"${R_VALUES[$key]:-}"
    read -ra cpus <<<"${R_CPUS[$key]:-}"
    read -ra walls <<<"${R_WALLS[$key]:-}"
    read -ra clients <<<"${R_CLIENTS[$key]:-}"
    if [ ${#values[@]} -eq 0 ]; then
        warn "$workload $server: no run succeeded"
        record_missing "$workload" "$server" "$unit" "$better" failed "no run succeeded"
        return 0
    fi
    note="${note:+$note; }other_cpu<=$(round "${R_OTHER[$key]}" 2)s"
    [ -z "${R_DISTURBED[$key]:-}" ] || note="$note; DISTURBED"
    local value cpu joined_values joined_cpus
    value=$(median "${values[@]}")
    cpu=$(median "${cpus[@]}")
    joined_values=$(IFS=,; echo "${values[*]}")
    joined_cpus=$(IFS=,; echo "${cpus[*]}")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$workload" "$server" "$unit" "$better" "$value" "$joined_values" "$cpu_unit" "$cpu" \
        "$joined_cpus" "$(median "${walls[@]}")" "$(median "${clients[@]}")" "$note" >>"$RESULTS"
    log "$workload $server: $value $unit (runs $joined_values), server cpu $cpu $cpu_unit"
}

# record_missing WORKLOAD SERVER UNIT BETTER STATUS NOTE: a record without figures, where
# STATUS is "failed" or "unsupported".
record_missing() {
    printf '%s\t%s\t%s\t%s\t%s\t\t\t\t\t\t\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" >>"$RESULTS"
}

# add_check TEXT: a line for the "Checks" list of the report.
add_check() {
    log "check: $1"
    printf '%s\n' "$1" >>"$CHECKS"
}

# --- test data --------------------------------------------------------------------------

# random_file PATH MIB: an incompressible file, kept between runs.
random_file() {
    local bytes=$(($2 * 1024 * 1024))
    [ -f "$1" ] && [ "$(stat -c %s "$1")" = "$bytes" ] && return 0
    log "writing $2 MiB of random data to $1"
    head -c "$bytes" /dev/urandom >"$1.part" && mv "$1.part" "$1"
}

# small_files DIR COUNT BYTES: COUNT random files named f00000... in DIR.
small_files() {
    [ -d "$1" ] && [ "$(find "$1" -type f | wc -l)" = "$2" ] && return 0
    rm -rf "$1"
    mkdir -p "$1"
    head -c $(($2 * $3)) /dev/urandom | (cd "$1" && split -a 5 -d -b "$3" - f)
}

# empty_entries DIR COUNT: COUNT empty files named e00000... in DIR, for listings.
empty_entries() {
    [ -d "$1" ] && [ "$(find "$1" -type f | wc -l)" = "$2" ] && return 0
    rm -rf "$1"
    mkdir -p "$1"
    (cd "$1" && seq -f 'e%05g' 0 $(($2 - 1)) | xargs touch)
}

# wait_for_port PORT SECONDS: waits until 127.0.0.1:PORT accepts connections.
wait_for_port() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

port_is_free() { [ -z "$(ss -Htln "sport = :$1")" ]; }
