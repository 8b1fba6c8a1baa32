//! One control connection: admission, a libunftp server of its own, the login timeout, and
//! the state that the authenticator and the storage back-end share.
//!
//! libunftp's `Server::service` runs a control connection until it closes but offers no way
//! to close it from outside. The connection therefore keeps a second handle to the socket:
//! shutting it down ends libunftp's control loop, which is how the login timeout, the limits
//! on login attempts and command line length, and the end of the shutdown grace period
//! close a connection.

use std::net::{IpAddr, Shutdown, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_hooks::{Protocol, canonical_ip, new_connection_id, read_client_address};
use ferry_users::Session;
use ferry_vfs::Vfs;
use futures::FutureExt;
use libunftp::options::{FtpsRequired, SiteMd5};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, field, info, info_span, warn};
use unftp_core::auth::DefaultUser;

use crate::auth::{AttemptTracker, PasswordAuthenticator};
use crate::bridge::{PassiveListener, PassivePortBinder, libunftp_logger};
use crate::config::PassiveHost;
use crate::control_guard::{
    CommandLineGuard, MAX_COMMAND_LINE_BYTES, tcp_counters, wait_for_reply,
};
use crate::storage::VfsStorage;
use crate::tls::HandshakeCounter;
use crate::{Config, Listener, Shared};

/// The first line every client gets.
const GREETING: &str = "Ferry FTP server ready";

/// Time libunftp gets to finish its control loop after the socket was shut down.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Time allowed to send the rejection reply to a client that the admission refused.
const REJECT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Time given to libunftp to send its reply before the connection is closed after it.
const LAST_REPLY_WAIT: Duration = Duration::from_secs(2);

/// State shared by the authenticator, the storage back-end and the connection task.
pub(crate) struct ConnectionState {
    pub(crate) id: String,
    pub(crate) ip: IpAddr,
    /// The connection's span, for work that libunftp runs in tasks of its own.
    pub(crate) span: Span,
    /// A second handle to the control socket, to shut it down and to see whether the
    /// client closed it.
    control: socket2::Socket,
    session: std::sync::Mutex<Option<Session>>,
    logged_in: AtomicBool,
    login_notify: Notify,
    /// Present when FTPS is configured.
    tls: Option<TlsState>,
    /// The passive data listener that the connection's latest PASV or EPSV opened.
    passive: Arc<PassiveListener>,
}

/// The TLS handshakes of one control connection and its data connections.
struct TlsState {
    handshakes: Arc<HandshakeCounter>,
    /// Whether the listener requires TLS on data connections.
    data_required: bool,
    /// Handshakes already matched to the control connection or a transfer.
    used: AtomicU64,
}

impl ConnectionState {
    /// Returns the logged-in user's file view.
    pub(crate) fn vfs(&self) -> Option<Vfs> {
        self.lock_session()
            .as_ref()
            .map(|session| session.vfs.clone())
    }

    fn lock_session(&self) -> std::sync::MutexGuard<'_, Option<Session>> {
        self.session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores the session of a successful login and stops the login timeout.
    pub(crate) fn start_session(&self, session: Session) {
        *self.lock_session() = Some(session);
        if let Some(tls) = &self.tls {
            // The control connection's own handshake, if any, happened before USER.
            tls.used.store(tls.handshakes.count(), Ordering::SeqCst);
        }
        self.logged_in.store(true, Ordering::SeqCst);
        self.login_notify.notify_one();
    }

    fn end_session(&self) {
        self.lock_session().take();
    }

    fn is_logged_in(&self) -> bool {
        self.logged_in.load(Ordering::SeqCst)
    }

    /// Returns whether a data transfer may start: always, unless the listener requires TLS,
    /// in which case a TLS handshake must have happened since the previous transfer. libunftp
    /// makes the data connection's handshake before it calls the storage back-end, and runs
    /// one transfer at a time per control connection.
    pub(crate) fn check_data_tls(&self) -> bool {
        let Some(tls) = self.tls.as_ref().filter(|tls| tls.data_required) else {
            return true;
        };
        let handshakes = tls.handshakes.count();
        tls.used.fetch_max(handshakes, Ordering::SeqCst) < handshakes
    }

