//! SFTP over real SSH against the `ferry` binary: OpenSSH's sftp and scp, paramiko with a
//! small window and packet size, libssh2 through curl, and rclone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

fn start() -> TestServer {
    Setup::default()
        .only(&["ssh"])
        .hook(LoginHook::None)
        .start()
}

fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs a python script that gets the port, the client key and the home as arguments.
fn python(server: &TestServer, script: &str) -> Output {
    let path = server.root().join(format!("client-{}.py", rand_suffix()));
    std::fs::write(&path, script).unwrap();
    let mut command = Command::new("python3");
    command
        .arg(&path)
        .arg(server.ssh_port().to_string())
        .arg(server.alice_key())
        .arg(server.home("alice"))
        .current_dir(server.root());
    run(command, CLIENT_TIMEOUT)
}

/// Lines of `stdout` between the echo of `command` and the next command.
fn output_of<'a>(stdout: &'a str, command: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .skip_while(|line| *line != format!("sftp> {command}"))
        .skip(1)
        .take_while(|line| !line.starts_with("sftp> "))
        .collect()
}

/// Runs `scp` with alice's key.
fn scp(server: &TestServer, from: &str, to: &str) -> Output {
    let mut command = Command::new("scp");
    command
        .args(ssh_options(server.ssh_port()))
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
        .arg(server.alice_key())
        .args([from, to]);
    run(command, CLIENT_TIMEOUT)
}

fn mkdir_home(server: &TestServer) -> std::path::PathBuf {
    let home = server.home("alice");
    std::fs::create_dir_all(&home).unwrap();
    home
}

#[test]
fn openssh_put_get_100_mib() {
    let server = start();
    let local = server.root().join("big.bin");
    write_random_file(&local, 100 << 20);
    let back = server.root().join("back.bin");
    let batch = format!(
        "put {} big.bin\nget big.bin {}\n",
        local.display(),
        back.display()
    );
    let output = sftp_batch_with_key(&server, "alice", &server.alice_key(), &batch);
    assert_ok(&output, "sftp put/get");
    let expected = sha256(&local);
    assert_eq!(sha256(&server.home("alice").join("big.bin")), expected);
    assert_eq!(sha256(&back), expected);
}

#[test]
fn openssh_operations_with_password() {
    let server = start();
    let home = mkdir_home(&server);
    std::fs::write(home.join("old name.txt"), b"content").unwrap();
    let local = server.root().join("up.txt");
    std::fs::write(&local, b"uploaded").unwrap();

    let batch = format!(
        "mkdir \"ü dir\"\n\
         put {} \"ü dir/é.txt\"\n\
         rename \"old name.txt\" new.txt\n\
         ln -s new.txt link.txt\n\
         chmod 600 new.txt\n\
         ls -l\n\
         df\n\
         rm \"ü dir/é.txt\"\n\
         rmdir \"ü dir\"\n",
        local.display()
    );
    let output = sftp_batch_with_password(&server, "alice", ALICE_PASSWORD, &batch);
    assert_ok(&output, "sftp batch");

    let stdout = String::from_utf8_lossy(&output.stdout);
    let listing = output_of(&stdout, "ls -l");
    assert_eq!(listing.len(), 3, "{stdout}");
    assert!(listing[0].starts_with('l'), "{}", listing[0]);
    assert!(listing[0].ends_with(" link.txt"), "{}", listing[0]);
    assert!(listing[1].starts_with("-rw-------"), "{}", listing[1]);
    assert!(listing[2].starts_with('d'), "{}", listing[2]);
    assert_eq!(output_of(&stdout, "df").len(), 2, "{stdout}");

    assert_eq!(std::fs::read(home.join("new.txt")).unwrap(), b"content");
    assert_eq!(
        std::fs::read_link(home.join("link.txt")).unwrap(),
        Path::new("new.txt")
    );
    assert!(!home.join("ü dir").exists());
}

#[test]
fn each_cipher_transfers_file() {
    let server = start();
    mkdir_home(&server);
    let local = server.root().join("c.bin");
    write_random_file(&local, 1 << 20);
    let ciphers = [
        "chacha20-poly1305@openssh.com",
        "aes256-gcm@openssh.com",
        "aes128-gcm@openssh.com",
        "aes256-ctr",
        "aes128-ctr",
    ];
    for cipher in ciphers {
        let target = format!("{cipher}.bin");
        let mut command = Command::new("scp");
        command
            .args(ssh_options(server.ssh_port()))
            .args(["-c", cipher])
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
            .arg(server.alice_key())
            .arg(&local)
            .arg(format!("alice@127.0.0.1:{target}"));
        let output = run(command, CLIENT_TIMEOUT);
        assert_ok(&output, cipher);
        assert_eq!(sha256(&server.home("alice").join(&target)), sha256(&local));
    }
}

#[test]
fn scp_sftp_mode_round_trip() {
    let server = start();
    let local = server.root().join("s.bin");
    write_random_file(&local, 8 << 20);
    let back = server.root().join("back.bin");
    let upload = scp(
        &server,
        &local.display().to_string(),
        "alice@127.0.0.1:s.bin",
    );
    let download = scp(
        &server,
        "alice@127.0.0.1:s.bin",
        &back.display().to_string(),
    );
    assert_eq!(sha256(&server.home("alice").join("s.bin")), sha256(&local));
    assert_eq!(sha256(&back), sha256(&local));
    assert_eq!(upload.status.code(), Some(0), "{upload:?}");
    assert_eq!(download.status.code(), Some(0), "{download:?}");
}

