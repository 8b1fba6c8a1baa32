#!/usr/bin/env bash
# Measures Ferry beside the servers it replaces, on this machine, over 127.0.0.1.
#
#   bench/run.sh [--quick] [--runs N] [--no-build] [--workdir DIR] [--out DIR] [SECTION...]
#
# Sections (default: all, in this order):
#   sftp     1 GiB put and get per cipher, 1,000 files of 4 KiB (Ferry, OpenSSH sftp-server)
#   ftp      1 GiB STOR and RETR, plain and FTPS; LIST and MLSD of 10,000 entries (vsftpd)
#   webdav   1 GiB PUT and GET, 1,000 PUTs of 4 KiB, PROPFIND of 10,000 entries (Apache, nginx)
#   logins   sequential SSH key and FTP password logins, Ferry with and without a post-login
#            hook (OpenSSH, vsftpd)
#   memory   RSS per idle logged-in session, 1,000 sessions per protocol (OpenSSH, vsftpd, nginx)
#
# Options:
#   --quick        1 run, 64 MiB files, 100 small files, 1,000 entries, 20 logins, 100 sessions
#   --runs N       runs per figure, of which the median is reported (default 3)
#   --no-build     use target/release/ferry as it is instead of running cargo build first
#   --workdir DIR  state, logs and a tmpfs for all data (default /tmp/ferry-bench-run)
#   --out DIR      where results.tsv and report.md go (default WORKDIR/results/TIMESTAMP)
#
# Needs root (servers, cgroups, a test account and a tmpfs mount), cgroup v1 cpuacct at
# /sys/fs/cgroup/cpuacct, and the Debian 12 packages listed in docs/benchmarks.md. Every
# server listens on 127.0.0.1 only and is stopped when the script exits. Environment:
#   QUIET_CORES=0.3    wait before each run until other processes use fewer cores than this
#   QUIET_TIMEOUT=600  seconds to wait for that before measuring anyway (marked DISTURBED)
#   OTHER_LIMIT=0.3    CPU seconds (+5% of the run) other processes may use during a run
#   RERUNS=2           repeats of a run that other processes disturbed
#   CLIENT_TIMEOUT=900 seconds any client command may take
#   BENCH_USER=ferrybench   system account used by sshd and vsftpd (created when missing)
#   PORT_BASE=30000    first port to try; every port is checked to be free first
set -uo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
COMMAND_LINE="bench/run.sh${*:+ $*}"

# shellcheck source=lib/common.sh
. "$BENCH_DIR/lib/common.sh"
# shellcheck source=lib/servers.sh
. "$BENCH_DIR/lib/servers.sh"
# shellcheck source=lib/sftp.sh
. "$BENCH_DIR/lib/sftp.sh"
# shellcheck source=lib/ftp.sh
. "$BENCH_DIR/lib/ftp.sh"
# shellcheck source=lib/webdav.sh
. "$BENCH_DIR/lib/webdav.sh"
# shellcheck source=lib/logins.sh
. "$BENCH_DIR/lib/logins.sh"
# shellcheck source=lib/memory.sh
. "$BENCH_DIR/lib/memory.sh"

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
    exit "${1:-0}"
}

RUNS=3 QUICK=0 BUILD=1 WORKDIR=/tmp/ferry-bench-run OUT="" SECTIONS=()
while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1 RUNS=1; shift ;;
        --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --workdir) WORKDIR=${2:?--workdir needs a folder}; shift 2 ;;
        --out) OUT=${2:?--out needs a folder}; shift 2 ;;
        -h | --help) usage 0 ;;
        sftp | ftp | webdav | logins | memory) SECTIONS+=("$1"); shift ;;
        *) log "error: unknown argument $1"; usage 2 >&2 ;;
    esac
