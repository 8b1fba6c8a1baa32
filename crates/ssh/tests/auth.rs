//! Login events of every authentication path, driven by OpenSSH, sshpass and paramiko.
//!
//! A successful login is followed by the `true` command, which the server refuses with exit
//! status 1; a failed login makes `ssh` exit with 255.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use ferry_ssh::Config;
use support::*;

/// Time to wait for events that should not come.
const SETTLE: Duration = Duration::from_millis(800);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(40);

fn logged_in(output: &std::process::Output) {
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected a login and a refused command; stderr: {}",
        text(&output.stderr)
    );
    assert!(
        text(&output.stderr).contains("not available"),
        "stderr: {}",
        text(&output.stderr)
    );
}

fn login_failed(output: &std::process::Output) {
    assert_eq!(
        output.status.code(),
        Some(255),
        "expected a failed login; stderr: {}",
        text(&output.stderr)
    );
}

#[test]
fn publickey_ed25519_success() {
    let server = TestServer::start();
    let ssh = ssh(server.port, "alice", "publickey").key(&key("id_ed25519"));
    logged_in(&run(ssh.command(&["true"]), CLIENT_TIMEOUT));
    assert_eq!(
        server.events(1, SETTLE),
        vec![event("alice", "publickey", 1)]
    );
}

#[test]
fn publickey_rsa_sha2_success() {
    let server = TestServer::start();
    for algorithm in ["rsa-sha2-256", "rsa-sha2-512"] {
        let option = format!("PubkeyAcceptedAlgorithms={algorithm}");
        let ssh = ssh(server.port, "alice", "publickey").key(&key("id_rsa"));
        logged_in(&run(ssh.command(&["-o", &option, "true"]), CLIENT_TIMEOUT));
    }
    assert_eq!(
        server.events(2, SETTLE),
        vec![
            event("alice", "publickey", 1),
            event("alice", "publickey", 1)
        ]
    );
}

#[test]
fn publickey_unknown_key_failure() {
    let server = TestServer::start();
    let ssh = ssh(server.port, "alice", "publickey").key(&key("other_ed25519"));
    login_failed(&run(ssh.command(&["true"]), CLIENT_TIMEOUT));
    assert_eq!(
        server.events(1, SETTLE),
        vec![event("alice", "publickey", 0)]
    );
}

#[test]
fn publickey_sha1_rsa_rejected() {
    let server = TestServer::start();
    // paramiko no longer signs with SHA-1; the script teaches it to, as an old client would.
    let output = python(
        server.root(),
        r#"
import sys, paramiko
from cryptography.hazmat.primitives import hashes
from paramiko.auth_handler import AuthOnlyHandler
from paramiko.transport import ServiceRequestingTransport
paramiko.RSAKey.HASHES["ssh-rsa"] = hashes.SHA1
AuthOnlyHandler._finalize_pubkey_algorithm = lambda self, key_type: "ssh-rsa"
key = paramiko.RSAKey.from_private_key_file(sys.argv[2])
t = ServiceRequestingTransport(("127.0.0.1", int(sys.argv[1])))
t.start_client(timeout=10)
for attempt in range(2):
    try:
        t.auth_publickey("alice", key)
        print("accepted")
    except paramiko.AuthenticationException:
        print("rejected")
t.close()
"#,
        &[&server.port.to_string(), key("id_rsa").to_str().unwrap()],
    );
    assert_eq!(
        text(&output.stdout).lines().collect::<Vec<_>>(),
        ["rejected", "rejected"],
        "{}",
        text(&output.stderr)
    );
    assert_eq!(
        server.events(2, SETTLE),
        vec![
            event("alice", "publickey", 0),
            event("alice", "publickey", 0)
        ]
    );
}

#[test]
fn password_success() {
    let server = TestServer::start();
    let ssh = ssh(server.port, "alice", "password").password("alicepw");
    logged_in(&run(ssh.command(&["true"]), CLIENT_TIMEOUT));
    assert_eq!(
        server.events(1, SETTLE),
        vec![event("alice", "password", 1)]
    );
}

