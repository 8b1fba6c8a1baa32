# shellcheck shell=bash
# FTP: 1 GiB STOR and RETR in plain FTP and explicit FTPS, and LIST and MLSD of a folder
# with many entries, against Ferry and vsftpd. The client is curl in passive mode.

# ftp_curl ARGS...: curl with the bench user's credentials, failing on FTP errors.
ftp_curl() {
    timeout "$CLIENT_TIMEOUT" curl -sS --fail -u "$BENCH_USER:$BENCH_PASSWORD" "$@" \
        2>>"$LOGS/ftp-client.log"
}

# FTPS: AUTH TLS on the control connection, PROT P on data connections, and one cipher
# suite for both servers, so that the cipher does not decide the result.
FTPS_OPTS=(--ssl-reqd --insecure --tls13-ciphers TLS_AES_128_GCM_SHA256
    --ciphers ECDHE-RSA-AES128-GCM-SHA256)

ftp_check() {
    local name=$1 port=$2
    rm -f "$CLIENT_DIR/check.out"
    if ! ftp_curl -T "$CLIENT_DIR/check.bin" "ftp://127.0.0.1:$port/check.bin" ||
        ! ftp_curl "${FTPS_OPTS[@]}" -o "$CLIENT_DIR/check.out" "ftp://127.0.0.1:$port/check.bin" ||
        ! cmp -s "$CLIENT_DIR/check.bin" "$CLIENT_DIR/check.out"; then
        die "$name: FTP round trip failed or changed the file; see $LOGS/ftp-client.log"
    fi
    rm -f "$CLIENT_DIR/check.out" "$DATA/$name/check.bin"
    timeout 60 curl -sS -v "${FTPS_OPTS[@]}" -u "$BENCH_USER:$BENCH_PASSWORD" -o /dev/null \
        "ftp://127.0.0.1:$port/" 2>&1 |
        sed -n 's/^\* SSL connection using \(.*\)$/\1/p' | head -n 1 >"$STATE/$name.tls"
    add_check "FTPS with $name: $(cat "$STATE/$name.tls")"
}

clean_ftp_bulk() { rm -f "$DATA"/*/bulk.bin; }

# ftp_bulk NAME PORT MODE: STOR then RETR of bulk.bin; MODE is plain or tls.
ftp_bulk() {
    local name=$1 port=$2 mode=$3 bytes gib opts=()
    [ "$mode" = plain ] || opts=("${FTPS_OPTS[@]}")
    bytes=$(stat -c %s "$CLIENT_DIR/bulk.bin")
    gib=$(calc "$bytes / 1073741824")
    if measure_run "$name" clean_ftp_bulk ftp_curl "${opts[@]}" -T "$CLIENT_DIR/bulk.bin" \
        "ftp://127.0.0.1:$port/bulk.bin"; then
        if [ "$(stat -c %s "$DATA/$name/bulk.bin" 2>/dev/null)" = "$bytes" ]; then
            add_run "ftp STOR $mode" "$name" "$(calc "$bytes / 1e6 / $RUN_WALL")" "$(calc "$RUN_CPU / $gib")"
        else
            warn "$name: the stored bulk.bin does not have $bytes bytes"
        fi
    fi
    if measure_run "$name" : ftp_curl "${opts[@]}" -o /dev/null "ftp://127.0.0.1:$port/bulk.bin"; then
        add_run "ftp RETR $mode" "$name" "$(calc "$bytes / 1e6 / $RUN_WALL")" "$(calc "$RUN_CPU / $gib")"
    fi
    clean_ftp_bulk
}

# ftp_listing NAME PORT COMMAND: $LISTINGS listings of the folder `list` in one curl
# session (one login, one data connection each); COMMAND is LIST or MLSD.
ftp_listing() {
    local name=$1 port=$2 command=$3 i urls=()
    for ((i = 0; i < LISTINGS; i++)); do urls+=(-o /dev/null "ftp://127.0.0.1:$port/list/"); done
    if measure_run "$name" : ftp_curl -X "$command" "${urls[@]}"; then
        add_run "ftp $command $LIST_ENTRIES entries" "$name" "$(calc "$RUN_WALL * 1000 / $LISTINGS")" \
            "$(calc "$RUN_CPU * 1000 / $LISTINGS")"
    fi
}

# ftp_listing_supported NAME PORT COMMAND: whether one listing returns every entry.
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
        record_each "$servers" "ftp STOR $mode" MB/s higher "s/GiB" "$BULK_MIB MiB, curl -T"
        record_each "$servers" "ftp RETR $mode" MB/s higher "s/GiB" "$BULK_MIB MiB, curl -o /dev/null"
    done

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
            "per listing; $LISTINGS listings in one curl session, login included"
    done

    stop_server ferry
    stop_server vsftpd
}
