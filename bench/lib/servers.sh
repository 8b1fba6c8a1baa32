# shellcheck shell=bash
# Starting and stopping the servers under test. Every server runs as a child of this
# script, in the foreground mode of its daemon, on 127.0.0.1, in its own cpuacct cgroup,
# with its configuration, log and data under $STATE and $DATA. Never a system service.

# Server name -> PID of the server's main process.
declare -A SERVER_PID=()

# launch NAME LOG COMMAND...: starts COMMAND in cgroup NAME, in a session of its own so that
# a terminal's Ctrl-C reaches only this script, which then stops it.
launch() {
    local name=$1 logfile=$2 pidfile=$STATE/$1.pid
    shift 2
    cgroup_create "$name"
    rm -f "$pidfile"
    # shellcheck disable=SC2016 # expanded by the inner shell
    setsid bash -c 'echo $$ >"$1/cgroup.procs" && echo $$ >"$2" && shift 2 && exec "$@"' \
        launch "$CGROUP_ROOT/$name" "$pidfile" "$@" >>"$logfile" 2>&1 </dev/null &
    local i
    for ((i = 0; i < 50; i++)); do
        [ -s "$pidfile" ] && break
        sleep 0.1
    done
    [ -s "$pidfile" ] || die "$name did not start; see $logfile"
    SERVER_PID[$name]=$(cat "$pidfile")
}

# await_ports NAME LOG PORT...: waits until the server listens on every PORT.
await_ports() {
    local name=$1 logfile=$2 port
    shift 2
    for port in "$@"; do
        if ! wait_for_port "$port" 30 || ! kill -0 "${SERVER_PID[$name]}" 2>/dev/null; then
            tail -n 20 "$logfile" >&2
            die "$name is not listening on 127.0.0.1:$port; see $logfile"
        fi
    done
    log "$name started (pid ${SERVER_PID[$name]}, ports $*)"
}

# stop_server NAME: SIGTERM to the main process, SIGKILL after ten seconds, then the same
# for any process of the server that is still in its cgroup (each by its own PID).
stop_server() {
    local name=$1 pid i
    pid=${SERVER_PID[$name]:-}
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    for pid in $(cgroup_pids "$name"); do kill -TERM "$pid" 2>/dev/null; done
    for ((i = 0; i < 30; i++)); do
        [ -z "$(cgroup_pids "$name")" ] && break
        sleep 0.1
    done
    for pid in $(cgroup_pids "$name"); do kill -KILL "$pid" 2>/dev/null; done
    cgroup_remove "$name"
    unset "SERVER_PID[$name]"
    log "$name stopped"
}

stop_all_servers() {
    local name
    for name in "${!SERVER_PID[@]}"; do stop_server "$name"; done
}

# next_port: the next free TCP port at or above $NEXT_PORT.
next_port() {
    while ! port_is_free "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
    PORT=$NEXT_PORT
    NEXT_PORT=$((NEXT_PORT + 1))
}

# next_port_range COUNT: sets RANGE_START and RANGE_END to COUNT free consecutive ports.
next_port_range() {
    local i
    while :; do
        for ((i = 0; i < $1; i++)); do
            port_is_free $((NEXT_PORT + i)) || break
        done
        if [ "$i" = "$1" ]; then
            RANGE_START=$NEXT_PORT
            RANGE_END=$((NEXT_PORT + $1 - 1))
            NEXT_PORT=$((NEXT_PORT + $1))
            return 0
        fi
        NEXT_PORT=$((NEXT_PORT + i + 1))
    done
}

# --- Ferry ------------------------------------------------------------------------------