    /// Returns whether the client closed or reset the control connection.
    pub(crate) fn control_closed(&self) -> bool {
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit()];
        // The socket is non-blocking, as tokio set it up.
        match self.control.peek(&mut probe) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
        }
    }

    /// Starts watching the control connection for input, for the duration of a transfer.
    pub(crate) fn watch_control(&self) -> ControlWatch {
        let registered = self
            .control
            .try_clone()
            .and_then(|socket| TcpStream::from_std(socket.into()));
        match registered {
            Ok(socket) => ControlWatch {
                socket: Some(socket),
            },
            Err(error) => {
                debug!(%error, "cannot watch the control connection during the transfer");
                ControlWatch { socket: None }
            }
        }
    }

    /// Closes the control connection, first sending the `reply` line when the connection
    /// is not encrypted. libunftp may be writing a reply at the same moment, which a client
    /// that is being disconnected anyway can live with.
    pub(crate) fn close_control(&self, reply: &str) {
        let encrypted = self
            .tls
            .as_ref()
            .is_some_and(|tls| tls.handshakes.count() > 0);
        // Input left unread when the socket closes makes Linux reset the connection, and a
        // reset can make the client drop the reply before reading it.
        self.discard_input();
        if !encrypted {
            // The socket is non-blocking; a short reply fits in an idle send buffer.
            let _ = self.control.send(format!("{reply}\r\n").as_bytes());
        }
        if let Err(error) = self.control.shutdown(Shutdown::Both) {
            debug!(%error, "control connection already closed");
        }
    }

    /// Reads and drops unread input from the client, up to 1 MiB.
    fn discard_input(&self) {
        let mut buffer = [std::mem::MaybeUninit::<u8>::uninit(); 16 * 1024];
        for _ in 0..64 {
            match self.control.recv(&mut buffer) {
                Ok(read) if read > 0 => {}
                _ => break,
            }
        }
    }

    /// Returns the bytes sent on the control connection so far, when the system reports
    /// them.
    pub(crate) fn bytes_sent(&self) -> Option<u64> {
        tcp_counters(&self.control)
            .map(|counters| counters.sent)
            .ok()
    }

    /// Closes the control connection in the background once libunftp sent a reply after
    /// `sent_before` bytes, or after [`LAST_REPLY_WAIT`], sending `reply` last.
    pub(crate) fn close_after_reply(
        self: &Arc<Self>,
        sent_before: Option<u64>,
        reply: &'static str,
    ) {
        let state = Arc::clone(self);
        let close = async move {
            if let Some(sent_before) = sent_before {
                wait_for_reply(&state.control, sent_before, LAST_REPLY_WAIT).await;
            }
            state.close_control(reply);
        };
        tokio::spawn(close.instrument(self.span.clone()));
    }

    /// Releases what libunftp may still hold after its control loop ended: the passive
    /// listener, whose task keeps this state alive, and through it the control socket.
    fn finish(&self) {
        self.passive.close();
        // The client may have closed its side already; this ends the connection at once.
        let _ = self.control.shutdown(Shutdown::Both);
    }
}

/// Notices input on the control connection while a transfer runs.
///
/// libunftp keeps the session locked for the whole transfer, so a command sent meanwhile (ABOR
/// above all) waits until the data connection closes, and an upload that the client
/// aborted would then be stored. The watch is a second registration of the control socket
/// with the runtime: it sees the socket become readable even though libunftp reads the
/// bytes, and a client that closes the connection makes it readable too. It holds its own
/// duplicate of the socket, which it never reads from.
pub(crate) struct ControlWatch {
    socket: Option<TcpStream>,
}

