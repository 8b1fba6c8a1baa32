//! The post-login and post-connect hooks seen from outside: real clients log in, and a real
//! hook program or HTTP receiver records what Ferry reported.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::*;

const SETTLE: Duration = Duration::from_millis(1500);

fn ssh_password_login(server: &TestServer, user: &str, password: &str) -> bool {
    sftp_batch_with_password(server, user, password, "pwd\n")
        .status
        .success()
}

fn ssh_key_login(server: &TestServer) -> bool {
    sftp_batch_with_key(server, "alice", &server.alice_key(), "pwd\n")
        .status
        .success()
}

/// Connects and closes without a byte, as a port scanner or health check does.
fn tcp_probe(port: u16) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(stream);
}

#[test]
fn scope_all_reports_both() {
    let server = Setup::default().only(&["ssh"]).start();
    assert!(ssh_password_login(&server, "alice", ALICE_PASSWORD));
    assert!(!ssh_password_login(&server, "alice", "wrong"));
    assert!(!ssh_password_login(&server, "nobody", "x"));
    let events = server.wait_events(3, SETTLE);
    let mut expected = vec![
        Event::new("alice", "password", 1, "SSH"),
        Event::new("alice", "password", 0, "SSH"),
        Event::new("nobody", "password", 0, "SSH"),
    ];
    expected.sort();
    assert_eq!(events, expected);
}

#[test]
fn scope_failed_only() {
    let server = Setup::default()
        .only(&["ssh"])
        .set("common", "post_login_scope = 1")
        .start();
    assert!(ssh_password_login(&server, "alice", ALICE_PASSWORD));
    assert!(!ssh_password_login(&server, "alice", "wrong"));
    tcp_probe(server.ssh_port());
    let events = server.wait_events(2, SETTLE);
    let mut expected = vec![
        Event::new("alice", "password", 0, "SSH"),
        Event::new("", "no_auth_tryed", 0, "SSH"),
    ];
    expected.sort();
    assert_eq!(events, expected);
}

#[test]
fn scope_success_only() {
    let server = Setup::default()
        .only(&["ssh"])
        .set("common", "post_login_scope = 2")
        .start();
    assert!(!ssh_password_login(&server, "alice", "wrong"));
    tcp_probe(server.ssh_port());
    assert!(ssh_key_login(&server));
    let events = server.wait_events(1, SETTLE);
    assert_eq!(events, vec![Event::new("alice", "publickey", 1, "SSH")]);
}

#[test]
fn bare_connection_reports_no_auth() {
    let server = Setup::default().only(&["ssh"]).start();
    tcp_probe(server.ssh_port());
    let events = server.wait_events(1, SETTLE);
    assert_eq!(events, vec![Event::new("", "no_auth_tryed", 0, "SSH")]);
}

#[test]
fn http_hook_posts_json() {
    let server = Setup::default()
        .only(&["ssh"])
        .hook(LoginHook::Http)
        .start();
    assert!(ssh_key_login(&server));
    assert!(!ssh_password_login(&server, "bob", "wrong"));
    let events = server.wait_events(2, SETTLE);
    let mut expected = vec![
        Event::new("alice", "publickey", 1, "SSH"),
        Event::new("bob", "password", 0, "SSH"),
    ];
    expected.sort();
    assert_eq!(events, expected);
    let receiver = server.receiver.as_ref().unwrap();
    for request in receiver.requests() {
        assert_eq!(request.method, "POST");
        assert_eq!(request.target, "/login");
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 5, "{body}");
        assert!(
            body["status"].is_u64(),
            "status must be a JSON number: {body}"
        );
    }
}

#[test]
fn http_hook_retries_errors() {
    let server = Setup::default()
        .only(&["ssh"])
        .hook(LoginHook::Http)
        .set("httpclient", "retry_max = 2")
        .set("httpclient", "retry_wait_min = 1")
        .set("httpclient", "retry_wait_max = 1")
        .start();
    let receiver = server.receiver.as_ref().unwrap();
    receiver.set_status(500);
    assert!(ssh_key_login(&server));
    // One attempt and two retries, one second apart.
    let events = server.wait_events(3, Duration::from_secs(3));
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| *e == Event::new("alice", "publickey", 1, "SSH"))
    );
    let failures = server.log_messages("post-login hook failed");
    assert_eq!(failures.len(), 1, "{:?}", server.log_lines());
    assert_eq!(failures[0]["user"], "alice");
    assert!(
        failures[0]["error"].as_str().unwrap().contains("500"),
        "{}",
        failures[0]
    );
}

#[test]
fn http_hook_receiver_down_keeps_login() {
    let server = Setup::default()
        .only(&["ssh"])
        .set("common", "post_login_hook = \"http://127.0.0.1:9/login\"")
        .set("httpclient", "retry_max = 0")
        .hook(LoginHook::None)
        .start();
    assert!(ssh_key_login(&server));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.log_messages("post-login hook failed").is_empty()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let failures = server.log_messages("post-login hook failed");
    assert_eq!(failures.len(), 1, "{:?}", server.log_lines());
}