done
[ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=(sftp ftp webdav logins memory)
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs $RUNS: expected a positive number"

if [ $QUICK = 1 ]; then
    BULK_MIB=64 SMALL_FILES=100 LIST_ENTRIES=1000 LISTINGS=5 LOGINS=20 SESSIONS=100
    CURL_RETRIEVALS=10
else
    BULK_MIB=1024 SMALL_FILES=1000 LIST_ENTRIES=10000 LISTINGS=10 LOGINS=100 SESSIONS=1000
    CURL_RETRIEVALS=20
fi
QUIET_CORES=${QUIET_CORES:-0.3}
QUIET_TIMEOUT=${QUIET_TIMEOUT:-600}
OTHER_LIMIT=${OTHER_LIMIT:-0.3}
RERUNS=${RERUNS:-2}
SETTLE=${SETTLE:-0.3}
SESSION_SETTLE=${SESSION_SETTLE:-12}
IDLE_SETTLE=${IDLE_SETTLE:-15}
CLIENT_TIMEOUT=${CLIENT_TIMEOUT:-900}
BENCH_USER=${BENCH_USER:-ferrybench}
NEXT_PORT=${PORT_BASE:-30000}
FERRY=$REPO_DIR/target/release/ferry

[ "$(id -u)" = 0 ] || die "run as root: the peers need a system account, and the servers need cgroups"
[ -w "$CPUACCT" ] || die "$CPUACCT is not writable; cgroup v1 cpuacct must be mounted there"
require_commands sshd sftp ssh-keygen vsftpd apache2 nginx htpasswd curl lftp openssl python3 ss \
    timeout setsid awk chpasswd useradd
python3 -c 'import paramiko' 2>/dev/null ||
    die "python3 cannot import paramiko (apt-get install python3-paramiko)"
[ -f /usr/lib/nginx/modules/ngx_http_dav_ext_module.so ] ||
    die "nginx dav-ext module missing (apt-get install libnginx-mod-http-dav-ext)"
# 1,000 idle sessions need more descriptors than the usual 1,024, in the servers and in the
# client alike; the servers inherit this limit, raised to the hard limit.
ulimit -n "$(ulimit -Hn)" || die "cannot raise the open file limit to $(ulimit -Hn)"
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 4096 ] ||
    die "the open file limit is $(ulimit -n); the memory test needs at least 4096 (ulimit -Hn)"

STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-$WORKDIR/results/$STAMP}
STATE=$WORKDIR/state
LOGS=$OUT/logs
RESULTS=$OUT/results.tsv
CHECKS=$OUT/checks.txt
mkdir -p "$WORKDIR/data" "$OUT" "$LOGS"
rm -rf "$STATE"
mkdir -p "$STATE"
: >"$RESULTS"
: >"$CHECKS"

# --- clean-up ---------------------------------------------------------------------------