# start_ferry NAME [sftp] [ftp] [dav] [hook] [idle]: writes a configuration with the
# listed services and starts Ferry. Sets SFTP_PORT, FTP_PORT and DAV_PORT for the services
# it enabled. `hook` sets a post-login program hook; `idle` raises the idle timeouts so
# that idle sessions stay open for the memory test.
start_ferry() {
    local name=$1 dir=$STATE/$1 want sftp=0 ftp=0 dav=0 hook=0 idle=0 ports=()
    shift
    for want in "$@"; do
        case $want in
            sftp) sftp=1 ;;
            ftp) ftp=1 ;;
            dav) dav=1 ;;
            hook) hook=1 ;;
            idle) idle=1 ;;
            *) die "start_ferry: unknown option $want" ;;
        esac
    done
    mkdir -p "$dir" "$DATA/$name"
    {
        echo "[common]"
        echo "state_dir = \"state\""
        echo "max_per_host_connections = 0"
        echo "shutdown_timeout = 2"
        if [ $hook = 1 ]; then
            echo "post_login_hook = \"$STATE/post-login-hook\""
        fi
        echo
        echo "[defender]"
        echo "enabled = false"
        echo
        echo "[data_provider]"
        echo "users_file = \"users.toml\""
        echo
        echo "[sftpd]"
        if [ $sftp = 1 ]; then
            next_port
            SFTP_PORT=$PORT
            ports+=("$PORT")
            echo "bindings = [{ address = \"127.0.0.1\", port = $PORT }]"
            # The memory test opens sessions one after another and keeps them idle.
            [ $idle = 0 ] || echo "idle_timeout = 0"
        else
            echo "bindings = []"
        fi
        echo
        echo "[ftpd]"
        if [ $ftp = 1 ]; then
            next_port
            FTP_PORT=$PORT
            ports+=("$PORT")
            next_port_range 100
            echo "bindings = [{ address = \"127.0.0.1\", port = $PORT, tls_mode = 0 }]"
            echo "passive_port_range = { start = $RANGE_START, end = $RANGE_END }"
            echo "certificate_file = \"$STATE/tls/cert.pem\""
            echo "certificate_key_file = \"$STATE/tls/key.pem\""
            [ $idle = 0 ] || echo "idle_timeout = 3600"
        else
            echo "bindings = []"
        fi
        echo
        echo "[webdavd]"
        if [ $dav = 1 ]; then
            next_port
            DAV_PORT=$PORT
            ports+=("$PORT")
            echo "bindings = [{ address = \"127.0.0.1\", port = $PORT }]"
            [ $idle = 0 ] || echo "header_read_timeout = 3600"
        else
            echo "bindings = []"
        fi
    } >"$dir/ferry.toml"
    cat >"$dir/users.toml" <<USERS
[[users]]
username = "$BENCH_USER"
password = "$FERRY_PASSWORD_HASH"
public_keys = ["$(cat "$STATE/client_key.pub")"]
home_dir = "$DATA/$name"
USERS
    launch "$name" "$dir/ferry.log" "$FERRY" --log-level warn serve --config "$dir/ferry.toml"
    await_ports "$name" "$dir/ferry.log" "${ports[@]}"
}

# --- OpenSSH ----------------------------------------------------------------------------

