# shellcheck shell=bash
# SFTP: 1 GiB put and get per cipher, and many small files in one session, against Ferry
# and OpenSSH's sshd with sftp-server. The client is OpenSSH's sftp in batch mode.

# Both servers are forced to the same key exchange and host key algorithm:
# sntrup761x25519, OpenSSH's first choice, is not offered by Ferry and costs more CPU.
sftp_options() {
    SFTP_OPTS=(-q -i "$STATE/client_key" -o IdentitiesOnly=yes -o BatchMode=yes
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
        -o KexAlgorithms=curve25519-sha256 -o HostKeyAlgorithms=ssh-ed25519)
}

# The cipher of every SFTP session that does not measure a cipher: OpenSSH's first choice.
SFTP_CIPHER=chacha20-poly1305@openssh.com

# sftp_batch PORT CIPHER BATCHFILE: one sftp session that runs the batch file.
sftp_batch() {
    timeout "$CLIENT_TIMEOUT" sftp "${SFTP_OPTS[@]}" -o "Ciphers=$2" -P "$1" -b "$3" \
        "$BENCH_USER@127.0.0.1" >/dev/null 2>>"$LOGS/sftp-client.log"
}

# sftp_check NAME PORT: a round trip of a 4 MiB file must return the same bytes.
sftp_check() {
    local batch=$CLIENT_DIR/check.sftp
    printf 'put %s check.bin\nget check.bin %s\n' "$CLIENT_DIR/check.bin" "$CLIENT_DIR/check.out" >"$batch"
    rm -f "$CLIENT_DIR/check.out"
    if ! sftp_batch "$2" "$SFTP_CIPHER" "$batch" ||
        ! cmp -s "$CLIENT_DIR/check.bin" "$CLIENT_DIR/check.out"; then
        die "$1: SFTP round trip failed or changed the file; see $LOGS/sftp-client.log"
    fi
    rm -f "$CLIENT_DIR/check.out" "$DATA/$1/check.bin"
}

clean_sftp_bulk() { rm -f "$DATA"/*/bulk.bin; }
clean_sftp_small() { rm -rf "$DATA"/*/small; }

# sftp_bulk NAME PORT CIPHER SHORT: one put and one get of $CLIENT_DIR/bulk.bin.
sftp_bulk() {
    local name=$1 port=$2 cipher=$3 short=$4 bytes gib
    bytes=$(stat -c %s "$CLIENT_DIR/bulk.bin")
    gib=$(calc "$bytes / 1073741824")
    printf 'put %s bulk.bin\n' "$CLIENT_DIR/bulk.bin" >"$CLIENT_DIR/put.sftp"
    printf 'get bulk.bin /dev/null\n' >"$CLIENT_DIR/get.sftp"

    if measure_run "$name" clean_sftp_bulk sftp_batch "$port" "$cipher" "$CLIENT_DIR/put.sftp"; then
        if [ "$(stat -c %s "$DATA/$name/bulk.bin" 2>/dev/null)" = "$bytes" ]; then
            add_run "sftp put $short" "$name" "$(calc "$bytes / 1e6 / $RUN_WALL")" "$(calc "$RUN_CPU / $gib")"
        else
            warn "$name: the uploaded bulk.bin does not have $bytes bytes"
        fi
    fi
    if measure_run "$name" : sftp_batch "$port" "$cipher" "$CLIENT_DIR/get.sftp"; then
        add_run "sftp get $short" "$name" "$(calc "$bytes / 1e6 / $RUN_WALL")" "$(calc "$RUN_CPU / $gib")"
    fi
    clean_sftp_bulk
}

# sftp_small NAME PORT: uploads $SMALL_FILES files with one `put *` in one session.
sftp_small() {
    local name=$1 port=$2
    printf 'mkdir small\ncd small\nlcd %s\nput *\n' "$CLIENT_DIR/small" >"$CLIENT_DIR/small.sftp"
    if measure_run "$name" clean_sftp_small sftp_batch "$port" "$SFTP_CIPHER" "$CLIENT_DIR/small.sftp"; then
        local stored
        stored=$(find "$DATA/$name/small" -type f | wc -l)
        if [ "$stored" = "$SMALL_FILES" ]; then
            add_run "sftp $SMALL_FILES x 4 KiB put" "$name" "$(calc "$SMALL_FILES / $RUN_WALL")" \
                "$(calc "$RUN_CPU * 1000 / $SMALL_FILES")"
        else
            warn "$name: $stored of $SMALL_FILES small files stored"
        fi
    fi
    clean_sftp_small
}

section_sftp() {
    local cipher short name measured servers="ferry openssh"
    sftp_options
    start_ferry ferry sftp
    PORT_OF["ferry"]=$SFTP_PORT
    start_sshd openssh
    PORT_OF["openssh"]=$SFTP_PORT

    random_file "$CLIENT_DIR/check.bin" 4
    random_file "$CLIENT_DIR/bulk.bin" "$BULK_MIB"
    small_files "$CLIENT_DIR/small" "$SMALL_FILES" 4096
    for name in $servers; do sftp_check "$name" "${PORT_OF[$name]}"; done

    # aes256-gcm is measured too; a server that lacks a cipher is reported as unsupported.
    echo pwd >"$CLIENT_DIR/pwd.sftp"
    for cipher in chacha20-poly1305@openssh.com aes128-gcm@openssh.com aes256-gcm@openssh.com; do
        short=${cipher%%@*}
        measured=""
        for name in $servers; do
            if sftp_batch "${PORT_OF[$name]}" "$cipher" "$CLIENT_DIR/pwd.sftp"; then
                measured+=" $name"
            else
                warn "$name does not accept the cipher $cipher; see $LOGS/sftp-client.log"
                record_missing "sftp put $short" "$name" MB/s higher unsupported "cipher $cipher not offered"
                record_missing "sftp get $short" "$name" MB/s higher unsupported "cipher $cipher not offered"
            fi
        done
        rounds "sftp $BULK_MIB MiB $short" "$measured" sftp_bulk "$cipher" "$short"
        record_each "$measured" "sftp put $short" MB/s higher "s/GiB" "$BULK_MIB MiB, sftp -b put"
        record_each "$measured" "sftp get $short" MB/s higher "s/GiB" "$BULK_MIB MiB, sftp -b get to /dev/null"
    done

    rounds "sftp $SMALL_FILES small files" "$servers" sftp_small
    record_each "$servers" "sftp $SMALL_FILES x 4 KiB put" files/s higher "ms/file" \
        "one session, put *, chacha20-poly1305"

    stop_server ferry
    stop_server openssh
}