impl ControlWatch {
    /// Resolves when the client sends anything on the control connection or closes it.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits for readiness and consumes nothing.
    pub(crate) async fn activity(&self) {
        match &self.socket {
            Some(socket) => {
                let _ = socket.readable().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Returns whether input or a close arrived since the watch started.
    pub(crate) fn has_activity(&self) -> bool {
        self.socket
            .as_ref()
            .is_some_and(|socket| socket.readable().now_or_never().is_some())
    }
}

/// Serves one accepted control connection inside its `connection` span.
pub(crate) async fn run(
    mut stream: TcpStream,
    tcp_peer: SocketAddr,
    shared: Arc<Shared>,
    listener: Arc<Listener>,
    force_close: CancellationToken,
) {
    let id = new_connection_id(Protocol::Ftp);
    let proxy_allowed = &shared.config.proxy_allowed;
    let peer = match read_client_address(&mut stream, tcp_peer, listener.proxy_mode, proxy_allowed)
        .await
    {
        Ok(peer) => peer,
        Err(error) => {
            info!(
                protocol = "FTP",
                ip = %canonical_ip(tcp_peer.ip()),
                port = tcp_peer.port(),
                connection_id = %id,
                %error,
                "connection closed before the greeting"
            );
            return;
        }
    };
    let ip = canonical_ip(peer.ip());
    let span = info_span!(
        "connection",
        protocol = "FTP",
        %ip,
        port = peer.port(),
        connection_id = %id,
        user = field::Empty,
        method = field::Empty,
    );
    let serve = serve(stream, ip, id, span.clone(), shared, listener, force_close);
    serve.instrument(span).await;
}

async fn serve(
    mut stream: TcpStream,
    ip: IpAddr,
    id: String,
    span: Span,
    shared: Arc<Shared>,
    listener: Arc<Listener>,
    force_close: CancellationToken,
) {
    let started = Instant::now();
    let hooks = shared.logins.hooks();
    let permit = match hooks.admit(ip, Protocol::Ftp, &id).await {
        Ok(permit) => permit,
        Err(rejection) => {
            debug!(reason = %rejection, "connection rejected before the greeting");
            reject(&mut stream).await;
            return;
        }
    };
    debug!(local = %listener.address, "connection accepted");

    let control = match prepare_socket(&stream) {
        Ok(control) => control,
        Err(error) => {
            warn!(%error, "cannot duplicate the control socket; connection closed");
            return;
        }
    };
    // libunftp requires data connections to come from the control connection's TCP peer,
    // which is a proxy when the PROXY protocol gave `ip`.
    let tcp_peer_ip = stream.peer_addr().map_or(ip, |peer| peer.ip());
    let tls = shared.tls.as_ref().map(|tls| tls.for_connection());
    let guard = CommandLineGuard::new(&control);
    let state = Arc::new(ConnectionState {
        id: id.clone(),
        ip,
        span,
        control,
        session: std::sync::Mutex::new(None),
        logged_in: AtomicBool::new(false),
        login_notify: Notify::new(),
        tls: tls.as_ref().map(|(_, handshakes)| TlsState {
            handshakes: Arc::clone(handshakes),
            data_required: listener.tls_required,
            used: AtomicU64::new(0),
        }),
        passive: Arc::new(PassiveListener::default()),
    });
    let attempts = Arc::new(AttemptTracker::new(hooks.clone(), ip, &id));
    let tls_config = tls.map(|(config, _)| config);
    let server = match build_server(
        &shared,
        &listener,
        &state,
        &attempts,
        tcp_peer_ip,
        tls_config,
    ) {
        Ok(server) => server,
        Err(error) => {
            warn!(%error, "cannot set up the FTP session; connection closed");
            return;
        }
    };

    let service = server.service(stream);
    supervise(service, &state, guard, &shared.config, &force_close).await;
    state.finish();
    state.end_session();
    drop(attempts);
    drop(permit);
    debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "connection closed"
    );
}

/// Sets the control socket's options and returns a second handle to it.
fn prepare_socket(stream: &TcpStream) -> std::io::Result<socket2::Socket> {
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%error, "cannot disable Nagle's algorithm on the control connection");
    }
    let socket = socket2::SockRef::from(stream);
    // An urgent ABOR (sent with MSG_OOB, as Python's ftplib does) would otherwise lose its
    // last byte to the out-of-band channel, and libunftp would never see the command end.
    if let Err(error) = socket.set_out_of_band_inline(true) {
        debug!(%error, "cannot keep urgent data inline on the control connection");
    }
    socket.try_clone()
}

