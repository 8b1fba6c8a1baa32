//! SSH login events through the `ferry` binary: each login path of OpenSSH and paramiko, the
//! events of connections that never log in, and the limits of `[sftpd]`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

const SETTLE: Duration = Duration::from_millis(800);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

fn ssh_server(setup: Setup) -> TestServer {
    setup
        .only(&["ssh"])
        .set("defender", "enabled = false")
        .start()
}

/// `ssh` that tries `methods`, runs `true` (which the server rejects with exit status 1), and
/// offers alice's key when `with_key` is set.
fn ssh(server: &TestServer, user: &str, methods: &str, with_key: bool) -> Command {
    let mut command = Command::new("ssh");
    command
        .args(ssh_options(server.ssh_port()))
        .args(["-o", &format!("PreferredAuthentications={methods}")])
        .args(["-o", "NumberOfPasswordPrompts=1"]);
    if with_key {
        command
            .args(["-o", "IdentitiesOnly=yes", "-i"])
            .arg(server.alice_key());
    } else {
        command.args(["-o", "PubkeyAuthentication=no"]);
    }
    command.arg(format!("{user}@127.0.0.1")).arg("true");
    command
}

/// Answers password and keyboard-interactive prompts with `password`.
fn with_password(mut command: Command, server: &TestServer, password: &str) -> Command {
    let askpass = write_script(
        server.root(),
        &format!("askpass-{}.sh", rand_suffix()),
        &format!("printf '%s\\n' '{password}'"),
    );
    command
        .env("SSH_ASKPASS", askpass)
        .env("SSH_ASKPASS_REQUIRE", "force");
    command
}

