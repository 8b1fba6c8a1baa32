//! Legacy SCP: the rcp protocol behind `scp -t` (upload) and `scp -f` (download).
//!
//! OpenSSH 9 and later copy files over SFTP by default. `scp -O`, older clients, WinSCP in
//! SCP mode and libraries such as libssh2 run `scp` as a remote command instead, and this
//! module serves that command. Every path goes through the user's [`Vfs`], so the jail, permissions and
//! atomic uploads apply as in SFTP. A file is published only after its data and the source's
//! acknowledgement arrived.
//!
//! The exit status is 0 when everything was copied and 1 otherwise. Each failure is sent to
//! the client as a protocol message and written to the channel's standard error.

mod command;
mod protocol;
mod sink;
mod source;

use std::io;

use ferry_vfs::{VPath, Vfs, VfsError};
use russh::Channel;
use russh::server::Msg;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tracing::{debug, info};

pub(crate) use command::{Command, Direction};

/// Size of the buffer between the channel and files, in bytes.
const COPY_BUFFER: usize = 256 * 1024;

/// Runs one SCP command on a session channel, then sends the exit status, EOF and close.
pub(crate) async fn run(channel: Channel<Msg>, command: Command, vfs: Vfs) {
    let (mut read_half, write_half) = channel.split();
    let reader = BufReader::with_capacity(COPY_BUFFER, read_half.make_reader());
    let mut io = Io {
        reader,
        writer: write_half.make_writer(),
        stderr: write_half.make_writer_ext(Some(1)),
        errors: 0,
    };
    let result = match command.direction {
        Direction::Upload => sink::run(&mut io, &command, &vfs).await,
        Direction::Download => source::run(&mut io, &command, &vfs).await,
    };
    if let Err(error) = &result {
        debug!(error = ?error.to_string(), "SCP transfer stopped");
    }
    let _ = io.writer.flush().await;
    let _ = io.stderr.flush().await;
    let status = u32::from(io.errors > 0 || result.is_err());
    info!(errors = io.errors, exit_status = status, "SCP finished");
    let _ = write_half.exit_status(status).await;
    let _ = write_half.eof().await;
    let _ = write_half.close().await;
}

/// The reason a transfer stopped before its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Stop {
    #[error("channel i/o failed: {0}")]
    Io(#[from] io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the peer ended the transfer: {0}")]
    PeerFatal(String),
}

/// The peer's response to a record or to a file's data.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Response {
    Ok,
    /// A failure that skips the item; the transfer goes on.
    Warning(String),
}

/// The channel's streams and the error count of one transfer.
pub(crate) struct Io<R, W, E> {
    pub(crate) reader: R,
    pub(crate) writer: W,
    pub(crate) stderr: E,
    /// Failures reported so far; any makes the exit status 1.
    pub(crate) errors: u32,
}

impl<R, W, E> Io<R, W, E>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    /// Sends bytes and flushes them, because the peer waits for them before it responds.
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        self.writer.write_all(bytes).await?;
        self.writer.flush().await?;
        Ok(())
    }

    pub(crate) async fn send_ok(&mut self) -> Result<(), Stop> {
        self.send(&[protocol::OK]).await
    }

    /// Reports a failure that skips one item: a warning message to the peer and a line on
    /// standard error.
    pub(crate) async fn warn(&mut self, message: &str) -> Result<(), Stop> {
        debug!(reason = ?message, "SCP item failed");
        let line = protocol::warning(&format!("scp: {message}"));
        self.report(&line, message).await
    }

    /// Reports a failure that ends the transfer.
    pub(crate) async fn fatal(&mut self, message: &str) -> Result<(), Stop> {
        info!(reason = ?message, "SCP transfer failed");
        let line = protocol::fatal(&format!("scp: {message}"));
        self.report(&line, message).await
    }

    async fn report(&mut self, line: &[u8], message: &str) -> Result<(), Stop> {
        self.errors += 1;
        self.send(line).await?;
        self.write_stderr(message).await;
        Ok(())
    }

    async fn write_stderr(&mut self, message: &str) {
        let line = format!("scp: {}\n", message.replace('\n', " "));
        let _ = self.stderr.write_all(line.as_bytes()).await;
        let _ = self.stderr.flush().await;
    }

    /// Reads one record line without its newline; `None` at the end of the input.
    pub(crate) async fn read_line(&mut self) -> Result<Option<Vec<u8>>, Stop> {
        let mut line = Vec::new();
        let mut limited = (&mut self.reader).take(protocol::MAX_RECORD_LEN as u64);
        let n = limited.read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Ok(None);
        }
        if line.pop() != Some(b'\n') {
            return Err(Stop::Protocol(if n >= protocol::MAX_RECORD_LEN {
                format!("record longer than {} bytes", protocol::MAX_RECORD_LEN)
            } else {
                "input ended inside a record".into()
            }));
        }
        Ok(Some(line))
    }

    /// Reads the peer's response: `\0`, or a warning or fatal message line.
    pub(crate) async fn read_response(&mut self) -> Result<Response, Stop> {
        match self.read_response_or_end().await? {
            Some(response) => Ok(response),
            None => Err(Stop::Protocol(
                "input ended while waiting for a response".into(),
            )),
        }
    }

    /// Reads the peer's response, or returns `None` when its input ended instead.
    pub(crate) async fn read_response_or_end(&mut self) -> Result<Option<Response>, Stop> {
        let mut byte = [0u8; 1];
        if self.reader.read(&mut byte).await? == 0 {
            return Ok(None);
        }
        match byte[0] {
            protocol::OK => Ok(Some(Response::Ok)),
            kind @ (protocol::WARNING | protocol::FATAL) => {
                let message = self
                    .read_line()
                    .await?
                    .map(|line| String::from_utf8_lossy(&line).into_owned())
                    .unwrap_or_default();
                if kind == protocol::FATAL {
                    Err(Stop::PeerFatal(message))
                } else {
                    debug!(reason = ?message, "peer reported a failure");
                    self.errors += 1;
                    Ok(Some(Response::Warning(message)))
                }
            }
            other => Err(Stop::Protocol(format!(
                "unexpected response byte {other:#04x}"
            ))),
        }
    }
}

/// Resolves a client path: relative paths and `~/` start at the home directory.
pub(crate) fn resolve_path(text: &str) -> Result<VPath, VfsError> {
    let text = if text == "~" {
        "/"
    } else {
        text.strip_prefix("~/").unwrap_or(text)
    };
    VPath::parse(text)
}

/// Describes a file error the way `scp` users know it from local errors.
pub(crate) fn describe(error: &VfsError) -> String {
    match error {
        VfsError::NotFound => "No such file or directory".into(),
        VfsError::PermissionDenied => "Permission denied".into(),
        VfsError::AlreadyExists => "File exists".into(),
        VfsError::NotADirectory => "Not a directory".into(),
        VfsError::IsADirectory => "Is a directory".into(),
        VfsError::DirectoryNotEmpty => "Directory not empty".into(),
        VfsError::StorageFull => "No space left on device".into(),
        VfsError::QuotaExceeded => "Disk quota exceeded".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_shortcuts_resolved() {
        assert_eq!(resolve_path("~").unwrap().as_str(), "/");
        assert_eq!(resolve_path("~/a/b").unwrap().as_str(), "/a/b");
        assert_eq!(resolve_path("a/../../b").unwrap().as_str(), "/b");
        assert_eq!(resolve_path(".").unwrap().as_str(), "/");
    }
}
