//! One TCP connection from accept to close: admission, the SSH session, the login timeout,
//! and the `no_auth_tryed` event for connections that never tried to log in.
//!
//! russh reports neither the end of a session nor a missing login, so this task supervises
//! each session from outside. It asks russh to disconnect when the login timeout expires,
//! when the failed attempts reach the limit, or when the server shuts down; a session that
//! does not end soon after is cut off at the socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_hooks::{
    LoginEvent, Protocol, ProxyMode, canonical_ip, new_connection_id, read_client_address,
};
use ferry_users::Logins;
use russh::Disconnect;
use russh::server::Handle;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, field, info, info_span, warn};

use crate::auth::{AuthProgress, Authenticator};
use crate::config::MethodPolicy;
use crate::handler::Handler;
use crate::stream::CutoffStream;

/// Time a session gets to close after a disconnect was requested, before its socket is cut.
const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// Time a session gets to end after its socket was cut, before the task stops waiting.
const CUTOFF_WAIT: Duration = Duration::from_secs(3);
/// Time allowed to queue a disconnect request with a session whose queue is full.
const DISCONNECT_SEND_WAIT: Duration = Duration::from_secs(1);

/// What every connection of one server shares.
pub(crate) struct Shared {
    pub(crate) logins: Logins,
    pub(crate) ssh: Arc<russh::server::Config>,
    pub(crate) policy: MethodPolicy,
    pub(crate) max_auth_tries: u32,
    pub(crate) login_timeout: Duration,
    pub(crate) proxy_allowed: Vec<ipnet::IpNet>,
}

/// Serves one accepted connection until it closes. `force_close` is cancelled when the
/// shutdown grace is over.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    tcp_peer: SocketAddr,
    proxy_mode: ProxyMode,
    force_close: CancellationToken,
) {
    let deadline = Instant::now() + shared.login_timeout;
    let connection_id = new_connection_id(Protocol::Ssh);
    let peer =
        match read_client_address(&mut stream, tcp_peer, proxy_mode, &shared.proxy_allowed).await {
            Ok(peer) => peer,
            Err(error) => {
                info!(
                    protocol = "SSH",
                    ip = %canonical_ip(tcp_peer.ip()),
                    port = tcp_peer.port(),
                    %connection_id,
                    %error,
                    "connection closed before the SSH banner"
                );
                return;
            }
        };
    let ip = canonical_ip(peer.ip());
    let span = info_span!(
        "connection",
        protocol = "SSH",
        %ip,
        port = peer.port(),
        connection_id = %connection_id,
        user = field::Empty,
        method = field::Empty,
    );
    if peer != tcp_peer {
        debug!(parent: &span, proxy = %tcp_peer, "client address taken from the PROXY header");
    }
    Connection {
        shared,
        peer,
        connection_id,
        force_close,
        deadline,
        span: span.clone(),
    }
    .run(stream)
    .instrument(span)
    .await;
}

struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    connection_id: String,
    force_close: CancellationToken,
    /// The login timeout, counted from the accept.
    deadline: Instant,
    span: tracing::Span,
}

