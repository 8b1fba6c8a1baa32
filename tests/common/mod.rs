//! Test harness: starts the built `ferry` binary with a temporary configuration, users and
//! hooks, and gives tests the ports, the users' homes, the log and the hook events.
//!
//! Every server binds 127.0.0.1 on ports chosen by the system and reports them in its JSON
//! log, so tests can run in parallel. The default setup has two users (`alice` with a
//! password and an ed25519 key, `bob` with a password), a post-login hook program that appends
//! one line per event to a file, and all three services enabled.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const ALICE_PASSWORD: &str = "alicepw";
pub const BOB_PASSWORD: &str = "bobpw";

/// The `ferry` binary under test.
pub fn ferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}

/// Argon2 hashes are slow to make; each test binary makes each one once.
pub fn password_hash(password: &str) -> String {
    static CACHE: OnceLock<Mutex<BTreeMap<String, String>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(BTreeMap::new()));
    let mut cache = cache.lock().unwrap();
    cache
        .entry(password.to_owned())
        .or_insert_with(|| ferry_users::hash_password(password).unwrap())
        .clone()
}

/// One login event as a hook program or HTTP receiver saw it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Event {
    pub user: String,
    pub ip: String,
    pub method: String,
    pub status: String,
    pub protocol: String,
}

impl Event {
    pub fn new(user: &str, method: &str, status: u8, protocol: &str) -> Event {
        Event {
            user: user.into(),
            ip: "127.0.0.1".into(),
            method: method.into(),
            status: status.to_string(),
            protocol: protocol.into(),
        }
    }
}

/// How the post-login hook is wired in a test server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginHook {
    None,
    /// A shell script that appends the `SFTPGO_LOGIND_*` variables to `events.log`.
    Program,
    /// An HTTP receiver inside the test process, at `/login`.
    Http,
    /// A shell script with this body; `{root}` in it is replaced by the server's folder.
    Script(String),
}

/// A test server's configuration, built up before `start`.
pub struct Setup {
    sections: BTreeMap<String, Vec<String>>,
    users: Vec<String>,
    pub login_hook: LoginHook,
    pub ssh: bool,
    pub ftp: bool,
    pub dav: bool,
    /// Log in the human format instead of JSON lines.
    pub human_logs: bool,
    /// Extra environment variables for the server process.
    pub envs: Vec<(String, String)>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            sections: BTreeMap::new(),
            users: Vec::new(),
            login_hook: LoginHook::Program,
            ssh: true,
            ftp: true,
            dav: true,
            human_logs: false,
            envs: Vec::new(),
        }
    }
}

impl Setup {
    /// Adds `line` (TOML such as `max_auth_tries = 2`) to `[section]`.
    pub fn set(mut self, section: &str, line: &str) -> Setup {
        self.sections
            .entry(section.to_owned())
            .or_default()
            .push(line.to_owned());
        self
    }

    /// Adds a `[[users]]` entry; `fields` are TOML lines. A relative `home_dir` is taken
    /// from the test directory.
    pub fn user(mut self, fields: &str) -> Setup {
        self.users.push(fields.to_owned());
        self
    }

    pub fn hook(mut self, hook: LoginHook) -> Setup {
        self.login_hook = hook;
        self
    }

    /// Enables only the named services ("ssh", "ftp", "dav").
    pub fn only(mut self, services: &[&str]) -> Setup {
        self.ssh = services.contains(&"ssh");
        self.ftp = services.contains(&"ftp");
        self.dav = services.contains(&"dav");
        self
    }

    /// Sets an environment variable for the server process.
    pub fn env(mut self, key: &str, value: &str) -> Setup {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Makes the server log in its human format; `log_messages` then finds nothing.
    pub fn human_logs(mut self) -> Setup {
        self.human_logs = true;
        self
    }

    pub fn start(self) -> TestServer {
        TestServer::start(self)
    }
}

/// A running `ferry serve`, stopped when dropped.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    pub ssh_addr: Option<SocketAddr>,
    pub ftp_addr: Option<SocketAddr>,
    pub dav_addr: Option<SocketAddr>,
    pub receiver: Option<HttpReceiver>,
    pub config_path: PathBuf,
}