/// Builds the libunftp server for one control connection.
fn build_server(
    shared: &Shared,
    listener: &Listener,
    state: &Arc<ConnectionState>,
    attempts: &Arc<AttemptTracker>,
    tcp_peer_ip: IpAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<libunftp::Server<VfsStorage, DefaultUser>, libunftp::ServerError> {
    let storage_state = Arc::clone(state);
    let authenticator = PasswordAuthenticator::new(
        shared.logins.clone(),
        Arc::clone(state),
        Arc::clone(attempts),
        shared.config.max_login_attempts,
    );
    let binder = PassivePortBinder {
        peer_ip: tcp_peer_ip,
        listener: Arc::clone(&state.passive),
    };

    let ports = &shared.config.passive_port_range;
    let passive_host = match &shared.passive_host {
        PassiveHost::FromConnection => libunftp::options::PassiveHost::FromConnection,
        PassiveHost::Ip(ip) => libunftp::options::PassiveHost::Ip(*ip),
        PassiveHost::Name(name) => libunftp::options::PassiveHost::Dns(name.clone()),
    };
    let mut builder = libunftp::ServerBuilder::with_authenticator(
        Box::new(move || VfsStorage::new(Arc::clone(&storage_state))),
        Arc::new(authenticator),
    )
    .greeting(GREETING)
    .passive_ports(ports.start..=ports.end)
    .passive_host(passive_host)
    .idle_session_timeout(shared.config.idle_timeout)
    .sitemd5(SiteMd5::None)
    .binder(binder)
    .logger(libunftp_logger(&state.id));

    if let Some(config) = tls {
        builder = builder.ftps_manual::<PathBuf>(config);
        if listener.tls_required {
            builder = builder.ftps_required(FtpsRequired::All, FtpsRequired::All);
        }
    }
    builder.build()
}

/// Waits for libunftp to finish the connection, closing it first when the login timeout
/// expires, a command line grows too long, or the shutdown grace period ends.
async fn supervise(
    service: impl Future,
    state: &ConnectionState,
    mut guard: CommandLineGuard,
    config: &Config,
    force_close: &CancellationToken,
) {
    tokio::pin!(service);
    let login_deadline = tokio::time::sleep(Duration::from_secs(config.login_timeout));
    tokio::pin!(login_deadline);
    loop {
        tokio::select! {
            _ = &mut service => return,
            () = state.login_notify.notified(), if !state.is_logged_in() => {}
            () = &mut login_deadline, if !state.is_logged_in() => {
                if state.is_logged_in() {
                    continue;
                }
                info!(
                    login_timeout_secs = config.login_timeout,
                    "login timeout; closing the connection"
                );
                state.close_control("421 Login timeout, closing control connection.");
                break;
            }
            unanswered_bytes = guard.exceeded() => {
                info!(
                    unanswered_bytes,
                    limit_bytes = MAX_COMMAND_LINE_BYTES,
                    "command line too long; closing the connection"
                );
                state.close_control("500 Command line too long, closing control connection.");
                break;
            }
            () = force_close.cancelled() => {
                info!("closing the connection: the server is shutting down");
                state.close_control("421 Server shutting down, closing control connection.");
                break;
            }
        }
    }
    if tokio::time::timeout(CLOSE_WAIT, &mut service)
        .await
        .is_err()
    {
        debug!("libunftp did not end the control loop in time after the socket closed");
    }
}

/// Answers a connection that the admission refused with 421 and closes it.
async fn reject(stream: &mut TcpStream) {
    let reply = b"421 Service not available, closing control connection.\r\n";
    let sent = tokio::time::timeout(REJECT_WRITE_TIMEOUT, async {
        stream.write_all(reply).await?;
        stream.shutdown().await
    })
    .await;
    if let Ok(Err(error)) = sent {
        debug!(%error, "cannot send the rejection reply");
    }
}
