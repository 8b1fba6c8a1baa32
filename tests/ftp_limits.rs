//! Limits that protect the FTP service from hostile clients: failed logins per connection,
//! command line length, passive listeners, and client text in the log.

mod common;
#[path = "ftp_common.rs"]
mod ftp_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use ftp_common::*;

const SETTLE: Duration = Duration::from_millis(1500);

fn ftp_only() -> Setup {
    Setup::default().only(&["ftp"])
}

/// Starts an FTP-only server whose passive port range has `count` ports.
fn with_passive_ports(count: u16) -> TestServer {
    let (low, high) = free_port_range(count);
    ftp_only()
        .set(
            "ftpd",
            &format!("passive_port_range = {{ start = {low}, end = {high} }}"),
        )
        .start()
}

/// Returns the port of a `227` reply to PASV.
fn pasv_port(reply: &str) -> u16 {
    let numbers: Vec<u16> = reply
        .split(['(', ')'])
        .nth(1)
        .unwrap_or_else(|| panic!("not a PASV reply: {reply:?}"))
        .split(',')
        .map(|n| n.trim().parse().unwrap())
        .collect();
    numbers[4] * 256 + numbers[5]
}

/// Waits up to ten seconds for a log line that contains `text`.
fn wait_for_log(server: &TestServer, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = server.log_lines().into_iter().find(|l| l.contains(text)) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no log line contains {text:?}:\n{}",
            server.log_lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connects to `address` from the source address `source`, giving up after `timeout`.
fn connect_from(source: &str, address: SocketAddr, timeout: Duration) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(format!("{source}:0").parse().unwrap())?;
        match tokio::time::timeout(timeout, socket.connect(address)).await {
            Ok(connected) => connected.map(drop),
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    })
}

#[test]
fn failed_logins_close_connection() {
    let server = ftp_only().start();
    let mut control = Control::connect(server.ftp_port());
    assert!(control.line().starts_with("220 "));
    for attempt in 1..=3 {
        assert!(control.command("USER alice").starts_with("331 "));
        let reply = control.command("PASS wrong");
        assert!(reply.starts_with("530 "), "attempt {attempt}: {reply:?}");
    }
    control.expect_closed_with_421();

    let events = server.wait_events(3, SETTLE);
    assert_eq!(events, vec![Event::new("alice", "password", 0, "FTP"); 3]);
}

#[test]
fn login_attempts_setting_applies() {
    let server = ftp_only().set("ftpd", "max_login_attempts = 1").start();
    let mut control = Control::connect(server.ftp_port());
    assert!(control.line().starts_with("220 "));
    assert!(control.command("USER bob").starts_with("331 "));
    assert!(control.command("PASS wrong").starts_with("530 "));
    control.expect_closed_with_421();
}

#[test]
fn login_allowed_within_limit() {
    let server = ftp_only().start();
    let mut control = Control::connect(server.ftp_port());
    assert!(control.line().starts_with("220 "));
    for _ in 0..2 {
        assert!(control.command("USER alice").starts_with("331 "));
        assert!(control.command("PASS wrong").starts_with("530 "));
    }
    let reply = control.login_alice();
    assert!(reply.starts_with("230 "), "{reply:?}");
    assert!(control.command("PWD").starts_with("257 "));
}

#[test]
fn zero_login_attempts_rejected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.toml"), "").unwrap();
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        "[data_provider]\nusers_file = \"users.toml\"\n[sftpd]\nbindings = []\n\
         [webdavd]\nbindings = []\n[ftpd]\nmax_login_attempts = 0\n\
         bindings = [{ address = \"127.0.0.1\", port = 0 }]\n",
    )
    .unwrap();
    let mut command = Command::new(ferry_bin());
    command.arg("check-config").arg("--config").arg(&config);
    let output = run(command, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("ftpd.max_login_attempts = 0: must be at least 1"),
        "{stderr}"
    );
}

#[test]
fn span_records_user_once() {
    let server = ftp_only().human_logs().start();
    let mut control = Control::connect(server.ftp_port());
    assert!(control.line().starts_with("220 "));
    for _ in 0..2 {
        assert!(control.command("USER alice").starts_with("331 "));
        assert!(control.command("PASS wrong").starts_with("530 "));
    }
    assert!(control.login_alice().starts_with("230 "));
    assert!(control.command("QUIT").starts_with("221 "));

    let closed = wait_for_log(&server, "connection closed elapsed_ms=");
    assert_eq!(closed.matches("user=\"alice\"").count(), 1, "{closed}");
    assert_eq!(closed.matches("method=").count(), 1, "{closed}");
    for line in server.log_lines() {
        // A line may name the method in the span and in a field of its own.
        assert!(line.matches("method=").count() <= 2, "{line}");
    }
}

#[test]
fn long_command_line_closes_connection() {
    let server = ftp_only().start();
    let mut control = Control::connect(server.ftp_port());
    assert!(control.line().starts_with("220 "));
    let line = format!("USER {}", "A".repeat(32 * 1024));
    let _ = control.writer.write_all(line.as_bytes());
    let reply = control.line();
    assert!(reply.starts_with("500 "), "{reply:?}");
    assert!(control.closed_within(Duration::from_secs(5)));
    wait_for_log(&server, "command line too long");
}

