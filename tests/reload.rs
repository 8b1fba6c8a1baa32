//! Changes to the users file of a running server with `ferry users`, then SIGHUP. Each change
//! takes effect for every protocol only after the signal. A broken users file is rejected
//! with the error logged, and the previous users stay in effect.

mod common;
#[path = "dav_util.rs"]
mod dav_util;
#[path = "ftp_common.rs"]
mod ftp_common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

const RELOADED: &str = "users file reloaded";
const REJECTED: &str = "users file not reloaded; the previous users stay in effect";

#[derive(Clone, Copy, Debug)]
enum Proto {
    Ssh,
    Ftp,
    Dav,
}

const ALL: [Proto; 3] = [Proto::Ssh, Proto::Ftp, Proto::Dav];

/// Logs in as `user` over `proto`; returns whether the login succeeded.
fn login(server: &TestServer, proto: Proto, user: &str, password: &str) -> bool {
    match proto {
        Proto::Ssh => sftp_batch_with_password(server, user, password, "pwd\n")
            .status
            .success(),
        Proto::Ftp => ftp_common::python(
            "import ftplib, sys\n\
             f = ftplib.FTP()\n\
             f.connect('127.0.0.1', int(sys.argv[1]), timeout=30)\n\
             f.login(sys.argv[2], sys.argv[3])\n\
             f.quit()\n",
            &[
                server.ftp_port().to_string(),
                user.to_owned(),
                password.to_owned(),
            ],
        )
        .status
        .success(),
        Proto::Dav => {
            let client = dav_util::Client::new(server, &format!("{user}:{password}"));
            client.propfind("/", Some("0"), None).status == 207
        }
    }
}

/// Asserts that `user` can log in with `password` over every protocol, or over none.
fn assert_logins(server: &TestServer, user: &str, password: &str, allowed: bool) {
    for proto in ALL {
        assert_eq!(
            login(server, proto, user, password),
            allowed,
            "{user} over {proto:?}"
        );
    }
}

/// Runs `ferry users` with the server's configuration and `input` on stdin.
fn ferry_users(server: &TestServer, args: &[&str], input: &str) -> Output {
    let mut command = Command::new(ferry_bin());
    command
        .arg("users")
        .arg("--config")
        .arg(&server.config_path)
        .args(args);
    let output = run_with_input(command, input.as_bytes(), Duration::from_secs(60));
    assert!(
        output.status.success(),
        "ferry users {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Sends SIGHUP and waits for the log line of the reload's outcome.
fn hangup(server: &TestServer, outcome: &str) -> serde_json::Value {
    let before = server.log_messages(outcome).len();
    let pid = server.pid().unwrap().to_string();
    let status = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = server.log_messages(outcome);
        if lines.len() > before {
            return lines[before].clone();
        }
        assert!(Instant::now() < deadline, "no {outcome:?} after SIGHUP");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn users_changes_apply_on_hangup() {
    let server = Setup::default().set("defender", "enabled = false").start();

    ferry_users(&server, &["add", "carol", "--password-stdin"], "carol-pw\n");
    assert_logins(&server, "carol", "carol-pw", false);
    let reloaded = hangup(&server, RELOADED);
    assert_eq!(reloaded["users"], 3);
    assert_logins(&server, "carol", "carol-pw", true);
    assert!(server.root().join("state/data/carol").is_dir());

    ferry_users(&server, &["passwd", "carol"], "carol-new\n");
    assert_logins(&server, "carol", "carol-new", false);
    hangup(&server, RELOADED);
    assert_logins(&server, "carol", "carol-new", true);
    assert_logins(&server, "carol", "carol-pw", false);

    ferry_users(&server, &["remove", "carol"], "");
    hangup(&server, RELOADED);
    assert_logins(&server, "carol", "carol-new", false);
    assert_logins(&server, "alice", ALICE_PASSWORD, true);
}

#[test]
fn broken_users_file_keeps_previous() {
    let server = Setup::default().set("defender", "enabled = false").start();
    let users_file = server.root().join("users.toml");
    let mut text = std::fs::read_to_string(&users_file).unwrap();
    text.push_str(&format!(
        "\n[[users]]\nusername = \"dave\"\npassword = \"{}\"\nhome_dir = \"home/dave\"\nquota_size = -5\n",
        password_hash("dave-pw")
    ));
    std::fs::write(&users_file, text).unwrap();

    let rejected = hangup(&server, REJECTED);
    let error = rejected["error"].as_str().unwrap_or_default();
    assert!(error.contains("quota_size = -5"), "{rejected}");
    assert!(error.contains("users.toml"), "{rejected}");
    assert_logins(&server, "dave", "dave-pw", false);
    assert_logins(&server, "alice", ALICE_PASSWORD, true);
    assert_logins(&server, "bob", BOB_PASSWORD, true);

    // A file that is not TOML at all is rejected the same way.
    std::fs::write(&users_file, "[[users]\nusername = ").unwrap();
    hangup(&server, REJECTED);
    assert_logins(&server, "bob", BOB_PASSWORD, true);
}
