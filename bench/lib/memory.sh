# shellcheck shell=bash
# Memory of idle logged-in sessions: $SESSIONS sessions per protocol are opened and left
# idle, and the resident memory of every process in the server's cgroup is compared with
# the same server before the first session. Each run starts fresh servers, so that memory
# kept by an earlier run does not lower the next run's figure.

# server_memory NAME: "RSS PSS PROCESSES THREADS" of the server's cgroup, memory in KiB.
# RSS counts shared pages once per process; PSS splits them between the processes.
server_memory() {
    local pid rss pss threads total_rss=0 total_pss=0 processes=0 total_threads=0
    for pid in $(cgroup_pids "$1"); do
        rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$pid/status" 2>/dev/null)
        threads=$(awk '$1 == "Threads:" { print $2 }' "/proc/$pid/status" 2>/dev/null)
        pss=$(awk '$1 == "Pss:" { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null)
        [ -n "$rss" ] || continue
        total_rss=$((total_rss + rss))
        total_pss=$((total_pss + ${pss:-0}))
        total_threads=$((total_threads + ${threads:-0}))
        processes=$((processes + 1))
    done
    echo "$total_rss $total_pss $processes $total_threads"
}

# wait_for_status FILE HELPER EXPECTED: waits, at most $CLIENT_TIMEOUT seconds, until the
# helper writes EXPECTED to FILE; returns 1 when it reports a failure or exits first.
wait_for_status() {
    local file=$1 helper=$2 expected=$3 i status=""
    for ((i = 0; i < CLIENT_TIMEOUT * 10; i++)); do
        status=$(cat "$file" 2>/dev/null)
        [ "$status" = "$expected" ] && return 0
        case $status in failed*) break ;; esac
        kill -0 "$helper" 2>/dev/null || break
        sleep 0.1
    done
    warn "idle sessions: expected \"$expected\", got \"${status:-nothing}\"; see $LOGS/idle-sessions.log"
    return 1
}

# memory_run WORKLOAD NAME PROTOCOL PORT: opens $SESSIONS idle sessions, pausing at half of
# them, and keeps two figures of this run: the growth over the idle server per session, and
# the growth from half to all sessions per added session. The second leaves out what the
# first sessions cost once (thread pools, memory the allocator keeps after the first logins).
memory_run() {
    local workload=$1 name=$2 protocol=$3 port=$4 ready=$STATE/sessions.ready resume=$STATE/sessions.resume
    local half=$((SESSIONS / 2)) base_rss base_pss half_rss rss pss processes threads helper
    local start srv0 cli0 task0 task1 open_conns
    # Threads that ran at start-up, such as Ferry's first password hash, end after 10 s
    # without work and take their allocator caches with them.
    sleep "$IDLE_SETTLE"
    read -r base_rss base_pss _ _ <<<"$(server_memory "$name")"
    rm -f "$ready" "$resume"
    wait_for_quiet
    srv0=$(cgroup_cpu "$name")
    cli0=$(cgroup_cpu clients)
    task0=$(task_cpu)
    start=$EPOCHREALTIME
    python3 "$BENCH_DIR/idle_sessions.py" --protocol "$protocol" --port "$port" --user "$BENCH_USER" \
        --password "$BENCH_PASSWORD" --key "$STATE/client_key" --count "$SESSIONS" \
        --checkpoint "$half" --resume "$resume" --ready "$ready" --hold "$CLIENT_TIMEOUT" \
        2>>"$LOGS/idle-sessions.log" &
    helper=$!
    IDLE_HELPER=$helper
    if ! wait_for_status "$ready" "$helper" "open $half"; then
        stop_idle_helper
        return 1
    fi
    # Short-lived helper threads and processes end within this time.
    sleep "$SESSION_SETTLE"
    read -r half_rss _ _ _ <<<"$(server_memory "$name")"
    touch "$resume"
    if ! wait_for_status "$ready" "$helper" "open $SESSIONS"; then
        stop_idle_helper
        return 1
    fi
    RUN_WALL=$(seconds_since "$start")
    task1=$(task_cpu)
    RUN_CPU=$(calc "$(cgroup_cpu "$name") - $srv0")
    RUN_CLIENT=$(calc "$(cgroup_cpu clients) - $cli0")
    RUN_OTHER=$(calc "$task1 - $task0 - $RUN_CPU - $RUN_CLIENT")
    RUN_DISTURBED=0

    sleep "$SESSION_SETTLE"
    open_conns=$(ss -Htn state established "sport = :$port" | wc -l)
    read -r rss pss processes threads <<<"$(server_memory "$name")"
    stop_idle_helper
    if [ "$open_conns" -lt "$SESSIONS" ]; then
        warn "$name: only $open_conns of $SESSIONS connections were still open when memory was read"
        return 1
    fi
    add_run "$workload" "$name" "$(calc "($rss - $base_rss) / $SESSIONS")" \
        "$(calc "$RUN_CPU * 1000 / $SESSIONS")"
    add_run "$workload, marginal" "$name" "$(calc "($rss - $half_rss) / ($SESSIONS - $half)")" \
        "$(calc "$RUN_CPU * 1000 / $SESSIONS")"
    MEMORY_NOTE[$workload|$name]="PSS $(calc "($pss - $base_pss) / $SESSIONS") KiB/session;"
    MEMORY_NOTE[$workload|$name]+=" RSS idle $base_rss KiB, at $half sessions $half_rss KiB,"
    MEMORY_NOTE[$workload|$name]+=" at $SESSIONS sessions $rss KiB; $processes processes and $threads threads"
}

