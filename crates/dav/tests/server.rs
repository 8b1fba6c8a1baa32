//! The WebDAV server inside one test process: connection handling and shutdown, driven by
//! curl and raw TCP on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_dav::{Binding, Config, Server};
use ferry_hooks::{HookTarget, Hooks, HooksConfig, HttpClientConfig};
use ferry_users::{Logins, UserStore};
use ferry_vfs::UploadMode;
use tokio_util::sync::CancellationToken;

struct Running {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<()>,
}

impl Running {
    fn events(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("events.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Writes a users file with alice (password "alicepw") and a post-login hook program that
/// appends `user status ip` lines to `events.log`.
fn prepare(dir: &Path) -> (PathBuf, PathBuf) {
    let hash = ferry_users::hash_password("alicepw").unwrap();
    let users = dir.join("users.toml");
    std::fs::write(
        &users,
        format!(
            "[[users]]\nusername = \"alice\"\npassword = \"{hash}\"\nhome_dir = \"home/alice\"\n"
        ),
    )
    .unwrap();
    let hook = dir.join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$SFTPGO_LOGIND_USER $SFTPGO_LOGIND_STATUS $SFTPGO_LOGIND_IP\" >> {}/events.log\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    (users, hook)
}

async fn start(https: bool, grace: Duration) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let (users, hook) = prepare(dir.path());
    let mut config = Config {
        bindings: vec![Binding {
            address: "127.0.0.1".into(),
            port: 0,
            enable_https: https,
        }],
        ..Config::default()
    };
    if https {
        make_certificate(dir.path());
        config.certificate_file = dir.path().join("cert.pem");
        config.certificate_key_file = dir.path().join("key.pem");
    }

    let hooks = Hooks::new(
        HooksConfig {
            post_login_hook: Some(HookTarget::Program(hook)),
            ..HooksConfig::default()
        },
        &HttpClientConfig::default(),
    )
    .unwrap();
    let store = Arc::new(UserStore::load(&users).unwrap());
    let logins = Logins::new(store, hooks, UploadMode::Atomic);

    let server = Server::bind(config, logins).await.unwrap();
    let addr = server.local_addrs()[0];
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(server.serve(shutdown.clone(), grace));
    Running {
        dir,
        addr,
        shutdown,
        served,
    }
}

fn make_certificate(dir: &Path) {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl must be installed");
    assert!(status.success());
}

/// Runs one curl with three requests to `/` and returns, per request, the status and
/// whether it needed a new connection.
async fn three_requests(
    running: &Running,
    scheme: &str,
    user: &str,
    extra: &[&str],
) -> Vec<String> {
    let url = format!("{scheme}://127.0.0.1:{}/", running.addr.port());
    let cacert = running.dir.path().join("cert.pem");
    let mut command = tokio::process::Command::new("curl");
    command
        .args(["-s", "--max-time", "20", "-u", user])
        .args(["-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null"])
        .args([
            "-X",
            "PROPFIND",
            "-H",
            "Depth: 0",
            "-w",
            "%{http_code}:%{num_connects} ",
        ])
        .arg("--cacert")
        .arg(cacert)
        .args(extra)
        .args([&url, &url, &url]);
    let output = command.output().await.unwrap();
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_login_ends_http1_connection() {
    let running = start(false, Duration::from_secs(5)).await;
    let good = three_requests(&running, "http", "alice:alicepw", &["--http1.1"]).await;
    assert_eq!(
        good,
        ["207:1", "207:0", "207:0"],
        "a good login keeps the connection"
    );
    let bad = three_requests(&running, "http", "alice:wrong", &["--http1.1"]).await;
    assert_eq!(
        bad,
        ["401:1", "401:1", "401:1"],
        "every failure ends its connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_login_ends_http2_connection() {
    let running = start(true, Duration::from_secs(5)).await;
    let good = three_requests(&running, "https", "alice:alicepw", &["--http2"]).await;
    assert_eq!(
        good,
        ["207:1", "207:0", "207:0"],
        "a good login keeps the connection"
    );
    let bad = three_requests(&running, "https", "alice:wrong", &["--http2"]).await;
    assert_eq!(
        bad,
        ["401:1", "401:1", "401:1"],
        "every failure ends its connection"
    );

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = running.events();
    assert_eq!(
        events.iter().filter(|e| *e == "alice 1 127.0.0.1").count(),
        1,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| *e == "alice 0 127.0.0.1").count(),
        3,
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections() {
    let running = start(false, Duration::from_secs(30)).await;
    let addr = running.addr;
    let idle = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream
            .write_all(b"OPTIONS / HTTP/1.1\r\nHost: t\r\nAuthorization: Basic YWxpY2U6YWxpY2Vwdw==\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        stream
    })
    .await
    .unwrap();

    running.shutdown.cancel();
    // The grace is 30 seconds, so returning within 10 means the idle connection did not
    // hold the shutdown.
    tokio::time::timeout(Duration::from_secs(10), running.served)
        .await
        .expect("serve returns without waiting for the grace")
        .unwrap();
    let read = tokio::task::spawn_blocking(move || {
        let mut idle = idle;
        let mut buf = [0u8; 64];
        idle.read(&mut buf)
    })
    .await
    .unwrap();
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "the idle connection is closed: {read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_bounds_stalled_upload() {
    let running = start(false, Duration::from_secs(1)).await;
    let addr = running.addr;
    let stalled = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(
                b"PUT /stalled.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Basic YWxpY2U6YWxpY2Vwdw==\r\n\
                  Content-Length: 1000000\r\n\r\npartial",
            )
            .unwrap();
        stream
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    running.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running.served)
        .await
        .expect("serve returns once the grace has passed")
        .unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    drop(stalled);

    tokio::time::sleep(Duration::from_millis(200)).await;
    let home = running.dir.path().join("home/alice");
    let names: Vec<_> = std::fs::read_dir(&home)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names.is_empty(),
        "the unfinished upload is discarded: {names:?}"
    );
}
