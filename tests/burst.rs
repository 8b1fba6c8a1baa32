//! A flood of failed logins against each protocol with a slow post-login hook: the hook runs
//! at most `post_login_max_concurrent` times at once, a correct login still gets in during
//! the flood, and every event is either delivered or counted as dropped.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const ATTEMPTS: usize = 1000;
const MAX_CONCURRENT: usize = 4;
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/clients/burst.py");

fn burst(
    protocol: &str,
    port: u16,
    login: impl FnOnce(&TestServer) -> bool,
    server: &mut TestServer,
) {
    // SSH pays a one-second delay per rejected password, so it needs more clients at once.
    let parallel = if protocol == "ssh" { "48" } else { "8" };
    let mut flood = Command::new("python3")
        .args([
            CLIENT,
            protocol,
            &port.to_string(),
            &ATTEMPTS.to_string(),
            parallel,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let the flood get going, then log in correctly while it runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while server
        .log_lines()
        .iter()
        .filter(|l| l.contains("login failed"))
        .count()
        < 20
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the flood did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(login(server), "a correct login failed during the flood");
    assert!(
        flood.try_wait().unwrap().is_none(),
        "the flood ended before the correct login finished"
    );
    let output = wait_child(flood, Duration::from_secs(600));
    assert!(
        output.status.success(),
        "flood client: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    assert!(server.stop(), "server did not stop cleanly");
    let logins = server
        .log_lines()
        .iter()
        .filter(|l| l.contains("\"login failed\"") || l.contains("\"login succeeded\""))
        .count();
    assert!(
        logins > ATTEMPTS,
        "{logins} login lines for {ATTEMPTS} attempts"
    );
    let totals = server.log_messages("post-login hook totals");
    assert_eq!(totals.len(), 1);
    let count = |key: &str| totals[0][key].as_u64().unwrap() as usize;
    assert_eq!(
        count("delivered") + count("failed") + count("dropped"),
        logins,
        "{}",
        totals[0]
    );
    assert!(
        count("dropped") > 0,
        "a slow hook and a small queue must drop events: {}",
        totals[0]
    );

    let peak =
        peak_concurrency(&std::fs::read_to_string(server.root().join("hook-runs.log")).unwrap());
    assert!(peak <= MAX_CONCURRENT, "{peak} hook programs ran at once");
    assert!(
        peak >= 2,
        "the hook never ran concurrently ({peak}); the bound was not exercised"
    );
}

fn wait_child(child: std::process::Child, timeout: Duration) -> std::process::Output {
    let id = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(timeout);
        let _ = Command::new("kill").arg(id.to_string()).status();
    });
    let output = child.wait_with_output().unwrap();
    drop(watchdog);
    output
}

/// Replays the start and end lines the hook wrote and returns the most runs at once.
fn peak_concurrency(log: &str) -> usize {
    let (mut running, mut peak) = (0usize, 0usize);
    for line in log.lines() {
        match line {
            "start" => {
                running += 1;
                peak = peak.max(running);
            }
            "end" => running = running.saturating_sub(1),
            other => panic!("unexpected hook log line {other:?}"),
        }
    }
    peak
}

fn flood_setup(protocol: &str) -> TestServer {
    Setup::default()
        .only(&[protocol])
        .hook(LoginHook::Script(
            "echo start >> {root}/hook-runs.log\nsleep 0.3\necho end >> {root}/hook-runs.log"
                .into(),
        ))
        .set(
            "common",
            &format!("post_login_max_concurrent = {MAX_CONCURRENT}"),
        )
        .set("common", "post_login_queue_size = 50")
        .set("common", "max_per_host_connections = 0")
        .set("defender", "enabled = false")
        .set("sftpd", "max_auth_tries = 20")
        .start()
}

#[test]
fn ssh_flood_bounded() {
    let mut server = flood_setup("ssh");
    let port = server.ssh_port();
    burst(
        "ssh",
        port,
        |s| {
            sftp_batch_with_key(s, "alice", &s.alice_key(), "pwd\n")
                .status
                .success()
        },
        &mut server,
    );
}

#[test]
fn ftp_flood_bounded() {
    let mut server = flood_setup("ftp");
    let port = server.ftp_port();
    burst(
        "ftp",
        port,
        |s| {
            let mut command = Command::new("curl");
            command
                .args(["-s", "-o", "/dev/null", "--max-time", "30"])
                .arg(format!("ftp://alice:{ALICE_PASSWORD}@127.0.0.1:{port}/"));
            let _ = s;
            run(command, Duration::from_secs(40)).status.success()
        },
        &mut server,
    );
}

#[test]
fn dav_flood_bounded() {
    let mut server = flood_setup("dav");
    let port = server.dav_port();
    burst(
        "dav",
        port,
        |_| {
            let mut command = Command::new("curl");
            command
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "30",
                    "-u",
                ])
                .arg(format!("alice:{ALICE_PASSWORD}"))
                .args(["-X", "PROPFIND", "-H", "Depth: 0"])
                .arg(format!("http://127.0.0.1:{port}/"));
            String::from_utf8_lossy(&run(command, Duration::from_secs(40)).stdout) == "207"
        },
        &mut server,
    );
}