#[test]
fn password_wrong_and_unknown_user() {
    let server = TestServer::start();
    for user in ["alice", "nobody"] {
        let ssh = ssh(server.port, user, "password").password("wrong");
        login_failed(&run(ssh.command(&["true"]), CLIENT_TIMEOUT));
    }
    assert_eq!(
        server.events(2, SETTLE),
        vec![
            event("alice", "password", 0),
            event("nobody", "password", 0)
        ]
    );
}

#[test]
fn keyboard_interactive_success() {
    let server = TestServer::start();
    let ssh = ssh(server.port, "alice", "keyboard-interactive").askpass(server.root(), "alicepw");
    logged_in(&run(ssh.command(&["true"]), CLIENT_TIMEOUT));
    assert_eq!(
        server.events(1, SETTLE),
        vec![event("alice", "keyboard-interactive", 1)]
    );
    let prompts = std::fs::read_to_string(server.root().join("prompts.log")).unwrap();
    assert_eq!(
        prompts.lines().collect::<Vec<_>>(),
        ["(alice@127.0.0.1) Password: "]
    );
}

#[test]
fn keyboard_interactive_wrong() {
    let server = TestServer::start();
    let ssh = ssh(server.port, "alice", "keyboard-interactive").askpass(server.root(), "wrong");
    login_failed(&run(ssh.command(&["true"]), CLIENT_TIMEOUT));
    assert_eq!(
        server.events(1, SETTLE),
        vec![event("alice", "keyboard-interactive", 0)]
    );
}

#[test]
fn two_step_password_with_openssh() {
    let server = TestServer::start();
    let ssh = ssh(server.port, "bob", "publickey,password")
        .key(&key("id_ed25519"))
        .password("bobpw");
    logged_in(&run(ssh.command(&["true"]), CLIENT_TIMEOUT));
    assert_eq!(
        server.events(1, SETTLE),
        vec![event("bob", "publickey+password", 1)]
    );
}

#[test]
fn two_step_keyboard_interactive_with_openssh() {
    let server = TestServer::start();
    let ssh = ssh(server.port, "carol", "publickey,keyboard-interactive")
        .key(&key("id_ed25519"))
        .askpass(server.root(), "carolpw");
    logged_in(&run(ssh.command(&["true"]), CLIENT_TIMEOUT));
    assert_eq!(
        server.events(1, SETTLE),
        vec![event("carol", "publickey+keyboard-interactive", 1)]
    );
}

/// A paramiko client that authenticates step by step and prints what happened. It uses
/// `ServiceRequestingTransport`, which requests the `ssh-userauth` service once, as OpenSSH
/// does; see `classic_paramiko_transport_gets_one_attempt` for paramiko's default transport.
const TWO_STEP_SCRIPT: &str = r#"
import sys, paramiko
from paramiko.transport import ServiceRequestingTransport
port, key_file, user = int(sys.argv[1]), sys.argv[2], sys.argv[3]
steps = sys.argv[4:]
t = ServiceRequestingTransport(("127.0.0.1", port))
t.start_client(timeout=10)
key = paramiko.Ed25519Key.from_private_key_file(key_file)
for step in steps:
    kind, _, secret = step.partition(":")
    try:
        if kind == "key":
            remaining = t.auth_publickey(user, key)
            print("key", ",".join(remaining) if remaining else "accepted")
        elif kind == "password":
            remaining = t.auth_password(user, secret, fallback=False)
            print("password", ",".join(remaining) if remaining else "accepted")
        elif kind == "kbi":
            remaining = t.auth_interactive(user, lambda title, instructions, prompts: [secret] * len(prompts))
            print("kbi", ",".join(remaining) if remaining else "accepted")
    except paramiko.BadAuthenticationType as e:
        print(kind, "bad-type", ",".join(e.allowed_types))
    except paramiko.AuthenticationException as e:
        print(kind, "rejected")
    except Exception as e:
        print(kind, "error", type(e).__name__)
