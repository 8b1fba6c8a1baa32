# shellcheck shell=bash
# FTP: 1 GiB STOR and RETR in plain FTP and explicit FTPS, and LIST and MLSD of a folder
# with many entries, against Ferry and vsftpd. Transfers use lftp and listings Python's
# ftplib, both in passive mode. curl checks the files, logs in for the logins section, and
# has a workload of its own because of the wait described at ftp_curl_retr.

# ftp_curl ARGS...: curl with the bench user's credentials, failing on FTP errors.
ftp_curl() {
    timeout "$CLIENT_TIMEOUT" curl -sS --fail -u "$BENCH_USER:$BENCH_PASSWORD" "$@" \
        2>>"$LOGS/ftp-client.log"
}

# FTPS: AUTH TLS on the control connection, PROT P on data connections, and one cipher
# suite for both servers, so that the cipher does not decide the result.
FTPS_CURL=(--ssl-reqd --insecure --tls13-ciphers TLS_AES_128_GCM_SHA256
    --ciphers ECDHE-RSA-AES128-GCM-SHA256)
# lftp takes its commands on one line: a newline in -e ends the command list.
LFTP_COMMON='set cache:enable no; set net:max-retries 1; set net:timeout 60; set xfer:clobber on;'
LFTP_PLAIN='set ftp:ssl-allow no;'
LFTP_TLS='set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:verify-certificate no;'
LFTP_TLS+=' set ssl:priority "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM";'

# ftp_lftp PORT MODE COMMANDS: one lftp session (one login) that runs COMMANDS; MODE is
# plain or tls. Listings are not cached, and a failed command is not retried.
ftp_lftp() {
    local settings=$LFTP_PLAIN
    [ "$2" = plain ] || settings=$LFTP_TLS
    timeout "$CLIENT_TIMEOUT" lftp -u "$BENCH_USER,$BENCH_PASSWORD" \
        -e "$LFTP_COMMON $settings $3; bye" "ftp://127.0.0.1:$1" 2>>"$LOGS/ftp-client.log"
}

# ftp_check NAME PORT: a round trip of check.bin must return the same bytes; check.bin
# stays on the server for ftp_curl_retr.
ftp_check() {
    local name=$1 port=$2
    rm -f "$CLIENT_DIR/check.out"
    if ! ftp_curl -T "$CLIENT_DIR/check.bin" "ftp://127.0.0.1:$port/check.bin" ||
        ! ftp_lftp "$port" tls "get check.bin -o $CLIENT_DIR/check.out" ||
        ! cmp -s "$CLIENT_DIR/check.bin" "$CLIENT_DIR/check.out"; then
        die "$name: FTP round trip failed or changed the file; see $LOGS/ftp-client.log"
    fi
    rm -f "$CLIENT_DIR/check.out"
    timeout 60 curl -sS -v "${FTPS_CURL[@]}" -u "$BENCH_USER:$BENCH_PASSWORD" -o /dev/null \
        "ftp://127.0.0.1:$port/" 2>&1 |
        sed -n 's/^\* SSL connection using \(.*\)$/\1/p' | head -n 1 >"$STATE/$name.tls"
    add_check "FTPS with $name and curl: $(cat "$STATE/$name.tls")"
}

