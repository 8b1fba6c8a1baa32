//! Session channels after login: legacy SCP in both directions, the SFTP subsystem, and the
//! rejection of shells, other commands, unknown subsystems and forwarding.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::*;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// `scp` in legacy (rcp protocol) mode, logged in as alice with her key.
fn scp(port: u16, args: &[&str]) -> Command {
    let mut command = Command::new("scp");
    command
        .arg("-O")
        .args(ssh_options(port))
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
        .arg(key("id_ed25519"))
        .args(args);
    command
}

fn alice(path: &str) -> String {
    format!("alice@127.0.0.1:{path}")
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Sets access and modification time to `secs` since the epoch.
fn set_time(path: &Path, secs: u64) {
    let status = Command::new("touch")
        .args(["-h", "-d", &format!("@{secs}")])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Builds a tree with files of several modes and times, a large file, nested and empty
/// directories and names with spaces.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(root.join("empty dir")).unwrap();
    std::fs::write(root.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(root.join("with space.txt"), "spaced out\n").unwrap();
    std::fs::write(root.join("script.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(root.join("empty.bin"), "").unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(root.join("sub/big.bin"), big).unwrap();
    std::fs::write(root.join("sub/deeper/nested.txt"), "deep\n").unwrap();

    set_mode(&root.join("a.txt"), 0o640);
    set_mode(&root.join("script.sh"), 0o755);
    set_mode(&root.join("sub/big.bin"), 0o600);
    set_mode(&root.join("sub"), 0o750);
    let mut secs = 1_500_000_000;
    for entry in [
        "a.txt",
        "with space.txt",
        "script.sh",
        "empty.bin",
        "sub/big.bin",
        "sub/deeper/nested.txt",
        "sub/deeper",
        "sub",
        "empty dir",
    ] {
        set_time(&root.join(entry), secs);
        secs += 86_400;
    }
}

/// Lists a tree as (relative path, kind, mode, mtime, content) rows, sorted.
fn snapshot(root: &Path) -> Vec<(PathBuf, &'static str, u32, i64, Vec<u8>)> {
    let mut rows = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            let mode = meta.mode() & 0o777;
            if meta.is_dir() {
                rows.push((relative, "dir", mode, meta.mtime(), Vec::new()));
                stack.push(path);
            } else {
                let content = std::fs::read(&path).unwrap();
                rows.push((relative, "file", mode, meta.mtime(), content));
            }
        }
    }
    rows.sort();
    rows
}

#[test]
fn scp_tree_round_trip() {
    let server = TestServer::start();
    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("tree");
    make_tree(&source);
    let expected = snapshot(&source);
    server.home("alice");

    let up = run(
        scp(
            server.port,
            &["-r", "-p", source.to_str().unwrap(), &alice("")],
        ),
        CLIENT_TIMEOUT,
    );
    assert!(up.status.success(), "upload: {}", text(&up.stderr));
    assert_eq!(snapshot(&server.home("alice").join("tree")), expected);

    let target = local.path().join("back");
    let down = run(
        scp(
            server.port,
            &["-r", "-p", &alice("tree"), target.to_str().unwrap()],
        ),
        CLIENT_TIMEOUT,
    );
    assert!(down.status.success(), "download: {}", text(&down.stderr));
    assert_eq!(snapshot(&target), expected);
}

#[test]
fn scp_single_files() {
    let server = TestServer::start();
    let home = server.home("alice");
    std::fs::create_dir(home.join("inbox")).unwrap();
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("report.txt");
    std::fs::write(&file, "numbers\n").unwrap();
    set_mode(&file, 0o700);

    for target in ["renamed.txt", "inbox", "~/inbox/again.txt"] {
        let output = run(
            scp(server.port, &[file.to_str().unwrap(), &alice(target)]),
            CLIENT_TIMEOUT,
        );
        assert!(
            output.status.success(),
            "{target}: {}",
            text(&output.stderr)
        );
    }
    assert_eq!(
        std::fs::read(home.join("renamed.txt")).unwrap(),
        b"numbers\n"
    );
    assert_eq!(
        std::fs::read(home.join("inbox/report.txt")).unwrap(),
        b"numbers\n"
    );
    assert_eq!(
        std::fs::read(home.join("inbox/again.txt")).unwrap(),
        b"numbers\n"
    );
    // Without -p a new file takes the source's mode, less the bits a umask of 022 removes.
    let mode = std::fs::metadata(home.join("renamed.txt")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o700);

    let copy = local.path().join("copy.txt");
    let output = run(
        scp(
            server.port,
            &[&alice("/inbox/report.txt"), copy.to_str().unwrap()],
        ),
        CLIENT_TIMEOUT,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(std::fs::read(&copy).unwrap(), b"numbers\n");
}

#[test]
fn scp_directory_to_new_name() {
    let server = TestServer::start();
    let home = server.home("alice");
    let local = tempfile::tempdir().unwrap();
    let tree = local.path().join("tree");
    std::fs::create_dir_all(tree.join("inner")).unwrap();
    std::fs::write(tree.join("inner/file.txt"), "inside\n").unwrap();
    let output = run(
        scp(server.port, &["-r", tree.to_str().unwrap(), &alice("copy")]),
        CLIENT_TIMEOUT,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        std::fs::read(home.join("copy/inner/file.txt")).unwrap(),
        b"inside\n"
    );
}

#[test]
fn scp_several_files_need_directory() {
    let server = TestServer::start();
    let home = server.home("alice");
    std::fs::create_dir(home.join("inbox")).unwrap();
    let local = tempfile::tempdir().unwrap();
    let one = local.path().join("one.txt");
    let two = local.path().join("two.txt");
    std::fs::write(&one, "1").unwrap();
    std::fs::write(&two, "2").unwrap();
    let files = [one.to_str().unwrap(), two.to_str().unwrap()];

    let into_dir = run(
        scp(server.port, &[files[0], files[1], &alice("inbox")]),
        CLIENT_TIMEOUT,
    );
    assert!(into_dir.status.success(), "{}", text(&into_dir.stderr));
    assert_eq!(std::fs::read(home.join("inbox/one.txt")).unwrap(), b"1");
    assert_eq!(std::fs::read(home.join("inbox/two.txt")).unwrap(), b"2");

    // Several sources make scp send -d, and a target that is not a directory fails.
    let into_file = run(
        scp(server.port, &[files[0], files[1], &alice("inbox/one.txt")]),
        CLIENT_TIMEOUT,
    );
    assert_eq!(into_file.status.code(), Some(1));
    assert!(
        text(&into_file.stderr).contains("Not a directory"),
        "{}",
        text(&into_file.stderr)
    );
}

#[test]
fn scp_with_curl_libssh2() {
    let server = TestServer::start();
    let home = server.home("alice");
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("up.txt");
    std::fs::write(&file, "sent by curl\n").unwrap();
    let curl = |args: &[&str]| {
        let mut command = Command::new("curl");
        command
            .args(["-sS", "--insecure", "-u", "alice:", "--key"])
            .arg(key("id_ed25519"))
            .arg("--pubkey")
            .arg(key("id_ed25519.pub"))
            .args(args);
        run(command, CLIENT_TIMEOUT)
    };
    let base = format!("scp://127.0.0.1:{}/~", server.port);

    let up = curl(&[
        "-T",
        file.to_str().unwrap(),
        &format!("{base}/from%20curl.txt"),
    ]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    assert_eq!(
        std::fs::read(home.join("from curl.txt")).unwrap(),
        b"sent by curl\n"
    );

    let down = curl(&[&format!("{base}/from%20curl.txt")]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert_eq!(down.stdout, b"sent by curl\n");
}

#[test]
fn scp_wildcard_download() {
    let server = TestServer::start();
    let home = server.home("alice");
    for name in ["one.txt", "two.txt", "three.log", ".hidden.txt"] {
        std::fs::write(home.join(name), name).unwrap();
    }
    let local = tempfile::tempdir().unwrap();
    let output = run(
        scp(
            server.port,
            &[&alice("*.txt"), local.path().to_str().unwrap()],
        ),
        CLIENT_TIMEOUT,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let mut names: Vec<String> = std::fs::read_dir(local.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["one.txt", "two.txt"]);
}

#[test]
fn scp_errors_reported() {
    let server = TestServer::start();
    server.home("alice");
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f.txt");
    std::fs::write(&file, "x").unwrap();

    let missing = run(
        scp(
            server.port,
            &[&alice("nothere.txt"), local.path().to_str().unwrap()],
        ),
        CLIENT_TIMEOUT,
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("nothere.txt: No such file or directory"),
        "{}",
        text(&missing.stderr)
    );

    let no_parent = run(
        scp(
            server.port,
            &[file.to_str().unwrap(), &alice("no/such/dir/f.txt")],
        ),
        CLIENT_TIMEOUT,
    );
    assert_eq!(
        no_parent.status.code(),
        Some(1),
        "{}",
        text(&no_parent.stderr)
    );
    assert!(
        text(&no_parent.stderr).contains("No such file or directory"),
        "{}",
        text(&no_parent.stderr)
    );

    let directory = run(
        scp(server.port, &[&alice("/"), local.path().to_str().unwrap()]),
        CLIENT_TIMEOUT,
    );
    assert_eq!(directory.status.code(), Some(1));
    assert!(
        text(&directory.stderr).contains("not a regular file"),
        "{}",
        text(&directory.stderr)
    );

    // `..` stops at the home directory, so this lands in the home's own tmp folder.
    std::fs::create_dir(server.home("alice").join("tmp")).unwrap();
    let name = format!("escaped-{}.txt", unique());
    let target = format!("../../../tmp/{name}");
    let escape = run(
        scp(server.port, &[file.to_str().unwrap(), &alice(&target)]),
        CLIENT_TIMEOUT,
    );
    assert!(escape.status.success(), "{}", text(&escape.stderr));
    assert!(server.home("alice").join("tmp").join(&name).exists());
    assert!(!Path::new("/tmp").join(&name).exists());
}

/// Speaks the rcp protocol through paramiko's exec channel, for cases the scp client does
/// not produce.
const RAW_SCP_SCRIPT: &str = r#"
import sys, time, paramiko
from paramiko.transport import ServiceRequestingTransport
port, key_file, case = int(sys.argv[1]), sys.argv[2], sys.argv[3]
t = ServiceRequestingTransport(("127.0.0.1", port))
t.start_client(timeout=10)
t.auth_publickey("alice", paramiko.Ed25519Key.from_private_key_file(key_file))
chan = t.open_session()
chan.settimeout(10)
if case == "interrupted":
    chan.exec_command("scp -t partial.txt")
    print(repr(chan.recv(1)))
    chan.sendall(b"C0644 100 partial.txt\n")
    print(repr(chan.recv(1)))
    chan.sendall(b"x" * 50)
    time.sleep(0.5)
    chan.close()
elif case == "missing":
    chan.exec_command("scp -f nothere")
    chan.sendall(b"\0")
    reply = b""
    while not reply.endswith(b"\n"):
        reply += chan.recv(1024)
    print(repr(reply))
    print(chan.recv_exit_status())
    print(repr(chan.recv_stderr(1024)))
elif case in ("huge-file-time", "huge-dir-time"):
    # A T record with a modification time past what a file can hold.
    chan.exec_command("scp -p -t tp.txt" if case == "huge-file-time" else "scp -r -p -t .")
    print(repr(chan.recv(1)))
    chan.sendall(b"T18446744073709551615 0 18446744073709551615 0\n")
    reply = b""
    while not reply.endswith(b"\n"):
        reply += chan.recv(1024)
    print(repr(reply))
    print(chan.recv_exit_status())
elif case == "largest-dir-time":
    chan.exec_command("scp -r -p -t .")
    print(repr(chan.recv(1)))
    chan.sendall(b"T9223372036854775807 0 1 0\n")
    print(repr(chan.recv(1)))
    chan.sendall(b"D0755 0 tdir\n")
    print(repr(chan.recv(1)))
    chan.sendall(b"E\n")
    reply = chan.recv(1)
    if reply != b"\0":
        while not reply.endswith(b"\n"):
            reply += chan.recv(1024)
    print("E answered")
    chan.shutdown_write()
    print(chan.recv_exit_status())
elif case == "bad-name":
    chan.exec_command("scp -t .")
    print(repr(chan.recv(1)))
    chan.sendall(b"C0644 3 ../up.txt\n")
    reply = b""
    while not reply.endswith(b"\n"):
        reply += chan.recv(1024)
    print(repr(reply))
    print(chan.recv_exit_status())
t.close()
"#;

fn raw_scp(server: &TestServer, case: &str) -> Vec<String> {
    let output = python(
        server.root(),
        RAW_SCP_SCRIPT,
        &[
            &server.port.to_string(),
            key("id_ed25519").to_str().unwrap(),
            case,
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn scp_interrupted_upload_discarded() {
    let server = TestServer::start();
    let home = server.home("alice");
    std::fs::write(home.join("partial.txt"), "old content").unwrap();
    assert_eq!(raw_scp(&server, "interrupted"), ["b'\\x00'", "b'\\x00'"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        std::fs::read(home.join("partial.txt")).unwrap(),
        b"old content"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&home)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != "partial.txt")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn scp_missing_file_protocol() {
    let server = TestServer::start();
    server.home("alice");
    assert_eq!(
        raw_scp(&server, "missing"),
        [
            "b'\\x01scp: /nothere: No such file or directory\\n'",
            "1",
            "b'scp: /nothere: No such file or directory\\n'"
        ]
    );
}

#[test]
fn scp_bad_name_rejected() {
    let server = TestServer::start();
    server.home("alice");
    assert_eq!(
        raw_scp(&server, "bad-name"),
        [
            "b'\\x00'",
            "b'\\x02scp: protocol error: unexpected file name \"../up.txt\"\\n'",
            "1"
        ]
    );
    assert!(!server.root().join("home/up.txt").exists());
}

#[test]
fn scp_huge_time_rejected() {
    let server = TestServer::start();
    server.home("alice");
    let message = "b'\\x02scp: protocol error: time out of range: \"18446744073709551615\" \
                   or \"18446744073709551615\"\\n'";
    for case in ["huge-file-time", "huge-dir-time"] {
        assert_eq!(raw_scp(&server, case), ["b'\\x00'", message, "1"], "{case}");
    }
    assert!(!server.home("alice").join("tp.txt").exists());
}

#[test]
fn scp_largest_time_handled() {
    let server = TestServer::start();
    server.home("alice");
    let lines = raw_scp(&server, "largest-dir-time");
    // The file system may reject a time this far ahead, which is a warning. The channel
    // still replies and ends with an exit status.
    assert_eq!(
        &lines[..4],
        ["b'\\x00'", "b'\\x00'", "b'\\x00'", "E answered"],
        "{lines:?}"
    );
    assert!(lines[4] == "0" || lines[4] == "1", "{lines:?}");
    assert!(server.home("alice").join("tdir").is_dir());
}

#[test]
fn scp_download_small_window() {
    let server = TestServer::start();
    let home = server.home("alice");
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(home.join("data.bin"), &data).unwrap();
    // A client with a small window and packet size, as FileZilla and sshj use, must get
    // every byte with no packet larger than it allows.
    let output = python(
        server.root(),
        r#"
import hashlib, sys, paramiko
t = paramiko.Transport(("127.0.0.1", int(sys.argv[1])), default_window_size=131072,
                       default_max_packet_size=32768)
t.start_client(timeout=10)
t.auth_publickey("alice", paramiko.Ed25519Key.from_private_key_file(sys.argv[2]))
chan = t.open_session(window_size=131072, max_packet_size=32768)
chan.settimeout(30)
chan.exec_command("scp -f data.bin")
chan.sendall(b"\0")
record = b""
while not record.endswith(b"\n"):
    record += chan.recv(1)
size = int(record.split(b" ")[1])
chan.sendall(b"\0")
digest, left = hashlib.sha256(), size
while left > 0:
    chunk = chan.recv(min(left, 65536))
    digest.update(chunk)
    left -= len(chunk)
assert chan.recv(1) == b"\0"
chan.sendall(b"\0")
print(size, digest.hexdigest(), chan.recv_exit_status())
t.close()
"#,
        &[
            &server.port.to_string(),
            key("id_ed25519").to_str().unwrap(),
        ],
    );
    let expected = {
        let output = Command::new("sha256sum")
            .arg(home.join("data.bin"))
            .output()
            .unwrap();
        text(&output.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        text(&output.stdout).trim(),
        format!("5000000 {expected} 0"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn sftp_subsystem_serves() {
    let server = TestServer::start();
    let home = server.home("alice");
    std::fs::write(home.join("hello.txt"), "hello\n").unwrap();
    let local = tempfile::tempdir().unwrap();
    let batch = local.path().join("batch");
    std::fs::write(
        &batch,
        format!(
            "get hello.txt {}\nput {} copy.txt\n",
            local.path().join("got.txt").display(),
            local.path().join("got.txt").display()
        ),
    )
    .unwrap();
    let mut sftp = Command::new("sftp");
    sftp.args(ssh_options(server.port))
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
        .arg(key("id_ed25519"))
        .arg("-b")
        .arg(&batch)
        .arg("alice@127.0.0.1");
    let output = run(sftp, CLIENT_TIMEOUT);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(std::fs::read(home.join("copy.txt")).unwrap(), b"hello\n");
}

fn rejected(output: &std::process::Output, message: &str) {
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains(message),
        "{}",
        text(&output.stderr)
    );
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
}

#[test]
fn exec_command_rejected() {
    let server = TestServer::start();
    let ssh = ssh(server.port, "alice", "publickey").key(&key("id_ed25519"));
    let output = run(ssh.command(&["ls", "-l", "/"]), CLIENT_TIMEOUT);
    rejected(&output, "ferry: command \"ls -l /\" is not available");
}

#[test]
fn shell_rejected() {
    let server = TestServer::start();
    let plain = ssh(server.port, "alice", "publickey").key(&key("id_ed25519"));
    let output = run(plain.command(&["-T"]), CLIENT_TIMEOUT);
    rejected(&output, "ferry: shell access is not available");
}

#[test]
fn unknown_subsystem_rejected() {
    let server = TestServer::start();
    let ssh = ssh(server.port, "alice", "publickey").key(&key("id_ed25519"));
    let output = run(ssh.command(&["-s", "netconf"]), CLIENT_TIMEOUT);
    rejected(&output, "ferry: subsystem \"netconf\" is not available");
}

#[test]
fn forwarding_rejected() {
    let server = TestServer::start();
    let output = python(
        server.root(),
        r#"
import sys, paramiko
from paramiko.transport import ServiceRequestingTransport
t = ServiceRequestingTransport(("127.0.0.1", int(sys.argv[1])))
t.start_client(timeout=10)
t.auth_publickey("alice", paramiko.Ed25519Key.from_private_key_file(sys.argv[2]))
try:
    t.open_channel("direct-tcpip", ("127.0.0.1", 22), ("127.0.0.1", 40000), timeout=10)
    print("direct-tcpip opened")
except paramiko.ChannelException:
    print("direct-tcpip rejected")
try:
    t.request_port_forward("127.0.0.1", 0)
    print("tcpip-forward accepted")
except paramiko.SSHException:
    print("tcpip-forward rejected")
try:
    t.open_session().get_pty()
    print("pty accepted")
except paramiko.SSHException:
    print("pty rejected")
chan = t.open_session()
chan.exec_command("scp -f nothere")
chan.sendall(b"\0")
print("exit", chan.recv_exit_status())
t.close()
"#,
        &[
            &server.port.to_string(),
            key("id_ed25519").to_str().unwrap(),
        ],
    );
    assert_eq!(
        text(&output.stdout).lines().collect::<Vec<_>>(),
        [
            "direct-tcpip rejected",
            "tcpip-forward rejected",
            "pty rejected",
            "exit 1"
        ],
        "{}",
        text(&output.stderr)
    );
}

/// Opens and closes more session channels on one connection than may be open at once.
const CHANNEL_CHURN_SCRIPT: &str = r#"
import sys, paramiko
from paramiko.transport import ServiceRequestingTransport
port, key_file, rounds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
t = ServiceRequestingTransport(("127.0.0.1", port))
t.start_client(timeout=10)
t.auth_publickey("alice", paramiko.Ed25519Key.from_private_key_file(key_file))
for n in range(rounds):
    # The client closes an SFTP channel.
    sftp = paramiko.SFTPClient.from_transport(t)
    sftp.listdir("/")
    sftp.close()
    # The server closes an SCP channel after its exit status.
    chan = t.open_session(timeout=10)
    chan.exec_command("scp -f nothere")
    chan.sendall(b"\0")
    status = chan.recv_exit_status()
    chan.close()
    print(n, status)
# Channels open at the same time are still limited.
held = []
try:
    for n in range(20):
        held.append(t.open_session(timeout=10))
except paramiko.ChannelException as e:
    print("open at once:", len(held), e.code)
t.close()
"#;

#[test]
fn closed_channels_free_their_slots() {
    let server = TestServer::start();
    server.home("alice");
    let output = python(
        server.root(),
        CHANNEL_CHURN_SCRIPT,
        &[
            &server.port.to_string(),
            key("id_ed25519").to_str().unwrap(),
            "15",
        ],
    );
    let lines: Vec<String> = text(&output.stdout).lines().map(str::to_owned).collect();
    let mut expected: Vec<String> = (0..15).map(|n| format!("{n} 1")).collect();
    // paramiko's code 4 is SSH_OPEN_RESOURCE_SHORTAGE.
    expected.push("open at once: 10 4".into());
    assert_eq!(lines, expected, "{}", text(&output.stderr));
}

#[test]
fn openssh_connection_sharing() {
    let server = TestServer::start();
    let home = server.home("alice");
    std::fs::write(home.join("shared.txt"), "shared\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control.sock");
    let options = |command: &mut Command| {
        command
            .args(ssh_options(server.port))
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
            .arg(key("id_ed25519"))
            .arg("-o")
            .arg(format!("ControlPath={}", control.display()));
    };
    let mut master = Command::new("ssh");
    options(&mut master);
    master.args([
        "-o",
        "ControlMaster=yes",
        "-o",
        "ControlPersist=30",
        "-f",
        "-N",
    ]);
    master.arg("alice@127.0.0.1");
    let started = run(master, CLIENT_TIMEOUT);
    assert!(started.status.success(), "{}", text(&started.stderr));

    // Each client runs on its own channel of the shared connection. The SFTP client closes
    // its channel first, and the server closes the SCP channel after the exit status. A
    // client whose channel is refused prints a warning and connects on its own instead.
    let copy = dir.path().join("copy.txt");
    let batch = dir.path().join("batch");
    std::fs::write(&batch, format!("get shared.txt {}\n", copy.display())).unwrap();
    for round in 0..12 {
        let mut sftp = Command::new("sftp");
        options(&mut sftp);
        sftp.arg("-b").arg(&batch).arg("alice@127.0.0.1");
        let output = run(sftp, CLIENT_TIMEOUT);
        assert!(
            output.status.success(),
            "sftp round {round}: {}",
            text(&output.stderr)
        );
        assert_eq!(text(&output.stderr), "", "sftp round {round}");
        std::fs::remove_file(&copy).unwrap();

        let mut scp = Command::new("scp");
        scp.arg("-O");
        options(&mut scp);
        scp.arg("alice@127.0.0.1:shared.txt").arg(&copy);
        let output = run(scp, CLIENT_TIMEOUT);
        assert!(
            output.status.success(),
            "scp round {round}: {}",
            text(&output.stderr)
        );
        assert_eq!(text(&output.stderr), "", "scp round {round}");
        std::fs::remove_file(&copy).unwrap();
    }

    let mut stop = Command::new("ssh");
    options(&mut stop);
    stop.args(["-O", "exit", "alice@127.0.0.1"]);
    let stopped = run(stop, CLIENT_TIMEOUT);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
}
