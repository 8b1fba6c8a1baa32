//! The SFTP subsystem: an SFTP version 3 server (draft-ietf-secsh-filexfer-02 as OpenSSH
//! implements it) over any byte stream, serving a user's [`Vfs`].
//!
//! Besides the v3 requests it serves the OpenSSH extensions `posix-rename@openssh.com`,
//! `statvfs@openssh.com`, `fstatvfs@openssh.com`, `fsync@openssh.com`,
//! `limits@openssh.com` and `expand-path@openssh.com`, and `copy-data`. Hard links are not
//! offered, because [`Vfs`] cannot make them.
//!
//! Requests run concurrently. Requests on the same handle keep their order where they
//! overlap, and their replies go out in arrival order. Other replies go out as their
//! requests finish, which the protocol allows (see `order`). Layout: `packet` is the wire format without I/O, `session` the loop that reads,
//! dispatches and writes, `ops` the operations, `handle` the open handles and `longname` the
//! `ls -l` lines of directory listings.
//!
//! Every length the client controls is bounded: packets by [`MAX_PACKET_LEN`], READ lengths
//! by [`MAX_READ_LEN`], open handles by [`MAX_HANDLES`] and running requests by
//! [`MAX_IN_FLIGHT`] per session. The sessions of one SSH connection share a
//! [`ConnectionBudget`]: queued requests are bounded by [`QUEUE_BUDGET`] bytes, reply buffers
//! by [`REPLY_BUDGET`] bytes and directory listings by [`MAX_LISTED_ENTRIES`].

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod handle;
mod longname;
mod ops;
mod order;
pub mod packet;
mod session;

use std::sync::Arc;

use ferry_vfs::Vfs;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;

/// The largest packet body accepted, in bytes after the length field: room for a WRITE of
/// 256 KiB with its header. A longer packet ends the session, so that a client cannot make
/// the server allocate what it likes.
pub const MAX_PACKET_LEN: u32 = 256 * 1024 + 1024;

/// The maximum number of bytes one READ returns. Longer requests get a short read, and
/// clients then request the rest. 255 KiB keeps a DATA reply within the 256 KiB messages
/// that OpenSSH's client accepts.
pub const MAX_READ_LEN: u32 = 255 * 1024;

/// The WRITE length announced in `limits@openssh.com`. OpenSSH's client writes this much per
/// request; longer writes are accepted up to [`MAX_PACKET_LEN`].
pub const MAX_WRITE_LEN: u32 = 255 * 1024;

/// Open file and directory handles per session. OpenSSH's client also keeps no more requests
/// in flight than this.
pub const MAX_HANDLES: usize = 256;

/// Requests that run at once in one session. A request keeps its place until its reply is
/// written, so READ replies waiting for the channel take at most this many times
/// [`MAX_READ_LEN`] of memory.
pub const MAX_IN_FLIGHT: usize = 64;

/// Bytes of requests read from the streams of one SSH connection whose replies are not
/// written yet, shared by its SFTP sessions. Reading pauses above it, so a client that sends
/// requests without reading the replies cannot grow the server's memory. It leaves room for
/// two sessions that each keep the 64 WRITEs of 255 KiB that OpenSSH's client pipelines.
pub const QUEUE_BUDGET: usize = 32 * 1024 * 1024;

/// Bytes of READ data, copy-data buffers and READDIR replies that the SFTP sessions of one
/// SSH connection hold at once. A request waits for its share before it starts and returns
/// it once its reply is written, so replies that a client leaves unread cannot pile up.
pub const REPLY_BUDGET: usize = 8 * 1024 * 1024;

/// Directory entries that the open directory handles of one SSH connection may hold.
/// [`Vfs::read_dir`] lists a whole folder at OPENDIR, and each entry takes about 160 bytes,
/// so this caps listings at about 16 MiB. A listing counts until it is read to its end or
/// its handle is closed. An OPENDIR that would pass the limit fails, except that a folder
/// larger than the limit can be listed while no other listing is held.
pub const MAX_LISTED_ENTRIES: usize = 100_000;

/// READDIR entries per NAME reply, as OpenSSH's sftp-server sends them.
const READDIR_BATCH: usize = 100;

/// The share of [`REPLY_BUDGET`] that a READDIR reserves: [`READDIR_BATCH`] entries whose
/// names fill the 255 bytes that Linux allows, with their `ls -l` lines and attributes.
const READDIR_REPLY_CHARGE: u32 = 64 * 1024;

/// The memory limits that the SFTP sessions of one SSH connection share. Clones share the
/// same limits; [`ConnectionBudget::new`] starts a new set.
#[derive(Clone, Debug)]
pub struct ConnectionBudget {
    /// Bytes of queued requests, [`QUEUE_BUDGET`] in all.
    requests: Arc<Semaphore>,
    /// Bytes of reply buffers, [`REPLY_BUDGET`] in all.
    replies: Arc<Semaphore>,
    /// Entries of open directory listings, [`MAX_LISTED_ENTRIES`] in all.
    listed_entries: Arc<Semaphore>,
    /// Held while a folder is read, so that the transient memory of `Vfs::read_dir` is
    /// that of one folder per connection.
    listing: Arc<tokio::sync::Mutex<()>>,
}

impl ConnectionBudget {
    pub fn new() -> ConnectionBudget {
        ConnectionBudget {
            requests: Arc::new(Semaphore::new(QUEUE_BUDGET)),
            replies: Arc::new(Semaphore::new(REPLY_BUDGET)),
            listed_entries: Arc::new(Semaphore::new(MAX_LISTED_ENTRIES)),
            listing: Arc::default(),
        }
    }
}

impl Default for ConnectionBudget {
    fn default() -> ConnectionBudget {
        ConnectionBudget::new()
    }
}

/// The reason an SFTP session ended early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SftpError {
    #[error("sftp stream failed: {0}")]
    Io(#[from] std::io::Error),
    /// The client sent a packet that is not valid SFTP.
    #[error("malformed sftp packet: {0}")]
    Malformed(#[from] packet::DecodeError),
    #[error("sftp packet of {len} bytes is longer than the limit of {max} bytes")]
    PacketTooLong { len: u32, max: u32 },
    #[error("sftp session must start with INIT, not {0}")]
    MissingInit(&'static str),
    #[error("sftp version {0} is not supported: the client must offer version 3 or later")]
    UnsupportedVersion(u32),
    #[error("sftp INIT sent twice")]
    RepeatedInit,
}

/// Serves one SFTP session on `stream` until the client closes it, with memory limits of its
/// own.
///
/// Every path is resolved inside `vfs`. Handles still open when the session ends are
/// closed without publishing, so an upload that never got its CLOSE leaves the old file as
/// it was. An error means the client broke the protocol or the stream failed; the session
/// is over either way.
pub async fn serve<S>(stream: S, vfs: Vfs, connection_id: String) -> Result<(), SftpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_with_budget(stream, vfs, connection_id, ConnectionBudget::new()).await
}

/// Serves one SFTP session like [`serve`], within memory limits that it shares with the other
/// sessions of the same connection.
pub async fn serve_with_budget<S>(
    stream: S,
    vfs: Vfs,
    connection_id: String,
    budget: ConnectionBudget,
) -> Result<(), SftpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tracing::debug!(%connection_id, "sftp session started");
    let result = session::run(stream, vfs, budget).await;
    match &result {
        Ok(()) => tracing::debug!(%connection_id, "sftp session ended"),
        Err(error) => {
            tracing::warn!(%connection_id, error = ?error.to_string(), "sftp session ended with an error");
        }
    }
    result
}
