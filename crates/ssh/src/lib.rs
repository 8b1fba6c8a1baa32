//! The SSH server: authentication with login hook events, the SFTP subsystem, and legacy SCP.
//!
//! [`Server::bind`] loads the host keys and binds the listeners; [`Server::serve`] accepts
//! connections until shutdown. Each connection is admitted by the post-connect hook before
//! the SSH banner, authenticated with the methods the server and the user allow, and then
//! serves session channels: the `sftp` subsystem, or `scp -t`/`scp -f` as an `exec`
//! request. Shells, other commands and every kind of forwarding are rejected.
//!
//! Layout: `server` binds and accepts, and `connection` supervises one connection (login
//! timeout, shutdown, the `no_auth_tryed` event). `handler` is the russh handler, `auth`
//! decides and reports each authentication request, and `channel` runs one session channel.
//! `scp` is the rcp protocol and `sftp` the SFTP subsystem.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// Unit tests may panic on unexpected values; the library code above may not.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod sftp;

mod auth;
mod channel;
mod config;
mod connection;
mod handler;
mod host_keys;
mod scp;
mod server;
mod stream;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use config::{Binding, Config};
pub use server::Server;

/// Errors that stop the SSH server from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid SSH configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    #[error("cannot use host key {}: {reason}", path.display())]
    HostKey { path: PathBuf, reason: String },
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}
