//! Connections that never log in, admission, the login timeout, host keys and shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ferry_ssh::{Binding, Config};
use support::*;

const SETTLE: Duration = Duration::from_millis(800);

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Reads until the server closes the connection and returns what it sent.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    received
}

#[test]
fn bare_tcp_close_reported() {
    let server = TestServer::start();
    drop(connect(server.port));
    assert_eq!(
        server.events(1, SETTLE),
        vec![event("", "no_auth_tryed", 0)]
    );
}

#[test]
fn garbage_banner_reported() {
    let server = TestServer::start();
    let mut stream = connect(server.port);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let received = read_to_close(&mut stream);
    assert!(
        received.starts_with(b"SSH-2.0-Ferry\r\n"),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(
        server.events(1, SETTLE),
        vec![event("", "no_auth_tryed", 0)]
    );
}

#[test]
fn key_exchange_failure_reported() {
    let server = TestServer::start();
    let ssh = ssh(server.port, "alice", "password").password("alicepw");
    let output = run(
        ssh.command(&["-o", "KexAlgorithms=diffie-hellman-group1-sha1", "true"]),
        Duration::from_secs(30),
    );
    assert_eq!(output.status.code(), Some(255), "{}", text(&output.stderr));
    assert_eq!(
        server.events(1, SETTLE),
        vec![event("", "no_auth_tryed", 0)]
    );
}

#[test]
fn login_timeout_closes_connection() {
    let server = TestServer::with(Options {
        config: Config {
            login_timeout: 2,
            ..Options::default().config
        },
        ..Options::default()
    });
    let started = Instant::now();
    // One client stops after the version exchange, another at the password prompt.
    let mut idle = connect(server.port);
    idle.write_all(b"SSH-2.0-idle_test\r\n").unwrap();
    let waiting = std::thread::spawn({
        let root = server.root().to_path_buf();
        let port = server.port;
        move || {
            let askpass = write_script(&root, "slow-askpass.sh", "sleep 12");
            let mut ssh = std::process::Command::new("ssh");
            ssh.env("SSH_ASKPASS", askpass)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .args(ssh_options(port))
                .args(["-o", "PreferredAuthentications=keyboard-interactive"])
                .args(["alice@127.0.0.1", "true"]);
            run(ssh, Duration::from_secs(40))
        }
    });
    read_to_close(&mut idle);
    let idle_closed = started.elapsed();
    assert!(
        idle_closed < Duration::from_secs(10),
        "closed after {idle_closed:?}"
    );
    // The waiting client notices the close only when its prompt returns, so the events
    // show when the server closed it.
    let events = server.events(2, Duration::ZERO);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the waiting client was not closed by the timeout"
    );
    assert_eq!(
        events,
        vec![event("", "no_auth_tryed", 0), event("", "no_auth_tryed", 0)]
    );
    let output = waiting.join().unwrap();
    assert_eq!(output.status.code(), Some(255), "{}", text(&output.stderr));
    assert_eq!(server.events(2, SETTLE).len(), 2);
}

#[test]
fn login_timeout_after_attempt_silent() {
    let server = TestServer::with(Options {
        config: Config {
            login_timeout: 2,
            ..Options::default().config
        },
        ..Options::default()
    });
    let output = python(
        server.root(),
        r#"
import sys, time, paramiko
from paramiko.transport import ServiceRequestingTransport
t = ServiceRequestingTransport(("127.0.0.1", int(sys.argv[1])))
t.start_client(timeout=10)
try:
    t.auth_password("alice", "wrong", fallback=False)
except paramiko.AuthenticationException:
    print("rejected")
deadline = time.time() + 15
while t.is_active() and time.time() < deadline:
    time.sleep(0.1)
print("closed" if not t.is_active() else "open")
"#,
        &[&server.port.to_string()],
    );
    assert_eq!(
        text(&output.stdout).lines().collect::<Vec<_>>(),
        ["rejected", "closed"],
        "{}",
        text(&output.stderr)
    );
    assert_eq!(
        server.events(1, Duration::from_secs(2)),
        vec![event("alice", "password", 0)]
    );
}

#[test]
fn rejected_connection_gets_nothing() {
    let server = TestServer::with(Options {
        reject_connections: true,
        ..Options::default()
    });
    let mut stream = connect(server.port);
    assert_eq!(read_to_close(&mut stream), b"");
    let ssh = ssh(server.port, "alice", "password").password("alicepw");
    let output = run(ssh.command(&["true"]), Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(255));
    assert_eq!(server.events(0, Duration::from_millis(1500)), vec![]);
}

