//! Login and connect events, and the hooks that report them to operators.
//!
//! Every protocol crate reports each authentication attempt, and each connection that ended
//! without one, as a [`LoginEvent`] through [`Hooks::login`]. That call logs the event, applies
//! the post-login scope and queues it for the hook; it never waits for delivery. New
//! connections pass [`Hooks::admit`], which runs the post-connect hook synchronously and fails
//! closed: a hook that errors or times out rejects the connection.
//!
//! Names and values in events follow the SFTPGo 1.x hook contract, so scripts written for it
//! keep working: environment variables `SFTPGO_LOGIND_*` for programs, a JSON object for HTTP.

mod config;
mod event;
mod gate;
mod http;
mod program;
mod proxy;
mod queue;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{debug, info, warn};

pub use config::{ClientCertificate, HookTarget, HooksConfig, HttpClientConfig, HttpHeader, Scope};
pub use event::{LogName, LoginEvent, LoginMethod, Protocol, canonical_ip, new_connection_id};
pub use gate::{ConnectionLimits, ConnectionPermit, DefenderConfig, parse_net};
pub use proxy::{ProxyError, ProxyMode, read_client_address};
pub use queue::HookStats;
/// The URL type of hook targets.
pub use reqwest::Url;

use gate::{ConnectionCounter, Defender};
use http::HttpClient;
use queue::{Counters, Queue};

/// Errors that stop the hooks from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot use certificate file {}: {reason}", path.display())]
    CertificateFile { path: PathBuf, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
}

/// Why a new connection was turned away before the protocol started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The post-connect hook returned a non-zero exit status or a status other than 200,
    /// or could not be run.
    #[error("rejected by the post-connect hook: {0}")]
    PostConnectHook(String),
    /// The address is banned after repeated login failures.
    #[error("address banned for {0:?} after repeated login failures")]
    Banned(Duration),
    /// A connection limit is reached.
    #[error("{0}")]
    TooManyConnections(&'static str),
}

/// The connect gate and the post-login dispatcher, shared by every listener.
#[derive(Clone)]
pub struct Hooks {
    inner: Arc<Inner>,
}

struct Inner {
    config: HooksConfig,
    post_connect_slots: tokio::sync::Semaphore,
    defender: Defender,
    connections: ConnectionCounter,
    http: HttpClient,
    queue: Queue,
    counters: Counters,
    workers: std::sync::Mutex<JoinSet<()>>,
}

impl Hooks {
    /// Builds the HTTP client and starts the delivery workers on the current tokio runtime.
    pub fn new(config: HooksConfig, http: &HttpClientConfig) -> Result<Hooks, Error> {
        if http.skip_tls_verify {
            warn!("httpclient.skip_tls_verify is set: hook requests accept any TLS certificate");
        }
        let http = HttpClient::new(http)?;
        let queue = Queue::new(config.post_login_queue_size);
        let workers = config.post_login_max_concurrent.max(1);
        let hooks = Hooks {
            inner: Arc::new(Inner {
                post_connect_slots: tokio::sync::Semaphore::new(
                    config.post_connect_max_concurrent.max(1),
                ),
                defender: Defender::new(config.defender.clone()),
                connections: ConnectionCounter::default(),
                config,
                http,
                queue,
                counters: Counters::default(),
                workers: std::sync::Mutex::new(JoinSet::new()),
            }),
        };
        if hooks.inner.config.post_login_hook.is_some() {
            let mut set = hooks.lock_workers();
            for _ in 0..workers {
                let inner = Arc::clone(&hooks.inner);
                set.spawn(async move { inner.run_worker().await });
            }
        }
        Ok(hooks)
    }

