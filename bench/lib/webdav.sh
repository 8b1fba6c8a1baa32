# shellcheck shell=bash
# WebDAV: 1 GiB PUT and GET, many small PUTs on one connection, and PROPFIND of a folder
# with many members, against Ferry, Apache mod_dav and nginx dav. The client is curl.

# dav_curl ARGS...: curl with Basic credentials, failing on HTTP errors. `Expect:` turns off
# curl's Expect: 100-continue, which would add one round trip to every upload.
dav_curl() {
    timeout "$CLIENT_TIMEOUT" curl -sS --fail -u "$BENCH_USER:$BENCH_PASSWORD" -H 'Expect:' "$@" \
        2>>"$LOGS/webdav-client.log"
}

dav_check() {
    local name=$1 port=$2
    rm -f "$CLIENT_DIR/check.out"
    if ! dav_curl -T "$CLIENT_DIR/check.bin" "http://127.0.0.1:$port/check.bin" -o /dev/null ||
        ! dav_curl -o "$CLIENT_DIR/check.out" "http://127.0.0.1:$port/check.bin" ||
        ! cmp -s "$CLIENT_DIR/check.bin" "$CLIENT_DIR/check.out"; then
        die "$name: WebDAV round trip failed or changed the file; see $LOGS/webdav-client.log"
    fi
    rm -f "$CLIENT_DIR/check.out" "$DATA/$name/check.bin"
}

clean_dav_bulk() { rm -f "$DATA"/*/bulk.bin; }
clean_dav_small() { rm -rf "$DATA"/*/small/*; }

dav_bulk() {
    local name=$1 port=$2 bytes gib
    bytes=$(stat -c %s "$CLIENT_DIR/bulk.bin")
    gib=$(calc "$bytes / 1073741824")
    if measure_run "$name" clean_dav_bulk dav_curl -T "$CLIENT_DIR/bulk.bin" \
        "http://127.0.0.1:$port/bulk.bin" -o /dev/null; then
        if [ "$(stat -c %s "$DATA/$name/bulk.bin" 2>/dev/null)" = "$bytes" ]; then
            add_run "webdav PUT" "$name" "$(calc "$bytes / 1e6 / $RUN_WALL")" "$(calc "$RUN_CPU / $gib")"
        else
            warn "$name: the uploaded bulk.bin does not have $bytes bytes"
        fi
    fi
    if measure_run "$name" : dav_curl -o /dev/null "http://127.0.0.1:$port/bulk.bin"; then
        add_run "webdav GET" "$name" "$(calc "$bytes / 1e6 / $RUN_WALL")" "$(calc "$RUN_CPU / $gib")"
    fi
    clean_dav_bulk
}

# dav_small NAME PORT: $SMALL_FILES PUTs of 4 KiB from one curl process, which keeps the
# connection open between requests as long as the server allows.
dav_small() {
    local name=$1 port=$2 file config=$CLIENT_DIR/small-$1.curl
    if [ ! -f "$config" ]; then
        for file in "$CLIENT_DIR"/small/*; do
            printf 'url = "http://127.0.0.1:%s/small/%s"\nupload-file = "%s"\noutput = "/dev/null"\n' \
                "$port" "${file##*/}" "$file"
        done >"$config"
    fi
    if measure_run "$name" clean_dav_small dav_curl -K "$config"; then
        local stored
        stored=$(find "$DATA/$name/small" -type f | wc -l)
        if [ "$stored" = "$SMALL_FILES" ]; then
            add_run "webdav $SMALL_FILES x 4 KiB PUT" "$name" "$(calc "$SMALL_FILES / $RUN_WALL")" \
                "$(calc "$RUN_CPU * 1000 / $SMALL_FILES")"
        else
            warn "$name: $stored of $SMALL_FILES small files stored"
        fi
    fi
    clean_dav_small
}

PROPFIND_BODY='<?xml version="1.0" encoding="utf-8"?><propfind xmlns="DAV:"><allprop/></propfind>'

# dav_propfind NAME PORT: $LISTINGS PROPFIND requests with Depth 1 on the folder `list`,
# from one curl process on one connection.
dav_propfind() {
    local name=$1 port=$2 i urls=()
    for ((i = 0; i < LISTINGS; i++)); do urls+=(-o /dev/null "http://127.0.0.1:$port/list/"); done
    if measure_run "$name" : dav_curl -X PROPFIND -H 'Depth: 1' -H 'Content-Type: application/xml' \
        --data-binary "$PROPFIND_BODY" "${urls[@]}"; then
        add_run "webdav PROPFIND $LIST_ENTRIES entries" "$name" "$(calc "$RUN_WALL * 1000 / $LISTINGS")" \
            "$(calc "$RUN_CPU * 1000 / $LISTINGS")"
    fi
}

# dav_propfind_check NAME PORT: one PROPFIND must return every member and the folder. The
# size of the reply is noted because each server sends a different set of properties.
dav_propfind_check() {
    local reply=$CLIENT_DIR/propfind.xml count
    dav_curl -X PROPFIND -H 'Depth: 1' -H 'Content-Type: application/xml' \
        --data-binary "$PROPFIND_BODY" -o "$reply" "http://127.0.0.1:$2/list/"
    count=$(grep -o -i '<[a-z0-9]*:\{0,1\}response[ >]' "$reply" | wc -l)
    [ "$count" = $((LIST_ENTRIES + 1)) ] ||
        die "$1: PROPFIND returned $count responses, expected $((LIST_ENTRIES + 1))"
    add_check "PROPFIND Depth 1 with $1: $count responses in $(stat -c %s "$reply") bytes"
    rm -f "$reply"
}

section_webdav() {
    local name servers="ferry apache nginx"
    start_ferry ferry dav
    PORT_OF["ferry"]=$DAV_PORT
    start_apache apache
    PORT_OF["apache"]=$DAV_PORT
    start_nginx nginx
    PORT_OF["nginx"]=$DAV_PORT

    random_file "$CLIENT_DIR/check.bin" 4
    random_file "$CLIENT_DIR/bulk.bin" "$BULK_MIB"
    small_files "$CLIENT_DIR/small" "$SMALL_FILES" 4096
    for name in $servers; do
        dav_check "$name" "${PORT_OF[$name]}"
        mkdir -p "$DATA/$name/small"
        empty_entries "$DATA/$name/list" "$LIST_ENTRIES"
        chown -R "$BENCH_USER:" "$DATA/$name/small" "$DATA/$name/list"
        dav_propfind_check "$name" "${PORT_OF[$name]}"
    done

    rounds "webdav $BULK_MIB MiB" "$servers" dav_bulk
    record_each "$servers" "webdav PUT" MB/s higher "s/GiB" "$BULK_MIB MiB, curl -T"
    record_each "$servers" "webdav GET" MB/s higher "s/GiB" "$BULK_MIB MiB, curl -o /dev/null"

    rounds "webdav $SMALL_FILES small PUTs" "$servers" dav_small
    record_each "$servers" "webdav $SMALL_FILES x 4 KiB PUT" files/s higher "ms/file" \
        "one curl process, keep-alive"

    rounds "webdav PROPFIND of $LIST_ENTRIES entries" "$servers" dav_propfind
    record_each "$servers" "webdav PROPFIND $LIST_ENTRIES entries" ms lower "ms/request" \
        "per request; Depth 1, allprop, $LISTINGS requests in one curl process"

    stop_server ferry
    stop_server apache
    stop_server nginx
}
