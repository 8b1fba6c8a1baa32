//! The post-login webhook over HTTPS with a private CA and a client certificate (mutual TLS),
//! extra headers by URL prefix, and proxy variables that must not apply unless configured.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const RECEIVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/clients/https_receiver.py"
);

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Makes a CA, a server certificate for 127.0.0.1 and a client certificate, all signed by
/// the CA, in `dir`.
fn make_pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Ferry Test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    for (name, cn, ext) in [
        (
            "server",
            "localhost",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "ferry-hooks", "extendedKeyUsage=clientAuth\n"),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }
}

struct Receiver {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Receiver {
    fn start(dir: &Path) -> Receiver {
        let log = dir.join("requests.log");
        let portfile = dir.join("port");
        let child = Command::new("python3")
            .arg(RECEIVER)
            .args([
                dir.join("server.pem"),
                dir.join("server.key"),
                dir.join("ca.pem"),
                log.clone(),
                portfile.clone(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&portfile)
                .ok()
                .and_then(|p| p.trim().parse().ok())
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "the HTTPS receiver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Receiver { child, port, log }
    }

    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn wait_requests(&self, count: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.requests().len() < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.requests()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn key_login(server: &TestServer) {
    let output = sftp_batch_with_key(server, "alice", &server.alice_key(), "pwd\n");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn mutual_tls_delivery() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let receiver = Receiver::start(pki.path());
    let url = format!("https://127.0.0.1:{}/events", receiver.port);
    let server = Setup::default()
        .only(&["ssh"])
        .hook(LoginHook::None)
        .set("common", &format!("post_login_hook = \"{url}\""))
        .set("httpclient", &format!("ca_certificates = [\"{}\"]", pki.path().join("ca.pem").display()))
        .set(
            "httpclient",
            &format!(
                "certificates = [{{ cert = \"{}\", key = \"{}\" }}]",
                pki.path().join("client.pem").display(),
                pki.path().join("client.key").display()
            ),
        )
        .set(
            "httpclient",
            &format!(
                "headers = [{{ key = \"X-Token\", value = \"s3cret\", url = \"https://127.0.0.1:{}/\" }}, \
                 {{ key = \"X-Other\", value = \"no\", url = \"https://example.invalid/\" }}]",
                receiver.port
            ),
        )
        .start();
    key_login(&server);
    let requests = receiver.wait_requests(1);
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request["method"], "POST");
    assert_eq!(request["path"], "/events");
    assert_eq!(request["client_cn"], "ferry-hooks");
    assert_eq!(request["headers"]["x-token"], "s3cret");
    assert!(
        request["headers"]["x-other"].is_null(),
        "a header for another URL prefix was sent"
    );
    let body: serde_json::Value = serde_json::from_str(request["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["username"], "alice");
    assert_eq!(body["status"], 1);
}

#[test]
fn unknown_ca_logged_login_kept() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let receiver = Receiver::start(pki.path());
    let server = Setup::default()
        .only(&["ssh"])
        .hook(LoginHook::None)
        .set(
            "common",
            &format!(
                "post_login_hook = \"https://127.0.0.1:{}/events\"",
                receiver.port
            ),
        )
        .set("httpclient", "retry_max = 0")
        .start();
    key_login(&server);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.log_messages("post-login hook failed").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let failures = server.log_messages("post-login hook failed");
    assert_eq!(failures.len(), 1, "{:?}", server.log_lines());
    assert_eq!(failures[0]["level"], "WARN");
    assert_eq!(failures[0]["user"], "alice");
    assert!(receiver.requests().is_empty());
}

#[test]
fn unreadable_ca_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.toml"), "").unwrap();
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        "[httpclient]\nca_certificates = [\"missing-ca.pem\"]\n[sftpd]\nbindings = []\n[ftpd]\nbindings = []\n\
         [webdavd]\nbindings = []\n[common]\nstate_dir = \"state\"\n",
    )
    .unwrap();
    let mut command = Command::new(ferry_bin());
    command.args(["serve", "--config"]).arg(&config);
    let output = run(command, Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("missing-ca.pem"), "{stderr}");
}

#[test]
fn proxy_environment_ignored_by_default() {
    // An HTTP receiver that answers; a proxy variable that points at a closed port. If the
    // client used the proxy the event would never arrive.
    let server = Setup::default()
        .only(&["ssh"])
        .hook(LoginHook::Http)
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("http_proxy", "http://127.0.0.1:9")
        .env("ALL_PROXY", "http://127.0.0.1:9")
        .start();
    key_login(&server);
    let events = server.wait_events(1, Duration::from_millis(500));
    assert_eq!(events, vec![Event::new("alice", "publickey", 1, "SSH")]);
}

#[test]
fn receiver_down_then_up_delivers() {
    // The first attempt finds nothing listening; the receiver comes up before the retry.
    let placeholder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = placeholder.local_addr().unwrap().port();
    drop(placeholder);
    let server = Setup::default()
        .only(&["ssh"])
        .hook(LoginHook::None)
        .set(
            "common",
            &format!("post_login_hook = \"http://127.0.0.1:{port}/login\""),
        )
        .set("httpclient", "retry_max = 3")
        .set("httpclient", "retry_wait_min = 2")
        .set("httpclient", "retry_wait_max = 2")
        .start();
    key_login(&server);
    let deadline = Instant::now() + Duration::from_secs(20);
    while server
        .log_messages("post-login hook request failed; retrying")
        .is_empty()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !server
            .log_messages("post-login hook request failed; retrying")
            .is_empty()
    );
    let receiver = HttpReceiver::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.login_events().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        receiver.login_events(),
        vec![Event::new("alice", "publickey", 1, "SSH")]
    );
}
