//! FTP login events as the post-login hook receives them, and the post-connect gate.

mod common;
#[path = "ftp_common.rs"]
mod ftp_common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use ftp_common::*;

const SETTLE: Duration = Duration::from_millis(1500);

fn ftp_only() -> Setup {
    Setup::default().only(&["ftp"])
}

/// Logs in with USER and PASS and returns the reply to PASS.
fn login(port: u16, user: &str, password: &str) -> String {
    let mut control = Control::connect(port);
    assert!(control.line().starts_with("220 "));
    assert!(control.command(&format!("USER {user}")).starts_with("331 "));
    let reply = control.command(&format!("PASS {password}"));
    control.command("QUIT");
    reply
}

#[test]
fn login_outcomes_reported() {
    let server = ftp_only().start();
    let port = server.ftp_port();
    assert!(login(port, "alice", ALICE_PASSWORD).starts_with("230 "));
    assert!(login(port, "alice", "wrong").starts_with("530 "));
    assert!(login(port, "nobody", "whatever").starts_with("530 "));

    let events = server.wait_events(3, SETTLE);
    let mut expected = vec![
        Event::new("alice", "password", 1, "FTP"),
        Event::new("alice", "password", 0, "FTP"),
        Event::new("nobody", "password", 0, "FTP"),
    ];
    expected.sort();
    assert_eq!(events, expected);
}

#[test]
fn retry_after_failure_reported_twice() {
    let server = ftp_only().start();
    let mut control = Control::connect(server.ftp_port());
    control.line();
    control.command("USER bob");
    assert!(control.command("PASS wrong").starts_with("530 "));
    control.command("USER bob");
    assert!(
        control
            .command(&format!("PASS {BOB_PASSWORD}"))
            .starts_with("230 ")
    );
    control.command("QUIT");

    let events = server.wait_events(2, SETTLE);
    let mut expected = vec![
        Event::new("bob", "password", 0, "FTP"),
        Event::new("bob", "password", 1, "FTP"),
    ];
    expected.sort();
    assert_eq!(events, expected);
}

#[test]
fn clients_reported_by_curl_and_ftplib() {
    let server = ftp_only().start();
    let listing = curl(&[alice_url(&server, "")]);
    assert_success(&listing, "curl listing");
    let script = "import ftplib, sys\nf = ftplib.FTP()\nf.connect('127.0.0.1', int(sys.argv[1]))\n\
                  try:\n    f.login('bob', 'wrong')\nexcept ftplib.error_perm:\n    pass\nf.close()\n";
    assert_success(&python(script, &[server.ftp_port().to_string()]), "ftplib");

    let events = server.wait_events(2, SETTLE);
    let mut expected = vec![
        Event::new("alice", "password", 1, "FTP"),
        Event::new("bob", "password", 0, "FTP"),
    ];
    expected.sort();
    assert_eq!(events, expected);
}

#[test]
fn closed_before_login_reported_once() {
    let server = ftp_only().start();
    let port = server.ftp_port();

    // Closed before the greeting was read, as a port scanner does.
    drop(TcpStream::connect(("127.0.0.1", port)).unwrap());
    // Closed after the greeting.
    let mut control = Control::connect(port);
    assert!(control.line().starts_with("220 "));
    drop(control);
    // USER without PASS is no login attempt either.
    let mut control = Control::connect(port);
    control.line();
    assert!(control.command("USER alice").starts_with("331 "));
    drop(control);
    // QUIT before USER.
    let mut control = Control::connect(port);
    control.line();
    assert!(control.command("QUIT").starts_with("221 "));

    let events = server.wait_events(4, SETTLE);
    assert_eq!(events, vec![Event::new("", "no_auth_tryed", 0, "FTP"); 4]);
}

#[test]
fn pass_then_close_is_one_attempt() {
    let server = ftp_only().start();
    let mut control = Control::connect(server.ftp_port());
    control.line();
    // The client does not wait for the reply to PASS.
    control
        .writer
        .write_all(b"USER alice\r\nPASS wrong\r\n")
        .unwrap();
    drop(control);

    let events = server.wait_events(1, SETTLE);
    assert_eq!(events, vec![Event::new("alice", "password", 0, "FTP")]);
}

