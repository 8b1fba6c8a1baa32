//! One session channel: waits for the program request, then runs SCP or SFTP, or rejects it.
//!
//! The task owns the channel from the moment it opens and keeps reading its messages, so a
//! client that sends requests the server ignores can never fill the channel's queue and
//! stall the connection. The handler answers each request with success or failure; this
//! task does the work.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::StreamReader;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::scp;

/// Exit status sent when a request is rejected or a session ended with an error.
const REFUSED_STATUS: u32 = 1;

/// What a session channel was asked to run.
#[derive(Debug, PartialEq, Eq)]
enum Program {
    Scp(scp::Command),
    Sftp,
    /// Rejected, with the message for the client's standard error.
    Rejected(String),
}

impl Program {
    fn from_exec(command: &[u8]) -> Program {
        let Ok(text) = std::str::from_utf8(command) else {
            return Program::Rejected("command is not valid UTF-8".into());
        };
        match scp::Command::parse(text) {
            Ok(Some(command)) => Program::Scp(command),
            Ok(None) => Program::Rejected(format!(
                "command {:?} is not available; this server offers SFTP and SCP only",
                text.chars().take(200).collect::<String>()
            )),
            Err(problem) => Program::Rejected(format!("invalid scp command: {problem}")),
        }
    }

    fn from_subsystem(name: &str) -> Program {
        if name == "sftp" {
            Program::Sftp
        } else {
            Program::Rejected(format!(
                "subsystem {name:?} is not available; this server offers sftp only"
            ))
        }
    }
}

/// Serves one session channel until it closes or the connection is cut off.
pub(crate) async fn run(
    mut channel: Channel<Msg>,
    vfs: ferry_vfs::Vfs,
    connection_id: String,
    cutoff: CancellationToken,
    sftp_budget: crate::sftp::ConnectionBudget,
) {
    let id = channel.id().number();
    let program = loop {
        let message = tokio::select! {
            message = channel.wait() => message,
            () = cutoff.cancelled() => return,
        };
        match message {
            Some(ChannelMsg::Exec { command, .. }) => break Program::from_exec(&command),
            Some(ChannelMsg::RequestSubsystem { name, .. }) => {
                break Program::from_subsystem(&name);
            }
            Some(ChannelMsg::RequestShell { .. }) => {
                break Program::Rejected(
                    "shell access is not available; this server offers SFTP and SCP only".into(),
                );
            }
            Some(ChannelMsg::Eof | ChannelMsg::Close) | None => {
                debug!(channel = id, "channel closed before a program request");
                return;
            }
            Some(other) => debug!(channel = id, message = ?other, "channel message ignored"),
        }
    };

    match program {
        Program::Sftp => {
            info!(channel = id, "SFTP session started");
            let (stream, write_half) = sftp_stream(channel);
            // The SFTP module logs how its session ended.
            let ended = tokio::select! {
                result = crate::sftp::serve_with_budget(stream, vfs, connection_id, sftp_budget) => {
                    Some(result.is_ok())
                }
                () = cutoff.cancelled() => None,
            };
            debug!(channel = id, "SFTP session ended");
            // Clients such as scp report failure when a subsystem ends without an exit status.
            if let Some(clean) = ended {
                let status = if clean { 0 } else { REFUSED_STATUS };
                let _ = write_half.exit_status(status).await;
                let _ = write_half.eof().await;
                let _ = write_half.close().await;
            }
        }
        Program::Scp(command) => {
            info!(channel = id, command = ?command.to_string(), "SCP started");
            tokio::select! {
                () = scp::run(channel, command, vfs) => {}
                () = cutoff.cancelled() => {}
            }
        }
        Program::Rejected(message) => {
            info!(channel = id, reason = ?message, "request rejected");
            reject(channel, &message).await;
        }
    }
}

/// Turns a channel into an owned byte stream for the SFTP session, keeping the write half so
/// that the exit status can follow when the session ends. (`Channel::into_stream` closes the
/// channel when the stream is dropped, before an exit status could be sent.)
fn sftp_stream(
    channel: Channel<Msg>,
) -> (
    impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Arc<ChannelWriteHalf<Msg>>,
) {
    let (read_half, write_half) = channel.split();
    let incoming = futures::stream::unfold(read_half, |mut half| async move {
        loop {
            match half.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    return Some((Ok::<Bytes, io::Error>(data), half));
                }
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => return None,
                Some(_) => {}
            }
        }
    });
    let write_half = Arc::new(write_half);
    let writer = ChannelWriter {
        half: Arc::clone(&write_half),
        pending: None,
    };
    (
        tokio::io::join(StreamReader::new(Box::pin(incoming)), writer),
        write_half,
    )
}

type SendFuture = Pin<Box<dyn Future<Output = Result<usize, russh::Error>> + Send>>;

/// Channel data as `AsyncWrite`, over a shared write half. (russh's own writer borrows the
/// write half, so it cannot outlive it alongside the exit status.)
struct ChannelWriter {
    half: Arc<ChannelWriteHalf<Msg>>,
    /// A send in progress, which resolves to the number of bytes it took.
    pending: Option<SendFuture>,
}

impl AsyncWrite for ChannelWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // A write that returned Pending is retried with the same bytes, which the pending send
        // already holds.
        let this = &mut *self;
        let pending = this.pending.get_or_insert_with(|| {
            let half = Arc::clone(&this.half);
            let data = Bytes::copy_from_slice(buf);
            let len = data.len();
            Box::pin(async move { half.data_bytes(data).await.map(|()| len) })
        });
        let result = ready!(pending.as_mut().poll(cx));
        self.pending = None;
        Poll::Ready(result.map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e)))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.pending.as_mut() {
            Some(pending) => {
                let result = ready!(pending.as_mut().poll(cx));
                self.pending = None;
                Poll::Ready(
                    result
                        .map(|_| ())
                        .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e)),
                )
            }
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

/// Sends `message` to the client's standard error, then a failing exit status, EOF and
/// close.
async fn reject(channel: Channel<Msg>, message: &str) {
    let text = format!("ferry: {message}\n");
    let _ = channel.extended_data_bytes(1, text.into_bytes()).await;
    let _ = channel.exit_status(REFUSED_STATUS).await;
    let _ = channel.eof().await;
    let _ = channel.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_commands_rejected() {
        for command in ["ls -l", "rm -rf /", "bash", "scp", "scp -x -t ."] {
            assert!(
                matches!(Program::from_exec(command.as_bytes()), Program::Rejected(_)),
                "{command}"
            );
        }
    }

    #[test]
    fn scp_command_accepted() {
        assert!(matches!(
            Program::from_exec(b"scp -t /upload"),
            Program::Scp(_)
        ));
    }

    #[test]
    fn only_sftp_subsystem() {
        assert_eq!(Program::from_subsystem("sftp"), Program::Sftp);
        assert!(matches!(
            Program::from_subsystem("netconf"),
            Program::Rejected(_)
        ));
    }
}