stop_idle_helper() {
    [ -n "$IDLE_HELPER" ] || return 0
    kill -TERM "$IDLE_HELPER" 2>/dev/null
    wait "$IDLE_HELPER" 2>/dev/null
    IDLE_HELPER=""
}

declare -A MEMORY_NOTE=()

section_memory() {
    local run name protocol workload peer ferry_port note
    for protocol in ssh ftp dav; do
        case $protocol in
            ssh) peer=openssh workload="idle SSH session memory" ;;
            ftp) peer=vsftpd workload="idle FTP session memory" ;;
            dav) peer=nginx workload="idle WebDAV connection memory" ;;
        esac
        for ((run = 1; run <= RUNS; run++)); do
            log "$workload, $SESSIONS sessions, run $run of $RUNS"
            case $protocol in
                ssh)
                    start_ferry ferry sftp idle
                    ferry_port=$SFTP_PORT
                    start_sshd "$peer"
                    memory_run "$workload" ferry ssh "$ferry_port"
                    memory_run "$workload" "$peer" ssh "$SFTP_PORT"
                    ;;
                ftp)
                    start_ferry ferry ftp idle
                    ferry_port=$FTP_PORT
                    start_vsftpd "$peer" idle
                    memory_run "$workload" ferry ftp "$ferry_port"
                    memory_run "$workload" "$peer" ftp "$FTP_PORT"
                    ;;
                dav)
                    start_ferry ferry dav idle
                    ferry_port=$DAV_PORT
                    start_nginx "$peer" idle
                    memory_run "$workload" ferry dav "$ferry_port"
                    memory_run "$workload" "$peer" dav "$DAV_PORT"
                    ;;
            esac
            stop_server ferry
            stop_server "$peer"
        done
        for name in ferry "$peer"; do
            note="RSS of the cgroup minus the idle server, over $SESSIONS sessions;"
            note+=" last run: ${MEMORY_NOTE[$workload|$name]:-none}"
            record "$workload" "$name" KiB/session lower "ms/login" "$note"
            record "$workload, marginal" "$name" KiB/session lower "ms/login" \
                "RSS growth from $((SESSIONS / 2)) to $SESSIONS sessions, per added session"
        done
    done
}