/// paramiko with a 128 KiB window and 32 KiB packets, as FileZilla and sshj use; the
/// download prefetches every block of the file at once.
#[test]
fn paramiko_small_window() {
    let server = start();
    let home = mkdir_home(&server);
    write_random_file(&home.join("big.bin"), 32 << 20);
    let script = r#"
import sys, paramiko
port, key, home = int(sys.argv[1]), sys.argv[2], sys.argv[3]
t = paramiko.Transport(("127.0.0.1", port), default_window_size=131072,
                       default_max_packet_size=32768)
t.connect(username="alice", pkey=paramiko.Ed25519Key.from_private_key_file(key))
s = paramiko.SFTPClient.from_transport(t)
s.get("big.bin", "down.bin")
s.put("down.bin", "up.bin")
print("size", s.stat("up.bin").st_size)
s.close()
t.close()
"#;
    let output = python(&server, script);
    assert_ok(&output, "paramiko transfer");
    let expected = sha256(&home.join("big.bin"));
    assert_eq!(sha256(&server.root().join("down.bin")), expected);
    assert_eq!(sha256(&home.join("up.bin")), expected);
}

#[test]
fn paramiko_listdir_attr_longnames() {
    let server = start();
    let home = mkdir_home(&server);
    std::fs::create_dir(home.join("a dir")).unwrap();
    std::fs::write(home.join("ü file.txt"), b"12345").unwrap();
    std::os::unix::fs::symlink("ü file.txt", home.join("lnk")).unwrap();
    let script = r#"
import sys, stat, paramiko
port, key = int(sys.argv[1]), sys.argv[2]
t = paramiko.Transport(("127.0.0.1", port))
t.connect(username="alice", pkey=paramiko.Ed25519Key.from_private_key_file(key))
s = paramiko.SFTPClient.from_transport(t)
for a in sorted(s.listdir_attr("."), key=lambda a: a.filename):
    kind = "d" if stat.S_ISDIR(a.st_mode) else "l" if stat.S_ISLNK(a.st_mode) else "-"
    print(kind + "\t" + a.filename + "\t" + a.longname)
t.close()
"#;
    let output = python(&server, script);
    assert_ok(&output, "paramiko listdir_attr");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let rows: Vec<Vec<&str>> = stdout.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    for row in &rows {
        let (kind, name, longname) = (row[0], row[1], row[2]);
        assert!(
            longname.starts_with(kind),
            "{longname} is not of type {kind}"
        );
        assert!(longname.ends_with(&format!(" {name}")), "{longname}");
        assert!(longname.split_whitespace().count() >= 9, "{longname}");
    }
    assert!(rows[2][2].contains(" 5 "), "{}", rows[2][2]);
}

#[test]
fn init_version_six_answered_with_three() {
    let server = start();
    let script = r#"
import sys, struct, paramiko
port, key = int(sys.argv[1]), sys.argv[2]
t = paramiko.Transport(("127.0.0.1", port))
t.connect(username="alice", pkey=paramiko.Ed25519Key.from_private_key_file(key))
ch = t.open_session()
ch.invoke_subsystem("sftp")
ch.sendall(struct.pack(">IBI", 5, 1, 6))
data = b""
while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
    chunk = ch.recv(65536)
    if not chunk:
        break
    data += chunk
length, kind, version = struct.unpack(">IBI", data[:9])
print(kind, version)
rest, names = data[9:4 + length], []
while rest:
    n = struct.unpack(">I", rest[:4])[0]
    names.append(rest[4:4 + n].decode())
    m = struct.unpack(">I", rest[4 + n:8 + n])[0]
    rest = rest[8 + n + m:]
print(" ".join(names))
t.close()
"#;
    let output = python(&server, script);
    assert_ok(&output, "raw INIT");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("2 3"), "{stdout}");
    let extensions = lines.next().unwrap_or_default();
    assert!(extensions.contains("limits@openssh.com"), "{stdout}");
    assert!(extensions.contains("posix-rename@openssh.com"), "{stdout}");
}

#[test]
fn curl_libssh2_download() {
    let server = start();
    let home = mkdir_home(&server);
    write_random_file(&home.join("c.bin"), 16 << 20);
    let out = server.root().join("c.out");
    let mut command = Command::new("curl");
    command
        .args([
            "-sS",
            "--insecure",
            "-u",
            &format!("alice:{ALICE_PASSWORD}"),
        ])
        .arg("-o")
        .arg(&out)
        .arg(format!("sftp://127.0.0.1:{}/c.bin", server.ssh_port()));
    let output = run(command, CLIENT_TIMEOUT);
    assert_ok(&output, "curl sftp download");
    assert_eq!(sha256(&out), sha256(&home.join("c.bin")));
}

#[test]
fn rclone_copy_both_ways() {
    let server = start();
    let home = mkdir_home(&server);
    write_random_file(&home.join("r.bin"), 16 << 20);
    let remote = format!(
        ":sftp,host=127.0.0.1,port={},user=alice,key_file={}",
        server.ssh_port(),
        server.alice_key().display()
    );
    let rclone = |from: String, to: String| {
        let mut command = Command::new("rclone");
        command
            .args(["--config", "/dev/null", "copyto"])
            .arg(from)
            .arg(to);
        run(command, CLIENT_TIMEOUT)
    };
    let down = server.root().join("r.down");
    let output = rclone(format!("{remote}:r.bin"), down.display().to_string());
    assert_ok(&output, "rclone download");
    assert_eq!(sha256(&down), sha256(&home.join("r.bin")));
    let output = rclone(down.display().to_string(), format!("{remote}:r.up"));
    assert_ok(&output, "rclone upload");
    assert_eq!(sha256(&home.join("r.up")), sha256(&down));
}
