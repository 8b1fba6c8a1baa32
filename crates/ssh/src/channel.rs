//! One session channel: waits for the program request, then runs SCP or SFTP, or rejects it.
//!
//! The task owns the channel from the moment it opens and keeps reading its messages, so a
//! client that sends requests the server ignores can never fill the channel's queue and
//! stall the connection. The handler answers each request with success or failure; this
//! task does the work.

use russh::server::Msg;
use russh::{Channel, ChannelMsg};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::scp;

/// Exit status sent when a request is rejected.
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
            let stream = channel.into_stream();
            // The SFTP module logs how its session ended.
            tokio::select! {
                _ = crate::sftp::serve(stream, vfs, connection_id) => {}
                () = cutoff.cancelled() => {}
            }
            debug!(channel = id, "SFTP session ended");
        }
        Program::Scp(command) => {
            info!(channel = id, command = %command, "SCP started");
            tokio::select! {
                () = scp::run(channel, command, vfs) => {}
                () = cutoff.cancelled() => {}
            }
        }
        Program::Rejected(message) => {
            info!(channel = id, reason = %message, "request rejected");
            reject(channel, &message).await;
        }
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