MOUNTED=0 CREATED_USER=0 IDLE_HELPER=""
cleanup() {
    set +e
    stop_idle_helper
    stop_all_servers
    leave_client_cgroup
    if [ $MOUNTED = 1 ]; then umount "$WORKDIR/data" || warn "cannot unmount $WORKDIR/data"; fi
    if [ $CREATED_USER = 1 ]; then userdel "$BENCH_USER" || warn "cannot remove the account $BENCH_USER"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 141' PIPE

# --- set-up -----------------------------------------------------------------------------

# Server data and client files live in memory so that no disk is measured.
if [ "$(stat -f -c %T "$WORKDIR/data")" != tmpfs ]; then
    mount -t tmpfs -o size="${TMPFS_SIZE:-8g}",mode=755 ferry-bench "$WORKDIR/data" ||
        die "cannot mount a tmpfs on $WORKDIR/data"
    MOUNTED=1
fi
DATA=$WORKDIR/data/servers
CLIENT_DIR=$WORKDIR/data/client
mkdir -p "$DATA" "$CLIENT_DIR"
chmod 755 "$DATA"

if [ $BUILD = 1 ]; then
    log "building Ferry: cargo build --release -p ferry"
    (cd "$REPO_DIR" && cargo build --release -p ferry) >"$LOGS/build.log" 2>&1 ||
        die "cargo build --release -p ferry failed; see $LOGS/build.log"
fi
[ -x "$FERRY" ] || die "$FERRY not found; build it with cargo build --release -p ferry"

# The account is what sshd and vsftpd log in; Ferry has its own users file. Its home must
# exist because vsftpd changes into it before it changes into local_root.
if ! id "$BENCH_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir "$DATA" --shell /bin/bash "$BENCH_USER" ||
        die "cannot create the account $BENCH_USER"
    CREATED_USER=1
elif [ "$(getent passwd "$BENCH_USER" | cut -d: -f6)" != "$DATA" ]; then
    usermod --home "$DATA" "$BENCH_USER" || die "cannot set the home folder of $BENCH_USER to $DATA"
fi
BENCH_PASSWORD=$(openssl rand -hex 12)
echo "$BENCH_USER:$BENCH_PASSWORD" | chpasswd || die "cannot set the password of $BENCH_USER"
FERRY_PASSWORD_HASH=$(printf '%s\n' "$BENCH_PASSWORD" | "$FERRY" hash-password)
ferry_hash_kind=$(cut -d '$' -f 2-4 <<<"$FERRY_PASSWORD_HASH")
account_hash_kind=$(getent shadow "$BENCH_USER" | cut -d: -f2 | cut -d '$' -f 2-3)
add_check "password hashes: Ferry \$$ferry_hash_kind\$..., vsftpd's account \$$account_hash_kind\$..."
ssh-keygen -q -t ed25519 -N '' -C ferry-bench -f "$STATE/client_key"
mkdir -p "$STATE/tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -keyout "$STATE/tls/key.pem" -out "$STATE/tls/cert.pem" 2>/dev/null ||
    die "openssl cannot create a test certificate"
chmod 600 "$STATE/tls/key.pem"

enter_client_cgroup

# --- report header ----------------------------------------------------------------------

first_line() { "$@" 2>&1 | head -n 1; }
package_version() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null || echo unknown; }
{
    echo "command	$COMMAND_LINE"
    echo "date	$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cpu	$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(nproc) cores"
    echo "memory	$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "kernel	$(uname -sr)"
    echo "load before start	$(cut -d ' ' -f 1-3 /proc/loadavg)"
    echo "runs	$RUNS per figure (median); $BULK_MIB MiB files, $SMALL_FILES small files," \
        "$LIST_ENTRIES entries, $LOGINS logins, $SESSIONS sessions"
    changes=""
    git -C "$REPO_DIR" diff --quiet HEAD -- crates || changes=" with uncommitted changes in crates/"
    echo "ferry	$("$FERRY" --version), built $(date -u -r "$FERRY" '+%Y-%m-%d %H:%M UTC');" \
        "checkout at $(git -C "$REPO_DIR" rev-parse --short HEAD)$changes"
    echo "openssh	$(first_line /usr/sbin/sshd -V) (Debian $(package_version openssh-server))"
    echo "vsftpd	$(/usr/sbin/vsftpd -v 0>&1 | head -n 1) (Debian $(package_version vsftpd))"
    echo "apache	$(first_line /usr/sbin/apache2 -v) (Debian $(package_version apache2))"
    echo "nginx	$(first_line /usr/sbin/nginx -v) (Debian $(package_version nginx))," \
        "dav-ext $(package_version libnginx-mod-http-dav-ext)"
    echo "curl	$(first_line curl --version)"
    echo "lftp	$(lftp --version | sed -n 's/.*Version \([0-9.]*\).*/lftp \1/p' | head -n 1)"
    echo "sftp client	$(first_line ssh -V)"
    echo "python	$(python3 --version 2>&1)," \
        "paramiko $(python3 -c 'import paramiko; print(paramiko.__version__)')"
} >"$OUT/header.tsv"

log "results go to $OUT"
for section in "${SECTIONS[@]}"; do
    log "section $section"
    "section_$section"
done

python3 "$BENCH_DIR/report.py" "$OUT" | tee "$OUT/report.md"
