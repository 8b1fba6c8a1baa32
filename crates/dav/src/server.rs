//! Listeners, the accept loop, and the life of one TCP connection.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dav_server::DavHandler;
use ferry_hooks::{Protocol, canonical_ip, new_connection_id};
use ferry_users::Logins;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, warn};

use crate::auth::Authenticator;
use crate::client_ip::TrustedProxies;
use crate::locks::UserLocks;
use crate::props::PropStore;
use crate::service::{Admission, Connection};
use crate::{Config, Error, tls};

/// Bytes read from a file per step of a GET. dav-server's default of 16 KiB makes a large
/// download cost one blocking-pool round trip per 16 KiB.
const READ_BUF_SIZE: usize = 256 << 10;

/// How often expired credentials leave the cache, which ends their sessions.
const PURGE_INTERVAL: Duration = Duration::from_secs(30);

/// State shared by every connection.
pub(crate) struct Shared {
    pub(crate) logins: Logins,
    pub(crate) auth: Authenticator,
    pub(crate) proxies: TrustedProxies,
    pub(crate) handler: DavHandler,
    pub(crate) users: UserStates,
    http: auto::Builder<TokioExecutor>,
    header_read_timeout: Duration,
}

/// Per-user WebDAV state that outlives connections and cached credentials: locks and dead
/// properties. It is kept for the server's lifetime, one entry per user name that logged in.
#[derive(Default)]
pub(crate) struct UserStates {
    map: Mutex<HashMap<String, Arc<UserState>>>,
}

#[derive(Default)]
pub(crate) struct UserState {
    pub(crate) locks: UserLocks,
    pub(crate) props: Arc<PropStore>,
}

impl UserStates {
    pub(crate) fn get(&self, username: &str) -> Arc<UserState> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(username.to_owned()).or_default())
    }
}

struct Listener {
    tcp: TcpListener,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
}

/// Bound listeners and the state they share.
pub(crate) struct Bound {
    listeners: Vec<Listener>,
    shared: Arc<Shared>,
}

impl Bound {
    pub(crate) async fn bind(config: Config, logins: Logins) -> Result<Bound, Error> {
        let proxies =
            TrustedProxies::parse(&config.trusted_proxies).map_err(Error::TrustedProxies)?;
        let tls = if config.bindings.iter().any(|b| b.enable_https) {
            let server_config =
                tls::server_config(&config.certificate_file, &config.certificate_key_file)?;
            Some(TlsAcceptor::from(server_config))
        } else {
            None
        };

        let mut listeners = Vec::with_capacity(config.bindings.len());
        for binding in &config.bindings {
            let ip: IpAddr = binding.address.parse().map_err(|_| Error::InvalidAddress {
                address: binding.address.clone(),
            })?;
            let requested = SocketAddr::new(ip, binding.port);
            let tcp = TcpListener::bind(requested)
                .await
                .map_err(|source| Error::Bind {
                    address: requested,
                    source,
                })?;
            let addr = tcp.local_addr().map_err(|source| Error::Bind {
                address: requested,
                source,
            })?;
            info!(protocol = "DAV", address = %addr, "listening");
            debug!(protocol = "DAV", address = %addr, https = binding.enable_https, "listener scheme");
            listeners.push(Listener {
                tcp,
                addr,
                tls: tls.clone().filter(|_| binding.enable_https),
            });
        }

        let header_read_timeout = Duration::from_secs(config.header_read_timeout.max(1));
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        http.http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(header_read_timeout))
            .keep_alive_timeout(header_read_timeout);

        let handler = DavHandler::builder()
            .read_buf_size(READ_BUF_SIZE)
            // Symlinks are listed as what they point to; the file layer refuses any that
            // lead out of the home.
            .hide_symlinks(false)
            .autoindex(true)
            .build_handler();