impl TestServer {
    fn start(setup: Setup) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let client_key = root.join("id_ed25519");
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "alice@test", "-f"])
            .arg(&client_key)
            .status()
            .expect("ssh-keygen must be installed");
        assert!(status.success(), "ssh-keygen failed");
        let public_key = std::fs::read_to_string(root.join("id_ed25519.pub")).unwrap();

        let mut users = format!(
            "[[users]]\nusername = \"alice\"\npassword = \"{}\"\npublic_keys = [\"{}\"]\nhome_dir = \"home/alice\"\n\n\
             [[users]]\nusername = \"bob\"\npassword = \"{}\"\nhome_dir = \"home/bob\"\n\n",
            password_hash(ALICE_PASSWORD),
            public_key.trim(),
            password_hash(BOB_PASSWORD),
        );
        for fields in &setup.users {
            users.push_str("[[users]]\n");
            users.push_str(fields);
            users.push_str("\n\n");
        }
        std::fs::write(root.join("users.toml"), users).unwrap();

        let mut sections = setup.sections.clone();
        let mut add = |section: &str, line: String| {
            sections
                .entry(section.to_owned())
                .or_default()
                .insert(0, line)
        };
        add("data_provider", "users_file = \"users.toml\"".into());
        add("common", "state_dir = \"state\"".into());
        add("common", "shutdown_timeout = 5".into());
        let receiver = match setup.login_hook.clone() {
            LoginHook::None => None,
            LoginHook::Program => {
                let script = write_script(
                    &root,
                    "login-hook.sh",
                    &format!(
                        "printf '%s\\t%s\\t%s\\t%s\\t%s\\n' \"$SFTPGO_LOGIND_USER\" \"$SFTPGO_LOGIND_IP\" \
                         \"$SFTPGO_LOGIND_METHOD\" \"$SFTPGO_LOGIND_STATUS\" \"$SFTPGO_LOGIND_PROTOCOL\" >> {}",
                        root.join("events.log").display()
                    ),
                );
                add(
                    "common",
                    format!("post_login_hook = \"{}\"", script.display()),
                );
                None
            }
            LoginHook::Script(body) => {
                let body = body.replace("{root}", &root.display().to_string());
                let script = write_script(&root, "login-hook.sh", &body);
                add(
                    "common",
                    format!("post_login_hook = \"{}\"", script.display()),
                );
                None
            }
            LoginHook::Http => {
                let receiver = HttpReceiver::start();
                add(
                    "common",
                    format!("post_login_hook = \"{}/login\"", receiver.url()),
                );
                Some(receiver)
            }
        };
        let passive = free_port_range(20);
        add(
            "sftpd",
            format!(
                "bindings = [{}]",
                if setup.ssh {
                    "{ address = \"127.0.0.1\", port = 0 }"
                } else {
                    ""
                }
            ),
        );
        add(
            "ftpd",
            format!(
                "bindings = [{}]",
                if setup.ftp {
                    "{ address = \"127.0.0.1\", port = 0 }"
                } else {
                    ""
                }
            ),
        );
        add(
            "ftpd",
            format!(
                "passive_port_range = {{ start = {}, end = {} }}",
                passive.0, passive.1
            ),
        );
        add(
            "webdavd",
            format!(
                "bindings = [{}]",
                if setup.dav {
                    "{ address = \"127.0.0.1\", port = 0 }"
                } else {
                    ""
                }
            ),
        );

        let mut config = String::new();
        for (section, lines) in &sections {
            config.push_str(&format!("[{section}]\n"));
            for line in dedupe_keys(lines) {
                config.push_str(&line);
                config.push('\n');
            }
            config.push('\n');
        }
        let config_path = root.join("ferry.toml");
        std::fs::write(&config_path, &config).unwrap();

        let mut child = Command::new(ferry_bin())
            .args([
                "--log-format",
                if setup.human_logs { "human" } else { "json" },
                "--log-level",
                "info,libunftp=warn,ferry=debug,ferry_ssh=debug,ferry_ftp=debug,ferry_dav=debug",
            ])
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .envs(setup.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });

        let mut server = TestServer {
            dir,
            child: Some(child),
            log,
            ssh_addr: None,
            ftp_addr: None,
            dav_addr: None,
            receiver,
            config_path,
        };
        server.wait_for_listeners(&setup);
        server
    }

    fn wait_for_listeners(&mut self, setup: &Setup) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for line in self.log_lines() {
                let Some(value) = parse_listening_line(&line) else {
                    continue;
                };
                if value["message"] != "listening" {
                    continue;
                }
                let addr: Option<SocketAddr> =
                    value["address"].as_str().and_then(|a| a.parse().ok());
                match value["protocol"].as_str() {
                    Some("SSH") => self.ssh_addr = addr,
                    Some("FTP") => self.ftp_addr = addr,
                    Some("DAV") => self.dav_addr = addr,
                    _ => {}
                }
            }
            let ready = (!setup.ssh || self.ssh_addr.is_some())
                && (!setup.ftp || self.ftp_addr.is_some())
                && (!setup.dav || self.dav_addr.is_some());
            let has_started = self.log_lines().iter().any(|l| l.contains("ferry started"));
            if ready && has_started {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "ferry exited with {status} before listening:\n{}",
                    self.log_lines().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "ferry did not start in time:\n{}",
                self.log_lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn ssh_port(&self) -> u16 {
        self.ssh_addr.expect("SSH not enabled").port()
    }

    pub fn ftp_port(&self) -> u16 {
        self.ftp_addr.expect("FTP not enabled").port()
    }

    pub fn dav_port(&self) -> u16 {
        self.dav_addr.expect("WebDAV not enabled").port()
    }

    pub fn dav_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.dav_port())
    }

    /// The folder of the config file, users file and client key.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn home(&self, user: &str) -> PathBuf {
        self.dir.path().join("home").join(user)
    }

    /// alice's private key, authorized for her.
    pub fn alice_key(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    /// Every log line so far (JSON objects).
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Log lines whose `message` is `message`, parsed.
    pub fn log_messages(&self, message: &str) -> Vec<serde_json::Value> {
        self.log_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == message)
            .collect()
    }

    /// Events the hook program wrote so far.
    pub fn program_events(&self) -> Vec<Event> {
        let text = std::fs::read_to_string(self.dir.path().join("events.log")).unwrap_or_default();
        text.lines()
            .map(|line| {
                let f: Vec<&str> = line.split('\t').collect();
                assert_eq!(f.len(), 5, "malformed hook line {line:?}");
                Event {
                    user: f[0].into(),
                    ip: f[1].into(),
                    method: f[2].into(),
                    status: f[3].into(),
                    protocol: f[4].into(),
                }
            })
            .collect()
    }

    /// Events so far from whichever hook is configured.
    pub fn events(&self) -> Vec<Event> {
        match &self.receiver {
            Some(receiver) => receiver.login_events(),
            None => self.program_events(),
        }
    }

    /// Waits until at least `count` events arrived (hooks run in the background), then
    /// waits `settle` more to catch any extra event, and returns them all sorted.
    pub fn wait_events(&self, count: usize, settle: Duration) -> Vec<Event> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.events().len() < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(settle);
        let mut events = self.events();
        events.sort();
        events
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking()
            && let Ok(log) = self.log.lock()
        {
            eprintln!("server log:\n{}", log.join("\n"));
        }
    }
}

