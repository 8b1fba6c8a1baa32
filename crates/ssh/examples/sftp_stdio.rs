//! Serves one SFTP session on stdin and stdout over a directory, without SSH, so that
//! OpenSSH's client can talk to the SFTP subsystem directly:
//!
//! ```sh
//! cargo build -p ferry-ssh --example sftp_stdio
//! sftp -D "target/debug/examples/sftp_stdio /tmp/home"
//! ```
//!
//! Logs go to stderr; set `RUST_LOG=debug` to see every request.

use std::path::PathBuf;
use std::process::ExitCode;

use ferry_vfs::{Permissions, UploadMode, Vfs};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let Some(home) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: sftp_stdio DIRECTORY");
        return ExitCode::from(2);
    };
    let vfs = match Vfs::open(&home, Permissions::default(), UploadMode::Atomic).await {
        Ok(vfs) => vfs,
        Err(error) => {
            eprintln!("sftp_stdio: cannot open {}: {error}", home.display());
            return ExitCode::FAILURE;
        }
    };
    let result = match stdin_socket() {
        Some(socket) => ferry_ssh::sftp::serve(socket, vfs, "stdio".to_owned()).await,
        None => {
            let stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
            ferry_ssh::sftp::serve(stdio, vfs, "stdio".to_owned()).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sftp_stdio: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Returns stdin as a socket when it is one, as with `sftp -D`, which connects both stdin and
/// stdout to one end of a socket pair. A socket avoids the thread hand-offs of tokio's stdio.
fn stdin_socket() -> Option<tokio::net::UnixStream> {
    use std::os::fd::AsFd;
    let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    let socket = std::os::unix::net::UnixStream::from(fd);
    socket.local_addr().ok()?;
    socket.set_nonblocking(true).ok()?;
    tokio::net::UnixStream::from_std(socket).ok()
}