fn assert_logged_in(output: &Output) {
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected a login and a rejected command: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn assert_login_failed(output: &Output) {
    assert_eq!(
        output.status.code(),
        Some(255),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn ssh_event(user: &str, method: &str, status: u8) -> Event {
    Event::new(user, method, status, "SSH")
}

#[test]
fn ssh_each_method_one_event() {
    let server = ssh_server(Setup::default());
    let key = ssh(&server, "alice", "publickey", true);
    assert_logged_in(&run(key, CLIENT_TIMEOUT));
    let password = with_password(
        ssh(&server, "alice", "password", false),
        &server,
        ALICE_PASSWORD,
    );
    assert_logged_in(&run(password, CLIENT_TIMEOUT));
    let interactive = with_password(
        ssh(&server, "bob", "keyboard-interactive", false),
        &server,
        BOB_PASSWORD,
    );
    assert_logged_in(&run(interactive, CLIENT_TIMEOUT));
    let mut expected = vec![
        ssh_event("alice", "publickey", 1),
        ssh_event("alice", "password", 1),
        ssh_event("bob", "keyboard-interactive", 1),
    ];
    expected.sort();
    assert_eq!(server.wait_events(3, SETTLE), expected);
}

#[test]
fn ssh_failures_over_http_hook() {
    let server = ssh_server(Setup::default().hook(LoginHook::Http));
    let wrong = with_password(ssh(&server, "alice", "password", false), &server, "wrong");
    assert_login_failed(&run(wrong, CLIENT_TIMEOUT));
    let unknown = with_password(ssh(&server, "mallory", "password", false), &server, "x");
    assert_login_failed(&run(unknown, CLIENT_TIMEOUT));
    let none = ssh(&server, "alice", "none", false);
    assert_login_failed(&run(none, CLIENT_TIMEOUT));
    let mut expected = vec![
        ssh_event("alice", "password", 0),
        ssh_event("mallory", "password", 0),
        ssh_event("", "no_auth_tryed", 0),
    ];
    expected.sort();
    assert_eq!(server.wait_events(3, SETTLE), expected);
}

#[test]
fn ssh_two_step_login() {
    // carol must present alice's key, which the harness makes at start, and then a password.
    let server = ssh_server(Setup::default());
    let public_key = std::fs::read_to_string(server.root().join("id_ed25519.pub")).unwrap();
    let users = std::fs::read_to_string(server.root().join("users.toml")).unwrap();
    let carol = format!(
        "{users}[[users]]\nusername = \"carol\"\npassword = \"{}\"\npublic_keys = [\"{}\"]\n\
         home_dir = \"home/carol\"\nlogin_methods = [\"publickey+password\"]\n",
        password_hash("carolpw"),
        public_key.trim()
    );
    std::fs::write(server.root().join("users.toml"), carol).unwrap();
    let reload = Command::new("kill")
        .args(["-HUP", &server.pid().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(reload.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.log_messages("users file reloaded").is_empty() {
        assert!(Instant::now() < deadline, "users file not reloaded");
        std::thread::sleep(Duration::from_millis(50));
    }

    let both = with_password(
        ssh(&server, "carol", "publickey,password", true),
        &server,
        "carolpw",
    );
    assert_logged_in(&run(both, CLIENT_TIMEOUT));
    let password_only = with_password(ssh(&server, "carol", "password", false), &server, "carolpw");
    assert_login_failed(&run(password_only, CLIENT_TIMEOUT));
    let mut expected = vec![
        ssh_event("carol", "publickey+password", 1),
        ssh_event("carol", "password", 0),
    ];
    expected.sort();
    assert_eq!(server.wait_events(2, SETTLE), expected);
}

#[test]
fn ssh_connections_without_login() {
    let server = ssh_server(Setup::default());
    let port = server.ssh_port();
    drop(TcpStream::connect(("127.0.0.1", port)).unwrap());

    let mut garbage = TcpStream::connect(("127.0.0.1", port)).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    garbage
        .write_all(b"\x16\x03\x01\x00\xa5 not ssh\r\n")
        .unwrap();
    let mut received = Vec::new();
    let _ = garbage.read_to_end(&mut received);
    assert!(received.starts_with(b"SSH-2.0-"), "{received:?}");

    assert_eq!(
        server.wait_events(2, SETTLE),
        vec![
            ssh_event("", "no_auth_tryed", 0),
            ssh_event("", "no_auth_tryed", 0)
        ]
    );
}

#[test]
fn ssh_login_timeout_and_max_tries() {
    let server = ssh_server(
        Setup::default()
            .set("sftpd", "login_timeout = 2")
            .set("sftpd", "max_auth_tries = 2"),
    );
    let started = Instant::now();
    let mut idle = TcpStream::connect(("127.0.0.1", server.ssh_port())).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    idle.write_all(b"SSH-2.0-idle\r\n").unwrap();
    let mut received = Vec::new();
    let _ = idle.read_to_end(&mut received);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed after {:?}",
        started.elapsed()
    );

    // OpenSSH prompts three times; the server closes the connection after the second failure.
    let mut tries = Command::new("ssh");
    tries
        .args(ssh_options(server.ssh_port()))
        .args(["-o", "PreferredAuthentications=password"])
        .args(["-o", "NumberOfPasswordPrompts=3"])
        .args(["alice@127.0.0.1", "true"]);
    let output = run(with_password(tries, &server, "wrong"), CLIENT_TIMEOUT);
    assert_login_failed(&output);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("too many authentication failures"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut expected = vec![
        ssh_event("", "no_auth_tryed", 0),
        ssh_event("alice", "password", 0),
        ssh_event("alice", "password", 0),
    ];
    expected.sort();
    assert_eq!(server.wait_events(3, SETTLE), expected);
}

#[test]
fn ssh_disabled_method_on_server() {
    let server = ssh_server(Setup::default().set("sftpd", "login_methods = [\"publickey\"]"));
    // The server offers only publickey, so OpenSSH never sends the password: the connection
    // ends without an attempt.
    let password = with_password(
        ssh(&server, "alice", "password", false),
        &server,
        ALICE_PASSWORD,
    );
    assert_login_failed(&run(password, CLIENT_TIMEOUT));
    let key = ssh(&server, "alice", "publickey", true);
    assert_logged_in(&run(key, CLIENT_TIMEOUT));
    let mut expected = vec![
        ssh_event("", "no_auth_tryed", 0),
        ssh_event("alice", "publickey", 1),
    ];
    expected.sort();
    assert_eq!(server.wait_events(2, SETTLE), expected);
}