#[test]
fn slow_hook_does_not_delay_login() {
    let probe = tempfile::tempdir().unwrap();
    let pid_file = probe.path().join("sleeper.pid");
    let hook = write_script(
        probe.path(),
        "slow-hook.sh",
        &format!("sleep 60 &\necho $! > {}\nwait", pid_file.display()),
    );
    let mut server = Setup::default()
        .only(&["ssh"])
        .hook(LoginHook::None)
        .set("common", "hook_program_timeout = 8")
        .set(
            "common",
            &format!("post_login_hook = \"{}\"", hook.display()),
        )
        .start();
    assert!(ssh_key_login(&server));
    // The login finished while the hook program is still running: the hook ran in the
    // background and the login did not wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !pid_file.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        process_alive(pid),
        "the hook's child ended before the login finished"
    );
    // At the time limit the whole process group is killed, background child included.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while process_alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !process_alive(pid),
        "the hook's background child survived the time limit"
    );
    let failures = server.log_messages("post-login hook failed");
    assert_eq!(failures.len(), 1);
    assert!(
        failures[0]["error"].as_str().unwrap().contains("timed out"),
        "{}",
        failures[0]
    );
    assert!(server.stop());
}

fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

#[test]
fn post_connect_program_decides() {
    let probe = tempfile::tempdir().unwrap();
    let deny = probe.path().join("deny");
    let log = probe.path().join("connect.log");
    let hook = write_script(
        probe.path(),
        "connect.sh",
        &format!(
            "echo \"$SFTPGO_CONNECTION_IP $SFTPGO_CONNECTION_PROTOCOL\" >> {}\n[ ! -e {} ]",
            log.display(),
            deny.display()
        ),
    );
    let server = Setup::default()
        .only(&["ssh"])
        .set(
            "common",
            &format!("post_connect_hook = \"{}\"", hook.display()),
        )
        .start();
    assert!(ssh_key_login(&server));
    std::fs::write(&deny, "").unwrap();
    assert!(!ssh_key_login(&server));
    assert!(!ssh_password_login(&server, "alice", ALICE_PASSWORD));
    let events = server.wait_events(1, SETTLE);
    assert_eq!(
        events,
        vec![Event::new("alice", "publickey", 1, "SSH")],
        "a rejected connection must not produce a login event"
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "127.0.0.1 SSH\n".repeat(3)
    );
    let rejections = server.log_messages("connection rejected by the post-connect hook");
    assert_eq!(rejections.len(), 2);
    assert_eq!(rejections[0]["ip"], "127.0.0.1");
}

#[test]
fn post_connect_url_decides() {
    let receiver = HttpReceiver::start();
    let server = Setup::default()
        .only(&["ssh"])
        .set(
            "common",
            &format!(
                "post_connect_hook = \"{}/connect?token=abc\"",
                receiver.url()
            ),
        )
        .start();
    assert!(ssh_key_login(&server));
    receiver.set_status(404);
    assert!(!ssh_key_login(&server));
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(
        requests[0].target,
        "/connect?token=abc&ip=127.0.0.1&protocol=SSH"
    );
    let events = server.wait_events(1, SETTLE);
    assert_eq!(events, vec![Event::new("alice", "publickey", 1, "SSH")]);
}

#[test]
fn post_connect_timeout_rejects() {
    let probe = tempfile::tempdir().unwrap();
    let hook = write_script(probe.path(), "slow-connect.sh", "sleep 30");
    let server = Setup::default()
        .only(&["ssh"])
        .set("common", "hook_program_timeout = 1")
        .set(
            "common",
            &format!("post_connect_hook = \"{}\"", hook.display()),
        )
        .start();
    assert!(!ssh_key_login(&server));
    let rejections = server.log_messages("connection rejected by the post-connect hook");
    assert_eq!(rejections.len(), 1);
    assert!(
        rejections[0]["reason"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{}",
        rejections[0]
    );
    assert!(server.wait_events(0, SETTLE).is_empty());
}

#[test]
fn shutdown_reports_hook_totals() {
    let mut server = Setup::default().only(&["ssh"]).start();
    assert!(ssh_key_login(&server));
    server.wait_events(1, Duration::ZERO);
    assert!(server.stop());
    let totals = server.log_messages("post-login hook totals");
    assert_eq!(totals.len(), 1);
    assert_eq!(totals[0]["delivered"], 1);
    assert_eq!(totals[0]["dropped"], 0);
    assert_eq!(server.log_messages("ferry stopped").len(), 1);
}

#[test]
fn post_connect_runs_bounded() {
    let probe = tempfile::tempdir().unwrap();
    let runs = probe.path().join("runs.log");
    let hook = write_script(
        probe.path(),
        "connect.sh",
        &format!(
            "echo start >> {0}\nsleep 0.5\necho end >> {0}",
            runs.display()
        ),
    );
    let server = Setup::default()
        .only(&["ssh"])
        .set(
            "common",
            &format!("post_connect_hook = \"{}\"", hook.display()),
        )
        .set("common", "post_connect_max_concurrent = 2")
        .start();
    let port = server.ssh_port();
    let clients: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let mut banner = [0u8; 8];
                use std::io::Read;
                stream.read_exact(&mut banner).unwrap();
                banner
            })
        })
        .collect();
    for client in clients {
        assert_eq!(
            &client.join().unwrap(),
            b"SSH-2.0-",
            "every connection is admitted in turn"
        );
    }
    let (mut running, mut peak, mut starts) = (0i32, 0i32, 0);
    for line in std::fs::read_to_string(&runs).unwrap().lines() {
        if line == "start" {
            running += 1;
            starts += 1;
        } else {
            running -= 1;
        }
        peak = peak.max(running);
    }
    assert_eq!(starts, 6);
    assert!(peak <= 2, "{peak} post-connect hooks ran at once");
}
