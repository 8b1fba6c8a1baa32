//! WebDAV (RFC 4918, classes 1 and 2) over HTTP and HTTPS, on dav-server and hyper.
//!
//! Each user's home directory is served at `/`, through the same jailed [`ferry_vfs::Vfs`]
//! view and permissions as SFTP and FTP. Every request must carry HTTP Basic credentials;
//! verified ones are cached for `auth_cache_ttl` seconds (see the `auth` module).
//!
//! Login events use protocol `DAV` and method `password`:
//! - a request without credentials gets `401` with `WWW-Authenticate: Basic realm="ferry"`
//!   and produces no event, because clients send such a probe before every login;
//! - a wrong or malformed password produces a failed event every time, and the `401` closes
//!   the connection, so the next attempt passes the connection gate (and its bans) again;
//! - a success produces an event only when the password was actually checked, not for
//!   requests served from the cache.
//!
//! A connection that ends without sending credentials reports nothing: unlike SSH and FTP,
//! HTTP clients routinely open connections that only probe, and a `no_auth_tryed` event for
//! each of them would get legitimate users banned.
//!
//! The post-connect hook runs once per TCP connection with the TCP peer address, before
//! anything is read from the connection (for HTTPS, before the TLS handshake). A connection
//! from a trusted proxy is different: its client is only known from each request's
//! forwarding headers, so the hook runs at the first request, and again whenever a request
//! on that connection names another client address. A rejected client gets `403`.
//!
//! Locks and dead properties are kept in memory per user (see the `locks` and `props` modules).
//! `PROPFIND` with `Depth: infinity`, or without a `Depth` header, is refused with `403`
//! and `propfind-finite-depth` rather than answered with a walk of the whole home.

mod auth;
mod client_ip;
mod config;
mod fs;
mod locks;
mod props;
mod server;
mod service;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use config::{Binding, Config};

/// Errors that stop the WebDAV service from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid webdavd.bindings address {address:?}: expected an IP address")]
    InvalidAddress { address: String },
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot use certificate file {}: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    #[error("invalid webdavd.trusted_proxies: {0}")]
    TrustedProxies(String),
}

/// The WebDAV listeners, bound and ready to serve.
pub struct Server {
    inner: server::Bound,
}

impl Server {
    /// Binds every listener (port 0 picks a free port) and loads the TLS certificate when a
    /// binding enables HTTPS.
    pub async fn bind(config: Config, logins: ferry_users::Logins) -> Result<Server, Error> {
        Ok(Server {
            inner: server::Bound::bind(config, logins).await?,
        })
    }

    /// Returns the bound addresses, in the order of the configured bindings.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.local_addrs()
    }

    /// Serves until `shutdown` is cancelled; then stops accepting, lets requests in progress
    /// finish for up to `grace`, and closes what is still open.
    pub async fn serve(self, shutdown: CancellationToken, grace: Duration) {
        self.inner.serve(shutdown, grace).await;
    }
}