# start_sshd NAME: sshd with Debian's sftp-server, public key login only. Sets SFTP_PORT.
start_sshd() {
    local name=$1 dir=$STATE/$1
    mkdir -p "$dir" "$DATA/$name" /run/sshd
    chown "$BENCH_USER:" "$DATA/$name"
    [ -f "$dir/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$dir/host_ed25519"
    cp "$STATE/client_key.pub" "$dir/authorized_keys"
    chmod 644 "$dir/authorized_keys"
    next_port
    SFTP_PORT=$PORT
    # Debian's sshd_config also sets UsePAM yes, which adds PAM account and session work to
    # every login; it is off here, which makes each OpenSSH login cheaper.
    cat >"$dir/sshd_config" <<CONF
ListenAddress 127.0.0.1:$SFTP_PORT
HostKey $dir/host_ed25519
PidFile none
AuthorizedKeysFile $dir/authorized_keys
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowUsers $BENCH_USER
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding no
Subsystem sftp /usr/lib/openssh/sftp-server -d $DATA/$name
CONF
    /usr/sbin/sshd -t -f "$dir/sshd_config" || die "sshd rejected $dir/sshd_config"
    launch "$name" "$dir/sshd.log" /usr/sbin/sshd -D -e -f "$dir/sshd_config"
    await_ports "$name" "$dir/sshd.log" "$SFTP_PORT"
}

# --- vsftpd -----------------------------------------------------------------------------

# start_vsftpd NAME [idle]: standalone vsftpd with PAM password login and optional explicit
# FTPS on the same port. Sets FTP_PORT.
start_vsftpd() {
    local name=$1 dir=$STATE/$1 idle_timeout=300
    [ "${2:-}" != idle ] || idle_timeout=3600
    mkdir -p "$dir" "$DATA/$name" /var/run/vsftpd/empty
    chown "$BENCH_USER:" "$DATA/$name"
    next_port
    FTP_PORT=$PORT
    next_port_range 100
    # ssl_ciphers: vsftpd 3.0.3 defaults to DES-CBC3-SHA only. seccomp_sandbox: the 3.0.3
    # sandbox rejects system calls that Debian 12's glibc makes, which ends each session.
    cat >"$dir/vsftpd.conf" <<CONF
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=$FTP_PORT
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=YES
local_umask=022
local_root=$DATA/$name
pam_service_name=vsftpd
userlist_enable=NO
pasv_enable=YES
pasv_address=127.0.0.1
pasv_min_port=$RANGE_START
pasv_max_port=$RANGE_END
connect_from_port_20=NO
xferlog_enable=NO
idle_session_timeout=$idle_timeout
max_clients=0
max_per_ip=0
secure_chroot_dir=/var/run/vsftpd/empty
seccomp_sandbox=NO
ssl_enable=YES
rsa_cert_file=$STATE/tls/cert.pem
rsa_private_key_file=$STATE/tls/key.pem
allow_anon_ssl=NO
force_local_logins_ssl=NO
force_local_data_ssl=NO
require_ssl_reuse=NO
ssl_ciphers=HIGH
CONF
    launch "$name" "$dir/vsftpd.log" /usr/sbin/vsftpd "$dir/vsftpd.conf"
    await_ports "$name" "$dir/vsftpd.log" "$FTP_PORT"
}

# --- Apache -----------------------------------------------------------------------------

# start_apache NAME: Apache httpd with mpm_event (Debian's default MPM settings), mod_dav
# and mod_dav_fs, Basic authentication against an htpasswd file. Sets DAV_PORT.
start_apache() {
    local name=$1 dir=$STATE/$1 module
    mkdir -p "$dir/run" "$dir/lock" "$DATA/$name"
    chown "$BENCH_USER:" "$DATA/$name" "$dir/lock"
    htpasswd -b -c -m "$dir/htpasswd" "$BENCH_USER" "$BENCH_PASSWORD" 2>/dev/null
    chmod 644 "$dir/htpasswd"
    next_port
    DAV_PORT=$PORT
    {
        for module in mpm_event authn_core authn_file auth_basic authz_core authz_user dav dav_fs; do
            echo "LoadModule ${module}_module /usr/lib/apache2/modules/mod_$module.so"
        done
        cat <<CONF
ServerName 127.0.0.1
ServerRoot $dir
DefaultRuntimeDir $dir/run
PidFile $dir/run/httpd.pid
Listen 127.0.0.1:$DAV_PORT
User $BENCH_USER
Group $(id -gn "$BENCH_USER")
ErrorLog $dir/error.log
LogLevel warn
StartServers 2
MinSpareThreads 25
MaxSpareThreads 75
ThreadLimit 64
ThreadsPerChild 25
MaxRequestWorkers 150
MaxConnectionsPerChild 0
Timeout 300
KeepAlive On
MaxKeepAliveRequests 100
KeepAliveTimeout 5
EnableSendfile On
LimitRequestBody 0
DavLockDB $dir/lock/davlock
DocumentRoot $DATA/$name
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory $DATA/$name>
    Dav On
    Options None
    AllowOverride None
    AuthType Basic
    AuthName bench
    AuthUserFile $dir/htpasswd
    Require valid-user
</Directory>
CONF
    } >"$dir/httpd.conf"
    /usr/sbin/apache2 -t -f "$dir/httpd.conf" 2>"$dir/configtest.log" || {
        cat "$dir/configtest.log" >&2
        die "apache2 rejected $dir/httpd.conf"
    }
    launch "$name" "$dir/apache.log" /usr/sbin/apache2 -f "$dir/httpd.conf" -DFOREGROUND
    await_ports "$name" "$dir/apache.log" "$DAV_PORT"
}

# --- nginx ------------------------------------------------------------------------------

# start_nginx NAME [idle]: nginx with the dav and dav-ext modules and Basic authentication.
# Sets DAV_PORT. `idle` keeps idle keep-alive connections open for the memory test.
start_nginx() {
    local name=$1 dir=$STATE/$1 keepalive=65s
    [ "${2:-}" != idle ] || keepalive=3600s
    mkdir -p "$dir/tmp" "$DATA/$name" "$DATA/$name.body"
    chown "$BENCH_USER:" "$DATA/$name" "$DATA/$name.body" "$dir/tmp"
    htpasswd -b -c -m "$dir/htpasswd" "$BENCH_USER" "$BENCH_PASSWORD" 2>/dev/null
    chmod 644 "$dir/htpasswd"
    next_port
    DAV_PORT=$PORT
    cat >"$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_http_dav_ext_module.so;
daemon off;
user $BENCH_USER $(id -gn "$BENCH_USER");
worker_processes auto;
worker_rlimit_nofile 8192;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout $keepalive;
    keepalive_requests 100000;
    client_body_temp_path $DATA/$name.body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    dav_ext_lock_zone zone=bench:10m;
    server {
        listen 127.0.0.1:$DAV_PORT;
        root $DATA/$name;
        location / {
            auth_basic bench;
            auth_basic_user_file $dir/htpasswd;
            dav_methods PUT DELETE MKCOL COPY MOVE;
            dav_ext_methods PROPFIND OPTIONS LOCK UNLOCK;
            dav_ext_lock zone=bench;
            dav_access user:rw group:rw all:r;
            create_full_put_path on;
            client_max_body_size 0;
        }
    }
}
CONF
    /usr/sbin/nginx -t -q -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" ||
        die "nginx rejected $dir/nginx.conf"
    launch "$name" "$dir/nginx.log" /usr/sbin/nginx -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf"
    await_ports "$name" "$dir/nginx.log" "$DAV_PORT"
}