clean_ftp_bulk() { rm -f "$DATA"/*/bulk.bin; }

# ftp_bulk NAME PORT MODE: STOR then RETR of bulk.bin, each in its own session.
ftp_bulk() {
    local name=$1 port=$2 mode=$3 bytes gib
    bytes=$(stat -c %s "$CLIENT_DIR/bulk.bin")
    gib=$(calc "$bytes / 1073741824")
    if measure_run "$name" clean_ftp_bulk ftp_lftp "$port" "$mode" "put $CLIENT_DIR/bulk.bin -o bulk.bin"; then
        if [ "$(stat -c %s "$DATA/$name/bulk.bin" 2>/dev/null)" = "$bytes" ]; then
            add_run "ftp STOR $mode" "$name" "$(calc "$bytes / 1e6 / $RUN_WALL")" "$(calc "$RUN_CPU / $gib")"
        else
            warn "$name: the stored bulk.bin does not have $bytes bytes"
        fi
    fi
    if measure_run "$name" : ftp_lftp "$port" "$mode" "get bulk.bin -o /dev/null"; then
        add_run "ftp RETR $mode" "$name" "$(calc "$bytes / 1e6 / $RUN_WALL")" "$(calc "$RUN_CPU / $gib")"
    fi
    clean_ftp_bulk
}

# curl_retrievals PORT: $CURL_RETRIEVALS sequential curl processes that each fetch check.bin.
curl_retrievals() {
    local i
    for ((i = 0; i < CURL_RETRIEVALS; i++)); do
        ftp_curl -o /dev/null "ftp://127.0.0.1:$1/check.bin" || return 1
    done
}

# ftp_curl_retr NAME PORT: fetches of a 4 MiB file with curl 7.88. When the EPSV reply is
# already there as curl reads the control connection right after sending EPSV, curl waits
# for its next timer (about 0.2 s, 1 s in a reused session) before it opens the data
# connection, so this figure depends on how fast the server replies.
ftp_curl_retr() {
    if measure_run "$1" : curl_retrievals "$2"; then
        add_run "ftp curl RETR 4 MiB" "$1" "$(calc "$RUN_WALL * 1000 / $CURL_RETRIEVALS")" \
            "$(calc "$RUN_CPU * 1000 / $CURL_RETRIEVALS")"
    fi
}

# ftplib_listings PORT COMMAND TIME_FILE: $LISTINGS listings of the folder `list` with
# COMMAND (LIST or MLSD) in one ftplib session, one data connection each. The client writes
# the seconds from connect to the last listing, without the interpreter's start-up.
ftplib_listings() {
    timeout "$CLIENT_TIMEOUT" python3 "$BENCH_DIR/ftp_listings.py" --port "$1" \
        --user "$BENCH_USER" --password "$BENCH_PASSWORD" --command "$2" --path list \
        --count "$LISTINGS" --expect "$LIST_ENTRIES" --match 'e[0-9]{5}' --time-file "$3" \
        2>>"$LOGS/ftp-client.log"
}

ftp_listing() {
    local name=$1 port=$2 command=$3 time_file=$STATE/listing.time
    rm -f "$time_file"
    if measure_run "$name" : ftplib_listings "$port" "$command" "$time_file"; then
        add_run "ftp $command $LIST_ENTRIES entries" "$name" \
            "$(calc "$(cat "$time_file") * 1000 / $LISTINGS")" "$(calc "$RUN_CPU * 1000 / $LISTINGS")"
    fi
}

# ftp_listing_supported NAME PORT COMMAND: whether one listing with COMMAND, sent as is by
# curl, returns every entry.
ftp_listing_supported() {
    local lines
    lines=$(ftp_curl -X "$3" "ftp://127.0.0.1:$2/list/" | grep -c 'e[0-9]\{5\}')
    if [ "$lines" = "$LIST_ENTRIES" ]; then
        return 0
    fi
    warn "$1: $3 returned ${lines:-no} entries of $LIST_ENTRIES; not measured"
    return 1
}

section_ftp() {
    local mode command name measured servers="ferry vsftpd"
    start_ferry ferry ftp
    PORT_OF["ferry"]=$FTP_PORT
    start_vsftpd vsftpd
    PORT_OF["vsftpd"]=$FTP_PORT

    random_file "$CLIENT_DIR/check.bin" 4
    random_file "$CLIENT_DIR/bulk.bin" "$BULK_MIB"
    for name in $servers; do
        ftp_check "$name" "${PORT_OF[$name]}"
        empty_entries "$DATA/$name/list" "$LIST_ENTRIES"
        chown -R "$BENCH_USER:" "$DATA/$name/list"
    done

    for mode in plain tls; do
        rounds "ftp $BULK_MIB MiB $mode" "$servers" ftp_bulk "$mode"
        record_each "$servers" "ftp STOR $mode" MB/s higher "s/GiB" "$BULK_MIB MiB, lftp put"
        record_each "$servers" "ftp RETR $mode" MB/s higher "s/GiB" "$BULK_MIB MiB, lftp get to /dev/null"
    done

    rounds "ftp $CURL_RETRIEVALS curl retrievals" "$servers" ftp_curl_retr
    record_each "$servers" "ftp curl RETR 4 MiB" ms lower "ms/file" \
        "per file; $CURL_RETRIEVALS curl processes in turn, login included"

    for command in LIST MLSD; do
        measured=""
        for name in $servers; do
            if ftp_listing_supported "$name" "${PORT_OF[$name]}" "$command"; then
                measured+=" $name"
            else
                record_missing "ftp $command $LIST_ENTRIES entries" "$name" ms lower unsupported \
                    "$command does not return the listing"
            fi
        done
        rounds "ftp $command of $LIST_ENTRIES entries" "$measured" ftp_listing "$command"
        record_each "$measured" "ftp $command $LIST_ENTRIES entries" ms lower "ms/listing" \
            "per listing; $LISTINGS listings in one ftplib session, login included"
    done

    stop_server ferry
    stop_server vsftpd
}