/// Reads a log line in either format as JSON; a human-format `listening` line becomes an
/// object with `message`, `protocol` and `address`.
fn parse_listening_line(line: &str) -> Option<serde_json::Value> {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
        return Some(value);
    }
    if !line.contains(" listening ") {
        return None;
    }
    let field = |name: &str| {
        let start = line.find(&format!("{name}="))? + name.len() + 1;
        let rest = &line[start..];
        let end = rest.find(' ').unwrap_or(rest.len());
        Some(rest[..end].trim_matches('"').to_owned())
    };
    Some(serde_json::json!({
        "message": "listening",
        "protocol": field("protocol")?,
        "address": field("address")?,
    }))
}

/// Keeps only the last line for each key, so tests can override harness defaults.
fn dedupe_keys(lines: &[String]) -> Vec<String> {
    let key = |line: &str| line.split('=').next().unwrap_or("").trim().to_owned();
    let mut out: Vec<String> = Vec::new();
    for line in lines {
        let k = key(line);
        out.retain(|existing| key(existing) != k);
        out.push(line.clone());
    }
    out
}

/// Writes an executable shell script into `dir`.
pub fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Finds `count` consecutive free ports for an FTP passive range. Another process may take
/// one meanwhile; the FTP server then tries another port of the range.
pub fn free_port_range(count: u16) -> (u16, u16) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = u64::from(std::process::id()) ^ now.as_nanos() as u64;
    let mut start = 30000 + ((seed.wrapping_mul(2654435761) >> 7) % 20000) as u16;
    loop {
        let free = (start..start + count).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return (start, start + count - 1);
        }
        start = 30000 + (start - 30000 + 97) % 20000;
    }
}

/// Runs a command with stdin from `input`, killing it after `timeout`.
pub fn run_with_input(mut command: Command, input: &[u8], timeout: Duration) -> Output {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = wait_with_timeout(child, timeout);
    let _ = writer.join();
    output
}