        let shared = Shared {
            auth: Authenticator::new(logins.clone(), Duration::from_secs(config.auth_cache_ttl)),
            logins,
            proxies,
            handler,
            users: UserStates::default(),
            http,
            header_read_timeout,
        };
        Ok(Bound {
            listeners,
            shared: Arc::new(shared),
        })
    }

    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.addr).collect()
    }

    pub(crate) async fn serve(self, shutdown: CancellationToken, grace: Duration) {
        let force = CancellationToken::new();
        let connections = TaskTracker::new();

        let mut loops = tokio::task::JoinSet::new();
        for listener in self.listeners {
            loops.spawn(accept_loop(
                listener,
                Arc::clone(&self.shared),
                shutdown.clone(),
                force.clone(),
                connections.clone(),
            ));
        }
        let purger = {
            let shared = Arc::clone(&self.shared);
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(PURGE_INTERVAL) => shared.auth.purge_expired(),
                    }
                }
            })
        };
        while loops.join_next().await.is_some() {}

        connections.close();
        if tokio::time::timeout(grace, connections.wait())
            .await
            .is_err()
        {
            warn!(
                protocol = "DAV",
                open = connections.len(),
                grace_secs = grace.as_secs(),
                "closing WebDAV connections still open after the shutdown grace"
            );
            force.cancel();
            connections.wait().await;
        }
        purger.abort();
    }
}

async fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    force: CancellationToken,
    connections: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.tcp.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let connection = serve_connection(
                    Arc::clone(&shared),
                    stream,
                    peer,
                    listener.tls.clone(),
                    shutdown.clone(),
                );
                let force = force.clone();
                connections.spawn(async move {
                    tokio::select! {
                        _ = force.cancelled() => {}
                        _ = connection => {}
                    }
                });
            }
            Err(error) => {
                // Typically too many open files; waiting avoids a busy loop until one closes.
                warn!(protocol = "DAV", address = %listener.addr, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    info!(protocol = "DAV", address = %listener.addr, "stopped listening");
}

/// The transport under HTTP: plain TCP or TLS.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

async fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let ip = canonical_ip(peer.ip());
    let id = new_connection_id(Protocol::Dav);
    let span = tracing::info_span!(
        "connection",
        protocol = "DAV",
        ip = %ip,
        port = peer.port(),
        connection_id = %id,
        user = tracing::field::Empty,
        method = tracing::field::Empty,
    );
    let started = Instant::now();
    let work = async move {
        debug!(https = tls.is_some(), "connection accepted");
        let _ = stream.set_nodelay(true);

        // A direct client is admitted before anything is read from it. Behind a trusted
        // proxy the client is known only from each request, so admission waits for one.
        let admission = if shared.proxies.contains(ip) {
            Admission::Pending
        } else {
            Admission::decide(&shared, ip, &id).await
        };

        let transport: Box<dyn Transport> = match tls {
            None => Box::new(stream),
            Some(acceptor) => {
                match tokio::time::timeout(shared.header_read_timeout, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(stream)) => Box::new(stream),
                    Ok(Err(error)) => {
                        debug!(%error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!("TLS handshake timed out");
                        return;
                    }
                }
            }
        };

        let connection = Arc::new(Connection::new(
            Arc::clone(&shared),
            peer,
            id,
            tracing::Span::current(),
            admission,
        ));
        let closing = connection.closing();
        let service = service_fn(move |request| {
            let connection = Arc::clone(&connection);
            async move { Ok::<_, Infallible>(connection.handle(request).await) }
        });
        // TODO: hyper bounds the time to read request headers but not request bodies, so an
        // authenticated client that stops sending a PUT body keeps the connection and its
        // unfinished upload until the client closes it.
        let http = shared
            .http
            .serve_connection(TokioIo::new(transport), service);
        tokio::pin!(http);
        let result = tokio::select! {
            result = http.as_mut() => result,
            _ = shutdown.cancelled() => {
                // Finish the requests in progress, then close. At shutdown the caller's grace
                // limit cancels this future if that takes too long.
                http.as_mut().graceful_shutdown();
                http.await
            }
            _ = closing.cancelled() => {
                http.as_mut().graceful_shutdown();
                http.await
            }
        };
        if let Err(error) = result {
            debug!(%error, "connection ended with an HTTP error");
        }
        debug!(
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "connection closed"
        );
    };
    work.instrument(span).await;
}