#[test]
fn generated_host_keys_offered() {
    let server = TestServer::with(Options {
        generated_host_keys: true,
        ..Options::default()
    });
    for name in [
        "ssh_host_ed25519_key",
        "ssh_host_ecdsa_key",
        "ssh_host_rsa_key",
    ] {
        assert!(
            server.root().join("state/ssh").join(name).exists(),
            "{name}"
        );
    }
    let accepted = [
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "rsa-sha2-512",
        "rsa-sha2-256",
    ];
    for algorithm in accepted {
        let option = format!("HostKeyAlgorithms={algorithm}");
        let ssh = ssh(server.port, "alice", "password").password("alicepw");
        let output = run(
            ssh.command(&["-o", &option, "true"]),
            Duration::from_secs(30),
        );
        assert_eq!(
            output.status.code(),
            Some(1),
            "{algorithm}: {}",
            text(&output.stderr)
        );
    }
    let ssh = ssh(server.port, "alice", "password").password("alicepw");
    let output = run(
        ssh.command(&["-o", "HostKeyAlgorithms=ssh-rsa", "true"]),
        Duration::from_secs(30),
    );
    assert_eq!(
        output.status.code(),
        Some(255),
        "ssh-rsa host key signatures must not be offered"
    );
}

/// Reads the server's KEXINIT (sent in the clear) and prints its name-lists.
const KEXINIT_SCRIPT: &str = r#"
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"SSH-2.0-probe\r\n")
data = b""
while b"\r\n" not in data:
    data += s.recv(4096)
rest = data.split(b"\r\n", 1)[1]
def need(n):
    global rest
    while len(rest) < n:
        rest += s.recv(4096)
need(5)
length, padding = struct.unpack(">IB", rest[:5])
need(4 + length)
payload = rest[5:4 + length - padding]
assert payload[0] == 20, payload[0]
pos = 17
names = ["kex", "host_key", "cipher_cs", "cipher_sc", "mac_cs", "mac_sc", "compression_cs", "compression_sc"]
for name in names:
    (n,) = struct.unpack(">I", payload[pos:pos + 4])
    print(name, payload[pos + 4:pos + 4 + n].decode())
    pos += 4 + n
"#;

#[test]
fn kexinit_lists_algorithms() {
    let server = TestServer::with(Options {
        generated_host_keys: true,
        ..Options::default()
    });
    let output = python(server.root(), KEXINIT_SCRIPT, &[&server.port.to_string()]);
    let lists: std::collections::BTreeMap<String, Vec<String>> = text(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.split(',').map(str::to_owned).collect()))
        .collect();
    assert_eq!(
        lists["compression_cs"],
        ["none"],
        "{}",
        text(&output.stderr)
    );
    assert_eq!(lists["compression_sc"], ["none"]);
    let host_keys = &lists["host_key"];
    for expected in [
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "rsa-sha2-512",
        "rsa-sha2-256",
    ] {
        assert!(host_keys.contains(&expected.to_owned()), "{host_keys:?}");
    }
    assert!(!host_keys.contains(&"ssh-rsa".to_owned()), "{host_keys:?}");
}

#[test]
fn shutdown_closes_sessions_after_grace() {
    let mut server = TestServer::with(Options {
        grace: Duration::from_secs(1),
        ..Options::default()
    });
    let mut client = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import sys, time, paramiko
from paramiko.transport import ServiceRequestingTransport
t = ServiceRequestingTransport(("127.0.0.1", int(sys.argv[1])))
t.start_client(timeout=10)
t.auth_password("alice", "alicepw", fallback=False)
print("logged in", flush=True)
deadline = time.time() + 30
while t.is_active() and time.time() < deadline:
    time.sleep(0.1)
print("closed" if not t.is_active() else "open", flush=True)
"#,
        )
        .arg(server.port.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = client.stdout.take().unwrap();
    let mut first = [0u8; 10];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"logged in\n");

    let took = server.shutdown();
    assert!(
        took >= Duration::from_secs(1),
        "closed before the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest.trim(), "closed");
    assert!(client.wait().unwrap().success());
    // New connections are refused once the server stopped.
    assert!(TcpStream::connect(("127.0.0.1", server.port)).is_err());
}

/// Options for a listener with PROXY protocol `mode` that believes the proxies in `allowed`.
fn behind_proxy(mode: u8, allowed: &[&str]) -> Options {
    Options {
        config: Config {
            bindings: vec![Binding {
                address: "127.0.0.1".into(),
                port: 0,
                proxy_protocol: mode,
            }],
            proxy_allowed: allowed.iter().map(|a| a.parse().unwrap()).collect(),
            ..Config::default()
        },
        ..Options::default()
    }
}

