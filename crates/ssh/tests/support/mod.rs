//! Runs the SSH server in-process on 127.0.0.1 with temporary users, keys and a post-login
//! hook program, for tests that drive real clients (OpenSSH, sshpass, paramiko) against it.
//!
//! Users: `alice` (password and an ed25519 key), `bob` (`publickey+password`), `carol`
//! (`publickey+keyboard-interactive`), `dave` (disabled, with a password and alice's key),
//! `erin` (password only). Every password is `<user>pw`.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ferry_hooks::{DefenderConfig, HookTarget, Hooks, HooksConfig, HttpClientConfig};
use ferry_ssh::{Binding, Config, Server};
use ferry_users::{Logins, UserStore};
use ferry_vfs::UploadMode;
use tokio_util::sync::CancellationToken;

/// One login event as the hook program received it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Event {
    pub user: String,
    pub ip: String,
    pub method: String,
    pub status: String,
    pub protocol: String,
}

/// Returns an event from 127.0.0.1 over SSH.
pub fn event(user: &str, method: &str, status: u8) -> Event {
    Event {
        user: user.into(),
        ip: "127.0.0.1".into(),
        method: method.into(),
        status: status.to_string(),
        protocol: "SSH".into(),
    }
}

/// Client keys made once per test binary: `id_ed25519` (alice's), `other_ed25519` (nobody's)
/// and `id_rsa` (alice's, RSA 3072).
pub fn client_keys() -> &'static Path {
    static KEYS: OnceLock<tempfile::TempDir> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        for (name, kind, bits) in [
            ("id_ed25519", "ed25519", None),
            ("other_ed25519", "ed25519", None),
            ("id_rsa", "rsa", Some("3072")),
            ("host_ed25519", "ed25519", None),
        ] {
            let mut command = Command::new("ssh-keygen");
            command.args(["-q", "-t", kind, "-N", "", "-C", name, "-f"]);
            command.arg(dir.path().join(name));
            if let Some(bits) = bits {
                command.args(["-b", bits]);
            }
            assert!(command.status().unwrap().success(), "ssh-keygen {name}");
        }
        dir
    })
    .path()
}

pub fn key(name: &str) -> PathBuf {
    client_keys().join(name)
}

fn public_key(name: &str) -> String {
    std::fs::read_to_string(key(&format!("{name}.pub")))
        .unwrap()
        .trim()
        .to_owned()
}

/// Argon2 hashes are slow to make; each test binary makes each one once.
fn password_hash(password: &str) -> String {
    static CACHE: OnceLock<std::sync::Mutex<std::collections::BTreeMap<String, String>>> =
        OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    cache
        .lock()
        .unwrap()
        .entry(password.to_owned())
        .or_insert_with(|| ferry_users::hash_password(password).unwrap())
        .clone()
}

/// How a test server is set up.
pub struct Options {
    pub config: Config,
    /// A post-connect hook that rejects every connection.
    pub reject_connections: bool,
    /// Generate host keys under the state directory instead of using a prepared key.
    pub generated_host_keys: bool,
    pub grace: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: Config {
                bindings: vec![Binding {
                    address: "127.0.0.1".into(),
                    ..Binding::default()
                }],
                ..Config::default()
            },
            reject_connections: false,
            generated_host_keys: false,
            grace: Duration::from_secs(5),
        }
    }
}

