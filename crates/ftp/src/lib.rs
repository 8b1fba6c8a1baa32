//! FTP and explicit FTPS (AUTH TLS) on libunftp, serving the users and files of
//! `ferry-users` and `ferry-vfs`.
//!
//! Ferry accepts control connections itself and runs a libunftp server per connection
//! ([`connection`]), because libunftp reports neither failed logins nor disconnects, and
//! has neither the client's address nor Ferry's connection id. Each connection gets an
//! authenticator that carries those and performs the whole login ([`auth`]), and a storage
//! back-end over the user's [`ferry_vfs::Vfs`] ([`storage`]).
//!
//! Known limits of libunftp 0.24 that Ferry cannot work around from outside:
//! - A command with a syntax error (`REST abc`, `MODE Z`, `OPTS` with an unknown option)
//!   gets its error reply, and then libunftp closes the connection.
//! - `CWD` stores the path as given, so `PWD` can answer `/a/..` after `CWD ..`. Every path
//!   is still normalized before it reaches the files.
//! - `FEAT` lists `MLST` without its facts, `MKD` answers `257 /path` without the quotes
//!   of RFC 959, and the idle timeout is announced with 221 rather than 421.
//! - `PASV` on an IPv6 control connection closes the connection; IPv6 clients use `EPSV`.
//! - libunftp holds the session during a transfer, so commands wait until it ends. Ferry
//!   therefore aborts a transfer when the client sends anything on the control connection
//!   meanwhile, which makes ABOR work but also ends a transfer on `STAT` or `NOOP`.
//! - A command sent as TCP urgent data (Python's ftplib sends ABOR so) is answered only
//!   when the client sends more, because the kernel ends a read at the urgent mark and
//!   tokio then waits for new input before it reads again.
//! - On an upload over TLS the client's close_notify gets no close_notify back, so clients
//!   that wait for it (Python's `FTP_TLS.storbinary`) report an error after the file was
//!   stored. A failed TLS handshake on a data connection panics libunftp's data task, and
//!   that transfer gets no reply.
//!
//! TODO: libunftp keeps a `REST` offset after a failed transfer, so the next transfer
//! without `REST` starts at that offset. Fixing it needs a change in libunftp.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod auth;
mod bridge;
mod config;
mod connection;
mod control_guard;
mod storage;
mod tls;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::{Binding, Config, PortRange};

use config::PassiveHost;
use tls::Tls;

/// Pause after a failed `accept`, such as when the process ran out of file descriptors.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Time given to connections to close after the grace period ended.
const FORCED_CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Errors that stop the FTP service from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid ftpd setting: {0}")]
    Config(String),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot use {}: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    #[error("invalid TLS certificate or key: {0}")]
    Tls(rustls::Error),
}

/// The settings every connection reads.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) passive_host: PassiveHost,
    pub(crate) logins: ferry_users::Logins,
    pub(crate) tls: Option<Tls>,
}

/// One bound listening socket.
pub(crate) struct Listener {
    pub(crate) address: SocketAddr,
    pub(crate) tls_required: bool,
    pub(crate) proxy_mode: ferry_hooks::ProxyMode,
}

/// The FTP service: bound listeners, ready to serve.
pub struct Server {
    listeners: Vec<(TcpListener, Arc<Listener>)>,
    shared: Arc<Shared>,
}

impl Server {
    /// Binds every listener (port 0 picks a free port) and loads the TLS certificate.
    pub async fn bind(config: Config, logins: ferry_users::Logins) -> Result<Server, Error> {
        let mut problems = Vec::new();
        config.validate("ftpd", &mut problems);
        if !problems.is_empty() {
            return Err(Error::Config(problems.join("; ")));
        }
        let passive_host =
            config::parse_passive_host(&config.passive_host).map_err(Error::Config)?;
        let tls = if config.tls_configured() {
            Some(Tls::load(
                &config.certificate_file,
                &config.certificate_key_file,
            )?)
        } else {
            None
        };

        let mut listeners = Vec::new();
        for binding in &config.bindings {
            let ip: IpAddr = binding.address.parse().map_err(|_| {
                Error::Config(format!("invalid listen address {:?}", binding.address))
            })?;
            let socket = TcpListener::bind((ip, binding.port))
                .await
                .map_err(|source| Error::Bind {
                    address: SocketAddr::new(ip, binding.port).to_string(),
                    source,
                })?;
            let address = socket.local_addr().map_err(|source| Error::Bind {
                address: SocketAddr::new(ip, binding.port).to_string(),
                source,
            })?;
            info!(protocol = "FTP", address = %address, "listening");
            listeners.push((
                socket,
                Arc::new(Listener {
                    address,
                    tls_required: binding.tls_required(),
                    proxy_mode: binding.proxy_mode(),
                }),
            ));
        }
        Ok(Server {
            listeners,
            shared: Arc::new(Shared {
                config,
                passive_host,
                logins,
                tls,
            }),
        })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .map(|(_, listener)| listener.address)
            .collect()
    }

    /// Serves until `shutdown` is cancelled; then stops accepting and waits up to `grace`
    /// for open connections, closes those still open, and returns.
    pub async fn serve(self, shutdown: CancellationToken, grace: Duration) {
        let connections = TaskTracker::new();
        let force_close = CancellationToken::new();
        let mut accept_loops = JoinSet::new();
        for (socket, listener) in self.listeners {
            accept_loops.spawn(accept_loop(
                socket,
                listener,
                Arc::clone(&self.shared),
                connections.clone(),
                shutdown.clone(),
                force_close.clone(),
            ));
        }
        while accept_loops.join_next().await.is_some() {}

        connections.close();
        if tokio::time::timeout(grace, connections.wait())
            .await
            .is_err()
        {
            info!(
                protocol = "FTP",
                open = connections.len(),
                grace_secs = grace.as_secs(),
                "closing connections still open after the grace period"
            );
            force_close.cancel();
            if tokio::time::timeout(FORCED_CLOSE_WAIT, connections.wait())
                .await
                .is_err()
            {
                warn!(
                    protocol = "FTP",
                    open = connections.len(),
                    "connections did not close in time"
                );
            }
        }
    }
}

async fn accept_loop(
    socket: TcpListener,
    listener: Arc<Listener>,
    shared: Arc<Shared>,
    connections: TaskTracker,
    shutdown: CancellationToken,
    force_close: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = socket.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection::run(
                        stream,
                        peer,
                        Arc::clone(&shared),
                        Arc::clone(&listener),
                        force_close.clone(),
                    ));
                }
                Err(error) => {
                    warn!(protocol = "FTP", address = %listener.address, %error, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                }
            },
        }
    }
    info!(protocol = "FTP", address = %listener.address, "listener stopped");
}