#[test]
fn login_timeout_closes_and_reports() {
    let server = ftp_only().set("ftpd", "login_timeout = 2").start();
    let port = server.ftp_port();
    let started = Instant::now();
    let mut silent = Control::connect(port);
    assert!(silent.line().starts_with("220 "));
    let mut named = Control::connect(port);
    named.line();
    assert!(named.command("USER alice").starts_with("331 "));
    // Commands before login do not extend the login timeout.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(named.command("NOOP").starts_with("200 "));

    silent.expect_closed_with_421();
    named.expect_closed_with_421();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "closed after {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "closed after {waited:?}");

    // A login in time is not affected.
    let mut quick = Control::connect(port);
    quick.line();
    quick.command("USER alice");
    assert!(
        quick
            .command(&format!("PASS {ALICE_PASSWORD}"))
            .starts_with("230 ")
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert!(quick.command("PWD").starts_with("257 "));

    let events = server.wait_events(3, SETTLE);
    let mut expected = vec![
        Event::new("", "no_auth_tryed", 0, "FTP"),
        Event::new("", "no_auth_tryed", 0, "FTP"),
        Event::new("alice", "password", 1, "FTP"),
    ];
    expected.sort();
    assert_eq!(events, expected);
}

#[test]
fn refused_login_reported_as_failure() {
    // The password is right, but the account rules refuse the login.
    let server = ftp_only()
        .user(&format!(
            "username = \"carol\"\npassword = \"{}\"\nhome_dir = \"home/carol\"\nstatus = \"disabled\"",
            password_hash("carolpw")
        ))
        .user(&format!(
            "username = \"dave\"\npassword = \"{}\"\nhome_dir = \"home/dave\"\ndenied_protocols = [\"FTP\"]",
            password_hash("davepw")
        ))
        .start();
    assert!(login(server.ftp_port(), "carol", "carolpw").starts_with("530 "));
    assert!(login(server.ftp_port(), "dave", "davepw").starts_with("530 "));

    let events = server.wait_events(2, SETTLE);
    let mut expected = vec![
        Event::new("carol", "password", 0, "FTP"),
        Event::new("dave", "password", 0, "FTP"),
    ];
    expected.sort();
    assert_eq!(events, expected);
}

#[test]
fn home_not_creatable_is_failure() {
    let blocker = tempfile::NamedTempFile::new().unwrap();
    let server = ftp_only()
        .user(&format!(
            "username = \"erin\"\npassword = \"{}\"\nhome_dir = \"{}/home\"",
            password_hash("erinpw"),
            blocker.path().display()
        ))
        .start();
    assert!(login(server.ftp_port(), "erin", "erinpw").starts_with("530 "));
    let events = server.wait_events(1, SETTLE);
    assert_eq!(events, vec![Event::new("erin", "password", 0, "FTP")]);
}

#[test]
fn post_connect_rejection_gets_421() {
    let probe = tempfile::tempdir().unwrap();
    let hook = write_script(probe.path(), "deny.sh", "exit 1");
    let server = ftp_only()
        .set(
            "common",
            &format!("post_connect_hook = \"{}\"", hook.display()),
        )
        .start();
    Control::connect(server.ftp_port()).expect_closed_with_421();

    let curl_output = curl(&[alice_url(&server, "")]);
    assert!(!curl_output.status.success());

    let events = server.wait_events(0, SETTLE);
    assert_eq!(
        events,
        Vec::<Event>::new(),
        "a rejected connection has no login event"
    );
}

#[test]
fn session_limit_counts_open_sessions() {
    let server = ftp_only()
        .user(&format!(
            "username = \"frank\"\npassword = \"{}\"\nhome_dir = \"home/frank\"\nmax_sessions = 1",
            password_hash("frankpw")
        ))
        .start();
    let port = server.ftp_port();
    let mut first = Control::connect(port);
    first.line();
    first.command("USER frank");
    assert!(first.command("PASS frankpw").starts_with("230 "));
    assert!(
        login(port, "frank", "frankpw").starts_with("530 "),
        "second session allowed"
    );

    // The session ends with its connection, so the next login gets through.
    assert!(first.command("QUIT").starts_with("221 "));
    assert_eq!(first.line(), "");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        login(port, "frank", "frankpw").starts_with("230 "),
        "session not released"
    );

    let events = server.wait_events(3, SETTLE);
    let mut expected = vec![
        Event::new("frank", "password", 1, "FTP"),
        Event::new("frank", "password", 0, "FTP"),
        Event::new("frank", "password", 1, "FTP"),
    ];
    expected.sort();
    assert_eq!(events, expected);
}
