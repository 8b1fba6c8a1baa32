//! PROXY protocol in front of SSH and FTP: the address in the header reaches the login event
//! and the post-connect hook, and only allowed proxies may send one.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;

const PIPE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/clients/proxy_pipe.py"
);
const SETTLE: Duration = Duration::from_millis(1500);

fn proxied_server(mode: u8, allowed: &str, connect_log: &std::path::Path) -> TestServer {
    let hook = write_script(
        connect_log.parent().unwrap(),
        "connect.sh",
        &format!(
            "echo \"$SFTPGO_CONNECTION_IP $SFTPGO_CONNECTION_PROTOCOL\" >> {}",
            connect_log.display()
        ),
    );
    Setup::default()
        .only(&["ssh", "ftp"])
        .set("common", &format!("proxy_allowed = [{allowed}]"))
        .set(
            "common",
            &format!("post_connect_hook = \"{}\"", hook.display()),
        )
        .set(
            "sftpd",
            &format!(
                "bindings = [{{ address = \"127.0.0.1\", port = 0, proxy_protocol = {mode} }}]"
            ),
        )
        .set(
            "ftpd",
            &format!(
                "bindings = [{{ address = \"127.0.0.1\", port = 0, proxy_protocol = {mode} }}]"
            ),
        )
        .start()
}

/// A wrong SSH password through a ProxyCommand that sends a PROXY header for `source`.
fn ssh_through_proxy(server: &TestServer, source: &str) -> std::process::Output {
    let mut command = Command::new("sshpass");
    command
        .env("SSHPASS", "wrong")
        .args(["-e", "ssh"])
        .args(ssh_options(server.ssh_port()))
        .args([
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
        ])
        .args(["-o", "NumberOfPasswordPrompts=1"])
        .arg("-o")
        .arg(format!(
            "ProxyCommand=python3 {PIPE} {source} {}",
            server.ssh_port()
        ))
        .args(["alice@127.0.0.1", "true"]);
    run(command, Duration::from_secs(60))
}

/// Sends `header`, then a wrong FTP login, and returns the replies read.
fn ftp_with_header(port: u16, header: &[u8]) -> Vec<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(header).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut replies = Vec::new();
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return replies;
    }
    replies.push(line.trim_end().to_owned());
    for command in ["USER alice\r\n", "PASS wrong\r\n", "QUIT\r\n"] {
        if stream.write_all(command.as_bytes()).is_err() {
            break;
        }
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        replies.push(line.trim_end().to_owned());
    }
    replies
}

#[test]
fn header_address_reaches_events() {
    let probe = tempfile::tempdir().unwrap();
    let connect_log = probe.path().join("connect.log");
    let server = proxied_server(2, "\"127.0.0.1\"", &connect_log);
    assert!(!ssh_through_proxy(&server, "203.0.113.7").status.success());
    let replies = ftp_with_header(
        server.ftp_port(),
        b"PROXY TCP4 198.51.100.9 127.0.0.1 40000 21\r\n",
    );
    assert!(
        replies.first().is_some_and(|r| r.starts_with("220")),
        "{replies:?}"
    );
    assert!(replies.iter().any(|r| r.starts_with("530")), "{replies:?}");
    let events = server.wait_events(2, SETTLE);
    let mut expected = vec![
        Event::new("alice", "password", 0, "SSH"),
        Event::new("alice", "password", 0, "FTP"),
    ];
    expected[0].ip = "203.0.113.7".into();
    expected[1].ip = "198.51.100.9".into();
    expected.sort();
    assert_eq!(events, expected);
    let connects = std::fs::read_to_string(&connect_log).unwrap();
    assert!(connects.contains("203.0.113.7 SSH\n"), "{connects}");
    assert!(connects.contains("198.51.100.9 FTP\n"), "{connects}");
}

#[test]
fn ipv6_header_address_reported() {
    let probe = tempfile::tempdir().unwrap();
    let server = proxied_server(1, "\"127.0.0.0/8\"", &probe.path().join("connect.log"));
    assert!(!ssh_through_proxy(&server, "2001:db8::7").status.success());
    let events = server.wait_events(1, SETTLE);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].ip, "2001:db8::7");
}

#[test]
fn optional_mode_accepts_direct_clients() {
    let probe = tempfile::tempdir().unwrap();
    let server = proxied_server(1, "\"127.0.0.1\"", &probe.path().join("connect.log"));
    let output = sftp_batch_with_key(&server, "alice", &server.alice_key(), "pwd\n");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let replies = ftp_with_header(server.ftp_port(), b"");
    assert!(replies.iter().any(|r| r.starts_with("530")), "{replies:?}");
    let events = server.wait_events(2, SETTLE);
    assert!(events.iter().all(|e| e.ip == "127.0.0.1"), "{events:?}");
}

#[test]
fn header_from_untrusted_peer_closes() {
    let probe = tempfile::tempdir().unwrap();
    let connect_log = probe.path().join("connect.log");
    let server = proxied_server(1, "\"192.0.2.1\"", &connect_log);
    assert!(!ssh_through_proxy(&server, "203.0.113.7").status.success());
    let replies = ftp_with_header(
        server.ftp_port(),
        b"PROXY TCP4 198.51.100.9 127.0.0.1 40000 21\r\n",
    );
    assert!(
        replies.is_empty(),
        "an untrusted PROXY header must close the connection: {replies:?}"
    );
    assert!(
        server.wait_events(0, SETTLE).is_empty(),
        "no login event for a refused header"
    );
    assert!(
        !connect_log.exists(),
        "the post-connect hook must not run for a refused header"
    );
    let closed = server.log_messages("connection closed before the greeting");
    assert_eq!(closed.len(), 1);
    assert!(
        closed[0]["error"]
            .as_str()
            .unwrap()
            .contains("not in proxy_allowed"),
        "{}",
        closed[0]
    );
}

#[test]
fn required_mode_closes_direct_clients() {
    let probe = tempfile::tempdir().unwrap();
    let server = proxied_server(2, "\"192.0.2.1\"", &probe.path().join("connect.log"));
    let output = sftp_batch_with_key(&server, "alice", &server.alice_key(), "pwd\n");
    assert!(!output.status.success());
    assert!(ftp_with_header(server.ftp_port(), b"").is_empty());
    assert!(server.wait_events(0, SETTLE).is_empty());
}

#[test]
fn ipv4_mapped_address_shown_as_ipv4() {
    // A listener on :: takes IPv4 clients as ::ffff:127.0.0.1; events must show 127.0.0.1.
    let server = Setup::default()
        .only(&["ssh"])
        .set("sftpd", "bindings = [{ address = \"::\", port = 0 }]")
        .start();
    assert!(server.ssh_addr.unwrap().is_ipv6(), "{:?}", server.ssh_addr);
    assert!(
        !sftp_batch_with_password(&server, "alice", "wrong", "pwd\n")
            .status
            .success()
    );
    let events = server.wait_events(1, SETTLE);
    assert_eq!(events, vec![Event::new("alice", "password", 0, "SSH")]);
}