#[test]
fn long_path_command_accepted() {
    let server = ftp_only().start();
    let mut control = Control::connect(server.ftp_port());
    assert!(control.line().starts_with("220 "));
    assert!(control.login_alice().starts_with("230 "));
    let path = format!("/{}", format!("{}/", "a".repeat(200)).repeat(20));
    assert!(path.len() > 4000);
    let reply = control.command(&format!("MLST {path}"));
    assert!(reply.starts_with("550 "), "{reply:?}");
    assert!(control.command("NOOP").starts_with("200 "));
}

const TLS_LONG_LINE: &str = r#"
import ftplib, socket, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
f = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=cafile))
f.connect('localhost', port, timeout=20)
f.auth()
f.sock.sendall(b'USER ' + b'A' * 65536)
f.sock.settimeout(10)
try:
    data = f.sock.recv(100)
except (ConnectionResetError, ssl.SSLError):
    data = b''
except socket.timeout:
    print('still open')
    sys.exit(0)
print('closed' if data == b'' else 'reply %r' % data)
"#;

#[test]
fn long_line_over_tls_closes_connection() {
    let certificate = TestCertificate::new();
    let server = certificate.configure(ftp_only()).start();
    let args = [
        server.ftp_port().to_string(),
        certificate.cert.display().to_string(),
    ];
    let output = python(TLS_LONG_LINE, &args);
    assert_success(&output, "python ftplib script");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "closed");
}

#[test]
fn pasv_releases_previous_listener() {
    let server = with_passive_ports(2);
    let mut control = Control::connect(server.ftp_port());
    assert!(control.line().starts_with("220 "));
    assert!(control.login_alice().starts_with("230 "));
    let mut reply = String::new();
    for attempt in 1..=6 {
        reply = control.command("PASV");
        assert!(reply.starts_with("227 "), "PASV {attempt}: {reply:?}");
    }

    let mut data = TcpStream::connect(("127.0.0.1", pasv_port(&reply))).unwrap();
    assert!(control.command("NLST").starts_with("150 "));
    let mut listing = Vec::new();
    data.read_to_end(&mut listing).unwrap();
    assert!(control.line().starts_with("226 "));
}

#[test]
fn quit_frees_passive_port() {
    let server = with_passive_ports(1);
    let mut first = Control::connect(server.ftp_port());
    assert!(first.line().starts_with("220 "));
    assert!(first.login_alice().starts_with("230 "));
    let mut second = Control::connect(server.ftp_port());
    assert!(second.line().starts_with("220 "));
    assert!(second.login_alice().starts_with("230 "));

    assert!(first.command("PASV").starts_with("227 "));
    let busy = second.command("PASV");
    assert!(busy.starts_with("425 "), "the only port is taken: {busy:?}");
    // The transfer waits for a data connection that never comes.
    assert!(first.command("STOR y.txt").starts_with("150 "));
    assert!(first.command("QUIT").starts_with("221 "));
    assert!(first.closed_within(Duration::from_secs(2)));

    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let reply = second.command("PASV");
        if reply.starts_with("227 ") {
            break;
        }
        assert!(Instant::now() < deadline, "port still taken: {reply:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn pasv_ignores_other_addresses() {
    let server = with_passive_ports(4);
    let mut control = Control::connect(server.ftp_port());
    assert!(control.line().starts_with("220 "));
    assert!(control.login_alice().starts_with("230 "));
    std::fs::write(server.home("alice").join("f.txt"), "hello").unwrap();
    let port = pasv_port(&control.command("PASV"));
    let address: SocketAddr = ([127, 0, 0, 1], port).into();

    let stranger = connect_from("127.0.0.2", address, Duration::from_secs(1));
    assert!(
        stranger.is_err(),
        "a connection from 127.0.0.2 was accepted"
    );

    let mut data = TcpStream::connect(address).unwrap();
    assert!(control.command("RETR f.txt").starts_with("150 "));
    let mut received = String::new();
    data.read_to_string(&mut received).unwrap();
    assert_eq!(received, "hello");
    assert!(control.line().starts_with("226 "));
}

#[test]
fn client_text_escaped_in_log() {
    let server = ftp_only().human_logs().start();
    let mut control = Control::connect(server.ftp_port());
    assert!(control.line().starts_with("220 "));
    // Telnet's CR NUL puts a carriage return into a command's argument.
    control.writer.write_all(b"USER x\r\0y\r\n").unwrap();
    assert!(control.line().starts_with("331 "));
    assert!(control.command("PASS wrong").starts_with("530 "));
    assert!(control.login_alice().starts_with("230 "));

    let port = pasv_port(&control.command("PASV"));
    let mut data = TcpStream::connect(("127.0.0.1", port)).unwrap();
    control.writer.write_all(b"STOR a\r\0b.txt\r\n").unwrap();
    assert!(control.line().starts_with("150 "));
    data.write_all(b"partial").unwrap();
    // A command during the upload aborts it, once the upload has started.
    std::thread::sleep(Duration::from_millis(300));
    let replies = [control.command("ABOR"), control.line()];
    assert!(
        replies.iter().any(|reply| reply.starts_with("426 ")),
        "{replies:?}"
    );
    drop(data);

    let discarded = wait_for_log(&server, "upload discarded");
    assert!(discarded.contains(r#"path="/a\rb.txt""#), "{discarded}");
    wait_for_log(&server, r"user x\ry");
    for line in server.log_lines() {
        assert!(!line.contains('\r'), "raw carriage return in {line:?}");
    }
}
