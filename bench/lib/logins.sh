# shellcheck shell=bash
# Logins per second: SSH public key logins (OpenSSH sftp running `pwd`) and FTP password
# logins (curl logging in without a data connection), each sequential. Ferry runs twice,
# without and with a post-login program hook, beside OpenSSH's sshd and vsftpd.

# Successful logins per port, including repeated runs, to check the hook's count against.
declare -A LOGINS_DONE=()

ssh_logins() {
    local port=$1 i
    for ((i = 0; i < LOGINS; i++)); do
        sftp_batch "$port" "$SFTP_CIPHER" "$CLIENT_DIR/pwd.sftp" || return 1
        LOGINS_DONE[$port]=$((${LOGINS_DONE[$port]:-0} + 1))
    done
}

# With -I on a folder URL, curl logs in, sends PWD and CWD, and quits without opening a
# data connection.
ftp_logins() {
    local port=$1 i
    for ((i = 0; i < LOGINS; i++)); do
        ftp_curl -I -o /dev/null "ftp://127.0.0.1:$port/" || return 1
        LOGINS_DONE[$port]=$((${LOGINS_DONE[$port]:-0} + 1))
    done
}

# login_run NAME PORT WORKLOAD PROTOCOL: one measured run of $LOGINS logins.
login_run() {
    if measure_run "$1" : "${4}_logins" "$2"; then
        add_run "$3" "$1" "$(calc "$LOGINS / $RUN_WALL")" "$(calc "$RUN_CPU * 1000 / $LOGINS")"
    fi
}

section_logins() {
    local expected delivered
    sftp_options
    # The hook appends one line per login, as a fail2ban or audit script would.
    cat >"$STATE/post-login-hook" <<HOOK
#!/bin/sh
echo "\$SFTPGO_LOGIND_PROTOCOL \$SFTPGO_LOGIND_METHOD \$SFTPGO_LOGIND_STATUS" \\
    "\$SFTPGO_LOGIND_USER \$SFTPGO_LOGIND_IP" >>$STATE/post-login-hook.log
HOOK
    chmod 755 "$STATE/post-login-hook"
    : >"$STATE/post-login-hook.log"
    echo pwd >"$CLIENT_DIR/pwd.sftp"

    # PORT_OF takes one port per server, so the SSH and the FTP listeners of Ferry are told
    # apart by name.
    start_ferry ferry sftp ftp
    PORT_OF["ferry"]=$SFTP_PORT PORT_OF["ferry-ftp"]=$FTP_PORT
    start_ferry ferry-hook sftp ftp hook
    PORT_OF["ferry-hook"]=$SFTP_PORT PORT_OF["ferry-hook-ssh"]=$SFTP_PORT
    PORT_OF["ferry-hook-ftp"]=$FTP_PORT
    start_sshd openssh
    PORT_OF["openssh"]=$SFTP_PORT
    start_vsftpd vsftpd
    PORT_OF["vsftpd"]=$FTP_PORT

    rounds "ssh key login" "ferry ferry-hook openssh" login_run "ssh key login" ssh
    record_each "ferry openssh" "ssh key login" logins/s higher "ms/login" \
        "sequential sftp -b with pwd, curve25519, ed25519 keys"
    record "ssh key login" ferry-hook logins/s higher "ms/login" "post-login program hook"

    PORT_OF["ferry"]=${PORT_OF["ferry-ftp"]} PORT_OF["ferry-hook"]=${PORT_OF["ferry-hook-ftp"]}
    rounds "ftp password login" "ferry ferry-hook vsftpd" login_run "ftp password login" ftp
    record "ftp password login" ferry logins/s higher "ms/login" "sequential curl -I; argon2id hash"
    record "ftp password login" vsftpd logins/s higher "ms/login" "sequential curl -I; PAM, yescrypt hash"
    record "ftp password login" ferry-hook logins/s higher "ms/login" "post-login program hook"

    stop_server ferry-hook
    expected=$((${LOGINS_DONE[${PORT_OF["ferry-hook-ssh"]}]:-0} +
        ${LOGINS_DONE[${PORT_OF["ferry-hook-ftp"]}]:-0}))
    delivered=$(grep -c ' 1 ' "$STATE/post-login-hook.log")
    add_check "post-login hook: $delivered successful logins reported, $expected expected"
    stop_server ferry
    stop_server openssh
    stop_server vsftpd
}