    fn lock_workers(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        self.inner
            .workers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Decides whether a new connection may continue: a banned address is rejected first,
    /// then the connection limits apply, then the post-connect hook runs when one is
    /// configured. Call it before the protocol sends anything to the client, and keep the
    /// returned permit for as long as the connection stays open.
    ///
    /// # Cancel safety
    /// Cancelling the future kills a running hook program (its child is killed on drop).
    pub async fn admit(
        &self,
        ip: IpAddr,
        protocol: Protocol,
        connection_id: &str,
    ) -> Result<ConnectionPermit, Rejection> {
        let ip = canonical_ip(ip);
        if let Some(left) = self.inner.defender.banned(ip) {
            debug!(%protocol, %ip, connection_id, ban_left_secs = left.as_secs(), "connection from a banned address rejected");
            return Err(Rejection::Banned(left));
        }
        let permit = self.inner.connections.try_acquire(ip, self.inner.config.limits).map_err(|reason| {
            warn!(%protocol, %ip, connection_id, reason, "connection rejected by the connection limits");
            Rejection::TooManyConnections(reason)
        })?;
        self.run_post_connect(ip, protocol, connection_id).await?;
        Ok(permit)
    }

    async fn run_post_connect(
        &self,
        ip: IpAddr,
        protocol: Protocol,
        connection_id: &str,
    ) -> Result<(), Rejection> {
        let Some(target) = &self.inner.config.post_connect_hook else {
            return Ok(());
        };
        // A flood of new connections must not start a process or request per connection.
        let wait = self.inner.config.program_timeout;
        let Ok(Ok(_slot)) =
            tokio::time::timeout(wait, self.inner.post_connect_slots.acquire()).await
        else {
            let reason = "too many post-connect hooks running at once".to_owned();
            warn!(%protocol, %ip, connection_id, %reason, "connection rejected by the post-connect hook");
            return Err(Rejection::PostConnectHook(reason));
        };
        let verdict = match target {
            HookTarget::Program(path) => {
                let env = [
                    ("SFTPGO_CONNECTION_IP", ip.to_string()),
                    ("SFTPGO_CONNECTION_PROTOCOL", protocol.as_str().to_owned()),
                ];
                program::run(path, &env, self.inner.config.program_timeout)
                    .await
                    .map_err(|failure| failure.to_string())
            }
            HookTarget::Url(url) => {
                let mut url = url.clone();
                url.query_pairs_mut()
                    .append_pair("ip", &ip.to_string())
                    .append_pair("protocol", protocol.as_str());
                match self.inner.http.get(url).await {
                    Ok(status) if status == reqwest::StatusCode::OK => Ok(()),
                    Ok(status) => Err(format!("response status {status}")),
                    Err(failure) => Err(failure.to_string()),
                }
            }
        };
        verdict.map_err(|reason| {
            warn!(%protocol, %ip, connection_id, %reason, "connection rejected by the post-connect hook");
            Rejection::PostConnectHook(reason)
        })
    }

    /// Returns whether `ip` is banned now. Connections are checked when they open; the login
    /// path checks again, so that a connection that was open when its address got banned
    /// cannot log in.
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        self.inner.defender.banned(canonical_ip(ip)).is_some()
    }

    /// Logs a login event and queues it for the post-login hook when the scope includes it.
    /// Returns at once; delivery happens in the background.
    pub fn login(&self, mut event: LoginEvent) {
        event.ip = canonical_ip(event.ip);
        event.username = deliverable_name(&event.username);
        log_login(&event);
        if !event.success {
            self.inner.defender.record_failure(event.ip);
        }
        if self.inner.config.post_login_hook.is_none()
            || !self.inner.config.post_login_scope.includes(event.success)
        {
            return;
        }
        self.inner.queue.push(event, &self.inner.counters);
    }

    /// Returns the delivery counters so far.
    pub fn stats(&self) -> HookStats {
        self.inner.counters.snapshot()
    }