/// An OpenSSH `ProxyCommand` that connects to the server and sends a PROXY version 1 header
/// naming `client` before relaying the SSH stream.
fn proxy_command(dir: &std::path::Path, client: &str, port: u16) -> String {
    let script = dir.join("proxy.py");
    std::fs::write(
        &script,
        r#"
import socket, sys, threading
client, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
s.sendall(f"PROXY TCP4 {client} 127.0.0.1 40000 {port}\r\n".encode())
def upload():
    while (data := sys.stdin.buffer.read1(65536)):
        s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=upload, daemon=True).start()
while (data := s.recv(65536)):
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
"#,
    )
    .unwrap();
    format!("ProxyCommand=python3 {} {client} {port}", script.display())
}

#[test]
fn proxy_header_gives_client_address() {
    let server = TestServer::with(behind_proxy(1, &["127.0.0.1/32"]));
    let option = proxy_command(server.root(), "203.0.113.7", server.port);
    let wrong = ssh(server.port, "alice", "password").password("wrong");
    let output = run(
        wrong.command(&["-o", &option, "true"]),
        Duration::from_secs(30),
    );
    assert_eq!(output.status.code(), Some(255), "{}", text(&output.stderr));
    // A client without a header is served as usual on an optional listener.
    let direct = ssh(server.port, "alice", "password").password("alicepw");
    let output = run(direct.command(&["true"]), Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let mut proxied = event("alice", "password", 0);
    proxied.ip = "203.0.113.7".into();
    assert_eq!(
        server.events(2, SETTLE),
        vec![event("alice", "password", 1), proxied]
    );
}

#[test]
fn proxy_required_from_untrusted_peer() {
    let server = TestServer::with(behind_proxy(2, &["192.0.2.1/32"]));
    let mut stream = connect(server.port);
    stream
        .write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 22\r\nSSH-2.0-x\r\n")
        .unwrap();
    assert_eq!(read_to_close(&mut stream), b"");
    assert_eq!(server.events(0, Duration::from_millis(1500)), vec![]);
}

#[test]
fn garbage_after_banner_closes_only_that_connection() {
    let server = TestServer::start();
    let mut stream = connect(server.port);
    stream.write_all(b"SSH-2.0-fuzz\r\n").unwrap();
    let junk: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    let _ = stream.write_all(&junk);
    let received = read_to_close(&mut stream);
    assert!(received.starts_with(b"SSH-2.0-Ferry\r\n"));
    let login = ssh(server.port, "alice", "password").password("alicepw");
    let output = run(login.command(&["true"]), Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert_eq!(
        server.events(2, SETTLE),
        vec![event("", "no_auth_tryed", 0), event("alice", "password", 1)]
    );
}

#[test]
fn shutdown_cuts_stalled_session() {
    let mut server = TestServer::with(Options {
        grace: Duration::from_secs(1),
        ..Options::default()
    });
    let home = server.home("alice");
    std::fs::write(home.join("big.bin"), vec![7u8; 64 * 1024 * 1024]).unwrap();
    // The client starts a download with a small window and then stops reading.
    let mut client = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import sys, time, paramiko
t = paramiko.Transport(("127.0.0.1", int(sys.argv[1])), default_window_size=65536)
t.start_client(timeout=10)
t.auth_publickey("alice", paramiko.Ed25519Key.from_private_key_file(sys.argv[2]))
chan = t.open_session()
chan.exec_command("scp -f big.bin")
chan.sendall(b"\0")
print("stalled", flush=True)
time.sleep(60)
"#,
        )
        .arg(server.port.to_string())
        .arg(key("id_ed25519"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = client.stdout.take().unwrap();
    let mut first = [0u8; 8];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"stalled\n");
    std::thread::sleep(Duration::from_millis(500));

    let took = server.shutdown();
    assert!(took < Duration::from_secs(15), "shutdown took {took:?}");
    let _ = client.kill();
    let _ = client.wait();
}

#[test]
fn ipv6_client_address_reported() {
    let server = TestServer::with(Options {
        config: Config {
            bindings: vec![Binding {
                address: "::1".into(),
                ..Binding::default()
            }],
            ..Config::default()
        },
        ..Options::default()
    });
    let mut command = std::process::Command::new("sshpass");
    command
        .env("SSHPASS", "wrong")
        .args(["-e", "ssh"])
        .args(ssh_options(server.port))
        .args(["-o", "PreferredAuthentications=password"])
        .args(["alice@::1", "true"]);
    let output = run(command, Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(255), "{}", text(&output.stderr));
    let mut expected = event("alice", "password", 0);
    expected.ip = "::1".into();
    assert_eq!(server.events(1, SETTLE), vec![expected]);
}