/// Runs a command with no stdin, killing it after `timeout`.
pub fn run(mut command: Command, timeout: Duration) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    wait_with_timeout(child, timeout)
}

fn wait_with_timeout(mut child: Child, timeout: Duration) -> Output {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// OpenSSH client options for tests: no host key prompts, no config files, no agent.
pub fn ssh_options(port: u16) -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "IdentityAgent=none",
        "-o",
        "ConnectTimeout=10",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["-o".to_string(), format!("Port={port}")])
    .collect()
}

/// Runs `sftp -b -` with alice's key and the given batch commands.
pub fn sftp_batch_with_key(server: &TestServer, user: &str, key: &Path, batch: &str) -> Output {
    let mut command = Command::new("sftp");
    command
        .args(ssh_options(server.ssh_port()))
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
        .arg(key)
        .args(["-b", "-"])
        .arg(format!("{user}@127.0.0.1"));
    run_with_input(command, batch.as_bytes(), Duration::from_secs(120))
}

/// Runs `sftp -b -` logging in with a password through sshpass.
pub fn sftp_batch_with_password(
    server: &TestServer,
    user: &str,
    password: &str,
    batch: &str,
) -> Output {
    // sftp's -b reads the batch from stdin, so the password goes through sshpass's -e.
    let batch_file = server.root().join(format!("batch-{}.txt", rand_suffix()));
    std::fs::write(&batch_file, batch).unwrap();
    let mut command = Command::new("sshpass");
    command
        .env("SSHPASS", password)
        .args(["-e", "sftp"])
        .args(ssh_options(server.ssh_port()))
        .args([
            "-o",
            // sftp -b turns BatchMode on, which would forbid the password prompt.
            "BatchMode=no",
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-b",
        ])
        .arg(&batch_file)
        .arg(format!("{user}@127.0.0.1"));
    run(command, Duration::from_secs(120))
}

pub fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes `size` bytes of pseudo-random data to `path` without holding them in memory.
pub fn write_random_file(path: &Path, size: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state: u64 = 0x9e3779b97f4a7c15 ^ size;
    let mut block = vec![0u8; 1 << 16];
    let mut left = size;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bytes = state.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    file.flush().unwrap();
}

/// SHA-256 of a file, computed by `sha256sum`.
pub fn sha256(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(
        output.status.success(),
        "sha256sum failed on {}",
        path.display()
    );
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// A minimal HTTP/1.1 server that records requests and answers with a chosen status.
pub struct HttpReceiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    status: Arc<Mutex<u16>>,
    delay: Arc<Mutex<Duration>>,
}

/// One recorded request.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl HttpReceiver {
    pub fn start() -> HttpReceiver {
        HttpReceiver::start_on(0)
    }

    /// Starts the receiver on a given port (0 picks a free one).
    pub fn start_on(port: u16) -> HttpReceiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(Mutex::new(200));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let (r, s, d) = (
            Arc::clone(&requests),
            Arc::clone(&status),
            Arc::clone(&delay),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (r, s, d) = (Arc::clone(&r), Arc::clone(&s), Arc::clone(&d));
                std::thread::spawn(move || serve_http(stream, &r, &s, &d));
            }
        });
        HttpReceiver {
            addr,
            requests,
            status,
            delay,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_status(&self, status: u16) {
        *self.status.lock().unwrap() = status;
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Login events from every POST body received, retries included.
    pub fn login_events(&self) -> Vec<Event> {
        self.requests()
            .iter()
            .filter(|r| r.method == "POST")
            .map(|r| {
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                Event {
                    user: v["username"].as_str().unwrap().into(),
                    ip: v["ip"].as_str().unwrap().into(),
                    method: v["login_method"].as_str().unwrap().into(),
                    status: v["status"]
                        .as_u64()
                        .expect("status must be a JSON number")
                        .to_string(),
                    protocol: v["protocol"].as_str().unwrap().into(),
                }
            })
            .collect()
    }
}

fn serve_http(
    stream: TcpStream,
    requests: &Mutex<Vec<Request>>,
    status: &Mutex<u16>,
    delay: &Mutex<Duration>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let target = parts.next().unwrap_or("").to_owned();
        let mut headers = Vec::new();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let wait = *delay.lock().unwrap();
        std::thread::sleep(wait);
        let code = *status.lock().unwrap();
        requests.lock().unwrap().push(Request {
            method,
            target,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        let reply = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n");
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}