/// A server running on its own runtime; shut down when dropped.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: CancellationToken,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::with(Options::default())
    }

    pub fn with(options: Options) -> TestServer {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let users = format!(
            "[[users]]\nusername = \"alice\"\npassword = \"{alice}\"\npublic_keys = [\"{ed}\", \"{rsa}\"]\nhome_dir = \"home/alice\"\n\n\
             [[users]]\nusername = \"bob\"\npassword = \"{bob}\"\npublic_keys = [\"{ed}\"]\nhome_dir = \"home/bob\"\nlogin_methods = [\"publickey+password\"]\n\n\
             [[users]]\nusername = \"carol\"\npassword = \"{carol}\"\npublic_keys = [\"{ed}\"]\nhome_dir = \"home/carol\"\nlogin_methods = [\"publickey+keyboard-interactive\"]\n\n\
             [[users]]\nusername = \"dave\"\npassword = \"{dave}\"\npublic_keys = [\"{ed}\"]\nhome_dir = \"home/dave\"\nstatus = \"disabled\"\n\n\
             [[users]]\nusername = \"erin\"\npassword = \"{erin}\"\nhome_dir = \"home/erin\"\nlogin_methods = [\"password\"]\n",
            alice = password_hash("alicepw"),
            bob = password_hash("bobpw"),
            carol = password_hash("carolpw"),
            dave = password_hash("davepw"),
            erin = password_hash("erinpw"),
            ed = public_key("id_ed25519"),
            rsa = public_key("id_rsa"),
        );
        std::fs::write(root.join("users.toml"), users).unwrap();
        let login_hook = write_script(
            &root,
            "login-hook.sh",
            &format!(
                "printf '%s\\t%s\\t%s\\t%s\\t%s\\n' \"$SFTPGO_LOGIND_USER\" \"$SFTPGO_LOGIND_IP\" \
                 \"$SFTPGO_LOGIND_METHOD\" \"$SFTPGO_LOGIND_STATUS\" \"$SFTPGO_LOGIND_PROTOCOL\" >> {}",
                root.join("events.log").display()
            ),
        );
        let connect_hook = write_script(&root, "connect-hook.sh", "exit 1");

        let mut config = options.config;
        if !options.generated_host_keys {
            config.host_keys = vec![key("host_ed25519")];
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let shutdown = CancellationToken::new();
        let (server, port) = runtime.block_on(async {
            let hooks = Hooks::new(
                HooksConfig {
                    post_login_hook: Some(HookTarget::Program(login_hook)),
                    post_connect_hook: options
                        .reject_connections
                        .then_some(HookTarget::Program(connect_hook)),
                    defender: DefenderConfig {
                        enabled: false,
                        ..DefenderConfig::default()
                    },
                    ..HooksConfig::default()
                },
                &HttpClientConfig::default(),
            )
            .unwrap();
            let store = Arc::new(UserStore::load(&root.join("users.toml")).unwrap());
            let logins = Logins::new(store, hooks, UploadMode::Atomic);
            let server = Server::bind(config, logins, &root.join("state"))
                .await
                .unwrap();
            let port = server.local_addrs()[0].port();
            (server, port)
        });
        let served = runtime.spawn(server.serve(shutdown.clone(), options.grace));
        TestServer {
            dir,
            port,
            runtime: Some(runtime),
            shutdown,
            served: Some(served),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn home(&self, user: &str) -> PathBuf {
        let home = self.dir.path().join("home").join(user);
        std::fs::create_dir_all(&home).unwrap();
        home
    }

    /// Events the hook program wrote so far.
    pub fn events_now(&self) -> Vec<Event> {
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

    /// Waits for at least `count` events, then `settle` more for any extra one, and returns
    /// them all sorted.
    pub fn events(&self, count: usize, settle: Duration) -> Vec<Event> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.events_now().len() < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(settle);
        let mut events = self.events_now();
        events.sort();
        events
    }

    /// Starts the shutdown and waits for `serve` to return; returns how long that took.
    pub fn shutdown(&mut self) -> Duration {
        let started = Instant::now();
        self.shutdown.cancel();
        if let (Some(runtime), Some(served)) = (&self.runtime, self.served.take()) {
            runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(60), served).await })
                .expect("serve did not return after shutdown")
                .unwrap();
        }
        started.elapsed()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// Sends the server's logs to the test output when `FERRY_TEST_LOG` is set, for example
/// to `ferry_ssh=debug`.
fn init_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        if let Ok(filter) = std::env::var("FERRY_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

pub fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// OpenSSH client options: no host key checks, no config files, no agent.
pub fn ssh_options(port: u16) -> Vec<String> {
    let mut options: Vec<String> = [
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
        "-o",
        "NumberOfPasswordPrompts=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    options.extend(["-o".into(), format!("Port={port}")]);
    options
}

/// Builds an OpenSSH `ssh` command for one login path.
pub struct Ssh {
    port: u16,
    user: String,
    methods: String,
    keys: Vec<PathBuf>,
    password: Option<String>,
    askpass: Option<(PathBuf, String)>,
}

/// Starts an `ssh` command that tries `methods` (OpenSSH's `PreferredAuthentications`).
pub fn ssh(port: u16, user: &str, methods: &str) -> Ssh {
    Ssh {
        port,
        user: user.into(),
        methods: methods.into(),
        keys: Vec::new(),
        password: None,
        askpass: None,
    }
}

impl Ssh {
    /// Offers this private key (and only the keys given this way).
    pub fn key(mut self, path: &Path) -> Ssh {
        self.keys.push(path.to_path_buf());
        self
    }

    /// Answers the password prompt through sshpass.
    pub fn password(mut self, password: &str) -> Ssh {
        self.password = Some(password.into());
        self
    }

    /// Answers keyboard-interactive prompts through an askpass script, which also appends
    /// each prompt to `prompts.log` under `dir`.
    pub fn askpass(mut self, dir: &Path, answer: &str) -> Ssh {
        self.askpass = Some((dir.to_path_buf(), answer.into()));
        self
    }

    /// Returns the command, which runs `remote` after logging in.
    pub fn command(self, remote: &[&str]) -> Command {
        let mut command = match &self.password {
            Some(password) => {
                let mut command = Command::new("sshpass");
                command.env("SSHPASS", password).args(["-e", "ssh"]);
                command
            }
            None => Command::new("ssh"),
        };
        if let Some((dir, answer)) = &self.askpass {
            let script = write_script(
                dir,
                &format!("askpass-{}.sh", unique()),
                &format!(
                    "printf '%s\\n' \"$1\" >> {}\nprintf '%s\\n' '{answer}'",
                    dir.join("prompts.log").display()
                ),
            );
            command
                .env("SSH_ASKPASS", script)
                .env("SSH_ASKPASS_REQUIRE", "force");
        }
        command
            .args(ssh_options(self.port))
            .args(["-o", &format!("PreferredAuthentications={}", self.methods)]);
        if self.password.is_none() && self.askpass.is_none() {
            command.args(["-o", "BatchMode=yes"]);
        }
        if self.keys.is_empty() {
            command.args(["-o", "PubkeyAuthentication=no"]);
        } else {
            command.args(["-o", "IdentitiesOnly=yes"]);
            for key in &self.keys {
                command.arg("-i").arg(key);
            }
        }
        command.arg(format!("{}@127.0.0.1", self.user)).args(remote);
        command
    }
}

pub fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
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

/// Python code run before every test script. paramiko's `AuthOnlyHandler` (used by
/// `ServiceRequestingTransport`) sends a request before it creates the event that the reply
/// sets, so a fast reply is lost and the client waits for its auth timeout. This version
/// creates the event first.
const PARAMIKO_PRELUDE: &str = r#"
import threading
import paramiko
from paramiko.auth_handler import AuthOnlyHandler
from paramiko.common import cMSG_USERAUTH_REQUEST

def _send_auth_request(self, username, method, finish_message=None):
    self.auth_method = method
    self.username = username
    self.auth_event = threading.Event()
    message = paramiko.Message()
    message.add_byte(cMSG_USERAUTH_REQUEST)
    message.add_string(username)
    message.add_string("ssh-connection")
    message.add_string(method)
    if finish_message is not None:
        finish_message(message)
    with self.transport.lock:
        self.transport._send_message(message)
    return self.wait_for_response(self.auth_event)

AuthOnlyHandler.send_auth_request = _send_auth_request
"#;

/// Runs a Python script (with paramiko available) with `args`, and returns its output.
pub fn python(dir: &Path, script: &str, args: &[&str]) -> Output {
    let path = dir.join(format!("script-{}.py", unique()));
    std::fs::write(&path, format!("{PARAMIKO_PRELUDE}\n{script}")).unwrap();
    let mut command = Command::new("python3");
    command.arg(&path).args(args);
    run(command, Duration::from_secs(60))
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
