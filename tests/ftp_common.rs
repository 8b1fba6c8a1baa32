//! Helpers shared by the FTP end-to-end tests: a test certificate, a control connection
//! driven line by line, and runners for curl, lftp and Python's ftplib that fail with the
//! client's output.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::{Setup, TestServer, run};

/// Time a single client run may take before it is killed.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// A self-signed certificate for `localhost` and 127.0.0.1, made with openssl.
pub struct TestCertificate {
    _dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCertificate {
    pub fn new() -> TestCertificate {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let output = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl must be installed");
        assert_success(&output, "openssl req");
        TestCertificate {
            _dir: dir,
            cert,
            key,
        }
    }

    /// Adds the certificate to the `[ftpd]` section of `setup`.
    pub fn configure(&self, setup: Setup) -> Setup {
        setup
            .set(
                "ftpd",
                &format!("certificate_file = \"{}\"", self.cert.display()),
            )
            .set(
                "ftpd",
                &format!("certificate_key_file = \"{}\"", self.key.display()),
            )
    }
}

/// Fails the test with the client's output unless it exited with status 0.
pub fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs a Python script with `args`, which it reads from `sys.argv[1:]`.
pub fn python(script: &str, args: &[String]) -> Output {
    let script = if script.contains("FTP_TLS") {
        format!("{AUTH_TLS_RETRY}{script}")
    } else {
        script.to_owned()
    };
    let mut command = Command::new("python3");
    command.arg("-c").arg(script).args(args);
    run(command, CLIENT_TIMEOUT)
}

/// Python code that makes `ftplib.FTP_TLS` try `AUTH TLS` again on a new connection, up to
/// four more times, when the server read the TLS ClientHello as a command.
///
/// NOTE: libunftp 0.24 switches the control connection to TLS on a message from a task it
/// spawns while it replies to `AUTH TLS`, and picks at random when that message and the
/// client's ClientHello are both ready. The ClientHello then ends the connection as a
/// command line that is not UTF-8. A loaded machine hits this often enough to fail tests.
const AUTH_TLS_RETRY: &str = r#"
import ftplib as _ftplib, ssl as _ssl, time as _time

class _RetryingFTP_TLS(_ftplib.FTP_TLS):
    def auth(self):
        for _ in range(4):
            try:
                return super().auth()
            except _ssl.SSLError as error:
                if 'WRONG_VERSION_NUMBER' not in str(error):
                    raise
            self.close()
            _time.sleep(0.2)
            self.connect(self.host, self.port, self.timeout)
        return super().auth()

_ftplib.FTP_TLS = _RetryingFTP_TLS
"#;

/// Runs curl with `args`, silent except for errors, retrying a lost FTPS handshake as
/// [`retry_lost_handshake`] does.
pub fn curl(args: &[String]) -> Output {
    retry_lost_handshake("wrong version number", || {
        let mut command = Command::new("curl");
        command.args(["-sS", "--max-time", "100"]).args(args);
        run(command, CLIENT_TIMEOUT)
    })
}

/// Runs `attempt`, and runs it again up to four times while its stderr contains `marker`,
/// the client's message for a TLS handshake that failed because the server read the
/// ClientHello as a command. [`AUTH_TLS_RETRY`] explains why that happens.
pub fn retry_lost_handshake(marker: &str, attempt: impl Fn() -> Output) -> Output {
    let mut output = attempt();
    for _ in 0..4 {
        if !String::from_utf8_lossy(&output.stderr).contains(marker) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        output = attempt();
    }
    output
}

/// Runs lftp against `port` as alice with `commands`, failing on the first error instead
/// of retrying.
///
/// A `NOOP` logs in before `commands` run, and a run whose handshake the server lost there is
/// repeated by [`retry_lost_handshake`]. A `mirror` that met such a loss itself failed on its
/// target folder after lftp reconnected.
pub fn lftp(port: u16, settings: &str, commands: &str) -> Output {
    let script = format!(
        "set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 20; \
         set net:reconnect-interval-base 1; {settings}; \
         open -u alice,{} -p {port} 127.0.0.1; quote NOOP; {commands}; bye",
        crate::common::ALICE_PASSWORD
    );
    retry_lost_handshake("gnutls_handshake: An unexpected TLS packet", || {
        let mut command = Command::new("lftp");
        command.arg("-c").arg(&script);
        run(command, CLIENT_TIMEOUT)
    })
}

/// Returns the address of every FTP listener, in the order they were logged.
pub fn ftp_listeners(server: &TestServer) -> Vec<SocketAddr> {
    server
        .log_messages("listening")
        .iter()
        .filter(|line| line["protocol"] == "FTP")
        .filter_map(|line| line["address"].as_str()?.parse().ok())
        .collect()
}

/// Starts an FTP-only server whose one listener requires TLS.
pub fn start_tls_required(certificate: &TestCertificate) -> TestServer {
    certificate
        .configure(Setup::default().only(&["ftp"]))
        .set(
            "ftpd",
            "bindings = [{ address = \"127.0.0.1\", port = 0, tls_mode = 1 }]",
        )
        .start()
}

/// Writes the first `len` bytes of `from` to `to`, as an interrupted transfer leaves them.
pub fn write_prefix(from: &Path, to: &Path, len: usize) {
    let bytes = std::fs::read(from).unwrap();
    std::fs::write(to, &bytes[..len]).unwrap();
}

/// Logs alice in on a new control connection and returns it, ready for the next command.
pub fn logged_in_control(port: u16) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut control = BufReader::new(stream);
    let mut expect = |command: Option<String>, code: &str| {
        if let Some(command) = command {
            control
                .get_mut()
                .write_all(format!("{command}\r\n").as_bytes())
                .unwrap();
        }
        let mut line = String::new();
        control.read_line(&mut line).unwrap();
        assert!(line.starts_with(code), "expected {code}, got {line:?}");
    };
    expect(None, "220 ");
    expect(Some("USER alice".into()), "331 ");
    expect(
        Some(format!("PASS {}", crate::common::ALICE_PASSWORD)),
        "230 ",
    );
    control
}

/// Returns the URL of a file in alice's home on the server.
pub fn alice_url(server: &TestServer, path: &str) -> String {
    format!(
        "ftp://alice:{}@127.0.0.1:{}/{path}",
        crate::common::ALICE_PASSWORD,
        server.ftp_port()
    )
}

/// A control connection driven line by line.
pub struct Control {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl Control {
    pub fn connect(port: u16) -> Control {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Control {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// Reads one reply line; empty when the server closed the connection.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        let _ = self.reader.read_line(&mut line);
        line
    }

    /// Asserts that the next reply is 421 and that the server then closed the connection.
    pub fn expect_closed_with_421(&mut self) {
        let reply = self.line();
        assert!(reply.starts_with("421 "), "{reply:?}");
        assert_eq!(self.line(), "", "the connection must be closed after 421");
    }

    pub fn command(&mut self, command: &str) -> String {
        self.writer
            .write_all(format!("{command}\r\n").as_bytes())
            .unwrap();
        self.line()
    }

    /// Returns whether the server closes the connection within `timeout`, sending nothing
    /// more; fails the test if it sends a line.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .unwrap();
        let mut line = String::new();
        let closed = match self.reader.read_line(&mut line) {
            Ok(0) => true,
            Ok(_) => panic!("expected the connection to close, got {line:?}"),
            Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
        };
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        closed
    }

    /// Logs in as alice and returns the reply to PASS.
    pub fn login_alice(&mut self) -> String {
        assert!(self.command("USER alice").starts_with("331 "));
        self.command(&format!("PASS {}", crate::common::ALICE_PASSWORD))
    }
}
