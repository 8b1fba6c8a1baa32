//! The brute-force defender seen from outside. Failed logins over one protocol ban the client
//! address on all three, and a banned connection is closed before the post-connect hook
//! runs. Addresses on the safe list are never banned, and a ban ends after `ban_time`.

mod common;
#[path = "dav_util.rs"]
mod dav_util;
#[path = "ftp_common.rs"]
mod ftp_common;

use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

const THRESHOLD: u32 = 3;
const BAN_SECS: u64 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Ssh,
    Ftp,
    Dav,
}

const ALL: [Proto; 3] = [Proto::Ssh, Proto::Ftp, Proto::Dav];

/// A server with a small threshold, a short ban, and a post-connect hook that appends one
/// line per connection it is asked about to a log.
struct Defended {
    server: TestServer,
    /// The folder of the hook script and its log.
    hook_dir: tempfile::TempDir,
}

impl Defended {
    /// Starts the server; `safe_list` is a TOML array.
    fn start(safe_list: &str) -> Defended {
        let hook_dir = tempfile::tempdir().unwrap();
        let log = hook_dir.path().join("connect.log");
        let script = write_script(
            hook_dir.path(),
            "connect-hook.sh",
            &format!(
                "echo \"$SFTPGO_CONNECTION_PROTOCOL $SFTPGO_CONNECTION_IP\" >> {}",
                log.display()
            ),
        );
        let server = Setup::default()
            .set("defender", "enabled = true")
            .set("defender", &format!("threshold = {THRESHOLD}"))
            .set("defender", "observation_time = 60")
            .set("defender", &format!("ban_time = {BAN_SECS}"))
            .set("defender", &format!("safe_list = {safe_list}"))
            .set(
                "common",
                &format!("post_connect_hook = \"{}\"", script.display()),
            )
            .start();
        Defended { server, hook_dir }
    }

    fn hook_log(&self) -> PathBuf {
        self.hook_dir.path().join("connect.log")
    }

    /// Returns how many connections the post-connect hook was asked about.
    fn hook_calls(&self) -> usize {
        std::fs::read_to_string(self.hook_log())
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// Logs in as alice with `password` over `proto`; returns whether the login succeeded.
    fn login(&self, proto: Proto, password: &str) -> bool {
        let server = &self.server;
        match proto {
            Proto::Ssh => sftp_batch_with_password(server, "alice", password, "pwd\n")
                .status
                .success(),
            Proto::Ftp => {
                let output = ftp_common::python(
                    "import ftplib, sys\n\
                     f = ftplib.FTP()\n\
                     f.connect('127.0.0.1', int(sys.argv[1]), timeout=30)\n\
                     f.login('alice', sys.argv[2])\n\
                     f.quit()\n",
                    &[server.ftp_port().to_string(), password.to_owned()],
                );
                output.status.success()
            }
            Proto::Dav => {
                let client = dav_util::Client::new(server, &format!("alice:{password}"));
                client.propfind("/", Some("0"), None).status == 207
            }
        }
    }

    /// Connects over `proto` and returns whether the server rejected the connection: SSH
    /// closes it without a banner, FTP replies 421 and WebDAV 403.
    fn rejected(&self, proto: Proto) -> bool {
        let server = &self.server;
        match proto {
            Proto::Ssh => {
                let greeting = first_bytes(server.ssh_port());
                !greeting.starts_with("SSH-")
            }
            Proto::Ftp => first_bytes(server.ftp_port()).starts_with("421"),
            Proto::Dav => {
                let client = dav_util::Client::new(server, &format!("alice:{ALICE_PASSWORD}"));
                client.propfind("/", Some("0"), None).status == 403
            }
        }
    }
}

/// Connects and returns what the server sends first, empty when it closes the connection.
fn first_bytes(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Waits up to 10 s for `count` log lines with `message`, since the log is read from the
/// server's stderr in the background, and returns the lines found.
fn wait_log(server: &TestServer, message: &str, count: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = server.log_messages(message);
        if lines.len() >= count || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fails `THRESHOLD` logins over `proto`, then checks the ban on every protocol and its end.
fn ban_after_failures(proto: Proto) {
    let defended = Defended::start("[]");
    for _ in 0..THRESHOLD {
        assert!(!defended.login(proto, "wrong-password"));
    }

    let bans = wait_log(
        &defended.server,
        "client banned after repeated login failures",
        1,
    );
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0]["ip"], "127.0.0.1");

    let calls_before = defended.hook_calls();
    for other in ALL {
        assert!(
            defended.rejected(other),
            "{other:?} connection not rejected"
        );
    }
    assert_eq!(
        defended.hook_calls(),
        calls_before,
        "the post-connect hook ran for a banned address"
    );
    let rejections = wait_log(
        &defended.server,
        "connection from a banned address rejected",
        ALL.len(),
    );
    assert!(rejections.len() >= ALL.len(), "{rejections:?}");
    assert!(rejections.iter().all(|line| line["ip"] == "127.0.0.1"));

    std::thread::sleep(Duration::from_secs(BAN_SECS) + Duration::from_millis(500));
    for other in ALL {
        assert!(
            defended.login(other, ALICE_PASSWORD),
            "{other:?} login after the ban ended"
        );
    }
    assert!(defended.hook_calls() > calls_before);
    assert_eq!(wait_log(&defended.server, "ban expired", 1).len(), 1);
}

#[test]
fn ssh_failures_ban_everywhere() {
    ban_after_failures(Proto::Ssh);
}

#[test]
fn ftp_failures_ban_everywhere() {
    ban_after_failures(Proto::Ftp);
}

#[test]
fn dav_failures_ban_everywhere() {
    ban_after_failures(Proto::Dav);
}

#[test]
fn safe_list_never_banned() {
    let defended = Defended::start("[\"127.0.0.0/8\"]");
    for proto in ALL {
        for _ in 0..THRESHOLD {
            assert!(!defended.login(proto, "wrong-password"));
        }
    }
    for proto in ALL {
        assert!(defended.login(proto, ALICE_PASSWORD), "{proto:?} login");
    }
    let bans = defended
        .server
        .log_messages("client banned after repeated login failures");
    assert!(bans.is_empty(), "{bans:?}");
    assert!(defended.hook_calls() >= 4 * ALL.len());
}