/// How the supervision of a running session ended.
struct Ending {
    result: Option<Result<(), crate::handler::SessionError>>,
    timed_out: bool,
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        let ip = canonical_ip(self.peer.ip());
        let hooks = self.shared.logins.hooks().clone();
        // Nothing is sent to the client before the connection is admitted, so a rejected
        // client sees the connection close without an SSH banner.
        let admitted = tokio::select! {
            admitted = hooks.admit(ip, Protocol::Ssh, &self.connection_id) => admitted,
            () = self.force_close.cancelled() => return,
            () = tokio::time::sleep_until(self.deadline) => {
                debug!("login timeout while the connection was being admitted");
                return;
            }
        };
        let _permit = match admitted {
            Ok(permit) => permit,
            Err(rejection) => {
                debug!(reason = %rejection, "connection closed before the SSH banner");
                return;
            }
        };
        debug!("connection accepted");
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%error, "cannot disable Nagle's algorithm");
        }

        let started = Instant::now();
        let deadline = self.deadline;
        let cutoff = CancellationToken::new();
        let stream = CutoffStream::new(stream, cutoff.clone());
        let progress = Arc::new(AuthProgress::default());
        let auth = Authenticator::new(
            self.shared.logins.clone(),
            self.shared.policy.clone(),
            self.shared.max_auth_tries,
            ip,
            self.connection_id.clone(),
            Arc::clone(&progress),
        );
        let handler = Handler::new(
            auth,
            self.span.clone(),
            self.connection_id.clone(),
            cutoff.clone(),
        );

        let setup = russh::server::run_stream(Arc::clone(&self.shared.ssh), stream, handler);
        let running = tokio::select! {
            result = tokio::time::timeout_at(deadline, setup) => result,
            () = self.force_close.cancelled() => {
                self.report_no_attempt(&progress, "server shut down");
                return;
            }
        };
        let running = match running {
            Ok(Ok(running)) => running,
            Ok(Err(error)) => {
                self.report_no_attempt(&progress, &error.to_string());
                return;
            }
            Err(_) => {
                self.report_no_attempt(&progress, "login timeout before the version exchange");
                return;
            }
        };

        let handle = running.handle();
        let ending = self
            .supervise(running, &handle, &progress, deadline, &cutoff)
            .await;
        cutoff.cancel();

        let reason = match &ending.result {
            Some(Ok(())) => "closed".to_owned(),
            Some(Err(error)) => error.to_string(),
            None => "did not end after its socket was cut".to_owned(),
        };
        if progress.authenticated() {
            info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                reason = ?reason,
                "session closed"
            );
        } else if ending.timed_out {
            self.report_no_attempt(&progress, "login timeout");
        } else {
            self.report_no_attempt(&progress, &reason);
        }
    }

    /// Waits for the session to end, closing it on the login timeout, on too many failed
    /// attempts and at the end of the shutdown grace.
    async fn supervise(
        &self,
        running: russh::server::RunningSession<Handler>,
        handle: &Handle,
        progress: &AuthProgress,
        deadline: Instant,
        cutoff: &CancellationToken,
    ) -> Ending {
        let mut running = std::pin::pin!(running);
        let mut timed_out = false;
        let mut exhausted = false;
        let mut forced = false;
        // When the session must be gone by; set once a close was requested.
        let mut close_by: Option<Instant> = None;
        let mut cut_by: Option<Instant> = None;
        loop {
            let close_at = close_by.unwrap_or_else(far_future);
            let cut_at = cut_by.unwrap_or_else(far_future);
            tokio::select! {
                result = &mut running => {
                    return Ending { result: Some(result), timed_out };
                }
                () = tokio::time::sleep_until(deadline), if !timed_out => {
                    timed_out = true;
                    if !progress.authenticated() {
                        info!(
                            login_timeout_secs = self.shared.login_timeout.as_secs(),
                            "login timeout; closing the connection"
                        );
                        request_close(handle, Disconnect::ByApplication, "login timeout").await;
                        close_by.get_or_insert(Instant::now() + CLOSE_WAIT);
                    }
                }
                () = progress.exhausted().cancelled(), if !exhausted => {
                    exhausted = true;
                    request_close(
                        handle,
                        Disconnect::NoMoreAuthMethodsAvailable,
                        "too many authentication failures",
                    )
                    .await;
                    close_by.get_or_insert(Instant::now() + CLOSE_WAIT);
                }
                () = self.force_close.cancelled(), if !forced => {
                    forced = true;
                    info!("closing the connection at the end of the shutdown grace");
                    request_close(handle, Disconnect::ByApplication, "server shutting down").await;
                    close_by.get_or_insert(Instant::now() + CLOSE_WAIT);
                }
                () = tokio::time::sleep_until(close_at), if close_by.is_some() && cut_by.is_none() => {
                    debug!("session did not close in time; cutting its socket");
                    cutoff.cancel();
                    cut_by = Some(Instant::now() + CUTOFF_WAIT);
                }
                () = tokio::time::sleep_until(cut_at), if cut_by.is_some() => {
                    warn!("session still running after its socket was cut; leaving it");
                    return Ending { result: None, timed_out };
                }
            }
        }
    }

    /// Reports `no_auth_tryed` when the connection ends without any authentication attempt.
    fn report_no_attempt(&self, progress: &AuthProgress, reason: &str) {
        if progress.attempted() {
            debug!(
                reason,
                failures = progress.failures(),
                "connection closed before login"
            );
            return;
        }
        debug!(
            reason,
            "connection closed without an authentication attempt"
        );
        let ip = canonical_ip(self.peer.ip());
        self.shared.logins.hooks().login(LoginEvent::no_auth_tried(
            ip,
            Protocol::Ssh,
            &self.connection_id,
        ));
    }
}

/// Asks the session to send a disconnect message and close. The request waits behind
/// queued channel data, which is why callers also set a deadline.
async fn request_close(handle: &Handle, reason: Disconnect, description: &str) {
    let request = handle.disconnect(reason, description.to_owned(), String::new());
    match tokio::time::timeout(DISCONNECT_SEND_WAIT, request).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => debug!("session already ended"),
        Err(_) => debug!("session queue full; the disconnect request was not queued"),
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
