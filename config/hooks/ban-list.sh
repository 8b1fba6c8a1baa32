#!/bin/sh
# Example post-login hook: keeps a ban list of addresses with repeated failed logins.
#
# Ferry runs it once per login event with SFTPGO_LOGIND_* in the environment. Every failed
# login is appended to $FERRY_FAILED_LOG; an address with $FERRY_BAN_AFTER or more failures in
# that file is added once to $FERRY_BAN_LIST, one address per line, which a firewall job can
# read (for example: ipset add ferry-banned "$ip"). Set as
#   [common]
#   post_login_hook = "/usr/local/lib/ferry/ban-list.sh"
#   post_login_scope = 1
set -eu

failed_log=${FERRY_FAILED_LOG:-/var/lib/ferry/failed-logins}
ban_list=${FERRY_BAN_LIST:-/var/lib/ferry/banned}
ban_after=${FERRY_BAN_AFTER:-5}

[ "${SFTPGO_LOGIND_STATUS:-1}" = 0 ] || exit 0
ip=${SFTPGO_LOGIND_IP:?SFTPGO_LOGIND_IP is not set}

mkdir -p "$(dirname "$failed_log")" "$(dirname "$ban_list")"
printf '%s %s %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$ip" \
    "${SFTPGO_LOGIND_PROTOCOL:-}" "${SFTPGO_LOGIND_METHOD:-}" >> "$failed_log"

count=$(awk -v ip="$ip" '$2 == ip { n++ } END { print n + 0 }' "$failed_log")
if [ "$count" -ge "$ban_after" ]; then
    touch "$ban_list"
    # Several hook runs can race here; a duplicate line is harmless to the reader.
    grep -qxF "$ip" "$ban_list" || printf '%s\n' "$ip" >> "$ban_list"
fi