    /// Stops taking events and waits up to `grace` for queued ones to be delivered; what is
    /// left after that is counted as dropped. Logs and returns the final counters.
    pub async fn shutdown(&self, grace: Duration) -> HookStats {
        self.inner.queue.close();
        let mut workers = std::mem::take(&mut *self.lock_workers());
        let finished = tokio::time::timeout(grace, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            workers.abort_all();
            let left = self.inner.queue.drain_as_dropped(&self.inner.counters);
            warn!(
                left,
                grace_secs = grace.as_secs(),
                "post-login hook queue not flushed in time"
            );
        }
        let stats = self.stats();
        info!(
            delivered = stats.delivered,
            failed = stats.failed,
            retried = stats.retried,
            dropped = stats.dropped,
            "post-login hook totals"
        );
        stats
    }
}

/// Longest user name, in bytes, that events carry. Valid names are at most 255 bytes, so a
/// longer one is an attack or an accident; cutting it keeps every event deliverable (an
/// environment variable has a size limit) and every log line short.
const MAX_EVENT_NAME: usize = 256;

/// Returns the user name as events carry it: NUL bytes, which no environment variable can
/// hold, become U+FFFD, and a name longer than [`MAX_EVENT_NAME`] bytes is cut at a character
/// boundary and ends with `…`.
fn deliverable_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len().min(MAX_EVENT_NAME + 3));
    for c in name.chars() {
        if out.len() + c.len_utf8() > MAX_EVENT_NAME {
            out.push('…');
            break;
        }
        out.push(if c == '\0' { '\u{fffd}' } else { c });
    }
    out
}

/// Writes the login line that operators and fail2ban read: `login failed` at warn, or
/// `login succeeded` at info, with `protocol` and `ip` first. The line is written outside the
/// connection's span (`parent: None`), so in the human format it starts with the level and
/// the target, and no client-chosen text (such as a user name recorded on the span) comes
/// before the `ip` field. The fail2ban filter anchors on that.
fn log_login(event: &LoginEvent) {
    let user = LogName(&event.username);
    if event.success {
        info!(
            target: "ferry::login", parent: None,
            protocol = %event.protocol, ip = %event.ip, user = %user,
            method = %event.method, connection_id = %event.connection_id,
            "login succeeded"
        );
    } else {
        warn!(
            target: "ferry::login", parent: None,
            protocol = %event.protocol, ip = %event.ip, user = %user,
            method = %event.method, connection_id = %event.connection_id,
            "login failed"
        );
    }
}

impl Inner {
    async fn run_worker(self: Arc<Self>) {
        while let Some(event) = self.queue.pop().await {
            self.deliver(&event).await;
        }
    }

    async fn deliver(&self, event: &LoginEvent) {
        let Some(target) = &self.config.post_login_hook else {
            return;
        };
        let result = match target {
            HookTarget::Program(path) => {
                program::run(path, &event.to_env(), self.config.program_timeout)
                    .await
                    .map_err(|failure| failure.to_string())
            }
            HookTarget::Url(url) => self
                .http
                .post_json(url, event.to_json(), |attempt, failure| {
                    self.counters.retried.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        protocol = %event.protocol, ip = %event.ip, user = %LogName(&event.username),
                        method = %event.method, connection_id = %event.connection_id,
                        attempt, error = %failure,
                        "post-login hook request failed; retrying"
                    );
                })
                .await
                .map_err(|failure| failure.to_string()),
        };
        match result {
            Ok(()) => {
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                warn!(
                    protocol = %event.protocol, ip = %event.ip, user = %LogName(&event.username),
                    method = %event.method, status = u8::from(event.success),
                    connection_id = %event.connection_id, %error,
                    "post-login hook failed"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_replaced_in_names() {
        assert_eq!(deliverable_name("a\0b"), "a\u{fffd}b");
    }

    #[test]
    fn long_names_cut() {
        let name = deliverable_name(&"é".repeat(1000));
        assert!(
            name.len() <= MAX_EVENT_NAME + '…'.len_utf8(),
            "{}",
            name.len()
        );
        assert!(name.ends_with('…'));
        assert_eq!(deliverable_name("alice"), "alice");
    }
}
