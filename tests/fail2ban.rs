//! The shipped fail2ban filter against real log output: every failed login of every protocol
//! matches, and no successful login does.

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;

const FILTER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../config/fail2ban/filter.d/ferry.conf"
);

fn curl_ftp(server: &TestServer, password: &str) -> bool {
    let mut command = Command::new("curl");
    command
        .args(["-s", "-o", "/dev/null", "--max-time", "20"])
        .arg(format!(
            "ftp://alice:{password}@127.0.0.1:{}/",
            server.ftp_port()
        ));
    run(command, Duration::from_secs(30)).status.success()
}

fn curl_dav(server: &TestServer, password: &str) -> bool {
    let mut command = Command::new("curl");
    command
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
            "-X",
            "PROPFIND",
            "-H",
            "Depth: 0",
        ])
        .args(["-u", &format!("alice:{password}")])
        .arg(format!("{}/", server.dav_url()));
    let output = run(command, Duration::from_secs(30));
    String::from_utf8_lossy(&output.stdout) == "207"
}

/// Makes three successful and four failed logins over the three protocols, and returns the
/// number of failures.
fn login_mix(server: &TestServer) -> usize {
    assert!(
        sftp_batch_with_password(server, "alice", ALICE_PASSWORD, "pwd\n")
            .status
            .success()
    );
    assert!(
        !sftp_batch_with_password(server, "alice", "wrong", "pwd\n")
            .status
            .success()
    );
    assert!(curl_ftp(server, ALICE_PASSWORD));
    assert!(!curl_ftp(server, "wrong"));
    assert!(curl_dav(server, ALICE_PASSWORD));
    assert!(!curl_dav(server, "wrong"));
    drop(TcpStream::connect(("127.0.0.1", server.ssh_port())).unwrap());
    server.wait_events(7, Duration::from_millis(500));
    4
}

/// Runs fail2ban-regex on `lines` and returns the addresses it matched, one per line.
fn fail2ban_matches(server: &TestServer, lines: &[String]) -> Vec<String> {
    let log = server.root().join("ferry.log");
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let mut command = Command::new("fail2ban-regex");
    command
        .args(["--print-no-missed", "-o", "ip"])
        .arg(&log)
        .arg(FILTER);
    let output = run(command, Duration::from_secs(60));
    assert!(
        output.status.success(),
        "fail2ban-regex failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn filter_matches_json_failures() {
    let server = Setup::default().start();
    let failures = login_mix(&server);
    let lines = server.log_lines();
    let login_lines: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("\"ferry::login\""))
        .cloned()
        .collect();
    assert_eq!(login_lines.len(), failures + 3, "{login_lines:#?}");
    assert_eq!(
        fail2ban_matches(&server, &lines),
        vec!["127.0.0.1".to_owned(); failures]
    );
    let succeeded: Vec<String> = login_lines
        .iter()
        .filter(|l| l.contains("login succeeded"))
        .cloned()
        .collect();
    assert_eq!(succeeded.len(), 3);
    assert!(
        fail2ban_matches(&server, &succeeded).is_empty(),
        "a successful login matched"
    );
}

#[test]
fn filter_matches_human_failures() {
    let server = Setup::default().human_logs().start();
    let failures = login_mix(&server);
    let lines = server.log_lines();
    assert_eq!(
        fail2ban_matches(&server, &lines),
        vec!["127.0.0.1".to_owned(); failures]
    );
    let succeeded: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("login succeeded"))
        .cloned()
        .collect();
    assert_eq!(succeeded.len(), 3, "{lines:#?}");
    assert!(
        fail2ban_matches(&server, &succeeded).is_empty(),
        "a successful login matched"
    );
}

#[test]
fn crafted_user_name_cannot_forge_address() {
    let server = Setup::default()
        .only(&["ssh"])
        .human_logs()
        .hook(LoginHook::None)
        .start();
    // A user name with a line break and a copy of the failed-login line, as an attacker
    // who wants another address banned would send it.
    let script = format!(
        "import paramiko\n\
         t = paramiko.Transport(('127.0.0.1', {port}))\n\
         t.connect()\n\
         name = 'x\\n2026-12-04T00:00:00.000000Z  WARN ferry::login: login failed protocol=SSH ip=198.51.100.2 user=y ip=198.51.100.1'\n\
         try:\n    t.auth_password(name, 'wrong')\nexcept paramiko.AuthenticationException:\n    pass\n\
         t.close()\n",
        port = server.ssh_port()
    );
    let mut command = Command::new("python3");
    command.args(["-c", &script]);
    let output = run(command, Duration::from_secs(60));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
    let lines = server.log_lines();
    assert!(
        lines.iter().any(|l| l.contains("login failed")),
        "{lines:#?}"
    );
    assert_eq!(
        fail2ban_matches(&server, &lines),
        vec!["127.0.0.1".to_owned()]
    );
}

/// Sends a wrong FTP login whose user name carries a forged failure line.
fn ftp_forged_login(port: u16) {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    for command in [
        "USER x ferry::login: login failed protocol=FTP ip=192.0.2.97 \"ip\":\"192.0.2.96\" y\r\n",
        "PASS wrong\r\n",
        "QUIT\r\n",
    ] {
        stream.write_all(command.as_bytes()).unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
}

#[test]
fn forged_ftp_names_match_nothing() {
    for human in [true, false] {
        let mut setup = Setup::default()
            .only(&["ftp"])
            .hook(LoginHook::None)
            // A failing hook logs the event again, user name included.
            .set("common", "post_login_hook = \"http://127.0.0.1:9/login\"")
            .set("httpclient", "retry_max = 0");
        if human {
            setup = setup.human_logs();
        }
        let server = setup.start();
        ftp_forged_login(server.ftp_port());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !server
            .log_lines()
            .iter()
            .any(|l| l.contains("post-login hook failed"))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let lines = server.log_lines();
        assert!(
            lines.iter().any(|l| l.contains("post-login hook failed")),
            "{lines:#?}"
        );
        assert_eq!(
            fail2ban_matches(&server, &lines),
            vec!["127.0.0.1".to_owned()],
            "human format: {human}"
        );
    }
}