t.close()
"#;

fn two_step(server: &TestServer, user: &str, steps: &[&str]) -> Vec<String> {
    let mut args = vec![
        server.port.to_string(),
        key("id_ed25519").to_str().unwrap().to_owned(),
        user.to_owned(),
    ];
    args.extend(steps.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = python(server.root(), TWO_STEP_SCRIPT, &args);
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn two_step_wrong_second_factor_retried() {
    let server = TestServer::start();
    let lines = two_step(&server, "bob", &["key", "password:wrong", "password:bobpw"]);
    assert_eq!(
        lines,
        ["key password", "password rejected", "password accepted"]
    );
    assert_eq!(
        server.events(2, SETTLE),
        vec![
            event("bob", "publickey+password", 0),
            event("bob", "publickey+password", 1)
        ]
    );
}

#[test]
fn two_step_keyboard_interactive_with_paramiko() {
    let server = TestServer::start();
    let lines = two_step(&server, "carol", &["key", "kbi:carolpw"]);
    assert_eq!(lines, ["key keyboard-interactive", "kbi accepted"]);
    assert_eq!(
        server.events(1, SETTLE),
        vec![event("carol", "publickey+keyboard-interactive", 1)]
    );
}

#[test]
fn second_factor_without_key_rejected() {
    let server = TestServer::start();
    let bob = two_step(&server, "bob", &["password:bobpw"]);
    assert_eq!(bob, ["password rejected"]);
    let carol = two_step(&server, "carol", &["kbi:carolpw"]);
    assert_eq!(carol, ["kbi rejected"]);
    assert_eq!(
        server.events(2, SETTLE),
        vec![
            event("bob", "password", 0),
            event("carol", "keyboard-interactive", 0)
        ]
    );
}

#[test]
fn second_factor_other_user_rejected() {
    let server = TestServer::start();
    // The key step makes bob partially authenticated; a password for carol is then a plain
    // password attempt, which carol may not use.
    let output = python(
        server.root(),
        r#"
import sys, paramiko
from paramiko.transport import ServiceRequestingTransport
t = ServiceRequestingTransport(("127.0.0.1", int(sys.argv[1])))
t.start_client(timeout=10)
key = paramiko.Ed25519Key.from_private_key_file(sys.argv[2])
print(",".join(t.auth_publickey("bob", key)))
try:
    t.auth_password("carol", "carolpw", fallback=False)
    print("accepted")
except paramiko.AuthenticationException:
    print("rejected")
t.close()
"#,
        &[
            &server.port.to_string(),
            key("id_ed25519").to_str().unwrap(),
        ],
    );
    assert_eq!(
        text(&output.stdout).lines().collect::<Vec<_>>(),
        ["password", "rejected"],
        "{}",
        text(&output.stderr)
    );
    assert_eq!(
        server.events(1, SETTLE),
        vec![event("carol", "password", 0)]
    );
}

#[test]
fn disabled_account_rejected() {
    let server = TestServer::start();
    let with_password = ssh(server.port, "dave", "password").password("davepw");
    login_failed(&run(with_password.command(&["true"]), CLIENT_TIMEOUT));
    let with_key = ssh(server.port, "dave", "publickey").key(&key("id_ed25519"));
    login_failed(&run(with_key.command(&["true"]), CLIENT_TIMEOUT));
    assert_eq!(
        server.events(2, SETTLE),
        vec![event("dave", "password", 0), event("dave", "publickey", 0)]
    );
}

#[test]
fn method_disabled_for_user_rejected() {
    let server = TestServer::start();
    // erin may only use password; the right password over keyboard-interactive fails, and
    // looks the same as for a user that does not exist.
    for user in ["erin", "nobody"] {
        let password = format!("{user}pw");
        let ssh = ssh(server.port, user, "keyboard-interactive").askpass(server.root(), &password);
        login_failed(&run(ssh.command(&["true"]), CLIENT_TIMEOUT));
    }
    assert_eq!(
        server.events(2, SETTLE),
        vec![
            event("erin", "keyboard-interactive", 0),
            event("nobody", "keyboard-interactive", 0)
        ]
    );
}

#[test]
fn method_disabled_on_server_rejected() {
    let server = TestServer::with(Options {
        config: Config {
            login_methods: vec!["publickey".into()],
            ..Options::default().config
        },
        ..Options::default()
    });
    let lines = two_step(&server, "alice", &["password:alicepw", "key"]);
    assert_eq!(lines, ["password bad-type publickey", "key accepted"]);
    assert_eq!(
        server.events(2, SETTLE),
        vec![
            event("alice", "password", 0),
            event("alice", "publickey", 1)
        ]
    );
}

#[test]
fn max_auth_tries_closes_connection() {
    let server = TestServer::with(Options {
        config: Config {
            max_auth_tries: 2,
            ..Options::default().config
        },
        ..Options::default()
    });
    let lines = two_step(
        &server,
        "alice",
        &["password:one", "password:two", "password:alicepw"],
    );
    assert_eq!(lines[..2], ["password rejected", "password rejected"]);
    assert!(
        lines[2].starts_with("password error") || lines[2] == "password rejected",
        "third attempt must not be served: {lines:?}"
    );
    assert_eq!(
        server.events(2, SETTLE),
        vec![event("alice", "password", 0), event("alice", "password", 0)]
    );
}

#[test]
fn max_auth_tries_counts_rejected_keys() {
    let server = TestServer::with(Options {
        config: Config {
            max_auth_tries: 1,
            ..Options::default().config
        },
        ..Options::default()
    });
    let ssh = ssh(server.port, "alice", "publickey")
        .key(&key("other_ed25519"))
        .key(&key("id_ed25519"));
    let output = run(ssh.command(&["true"]), CLIENT_TIMEOUT);
    login_failed(&output);
    assert!(
        text(&output.stderr).contains("too many authentication failures"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(
        server.events(1, SETTLE),
        vec![event("alice", "publickey", 0)]
    );
}

#[test]
fn none_only_client_not_an_attempt() {
    let server = TestServer::start();
    let ssh = ssh(server.port, "alice", "none");
    login_failed(&run(ssh.command(&["true"]), CLIENT_TIMEOUT));
    assert_eq!(
        server.events(1, SETTLE),
        vec![event("", "no_auth_tryed", 0)]
    );
}

#[test]
fn classic_paramiko_transport_gets_one_attempt() {
    let server = TestServer::start();
    // NOTE: paramiko's default `Transport` sends SERVICE_REQUEST before every attempt, and
    // russh 0.65 ignores a SERVICE_REQUEST once authentication has started. Such a client
    // gets a reply to its first attempt only, and its second waits until it gives up. This
    // test pins that behaviour, so it fails once russh replies.
    let output = python(
        server.root(),
        r#"
import sys, paramiko
t = paramiko.Transport(("127.0.0.1", int(sys.argv[1])))
t.start_client(timeout=10)
t.auth_timeout = 3
for password in ["wrong", "alicepw"]:
    try:
        t.auth_password("alice", password, fallback=False)
        print("accepted")
    except paramiko.AuthenticationException as e:
        print("timeout" if "timeout" in str(e).lower() else "rejected")
t.close()
"#,
        &[&server.port.to_string()],
    );
    assert_eq!(
        text(&output.stdout).lines().collect::<Vec<_>>(),
        ["rejected", "timeout"],
        "{}",
        text(&output.stderr)
    );
    assert_eq!(
        server.events(1, SETTLE),
        vec![event("alice", "password", 0)]
    );
}
