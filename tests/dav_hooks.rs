//! WebDAV login events and the connection gate, recorded by a real hook program.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod dav_util;

use std::process::Command;
use std::time::Duration;

use common::*;
use dav_util::*;

const SETTLE: Duration = Duration::from_millis(1500);

fn propfind(server: &TestServer, user_password: &str, extra: &[&str]) -> u16 {
    let target = url(server, "/");
    let mut args = vec!["-u", user_password, "-X", "PROPFIND", "-H", "Depth: 0"];
    args.extend(extra);
    args.push(&target);
    curl(&args).status
}

fn dav_event(user: &str, status: u8, ip: &str) -> Event {
    Event {
        ip: ip.into(),
        ..Event::new(user, "password", status, "DAV")
    }
}

#[test]
fn events_once_per_verification() {
    let server = Setup::default().only(&["dav"]).start();
    let auth = alice();

    // The anonymous probe every client sends first: 401 and no event.
    let probe = curl(&["-X", "PROPFIND", "-H", "Depth: 0", &url(&server, "/")]);
    assert_eq!(probe.status, 401);
    assert_eq!(
        probe.header("www-authenticate").as_deref(),
        Some("Basic realm=\"ferry\"")
    );

    // curl --anyauth probes without credentials, then retries with them.
    assert_eq!(propfind(&server, &auth, &["--anyauth"]), 207);
    assert_eq!(propfind(&server, "alice:wrong", &[]), 401);
    for _ in 0..20 {
        assert_eq!(propfind(&server, &auth, &["-H", "Depth: 1"]), 207);
    }
    // Basic credentials that do not decode count as a failed login without a user name.
    let malformed = curl(&["-H", "Authorization: Basic !!!", &url(&server, "/")]);
    assert_eq!(malformed.status, 401);

    let events = server.wait_events(3, SETTLE);
    let mut expected = vec![
        dav_event("alice", 1, "127.0.0.1"),
        dav_event("alice", 0, "127.0.0.1"),
        dav_event("", 0, "127.0.0.1"),
    ];
    expected.sort();
    assert_eq!(events, expected);
}

#[test]
fn cache_expiry_verifies_again() {
    let server = Setup::default()
        .only(&["dav"])
        .set("webdavd", "auth_cache_ttl = 1")
        .start();
    let auth = alice();
    assert_eq!(propfind(&server, &auth, &[]), 207);
    assert_eq!(propfind(&server, &auth, &[]), 207);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(propfind(&server, &auth, &[]), 207);
    let events = server.wait_events(2, SETTLE);
    assert_eq!(events, vec![dav_event("alice", 1, "127.0.0.1"); 2]);
}

#[test]
fn concurrent_logins_report_once() {
    let server = Setup::default().only(&["dav"]).start();
    let auth = alice();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let target = url(&server, "/");
            let auth = auth.clone();
            std::thread::spawn(move || {
                curl(&["-u", &auth, "-X", "PROPFIND", "-H", "Depth: 0", &target]).status
            })
        })
        .collect();
    for worker in workers {
        assert_eq!(worker.join().unwrap(), 207);
    }
    let events = server.wait_events(1, SETTLE);
    assert_eq!(events, vec![dav_event("alice", 1, "127.0.0.1")]);
}

#[test]
fn changed_password_not_cached() {
    let server = Setup::default().only(&["dav"]).start();
    assert_eq!(propfind(&server, &alice(), &[]), 207);

    let users = server.root().join("users.toml");
    let text = std::fs::read_to_string(&users).unwrap();
    let changed = text.replace(&password_hash(ALICE_PASSWORD), &password_hash("newpw"));
    assert_ne!(text, changed);
    std::fs::write(&users, changed).unwrap();
    let pid = server.pid().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.log_messages("users file reloaded").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "users file not reloaded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    assert_eq!(
        propfind(&server, &alice(), &[]),
        401,
        "the old password is not accepted from the cache"
    );
    assert_eq!(propfind(&server, "alice:newpw", &[]), 207);
    let events = server.wait_events(3, SETTLE);
    let mut expected = vec![
        dav_event("alice", 1, "127.0.0.1"),
        dav_event("alice", 0, "127.0.0.1"),
        dav_event("alice", 1, "127.0.0.1"),
    ];
    expected.sort();
    assert_eq!(events, expected);
}

/// A post-connect hook program that appends the address it was given to `connect.log` and
/// accepts unless `deny` exists beside it.
fn connect_hook(dir: &std::path::Path) -> std::path::PathBuf {
    write_script(
        dir,
        "connect-hook.sh",
        &format!(
            "echo \"$SFTPGO_CONNECTION_IP $SFTPGO_CONNECTION_PROTOCOL\" >> {0}/connect.log\n[ ! -e {0}/deny ]",
            dir.display()
        ),
    )
}

fn connect_log(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("connect.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn forwarded_headers_need_trusted_proxy() {
    let server = Setup::default().only(&["dav"]).start();
    let status = propfind(
        &server,
        "alice:wrong",
        &[
            "-H",
            "X-Forwarded-For: 203.0.113.9",
            "-H",
            "X-Real-IP: 203.0.113.9",
        ],
    );
    assert_eq!(status, 401);
    let events = server.wait_events(1, SETTLE);
    assert_eq!(events, vec![dav_event("alice", 0, "127.0.0.1")]);
}

#[test]
fn trusted_proxy_forwards_client_ip() {
    let hooks = tempfile::tempdir().unwrap();
    let hook = connect_hook(hooks.path());
    let server = Setup::default()
        .only(&["dav"])
        .set(
            "common",
            &format!("post_connect_hook = \"{}\"", hook.display()),
        )
        .set(
            "webdavd",
            "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]",
        )
        .start();

    let chain = "X-Forwarded-For: 198.51.100.7, 203.0.113.9, 10.1.2.3";
    assert_eq!(propfind(&server, "alice:wrong", &["-H", chain]), 401);
    assert_eq!(
        propfind(&server, &alice(), &["-H", "X-Real-IP: 192.0.2.5"]),
        207
    );
    let events = server.wait_events(2, SETTLE);
    let mut expected = vec![
        dav_event("alice", 0, "203.0.113.9"),
        dav_event("alice", 1, "192.0.2.5"),
    ];
    expected.sort();
    assert_eq!(events, expected);
    assert_eq!(
        connect_log(hooks.path()),
        ["203.0.113.9 DAV", "192.0.2.5 DAV"]
    );
}

#[test]
fn post_connect_rejection_gets_403() {
    let hooks = tempfile::tempdir().unwrap();
    let hook = connect_hook(hooks.path());
    std::fs::write(hooks.path().join("deny"), "").unwrap();
    let server = Setup::default()
        .only(&["dav"])
        .set(
            "common",
            &format!("post_connect_hook = \"{}\"", hook.display()),
        )
        .start();

    assert_eq!(propfind(&server, &alice(), &[]), 403);
    assert_eq!(propfind(&server, "alice:wrong", &[]), 403);
    assert_eq!(
        connect_log(hooks.path()),
        ["127.0.0.1 DAV", "127.0.0.1 DAV"]
    );

    std::fs::remove_file(hooks.path().join("deny")).unwrap();
    assert_eq!(propfind(&server, &alice(), &[]), 207);
    let events = server.wait_events(1, SETTLE);
    assert_eq!(
        events,
        vec![dav_event("alice", 1, "127.0.0.1")],
        "a rejected connection reports no login"
    );
}
